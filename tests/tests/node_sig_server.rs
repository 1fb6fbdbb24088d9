//! On a real node with a real NetworkPolicy enforcer (kube-router's firewall, see `testkit::node`), the chart
//! (`helm install --wait`, the images `make images` built) guards a server of the Kubernetes SIG's
//! mcp-lifecycle-operator by `spec.serverRef`. Their CRD is the fixture of `tests/fixtures/sig-mcp-lifecycle/`;
//! their MCPServer and what their controller creates for it are made here as it would: a Deployment whose pod
//! carries `mcp-server: fetch` and runs the example server unchanged on `0.0.0.0:8080` (container port `mcp`), a
//! ClusterIP Service with `targetPort: mcp`, and their NetworkPolicy admitting only port 8080.
//!
//! The pod is injected (the guard takes over the port name `mcp`) and turns 2/2 Ready. Sent the way their
//! verifier sends its handshake — to the Service, with `Host: fetch.<ns>.svc.cluster.local:8080` — from the host
//! (a raw `initialize` and the Python SDK client calling a tool) and from another pod (through the enforcer),
//! the handshake completes; a forged Host gets the guard's `421 host_not_allowed` on both paths.
#![allow(clippy::unwrap_used)]

mod chart_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chart_common::{NAMESPACE, eventually_or, kubectl_or};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mcp_guard_operator::crd::MCPServer;
use mcp_guard_operator::pod_contract::{SIDECAR_NAME, UNGUARDED_PORT_NAME};
use mcp_guard_operator::sources::sig_servers::SigMCPServer;
use serde_json::{Value, json};
use testkit::cluster::Cluster;
use testkit::mcp::{ClientKind, call_tool, initialize_request};
use testkit::node::{NodeCluster, NodeOptions};
use testkit::tools::workspace_root;

const NS: &str = "sig-tools";
/// Their MCPServer, and so their Deployment, Service and NetworkPolicy.
const THEIRS: &str = "fetch";
/// Ours, referencing theirs.
const OURS: &str = "fetch-guard";
/// Their `spec.config.port`: the server's container port `mcp` and their Service's port.
const PORT: u16 = 8080;
/// The guard's port in the `GuardPort` layout (the webhook's default).
const GUARD_PORT: i32 = 15080;
const SERVER_IMAGE: &str = "ghcr.io/mcp-guard/example-server:0.2.0-dev";
const MANAGER: &str = "node-sig";
/// The exit codes of the probing pod.
const PROBE_OK: i32 = 0;
const PROBE_HANDSHAKE_FAILED: i32 = 20;
const PROBE_FORGED_NOT_REFUSED: i32 = 21;

/// What a person would look at when something here does not come up: pods, events, the operator's log, the
/// guard's.
fn diagnose(cluster: &Cluster) -> String {
    chart_common::kubectl_outputs(
        cluster,
        &[
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
            &["-n", NS, "get", "mcpservers.mcpguard.dev", "-o", "yaml"][..],
            &["-n", NAMESPACE, "logs", "deploy/mcp-guard", "--tail=40"][..],
            &[
                "-n",
                NS,
                "logs",
                &format!("deploy/{THEIRS}"),
                "-c",
                SIDECAR_NAME,
                "--tail=40",
            ][..],
        ],
    )
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    kubectl_or(cluster, args, || diagnose(cluster))
}

/// Polls `f` until it returns Ok, failing with its last error and the cluster's state after `timeout`.
async fn eventually<T, F, Fut>(cluster: &Cluster, what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    eventually_or(what, timeout, || diagnose(cluster), f).await
}

async fn apply<K: chart_common::Namespaced>(client: &kube::Client, value: Value) -> K {
    chart_common::apply_in(client, NS, MANAGER, &value).await
}

