//! `kubectl mcp-guard scan --probe` on a real node with the chart installed (`helm install --wait`, the images
//! `make images` built), in one opted-in namespace holding:
//!
//! - `guarded`: the example server as shipped (127.0.0.1, the SDK's own check), selected by an MCPServer, so its
//!   pod carries the guard; its Service's port is named `mcp`;
//! - `open`: the same image bound to all interfaces, no check at all (the SDK advisory's case); its Service says
//!   `appProtocol: mcp`;
//! - `localhost`: bound to all interfaces but keeping the SDK's localhost-only Host/Origin check; its Service's
//!   port is named `mcp-http`;
//! - `web`: a plain HTTP server behind a Service with a port named `http`: not an MCP server.
//!
//! The scan reports the three MCP servers and not `web`; the probe (a JSON-RPC `ping` through the API server's
//! Service proxy) finds that `open` answers a forged Host and a forged Origin, that the guard refuses them
//! (421, 403) and that the SDK's own check refuses the forged Host (421), reported as not answering. The
//! operator's `unguarded_servers` gauge (this branch's controller, run here) counts `open` and `localhost`.

use std::process::Command;
use std::time::Duration;

use crate::chart_common::{self, NAMESPACE, eventually_or, text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use mcp_guard_operator::controller::{ControllerReadiness, ControllerSettings};
use mcp_guard_operator::crd::MCPServer;
use mcp_guard_operator::metrics::{ControllerMetrics, NamespaceLabels};
use mcp_guard_operator::run::{ControllerOptions, run_controller};
use serde_json::{Value, json};
use testkit::cluster::Cluster;
use testkit::tools::cargo_bin;

const NS: &str = "scan-fleet";
const IMAGE: &str = "ghcr.io/mcp-guard/example-server:0.2.0-dev";
const PORT: i32 = 8000;
const MANAGER: &str = "node-scan";

fn diagnose(cluster: &Cluster) -> String {
    chart_common::kubectl_outputs(
        cluster,
        &[
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "events", "-n", NS, "--sort-by=.lastTimestamp"][..],
            &["-n", NS, "get", "mcpservers.mcpguard.dev", "-o", "yaml"][..],
            &["-n", NAMESPACE, "logs", "deploy/mcp-guard", "--tail=40"][..],
        ],
    )
}

async fn apply<K: chart_common::Namespaced>(client: &kube::Client, value: Value) {
    chart_common::apply_in::<K>(client, NS, MANAGER, &value).await;
}

/// A Deployment of one pod labelled `app: <name>` running `command` (the image's own when `None`), its container
/// port `mcp`, and a Service on it with `port`.
async fn deploy(client: &kube::Client, name: &str, command: Option<Vec<String>>, port: Value) {
    let mut container = json!({
        "name": "server", "image": IMAGE, "imagePullPolicy": "Never",
        "env": [{ "name": "PORT", "value": PORT.to_string() }],
        "ports": [{ "name": "mcp", "containerPort": PORT }],
    });
    if let Some(command) = command {
        container["command"] = json!(command);
    }
    apply::<Deployment>(
        client,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "replicas": 1, "selector": { "matchLabels": { "app": name } },
                      "template": { "metadata": { "labels": { "app": name } },
                                    "spec": { "containers": [container] } } }
        }),
    )
    .await;
    apply::<Service>(
        client,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name },
            "spec": { "selector": { "app": name }, "ports": [port] }
        }),
    )
    .await;
}

/// The example server bound to all interfaces, with these `run` arguments added.
fn all_interfaces(extra: &str) -> Vec<String> {
    vec![
        "/opt/mcp/bin/python".into(),
        "-c".into(),
        format!(
            "import sys; sys.path.insert(0, '/app'); from server import server\n\
             from mcp.server.transport_security import TransportSecuritySettings\n\
             server.run('streamable-http', host='0.0.0.0', port={PORT}{extra})"
        ),
    ]
}

