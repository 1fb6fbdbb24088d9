//! The controller: for each MCPServer, derive the allowlist from reflector caches, write the ConfigMap
//! `<name>-mcp-guard` (server-side apply, owned by the MCPServer), the status and Events.
//!
//! Reacts to changes of Services, Ingresses, Pods, HTTPRoutes, Gateways and MCPGuardPolicies through `watches_stream`
//! mappers that combine a forward match (which MCPServers could this object route to now) with a reverse index
//! of what each MCPServer's last derivation depended on (which MCPServers did it route to before), so edits
//! and deletions both reach the right MCPServers without periodic rescans.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use mcp_guard_config::CONFIG_KEY;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::allowlist::{self, DepKind, Dependency, Derivation, DeriveInput};
use crate::crd::{MCPGuardPolicy, MCPServer, MCPServerStatus, config_map_name};
use crate::events::{EventNote, EventType, Recorder, allowlist_change_note};
use crate::gateway::{Gateway, HTTPRoute, ReferenceGrant};
use crate::metrics::{ControllerMetrics, EventLabels, ServerLabels};
use crate::status::{
    self, NetworkPolicyOutcome, PolicyStatusInput, StatusInput, build_policy_status, build_status,
};
use crate::validate::{validate_policy, validate_spec};

#[cfg(test)]
mod tests;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "mcp-guard-operator";
/// Label on every ConfigMap the operator writes (its ConfigMap watch is restricted to it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "mcp-guard-operator";
/// Label naming the MCPServer a ConfigMap belongs to.
pub const SERVER_LABEL: &str = "mcpguard.dev/mcpserver";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing ConfigMap {namespace}/{name}: {source}")]
    ConfigMap {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing status of MCPServer {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("serializing the guard config: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("MCPServer without {0}")]
    MissingObjectKey(&'static str),
}

/// Settings from the command line.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Cluster DNS domain for Service DNS names (`cluster.local`).
    pub cluster_domain: String,
    /// This replica's identity (Event reporter instance).
    pub identity: String,
    /// Whether the Gateway API (HTTPRoute, Gateway) is watched; `None` = discover.
    pub gateway_api: Option<bool>,
    /// How often to re-check whether the Gateway API CRDs appeared or went away.
    pub discovery_interval: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// How long an empty allowlist is reported as `NoHostsYet` (no Warning) before it becomes `NoHostsFound`
    /// with a Warning Event: objects applied together reach the operator one by one.
    pub empty_allowlist_grace: Duration,
    /// Watch only this namespace (MCPServers, Services, Ingresses, HTTPRoutes, ConfigMaps); `None` = all.
    pub namespace: Option<String>,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            identity: "mcp-guard-operator".into(),
            gateway_api: None,
            discovery_interval: Duration::from_secs(30),
            concurrency: 32,
            empty_allowlist_grace: Duration::from_secs(10),
            namespace: None,
        }
    }
}

/// Which MCPServers each dependency was consulted by (reverse index of the last derivations).
#[derive(Default, Debug)]
pub struct DependencyIndex {
    by_dep: HashMap<Dependency, HashSet<ObjectRef<MCPServer>>>,
    by_server: HashMap<ObjectRef<MCPServer>, BTreeSet<Dependency>>,
}

impl DependencyIndex {
    /// Records a server's dependencies, replacing the previous set.
    pub fn record(&mut self, server: &ObjectRef<MCPServer>, deps: &BTreeSet<Dependency>) {
        self.forget(server);
        for d in deps {
            self.by_dep.entry(d.clone()).or_default().insert(server.clone());
        }
        self.by_server.insert(server.clone(), deps.clone());
    }

    /// Drops a server from the index.
    pub fn forget(&mut self, server: &ObjectRef<MCPServer>) {
        if let Some(old) = self.by_server.remove(server) {
            for d in old {
                if let Some(set) = self.by_dep.get_mut(&d) {
                    set.remove(server);
                    if set.is_empty() {
                        self.by_dep.remove(&d);
                    }
                }
            }
        }
    }

