use super::*;
use mcp_guard_config::GuardConfig;
use proptest::prelude::*;

fn allowlist(mode: Mode) -> Allowlist {
    Allowlist::compile(&GuardConfig {
        mode,
        allowed_hosts: vec!["mcp.example.com".into()],
        allowed_origins: vec!["https://app.example.com".into()],
        ..Default::default()
    })
    .unwrap()
}

fn head(method: &str, target: &str, version: Version, fields: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(target)
        .version(version);
    for (n, v) in fields {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(fields: &[(&str, &str)]) -> Parts {
    head("GET", "/mcp", Version::HTTP_11, fields)
}

/// No keys of any issuer, at the epoch.
fn no_tokens() -> TokenCheck<'static> {
    struct NoKeys;
    impl mcp_guard_config::auth::KeySource for NoKeys {
        fn keys(&self, _: &str) -> Option<std::sync::Arc<mcp_guard_config::auth::KeySet>> {
            None
        }
    }
    TokenCheck {
        keys: &NoKeys,
        now: 0,
        refetched: false,
        cache: None,
    }
}

struct Run {
    decision: Decision,
    head: Parts,
}

fn run_with(mut h: Parts, upstream: &str, preserve_host: bool, mode: Mode) -> Run {
    let upstream = Upstream::parse(upstream, false).unwrap();
    let ip = HeaderValue::from_static("10.1.2.3");
    let hop = Hop {
        upstream: &upstream,
        peer_ip: &ip,
        preserve_host,
        trusted_proxy: false,
        memo: &Mutex::default(),
    };
    let decision = decide(&mut h, &Arc::new(allowlist(mode)), &hop, &no_tokens());
    Run { decision, head: h }
}

fn run(h: Parts) -> Run {
    run_with(h, "http://127.0.0.1:8000", false, Mode::Enforce)
}

fn refused(h: Parts) -> Denial {
    match run(h).decision {
        Decision::Refuse(d) => d,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The upstream head's fields as sorted `name: value` lines (a header map keeps no order across removals).
fn fields(h: &Parts) -> Vec<String> {
    let mut lines: Vec<String> = h
        .headers
        .iter()
        .map(|(n, v)| format!("{}: {}", n, v.to_str().unwrap()))
        .collect();
    lines.sort();
    lines
}

fn sorted<const N: usize>(lines: [&str; N]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

#[test]
fn an_allowed_request_becomes_the_upstreams_head() {
    let r = run(get(&[
        ("host", "MCP.example.com:8443"),
        ("origin", "https://app.example.com"),
        ("mcp-session-id", "abc"),
        ("content-length", "0"),
        ("accept", "text/event-stream"),
    ]));
    assert_eq!(
        r.decision,
        Decision::Forward {
            audited: None,
            caller: None
        }
    );
    assert_eq!(r.head.uri, "/mcp");
    assert_eq!(r.head.version, Version::HTTP_11);
    assert_eq!(
        fields(&r.head),
        sorted([
            "origin: http://127.0.0.1:8000",
            "mcp-session-id: abc",
            "accept: text/event-stream",
            // Kept for the proxy to settle against the body's length (`settle_length`).
            "content-length: 0",
            "host: 127.0.0.1:8000",
            "x-forwarded-for: 10.1.2.3",
            "x-forwarded-host: MCP.example.com:8443",
            "x-forwarded-proto: http",
        ])
    );
}

#[test]
fn preserve_host_sends_the_checked_host_and_origin_on() {
    let r = run_with(
        get(&[("host", "mcp.example.com"), ("origin", "https://app.example.com")]),
        "http://127.0.0.1:8000",
        true,
        Mode::Enforce,
    );
    assert_eq!(r.head.headers["host"], "mcp.example.com");
    assert_eq!(r.head.headers["origin"], "https://app.example.com");
    // An h2c upstream gets the client's authority as `:authority`.
    let r = run_with(
        get(&[("host", "mcp.example.com")]),
        "h2c://127.0.0.1:8000",
        true,
        Mode::Enforce,
    );
    assert_eq!(r.head.uri, "http://mcp.example.com/mcp");
    assert_eq!(r.head.version, Version::HTTP_2);
    assert!(!r.head.headers.contains_key("host"));
}

#[test]
fn absolute_targets_are_forwarded_in_origin_form_with_their_query() {
    for (target, upstream_uri) in [
        ("http://mcp.example.com/mcp?x=1", "/mcp?x=1"),
        ("http://mcp.example.com?x=1", "/?x=1"),
        ("https://mcp.example.com", "/"),
    ] {
        let r = run(head(
            "GET",
            target,
            Version::HTTP_11,
            &[("host", "ignored.example")],
        ));
        assert_eq!(
            r.decision,
            Decision::Forward {
                audited: None,
                caller: None
            },
            "{target}"
        );
        assert_eq!(r.head.uri, upstream_uri, "{target}");
        assert_eq!(r.head.headers["x-forwarded-host"], "mcp.example.com");
    }
}

#[test]
fn what_the_guard_will_not_guess_about_is_refused() {
    let cases: Vec<(Parts, &str)> = vec![
        (
            head(
                "CONNECT",
                "mcp.example.com:443",
                Version::HTTP_11,
                &[("host", "mcp.example.com")],
            ),
            "CONNECT",
        ),
        (
            head("GET", "ftp://mcp.example.com/x", Version::HTTP_11, &[]),
            "only http:// and https://",
        ),
        (
            head("GET", "ws://mcp.example.com/x", Version::HTTP_11, &[]),
            "only http:// and https://",
        ),
        (
            head("OPTIONS", "*", Version::HTTP_11, &[("host", "mcp.example.com")]),
            "asterisk-form",
        ),
        (
            get(&[
                ("host", "mcp.example.com"),
                ("transfer-encoding", "chunked"),
                ("content-length", "5"),
            ]),
            "both content-length and transfer-encoding",
        ),
        (
            get(&[
                ("host", "mcp.example.com"),
                ("transfer-encoding", "identity, chunked"),
            ]),
            "single chunked",
        ),
        (
            get(&[
                ("host", "mcp.example.com"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ]),
            "single chunked",
        ),
        (
            get(&[("host", "mcp.example.com"), ("transfer-encoding", "gzip")]),
            "single chunked",
        ),
        (
            get(&[("host", "mcp.example.com"), ("transfer-encoding", "chunked, ")]),
            "single chunked",
        ),
        (
            head(
                "POST",
                "/mcp",
                Version::HTTP_10,
                &[("host", "mcp.example.com"), ("transfer-encoding", "chunked")],
            ),
            "HTTP/1.0",
        ),
        (
            get(&[
                ("host", "mcp.example.com"),
                ("content-length", "5"),
                ("content-length", "6"),
            ]),
            "conflicting content-length",
        ),
        (
            get(&[("host", "mcp.example.com"), ("content-length", "+5")]),
            "invalid content-length",
        ),
    ];
    for (h, detail) in cases {
        let what = format!("{} {} {:?}", h.method, h.uri, h.headers);
        let d = refused(h);
        assert_eq!(d.reason, Reason::MalformedRequest, "{what}");
        assert!(
            d.detail.as_deref().unwrap_or("").contains(detail),
            "{what}: {d:?}"
        );
    }
    // The same framing checks come before the allowlist: a forbidden host is still a malformed request.
    let d = refused(get(&[
        ("host", "evil.example"),
        ("transfer-encoding", "gzip, chunked"),
    ]));
    assert_eq!(d.reason, Reason::MalformedRequest);
    // A single chunked coding in any case is fine; hyper re-encodes it chunked, in the guard's own spelling.
    let r = run(get(&[
        ("host", "mcp.example.com"),
        ("transfer-encoding", "Chunked"),
    ]));
    assert_eq!(
        r.decision,
        Decision::Forward {
            audited: None,
            caller: None
        }
    );
    assert_eq!(r.head.headers["transfer-encoding"], "chunked");
    // An h2c upstream has no transfer codings.
    let r = run_with(
        get(&[("host", "mcp.example.com"), ("transfer-encoding", "chunked")]),
        "h2c://127.0.0.1:8000",
        false,
        Mode::Enforce,
    );
    assert!(!r.head.headers.contains_key("transfer-encoding"));
}

#[test]
fn the_allowlist_decides_and_audit_mode_forwards_unchanged_origins() {
    assert_eq!(
        refused(get(&[("host", "evil.example")])).reason,
        Reason::HostNotAllowed
    );
    assert_eq!(
        refused(get(&[
            ("host", "mcp.example.com"),
            ("origin", "https://evil.example")
        ]))
        .reason,
        Reason::OriginNotAllowed
    );
    let r = run_with(
        get(&[("host", "mcp.example.com"), ("origin", "https://evil.example")]),
        "http://127.0.0.1:8000",
        false,
        Mode::Audit,
    );
    match r.decision {
        Decision::Forward { audited: Some(d), .. } => assert_eq!(d.reason, Reason::OriginNotAllowed),
        other => panic!("{other:?}"),
    }
    // Not rewritten: a server with its own check still sees the origin that failed.
    assert_eq!(r.head.headers["origin"], "https://evil.example");
}

#[test]
fn the_upstream_gets_one_host_whatever_the_client_sent() {
    // Audit mode forwards a request with two Host fields; the upstream sees one, its own (h2c: none, the
    // authority is in the URI).
    let two = || get(&[("host", "mcp.example.com"), ("host", "evil.example")]);
    for (upstream, host) in [
        ("http://127.0.0.1:8000", Some("127.0.0.1:8000")),
        ("h2c://127.0.0.1:8000", None),
    ] {
        let r = run_with(two(), upstream, false, Mode::Audit);
        assert!(
            matches!(&r.decision, Decision::Forward { audited: Some(d), .. } if d.reason == Reason::MultipleHostHeaders),
            "{:?}",
            r.decision
        );
        let hosts: Vec<_> = r.head.headers.get_all("host").iter().collect();
        assert_eq!(hosts, host.into_iter().collect::<Vec<_>>(), "{upstream}");
    }
}

#[test]
fn bodies_over_the_limit_are_refused_by_their_declared_length() {
    let d = refused(get(&[("host", "mcp.example.com"), ("content-length", "4194305")]));
    assert_eq!(d.reason, Reason::RequestBodyTooLarge);
    let r = run(get(&[("host", "mcp.example.com"), ("content-length", "4194304")]));
    assert_eq!(
        r.decision,
        Decision::Forward {
            audited: None,
            caller: None
        }
    );
}

#[test]
fn hop_by_hop_and_connection_named_fields_stay_behind_but_never_the_guards_own() {
    let r = run(get(&[
        ("host", "mcp.example.com"),
        ("origin", "https://app.example.com"),
        ("connection", "keep-alive, X-Secret, content-length, origin, host"),
        ("connection", "x-forwarded-proto, x-forwarded-for,x-other"),
        ("x-secret", "1"),
        ("x-other", "2"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("upgrade", "websocket"),
        ("expect", "100-continue"),
        ("content-length", "3"),
        ("mcp-session-id", "abc"),
        ("mcp-protocol-version", "2025-06-18"),
        ("last-event-id", "7"),
    ]));
    assert_eq!(
        fields(&r.head),
        sorted([
            "origin: http://127.0.0.1:8000",
            "mcp-session-id: abc",
            "mcp-protocol-version: 2025-06-18",
            "last-event-id: 7",
            "content-length: 3",
            "host: 127.0.0.1:8000",
            "x-forwarded-for: 10.1.2.3",
            "x-forwarded-host: mcp.example.com",
            "x-forwarded-proto: http",
        ])
    );
}

#[test]
fn client_forwarding_fields_are_replaced_not_trusted() {
    let r = run(get(&[
        ("host", "mcp.example.com"),
        ("forwarded", "for=1.2.3.4;host=evil.example"),
        ("x-forwarded-for", "1.2.3.4"),
        ("X-Forwarded-Host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
        ("x-original-host", "evil.example"),
    ]));
    assert_eq!(
        fields(&r.head),
        sorted([
            "host: 127.0.0.1:8000",
            "x-forwarded-for: 10.1.2.3",
            "x-forwarded-host: mcp.example.com",
            "x-forwarded-proto: http",
        ])
    );
}

#[test]
fn response_heads_lose_hop_by_hop_fields_only() {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("connection", "keep-alive, x-hop, content-length"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("x-hop", "1"),
        ("content-length", "12"),
        ("content-type", "text/event-stream"),
        ("mcp-session-id", "abc"),
    ] {
        h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    strip_response(&mut h);
    let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-length", "content-type", "mcp-session-id"]);
}

/// Header fields of a table case.
type Fields = &'static [(&'static str, &'static str)];

/// An allowlist trusting the proxies in 10.0.0.0/8, with extension origins: one exact, one per-scheme wildcard.
fn behind_proxies() -> Allowlist {
    Allowlist::compile(&GuardConfig {
        allowed_hosts: vec!["mcp.example.com".into()],
        allowed_origins: vec![
            "chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai".into(),
            "moz-extension://*".into(),
        ],
        trusted_proxies: vec!["10.0.0.0/8".into()],
        ..Default::default()
    })
    .unwrap()
}

fn decide_from(peer: &str, h: &mut Parts, allowlist: &Allowlist) -> Decision {
    let upstream = Upstream::parse("http://127.0.0.1:8000", false).unwrap();
    let peer: std::net::IpAddr = peer.parse().unwrap();
    let client = client_address(&h.headers, allowlist, peer);
    let ip = HeaderValue::try_from(client.to_string()).unwrap();
    let hop = Hop {
        upstream: &upstream,
        peer_ip: &ip,
        preserve_host: false,
        trusted_proxy: allowlist.trusts(peer),
        memo: &Mutex::default(),
    };
    decide(h, &Arc::new(allowlist.clone()), &hop, &no_tokens())
}

#[test]
fn a_trusted_proxys_forwarded_host_is_checked_instead_of_host() {
    let allowlist = behind_proxies();
    let ok = Decision::Forward {
        audited: None,
        caller: None,
    };
    let host = |d: Decision| match d {
        Decision::Refuse(d) => Some(d.reason),
        Decision::Forward {
            audited: None,
            caller: None,
        } => None,
        other => panic!("{other:?}"),
    };
    // (peer, fields, refusal)
    let cases: &[(&str, Fields, Option<Reason>)] = &[
        // The proxy rewrote Host; its X-Forwarded-Host says what the client addressed.
        (
            "10.0.0.5",
            &[
                ("host", "backend.internal"),
                ("x-forwarded-host", "mcp.example.com"),
            ],
            None,
        ),
        (
            "10.0.0.5",
            &[("host", "mcp.example.com"), ("x-forwarded-host", "evil.example")],
            Some(Reason::HostNotAllowed),
        ),
        // The nearest hop's entry is the last one; what the client sent sits to its left.
        (
            "10.0.0.5",
            &[
                ("host", "b"),
                ("x-forwarded-host", "evil.example, mcp.example.com"),
            ],
            None,
        ),
        (
            "10.0.0.5",
            &[
                ("host", "b"),
                ("x-forwarded-host", "mcp.example.com"),
                ("x-forwarded-host", "evil.example"),
            ],
            Some(Reason::HostNotAllowed),
        ),
        (
            "10.0.0.5",
            &[
                ("host", "b"),
                (
                    "forwarded",
                    "host=evil.example, for=10.0.0.9;host=\"mcp.example.com:443\"",
                ),
            ],
            None,
        ),
        (
            "10.0.0.5",
            &[("host", "b"), ("forwarded", "for=10.0.0.9;host=evil.example")],
            Some(Reason::HostNotAllowed),
        ),
        (
            "10.0.0.5",
            &[
                ("host", "b"),
                ("forwarded", "for=10.0.0.9"),
                ("x-forwarded-host", "mcp.example.com"),
            ],
            None,
        ),
        // Both, disagreeing: which one the proxy wrote is a guess the guard does not make.
        (
            "10.0.0.5",
            &[
                ("host", "b"),
                ("forwarded", "host=mcp.example.com"),
                ("x-forwarded-host", "evil.example"),
            ],
            Some(Reason::MalformedHost),
        ),
        (
            "10.0.0.5",
            &[("host", "b"), ("forwarded", "host=\"mcp.example.com")],
            Some(Reason::MalformedHost),
        ),
        (
            "10.0.0.5",
            &[("host", "b"), ("x-forwarded-host", "mcp.example.com:80.evil")],
            Some(Reason::MalformedHost),
        ),
        // A trusted proxy that forwards nothing passed the client's Host on: that is checked.
        ("10.0.0.5", &[("host", "mcp.example.com")], None),
        (
            "10.0.0.5",
            &[("host", "evil.example")],
            Some(Reason::HostNotAllowed),
        ),
        // Any other peer: its forwarding fields are ignored, as before.
        (
            "192.0.2.1",
            &[
                ("host", "backend.internal"),
                ("x-forwarded-host", "mcp.example.com"),
            ],
            Some(Reason::HostNotAllowed),
        ),
        (
            "192.0.2.1",
            &[("host", "mcp.example.com"), ("x-forwarded-host", "evil.example")],
            None,
        ),
        (
            "192.0.2.1",
            &[("host", "mcp.example.com"), ("forwarded", "host=\"broken")],
            None,
        ),
    ];
    for (peer, f, want) in cases {
        let mut h = get(f);
        assert_eq!(host(decide_from(peer, &mut h, &allowlist)), *want, "{peer} {f:?}");
    }
    // What the upstream is told: the checked host, and the client the proxy forwarded for.
    let mut h = get(&[
        ("host", "backend.internal"),
        ("x-forwarded-host", "mcp.example.com"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.9"),
    ]);
    assert_eq!(decide_from("10.0.0.5", &mut h, &allowlist), ok);
    assert_eq!(
        fields(&h),
        sorted([
            "host: 127.0.0.1:8000",
            "x-forwarded-for: 203.0.113.7",
            "x-forwarded-host: mcp.example.com",
            "x-forwarded-proto: http",
        ])
    );
}

#[test]
fn the_client_behind_trusted_proxies_is_the_nearest_untrusted_hop() {
    let allowlist = behind_proxies();
    let cases: &[(&str, &[&str], &str)] = &[
        ("10.0.0.5", &["203.0.113.7"], "203.0.113.7"),
        (
            "10.0.0.5",
            &["198.51.100.1, 203.0.113.7, 10.0.0.9"],
            "203.0.113.7",
        ),
        (
            "10.0.0.5",
            &["198.51.100.1", "203.0.113.7, 10.0.0.9"],
            "203.0.113.7",
        ),
        ("10.0.0.5", &["10.0.0.8, 10.0.0.9"], "10.0.0.8"),
        ("10.0.0.5", &["203.0.113.7:4711"], "203.0.113.7"),
        ("10.0.0.5", &["[2001:db8::1]:4711"], "2001:db8::1"),
        // Not an address: the walk ends at the trusted hop that added it.
        ("10.0.0.5", &["unknown, 10.0.0.9"], "10.0.0.9"),
        ("10.0.0.5", &[], "10.0.0.5"),
        // An untrusted peer is the client, whatever it claims.
        ("192.0.2.1", &["203.0.113.7"], "192.0.2.1"),
    ];
    for (peer, xff, want) in cases {
        let mut b = http::Request::builder();
        for v in *xff {
            b = b.header("x-forwarded-for", *v);
        }
        let h = b.body(()).unwrap().into_parts().0;
        let got = client_address(&h.headers, &allowlist, peer.parse().unwrap());
        assert_eq!(got.to_string(), *want, "{peer} {xff:?}");
    }
}

#[test]
fn extension_and_webview_origins_are_allowed_only_as_listed() {
    let allowlist = behind_proxies();
    let cases: &[(&str, Option<Reason>)] = &[
        ("chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai", None),
        (
            "chrome-extension://aaaabbbbccccddddeeeeffffgggghhhh",
            Some(Reason::OriginNotAllowed),
        ),
        ("moz-extension://5d5e8f6c-3c0b-4a8e-9b64-1f2e3d4c5b6a", None),
        (
            "vscode-webview://1ccsq3cs7d1c5crnmv8cbg1hgnl69vnuhmasab8m1htsqjkmg1ql",
            Some(Reason::OriginNotAllowed),
        ),
        ("https://evil.example", Some(Reason::OriginNotAllowed)),
    ];
    for (origin, want) in cases {
        let mut h = get(&[("host", "mcp.example.com"), ("origin", origin)]);
        let got = match decide_from("192.0.2.1", &mut h, &allowlist) {
            Decision::Refuse(d) => Some(d.reason),
            Decision::Forward {
                audited: None,
                caller: None,
            } => None,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, *want, "{origin}");
    }
}

#[test]
fn sse_streams_are_gets_that_accept_an_event_stream() {
    let cases: &[(&str, Fields, bool)] = &[
        ("GET", &[("accept", "text/event-stream")], true),
        ("GET", &[("accept", "application/json, Text/Event-Stream")], true),
        ("GET", &[("accept", "application/json")], false),
        ("GET", &[], false),
        (
            "POST",
            &[("accept", "application/json, text/event-stream")],
            false,
        ),
    ];
    for (method, f, want) in cases {
        assert_eq!(
            is_stream(&head(method, "/mcp", Version::HTTP_11, f)),
            *want,
            "{method} {f:?}"
        );
    }
}

/// MCP 2026-07-28 has no `GET` stream: its long-lived stream is the answer to a `subscriptions/listen` POST, which
/// the stream cap counts as it counts a `GET` stream, from the body the server will read. A body the guard cannot
/// read may be a listen: under a stream cap it counts as a stream.
#[test]
fn a_subscriptions_listen_opens_a_stream_as_the_body_tells_it() {
    let capped = Limits {
        max_streams_per_client: Some(1),
        ..Limits::default()
    };
    let uncapped = Limits {
        max_concurrent_requests_per_client: Some(1),
        ..Limits::default()
    };
    let listen = r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{}}"#;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#;
    let batch = format!("[{call},{listen}]");
    // The last key wins, as in the server's parser.
    let duplicated = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"subscriptions/listen"}"#;
    // `METHOD` is `method` to Go's encoding/json, not to Python's json: the guard cannot tell what runs.
    let unreadable = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","METHOD":"subscriptions/listen"}"#;
    let cases: &[(&str, &Limits, bool)] = &[
        (listen, &capped, true),
        (listen, &uncapped, true),
        (call, &capped, false),
        (&batch, &capped, true),
        (duplicated, &capped, true),
        (duplicated, &uncapped, true),
        (unreadable, &capped, true),
        (unreadable, &uncapped, false),
        (r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, &capped, false),
    ];
    for (body, limits, want) in cases {
        let mut scanner = peek::Scanner::default();
        scanner.feed(body.as_bytes());
        let h = head("POST", "/mcp", Version::HTTP_11, &[]);
        let calls = body_calls(scanner.peeked()).unwrap();
        assert_eq!(opens_stream(&h, &calls, limits), *want, "{body} {limits:?}");
    }
    let get = head(
        "GET",
        "/mcp",
        Version::HTTP_11,
        &[("accept", "text/event-stream")],
    );
    assert!(opens_stream(&get, &[], &capped));
    assert!(!opens_stream(
        &head("POST", "/mcp", Version::HTTP_11, &[]),
        &[],
        &capped
    ));
}

#[test]
fn a_response_counts_as_a_stream_by_its_content_type_unless_it_answers_a_post() {
    let cases: &[(&str, Fields, bool)] = &[
        ("GET", &[("content-type", "text/event-stream")], true),
        (
            "GET",
            &[("content-type", "Text/Event-Stream; charset=utf-8")],
            true,
        ),
        ("DELETE", &[("content-type", "text/event-stream")], true),
        ("GET", &[("content-type", "application/json")], false),
        ("GET", &[("content-type", "text/event-streams")], false),
        ("GET", &[], false),
        ("POST", &[("content-type", "text/event-stream")], false),
    ];
    for (method, f, want) in cases {
        let h = head(method, "/mcp", Version::HTTP_11, f);
        assert_eq!(counts_as_stream(&h.method, &h.headers), *want, "{method} {f:?}");
    }
}

#[test]
fn the_list_filter_takes_for_an_event_stream_whatever_a_client_may_read_as_one() {
    let cases: &[(Fields, bool)] = &[
        (&[("content-type", "text/event-stream")], true),
        (&[("content-type", " TEXT/EVENT-STREAM;charset=utf-8")], true),
        (&[("content-type", "text/event-streams")], true),
        (
            &[
                ("content-type", "application/json"),
                ("content-type", "text/event-stream"),
            ],
            true,
        ),
        (&[("content-type", "application/json")], false),
        (&[("content-type", "text/event")], false),
        (&[], false),
    ];
    for (f, want) in cases {
        let h = head("GET", "/mcp", Version::HTTP_11, f);
        assert_eq!(may_be_event_stream(&h.headers), *want, "{f:?}");
    }
}

#[test]
fn the_body_decides_what_a_call_is_charged_to_and_a_disagreeing_header_is_refused() {
    use rate::Call;
    let scanned = |body: &str| peek::scan(body.as_bytes());
    let call = |m: &'static str, t: Option<&'static str>| vec![Call::method(m, t)];
    let render = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"render"}}"#;
    let cut = r#"{"jsonrpc":"2.0","id":1,"params":{"arguments":{"pad":"xxxx"#;
    let twice = r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"cheap","name":"render"}}"#;
    let batch =
        r#"[{"method":"tools/call","params":{"name":"render"}},{"method":"ping"},{"id":2,"result":{}},7]"#;
    // (headers, body read, charged to, or refused with this detail)
    type Charged = Result<Vec<Call<'static>>, &'static str>;
    let cases: &[(Fields, Option<&str>, Charged)] = &[
        (&[], Some(render), Ok(call("tools/call", Some("render")))),
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "render")],
            Some(render),
            Ok(call("tools/call", Some("render"))),
        ),
        (
            &[("mcp-method", "tools/list")],
            Some(render),
            Err("mcp-method \"tools/list\" but the body says \"tools/call\""),
        ),
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "search")],
            Some(render),
            Err("mcp-name \"search\" but the body says \"render\""),
        ),
        (
            &[("mcp-method", "ping"), ("mcp-method", "ping")],
            Some(render),
            Err("more than one mcp-method header"),
        ),
        // Duplicate keys: the last wins, as the server's JSON parser reads them; the headers are held to that.
        (&[], Some(twice), Ok(call("tools/call", Some("render")))),
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "cheap")],
            Some(twice),
            Err("mcp-name \"cheap\" but the body says \"render\""),
        ),
        // The method is past the prefix: a header alone does not buy a looser limit.
        (&[("mcp-method", "ping")], Some(cut), Ok(vec![Call::Unreadable])),
        (&[], Some(cut), Ok(vec![Call::Unreadable])),
        // A batch: one call per element that is a request.
        (
            &[],
            Some(batch),
            Ok(vec![
                Call::method("tools/call", Some("render")),
                Call::method("ping", None),
            ]),
        ),
        (
            &[("mcp-method", "tools/call")],
            Some(batch),
            Err("mcp-method \"tools/call\" but the body says \"ping\""),
        ),
        // A response the client sends back (to a server's request) names no method.
        (&[], Some(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#), Ok(vec![])),
        // No body read (no rate limit, or no body): the headers as sent; a name is a tool only on tools/call.
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "render")],
            None,
            Ok(call("tools/call", Some("render"))),
        ),
        (
            &[("mcp-method", "prompts/get"), ("mcp-name", "draft")],
            None,
            Ok(call("prompts/get", None)),
        ),
        (&[], None, Ok(vec![])),
    ];
    for (f, body, want) in cases {
        let h = head("POST", "/mcp", Version::HTTP_11, f);
        let peeked = body.map(scanned);
        let got = mcp_calls(&h, peeked.as_ref());
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(&got, want, "{f:?} {body:?}"),
            (Err(d), Err(detail)) => {
                assert_eq!(d.reason, Reason::McpHeaderMismatch);
                assert_eq!(d.status(), 400);
                assert_eq!(d.detail.as_deref(), Some(*detail), "{f:?}");
            }
            (got, want) => panic!("{f:?} {body:?}: got {got:?}, want {want:?}"),
        }
    }
    // Audit mode forwards a request whose headers disagree, charged by its body: what the server runs.
    assert_eq!(
        body_calls(&scanned(render)),
        Ok(call("tools/call", Some("render")))
    );
    assert_eq!(body_calls(&scanned(cut)), Ok(vec![Call::Unreadable]));
}

