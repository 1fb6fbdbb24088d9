//! The index follows the watch events as the cache does: an edit moves an object's facets, a deletion drops
//! them, a full list replaces them when it is done; key sets are found by disjointness.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};

use super::*;
use crate::sources::testkit::{labelled_pod, server};

fn label(k: &str, v: &str) -> Facet {
    Facet::Label(k.into(), v.into())
}

fn names(index: &Index<Pod>, store: &Store<Pod>, ns: &str, lookup: &Lookup) -> Vec<String> {
    index
        .select(store, ns, lookup, |_| true)
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[test]
fn follows_edits_deletions_and_relists() {
    let index = Index::new(crate::sources::pods::facets);
    let (store, mut writer) = reflector::store();
    let mut follow = index.follow();
    let mut feed = |event: Event<Pod>| {
        writer.apply_watcher_event(&event);
        follow(&Ok::<_, watcher::Error>(event));
    };
    let app = |v| Lookup::Any(vec![label("app", v)]);
    feed(Event::Init);
    feed(Event::InitApply(labelled_pod("ns", "p1", &[("app", "a")])));
    feed(Event::InitApply(labelled_pod(
        "ns",
        "p2",
        &[("app", "a"), ("tier", "web")],
    )));
    feed(Event::InitApply(labelled_pod("other", "p3", &[("app", "a")])));
    feed(Event::InitDone);
    assert_eq!(names(&index, &store, "ns", &app("a")), ["p1", "p2"]);
    assert_eq!(names(&index, &store, "other", &app("a")), ["p3"]);

    // An edit moves p2 from app=a to app=b.
    feed(Event::Apply(labelled_pod("ns", "p2", &[("app", "b")])));
    assert_eq!(names(&index, &store, "ns", &app("a")), ["p1"]);
    assert_eq!(names(&index, &store, "ns", &app("b")), ["p2"]);
    assert_eq!(
        names(&index, &store, "ns", &Lookup::Any(vec![label("tier", "web")])),
        Vec::<String>::new()
    );

    feed(Event::Delete(labelled_pod("ns", "p1", &[("app", "a")])));
    assert_eq!(names(&index, &store, "ns", &app("a")), Vec::<String>::new());
    assert!(!index.read().of_object.contains_key(&("ns".into(), "p1".into())));

    // A relist without p3 (deleted while the watch was down), with p2 relabelled: until the list is done the
    // cache holds p2 as it was, found by its old labels and its new ones; then only by its new ones.
    feed(Event::Init);
    feed(Event::InitApply(labelled_pod("ns", "p2", &[("app", "c")])));
    assert_eq!(names(&index, &store, "ns", &app("b")), ["p2"]);
    assert_eq!(names(&index, &store, "ns", &app("c")), ["p2"]);
    assert_eq!(names(&index, &store, "other", &app("a")), ["p3"]);
    feed(Event::InitDone);
    assert_eq!(names(&index, &store, "other", &app("a")), Vec::<String>::new());
    assert_eq!(names(&index, &store, "ns", &app("b")), Vec::<String>::new());
    assert_eq!(names(&index, &store, "ns", &app("c")), ["p2"]);
    assert_eq!(index.read().of_object.len(), 1);
    assert_eq!(names(&index, &store, "ns", &Lookup::Namespace), ["p2"]);
    assert_eq!(
        names(
            &index,
            &store,
            "ns",
            &Lookup::Named(vec!["p2".into(), "gone".into()])
        ),
        ["p2"]
    );
}

#[test]
fn key_sets_are_found_by_disjointness() {
    let index = Index::new(crate::sources::servers::facets);
    let (store, mut writer) = reflector::store();
    let servers = [
        server("ns", "app-a", &[("app", "a")]),
        server("ns", "app-b", &[("app", "b")]),
        server("ns", "tier", &[("tier", "web")]),
        server("ns", "both", &[("app", "b"), ("tier", "web")]),
    ];
    for s in servers {
        index.apply(&s);
        writer.apply_watcher_event(&Event::Apply(s));
    }
    let keys = |k: &[&str]| k.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
    let select = |lookup: Lookup| -> Vec<String> {
        index
            .select(&store, "ns", &lookup, |_| true)
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    // Sharing app=a, or no key with {app}.
    assert_eq!(
        select(Lookup::AnyOrDisjoint(vec![label("app", "a")], keys(&["app"]))),
        ["app-a", "tier"]
    );
    // No key shared with {other}: every server.
    assert_eq!(
        select(Lookup::AnyOrDisjoint(vec![], keys(&["other"]))),
        ["app-a", "app-b", "both", "tier"]
    );
    assert_eq!(
        select(Lookup::AnyOrDisjoint(vec![], keys(&["app", "tier"]))),
        Vec::<String>::new()
    );
}
