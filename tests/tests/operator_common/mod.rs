//! Shared helpers of the operator integration tests: an in-process controller scoped to one namespace, object
//! builders, a [`Scenario`] of them applied in dependency order, and polling with deadlines.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use mcp_guard_config::{CONFIG_KEY, GuardConfig};
use mcp_guard_operator::controller::{ControllerReadiness, ControllerSettings};
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use mcp_guard_operator::leader::LeaseSettings;
use mcp_guard_operator::metrics::ControllerMetrics;
use mcp_guard_operator::run::{ControllerOptions, run_controller};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use test_support::eventually;

pub const MANAGER: &str = "operator-tests";
/// Deadline for objects to be set up and first reconciled.
pub const SETUP: Duration = Duration::from_secs(30);
/// How long the test operators let an allowlist be empty before warning (the default is 10 s).
pub const EMPTY_GRACE: Duration = Duration::from_secs(2);
/// Propagation deadline used in assertions: generous for a loaded CI machine; the measured latency is printed.
pub const PROPAGATION: Duration = Duration::from_secs(5);

/// An operator (controller only) running in this test's runtime.
pub struct Operator {
    pub metrics: ControllerMetrics,
    pub readiness: ControllerReadiness,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), mcp_guard_operator::preflight::StartupError>>>,
}

impl Operator {
    /// Starts a controller watching `namespace` only (so tests running in parallel do not share objects).
    pub fn start(
        client: Client,
        namespace: &str,
        lease: Option<LeaseSettings>,
        gateway_api: Option<bool>,
    ) -> Operator {
        Self::start_in(client, Some(namespace), lease, gateway_api)
    }

    /// Starts a controller watching `namespace`, or every namespace with `None` (it then also writes
    /// MCPGuardPolicy statuses: a test binary of its own, so that it shares no cluster with namespaced ones).
    pub fn start_in(
        client: Client,
        namespace: Option<&str>,
        lease: Option<LeaseSettings>,
        gateway_api: Option<bool>,
    ) -> Operator {
        // Operator logs on stderr with RUST_LOG (e.g. RUST_LOG=mcp_guard_operator=debug); quiet otherwise.
        mcp_guard_operator::cli::init_logging(mcp_guard_operator::cli::LogFormat::Text, "error");
        let settings = ControllerSettings {
            namespace: namespace.map(str::to_string),
            gateway_api,
            discovery_interval: Duration::from_secs(1),
            empty_allowlist_grace: EMPTY_GRACE,
            identity: lease
                .as_ref()
                .map_or_else(|| "operator-tests".to_string(), |l| l.identity.clone()),
            ..Default::default()
        };
        let metrics = ControllerMetrics::default();
        let readiness = ControllerReadiness::default();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run_controller(
            client,
            ControllerOptions { settings, lease },
            metrics.clone(),
            readiness.clone(),
            rx,
        ));
        Operator {
            metrics,
            readiness,
            shutdown: tx,
            task: Some(task),
        }
    }

    /// Graceful shutdown (releases the Lease when leading; `operator_startup` checks that it does). A drain that
    /// outlasts a minute is reported and the task aborted: what these tests check is what the operator derived
    /// and wrote, and a drain behind a loaded API server (several tests share one) once took over 20 s in CI.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(60), task).await.is_err() {
                eprintln!(
                    "WARNING: the operator did not stop within 60 s of its shutdown signal ({} reconciles); aborted",
                    self.reconciles()
                );
                abort.abort();
            }
        }
    }

    pub fn reconciles(&self) -> u64 {
        self.metrics.reconcile_count("ok")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// `(status, reason, message)` of the condition `type_` in `conditions`.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// `(status, reason, message)` of an MCPServer's condition `type_`.
pub fn condition<'a>(server: &'a MCPServer, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    find_condition(&server.status.as_ref()?.conditions, type_)
}

/// `(status, reason, message)` of an MCPGuardPolicy's condition `type_`.
pub fn policy_condition<'a>(policy: &'a MCPGuardPolicy, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    find_condition(&policy.status.as_ref()?.conditions, type_)
}

/// Waits (up to [`SETUP`]) until MCPServer `name` satisfies `pred`.
pub async fn server_with(
    api: &Api<MCPServer>,
    name: &str,
    what: &str,
    pred: impl Fn(&MCPServer) -> bool,
) -> MCPServer {
    eventually(what, SETUP, || async {
        api.get_opt(name)
            .await
            .expect("get MCPServer")
            .filter(|s| pred(s))
    })
    .await
}

