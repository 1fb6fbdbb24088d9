//! How the reflector caches are filled: one watch per kind, scoped to the operator's namespace when it watches
//! one, each reporting when its initial list is done. Which caches there are is [`crate::sources::Stores`]; each
//! source says how its kind is watched.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::index::Index;

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

/// The annotation in which a client-side `kubectl apply` keeps the whole object as applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the caches drop from every object before storing it, kept once per object in every cache and read by
/// nothing here: `managedFields` (server-side apply's bookkeeping, often a large part of an object) and the copy
/// of the object that a client-side `kubectl apply` (kubectl's default) keeps in an annotation, as large again.
pub fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
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
/// `follow` sees each event after the store applied it (an [`Index`] kept beside the store).
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    tracker: &SyncTracker,
    mut follow: impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + Send + 'static,
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
        .inspect(move |event| {
            follow(event);
            track(event);
        })
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
        let (store, stream) = reflect(
            scoped::<K>(self.client, self.namespace),
            config,
            self.tracker,
            |_| {},
        );
        (store, stream.boxed())
    }

    /// A namespaced kind in the operator's scope, every object, kept in `index` too.
    pub fn indexed<K>(&self, index: &Index<K>) -> (Store<K>, Triggers<K>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, stream) = reflect(
            scoped::<K>(self.client, self.namespace),
            self.config.clone(),
            self.tracker,
            index.follow(),
        );
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
            |_| {},
        );
        (store, stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    #[test]
    fn slim_drops_the_bookkeeping_and_keeps_every_other_annotation() {
        let mut service = Service::default();
        service.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        service.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), r#"{"kind":"Service"}"#.to_string()),
                ("mcpguard.dev/host".to_string(), "a.example".to_string()),
            ]
            .into(),
        );
        slim(&mut service);
        assert_eq!(service.metadata.managed_fields, None);
        assert_eq!(
            service.metadata.annotations,
            Some([("mcpguard.dev/host".to_string(), "a.example".to_string())].into())
        );
    }
}
