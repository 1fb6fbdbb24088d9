//! What a user runs, on a real node: `helm install` of the chart with the images `make images` built (the
//! operator and its webhook in-cluster, as a Deployment with the chart's ServiceAccount), then
//! `kubectl apply -f examples/ingress/weather.yaml` (the example server's image, offline). The server's pods
//! are created with the guard injected by the webhook (called by the API server through its Service) and turn
//! 2/2 Ready; from the host, through a pod IP and through the ClusterIP, real MCP clients (Python and TypeScript
//! SDKs) succeed, a forged Host gets 421 and a forged Origin 403; an allowlist change reaches the running guard
//! through the kubelet's ConfigMap update; the pods run a soak without an eviction or a restart; and deleting a
//! pod drains it: its open SSE stream runs until the server ends it, the guard exits cleanly, and clients of the
//! Service are not affected. Then the outages ([`outages`]): with the operator (and so its webhook) scaled to
//! zero, the running guards keep their last allowlist while an Ingress change waits; the webhook's
//! `failurePolicy: Fail` refuses a pod of the opted-in namespace and `Ignore` lets one start without the guard;
//! back up, the operator converges and reports the unguarded pod (status, Event, metric) with the command that
//! fixes it, which does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::chart_common::{self, NAMESPACE, eventually_or, is_ready, kubectl_or, run, statuses};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use mcp_guard_operator::crd::MCPServer;
use serde_json::{Value, json};
use testkit::cluster::Cluster;
use testkit::mcp::{ClientKind, call_tool, initialize_request};
use testkit::tools::workspace_root;

const EXAMPLE: &str = "examples/ingress/weather.yaml";
const NS: &str = "mcp-weather";
const PORT: u16 = 8000;
const INGRESS_HOST: &str = "weather.example.com";
const SERVICE_HOST: &str = "weather.mcp-weather.svc.cluster.local";
/// The guard's admin port (the webhook's default), reachable on the pod IP.
const ADMIN_PORT: u16 = 15081;
/// How long the soak runs: longer than the kubelet's eviction manager needs to notice a volume over its limit
/// (it measured the first wave's pods as over within 35–65 s).
const SOAK: Duration = Duration::from_secs(125);

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    kubectl_or(cluster, args, || diagnose(cluster))
}

/// What a person would look at when something here does not come up: pods, events, the operator's log.
fn diagnose(cluster: &Cluster) -> String {
    chart_common::kubectl_outputs(
        cluster,
        &[
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
            &["-n", NAMESPACE, "logs", "deploy/mcp-guard", "--tail=40"][..],
            &["-n", NS, "logs", "deploy/weather", "-c", "mcp-guard", "--tail=40"][..],
        ],
    )
}

/// Polls `f` until it returns Ok, failing with its last error and the cluster's state after `timeout`.
async fn eventually<T, F, Fut>(cluster: &Cluster, what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    eventually_or(what, timeout, || diagnose(cluster), f).await
}

/// The example's pods, each Ready with both containers (the guard as a native sidecar, and the server) ready.
async fn weather_pods(cluster: &Cluster, timeout: Duration) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(cluster.client(), NS);
    let ready = |p: &Pod| is_ready(p) && statuses(p).len() == 2 && statuses(p).iter().all(|c| c.ready);
    let summary = |p: &Pod| {
        format!(
            "{}: ready={} containers={:?}",
            p.name_any(),
            is_ready(p),
            statuses(p)
                .iter()
                .map(|c| (c.name.clone(), c.ready, c.restart_count))
                .collect::<Vec<_>>()
        )
    };
    eventually(cluster, "2 weather pods Ready, 2/2", timeout, || {
        chart_common::live_pods_when(&pods, "app=weather", 2, ready, summary)
    })
    .await
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP")
}

/// One bare `initialize` POST with `host` as its Host: the guard's verdict (or the server's answer) as a status.
fn initialize_status(addr: SocketAddr, host: &str) -> anyhow::Result<u16> {
    Ok(testkit::http::raw(addr, &initialize_request("/mcp", host, &[]))?.status)
}

