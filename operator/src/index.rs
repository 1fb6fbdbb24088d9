//! Indexes beside the reflector caches: which objects of a namespace carry a facet (a label pair, an Ingress
//! backend, a name listed in a spec), kept current from the same watch events that fill the caches, as linkerd2's
//! policy controller indexes per namespace. With 10,000 objects in one namespace a reconcile then looks up its
//! few objects instead of scanning all of them, and a watch event finds the MCPServers it concerns the same way.
//!
//! An index only narrows: callers apply their exact test to whatever a lookup returns, so a lookup that returns
//! too much costs time, never correctness. What each kind's facets are, and which facets a question looks up,
//! is decided by its source (`sources/`); the tests there hold every lookup to the scan it replaces.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::sources::DepKind;

/// What an object is looked up by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Facet {
    /// A label pair: of a pod's labels, a Service's selector, the labels an MCPServer's selector implies.
    Label(String, String),
    /// An Ingress (or route) backend: the Service's name.
    Backend(String),
    /// An MCPServer lists this object by name in a spec field (`spec.services`, `spec.ingresses`, ...).
    Lists(DepKind, String),
    /// An MCPServer that every lookup of its namespace returns: its selector implies no label, or it stands for
    /// another operator's server (`spec.serverRef`, resolved only when read).
    Always,
    /// The keys of an MCPServer's `matchLabels`, sorted (for overlaps: selectors that share no key cannot
    /// conflict). The last variant: [`Lookup::AnyOrDisjoint`] reads the key sets as the tail of the ordered facets.
    KeySet(Vec<String>),
}

/// Which objects of a namespace a question may concern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Every object of the namespace (the exact test cannot be narrowed by a facet).
    Namespace,
    /// These names.
    Named(Vec<String>),
    /// The objects carrying any of these facets.
    Any(Vec<Facet>),
    /// The objects carrying any of these facets, or a [`Facet::KeySet`] sharing no key with these keys.
    AnyOrDisjoint(Vec<Facet>, BTreeSet<String>),
}

/// Names per facet per namespace, and the facets of each object (to drop them when it changes or goes). A name
/// is one allocation shared by its postings, and a set of one name stays small (the common case).
#[derive(Debug, Default)]
struct Postings {
    by_facet: HashMap<String, BTreeMap<Facet, HashSet<Arc<str>>>>,
    of_object: HashMap<(String, Arc<str>), Vec<Facet>>,
}

impl Postings {
    fn insert(&mut self, ns: &str, name: &str, facets: Vec<Facet>) {
        self.remove(ns, name);
        let name: Arc<str> = name.into();
        let postings = self.by_facet.entry(ns.to_string()).or_default();
        for f in &facets {
            postings.entry(f.clone()).or_default().insert(name.clone());
        }
        self.of_object.insert((ns.to_string(), name), facets);
    }

    /// Adds facets to an object's, keeping those it has.
    fn add(&mut self, ns: &str, name: &str, facets: &[Facet]) {
        let mut all = self
            .of_object
            .get(&(ns.to_string(), name.into()))
            .cloned()
            .unwrap_or_default();
        for f in facets {
            if !all.contains(f) {
                all.push(f.clone());
            }
        }
        self.insert(ns, name, all);
    }

    fn remove(&mut self, ns: &str, name: &str) {
        let Some(old) = self.of_object.remove(&(ns.to_string(), name.into())) else {
            return;
        };
        let Some(postings) = self.by_facet.get_mut(ns) else {
            return;
        };
        for f in old {
            if let Some(names) = postings.get_mut(&f) {
                names.remove(name);
                if names.is_empty() {
                    postings.remove(&f);
                }
            }
        }
        if postings.is_empty() {
            self.by_facet.remove(ns);
        }
    }

