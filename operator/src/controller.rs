//! The controller: for each MCPServer, gather its policy and settings, derive its allowlist from the reflector
//! caches ([`crate::sources::derive`]), apply the ConfigMap `<name>-mcp-guard` and the NetworkPolicy (server-side
//! apply, owned by the MCPServer), and report the status, Events and metrics.
//!
//! Each source's watch is wired to that source's reverse mapper, which combines a forward match (which
//! MCPServers could this object concern now) with the reverse index of what each MCPServer's last derivation
//! depended on (which did it concern before), so edits and deletions both reach the right MCPServers without
//! periodic rescans.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::auth::IssuerState;
use crate::children::{config_map_current, desired_config_map};
use crate::cluster_issuer;
use crate::crd::{
    MCPGuardPolicy, MCPGuardPolicySpec, MCPServer, MCPServerStatus, UnguardedPodStatus, config_map_name,
};
use crate::events::{EventNote, EventType, Recorder, allowlist_change_note, unguarded_pods_note};
use crate::index::Index;
use crate::metrics::{ControllerMetrics, EventLabels, ServerLabels};
use crate::settings::{self, DEFAULT_SIDECAR_IMAGE, Settings};
use crate::sources::policy::PolicyGenerations;
use crate::sources::sig_servers::{self, SigMCPServer};
use crate::sources::{
    self, DependencyIndex, Derivation, DeriveInput, FindingKind, Relevant, RelevantObjects, http_routes,
};
use crate::sources::{Indexes, Stores};
use crate::status::{self, NetworkPolicyOutcome, StatusInput, build_status};
use crate::stores::{SyncTracker, Triggers, Watch, in_namespace, scoped};
use crate::validate::validate_spec;

#[cfg(test)]
mod tests;

pub use crate::children::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SERVER_LABEL};
pub use crate::sources::http_routes::{gateway_api_installed, reference_grants_served};

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
    /// The cluster's service-account issuer, as [`cluster_issuer::refresh`] last fetched it.
    pub cluster_issuer: tokio::sync::watch::Receiver<IssuerState>,
}

fn entry_values(entries: &[crate::crd::AllowlistEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.value.as_str()).collect()
}