/// Their MCPServer with the status their controller writes once it created the Service.
async fn their_server(client: &kube::Client) {
    let api = Api::<SigMCPServer>::namespaced(client.clone(), NS);
    let pp = PatchParams::apply(MANAGER).force();
    let body = json!({
        "apiVersion": "mcp.x-k8s.io/v1beta1", "kind": "MCPServer",
        "metadata": { "name": THEIRS },
        "spec": { "source": { "type": "ContainerImage", "containerImage": { "ref": SERVER_IMAGE } },
                  "config": { "port": PORT, "path": "/mcp" } }
    });
    api.patch(THEIRS, &pp, &Patch::Apply(&body))
        .await
        .expect("apply their MCPServer");
    let status = json!({
        "apiVersion": "mcp.x-k8s.io/v1beta1", "kind": "MCPServer",
        "status": { "serviceName": THEIRS, "deploymentName": THEIRS,
                    "address": { "url": format!("http://{THEIRS}.{NS}.svc.cluster.local:{PORT}/mcp") } }
    });
    api.patch_status(THEIRS, &pp, &Patch::Apply(&status))
        .await
        .expect("their status");
}

/// The Deployment, Service and NetworkPolicy their controller creates for the server: the example server's image,
/// bound to all interfaces on their port (as a third-party server image is).
async fn their_children(client: &kube::Client) -> Service {
    let labels = json!({ "app": "mcp-server", "mcp-server": THEIRS });
    apply::<NetworkPolicy>(
        client,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": THEIRS, "labels": labels },
            "spec": { "podSelector": { "matchLabels": { "mcp-server": THEIRS } }, "policyTypes": ["Ingress"],
                      "ingress": [{ "ports": [{ "port": PORT, "protocol": "TCP" }] }] }
        }),
    )
    .await;
    let service = apply::<Service>(
        client,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": THEIRS, "labels": labels },
            "spec": { "type": "ClusterIP", "selector": { "mcp-server": THEIRS },
                      "ports": [{ "name": "mcp", "port": PORT, "targetPort": "mcp", "protocol": "TCP" }] }
        }),
    )
    .await;
    let serve = format!(
        "import sys; sys.path.insert(0, '/app'); from server import server; \
         server.run('streamable-http', host='0.0.0.0', port={PORT})"
    );
    apply::<Deployment>(
        client,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": THEIRS, "labels": labels },
            "spec": { "replicas": 1, "selector": { "matchLabels": labels },
                      "template": { "metadata": { "labels": labels },
                                    "spec": { "containers": [{
                                        "name": "mcp-server", "image": SERVER_IMAGE, "imagePullPolicy": "Never",
                                        "command": ["/opt/mcp/bin/python", "-c", serve],
                                        "ports": [{ "name": "mcp", "containerPort": PORT, "protocol": "TCP" }] }] } } }
        }),
    )
    .await;
    service
}

/// Their server's pod, Ready with both its containers (the guard, the server) ready.
async fn their_pod(cluster: &Cluster) -> Pod {
    let pods = Api::<Pod>::namespaced(cluster.client(), NS);
    eventually(
        cluster,
        "their pod Ready, 2/2",
        Duration::from_secs(240),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("mcp-server={THEIRS}")))
                .await
                .map_err(|e| e.to_string())?;
            let status = |p: &Pod| {
                let s = p.status.clone().unwrap_or_default();
                s.init_container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .chain(s.container_statuses.unwrap_or_default())
                    .map(|c| (c.name, c.ready, c.restart_count))
                    .collect::<Vec<_>>()
            };
            match list.items.as_slice() {
                [pod]
                    if chart_common::is_ready(pod)
                        && status(pod).len() == 2
                        && status(pod).iter().all(|c| c.1) =>
                {
                    Ok(pod.clone())
                }
                pods => Err(format!(
                    "{:?}",
                    pods.iter()
                        .map(|p| (chart_common::is_ready(p), status(p)))
                        .collect::<Vec<_>>()
                )),
            }
        },
    )
    .await
}

