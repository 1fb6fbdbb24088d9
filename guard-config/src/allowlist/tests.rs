use super::*;
use crate::{PatternError, Rate};

fn allowlist(hosts: &[&str], origins: &[&str]) -> Allowlist {
    Allowlist::compile(&GuardConfig {
        allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
        allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .unwrap()
}

fn one(v: &str) -> HeaderSeen<'_> {
    HeaderSeen {
        first: Some(v.as_bytes()),
        count: 1,
    }
}

fn facts<'a>(host: Option<&'a str>, origin: Option<&'a str>) -> RequestFacts<'a> {
    RequestFacts {
        host: host.map(one).unwrap_or_default(),
        origin: origin.map(one).unwrap_or_default(),
        ..Default::default()
    }
}

fn reason(v: &Verdict) -> Option<Reason> {
    match v {
        Verdict::Allow => None,
        Verdict::Deny(d) => Some(d.reason),
    }
}

#[test]
fn host_and_origin_table() {
    let list = allowlist(
        &[
            "mcp.example.com",
            "*.apps.example.com",
            "web.ns.svc:8080",
            "127.0.0.1:*",
            "[::1]",
        ],
        &["https://app.example.org", "http://localhost:3000"],
    );
    use Reason::*;
    let cases: &[(Option<&str>, Option<&str>, Option<Reason>)] = &[
        (Some("mcp.example.com"), None, None),
        (Some("MCP.example.com.:443"), None, None),
        (Some("x.apps.example.com"), None, None),
        (Some("x.y.apps.example.com"), None, Some(HostNotAllowed)),
        (Some("web.ns.svc:8080"), None, None),
        (Some("web.ns.svc"), None, Some(HostNotAllowed)),
        (Some("web.ns.svc:9090"), None, Some(HostNotAllowed)),
        (Some("127.0.0.1:8000"), None, None),
        (Some("[::1]:8000"), None, None),
        (Some("evil.com"), None, Some(HostNotAllowed)),
        (Some("localhost"), None, Some(HostNotAllowed)),
        (Some(""), None, Some(MalformedHost)),
        (Some("mcp.example.com@evil.com"), None, Some(MalformedHost)),
        (Some("mcp.example.com:80.evil.com"), None, Some(MalformedHost)),
        (Some("mcp.example.com:99999"), None, Some(MalformedHost)),
        (Some("mcp.example.com "), None, Some(MalformedHost)),
        (None, None, Some(MissingHost)),
        // origins
        (Some("mcp.example.com"), Some("https://app.example.org"), None),
        (Some("mcp.example.com"), Some("https://app.example.org:443"), None),
        (
            Some("mcp.example.com"),
            Some("http://app.example.org"),
            Some(OriginNotAllowed),
        ),
        (Some("mcp.example.com"), Some("http://localhost:3000"), None),
        (
            Some("mcp.example.com"),
            Some("http://localhost:3001"),
            Some(OriginNotAllowed),
        ),
        // same-origin: the origin of an allowed host
        (Some("mcp.example.com"), Some("https://mcp.example.com"), None),
        (Some("mcp.example.com"), Some("http://mcp.example.com:8080"), None),
        (Some("mcp.example.com"), Some("https://x.apps.example.com"), None),
        (Some("web.ns.svc:8080"), Some("http://web.ns.svc:8080"), None),
        (
            Some("web.ns.svc:8080"),
            Some("http://web.ns.svc"),
            Some(OriginNotAllowed),
        ),
        (
            Some("mcp.example.com"),
            Some("ftp://mcp.example.com"),
            Some(OriginNotAllowed),
        ),
        // DNS rebinding: host is allowed, page origin is the attacker
        (
            Some("127.0.0.1:8000"),
            Some("http://attacker.test:8000"),
            Some(OriginNotAllowed),
        ),
        (Some("mcp.example.com"), Some("null"), Some(OriginNotAllowed)),
        (
            Some("mcp.example.com"),
            Some("https://app.example.org/"),
            Some(MalformedOrigin),
        ),
        (
            Some("mcp.example.com"),
            Some("app.example.org"),
            Some(MalformedOrigin),
        ),
        (Some("mcp.example.com"), Some(""), Some(MalformedOrigin)),
        // host is checked first
        (Some("evil.com"), Some("null"), Some(HostNotAllowed)),
    ];
    for (host, origin, want) in cases {
        let v = list.check(&facts(*host, *origin));
        assert_eq!(reason(&v), *want, "host {host:?} origin {origin:?}: {v:?}");
    }
}

#[test]
fn statuses() {
    assert_eq!(Reason::HostNotAllowed.status(), 421);
    assert_eq!(Reason::OriginNotAllowed.status(), 403);
    assert_eq!(Reason::MalformedHost.status(), 400);
    assert_eq!(Reason::MalformedOrigin.status(), 400);
    assert_eq!(Reason::MultipleHostHeaders.status(), 400);
    assert_eq!(Reason::MultipleOriginHeaders.status(), 400);
    assert_eq!(Reason::MissingHost.status(), 400);
    let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
}

#[test]
fn null_origin_only_when_allowed() {
    let list = allowlist(&["a.com"], &["null"]);
    assert_eq!(list.check(&facts(Some("a.com"), Some("null"))), Verdict::Allow);
    let v = list.check(&facts(Some("a.com"), Some("https://b.com")));
    assert_eq!(reason(&v), Some(Reason::OriginNotAllowed));
}

#[test]
fn multiple_headers_are_malformed() {
    let list = allowlist(&["a.com"], &["null"]);
    let two = HeaderSeen {
        first: Some(b"a.com".as_slice()),
        count: 2,
    };
    let v = list.check(&RequestFacts {
        host: two,
        ..Default::default()
    });
    assert_eq!(reason(&v), Some(Reason::MultipleHostHeaders));
    let v = list.check(&RequestFacts {
        host: one("a.com"),
        origin: HeaderSeen {
            first: Some(b"null"),
            count: 2,
        },
        ..Default::default()
    });
    assert_eq!(reason(&v), Some(Reason::MultipleOriginHeaders));
    let seen = HeaderSeen::collect([b"x".as_slice(), b"y".as_slice()]);
    assert_eq!(
        seen,
        HeaderSeen {
            first: Some(b"x".as_slice()),
            count: 2
        }
    );
}

#[test]
fn target_authority_wins_over_host() {
    let list = allowlist(&["a.com"], &[]);
    // absolute-form HTTP/1.1: the URI's authority is checked, the Host header ignored
    let v = list.check(&RequestFacts {
        target_authority: Some("evil.com"),
        host: one("a.com"),
        ..Default::default()
    });
    assert_eq!(reason(&v), Some(Reason::HostNotAllowed));
    let v = list.check(&RequestFacts {
        target_authority: Some("a.com"),
        host: one("evil.com"),
        ..Default::default()
    });
    assert_eq!(v, Verdict::Allow);
    // an https absolute-form target implies port 443 for port-specific entries
    let list = allowlist(&["a.com:443"], &[]);
    let v = list.check(&RequestFacts {
        target_authority: Some("a.com"),
        scheme: Some("https"),
        ..Default::default()
    });
    assert_eq!(v, Verdict::Allow);
    let v = list.check(&RequestFacts {
        target_authority: Some("a.com"),
        scheme: Some("http"),
        ..Default::default()
    });
    assert_eq!(reason(&v), Some(Reason::HostNotAllowed));
    // HTTP/2: :authority checked; a disagreeing Host header is malformed
    let list = allowlist(&["a.com"], &[]);
    let h2 = |authority, host: Option<&'static str>| RequestFacts {
        target_authority: Some(authority),
        http2: true,
        host: host.map(one).unwrap_or_default(),
        ..Default::default()
    };
    assert_eq!(list.check(&h2("a.com", None)), Verdict::Allow);
    assert_eq!(list.check(&h2("A.com", Some("a.COM"))), Verdict::Allow);
    assert_eq!(
        reason(&list.check(&h2("a.com", Some("evil.com")))),
        Some(Reason::MalformedHost)
    );
    assert_eq!(
        reason(&list.check(&h2("evil.com", None))),
        Some(Reason::HostNotAllowed)
    );
}

