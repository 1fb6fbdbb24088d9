//! The site the scenarios share: a control plane on the node's address, the real node, and the chart installed
//! as docs/install.md says. The site is dual-stack (pods get an IPv6 address beside the IPv4 one, Services may
//! ask for IPv6 ClusterIPs): IPv4 stays the primary family, so the scenarios that do not ask for IPv6 see what
//! a single-stack site gives them, and the dual-stack scenario needs no node of its own.
//!
//! It lives in a static, so it is never dropped: its processes and the node's teardown are left to their
//! watchdogs, which run them when the test process exits and release the machine's node lock after.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use testkit::cluster::Cluster;
use testkit::node::{NodeCluster, NodeOptions};
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

use crate::chart_common;

/// How many scenarios run on the node at once. Two keep its two cores busy while one scenario waits (on pods
/// starting, on the kubelet's sync, on a soak) without starving the pods of the one that is measuring.
pub const AT_ONCE: usize = 2;

static SITE: OnceCell<Result<NodeCluster, String>> = OnceCell::const_new();
static TURNS: Semaphore = Semaphore::const_new(AT_ONCE);

/// The shared site's cluster, started on first use, and this scenario's turn on it (hold it to the end).
pub async fn shared() -> (&'static Cluster, SemaphorePermit<'static>) {
    let turn = TURNS.acquire().await.expect("the semaphore is never closed");
    // A failed start is kept, not retried: the node's watchdog holds the machine's lock until this process
    // exits, so a second start here would wait for ever.
    let site = SITE
        .get_or_init(|| async {
            AssertUnwindSafe(start())
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(panic_message(&*panic)))
        })
        .await;
    match site {
        Ok(site) => (&site.cluster, turn),
        Err(e) => panic!("the shared node site did not start: {e}"),
    }
}

/// The whole site for one scenario, once the others on it have finished their turns (they wait for this one):
/// for a scenario that takes the operator or its webhook away, which every other scenario needs.
pub async fn alone() -> SemaphorePermit<'static> {
    TURNS
        .acquire_many(AT_ONCE as u32)
        .await
        .expect("the semaphore is never closed")
}

async fn start() -> Result<NodeCluster, String> {
    let site = NodeCluster::start_with(NodeOptions {
        dual_stack: true,
        ..NodeOptions::default()
    })
    .await
    .map_err(|e| format!("start a control plane and the real node: {e:#}"))?;
    let cluster = &site.cluster;
    chart_common::install_on_node(cluster, || diagnose(cluster));
    Ok(site)
}

fn diagnose(cluster: &Cluster) -> String {
    chart_common::kubectl_outputs(
        cluster,
        &[
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
            &[
                "-n",
                chart_common::NAMESPACE,
                "logs",
                "deploy/mcp-guard",
                "--tail=40",
            ][..],
        ],
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}
