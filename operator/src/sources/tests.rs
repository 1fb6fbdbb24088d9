//! Table tests of the whole derivation: explicit lists, the guard config, the dependencies.

use super::*;
use crate::sources::testkit::*;

#[test]
fn explicit_references_filter_and_report_missing() {
    let mut s = spec(&[("app", "nomatch")]);
    s.services = Some(vec!["weather".into(), "gone".into()]);
    s.ingresses = Some(vec!["web".into(), "missing".into()]);
    s.http_routes = Some(vec![]);
    let world = World {
        services: vec![web_service()],
        ingresses: vec![
            ingress(
                "web",
                vec![rule(Some("mcp.example.com"), vec![backend("weather", num(80))])],
                &[],
            ),
            ingress(
                "other",
                vec![rule(Some("other.example.com"), vec![backend("weather", num(80))])],
                &[],
            ),
        ],
        routes: vec![route(
            "mcp",
            &["r.example.com"],
            vec![],
            vec![svc_ref("weather", Some(80))],
        )],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&s);
    assert_eq!(values(&d.hosts), vec!["mcp.example.com"]);
    assert_eq!(
        d.messages(FindingKind::Problem).len(),
        2,
        "{:?}",
        d.messages(FindingKind::Problem)
    );
    assert!(
        d.messages(FindingKind::Problem)
            .iter()
            .any(|p| p.contains("Service team-a/gone"))
    );
    assert!(
        d.messages(FindingKind::Problem)
            .iter()
            .any(|p| p.contains("Ingress team-a/missing"))
    );
}

