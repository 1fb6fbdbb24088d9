use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::*;

fn spec() -> MCPServerSpec {
    MCPServerSpec {
        selector: LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "weather".to_string())])),
            match_expressions: None,
        },
        port: 8000,
        ..Default::default()
    }
}

fn fields(spec: &MCPServerSpec) -> Vec<String> {
    validate_spec(spec).into_iter().map(|e| e.field).collect()
}

#[test]
fn valid_spec_has_no_errors() {
    let mut s = spec();
    s.hosts = vec![
        "mcp.example.com".into(),
        "mcp.example.com:8443".into(),
        "mcp.example.com:*".into(),
        "*.apps.example.com".into(),
        "**.gw.example.com".into(),
        "10.0.0.1".into(),
        "[::1]:8080".into(),
        "Example.COM.".into(),
    ];
    s.origins = vec![
        "https://mcp.example.com".into(),
        "http://localhost:3000".into(),
        "null".into(),
    ];
    s.services = Some(vec!["weather".into()]);
    s.policy_ref = Some("strict".into());
    assert_eq!(validate_spec(&s), vec![]);
}

#[test]
fn bad_hosts_are_reported_by_index() {
    for bad in [
        "*",
        "a@b.com",
        "h:99999",
        "h:80.evil.com",
        "a b.com",
        "",
        "http://a.com",
        "a.*.com",
        "h:0",
    ] {
        let mut s = spec();
        s.hosts = vec!["ok.example.com".into(), bad.into()];
        assert_eq!(fields(&s), vec!["spec.hosts[1]"], "host {bad:?}");
    }
}

#[test]
fn bad_origins_are_reported() {
    for bad in [
        "example.com",
        "https://",
        "https://a.com/path",
        "1http://a.com",
        "https://a.com:99999",
    ] {
        let mut s = spec();
        s.origins = vec![bad.into()];
        assert_eq!(fields(&s), vec!["spec.origins[0]"], "origin {bad:?}");
    }
}

#[test]
fn selector_and_port_rules() {
    let mut s = spec();
    s.selector = LabelSelector::default();
    s.port = 0;
    assert_eq!(fields(&s), vec!["spec.selector", "spec.port"]);

    let mut s = spec();
    s.selector.match_expressions = Some(vec![
        LabelSelectorRequirement {
            key: "tier".into(),
            operator: "In".into(),
            values: None,
        },
        LabelSelectorRequirement {
            key: "x".into(),
            operator: "Exists".into(),
            values: Some(vec!["a".into()]),
        },
        LabelSelectorRequirement {
            key: "y".into(),
            operator: "Like".into(),
            values: None,
        },
        LabelSelectorRequirement {
            key: "-bad".into(),
            operator: "DoesNotExist".into(),
            values: None,
        },
    ]);
    assert_eq!(
        fields(&s),
        vec![
            "spec.selector.matchExpressions[0].values",
            "spec.selector.matchExpressions[1].values",
            "spec.selector.matchExpressions[2].operator",
            "spec.selector.matchExpressions[3].key",
        ]
    );
}

#[test]
fn names_are_dns_subdomains() {
    let mut s = spec();
    s.ingresses = Some(vec!["good".into(), "Bad_Name".into()]);
    s.policy_ref = Some("".into());
    assert_eq!(fields(&s), vec!["spec.ingresses[1]", "spec.policyRef"]);
}

/// The CRD's CEL rules refuse a bare `*` and URLs as hosts, and origins without a scheme, before the webhook
/// sees them: each must be something the guard's parser refuses too, or the CRD would refuse a valid spec.
#[test]
fn what_the_crd_refuses_the_guard_refuses_too() {
    for host in ["*", "https://a.example.com", "http://a.example.com:8080"] {
        assert!(check_host_pattern(host).is_err(), "host {host:?}");
    }
    for origin in ["example.com", "example.com:443", "*.example.com"] {
        assert!(check_origin_pattern(origin).is_err(), "origin {origin:?}");
    }
    assert!(check_origin_pattern("null").is_ok());
}

#[test]
fn policy_entries_are_checked_with_the_guards_parser() {
    let policy = MCPGuardPolicySpec {
        allowed_hosts: vec![
            "gateway.internal".into(),
            "*".into(),
            "a.example.com:99999".into(),
        ],
        allowed_origins: vec!["https://ok.example.com".into(), "ok.example.com".into()],
        ..Default::default()
    };
    let errors = validate_policy(&policy);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.allowedHosts[1]",
            "spec.allowedHosts[2]",
            "spec.allowedOrigins[1]"
        ]
    );
    assert!(
        errors[0].message.contains("would allow every host"),
        "{}",
        errors[0]
    );
    assert!(errors[2].message.contains("needs a scheme"), "{}", errors[2]);
    assert_eq!(validate_policy(&MCPGuardPolicySpec::default()), vec![]);
}

