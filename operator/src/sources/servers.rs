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
mod tests {
    use super::*;
    use crate::sources::testkit::{Pairs, Want, World, names, server};

    #[test]
    fn a_server_maps_to_those_it_overlaps_now_and_before() {
        let world = World {
            servers: vec![
                server("ns", "app-a", &[("app", "a")]),
                server("ns", "app-b", &[("app", "b")]),
                server("ns", "tier", &[("tier", "mcp")]),
                server("other", "app-a", &[("app", "a")]),
            ],
            ..Default::default()
        };
        let stores = world.stores();
        let mut index = DependencyIndex::default();
        // app-b's last derivation found "moved" overlapping it.
        index.record(
            &ObjectRef::new("app-b").within("ns"),
            &[Dependency::new(DepKind::MCPServer, Some("ns"), "moved")].into(),
        );
        // (server, its selector, deleted, servers to reconcile)
        let table: &[(&str, Pairs, bool, Want)] = &[
            ("new", &[("app", "a")], false, &["ns/app-a", "ns/tier"]),
            ("new", &[("app", "a"), ("tier", "web")], false, &["ns/app-a"]),
            ("new", &[("app", "c"), ("tier", "web")], false, &[]),
            ("app-a", &[("app", "a")], false, &["ns/tier"]),
            ("moved", &[("app", "z"), ("tier", "z")], false, &["ns/app-b"]),
            ("moved", &[("app", "a")], true, &["ns/app-b"]),
        ];
        for (name, selector, deleted, want) in table {
            let s = server("ns", name, selector);
            assert_eq!(
                names(map(&stores.servers, &index, &s, *deleted)),
                *want,
                "{name} {selector:?} deleted={deleted}"
            );
        }
    }
}
