//! An upgrade from the previous release to this one on the real node, as docs/upgrading.md says, while clients
//! keep working. The previous release (tools/previous-release: its version and commit) is materialised by
//! tools/previous-release.sh from the repository's own history: its chart, CRDs and images, built by that commit's
//! own tools.
//!
//! One scenario: the previous chart installed with its images; an MCPServer and an MCPGuardPolicy created through
//! its CRDs; the example server (two replicas) injected with its guard. Then, while a loop calls a tool through
//! the Service, two SSE streams stay open and a loop asks the webhook to admit pods (server-side dry runs), the
//! new CRDs are applied and `helm upgrade` rolls the operator: no call may fail and the streams stay open; an
//! admission may be refused only while a replica of the previous release stops (it closes its webhook at once;
//! never admitted unguarded), and none while the new operator's replicas restart. The running pods keep the
//! previous guard, which reads the ConfigMaps the new operator writes (an Ingress, a policy and an MCPServer edit
//! made after the upgrade reach it) and still refuses a forged Host. Last,
//! `kubectl rollout restart` gives the pods the new guard, again with no failed call.
//!
//! It takes the machine's node lock for its own node (one node at a time on a machine).
#![allow(clippy::unwrap_used)]

#[path = "chart_common/mod.rs"]
mod chart_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chart_common::{NAMESPACE, RELEASE, chart_dir, eventually_or, helm, kubectl_or, run, statuses, text};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use mcp_guard_operator::crd::MCPServer;
use serde_json::json;
use test_support::http1::Wire;
use testkit::cluster::Cluster;
use testkit::node::NodeCluster;
use testkit::tools::workspace_root;
use tokio::net::TcpStream;

const NS: &str = "mcp-weather";
const PORT: u16 = 8000;
const SERVICE_HOST: &str = "weather.mcp-weather.svc.cluster.local";
const POLICY_AND_CLASS: &str = r#"
apiVersion: mcpguard.dev/v1alpha1
kind: MCPGuardPolicy
metadata:
  name: upgrade
spec:
  defaultMode: enforce
  allowServiceDNSNames: true
  allowedHosts: ["gateway.example.com"]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
spec:
  controller: k8s.io/ingress-nginx
"#;
const GUARD: &str = "ghcr.io/mcp-guard/mcp-guard";
/// The most tool calls (and admissions) a loop makes, whatever happens: the loops are bounded.
const MAX_ROUNDS: usize = 5000;

/// The previous release as tools/previous-release.sh leaves it.
struct Release {
    version: String,
    dir: PathBuf,
}

impl Release {
    /// Builds the previous release once (cached by its commit; seconds when cached) and names it.
    fn materialise() -> Release {
        let started = Instant::now();
        let out = run({
            let mut cmd = Command::new(workspace_root().join("tools/previous-release.sh"));
            cmd.stderr(std::process::Stdio::inherit());
            cmd
        });
        assert!(
            out.status.success(),
            "tools/previous-release.sh failed (see its message above)"
        );
        let dir = PathBuf::from(text(&out.stdout).trim());
        let pinned = std::fs::read_to_string(workspace_root().join("tools/previous-release")).unwrap();
        let version = pinned
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .and_then(|l| l.split_whitespace().next())
            .expect("tools/previous-release names a version")
            .to_string();
        eprintln!(
            "previous release {version} in {} ({:.1}s)",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        Release { version, dir }
    }

    fn chart(&self) -> PathBuf {
        self.dir.join("src/charts/mcp-guard")
    }

    fn image(&self, name: &str) -> PathBuf {
        self.dir.join("images").join(format!("{name}.tar"))
    }
}

/// This checkout's version: the chart's appVersion, which tags its images.
fn current_version() -> String {
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("Chart.yaml has an appVersion")
}

fn diagnose(cluster: &Cluster) -> String {
    chart_common::kubectl_outputs(
        cluster,
        &[
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
            &["-n", NAMESPACE, "logs", "deploy/mcp-guard", "--tail=40"][..],
            &[
                "-n",
                NS,
                "get",
                "mcpservers.mcpguard.dev",
                "weather",
                "-o",
                "yaml",
            ][..],
        ],
    )
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    kubectl_or(cluster, args, || diagnose(cluster))
}

/// A merge patch of the example's MCPServer.
fn patch_weather(cluster: &Cluster, patch: &str) {
    kubectl(
        cluster,
        &[
            "-n",
            NS,
            "patch",
            "mcpservers.mcpguard.dev",
            "weather",
            "--type=merge",
            "-p",
            patch,
        ],
    );
}

/// `helm install|upgrade` of `chart` as docs/install.md and docs/upgrading.md say.
fn helm_release(cluster: &Cluster, verb_and_flags: &[&str], chart: &Path) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = helm(home.path());
    cmd.arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(verb_and_flags)
        .arg(RELEASE)
        .arg(chart)
        .args(["-n", NAMESPACE, "--wait", "--timeout", "5m"]);
    let started = Instant::now();
    let out = run(cmd);
    assert!(
        out.status.success(),
        "helm {verb_and_flags:?} {}: {}\n{}\n{}",
        chart.display(),
        text(&out.stdout),
        text(&out.stderr),
        diagnose(cluster)
    );
    eprintln!(
        "helm {} {}: {:.1}s",
        verb_and_flags[0],
        chart.display(),
        started.elapsed().as_secs_f64()
    );
}

