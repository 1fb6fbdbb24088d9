//! Helpers shared by the chart tests: run the real `helm`, render the chart, pick documents out of the output.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
// The one `eventually` of the tests; each test binary that includes this module uses one or the other.
#[allow(unused_imports)]
pub use test_support::{eventually, eventually_or};
use testkit::cluster::Cluster;
use testkit::tools::{bin, workspace_root};

/// The release namespace the render tests use.
pub const NAMESPACE: &str = "mcp-guard-system";
/// The release name the render tests use (so names are "mcp-guard-...").
pub const RELEASE: &str = "mcp-guard";

pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/mcp-guard")
}

/// `helm` with its config, cache and data directories in a private temporary directory, so that tests neither
/// read nor write the user's Helm state.
pub fn helm(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(bin("helm"));
    cmd.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    cmd
}

pub fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `kubectl <args>` against `cluster` as its admin: the output, or a panic with kubectl's.
pub fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    kubectl_or(cluster, args, String::new)
}

/// [`kubectl`], adding `context()` (e.g. the cluster's state) to the panic message when kubectl fails.
pub fn kubectl_or(cluster: &Cluster, args: &[&str], context: impl FnOnce() -> String) -> String {
    let mut cmd = cluster.kubectl();
    cmd.args(args);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        context()
    );
    text(&out.stdout)
}

/// Parses a multi-document YAML stream into JSON values, skipping empty documents.
/// `helm install --wait` of the chart on a real node, as docs/install.md says: the release namespace
/// [`NAMESPACE`] under Pod Security "restricted", one replica (one node, two cores), everything else the chart's
/// defaults. `context()` (the cluster's state) is added to a failure.
pub fn install_on_node(cluster: &Cluster, context: impl Fn() -> String) {
    kubectl_or(cluster, &["create", "namespace", NAMESPACE], &context);
    kubectl_or(
        cluster,
        &[
            "label",
            "namespace",
            NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        &context,
    );
    let helm_home = tempfile::tempdir().expect("a Helm home");
    let mut install = helm(helm_home.path());
    install
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["install", RELEASE])
        .arg(chart_dir())
        .args(["-n", NAMESPACE, "--wait", "--timeout", "5m"])
        .args(["--set", "replicaCount=1"]);
    let out = run(install);
    assert!(
        out.status.success(),
        "helm install --wait: {}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        context()
    );
}

pub fn parse_docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            let v =
                serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{yaml}"));
            serde_json::to_value(v).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart with extra arguments: the documents, or helm's stderr on failure.
pub fn render(args: &[&str]) -> Result<Vec<Value>, String> {
    let home = tempfile::tempdir().expect("a temporary directory");
    let mut cmd = helm(home.path());
    cmd.args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE])
        .args(args);
    let out = run(cmd);
    if out.status.success() {
        Ok(parse_docs(&text(&out.stdout)))
    } else {
        Err(text(&out.stderr))
    }
}

/// Renders or panics with helm's message.
pub fn render_ok(args: &[&str]) -> Vec<Value> {
    render(args).unwrap_or_else(|e| panic!("helm template {args:?} failed:\n{e}"))
}

pub fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    k.sort();
    k
}

/// The one document of `kind` (panics if there are zero or several).
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}: {:?}",
        found.len(),
        kinds(docs)
    );
    found[0]
}

pub fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in {:?}", kinds(docs)))
}

/// The operator container of the Deployment.
pub fn operator_container(docs: &[Value]) -> &Value {
    let deploy = one(docs, "Deployment");
    &deploy["spec"]["template"]["spec"]["containers"][0]
}

pub fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Each `kubectl` command's output, for the message of a node test that gave up waiting.
pub fn kubectl_outputs(cluster: &Cluster, commands: &[&[&str]]) -> String {
    let mut out = String::new();
    for args in commands {
        let mut cmd = cluster.kubectl();
        cmd.args(*args);
        let o = run(cmd);
        out.push_str(&format!(
            "--- kubectl {}\n{}{}\n",
            args.join(" "),
            text(&o.stdout),
            text(&o.stderr)
        ));
    }
    out
}

/// A namespaced Kubernetes object the tests apply (built-in kinds and the CRDs alike).
pub trait Namespaced:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
{
}

