//! Benchmark: pod-creation latency through the real kube-apiserver with and without the injection webhook
//! (issue 5's target: the webhook adds ≤ 5 ms at p99). Not part of `make test` (a `test = false`
//! target; `make bench` runs it); run it with
//!
//! ```sh
//! cargo test -p mcp-guard-tests --release --test webhook_bench -- --nocapture
//! ```
//!
//! (`WEBHOOK_BENCH_PODS=N` changes the 500 pods per variant.) It reports numbers measured in one run and asserts
//! nothing about time. Two shapes: pods created one after another, and bursts of N pods created at once (a
//! Deployment scaled up, a Job's parallel pods), where the webhook serves the API server's concurrent calls. Variants, interleaved (pod by pod; burst by burst) so that drift in the machine affects all alike:
//! - `without`: a namespace the webhook's namespaceSelector does not match (the API server never calls it);
//! - `injected`: an opted-in namespace where an MCPServer selects the pod (the guard is injected);
//! - `skipped`: an opted-in namespace where no MCPServer selects the pod (the webhook confirms "no match"
//!   with a live list of MCPServers before letting the pod through unguarded).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

mod webhook_common;
use webhook_common::*;

/// The chart's default.
const REINVOCATION_POLICY: &str = "Never";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_latency_with_and_without_the_webhook() {
    let n: usize = std::env::var("WEBHOOK_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let env = env().await;
    let client = env.cluster.client();

    let without = env.cluster.namespace("wh-bench-without").await;
    let with = opted_in_namespace(env.cluster, "wh-bench-with", &[]).await;
    create_mcpserver(
        &client,
        &with,
        "bench",
        json!({ "selector": { "matchLabels": { "app": "bench" } }, "port": 8000 }),
    )
    .await
    .expect("MCPServer");

    let variants: [(&str, Api<Pod>, &str); 3] = [
        ("without", Api::namespaced(client.clone(), &without), "bench"),
        ("injected", Api::namespaced(client.clone(), &with), "bench"),
        ("skipped", Api::namespaced(client.clone(), &with), "other"),
    ];
    let pp = PostParams::default();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); variants.len()];
    let warmup = 20;
    for i in 0..(warmup + n) {
        for (v, (name, api, app)) in variants.iter().enumerate() {
            let pod = pod_json(&format!("{name}-{i}"), &[("app", app)], json!({}));
            let started = Instant::now();
            let created = api
                .create(&pp, &pod)
                .await
                .unwrap_or_else(|e| panic!("{name}-{i}: {e}"));
            let took = started.elapsed();
            if i == 0 {
                let injected = guard_container(&created).is_some();
                assert_eq!(injected, *name == "injected", "{name}: injected = {injected}");
            }
            if i >= warmup {
                samples[v].push(took);
            }
        }
    }

    println!("\npod CREATE latency through kube-apiserver, {n} pods per variant (client-side, sequential):");
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9}",
        "variant", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for (v, (name, _, _)) in variants.iter().enumerate() {
        let mut s = samples[v].clone();
        s.sort();
        let (a, b, c, d) = (
            percentile(&s, 0.5),
            percentile(&s, 0.9),
            percentile(&s, 0.99),
            percentile(&s, 1.0),
        );
        println!(
            "{name:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            ms(a),
            ms(b),
            ms(c),
            ms(d)
        );
        p50.push(a);
        p99.push(c);
    }
    for (v, name) in [(1, "injected"), (2, "skipped")] {
        println!(
            "webhook adds ({name}): p50 {:+.2} ms, p99 {:+.2} ms",
            ms(p50[v]) - ms(p50[0]),
            ms(p99[v]) - ms(p99[0])
        );
    }

    // Bursts: N creations at once per variant, the variants taking turns, BURST_ROUNDS times.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n * BURST_ROUNDS); variants.len()];
    let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for round in 0..BURST_ROUNDS {
        for (v, (name, api, app)) in variants.iter().enumerate() {
            let started = Instant::now();
            let took = futures::future::join_all((0..n).map(|i| {
                let pod = pod_json(&format!("{name}-burst{round}-{i}"), &[("app", app)], json!({}));
                let pp = &pp;
                async move {
                    let started = Instant::now();
                    let created = api
                        .create(pp, &pod)
                        .await
                        .unwrap_or_else(|e| panic!("{name} burst {round} pod {i}: {e}"));
                    (started.elapsed(), guard_container(&created).is_some())
                }
            }))
            .await;
            walls[v].push(started.elapsed());
            for (t, injected) in took {
                assert_eq!(injected, *name == "injected", "{name}: injected = {injected}");
                samples[v].push(t);
            }
        }
    }
    println!(
        "\npod CREATE latency in bursts of {n} pods created at once, {BURST_ROUNDS} bursts per variant (client-side):"
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "variant", "p50 ms", "p90 ms", "p99 ms", "max ms", "burst s"
    );
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for (v, (name, _, _)) in variants.iter().enumerate() {
        let mut s = samples[v].clone();
        s.sort();
        let (a, b, c, d) = (
            percentile(&s, 0.5),
            percentile(&s, 0.9),
            percentile(&s, 0.99),
            percentile(&s, 1.0),
        );
        let wall = walls[v].iter().sum::<Duration>() / walls[v].len() as u32;
        println!(
            "{name:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>12.2}",
            ms(a),
            ms(b),
            ms(c),
            ms(d),
            wall.as_secs_f64()
        );
        p50.push(a);
        p99.push(c);
    }
    for (v, name) in [(1, "injected"), (2, "skipped")] {
        println!(
            "webhook adds in a burst ({name}): p50 {:+.2} ms, p99 {:+.2} ms",
            ms(p50[v]) - ms(p50[0]),
            ms(p99[v]) - ms(p99[0])
        );
    }
}

/// Bursts per variant (their samples are pooled).
const BURST_ROUNDS: usize = 2;