    /// Servers whose last derivation consulted this object.
    pub fn dependents(&self, dep: &Dependency) -> Vec<ObjectRef<MCPServer>> {
        self.by_dep
            .get(dep)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Reflector caches the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    pub servers: Store<MCPServer>,
    pub services: Store<Service>,
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    pub policies: Store<MCPGuardPolicy>,
    pub config_maps: Store<ConfigMap>,
    /// The NetworkPolicies this operator wrote (by label).
    pub network_policies: Store<NetworkPolicy>,
    pub pods: Store<Pod>,
    /// `None` when the Gateway API is not installed.
    pub routes: Option<Store<HTTPRoute>>,
    pub gateways: Option<Store<Gateway>>,
    /// `None` when the Gateway API is not installed or serves no ReferenceGrants (`v1beta1`).
    pub reference_grants: Option<Store<ReferenceGrant>>,
    /// Namespaces (their labels, for listeners' `allowedRoutes.namespaces.selector`); with the Gateway API only.
    pub namespaces: Option<Store<Namespace>>,
    /// `true` once every watch stream finished its initial list.
    pub synced: tokio::sync::watch::Receiver<bool>,
}

impl Stores {
    /// Waits until every cache has seen its initial list.
    ///
    /// Tracked from the watch streams themselves (`InitDone`), not with `Store::wait_until_ready`: that future
    /// wakes only its most recent poller, so several tasks waiting on one store could wait forever.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Whether every cache has seen its initial list.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }
}

/// Counts watch streams that have not finished their initial list; flips a watch channel when none is left.
#[derive(Clone)]
struct SyncTracker {
    pending: Arc<std::sync::atomic::AtomicUsize>,
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl SyncTracker {
    fn new() -> (Self, tokio::sync::watch::Receiver<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (
            Self {
                pending: Arc::default(),
                tx: Arc::new(tx),
            },
            rx,
        )
    }

    /// Registers one stream; the returned closure is called on each of its events.
    fn track<K>(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + Send + 'static {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let (pending, tx) = (self.pending.clone(), self.tx.clone());
        let mut done = false;
        move |event| {
            if !done && matches!(event, Ok(watcher::Event::InitDone)) {
                done = true;
                if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                    tx.send_replace(true);
                }
            }
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: ControllerMetrics,
    pub settings: ControllerSettings,
    pub stores: Stores,
    pub index: Arc<Mutex<DependencyIndex>>,
    /// resourceVersions of the ConfigMaps this controller wrote: their watch events need no reconcile.
    pub written: Arc<Mutex<HashSet<String>>>,
    /// MCPServers whose last allowlist was empty (for the `empty_allowlists` gauge).
    pub empty: Arc<Mutex<HashSet<ObjectRef<MCPServer>>>>,
    /// Wakes the MCPGuardPolicy status writer (`None` when watching one namespace: it cannot count every user).
    pub policy_status: Option<Arc<tokio::sync::Notify>>,
}

fn in_namespace<K>(store: &Store<K>, ns: &str) -> Vec<Arc<K>>
where
    K: Resource + Clone,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.state_filter(|o| o.meta().namespace.as_deref() == Some(ns))
}

fn entry_values(entries: &[crate::crd::AllowlistEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.value.as_str()).collect()
}

/// The ConfigMap for a server (server-side apply body).
pub fn desired_config_map(server: &MCPServer, ns: &str, json: String) -> Result<ConfigMap, Error> {
    let name = server.name_any();
    let owner = server
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("uid"))?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&name)),
            namespace: Some(ns.to_string()),
            owner_references: Some(vec![owner]),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                    (SERVER_LABEL.to_string(), name),
                ]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([(CONFIG_KEY.to_string(), json)].into()),
        ..Default::default()
    })
}

fn config_map_current(existing: Option<&ConfigMap>, desired: &ConfigMap) -> bool {
    let Some(existing) = existing else { return false };
    existing.data == desired.data && metadata_current(&existing.metadata, &desired.metadata)
}