#[test]
fn bodies_whose_calls_cannot_be_counted_are_refused() {
    let long_batch = format!(
        "[{}]",
        vec![r#"{"method":"tools/call","params":{"name":"render"}}"#; 300].join(",")
    );
    let cases: &[(&[u8], &str)] = &[
        (
            &long_batch.as_bytes()[..peek::PEEK_LIMIT],
            "a JSON-RPC batch that does not end, as valid JSON, within the first 8192 bytes",
        ),
        (
            br#"[{"method":"ping"} {"method":"ping"}]"#,
            "a JSON-RPC batch that does not end, as valid JSON, within the first 8192 bytes",
        ),
        // UTF-16 (Python's json reads it): the guard cannot see whether it is a batch.
        (
            b"\xff\xfe[\x00{\x00",
            "the body does not start with a JSON object or array (UTF-8) within the first 8192 bytes",
        ),
        (
            b"method=tools/call",
            "the body does not start with a JSON object or array (UTF-8) within the first 8192 bytes",
        ),
    ];
    for (body, detail) in cases {
        let d = body_calls(&peek::scan(body)).unwrap_err();
        assert_eq!((d.reason, d.status()), (Reason::UncountableBody, 400));
        assert_eq!(d.detail.as_deref(), Some(*detail));
    }
}

#[test]
fn fields_the_guard_decides_on_spelled_with_underscores_are_refused() {
    // The name sent, and the field it reads as to a server that takes `_` for `-` (`None`: passes unchanged).
    let table = [
        ("Transfer_Encoding", Some("transfer-encoding")),
        ("content_length", Some("content-length")),
        ("x_forwarded_for", Some("x-forwarded-for")),
        ("X_Forwarded_Host", Some("x-forwarded-host")),
        ("x-forwarded_proto", Some("x-forwarded-proto")),
        ("x_forwarded_anything", Some("x-forwarded-anything")),
        ("x_original_host", Some("x-original-host")),
        ("proxy_connection", Some("proxy-connection")),
        ("keep_alive", Some("keep-alive")),
        ("Mcp_Method", Some("mcp-method")),
        ("mcp_name", Some("mcp-name")),
        // Not the name of a field the guard decides on, with or without the `_`.
        ("host_", None),
        ("_origin", None),
        ("x_api_key", None),
        ("user_agent", None),
    ];
    for (name, field) in table {
        let h = get(&[("host", "mcp.example.com"), (name, "chunked")]);
        let sent = name.to_ascii_lowercase();
        match field {
            Some(field) => {
                let d = refused(h);
                assert_eq!(
                    (d.reason, d.received.as_str()),
                    (Reason::MalformedRequest, sent.as_str()),
                    "{name}"
                );
                let detail = d.detail.unwrap_or_default();
                assert!(
                    detail.contains(&format!("is {field} to servers")),
                    "{name}: {detail}"
                );
            }
            None => {
                let r = run(h);
                assert_eq!(
                    r.decision,
                    Decision::Forward {
                        audited: None,
                        caller: None
                    },
                    "{name}"
                );
                assert_eq!(r.head.headers[sent.as_str()], "chunked", "{name}");
            }
        }
    }
}

/// The one audit/enforce fold: enforce refuses whatever a rule refuses; audit forwards exactly the rules that judge
/// who may call what and how often, never a request whose framing, forwarded host or size is refused.
#[test]
fn audit_forwards_only_the_rules_that_judge_callers() {
    let all = [
        Rule::Framing,
        Rule::ForwardedHost,
        Rule::Allowlist,
        Rule::BodyLimit,
        Rule::Authentication,
        Rule::McpCalls,
        Rule::BodyWatch,
        Rule::Scopes,
        Rule::Access,
        Rule::RateLimits,
        Rule::StreamCap,
    ];
    let d = || Denial::new(Reason::HostNotAllowed, "x");
    for rule in all {
        assert_eq!(fold(Mode::Enforce, rule, d()), Fold::Refuse(d()), "{rule:?}");
        let audited = matches!(fold(Mode::Audit, rule, d()), Fold::Audit(_));
        let expected = !matches!(rule, Rule::Framing | Rule::ForwardedHost | Rule::BodyLimit);
        assert_eq!(audited, expected, "{rule:?} under audit");
    }
    // In audit mode, a request over the declared limit is refused even though its host is also not allowed.
    let h = get(&[("host", "evil.example"), ("content-length", "4194305")]);
    let Decision::Refuse(d) = run_with(h, "http://127.0.0.1:8000", false, Mode::Audit).decision else {
        panic!("a body over the limit is refused in audit mode too");
    };
    assert_eq!(d.reason, Reason::RequestBodyTooLarge);
    assert_eq!(d.received, "more than 4194304 bytes");
}

fn with_cors(mode: Mode, cors: bool) -> Allowlist {
    Allowlist::compile(&GuardConfig {
        mode,
        cors,
        allowed_hosts: vec!["mcp.example.com".into()],
        allowed_origins: vec!["https://app.example.com".into()],
        ..Default::default()
    })
    .unwrap()
}

fn decide_with(allowlist: &Allowlist, mut h: Parts) -> Decision {
    let upstream = Upstream::parse("http://127.0.0.1:8000", false).unwrap();
    let ip = HeaderValue::from_static("10.1.2.3");
    let hop = Hop {
        upstream: &upstream,
        peer_ip: &ip,
        preserve_host: false,
        trusted_proxy: false,
        memo: &Mutex::default(),
    };
    decide(&mut h, &Arc::new(allowlist.clone()), &hop, &no_tokens())
}

fn preflight_from(origin: &str) -> Parts {
    head(
        "OPTIONS",
        "/mcp",
        Version::HTTP_11,
        &[
            ("host", "mcp.example.com"),
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, mcp-name"),
        ],
    )
}

/// With CORS on, the guard answers a preflight from an allowed origin itself; one from another origin is refused
/// like any request from it; with CORS off (the default), or in audit mode for an origin not allowed, the
/// preflight is forwarded as before and the guard grants nothing.
#[test]
fn cors_preflights_are_answered_from_the_origin_allowlist() {
    let on = with_cors(Mode::Enforce, true);
    let Decision::Preflight(fields) = decide_with(&on, preflight_from("https://app.example.com")) else {
        panic!("answered by the guard");
    };
    assert_eq!(fields["access-control-allow-origin"], "https://app.example.com");
    // Same-origin pages of an allowed host are allowed origins too.
    assert!(matches!(
        decide_with(&on, preflight_from("https://mcp.example.com")),
        Decision::Preflight(_)
    ));
    let Decision::Refuse(d) = decide_with(&on, preflight_from("https://evil.example")) else {
        panic!("refused");
    };
    assert_eq!(d.reason, Reason::OriginNotAllowed);
    let off = with_cors(Mode::Enforce, false);
    assert_eq!(
        decide_with(&off, preflight_from("https://app.example.com")),
        Decision::Forward {
            audited: None,
            caller: None
        }
    );
    let audit = with_cors(Mode::Audit, true);
    assert!(matches!(
        decide_with(&audit, preflight_from("https://evil.example")),
        Decision::Forward { audited: Some(_), .. }
    ));
    // An OPTIONS without Access-Control-Request-Method is no preflight: forwarded.
    let plain = head(
        "OPTIONS",
        "/mcp",
        Version::HTTP_11,
        &[("host", "mcp.example.com"), ("origin", "https://app.example.com")],
    );
    assert_eq!(
        decide_with(&on, plain),
        Decision::Forward {
            audited: None,
            caller: None
        }
    );
}

/// SEP-2243 as the MCP Python SDK's server reads `Mcp-Name` (`mcp.shared.inbound.decode_header_value`): verbatim,
/// unless the whole value is `=?base64?PAYLOAD?=` (that exact case), then PAYLOAD as canonical, padded base64 of
/// UTF-8, and `None` (matching no name) when it is not.
fn sdk_decode(value: &str) -> Option<String> {
    use base64::Engine as _;
    let Some(payload) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        return Some(value.to_owned());
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(payload).ok()?;
    // Python's `b64decode(validate=True)` plus the SDK's own check that re-encoding gives the payload back.
    if engine.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// How a client might write a tool's name into `Mcp-Name`, right or wrong.
fn header_forms(name: String, other: String) -> impl Strategy<Value = String> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let unpadded = b64(&name).trim_end_matches('=').to_owned();
    prop_oneof![
        Just(name.clone()),
        Just(format!("=?base64?{}?=", b64(&name))),
        Just(format!("=?BASE64?{}?=", b64(&name))),
        Just(format!("=?base64?{unpadded}?=")),
        Just(format!("=?base64?{}?=", b64(&other))),
        Just(other.clone()),
        Just(name.to_uppercase()),
        Just(format!(" {name}\t")),
        Just(format!("=?base64? {}?=", b64(&name))),
        // A flipped last payload character: another name, or non-canonical trailing bits.
        Just({
            let mut p = b64(&name).into_bytes();
            if let Some(i) = p.iter().rposition(|&c| c != b'=') {
                p[i] = if p[i] == b'A' { b'B' } else { b'A' };
            }
            format!("=?base64?{}?=", String::from_utf8(p).unwrap())
        }),
    ]
}

/// Tool names: plain, with edge whitespace, case, and non-ASCII (which SEP-2243 carries base64-encoded).
fn tool_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,12}",
        "[A-Za-z0-9 ._-]{0,10}",
        "[ \t]?[a-zé漢🙂]{1,6}[ \t]?",
        Just("=?base64?cmVuZGVy?=".to_owned()),
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever a client writes into `Mcp-Name` (and however its body spells the tool, `\u` escapes included),
    /// the guard lets a `tools/call` through only if the server would read the header as the very tool the body
    /// names, so a per-tool limit charged by the body's name is never one the header disagreed with; and it
    /// refuses no header the server reads as that tool.
    #[test]
    fn mcp_name_is_let_through_only_when_the_server_reads_the_bodys_tool(
        (name, header) in (tool_name(), tool_name())
            .prop_flat_map(|(name, other)| (Just(name.clone()), header_forms(name, other))),
        escape_unicode in any::<bool>(),
    ) {
        // What hyper hands over: edge whitespace (OWS) is not part of a field value.
        let header = header.trim_matches([' ', '\t']).to_owned();
        if HeaderValue::from_str(&header).is_err() {
            // Not a field value hyper would hand over (raw non-ASCII): nothing to check.
            return Ok(());
        }
        let mut quoted = serde_json::to_string(&name).unwrap();
        if escape_unicode {
            quoted = quoted
                .chars()
                .map(|c| match c.is_ascii() {
                    true => c.to_string(),
                    false => c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04x}")).collect(),
                })
                .collect();
        }
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{quoted},"arguments":{{}}}}}}"#
        );
        let mut scanner = peek::Scanner::default();
        scanner.feed(body.as_bytes());
        let h = head(
            "POST",
            "/mcp",
            Version::HTTP_11,
            &[("mcp-method", "tools/call"), ("mcp-name", &header)],
        );
        let server_reads = match header.is_ascii() {
            true => sdk_decode(&header),
            false => sdk_decode(&header.bytes().map(char::from).collect::<String>()),
        };
        match mcp_calls(&h, Some(scanner.peeked())) {
            Ok(calls) => {
                prop_assert_eq!(
                    server_reads.as_deref(), Some(name.as_str()),
                    "let through, but the server reads Mcp-Name {:?} as another tool than {:?}", header, name
                );
                prop_assert_eq!(calls, vec![rate::Call::method("tools/call", Some(&name))]);
            }
            // Raw non-ASCII bytes: the SDK's server (Starlette) reads them as Latin-1, so no UTF-8 name matches
            // them as written; the guard refuses them all, never guessing at an encoding.
            Err(denial) if !header.is_ascii() => {
                prop_assert_eq!(denial.reason, Reason::McpHeaderMismatch);
            }
            Err(denial) => {
                prop_assert_eq!(denial.reason, Reason::McpHeaderMismatch);
                prop_assert_ne!(
                    server_reads.as_deref(), Some(name.as_str()),
                    "refused, but the server reads Mcp-Name {:?} as the body's tool {:?}", header, name
                );
            }
        }
    }
}

