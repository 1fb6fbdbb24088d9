//! `kubectl mcp-guard` (binary `kubectl-mcp_guard`) against a real API server: `explain` on allowlists the real
//! operator (in-process controller) derived from real objects, and `check-inject` on real pods, Deployments and
//! namespaces with a registered MutatingWebhookConfiguration (pointing nowhere, selecting no namespace: the
//! plugin reads it, the API server never calls it). Also run as `kubectl mcp-guard` through the real kubectl.

#![allow(clippy::unwrap_used)]

mod operator_common;

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use mcp_guard_operator::crd::MCPServer;
use mcp_guard_operator::webhook::inject::{GuardedServer, Layout, SidecarSettings, inject};
use operator_common::*;
use serde_json::json;
use testkit::cluster::Cluster;
use testkit::tools::cargo_bin;

/// Runs the plugin binary: (exit code, stdout + stderr).
fn plugin(cluster: &Cluster, ns: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cargo_bin("kubectl-mcp_guard"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn label(client: &kube::Client, ns: &str, labels: &[(&str, &str)]) {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    apply_cluster::<Namespace>(
        client,
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels } }),
    )
    .await;
}

fn pod(name: &str, labels: serde_json::Value, extra_spec: serde_json::Value) -> Pod {
    let mut spec = json!({ "containers": [{ "name": "server", "image": "example/server:1" }] });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": spec
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_what_the_guard_decides_and_what_would_allow_it() {
    let cluster = Cluster::shared().await;
    cluster.apply_crds().await.unwrap();
    let client = cluster.client();
    let ns = cluster.namespace("kplugin-explain").await;
    let operator = Operator::start(client.clone(), &ns, None, Some(false));

    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 80, "targetPort": 8000 }])),
    )
    .await;
    apply::<Service>(
        &client,
        &ns,
        service("elsewhere", "other", json!([{ "port": 80 }])),
    )
    .await;
    apply::<Ingress>(
        &client,
        &ns,
        ingress("web", json!([rule(Some("mcp.example.com"), "weather", 80)]), &[]),
    )
    .await;
    apply::<Ingress>(
        &client,
        &ns,
        ingress(
            "other",
            json!([rule(Some("other.example.com"), "elsewhere", 80)]),
            &[],
        ),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver(
            "weather",
            "weather",
            8000,
            json!({ "origins": ["https://app.example.com"] }),
        ),
    )
    .await;
    wait_config(
        &client,
        &ns,
        "weather",
        SETUP,
        "the Ingress host in the guard config",
        |c| c.allowed_hosts.iter().any(|h| h == "mcp.example.com"),
    )
    .await;
    let api = Api::<MCPServer>::namespaced(client.clone(), &ns);
    server_with(&api, "weather", "status with the Ingress host", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.allowed_hosts.iter().any(|e| e.value == "mcp.example.com"))
    })
    .await;

    // Allowed: a URL through the Ingress, with an allowed Origin; the entry's source is the Ingress.
    let (code, out) = plugin(
        cluster,
        &ns,
        &[
            "explain",
            "weather",
            "https://mcp.example.com/mcp",
            "--origin",
            "https://app.example.com",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Verdict: allowed"), "{out}");
    assert!(
        out.contains(&format!("Ingress {ns}/web")),
        "the source of mcp.example.com:\n{out}"
    );
    assert!(
        out.contains(&format!("Service {ns}/weather")),
        "the Service DNS names' source:\n{out}"
    );

    // A host only another Service's Ingress names: refused as the guard would, with where to allow it and why
    // the Ingress that names it does not count.
    let (code, out) = plugin(
        cluster,
        &ns,
        &["explain", "mcpgs/weather", "other.example.com:8080"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused with 421 host_not_allowed: \"other.example.com:8080\""),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "spec.hosts of MCPServer {ns}/weather: add \"other.example.com\""
        )),
        "{out}"
    );
    assert!(
        out.contains("an Ingress rule with host \"other.example.com\" whose backend is Service weather"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Ingress {ns}/other has a rule for \"other.example.com\" but routes to Service elsewhere"
        )),
        "{out}"
    );
    assert!(
        out.contains("spec.allowedHosts of MCPGuardPolicy default"),
        "{out}"
    );

    // An allowed host with a foreign Origin: 403, and the origin fields.
    let (code, out) = plugin(
        cluster,
        &ns,
        &[
            "explain",
            "weather",
            "mcp.example.com",
            "--origin",
            "https://evil.test",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused with 403 origin_not_allowed: \"https://evil.test\""),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "spec.origins of MCPServer {ns}/weather: add \"https://evil.test\""
        )),
        "{out}"
    );

    // A malformed Host is the request's fault: nothing in the cluster allows it.
    let (code, out) = plugin(cluster, &ns, &["explain", "weather", "a@mcp.example.com"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("malformed_host") && out.contains("the request itself is malformed"),
        "{out}"
    );

    // No such MCPServer: exit 2, naming those that exist.
    let (code, out) = plugin(cluster, &ns, &["explain", "nope", "mcp.example.com"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("no MCPServer {ns}/nope; MCPServers in {ns}: weather")),
        "{out}"
    );

    // kubectl finds it on PATH as `kubectl mcp-guard`.
    let bin_dir = cargo_bin("kubectl-mcp_guard").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // kubectl takes no flags before a plugin's name: the kubeconfig comes from the environment.
    let out = Command::new(testkit::tools::bin("kubectl"))
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("PATH", path)
        .args(["mcp-guard", "-n", &ns, "explain", "weather", "mcp.example.com"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Verdict: allowed"), "{stdout}");

    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_inject_says_whether_and_why_not() {
    let cluster = Cluster::shared().await;
    cluster.apply_crds().await.unwrap();
    let client = cluster.client();
    let ns = cluster.namespace("kplugin-inject").await;
    let excluded = cluster.namespace("kplugin-excluded").await;
    let plain = cluster.namespace("kplugin-plain").await;
    label(&client, &ns, &[("mcpguard.dev/injection", "enabled")]).await;
    label(&client, &excluded, &[("mcpguard.dev/injection", "enabled")]).await;

    // Before any webhook is registered, the plugin says so (and answers what a webhook would do).
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod("early", json!({ "app": "weather" }), json!({})),
    )
    .await
    .unwrap();
    let (code, out) = plugin(cluster, &ns, &["check-inject", "early"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no mutating webhook calls /mutate-pods"), "{out}");

    let webhook: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": format!("kplugin-{ns}") },
        "webhooks": [{
            "name": "pods.mcpguard.dev",
            "clientConfig": { "url": "https://127.0.0.1:1/mutate-pods" },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"] }],
            "namespaceSelector": {
                "matchLabels": { "kplugin-never": "true" },
                "matchExpressions": [{ "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [excluded] }]
            },
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"]
        }]
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &webhook)
        .await
        .unwrap();

    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    for (name, app) in [("weather", "weather"), ("both-a", "both"), ("both-b", "both")] {
        let s: MCPServer = serde_json::from_value(mcpserver(name, app, 8000, json!({}))).unwrap();
        servers.create(&PostParams::default(), &s).await.unwrap();
    }

    // Selected but created without the guard (no webhook ran): would be injected now.
    let (code, out) = plugin(cluster, &ns, &["check-inject", "pod/early"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "pod {ns}/early: not injected, but would be if created now (MCPServer \"weather\""
        )),
        "{out}"
    );

    // Each reason the webhook skips or refuses a pod.
    let cases = [
        (
            "opted-out",
            json!({ "app": "weather", "mcpguard.dev/inject": "false" }),
            json!({}),
            "pod_opted_out",
        ),
        (
            "host-net",
            json!({ "app": "weather" }),
            json!({ "hostNetwork": true }),
            "host_network",
        ),
        (
            "stranger",
            json!({ "app": "stranger" }),
            json!({}),
            "no_matching_mcpserver",
        ),
        (
            "both",
            json!({ "app": "both" }),
            json!({}),
            "selected by several MCPServers",
        ),
    ];
    for (name, labels, spec, expect) in cases {
        pods.create(&PostParams::default(), &pod(name, labels, spec))
            .await
            .unwrap();
        let (code, out) = plugin(cluster, &ns, &["check-inject", name]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(expect), "{name}: expected {expect:?} in\n{out}");
    }
    let (_, out) = plugin(cluster, &ns, &["check-inject", "stranger"]);
    assert!(
        out.contains("the pod's labels: app=stranger")
            && out.contains("MCPServer \"weather\" selects app=weather"),
        "{out}"
    );
    let (_, out) = plugin(cluster, &ns, &["check-inject", "both"]);
    assert!(
        out.contains("refused at admission") && out.contains("\"both-a\", \"both-b\""),
        "{out}"
    );

    // A pod that carries the guard (injected as the webhook does it): exit 0.
    let guarded = GuardedServer {
        name: "weather".into(),
        selector: serde_json::from_value(json!({ "matchLabels": { "app": "weather" } })).unwrap(),
        port: 8000,
        layout: Layout::SharedPort,
        native_sidecars: None,
        sidecar: SidecarSettings {
            image: "example/guard:1".into(),
            image_pull_policy: None,
            resources: None,
            log_level: None,
        },
    };
    let injected = inject(
        &pod("injected", json!({ "app": "weather" }), json!({})),
        &guarded,
        true,
    )
    .unwrap();
    pods.create(&PostParams::default(), &injected.pod).await.unwrap();
    let (code, out) = plugin(cluster, &ns, &["check-inject", "pod/injected"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "pod {ns}/injected: injected with the guard of MCPServer \"weather\""
        )),
        "{out}"
    );

    // A Deployment: its template is what the webhook sees for new pods.
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "weather" },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": "weather", "tier": "mcp" } },
            "template": {
                "metadata": { "labels": { "app": "weather", "tier": "mcp" } },
                "spec": { "containers": [{ "name": "server", "image": "example/server:1" }] }
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let (code, out) = plugin(cluster, &ns, &["check-inject", "deployment/weather"]);
    assert!(
        out.contains(&format!(
            "New pods of deployment {ns}/weather: injected with the guard of MCPServer \"weather\""
        )),
        "{out}"
    );
    assert!(out.contains("Its pods: none yet"), "{out}");
    assert_eq!(code, 0, "{out}");

    // Namespaces: excluded by the registered webhook, and not opted in (with the fix).
    let (code, out) = plugin(cluster, &excluded, &["check-inject", "anything"]);
    assert_eq!(code, 2, "no such pod: {out}");
    Api::<Pod>::namespaced(client.clone(), &excluded)
        .create(
            &PostParams::default(),
            &pod("p", json!({ "app": "weather" }), json!({})),
        )
        .await
        .unwrap();
    let (code, out) = plugin(cluster, &excluded, &["check-inject", "p"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("protected_namespace"), "{out}");
    Api::<Pod>::namespaced(client.clone(), &plain)
        .create(
            &PostParams::default(),
            &pod("p", json!({ "app": "weather" }), json!({})),
        )
        .await
        .unwrap();
    let (code, out) = plugin(cluster, &plain, &["check-inject", "p"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("namespace_not_opted_in")
            && out.contains(&format!(
                "kubectl label namespace {plain} mcpguard.dev/injection=enabled"
            )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_whether_a_service_account_may_call_a_tool_and_what_to_add() {
    let cluster = Cluster::shared().await;
    cluster.apply_crds().await.unwrap();
    let client = cluster.client();
    let ns = cluster.namespace("kplugin-access").await;
    let _operator = Operator::start(client.clone(), &ns, None, Some(false));
    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 80, "targetPort": 8000 }])),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver(
            "weather",
            "weather",
            8000,
            json!({
                "auth": { "kubernetes": true },
                "access": { "rules": [
                    { "name": "readers", "from": [{ "serviceAccount": format!("{ns}/reader") }],
                      "to": [{ "method": "tools/call", "names": ["get_*"] }] }
                ]}
            }),
        ),
    )
    .await;
    let api = Api::<MCPServer>::namespaced(client.clone(), &ns);
    server_with(&api, "weather", "status.access", |s| {
        s.status.as_ref().is_some_and(|st| st.access.is_some())
    })
    .await;
    let reader = format!("{ns}/reader");

    let (code, out) = plugin(
        cluster,
        &ns,
        &[
            "explain",
            "weather",
            "--as-service-account",
            &reader,
            "--tool",
            "get_forecast",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Verdict: allowed by rule \"readers\""), "{out}");
    assert!(out.contains("readers (MCPServer): from serviceAccount"), "{out}");

    let (code, out) = plugin(
        cluster,
        &ns,
        &[
            "explain",
            "weather",
            "--as-service-account",
            &reader,
            "--tool",
            "delete",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused with 403 tool_not_allowed: \"tools/call delete\""),
        "{out}"
    );
    assert!(
        out.contains("add \"delete\" to the names of rule \"readers\""),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "add a rule to spec.access.rules of MCPServer {ns}/weather"
        )),
        "{out}"
    );

    // With a host too: the allowlist's verdict first, then the access rules'.
    let (code, out) = plugin(
        cluster,
        &ns,
        &[
            "explain",
            "weather",
            &format!("weather.{ns}.svc"),
            "--as-service-account",
            &format!("{ns}/stranger"),
            "--tool",
            "get_forecast",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Verdict: allowed\n"), "{out}");
    assert!(
        out.contains(&format!("caller: service account {ns}/stranger")),
        "{out}"
    );
    assert!(out.contains("tool_not_allowed"), "{out}");

    // A method that names its target needs --tool: a usage error.
    let (code, out) = plugin(
        cluster,
        &ns,
        &["explain", "weather", "--as-service-account", &reader],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--tool NAME"), "{out}");
}
