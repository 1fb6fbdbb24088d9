use super::*;
use mcp_guard_config::GuardConfig;

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
    };
    let decision = decide(&mut h, &allowlist(mode), &hop);
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
    assert_eq!(r.decision, Decision::Forward { audited: None });
    assert_eq!(r.head.uri, "/mcp");
    assert_eq!(r.head.version, Version::HTTP_11);
    assert_eq!(
        fields(&r.head),
        sorted([
            "origin: http://127.0.0.1:8000",
            "mcp-session-id: abc",
            "accept: text/event-stream",
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
        assert_eq!(r.decision, Decision::Forward { audited: None }, "{target}");
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
    assert_eq!(r.decision, Decision::Forward { audited: None });
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
        Decision::Forward { audited: Some(d) } => assert_eq!(d.reason, Reason::OriginNotAllowed),
        other => panic!("{other:?}"),
    }
    // Not rewritten: a server with its own check still sees the origin that failed.
    assert_eq!(r.head.headers["origin"], "https://evil.example");
}

#[test]
fn bodies_over_the_limit_are_refused_by_their_declared_length() {
    let d = refused(get(&[("host", "mcp.example.com"), ("content-length", "4194305")]));
    assert_eq!(d.reason, Reason::RequestBodyTooLarge);
    let r = run(get(&[("host", "mcp.example.com"), ("content-length", "4194304")]));
    assert_eq!(r.decision, Decision::Forward { audited: None });
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