#[test]
fn denial_carries_received_and_detail() {
    let list = allowlist(&["a.com"], &[]);
    let Verdict::Deny(d) = list.check(&facts(Some("Evil.com:8080"), None)) else {
        panic!()
    };
    assert_eq!(d.received, "Evil.com:8080");
    let Verdict::Deny(d) = list.check(&facts(Some("a.com:99999"), None)) else {
        panic!()
    };
    assert_eq!(d.received, "a.com:99999");
    assert!(d.detail.unwrap().contains("port"));
}

#[test]
fn hints_name_where_to_allow() {
    let mut list = allowlist(&["a.com"], &[]);
    let d = Denial::new(Reason::HostNotAllowed, "Evil.com:8080");
    let hint = list.hint(&d);
    assert!(hint.contains("--allow-host evil.com"), "{hint}");
    let hint = list.hint(&Denial::new(Reason::OriginNotAllowed, "https://x.com"));
    assert!(hint.contains("--allow-origin https://x.com"), "{hint}");
    list.source = Some(ConfigSource {
        kind: "MCPServer".into(),
        namespace: Some("team-a".into()),
        name: "weather".into(),
    });
    let hint = list.hint(&d);
    assert!(
        hint.contains("spec.hosts of MCPServer team-a/weather") && hint.contains("Ingress"),
        "{hint}"
    );
    let hint = list.hint(&Denial::new(Reason::OriginNotAllowed, "null"));
    assert!(
        hint.contains("spec.origins of MCPServer team-a/weather") && hint.contains("sandboxed"),
        "{hint}"
    );
}

