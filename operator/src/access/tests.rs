//! The rules merged over the policy into the guard config, the audit section merged, status, and the webhook's
//! messages.
#![allow(clippy::unwrap_used)]

use mcp_guard_config::auth::Identity;
use mcp_guard_config::{GuardConfig, Reason};

use super::*;
use crate::crd::{AuthSpec, MCPGuardPolicySpec};
use crate::sources::testkit::*;

fn sa(name: &str) -> AccessSourceSpec {
    AccessSourceSpec {
        service_account: Some(name.into()),
        ..Default::default()
    }
}

fn tools(names: &[&str]) -> AccessTargetSpec {
    AccessTargetSpec {
        method: "tools/call".into(),
        names: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn rule(name: Option<&str>, from: Vec<AccessSourceSpec>, to: Vec<AccessTargetSpec>) -> AccessRuleSpec {
    AccessRuleSpec {
        name: name.map(str::to_string),
        from,
        to,
    }
}

/// A server of `app: weather` with the cluster's service-account tokens and these rules.
fn guarded(rules: Vec<AccessRuleSpec>) -> crate::crd::MCPServerSpec {
    let mut s = spec(&[("app", "weather")]);
    s.auth = Some(AuthSpec {
        kubernetes: Some(true),
        ..Default::default()
    });
    s.access = (!rules.is_empty()).then_some(AccessSpec { rules });
    s
}

fn policy_with(rules: Vec<AccessRuleSpec>) -> MCPGuardPolicySpec {
    MCPGuardPolicySpec {
        access: Some(AccessSpec { rules }),
        ..Default::default()
    }
}

fn service_account(name: &str) -> Identity {
    Identity {
        issuer: "https://kubernetes.default.svc".into(),
        subject: Some(format!("system:serviceaccount:{}", name.replace('/', ":"))),
        client_id: None,
        scopes: Vec::new(),
        groups: Vec::new(),
        service_account: Some(name.into()),
        expires_at: u64::MAX,
    }
}

/// The guard config as the ConfigMap carries it, read back as the guard reads it.
fn written(world: &World, spec: &crate::crd::MCPServerSpec) -> GuardConfig {
    let json = serde_json::to_vec(&world.derive(spec).guard_config(NS, "weather")).unwrap();
    GuardConfig::from_json(&json).unwrap()
}

#[test]
fn the_servers_rules_come_first_then_the_policys_for_an_authenticated_server() {
    let world = World {
        services: vec![web_service()],
        policy: Some(policy_with(vec![
            rule(
                Some("sre"),
                vec![AccessSourceSpec {
                    group: Some("sre".into()),
                    ..Default::default()
                }],
                vec![tools(&["*"])],
            ),
            rule(None, vec![sa("monitoring/prober")], vec![tools(&["health"])]),
        ])),
        ..Default::default()
    };
    let spec = guarded(vec![
        rule(
            Some("agents"),
            vec![sa("team-a/agent")],
            vec![tools(&["read_*", "search"])],
        ),
        rule(None, vec![sa("team-b/*")], vec![tools(&["write"])]),
    ]);
    let config = written(&world, &spec);
    let access = config.access.as_ref().expect("access section");
    let names: Vec<_> = access.rules.iter().map(|r| r.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        ["agents", "rules[1]", "sre", "policy/default.rules[1]"],
        "every rule named, the server's first"
    );
    // The guard loads it, and decides with the policy's rules too.
    let allowlist = config.compile().unwrap();
    let policy = access.compile().unwrap();
    drop(allowlist);
    let decide =
        |who: &str, tool: &str| policy.decide(Some(&service_account(who)), Some("tools/call"), Some(tool));
    assert_eq!(
        decide("team-a/agent", "read_file"),
        Ok(mcp_guard_config::access::Allowed::Rule("agents"))
    );
    assert_eq!(
        decide("monitoring/prober", "health"),
        Ok(mcp_guard_config::access::Allowed::Rule("policy/default.rules[1]"))
    );
    assert_eq!(
        decide("team-b/x", "write"),
        Ok(mcp_guard_config::access::Allowed::Rule("rules[1]"))
    );
    assert_eq!(
        decide("team-a/agent", "write").unwrap_err().reason,
        Reason::ToolNotAllowed
    );

    // Status lists them compactly, with their sources.
    let status = world.derive(&spec).access.unwrap().status();
    assert_eq!(status.summary, "agents,rules[1],sre (+1 more)");
    assert_eq!(
        status.rules[0],
        AccessRuleStatus {
            name: "agents".into(),
            source: "MCPServer".into(),
            from: vec!["serviceAccount team-a/agent".into()],
            to: vec!["tools/call read_*,search".into()],
        }
    );
    assert_eq!(status.rules[2].source, "MCPGuardPolicy/default");
    assert_eq!(status.rules[2].from, ["group sre"]);
}

#[test]
fn the_policys_rules_alone_make_an_authenticated_server_deny_by_default() {
    let world = World {
        services: vec![web_service()],
        policy: Some(policy_with(vec![rule(
            Some("sre"),
            vec![AccessSourceSpec {
                group: Some("sre".into()),
                ..Default::default()
            }],
            vec![tools(&[])],
        )])),
        ..Default::default()
    };
    let config = written(&world, &guarded(vec![]));
    let policy = config.access.as_ref().unwrap().compile().unwrap();
    let denied = policy
        .decide(
            Some(&service_account("team-a/agent")),
            Some("tools/call"),
            Some("read"),
        )
        .unwrap_err();
    assert_eq!(denied.reason, Reason::ToolNotAllowed);
}

#[test]
fn a_server_without_authentication_gets_none_of_the_policys_rules_but_keeps_its_own() {
    let world = World {
        services: vec![web_service()],
        policy: Some(policy_with(vec![rule(
            Some("sre"),
            vec![sa("ops/*")],
            vec![tools(&[])],
        )])),
        ..Default::default()
    };
    let open = spec(&[("app", "weather")]);
    assert_eq!(written(&world, &open).access, None);
    assert!(world.derive(&open).access.is_none(), "status lists none");
    // Its own rules without auth reach the guard, which refuses the config rather than run open; the webhook
    // refuses such a spec first.
    let mut own = open.clone();
    own.access = Some(AccessSpec {
        rules: vec![rule(None, vec![sa("a/b")], vec![tools(&["x"])])],
    });
    let config = written(&world, &own);
    assert_eq!(config.access.as_ref().unwrap().rules.len(), 1);
    let err = config.compile().unwrap_err().to_string();
    assert!(err.contains("need authentication"), "{err}");
}

#[test]
fn no_rules_anywhere_writes_no_access_section() {
    let world = World {
        services: vec![web_service()],
        ..Default::default()
    };
    let config = written(&world, &guarded(vec![]));
    assert_eq!(config.access, None);
    assert_eq!(config.audit, None, "the guard's default: on with auth");
}

#[test]
fn audit_is_merged_field_by_field_and_redact_is_a_floor() {
    let policy = AuditSpec {
        arguments: Some(true),
        max_argument_bytes: Some(4096),
        redact: vec!["ssn".into()],
        ..Default::default()
    };
    let server = AuditSpec {
        max_argument_bytes: Some(256),
        redact: vec!["iban".into(), "ssn".into()],
        ..Default::default()
    };
    let off = AuditSpec {
        enabled: Some(false),
        ..Default::default()
    };
    let no_arguments = AuditSpec {
        arguments: Some(false),
        ..Default::default()
    };
    let cases: Vec<(Option<&AuditSpec>, Option<&AuditSpec>, Option<AuditConfig>)> = vec![
        (None, None, None),
        (
            Some(&server),
            Some(&policy),
            Some(AuditConfig {
                enabled: true,
                arguments: true,
                max_argument_bytes: Some(256),
                redact: vec!["ssn".into(), "iban".into()],
            }),
        ),
        (
            None,
            Some(&policy),
            Some(AuditConfig {
                enabled: true,
                arguments: true,
                max_argument_bytes: Some(4096),
                redact: vec!["ssn".into()],
            }),
        ),
        (
            Some(&off),
            Some(&policy),
            Some(AuditConfig {
                enabled: false,
                arguments: true,
                max_argument_bytes: Some(4096),
                redact: vec!["ssn".into()],
            }),
        ),
        (
            Some(&no_arguments),
            Some(&policy),
            Some(AuditConfig {
                enabled: true,
                arguments: false,
                max_argument_bytes: Some(4096),
                redact: vec!["ssn".into()],
            }),
        ),
    ];
    for (i, (s, p, want)) in cases.into_iter().enumerate() {
        assert_eq!(audit(s, p), want, "case {i}");
    }
    // And into the ConfigMap.
    let world = World {
        services: vec![web_service()],
        policy: Some(MCPGuardPolicySpec {
            audit: Some(policy),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut s = guarded(vec![]);
    s.audit = Some(server);
    let config = written(&world, &s);
    assert_eq!(config.audit.as_ref().unwrap().max_argument_bytes, Some(256));
    config.compile().unwrap();
}

/// Every error of `spec`'s validation, as the webhook says it.
fn errors_of(spec: &crate::crd::MCPServerSpec) -> Vec<String> {
    crate::validate::validate_spec(spec)
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn validation_names_the_field_and_the_fix() {
    let ok = guarded(vec![rule(
        Some("a"),
        vec![sa("team-a/agent")],
        vec![tools(&["x"])],
    )]);
    assert_eq!(errors_of(&ok), Vec::<String>::new());
    let source = |f: fn(&mut AccessSourceSpec)| {
        let mut s = AccessSourceSpec::default();
        f(&mut s);
        s
    };
    let cases: Vec<(Vec<AccessRuleSpec>, &str, &str)> = vec![
        (
            vec![rule(
                None,
                vec![sa("team-a/agent"), sa("agent")],
                vec![tools(&[])],
            )],
            "spec.access.rules[0].from[1].serviceAccount: \"agent\"",
            "namespace/name or namespace/*",
        ),
        (
            vec![
                rule(None, vec![sa("a/b")], vec![tools(&[])]),
                rule(None, vec![sa("a/b"), source(|_| {})], vec![tools(&[])]),
            ],
            "spec.access.rules[1].from[1]: sets nothing",
            "authenticated: true",
        ),
        (
            vec![rule(None, vec![], vec![tools(&[])])],
            "spec.access.rules[0].from: is empty",
            "serviceAccount",
        ),
        (
            vec![rule(None, vec![sa("a/b")], vec![])],
            "spec.access.rules[0].to: is empty",
            "method",
        ),
        (
            vec![rule(
                None,
                vec![sa("a/b")],
                vec![
                    tools(&["x"]),
                    AccessTargetSpec {
                        method: "ping".into(),
                        names: vec!["x".into()],
                    },
                ],
            )],
            "spec.access.rules[0].to[1].names: ping names nothing",
            "remove names",
        ),
        (
            vec![rule(None, vec![sa("a/b")], vec![tools(&["x", ""])])],
            "spec.access.rules[0].to[0].names[1]: is empty",
            "\"*\"",
        ),
        (
            vec![rule(None, vec![sa("a/b")], vec![AccessTargetSpec::default()])],
            "spec.access.rules[0].to[0].method: is empty",
            "tools/call",
        ),
        (
            vec![
                rule(Some("same"), vec![sa("a/b")], vec![tools(&[])]),
                rule(Some("same"), vec![sa("a/c")], vec![tools(&[])]),
            ],
            "spec.access.rules[1].name: \"same\"",
            "unique",
        ),
        (vec![], "spec.access.rules: is empty", "leave access out"),
    ];
    for (i, (rules, field, fix)) in cases.into_iter().enumerate() {
        let mut s = guarded(vec![]);
        s.access = Some(AccessSpec { rules });
        let errors = errors_of(&s);
        assert_eq!(errors.len(), 1, "case {i}: {errors:?}");
        assert!(errors[0].starts_with(field), "case {i}: {errors:?}");
        assert!(errors[0].contains(fix), "case {i}: {errors:?}");
    }
}

#[test]
fn access_without_authentication_is_refused_with_the_fix() {
    let rules = AccessSpec {
        rules: vec![rule(None, vec![sa("a/b")], vec![tools(&[])])],
    };
    for auth in [
        None,
        Some(AuthSpec {
            enabled: Some(false),
            ..Default::default()
        }),
    ] {
        let mut s = spec(&[("app", "weather")]);
        s.auth = auth;
        s.access = Some(rules.clone());
        let errors = errors_of(&s);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.access: access rules need authentication"),
            "{errors:?}"
        );
        assert!(errors[0].contains("turn on spec.auth"), "{errors:?}");
    }
    // `auth: {}` takes the issuers from the policy: accepted.
    let mut s = spec(&[("app", "weather")]);
    s.auth = Some(AuthSpec::default());
    s.access = Some(rules);
    assert_eq!(errors_of(&s), Vec::<String>::new());
}

#[test]
fn audit_validation_names_the_field() {
    let mut s = guarded(vec![]);
    s.audit = Some(AuditSpec {
        max_argument_bytes: Some(0),
        redact: vec!["ok".into(), " ".into()],
        ..Default::default()
    });
    assert_eq!(
        errors_of(&s),
        [
            "spec.audit.maxArgumentBytes: must be at least 1 (leave it out for 1024)",
            "spec.audit.redact[1]: is empty: it would redact every argument field; name the fields to redact",
        ]
    );
    // The policy's sections are checked the same way.
    let policy = MCPGuardPolicySpec {
        access: Some(AccessSpec {
            rules: vec![rule(None, vec![sa("nope")], vec![tools(&[])])],
        }),
        audit: Some(AuditSpec {
            max_argument_bytes: Some(-1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let fields: Vec<_> = crate::validate::validate_policy(&policy)
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.access.rules[0].from[0].serviceAccount",
            "spec.audit.maxArgumentBytes"
        ]
    );
}

#[test]
fn the_named_methods_are_the_guards() {
    for m in crate::crd::NAMED_METHODS {
        assert!(mcp_guard_config::access::named_by(m).is_some(), "{m}");
    }
    for m in [
        "tools/list",
        "ping",
        "initialize",
        "resources/list",
        "prompts/list",
        "x/y",
    ] {
        assert!(mcp_guard_config::access::named_by(m).is_none(), "{m}");
    }
}

#[test]
fn the_summary_is_short() {
    assert_eq!(summary(&[]), "");
    assert_eq!(summary(&["a", "b", "c"]), "a,b,c");
    assert_eq!(summary(&["a", "b", "c", "d", "e"]), "a,b,c (+2 more)");
}