/// Whether an object the operator writes still has the owners and (at least) the labels it would write.
pub(crate) fn metadata_current(existing: &ObjectMeta, desired: &ObjectMeta) -> bool {
    existing.owner_references == desired.owner_references
        && desired
            .labels
            .iter()
            .flatten()
            .all(|(k, v)| existing.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
}

/// Reconciles one MCPServer.
pub async fn reconcile(server: Arc<MCPServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = server.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let name = server.name_any();
    let oref = ObjectRef::from_obj(&*server);
    if server.metadata.deletion_timestamp.is_some() {
        // The ConfigMap is owned by the MCPServer: the garbage collector removes it.
        forget_server(&server, &ctx.index, &ctx.empty, &ctx.metrics);
        return Ok(Action::await_change());
    }
    let spec = &server.spec;
    let stores = &ctx.stores;
    // Never derive from half-filled caches: a partial allowlist would reject legitimate traffic.
    stores.wait_synced().await;

    let policy = stores.policies.get(&ObjectRef::new(spec.policy_name()));
    let services = in_namespace(&stores.services, &ns);
    let ingresses = in_namespace(&stores.ingresses, &ns);
    let ingress_classes = stores.ingress_classes.state();
    // Routes of the namespace, and routes elsewhere that name one of its Services (a ReferenceGrant decides).
    let routes = stores
        .routes
        .as_ref()
        .map(|s| {
            s.state_filter(|r| {
                r.namespace().as_deref() == Some(ns.as_str())
                    || allowlist::route_backend_services(r)
                        .iter()
                        .any(|(svc_ns, _)| *svc_ns == ns)
            })
        })
        .unwrap_or_default();
    let grants = stores
        .reference_grants
        .as_ref()
        .map(|s| in_namespace(s, &ns))
        .unwrap_or_default();
    let gateways = stores.gateways.as_ref().map(|s| s.state()).unwrap_or_default();
    let pods = in_namespace(&stores.pods, &ns);
    let namespace = stores
        .namespaces
        .as_ref()
        .and_then(|s| s.get(&ObjectRef::new(&ns)));
    let others = in_namespace(&stores.servers, &ns);
    let input = DeriveInput {
        namespace: &ns,
        name: &name,
        spec,
        policy: policy.as_deref().map(|p| &p.spec),
        services: services.iter().map(|s| s.as_ref()).collect(),
        ingresses: ingresses.iter().map(|i| i.as_ref()).collect(),
        ingress_classes: ingress_classes.iter().map(|c| c.as_ref()).collect(),
        http_routes: routes.iter().map(|r| r.as_ref()).collect(),
        reference_grants: grants.iter().map(|g| g.as_ref()).collect(),
        gateways: gateways.iter().map(|g| g.as_ref()).collect(),
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        namespace_labels: namespace.as_ref().map(|n| n.labels()),
        other_servers: others
            .iter()
            .filter(|o| o.name_any() != name && o.metadata.deletion_timestamp.is_none())
            .map(|o| (o.metadata.name.as_deref().unwrap_or_default(), &o.spec.selector))
            .collect(),
        cluster_domain: &ctx.settings.cluster_domain,
    };
    let d: Derivation = allowlist::derive(&input);
    let spec_errors = validate_spec(spec);
    if let Ok(mut index) = ctx.index.lock() {
        index.record(&oref, &d.dependencies);
    }

    // The guard config.
    let cm_name = config_map_name(&name);
    let json = serde_json::to_string_pretty(&d.guard_config(&ns, &name))?;
    let cm = desired_config_map(&server, &ns, json)?;
    let existing = stores.config_maps.get(&ObjectRef::new(&cm_name).within(&ns));
    if !config_map_current(existing.as_deref(), &cm) {
        let applied = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
            .patch(
                &cm_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|source| Error::ConfigMap {
                namespace: ns.clone(),
                name: cm_name.clone(),
                source,
            })?;
        if let (Some(rv), Ok(mut written)) = (applied.metadata.resource_version, ctx.written.lock()) {
            // Bounded: versions whose event never comes back (a relist skipped them) must not pile up.
            if written.len() >= 100_000 {
                written.clear();
            }
            written.insert(rv);
        }
        debug!(namespace = %ns, name = %cm_name, "applied guard ConfigMap");
    }

    let network_policy = apply_network_policy(&ctx, &server, &ns, policy.as_deref().map(|p| &p.spec)).await;

    // Status.
    let previous = server.status.as_ref();
    let status = build_status(
        &d,
        &StatusInput {
            generation: server.metadata.generation,
            previous,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
            config_map: &cm_name,
            policy_name: spec.policy_name(),
            policy_explicit: spec.policy_ref.is_some(),
            server_port: spec.port,
            spec_errors: &spec_errors,
            empty_grace: ctx.settings.empty_allowlist_grace,
            network_policy,
        },
    );
    if previous != Some(&status) {
        let body = serde_json::json!({
            "apiVersion": MCPServer::api_version(&()),
            "kind": MCPServer::kind(&()),
            "status": status,
        });
        Api::<MCPServer>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|source| Error::Status {
                namespace: ns.clone(),
                name: name.clone(),
                source,
            })?;
    }

    publish_events(&ctx, &server, previous, &status).await;

    let labels = ServerLabels {
        namespace: ns.clone(),
        name: name.clone(),
    };
    ctx.metrics
        .allowlist_hosts
        .get_or_create(&labels)
        .set(d.hosts.len() as i64);
    ctx.metrics
        .allowlist_origins
        .get_or_create(&labels)
        .set(d.origins.len() as i64);
    ctx.metrics
        .guard_bypassed
        .get_or_create(&labels)
        .set(i64::from(!d.bypasses.is_empty()));
    if let Ok(mut empty) = ctx.empty.lock() {
        if d.hosts.is_empty() {
            empty.insert(oref.clone());
        } else {
            empty.remove(&oref);
        }
        ctx.metrics.empty_allowlists.set(empty.len() as i64);
    }
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics.result(true);
    if let Some(trigger) = &ctx.policy_status {
        trigger.notify_one();
    }
    // An empty allowlist within its grace period is looked at again when the period ends, to warn if it is
    // still empty (a watch event brings the reconcile earlier when hosts arrive).
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Ok(
        match status::recheck_after(&status, &now, ctx.settings.empty_allowlist_grace) {
            Some(wait) => Action::requeue(wait + Duration::from_millis(100)),
            None => Action::await_change(),
        },
    )
}

/// Writes (or, when the policy switches it off, deletes) the server's NetworkPolicy. A failure is reported in
/// the status rather than failing the reconcile: the guard config matters more than the extra fence.
async fn apply_network_policy(
    ctx: &Context,
    server: &MCPServer,
    ns: &str,
    policy: Option<&crate::crd::MCPGuardPolicySpec>,
) -> NetworkPolicyOutcome {
    let name = crate::crd::network_policy_name(&server.name_any());
    let labels = [
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (SERVER_LABEL.to_string(), server.name_any()),
    ]
    .into();
    let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns);
    let existing = ctx.stores.network_policies.get(&ObjectRef::new(&name).within(ns));
    let Some(desired) = crate::netpol::desired(server, ns, policy, labels) else {
        // Only ever ours: the store holds NetworkPolicies with the operator's label, owned by this server.
        let owned = existing.as_ref().is_some_and(|np| {
            np.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == server.metadata.uid.as_ref())
        });
        if owned && let Err(e) = api.delete(&name, &Default::default()).await {
            warn!(namespace = %ns, name = %name, error = %e, "deleting NetworkPolicy failed");
        }
        return NetworkPolicyOutcome::Disabled {
            policy: server.spec.policy_name().to_string(),
        };
    };
    let admits = crate::netpol::describe(&desired, server, policy);
    if crate::netpol::is_current(existing.as_deref(), &desired) {
        return NetworkPolicyOutcome::Written { name, admits };
    }
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
    {
        Ok(applied) => {
            if let (Some(rv), Ok(mut written)) = (applied.metadata.resource_version, ctx.written.lock()) {
                if written.len() >= 100_000 {
                    written.clear();
                }
                written.insert(rv);
            }
            debug!(namespace = %ns, name = %name, "applied NetworkPolicy");
            NetworkPolicyOutcome::Written { name, admits }
        }
        Err(e) => {
            warn!(namespace = %ns, name = %name, error = %e, "writing NetworkPolicy failed");
            NetworkPolicyOutcome::Failed {
                name,
                error: e.to_string(),
            }
        }
    }
}

