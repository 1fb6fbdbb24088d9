//! Runs the controller under leader election: only the replica holding the Lease reconciles; the others
//! stand by and take over when it goes away.

use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{error, info};

use crate::controller::{self, ControllerReadiness, ControllerSettings};
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::ControllerMetrics;
use crate::preflight::{self, StartupError};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub settings: ControllerSettings,
    /// `None`: no leader election (a single replica, or tests).
    pub lease: Option<LeaseSettings>,
}

/// Start-up checks, then the controller until `shutdown` resolves. On shutdown the running controller drains
/// (in-flight reconciles finish) before the Lease is released.
pub async fn run_controller(
    client: Client,
    options: ControllerOptions,
    metrics: ControllerMetrics,
    readiness: ControllerReadiness,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartupError> {
    let gateway_api = match options.settings.gateway_api {
        Some(v) => v,
        None => controller::gateway_api_installed(&client).await?,
    };
    preflight::check_controller(
        &client,
        options.settings.namespace.as_deref(),
        options
            .lease
            .as_ref()
            .map(|l| (l.namespace.as_str(), l.name.as_str())),
        gateway_api,
    )
    .await?;

    let (leading_tx, mut leading) = watch::channel(options.lease.is_none());
    let (elector_stop_tx, elector_stop_rx) = watch::channel(false);
    // Without an elector the sender stays here, so `leading` stays true (and open) until the end.
    let (elector, _always_leading) = match options.lease.clone() {
        Some(lease) => {
            info!(namespace = %lease.namespace, lease = %lease.name, identity = %lease.identity, "campaigning for leadership");
            let elector = LeaderElector::new(client.clone(), lease);
            (
                Some(tokio::spawn(elector.run(leading_tx, wait_true(elector_stop_rx)))),
                None,
            )
        }
        None => (None, Some(leading_tx)),
    };

    let mut shutdown_rx = shutdown.clone();
    let mut restarted = false;
    loop {
        metrics.leader.set(i64::from(*leading.borrow()));
        if !*leading.borrow() {
            tokio::select! {
                r = leading.changed() => if r.is_err() { break } else { continue },
                () = wait_true(shutdown_rx.clone()) => break,
            }
        }
        if *shutdown_rx.borrow() {
            break;
        }
        metrics.leader.set(1);
        if !restarted {
            metrics.leader_transitions.inc();
        }
        let stop = {
            let mut leading = leading.clone();
            let shutdown = shutdown_rx.clone();
            async move {
                tokio::select! {
                    _ = leading.wait_for(|l| !*l) => info!("leadership lost; stopping the controller"),
                    () = wait_true(shutdown) => info!("shutting down the controller"),
                }
            }
        };
        restarted = match controller::run_once(
            client.clone(),
            options.settings.clone(),
            metrics.clone(),
            readiness.clone(),
            stop,
        )
        .await
        {
            Ok(gateway_api_changed) => gateway_api_changed && *leading.borrow(),
            Err(e) => {
                error!(error = %e, "controller failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                *leading.borrow()
            }
        };
        if !restarted {
            metrics.leader.set(0);
        }
        if *shutdown_rx.borrow_and_update() {
            break;
        }
    }
    let _ = elector_stop_tx.send(true);
    if let Some(task) = elector {
        let _ = task.await;
    }
    metrics.leader.set(0);
    Ok(())
}

/// Resolves once the channel holds `true` (or its sender is gone).
pub async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