/// The image the pod's injected guard runs, from its spec.
fn guard_image(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == "mcp-guard")
        .and_then(|c| c.image.clone())
}

fn pod_addr(pod: &Pod) -> SocketAddr {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");
    format!("{ip}:{PORT}").parse().unwrap()
}

/// The example's two pods, both Ready with every container ready, running the guard `image`.
async fn weather_pods(cluster: &Cluster, image: &str, timeout: Duration) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(cluster.client(), NS);
    let ready = |p: &Pod| {
        chart_common::is_ready(p)
            && guard_image(p).as_deref() == Some(image)
            && statuses(p).iter().all(|c| c.ready)
    };
    let summary = |p: &Pod| format!("{}: {:?} ready={}", p.name_any(), guard_image(p), ready(p));
    eventually_or(
        &format!("2 weather pods Ready with the guard {image}"),
        timeout,
        || diagnose(cluster),
        || chart_common::live_pods_when(&pods, "app=weather", 2, ready, summary),
    )
    .await
}

/// A POST to /mcp on `wire` (keep-alive): the response, or why there was none.
async fn post(
    wire: &mut Wire,
    session: Option<&str>,
    body: &str,
) -> Result<test_support::http1::Msg, String> {
    let session = session
        .map(|s| format!("Mcp-Session-Id: {s}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n{session}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    wire.send(request).await.map_err(|e| format!("send: {e}"))?;
    wire.response(false)
        .await
        .map_err(|e| format!("no response: {e}"))
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"upgrade","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"forecast","arguments":{"city":"Oslo"}}}"#;

/// An MCP session on one connection to `addr`: initialize, initialized; the connection and the session id.
async fn open_session(addr: SocketAddr) -> Result<(Wire, String), String> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let mut wire = Wire::new(tcp, Some(Duration::from_secs(30)));
    let init = post(&mut wire, None, INITIALIZE)
        .await
        .map_err(|e| format!("initialize: {e}"))?;
    if init.status() != 200 {
        return Err(format!("initialize: {} {}", init.status(), init.text()));
    }
    let session = init
        .header("mcp-session-id")
        .ok_or("initialize: no Mcp-Session-Id")?
        .to_string();
    let ack = post(&mut wire, Some(&session), INITIALIZED)
        .await
        .map_err(|e| format!("notifications/initialized: {e}"))?;
    if ack.status() != 202 {
        return Err(format!(
            "notifications/initialized: {} {}",
            ack.status(),
            ack.text()
        ));
    }
    Ok((wire, session))
}

/// One tool call as a client makes it: a session, then `tools/call forecast`, checked to the answer.
async fn call_forecast(addr: SocketAddr) -> Result<(), String> {
    let (mut wire, session) = open_session(addr).await?;
    let call = post(&mut wire, Some(&session), CALL)
        .await
        .map_err(|e| format!("tools/call: {e}"))?;
    match (call.status(), call.text()) {
        (200, body) if body.contains("Oslo: snow showers, -2 C") => Ok(()),
        (status, body) => Err(format!("tools/call: {status} {body}")),
    }
}

/// What a loop did: how many rounds, and each failure with its reason.
#[derive(Debug, Default)]
struct Tally {
    rounds: usize,
    failures: Vec<String>,
}

/// Runs `round` every `every` until `stop` (at most [`MAX_ROUNDS`] times), counting each failure with its reason.
fn keep_going<F, Fut>(stop: Arc<AtomicBool>, every: Duration, mut round: F) -> tokio::task::JoinHandle<Tally>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed) && tally.rounds < MAX_ROUNDS {
            if let Err(e) = round().await {
                tally
                    .failures
                    .push(format!("at {:.1}s: {e}", started.elapsed().as_secs_f64()));
            }
            tally.rounds += 1;
            tokio::time::sleep(every).await;
        }
        tally
    })
}