/// Drops a deleted MCPServer from the reverse index and its per-server metrics.
fn forget_server(
    server: &MCPServer,
    index: &Mutex<DependencyIndex>,
    empty: &Mutex<HashSet<ObjectRef<MCPServer>>>,
    metrics: &ControllerMetrics,
) {
    let oref = ObjectRef::from_obj(server);
    if let Ok(mut index) = index.lock() {
        index.forget(&oref);
    }
    if let Ok(mut empty) = empty.lock() {
        empty.remove(&oref);
        metrics.empty_allowlists.set(empty.len() as i64);
    }
    let labels = ServerLabels {
        namespace: server.namespace().unwrap_or_default(),
        name: server.name_any(),
    };
    metrics.allowlist_hosts.remove(&labels);
    metrics.allowlist_origins.remove(&labels);
    metrics.guard_bypassed.remove(&labels);
}

fn warned_empty(status: Option<&MCPServerStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == status::condition::EMPTY_ALLOWLIST
                && c.status == "True"
                && c.reason == status::reason::NO_HOSTS_FOUND
        })
    })
}

/// The Events for a status change: `AllowlistUpdated` naming what changed (so that its note stays true), and
/// `EmptyAllowlist` once an empty allowlist outlasted its grace period.
pub fn events_for(previous: Option<&MCPServerStatus>, status: &MCPServerStatus) -> Vec<EventNote> {
    let mut events = Vec::new();
    let hosts = entry_values(&status.allowed_hosts);
    let origins = entry_values(&status.allowed_origins);
    let before = previous.map(|p| (entry_values(&p.allowed_hosts), entry_values(&p.allowed_origins)));
    let changed = before.as_ref().is_none_or(|(h, o)| *h != hosts || *o != origins);
    if changed && !hosts.is_empty() {
        events.push(EventNote {
            type_: EventType::Normal,
            reason: "AllowlistUpdated".into(),
            action: "UpdateAllowlist".into(),
            note: allowlist_change_note(
                before.as_ref().map(|(h, o)| (h.as_slice(), o.as_slice())),
                &hosts,
                &origins,
            ),
        });
    }
    if warned_empty(Some(status)) && !warned_empty(previous) {
        let message = status
            .conditions
            .iter()
            .find(|c| c.type_ == status::condition::EMPTY_ALLOWLIST)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        events.push(EventNote {
            type_: EventType::Warning,
            reason: "EmptyAllowlist".into(),
            action: "UpdateAllowlist".into(),
            note: message,
        });
    }
    events
}

async fn publish_events(
    ctx: &Context,
    server: &MCPServer,
    previous: Option<&MCPServerStatus>,
    status: &MCPServerStatus,
) {
    let reference = server.object_ref(&());
    for ev in events_for(previous, status) {
        ctx.metrics
            .events
            .get_or_create(&EventLabels {
                reason: ev.reason.clone(),
            })
            .inc();
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %e, reason = %ev.reason, "publishing Event failed");
        }
    }
}

/// Requeue after a failed reconcile.
pub fn error_policy(server: Arc<MCPServer>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = server.namespace().unwrap_or_default(), name = %server.name_any(), error = %error, "reconcile failed");
    ctx.metrics.result(false);
    Action::requeue(Duration::from_secs(5))
}

// ---------------------------------------------------------------------------------------------------------
// Mappers: watch event on another object → MCPServers to reconcile.

fn servers_in(servers: &Store<MCPServer>, ns: &str) -> Vec<Arc<MCPServer>> {
    in_namespace(servers, ns)
}

/// MCPServers in `ns` for which the named Service is (or is listed as) one of theirs.
fn servers_for_service_name(stores: &Stores, ns: &str, svc_name: &str) -> Vec<ObjectRef<MCPServer>> {
    let svc = stores.services.get(&ObjectRef::new(svc_name).within(ns));
    servers_in(&stores.servers, ns)
        .into_iter()
        .filter(|s| match &s.spec.services {
            Some(names) => names.iter().any(|n| n == svc_name),
            None => svc
                .as_deref()
                .is_some_and(|svc| allowlist::service_is_candidate(svc, &s.spec)),
        })
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

fn listed_in(names: &Option<Vec<String>>, name: &str) -> bool {
    names.as_ref().is_some_and(|n| n.iter().any(|x| x == name))
}

fn with_dependents(
    index: &Mutex<DependencyIndex>,
    dep: Dependency,
    mut refs: Vec<ObjectRef<MCPServer>>,
) -> Vec<ObjectRef<MCPServer>> {
    if let Ok(index) = index.lock() {
        refs.extend(index.dependents(&dep));
    }
    refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    refs.dedup();
    refs
}

/// Mapped triggers before every cache is synced are redundant: each MCPServer of the initial list is reconciled
/// anyway, and its reconcile waits for the sync. Dropping them saves a reconcile per related object at start-up.
fn after_sync(stores: &Stores, map: impl FnOnce() -> Vec<ObjectRef<MCPServer>>) -> Vec<ObjectRef<MCPServer>> {
    if stores.is_synced() { map() } else { Vec::new() }
}

/// Service changed → MCPServers it selects now, and those that used it before.
pub fn map_service(
    stores: &Stores,
    index: &Mutex<DependencyIndex>,
    svc: &Service,
) -> Vec<ObjectRef<MCPServer>> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let now: Vec<_> = servers_in(&stores.servers, &ns)
        .into_iter()
        .filter(|s| allowlist::service_is_candidate(svc, &s.spec))
        .map(|s| ObjectRef::from_obj(&*s))
        .collect();
    with_dependents(index, Dependency::new(DepKind::Service, Some(&ns), &name), now)
}

