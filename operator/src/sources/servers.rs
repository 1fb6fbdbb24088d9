//! The other MCPServers of the namespace: one whose selector can select the same pods is a `SelectorOverlap`
//! (the pod webhook refuses such pods: each pod is guarded by exactly one MCPServer).

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Finding, Fold};
use crate::crd::MCPServer;
use crate::selector::{Overlap, common_pod, describe, overlap};
use crate::stores::in_namespace;

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

/// MCPServer changed (spec) or deleted → the other MCPServers of its namespace whose selectors overlap it now, and
/// those whose last derivation found it overlapping.
pub fn map(
    servers: &Store<MCPServer>,
    index: &DependencyIndex,
    server: &MCPServer,
    deleted: bool,
) -> Vec<ObjectRef<MCPServer>> {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let now: Vec<_> = if deleted {
        Vec::new()
    } else {
        in_namespace(servers, &ns)
            .into_iter()
            .filter(|s| s.name_any() != name)
            .filter(|s| common_pod(&server.spec.selector, &s.spec.selector).is_some())
            .map(|s| ObjectRef::from_obj(&*s))
            .collect()
    };
    index.with_dependents(Dependency::new(DepKind::MCPServer, Some(&ns), &name), now)
}

#[cfg(test)]
mod tests;
