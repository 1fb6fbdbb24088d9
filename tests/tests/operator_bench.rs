//! Operator benchmark (`make bench`; a `test = false` target, so not part of `make test`): 10,000 MCPServers,
//! each with a Service and an Ingress, in one namespace on the real control plane. Reports the time from a cold operator start until every ConfigMap holds
//! its Ingress host (target ≤ 30 s), the latency from an Ingress host edit to the ConfigMap update (p50/p99 over
//! sequential edits; target p99 ≤ 500 ms) and the operator's peak RSS (VmHWM; target ≤ 128 MiB); then restarts
//! the operator over the converged cluster and reports the time until every server is reconciled again, with the
//! ConfigMaps it rewrote (asserted none).
//!
//! ```text
//! cargo build --release -p mcp-guard-operator --bin mcp-guard-operator
//! cargo test -p mcp-guard-tests --test operator_bench -- --nocapture
//! ```
//!
//! The harness may stay a debug build; the operator measured is `OPERATOR_BENCH_BIN`, else
//! `target/release/mcp-guard-operator` when built, else the debug binary (the report names it). Knobs:
//! `OPERATOR_BENCH_N` (servers, default 10000), `OPERATOR_BENCH_EDITS` (default 200). The report is also written
//! to `target/operator-bench.json`.

mod operator_common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use mcp_guard_config::{CONFIG_KEY, GuardConfig};
use mcp_guard_operator::crd::MCPServer;
use operator_common::*;
use serde_json::json;
use testkit::cluster::Cluster;
use testkit::process::{Proc, tail, wait_for_http};
use testkit::tools::{free_port, target_dir};

/// Servers being created at once (each server's three objects are applied together): the set-up of 30,000
/// objects must not dominate the bench.
const CONCURRENCY: usize = 64;

/// ConfigMap name → (allowed hosts, when that version was seen).
type Seen = HashMap<String, (Vec<String>, Instant)>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `OPERATOR_BENCH_BIN`, else the release build when present, else the debug build.
fn operator_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("OPERATOR_BENCH_BIN") {
        return bin.into();
    }
    let release = target_dir().join("release").join("mcp-guard-operator");
    if release.exists() {
        release
    } else {
        testkit::tools::cargo_bin("mcp-guard-operator")
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn host(i: usize, version: usize) -> String {
    format!("s{i}-v{version}.bench.example.com")
}

fn hosts_of(cm: &ConfigMap) -> Vec<String> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .and_then(|j| serde_json::from_str::<GuardConfig>(j).ok())
        .map(|c| c.allowed_hosts)
        .unwrap_or_default()
}