/// Reconciles one MCPServer: gather (its policy and settings), derive (from the caches), apply (its ConfigMap
/// and NetworkPolicy), report (status, Events, metrics).
pub async fn reconcile(server: Arc<MCPServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = server.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    if server.metadata.deletion_timestamp.is_some() {
        // The ConfigMap is owned by the MCPServer: the garbage collector removes it.
        forget_server(&server, &ctx.index, &ctx.empty, &ctx.metrics);
        return Ok(Action::await_change());
    }
    // Never derive from half-filled caches: a partial allowlist would reject legitimate traffic.
    ctx.stores.wait_synced().await;
    let policy = ctx
        .stores
        .policies
        .get(&ObjectRef::new(server.spec.policy_name()));
    let policy = policy.as_deref().map(|p| &p.spec);
    // A `spec.serverRef` stands for the referenced server's selector and port from here on.
    let sig_server = sig_servers::lookup(&ctx.stores, &ns, &server.spec);
    let resolved = sig_servers::with_spec(
        &server,
        sig_servers::effective(&server.spec, sig_server.as_deref()),
    );
    // The controller injects nothing: the sidecar image is not read here.
    let settings = settings::resolve(&resolved.spec, policy, DEFAULT_SIDECAR_IMAGE);

    let cluster_issuer = cluster_issuer_for(&ctx, &server, &ns, &settings).await;
    let d = derive_from_caches(
        &ctx,
        (&resolved, sig_server.as_deref()),
        &ns,
        &settings,
        policy,
        &cluster_issuer,
    );
    lock(&ctx.index, "dependency index").record(&ObjectRef::from_obj(&*server), &d.dependencies);

    let config_map = apply_config_map(&ctx, &server, &ns, &d).await?;
    let network_policy = apply_network_policy(&ctx, &resolved, &ns, &settings).await;

    let status = write_status(&ctx, &server, &ns, &d, &config_map, network_policy, &settings).await?;
    publish_events(&ctx, &server, server.status.as_ref(), &status).await;
    record_metrics(&ctx, &server, &d);
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

/// The cluster's service-account issuer for a server that trusts it: what the operator fetched (after its first
/// attempt), else the keys its ConfigMap already holds (an operator that restarted while the API server's
/// discovery fails keeps the guard's keys).
async fn cluster_issuer_for(ctx: &Context, server: &MCPServer, ns: &str, settings: &Settings) -> IssuerState {
    if !settings.auth.as_ref().is_some_and(|a| a.kubernetes) {
        return IssuerState::default();
    }
    let mut rx = ctx.cluster_issuer.clone();
    // Err: the refresher is gone (shutting down); what it last published stands.
    let _ = rx.wait_for(|s| s.attempted).await;
    let state = rx.borrow().clone();
    if state.current.is_some() {
        return state;
    }
    let written = ctx
        .stores
        .config_maps
        .get(&ObjectRef::new(&config_map_name(&server.name_any())).within(ns))
        .and_then(|cm| cm.data.as_ref()?.get(mcp_guard_config::CONFIG_KEY).cloned())
        .and_then(|json| cluster_issuer::from_guard_config(&json));
    IssuerState {
        current: written,
        ..state
    }
}

/// The derivation over the objects of the server's namespace in the caches, only those it reads ([`Relevant`]).
fn derive_from_caches(
    ctx: &Context,
    (server, sig_server): (&MCPServer, Option<&SigMCPServer>),
    ns: &str,
    settings: &Settings,
    policy: Option<&MCPGuardPolicySpec>,
    cluster_issuer: &IssuerState,
) -> Derivation {
    let stores = &ctx.stores;
    let name = server.name_any();
    let RelevantObjects {
        services,
        ingresses,
        pods,
        servers: others,
    } = Relevant::to(&server.spec).read(stores, ns);
    let ingress_classes = stores.ingress_classes.state();
    let routes = stores
        .routes
        .as_ref()
        .map(|s| http_routes::routes_for(s, ns))
        .unwrap_or_default();
    let grants = stores
        .reference_grants
        .as_ref()
        .map(|s| in_namespace(s, ns))
        .unwrap_or_default();
    let gateways = stores.gateways.as_ref().map(|s| s.state()).unwrap_or_default();
    let namespace = stores
        .namespaces
        .as_ref()
        .and_then(|s| s.get(&ObjectRef::new(ns)));
    // A `serverRef` is resolved before its selector can be compared.
    let others: Vec<_> = others.iter().map(|o| sig_servers::resolved(o, stores)).collect();
    sources::derive(&DeriveInput {
        namespace: ns,
        name: &name,
        spec: &server.spec,
        settings,
        policy,
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
            .filter(|o| {
                o.metadata.name.as_deref() != Some(name.as_str()) && o.metadata.deletion_timestamp.is_none()
            })
            .map(|o| (o.metadata.name.as_deref().unwrap_or_default(), &o.spec.selector))
            .collect(),
        cluster_domain: &ctx.settings.cluster_domain,
        sig_server,
        cluster_issuer,
    })
}

/// Remembers the resourceVersion of an object this controller wrote: its watch event needs no reconcile.
fn remember_write(ctx: &Context, resource_version: Option<String>) {
    let Some(rv) = resource_version else { return };
    let mut written = lock(&ctx.written, "written resourceVersions");
    // Bounded: versions whose event never comes back (a relist skipped them) must not pile up.
    if written.len() >= 100_000 {
        written.clear();
    }
    written.insert(rv);
}

/// Writes the guard config into the server's ConfigMap unless it already holds it; returns the ConfigMap's name.
async fn apply_config_map(
    ctx: &Context,
    server: &MCPServer,
    ns: &str,
    d: &Derivation,
) -> Result<String, Error> {
    let name = server.name_any();
    let cm_name = config_map_name(&name);
    let json = serde_json::to_string_pretty(&d.guard_config(ns, &name))?;
    let cm = desired_config_map(server, ns, json).ok_or(Error::MissingObjectKey("uid"))?;
    let existing = ctx.stores.config_maps.get(&ObjectRef::new(&cm_name).within(ns));
    if config_map_current(existing.as_deref(), &cm) {
        return Ok(cm_name);
    }
    let applied = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .patch(
            &cm_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(|source| Error::ConfigMap {
            namespace: ns.to_string(),
            name: cm_name.clone(),
            source,
        })?;
    remember_write(ctx, applied.metadata.resource_version);
    debug!(namespace = %ns, name = %cm_name, "applied guard ConfigMap");
    Ok(cm_name)
}

/// Builds the status and writes it when it changed; returns it.
async fn write_status(
    ctx: &Context,
    server: &MCPServer,
    ns: &str,
    d: &Derivation,
    config_map: &str,
    network_policy: NetworkPolicyOutcome,
    settings: &Settings,
) -> Result<MCPServerStatus, Error> {
    // The spec as written (a `serverRef` is validated as such); the port as resolved.
    let spec = &server.spec;
    let previous = server.status.as_ref();
    let spec_errors = validate_spec(spec);
    let status = build_status(
        d,
        &StatusInput {
            generation: server.metadata.generation,
            previous,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
            config_map,
            policy_name: spec.policy_name(),
            policy_explicit: spec.policy_ref.is_some(),
            server_port: settings.server_port,
            spec_errors: &spec_errors,
            empty_grace: ctx.settings.empty_allowlist_grace,
            network_policy,
        },
    );
    if previous == Some(&status) {
        return Ok(status);
    }
    let body = serde_json::json!({
        "apiVersion": MCPServer::api_version(&()),
        "kind": MCPServer::kind(&()),
        "status": status,
    });
    let name = server.name_any();
    Api::<MCPServer>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Status {
            namespace: ns.to_string(),
            name,
            source,
        })?;
    Ok(status)
}

/// The per-server gauges.
fn record_metrics(ctx: &Context, server: &MCPServer, d: &Derivation) {
    let labels = ServerLabels {
        namespace: server.namespace().unwrap_or_default(),
        name: server.name_any(),
    };
    let m = &ctx.metrics;
    m.allowlist_hosts.get_or_create(&labels).set(d.hosts.len() as i64);
    m.allowlist_origins
        .get_or_create(&labels)
        .set(d.origins.len() as i64);
    m.guard_bypassed
        .get_or_create(&labels)
        .set(i64::from(d.has(FindingKind::Bypass)));
    m.unguarded_pods
        .get_or_create(&labels)
        .set(d.unguarded_pods().len() as i64);
    let oref = ObjectRef::from_obj(server);
    let mut empty = lock(&ctx.empty, "empty allowlists");
    if d.hosts.is_empty() {
        empty.insert(oref);
    } else {
        empty.remove(&oref);
    }
    m.empty_allowlists.set(empty.len() as i64);
}

/// Locks a mutex of the controller's shared state. A panic while it was held (poison) leaves data that is still
/// consistent here (each holder makes one insert or removal), so the lock is taken over, and said so, rather
/// than skipping the work.
pub(crate) fn lock<'a, T>(mutex: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        warn!(
            state = what,
            "a task panicked while holding this lock; recovering its state"
        );
        mutex.clear_poison();
        poisoned.into_inner()
    })
}

