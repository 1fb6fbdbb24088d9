//! Rate limits and per-client caps, as a pure state machine: the caller passes the clock (`now`, time since the
//! table's epoch), so the bucket math is tested without sleeping.
//!
//! Buckets are GCRA (the generic cell rate algorithm, a token bucket kept as one number): each holds the
//! "theoretical arrival time" of the next request. A request conforms when that time is at most
//! `(burst - 1)` emission intervals ahead of now; then it moves one interval on. A refused request changes
//! nothing. A bucket whose time has passed is full, which is the same as no bucket: such a client can be
//! forgotten without changing any answer, which is how the table bounds its memory.
//!
//! Keys are bounded too: a client is its address (an IPv6 client by its /64, which one host usually holds
//! whole), and its method and tool buckets exist only for the names the config lists.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use mcp_guard_config::{Limits, Rate, Reason};

#[cfg(test)]
mod tests;

/// Clients tracked when `maxTrackedClients` is not set (one default, in the config format).
pub use mcp_guard_config::DEFAULT_MAX_TRACKED_CLIENTS;

/// One JSON-RPC call, as the limits charge it: its names borrowed from the body's reading or the request head
/// (copied only when a header had to be decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call<'a> {
    /// A call whose method the guard read; for `tools/call` the tool, or `None` when it could not be read (then
    /// it is charged to every tool limit).
    Method {
        method: Cow<'a, str>,
        tool: Option<Cow<'a, str>>,
    },
    /// A call the guard could not read: it may be any method and any tool, so it is charged to every method and
    /// tool limit and can never be cheaper than a call it could be.
    Unreadable,
}

impl<'a> Call<'a> {
    pub fn method(method: &'a str, tool: Option<&'a str>) -> Self {
        Call::Method {
            method: Cow::Borrowed(method),
            tool: tool.map(Cow::Borrowed),
        }
    }
}

/// Who a client is for the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// An IPv4 client by its address (an IPv4-mapped IPv6 one too), an IPv6 client by its /64.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => ClientKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => ClientKey(IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into())),
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(a) => write!(f, "{a}/64"),
            a => write!(f, "{a}"),
        }
    }
}

/// What the limits need to know about one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestClass<'a> {
    /// A stream (a `GET` for an event stream, a `subscriptions/listen`; `policy::opens_stream`): counted
    /// against `maxStreamsPerClient`.
    pub stream: bool,
    /// The JSON-RPC calls the request carries: none (a `GET`, a response the client sends back), one, or one
    /// per element of a batch.
    pub calls: &'a [Call<'a>],
}

/// What a request holds while it is in flight; give it back with [`ClientTable::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub client: ClientKey,
    pub stream: bool,
}

/// A refused request: why, and when the client may try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub retry_after: Duration,
    /// Which limit, for the JSON body and the log (`perTool["render"]: 6/min, burst 2`).
    pub detail: String,
}

impl Refusal {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

#[derive(Debug, Default)]
struct ClientState {
    /// Arrival times (nanoseconds since the epoch) of the client's own bucket and of its method and tool buckets.
    client: u64,
    methods: Vec<(Box<str>, u64)>,
    tools: Vec<(Box<str>, u64)>,
    in_flight: u32,
    streams: u32,
    last_seen: u64,
}

impl ClientState {
    /// Nothing to remember: no request in flight and every bucket full.
    fn idle(&self, now: u64) -> bool {
        self.in_flight == 0
            && self.streams == 0
            && self.client <= now
            && self.methods.iter().chain(&self.tools).all(|(_, t)| *t <= now)
    }

    /// Counts one more request (or stream) in flight.
    fn take_slot(&mut self, stream: bool) {
        if stream {
            self.streams += 1;
        } else {
            self.in_flight += 1;
        }
    }
}

/// One bucket to charge: which it is (where its arrival time lives), its shape, how many tokens, and its arrival
/// time once they are taken.
struct Charge<'a> {
    bucket: Bucket<'a>,
    rate: &'a Rate,
    tokens: u32,
    next: u64,
}