mod auth {
    use super::*;
    use mcp_guard_config::auth::testing::{self, TestKey};
    use serde_json::json;

    const ISSUER: &str = "https://auth.example.com";

    fn guarded(key: &TestKey, pass_token: bool, mode: Mode) -> Allowlist {
        Allowlist::compile(
            &serde_json::from_value::<GuardConfig>(json!({
                "mode": mode,
                "allowedHosts": ["mcp.example.com"],
                "auth": {
                    "resources": ["https://mcp.example.com/mcp"],
                    "issuers": [{"issuer": ISSUER, "jwks": testing::jwks(&[key])}],
                    "requiredScopes": ["mcp"],
                    "methodScopes": {"tools/call": ["tools"]},
                    "toolScopes": {"deploy": ["deploy:write"], "read": ["read"]},
                    "passToken": pass_token
                }
            }))
            .unwrap(),
        )
        .unwrap()
    }

    fn token(key: &TestKey) -> String {
        key.sign(
            &json!({"iss": ISSUER, "sub": "alice", "aud": "https://mcp.example.com/mcp",
                         "exp": 2_000_000_000u64, "scope": "mcp tools"}),
        )
    }

    fn decide_at(allowlist: &Allowlist, mut h: Parts) -> (Decision, Parts) {
        let upstream = Upstream::parse("http://127.0.0.1:8000", false).unwrap();
        let ip = HeaderValue::from_static("10.1.2.3");
        let hop = Hop {
            upstream: &upstream,
            peer_ip: &ip,
            preserve_host: false,
            trusted_proxy: false,
            memo: &Mutex::default(),
        };
        let mut tokens = no_tokens();
        tokens.now = 1_900_000_000;
        (decide(&mut h, &Arc::new(allowlist.clone()), &hop, &tokens), h)
    }

