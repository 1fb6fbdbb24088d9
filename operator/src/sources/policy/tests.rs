use super::*;
use crate::sources::testkit::*;

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
fn a_policy_maps_to_the_servers_that_use_it() {
    let mut uses_team = server("ns", "a", &[("app", "a")]);
    uses_team.spec.policy_ref = Some("team".into());
    let world = Cache {
        servers: vec![
            uses_team,
            server("ns", "b", &[("app", "b")]),
            server("other", "c", &[("app", "c")]),
        ],
        ..Default::default()
    };
    let stores = world.stores();
    let policy = |name: &str| MCPGuardPolicy::new(name, MCPGuardPolicySpec::default());
    // (policy, servers to reconcile)
    let table: &[(&str, &[&str])] = &[
        ("team", &["ns/a"]),
        ("default", &["ns/b", "other/c"]),
        ("unused", &[]),
    ];
    for (name, want) in table {
        assert_eq!(names(map(&stores, &policy(name))), *want, "policy {name}");
    }
}

#[test]
fn only_spec_changes_and_deletions_of_a_policy_matter() {
    let mut seen = PolicyGenerations::default();
    let mut p = MCPGuardPolicy::new("default", MCPGuardPolicySpec::default());
    p.metadata.uid = Some("u1".into());
    p.metadata.generation = Some(1);
    assert!(seen.spec_changed(&p, true), "new");
    assert!(!seen.spec_changed(&p, true), "status-only update");
    p.metadata.generation = Some(2);
    assert!(seen.spec_changed(&p, true), "spec edit");
    assert!(seen.spec_changed(&p, false), "deleted");
    assert!(seen.spec_changed(&p, true), "re-created");
}

#[test]
fn cors_reaches_the_guard_config_from_the_policy() {
    use crate::crd::CorsSpec;
    let mut s = spec(&[("app", "weather")]);
    s.hosts = vec!["mcp.example.com".into()];
    let world = |enabled| World {
        policy: Some(MCPGuardPolicySpec {
            cors: Some(CorsSpec { enabled }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(!world(None).derive(&s).guard_config("team-a", "weather").cors);
    assert!(
        world(Some(true))
            .derive(&s)
            .guard_config("team-a", "weather")
            .cors
    );
}
