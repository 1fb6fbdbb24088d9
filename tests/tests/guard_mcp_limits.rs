//! The guard's rate limits, trusted proxies and extension origins with real MCP SDK clients (Python and
//! TypeScript) in front of the MCP Python SDK server: a limited client is refused with `429`, `Retry-After` and
//! the guard's JSON-RPC error, another client (another source address) keeps working, and the limited one gets
//! through after waiting what `Retry-After` said; nginx rewriting Host works only with the proxy trusted; an
//! extension's origin passes only as listed.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use testkit::http;
use testkit::mcp::{
    ClientKind, ClientRun, Guard, GuardOptions, PyServer, Transport, assert_guard_error_body, run_client,
    run_client_from,
};
use testkit::nginx::Nginx;

const PUBLIC_HOST: &str = "mcp.example.test";

/// One `tools/call echo` POST outside any session: the server refuses it, but the guard has charged it.
fn raw_echo_call(guard: &Guard) -> http::Response {
    let body =
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http::raw(guard.addr, req.as_bytes()).unwrap()
}

/// Asserts the client was refused by the rate limit; returns its `Retry-After` in seconds.
fn assert_rate_limited(run: &ClientRun, what: &str) -> u64 {
    let r = &run.report;
    assert!(!run.ok(), "{what}: the client got through: {r}");
    assert_eq!(r["status"], 429, "{what}: {r}\n{}", run.output);
    let body: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {r}"));
    assert_guard_error_body(&body, "rate_limited", what);
    assert_eq!(body["error"]["code"], -32010, "{what}: {body}");
    assert_eq!(
        body["error"]["data"]["detail"], "perTool[\"echo\"]: 4/min, burst 1",
        "{what}: {body}"
    );
    let wait: u64 = r["retry_after"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no Retry-After: {r}"));
    assert!(
        (1..=15).contains(&wait),
        "{what}: Retry-After {wait} (one echo per 15 s)"
    );
    wait
}

fn a_limited_client_is_told_when_to_retry_and_recovers(kind: ClientKind) {
    let server = PyServer::start(Transport::StreamableHttp).unwrap();
    // One `echo` per 15 s per client: long enough that no machine's slowness lets the second call through.
    let mut opts = GuardOptions::hosts(&["127.0.0.1"]);
    opts.extra_args = ["--rate-limit-tool", "echo=4:1"].map(String::from).to_vec();
    let guard = opts.start(&server.base_url()).unwrap();
    let url = format!("{}/mcp", guard.base_url());
    let what = format!("{kind:?} client over its echo limit");

    // This client's echo token is spent; its session's echo call is refused.
    assert_ne!(raw_echo_call(&guard).status, 429);
    let run = run_client(kind, Transport::StreamableHttp, &url, &[]).unwrap();
    let wait = assert_rate_limited(&run, &what);

    if kind == ClientKind::Python {
        // Another client (another address) has a bucket of its own: its whole session, streamed progress of
        // `countdown` included, goes through while the first is limited.
        let other = run_client_from(
            ClientKind::Python,
            Transport::StreamableHttp,
            &url,
            &[],
            Some("127.0.0.2"),
        )
        .unwrap();
        other.assert_full_session("another client while the first is limited");
    }

    // Waiting what Retry-After said is enough: the wait is the behaviour under test, not a synchronisation.
    std::thread::sleep(Duration::from_secs(wait));
    let run = run_client(kind, Transport::StreamableHttp, &url, &[]).unwrap();
    run.assert_full_session(&format!("{what}, after Retry-After"));

    let metrics = guard.metrics().unwrap();
    assert!(
        metrics.contains(r#"mcp_guard_requests_total{verdict="rejected",reason="rate_limited"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_python_sdk_client_over_its_limit_recovers_after_retry_after_and_others_are_unaffected() {
    a_limited_client_is_told_when_to_retry_and_recovers(ClientKind::Python);
}

#[test]
fn a_typescript_sdk_client_over_its_limit_recovers_after_retry_after() {
    a_limited_client_is_told_when_to_retry_and_recovers(ClientKind::TypeScript);
}

/// nginx that must rewrite Host (to the name a backend expects) and says the client's in `X-Forwarded-Host`.
fn host_rewriting_nginx(guard: &Guard) -> Nginx {
    let g = guard.addr.port();
    Nginx::start_server(&format!(
        r#"
        location / {{
            proxy_pass http://127.0.0.1:{g};
            proxy_http_version 1.1;
            proxy_set_header Host backend.internal;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Forwarded "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
        }}
"#
    ))
    .unwrap()
}

#[test]
fn behind_nginx_rewriting_host_the_forwarded_host_is_checked_only_from_a_trusted_proxy() {
    let server = PyServer::start(Transport::StreamableHttp).unwrap();
    let mut opts = GuardOptions::hosts(&[PUBLIC_HOST]);
    opts.extra_args = ["--trusted-proxy", "127.0.0.1"].map(String::from).to_vec();
    let trusting = opts.start(&server.base_url()).unwrap();
    let untrusting = GuardOptions::hosts(&[PUBLIC_HOST])
        .start(&server.base_url())
        .unwrap();

    for kind in [ClientKind::Python, ClientKind::TypeScript] {
        let nginx = host_rewriting_nginx(&trusting);
        let url = format!("{}/mcp", nginx.base_url());
        let public = format!("Host: {PUBLIC_HOST}:{}", nginx.port);
        let run = run_client(kind, Transport::StreamableHttp, &url, &[&public]).unwrap();
        run.assert_full_session(&format!(
            "{kind:?} client through nginx rewriting Host, proxy trusted"
        ));
        let forged = format!("Host: evil.test:{}", nginx.port);
        let run = run_client(kind, Transport::StreamableHttp, &url, &[&forged]).unwrap();
        run.assert_rejected(
            &format!("{kind:?} client, forged Host via the trusted proxy"),
            421,
            "host_not_allowed",
        );

        // Without the opt-in the guard checks the rewritten Host, and says so.
        let nginx = host_rewriting_nginx(&untrusting);
        let url = format!("{}/mcp", nginx.base_url());
        let public = format!("Host: {PUBLIC_HOST}:{}", nginx.port);
        let run = run_client(kind, Transport::StreamableHttp, &url, &[&public]).unwrap();
        run.assert_rejected(
            &format!("{kind:?} client, proxy not trusted"),
            421,
            "host_not_allowed",
        );
        assert!(
            run.report["body"].as_str().unwrap().contains("backend.internal"),
            "{}",
            run.report
        );
    }
}

#[test]
fn an_extension_origin_passes_as_listed_and_another_extension_does_not() {
    const EXTENSION: &str = "chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai";
    let server = PyServer::start(Transport::StreamableHttp).unwrap();
    let opts = GuardOptions::hosts(&["127.0.0.1"]).origins(&[EXTENSION, "moz-extension://*"]);
    let guard = opts.start(&server.base_url()).unwrap();
    let url = format!("{}/mcp", guard.base_url());
    for kind in [ClientKind::Python, ClientKind::TypeScript] {
        for origin in [EXTENSION, "moz-extension://5d5e8f6c-3c0b-4a8e-9b64-1f2e3d4c5b6a"] {
            let run = run_client(
                kind,
                Transport::StreamableHttp,
                &url,
                &[&format!("Origin: {origin}")],
            )
            .unwrap();
            run.assert_full_session(&format!("{kind:?} client from {origin}"));
        }
        let other = "Origin: chrome-extension://aaaabbbbccccddddeeeeffffgggghhhh";
        let run = run_client(kind, Transport::StreamableHttp, &url, &[other]).unwrap();
        run.assert_rejected(
            &format!("{kind:?} client from an unlisted extension"),
            403,
            "origin_not_allowed",
        );
    }
}
