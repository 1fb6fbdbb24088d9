use super::*;
use crate::sources::testkit::*;

#[test]
fn intersect_hostnames_table() {
    let cases = [
        ("mcp.example.com", "mcp.example.com", Some("mcp.example.com")),
        ("mcp.example.com", "MCP.example.com", Some("MCP.example.com")),
        ("mcp.example.com", "other.example.com", None),
        ("*.example.com", "mcp.example.com", Some("mcp.example.com")),
        ("*.example.com", "a.b.example.com", Some("a.b.example.com")),
        ("*.example.com", "example.com", None),
        ("mcp.example.com", "*.example.com", Some("mcp.example.com")),
        ("*.example.com", "*.example.com", Some("*.example.com")),
        ("*.example.com", "*.apps.example.com", Some("*.apps.example.com")),
        ("*.apps.example.com", "*.example.com", Some("*.apps.example.com")),
        ("*.example.com", "*.example.org", None),
        ("*.example.com", "notexample.com", None),
    ];
    for (listener, route, want) in cases {
        assert_eq!(
            intersect_hostnames(listener, route).as_deref(),
            want,
            "{listener} ∩ {route}"
        );
    }
}

/// One HTTPRoute shape and what it gives: (route hostnames, parents, gateways, expected hosts, expected origins,
/// catch-all?, problems?).
type RouteRow = (
    Vec<&'static str>,
    Vec<ParentReference>,
    Vec<Gateway>,
    Vec<&'static str>,
    Vec<&'static str>,
    bool,
    bool,
);

fn route_rows() -> Vec<RouteRow> {
    vec![
        // No known Gateway: route hostnames alone, Gateway wildcard semantics, both schemes.
        (
            vec!["mcp.example.com", "*.gw.example.com"],
            vec![parent("gw", None, None)],
            vec![],
            vec!["**.gw.example.com", "mcp.example.com"],
            vec![
                "http://**.gw.example.com",
                "http://mcp.example.com",
                "https://**.gw.example.com",
                "https://mcp.example.com",
            ],
            false,
            false,
        ),
        // Listener narrows a wildcard route.
        (
            vec!["*.example.com"],
            vec![parent("gw", Some("infra"), None)],
            vec![gateway(
                "infra",
                "gw",
                &[("https", Some("mcp.example.com"), "HTTPS")],
            )],
            vec!["mcp.example.com"],
            vec!["https://mcp.example.com"],
            false,
            false,
        ),
        // Route without hostnames takes the listener's.
        (
            vec![],
            vec![parent("gw", Some("infra"), None)],
            vec![gateway(
                "infra",
                "gw",
                &[("https", Some("*.gw.example.com"), "HTTPS")],
            )],
            vec!["**.gw.example.com"],
            vec!["https://**.gw.example.com"],
            false,
            false,
        ),
        // Listener without hostname: route hostnames; plain HTTP listener.
        (
            vec!["mcp.example.com"],
            vec![parent("gw", Some("infra"), None)],
            vec![gateway("infra", "gw", &[("http", None, "HTTP")])],
            vec!["mcp.example.com"],
            vec!["http://mcp.example.com"],
            false,
            false,
        ),
        // sectionName selects one listener.
        (
            vec![],
            vec![parent("gw", Some("infra"), Some("b"))],
            vec![gateway(
                "infra",
                "gw",
                &[
                    ("a", Some("a.example.com"), "HTTPS"),
                    ("b", Some("b.example.com"), "HTTPS"),
                ],
            )],
            vec!["b.example.com"],
            vec!["https://b.example.com"],
            false,
            false,
        ),
        // Neither route nor listener has a hostname: catch-all, nothing added.
        (
            vec![],
            vec![parent("gw", Some("infra"), None)],
            vec![gateway("infra", "gw", &[("http", None, "HTTP")])],
            vec![],
            vec![],
            true,
            false,
        ),
        // No hostnames and no known parent: catch-all.
        (
            vec![],
            vec![parent("gw", None, None)],
            vec![],
            vec![],
            vec![],
            true,
            false,
        ),
        // Route hostnames outside the listener's: problem, nothing added.
        (
            vec!["mcp.example.org"],
            vec![parent("gw", Some("infra"), None)],
            vec![gateway(
                "infra",
                "gw",
                &[("https", Some("*.example.com"), "HTTPS")],
            )],
            vec![],
            vec![],
            false,
            true,
        ),
    ]
}