#[test]
fn rate_limits_and_trusted_proxies_are_checked_per_field() {
    let rate = |requests_per_minute, burst| RateSpec {
        requests_per_minute,
        burst,
    };
    let mut s = spec();
    s.rate_limits = Some(RateLimitSpec {
        per_client: Some(rate(600, Some(100))),
        per_method: BTreeMap::from([("tools/call".to_string(), rate(60, None))]),
        per_tool: BTreeMap::from([("render".to_string(), rate(6, Some(2)))]),
        max_concurrent_requests_per_client: Some(16),
        max_streams_per_client: Some(4),
        max_tracked_clients: None,
    });
    s.trusted_proxies = vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "fd00::/8".into()];
    assert_eq!(fields(&s), Vec::<String>::new());

    s.rate_limits = Some(RateLimitSpec {
        per_client: Some(rate(0, None)),
        per_method: BTreeMap::from([
            ("tools/call".to_string(), rate(60, Some(0))),
            (String::new(), rate(1, None)),
        ]),
        max_streams_per_client: Some(0),
        ..Default::default()
    });
    s.trusted_proxies = vec!["10.0.0.1/8".into(), "proxy.internal".into()];
    assert_eq!(
        fields(&s),
        vec![
            "spec.rateLimits.perClient.requestsPerMinute",
            "spec.rateLimits.perMethod[\"tools/call\"].burst",
            "spec.rateLimits.perMethod",
            "spec.rateLimits.maxStreamsPerClient",
            "spec.trustedProxies[0]",
            "spec.trustedProxies[1]",
        ]
    );
    let errors = validate_spec(&s);
    assert!(
        errors[4].message.contains("did you mean 10.0.0.0/8"),
        "{}",
        errors[4]
    );

    let policy = MCPGuardPolicySpec {
        trusted_proxies: vec!["10.0.0.0/33".into()],
        ..Default::default()
    };
    let errors = validate_policy(&policy);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "spec.trustedProxies[0]");
}

#[test]
fn extension_origins_pass_and_a_web_wildcard_does_not() {
    for ok in [
        "chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai",
        "moz-extension://*",
        "vscode-webview://*",
    ] {
        assert!(check_origin_pattern(ok).is_ok(), "{ok}");
    }
    let err = check_origin_pattern("https://*").expect_err("a web wildcard");
    assert!(err.contains("would allow every web page"), "{err}");
}

#[test]
fn traffic_guard_port_is_checked() {
    use crate::crd::{TrafficLayout, TrafficSpec};
    let with = |layout, guard_port| MCPServerSpec {
        traffic: Some(TrafficSpec { layout, guard_port }),
        ..spec()
    };
    assert!(fields(&with(Some(TrafficLayout::GuardPort), None)).is_empty());
    assert!(fields(&with(Some(TrafficLayout::GuardPort), Some(18080))).is_empty());
    assert_eq!(fields(&with(None, Some(18080))), vec!["spec.traffic.guardPort"]);
    assert_eq!(
        fields(&with(Some(TrafficLayout::GuardPort), Some(15081))),
        vec!["spec.traffic.guardPort"]
    );
    let same = MCPServerSpec {
        port: 15080,
        ..with(Some(TrafficLayout::GuardPort), None)
    };
    assert_eq!(fields(&same), vec!["spec.traffic.guardPort"]);
}

#[test]
fn server_ref_stands_alone() {
    let reference = |group: &str, kind: &str, name: &str| MCPServerSpec {
        server_ref: Some(crate::crd::ServerRef {
            api_group: group.into(),
            kind: kind.into(),
            name: name.into(),
        }),
        ..Default::default()
    };
    let ok = reference("mcp.x-k8s.io", "MCPServer", "fetch");
    assert!(validate_spec(&ok).is_empty(), "{:?}", validate_spec(&ok));
    // GuardPort may be written out (with its own guard port); SharedPort does not fit their servers.
    let mut s = ok.clone();
    s.traffic = Some(crate::crd::TrafficSpec {
        layout: Some(crate::crd::TrafficLayout::GuardPort),
        guard_port: Some(9000),
    });
    assert!(validate_spec(&s).is_empty());
    s.traffic = Some(crate::crd::TrafficSpec {
        layout: Some(crate::crd::TrafficLayout::SharedPort),
        guard_port: None,
    });
    assert_eq!(fields(&s), vec!["spec.traffic.layout"]);
    assert!(validate_spec(&s)[0].message.contains("GuardPort"));

    // Both forms at once: each extra field is named, with the fix.
    let mut s = spec();
    s.server_ref = ok.server_ref.clone();
    assert_eq!(fields(&s), vec!["spec.selector", "spec.port"]);
    assert!(
        validate_spec(&s)[0]
            .message
            .contains("remove it, or remove spec.serverRef")
    );

    // Neither form: the missing port says the alternative.
    let neither = MCPServerSpec::default();
    assert_eq!(fields(&neither), vec!["spec.selector", "spec.port"]);
    assert!(validate_spec(&neither)[1].message.contains("spec.serverRef"));

    // Only the SIG's MCPServers can be referenced, by a name that is also a label value.
    assert_eq!(
        fields(&reference("toolhive.stacklok.dev", "MCPServer", "fetch")),
        vec!["spec.serverRef.apiGroup"]
    );
    assert_eq!(
        fields(&reference("mcp.x-k8s.io", "Deployment", "fetch")),
        vec!["spec.serverRef.kind"]
    );
    for bad in ["Fetch", "", &"a".repeat(64)] {
        assert_eq!(
            fields(&reference("mcp.x-k8s.io", "MCPServer", bad)),
            vec!["spec.serverRef.name"],
            "{bad:?}"
        );
    }
}
