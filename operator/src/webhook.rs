//! The admission webhook: injects the guard into MCP server pods (`/mutate-pods`) and validates MCPServers
//! (`/validate-mcpserver`), served over TLS by [`serve`].
//!
//! Pure core, thin IO shell: [`inject::plan`] decides what happens to a pod and [`admission::check_mcpserver`]
//! what happens to an MCPServer, from plain values; [`WebhookState`] fetches those values (reflector caches, with
//! a live read when a cache may lag) and [`server`] speaks HTTPS. Approach and limits: `docs/webhook.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeStatus, NodeSystemInfo, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::crd::{MCPGuardPolicy, MCPGuardPolicySpec, MCPServer, TrafficLayout};
use crate::sources::sig_servers;
use crate::stores::slim;

pub mod admission;
pub mod inject;
pub mod metrics;
pub mod server;
pub mod tls;

#[cfg(test)]
mod tests;

pub use inject::{
    GuardedServer, InjectionPlan, InjectionStatus, Layout, SidecarSettings, SkipReason, guarded_by,
};
pub use metrics::WebhookMetrics;
pub use server::{WebhookServer, serve};

/// Path of the pod-mutating webhook.
pub const MUTATE_PODS_PATH: &str = "/mutate-pods";
/// Path of the MCPServer-validating webhook.
pub const VALIDATE_MCPSERVER_PATH: &str = "/validate-mcpserver";
pub use crate::settings::DEFAULT_SIDECAR_IMAGE;
/// How long start-up waits for the API server's version.
pub const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// First Kubernetes minor version (1.x) with native sidecars on by default.
pub const NATIVE_SIDECAR_MINOR: u32 = 29;

/// Errors of the webhook's IO shell.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// This process's reflector cache (falls back to [`Read::ApiServerCache`] until it has synced).
    Cache,
    /// A list served from the API server's watch cache (`resourceVersion=0`): never older than this process's
    /// cache, which is fed from it, and a millisecond or two to read (a quorum read measured ~80 ms on the
    /// test control plane).
    ApiServerCache,
    /// A quorum read.
    Consistent,
}

/// Settings from the operator's command line.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Image when the policy's `sidecar.image` is unset.
    pub default_sidecar_image: String,
    /// `None`: detect from the API server's version and the nodes' kubelet versions (native sidecars from 1.29).
    pub native_sidecars: Option<bool>,
    /// Namespaces never injected besides kube-system & co (the operator's own).
    pub excluded_namespaces: Vec<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            default_sidecar_image: DEFAULT_SIDECAR_IMAGE.into(),
            native_sidecars: None,
            excluded_namespaces: Vec::new(),
        }
    }
}

/// What the handlers read: reflector caches of Namespaces, MCPServers and MCPGuardPolicies, and a client for
/// live reads when a cache may lag (a namespace or MCPServer created a moment before the pod).
pub struct WebhookState {
    client: Client,
    settings: WebhookSettings,
    /// What the API server's version allows (or the `--native-sidecars` flag).
    native_sidecars: bool,
    /// The nodes' kubelet versions (`None`: nodes cannot be listed, e.g. RBAC without `nodes`; the API server's
    /// version then decides alone).
    nodes: Option<Cache<Node>>,
    namespaces: Cache<Namespace>,
    servers: Cache<MCPServer>,
    policies: Cache<MCPGuardPolicy>,
    metrics: WebhookMetrics,
}

struct Cache<K: kube::Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    synced: Arc<AtomicBool>,
}