fn forecast_call(kind: ClientKind, url: &str, headers: &[&str]) -> testkit::mcp::ClientRun {
    call_tool(kind, url, headers, "forecast", &json!({ "city": "Oslo" })).expect("run the MCP client")
}

fn assert_forecast(run: &testkit::mcp::ClientRun, what: &str) {
    assert!(run.ok(), "{what}: {}\n{}", run.report, run.output);
    assert_eq!(run.report["server"], "weather", "{what}: {}", run.report);
    assert_eq!(
        run.report["tools"],
        json!(["forecast", "now"]),
        "{what}: {}",
        run.report
    );
    assert_eq!(
        run.report["call"], "Oslo: snow showers, -2 C",
        "{what}: {}",
        run.report
    );
}

/// The example namespace's events that tell of trouble: (event name, reason, count).
fn trouble_events(cluster: &Cluster) -> Vec<(String, String, i64)> {
    let events: Value =
        serde_json::from_str(&kubectl(cluster, &["-n", NS, "get", "events", "-o", "json"])).unwrap();
    let mut out: Vec<(String, String, i64)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                e["reason"].as_str(),
                Some("Evicted" | "Killing" | "Unhealthy" | "BackOff" | "FailedMount" | "Failed")
            )
        })
        .map(|e| {
            (
                format!(
                    "{} {}",
                    e["metadata"]["name"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ),
                e["reason"].as_str().unwrap_or("").to_string(),
                e["count"].as_i64().unwrap_or(1),
            )
        })
        .collect();
    out.sort();
    out
}

