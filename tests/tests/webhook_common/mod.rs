//! Shared set-up of the webhook tests: the shared control plane with the CRDs and a default MCPGuardPolicy, the
//! webhook server (the operator's own `webhook::WebhookServer`) on 127.0.0.1 with a certificate from a CA made
//! here, and the Mutating/ValidatingWebhookConfigurations pointing at it, waited for until the API server uses them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use mcp_guard_operator::webhook::{self, WebhookMetrics, WebhookSettings, WebhookState};
use serde_json::{Value, json};
use testkit::cluster::Cluster;
use tokio::sync::OnceCell;

pub const SIDECAR_IMAGE: &str = "registry.example.com/mcp-guard:e2e";
pub const MANAGER: &str = "webhook-tests";
pub const WEBHOOK_NAME: &str = "mcp-guard-webhook-test";
/// Stands in for the pod IP when the injected guard runs on this machine.
pub const POD_IP: &str = "127.0.0.2";

pub struct Env {
    pub cluster: &'static Cluster,
    pub ca_pem: String,
    /// The webhook's serving certificate and key (for 127.0.0.1, signed by `ca_pem`).
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _certs: tempfile::TempDir,
}

// Each test binary that uses this module sets `const REINVOCATION_POLICY: &str` (`Never`, the chart's default,
// or `IfNeeded`, which re-runs the API server's built-in plugins and the webhook after an injection).

/// Namespaces with this label are left to the `mcp-guard-operator` binary's own webhook configuration (see the
/// binary test), not the in-process one.
pub const BINARY_LABEL: &str = "webhook-test/binary";

pub static ENV: OnceCell<Env> = OnceCell::const_new();

/// The shared control plane, the CRDs, a default MCPGuardPolicy, the webhook server (own thread and runtime, so it
/// outlives any one test) and the two webhook configurations, active.
pub async fn env() -> &'static Env {
    ENV.get_or_init(|| async { setup().await.expect("webhook test environment") })
        .await
}

pub async fn setup() -> anyhow::Result<Env> {
    let cluster = Cluster::shared().await;
    cluster.apply_crds().await?;
    let client = cluster.client();

    let policy: MCPGuardPolicy = serde_json::from_value(json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
        "metadata": { "name": "default" },
        "spec": { "sidecar": { "image": SIDECAR_IMAGE, "imagePullPolicy": "IfNotPresent", "logLevel": "debug" } }
    }))?;
    Api::<MCPGuardPolicy>::all(client.clone())
        .patch(
            "default",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&policy),
        )
        .await?;

    // A CA and a serving certificate for 127.0.0.1, as the chart (or cert-manager) would provide.
    let certs = tempfile::tempdir()?;
    let (ca_pem, cert_pem, key_pem) = webhook_certificates()?;
    let cert_path = certs.path().join("tls.crt");
    let key_path = certs.path().join("tls.key");
    std::fs::write(&cert_path, cert_pem)?;
    std::fs::write(&key_path, key_pem)?;

    let port = start_webhook(cluster, cert_path.clone(), key_path.clone())?;
    apply_webhook_configurations(&client, port, &ca_pem).await?;
    wait_until_webhooks_active(cluster).await?;
    Ok(Env {
        cluster,
        ca_pem,
        cert_path,
        key_path,
        _certs: certs,
    })
}

pub fn webhook_certificates() -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "mcp-guard webhook test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "mcp-guard-webhook");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok((ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem()))
}

/// Runs `webhook::WebhookServer` (the same code `mcp-guard-operator` serves) on 127.0.0.1 in its own thread.
pub fn start_webhook(cluster: &'static Cluster, cert: PathBuf, key: PathBuf) -> anyhow::Result<u16> {
    let (tx, rx) = mpsc::channel::<anyhow::Result<u16>>();
    std::thread::Builder::new()
        .name("webhook".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let client = cluster.client();
                let state =
                    WebhookState::start(client, WebhookSettings::default(), WebhookMetrics::default()).await;
                let addr = "127.0.0.1:0".parse().expect("addr");
                match webhook::WebhookServer::bind(addr, &cert, &key, state).await {
                    Ok(server) => {
                        let port = server.local_addr().map(|a| a.port()).unwrap_or_default();
                        let _ = tx.send(Ok(port));
                        server.run(std::future::pending()).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            });
        })?;
    rx.recv_timeout(Duration::from_secs(60))?
}

