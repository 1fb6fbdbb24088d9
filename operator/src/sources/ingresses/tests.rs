use super::*;
use crate::sources::testkit::*;

/// One Ingress shape and what it gives: (rules, tls hosts, expected hosts, expected origins, catch-all?,
/// mismatch?).
type IngressRow = (
    Vec<IngressRule>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
    bool,
    bool,
);

fn ingress_rows() -> Vec<IngressRow> {
    vec![
        (
            vec![rule(Some("mcp.example.com"), vec![backend("weather", num(80))])],
            vec![],
            vec!["mcp.example.com"],
            vec!["http://mcp.example.com"],
            false,
            false,
        ),
        (
            vec![rule(Some("mcp.example.com"), vec![backend("weather", num(80))])],
            vec!["mcp.example.com"],
            vec!["mcp.example.com"],
            vec!["https://mcp.example.com"],
            false,
            false,
        ),
        (
            vec![rule(
                Some("a.apps.example.com"),
                vec![backend("weather", named("http"))],
            )],
            vec!["*.apps.example.com"],
            vec!["a.apps.example.com"],
            vec!["https://a.apps.example.com"],
            false,
            false,
        ),
        (
            vec![rule(
                Some("*.apps.example.com"),
                vec![backend("weather", num(80))],
            )],
            vec!["*.apps.example.com"],
            vec!["*.apps.example.com"],
            vec!["https://*.apps.example.com"],
            false,
            false,
        ),
        (
            vec![rule(None, vec![backend("weather", num(80))])],
            vec![],
            vec![],
            vec![],
            true,
            false,
        ),
        (
            vec![rule(Some("mcp.example.com"), vec![backend("weather", num(9090))])],
            vec![],
            vec![],
            vec![],
            false,
            true,
        ),
        (
            vec![rule(
                Some("mcp.example.com"),
                vec![backend("weather", named("metrics"))],
            )],
            vec![],
            vec![],
            vec![],
            false,
            true,
        ),
        (
            vec![rule(
                Some("other.example.com"),
                vec![backend("frontend", num(80))],
            )],
            vec![],
            vec![],
            vec![],
            false,
            false,
        ),
        (
            vec![
                rule(Some("MCP.Example.com"), vec![backend("weather", num(80))]),
                rule(
                    Some("alt.example.com"),
                    vec![backend("frontend", num(80)), backend("weather", num(80))],
                ),
                rule(Some("tls-only.example.com"), vec![backend("frontend", num(80))]),
            ],
            vec!["alt.example.com", "tls-only.example.com"],
            vec!["alt.example.com", "mcp.example.com"],
            vec!["http://mcp.example.com", "https://alt.example.com"],
            false,
            false,
        ),
    ]
}

#[test]
fn ingress_hosts_and_origins_table() {
    let cases = ingress_rows();
    for (i, (rules, tls, want_hosts, want_origins, catch_all, mismatch)) in cases.into_iter().enumerate() {
        let world = World {
            services: vec![
                service(
                    "weather",
                    &[("app", "weather")],
                    vec![
                        sport(80, Some(IntOrString::Int(8000)), Some("http")),
                        sport(9090, Some(IntOrString::Int(9090)), Some("metrics")),
                    ],
                ),
                service("frontend", &[("app", "frontend")], vec![sport(80, None, None)]),
            ],
            ingresses: vec![ingress("web", rules, &tls)],
            policy: no_dns(),
            ..Default::default()
        };
        let d = world.derive(&spec(&[("app", "weather")]));
        assert_eq!(values(&d.hosts), want_hosts, "case {i}");
        assert_eq!(values(&d.origins), want_origins, "case {i}");
        assert_finds(&d, FindingKind::CatchAll, catch_all, i);
        assert_finds(&d, FindingKind::PortMismatch, mismatch, i);
        assert!(!values(&d.hosts).contains(&"*"), "never a bare wildcard");
        for h in &d.hosts {
            assert_eq!(h.sources, vec!["Ingress team-a/web"], "case {i}");
        }
    }
}

