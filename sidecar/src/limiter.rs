//! The IO shell of the rate limits: one [`ClientTable`] shared by every worker (a client's buckets must not
//! multiply with the worker count), the clock, and slots given back when a response ends.
//!
//! The lock is held only for the table's arithmetic, never across an await; requests of guards without
//! per-client limits never take it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mcp_guard_config::Limits;
use prometheus_client::metrics::gauge::Gauge;

use crate::policy::rate::{ClientKey, ClientTable, Refusal, RequestClass, Slot};

pub struct Limiter {
    table: Mutex<ClientTable>,
    epoch: Instant,
    tracked: Gauge,
}

impl Limiter {
    /// `tracked` shows how many clients the table holds.
    pub fn new(tracked: Gauge) -> Arc<Self> {
        Arc::new(Limiter {
            table: Mutex::new(ClientTable::default()),
            epoch: Instant::now(),
            tracked,
        })
    }

    fn table(&self) -> MutexGuard<'_, ClientTable> {
        // The table's invariants hold between calls, so a panic elsewhere leaves it usable.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a request or refuses it (see [`ClientTable::admit`]).
    pub fn admit(
        self: &Arc<Self>,
        client: ClientKey,
        class: &RequestClass<'_>,
        limits: &Limits,
    ) -> Result<SlotGuard, Refusal> {
        let mut table = self.table();
        let admitted = table.admit(client, class, limits, self.epoch.elapsed());
        self.tracked.set(table.len() as i64);
        admitted.map(|slot| SlotGuard {
            limiter: self.clone(),
            slot,
        })
    }

    /// Counts a request that audit mode lets through despite a refusal.
    pub fn hold(self: &Arc<Self>, client: ClientKey, stream: bool) -> SlotGuard {
        let slot = self.table().hold(client, stream);
        SlotGuard {
            limiter: self.clone(),
            slot,
        }
    }
}

/// A request's (or stream's) place in its client's caps, given back when dropped: with the response body once
/// it has been sent, or with the request when it fails.
pub struct SlotGuard {
    limiter: Arc<Limiter>,
    slot: Slot,
}

impl SlotGuard {
    /// Counts the request as the event stream its response turned out to be (see
    /// [`ClientTable::become_stream`]); `enforce: false` moves it past the cap (audit mode) after saying so.
    pub fn become_stream(&mut self, limits: &Limits, enforce: bool) -> Result<(), Refusal> {
        let mut table = self.limiter.table();
        let checked = table.become_stream(&mut self.slot, limits);
        if checked.is_err() && !enforce {
            table.move_to_streams(&mut self.slot);
        }
        checked
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.limiter.table().release(self.slot);
    }
}
