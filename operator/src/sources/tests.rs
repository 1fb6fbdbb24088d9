//! Table tests over Ingress / HTTPRoute / Service shapes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::http_routes::intersect_hostnames;
use super::ingresses::{
    DEFAULT_CLASS_ANNOTATION, INGRESS_CLASS_ANNOTATION, IngressClassOf, UPSTREAM_VHOST_ANNOTATION,
    ingress_class_of, ingress_counts,
};
use super::services::service_selects_server;
use super::*;
use crate::crd::PolicyLimits;
use crate::gateway::listener_admits;
use crate::gateway::{
    AllowedRoutes, BackendRef, GatewaySpec, HTTPRouteFilter, HTTPRouteRule, HTTPRouteSpec, HTTPRouteStatus,
    HTTPURLRewriteFilter, Listener, ParentReference, RouteGroupKind, RouteNamespaces, RouteParentStatus,
};

const NS: &str = "team-a";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(pairs: &[(&str, &str)]) -> MCPServerSpec {
    MCPServerSpec {
        selector: LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        },
        port: 8000,
        ..Default::default()
    }
}

/// A Service port: `(port, targetPort, name)`.
fn sport(port: i32, target: Option<IntOrString>, name: Option<&str>) -> ServicePort {
    ServicePort {
        port,
        target_port: target,
        name: name.map(str::to_string),
        ..Default::default()
    }
}

fn service(name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            selector: (!selector.is_empty()).then(|| labels(selector)),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

fn web_service() -> Service {
    service(
        "weather",
        &[("app", "weather")],
        vec![sport(80, Some(IntOrString::Int(8000)), Some("http"))],
    )
}

fn backend(svc: &str, port: ServiceBackendPort) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: svc.into(),
            port: Some(port),
        }),
        resource: None,
    }
}

fn num(n: i32) -> ServiceBackendPort {
    ServiceBackendPort {
        number: Some(n),
        name: None,
    }
}

fn named(n: &str) -> ServiceBackendPort {
    ServiceBackendPort {
        number: None,
        name: Some(n.into()),
    }
}

fn rule(host: Option<&str>, backends: Vec<IngressBackend>) -> IngressRule {
    IngressRule {
        host: host.map(str::to_string),
        http: Some(HTTPIngressRuleValue {
            paths: backends
                .into_iter()
                .map(|b| HTTPIngressPath {
                    backend: b,
                    path: Some("/".into()),
                    path_type: "Prefix".into(),
                })
                .collect(),
        }),
    }
}