/// Which limit a bucket is; as the refusal names it, formatted only when it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bucket<'a> {
    Client,
    Method(&'a str),
    Tool(&'a str),
}

impl std::fmt::Display for Bucket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bucket::Client => f.write_str("perClient"),
            Bucket::Method(name) => write!(f, "perMethod[{name:?}]"),
            Bucket::Tool(name) => write!(f, "perTool[{name:?}]"),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The GCRA step for `tokens` requests at once: the bucket's new arrival time if they all conform, else how long
/// until they would (more tokens than the burst never do).
fn conform(tat: u64, now: u64, rate: &Rate, tokens: u32) -> Result<u64, u64> {
    let interval = 60_000_000_000 / u64::from(rate.requests_per_minute.max(1));
    let tolerance = interval.saturating_mul(u64::from(rate.burst() - 1));
    // The arrival time of the last of them.
    let last = tat
        .max(now)
        .saturating_add(interval.saturating_mul(u64::from(tokens.max(1) - 1)));
    let ahead = last - now;
    if ahead > tolerance {
        Err(ahead - tolerance)
    } else {
        Ok(last.saturating_add(interval))
    }
}

fn describe(charge: &Charge<'_>) -> String {
    let (rate, tokens) = (charge.rate, charge.tokens);
    let calls = match tokens {
        1 => String::new(),
        n if n > rate.burst() => {
            format!(" (this request carries {n} calls for it: more than the burst never fits)")
        }
        n => format!(" (this request carries {n} calls for it)"),
    };
    format!(
        "{}: {}/min, burst {}{calls}",
        charge.bucket,
        rate.requests_per_minute,
        rate.burst()
    )
}

fn tat_of<'s>(buckets: &'s mut Vec<(Box<str>, u64)>, name: &str) -> &'s mut u64 {
    let i = match buckets.iter().position(|(n, _)| &**n == name) {
        Some(i) => i,
        None => {
            buckets.push((name.into(), 0));
            buckets.len() - 1
        }
    };
    &mut buckets[i].1
}

/// The per-client state of every client the limits track.
#[derive(Debug, Default)]
pub struct ClientTable {
    clients: HashMap<ClientKey, ClientState>,
}

impl ClientTable {
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Admits a request (taking a slot and one token of each bucket it is charged to) or refuses it, changing
    /// nothing. The caps come first, so a refused request never costs a token.
    pub fn admit(
        &mut self,
        client: ClientKey,
        class: &RequestClass<'_>,
        limits: &Limits,
        now: Duration,
    ) -> Result<Slot, Refusal> {
        let now = nanos(now);
        self.make_room(client, limits, now)?;
        let state = self.clients.entry(client).or_default();
        state.last_seen = now;
        let retry_soon = Duration::from_secs(1);
        if class.stream {
            if let Some(max) = limits.max_streams_per_client
                && state.streams >= max
            {
                return Err(Refusal {
                    reason: Reason::TooManyStreams,
                    retry_after: retry_soon,
                    detail: format!("maxStreamsPerClient: {max} open"),
                });
            }
        } else if let Some(max) = limits.max_concurrent_requests_per_client
            && state.in_flight >= max
        {
            return Err(Refusal {
                reason: Reason::TooManyConcurrentRequests,
                retry_after: retry_soon,
                detail: format!("maxConcurrentRequestsPerClient: {max} in flight"),
            });
        }

        let mut charges = charges(class, limits);
        // Check every bucket first and commit only when all conform: a refusal costs nothing anywhere.
        let mut wait: Option<(u64, usize)> = None;
        for (i, charge) in charges.iter_mut().enumerate() {
            let tat = match charge.bucket {
                Bucket::Client => state.client,
                Bucket::Method(m) => *tat_of(&mut state.methods, m),
                Bucket::Tool(t) => *tat_of(&mut state.tools, t),
            };
            match conform(tat, now, charge.rate, charge.tokens) {
                Ok(next) => charge.next = next,
                Err(w) if wait.is_none_or(|(longest, _)| w > longest) => wait = Some((w, i)),
                Err(_) => {}
            }
        }
        if let Some((w, i)) = wait {
            return Err(Refusal {
                reason: Reason::RateLimited,
                retry_after: Duration::from_nanos(w),
                detail: describe(&charges[i]),
            });
        }
        for charge in &charges {
            match charge.bucket {
                Bucket::Client => state.client = charge.next,
                Bucket::Method(m) => *tat_of(&mut state.methods, m) = charge.next,
                Bucket::Tool(t) => *tat_of(&mut state.tools, t) = charge.next,
            }
        }
        state.take_slot(class.stream);
        Ok(Slot {
            client,
            stream: class.stream,
        })
    }

    /// Takes a slot without checking any limit: audit mode lets a refused request through, and its slot still
    /// counts. A client the table had no room for stays untracked (its slot counts for nothing), so audit mode
    /// cannot grow the table past `maxTrackedClients` either.
    pub fn hold(&mut self, client: ClientKey, stream: bool) -> Slot {
        if let Some(state) = self.clients.get_mut(&client) {
            state.take_slot(stream);
        }
        Slot { client, stream }
    }

    /// Gives a slot back when its request (or stream) ends.
    pub fn release(&mut self, slot: Slot) {
        if let Some(state) = self.clients.get_mut(&slot.client) {
            let n = if slot.stream {
                &mut state.streams
            } else {
                &mut state.in_flight
            };
            *n = n.saturating_sub(1);
        }
    }