#[test]
fn http_route_table() {
    let cases = route_rows();
    for (i, (hostnames, parents, gateways, want_hosts, want_origins, catch_all, problems)) in
        cases.into_iter().enumerate()
    {
        let world = World {
            services: vec![web_service()],
            routes: vec![route(
                "mcp",
                &hostnames,
                parents,
                vec![svc_ref("weather", Some(80))],
            )],
            gateways,
            policy: no_dns(),
            ..Default::default()
        };
        let d = world.derive(&spec(&[("app", "weather")]));
        assert_eq!(values(&d.hosts), want_hosts, "case {i}");
        assert_eq!(values(&d.origins), want_origins, "case {i}");
        assert_finds(&d, FindingKind::CatchAll, catch_all, i);
        assert_finds(&d, FindingKind::Problem, problems, i);
        assert!(
            d.dependencies
                .contains(&Dependency::new(DepKind::HTTPRoute, Some(NS), "mcp"))
        );
        assert!(
            d.dependencies.iter().any(|dep| dep.kind == DepKind::Gateway),
            "case {i}"
        );
    }
}

#[test]
fn http_route_backend_mismatch_and_unrelated() {
    let world = World {
        services: vec![
            web_service(),
            service("frontend", &[("app", "frontend")], vec![sport(80, None, None)]),
        ],
        routes: vec![
            route(
                "wrong-port",
                &["a.example.com"],
                vec![],
                vec![svc_ref("weather", Some(81))],
            ),
            route(
                "other",
                &["b.example.com"],
                vec![],
                vec![svc_ref("frontend", Some(80))],
            ),
            route(
                "kind",
                &["c.example.com"],
                vec![],
                vec![BackendRef {
                    kind: Some("ServiceImport".into()),
                    ..svc_ref("weather", Some(80))
                }],
            ),
        ],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert!(d.hosts.is_empty(), "{:?}", d.hosts);
    assert_eq!(
        d.messages(FindingKind::PortMismatch).len(),
        1,
        "{:?}",
        d.messages(FindingKind::PortMismatch)
    );
    assert!(d.messages(FindingKind::PortMismatch)[0].contains("HTTPRoute team-a/wrong-port"));
}

fn listener_with(from: Option<&str>, selector: Option<&[(&str, &str)]>, kinds: &[&str]) -> Listener {
    Listener {
        name: "http".into(),
        hostname: None,
        port: 80,
        protocol: "HTTP".into(),
        allowed_routes: Some(AllowedRoutes {
            namespaces: Some(RouteNamespaces {
                from: from.map(str::to_string),
                selector: selector.map(|l| LabelSelector {
                    match_labels: Some(labels(l)),
                    match_expressions: None,
                }),
            }),
            kinds: kinds
                .iter()
                .map(|k| RouteGroupKind {
                    group: None,
                    kind: k.to_string(),
                })
                .collect(),
        }),
    }
}

#[test]
fn listeners_admit_routes_as_allowed_routes_says() {
    let team = labels(&[("team", "a")]);
    let other = labels(&[("team", "b")]);
    let team_a: &[(&str, &str)] = &[("team", "a")];
    // (listener, gateway namespace, namespace labels, Ok or a part of the reason)
    let cases = [
        (listener_with(None, None, &[]), NS, Some(&team), Ok(())),
        (
            listener_with(None, None, &[]),
            "infra",
            Some(&team),
            Err("from: Same"),
        ),
        (
            listener_with(Some("Same"), None, &[]),
            "infra",
            None,
            Err("its own namespace infra"),
        ),
        (listener_with(Some("All"), None, &[]), "infra", None, Ok(())),
        (
            listener_with(Some("Selector"), Some(team_a), &[]),
            "infra",
            Some(&team),
            Ok(()),
        ),
        (
            listener_with(Some("Selector"), Some(team_a), &[]),
            "infra",
            Some(&other),
            Err("which team-a does not"),
        ),
        (
            listener_with(Some("Selector"), Some(team_a), &[]),
            "infra",
            None,
            Err("are unknown"),
        ),
        (
            listener_with(Some("All"), None, &["GRPCRoute"]),
            "infra",
            None,
            Err("allows only GRPCRoute"),
        ),
        (
            listener_with(Some("All"), None, &["GRPCRoute", "HTTPRoute"]),
            "infra",
            None,
            Ok(()),
        ),
    ];
    for (i, (listener, gw_ns, ns_labels, want)) in cases.into_iter().enumerate() {
        match (listener_admits(&listener, gw_ns, NS, ns_labels), want) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(part)) => assert!(got.contains(part), "case {i}: {got:?} lacks {part:?}"),
            (got, want) => panic!("case {i}: {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn routes_refused_by_their_gateway_rewritten_and_partly_outside_their_listeners() {
    let mut gw = gateway("infra", "gw", &[("http", Some("*.example.com"), "HTTP")]);
    gw.spec.listeners.push(listener_with(Some("Same"), None, &[]));
    gw.spec.listeners[1].name = "internal".into();
    let mut accepted = route(
        "mcp",
        &["mcp.example.com", "elsewhere.example.org"],
        vec![parent("gw", Some("infra"), None)],
        vec![svc_ref("weather", Some(80))],
    );
    accepted.spec.rules[0].filters = vec![HTTPRouteFilter {
        type_: "URLRewrite".into(),
        url_rewrite: Some(HTTPURLRewriteFilter {
            hostname: Some("weather.internal".into()),
        }),
    }];
    let mut refused = route(
        "refused",
        &["refused.example.com"],
        vec![parent("gw", Some("infra"), None)],
        vec![svc_ref("weather", Some(80))],
    );
    refused.status = Some(HTTPRouteStatus {
        parents: vec![RouteParentStatus {
            parent_ref: parent("gw", Some("infra"), None),
            controller_name: "example.com/gateway".into(),
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Accepted".into(),
                status: "False".into(),
                reason: "NotAllowedByListeners".into(),
                message: "no listener admits it".into(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            }],
        }],
    });
    let world = World {
        services: vec![web_service()],
        routes: vec![accepted, refused],
        gateways: vec![gw],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert_eq!(values(&d.hosts), vec!["mcp.example.com", "weather.internal"]);
    assert_eq!(
        sources_of(&d.hosts, "weather.internal"),
        vec!["HTTPRoute team-a/mcp (URLRewrite hostname)"]
    );
    assert_eq!(values(&d.origins), vec!["http://mcp.example.com"]);
    let problems = d.messages(FindingKind::Problem).join("\n");
    for part in [
        "HTTPRoute team-a/mcp: hostnames outside every listener it is attached to were dropped: elsewhere.example.org",
        "HTTPRoute team-a/mcp: listener internal of Gateway infra/gw allows routes from its own namespace infra only",
        "HTTPRoute team-a/refused is not accepted by Gateway infra/gw (Accepted=False, NotAllowedByListeners: no \
         listener admits it)",
    ] {
        assert!(problems.contains(part), "{part:?} not in {problems}");
    }
}

#[test]
fn routes_from_other_namespaces_need_a_reference_grant() {
    use crate::gateway::{ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo};
    let mut elsewhere = route(
        "edge-route",
        &["edge.example.com"],
        vec![],
        vec![BackendRef {
            namespace: Some(NS.into()),
            ..svc_ref("weather", Some(80))
        }],
    );
    elsewhere.metadata.namespace = Some("edge".into());
    let world = World {
        services: vec![web_service()],
        routes: vec![elsewhere],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert!(d.hosts.is_empty(), "{:?}", d.hosts);
    assert!(
        d.messages(FindingKind::Problem).iter().any(|p| p.contains(
            "HTTPRoute edge/edge-route refers to Service team-a/weather from another namespace, and no ReferenceGrant"
        )),
        "{:?}",
        d.messages(FindingKind::Problem)
    );
    let grant = ReferenceGrant {
        metadata: meta("edge-routes"),
        spec: ReferenceGrantSpec {
            from: vec![ReferenceGrantFrom {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                namespace: "edge".into(),
            }],
            to: vec![ReferenceGrantTo {
                group: String::new(),
                kind: "Service".into(),
                name: Some("weather".into()),
            }],
        },
    };
    let world = World {
        grants: vec![grant],
        ..world
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    assert_eq!(values(&d.hosts), vec!["edge.example.com"]);
    assert_eq!(
        sources_of(&d.hosts, "edge.example.com"),
        vec!["HTTPRoute edge/edge-route"]
    );
}

fn route_to(ns: &str, name: &str, backends: &[(Option<&str>, &str)]) -> HTTPRoute {
    let mut r = HTTPRoute::new(
        name,
        HTTPRouteSpec {
            rules: vec![HTTPRouteRule {
                backend_refs: backends
                    .iter()
                    .map(|(ns, svc)| BackendRef {
                        name: svc.to_string(),
                        namespace: ns.map(str::to_string),
                        port: Some(80),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    r.metadata.namespace = Some(ns.into());
    r
}

#[test]
fn a_route_maps_to_the_servers_of_its_backends_in_any_namespace() {
    let mut lists_it = server("ns", "lists", &[("app", "l")]);
    lists_it.spec.http_routes = Some(vec!["web".into()]);
    let world = Cache {
        servers: vec![
            server("ns", "a", &[("app", "a")]),
            lists_it,
            server("team", "t", &[("app", "t")]),
        ],
        services: vec![
            selecting_service("ns", "svc-a", &[("app", "a")]),
            selecting_service("team", "svc-t", &[("app", "t")]),
        ],
        ..Default::default()
    };
    let stores = world.stores();
    let index = DependencyIndex::default();
    // (route namespace, name, backends, servers to reconcile)
    type Backends = &'static [(Option<&'static str>, &'static str)];
    let table: &[(&str, &str, Backends, Want)] = &[
        ("ns", "x", &[(None, "svc-a")], &["ns/a"]),
        ("ns", "x", &[(Some("team"), "svc-t")], &["team/t"]),
        ("gw", "x", &[(Some("ns"), "svc-a")], &["ns/a"]),
        ("gw", "x", &[(None, "svc-a")], &[]),
        ("ns", "web", &[], &["ns/lists"]),
        ("gw", "web", &[], &[]),
    ];
    for (ns, name, backends, want) in table {
        assert_eq!(
            names(map(&stores, &index, &route_to(ns, name, backends))),
            *want,
            "{ns}/{name} {backends:?}"
        );
    }
}

#[test]
fn gateways_grants_and_namespaces_map_to_their_servers() {
    let world = Cache {
        servers: vec![
            server("ns", "a", &[("app", "a")]),
            server("ns", "b", &[("app", "b")]),
        ],
        ..Default::default()
    };
    let stores = world.stores();
    let mut index = DependencyIndex::default();
    index.record(
        &ObjectRef::new("a").within("ns"),
        &[Dependency::new(DepKind::Gateway, Some("infra"), "gw")].into(),
    );
    let gateway = |ns: &str, name: &str| {
        let mut g = Gateway::new(name, GatewaySpec::default());
        g.metadata.namespace = Some(ns.into());
        g
    };
    assert_eq!(names(map_gateway(&index, &gateway("infra", "gw"))), ["ns/a"]);
    assert!(map_gateway(&index, &gateway("infra", "other")).is_empty());
    assert!(map_gateway(&index, &gateway("ns", "gw")).is_empty());
    let grant = |ns: &str| {
        let mut g = ReferenceGrant::new("g", ReferenceGrantSpec::default());
        g.metadata.namespace = Some(ns.into());
        g
    };
    assert_eq!(names(map_grant(&stores, &grant("ns"))), ["ns/a", "ns/b"]);
    assert!(map_grant(&stores, &grant("other")).is_empty());
    let namespace = |name: &str| Namespace {
        metadata: meta_in("", name),
        ..Default::default()
    };
    assert_eq!(names(map_namespace(&stores, &namespace("ns"))), ["ns/a", "ns/b"]);
    assert!(map_namespace(&stores, &namespace("other")).is_empty());
}
