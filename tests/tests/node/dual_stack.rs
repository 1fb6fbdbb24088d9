//! A dual-stack pod on the real node (the shared site is dual-stack: its bridge carries an IPv6 /64 beside the
//! IPv4 /24, its Services have ClusterIPs of both families): the example server selected by an MCPServer, behind
//! a `RequireDualStack` Service. The injected guard listens on both of the pod's addresses (`[$(POD_IPS)]`), so
//! through the Service's IPv6 ClusterIP a request with an allowed Host (the Service's DNS name, which the
//! operator derives whatever the family) reaches the server, and a forged Host gets `421` — as does a Host that
//! is the IPv6 ClusterIP or the pod's IPv6 address in brackets: the allowlist holds names, not addresses (only
//! the pod's primary IP is allowed, for the kubelet's probes, and here that is the IPv4 one).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::chart_common::{self, NAMESPACE, eventually_or};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use mcp_guard_operator::crd::MCPServer;
use serde_json::{Value, json};
use testkit::cluster::{Cluster, SERVICE_CIDR_V6};
use testkit::mcp::{ClientKind, call_tool, initialize_request};
use testkit::node::POD_SUBNET_V6;

const NS: &str = "dual-stack";
const NAME: &str = "weather6";
const IMAGE: &str = "ghcr.io/mcp-guard/example-server:0.1.0";
const PORT: u16 = 8000;
const MANAGER: &str = "node-dual-stack";

fn diagnose(cluster: &Cluster) -> String {
    chart_common::kubectl_outputs(
        cluster,
        &[
            &["get", "pods", "-n", NS, "-o", "wide"][..],
            &[
                "get",
                "pods",
                "-n",
                NS,
                "-o",
                "jsonpath={.items[*].status.podIPs}",
            ][..],
            &["get", "services", "-n", NS, "-o", "yaml"][..],
            &["get", "events", "-n", NS, "--sort-by=.lastTimestamp"][..],
            &["-n", NS, "get", "mcpservers.mcpguard.dev", "-o", "yaml"][..],
            &[
                "-n",
                NS,
                "logs",
                &format!("deploy/{NAME}"),
                "-c",
                "mcp-guard",
                "--tail=40",
            ][..],
            &["-n", NAMESPACE, "logs", "deploy/mcp-guard", "--tail=20"][..],
        ],
    )
}

async fn apply<K: chart_common::Namespaced>(client: &kube::Client, value: Value) -> K {
    chart_common::apply_in::<K>(client, NS, MANAGER, &value).await
}