/// Runs the plugin: (exit code, stdout, stderr).
fn scan(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cargo_bin("kubectl-mcp_guard"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["-n", NS, "scan", "--probe"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_finds_the_unguarded_servers_on_a_real_node() {
    let (cluster, _turn) = crate::site::shared().await;
    let client = cluster.client();
    let context = || diagnose(cluster);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": NS, "labels": { "mcpguard.dev/injection": "enabled" } },
            }))
            .unwrap(),
        )
        .await
        .expect("the opted-in namespace");

    // The MCPServer before its pods: the webhook injects pods as they are created.
    apply::<MCPServer>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": "guarded" },
            "spec": { "selector": { "matchLabels": { "app": "guarded" } }, "port": PORT }
        }),
    )
    .await;
    deploy(
        &client,
        "guarded",
        None,
        json!({ "name": "mcp", "port": PORT, "targetPort": "mcp" }),
    )
    .await;
    deploy(
        &client,
        "open",
        Some(all_interfaces("")),
        json!({ "name": "web", "port": PORT, "targetPort": PORT, "appProtocol": "mcp" }),
    )
    .await;
    let localhost_only = ", transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=True, \
                          allowed_hosts=['127.0.0.1:*', 'localhost:*'], \
                          allowed_origins=['http://127.0.0.1:*', 'http://localhost:*'])";
    deploy(
        &client,
        "localhost",
        Some(all_interfaces(localhost_only)),
        json!({ "name": "mcp-http", "port": PORT, "targetPort": PORT }),
    )
    .await;
    deploy(
        &client,
        "web",
        Some(vec![
            "/opt/mcp/bin/python".into(),
            "-m".into(),
            "http.server".into(),
            PORT.to_string(),
        ]),
        json!({ "name": "http", "port": 80, "targetPort": PORT }),
    )
    .await;

    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    eventually_or("four pods Ready", Duration::from_secs(240), context, || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list.items.iter().filter(|p| chart_common::is_ready(p)).count();
        if ready == 4 {
            Ok(())
        } else {
            Err(format!("{ready} of {} Ready", list.items.len()))
        }
    })
    .await;

    // The Service proxy may answer 503 for a moment after the pods turn Ready (endpoints lag): retried, bounded.
    let report = eventually_or(
        "a scan with every probe answered",
        Duration::from_secs(60),
        context,
        || async {
            let (code, out, err) = scan(cluster, &["-o", "json"]);
            let report: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}{err}"))?;
            let unknown = report["servers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
                .any(|p| p["probe"]["forgedHost"]["answer"] == "unknown");
            match (code, unknown) {
                (1, false) => Ok(report),
                _ => Err(format!("exit {code}: {out}{err}")),
            }
        },
    )
    .await;
    let servers = report["servers"].as_array().unwrap();
    let names: Vec<&str> = servers.iter().map(|s| s["server"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["service/guarded", "service/localhost", "service/open"],
        "the three MCP servers, not the web Service: {report:#}"
    );
    let server = |name: &str| servers.iter().find(|s| s["server"] == name).unwrap();
    let probe = |name: &str| server(name)["ports"][0]["probe"].clone();

    assert_eq!(
        server("service/guarded")["guard"],
        json!({ "state": "guarded", "mcpServer": "guarded" }),
        "{report:#}"
    );
    assert_eq!(
        probe("service/guarded"),
        json!({ "forgedHost": { "answer": "refused", "status": 421 },
                "forgedOrigin": { "answer": "refused", "status": 403 } }),
        "the guard refuses both: {report:#}"
    );

    assert_eq!(server("service/open")["guard"], json!({ "state": "unguarded" }));
    // A ping without a session gets the SDK's `400 Missing session ID`, as the Service's own name does: past
    // its (absent) Host/Origin check, into its session handling — a page would `initialize` first and drive it.
    assert_eq!(
        probe("service/open"),
        json!({ "forgedHost": { "answer": "answered", "status": 400 },
                "forgedOrigin": { "answer": "answered", "status": 400 } }),
        "bound to all interfaces with no check, it answers both: {report:#}"
    );
    assert_eq!(
        server("service/open")["fix"]["object"]["spec"],
        json!({ "selector": { "matchLabels": { "app": "open" } }, "port": PORT,
                "traffic": { "layout": "GuardPort" } }),
        "{report:#}"
    );

    assert_eq!(
        server("service/localhost")["guard"],
        json!({ "state": "unguarded" })
    );
    assert_eq!(
        probe("service/localhost")["forgedHost"],
        json!({ "answer": "refused", "status": 421 }),
        "the SDK's own localhost check refuses a forged Host: {report:#}"
    );

    // The table a person reads says the same.
    let (code, table, err) = scan(cluster, &[]);
    assert_eq!(code, 1, "{table}{err}");
    let row = |server: &str| {
        table
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("no row {server}:\n{table}"))
            .to_string()
    };
    assert!(
        row("service/open:web").contains("yes (400, as to its own name)"),
        "{table}"
    );
    assert!(row("service/guarded:mcp").contains("no (421)"), "{table}");
    assert!(!table.contains("service/web"), "{table}");

    // The operator counts the two unguarded Services without probing, from its caches. The chart's operator
    // runs the image `make images` built from main; this branch's controller runs here, scoped to the namespace,
    // against the same API server (it writes what the chart's writes for `guarded`).
    let metrics = ControllerMetrics::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(run_controller(
        client.clone(),
        ControllerOptions {
            settings: ControllerSettings {
                namespace: Some(NS.into()),
                discovery_interval: Duration::from_secs(1),
                identity: MANAGER.into(),
                ..Default::default()
            },
            lease: None,
        },
        metrics.clone(),
        ControllerReadiness::default(),
        stopped,
    ));
    let unguarded = || {
        metrics
            .unguarded_servers
            .get(&NamespaceLabels { namespace: NS.into() })
            .map(|g| g.get())
    };
    eventually_or(
        "the unguarded_servers gauge counts open and localhost",
        Duration::from_secs(60),
        context,
        || async {
            match unguarded() {
                Some(2) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), controller).await;
}