#[test]
fn ingress_default_backend_is_catch_all() {
    let mut ing = ingress("web", vec![], &[]);
    ing.spec.as_mut().expect("spec").default_backend = Some(backend("weather", num(80)));
    let world = World {
        services: vec![web_service()],
        ingresses: vec![ing],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert!(d.hosts.is_empty());
    assert_eq!(d.messages(FindingKind::CatchAll).len(), 1);
    assert!(
        d.messages(FindingKind::CatchAll)[0].contains("defaultBackend"),
        "{:?}",
        d.messages(FindingKind::CatchAll)
    );
}

#[test]
fn ingress_class_is_the_field_then_the_annotation_then_the_default() {
    let nginx = ingress_class("nginx", false, 1);
    let old_default = ingress_class("old", true, 1);
    let new_default = ingress_class("new", true, 2);
    let classes = [&nginx, &old_default, &new_default];
    // (field, annotation, classes, class)
    let cases = [
        (
            Some("a"),
            Some("b"),
            &classes[..],
            IngressClassOf::Field("a".into()),
        ),
        (
            None,
            Some("b"),
            &classes[..],
            IngressClassOf::Annotation("b".into()),
        ),
        (None, None, &classes[..], IngressClassOf::Default("new".into())),
        (None, None, &classes[..1], IngressClassOf::None),
    ];
    for (field, annotation, classes, want) in cases {
        let ing = classed_ingress("web", "a.example.com", field, annotation);
        assert_eq!(ingress_class_of(&ing, classes), want, "{field:?} {annotation:?}");
    }
}

#[test]
fn which_ingresses_count() {
    let nginx = ingress_class("nginx", false, 1);
    let default = ingress_class("internal", true, 1);
    let only_nginx = ["nginx".to_string()];
    // (field, annotation, classes, policy's ingressClasses, Ok or a part of the reason)
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Vec<&'a IngressClass>,
        Option<&'a [String]>,
        Result<(), &'a str>,
    );
    let cases: [Case<'_>; 9] = [
        (Some("nginx"), None, vec![&nginx], None, Ok(())),
        (None, Some("nginx"), vec![&nginx], None, Ok(())),
        (
            Some("gone"),
            None,
            vec![&nginx],
            None,
            Err("class \"gone\" (spec.ingressClassName) is served by no IngressClass"),
        ),
        (
            None,
            Some("gone"),
            vec![&nginx],
            None,
            Err("annotation kubernetes.io/ingress.class"),
        ),
        (None, None, vec![&nginx], None, Ok(())),
        (
            None,
            None,
            vec![&nginx],
            Some(&only_nginx),
            Err("it has no class"),
        ),
        (
            None,
            None,
            vec![&nginx, &default],
            Some(&only_nginx),
            Err("class \"internal\" (the default IngressClass) is not one the policy counts"),
        ),
        (Some("nginx"), None, vec![], Some(&only_nginx), Ok(())),
        (
            Some("traefik"),
            None,
            vec![&nginx],
            Some(&only_nginx),
            Err("another controller serves it"),
        ),
    ];
    for (i, (field, annotation, classes, only, want)) in cases.into_iter().enumerate() {
        let ing = classed_ingress("web", "a.example.com", field, annotation);
        match (ingress_counts(&ing, &classes, only), want) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(part)) => assert!(got.contains(part), "case {i}: {got:?} lacks {part:?}"),
            (got, want) => panic!("case {i}: {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn ingresses_not_counted_are_reported_and_upstream_vhost_is_allowed() {
    let mut vhost = classed_ingress("vhost", "public.example.com", Some("nginx"), None);
    vhost.metadata.annotations = Some(BTreeMap::from([(
        UPSTREAM_VHOST_ANNOTATION.to_string(),
        "weather.internal".to_string(),
    )]));
    let world = World {
        services: vec![web_service()],
        ingresses: vec![
            classed_ingress("served", "mcp.example.com", Some("nginx"), None),
            classed_ingress("orphan", "orphan.example.com", Some("gone"), None),
            vhost,
        ],
        ingress_classes: vec![ingress_class("nginx", false, 1)],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert_eq!(
        values(&d.hosts),
        vec!["mcp.example.com", "public.example.com", "weather.internal"]
    );
    assert_eq!(
        sources_of(&d.hosts, "weather.internal"),
        vec!["Ingress team-a/vhost (nginx.ingress.kubernetes.io/upstream-vhost)"]
    );
    assert_eq!(
        d.messages(FindingKind::IngressNotCounted).len(),
        1,
        "{:?}",
        d.messages(FindingKind::IngressNotCounted)
    );
    assert!(
        d.messages(FindingKind::IngressNotCounted)[0]
            .starts_with("Ingress team-a/orphan is not counted: its class \"gone\""),
        "{:?}",
        d.messages(FindingKind::IngressNotCounted)
    );
    // Typed: which Ingress, and why, without reading the message.
    let orphan = Dependency::new(DepKind::Ingress, Some(NS), "orphan");
    assert!(
        matches!(
            d.of_kind(FindingKind::IngressNotCounted).next(),
            Some(Finding::IngressNotCounted { ingress, why }) if *ingress == orphan && why.contains("\"gone\"")
        ),
        "{:?}",
        d.findings
    );
    assert!(
        d.dependencies
            .contains(&Dependency::new(DepKind::Ingress, Some(NS), "orphan")),
        "a class fix on the Ingress reaches the server"
    );

    // The policy counts only another class: nothing from Ingresses, each one reported.
    let world = World {
        policy: Some(MCPGuardPolicySpec {
            allow_service_dns_names: false,
            ingress_classes: Some(vec!["external".into()]),
            ..Default::default()
        }),
        ..world
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert!(d.hosts.is_empty(), "{:?}", d.hosts);
    assert_eq!(
        d.messages(FindingKind::IngressNotCounted).len(),
        3,
        "{:?}",
        d.messages(FindingKind::IngressNotCounted)
    );
}

fn ingress_to(name: &str, default_backend: Option<&str>) -> Ingress {
    Ingress {
        metadata: meta_in("ns", name),
        spec: Some(IngressSpec {
            default_backend: default_backend.map(|svc| IngressBackend {
                service: Some(IngressServiceBackend {
                    name: svc.into(),
                    port: Some(ServiceBackendPort {
                        number: Some(80),
                        name: None,
                    }),
                }),
                resource: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn an_ingress_maps_to_the_servers_of_its_backends_and_those_listing_it() {
    let mut lists_it = server("ns", "lists", &[("app", "l")]);
    lists_it.spec.ingresses = Some(vec!["web".into()]);
    let world = Cache {
        servers: vec![server("ns", "a", &[("app", "a")]), lists_it],
        services: vec![selecting_service("ns", "svc-a", &[("app", "a")])],
        ..Default::default()
    };
    let stores = world.stores();
    let index = DependencyIndex::default();
    // (Ingress, its default backend, servers to reconcile)
    let table: &[(&str, Option<&str>, &[&str])] = &[
        ("x", Some("svc-a"), &["ns/a"]),
        ("x", Some("other"), &[]),
        ("x", None, &[]),
        ("web", None, &["ns/lists"]),
        ("web", Some("svc-a"), &["ns/a", "ns/lists"]),
    ];
    for (name, backend, want) in table {
        assert_eq!(
            names(map(&stores, &index, &ingress_to(name, *backend))),
            *want,
            "{name} {backend:?}"
        );
    }
}