#[test]
fn compile_errors_name_the_entry() {
    let err = GuardConfig {
        allowed_hosts: vec!["a.com".into(), "*".into()],
        ..Default::default()
    }
    .compile()
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidHost { index: 1, entry, source: PatternError::BareWildcard } if entry == "*")
    );
    assert!(err.to_string().starts_with("allowedHosts[1] \"*\""), "{err}");
    let err = GuardConfig {
        allowed_hosts: vec!["a.com".into()],
        allowed_origins: vec!["a.com".into()],
        ..Default::default()
    }
    .compile()
    .unwrap_err();
    assert!(err.to_string().contains("allowedOrigins[0]"), "{err}");
    let err = GuardConfig::default().compile().unwrap_err();
    assert!(matches!(err, ConfigError::NoAllowedHosts));
    let err = GuardConfig::from_json(br#"{"allowedHost": ["a.com"]}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn documented_example_parses() {
    let json = br#"{
      "mode": "enforce",
      "allowedHosts": ["mcp.example.com", "*.apps.example.com", "**.gw.example.com", "web.ns.svc:8080"],
      "allowedOrigins": ["https://mcp.example.com", "https://*.apps.example.com"],
      "source": { "kind": "MCPServer", "namespace": "team-a", "name": "weather" },
      "limits": { "maxRequestBodyBytes": 4194304 }
    }"#;
    let cfg = GuardConfig::from_json(json).unwrap();
    let list = cfg.compile().unwrap();
    assert_eq!(list.hosts().len(), 4);
    assert_eq!(list.origins().len(), 2);
    assert_eq!(list.limits.max_request_body_bytes, Some(4194304));
    assert_eq!(
        list.check(&facts(
            Some("a.b.gw.example.com"),
            Some("https://q.apps.example.com")
        )),
        Verdict::Allow
    );
}