/// One bare `initialize` POST to `addr` with `host` as its Host: the status and body (retried while kube-proxy's
/// rules for the Service may still lag its endpoints).
async fn initialize(addr: SocketAddr, host: &str) -> (u16, String) {
    let host = host.to_string();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match testkit::http::raw(addr, &initialize_request("/mcp", &host, &[])) {
                Ok(r) => return (r.status, r.text()),
                Err(e) => assert!(Instant::now() < deadline, "{addr}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .unwrap()
}

/// A pod (not their server's: not injected, outside every NetworkPolicy's selector) that sends what their
/// verifier sends, an MCP `initialize` to the Service with the handshake Host, then the same with a forged Host;
/// its exit code says which answer was wrong, its log shows both. Each attempt is bounded to 5 s, six attempts
/// per request while the connection fails.
fn probe_pod(service_ip: &str, handshake: &str) -> Value {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}"#;
    let script = format!(
        "import sys, time, urllib.request, urllib.error\n\
         def post(host):\n\
         \x20   req = urllib.request.Request('http://{service_ip}:{PORT}/mcp', data=b'{body}', method='POST',\n\
         \x20       headers={{'Host': host, 'Content-Type': 'application/json',\n\
         \x20                'Accept': 'application/json, text/event-stream'}})\n\
         \x20   for attempt in range(6):\n\
         \x20       try:\n\
         \x20           with urllib.request.urlopen(req, timeout=5) as r:\n\
         \x20               return r.status, r.read().decode()\n\
         \x20       except urllib.error.HTTPError as e:\n\
         \x20           return e.code, e.read().decode()\n\
         \x20       except OSError as e:\n\
         \x20           last = repr(e)\n\
         \x20           time.sleep(2)\n\
         \x20   return 0, last\n\
         status, text = post('{handshake}')\n\
         print('handshake', status, text, flush=True)\n\
         if status != 200 or 'serverInfo' not in text: sys.exit({PROBE_HANDSHAKE_FAILED})\n\
         status, text = post('attacker.test')\n\
         print('forged', status, text, flush=True)\n\
         if status != 421 or 'host_not_allowed' not in text: sys.exit({PROBE_FORGED_NOT_REFUSED})\n\
         sys.exit({PROBE_OK})\n"
    );
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "verifier", "labels": { "role": "verifier" } },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "probe", "image": SERVER_IMAGE, "imagePullPolicy": "Never",
                "command": ["/opt/mcp/bin/python", "-c", script],
            }],
        },
    })
}