/// Server-side applies a namespaced object given as JSON.
pub async fn apply<K>(client: &Client, ns: &str, value: serde_json::Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(value).expect("valid object");
    let name = obj.meta().name.clone().expect("object name");
    Api::<K>::namespaced(client.clone(), ns)
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// Server-side applies a cluster-scoped object given as JSON.
pub async fn apply_cluster<K>(client: &Client, value: serde_json::Value) -> K
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(value).expect("valid object");
    let name = obj.meta().name.clone().expect("object name");
    Api::<K>::all(client.clone())
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// The guard config in ConfigMap `<server>-mcp-guard`, if it exists.
pub async fn guard_config(client: &Client, ns: &str, server: &str) -> Option<GuardConfig> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&format!("{server}-mcp-guard"))
        .await
        .expect("get ConfigMap")?;
    let json = cm.data?.get(CONFIG_KEY)?.clone();
    Some(serde_json::from_str(&json).expect("guard.json parses as GuardConfig"))
}

/// Waits until the guard config satisfies `pred`, returning it (panics with the last config seen).
pub async fn wait_config(
    client: &Client,
    ns: &str,
    server: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&GuardConfig) -> bool,
) -> GuardConfig {
    eventually(what, timeout, || async {
        match guard_config(client, ns, server).await {
            Some(c) if pred(&c) => Ok(c),
            last => Err(format!("last config: {last:?}")),
        }
    })
    .await
}

pub fn service(name: &str, app: &str, ports: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": app }, "ports": ports }
    })
}

pub fn mcpserver(name: &str, app: &str, port: i32, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({ "selector": { "matchLabels": { "app": app } }, "port": port });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "name": name },
        "spec": spec
    })
}

pub fn ingress(name: &str, rules: serde_json::Value, tls_hosts: &[&str]) -> serde_json::Value {
    let mut spec = serde_json::json!({ "rules": rules });
    if !tls_hosts.is_empty() {
        spec["tls"] = serde_json::json!([{ "hosts": tls_hosts, "secretName": format!("{name}-tls") }]);
    }
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": { "name": name },
        "spec": spec
    })
}

/// An Ingress rule: `host` (or none) → Service `svc` port `port`.
pub fn rule(host: Option<&str>, svc: &str, port: i32) -> serde_json::Value {
    let mut r = serde_json::json!({
        "http": { "paths": [{ "path": "/", "pathType": "Prefix",
            "backend": { "service": { "name": svc, "port": { "number": port } } } }] }
    });
    if let Some(h) = host {
        r["host"] = serde_json::json!(h);
    }
    r
}

/// The ports of each ingress rule of a NetworkPolicy.
pub fn rule_ports(np: &k8s_openapi::api::networking::v1::NetworkPolicy) -> Vec<Vec<String>> {
    let value = serde_json::to_value(np.spec.as_ref().and_then(|s| s.ingress.clone())).expect("json");
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].to_string())
                .collect()
        })
        .collect()
}

/// The objects of one test namespace, applied in dependency order (Services, then Ingresses, then MCPServers)
/// so that the operator sees each MCPServer with what it selects already present:
/// `Scenario::new(&client, &ns).service(..).ingress(..).server(..).apply().await`.
pub struct Scenario {
    client: Client,
    ns: String,
    services: Vec<serde_json::Value>,
    ingresses: Vec<serde_json::Value>,
    servers: Vec<serde_json::Value>,
}

impl Scenario {
    pub fn new(client: &Client, ns: &str) -> Scenario {
        Scenario {
            client: client.clone(),
            ns: ns.to_string(),
            services: Vec::new(),
            ingresses: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// A Service (see [`service`]).
    pub fn service(mut self, value: serde_json::Value) -> Scenario {
        self.services.push(value);
        self
    }

    /// An Ingress (see [`ingress`]).
    pub fn ingress(mut self, value: serde_json::Value) -> Scenario {
        self.ingresses.push(value);
        self
    }

    /// An MCPServer (see [`mcpserver`]).
    pub fn server(mut self, value: serde_json::Value) -> Scenario {
        self.servers.push(value);
        self
    }

    pub async fn apply(self) {
        use k8s_openapi::api::core::v1::Service;
        use k8s_openapi::api::networking::v1::Ingress;
        for s in self.services {
            apply::<Service>(&self.client, &self.ns, s).await;
        }
        for i in self.ingresses {
            apply::<Ingress>(&self.client, &self.ns, i).await;
        }
        for m in self.servers {
            apply::<MCPServer>(&self.client, &self.ns, m).await;
        }
    }
}

/// Waits (up to `timeout`) until the ConfigMap of `server` allows `host`, returning its guard config.
pub async fn config_allowing(
    client: &Client,
    ns: &str,
    server: &str,
    host: &str,
    timeout: Duration,
) -> GuardConfig {
    wait_config(
        client,
        ns,
        server,
        timeout,
        &format!("{host} in the ConfigMap"),
        |c| c.allowed_hosts.iter().any(|h| h == host),
    )
    .await
}

/// Waits (up to `timeout`) until the ConfigMap of `server` no longer allows `host`, returning its guard config.
pub async fn config_without(
    client: &Client,
    ns: &str,
    server: &str,
    host: &str,
    timeout: Duration,
) -> GuardConfig {
    wait_config(
        client,
        ns,
        server,
        timeout,
        &format!("{host} gone from the ConfigMap"),
        |c| !c.allowed_hosts.iter().any(|h| h == host),
    )
    .await
}
