use super::*;
use crate::sources::testkit::*;

#[test]
fn service_dns_names_when_policy_allows() {
    let world = World {
        services: vec![web_service()],
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert_eq!(
        values(&d.hosts),
        vec![
            "weather",
            "weather.team-a",
            "weather.team-a.svc",
            "weather.team-a.svc.cluster.local"
        ]
    );
    assert!(d.origins.is_empty());
    assert_eq!(
        sources_of(&d.hosts, "weather.team-a"),
        vec!["Service team-a/weather"]
    );
    assert_eq!(d.services, vec!["weather"]);
    assert!(d.policy_missing, "no policy given: built-in defaults");

    let world = World {
        services: vec![web_service()],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert!(d.hosts.is_empty());
    assert!(!d.policy_missing);
}

#[test]
fn service_selector_matching_table() {
    // (service selector, server matchLabels, server matchExpressions, routes?)
    let in_expr = |k: &str, vs: &[&str]| LabelSelectorRequirement {
        key: k.into(),
        operator: "In".into(),
        values: Some(vs.iter().map(|s| s.to_string()).collect()),
    };
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str)],
        Vec<LabelSelectorRequirement>,
        bool,
    );
    let cases: Vec<Case<'_>> = vec![
        (&[("app", "weather")], &[("app", "weather")], vec![], true),
        (
            &[("app", "weather")],
            &[("app", "weather"), ("component", "mcp")],
            vec![],
            true,
        ),
        (
            &[("app", "weather"), ("version", "v2")],
            &[("app", "weather")],
            vec![],
            true,
        ),
        (&[("app", "other")], &[("app", "weather")], vec![], false),
        (&[("tier", "frontend")], &[("app", "weather")], vec![], false),
        (&[], &[("app", "weather")], vec![], false),
        (
            &[("app", "weather")],
            &[],
            vec![in_expr("app", &["weather"])],
            true,
        ),
        (
            &[("app", "weather")],
            &[],
            vec![in_expr("app", &["weather", "radar"])],
            true,
        ),
        (
            &[("app", "snow")],
            &[],
            vec![in_expr("app", &["weather", "radar"])],
            false,
        ),
        (
            &[("app", "weather")],
            &[],
            vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "Exists".into(),
                values: None,
            }],
            true,
        ),
        (
            &[("app", "weather")],
            &[("app", "weather")],
            vec![LabelSelectorRequirement {
                key: "canary".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }],
            true,
        ),
    ];
    for (i, (svc_sel, server_labels, exprs, want)) in cases.into_iter().enumerate() {
        let selector = LabelSelector {
            match_labels: (!server_labels.is_empty()).then(|| labels(server_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        };
        assert_eq!(
            service_selects_server(&labels(svc_sel), &selector),
            want,
            "case {i}: {svc_sel:?}"
        );
    }
}

#[test]
fn service_port_targets_table() {
    // (service port, targetPort, routes?, bypass?)
    let cases = vec![
        (8000, None, true, false),
        (80, Some(IntOrString::Int(8000)), true, false),
        (80, Some(IntOrString::String("http".into())), true, false),
        (80, Some(IntOrString::String("8000".into())), true, false),
        (80, Some(IntOrString::Int(9000)), false, true),
        (80, None, false, true),
    ];
    for (i, (port, target, routes, bypass)) in cases.into_iter().enumerate() {
        let world = World {
            services: vec![service(
                "weather",
                &[("app", "weather")],
                vec![sport(port, target, None)],
            )],
            ..Default::default()
        };
        let d = world.derive(&spec(&[("app", "weather")]));
        assert_eq!(!d.services.is_empty(), routes, "case {i}");
        assert_finds(&d, FindingKind::Bypass, bypass, i);
    }
}

#[test]
fn guard_port_layout_judges_services_by_the_guards_port() {
    use crate::crd::{TrafficLayout, TrafficSpec};
    let guard_port_spec = MCPServerSpec {
        port: 8080,
        traffic: Some(TrafficSpec {
            layout: Some(TrafficLayout::GuardPort),
            guard_port: None,
        }),
        ..spec(&[("app", "unifi")])
    };
    // An injected pod as the webhook leaves it (World derives MCPServer "weather"): the app's port renamed, the guard's port 15080 named "http".
    let mut injected = pod(
        "u-1",
        &[("app", "unifi")],
        Some("weather"),
        &[("mcp-unguarded", 8080)],
    );
    if let Some(guard) = injected
        .spec
        .as_mut()
        .and_then(|s| s.init_containers.as_mut())
        .and_then(|c| c.first_mut())
    {
        guard.ports.get_or_insert_with(Vec::new).push(
            serde_json::from_value(serde_json::json!({ "name": "http", "containerPort": 15080 }))
                .expect("port"),
        );
    }
    // (targetPort, reaches the guard?, bypass message contains)
    let cases: Vec<(IntOrString, bool, Option<&str>)> = vec![
        (IntOrString::String("http".into()), true, None),
        (IntOrString::Int(15080), true, None),
        (
            IntOrString::Int(8080),
            false,
            Some("set its targetPort to \"http\" (the name the guard's port 15080 took over) or 15080"),
        ),
        (
            IntOrString::String("mcp-unguarded".into()),
            false,
            Some("targetPort to \"http\""),
        ),
    ];
    for (i, (target, reaches, bypass)) in cases.into_iter().enumerate() {
        let world = World {
            services: vec![service(
                "weather",
                &[("app", "unifi")],
                vec![sport(80, Some(target), None)],
            )],
            pods: vec![injected.clone()],
            ..Default::default()
        };
        let d = world.derive(&guard_port_spec);
        assert_eq!(
            !d.services.is_empty(),
            reaches,
            "case {i}: {:?}",
            d.messages(FindingKind::Bypass)
        );
        match bypass {
            None => assert!(
                d.messages(FindingKind::Bypass).is_empty(),
                "case {i}: {:?}",
                d.messages(FindingKind::Bypass)
            ),
            Some(text) => assert!(
                d.messages(FindingKind::Bypass).iter().any(|b| b.contains(text)),
                "case {i}: {:?}",
                d.messages(FindingKind::Bypass)
            ),
        }
        // spec.port is still the app's own port: no "check spec.port" problem.
        assert!(
            d.messages(FindingKind::Problem)
                .iter()
                .all(|p| !p.contains("spec.port")),
            "case {i}: {:?}",
            d.messages(FindingKind::Problem)
        );
    }
    // Before any pod exists the message still says what to write.
    let world = World {
        services: vec![service(
            "weather",
            &[("app", "unifi")],
            vec![sport(8080, None, None)],
        )],
        ..Default::default()
    };
    let d = world.derive(&guard_port_spec);
    assert!(
        d.messages(FindingKind::Bypass)
            .iter()
            .any(|b| b.contains("15080 (the guard's port)")),
        "{:?}",
        d.messages(FindingKind::Bypass)
    );
}

#[test]
fn a_service_maps_to_the_servers_it_selects_now_and_before() {
    let mut listed = server("ns", "listed", &[("app", "z")]);
    listed.spec.services = Some(vec!["web".into()]);
    let world = Cache {
        servers: vec![
            server("ns", "a", &[("app", "a")]),
            server("ns", "a-mcp", &[("app", "a"), ("tier", "mcp")]),
            listed,
            server("other", "a", &[("app", "a")]),
        ],
        ..Default::default()
    };
    let stores = world.stores();
    let mut index = DependencyIndex::default();
    index.record(
        &ObjectRef::new("listed").within("ns"),
        &[Dependency::new(DepKind::Service, Some("ns"), "web")].into(),
    );
    // (Service name, its selector, servers to reconcile). "listed" names "web" in spec.services: its
    // derivation depends on it whatever it selects.
    let table: &[(&str, Pairs, Want)] = &[
        ("svc", &[("app", "a")], &["ns/a", "ns/a-mcp"]),
        ("svc", &[("app", "a"), ("tier", "mcp")], &["ns/a", "ns/a-mcp"]),
        ("svc", &[("tier", "mcp")], &["ns/a-mcp"]),
        ("svc", &[("app", "b")], &[]),
        ("svc", &[], &[]),
        ("web", &[("app", "b")], &["ns/listed"]),
        ("web", &[("app", "a")], &["ns/a", "ns/a-mcp", "ns/listed"]),
    ];
    for (name, selector, want) in table {
        let svc = selecting_service("ns", name, selector);
        assert_eq!(
            names(map(&stores, &index, &svc)),
            *want,
            "Service {name} {selector:?}"
        );
    }
}

#[test]
fn a_routing_object_maps_to_the_servers_of_its_backends_its_listers_and_its_past() {
    let mut lists_it = server("ns", "lists", &[("app", "l")]);
    lists_it.spec.ingresses = Some(vec!["web".into()]);
    let world = Cache {
        servers: vec![
            server("ns", "a", &[("app", "a")]),
            server("ns", "b", &[("app", "b")]),
            lists_it,
            server("other", "c", &[("app", "c")]),
        ],
        services: vec![
            selecting_service("ns", "svc-a", &[("app", "a")]),
            selecting_service("ns", "svc-b", &[("app", "b")]),
            selecting_service("other", "svc-c", &[("app", "c")]),
        ],
        ..Default::default()
    };
    let stores = world.stores();
    let mut index = DependencyIndex::default();
    index.record(
        &ObjectRef::new("b").within("ns"),
        &[Dependency::new(DepKind::Ingress, Some("ns"), "was-b")].into(),
    );
    fn listed(s: &MCPServerSpec) -> Option<&Vec<String>> {
        s.ingresses.as_ref()
    }
    let backend = |ns: &str, n: &str| (ns.to_string(), n.to_string());
    // (object name, its backends, servers to reconcile)
    type Backends = Vec<(String, String)>;
    let table: Vec<(&str, Backends, Want)> = vec![
        ("x", vec![backend("ns", "svc-a")], &["ns/a"]),
        (
            "x",
            vec![backend("ns", "svc-a"), backend("ns", "svc-b")],
            &["ns/a", "ns/b"],
        ),
        ("x", vec![backend("ns", "missing")], &[]),
        ("x", vec![backend("other", "svc-c")], &["other/c"]),
        ("x", vec![backend("ns", "svc-c")], &[]),
        ("web", vec![], &["ns/lists"]),
        ("was-b", vec![backend("ns", "svc-a")], &["ns/a", "ns/b"]),
    ];
    for (name, backends, want) in table {
        let dep = Dependency::new(DepKind::Ingress, Some("ns"), name);
        assert_eq!(
            names(map_routing(&stores, &index, dep, &backends, listed)),
            want,
            "{name} {backends:?}"
        );
    }
}