impl<K> Cache<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default + Send + Sync,
{
    /// A cache of `K` holding what `keep` leaves of each object.
    fn spawn(api: Api<K>, what: &'static str, keep: fn(&mut K)) -> Self {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&synced);
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(keep)
            .reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => flag.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, kind = what, "webhook watch failed; retrying"),
                }
            }
        });
        Self { store, synced }
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// A Node as the webhook keeps it: its name and kubelet version, the one field it reads. A Node's status
/// (images, conditions, addresses, volumes) is tens of KiB on a busy node, times every node of the cluster.
fn kubelet_version_only(node: &mut Node) {
    let kubelet_version = node
        .status
        .as_mut()
        .and_then(|s| s.node_info.as_mut())
        .map(|i| std::mem::take(&mut i.kubelet_version));
    *node = Node {
        metadata: ObjectMeta {
            name: node.metadata.name.take(),
            resource_version: node.metadata.resource_version.take(),
            ..Default::default()
        },
        spec: None,
        status: kubelet_version.map(|kubelet_version| NodeStatus {
            node_info: Some(NodeSystemInfo {
                kubelet_version,
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
}

impl WebhookState {
    /// Starts the caches and detects native sidecar support. Returns at once; handlers read live until the
    /// caches have synced.
    pub async fn start(client: Client, settings: WebhookSettings, metrics: WebhookMetrics) -> Arc<Self> {
        let native_sidecars = match settings.native_sidecars {
            Some(v) => v,
            None => match tokio::time::timeout(VERSION_TIMEOUT, client.apiserver_version()).await {
                Ok(Ok(info)) => {
                    let native = supports_native_sidecars(&info.major, &info.minor);
                    tracing::info!(version = %info.git_version, native_sidecars = native, "detected API server");
                    native
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the API server version; injecting ordinary containers");
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        "API server version not read within {VERSION_TIMEOUT:?}; injecting ordinary containers"
                    );
                    false
                }
            },
        };
        // A kubelet may be older than its API server (version skew during an upgrade), and one without native
        // sidecars would keep the pod in Init: watch the nodes' versions, when allowed to.
        let nodes = if settings.native_sidecars.is_none() && native_sidecars {
            let api = Api::<Node>::all(client.clone());
            let lp = ListParams::default().limit(1);
            match tokio::time::timeout(VERSION_TIMEOUT, api.list_metadata(&lp)).await {
                Ok(Ok(_)) => Some(Cache::spawn(
                    Api::all(client.clone()),
                    "Node",
                    kubelet_version_only,
                )),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot list nodes; native sidecars are chosen from the API server's version alone");
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        Arc::new(Self {
            nodes,
            namespaces: Cache::spawn(Api::all(client.clone()), "Namespace", slim),
            servers: Cache::spawn(Api::all(client.clone()), "MCPServer", slim),
            policies: Cache::spawn(Api::all(client.clone()), "MCPGuardPolicy", slim),
            client,
            settings,
            native_sidecars,
            metrics,
        })
    }

    /// Whether the cluster runs native sidecars: the API server's version (or the flag) and, when nodes can be
    /// read, every node's kubelet (a pod's annotation and the policy may still override it).
    pub fn native_sidecars(&self) -> bool {
        match &self.nodes {
            Some(nodes) if nodes.synced() => {
                let versions: Vec<String> = nodes
                    .store
                    .state()
                    .iter()
                    .map(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.node_info.as_ref())
                            .map(|i| i.kubelet_version.clone())
                            .unwrap_or_default()
                    })
                    .collect();
                self.native_sidecars && kubelets_support_native_sidecars(versions.iter().map(String::as_str))
            }
            // Not synced yet: the API server's answer, as before the node watch existed.
            _ => self.native_sidecars,
        }
    }

    /// All caches have synced (answers are then served without live reads).
    pub fn is_synced(&self) -> bool {
        self.namespaces.synced() && self.servers.synced() && self.policies.synced()
    }

    pub fn metrics(&self) -> &WebhookMetrics {
        &self.metrics
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// The client the webhook reads with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The labels of a namespace: cache first, then a live read.
    pub(crate) async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, kube::Error> {
        if let Some(n) = self.namespaces.store.get(&ObjectRef::new(ns)) {
            return Ok(n.labels().clone());
        }
        let n = Api::<Namespace>::all(self.client.clone()).get(ns).await?;
        Ok(n.labels().clone())
    }

    /// The MCPServers of a namespace, read as `read` says.
    pub(crate) async fn servers_in(&self, ns: &str, read: Read) -> Result<Vec<MCPServer>, kube::Error> {
        self.servers_where(ns, read, |_| true).await
    }

    /// The MCPServers of a namespace whose selector selects a pod with `labels` (a `serverRef`'s as resolved),
    /// read as `read` says: a pod's admission copies and resolves those only, not the namespace's thousands.
    pub(crate) async fn servers_selecting(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
        read: Read,
    ) -> Result<Vec<MCPServer>, kube::Error> {
        self.servers_where(ns, read, |s| {
            crate::selector::matches(&sig_servers::with_selector(s).spec.selector, labels)
        })
        .await
    }

    async fn servers_where(
        &self,
        ns: &str,
        read: Read,
        keep: impl Fn(&MCPServer) -> bool,
    ) -> Result<Vec<MCPServer>, kube::Error> {
        if read == Read::Cache && self.servers.synced() {
            // Picked inside the cache: a cluster of 10,000 MCPServers costs no copy of a server left out.
            return Ok(self
                .servers
                .store
                .state_filter(|s| s.metadata.namespace.as_deref() == Some(ns) && keep(s))
                .into_iter()
                .map(|s| (*s).clone())
                .collect());
        }
        let lp = match read {
            Read::Consistent => ListParams::default(),
            Read::Cache | Read::ApiServerCache => ListParams::default().match_any(),
        };
        let mut servers = Api::<MCPServer>::namespaced(self.client.clone(), ns)
            .list(&lp)
            .await?
            .items;
        servers.retain(|s| keep(s));
        Ok(servers)
    }

    /// A policy's spec (`None`: it does not exist).
    pub(crate) async fn policy(&self, name: &str) -> Result<Option<MCPGuardPolicySpec>, kube::Error> {
        if let Some(p) = self.policies.store.get(&ObjectRef::new(name)) {
            return Ok(Some(p.spec.clone()));
        }
        if self.policies.synced() {
            return Ok(None);
        }
        Ok(Api::<MCPGuardPolicy>::all(self.client.clone())
            .get_opt(name)
            .await?
            .map(|p| p.spec))
    }

    /// Pods of a namespace matching a label selector string (live).
    pub(crate) async fn pods_matching(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, kube::Error> {
        let lp = ListParams::default().labels(selector).limit(500);
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&lp)
            .await?
            .items)
    }

    /// MCPServers turned into planner input, each with its policy's sidecar settings.
    pub(crate) async fn guarded_servers(
        &self,
        servers: &[MCPServer],
    ) -> Result<Vec<GuardedServer>, kube::Error> {
        let mut out = Vec::with_capacity(servers.len());
        for s in servers {
            let policy = self.policy(s.spec.policy_name()).await?.unwrap_or_default();
            let theirs = sig_servers::fetch(&self.client, s).await?;
            let s = &*sig_servers::with_spec(s, sig_servers::effective(&s.spec, theirs.as_ref()));
            if let Some(g) = guarded_server(s, &policy, &self.settings.default_sidecar_image) {
                out.push(g);
            }
        }
        Ok(out)
    }
}

/// An MCPServer as planner input (`None` when its port is out of range — validation refuses those).
pub fn guarded_server(
    server: &MCPServer,
    policy: &MCPGuardPolicySpec,
    default_image: &str,
) -> Option<GuardedServer> {
    let settings = crate::settings::resolve(&server.spec, Some(policy), default_image);
    let port = u16::try_from(settings.server_port).ok().filter(|p| *p > 0)?;
    let layout = match settings.layout {
        TrafficLayout::SharedPort => Layout::SharedPort,
        TrafficLayout::GuardPort => Layout::GuardPort {
            guard_port: u16::try_from(settings.guarded_port).ok().filter(|p| *p > 0)?,
        },
    };
    Some(GuardedServer {
        name: server.name_any(),
        selector: server.spec.selector.clone(),
        port,
        layout,
        native_sidecars: settings.native_sidecars,
        sidecar: settings.sidecar,
    })
}

/// Every kubelet runs native sidecars: versions like `v1.34.4` (or `v1.29.0-eks-1`), each 1.29 or newer. An
/// empty or unreadable version counts as too old (an ordinary container works everywhere).
pub fn kubelets_support_native_sidecars<'a>(versions: impl IntoIterator<Item = &'a str>) -> bool {
    versions.into_iter().all(|v| {
        let v = v.trim_start_matches('v');
        let mut parts = v.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(major), Some(minor)) => supports_native_sidecars(major, minor),
            _ => false,
        }
    })
}

/// Native sidecars are on by default from Kubernetes 1.29 (`minor` may read like `"29+"`).
pub fn supports_native_sidecars(major: &str, minor: &str) -> bool {
    let digits = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    };
    match (digits(major), digits(minor)) {
        (Some(1), Some(m)) => m >= NATIVE_SIDECAR_MINOR,
        (Some(maj), _) => maj > 1,
        _ => false,
    }
}
