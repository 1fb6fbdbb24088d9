//! On the real node with a real NetworkPolicy enforcer (kube-router's firewall, see `testkit::node`), the operator
//! (controller and webhook, in this process) guards servers that run unchanged in their images:
//! - `GuardPort`: a server bound to `0.0.0.0:8080`. A client through the Service (named `targetPort`) reaches the
//!   guard and initializes an MCP session; a forged Host gets `421`; another pod that dials the server's own port
//!   at the pod IP is refused by the network, while the same pod reaches the guard's port (so it is the policy,
//!   not the path, that refuses).
//! - `SharedPort` (the default): the example server on `127.0.0.1:8000`. The same client succeeds, a forged Host
//!   gets `421` through the Service and at the pod IP alike.
//!
//! Then the node's teardown leaves nothing behind, the enforcer's chains and ipsets included.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use serde_json::json;
use testkit::node::{IPSETS, Node, NodeOptions};

mod operator_common;
mod webhook_common;

/// The chart's default; the webhook test module needs one.
const REINVOCATION_POLICY: &str = "Never";
const GUARD_IMAGE: &str = "ghcr.io/mcp-guard/mcp-guard:0.2.0-dev";
const SERVER_IMAGE: &str = "ghcr.io/mcp-guard/example-server:0.2.0-dev";
/// The exit codes of the probing pod.
const PROBE_OK: i32 = 0;
const PROBE_BYPASS: i32 = 10;
const PROBE_NO_PATH: i32 = 11;

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().expect("run sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn apply<K>(client: &kube::Client, ns: &str, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    K::DynamicType: Default,
{
    let name = value["metadata"]["name"].as_str().unwrap().to_string();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply("node-np").force(),
            &Patch::Apply(&value),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// Waits (bounded) for the pod to be Ready and returns its IP.
async fn ready_pod_ip(pods: &Api<Pod>, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let p = pods.get(name).await.expect("get pod");
        let status = p.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            return status.pod_ip.expect("a Ready pod has an IP");
        }
        assert!(
            Instant::now() < deadline,
            "{name} not Ready after 180s: phase {:?}, init {:?}, containers {:?}",
            status.phase,
            status.init_container_statuses,
            status.container_statuses
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An MCP `initialize` to `addr` with `Host: host`: the status and body.
async fn initialize(addr: &str, host: &str) -> (u16, String) {
    let (addr, host) = (addr.to_string(), host.to_string());
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match testkit::http::raw(
                addr.parse().unwrap(),
                &testkit::mcp::initialize_request("/mcp", &host, &[]),
            ) {
                Ok(r) => return (r.status, r.text()),
                // kube-proxy's rules for a new Service may lag its endpoints by a moment.
                Err(e) => assert!(Instant::now() < deadline, "{addr}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .unwrap()
}

fn assert_initialized(what: &str, (status, body): &(u16, String)) {
    assert_eq!(*status, 200, "{what}: {body}");
    assert!(
        body.contains("serverInfo"),
        "{what}: not an initialize result: {body}"
    );
}

fn assert_host_refused(what: &str, (status, body): &(u16, String)) {
    assert_eq!(*status, 421, "{what}: {body}");
    assert!(body.contains("host_not_allowed"), "{what}: {body}");
}

/// A pod that dials `target_ip:blocked` (expected refused or timed out) and `target_ip:open` (expected to
/// connect), each bounded to 3 s; its exit code says which happened.
fn probe_pod(name: &str, target_ip: &str, blocked: u16, open: u16) -> serde_json::Value {
    let script = format!(
        "import socket, sys\n\
         def dial(port):\n\
         \x20   try:\n\
         \x20       socket.create_connection(('{target_ip}', port), timeout=3).close()\n\
         \x20       return True\n\
         \x20   except OSError:\n\
         \x20       return False\n\
         if dial({blocked}): sys.exit({PROBE_BYPASS})\n\
         if not dial({open}): sys.exit({PROBE_NO_PATH})\n\
         sys.exit({PROBE_OK})\n"
    );
    json!({
        "apiVersion": "v1", "kind": "Pod",
        // Not an MCP server: outside every MCPServer's selector, so not injected.
        "metadata": { "name": name, "labels": { "role": "prober" } },
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
async fn probe_exit_code(pods: &Api<Pod>, name: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = pods.get(name).await.expect("get probe pod");
        let terminated = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.clone());
        if let Some(t) = terminated {
            return t.exit_code;
        }
        assert!(
            Instant::now() < deadline,
            "probe pod {name} did not finish in 120s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_closes_the_server_port_on_the_real_node() {
    // Another checkout's node may hold the machine until ours starts (the node lock), so compare only what the
    // enforcer makes: its chains, and the ipsets.
    let enforcer_state = || {
        (
            sh("iptables-save | grep '^:' | cut -d' ' -f1 | grep -E '^:KUBE-(ROUTER|NWPLCY|POD-FW)' | sort"),
            sh(IPSETS),
        )
    };
    // The machine's node lock around the before/after comparison: no other node may run in between.
    let lock = testkit::node::MachineLock::acquire().expect("the machine's node lock");
    let before = enforcer_state();
    let env = webhook_common::env().await;
    let cluster = env.cluster;
    let client = cluster.client();
    let node = Node::start_holding(
        cluster,
        lock,
        NodeOptions {
            network_policies: true,
            ..NodeOptions::default()
        },
    )
    .await
    .expect("start the real node with its NetworkPolicy enforcer");
    assert!(
        sh("iptables-save -t filter").contains("KUBE-ROUTER-FORWARD"),
        "enforcer chains"
    );

    // The guard image this node imported (the webhook test module's policy names one that is not on the node).
    Api::<MCPGuardPolicy>::all(client.clone())
        .patch(
            "default",
            &PatchParams::apply(webhook_common::MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
                "metadata": { "name": "default" },
                "spec": { "sidecar": { "image": GUARD_IMAGE, "imagePullPolicy": "Never" } }
            })),
        )
        .await
        .expect("policy");
    let ns = webhook_common::opted_in_namespace(cluster, "node-np", &[]).await;
    let op = operator_common::Operator::start(client.clone(), &ns, None, Some(false));
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);

    // GuardPort: a third-party-style server bound to all interfaces, run unchanged.
    apply::<MCPServer>(
        &client,
        &ns,
        json!({ "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer", "metadata": { "name": "zero" },
                "spec": { "selector": { "matchLabels": { "app": "zero" } }, "port": 8080,
                          "traffic": { "layout": "GuardPort" } } }),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        json!({ "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer", "metadata": { "name": "local" },
                "spec": { "selector": { "matchLabels": { "app": "local" } }, "port": 8000 } }),
    )
    .await;
    let zero_svc: Service = apply(
        &client,
        &ns,
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "zero" },
                "spec": { "selector": { "app": "zero" }, "ports": [{ "port": 80, "targetPort": "mcp" }] } }),
    )
    .await;
    let local_svc: Service = apply(
        &client,
        &ns,
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "local" },
                "spec": { "selector": { "app": "local" }, "ports": [{ "port": 80, "targetPort": 8000 }] } }),
    )
    .await;
    // The operator writes the ConfigMaps the pods mount and the NetworkPolicies, before the pods exist.
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    for name in ["zero", "local"] {
        operator_common::server_with(&servers, name, "NetworkPolicy written", |s| {
            operator_common::condition(s, "NetworkPolicy").is_some_and(|c| c.0 == "True")
        })
        .await;
    }
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "zero", "labels": { "app": "zero" } },
            "spec": { "containers": [{
                "name": "server", "image": SERVER_IMAGE, "imagePullPolicy": "Never",
                "command": ["/opt/mcp/bin/python", "-c",
                    "from mcp.server.mcpserver import MCPServer; \
                     MCPServer('zero').run('streamable-http', host='0.0.0.0', port=8080)"],
                "ports": [{ "name": "mcp", "containerPort": 8080 }],
            }] },
        }))
        .unwrap(),
    )
    .await
    .expect("create the 0.0.0.0 server pod");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "local", "labels": { "app": "local" } },
            "spec": { "containers": [{
                "name": "server", "image": SERVER_IMAGE, "imagePullPolicy": "Never",
                "env": [{ "name": "PORT", "value": "8000" }],
                "ports": [{ "name": "mcp", "containerPort": 8000 }],
            }] },
        }))
        .unwrap(),
    )
    .await
    .expect("create the 127.0.0.1 server pod");
    let zero_ip = ready_pod_ip(&pods, "zero").await;
    let local_ip = ready_pod_ip(&pods, "local").await;

    let ip = |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap();
    let zero_host = format!("zero.{ns}.svc.cluster.local");
    let local_host = format!("local.{ns}.svc.cluster.local");
    let zero_vip = format!("{}:80", ip(&zero_svc));
    let local_vip = format!("{}:80", ip(&local_svc));

    // GuardPort: through the Service to the guard; a forged Host refused by it.
    assert_initialized(
        "GuardPort via the Service",
        &initialize(&zero_vip, &zero_host).await,
    );
    assert_host_refused(
        "GuardPort, forged Host",
        &initialize(&zero_vip, "attacker.test").await,
    );
    // A pod dialling the server's own port at the pod IP is refused by the network; the guard's port answers.
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(probe_pod("probe-zero", &zero_ip, 8080, 15080)).unwrap(),
    )
    .await
    .expect("create probe pod");
    assert_eq!(
        probe_exit_code(&pods, "probe-zero").await,
        PROBE_OK,
        "{PROBE_BYPASS}: the server's port 8080 was reachable from another pod; {PROBE_NO_PATH}: the guard's port was not"
    );

    // SharedPort: the same through the Service, and a forged Host refused at the pod IP as well (the guard holds
    // it; the server listens on loopback only).
    assert_initialized(
        "SharedPort via the Service",
        &initialize(&local_vip, &local_host).await,
    );
    assert_host_refused(
        "SharedPort, forged Host",
        &initialize(&local_vip, "attacker.test").await,
    );
    assert_host_refused(
        "SharedPort, forged Host at the pod IP",
        &initialize(&format!("{local_ip}:8000"), "attacker.test").await,
    );

    op.stop().await;
    let lock = node.stop();
    assert_eq!(
        enforcer_state(),
        before,
        "the enforcer's iptables chains or ipsets left behind"
    );
    assert!(
        sh("ip -o link").find(testkit::node::BRIDGE).is_none(),
        "bridge left behind"
    );
    drop(lock);
}