/// Writes (or, when the policy switches it off, deletes) the server's NetworkPolicy. A failure is reported in
/// the status rather than failing the reconcile: the guard config matters more than the extra fence.
async fn apply_network_policy(
    ctx: &Context,
    server: &MCPServer,
    ns: &str,
    settings: &Settings,
) -> NetworkPolicyOutcome {
    let name = crate::crd::network_policy_name(&server.name_any());
    let labels = [
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (SERVER_LABEL.to_string(), server.name_any()),
    ]
    .into();
    let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns);
    let existing = ctx.stores.network_policies.get(&ObjectRef::new(&name).within(ns));
    let Some(desired) = crate::netpol::desired(server, ns, settings, labels) else {
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
    let mut admits = crate::netpol::describe(&desired, settings);
    if let Some(theirs) = sig_servers::referenced_name(&server.spec) {
        // NetworkPolicies add up: theirs still admits the server's own port.
        admits.push_str(&format!(
            " by this NetworkPolicy (the NetworkPolicy the lifecycle operator keeps for MCPServer.mcp.x-k8s.io \
             {ns}/{theirs} still admits it)"
        ));
    }
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
            remember_write(ctx, applied.metadata.resource_version);
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
    lock(index, "dependency index").forget(&oref);
    let mut empty = lock(empty, "empty allowlists");
    empty.remove(&oref);
    metrics.empty_allowlists.set(empty.len() as i64);
    drop(empty);
    let labels = ServerLabels {
        namespace: server.namespace().unwrap_or_default(),
        name: server.name_any(),
    };
    metrics.allowlist_hosts.remove(&labels);
    metrics.allowlist_origins.remove(&labels);
    metrics.guard_bypassed.remove(&labels);
    metrics.unguarded_pods.remove(&labels);
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
    let known: Vec<&str> = previous
        .map(|p| p.unguarded_pods.iter().map(|u| u.name.as_str()).collect())
        .unwrap_or_default();
    let found: Vec<&UnguardedPodStatus> = status
        .unguarded_pods
        .iter()
        .filter(|u| !known.contains(&u.name.as_str()))
        .collect();
    if !found.is_empty() {
        events.push(EventNote {
            type_: EventType::Warning,
            reason: "UnguardedPods".into(),
            action: "DetectUnguardedPods".into(),
            note: unguarded_pods_note(&found),
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

// ---------------------------------------------------------------------------------------------------------
// Running.

/// Our own writes come back as watch events; only changes by others (edits, deletion) need a reconcile.
/// (resourceVersions are unique across kinds, so ConfigMaps and NetworkPolicies share one set.)
fn not_our_write<K: Resource>(
    written: Arc<Mutex<HashSet<String>>>,
) -> impl FnMut(&Result<K, watcher::Error>) -> std::future::Ready<bool> {
    move |obj| {
        let ours = match obj {
            Ok(obj) => {
                obj.meta()
                    .resource_version
                    .as_ref()
                    .is_some_and(|rv| lock(&written, "written resourceVersions").remove(rv))
                    && obj.meta().deletion_timestamp.is_none()
            }
            Err(_) => false,
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

/// The state the reconciles and the watch triggers share.
#[derive(Clone, Default)]
struct Shared {
    index: Arc<Mutex<DependencyIndex>>,
    empty: Arc<Mutex<HashSet<ObjectRef<MCPServer>>>>,
    written: Arc<Mutex<HashSet<String>>>,
    /// Wakes the MCPGuardPolicy status writer (only an operator that watches all namespaces can count users).
    policy_status: Option<Arc<tokio::sync::Notify>>,
}

/// The controller's own MCPServer watch. Deletions also clean the reverse index and per-server metrics (a deleted
/// object is never reconciled); a spec change or deletion re-reconciles the other MCPServers its selector
/// overlaps (or overlapped), sent on the returned channel.
fn watch_servers(
    w: &Watch<'_>,
    shared: &Shared,
    metrics: &ControllerMetrics,
    index: &Index<MCPServer>,
) -> (
    Store<MCPServer>,
    impl futures::Stream<Item = Result<MCPServer, watcher::Error>> + Send + 'static,
    futures::channel::mpsc::UnboundedReceiver<ObjectRef<MCPServer>>,
) {
    let (store, writer) = reflector::store();
    let (overlap_tx, overlap_rx) = futures::channel::mpsc::unbounded::<ObjectRef<MCPServer>>();
    let mut track = w.tracker.track::<MCPServer>();
    let mut follow = index.follow();
    let (shared, metrics, servers) = (shared.clone(), metrics.clone(), (store.clone(), index.clone()));
    let mut generations: HashMap<ObjectRef<MCPServer>, Option<i64>> = HashMap::new();
    let stream = watcher(scoped::<MCPServer>(w.client, w.namespace), w.config.clone())
        .default_backoff()
        .modify(crate::stores::slim)
        .reflect(writer)
        .inspect(move |event| {
            follow(event);
            track(event);
            let partners = match event {
                Ok(watcher::Event::InitApply(server)) => {
                    generations.insert(ObjectRef::from_obj(server), server.metadata.generation);
                    Vec::new()
                }
                Ok(watcher::Event::Apply(server)) => {
                    let seen = generations.insert(ObjectRef::from_obj(server), server.metadata.generation);
                    if seen == Some(server.metadata.generation) {
                        Vec::new()
                    } else {
                        sources::servers::map(
                            (&servers.0, &servers.1),
                            &lock(&shared.index, "dependency index"),
                            server,
                            false,
                        )
                    }
                }
                Ok(watcher::Event::Delete(server)) => {
                    generations.remove(&ObjectRef::from_obj(server));
                    let partners = sources::servers::map(
                        (&servers.0, &servers.1),
                        &lock(&shared.index, "dependency index"),
                        server,
                        true,
                    );
                    forget_server(server, &shared.index, &shared.empty, &metrics);
                    if let Some(trigger) = &shared.policy_status {
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
        .touched_objects();
    (store, stream, overlap_rx)
}

/// A watch trigger: after the caches synced, the MCPServers a change of `K` concerns (its source's reverse
/// mapper, reading the dependency index).
fn trigger<K: 'static>(
    stores: &Stores,
    shared: &Shared,
    map: fn(&Stores, &DependencyIndex, &K) -> Vec<ObjectRef<MCPServer>>,
) -> impl Fn(K) -> Vec<ObjectRef<MCPServer>> + Send + Sync + 'static {
    let (stores, index) = (stores.clone(), shared.index.clone());
    move |obj| after_sync(&stores, || map(&stores, &lock(&index, "dependency index"), &obj))
}

/// Mapped triggers before every cache is synced are redundant: each MCPServer of the initial list is reconciled
/// anyway, and its reconcile waits for the sync. Dropping them saves a reconcile per related object at start-up.
fn after_sync(stores: &Stores, map: impl FnOnce() -> Vec<ObjectRef<MCPServer>>) -> Vec<ObjectRef<MCPServer>> {
    if stores.is_synced() { map() } else { Vec::new() }
}

/// The controller, with every source's watch mapped back to the MCPServers it concerns.
fn wire(
    controller: Controller<MCPServer>,
    streams: SourceStreams,
    stores: &Stores,
    shared: &Shared,
) -> Controller<MCPServer> {
    let policies = {
        let (stores, trigger) = (stores.clone(), shared.policy_status.clone());
        let seen = Mutex::new(PolicyGenerations::default());
        move |p: MCPGuardPolicy| {
            // A status write (ours) changes no generation and concerns no MCPServer; a deletion does.
            let exists = stores.policies.get(&ObjectRef::from_obj(&p)).is_some();
            if !lock(&seen, "policy generations").spec_changed(&p, exists) {
                return Vec::new();
            }
            if let Some(trigger) = &trigger {
                trigger.notify_one();
            }
            after_sync(&stores, || sources::policy::map(&stores, &p))
        }
    };
    let mut controller = controller
        .owns_stream(streams.config_maps.filter(not_our_write(shared.written.clone())))
        .owns_stream(
            streams
                .network_policies
                .filter(not_our_write(shared.written.clone())),
        )
        .watches_stream(streams.policies, policies)
        .watches_stream(streams.pods, trigger(stores, shared, sources::pods::map))
        .watches_stream(streams.services, trigger(stores, shared, sources::services::map))
        .watches_stream(
            streams.ingresses,
            trigger(stores, shared, sources::ingresses::map),
        )
        .watches_stream(
            streams.ingress_classes,
            trigger(stores, shared, |stores, _, _: &IngressClass| {
                sources::all_servers(stores)
            }),
        );
    let routes = streams.routes;
    if let Some(s) = routes.routes {
        controller = controller.watches_stream(s, trigger(stores, shared, http_routes::map));
    }
    if let Some(s) = routes.gateways {
        controller = controller.watches_stream(
            s,
            trigger(stores, shared, |_, index, g| http_routes::map_gateway(index, g)),
        );
    }
    if let Some(s) = routes.reference_grants {
        controller = controller.watches_stream(
            s,
            trigger(stores, shared, |stores, _, g| http_routes::map_grant(stores, g)),
        );
    }
    if let Some(s) = streams.sig_servers {
        controller = controller.watches_stream(s, trigger(stores, shared, sig_servers::map));
    }
    if let Some(s) = routes.namespaces {
        controller = controller.watches_stream(
            s,
            trigger(stores, shared, |stores, _, n| {
                http_routes::map_namespace(stores, n)
            }),
        );
    }
    controller
}

/// The watch streams of the sources and of the objects the controller writes.
struct SourceStreams {
    policies: Triggers<MCPGuardPolicy>,
    pods: Triggers<Pod>,
    services: Triggers<Service>,
    ingresses: Triggers<Ingress>,
    ingress_classes: Triggers<IngressClass>,
    routes: http_routes::Streams,
    /// The SIG's MCPServers, when their API is served.
    sig_servers: Option<Triggers<SigMCPServer>>,
    config_maps: Triggers<ConfigMap>,
    network_policies: Triggers<NetworkPolicy>,
}

/// Starts every watch but the MCPServers': the stores (without the servers' and the sync flag) and the streams.
async fn watch_sources(
    w: &Watch<'_>,
    gateway_api: bool,
    (servers, indexes): (Store<MCPServer>, Indexes),
    synced: tokio::sync::watch::Receiver<bool>,
) -> Result<(Stores, SourceStreams), kube::Error> {
    let ours = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let (policies, policy_stream) = w.cluster::<MCPGuardPolicy>();
    let (pods, pod_stream) = sources::pods::watch(w, &indexes.pods);
    let (services, service_stream) = sources::services::watch(w, &indexes.services);
    let (ingresses, ingress_stream, ingress_classes, class_stream) =
        sources::ingresses::watch(w, &indexes.ingresses);
    let (routes, route_streams) = http_routes::watch(w, gateway_api).await?;
    let (sig_servers, sig_stream) = if sig_servers::served(w.client).await? {
        let (store, stream) = sig_servers::watch(w);
        (Some(store), Some(stream))
    } else {
        (None, None)
    };
    let (config_maps, cm_stream) = w.labelled::<ConfigMap>(&ours);
    let (network_policies, np_stream) = w.labelled::<NetworkPolicy>(&ours);
    let stores = Stores {
        servers,
        services,
        ingresses,
        ingress_classes,
        policies,
        config_maps,
        network_policies,
        pods,
        routes: routes.routes,
        gateways: routes.gateways,
        reference_grants: routes.reference_grants,
        namespaces: routes.namespaces,
        sig_servers,
        synced,
        indexes,
    };
    let streams = SourceStreams {
        policies: policy_stream,
        pods: pod_stream,
        services: service_stream,
        ingresses: ingress_stream,
        ingress_classes: class_stream,
        routes: route_streams,
        sig_servers: sig_stream,
        config_maps: cm_stream,
        network_policies: np_stream,
    };
    Ok((stores, streams))
}

/// Resolves when the Gateway API (or its ReferenceGrants) or the SIG's MCPServers (`sig`) appear or go away: the
/// controller must restart to watch them (or stop watching them). The Gateway API is not looked for when a flag
/// fixes it.
async fn availability_changed(
    client: Client,
    settings: ControllerSettings,
    gateway_api: bool,
    grants: bool,
    sig: bool,
) {
    let fixed = settings.gateway_api.is_some();
    loop {
        tokio::time::sleep(settings.discovery_interval).await;
        let now = if fixed {
            Ok(gateway_api)
        } else {
            http_routes::gateway_api_installed(&client).await
        };
        let grants_now = if gateway_api {
            http_routes::reference_grants_served(&client).await
        } else {
            Ok(grants)
        };
        let sig_now = sig_servers::served(&client).await;
        match (now, grants_now, sig_now) {
            (Ok(now), Ok(grants_now), Ok(sig_now))
                if now != gateway_api || grants_now != grants || sig_now != sig =>
            {
                info!(
                    gateway_api = now,
                    reference_grants = grants_now,
                    sig_mcp_servers = sig_now,
                    "Gateway API or mcp.x-k8s.io availability changed; restarting the controller"
                );
                return;
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => debug!(error = %e, "API discovery failed"),
            _ => {}
        }
    }
}

/// Runs the controller until `stop` resolves (or the Gateway API or the SIG's MCPServers appear/disappear,
/// which returns `Ok(true)`: run again to pick the change up).
pub async fn run_once(
    client: Client,
    settings: ControllerSettings,
    metrics: ControllerMetrics,
    readiness: ControllerReadiness,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<bool, kube::Error> {
    let gateway_api = match settings.gateway_api {
        Some(v) => v,
        None => http_routes::gateway_api_installed(&client).await?,
    };
    let scope = settings.namespace.clone().unwrap_or_else(|| "*".into());
    info!(gateway_api, namespace = %scope, "starting MCPServer controller");
    readiness.synced.store(false, Ordering::Relaxed);
    readiness.leading.store(true, Ordering::Relaxed);

    let (tracker, synced_rx) = SyncTracker::new();
    let w = Watch {
        client: &client,
        namespace: settings.namespace.as_deref(),
        config: watcher::Config::default().any_semantic(),
        tracker: &tracker,
    };
    let shared = Shared {
        policy_status: w
            .namespace
            .is_none()
            .then(|| Arc::new(tokio::sync::Notify::new())),
        ..Default::default()
    };
    let indexes = Indexes::default();
    let (servers, server_stream, overlap_rx) = watch_servers(&w, &shared, &metrics, &indexes.servers);
    let (stores, streams) = watch_sources(&w, gateway_api, (servers.clone(), indexes), synced_rx).await?;
    report_synced(&stores, &readiness, scope);
    // The cluster's issuer: fetched while this replica leads; each change reconciles every MCPServer (rare:
    // a key rotation, an outage, a recovery).
    let (issuer_tx, issuer_rx) = tokio::sync::watch::channel(IssuerState::default());
    let issuer_changes = futures::stream::unfold(issuer_rx.clone(), |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    let ctx = Arc::new(Context {
        cluster_issuer: issuer_rx,
        client: client.clone(),
        recorder: Recorder::new(client.clone(), FIELD_MANAGER, &settings.identity),
        metrics,
        settings: settings.clone(),
        stores: stores.clone(),
        index: shared.index.clone(),
        written: shared.written.clone(),
        empty: shared.empty.clone(),
        policy_status: shared.policy_status.clone(),
    });
    let issuer_refresh = tokio::spawn(cluster_issuer::refresh(client.clone(), issuer_tx));
    let policy_writer = shared
        .policy_status
        .clone()
        .map(|trigger| tokio::spawn(crate::policy_status::run(client.clone(), stores.clone(), trigger)));
    let ctx_metrics = ctx.metrics.clone();
    let unguarded = tokio::spawn(crate::fleet::run(
        stores.clone(),
        ctx_metrics.clone(),
        settings.discovery_interval,
    ));

    let availability = availability_changed(
        client.clone(),
        settings.clone(),
        gateway_api,
        stores.reference_grants.is_some(),
        stores.sig_servers.is_some(),
    );
    let (changed, stop_rx, stopper) = stop_on_either(stop, availability);
    let controller = Controller::for_stream(
        server_stream.predicate_filter(predicates::generation, Default::default()),
        servers,
    )
    .with_config(ControllerConfig::default().concurrency(settings.concurrency))
    .reconcile_on(overlap_rx)
    .reconcile_all_on(issuer_changes);
    wire(controller, streams, &stores, &shared)
        .graceful_shutdown_on(stop_rx.map(|_| ()))
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move { log_outcome(res) })
        .await;
    stopper.abort();
    issuer_refresh.abort();
    if let Some(writer) = policy_writer {
        writer.abort();
    }
    unguarded.abort();
    // Only the leader's count is current: a replica that stopped leading reports none.
    ctx_metrics.unguarded_servers.clear();
    readiness.leading.store(false, Ordering::Relaxed);
    readiness.synced.store(false, Ordering::Relaxed);
    info!("MCPServer controller stopped");
    Ok(changed.load(Ordering::Relaxed))
}

/// Flips the readiness flag once every cache has seen its initial list.
fn report_synced(stores: &Stores, readiness: &ControllerReadiness, scope: String) {
    let (stores, synced) = (stores.clone(), readiness.synced.clone());
    tokio::spawn(async move {
        stores.wait_synced().await;
        info!(namespace = %scope, "caches synced");
        synced.store(true, Ordering::Relaxed);
    });
}

/// Stops the controller when asked (`stop`), or when the Gateway API (or its ReferenceGrants) or the SIG's
/// MCPServers appear or go away (`availability`): then the returned flag is set, and the caller runs again.
fn stop_on_either(
    stop: impl Future<Output = ()> + Send + 'static,
    availability: impl Future<Output = ()> + Send + 'static,
) -> (
    Arc<AtomicBool>,
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let changed = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopper = {
        let changed = changed.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop => {}
                () = availability => changed.store(true, Ordering::Relaxed),
            }
            let _ = stop_tx.send(());
        })
    };
    (changed, stop_rx, stopper)
}

/// Logs what one reconcile came to (its own errors are logged by the reconciler and `error_policy`).
fn log_outcome(
    res: Result<(ObjectRef<MCPServer>, Action), kube::runtime::controller::Error<Error, watcher::Error>>,
) {
    match res {
        Ok((obj, _)) => {
            debug!(namespace = obj.namespace.as_deref().unwrap_or(""), name = %obj.name, "reconciled")
        }
        Err(kube::runtime::controller::Error::ObjectNotFound(_))
        | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => warn!(error = %e, "controller error"),
    }
}