/// A pod of the example's, created as a server-side dry run: the API server calls the injection webhook (it has
/// no side effects) and answers with the injected pod, and nothing is stored.
async fn admit_one(pods: &Api<Pod>) -> Result<(), String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "generateName": "admission-", "labels": { "app": "weather" } },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "server", "image": "ghcr.io/mcp-guard/example-server:0.2.0-dev",
                "ports": [{ "name": "mcp", "containerPort": PORT }],
                "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                     "capabilities": { "drop": ["ALL"] } },
            }],
        },
    }))
    .unwrap();
    let admitted = pods
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .map_err(|e| format!("refused: {e}"))?;
    match guard_image(&admitted) {
        Some(_) => Ok(()),
        None => Err("admitted without the guard".into()),
    }
}

/// A standalone SSE stream (`GET /mcp`) of a session of its own, held open on `addr`.
async fn open_stream(addr: SocketAddr) -> Wire {
    let (mut wire, session) = open_session(addr).await.unwrap();
    wire.send(format!(
        "GET /mcp HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nAccept: text/event-stream\r\n\
         Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-06-18\r\n\r\n"
    ))
    .await
    .unwrap();
    let (start, headers) = wire.head().await.unwrap();
    assert!(
        start.starts_with("HTTP/1.1 200")
            && headers
                .iter()
                .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")),
        "the SSE stream's head: {start} {headers:?}"
    );
    wire
}