    #[test]
    fn the_token_is_stripped_and_the_identity_set_by_the_guard_alone() {
        let key = TestKey::es256("k1");
        let bearer = format!("Bearer {}", token(&key));
        let fields = [
            ("host", "mcp.example.com"),
            ("authorization", bearer.as_str()),
            ("mcp-guard-subject", "root"),
            ("mcp-guard-service-account", "kube-system/admin"),
            ("connection", "mcp-guard-subject"),
        ];
        let (d, h) = decide_at(&guarded(&key, false, Mode::Enforce), get(&fields));
        assert!(
            matches!(
                d,
                Decision::Forward {
                    audited: None,
                    caller: Some(_)
                }
            ),
            "{d:?}"
        );
        assert_eq!(h.headers["mcp-guard-subject"], "alice");
        assert_eq!(h.headers["mcp-guard-scopes"], "mcp tools");
        assert!(!h.headers.contains_key("mcp-guard-service-account"));
        assert!(!h.headers.contains_key("authorization"));
        let (_, h) = decide_at(&guarded(&key, true, Mode::Enforce), get(&fields));
        assert_eq!(h.headers["authorization"], bearer.as_str(), "passToken");

        // Audit mode forwards a bad token, but neither the token nor any identity.
        let forged = format!("Bearer {}", TestKey::es256("k1").sign(&json!({"iss": ISSUER})));
        let fields = [
            ("host", "mcp.example.com"),
            ("authorization", forged.as_str()),
            ("mcp-guard-subject", "root"),
        ];
        let (d, h) = decide_at(&guarded(&key, false, Mode::Audit), get(&fields));
        let Decision::Forward {
            audited: Some(denial),
            caller: None,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(denial.reason, Reason::InvalidToken);
        assert!(
            !h.headers
                .keys()
                .any(|k| k.as_str().starts_with("mcp-guard-") || k == "authorization"),
            "{h:?}"
        );
        // Spelled with underscores, an identity header is what CGI-style servers read as the guard's: refused.
        let fields = [("host", "mcp.example.com"), ("mcp_guard_subject", "root")];
        let (d, _) = decide_at(&guarded(&key, false, Mode::Enforce), get(&fields));
        assert!(
            matches!(d, Decision::Refuse(ref d) if d.reason == Reason::MalformedRequest),
            "{d:?}"
        );
    }

    /// `authorize` is `AuthPolicy::authorize` for every call it can read; a call it cannot read needs every scope.
    #[test]
    fn the_scopes_of_calls_agree_with_the_policy_and_unreadable_calls_need_all() {
        let key = TestKey::es256("k1");
        let allowlist = guarded(&key, false, Mode::Enforce);
        let auth = allowlist.auth.as_ref().unwrap();
        let scope_sets: [&[&str]; 5] = [
            &[],
            &["mcp"],
            &["mcp", "tools"],
            &["mcp", "tools", "deploy:write"],
            &["mcp", "tools", "deploy:write", "read"],
        ];
        let calls = [
            rate::Call::method("tools/list", None),
            rate::Call::method("tools/call", Some("deploy")),
            rate::Call::method("tools/call", Some("read")),
            rate::Call::method("tools/call", Some("other")),
            rate::Call::method("resources/read", Some("deploy")),
        ];
        for scopes in scope_sets {
            let identity = Identity {
                issuer: ISSUER.into(),
                subject: None,
                client_id: None,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                groups: Vec::new(),
                service_account: None,
                expires_at: 0,
            };
            for n in 0..(1 << calls.len()) {
                let picked: Vec<rate::Call> = calls
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| n & (1 << i) != 0)
                    .map(|(_, c)| c.clone())
                    .collect();
                let pairs = picked.iter().map(|c| match c {
                    rate::Call::Method { method, tool } => (Some(method.as_ref()), tool.as_deref()),
                    rate::Call::Unreadable => unreachable!(),
                });
                assert_eq!(
                    authorize(auth, &identity, &picked),
                    auth.authorize(&identity, pairs),
                    "{scopes:?} {picked:?}"
                );
            }
            let all = scopes.len() == 4;
            for unreadable in [rate::Call::Unreadable, rate::Call::method("tools/call", None)] {
                let result = authorize(
                    auth,
                    &identity,
                    &[rate::Call::method("tools/list", None), unreadable],
                );
                assert_eq!(result.is_ok(), all, "{scopes:?}");
                if let Err(d) = result {
                    assert_eq!(d.scope.as_deref(), Some("deploy:write mcp read tools"));
                }
            }
        }
    }
}