    /// A request admitted as one in flight whose response turned out to be an event stream: from now on it counts
    /// against `maxStreamsPerClient`, which it must fit (what the response is decides, not what the request's
    /// `Accept` claimed). Refused, nothing changes: the request still holds its slot until it is released.
    pub fn become_stream(&mut self, slot: &mut Slot, limits: &Limits) -> Result<(), Refusal> {
        if let Some(state) = self.clients.get(&slot.client)
            && !slot.stream
            && let Some(max) = limits.max_streams_per_client
            && state.streams >= max
        {
            return Err(Refusal {
                reason: Reason::TooManyStreams,
                retry_after: Duration::from_secs(1),
                detail: format!("maxStreamsPerClient: {max} open"),
            });
        }
        self.move_to_streams(slot);
        Ok(())
    }

    /// Counts a request's slot as a stream without checking the cap (audit mode).
    pub fn move_to_streams(&mut self, slot: &mut Slot) {
        if slot.stream {
            return;
        }
        if let Some(state) = self.clients.get_mut(&slot.client) {
            state.in_flight = state.in_flight.saturating_sub(1);
            state.streams += 1;
        }
        slot.stream = true;
    }

    /// Keeps the table within `maxTrackedClients` before a new client is added: forgets idle clients (which
    /// changes no answer) and, if that frees too little, those seen longest ago with nothing in flight (as
    /// nginx's `limit_req` zone does). Refuses the newcomer only when every tracked client has a request open.
    fn make_room(&mut self, client: ClientKey, limits: &Limits, now: u64) -> Result<(), Refusal> {
        let max = limits.max_tracked_clients.unwrap_or(DEFAULT_MAX_TRACKED_CLIENTS) as usize;
        if self.clients.len() < max || self.clients.contains_key(&client) {
            return Ok(());
        }
        self.clients.retain(|_, s| !s.idle(now));
        // Free a sixteenth at once, so that a flood of new addresses costs one sweep per many clients.
        let target = max - (max / 16).max(1);
        if self.clients.len() > target {
            let mut evictable: Vec<(u64, ClientKey)> = self
                .clients
                .iter()
                .filter(|(_, s)| s.in_flight == 0 && s.streams == 0)
                .map(|(k, s)| (s.last_seen, *k))
                .collect();
            let excess = (self.clients.len() - target).min(evictable.len());
            if excess > 0 {
                evictable.select_nth_unstable_by_key(excess - 1, |(seen, _)| *seen);
                for (_, k) in &evictable[..excess] {
                    self.clients.remove(k);
                }
            }
        }
        if self.clients.len() >= max {
            return Err(Refusal {
                reason: Reason::RateLimited,
                retry_after: Duration::from_secs(1),
                detail: format!("maxTrackedClients: {max} clients with requests in flight"),
            });
        }
        Ok(())
    }
}

/// The buckets a request is charged to, each with as many tokens as the request carries calls for it. Every
/// request costs `perClient` at least one token. A call whose method could not be read is charged to every
/// method and tool limit, and a `tools/call` whose tool could not be read to every tool limit, so that hiding a
/// name (past the peeked prefix, behind a duplicate key) never buys a looser limit or a bucket of its own.
fn charges<'a>(class: &RequestClass<'_>, limits: &'a Limits) -> Vec<Charge<'a>> {
    let mut out: Vec<Charge<'a>> = Vec::new();
    let mut add =
        |bucket: Bucket<'a>, rate: &'a Rate, tokens: u32| match out.iter_mut().find(|c| c.bucket == bucket) {
            Some(c) => c.tokens = c.tokens.saturating_add(tokens),
            None => out.push(Charge {
                bucket,
                rate,
                tokens,
                next: 0,
            }),
        };
    if let Some(rate) = &limits.per_client {
        add(
            Bucket::Client,
            rate,
            u32::try_from(class.calls.len().max(1)).unwrap_or(u32::MAX),
        );
    }
    let every_tool = |add: &mut dyn FnMut(Bucket<'a>, &'a Rate, u32)| {
        for (name, rate) in &limits.per_tool {
            add(Bucket::Tool(name), rate, 1);
        }
    };
    for call in class.calls {
        match call {
            Call::Unreadable => {
                for (name, rate) in &limits.per_method {
                    add(Bucket::Method(name), rate, 1);
                }
                every_tool(&mut add);
            }
            Call::Method { method, tool } => {
                if let Some((name, rate)) = limits.per_method.get_key_value(method.as_ref()) {
                    add(Bucket::Method(name), rate, 1);
                }
                if method != "tools/call" {
                    continue;
                }
                match tool {
                    Some(tool) => {
                        if let Some((name, rate)) = limits.per_tool.get_key_value(tool.as_ref()) {
                            add(Bucket::Tool(name), rate, 1);
                        }
                    }
                    None => every_tool(&mut add),
                }
            }
        }
    }
    out
}