/// Whether a held stream is still open: it delivers (the server's keep-alive comments) or waits, but has not
/// ended.
async fn still_open(wire: &mut Wire) -> Result<(), String> {
    wire.timeout = Some(Duration::from_secs(2));
    let read = wire.fill().await;
    wire.buf.clear();
    match read {
        Ok(0) => Err("closed (EOF)".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(()),
        Err(e) => Err(format!("error: {e}")),
    }
}

/// One bare `initialize` with `host` as its Host, on a connection of its own: the status.
async fn initialize_status(addr: SocketAddr, host: &str) -> Result<u16, String> {
    test_support::http1::raw(addr, testkit::mcp::initialize_request("/mcp", host, &[]))
        .await
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

/// `name value` of a guard metric sample.
fn metric(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn guard_metrics(pod: &Pod) -> String {
    let admin = SocketAddr::new(pod_addr(pod).ip(), 15081);
    test_support::http1::get(admin, "/metrics")
        .await
        .map(|r| r.text())
        .unwrap_or_default()
}

fn assert_clean(what: &str, tally: &Tally, at_least: usize) {
    eprintln!("{what}: {} rounds, {} failed", tally.rounds, tally.failures.len());
    assert!(
        tally.failures.is_empty(),
        "{what}: {} of {} failed:\n{}",
        tally.failures.len(),
        tally.rounds,
        tally.failures.join("\n")
    );
    assert!(
        tally.rounds >= at_least,
        "{what}: only {} rounds, fewer than {at_least}: the loop did not run through it",
        tally.rounds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_from_the_previous_release_drops_no_call() {
    let started = Instant::now();
    let previous = Release::materialise();
    let current = current_version();
    assert_ne!(
        previous.version, current,
        "main's version must differ from the previous release's"
    );
    let old_guard = format!("{GUARD}:{}", previous.version);
    let new_guard = format!("{GUARD}:{current}");

    let site = NodeCluster::start()
        .await
        .expect("a control plane and the real node");
    let cluster = &site.cluster;
    let client = cluster.client();
    // The node imported this checkout's images; the previous release's beside them (their tags differ).
    for image in ["mcp-guard", "mcp-guard-operator"] {
        let mut import = site.node.ctr();
        import
            .args(["images", "import", "--no-unpack"])
            .arg(previous.image(image));
        let out = run(import);
        assert!(
            out.status.success(),
            "import {image} {}: {}",
            previous.version,
            text(&out.stderr)
        );
    }

    // --- the previous release, as its docs/install.md says ------------------------------------------------
    kubectl(cluster, &["create", "namespace", NAMESPACE]);
    kubectl(
        cluster,
        &[
            "label",
            "namespace",
            NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
    );
    helm_release(
        cluster,
        &["install", "--set", "replicaCount=2"],
        &previous.chart(),
    );
    // Objects as the previous release wrote them: a policy of the user's own, the cluster's ingress class, the
    // example (its MCPServer, Deployment, Service and Ingress), its MCPServer then pointed at the policy.
    apply_stdin(cluster, POLICY_AND_CLASS);
    let example = workspace_root().join("examples/ingress/weather.yaml");
    kubectl(cluster, &["apply", "-f", example.to_str().unwrap()]);
    patch_weather(cluster, r#"{"spec":{"policyRef":"upgrade"}}"#);
    let old_pods = weather_pods(cluster, &old_guard, Duration::from_secs(300)).await;
    let svc = Api::<Service>::namespaced(client.clone(), NS)
        .get("weather")
        .await
        .unwrap();
    let svc_addr: SocketAddr = format!("{}:80", svc.spec.unwrap().cluster_ip.unwrap())
        .parse()
        .unwrap();
    eventually_or(
        "a tool call through the ClusterIP",
        Duration::from_secs(120),
        || diagnose(cluster),
        || call_forecast(svc_addr),
    )
    .await;
    // The policy's host reaches the guards through their ConfigMap (the pods may have started before the
    // MCPServer pointed at the policy).
    for pod in &old_pods {
        let addr = pod_addr(pod);
        eventually_or(
            "the policy's host allowed by the previous guard",
            Duration::from_secs(180),
            || diagnose(cluster),
            || async {
                match initialize_status(addr, "gateway.example.com").await {
                    Ok(200) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }

    // --- clients keep working: tool calls, held SSE streams, admissions -------------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let calls = keep_going(stop.clone(), Duration::from_millis(200), move || {
        call_forecast(svc_addr)
    });
    let pods_api = Api::<Pod>::namespaced(client.clone(), NS);
    let admitting = || {
        let stop = Arc::new(AtomicBool::new(false));
        let pods = pods_api.clone();
        let tally = keep_going(stop.clone(), Duration::from_millis(300), move || {
            let pods = pods.clone();
            async move { admit_one(&pods).await }
        });
        (stop, tally)
    };
    let (stop_admitting, admissions) = admitting();
    let mut streams = Vec::new();
    for pod in &old_pods {
        streams.push((pod.name_any(), open_stream(pod_addr(pod)).await));
    }

    // --- the upgrade, as docs/upgrading.md says --------------------------------------------------------------
    let upgrade_started = Instant::now();
    kubectl(
        cluster,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            chart_dir().join("crds").to_str().unwrap(),
        ],
    );
    helm_release(cluster, &["upgrade", "--reset-then-reuse-values"], &chart_dir());
    chart_common::rolled_out(cluster, NAMESPACE, "deploy/mcp-guard", "300s", || {
        diagnose(cluster)
    });
    let operator_images = kubectl(
        cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image} {end}",
        ],
    );
    assert_eq!(
        operator_images.split_whitespace().collect::<Vec<_>>(),
        vec![format!("ghcr.io/mcp-guard/mcp-guard-operator:{current}"); 2],
        "only the new operator runs"
    );
    eprintln!(
        "CRDs + helm upgrade + operator rollout: {:.1}s",
        upgrade_started.elapsed().as_secs_f64()
    );
    stop_admitting.store(true, Ordering::Relaxed);
    // The previous release's replicas close their webhook at once on SIGTERM, while the API server may still send
    // them reviews (it dials the Service, which drops a stopping pod a moment later): a few reviews fail there,
    // and with failurePolicy Fail the pod is refused (a controller retries it). Refused, never admitted unguarded.
    // This release's replicas serve 5 s longer (--shutdown-delay-seconds): the restart below must not fail one.
    let through_upgrade = admissions.await.unwrap();
    eprintln!(
        "admissions through the helm upgrade: {} rounds, {} refused while a {} replica stopped:\n{}",
        through_upgrade.rounds,
        through_upgrade.failures.len(),
        previous.version,
        through_upgrade.failures.join("\n")
    );
    assert!(through_upgrade.rounds >= 10, "{through_upgrade:?}");
    for failure in &through_upgrade.failures {
        assert!(
            failure.contains("refused: ") && failure.contains("failed calling webhook"),
            "an admission failed otherwise than by the webhook being unreachable: {failure}"
        );
    }
    // The next upgrade's operator roll, from this release to itself: its replicas' own shutdown.
    let (stop_admitting, admissions) = admitting();
    kubectl(
        cluster,
        &["-n", NAMESPACE, "rollout", "restart", "deploy/mcp-guard"],
    );
    chart_common::rolled_out(cluster, NAMESPACE, "deploy/mcp-guard", "300s", || {
        diagnose(cluster)
    });
    stop_admitting.store(true, Ordering::Relaxed);
    assert_clean(
        "admissions through a restart of the new operator",
        &admissions.await.unwrap(),
        10,
    );

    // The running pods were left alone: same pods, the previous guard, the streams still open.
    let after = weather_pods(cluster, &old_guard, Duration::from_secs(30)).await;
    let uids = |pods: &[Pod]| {
        let mut u: Vec<String> = pods.iter().map(|p| p.uid().unwrap()).collect();
        u.sort();
        u
    };
    assert_eq!(
        uids(&after),
        uids(&old_pods),
        "no pod was replaced by the upgrade"
    );
    for (pod, stream) in &mut streams {
        if let Err(e) = still_open(stream).await {
            panic!("the SSE stream on {pod} did not survive the upgrade: {e}");
        }
    }
    // docs/upgrading.md's command lists the pods that still run the previous guard.
    let columns = documented_guard_columns();
    let listed = kubectl(cluster, &["get", "pods", "-n", NS, "-o", &columns]);
    assert_eq!(
        listed.lines().filter(|l| l.contains(&old_guard)).count(),
        2,
        "{columns}:\n{listed}"
    );

    // --- the previous guard reads what the new operator writes ------------------------------------------------
    // Three changes, each written into the ConfigMap by the new operator only: a new Ingress host (a derived
    // source), a host in the previous release's policy, an MCPServer spec edit (a new generation).
    apply_stdin(
        cluster,
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: weather-beta
  namespace: mcp-weather
spec:
  ingressClassName: nginx
  rules:
    - host: beta.weather.example.com
      http:
        paths:
          - path: /mcp
            pathType: Prefix
            backend:
              service:
                name: weather
                port:
                  name: http
"#,
    );
    kubectl(
        cluster,
        &[
            "patch",
            "mcpguardpolicies.mcpguard.dev",
            "upgrade",
            "--type=merge",
            "-p",
            r#"{"spec":{"allowedHosts":["gateway.example.com","policy.example.com"]}}"#,
        ],
    );
    patch_weather(cluster, r#"{"spec":{"hosts":["spec.example.com"]}}"#);
    let new_hosts = [
        "beta.weather.example.com",
        "policy.example.com",
        "spec.example.com",
    ];
    for pod in &after {
        let addr = pod_addr(pod);
        // The kubelet rewrites ConfigMap volumes on its pod sync (every syncFrequency, plus its cache's TTL).
        eventually_or(
            &format!(
                "the previous guard on {} allowing the hosts added after the upgrade",
                pod.name_any()
            ),
            Duration::from_secs(180),
            || diagnose(cluster),
            || async {
                let mut statuses = Vec::new();
                for host in new_hosts {
                    statuses.push((host, initialize_status(addr, host).await));
                }
                match statuses.iter().all(|(_, s)| *s == Ok(200)) {
                    true => Ok(()),
                    false => Err(format!("{statuses:?}")),
                }
            },
        )
        .await;
        assert_eq!(
            initialize_status(addr, "attacker.test").await,
            Ok(421),
            "a forged Host, {}",
            pod.name_any()
        );
    }
    for pod in &after {
        let metrics = guard_metrics(pod).await;
        let sample = |result: &str| {
            metric(
                &metrics,
                &format!("mcp_guard_config_reloads_total{{result=\"{result}\"}}"),
            )
        };
        assert!(
            sample("ok") >= 1.0 && sample("error") == 0.0,
            "the previous guard on {} reloaded what the new operator wrote and refused none of it:\n{metrics}",
            pod.name_any()
        );
    }
    // The previous release's MCPServer is served by the new CRD and reconciled by the new operator.
    let server = Api::<MCPServer>::namespaced(client.clone(), NS)
        .get("weather")
        .await
        .unwrap();
    let status = server.status.clone().unwrap_or_default();
    assert_eq!(
        status.observed_generation, server.metadata.generation,
        "{status:?}"
    );
    let allowed: Vec<&str> = status.allowed_hosts.iter().map(|e| e.value.as_str()).collect();
    for host in new_hosts {
        assert!(
            allowed.contains(&host),
            "{host} in status.allowedHosts: {allowed:?}"
        );
    }
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{:?}",
        status.conditions
    );

    stop.store(true, Ordering::Relaxed);
    assert_clean("tool calls through the upgrade", &calls.await.unwrap(), 10);
    for (pod, stream) in &mut streams {
        if let Err(e) = still_open(stream).await {
            panic!("the SSE stream on {pod} ended before its pod: {e}");
        }
    }
    drop(streams);

    // --- rolling the pods gives them the new guard, with no failed call ----------------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let calls = keep_going(stop.clone(), Duration::from_millis(200), move || {
        call_forecast(svc_addr)
    });
    let roll_started = Instant::now();
    kubectl(cluster, &["-n", NS, "rollout", "restart", "deployment/weather"]);
    chart_common::rolled_out(cluster, NS, "deployment/weather", "300s", || diagnose(cluster));
    let rolled = weather_pods(cluster, &new_guard, Duration::from_secs(120)).await;
    stop.store(true, Ordering::Relaxed);
    assert_clean("tool calls through the pods' restart", &calls.await.unwrap(), 5);
    eprintln!("rollout restart: {:.1}s", roll_started.elapsed().as_secs_f64());
    for pod in &rolled {
        let addr = pod_addr(pod);
        assert_eq!(
            initialize_status(addr, "beta.weather.example.com").await,
            Ok(200),
            "{}",
            pod.name_any()
        );
        assert_eq!(
            initialize_status(addr, "attacker.test").await,
            Ok(421),
            "{}",
            pod.name_any()
        );
    }
    eprintln!("upgrade scenario: {:.1}s in all", started.elapsed().as_secs_f64());
}

/// The `-o custom-columns=...` of docs/upgrading.md's command that shows each pod's guard image.
fn documented_guard_columns() -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/upgrading.md")).unwrap();
    doc.lines()
        .find_map(|l| l.strip_prefix("kubectl get pods -A -o custom-columns='"))
        .and_then(|rest| rest.strip_suffix('\''))
        .map(|columns| format!("custom-columns={columns}"))
        .expect(
            "docs/upgrading.md lists the pods' guard images with kubectl get pods -A -o custom-columns='...'",
        )
}

/// `kubectl apply -f -` of `yaml`.
fn apply_stdin(cluster: &Cluster, yaml: &str) {
    use std::io::Write;
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}{}\n{yaml}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