#[test]
fn guard_config_is_what_the_guard_reads() {
    let mut s = spec(&[("app", "weather")]);
    s.hosts = vec!["mcp.example.com".into()];
    let world = World {
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&s);
    let cfg = d.guard_config(NS, "weather");
    let json = serde_json::to_string(&cfg).expect("json");
    let back: GuardConfig = serde_json::from_str(&json).expect("roundtrip");
    assert_eq!(back, cfg);
    assert_eq!(cfg.allowed_hosts, vec!["mcp.example.com"]);
    assert_eq!(cfg.source.as_ref().map(|s| s.name.as_str()), Some("weather"));
    assert!(json.contains(r#""mode":"enforce""#), "{json}");
    mcp_guard_config::Allowlist::compile(&cfg).expect("the guard accepts the derived config");
}

#[test]
fn dependencies_cover_everything_consulted() {
    let world = World {
        services: vec![
            web_service(),
            service("frontend", &[("app", "frontend")], vec![sport(80, None, None)]),
        ],
        ingresses: vec![
            ingress(
                "web",
                vec![rule(Some("mcp.example.com"), vec![backend("weather", num(80))])],
                &[],
            ),
            ingress(
                "unrelated",
                vec![rule(Some("x.example.com"), vec![backend("frontend", num(80))])],
                &[],
            ),
        ],
        ..Default::default()
    };
    let d = world.derive(&spec(&[("app", "weather")]));
    let deps: Vec<_> = d.dependencies.iter().map(|d| (d.kind, d.name.as_str())).collect();
    assert_eq!(
        deps,
        vec![
            (DepKind::Service, "weather"),
            (DepKind::Ingress, "web"),
            (DepKind::MCPGuardPolicy, "default")
        ]
    );
}

#[test]
fn an_ingress_class_maps_to_every_server_and_a_namespace_to_its_own() {
    let cache = Cache {
        servers: vec![
            server("a", "one", &[("app", "1")]),
            server("a", "two", &[("app", "2")]),
            server("b", "three", &[("app", "3")]),
        ],
        ..Default::default()
    };
    let stores = cache.stores();
    assert_eq!(names(all_servers(&stores)), ["a/one", "a/two", "b/three"]);
    // (namespace, servers to reconcile)
    let table: &[(&str, Want)] = &[("a", &["a/one", "a/two"]), ("b", &["b/three"]), ("c", &[])];
    for (ns, want) in table {
        assert_eq!(names(servers_of_namespace(&stores, ns)), *want, "namespace {ns}");
    }
}

mod narrowing {
    //! The reconcile hands [`derive`] only the objects [`Relevant`] picks; generated namespaces (Services,
    //! Ingresses and pods over a small alphabet of labels and names, so that they often concern the server and
    //! often almost do) must derive the same as when every object is handed over.

    use std::collections::HashSet;

    use proptest::prelude::*;

    use crate::sources::Relevant;
    use crate::sources::testkit::*;

    const KEYS: &[&str] = &["app", "tier"];
    const VALUES: &[&str] = &["a", "b"];
    /// Services are named from here; Ingress backends and spec lists also name `gone`, which never exists.
    const SERVICES: &[&str] = &["s0", "s1", "s2"];
    const INGRESSES: &[&str] = &["i0", "i1", "i2"];

    fn arb_labels() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
        prop::collection::btree_map(prop::sample::select(KEYS), prop::sample::select(VALUES), 0..3)
            .prop_map(|m| m.into_iter().collect())
    }

    fn arb_name(names: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => prop::sample::select(names), 1 => Just("gone")]
    }

    fn arb_target() -> impl Strategy<Value = Option<IntOrString>> {
        prop_oneof![
            Just(None),
            Just(Some(IntOrString::Int(8000))),
            Just(Some(IntOrString::Int(9000))),
            Just(Some(IntOrString::String("http".into()))),
        ]
    }

    fn arb_service(name: &'static str) -> impl Strategy<Value = Service> {
        (arb_labels(), arb_target()).prop_map(move |(selector, target)| {
            service(name, &selector, vec![sport(80, target, Some("http"))])
        })
    }

    fn arb_backend() -> impl Strategy<Value = IngressBackend> {
        (
            arb_name(SERVICES),
            prop_oneof![Just(num(80)), Just(num(81)), Just(named("http"))],
        )
            .prop_map(|(svc, port)| backend(svc, port))
    }

    fn arb_ingress(name: &'static str) -> impl Strategy<Value = Ingress> {
        (
            prop::collection::vec(
                (
                    prop::option::of(prop::sample::select(vec!["h0.example.com", "h1.example.com"])),
                    arb_backend(),
                ),
                0..3,
            ),
            prop::option::of(arb_backend()),
            prop::option::of(prop::sample::select(vec!["nginx", "other"])),
        )
            .prop_map(move |(rules, default, class)| {
                let rules = rules.into_iter().map(|(host, b)| rule(host, vec![b])).collect();
                let mut ing = ingress(name, rules, &["h1.example.com"]);
                let spec = ing.spec.as_mut().expect("spec");
                spec.default_backend = default;
                spec.ingress_class_name = class.map(str::to_string);
                ing
            })
    }

    fn arb_pod(name: &'static str) -> impl Strategy<Value = Pod> {
        (
            arb_labels(),
            any::<bool>(),
            prop::sample::select(vec![8000, 9000]),
        )
            .prop_map(move |(labels_, finished, port)| {
                let mut p = pod(name, &labels_, None, &[("http", port)]);
                if finished {
                    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                        phase: Some("Succeeded".into()),
                        ..Default::default()
                    });
                }
                p
            })
    }

    /// Some of the names, in a generated order.
    fn arb_list(names: &'static [&'static str]) -> impl Strategy<Value = Option<Vec<String>>> {
        prop::option::of(prop::collection::vec(arb_name(names), 0..3))
            .prop_map(|l| l.map(|l| l.into_iter().map(str::to_string).collect()))
    }

    fn arb_spec() -> impl Strategy<Value = MCPServerSpec> {
        (arb_labels(), arb_list(SERVICES), arb_list(INGRESSES)).prop_map(|(selector, services, ingresses)| {
            let mut s = spec(&selector);
            s.services = services;
            s.ingresses = ingresses;
            s
        })
    }

    /// Each named object present or not.
    fn arb_some<T: std::fmt::Debug>(
        names: &'static [&'static str],
        each: fn(&'static str) -> BoxedStrategy<T>,
    ) -> impl Strategy<Value = Vec<T>> {
        let all: Vec<_> = names.iter().map(|n| prop::option::of(each(n))).collect();
        all.prop_map(|v| v.into_iter().flatten().collect())
    }

    /// Another MCPServer's selector: labels, sometimes with an expression.
    fn arb_other(name: &'static str) -> impl Strategy<Value = (String, LabelSelector)> {
        (
            arb_labels(),
            prop::option::of((prop::sample::select(KEYS), prop::sample::select(VALUES))),
        )
            .prop_map(move |(labels_, expr)| {
                let mut selector = spec(&labels_).selector;
                selector.match_expressions = expr.map(|(key, value)| {
                    vec![LabelSelectorRequirement {
                        key: key.into(),
                        operator: "In".into(),
                        values: Some(vec![value.into()]),
                    }]
                });
                (name.to_string(), selector)
            })
    }

    fn arb_world() -> impl Strategy<Value = World> {
        (
            arb_some(SERVICES, |n| arb_service(n).boxed()),
            arb_some(INGRESSES, |n| arb_ingress(n).boxed()),
            arb_some(&["p0", "p1", "p2"], |n| arb_pod(n).boxed()),
            any::<bool>(),
            arb_some(&["o0", "o1"], |n| arb_other(n).boxed()),
        )
            .prop_map(|(services, ingresses, pods, nginx, others)| World {
                services,
                ingresses,
                pods,
                others,
                ingress_classes: if nginx {
                    vec![ingress_class("nginx", true, 1)]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
    }

    /// The world as the reconcile hands it to [`derive`].
    fn narrowed(world: &World, spec: &MCPServerSpec) -> World {
        let relevant = Relevant::to(spec);
        let services: Vec<Service> = world
            .services
            .iter()
            .filter(|s| relevant.service(s))
            .cloned()
            .collect();
        let names: HashSet<String> = services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        World {
            ingresses: world
                .ingresses
                .iter()
                .filter(|i| relevant.ingress(i, &names))
                .cloned()
                .collect(),
            pods: world.pods.iter().filter(|p| relevant.pod(p)).cloned().collect(),
            others: world
                .others
                .iter()
                .filter(|(_, selector)| relevant.other_selector(selector))
                .cloned()
                .collect(),
            services,
            ingress_classes: world.ingress_classes.clone(),
            ..Default::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn narrowing_derives_the_same(world in arb_world(), spec in arb_spec()) {
            let whole = world.derive(&spec);
            let narrow = narrowed(&world, &spec).derive(&spec);
            prop_assert_eq!(&narrow, &whole, "spec {:?}", spec);
        }
    }

    /// The generator reaches the cases that matter: some worlds hand over objects that concern the server and
    /// some that do not, so the property is not vacuous.
    #[test]
    fn narrowing_drops_and_keeps() {
        let s = spec(&[("app", "a")]);
        let world = World {
            services: vec![
                service("s0", &[("app", "a")], vec![sport(80, None, Some("http"))]),
                service("s1", &[("app", "b")], vec![sport(80, None, Some("http"))]),
            ],
            ingresses: vec![
                ingress(
                    "i0",
                    vec![rule(Some("h0.example.com"), vec![backend("s0", num(80))])],
                    &[],
                ),
                ingress(
                    "i1",
                    vec![rule(Some("h1.example.com"), vec![backend("s1", num(80))])],
                    &[],
                ),
            ],
            pods: vec![
                pod("p0", &[("app", "a")], None, &[]),
                pod("p1", &[("app", "b")], None, &[]),
            ],
            others: vec![
                ("o0".into(), spec(&[("tier", "a")]).selector),
                ("o1".into(), spec(&[("app", "b")]).selector),
            ],
            ..Default::default()
        };
        let n = narrowed(&world, &s);
        let name = |m: &ObjectMeta| m.name.clone().unwrap_or_default();
        assert_eq!(
            n.services.iter().map(|o| name(&o.metadata)).collect::<Vec<_>>(),
            ["s0"]
        );
        assert_eq!(
            n.ingresses.iter().map(|o| name(&o.metadata)).collect::<Vec<_>>(),
            ["i0"]
        );
        assert_eq!(
            n.pods.iter().map(|o| name(&o.metadata)).collect::<Vec<_>>(),
            ["p0"]
        );
        assert_eq!(
            n.others.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(),
            ["o0"]
        );
        assert_eq!(n.derive(&s), world.derive(&s));
    }
}