/// Ingress changed → MCPServers of the Services it routes to now, and those it contributed to before.
pub fn map_ingress(
    stores: &Stores,
    index: &Mutex<DependencyIndex>,
    ing: &Ingress,
) -> Vec<ObjectRef<MCPServer>> {
    let ns = ing.namespace().unwrap_or_default();
    let name = ing.name_any();
    let mut now: Vec<_> = allowlist::ingress_backend_services(ing)
        .iter()
        .flat_map(|svc| servers_for_service_name(stores, &ns, svc))
        .collect();
    now.extend(
        servers_in(&stores.servers, &ns)
            .into_iter()
            .filter(|s| listed_in(&s.spec.ingresses, &name))
            .map(|s| ObjectRef::from_obj(&*s)),
    );
    with_dependents(index, Dependency::new(DepKind::Ingress, Some(&ns), &name), now)
}

/// HTTPRoute changed → MCPServers of the Services it routes to now, and those it contributed to before.
pub fn map_route(
    stores: &Stores,
    index: &Mutex<DependencyIndex>,
    route: &HTTPRoute,
) -> Vec<ObjectRef<MCPServer>> {
    let ns = route.namespace().unwrap_or_default();
    let name = route.name_any();
    let mut now: Vec<_> = allowlist::route_backend_services(route)
        .iter()
        .flat_map(|(svc_ns, svc)| servers_for_service_name(stores, svc_ns, svc))
        .collect();
    now.extend(
        servers_in(&stores.servers, &ns)
            .into_iter()
            .filter(|s| listed_in(&s.spec.http_routes, &name))
            .map(|s| ObjectRef::from_obj(&*s)),
    );
    with_dependents(index, Dependency::new(DepKind::HTTPRoute, Some(&ns), &name), now)
}

/// Pod changed → MCPServers selecting it now, and those that selected it before.
pub fn map_pod(stores: &Stores, index: &Mutex<DependencyIndex>, pod: &Pod) -> Vec<ObjectRef<MCPServer>> {
    let ns = pod.namespace().unwrap_or_default();
    let empty = std::collections::BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let now: Vec<_> = servers_in(&stores.servers, &ns)
        .into_iter()
        .filter(|s| allowlist::selector_matches(&s.spec.selector, labels))
        .map(|s| ObjectRef::from_obj(&*s))
        .collect();
    with_dependents(
        index,
        Dependency::new(DepKind::Pod, Some(&ns), &pod.name_any()),
        now,
    )
}

/// MCPServer changed (spec) or deleted → the other MCPServers of its namespace whose selectors overlap it now, and
/// those whose last derivation found it overlapping.
pub fn map_server_overlaps(
    servers: &Store<MCPServer>,
    index: &Mutex<DependencyIndex>,
    server: &MCPServer,
    deleted: bool,
) -> Vec<ObjectRef<MCPServer>> {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let now: Vec<_> = if deleted {
        Vec::new()
    } else {
        servers_in(servers, &ns)
            .into_iter()
            .filter(|s| s.name_any() != name)
            .filter(|s| crate::selector::common_pod(&server.spec.selector, &s.spec.selector).is_some())
            .map(|s| ObjectRef::from_obj(&*s))
            .collect()
    };
    with_dependents(index, Dependency::new(DepKind::MCPServer, Some(&ns), &name), now)
}

/// Gateway changed → MCPServers whose routes referenced it.
pub fn map_gateway(index: &Mutex<DependencyIndex>, gw: &Gateway) -> Vec<ObjectRef<MCPServer>> {
    let ns = gw.namespace().unwrap_or_default();
    with_dependents(
        index,
        Dependency::new(DepKind::Gateway, Some(&ns), &gw.name_any()),
        Vec::new(),
    )
}

/// The last generation seen of each policy, to tell spec changes from status-only updates.
#[derive(Default)]
pub struct PolicyGenerations(HashMap<String, (Option<String>, Option<i64>)>);

impl PolicyGenerations {
    /// Whether this watch event of a policy may matter to MCPServers: a new policy, a new generation, a deletion
    /// (`exists` false). A status-only update of a known policy does not.
    pub fn spec_changed(&mut self, policy: &MCPGuardPolicy, exists: bool) -> bool {
        let name = policy.name_any();
        if !exists {
            self.0.remove(&name);
            return true;
        }
        let seen = (policy.metadata.uid.clone(), policy.metadata.generation);
        self.0.insert(name, seen.clone()) != Some(seen)
    }
}