    /// The names in `ns` that carry one of `facets`, or (`disjoint_from`) a key set sharing no key with it.
    fn names(
        &self,
        ns: &str,
        facets: &[Facet],
        disjoint_from: Option<&BTreeSet<String>>,
    ) -> BTreeSet<Arc<str>> {
        let Some(postings) = self.by_facet.get(ns) else {
            return BTreeSet::new();
        };
        let mut names: BTreeSet<Arc<str>> = facets
            .iter()
            .filter_map(|f| postings.get(f))
            .flatten()
            .cloned()
            .collect();
        if let Some(keys) = disjoint_from {
            let key_sets = postings.range(Facet::KeySet(Vec::new())..);
            for (facet, with) in key_sets {
                if let Facet::KeySet(theirs) = facet
                    && !theirs.iter().any(|k| keys.contains(k))
                {
                    names.extend(with.iter().cloned());
                }
            }
        }
        names
    }
}

/// An index over one kind: its facets, and the names carrying each, per namespace.
pub struct Index<K> {
    facets: fn(&K) -> Vec<Facet>,
    postings: Arc<RwLock<Postings>>,
}

impl<K> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            facets: self.facets,
            postings: self.postings.clone(),
        }
    }
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    pub fn new(facets: fn(&K) -> Vec<Facet>) -> Self {
        Self {
            facets,
            postings: Arc::default(),
        }
    }

    /// Records an object as it is now (its facets replace those of its previous version).
    pub fn apply(&self, object: &K) {
        if let Some((ns, name)) = key(object) {
            self.write().insert(ns, name, (self.facets)(object));
        }
    }

    /// Forgets a deleted object.
    pub fn delete(&self, object: &K) {
        if let Some((ns, name)) = key(object) {
            self.write().remove(ns, name);
        }
    }

    /// Keeps the index current from a watch's events, called after the cache's writer applied each (and before
    /// the event reaches the controller's triggers: a reconcile that read the index just before an event is
    /// followed by the one the event maps to). A full list replaces the postings when it is done, as it replaces
    /// the cache; until then the index holds both lists, which only makes lookups return more.
    pub fn follow(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + Send + 'static {
        let index = self.clone();
        let mut relist: Option<Postings> = None;
        move |event| match event {
            Ok(watcher::Event::Apply(o)) => index.apply(o),
            Ok(watcher::Event::Delete(o)) => index.delete(o),
            Ok(watcher::Event::Init) => relist = Some(Postings::default()),
            Ok(watcher::Event::InitApply(o)) => {
                if let Some((ns, name)) = key(o) {
                    let facets = (index.facets)(o);
                    // The cache still holds the previous version until the list is done: find both.
                    index.write().add(ns, name, &facets);
                    if let Some(relist) = &mut relist {
                        relist.insert(ns, name, facets);
                    }
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(relist) = relist.take() {
                    *index.write() = relist;
                }
            }
            Err(_) => {}
        }
    }

    /// The objects of `ns` in `store` that `lookup` may concern and `keep` accepts, sorted by name.
    pub fn select(
        &self,
        store: &Store<K>,
        ns: &str,
        lookup: &Lookup,
        keep: impl Fn(&K) -> bool,
    ) -> Vec<Arc<K>> {
        let names = match lookup {
            Lookup::Namespace => {
                let mut all = store.state_filter(|o| o.meta().namespace.as_deref() == Some(ns) && keep(o));
                all.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
                return all;
            }
            Lookup::Named(names) => names.iter().map(|n| Arc::from(n.as_str())).collect(),
            Lookup::Any(facets) => self.read().names(ns, facets, None),
            Lookup::AnyOrDisjoint(facets, keys) => self.read().names(ns, facets, Some(keys)),
        };
        names
            .iter()
            .filter_map(|name| store.get(&ObjectRef::new(name).within(ns)))
            .filter(|o| keep(o))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Postings> {
        // A panic while writing leaves whole postings (each insert or removal completes or never starts).
        self.postings.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Postings> {
        self.postings.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// An object's namespace (empty: cluster-scoped) and name.
fn key<K: Resource>(object: &K) -> Option<(&str, &str)> {
    let meta = object.meta();
    Some((
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref()?,
    ))
}

#[cfg(test)]
mod tests;