#[test]
fn rate_limits_and_trusted_proxies_parse_as_documented() {
    let json = br#"{
      "allowedHosts": ["mcp.example.com"],
      "limits": {
        "maxRequestBodyBytes": 4194304,
        "perClient": { "requestsPerMinute": 600, "burst": 100 },
        "perMethod": { "tools/call": { "requestsPerMinute": 120 } },
        "perTool": { "render_report": { "requestsPerMinute": 6, "burst": 2 } },
        "maxConcurrentRequestsPerClient": 16,
        "maxStreamsPerClient": 4
      },
      "trustedProxies": ["10.0.0.0/8", "fd00::/8"]
    }"#;
    let list = GuardConfig::from_json(json).unwrap().compile().unwrap();
    let limits = &list.limits;
    assert_eq!(limits.per_client.unwrap().burst(), 100);
    assert_eq!(
        limits.per_method["tools/call"].burst(),
        120,
        "burst defaults to a minute's worth"
    );
    assert_eq!(limits.per_tool["render_report"].burst(), 2);
    assert!(limits.limits_clients() && limits.needs_method());
    assert!(list.trusts("10.1.2.3".parse().unwrap()));
    assert!(!list.trusts("192.0.2.1".parse().unwrap()));
    assert!(!Limits::default().limits_clients());
}

#[test]
fn bad_rate_limits_and_trusted_proxies_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#""limits": {"perClient": {"requestsPerMinute": 0}}"#,
            "limits.perClient.requestsPerMinute",
        ),
        (
            r#""limits": {"perMethod": {"tools/call": {"requestsPerMinute": 1, "burst": 0}}}"#,
            "limits.perMethod[\"tools/call\"].burst",
        ),
        (
            r#""limits": {"perTool": {" ": {"requestsPerMinute": 1}}}"#,
            "limits.perTool: a method or tool name",
        ),
        (
            r#""limits": {"maxStreamsPerClient": 0}"#,
            "limits.maxStreamsPerClient must be greater than 0",
        ),
        (
            r#""limits": {"maxConcurrentRequestsPerClient": 0}"#,
            "maxConcurrentRequestsPerClient",
        ),
        (
            r#""trustedProxies": ["10.0.0.1/8"]"#,
            "trustedProxies[0] \"10.0.0.1/8\" is not a CIDR",
        ),
        (r#""trustedProxies": ["proxy"]"#, "trustedProxies[0]"),
        (
            r#""limits": {"perClient": {"requestsPerMinute": 1, "brust": 2}}"#,
            "unknown field `brust`",
        ),
    ];
    for (fields, want) in cases {
        let json = format!(r#"{{"allowedHosts": ["a.com"], {fields}}}"#);
        let err = GuardConfig::from_json(json.as_bytes())
            .and_then(|c| c.compile())
            .unwrap_err();
        assert!(err.to_string().contains(want), "{fields}: {err}");
    }
}

#[test]
fn server_limits_fall_back_to_the_policy_per_setting() {
    let rate = |n| Rate {
        requests_per_minute: n,
        burst: None,
    };
    let server = Limits {
        per_client: Some(rate(10)),
        per_method: [("tools/call".to_owned(), rate(1))].into(),
        ..Limits::default()
    };
    let policy = Limits {
        max_request_body_bytes: Some(1024),
        per_client: Some(rate(99)),
        per_method: [
            ("tools/call".to_owned(), rate(99)),
            ("tools/list".to_owned(), rate(5)),
        ]
        .into(),
        max_streams_per_client: Some(2),
        ..Limits::default()
    };
    let merged = server.or(&policy);
    assert_eq!(merged.per_client, Some(rate(10)));
    assert_eq!(merged.per_method["tools/call"], rate(1));
    assert_eq!(merged.per_method["tools/list"], rate(5));
    assert_eq!(merged.max_streams_per_client, Some(2));
    assert_eq!(merged.max_request_body_bytes, Some(1024));
}

