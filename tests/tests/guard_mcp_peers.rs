//! The MCP Python SDK server, left at its defaults (127.0.0.1, its own localhost-only Host/Origin check on),
//! behind the guard, driven by the Python SDK client and the TypeScript SDK client over both HTTP transports:
//! full sessions pass through unchanged (initialize, tools/list, tools/call, streamed notifications), forged
//! Host and Origin are rejected with the guard's JSON error.

use testkit::http;
use testkit::mcp::{
    ClientKind, Guard, GuardOptions, PyServer, Transport, assert_guard_rejection, initialize_request,
    run_client,
};

const PUBLIC_HOST: &str = "mcp.example.test";
const APP_ORIGIN: &str = "https://app.example.test";

fn guard_for(server: &PyServer) -> Guard {
    let opts = GuardOptions::hosts(&["127.0.0.1", PUBLIC_HOST]).origins(&[APP_ORIGIN]);
    opts.start(&server.base_url()).expect("start mcp-guard")
}

/// Every client session the guard must let through, and every forgery it must stop, for one transport.
fn sessions_through_the_guard(transport: Transport) {
    let server = PyServer::start(transport).expect("start the Python SDK server");
    let guard = guard_for(&server);
    let url = format!("{}{}", guard.base_url(), transport.path());
    let port = guard.addr.port();

    for kind in [ClientKind::Python, ClientKind::TypeScript] {
        let what = format!("{kind:?} client over {transport:?} through the guard");

        let run = run_client(kind, transport, &url, &[]).expect("run client");
        run.assert_full_session(&what);

        // The public name and an allowed browser origin: the upstream's own check would refuse both, the
        // guard validates them and rewrites them for the upstream.
        let host = format!("Host: {PUBLIC_HOST}:{port}");
        let origin = format!("Origin: {APP_ORIGIN}");
        let run = run_client(kind, transport, &url, &[&host, &origin]).expect("run client");
        run.assert_full_session(&format!("{what}, public Host and allowed Origin"));

        let run =
            run_client(kind, transport, &url, &[&format!("Host: evil.test:{port}")]).expect("run client");
        run.assert_rejected(&format!("{what}, forged Host"), 421, "host_not_allowed");

        let run = run_client(kind, transport, &url, &["Origin: http://evil.test"]).expect("run client");
        run.assert_rejected(&format!("{what}, forged Origin"), 403, "origin_not_allowed");
    }

    let metrics = guard.metrics().expect("guard metrics");
    assert!(
        metrics.contains("host_not_allowed"),
        "rejections by reason are counted:\n{metrics}"
    );
    assert!(
        metrics.contains("origin_not_allowed"),
        "rejections by reason are counted:\n{metrics}"
    );
}

#[test]
fn streamable_http_sessions_through_the_guard() {
    sessions_through_the_guard(Transport::StreamableHttp);
}

#[test]
fn sse_sessions_through_the_guard() {
    sessions_through_the_guard(Transport::Sse);
}

/// The upstream really is protected at its defaults (plain-text 421 of its own), and the guard in front answers
/// the same forgeries with its JSON error instead, for POST, the GET stream and DELETE alike.
#[test]
fn guard_answers_forgeries_with_json_where_the_sdk_answers_plain_text() {
    let server = PyServer::start(Transport::StreamableHttp).expect("start the Python SDK server");
    let direct = http::raw(
        testkit::mcp::loopback(server.port),
        &initialize_request("/mcp", "evil.test", &[]),
    )
    .expect("direct request");
    assert_eq!(
        direct.status,
        421,
        "the SDK's own check at its defaults: {}",
        direct.text()
    );
    assert!(
        direct.json().is_err(),
        "the SDK answers in plain text: {}",
        direct.text()
    );

    let guard = guard_for(&server);
    let host = format!("127.0.0.1:{}", guard.addr.port());
    let ok = http::raw(guard.addr, &initialize_request("/mcp", &host, &[])).expect("request");
    assert_eq!(
        ok.status,
        200,
        "a legitimate initialize through the guard: {}",
        ok.text()
    );
    assert!(
        ok.text().contains("mcp-guard-e2e"),
        "initialize result from the upstream: {}",
        ok.text()
    );

    let r = http::raw(guard.addr, &initialize_request("/mcp", "evil.test", &[])).expect("request");
    assert_guard_rejection(&r, 421, "host_not_allowed", "evil.test", "POST with forged Host");

    let r = http::raw(
        guard.addr,
        &initialize_request("/mcp", &host, &["Origin: http://evil.test"]),
    )
    .expect("request");
    assert_guard_rejection(
        &r,
        403,
        "origin_not_allowed",
        "http://evil.test",
        "POST with forged Origin",
    );

    for method in ["GET", "DELETE", "OPTIONS"] {
        let req = format!(
            "{method} /mcp HTTP/1.1\r\nHost: evil.test:{}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
            guard.addr.port()
        );
        let r = http::raw(guard.addr, req.as_bytes()).expect("request");
        assert_guard_rejection(
            &r,
            421,
            "host_not_allowed",
            "evil.test",
            &format!("{method} with forged Host"),
        );
    }
}