/// `name value` of a guard metric sample, e.g. `mcp_guard_config_reloads_total{result="ok"}`.
fn metric(metrics: &str, sample: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

fn guard_metrics(ip: &str) -> String {
    testkit::http::get(&format!("http://{ip}:{ADMIN_PORT}/metrics"))
        .map(|r| r.text())
        .unwrap_or_default()
}

/// An MCP session's standalone SSE stream (`GET /mcp`), opened on a raw socket so that the test sees exactly
/// how it ends.
struct SseStream {
    socket: TcpStream,
    head: String,
}

impl SseStream {
    fn open(addr: SocketAddr, host: &str) -> SseStream {
        let init = testkit::http::raw(addr, &initialize_request("/mcp", host, &[])).expect("initialize");
        assert_eq!(init.status, 200, "initialize: {}", init.text());
        let session = init
            .header("mcp-session-id")
            .expect("the server names the session")
            .to_string();
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let notify = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\n\
             MCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{initialized}",
            initialized.len()
        );
        let ack = testkit::http::raw(addr, notify.as_bytes()).expect("notifications/initialized");
        assert_eq!(ack.status, 202, "notifications/initialized: {}", ack.text());

        let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        socket
            .write_all(
                format!(
                    "GET /mcp HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
                     Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-06-18\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("send the GET");
        socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = socket.read(&mut byte).expect("read the stream's head");
            assert_eq!(
                n,
                1,
                "stream closed before its head: {}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        SseStream {
            socket,
            head: String::from_utf8_lossy(&head).into_owned(),
        }
    }

    /// Reads until the stream ends (bounded by `limit`): how it ended and the bytes it carried.
    fn read_to_end(mut self, limit: Duration) -> (String, Vec<u8>) {
        let deadline = Instant::now() + limit;
        let mut body = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if Instant::now() > deadline {
                return ("still open".into(), body);
            }
            match self.socket.read(&mut buf) {
                Ok(0) => return ("eof".into(), body),
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return (format!("error: {e}"), body),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_and_the_example_run_on_a_real_node() {
    let (cluster, turn) = crate::site::shared().await;
    let client = cluster.client();

    // --- helm install, the operator in-cluster (the site installed the chart) ---------------------------------
    // Helm returned because the chart's hook Job saw the webhooks answer through the API server (a Ready operator
    // pod alone is not reachable through its Service yet): the Job ran to completion and was deleted after it.
    let job_events = kubectl_or(
        cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Job,involvedObject.name=mcp-guard-webhook-check",
            "-o",
            "jsonpath={range .items[*]}{.reason} {end}",
        ],
        || diagnose(cluster),
    );
    assert!(
        job_events.contains("Completed"),
        "the webhook-check hook Job did not complete: {job_events:?}\n{}",
        diagnose(cluster)
    );
    let mut job = cluster.kubectl();
    job.args(["-n", NAMESPACE, "get", "job", "mcp-guard-webhook-check"]);
    assert!(
        !run(job).status.success(),
        "the hook Job is deleted once it succeeded"
    );

    // The cluster's ingress controller would bring its class; the operator counts Ingresses of known classes.
    let class: IngressClass = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": { "name": "nginx" },
        "spec": { "controller": "k8s.io/ingress-nginx" },
    }))
    .unwrap();
    Api::<IngressClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();

    // --- the example, as the README says -----------------------------------------------------------------
    kubectl(
        cluster,
        &["apply", "-f", workspace_root().join(EXAMPLE).to_str().unwrap()],
    );
    let servers = Api::<MCPServer>::namespaced(client.clone(), NS);
    eventually(
        cluster,
        "MCPServer weather Ready",
        Duration::from_secs(120),
        || async {
            let s = servers.get("weather").await.map_err(|e| e.to_string())?;
            let status = s.status.clone().unwrap_or_default();
            let hosts: Vec<&str> = status.allowed_hosts.iter().map(|e| e.value.as_str()).collect();
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready && hosts.contains(&INGRESS_HOST) && hosts.contains(&SERVICE_HOST) {
                Ok(())
            } else {
                Err(format!("ready={ready}, hosts {hosts:?}"))
            }
        },
    )
    .await;
    let pods = weather_pods(cluster, Duration::from_secs(240)).await;
    let table = kubectl(cluster, &["-n", NS, "get", "pods", "-l", "app=weather"]);
    assert_eq!(
        table
            .lines()
            .skip(1)
            .filter(|l| l.contains(" 2/2 ") && l.contains("Running"))
            .count(),
        2,
        "kubectl get pods shows both pods 2/2 Running:\n{table}"
    );
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        let guard = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == "mcp-guard")
            .expect("the guard injected as an init container");
        assert_eq!(
            guard.restart_policy.as_deref(),
            Some("Always"),
            "a native sidecar"
        );
        assert!(guard.readiness_probe.is_some() && guard.startup_probe.is_some());
        for c in statuses(pod) {
            assert_eq!(c.restart_count, 0, "{} restarted: {c:?}", c.name);
        }
    }
    let uids: BTreeMap<String, String> = pods
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap(), p.metadata.uid.clone().unwrap()))
        .collect();
    let ip = pod_ip(&pods[0]);
    let pod_addr: SocketAddr = format!("{ip}:{PORT}").parse().unwrap();
    let svc = Api::<Service>::namespaced(client.clone(), NS)
        .get("weather")
        .await
        .unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    let svc_addr: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();

    // Readiness fails while a server starts (the guard is ready once its upstream accepts connections): that is
    // the point. From here on, nothing may go wrong.
    let trouble_at_ready = trouble_events(cluster);
    assert!(
        trouble_at_ready
            .iter()
            .all(|(_, reason, _)| reason == "Unhealthy"),
        "{trouble_at_ready:?}"
    );
    // kube-proxy writes the Service's new endpoints into iptables a moment after the pods turn Ready (longer while
    // other scenarios' Services are written too): the soak starts once the ClusterIP serves.
    eventually(
        cluster,
        "the ClusterIP routes to the pods",
        Duration::from_secs(60),
        || async {
            match initialize_status(svc_addr, SERVICE_HOST) {
                Ok(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // The soak: a request through the ClusterIP every 2 s for SOAK, beside everything below until the drain.
    let soak = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + SOAK;
        let mut requests = 0;
        while Instant::now() < end {
            let status = initialize_status(svc_addr, SERVICE_HOST).expect("a request through the ClusterIP");
            assert_eq!(status, 200, "request {requests} of the soak");
            requests += 1;
            std::thread::sleep(Duration::from_secs(2));
        }
        requests
    });

    // --- real MCP clients, by pod IP and through the ClusterIP ----------------------------------------------
    let pod_url = format!("http://{ip}:{PORT}/mcp");
    let svc_url = format!("http://{cluster_ip}/mcp");
    let ingress_host = format!("Host: {INGRESS_HOST}");
    let service_host = format!("Host: {SERVICE_HOST}");
    assert_forecast(
        &forecast_call(ClientKind::Python, &pod_url, &[&ingress_host]),
        "Python SDK, pod IP, the Ingress host",
    );
    assert_forecast(
        &forecast_call(ClientKind::TypeScript, &svc_url, &[&service_host]),
        "TypeScript SDK, ClusterIP, the Service DNS name",
    );
    assert_forecast(
        &forecast_call(
            ClientKind::Python,
            &svc_url,
            &[&ingress_host, "Origin: https://chat.example.com"],
        ),
        "Python SDK, ClusterIP, the allowed web origin",
    );
    forecast_call(ClientKind::Python, &svc_url, &["Host: attacker.test"]).assert_rejected(
        "forged Host through the ClusterIP",
        421,
        "host_not_allowed",
    );
    forecast_call(
        ClientKind::TypeScript,
        &pod_url,
        &[&ingress_host, "Origin: http://attacker.test"],
    )
    .assert_rejected("forged Origin at the pod IP", 403, "origin_not_allowed");

    // --- an allowlist change reaches the running guards through the kubelet's ConfigMap update ----------------
    const NEW_HOST: &str = "beta.weather.example.com";
    assert_eq!(
        initialize_status(pod_addr, NEW_HOST).unwrap(),
        421,
        "not allowed yet"
    );
    let reloads_before = metric(
        &guard_metrics(&ip),
        "mcp_guard_config_reloads_total{result=\"ok\"}",
    );
    let ingress: Ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": { "name": "weather-beta", "namespace": NS },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{ "host": NEW_HOST, "http": { "paths": [{ "path": "/mcp", "pathType": "Prefix",
                "backend": { "service": { "name": "weather", "port": { "name": "http" } } } }] } }],
        },
    }))
    .unwrap();
    Api::<Ingress>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &ingress)
        .await
        .unwrap();
    for pod in &pods {
        let addr: SocketAddr = format!("{}:{PORT}", pod_ip(pod)).parse().unwrap();
        // The kubelet rewrites ConfigMap volumes on its pod sync (every syncFrequency, plus its cache's TTL).
        eventually(
            cluster,
            "the new Ingress host allowed by the running guard",
            Duration::from_secs(180),
            || async {
                match initialize_status(addr, NEW_HOST) {
                    Ok(200) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    let reloads_after = metric(
        &guard_metrics(&ip),
        "mcp_guard_config_reloads_total{result=\"ok\"}",
    );
    assert!(
        reloads_after > reloads_before,
        "the guard reloaded its config in place: {reloads_before:?} -> {reloads_after:?}"
    );

    // --- the soak's end: requests kept passing, and nothing was evicted or restarted ------------------------
    let requests = soak.await.unwrap();
    eprintln!("soak: {requests} requests through the ClusterIP in {SOAK:?}, all 200");
    let after = weather_pods(cluster, Duration::from_secs(5)).await;
    for pod in &after {
        let name = pod.metadata.name.clone().unwrap();
        assert_eq!(
            uids.get(&name),
            pod.metadata.uid.as_ref(),
            "pod {name} was replaced during the soak"
        );
        for c in statuses(pod) {
            assert_eq!(
                c.restart_count, 0,
                "{name}/{} restarted during the soak: {c:?}",
                c.name
            );
        }
    }
    let trouble = trouble_events(cluster);
    assert_eq!(
        trouble, trouble_at_ready,
        "no eviction, kill, back-off, failed mount or failed probe once the pods were Ready"
    );

    // --- deleting a pod drains it ---------------------------------------------------------------------------
    let victim = pods[0].metadata.name.clone().unwrap();
    let stream = SseStream::open(pod_addr, SERVICE_HOST);
    assert!(
        stream.head.starts_with("HTTP/1.1 200") && stream.head.to_lowercase().contains("text/event-stream"),
        "{}",
        stream.head
    );
    let pod_api = Api::<Pod>::namespaced(client.clone(), NS);
    let watch = watcher(
        pod_api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={victim}")),
    );
    let last_seen = tokio::spawn(async move {
        let mut last = None;
        let mut events = std::pin::pin!(watch);
        while let Ok(Some(event)) = events.try_next().await {
            match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => last = Some(p),
                watcher::Event::Delete(p) => return Some(p),
                _ => {}
            }
        }
        last
    });
    pod_api.delete(&victim, &DeleteParams::default()).await.unwrap();
    let grace = pods[0]
        .spec
        .as_ref()
        .unwrap()
        .termination_grace_period_seconds
        .unwrap_or(30);
    // Once the EndpointSlice no longer counts the victim ready, kube-proxy sends the Service's clients to the other
    // pod while this one terminates. (Before that, a request that reaches the stopping server gets the guard's
    // 502 upstream_unavailable: Kubernetes' endpoint-removal race, which a preStop sleep on the app container
    // closes; the example has one, docs/webhook.md explains.)
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), NS);
    eventually(
        cluster,
        "the victim out of the Service's ready endpoints",
        Duration::from_secs(60),
        || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=weather"))
                .await
                .map_err(|e| e.to_string())?;
            let victim_ready = list.items.iter().flat_map(|s| &s.endpoints).any(|e| {
                e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(victim.as_str())
                    && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
            });
            if victim_ready {
                Err("still ready".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    for i in 0..5 {
        assert_eq!(
            initialize_status(svc_addr, SERVICE_HOST).unwrap(),
            200,
            "request {i} through the ClusterIP while {victim} terminates"
        );
    }
    let reader = std::thread::spawn(move || stream.read_to_end(Duration::from_secs(grace as u64 + 60)));
    let (ended, body) = reader.join().unwrap();
    assert_ne!(
        ended,
        "still open",
        "the stream outlived the pod: {}",
        String::from_utf8_lossy(&body)
    );
    let last = tokio::time::timeout(Duration::from_secs(grace as u64 + 60), last_seen)
        .await
        .expect("the pod is gone in time")
        .unwrap()
        .expect("the pod's last state");
    let final_states: Vec<(String, Option<i32>, Option<String>)> = statuses(&last)
        .into_iter()
        .map(|c| {
            let t = c.state.and_then(|s| s.terminated);
            (c.name, t.as_ref().map(|t| t.exit_code), t.and_then(|t| t.reason))
        })
        .collect();
    eprintln!(
        "stream ended: {ended} after {} bytes; final container states {final_states:?}",
        body.len()
    );
    let guard_exit = final_states
        .iter()
        .find(|(n, _, _)| n == "mcp-guard")
        .and_then(|(_, code, _)| *code);
    assert_eq!(
        guard_exit,
        Some(0),
        "the guard drained and exited cleanly: {final_states:?}"
    );

    // The operator scaled away and the webhook's failure policy changed would fail the other scenarios' pods
    // and allowlists: the outages run with the site to themselves.
    drop(turn);
    let _alone = crate::site::alone().await;
    outages(cluster, NEW_HOST).await;
}

/// The IPs of the pods of the operator's namespace: its Deployment's (controller and webhook), nothing else runs there.
fn operator_pod_ips(cluster: &Cluster) -> Vec<String> {
    kubectl(
        cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ],
    )
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// The operator down, then the webhook's two failure policies, then the operator back: what happens to the
/// running guards, to new pods, and what the operator reports once it returns. `allowed` is a host the running
/// guards allow through the Ingress `weather-beta`.
async fn outages(cluster: &Cluster, allowed: &str) {
    const MOVED: &str = "gamma.weather.example.com";
    let client = cluster.client();
    let pods = weather_pods(cluster, Duration::from_secs(240)).await;
    let addr: SocketAddr = format!("{}:{PORT}", pod_ip(&pods[0])).parse().unwrap();

    // --- the operator down: the running guards keep enforcing their last config -----------------------------
    kubectl(
        cluster,
        &["-n", NAMESPACE, "scale", "deploy/mcp-guard", "--replicas=0"],
    );
    eventually(
        cluster,
        "no operator pod left",
        Duration::from_secs(120),
        || async {
            match operator_pod_ips(cluster) {
                ips if ips.is_empty() => Ok(()),
                ips => Err(format!("{ips:?}")),
            }
        },
    )
    .await;
    // An allowlist change queued while nobody writes the ConfigMap.
    kubectl(
        cluster,
        &[
            "-n",
            NS,
            "patch",
            "ingress",
            "weather-beta",
            "--type=json",
            &format!(r#"-p=[{{"op":"replace","path":"/spec/rules/0/host","value":"{MOVED}"}}]"#),
        ],
    );
    assert_eq!(
        initialize_status(addr, allowed).unwrap(),
        200,
        "the old host still passes"
    );
    assert_eq!(
        initialize_status(addr, MOVED).unwrap(),
        421,
        "the new host is still refused"
    );

    // --- the webhook unreachable, failurePolicy Fail (the chart's default): no pod starts unguarded -----------
    let pod_api = Api::<Pod>::namespaced(client.clone(), NS);
    let stray: Pod = serde_json::from_value(json!({
        "metadata": { "name": "stray", "labels": { "app": "weather" } },
        "spec": { "containers": [{ "name": "server", "image": "ghcr.io/mcp-guard/example-server:0.2.0-dev" }] },
    }))
    .unwrap();
    let refused = pod_api
        .create(&PostParams::default(), &stray)
        .await
        .expect_err("a pod of the opted-in namespace is refused while the webhook is unreachable");
    let message = refused.to_string();
    eprintln!("failurePolicy Fail, webhook unreachable: {message}");
    assert!(
        message.contains("failed calling webhook") && message.contains("inject.mcpguard.dev"),
        "the refusal says which webhook could not be called: {message}"
    );

    // --- failurePolicy Ignore (what policy.injection.failurePolicy=Ignore renders): a pod starts unguarded ----
    let failure_policy = |policy: &str| {
        let patch =
            format!(r#"-p=[{{"op":"replace","path":"/webhooks/0/failurePolicy","value":"{policy}"}}]"#);
        kubectl(
            cluster,
            &[
                "patch",
                "mutatingwebhookconfiguration",
                "mcp-guard",
                "--type=json",
                &patch,
            ],
        );
    };
    failure_policy("Ignore");
    let guarded: Vec<String> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    kubectl(cluster, &["-n", NS, "scale", "deploy/weather", "--replicas=3"]);
    let unguarded = eventually(
        cluster,
        "a third weather pod running without the guard",
        Duration::from_secs(180),
        || async {
            let list = pod_api
                .list(&ListParams::default().labels("app=weather"))
                .await
                .map_err(|e| e.to_string())?;
            let new = list
                .items
                .into_iter()
                .find(|p| !guarded.contains(p.metadata.name.as_ref().unwrap()))
                .ok_or("not created yet")?;
            match is_ready(&new) {
                true => Ok(new),
                false => Err(format!("{} not Ready", new.metadata.name.clone().unwrap())),
            }
        },
    )
    .await;
    failure_policy("Fail");
    let unguarded_name = unguarded.metadata.name.clone().unwrap();
    let containers: Vec<String> = statuses(&unguarded).into_iter().map(|c| c.name).collect();
    assert_eq!(
        containers,
        vec!["server"],
        "{unguarded_name} started without the guard"
    );
    assert!(
        !unguarded.annotations().contains_key("mcpguard.dev/injected"),
        "{unguarded_name}"
    );

    // Still, long after the Ingress changed (an operator that runs rewrites the ConfigMap within a second): the
    // ConfigMap and the running guard hold the old allowlist.
    let config = kubectl(
        cluster,
        &[
            "-n",
            NS,
            "get",
            "configmap",
            "weather-mcp-guard",
            "-o",
            "jsonpath={.data.guard\\.json}",
        ],
    );
    assert!(
        config.contains(allowed) && !config.contains(MOVED),
        "the ConfigMap as the operator last wrote it: {config}"
    );
    assert_eq!(
        initialize_status(addr, allowed).unwrap(),
        200,
        "the old host still passes"
    );
    assert_eq!(
        initialize_status(addr, MOVED).unwrap(),
        421,
        "the new host is still refused"
    );

    // --- the operator back: it converges, and reports the unguarded pod with its fix -----------------------
    kubectl(
        cluster,
        &["-n", NAMESPACE, "scale", "deploy/mcp-guard", "--replicas=1"],
    );
    chart_common::rolled_out(cluster, NAMESPACE, "deploy/mcp-guard", "180s", || {
        diagnose(cluster)
    });
    // The kubelet rewrites the ConfigMap volume on its pod sync (every syncFrequency, plus its cache's TTL).
    eventually(
        cluster,
        "the moved host allowed by the running guard",
        Duration::from_secs(180),
        || async {
            match (initialize_status(addr, MOVED), initialize_status(addr, allowed)) {
                (Ok(200), Ok(421)) => Ok(()),
                other => Err(format!("(moved, old): {other:?}")),
            }
        },
    )
    .await;
    let fix = format!("kubectl rollout restart -n {NS} deployment/weather");
    let servers = Api::<MCPServer>::namespaced(client.clone(), NS);
    eventually(
        cluster,
        "the unguarded pod in the MCPServer's status",
        Duration::from_secs(60),
        || async {
            let status = servers
                .get("weather")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            let listed: Vec<(String, String)> = status
                .unguarded_pods
                .iter()
                .map(|u| (u.name.clone(), u.fix.clone()))
                .collect();
            let bypass = status
                .conditions
                .iter()
                .find(|c| c.type_ == "GuardBypass")
                .map(|c| (c.status.clone(), c.message.clone()));
            match (listed == [(unguarded_name.clone(), fix.clone())], &bypass) {
                (true, Some((s, m))) if s == "True" && m.contains(&fix) => Ok(()),
                _ => Err(format!("unguardedPods {listed:?}, GuardBypass {bypass:?}")),
            }
        },
    )
    .await;
    eventually(
        cluster,
        "an UnguardedPods Event",
        Duration::from_secs(30),
        || async {
            let notes = kubectl(
                cluster,
                &[
                    "-n",
                    NS,
                    "get",
                    "events",
                    "--field-selector",
                    "reason=UnguardedPods",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
            );
            match notes.contains(&unguarded_name) && notes.contains(&fix) {
                true => {
                    eprintln!("UnguardedPods Event: {notes}");
                    Ok(())
                }
                false => Err(notes),
            }
        },
    )
    .await;
    // The gauge is set right after the Event is published, in the same reconcile.
    let operator = operator_pod_ips(cluster);
    let url = format!("http://{}:8080/metrics", operator[0]);
    let sample = format!("mcp_guard_operator_unguarded_pods{{namespace=\"{NS}\",name=\"weather\"}}");
    eventually(
        cluster,
        "the unguarded-pods gauge at 1",
        Duration::from_secs(30),
        || async {
            let metrics = testkit::http::get(&url).map_err(|e| e.to_string())?.text();
            match metric(&metrics, &sample) {
                Some(1.0) => Ok(()),
                other => Err(format!("{sample} = {other:?}")),
            }
        },
    )
    .await;

    // --- the fix, as status says it: every pod carries the guard again, and the report clears ---------------
    let argv: Vec<&str> = fix.split_whitespace().collect();
    kubectl(cluster, &argv[1..]);
    chart_common::rolled_out(cluster, NS, "deployment/weather", "300s", || diagnose(cluster));
    eventually(
        cluster,
        "no unguarded pod left in the MCPServer's status",
        Duration::from_secs(120),
        || async {
            let status = servers
                .get("weather")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            match status.unguarded_pods.is_empty() {
                true => Ok(()),
                false => Err(format!("{:?}", status.unguarded_pods)),
            }
        },
    )
    .await;
    let list = pod_api
        .list(&ListParams::default().labels("app=weather"))
        .await
        .unwrap();
    for p in list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        assert!(
            p.annotations().contains_key("mcpguard.dev/injected"),
            "{} carries the guard after the restart",
            p.metadata.name.clone().unwrap()
        );
    }
}