/// Headless: the test control plane's Service range holds 4,094 ClusterIPs, and the operator reads none.
fn headless(mut service: serde_json::Value) -> serde_json::Value {
    service["spec"]["clusterIP"] = json!("None");
    service
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The operator as the bench runs it: controller only, leader election in the bench's namespace.
fn operator_command(cluster: &Cluster, ns: &str, admin_port: u16) -> Command {
    let mut cmd = Command::new(operator_bin());
    cmd.env("KUBECONFIG", cluster.kubeconfig())
        .env("RUST_LOG", "warn")
        .args([
            "--no-webhook",
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .args([
            "--leader-election-namespace",
            ns,
            "--identity",
            "bench",
            "--gateway-api",
            "disabled",
        ]);
    cmd
}

/// The operator's successful reconciles so far (`None`: its metrics do not answer yet).
fn reconciles_ok(admin_port: u16) -> Option<u64> {
    let metrics = testkit::http::get(&format!("http://127.0.0.1:{admin_port}/metrics"))
        .ok()?
        .text();
    metrics
        .lines()
        .find(|l| l.starts_with(r#"mcp_guard_operator_reconciles_total{result="ok"}"#))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Polls `progress` until it is done; the time since `since`. Fails if the operator exits or `give_up` passes.
async fn until(
    proc: &mut Proc,
    since: Instant,
    give_up: Duration,
    mut progress: impl FnMut() -> Result<(), String>,
) -> Duration {
    loop {
        let state = match progress() {
            Ok(()) => return since.elapsed(),
            Err(state) => state,
        };
        if let Err(e) = proc.ensure_running() {
            panic!("{e}");
        }
        assert!(
            since.elapsed() < give_up,
            "{state} after {give_up:?}\n{}",
            tail(&proc.logs(), 20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_converge_and_edits_propagate() {
    let n = env_usize("OPERATOR_BENCH_N", 10_000);
    let edits = env_usize("OPERATOR_BENCH_EDITS", 200).min(n);
    let cluster = Cluster::shared().await;
    cluster.apply_crds().await.expect("apply crds/");
    let client = cluster.client();
    let ns = cluster.namespace("bench").await;

    // Objects first, operator second: a cold start over an existing cluster.
    let created = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let app = format!("s{i}");
                futures::join!(
                    apply::<Service>(
                        &client,
                        &ns,
                        headless(service(&app, &app, json!([{ "port": 80, "targetPort": 8000 }])))
                    ),
                    apply::<Ingress>(
                        &client,
                        &ns,
                        ingress(&app, json!([rule(Some(&host(i, 0)), &app, 80)]), &[]),
                    ),
                    apply::<MCPServer>(&client, &ns, mcpserver(&app, &app, 8000, json!({}))),
                );
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    println!(
        "created {n} Services + Ingresses + MCPServers in {:?}",
        created.elapsed()
    );

    // Watch the ConfigMaps from now on: when did each first hold the expected host?
    let seen: Arc<Mutex<Seen>> = Arc::default();
    // Every ConfigMap version the watch delivered: a write by the operator shows as one.
    let versions = Arc::new(AtomicUsize::new(0));
    let watch_task = {
        let (seen, versions) = (seen.clone(), versions.clone());
        let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        tokio::spawn(async move {
            let stream = watcher(
                api,
                watcher::Config::default().labels("app.kubernetes.io/managed-by=mcp-guard-operator"),
            )
            .applied_objects();
            futures::pin_mut!(stream);
            while let Ok(Some(cm)) = stream.try_next().await {
                let name = cm.metadata.name.clone().unwrap_or_default();
                versions.fetch_add(1, Ordering::SeqCst);
                seen.lock()
                    .expect("lock")
                    .insert(name, (hosts_of(&cm), Instant::now()));
            }
        })
    };

    let admin_port = free_port();
    let cmd = operator_command(&cluster, &ns, admin_port);
    // A bound on a run that never ends, not a target: 10 servers a second, at least 300 s.
    let give_up = Duration::from_secs((n as u64 / 10).max(300));
    let started = Instant::now();
    let mut proc = Proc::spawn("operator-bench", cmd).expect("start the operator");
    let converged = until(&mut proc, started, give_up, || {
        let seen = seen.lock().expect("lock");
        let done = (0..n)
            .filter(|i| {
                seen.get(&format!("s{i}-mcp-guard"))
                    .is_some_and(|(h, _)| h.contains(&host(*i, 0)))
            })
            .count();
        if done == n {
            Ok(())
        } else {
            Err(format!("not converged: {done}/{n}"))
        }
    })
    .await;
    println!("cold start → {n} ConfigMaps converged: {converged:?}");
    wait_for_http(
        &format!("http://127.0.0.1:{admin_port}/readyz"),
        Duration::from_secs(10),
    )
    .expect("ready");

    // Sequential Ingress host edits: time from the edit to the ConfigMap carrying the new host.
    let ingresses = Api::<Ingress>::namespaced(client.clone(), &ns);
    let mut latencies = Vec::with_capacity(edits);
    for k in 0..edits {
        let i = (k * 7919) % n;
        let app = format!("s{i}");
        let new_host = host(i, 1 + k);
        let patch = json!({ "spec": { "rules": [rule(Some(&new_host), &app, 80)] } });
        let t0 = Instant::now();
        ingresses
            .patch(&app, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("edit Ingress");
        let cm = format!("{app}-mcp-guard");
        let deadline = t0 + Duration::from_secs(10);
        loop {
            if let Some((hosts, at)) = seen.lock().expect("lock").get(&cm).cloned()
                && hosts.contains(&new_host)
            {
                latencies.push(at.saturating_duration_since(t0));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "edit {k} of {app} not propagated within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    println!("Ingress edit → ConfigMap ({edits} edits): p50 {p50:?}, p99 {p99:?}, max {max:?}");

    let reconciles = reconciles_ok(admin_port).map_or("?".to_string(), |r| r.to_string());
    let rss_kib = peak_rss_kib(proc.pid()).unwrap_or(0);
    println!(
        "operator peak RSS (VmHWM): {:.1} MiB; reconciles: {reconciles}",
        rss_kib as f64 / 1024.0
    );

    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("list");
    let ready = servers
        .items
        .iter()
        .filter(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count();
    println!("MCPServers Ready: {ready}/{n}");

    // A restart over the converged cluster (an upgrade, a rescheduled pod): every server reconciled again, and
    // nothing written, since every object already holds what the operator would write.
    proc.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = proc.wait_exit(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions.load(Ordering::SeqCst);
    let admin_port = free_port();
    let restarted = Instant::now();
    let mut proc = Proc::spawn(
        "operator-bench-restart",
        operator_command(&cluster, &ns, admin_port),
    )
    .expect("restart the operator");
    let reconciled = until(&mut proc, restarted, give_up, || {
        match reconciles_ok(admin_port) {
            Some(r) if r >= n as u64 => Ok(()),
            r => Err(format!(
                "not every server reconciled after a restart: {r:?} reconciles"
            )),
        }
    })
    .await;
    // The watch delivers a write within moments; a reconcile that wrote would have done so by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rewritten = versions.load(Ordering::SeqCst) - before;
    let restart_rss_kib = peak_rss_kib(proc.pid()).unwrap_or(0);
    println!(
        "restart over the converged cluster → {n} servers reconciled: {reconciled:?}; ConfigMaps rewritten: \
         {rewritten}; peak RSS {:.1} MiB",
        restart_rss_kib as f64 / 1024.0
    );

    let report = json!({
        "servers": n,
        "binary": operator_bin().display().to_string(),
        "convergence_seconds": converged.as_secs_f64(),
        "edits": edits,
        "edit_to_configmap_ms": { "p50": p50.as_secs_f64() * 1e3, "p99": p99.as_secs_f64() * 1e3, "max": max.as_secs_f64() * 1e3 },
        "peak_rss_mib": rss_kib as f64 / 1024.0,
        "reconciles_ok": reconciles,
        "ready": ready,
        "restart": {
            "reconciled_seconds": reconciled.as_secs_f64(),
            "configmaps_rewritten": rewritten,
            "peak_rss_mib": restart_rss_kib as f64 / 1024.0,
        },
        "targets": { "convergence_seconds": 30, "edit_p99_ms": 500, "peak_rss_mib": 128 },
    });
    let path = target_dir().join("operator-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write report");
    println!("report: {}", path.display());

    proc.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = proc.wait_exit(Duration::from_secs(20));
    watch_task.abort();
    assert_eq!(ready, n, "every MCPServer ends Ready");
    assert_eq!(
        rewritten, 0,
        "a restart over a converged cluster rewrites no ConfigMap"
    );
}