/// IngressClass changed (created, deleted, made default) → every MCPServer: which Ingresses count may change
/// anywhere, and IngressClasses change rarely.
pub fn all_servers(stores: &Stores) -> Vec<ObjectRef<MCPServer>> {
    stores
        .servers
        .state()
        .iter()
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// Policy changed → MCPServers referencing it.
pub fn map_policy(stores: &Stores, policy: &MCPGuardPolicy) -> Vec<ObjectRef<MCPServer>> {
    let name = policy.name_any();
    stores
        .servers
        .state_filter(|s| s.spec.policy_name() == name)
        .into_iter()
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// MCPGuardPolicy status.

/// Writes the status of every MCPGuardPolicy whose validity or users changed (from the caches; no reads).
async fn write_policy_statuses(client: &Client, stores: &Stores) {
    let servers = stores.servers.state();
    for policy in stores.policies.state() {
        let name = policy.name_any();
        let mut users: Vec<String> = servers
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none() && s.spec.policy_name() == name)
            .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        users.sort();
        let errors = validate_policy(&policy.spec);
        let status = build_policy_status(&PolicyStatusInput {
            name: &name,
            generation: policy.metadata.generation,
            previous: policy.status.as_ref(),
            now: Time(k8s_openapi::jiff::Timestamp::now()),
            errors: &errors,
            users: &users,
        });
        if policy.status.as_ref() == Some(&status) {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": MCPGuardPolicy::api_version(&()),
            "kind": MCPGuardPolicy::kind(&()),
            "status": status,
        });
        if let Err(e) = Api::<MCPGuardPolicy>::all(client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            warn!(policy = %name, error = %e, "writing MCPGuardPolicy status failed");
        }
    }
}

