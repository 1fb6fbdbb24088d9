//! The `mcp-guard-operator` binary at start-up: a clear error when the CRDs are missing or RBAC denies a
//! permission (naming it), and with everything in place: admin endpoints, a reconcile, graceful shutdown that
//! releases the Lease. Its own control plane (this test binary's shared one), which starts without CRDs.

mod operator_common;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use nix::sys::signal::Signal;
use operator_common::*;
use serde_json::json;
use testkit::cluster::Cluster;
use testkit::process::{Proc, tail, wait_for_http};
use testkit::tools::{cargo_bin, free_port};

fn operator(kubeconfig: &std::path::Path, admin_port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(cargo_bin("mcp-guard-operator"));
    cmd.env("KUBECONFIG", kubeconfig)
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME")
        .env("RUST_LOG", "info")
        .args([
            "--no-webhook",
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .args(extra);
    cmd
}

/// Runs the operator expecting it to fail at start-up; returns its output.
fn expect_startup_failure(name: &str, cmd: Command) -> String {
    let mut proc = Proc::spawn(name, cmd).expect("start mcp-guard-operator");
    let code = proc.wait_exit(Duration::from_secs(30)).unwrap_or_else(|e| {
        panic!(
            "{e}; the operator should fail at start-up:\n{}",
            tail(&proc.logs(), 30)
        )
    });
    let logs = proc.logs();
    assert_ne!(code, Some(0), "start-up must fail:\n{logs}");
    logs
}

/// The steps share this binary's control plane and run in order: the first needs it without CRDs, which the
/// second installs (a control plane of their own each would cost several seconds more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_then_a_working_binary() {
    let cluster = Cluster::shared().await;
    missing_crds_are_named_with_the_command_that_installs_them(cluster);
    cluster.apply_crds().await.expect("apply crds/");
    let ns = cluster.namespace("op-bin").await;
    missing_rbac_permissions_are_named(cluster, &ns);
    a_working_binary_serves_admin_endpoints_reconciles_and_releases_its_lease(cluster, &ns).await;
}

fn missing_crds_are_named_with_the_command_that_installs_them(cluster: &Cluster) {
    let logs = expect_startup_failure(
        "operator-no-crds",
        operator(cluster.kubeconfig(), free_port(), &["--no-leader-election"]),
    );
    assert!(logs.contains("mcpservers.mcpguard.dev"), "{logs}");
    assert!(logs.contains("mcpguardpolicies.mcpguard.dev"), "{logs}");
    assert!(logs.contains("kubectl apply -f crds/"), "{logs}");
}

/// CRDs present, but a user without any RBAC: every missing permission named.
fn missing_rbac_permissions_are_named(cluster: &Cluster, ns: &str) {
    let nobody = cluster
        .user_kubeconfig("mcp-guard-nobody", &[])
        .expect("user kubeconfig");
    let logs = expect_startup_failure(
        "operator-no-rbac",
        operator(&nobody, free_port(), &["--leader-election-namespace", ns]),
    );
    assert!(logs.contains("RBAC denies"), "{logs}");
    for missing in [
        "cannot list mcpguard.dev/mcpservers (cluster-wide)",
        "cannot watch networking.k8s.io/ingresses (cluster-wide)",
        "cannot patch mcpguard.dev/mcpservers/status (cluster-wide)",
        "cannot create events.k8s.io/events (cluster-wide)",
        &format!("cannot update coordination.k8s.io/leases mcp-guard-operator in namespace {ns}"),
        &format!("cannot create coordination.k8s.io/leases in namespace {ns}"),
    ] {
        assert!(logs.contains(missing), "missing {missing:?} in:\n{logs}");
    }
}

async fn lease_holder(client: &kube::Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get("mcp-guard-operator")
        .await
        .expect("Lease")
        .spec
        .and_then(|s| s.holder_identity)
}

/// Everything in place: admin endpoints, leadership, a reconcile, graceful shutdown releasing the Lease.
async fn a_working_binary_serves_admin_endpoints_reconciles_and_releases_its_lease(
    cluster: &Cluster,
    ns: &str,
) {
    let client = cluster.client();
    let admin_port = free_port();
    let mut proc = Proc::spawn(
        "operator-ok",
        operator(
            cluster.kubeconfig(),
            admin_port,
            &[
                "--leader-election-namespace",
                ns,
                "--identity",
                "op-bin-1",
                "--watch-namespace",
                ns,
            ],
        ),
    )
    .expect("start mcp-guard-operator");
    let base = format!("http://127.0.0.1:{admin_port}");
    if let Err(e) = wait_for_http(&format!("{base}/readyz"), Duration::from_secs(30)) {
        panic!("{e}\n{}", tail(&proc.logs(), 30));
    }
    assert_eq!(
        testkit::http::get(&format!("{base}/livez"))
            .expect("livez")
            .status,
        200
    );

    Scenario::new(&client, ns)
        .service(service("weather", "weather", json!([{ "port": 8000 }])))
        .server(mcpserver(
            "weather",
            "weather",
            8000,
            json!({ "hosts": ["bin.example.com"] }),
        ))
        .apply()
        .await;
    config_allowing(&client, ns, "weather", "bin.example.com", Duration::from_secs(30)).await;
    // The ConfigMap is written before the reconcile finishes (status, Events, then metrics).
    let metrics = eventually("reconcile metrics", Duration::from_secs(10), || async {
        let m = testkit::http::get(&format!("{base}/metrics"))
            .expect("metrics")
            .text();
        m.contains(r#"mcp_guard_operator_reconciles_total{result="ok"}"#)
            .then_some(m)
    })
    .await;
    assert!(metrics.contains("mcp_guard_operator_leader 1"), "{metrics}");
    assert!(
        metrics.contains("mcp_guard_operator_allowlist_hosts{"),
        "{metrics}"
    );
    assert_eq!(lease_holder(&client, ns).await.as_deref(), Some("op-bin-1"));

    proc.signal(Signal::SIGTERM);
    let code = proc
        .wait_exit(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert_eq!(code, Some(0), "graceful shutdown:\n{}", tail(&proc.logs(), 30));
    assert_eq!(
        lease_holder(&client, ns).await,
        None,
        "the Lease is released on shutdown"
    );
}
