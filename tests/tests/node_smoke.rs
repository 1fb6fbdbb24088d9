//! The real node: it registers and turns Ready, runs a pod from an image `make images` built (the example
//! server, the MCP SDK baked in) on the harness's bridge, serves it through a ClusterIP, and its teardown leaves
//! nothing behind. The node is dual-stack, as the shared node site is (a superset of a single-stack node: the same
//! teardown, plus the ip6tables chains and the IPv6 forwarding sysctl).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use testkit::cluster::Cluster;
use testkit::node::{BRIDGE, MachineLock, Node, NodeOptions};

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().expect("run sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a node could leave behind on this machine.
fn host_state() -> (String, String, String, String) {
    (
        // User-defined chains only (policy "-"): the kernel's built-in chains appear once a table is first used.
        sh("iptables-save | grep '^:' | grep ' - ' | cut -d' ' -f1 | sort"),
        sh("ip6tables-save | grep '^:' | grep ' - ' | cut -d' ' -f1 | sort"),
        sh("ls /run/netns 2>/dev/null; ip -o link show | grep -c veth || true"),
        sh(
            "sysctl -n vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward \
            net.ipv6.conf.all.forwarding",
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_on_the_real_node_and_teardown_leaves_nothing() {
    // The machine's node lock around the before/after comparison: no other node may run in between.
    let lock = MachineLock::acquire().expect("the machine's node lock");
    let before = host_state();
    let cluster = Cluster::start_dual_stack_at("127.0.0.1")
        .await
        .expect("start a control plane");
    let options = NodeOptions {
        dual_stack: true,
        ..NodeOptions::default()
    };
    let node = Node::start_holding(&cluster, lock, options)
        .await
        .expect("start the real node");
    let node_dir = node.dir().to_path_buf();

    let ns = cluster.namespace("node-smoke").await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "server", "labels": { "app": "server" } },
        "spec": {
            "containers": [{
                "name": "server",
                "image": "ghcr.io/mcp-guard/example-server:0.2.0-dev",
                "imagePullPolicy": "Never",
                // The example binds 127.0.0.1 by default; this smoke test reaches it from the host directly.
                "command": ["/opt/mcp/bin/python", "-c",
                    "import runpy, sys; from mcp.server.mcpserver import MCPServer; \
                     s = MCPServer('smoke'); s.run('streamable-http', host='0.0.0.0', port=8000)"],
                "readinessProbe": { "tcpSocket": { "port": 8000 }, "periodSeconds": 1 },
            }],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client(), &ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "server" },
        "spec": { "selector": { "app": "server" }, "ports": [{ "port": 80, "targetPort": 8000 }] },
    }))
    .unwrap();
    let svc = Api::<Service>::namespaced(cluster.client(), &ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create the service");
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");

    let deadline = Instant::now() + Duration::from_secs(180);
    let pod_ip = loop {
        let p = pods.get("server").await.expect("get the pod");
        let status = p.status.unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            break status.pod_ip.expect("a Ready pod has an IP");
        }
        assert!(
            Instant::now() < deadline,
            "pod not Ready after 180s: phase {:?}, containers {:?}",
            status.phase,
            status.container_statuses
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        pod_ip.starts_with("10.217.33."),
        "pod IP {pod_ip} outside the harness's subnet"
    );

    // The SDK answers a POST without a session: any HTTP answer proves the path (pod IP, then kube-proxy's ClusterIP).
    for url in [
        format!("http://{pod_ip}:8000/mcp"),
        format!("http://{cluster_ip}:80/mcp"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match testkit::http::get(&url) {
                Ok(resp) => {
                    assert!(
                        resp.status >= 200 && resp.status < 500,
                        "{url}: status {}",
                        resp.status
                    );
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "{url}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let lock = node.stop();
    drop(cluster);
    assert!(
        sh(&format!("ip link show {BRIDGE} 2>&1")).contains("does not exist")
            || sh("ip -o link").find(BRIDGE).is_none(),
        "bridge {BRIDGE} left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*node_dir.to_string_lossy()),
        "mounts left under {}",
        node_dir.display()
    );
    assert_eq!(
        host_state(),
        before,
        "iptables or ip6tables chains, netns/veths or sysctls differ after teardown"
    );
    assert!(
        sh("pgrep -f '[c]ontainerd-shim.*mcp-guard-cluster-'")
            .trim()
            .is_empty(),
        "shims left behind"
    );
    drop(lock);
}
