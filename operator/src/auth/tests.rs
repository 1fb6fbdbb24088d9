//! Resource URIs derived from the sources, the `auth` section with the cluster's issuer, the settings merged
//! over the policy, and the validation messages.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::auth::ClusterIssuer;
use crate::crd::{MCPGuardPolicySpec, MCPServerSpec};
use crate::sources::testkit::*;
use crate::sources::{Derivation, FindingKind};

fn issuer(url: &str) -> IssuerSpec {
    IssuerSpec {
        issuer: url.into(),
        ..Default::default()
    }
}

/// A server of `app: weather` with authentication on (an issuer of its own).
fn guarded() -> MCPServerSpec {
    let mut s = spec(&[("app", "weather")]);
    s.auth = Some(AuthSpec {
        issuers: Some(vec![issuer("https://idp.example.com")]),
        ..Default::default()
    });
    s
}

fn resources(d: &Derivation) -> Vec<&str> {
    let auth = d.auth.as_ref().expect("auth on");
    auth.config.resources.iter().map(String::as_str).collect()
}

fn service_on(port: i32) -> k8s_openapi::api::core::v1::Service {
    service(
        "weather",
        &[("app", "weather")],
        vec![sport(port, Some(IntOrString::Int(8000)), Some("http"))],
    )
}

#[test]
fn ingress_hosts_are_https_where_a_tls_entry_covers_them() {
    let rules = || {
        vec![
            rule(Some("mcp.example.com"), vec![backend("weather", num(80))]),
            rule(Some("a.apps.example.com"), vec![backend("weather", num(80))]),
            rule(Some("plain.example.com"), vec![backend("weather", num(80))]),
        ]
    };
    let world = World {
        services: vec![web_service()],
        ingresses: vec![ingress(
            "web",
            rules(),
            &["mcp.example.com", "*.apps.example.com"],
        )],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&guarded());
    assert_eq!(
        resources(&d),
        vec![
            "https://a.apps.example.com/mcp",
            "https://mcp.example.com/mcp",
            "http://plain.example.com/mcp"
        ]
    );
    // The guard loads it, and finds the resource of a request's host.
    let config = d.guard_config(NS, "weather");
    let policy = config.auth.as_ref().unwrap().compile().unwrap();
    let host = mcp_guard_config::Authority::parse("MCP.example.com:443").unwrap();
    assert_eq!(
        policy.resource_for(&host).unwrap().uri,
        "https://mcp.example.com/mcp"
    );
    assert!(config.compile().is_ok());
}

#[test]
fn a_host_reached_both_ways_is_its_https_resource_and_exact_hosts_come_before_wildcards() {
    let world = World {
        services: vec![web_service()],
        ingresses: vec![
            ingress(
                "tls",
                vec![rule(Some("mcp.example.com"), vec![backend("weather", num(80))])],
                &["mcp.example.com"],
            ),
            ingress(
                "plain",
                vec![
                    rule(Some("mcp.example.com"), vec![backend("weather", num(80))]),
                    rule(Some("*.example.com"), vec![backend("weather", num(80))]),
                    rule(Some("b.example.com"), vec![backend("weather", num(80))]),
                ],
                &[],
            ),
        ],
        policy: no_dns(),
        ..Default::default()
    };
    let d = world.derive(&guarded());
    assert_eq!(
        resources(&d),
        vec![
            "http://b.example.com/mcp",
            "https://mcp.example.com/mcp",
            "http://*.example.com/mcp"
        ]
    );
}

