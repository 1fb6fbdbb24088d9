use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::GuardConfig;

fn policy(rules: serde_json::Value) -> AccessPolicy {
    let config: AccessConfig = serde_json::from_value(json!({ "rules": rules })).unwrap();
    config.compile().unwrap()
}

fn sa(ns_name: &str) -> Identity {
    Identity {
        issuer: "https://kubernetes.default.svc".into(),
        subject: Some(format!("system:serviceaccount:{}", ns_name.replace('/', ":"))),
        client_id: None,
        scopes: Vec::new(),
        groups: Vec::new(),
        service_account: Some(ns_name.into()),
        expires_at: u64::MAX,
    }
}

fn user(sub: &str, client: &str, scopes: &[&str], groups: &[&str]) -> Identity {
    Identity {
        issuer: "https://auth.example.com".into(),
        subject: Some(sub.into()),
        client_id: Some(client.into()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        service_account: None,
        expires_at: u64::MAX,
    }
}

fn rules() -> AccessPolicy {
    policy(json!([
        { "name": "agents-read", "from": [{ "serviceAccount": "team-a/agent" }, { "serviceAccount": "team-b/*" }],
          "to": [{ "method": "tools/call", "names": ["read_*", "search"] }, { "method": "resources/read", "names": ["file:///docs/*"] }] },
        { "name": "sre", "from": [{ "group": "sre", "clientId": "console" }],
          "to": [{ "method": "tools/call" }, { "method": "prompts/get" }] },
        { "name": "admins", "from": [{ "scope": "mcp:admin" }], "to": [{ "method": "admin/reset" }] },
        { "name": "everyone", "from": [{ "authenticated": true }], "to": [{ "method": "tools/call", "names": ["echo"] }] }
    ]))
}

fn decide(
    p: &AccessPolicy,
    id: Option<&Identity>,
    method: &str,
    name: Option<&str>,
) -> Result<String, Reason> {
    p.decide(id, Some(method), name)
        .map(|a| match a {
            Allowed::Plumbing => "plumbing".to_owned(),
            Allowed::Rule(r) => r.to_owned(),
        })
        .map_err(|d| d.reason)
}

#[test]
fn rules_allow_their_callers_their_calls_and_nothing_else() {
    let p = rules();
    let agent = sa("team-a/agent");
    assert_eq!(
        decide(&p, Some(&agent), "tools/call", Some("read_file")),
        Ok("agents-read".into())
    );
    assert_eq!(
        decide(&p, Some(&agent), "tools/call", Some("search")),
        Ok("agents-read".into())
    );
    assert_eq!(
        decide(&p, Some(&agent), "resources/read", Some("file:///docs/a/b.md")),
        Ok("agents-read".into())
    );
    assert_eq!(
        decide(&p, Some(&agent), "tools/call", Some("delete_file")),
        Err(Reason::ToolNotAllowed)
    );
    assert_eq!(
        decide(&p, Some(&agent), "tools/call", Some("searchx")),
        Err(Reason::ToolNotAllowed)
    );
    assert_eq!(
        decide(&p, Some(&agent), "prompts/get", Some("x")),
        Err(Reason::ToolNotAllowed)
    );
    assert_eq!(
        decide(&p, Some(&agent), "resources/read", Some("file:///etc/passwd")),
        Err(Reason::ToolNotAllowed)
    );
    // A namespace wildcard, and an account of another namespace.
    assert_eq!(
        decide(&p, Some(&sa("team-b/any")), "tools/call", Some("read_x")),
        Ok("agents-read".into())
    );
    assert_eq!(
        decide(&p, Some(&sa("team-c/agent")), "tools/call", Some("read_x")),
        Err(Reason::ToolNotAllowed)
    );
    assert_eq!(
        decide(&p, Some(&sa("team-a/agent2")), "tools/call", Some("read_x")),
        Err(Reason::ToolNotAllowed)
    );
    // Every field of a source must match.
    assert_eq!(
        decide(
            &p,
            Some(&user("u", "console", &[], &["sre"])),
            "tools/call",
            Some("x")
        ),
        Ok("sre".into())
    );
    assert_eq!(
        decide(
            &p,
            Some(&user("u", "cli", &[], &["sre"])),
            "tools/call",
            Some("x")
        ),
        Err(Reason::ToolNotAllowed)
    );
    assert_eq!(
        decide(
            &p,
            Some(&user("u", "console", &[], &["dev"])),
            "prompts/get",
            Some("x")
        ),
        Err(Reason::ToolNotAllowed)
    );
    // Methods that name nothing: a rule on the method; anything else is denied as a method.
    assert_eq!(
        decide(
            &p,
            Some(&user("u", "c", &["mcp:admin"], &[])),
            "admin/reset",
            None
        ),
        Ok("admins".into())
    );
    assert_eq!(
        decide(&p, Some(&user("u", "c", &["mcp"], &[])), "admin/reset", None),
        Err(Reason::MethodNotAllowed)
    );
    assert_eq!(
        decide(&p, Some(&agent), "sampling/createMessage", None),
        Err(Reason::MethodNotAllowed)
    );
    // Anyone verified.
    assert_eq!(
        decide(&p, Some(&user("u", "c", &[], &[])), "tools/call", Some("echo")),
        Ok("everyone".into())
    );
}

#[test]
fn plumbing_stays_open_and_unverified_callers_match_no_rule() {
    let p = rules();
    for method in [
        "initialize",
        "ping",
        "notifications/initialized",
        "notifications/cancelled",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "server/discover",
    ] {
        assert_eq!(decide(&p, None, method, None), Ok("plumbing".into()), "{method}");
    }
    assert_eq!(
        decide(&p, None, "tools/call", Some("echo")),
        Err(Reason::ToolNotAllowed)
    );
}

#[test]
fn a_call_the_guard_cannot_read_is_denied() {
    let p = rules();
    let agent = sa("team-a/agent");
    assert_eq!(
        decide(&p, Some(&agent), "tools/call", None),
        Err(Reason::ToolNotAllowed)
    );
    assert_eq!(
        decide(&p, Some(&agent), "resources/read", None),
        Err(Reason::ToolNotAllowed)
    );
    assert_eq!(
        p.decide(Some(&agent), None, None).unwrap_err().reason,
        Reason::MethodNotAllowed
    );
    // A name on a method that names nothing is ignored, not used to match.
    assert_eq!(
        decide(
            &p,
            Some(&user("u", "c", &["mcp:admin"], &[])),
            "admin/reset",
            Some("zzz")
        ),
        Ok("admins".into())
    );
}

#[test]
fn denials_say_who_called_and_what() {
    let d = rules()
        .decide(Some(&sa("team-a/agent")), Some("tools/call"), Some("delete_file"))
        .unwrap_err();
    assert_eq!(d.received, "tools/call delete_file");
    assert_eq!(d.detail.as_deref(), Some("caller: service account team-a/agent"));
    assert_eq!(d.status(), 403);
}

#[test]
fn bad_sections_are_refused_naming_the_entry() {
    let bad = |rules: serde_json::Value| {
        let config: AccessConfig = serde_json::from_value(json!({ "rules": rules })).unwrap();
        config.compile().unwrap_err().to_string()
    };
    assert!(bad(json!([])).contains("access.rules is empty"));
    assert!(
        bad(json!([{ "from": [], "to": [{ "method": "tools/call" }] }]))
            .contains("access.rules[0].from is empty")
    );
    assert!(
        bad(json!([{ "from": [{}], "to": [{ "method": "tools/call" }] }])).contains("from[0] sets nothing")
    );
    assert!(
        bad(json!([{ "from": [{ "serviceAccount": "agent" }], "to": [{ "method": "tools/call" }] }]))
            .contains("serviceAccount \"agent\"")
    );
    assert!(bad(json!([{ "from": [{ "authenticated": true }], "to": [] }])).contains("to is empty"));
    assert!(
        bad(json!([{ "from": [{ "authenticated": true }], "to": [{ "method": "ping", "names": ["x"] }] }]))
            .contains("names nothing")
    );
    assert!(bad(json!([{ "from": [{ "authenticated": true }], "to": [{ "method": "tools/call", "names": [""] }] }]))
        .contains("names[0] is empty"));
    let no_auth = json!({ "allowedHosts": ["a"], "access": { "rules": [
        { "from": [{ "authenticated": true }], "to": [{ "method": "tools/call" }] }] } });
    let config = GuardConfig::from_json(no_auth.to_string().as_bytes()).unwrap();
    assert!(
        config
            .compile()
            .unwrap_err()
            .to_string()
            .contains("need authentication")
    );
}

/// The reference: a glob as a regular language, matched by plain recursion.
fn glob_reference(p: &[char], t: &[char]) -> bool {
    match (p.first(), t.first()) {
        (None, _) => t.is_empty(),
        (Some('*'), _) => glob_reference(&p[1..], t) || (!t.is_empty() && glob_reference(p, &t[1..])),
        (Some(_), None) => false,
        (Some('?'), Some(_)) => glob_reference(&p[1..], &t[1..]),
        (Some(c), Some(d)) => c == d && glob_reference(&p[1..], &t[1..]),
    }
}

proptest! {
    #[test]
    fn glob_agrees_with_the_reference(p in "[ab*?/]{0,8}", t in "[ab/é]{0,10}") {
        let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
        prop_assert_eq!(glob(&p, &t), glob_reference(&pc, &tc), "{:?} ~ {:?}", p, t);
    }
}
