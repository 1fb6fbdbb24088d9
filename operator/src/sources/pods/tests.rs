use super::*;
use crate::sources::testkit::*;

#[test]
fn pods_without_the_guard_are_a_bypass() {
    // (pods, bypass messages expected containing)
    let cases: Vec<(Vec<Pod>, Vec<&str>)> = vec![
        (
            vec![pod(
                "w-1",
                &[("app", "weather")],
                Some("weather"),
                &[("http", 8000)],
            )],
            vec![],
        ),
        (
            vec![pod("w-1", &[("app", "weather")], None, &[("http", 8000)])],
            vec!["pods without the guard", "w-1"],
        ),
        (
            vec![pod("w-1", &[("app", "weather")], Some("radar"), &[])],
            vec!["another MCPServer", "radar"],
        ),
        // Not selected: ignored.
        (vec![pod("other", &[("app", "frontend")], None, &[])], vec![]),
    ];
    for (i, (pods, want)) in cases.into_iter().enumerate() {
        let world = World {
            services: vec![web_service()],
            pods,
            policy: no_dns(),
            ..Default::default()
        };
        let d = world.derive(&spec(&[("app", "weather")]));
        let all = d.messages(FindingKind::Bypass).join("; ");
        if want.is_empty() {
            assert!(d.messages(FindingKind::Bypass).is_empty(), "case {i}: {all}");
        }
        for w in want {
            assert!(all.contains(w), "case {i}: {w:?} not in {all}");
        }
    }
}

#[test]
fn named_target_ports_resolve_through_pods() {
    let svc = service(
        "weather",
        &[("app", "weather")],
        vec![
            sport(80, Some(IntOrString::String("http".into())), Some("http")),
            sport(9090, Some(IntOrString::String("metrics".into())), Some("metrics")),
            sport(9999, Some(IntOrString::String("nope".into())), Some("nope")),
        ],
    );
    let pods = vec![pod(
        "w-1",
        &[("app", "weather")],
        Some("weather"),
        &[("http", 8000), ("metrics", 9090)],
    )];
    let world = World {
        services: vec![svc],
        ingresses: vec![ingress(
            "web",
            vec![
                rule(Some("mcp.example.com"), vec![backend("weather", named("http"))]),
                rule(Some("m.example.com"), vec![backend("weather", named("nope"))]),
            ],
            &[],
        )],
        pods,
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert_eq!(values(&d.hosts), vec!["mcp.example.com"]);
    assert_eq!(
        d.messages(FindingKind::Bypass).len(),
        1,
        "{:?}",
        d.messages(FindingKind::Bypass)
    );
    assert!(
        d.messages(FindingKind::Bypass)[0].contains("container \"server\"")
            && d.messages(FindingKind::Bypass)[0].contains("9090"),
        "{:?}",
        d.messages(FindingKind::Bypass)
    );
    assert_eq!(
        d.messages(FindingKind::PortMismatch).len(),
        1,
        "{:?}",
        d.messages(FindingKind::PortMismatch)
    );
    assert!(
        d.messages(FindingKind::PortMismatch)[0].contains("\"nope\""),
        "{:?}",
        d.messages(FindingKind::PortMismatch)
    );
    assert!(
        d.dependencies
            .contains(&Dependency::new(DepKind::Pod, Some(NS), "w-1"))
    );
}

#[test]
fn spec_port_not_declared_is_reported() {
    let pods = vec![pod(
        "w-1",
        &[("app", "weather")],
        Some("weather"),
        &[("http", 8080)],
    )];
    let world = World {
        services: vec![web_service()],
        pods,
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert!(
        d.messages(FindingKind::Problem)
            .iter()
            .any(|p| p.contains("declares port 8000") || p.contains("port 8000 (spec.port)")),
        "{:?}",
        d.messages(FindingKind::Problem)
    );
    // Pods that declare no ports at all say nothing either way.
    let pods = vec![pod("w-1", &[("app", "weather")], Some("weather"), &[])];
    let world = World {
        services: vec![web_service()],
        pods,
        policy: no_dns(),
        ..Default::default()
    };
    assert!(
        world
            .derive(&spec(&[("app", "weather")]))
            .messages(FindingKind::Problem)
            .is_empty()
    );
}

#[test]
fn a_pod_maps_to_the_servers_selecting_it_now_and_before() {
    let world = Cache {
        servers: vec![
            server("ns", "a", &[("app", "a")]),
            server("ns", "b", &[("app", "b")]),
            server("other", "a2", &[("app", "a")]),
        ],
        ..Default::default()
    };
    let stores = world.stores();
    let mut index = DependencyIndex::default();
    // Server b's last derivation saw pod "was-b" (it was relabelled since).
    index.record(
        &ObjectRef::new("b").within("ns"),
        &[Dependency::new(DepKind::Pod, Some("ns"), "was-b")].into(),
    );
    // (pod name, its labels, servers to reconcile)
    let table: &[(&str, Pairs, Want)] = &[
        ("p", &[("app", "a")], &["ns/a"]),
        ("p", &[("app", "a"), ("x", "y")], &["ns/a"]),
        ("p", &[("app", "c")], &[]),
        ("p", &[], &[]),
        ("was-b", &[("app", "a")], &["ns/a", "ns/b"]),
        ("was-b", &[], &["ns/b"]),
    ];
    for (name, labels, want) in table {
        assert_eq!(
            names(map(&stores, &index, &labelled_pod("ns", name, labels))),
            *want,
            "pod {name} {labels:?}"
        );
    }
}
