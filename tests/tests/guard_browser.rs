//! A real browser's DNS-rebinding attack (headless Chromium from Debian) against the MCP Python SDK server:
//! it succeeds against an unprotected server and is stopped by the guard.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::browser::run_attack;
use testkit::mcp::{Guard, GuardOptions, PyServer, Transport, assert_guard_error_body, loopback};

const ATTACK_TIMEOUT: Duration = Duration::from_secs(60);

fn assert_page_ran(report: &Value) {
    let origin = report["page_origin"].as_str().unwrap_or_default();
    assert!(
        origin.starts_with("http://attacker.test:"),
        "the page ran on the attacker's origin: {report}"
    );
}

#[test]
fn rebinding_attack_reads_an_unprotected_server_over_streamable_http() {
    // Bound to 0.0.0.0, the SDK switches its own Host/Origin check off: the misconfiguration the guard is for.
    let server = PyServer::start_on(Transport::StreamableHttp, "0.0.0.0").expect("start server");
    let report =
        run_attack(loopback(server.port), Transport::StreamableHttp, ATTACK_TIMEOUT).expect("attack ran");
    assert_page_ran(&report);
    let fetch = &report["fetch"];
    assert_eq!(fetch["initialize_status"], 200, "fetch attack: {report}");
    assert_eq!(
        fetch["tools"],
        json!(["countdown", "echo"]),
        "fetch attack read the tool list: {report}"
    );
    assert_eq!(
        fetch["echo"], "echo: stolen",
        "fetch attack called a tool: {report}"
    );
    let log = server.proc.logs();
    assert!(log.contains("POST /mcp"), "the server saw the attack:\n{log}");
}

#[test]
fn rebinding_attack_reads_an_unprotected_server_over_sse() {
    let server = PyServer::start_on(Transport::Sse, "0.0.0.0").expect("start server");
    let report = run_attack(loopback(server.port), Transport::Sse, ATTACK_TIMEOUT).expect("attack ran");
    assert_page_ran(&report);
    let es = &report["eventsource"];
    assert_eq!(
        es["tools"],
        json!(["countdown", "echo"]),
        "EventSource attack read the tool list: {report}"
    );
    let log = server.proc.logs();
    assert!(log.contains("GET /sse"), "the server saw the attack:\n{log}");
}

/// The same unprotected server (bound to 0.0.0.0, no check of its own), now reached only through the guard:
/// the browser's requests carry `Host: attacker.test:PORT`, and the guard refuses them before the server
/// sees anything.
fn guarded_attack(transport: Transport) -> (Value, PyServer) {
    let server = PyServer::start_on(transport, "0.0.0.0").expect("start server");
    let guard = Guard::start(
        &server.base_url(),
        &GuardOptions::hosts(&["127.0.0.1", "localhost"]),
    )
    .expect("start mcp-guard");
    let report = run_attack(guard.addr(), transport, ATTACK_TIMEOUT).expect("attack ran");
    assert_page_ran(&report);
    let metrics = guard.metrics().expect("guard metrics");
    assert!(
        metrics.contains("host_not_allowed"),
        "the guard counted the refusal:\n{metrics}"
    );
    (report, server)
}

#[test]
fn guard_blocks_the_rebinding_attack_over_streamable_http() {
    let (report, server) = guarded_attack(Transport::StreamableHttp);
    let fetch = &report["fetch"];
    assert_eq!(fetch["initialize_status"], 421, "fetch attack refused: {report}");
    let body: Value = serde_json::from_str(fetch["initialize_body"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the page read the guard's JSON error ({e}): {report}"));
    assert_guard_error_body(&body, "host_not_allowed", "fetch attack");
    assert!(
        fetch["tools"].is_null() && fetch["echo"].is_null(),
        "nothing was read: {report}"
    );
    let upstream_log = server.proc.logs();
    assert!(
        !upstream_log.contains("POST /mcp"),
        "the server never saw the attack:\n{upstream_log}"
    );
}

#[test]
fn guard_blocks_the_rebinding_attack_over_sse() {
    let (report, server) = guarded_attack(Transport::Sse);
    let es = &report["eventsource"];
    assert!(
        es["error"]
            .as_str()
            .is_some_and(|e| e.contains("EventSource error")),
        "stream refused: {report}"
    );
    assert_eq!(es["events"], 0, "no event reached the page: {report}");
    assert!(
        es["tools"].is_null() && es["endpoint"].is_null(),
        "nothing was read: {report}"
    );
    let upstream_log = server.proc.logs();
    assert!(
        !upstream_log.contains("GET /sse"),
        "the server never saw the attack:\n{upstream_log}"
    );
}
