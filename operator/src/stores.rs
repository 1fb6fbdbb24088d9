//! The reflector caches the controller reads, and how each is filled: one watch per kind, scoped to the
//! operator's namespace when it watches one, each reporting when its initial list is done.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::crd::{MCPGuardPolicy, MCPServer};
use crate::gateway::{Gateway, HTTPRoute, ReferenceGrant};

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
    /// The SIG's MCPServers (`mcp.x-k8s.io`); `None` when their API is not served.
    pub sig_servers: Option<Store<crate::sources::sig_servers::SigMCPServer>>,
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
pub struct SyncTracker {
    pending: Arc<std::sync::atomic::AtomicUsize>,
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl SyncTracker {
    pub fn new() -> (Self, tokio::sync::watch::Receiver<bool>) {
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
    pub fn track<K>(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + Send + 'static {
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

/// What the caches drop from every object before storing it: `managedFields` (server-side apply's bookkeeping,
/// often a large part of an object, which nothing here reads), kept once per object in every cache.
pub fn slim<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// The objects of a store in one namespace.
pub fn in_namespace<K>(store: &Store<K>, ns: &str) -> Vec<Arc<K>>
where
    K: Resource + Clone,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.state_filter(|o| o.meta().namespace.as_deref() == Some(ns))
}

/// The Api for a namespaced kind: in one namespace, or in all.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A store filled by a watch, and the stream of the objects the watch touched (for the controller's triggers).
pub fn reflect<K>(
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
        .modify(slim)
        .reflect(writer)
        .inspect(move |event| track(event))
        .touched_objects();
    (reader, stream)
}

/// The stream of objects a watch touched, as the controller's triggers take them.
pub type Triggers<K> = futures::stream::BoxStream<'static, Result<K, watcher::Error>>;

/// How the controller watches: its client, the namespace it is scoped to (`None`: all), the watcher settings,
/// and the tracker of the initial lists.
pub struct Watch<'a> {
    pub client: &'a Client,
    pub namespace: Option<&'a str>,
    pub config: watcher::Config,
    pub tracker: &'a SyncTracker,
}

impl Watch<'_> {
    /// A namespaced kind, in the operator's scope.
    pub fn namespaced<K>(&self) -> (Store<K>, Triggers<K>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default + std::hash::Hash + Eq + Clone + Send + Sync,
    {
        self.labelled("")
    }

    /// A namespaced kind in the operator's scope, only the objects with these labels (none: every object).
    pub fn labelled<K>(&self, labels: &str) -> (Store<K>, Triggers<K>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default + std::hash::Hash + Eq + Clone + Send + Sync,
    {
        let mut config = self.config.clone();
        if !labels.is_empty() {
            config = config.labels(labels);
        }
        let (store, stream) = reflect(scoped::<K>(self.client, self.namespace), config, self.tracker);
        (store, stream.boxed())
    }

    /// A cluster-scoped kind (or a namespaced one in every namespace).
    pub fn cluster<K>(&self) -> (Store<K>, Triggers<K>)
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + std::hash::Hash + Eq + Clone + Send + Sync,
    {
        let (store, stream) = reflect(
            Api::<K>::all(self.client.clone()),
            self.config.clone(),
            self.tracker,
        );
        (store, stream.boxed())
    }
}
