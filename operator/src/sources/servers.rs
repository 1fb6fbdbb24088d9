//! The other MCPServers of the namespace: one whose selector can select the same pods is a `SelectorOverlap`
//! (the pod webhook refuses such pods: each pod is guarded by exactly one MCPServer).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::services::selector_facets;
use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Finding, Fold};
use crate::crd::MCPServer;
use crate::index::{Facet, Index, Lookup};
use crate::selector::{Overlap, common_pod, describe, overlap};

/// Other MCPServers of the namespace that can select the same pods, each a dependency so that its change or
/// deletion re-derives this one.
pub fn contribute(input: &DeriveInput<'_>, fold: &mut Fold) {
    let ours = &input.spec.selector;
    for (other, theirs) in &input.other_servers {
        let first = overlap(ours, theirs);
        if first == Overlap::Disjoint {
            continue;
        }
        let message = match (first, overlap(theirs, ours)) {
            (Overlap::Disjoint, _) => continue,
            (Overlap::Within, _) => format!(
                "every pod spec.selector selects is also selected by MCPServer {other:?}: the pod webhook refuses \
                 such pods (each pod can be guarded by exactly one MCPServer); make the selectors disjoint"
            ),
            (_, Overlap::Within) => format!(
                "spec.selector selects every pod of MCPServer {other:?}: the pod webhook refuses such pods (each pod \
                 can be guarded by exactly one MCPServer); make the selectors disjoint"
            ),
            (Overlap::Possible(labels), _) => format!(
                "a pod labelled {} would be selected by this MCPServer and by MCPServer {other:?}, and the pod \
                 webhook would refuse it; keep their pods' labels apart",
                describe(&labels)
            ),
        };
        fold.find(Finding::SelectorOverlap {
            other: other.to_string(),
            message,
        });
        fold.d.depend(DepKind::MCPServer, Some(input.namespace), other);
    }
}

/// What an MCPServer is looked up by: the labels its selector names (or [`Facet::Always`] when it names none, or
/// stands for another operator's server, whose selector is resolved only when read), the objects its spec lists
/// by name, and its `matchLabels` keys (for [`overlap_lookup`]).
pub fn facets(server: &MCPServer) -> Vec<Facet> {
    let spec = &server.spec;
    let mut facets = selector_facets(&spec.selector);
    if spec.server_ref.is_some() || facets.is_empty() {
        facets.push(Facet::Always);
    }
    let listed = [
        (DepKind::Service, &spec.services),
        (DepKind::Ingress, &spec.ingresses),
        (DepKind::HTTPRoute, &spec.http_routes),
    ];
    for (kind, names) in listed {
        facets.extend(names.iter().flatten().map(|n| Facet::Lists(kind, n.clone())));
    }
    // `matchLabels` is a BTreeMap: its keys come sorted.
    let keys = spec
        .selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, _)| k.clone());
    facets.push(Facet::KeySet(keys.collect()));
    facets
}

/// The MCPServers whose `matchLabels` do not conflict with `selector`'s ([`crate::selector::labels_conflict`]),
/// and those looked up always: they share a pair with it, or no key at all.
pub fn overlap_lookup(selector: &LabelSelector) -> Lookup {
    match &selector.match_labels {
        None => Lookup::Namespace,
        Some(labels) => {
            let pairs = labels.iter().map(|(k, v)| Facet::Label(k.clone(), v.clone()));
            Lookup::AnyOrDisjoint(
                std::iter::once(Facet::Always).chain(pairs).collect(),
                labels.keys().cloned().collect(),
            )
        }
    }
}

/// MCPServer changed (spec) or deleted → the other MCPServers of its namespace whose selectors overlap it now, and
/// those whose last derivation found it overlapping.
pub fn map(
    servers: (&Store<MCPServer>, &Index<MCPServer>),
    index: &DependencyIndex,
    server: &MCPServer,
    deleted: bool,
) -> Vec<ObjectRef<MCPServer>> {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let now: Vec<_> = if deleted {
        Vec::new()
    } else {
        let (store, servers) = servers;
        let lookup = overlap_lookup(&server.spec.selector);
        servers
            .select(store, &ns, &lookup, |s| {
                s.name_any() != name && common_pod(&server.spec.selector, &s.spec.selector).is_some()
            })
            .into_iter()
            .map(|s| ObjectRef::from_obj(&*s))
            .collect()
    };
    index.with_dependents(Dependency::new(DepKind::MCPServer, Some(&ns), &name), now)
}

#[cfg(test)]
mod tests;