/// Whether `ip` lies in the /64 or /112 written as `prefix::/len` (the harness's ranges are whole groups).
fn in_v6_range(ip: IpAddr, range: &str) -> bool {
    let (net, len) = range.split_once('/').expect("a CIDR");
    let (IpAddr::V6(ip), Ok(IpAddr::V6(net)), Ok(len)) = (ip, net.parse::<IpAddr>(), len.parse::<u32>())
    else {
        return false;
    };
    let mask = u128::MAX << (128 - len);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// One bare `initialize` POST with `host` as its Host: (status, the refusal's `error.data.reason` if any).
fn initialize(addr: SocketAddr, host: &str) -> Result<(u16, Option<String>), String> {
    let response =
        testkit::http::raw(addr, &initialize_request("/mcp", host, &[])).map_err(|e| e.to_string())?;
    let reason = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|b| b["error"]["data"]["reason"].as_str().map(str::to_owned));
    Ok((response.status, reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_serves_a_dual_stack_pod_through_its_ipv6_cluster_ip() {
    let (cluster, _turn) = crate::site::shared().await;
    let client = cluster.client();
    let context = || diagnose(cluster);
    chart_common::opted_in_namespace(&client, NS).await;

    // The MCPServer before its pods: the webhook injects pods as they are created.
    apply::<MCPServer>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": NAME },
            "spec": { "selector": { "matchLabels": { "app": NAME } }, "port": PORT }
        }),
    )
    .await;
    // IPv6 first: the Service's primary ClusterIP is the IPv6 one; RequireDualStack fails loudly on a cluster
    // that cannot give both.
    let service = apply::<Service>(
        &client,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": NAME },
            "spec": { "selector": { "app": NAME },
                      "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"],
                      "ports": [{ "name": "mcp", "port": PORT, "targetPort": "mcp" }] }
        }),
    )
    .await;
    apply::<Deployment>(
        &client,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": NAME },
            "spec": { "replicas": 1, "selector": { "matchLabels": { "app": NAME } },
                      "template": { "metadata": { "labels": { "app": NAME } },
                                    "spec": { "containers": [{
                                        "name": "server", "image": IMAGE, "imagePullPolicy": "Never",
                                        "env": [{ "name": "PORT", "value": PORT.to_string() }],
                                        "ports": [{ "name": "mcp", "containerPort": PORT }] }] } } }
        }),
    )
    .await;

    let cluster_ips: Vec<IpAddr> = service
        .spec
        .and_then(|s| s.cluster_ips)
        .unwrap_or_default()
        .iter()
        .map(|ip| ip.parse().expect("a ClusterIP"))
        .collect();
    assert!(
        matches!(cluster_ips[..], [v6, v4] if in_v6_range(v6, SERVICE_CIDR_V6) && v4.is_ipv4()),
        "an IPv6 then an IPv4 ClusterIP: {cluster_ips:?}"
    );
    let cluster_ip_v6 = cluster_ips[0];

    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let pod = eventually_or(
        "the pod Ready with the guard",
        Duration::from_secs(180),
        context,
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={NAME}")))
                .await
                .map_err(|e| e.to_string())?;
            match list.items.as_slice() {
                [pod] if chart_common::is_ready(pod) => Ok(pod.clone()),
                other => Err(format!(
                    "{:?}",
                    other.iter().map(|p| &p.status).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await;
    let spec = pod.spec.as_ref().unwrap();
    assert!(
        spec.init_containers
            .iter()
            .flatten()
            .any(|c| c.name == "mcp-guard"),
        "the guard is injected"
    );
    let status = pod.status.as_ref().unwrap();
    let pod_ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.parse().expect("a pod IP"))
        .collect();
    // IPv4 stays the primary family (`status.podIP`); the second address is the bridge's IPv6 range's.
    assert!(
        matches!(pod_ips[..], [v4, v6] if v4.is_ipv4() && in_v6_range(v6, POD_SUBNET_V6)),
        "an IPv4 then an IPv6 pod IP: {pod_ips:?}"
    );
    assert_eq!(status.pod_ip.as_deref(), Some(pod_ips[0].to_string().as_str()));
    let pod_ip_v6 = pod_ips[1];

    // The operator derives names, which serve every family; no address, of either family, is in the allowlist.
    let server = Api::<MCPServer>::namespaced(client.clone(), NS);
    let service_host = format!("{NAME}.{NS}.svc.cluster.local");
    let hosts = eventually_or(
        "the Service's DNS names in the MCPServer's status",
        Duration::from_secs(60),
        context,
        || async {
            let hosts: Vec<String> = server
                .get(NAME)
                .await
                .map_err(|e| e.to_string())?
                .status
                .map(|s| s.allowed_hosts.into_iter().map(|h| h.value).collect())
                .unwrap_or_default();
            if hosts.contains(&service_host) {
                Ok(hosts)
            } else {
                Err(format!("{hosts:?}"))
            }
        },
    )
    .await;
    assert!(
        hosts
            .iter()
            .all(|h| h.parse::<IpAddr>().is_err() && !h.starts_with('[')),
        "no IP literal derived: {hosts:?}"
    );

    // The guard on the pod's IPv6 address itself, then through the IPv6 ClusterIP once kube-proxy has written
    // the Service's endpoints into ip6tables (a moment after the pod turns Ready).
    let pod_addr_v6 = SocketAddr::new(pod_ip_v6, PORT);
    assert_eq!(
        initialize(pod_addr_v6, &service_host),
        Ok((200, None)),
        "the guard answers on the pod's IPv6 address"
    );
    let svc_addr_v6 = SocketAddr::new(cluster_ip_v6, PORT);
    eventually_or(
        "the IPv6 ClusterIP routes to the guard",
        Duration::from_secs(60),
        context,
        || async {
            match initialize(svc_addr_v6, &service_host) {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // Refused with 421: a forged name, and IPv6 literals (bracketed, with and without a port) that are not allowed.
    for forged in [
        "attacker.test".to_string(),
        format!("[{cluster_ip_v6}]:{PORT}"),
        format!("[{cluster_ip_v6}]"),
        format!("[{pod_ip_v6}]:{PORT}"),
    ] {
        assert_eq!(
            initialize(svc_addr_v6, &forged),
            Ok((421, Some("host_not_allowed".into()))),
            "Host {forged} through the IPv6 ClusterIP"
        );
    }
    // An IPv6 literal that is not a valid authority is malformed, not merely unknown.
    assert_eq!(
        initialize(svc_addr_v6, &format!("{cluster_ip_v6}:{PORT}")),
        Ok((400, Some("malformed_host".into()))),
        "an unbracketed IPv6 Host"
    );

    // A real MCP client (the Python SDK) through the IPv6 ClusterIP: served with the Service's name, refused with
    // a forged one.
    let url = format!("http://[{cluster_ip_v6}]:{PORT}/mcp");
    let call = |headers: &[&str]| {
        call_tool(
            ClientKind::Python,
            &url,
            headers,
            "forecast",
            &json!({ "city": "Oslo" }),
        )
        .expect("run the MCP client")
    };
    let served = call(&[&format!("Host: {service_host}")]);
    assert!(served.ok(), "{}\n{}", served.report, served.output);
    assert_eq!(
        served.report["call"], "Oslo: snow showers, -2 C",
        "{}",
        served.report
    );
    call(&["Host: attacker.test"]).assert_rejected(
        "forged Host through the IPv6 ClusterIP",
        421,
        "host_not_allowed",
    );
}
