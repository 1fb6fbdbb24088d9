//! A dual-stack pod on the real node (the shared site is dual-stack: its bridge carries an IPv6 /64 beside the
//! IPv4 /24, its Services have ClusterIPs of both families): the example server selected by an MCPServer, behind
//! a `RequireDualStack` Service. The injected guard listens on both of the pod's addresses (`[$(POD_IPS)]`), so
//! through the Service's IPv6 ClusterIP a request with an allowed Host (the Service's DNS name, which the
//! operator derives whatever the family) reaches the server, and a forged Host gets `421`. The operator derives
//! no address; an IPv6 literal passes only when listed (here the ClusterIP, in `spec.hosts`): the pod's IPv6
//! address in brackets gets `421` (only the pod's primary IP is allowed, for the kubelet's probes, and here that
//! is the IPv4 one).

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
const IMAGE: &str = "ghcr.io/mcp-guard/example-server:0.2.0-dev";
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

    // The MCPServer (before its pods: the webhook injects pods as they are created) allows one IPv6 literal, the
    // Service's IPv6 ClusterIP in brackets, as a user who calls the Service by its address would write it.
    let allowed_literal = format!("[{cluster_ip_v6}]");
    apply::<MCPServer>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": NAME },
            "spec": { "selector": { "matchLabels": { "app": NAME } }, "port": PORT,
                      "hosts": [allowed_literal] }
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

    // The operator derives names from the Service, which serve every family, and no address of either family;
    // the one IP literal is the one the spec lists.
    let server = Api::<MCPServer>::namespaced(client.clone(), NS);
    let service_host = format!("{NAME}.{NS}.svc.cluster.local");
    let hosts = eventually_or(
        "the Service's DNS names in the MCPServer's status",
        Duration::from_secs(60),
        context,
        || async {
            let hosts: Vec<(String, Vec<String>)> = server
                .get(NAME)
                .await
                .map_err(|e| e.to_string())?
                .status
                .map(|s| {
                    s.allowed_hosts
                        .into_iter()
                        .map(|h| (h.value, h.sources))
                        .collect()
                })
                .unwrap_or_default();
            if hosts.iter().any(|(h, _)| *h == service_host) {
                Ok(hosts)
            } else {
                Err(format!("{hosts:?}"))
            }
        },
    )
    .await;
    let literals: Vec<&(String, Vec<String>)> = hosts
        .iter()
        .filter(|(h, _)| h.starts_with('[') || h.parse::<IpAddr>().is_ok())
        .collect();
    assert_eq!(
        literals,
        [&(allowed_literal.clone(), vec!["MCPServer spec.hosts".to_string()])],
        "the only IP literal is the spec's: {hosts:?}"
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

    // The allowed IPv6 literal passes, with and without a port and however the address is spelled (compared as
    // an address); refused with 421: a forged name, and IPv6 literals that are not allowed — the pod's own IPv6
    // address, and the ClusterIP's neighbour.
    let IpAddr::V6(cluster_ip_v6_addr) = cluster_ip_v6 else {
        unreachable!("an IPv6 ClusterIP")
    };
    let expanded = cluster_ip_v6_addr
        .segments()
        .map(|g| format!("{g:04X}"))
        .join(":");
    for allowed in [
        format!("[{cluster_ip_v6}]:{PORT}"),
        allowed_literal.clone(),
        format!("[{expanded}]"),
    ] {
        assert_eq!(
            initialize(svc_addr_v6, &allowed).map(|(status, _)| status),
            Ok(200),
            "Host {allowed} through the IPv6 ClusterIP"
        );
    }
    let neighbour = std::net::Ipv6Addr::from(u128::from(cluster_ip_v6_addr) ^ 1);
    for forged in [
        "attacker.test".to_string(),
        format!("[{pod_ip_v6}]:{PORT}"),
        format!("[{pod_ip_v6}]"),
        format!("[{neighbour}]:{PORT}"),
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
