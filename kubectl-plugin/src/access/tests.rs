//! `explain --as-...`: the guard's decision, the rule that allows a call, and what to add when none does.
#![allow(clippy::unwrap_used)]

use mcp_guard_config::access::{RuleConfig, SourceConfig, TargetConfig};
use mcp_guard_config::{AccessConfig, AuthConfig, GuardConfig, Mode};

use super::*;

fn config(rules: Vec<RuleConfig>) -> GuardConfig {
    GuardConfig {
        allowed_hosts: vec!["weather.team-a.svc".into()],
        auth: Some(AuthConfig::default()),
        access: (!rules.is_empty()).then_some(AccessConfig { rules }),
        ..Default::default()
    }
}

fn rule(name: &str, from: SourceConfig, method: &str, names: &[&str]) -> RuleConfig {
    RuleConfig {
        name: Some(name.into()),
        from: vec![from],
        to: vec![TargetConfig {
            method: method.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }],
    }
}

fn sa(name: &str) -> SourceConfig {
    SourceConfig {
        service_account: Some(name.into()),
        ..Default::default()
    }
}

fn as_sa(name: &str) -> Identity {
    Caller {
        service_account: Some(name.into()),
        ..Default::default()
    }
    .identity()
    .unwrap()
}

fn tool(name: &str) -> Call {
    Call::new(None, Some(name)).unwrap()
}

fn rules() -> GuardConfig {
    config(vec![
        rule("readers", sa("team-a/reader"), "tools/call", &["get_*", "search"]),
        rule("ops", sa("ops/*"), "tools/call", &[]),
    ])
}

#[test]
fn an_allowed_call_names_its_rule() {
    let (ok, text) = explain(
        &rules(),
        "team-a/weather",
        &[],
        &as_sa("team-a/reader"),
        &tool("get_forecast"),
    );
    assert!(ok, "{text}");
    assert!(text.contains("Verdict: allowed by rule \"readers\""), "{text}");
    assert!(text.contains("caller: service account team-a/reader"), "{text}");
    let (ok, text) = explain(
        &rules(),
        "team-a/weather",
        &[],
        &as_sa("ops/oncall"),
        &tool("delete"),
    );
    assert!(ok && text.contains("rule \"ops\""), "{text}");
}

#[test]
fn a_refused_call_says_the_reason_and_what_to_add() {
    let (ok, text) = explain(
        &rules(),
        "team-a/weather",
        &[],
        &as_sa("team-a/reader"),
        &tool("delete"),
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("refused with 403 tool_not_allowed: \"tools/call delete\""),
        "{text}"
    );
    // The caller already has a rule for tools/call: widen it, or add one.
    assert!(
        text.contains("add \"delete\" to the names of rule \"readers\""),
        "{text}"
    );
    assert!(
        text.contains("add a rule to spec.access.rules of MCPServer team-a/weather"),
        "{text}"
    );
    assert!(
        text.contains(r#"- from: [{"serviceAccount":"team-a/reader"}]"#),
        "{text}"
    );
    assert!(
        text.contains(r#"to: [{"method":"tools/call","names":["delete"]}]"#),
        "{text}"
    );
    // A caller no rule names: only a new rule.
    let (ok, text) = explain(
        &rules(),
        "team-a/weather",
        &[],
        &as_sa("team-b/agent"),
        &tool("search"),
    );
    assert!(!ok, "{text}");
    assert!(!text.contains("to the names of rule"), "{text}");
    assert!(text.contains(r#"{"serviceAccount":"team-b/agent"}"#), "{text}");
}

#[test]
fn the_suggested_rule_is_one_the_guard_loads_and_that_allows_the_call() {
    let callers = [
        as_sa("team-b/agent"),
        Caller {
            subject: Some("alice".into()),
            ..Default::default()
        }
        .identity()
        .unwrap(),
        Caller {
            groups: vec!["sre".into()],
            ..Default::default()
        }
        .identity()
        .unwrap(),
        Caller {
            client_id: Some("cli".into()),
            ..Default::default()
        }
        .identity()
        .unwrap(),
        Caller {
            scopes: vec!["tools:write".into()],
            ..Default::default()
        }
        .identity()
        .unwrap(),
    ];
    for id in callers {
        let call = tool("deploy");
        let (ok, text) = explain(&rules(), "team-a/weather", &[], &id, &call);
        assert!(!ok, "{text}");
        // Read the suggestion back and add it: the guard then allows the call.
        let line = |prefix: &str| {
            let l = text.lines().find_map(|l| l.trim().strip_prefix(prefix)).unwrap();
            l.trim_start_matches('[').trim_end_matches(']').to_string()
        };
        let mut config = rules();
        config.access.as_mut().unwrap().rules.push(RuleConfig {
            name: None,
            from: vec![serde_json::from_str(&line("- from: ")).unwrap()],
            to: vec![serde_json::from_str(&line("to: ")).unwrap()],
        });
        let (ok, after) = explain(&config, "team-a/weather", &[], &id, &call);
        assert!(ok, "{text}\n{after}");
    }
}

#[test]
fn plumbing_no_rules_and_audit_mode() {
    let (ok, text) = explain(
        &rules(),
        "ns/s",
        &[],
        &as_sa("x/y"),
        &Call::new(Some("tools/list"), None).unwrap(),
    );
    assert!(ok && text.contains("protocol plumbing"), "{text}");
    let (ok, text) = explain(&config(vec![]), "ns/s", &[], &as_sa("x/y"), &tool("t"));
    assert!(ok && text.contains("no access rules"), "{text}");
    let mut audit = rules();
    audit.mode = Mode::Audit;
    let (ok, text) = explain(&audit, "ns/s", &[], &as_sa("x/y"), &tool("t"));
    assert!(ok && text.contains("would refuse (audit mode"), "{text}");
}

#[test]
fn the_rules_show_where_they_come_from() {
    let status = vec![AccessRuleStatus {
        name: "ops".into(),
        source: "MCPGuardPolicy/default".into(),
        from: Vec::new(),
        to: Vec::new(),
    }];
    let (_, text) = explain(&rules(), "ns/s", &status, &as_sa("x/y"), &tool("t"));
    assert!(
        text.contains("ops (MCPGuardPolicy/default): from serviceAccount ops/* to tools/call"),
        "{text}"
    );
    assert!(
        text.contains("readers: from serviceAccount team-a/reader to tools/call get_*,search"),
        "{text}"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    assert!(Call::new(None, None).unwrap_err().to_string().contains("--tool"));
    assert!(Call::new(Some("ping"), Some("x")).is_err());
    assert!(Call::new(Some("resources/read"), Some("file:///a")).is_ok());
    let bad = Caller {
        service_account: Some("agent".into()),
        ..Default::default()
    };
    assert!(bad.identity().unwrap_err().to_string().contains("NAMESPACE/NAME"));
    let id = as_sa("team-a/agent");
    assert_eq!(id.subject.as_deref(), Some("system:serviceaccount:team-a:agent"));
}

#[test]
fn rules_without_authentication_cannot_be_told() {
    let mut config = rules();
    config.auth = None;
    let (ok, text) = explain(
        &config,
        "ns/s",
        &[],
        &as_sa("team-a/reader"),
        &tool("get_forecast"),
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("cannot tell") && text.contains("turn on spec.auth"),
        "{text}"
    );
}