/// Server-side apply (forced, as `manager`) of a namespaced object, as `kubectl apply --server-side` does.
#[allow(dead_code)] // not every test that includes this module applies objects
pub async fn apply_in<K: Namespaced>(client: &kube::Client, ns: &str, manager: &str, value: &Value) -> K {
    let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
    kube::Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &kube::api::PatchParams::apply(manager).force(),
            &kube::api::Patch::Apply(value),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// The exit code of a pod's first container, once it terminated.
#[allow(dead_code)] // not every test that includes this module runs pods
pub fn exit_code(pod: &k8s_openapi::api::core::v1::Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// A pod that runs `script` (with `args`) once in the example-server image's Python, as ServiceAccount
/// `account`, with a projected token per `(file, audience)` under /var/run/secrets/mcp.
#[allow(dead_code)] // not every test that includes this module runs pods
pub fn python_pod(
    name: &str,
    account: &str,
    image: &str,
    script: &str,
    args: &[&str],
    tokens: &[(&str, &str)],
) -> Value {
    let mut command = vec!["/opt/mcp/bin/python".to_string(), "-c".into(), script.into()];
    command.extend(args.iter().map(|a| a.to_string()));
    let sources: Vec<Value> = tokens
        .iter()
        .map(|(path, audience)| {
            serde_json::json!({ "serviceAccountToken": { "path": path, "audience": audience, "expirationSeconds": 3600 } })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": account,
            "containers": [{
                "name": "client", "image": image, "imagePullPolicy": "Never", "command": command,
                "volumeMounts": [{ "name": "mcp", "mountPath": "/var/run/secrets/mcp", "readOnly": true }],
            }],
            "volumes": [{ "name": "mcp", "projected": { "sources": sources } }],
        },
    })
}

/// An MCP server made of `script` run by the example-server image's Python on `port`: its Service and its
/// Deployment (pods labelled `app: <name>`).
#[allow(dead_code)] // not every test that includes this module runs servers
pub fn python_server(name: &str, port: u16, image: &str, script: &str) -> (Value, Value) {
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name },
                  "ports": [{ "name": "http", "port": port, "targetPort": port, "protocol": "TCP" }] }
    });
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": name } },
                  "template": { "metadata": { "labels": { "app": name } },
                                "spec": { "containers": [{
                                    "name": "mcp-server", "image": image, "imagePullPolicy": "Never",
                                    "command": ["/opt/mcp/bin/python", "-c", script],
                                    "ports": [{ "name": "http", "containerPort": port, "protocol": "TCP" }] }] } } }
    });
    (service, deployment)
}

/// Creates namespace `ns` opted in to injection (`mcpguard.dev/injection: enabled`).
#[allow(dead_code)] // not every test that includes this module makes namespaces
pub async fn opted_in_namespace(client: &kube::Client, ns: &str) {
    let namespace = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": ns, "labels": { "mcpguard.dev/injection": "enabled" } },
    });
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(namespace).expect("a Namespace"),
        )
        .await
        .expect("the opted-in namespace");
}

/// Waits up to `timeout` (as kubectl takes it: `300s`) until `deploy` of `ns` has rolled out (`kubectl rollout
/// status`).
#[allow(dead_code)] // not every test that includes this module rolls Deployments
pub fn rolled_out(
    cluster: &Cluster,
    ns: &str,
    deploy: &str,
    timeout: &str,
    context: impl FnOnce() -> String,
) {
    kubectl_or(
        cluster,
        &[
            "-n",
            ns,
            "rollout",
            "status",
            deploy,
            &format!("--timeout={timeout}"),
        ],
        context,
    );
}

/// Whether the pod's `Ready` condition is true.
#[allow(dead_code)] // not every test that includes this module runs pods
pub fn is_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Every container status of the pod, init containers (a native sidecar among them) first.
#[allow(dead_code)] // not every test that includes this module runs pods
pub fn statuses(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<k8s_openapi::api::core::v1::ContainerStatus> {
    let status = pod.status.clone().unwrap_or_default();
    status
        .init_container_statuses
        .unwrap_or_default()
        .into_iter()
        .chain(status.container_statuses.unwrap_or_default())
        .collect()
}

/// `Ok` with the pods matching `labels` that are not being deleted, once there are `n` and each is `ready`;
/// otherwise each pod as `describe` says, for the wait's report.
#[allow(dead_code)] // not every test that includes this module runs pods
pub async fn live_pods_when(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    labels: &str,
    n: usize,
    ready: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool,
    describe: impl Fn(&k8s_openapi::api::core::v1::Pod) -> String,
) -> Result<Vec<k8s_openapi::api::core::v1::Pod>, String> {
    let list = pods
        .list(&kube::api::ListParams::default().labels(labels))
        .await
        .map_err(|e| e.to_string())?;
    let live: Vec<_> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if live.len() == n && live.iter().all(&ready) {
        Ok(live)
    } else {
        Err(live.iter().map(describe).collect::<Vec<_>>().join("; "))
    }
}

/// `Ok` once exactly one pod matches `labels` and it is Ready; otherwise what the pods' statuses are.
#[allow(dead_code)] // not every test that includes this module runs pods
pub async fn one_pod_ready(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    labels: &str,
) -> Result<(), String> {
    let list = pods
        .list(&kube::api::ListParams::default().labels(labels))
        .await
        .map_err(|e| e.to_string())?;
    match list.items.as_slice() {
        [pod] if is_ready(pod) => Ok(()),
        other => Err(format!(
            "{:?}",
            other.iter().map(|p| p.status.clone()).collect::<Vec<_>>()
        )),
    }
}
