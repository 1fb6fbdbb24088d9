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