#[test]
fn a_host_with_a_port_comes_before_the_same_host_on_any_port() {
    let entries: Vec<AllowlistEntry> = [
        "http://mcp.example.com",
        "https://mcp.example.com:8443",
        "http://*.example.com",
    ]
    .iter()
    .map(|v| AllowlistEntry {
        value: v.to_string(),
        sources: vec![],
    })
    .collect();
    let uris = resource_uris(&entries, "/mcp");
    assert_eq!(
        uris,
        vec![
            "https://mcp.example.com:8443/mcp",
            "http://mcp.example.com/mcp",
            "http://*.example.com/mcp"
        ]
    );
    let config = AuthConfig {
        resources: uris,
        issuers: vec![IssuerConfig {
            issuer: "https://idp.example.com".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let policy = config.compile().unwrap();
    let at = |host: &str| {
        policy
            .resource_for(&mcp_guard_config::Authority::parse(host).unwrap())
            .unwrap()
            .uri
    };
    assert_eq!(at("mcp.example.com:8443"), "https://mcp.example.com:8443/mcp");
    assert_eq!(at("mcp.example.com"), "http://mcp.example.com/mcp");
    assert_eq!(at("a.example.com"), "http://a.example.com/mcp");
}

#[test]
fn route_hostnames_take_the_scheme_and_port_of_their_listener() {
    let mut gw = gateway(
        "infra",
        "gw",
        &[
            ("https", Some("*.gw.example.com"), "HTTPS"),
            ("http", Some("plain.example.com"), "HTTP"),
            ("alt", Some("alt.example.com"), "HTTPS"),
        ],
    );
    gw.spec.listeners[2].port = 8443;
    let cases: Vec<(Vec<&str>, Option<&str>, Vec<&str>)> = vec![
        (
            vec!["a.gw.example.com"],
            Some("https"),
            vec!["https://a.gw.example.com/mcp"],
        ),
        (vec![], Some("https"), vec!["https://**.gw.example.com/mcp"]),
        (
            vec!["plain.example.com"],
            Some("http"),
            vec!["http://plain.example.com/mcp"],
        ),
        (
            vec!["alt.example.com"],
            Some("alt"),
            vec!["https://alt.example.com:8443/mcp"],
        ),
        // A parent the operator does not know: the public door, https.
        (vec!["r.example.com"], None, vec!["https://r.example.com/mcp"]),
    ];
    for (i, (hostnames, section, want)) in cases.into_iter().enumerate() {
        let parents = match section {
            Some(s) => vec![parent("gw", Some("infra"), Some(s))],
            None => vec![parent("elsewhere", Some("infra"), None)],
        };
        let world = World {
            services: vec![web_service()],
            routes: vec![route(
                "mcp",
                &hostnames,
                parents,
                vec![svc_ref("weather", Some(80))],
            )],
            gateways: vec![gw.clone()],
            policy: no_dns(),
            ..Default::default()
        };
        let d = world.derive(&guarded());
        assert_eq!(resources(&d), want, "case {i}");
        let config = d.guard_config(NS, "weather");
        assert!(config.compile().is_ok(), "case {i}: {:?}", config.compile().err());
    }
}

#[test]
fn service_dns_names_are_http_on_each_service_port_that_reaches_the_server() {
    for (port, suffix) in [(80, ""), (8080, ":8080")] {
        let world = World {
            services: vec![service_on(port)],
            ..Default::default()
        };
        let d = world.derive(&guarded());
        let mut want: Vec<String> = [
            "weather",
            "weather.team-a",
            "weather.team-a.svc",
            "weather.team-a.svc.cluster.local",
        ]
        .iter()
        .map(|h| format!("http://{h}{suffix}/mcp"))
        .collect();
        want.sort();
        let mut got = resources(&d);
        got.sort();
        assert_eq!(got, want, "port {port}");
        let policy = d.auth.as_ref().unwrap().config.compile().unwrap();
        let authority = format!("weather.team-a.svc{suffix}");
        let host = mcp_guard_config::Authority::parse(&authority).unwrap();
        assert_eq!(
            policy.resource_for(&host).unwrap().uri,
            format!("http://weather.team-a.svc{suffix}/mcp")
        );
    }
    // A Service port that does not reach the server gives no resource.
    let world = World {
        services: vec![service(
            "weather",
            &[("app", "weather")],
            vec![
                sport(80, Some(IntOrString::Int(8000)), None),
                sport(9090, Some(IntOrString::Int(9090)), None),
            ],
        )],
        ..Default::default()
    };
    let d = world.derive(&guarded());
    assert!(
        resources(&d).iter().all(|r| !r.contains("9090")),
        "{:?}",
        resources(&d)
    );
}

#[test]
fn listed_hosts_take_the_scheme_their_origins_or_their_form_say() {
    let mut s = guarded();
    s.hosts = vec![
        "mcp.example.com".into(),
        "lab.example.com".into(),
        "localhost:3000".into(),
        "10.0.0.7".into(),
        "db.team-a.svc".into(),
        "[::1]:8080".into(),
    ];
    s.origins = vec!["http://lab.example.com".into()];
    let world = World {
        policy: Some(MCPGuardPolicySpec {
            allowed_hosts: vec!["edge.example.com".into()],
            allow_service_dns_names: false,
            ..Default::default()
        }),
        ..Default::default()
    };
    let d = world.derive(&s);
    assert_eq!(
        resources(&d),
        vec![
            "http://[::1]:8080/mcp",
            "http://localhost:3000/mcp",
            "http://10.0.0.7/mcp",
            "http://db.team-a.svc/mcp",
            "https://edge.example.com/mcp",
            "http://lab.example.com/mcp",
            "https://mcp.example.com/mcp",
        ]
    );
    // A listed host an Ingress already says the scheme of keeps the Ingress's.
    let mut s = guarded();
    s.hosts = vec!["mcp.example.com".into()];
    let world = World {
        services: vec![web_service()],
        ingresses: vec![ingress(
            "web",
            vec![rule(Some("mcp.example.com"), vec![backend("weather", num(80))])],
            &[],
        )],
        policy: no_dns(),
        ..Default::default()
    };
    assert_eq!(resources(&world.derive(&s)), vec!["http://mcp.example.com/mcp"]);
}

#[test]
fn the_resource_path_is_canonical() {
    for (path, want) in [
        ("/", "https://mcp.example.com"),
        ("/v1/mcp/", "https://mcp.example.com/v1/mcp"),
    ] {
        let mut s = guarded();
        s.hosts = vec!["mcp.example.com".into()];
        s.auth.as_mut().unwrap().resource_path = Some(path.into());
        let d = World {
            policy: no_dns(),
            ..Default::default()
        }
        .derive(&s);
        assert_eq!(resources(&d), vec![want], "{path}");
    }
}

fn cluster() -> ClusterIssuer {
    ClusterIssuer {
        issuer: "https://kubernetes.default.svc.cluster.local".into(),
        jwks: serde_json::from_str(crate::cluster_issuer::TEST_JWKS).expect("jwks"),
    }
}

#[test]
fn the_cluster_issuer_is_written_with_the_keys_the_operator_fetched() {
    let mut s = spec(&[("app", "weather")]);
    s.auth = Some(AuthSpec {
        kubernetes: Some(true),
        service_accounts: Some(vec!["team-b/agent".into()]),
        ..Default::default()
    });
    let mut world = World {
        services: vec![web_service()],
        cluster_issuer: IssuerState {
            current: Some(cluster()),
            error: None,
            attempted: true,
        },
        ..Default::default()
    };
    let d = world.derive(&s);
    let auth = d.auth.as_ref().unwrap();
    assert_eq!(auth.mode, "kubernetes");
    assert_eq!(auth.problems, Vec::<String>::new());
    let k8s = &auth.config.issuers[0];
    assert!(k8s.kubernetes && k8s.jwks.is_some() && k8s.jwks_uri.is_none());
    assert_eq!(auth.config.service_accounts, vec!["team-b/agent"]);
    let compiled = auth.config.compile().unwrap();
    assert!(
        compiled.issuers()[0].inline_keys.is_some(),
        "the guard fetches nothing"
    );
    // The metadata lists no authorization server for service-account tokens.
    let resource = compiled
        .resource_for(&mcp_guard_config::Authority::parse("weather.team-a.svc").unwrap())
        .unwrap();
    assert_eq!(
        compiled.metadata(&resource)["authorization_servers"],
        serde_json::json!([])
    );

    // Not discovered: the condition says why; an issuer without keys stands in its place, so that the guard
    // loads the section and refuses service-account tokens (closed) instead of keeping an older config.
    world.cluster_issuer = IssuerState {
        current: None,
        error: Some("GET /openid/v1/jwks: 403 Forbidden".into()),
        attempted: true,
    };
    let d = world.derive(&s);
    let auth = d.auth.as_ref().unwrap();
    assert!(auth.issuer_not_discovered);
    assert_eq!(auth.config.issuers.len(), 1);
    assert_eq!(
        auth.config.issuers[0].issuer,
        crate::auth::UNDISCOVERED_CLUSTER_ISSUER
    );
    let compiled = auth.config.compile().expect("the guard loads the stand-in");
    assert!(
        compiled.issuers()[0]
            .inline_keys
            .as_ref()
            .is_some_and(|k| k.is_empty())
    );
    assert!(auth.problems[0].contains("403 Forbidden"), "{:?}", auth.problems);
    assert!(
        auth.problems[0].contains("nonResourceURLs"),
        "{:?}",
        auth.problems
    );

    // With issuers of its own too: oauth+kubernetes; a failed refresh of known keys is a note, not a problem.
    s.auth.as_mut().unwrap().issuers = Some(vec![issuer("https://idp.example.com")]);
    world.cluster_issuer = IssuerState {
        current: Some(cluster()),
        error: Some("timed out".into()),
        attempted: true,
    };
    let d = world.derive(&s);
    let auth = d.auth.as_ref().unwrap();
    assert_eq!(auth.mode, "oauth+kubernetes");
    assert!(auth.problems.is_empty() && auth.notes[0].contains("timed out"));
}

#[test]
fn a_server_without_hosts_or_issuers_is_told_what_is_missing() {
    let mut s = spec(&[("app", "weather")]);
    s.auth = Some(AuthSpec::default());
    let d = World::default().derive(&s);
    let auth = d.auth.as_ref().unwrap();
    assert_eq!(auth.mode, "none");
    assert!(
        auth.problems[0].starts_with("no resource URI"),
        "{:?}",
        auth.problems
    );
    // What is written is a section the guard loads (one it refused would leave it on its last config, perhaps
    // without authentication), and it lets nobody in: no host is its resource, no token has a key of its issuer.
    let compiled = auth.config.compile().expect("a config the guard loads");
    assert_eq!(auth.config.resources, [crate::auth::NO_RESOURCE]);
    assert_eq!(compiled.issuers()[0].issuer, crate::auth::NO_ISSUER);
    assert_eq!(
        compiled.issuers()[0].inline_keys.as_ref().map(|k| k.len()),
        Some(0)
    );
    let d = World {
        services: vec![web_service()],
        ..Default::default()
    }
    .derive(&s);
    let problems = &d.auth.as_ref().unwrap().problems;
    assert!(problems[0].contains("spec.auth.issuers"), "{problems:?}");
    let config = &d.auth.as_ref().unwrap().config;
    assert!(config.compile().is_ok());
    assert_ne!(config.resources, [crate::auth::NO_RESOURCE], "its own resources");
    assert_eq!(config.issuers[0].issuer, crate::auth::NO_ISSUER);
    assert!(
        !d.has(FindingKind::Problem),
        "auth problems have a condition of their own"
    );
}

#[test]
fn the_server_wins_over_its_policy_field_by_field() {
    let policy = AuthSpec {
        issuers: Some(vec![issuer("https://idp.example.com")]),
        required_scopes: Some(vec!["mcp".into()]),
        method_scopes: BTreeMap::from([
            ("tools/call".into(), vec!["mcp:tools".into()]),
            ("resources/read".into(), vec!["mcp:read".into()]),
        ]),
        service_accounts: Some(vec!["team-a/*".into()]),
        resource_path: Some("/api/mcp".into()),
        ..Default::default()
    };
    // Defaults only: off for a server without spec.auth.
    assert_eq!(crate::settings::auth(None, Some(&policy)), None);
    // On for a server with spec.auth, the policy filling in.
    let on = crate::settings::auth(Some(&AuthSpec::default()), Some(&policy)).unwrap();
    assert_eq!(on.issuers, policy.issuers.clone().unwrap());
    assert_eq!(on.resource_path, "/api/mcp");
    assert!(!on.kubernetes && !on.pass_token);
    // The server's fields win; lists replace (even with an empty one), maps merge.
    let server = AuthSpec {
        kubernetes: Some(true),
        required_scopes: Some(vec![]),
        method_scopes: BTreeMap::from([("tools/call".into(), vec!["deploy".into()])]),
        service_accounts: Some(vec!["team-b/agent".into()]),
        pass_token: Some(true),
        ..Default::default()
    };
    let s = crate::settings::auth(Some(&server), Some(&policy)).unwrap();
    assert!(s.kubernetes && s.pass_token);
    assert_eq!(s.issuers.len(), 1);
    assert!(s.required_scopes.is_empty());
    assert_eq!(s.method_scopes["tools/call"], vec!["deploy"]);
    assert_eq!(s.method_scopes["resources/read"], vec!["mcp:read"]);
    assert_eq!(s.service_accounts, vec!["team-b/agent"]);
    // A policy with enabled: true turns it on for every server; a server opts out.
    let everyone = AuthSpec {
        enabled: Some(true),
        ..policy.clone()
    };
    let on = crate::settings::auth(None, Some(&everyone)).unwrap();
    assert_eq!(on.resource_path, "/api/mcp");
    let opt_out = AuthSpec {
        enabled: Some(false),
        ..Default::default()
    };
    assert_eq!(crate::settings::auth(Some(&opt_out), Some(&everyone)), None);
    // Without a policy: the built-in path.
    let alone = crate::settings::auth(Some(&AuthSpec::default()), None).unwrap();
    assert_eq!(alone.resource_path, "/mcp");
}

#[test]
fn validation_names_the_field_and_the_fix() {
    let check = |auth: AuthSpec| -> Vec<String> {
        let mut s = spec(&[("app", "weather")]);
        s.auth = Some(auth);
        crate::validate::validate_spec(&s)
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    };
    assert_eq!(
        check(AuthSpec::default()),
        Vec::<String>::new(),
        "issuers may come from the policy"
    );
    let cases: Vec<(AuthSpec, &str, &str)> = vec![
        (
            AuthSpec {
                issuers: Some(vec![issuer("https://ok.example.com"), issuer("http://idp.lab")]),
                ..Default::default()
            },
            "spec.auth.issuers[1].issuer: \"http://idp.lab\"",
            "allowHttp",
        ),
        (
            AuthSpec {
                issuers: Some(vec![IssuerSpec {
                    algorithms: vec!["HS256".into()],
                    ..issuer("https://idp.example.com")
                }]),
                ..Default::default()
            },
            "spec.auth.issuers[0]: algorithms: \"HS256\"",
            "HMAC",
        ),
        (
            AuthSpec {
                issuers: Some(vec![IssuerSpec {
                    jwks_uri: Some("http://idp.example.com/keys".into()),
                    ..issuer("https://idp.example.com")
                }]),
                ..Default::default()
            },
            "spec.auth.issuers[0]: jwksUri",
            "https",
        ),
        (
            AuthSpec {
                issuers: Some(vec![IssuerSpec {
                    ca_bundle: Some(
                        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
                            .into(),
                    ),
                    ..issuer("https://idp.example.com")
                }]),
                ..Default::default()
            },
            "spec.auth.issuers[0]: caBundle: a PrivateKey block",
            "never a key",
        ),
        (
            AuthSpec {
                resource_path: Some("/a//b".into()),
                ..Default::default()
            },
            "spec.auth.resourcePath: \"/a//b\"",
            "canonical",
        ),
        (
            AuthSpec {
                required_scopes: Some(vec!["a b".into()]),
                ..Default::default()
            },
            "spec.auth.requiredScopes",
            "without spaces",
        ),
        (
            AuthSpec {
                tool_scopes: BTreeMap::from([("deploy".into(), vec!["x\"y".into()])]),
                ..Default::default()
            },
            "spec.auth.toolScopes[\"deploy\"]",
            "quotes",
        ),
        (
            AuthSpec {
                service_accounts: Some(vec!["team-a/agent".into(), "agent".into()]),
                ..Default::default()
            },
            "spec.auth.serviceAccounts[1]: \"agent\"",
            "namespace/name or namespace/*",
        ),
    ];
    for (i, (auth, field, fix)) in cases.into_iter().enumerate() {
        let errors = check(auth);
        assert_eq!(errors.len(), 1, "case {i}: {errors:?}");
        assert!(errors[0].starts_with(field), "case {i}: {errors:?}");
        assert!(errors[0].contains(fix), "case {i}: {errors:?}");
    }
    // The policy's section is checked the same way.
    let policy = MCPGuardPolicySpec {
        auth: Some(AuthSpec {
            issuers: Some(vec![issuer("ftp://idp")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let errors = crate::validate::validate_policy(&policy);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.auth.issuers[0].issuer");
}