#[test]
fn a_canonical_content_length_is_kept_only_as_the_bodys_exact_length() {
    let stripped = |values: &[&'static str]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::CONTENT_LENGTH, HeaderValue::from_static(v));
        }
        strip(&mut h);
        h.get_all(header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(stripped(&["5"]), ["5"]);
    assert_eq!(stripped(&["0"]), ["0"]);
    assert_eq!(stripped(&["123456"]), ["123456"]);
    // Not as hyper would write it: hyper writes its own.
    for odd in [
        &["05"][..],
        &["00"],
        &["+5"],
        &[" 5"],
        &["5 "],
        &["5", "5"],
        &["5", "6"],
        &[""],
    ] {
        assert_eq!(stripped(odd), Vec::<String>::new(), "{odd:?}");
    }
    let settled = |value: &'static str, exact: Option<u64>| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(value));
        settle_length(&mut h, exact);
        h.get(header::CONTENT_LENGTH).cloned()
    };
    assert_eq!(settled("5", Some(5)), Some(HeaderValue::from_static("5")));
    assert_eq!(settled("5", Some(4)), None);
    assert_eq!(
        settled("5", None),
        None,
        "a body of unknown length is framed by hyper"
    );
    assert_eq!(settled("05", Some(5)), None);
}

#[test]
fn response_heads_lose_every_field_connection_names_in_any_case_and_list_shape() {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("connection", "X-One ,, x-two,\tCONTENT-LENGTH , not a name"),
        ("connection", "x-three"),
        ("x-one", "1"),
        ("x-two", "2"),
        ("x-three", "3"),
        ("upgrade", "h2c"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x-t"),
        ("content-length", "12"),
        ("x-kept", "k"),
    ] {
        h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    strip_response(&mut h);
    let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["content-length", "x-kept"]);
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

#[test]
fn hop_by_hop_names_are_these_seven_in_any_case() {
    for name in HOP_BY_HOP {
        assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        let upper = HeaderName::from_bytes(name.to_ascii_uppercase().as_bytes()).unwrap();
        assert!(is_hop_by_hop(&upper), "{name} as sent in capitals");
    }
    for name in [
        "content-length",
        "host",
        "keep-alives",
        "proxy-connections",
        "x-connection",
        "tes",
        "t",
    ] {
        assert!(
            !is_hop_by_hop(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
}

/// What [`strip_response`] did before it found the doomed names in one pass: every name `Connection` lists and
/// every hop-by-hop name removed by text, present or not. The reference for the property below.
fn strip_response_by_text(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let all: Vec<HeaderValue> = headers.get_all(header::CONNECTION).iter().cloned().collect();
    headers.remove(header::CONNECTION);
    for value in &all {
        for name in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if let Ok(name) = std::str::from_utf8(name)
                && !name.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str())
            {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A response head's fields as a comparable list: by name (the order between different names carries no meaning,
/// and removals reorder a `HeaderMap`), each name with its values in order.
fn fields_of(headers: &HeaderMap) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut fields: Vec<_> = headers
        .keys()
        .map(|n| {
            let values = headers.get_all(n).iter().map(|v| v.as_bytes().to_vec()).collect();
            (n.as_str().to_string(), values)
        })
        .collect();
    fields.sort();
    fields
}

/// A field name a response may carry: hop-by-hop ones, framing, ones a `Connection` may name.
fn response_field_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "content-length",
        "content-type",
        "x-a",
        "x-b",
        "mcp-session-id",
    ])
}

/// A `Connection` value: names from the same pool in any case, with whitespace, empty items and junk between.
fn connection_value() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        response_field_name().prop_map(str::to_string),
        response_field_name().prop_map(str::to_ascii_uppercase),
        Just(String::new()),
        Just("not a name".to_string()),
        "[a-zA-Z-]{1,8}",
    ];
    prop::collection::vec((item, prop::sample::select(vec!["", " ", "\t", "  "])), 0..6).prop_map(|items| {
        items
            .iter()
            .map(|(i, ws)| format!("{ws}{i}{ws}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The one-pass strip leaves exactly the fields the by-text strip left, each with the same values in the same
    /// order, whatever the response carries and whatever its `Connection` fields list.
    #[test]
    fn the_one_pass_response_strip_is_the_by_text_strip(
        fields in prop::collection::vec((response_field_name(), "[a-z0-9=]{0,6}"), 0..10),
        connections in prop::collection::vec(connection_value(), 0..3),
    ) {
        let mut h = HeaderMap::new();
        for (n, v) in &fields {
            h.append(HeaderName::from_static(n), HeaderValue::from_str(v).unwrap());
        }
        for c in &connections {
            h.append(header::CONNECTION, HeaderValue::from_str(c).unwrap());
        }
        let mut reference = h.clone();
        strip_response_by_text(&mut reference);
        strip_response(&mut h);
        prop_assert_eq!(fields_of(&h), fields_of(&reference));
    }
}
