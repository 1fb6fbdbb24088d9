//! The chart's monitoring (PodMonitor, PrometheusRule, Grafana dashboard): rendered by the real helm, the rules
//! checked and unit-tested by the real promtool (tests/prometheus/alerts.test.yaml), the dashboard's queries
//! parsed by promtool, and every metric name they use found in the /metrics of a real running guard and in the
//! operator's registries as its binary registers them.

#![allow(clippy::unwrap_used)]

mod chart_common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use chart_common::*;
use mcp_guard_operator::metrics::{ControllerMetrics, ServerLabels};
use mcp_guard_operator::webhook::WebhookMetrics;
use mcp_guard_operator::webhook::inject::{ADMIN_PORT_NAME, GuardedServer, Layout, SidecarSettings, inject};
use mcp_guard_operator::webhook::metrics::{AdmissionLabels, SkipLabels, WebhookLabels};
use serde_json::{Value, json};
use testkit::mcp::GuardOptions;
use testkit::tools::{bin, workspace_root};

const ALL_ON: &[&str] = &[
    "--set",
    "podMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
];

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(bin("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.success(), text)
}

/// The rendered PrometheusRule's spec as a Prometheus rules file, beside a copy of the unit tests.
fn rules_dir(extra: &[&str]) -> tempfile::TempDir {
    let mut args = ALL_ON.to_vec();
    args.extend_from_slice(extra);
    let docs = render_ok(&args);
    let rule = one(&docs, "PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        workspace_root().join("tests/prometheus/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    dir
}

fn dashboard() -> Value {
    let path = workspace_root().join("charts/mcp-guard/dashboards/mcp-guard.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every query of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let d = dashboard();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The `mcp_guard_*` names a PromQL text uses.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = promql;
    while let Some(i) = rest.find("mcp_guard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The sample names of a Prometheus text exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn monitoring_is_off_by_default_and_renders_when_enabled() {
    let kinds = kinds(&render_ok(&[]));
    assert!(
        !kinds.iter().any(|k| k == "PodMonitor" || k == "PrometheusRule"),
        "{kinds:?}"
    );
    assert!(
        !render_ok(&[]).iter().any(|d| d["kind"] == "ConfigMap"),
        "no dashboard ConfigMap by default"
    );

    let docs = render_ok(ALL_ON);
    let pm = one(&docs, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["spec"]["namespaceSelector"], json!({ "any": true }));
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    // The port the webhook gives the injected guard's admin listener.
    assert_eq!(endpoint["port"], ADMIN_PORT_NAME);
    assert_eq!(endpoint["path"], "/metrics");
    let relabel = &endpoint["relabelings"][0];
    assert_eq!(relabel["targetLabel"], "mcp_server");
    assert_eq!(
        relabel["sourceLabels"],
        json!(["__meta_kubernetes_pod_annotation_mcpguard_dev_injected"])
    );

    // The relabelling reads the MCPServer out of the annotation a real injection writes: compact JSON with
    // "mcpServer":"<name>", which is what the regex needs.
    let server = GuardedServer {
        name: "weather".into(),
        selector: serde_json::from_value(json!({ "matchLabels": { "app": "weather" } })).unwrap(),
        port: 8000,
        layout: Layout::SharedPort,
        native_sidecars: None,
        sidecar: SidecarSettings {
            image: "g:1".into(),
            image_pull_policy: None,
            resources: None,
            log_level: None,
        },
    };
    let pod = serde_json::from_value(json!({
        "metadata": { "name": "p", "labels": { "app": "weather" } },
        "spec": { "containers": [{ "name": "server", "image": "s" }] }
    }))
    .unwrap();
    let injected = inject(&pod, &server, true).unwrap();
    let annotation = &injected.pod.metadata.annotations.unwrap()["mcpguard.dev/injected"];
    assert!(annotation.contains(r#""mcpServer":"weather""#), "{annotation}");
    assert_eq!(relabel["regex"], r#".*"mcpServer":"([^"]+)".*"#);

    // The dashboard ConfigMap carries the file as it is, with the sidecar's label.
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "mcp-guard-dashboard")
        .unwrap();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value = serde_json::from_str(cm["data"]["mcp-guard.json"].as_str().unwrap()).unwrap();
    assert_eq!(embedded, dashboard());

    // Values that narrow or move them.
    let docs = render_ok(&[
        "--set",
        "podMonitor.enabled=true,podMonitor.namespaces={team-a,team-b},podMonitor.labels.release=kp",
        "--set",
        "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring",
        "--set",
        "prometheusRule.enabled=true,prometheusRule.additionalAlertLabels.team=platform",
    ]);
    let pm = one(&docs, "PodMonitor");
    assert_eq!(
        pm["spec"]["namespaceSelector"],
        json!({ "matchNames": ["team-a", "team-b"] })
    );
    assert_eq!(pm["metadata"]["labels"]["release"], "kp");
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    let rule = one(&docs, "PrometheusRule");
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            assert_eq!(r["labels"]["team"], "platform", "{r}");
            assert!(r["labels"]["severity"].is_string(), "{r}");
        }
    }

    // The schema refuses a ratio outside (0, 1].
    let err = render(&["--set", "prometheusRule.refusals.ratio=2"]).unwrap_err();
    assert!(err.contains("ratio"), "{err}");
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = rules_dir(&[]);
    let (ok, out) = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(ok, "{out}");

    // The unit tests see the thresholds: with a baseline that nothing exceeds, the server refused all along
    // alerts too, and they fail.
    let dir = rules_dir(&["--set", "prometheusRule.refusals.baselineRatio=1"]);
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(!ok && out.contains("scanned"), "{out}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // As recording rules, promtool parses each query (Grafana's variables replaced as Grafana would).
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$mcp_server", ".*");
            json!({ "record": format!("dashboard:query_{i}"), "expr": e })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "rules", "dashboard.yaml"], dir.path());
    assert!(ok, "{out}");

    // What the issue asks the dashboard to show, by metric.
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for name in [
        "mcp_guard_requests_total",
        "mcp_guard_request_duration_seconds_bucket",
        "mcp_guard_open_streams",
        "mcp_guard_config_reloads_total",
        "mcp_guard_upstream_errors_total",
        "mcp_guard_operator_reconciles_total",
        "mcp_guard_webhook_admission_duration_seconds_bucket",
        "mcp_guard_tool_calls_total",
        "mcp_guard_audit_lines_dropped_total",
    ] {
        assert!(
            used.contains(name),
            "the dashboard does not show {name}: {used:?}"
        );
    }
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported() {
    // A real guard with the audit log on, in front of something that answers every request with `{}` (its
    // readiness needs connections accepted; the tool-call counter needs a call answered), after one refused
    // request and one tools/call.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in upstream.incoming().flatten() {
            let mut buf = [0u8; 8192];
            if conn.read(&mut buf).unwrap_or(0) > 0 {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guard.json");
    std::fs::write(
        &config,
        r#"{"allowedHosts": ["mcp.example.com"], "audit": {"enabled": true}}"#,
    )
    .unwrap();
    let guard = (GuardOptions {
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..GuardOptions::hosts(&["mcp.example.com"])
    })
    .start(&format!("http://{upstream_addr}"))
    .unwrap();
    let refused = testkit::http::raw(
        guard.addr,
        b"GET /mcp HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(refused.status, 421);
    let call =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{call}",
        call.len()
    );
    let answered = testkit::http::raw(guard.addr, request.as_bytes()).unwrap();
    assert_eq!(answered.status, 200, "{answered:?}");
    let mut exported = sample_names(&guard.metrics().unwrap());

    // The operator's registries as its main registers them, each family with one child (an empty family
    // has no samples).
    let mut registry = prometheus_client::registry::Registry::default();
    let controller = ControllerMetrics::default();
    controller.register(&mut registry);
    let webhook = WebhookMetrics::default();
    webhook.register(&mut registry);
    let server = ServerLabels {
        namespace: "ns".into(),
        name: "s".into(),
    };
    controller.result(false);
    controller.reconcile_duration.observe(0.01);
    controller.allowlist_hosts.get_or_create(&server).set(1);
    controller.allowlist_origins.get_or_create(&server).set(1);
    controller.guard_bypassed.get_or_create(&server).set(1);
    controller.unguarded_pods.get_or_create(&server).set(1);
    controller
        .unguarded_servers
        .get_or_create(&mcp_guard_operator::metrics::NamespaceLabels {
            namespace: "ns".into(),
        })
        .set(1);
    controller
        .events
        .get_or_create(&mcp_guard_operator::metrics::EventLabels { reason: "R".into() })
        .inc();
    let admission = AdmissionLabels {
        webhook: "mutate-pods".into(),
        result: "error".into(),
    };
    webhook.admissions.get_or_create(&admission).inc();
    webhook
        .skips
        .get_or_create(&SkipLabels { reason: "r".into() })
        .inc();
    webhook
        .duration
        .get_or_create(&WebhookLabels {
            webhook: "mutate-pods".into(),
        })
        .observe(0.001);
    webhook
        .tls_reloads
        .get_or_create(&mcp_guard_operator::webhook::metrics::ResultLabels { result: "ok".into() })
        .inc();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    exported.extend(sample_names(&text));

    let rules = one(&render_ok(ALL_ON), "PrometheusRule").clone();
    let mut used = BTreeSet::new();
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            used.extend(metric_names(r["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() >= 5, "{used:?}");
    used.extend(dashboard_exprs().iter().flat_map(|e| metric_names(e)));
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
}