/// Keeps MCPGuardPolicy statuses current: after the caches synced, and on every wake-up (a policy changed, an
/// MCPServer was reconciled or deleted), coalescing bursts.
async fn run_policy_status(client: Client, stores: Stores, trigger: Arc<tokio::sync::Notify>) {
    stores.wait_synced().await;
    loop {
        write_policy_statuses(&client, &stores).await;
        trigger.notified().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Running.

/// Whether ReferenceGrants (`gateway.networking.k8s.io/v1beta1`) are served.
pub async fn reference_grants_served(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("gateway.networking.k8s.io/v1beta1")
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "referencegrants")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the Gateway API (HTTPRoute and Gateway, `gateway.networking.k8s.io/v1`) is served.
pub async fn gateway_api_installed(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("gateway.networking.k8s.io/v1")
        .await
    {
        Ok(list) => {
            let has = |n: &str| list.resources.iter().any(|r| r.name == n);
            Ok(has("httproutes") && has("gateways"))
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    tracker: &SyncTracker,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + std::hash::Hash + Eq + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let mut track = tracker.track::<K>();
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| track(event))
        .touched_objects();
    (reader, stream)
}

/// Our own writes come back as watch events; only changes by others (edits, deletion) need a reconcile.
/// (resourceVersions are unique across kinds, so ConfigMaps and NetworkPolicies share one set.)
fn not_our_write<K: Resource>(
    written: Arc<Mutex<HashSet<String>>>,
) -> impl FnMut(&Result<K, watcher::Error>) -> std::future::Ready<bool> {
    move |obj| {
        let ours = match (obj, written.lock()) {
            (Ok(obj), Ok(mut written)) => {
                obj.meta()
                    .resource_version
                    .as_ref()
                    .is_some_and(|rv| written.remove(rv))
                    && obj.meta().deletion_timestamp.is_none()
            }
            _ => false,
        };
        std::future::ready(!ours)
    }
}

/// Readiness of the controller: caches synced while leading (a standby replica is ready too).
#[derive(Clone, Default)]
pub struct ControllerReadiness {
    synced: Arc<AtomicBool>,
    leading: Arc<AtomicBool>,
}

impl ControllerReadiness {
    /// Ready: not leading (standing by) or caches synced.
    pub fn is_ready(&self) -> bool {
        !self.leading.load(Ordering::Relaxed) || self.synced.load(Ordering::Relaxed)
    }

    /// Whether the caches of the running controller are synced.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
}

/// Runs the controller until `stop` resolves (or the Gateway API appears/disappears, which returns
/// `Ok(true)`: run again to pick the change up).
pub async fn run_once(
    client: Client,
    settings: ControllerSettings,
    metrics: ControllerMetrics,
    readiness: ControllerReadiness,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<bool, kube::Error> {
    let gateway_api = match settings.gateway_api {
        Some(v) => v,
        None => gateway_api_installed(&client).await?,
    };
    let scope = settings.namespace.clone().unwrap_or_else(|| "*".into());
    info!(gateway_api, namespace = %scope, "starting MCPServer controller");
    readiness.synced.store(false, Ordering::Relaxed);
    readiness.leading.store(true, Ordering::Relaxed);

    let cfg = watcher::Config::default().any_semantic();
    let (tracker, synced_rx) = SyncTracker::new();
    let ns = settings.namespace.as_deref();
    let index = Arc::new(Mutex::new(DependencyIndex::default()));
    let empty: Arc<Mutex<HashSet<ObjectRef<MCPServer>>>> = Arc::default();
    let written: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Policy statuses count every MCPServer using a policy: only an operator that watches all namespaces can.
    let policy_status = ns.is_none().then(|| Arc::new(tokio::sync::Notify::new()));
    // MCPServers: the Controller's own stream; deletions also clean the reverse index and per-server metrics
    // (a deleted object is never reconciled).
    let (servers, server_writer) = reflector::store();
    // A spec change or deletion of one MCPServer re-reconciles the others its selector overlaps (or overlapped),
    // whose SelectorOverlap condition may change.
    let (overlap_tx, overlap_rx) = futures::channel::mpsc::unbounded::<ObjectRef<MCPServer>>();
    let server_stream = {
        let mut track = tracker.track::<MCPServer>();
        let (index, empty, metrics) = (index.clone(), empty.clone(), metrics.clone());
        let policy_status = policy_status.clone();
        let store = servers.clone();
        let mut generations: HashMap<ObjectRef<MCPServer>, Option<i64>> = HashMap::new();
        watcher(scoped::<MCPServer>(&client, ns), cfg.clone())
            .default_backoff()
            .reflect(server_writer)
            .inspect(move |event| {
                track(event);
                let partners = match event {
                    Ok(watcher::Event::InitApply(server)) => {
                        generations.insert(ObjectRef::from_obj(server), server.metadata.generation);
                        Vec::new()
                    }
                    Ok(watcher::Event::Apply(server)) => {
                        let seen =
                            generations.insert(ObjectRef::from_obj(server), server.metadata.generation);
                        if seen == Some(server.metadata.generation) {
                            Vec::new()
                        } else {
                            map_server_overlaps(&store, &index, server, false)
                        }
                    }
                    Ok(watcher::Event::Delete(server)) => {
                        generations.remove(&ObjectRef::from_obj(server));
                        let partners = map_server_overlaps(&store, &index, server, true);
                        forget_server(server, &index, &empty, &metrics);
                        if let Some(trigger) = &policy_status {
                            trigger.notify_one();
                        }
                        partners
                    }
                    _ => Vec::new(),
                };
                for p in partners {
                    let _ = overlap_tx.unbounded_send(p);
                }
            })
            .touched_objects()
    };
    let (services, service_stream) = reflect(scoped::<Service>(&client, ns), cfg.clone(), &tracker);
    let (ingresses, ingress_stream) = reflect(scoped::<Ingress>(&client, ns), cfg.clone(), &tracker);
    let (ingress_classes, ingress_class_stream) =
        reflect(Api::<IngressClass>::all(client.clone()), cfg.clone(), &tracker);
    let (policies, policy_stream) =
        reflect(Api::<MCPGuardPolicy>::all(client.clone()), cfg.clone(), &tracker);
    let (config_maps, cm_stream) = reflect(
        scoped::<ConfigMap>(&client, ns),
        cfg.clone()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")),
        &tracker,
    );
    let (network_policies, np_stream) = reflect(
        scoped::<NetworkPolicy>(&client, ns),
        cfg.clone()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")),
        &tracker,
    );
    // Pods: only what the bypass check reads (labels, annotations, containers and their ports, statuses).
    let (pods, pod_stream) = reflect(scoped::<Pod>(&client, ns), cfg.clone(), &tracker);
    let (routes, route_stream, gateways, gateway_stream) = if gateway_api {
        let (r, rs) = reflect(scoped::<HTTPRoute>(&client, ns), cfg.clone(), &tracker);
        let (g, gs) = reflect(Api::<Gateway>::all(client.clone()), cfg.clone(), &tracker);
        (Some(r), Some(rs.boxed()), Some(g), Some(gs.boxed()))
    } else {
        (None, None, None, None)
    };
    let (reference_grants, grant_stream) = if gateway_api && reference_grants_served(&client).await? {
        let (g, stream) = reflect(scoped::<ReferenceGrant>(&client, ns), cfg.clone(), &tracker);
        (Some(g), Some(stream.boxed()))
    } else {
        (None, None)
    };
    let (namespaces, namespace_stream) = if gateway_api {
        let (n, stream) = reflect(Api::<Namespace>::all(client.clone()), cfg.clone(), &tracker);
        (Some(n), Some(stream.boxed()))
    } else {
        (None, None)
    };
    let stores = Stores {
        servers: servers.clone(),
        services,
        ingresses,
        ingress_classes,
        policies,
        config_maps,
        network_policies,
        pods,
        routes,
        gateways,
        reference_grants,
        namespaces,
        synced: synced_rx,
    };

    {
        let stores = stores.clone();
        let synced = readiness.synced.clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            stores.wait_synced().await;
            info!(namespace = %scope, "caches synced");
            synced.store(true, Ordering::Relaxed);
        });
    }

    let recorder = Recorder::new(client.clone(), FIELD_MANAGER, &settings.identity);
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        settings: settings.clone(),
        stores: stores.clone(),
        index: index.clone(),
        written: written.clone(),
        empty: empty.clone(),
        policy_status: policy_status.clone(),
    });
    let policy_writer = policy_status
        .clone()
        .map(|trigger| tokio::spawn(run_policy_status(client.clone(), stores.clone(), trigger)));

    // Stop when asked, or when the Gateway API (or its ReferenceGrants) appear or go away.
    let (changed_tx, changed_rx) = tokio::sync::oneshot::channel::<()>();
    let discovery = {
        let client = client.clone();
        let interval = settings.discovery_interval;
        let fixed = settings.gateway_api.is_some();
        let grants = stores.reference_grants.is_some();
        tokio::spawn(async move {
            if fixed && !gateway_api {
                return futures::future::pending::<()>().await;
            }
            loop {
                tokio::time::sleep(interval).await;
                let now = if fixed {
                    Ok(gateway_api)
                } else {
                    gateway_api_installed(&client).await
                };
                let grants_now = if gateway_api {
                    reference_grants_served(&client).await
                } else {
                    Ok(grants)
                };
                match (now, grants_now) {
                    (Ok(now), Ok(grants_now)) if now != gateway_api || grants_now != grants => {
                        info!(
                            gateway_api = now,
                            reference_grants = grants_now,
                            "Gateway API availability changed; restarting the controller"
                        );
                        let _ = changed_tx.send(());
                        return;
                    }
                    (Err(e), _) | (_, Err(e)) => debug!(error = %e, "Gateway API discovery failed"),
                    _ => {}
                }
            }
        })
    };
    let changed = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopper = {
        let changed = changed.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop => {}
                r = changed_rx => if r.is_ok() { changed.store(true, Ordering::Relaxed) },
            }
            let _ = stop_tx.send(());
        })
    };
    let stop_all = stop_rx.map(|_| ());

    let mut controller = Controller::for_stream(
        server_stream.predicate_filter(predicates::generation, Default::default()),
        servers,
    )
    .with_config(ControllerConfig::default().concurrency(settings.concurrency))
    .reconcile_on(overlap_rx)
    .owns_stream(cm_stream.filter(not_our_write(written.clone())))
    .owns_stream(np_stream.filter(not_our_write(written.clone())))
    .watches_stream(service_stream, {
        let (stores, index) = (stores.clone(), index.clone());
        move |svc: Service| after_sync(&stores, || map_service(&stores, &index, &svc))
    })
    .watches_stream(ingress_stream, {
        let (stores, index) = (stores.clone(), index.clone());
        move |ing: Ingress| after_sync(&stores, || map_ingress(&stores, &index, &ing))
    })
    .watches_stream(ingress_class_stream, {
        let stores = stores.clone();
        move |_: IngressClass| after_sync(&stores, || all_servers(&stores))
    })
    .watches_stream(policy_stream, {
        let stores = stores.clone();
        let trigger = policy_status.clone();
        let seen = Mutex::new(PolicyGenerations::default());
        move |p: MCPGuardPolicy| {
            // A status write (ours) changes no generation and concerns no MCPServer; a deletion does.
            let exists = stores.policies.get(&ObjectRef::from_obj(&p)).is_some();
            if seen.lock().is_ok_and(|mut seen| !seen.spec_changed(&p, exists)) {
                return Vec::new();
            }
            if let Some(trigger) = &trigger {
                trigger.notify_one();
            }
            after_sync(&stores, || map_policy(&stores, &p))
        }
    });
    controller = controller.watches_stream(pod_stream, {
        let (stores, index) = (stores.clone(), index.clone());
        move |pod: Pod| after_sync(&stores, || map_pod(&stores, &index, &pod))
    });
    if let Some(rs) = route_stream {
        let (stores, index) = (stores.clone(), index.clone());
        controller = controller.watches_stream(rs, move |r: HTTPRoute| {
            after_sync(&stores, || map_route(&stores, &index, &r))
        });
    }
    if let Some(stream) = grant_stream {
        // ReferenceGrant changed → the MCPServers of its namespace (routes elsewhere may now reach them, or not).
        let stores = stores.clone();
        controller = controller.watches_stream(stream, move |g: ReferenceGrant| {
            after_sync(&stores, || {
                servers_in(&stores.servers, &g.namespace().unwrap_or_default())
                    .iter()
                    .map(|s| ObjectRef::from_obj(&**s))
                    .collect()
            })
        });
    }
    if let Some(ns_stream) = namespace_stream {
        // Relabelled namespace → its MCPServers (a listener's namespace selector may now admit its routes).
        let stores = stores.clone();
        controller = controller.watches_stream(ns_stream, move |n: Namespace| {
            after_sync(&stores, || {
                servers_in(&stores.servers, &n.name_any())
                    .iter()
                    .map(|s| ObjectRef::from_obj(&**s))
                    .collect()
            })
        });
    }
    if let Some(gs) = gateway_stream {
        let index = index.clone();
        controller = controller.watches_stream(gs, move |g: Gateway| map_gateway(&index, &g));
    }
    controller
        .graceful_shutdown_on(stop_all)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => {
                    debug!(namespace = obj.namespace.as_deref().unwrap_or(""), name = %obj.name, "reconciled")
                }
                Err(kube::runtime::controller::Error::ObjectNotFound(_))
                | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => warn!(error = %e, "controller error"),
            }
        })
        .await;
    discovery.abort();
    stopper.abort();
    if let Some(writer) = policy_writer {
        writer.abort();
    }
    readiness.leading.store(false, Ordering::Relaxed);
    readiness.synced.store(false, Ordering::Relaxed);
    info!("MCPServer controller stopped");
    Ok(changed.load(Ordering::Relaxed))
}