#[test]
fn audit_is_on_with_auth_unless_switched_off() {
    let config = |json: &str| GuardConfig::from_json(json.as_bytes()).unwrap().compile();
    let auth = r#""auth": { "resources": ["https://mcp.example.com/mcp"],
        "issuers": [{ "issuer": "https://auth.example.com" }] }"#;
    let hosts = r#""allowedHosts": ["mcp.example.com"]"#;
    assert_eq!(config(&format!("{{ {hosts} }}")).unwrap().audit, None);
    let with_auth = config(&format!("{{ {hosts}, {auth} }}")).unwrap();
    assert_eq!(with_auth.audit, Some(AuditConfig::default()));
    let off = config(&format!(
        r#"{{ {hosts}, {auth}, "audit": {{ "enabled": false }} }}"#
    ))
    .unwrap();
    assert_eq!(off.audit, None);
    let without_auth = config(&format!(r#"{{ {hosts}, "audit": {{ "arguments": true }} }}"#)).unwrap();
    let audit = without_auth.audit.unwrap();
    assert!(audit.arguments);
    assert_eq!(
        audit.max_argument_bytes(),
        crate::DEFAULT_MAX_ARGUMENT_BYTES as usize
    );
}

#[test]
fn audit_settings_are_checked() {
    let config = |audit: &str| {
        GuardConfig::from_json(format!(r#"{{ "allowedHosts": ["a.com"], "audit": {audit} }}"#).as_bytes())
            .and_then(|c| c.compile())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(
        config(r#"{ "maxArgumentBytes": 0 }"#)
            .unwrap_err()
            .contains("audit.maxArgumentBytes")
    );
    assert!(
        config(r#"{ "redact": ["ssn", " "] }"#)
            .unwrap_err()
            .contains("audit.redact[1]")
    );
    assert!(
        config(r#"{ "argument": true }"#)
            .unwrap_err()
            .contains("unknown field")
    );
    assert_eq!(
        config(r#"{ "arguments": true, "maxArgumentBytes": 64, "redact": ["ssn"] }"#),
        Ok(())
    );
}

#[test]
fn audit_redacts_fields_containing_a_name() {
    let audit = AuditConfig {
        redact: vec!["SSN".into()],
        ..AuditConfig::default()
    };
    for field in [
        "password",
        "access_token",
        "X-Api-Key",
        "apiKey",
        "user_ssn",
        "Cookie",
    ] {
        assert!(audit.redacts(field), "{field}");
    }
    for field in ["city", "query", "keyword"] {
        assert!(!audit.redacts(field), "{field}");
    }
}

mod memo {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    const HOSTS: &[&str] = &[
        "mcp.example.com",
        "MCP.Example.com",
        "mcp.example.com:80",
        "mcp.example.com:8443",
        "mcp.example.com.",
        "a.apps.example.com",
        "apps.example.com",
        "other.example.com",
        "localhost:8080",
        "localhost",
        "secure.example.com",
        "[::1]:8080",
        "bad host",
        "user@mcp.example.com",
        "",
    ];
    const ORIGINS: &[&str] = &[
        "https://app.example.com",
        "http://mcp.example.com",
        "https://mcp.example.com:443",
        "http://localhost:8080",
        "null",
        "https://evil.example.net",
        "app.example.com",
        "",
    ];
    const SCHEMES: &[&str] = &["http", "https", "ftp"];

    fn seen(pool: &'static [&'static str]) -> impl Strategy<Value = HeaderSeen<'static>> {
        (0..pool.len(), 0..3usize).prop_map(move |(i, count)| HeaderSeen {
            first: (count > 0).then(|| pool[i].as_bytes()),
            count,
        })
    }

    fn request() -> impl Strategy<Value = (usize, RequestFacts<'static>)> {
        (
            0..3usize,
            proptest::option::weighted(0.2, proptest::sample::select(HOSTS)),
            any::<bool>(),
            proptest::option::weighted(0.2, proptest::sample::select(SCHEMES)),
            seen(HOSTS),
            seen(ORIGINS),
        )
            .prop_map(|(list, target_authority, http2, scheme, host, origin)| {
                (
                    list,
                    RequestFacts {
                        target_authority,
                        http2,
                        scheme,
                        host,
                        origin,
                    },
                )
            })
    }

    /// The facts with one field changed: every field the check reads.
    fn neighbours(f: &RequestFacts<'static>) -> Vec<RequestFacts<'static>> {
        let more = |h: HeaderSeen<'static>, pool: &'static [&'static str]| HeaderSeen {
            first: h.first.or(Some(pool[0].as_bytes())),
            count: h.count + 1,
        };
        let other = |v: Option<&'static [u8]>, pool: &'static [&'static str]| {
            pool.iter().map(|p| p.as_bytes()).find(|p| Some(*p) != v)
        };
        vec![
            RequestFacts {
                host: more(f.host, HOSTS),
                ..*f
            },
            RequestFacts {
                origin: more(f.origin, ORIGINS),
                ..*f
            },
            RequestFacts {
                host: HeaderSeen {
                    first: other(f.host.first, HOSTS),
                    ..f.host
                },
                ..*f
            },
            RequestFacts {
                origin: HeaderSeen {
                    first: other(f.origin.first, ORIGINS),
                    ..f.origin
                },
                ..*f
            },
            RequestFacts {
                http2: !f.http2,
                ..*f
            },
            RequestFacts {
                scheme: SCHEMES.iter().copied().find(|s| Some(*s) != f.scheme),
                ..*f
            },
            RequestFacts { scheme: None, ..*f },
            RequestFacts {
                target_authority: HOSTS.iter().copied().find(|h| Some(*h) != f.target_authority),
                ..*f
            },
            RequestFacts {
                target_authority: None,
                ..*f
            },
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Differential: over a connection's requests (drawn from small pools, so the same facts come again) and
        /// allowlists swapped under it (a reload; the third is a new compile of the first), the remembered check
        /// answers as the allowlist's own check, every time.
        #[test]
        fn the_remembered_check_is_the_check(requests in proptest::collection::vec(request(), 1..40)) {
            let lists = [
                // `secure.example.com:443`: a Host without a port matches it by the scheme's default port.
                Arc::new(allowlist(&["mcp.example.com", "*.apps.example.com", "localhost:8080", "secure.example.com:443"], &["https://app.example.com"])),
                Arc::new(allowlist(&["other.example.com", "[::1]:8080"], &["null"])),
                Arc::new(allowlist(&["mcp.example.com", "*.apps.example.com", "localhost:8080", "secure.example.com:443"], &["https://app.example.com"])),
            ];
            let mut memo = CheckMemo::default();
            for (list, facts) in &requests {
                // Each request again (the memo may answer it), under the next allowlist (a reload between two
                // requests), and again under its own.
                for list in [*list, *list, (*list + 1) % 3, *list] {
                    prop_assert_eq!(memo.check(&lists[list], facts), lists[list].check(facts), "{:?}", facts);
                }
                // Then its neighbours, each right after it: one field the check reads changed, the rest the same.
                for near in neighbours(facts) {
                    prop_assert_eq!(memo.check(&lists[*list], facts), lists[*list].check(facts), "{:?}", facts);
                    prop_assert_eq!(memo.check(&lists[*list], &near), lists[*list].check(&near), "{:?}", near);
                }
            }
        }
    }

    #[test]
    fn a_remembered_allow_is_not_carried_to_another_allowlist_or_to_other_facts() {
        let open = Arc::new(allowlist(&["mcp.example.com"], &[]));
        let closed = Arc::new(allowlist(&["other.example.com"], &[]));
        let mut memo = CheckMemo::default();
        let ok = facts(Some("mcp.example.com"), None);
        assert_eq!(memo.check(&open, &ok), Verdict::Allow);
        assert_eq!(reason(&memo.check(&closed, &ok)), Some(Reason::HostNotAllowed));
        assert_eq!(memo.check(&open, &ok), Verdict::Allow);
        let twice = RequestFacts {
            host: HeaderSeen {
                first: Some(b"mcp.example.com"),
                count: 2,
            },
            ..ok
        };
        assert_eq!(
            reason(&memo.check(&open, &twice)),
            Some(Reason::MultipleHostHeaders)
        );
    }
}
