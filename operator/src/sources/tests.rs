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

    /// The indexes only narrow: every lookup, with its exact test applied, returns what a scan of the namespace
    /// returns, over generated objects in two namespaces and selectors of every shape (expressions, empty or
    /// absent `matchLabels`, `serverRef`).
    mod lookups {
        use std::sync::Arc;

        use kube::ResourceExt;

        use super::*;
        use crate::crd::ServerRef;
        use crate::selector::{common_pod, labels_conflict, matches};
        use crate::sources::services::service_is_candidate;
        use crate::sources::sig_servers::resolved;
        use crate::sources::{DependencyIndex, Stores, ingresses, pods, servers, services};

        const OTHER_NS: &str = "team-b";

        fn arb_selector() -> impl Strategy<Value = LabelSelector> {
            let expr = (
                prop::sample::select(KEYS),
                prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
                prop::collection::vec(prop::sample::select(VALUES), 0..3),
            );
            (prop::option::of(arb_labels()), prop::collection::vec(expr, 0..3)).prop_map(
                |(match_labels, exprs)| LabelSelector {
                    match_labels: match_labels.map(|l| labels(&l)),
                    match_expressions: (!exprs.is_empty()).then(|| {
                        exprs
                            .into_iter()
                            .map(|(key, operator, values)| LabelSelectorRequirement {
                                key: key.into(),
                                operator: operator.into(),
                                values: Some(values.into_iter().map(str::to_string).collect()),
                            })
                            .collect()
                    }),
                },
            )
        }

        fn arb_server_spec() -> impl Strategy<Value = MCPServerSpec> {
            (
                arb_selector(),
                arb_list(SERVICES),
                arb_list(INGRESSES),
                prop::option::weighted(0.1, Just("theirs")),
            )
                .prop_map(|(selector, services, ingresses, reference)| MCPServerSpec {
                    selector,
                    services,
                    ingresses,
                    server_ref: reference.map(|name| ServerRef {
                        api_group: "mcp.x-k8s.io".into(),
                        kind: "MCPServer".into(),
                        name: name.into(),
                    }),
                    ..spec(&[])
                })
        }

        fn arb_servers() -> impl Strategy<Value = Vec<MCPServer>> {
            prop::collection::vec(arb_server_spec(), 0..6).prop_map(|specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, spec)| {
                        let mut s = MCPServer::new(&format!("m{i}"), spec);
                        s.metadata.namespace = Some(NS.into());
                        s
                    })
                    .collect()
            })
        }

        /// The world's objects in its namespace and copies in another (which no lookup of the first returns).
        fn cache(world: &World, servers: &[MCPServer]) -> Cache {
            fn both<K: ResourceExt + Clone>(objects: &[K]) -> Vec<K> {
                let mut all = objects.to_vec();
                for o in objects {
                    let mut copy = o.clone();
                    copy.meta_mut().namespace = Some(OTHER_NS.into());
                    all.push(copy);
                }
                all
            }
            Cache {
                servers: both(servers),
                services: both(&world.services),
                ingresses: both(&world.ingresses),
                pods: both(&world.pods),
                ..Default::default()
            }
        }

        fn sorted_names<K: ResourceExt>(objects: &[Arc<K>]) -> Vec<String> {
            objects.iter().map(|o| o.name_any()).collect()
        }

        /// Objects of `NS` in a store that `keep` accepts, by a scan, sorted by name.
        fn scan<K>(store: &kube::runtime::reflector::Store<K>, keep: impl Fn(&K) -> bool) -> Vec<String>
        where
            K: ResourceExt<DynamicType = ()> + Clone + 'static,
        {
            let mut names: Vec<String> = store
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(NS) && keep(o))
                .map(|o| o.name_any())
                .collect();
            names.sort();
            names
        }

        fn scan_servers(stores: &Stores, keep: impl Fn(&MCPServer) -> bool) -> Vec<String> {
            scan(&stores.servers, |s| keep(&resolved(s, stores)))
                .into_iter()
                .map(|n| format!("{NS}/{n}"))
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn relevant_lookups_equal_the_scan(
                world in arb_world(),
                servers in arb_servers(),
                spec in arb_server_spec(),
            ) {
                let stores = cache(&world, &servers).stores();
                let relevant = Relevant::to(&spec);
                let read = relevant.read(&stores, NS);
                let service_names = scan(&stores.services, |s| relevant.service(s));
                prop_assert_eq!(sorted_names(&read.services), service_names.clone());
                let service_names: HashSet<String> = service_names.into_iter().collect();
                prop_assert_eq!(
                    sorted_names(&read.ingresses),
                    scan(&stores.ingresses, |i| relevant.ingress(i, &service_names))
                );
                prop_assert_eq!(sorted_names(&read.pods), scan(&stores.pods, |p| relevant.pod(p)));
                prop_assert_eq!(
                    sorted_names(&read.servers),
                    scan(&stores.servers, |o| {
                        o.spec.server_ref.is_some() || !labels_conflict(&spec.selector, &o.spec.selector)
                    })
                );
            }

            #[test]
            fn mappers_equal_the_scan(
                world in arb_world(),
                servers in arb_servers(),
                changed in arb_server_spec(),
            ) {
                let stores = cache(&world, &servers).stores();
                let none = DependencyIndex::default();
                for svc in &world.services {
                    prop_assert_eq!(
                        names(services::map(&stores, &none, svc)),
                        scan_servers(&stores, |s| service_is_candidate(svc, &s.spec))
                    );
                }
                for pod in &world.pods {
                    let labels = pod.metadata.labels.clone().unwrap_or_default();
                    prop_assert_eq!(
                        names(pods::map(&stores, &none, pod)),
                        scan_servers(&stores, |s| matches(&s.spec.selector, &labels))
                    );
                }
                for ing in &world.ingresses {
                    let backends = ingresses::ingress_backend_services(ing);
                    let routes_to = |s: &MCPServer, svc: &String| match &s.spec.services {
                        Some(listed) => listed.contains(svc),
                        None => stores
                            .services
                            .get(&ObjectRef::new(svc).within(NS))
                            .is_some_and(|svc| service_is_candidate(&svc, &s.spec)),
                    };
                    let want = scan_servers(&stores, |s| {
                        backends.iter().any(|b| routes_to(s, b))
                            || s.spec.ingresses.as_ref().is_some_and(|l| l.contains(&ing.name_any()))
                    });
                    prop_assert_eq!(names(ingresses::map(&stores, &none, ing)), want);
                }
                let mut mover = MCPServer::new("mover", changed);
                mover.metadata.namespace = Some(NS.into());
                prop_assert_eq!(
                    names(servers::map((&stores.servers, &stores.indexes.servers), &none, &mover, false)),
                    scan(&stores.servers, |s| common_pod(&mover.spec.selector, &s.spec.selector).is_some())
                        .into_iter()
                        .map(|n| format!("{NS}/{n}"))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}