/// The configurations the chart renders (docs/webhook.md), pointing at `https://127.0.0.1:PORT`.
pub async fn apply_webhook_configurations(client: &Client, port: u16, ca_pem: &str) -> anyhow::Result<()> {
    let ca = base64(ca_pem);
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": WEBHOOK_NAME },
        "webhooks": [{
            "name": "inject.mcpguard.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": crate::REINVOCATION_POLICY,
            "timeoutSeconds": 10,
            "clientConfig": { "url": format!("https://127.0.0.1:{port}/mutate-pods"), "caBundle": ca },
            "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                        "scope": "Namespaced" }],
            "namespaceSelector": {
                "matchLabels": { "mcpguard.dev/injection": "enabled" },
                "matchExpressions": [{ "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                       "values": ["kube-system", "kube-public", "kube-node-lease"] },
                                     { "key": BINARY_LABEL, "operator": "DoesNotExist" }]
            },
            "objectSelector": {
                "matchExpressions": [{ "key": "mcpguard.dev/inject", "operator": "NotIn", "values": ["false"] }]
            }
        }]
    }))?;
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": WEBHOOK_NAME },
        "webhooks": [{
            "name": "validate.mcpserver.mcpguard.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": { "url": format!("https://127.0.0.1:{port}/validate-mcpserver"), "caBundle": ca },
            "rules": [{ "operations": ["CREATE", "UPDATE"], "apiGroups": ["mcpguard.dev"], "apiVersions": ["v1alpha1"],
                        "resources": ["mcpservers"], "scope": "Namespaced" }]
        }]
    }))?;
    let pp = PatchParams::apply(MANAGER).force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(WEBHOOK_NAME, &pp, &Patch::Apply(&mutating))
        .await?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(WEBHOOK_NAME, &pp, &Patch::Apply(&validating))
        .await?;
    Ok(())
}

pub fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The API server picks webhook configurations up asynchronously: dry-run until both answer.
pub async fn wait_until_webhooks_active(cluster: &Cluster) -> anyhow::Result<()> {
    let client = cluster.client();
    let ns = opted_in_namespace(cluster, "wh-warmup", &[]).await;
    create_mcpserver(
        &client,
        &ns,
        "warm",
        json!({ "selector": { "matchLabels": { "app": "warm" } }, "port": 8000 }),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    loop {
        let pod = pod_json("warm-0", &[("app", "warm")], json!({}));
        let injected = Api::<Pod>::namespaced(client.clone(), &ns)
            .create(&dry, &pod)
            .await
            .map(|p| guard_container(&p).is_some())
            .unwrap_or(false);
        let bad = mcpserver_json(
            "warm-bad",
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 8000,
                                                     "hosts": ["a.example.com:99999"] }),
        );
        let validated = matches!(
            Api::<MCPServer>::namespaced(client.clone(), &ns).create(&dry, &bad).await,
            Err(kube::Error::Api(e)) if e.message.contains("spec.hosts[0]")
        );
        if injected && validated {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("webhooks not active after 60s (injected: {injected}, validated: {validated})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn opted_in_namespace(cluster: &Cluster, prefix: &str, extra: &[(&str, &str)]) -> String {
    let ns = cluster.namespace(prefix).await;
    let mut labels: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.insert("mcpguard.dev/injection".into(), "enabled".into());
    label_namespace(&cluster.client(), &ns, &labels).await;
    ns
}

pub async fn label_namespace(client: &Client, ns: &str, labels: &BTreeMap<String, String>) {
    let patch = json!({ "metadata": { "labels": labels } });
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("label namespace {ns}: {e}"));
}

pub fn mcpserver_json(name: &str, spec: Value) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer", "metadata": { "name": name }, "spec": spec
    }))
    .expect("MCPServer json")
}

pub async fn create_mcpserver(
    client: &Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<MCPServer, kube::Error> {
    Api::<MCPServer>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &mcpserver_json(name, spec))
        .await
}

/// A container that passes Pod Security "restricted" on its own.
pub fn restricted_container(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "image": "registry.example.com/weather-mcp:1.0",
        "ports": [{ "name": "mcp", "containerPort": port }],
        "readinessProbe": { "httpGet": { "path": "/mcp", "port": "mcp" } },
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" }
        }
    })
}

pub fn pod_json(name: &str, labels: &[(&str, &str)], extra_spec: Value) -> Pod {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let mut spec = json!({ "containers": [restricted_container("server", 8000)] });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Pod",
                                    "metadata": { "name": name, "labels": labels }, "spec": spec }))
    .expect("pod json")
}

pub fn guard_container(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == "mcp-guard")
}

pub fn deployment_json(name: &str, app: &str, replicas: i32, port: u16) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": app } },
            "template": {
                "metadata": { "labels": { "app": app } },
                "spec": { "containers": [restricted_container("server", port)] }
            }
        }
    }))
    .expect("deployment json")
}

/// Waits until the controller-manager has created `n` pods with `app=<app>`.
pub async fn wait_for_pods(client: &Client, ns: &str, app: &str, n: usize) -> Vec<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("app={app}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = api.list(&lp).await.expect("list pods").items;
        if pods.len() >= n {
            return pods;
        }
        if Instant::now() > deadline {
            let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter_map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            panic!(
                "{ns}: {} of {n} pods for app={app} after 60s; events:\n{events}",
                pods.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