fn ingress(name: &str, rules: Vec<IngressRule>, tls: &[&str]) -> Ingress {
    Ingress {
        metadata: meta(name),
        spec: Some(IngressSpec {
            rules: Some(rules),
            tls: (!tls.is_empty()).then(|| {
                vec![IngressTLS {
                    hosts: Some(tls.iter().map(|s| s.to_string()).collect()),
                    secret_name: None,
                }]
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn route(
    name: &str,
    hostnames: &[&str],
    parents: Vec<ParentReference>,
    backends: Vec<BackendRef>,
) -> HTTPRoute {
    let mut r = HTTPRoute::new(
        name,
        HTTPRouteSpec {
            parent_refs: parents,
            hostnames: hostnames.iter().map(|s| s.to_string()).collect(),
            rules: vec![HTTPRouteRule {
                backend_refs: backends,
                filters: Vec::new(),
            }],
        },
    );
    r.metadata.namespace = Some(NS.into());
    r
}

fn svc_ref(name: &str, port: Option<i32>) -> BackendRef {
    BackendRef {
        name: name.into(),
        port,
        ..Default::default()
    }
}

fn parent(name: &str, ns: Option<&str>, section: Option<&str>) -> ParentReference {
    ParentReference {
        name: name.into(),
        namespace: ns.map(str::to_string),
        section_name: section.map(str::to_string),
        ..Default::default()
    }
}

fn gateway(ns: &str, name: &str, listeners: &[(&str, Option<&str>, &str)]) -> Gateway {
    let mut g = Gateway::new(
        name,
        GatewaySpec {
            gateway_class_name: "test".into(),
            listeners: listeners
                .iter()
                .map(|(n, h, proto)| Listener {
                    name: n.to_string(),
                    hostname: h.map(str::to_string),
                    port: if *proto == "HTTPS" { 443 } else { 80 },
                    protocol: proto.to_string(),
                    // Most rows put the Gateway elsewhere; allowedRoutes has rows of its own.
                    allowed_routes: Some(AllowedRoutes {
                        namespaces: Some(RouteNamespaces {
                            from: Some("All".into()),
                            selector: None,
                        }),
                        kinds: Vec::new(),
                    }),
                })
                .collect(),
        },
    );
    g.metadata.namespace = Some(ns.into());
    g
}

/// The objects of one table row.
#[derive(Default)]
struct World {
    services: Vec<Service>,
    ingresses: Vec<Ingress>,
    ingress_classes: Vec<IngressClass>,
    routes: Vec<HTTPRoute>,
    gateways: Vec<Gateway>,
    pods: Vec<Pod>,
    policy: Option<MCPGuardPolicySpec>,
    namespace_labels: Option<BTreeMap<String, String>>,
    grants: Vec<crate::gateway::ReferenceGrant>,
    others: Vec<(String, LabelSelector)>,
}

impl World {
    fn derive(&self, spec: &MCPServerSpec) -> Derivation {
        derive(&DeriveInput {
            namespace: NS,
            name: "weather",
            spec,
            settings: &crate::settings::resolve(spec, self.policy.as_ref(), "img"),
            policy: self.policy.as_ref(),
            services: self.services.iter().collect(),
            ingresses: self.ingresses.iter().collect(),
            ingress_classes: self.ingress_classes.iter().collect(),
            http_routes: self.routes.iter().collect(),
            reference_grants: self.grants.iter().collect(),
            gateways: self.gateways.iter().collect(),
            pods: self.pods.iter().collect(),
            namespace_labels: self.namespace_labels.as_ref(),
            other_servers: self.others.iter().map(|(n, s)| (n.as_str(), s)).collect(),
            cluster_domain: "cluster.local",
        })
    }
}

fn no_dns() -> Option<MCPGuardPolicySpec> {
    Some(MCPGuardPolicySpec {
        allow_service_dns_names: false,
        ..Default::default()
    })
}

fn values(entries: &[AllowlistEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.value.as_str()).collect()
}

fn sources_of<'a>(entries: &'a [AllowlistEntry], value: &str) -> Vec<&'a str> {
    entries
        .iter()
        .find(|e| e.value == value)
        .map(|e| e.sources.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

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
        assert_eq!(
            !d.messages(FindingKind::Bypass).is_empty(),
            bypass,
            "case {i}: {:?}",
            d.messages(FindingKind::Bypass)
        );
    }
}

#[test]
fn ingress_hosts_and_origins_table() {
    // (rules, tls hosts, expected hosts, expected origins, catch-all?, mismatch?)
    type Case = (
        Vec<IngressRule>,
        Vec<&'static str>,
        Vec<&'static str>,
        Vec<&'static str>,
        bool,
        bool,
    );
    let cases: Vec<Case> = vec![
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
    ];
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
        assert_eq!(
            !d.messages(FindingKind::CatchAll).is_empty(),
            catch_all,
            "case {i}: {:?}",
            d.messages(FindingKind::CatchAll)
        );
        assert_eq!(
            !d.messages(FindingKind::PortMismatch).is_empty(),
            mismatch,
            "case {i}: {:?}",
            d.messages(FindingKind::PortMismatch)
        );
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

#[test]
fn http_route_table() {
    // (route hostnames, parents, gateways, expected hosts, expected origins, catch-all?, problems?)
    type Case = (
        Vec<&'static str>,
        Vec<ParentReference>,
        Vec<Gateway>,
        Vec<&'static str>,
        Vec<&'static str>,
        bool,
        bool,
    );
    let cases: Vec<Case> = vec![
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
    ];
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
        assert_eq!(
            !d.messages(FindingKind::CatchAll).is_empty(),
            catch_all,
            "case {i}: {:?}",
            d.messages(FindingKind::CatchAll)
        );
        assert_eq!(
            !d.messages(FindingKind::Problem).is_empty(),
            problems,
            "case {i}: {:?}",
            d.messages(FindingKind::Problem)
        );
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
fn spec_and_policy_entries_with_sources_and_dedup() {
    let mut s = spec(&[("app", "weather")]);
    s.hosts = vec!["mcp.example.com".into(), "localhost:8000".into()];
    s.origins = vec!["https://app.example.com".into()];
    let world = World {
        services: vec![web_service()],
        ingresses: vec![ingress(
            "web",
            vec![rule(Some("mcp.example.com"), vec![backend("weather", num(80))])],
            &[],
        )],
        policy: Some(MCPGuardPolicySpec {
            allow_service_dns_names: false,
            allowed_hosts: vec!["gateway.internal".into()],
            allowed_origins: vec!["https://portal.example.com".into()],
            default_mode: Some(GuardMode::Audit),
            limits: Some(PolicyLimits {
                max_request_body_bytes: Some(1024),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let d = world.derive(&s);
    assert_eq!(
        values(&d.hosts),
        vec!["gateway.internal", "localhost:8000", "mcp.example.com"]
    );
    assert_eq!(
        sources_of(&d.hosts, "mcp.example.com"),
        vec!["Ingress team-a/web", "MCPServer spec.hosts"]
    );
    assert_eq!(
        sources_of(&d.hosts, "gateway.internal"),
        vec!["MCPGuardPolicy default"]
    );
    assert_eq!(
        values(&d.origins),
        vec![
            "http://mcp.example.com",
            "https://app.example.com",
            "https://portal.example.com"
        ]
    );
    assert_eq!(d.mode, GuardMode::Audit);
    assert_eq!(d.limits.max_request_body_bytes, Some(1024));

    s.mode = Some(GuardMode::Enforce);
    assert_eq!(world.derive(&s).mode, GuardMode::Enforce);
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

fn pod(name: &str, labels_: &[(&str, &str)], guarded_for: Option<&str>, ports: &[(&str, i32)]) -> Pod {
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": NS, "labels": labels(labels_) },
        "spec": { "containers": [{
            "name": "server", "image": "example.invalid/server:1",
            "ports": ports.iter().map(|(n, p)| serde_json::json!({ "name": n, "containerPort": p })).collect::<Vec<_>>()
        }] }
    }))
    .expect("pod");
    if let Some(server) = guarded_for {
        let spec = p.spec.as_mut().expect("spec");
        spec.init_containers = Some(vec![
            serde_json::from_value(serde_json::json!({
                "name": "mcp-guard", "image": "example.invalid/guard:1", "restartPolicy": "Always",
                "ports": [{ "name": "mcp-guard-admin", "containerPort": 15081 }]
            }))
            .expect("container"),
        ]);
        spec.volumes = Some(vec![
            serde_json::from_value(serde_json::json!({
                "name": "mcp-guard-config", "configMap": { "name": format!("{server}-mcp-guard") }
            }))
            .expect("volume"),
        ]);
        p.metadata.annotations = Some(BTreeMap::from([(
            "mcpguard.dev/injected".to_string(),
            serde_json::json!({
                "version": 1, "mcpServer": server, "image": "example.invalid/guard:1",
                "initContainers": ["mcp-guard"], "containers": [], "volumes": ["mcp-guard-config"]
            })
            .to_string(),
        )]));
    }
    p
}

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

fn ingress_class(name: &str, default: bool, created: i64) -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: default
                .then(|| BTreeMap::from([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())])),
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(created).expect("ts"),
            )),
            ..Default::default()
        },
        spec: None,
    }
}

/// An Ingress to `weather:80` for `host`, with a class by field and/or annotation.
fn classed_ingress(name: &str, host: &str, field: Option<&str>, annotation: Option<&str>) -> Ingress {
    let mut ing = ingress(
        name,
        vec![rule(Some(host), vec![backend("weather", num(80))])],
        &[],
    );
    if let Some(spec) = ing.spec.as_mut() {
        spec.ingress_class_name = field.map(str::to_string);
    }
    if let Some(a) = annotation {
        ing.metadata.annotations = Some(BTreeMap::from([(
            INGRESS_CLASS_ANNOTATION.to_string(),
            a.to_string(),
        )]));
    }
    ing
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
fn rate_limits_fall_back_to_the_policy_and_trusted_proxies_add_up_in_the_guard_config() {
    use crate::crd::{RateLimitSpec, RateSpec};
    let rate = |requests_per_minute, burst| RateSpec {
        requests_per_minute,
        burst,
    };
    let mut s = spec(&[("app", "weather")]);
    s.hosts = vec!["mcp.example.com".into()];
    s.rate_limits = Some(RateLimitSpec {
        per_tool: BTreeMap::from([("render".to_string(), rate(6, Some(2)))]),
        max_streams_per_client: Some(2),
        ..Default::default()
    });
    s.trusted_proxies = vec!["10.0.0.0/8".into()];
    let world = World {
        policy: Some(MCPGuardPolicySpec {
            allow_service_dns_names: false,
            rate_limits: Some(RateLimitSpec {
                per_client: Some(rate(600, None)),
                per_tool: BTreeMap::from([
                    ("render".to_string(), rate(60, None)),
                    ("search".to_string(), rate(30, None)),
                ]),
                max_streams_per_client: Some(8),
                ..Default::default()
            }),
            trusted_proxies: vec!["192.0.2.0/24".into(), "10.0.0.0/8".into(), "10.1.2.3/8".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let d = world.derive(&s);
    let config = d.guard_config("team-a", "weather");
    let limits = &config.limits;
    assert_eq!(
        limits.per_client.map(|r| r.requests_per_minute),
        Some(600),
        "from the policy"
    );
    assert_eq!(
        limits.per_tool["render"].requests_per_minute, 6,
        "the server's own wins"
    );
    assert_eq!(limits.per_tool["search"].requests_per_minute, 30);
    assert_eq!(limits.max_streams_per_client, Some(2));
    assert_eq!(config.trusted_proxies, ["192.0.2.0/24", "10.0.0.0/8"]);
    assert!(
        d.messages(FindingKind::Problem)
            .iter()
            .any(|p| p.contains("skipped trusted proxy \"10.1.2.3/8\"")),
        "{:?}",
        d.messages(FindingKind::Problem)
    );
    // What the operator writes, the guard loads.
    let json = serde_json::to_vec(&config).expect("serialise");
    let loaded = mcp_guard_config::GuardConfig::from_json(&json)
        .expect("parse")
        .compile()
        .expect("compile");
    assert_eq!(loaded.limits, *limits);
    assert!(loaded.trusts("10.9.9.9".parse().expect("address")));
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
