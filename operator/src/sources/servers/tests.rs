use super::*;
use crate::sources::testkit::*;

#[test]
fn overlapping_mcpservers_are_reported_without_pods() {
    let world = World {
        others: vec![
            ("all-weather".into(), spec(&[("app", "weather")]).selector),
            ("cache".into(), spec(&[("tier", "cache")]).selector),
            ("files".into(), spec(&[("app", "files")]).selector),
        ],
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather"), ("tier", "mcp")]));
    assert_eq!(
        d.messages(FindingKind::SelectorOverlap).len(),
        1,
        "{:?}",
        d.messages(FindingKind::SelectorOverlap)
    );
    assert!(
        d.messages(FindingKind::SelectorOverlap)[0]
            .starts_with("every pod spec.selector selects is also selected by MCPServer \"all-weather\""),
        "{:?}",
        d.messages(FindingKind::SelectorOverlap)
    );
    assert!(
        d.dependencies
            .contains(&Dependency::new(DepKind::MCPServer, Some(NS), "all-weather"))
    );
    let d = world.derive(&spec(&[("app", "weather")]));
    let overlaps = d.messages(FindingKind::SelectorOverlap).join("\n");
    assert!(
        overlaps.contains("a pod labelled app=weather,tier=cache"),
        "{overlaps}"
    );
    assert!(!overlaps.contains("files"), "{overlaps}");
}

#[test]
fn a_server_maps_to_those_it_overlaps_now_and_before() {
    let world = Cache {
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
            names(map(
                (&stores.servers, &stores.indexes.servers),
                &index,
                &s,
                *deleted
            )),
            *want,
            "{name} {selector:?} deleted={deleted}"
        );
    }
}