/// Waits (bounded) for the probe pod to finish; its exit code.
async fn probe_exit_code(cluster: &Cluster, pods: &Api<Pod>, name: &str) -> i32 {
    eventually(
        cluster,
        "the verifier pod finished",
        Duration::from_secs(120),
        || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            chart_common::exit_code(&p).ok_or_else(|| format!("{:?}", p.status.map(|s| s.phase)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_guards_a_sig_server_on_a_real_node() {
    let site = NodeCluster::start_with(NodeOptions {
        network_policies: true,
        ..NodeOptions::default()
    })
    .await
    .expect("start a control plane and the real node with its NetworkPolicy enforcer");
    let cluster = &site.cluster;
    let client = cluster.client();

    // Their CRD first: the operator watches their MCPServers when their API is served at its start.
    cluster
        .apply_crd_files(&workspace_root().join("tests/fixtures/sig-mcp-lifecycle"))
        .await
        .expect("apply the mcp.x-k8s.io fixture CRD");
    chart_common::install_on_node(cluster, || diagnose(cluster));

    chart_common::opted_in_namespace(&client, NS).await;

    // Theirs, then ours (before their pods: the webhook injects pods as they are created).
    their_server(&client).await;
    apply::<MCPServer>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": OURS },
            "spec": { "serverRef": { "apiGroup": "mcp.x-k8s.io", "kind": "MCPServer", "name": THEIRS } }
        }),
    )
    .await;
    let handshake = format!("{THEIRS}.{NS}.svc.cluster.local:{PORT}");
    let servers = Api::<MCPServer>::namespaced(client.clone(), NS);
    eventually(
        cluster,
        "our MCPServer Ready, allowing their handshake Host, its NetworkPolicy written",
        Duration::from_secs(120),
        || async {
            let s = servers.get(OURS).await.map_err(|e| e.to_string())?;
            let status = s.status.clone().unwrap_or_default();
            let condition = |t: &str| {
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == "True")
            };
            let allowed = status.allowed_hosts.iter().any(|e| e.value == handshake);
            if condition("Ready") && condition("NetworkPolicy") && allowed {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;

    // What their controller creates.
    let service = their_children(&client).await;
    let pod = their_pod(cluster).await;
    let spec = pod.spec.clone().unwrap();
    let guard = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == SIDECAR_NAME)
        .expect("the guard injected");
    let port_names = |ports: &Option<Vec<k8s_openapi::api::core::v1::ContainerPort>>| {
        ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect::<Vec<_>>()
    };
    assert!(
        port_names(&guard.ports).contains(&("mcp".to_string(), GUARD_PORT)),
        "the guard takes over the port name their Service targets: {:?}",
        guard.ports
    );
    let server = spec.containers.iter().find(|c| c.name == "mcp-server").unwrap();
    assert_eq!(
        port_names(&server.ports),
        vec![(UNGUARDED_PORT_NAME.to_string(), i32::from(PORT))],
        "their server keeps its port, renamed"
    );
    let table = kubectl(
        cluster,
        &["-n", NS, "get", "pods", "-l", &format!("mcp-server={THEIRS}")],
    );
    assert!(
        table
            .lines()
            .skip(1)
            .any(|l| l.contains(" 2/2 ") && l.contains("Running")),
        "kubectl get pods shows their pod 2/2 Running:\n{table}"
    );

    // From the host, through the ClusterIP with their verifier's Host (the host does not resolve cluster DNS).
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    let vip: SocketAddr = format!("{cluster_ip}:{PORT}").parse().unwrap();
    let (status, body) = initialize(vip, &handshake).await;
    assert_eq!(status, 200, "their handshake through the Service: {body}");
    assert!(body.contains("serverInfo"), "not an initialize result: {body}");
    let (status, body) = initialize(vip, "attacker.test").await;
    assert_eq!(status, 421, "a forged Host through the Service: {body}");
    assert!(body.contains("host_not_allowed"), "{body}");

    // A real MCP client (the Python SDK) with the same Host: a whole session, a tool called.
    let url = format!("http://{cluster_ip}:{PORT}/mcp");
    let host_header = format!("Host: {handshake}");
    let session = call_tool(
        ClientKind::Python,
        &url,
        &[&host_header],
        "forecast",
        &json!({ "city": "Oslo" }),
    )
    .expect("run the MCP client");
    assert!(session.ok(), "{}\n{}", session.report, session.output);
    assert_eq!(session.report["server"], "weather", "{}", session.report);
    assert_eq!(
        session.report["call"], "Oslo: snow showers, -2 C",
        "{}",
        session.report
    );
    call_tool(
        ClientKind::Python,
        &url,
        &["Host: attacker.test"],
        "forecast",
        &json!({ "city": "Oslo" }),
    )
    .expect("run the MCP client")
    .assert_rejected("Python SDK, forged Host", 421, "host_not_allowed");

    // From another pod, as their verifier runs: through the enforcer, which exempts the host's own traffic but
    // not a pod's. Their NetworkPolicy alone (port 8080) refuses the Service's traffic to the guard's port (with
    // the chart's `policy.networkPolicy.enabled=false` this pod is refused); ours admits it.
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(probe_pod(&cluster_ip, &handshake)).unwrap(),
    )
    .await
    .expect("create the verifier pod");
    let code = probe_exit_code(cluster, &pods, "verifier").await;
    let log = kubectl(cluster, &["-n", NS, "logs", "verifier"]);
    assert_eq!(
        code, PROBE_OK,
        "{PROBE_HANDSHAKE_FAILED}: the handshake was not answered; {PROBE_FORGED_NOT_REFUSED}: the forged Host \
         was not refused:\n{log}"
    );
}
