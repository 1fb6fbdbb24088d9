//! A real browser's DNS-rebinding attack (headless Chromium from Debian) against the MCP Python SDK server:
//! it succeeds against an unprotected server and is stopped by the guard.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::browser::{Collector, cors_client_page, open_and_report, page_server, run_attack};
use testkit::mcp::{GuardOptions, PyServer, Transport, assert_guard_error_body, loopback};

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
    let attack = || run_attack(loopback(server.port), Transport::Sse, ATTACK_TIMEOUT).expect("attack ran");
    // An attacker tries again: one EventSource that failed to open (seen once in CI on a loaded machine, with
    // no guard in the path) does not make the server safe.
    let mut report = attack();
    if report["eventsource"]["error"].is_string() {
        eprintln!("the first EventSource attack failed, trying once more: {report}");
        report = attack();
    }
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
    let guard = GuardOptions::hosts(&["127.0.0.1", "localhost"])
        .start(&server.base_url())
        .expect("start mcp-guard");
    let report = run_attack(guard.addr, transport, ATTACK_TIMEOUT).expect("attack ran");
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

/// A web-based MCP client on `http://app.test:P` calls a tool of the SDK server through the guard with `--cors`:
/// the browser's preflights are answered by the guard (the server never sees an `OPTIONS`), and the page reads
/// the session id and the tool's answer. The same page served from another origin is refused at its first
/// preflight, before any request reaches the server.
#[test]
fn a_page_on_an_allowed_origin_calls_a_tool_through_the_guard_with_cors() {
    let server = PyServer::start(Transport::StreamableHttp).expect("start server");
    let collector = Collector::start().expect("collector");
    let pages = page_server(cors_client_page(&collector.url())).expect("page server");
    let allowed = format!("http://app.test:{}", pages.port);
    let guard = (GuardOptions {
        extra_args: vec!["--cors".into()],
        ..GuardOptions::hosts(&["127.0.0.1"]).origins(&[&allowed])
    })
    .start(&server.base_url())
    .expect("start mcp-guard");
    let endpoint = format!("{}/mcp", guard.base_url());

    let report = open_and_report(
        &format!("{allowed}/?server={endpoint}"),
        &collector,
        ATTACK_TIMEOUT,
    )
    .expect("the page reported");
    assert_eq!(report["page_origin"], allowed.as_str(), "{report}");
    assert_eq!(report["initialize_status"], 200, "{report}");
    assert!(
        report["session"].as_str().is_some_and(|s| !s.is_empty()),
        "the page read Mcp-Session-Id (exposed): {report}"
    );
    assert_eq!(report["echo"], "echo: from the page", "{report}");
    let metrics = guard.metrics().expect("guard metrics");
    let preflights = metric(&metrics, "mcp_guard_cors_preflights_total");
    assert!(preflights >= 1.0, "the guard answered the preflights:\n{metrics}");
    let log = server.proc.logs();
    assert!(log.contains("POST /mcp"), "the server got the calls:\n{log}");
    assert!(
        !log.contains("OPTIONS"),
        "no preflight reached the server:\n{log}"
    );

    // The same page on an origin that is not allowed.
    let posts_before = log.matches("POST /mcp").count();
    let other = format!("http://other.test:{}", pages.port);
    let report = open_and_report(&format!("{other}/?server={endpoint}"), &collector, ATTACK_TIMEOUT)
        .expect("the page reported");
    assert_eq!(report["page_origin"], other.as_str(), "{report}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch"))
            && report["initialize_status"].is_null(),
        "the browser refused the page its request: {report}"
    );
    let metrics = guard.metrics().expect("guard metrics");
    let refused = r#"mcp_guard_requests_total{verdict="rejected",reason="origin_not_allowed"}"#;
    assert!(
        metric(&metrics, refused) >= 1.0,
        "the guard refused the preflight:\n{metrics}"
    );
    assert_eq!(
        metric(&metrics, "mcp_guard_cors_preflights_total"),
        preflights,
        "no preflight from the other origin was answered:\n{metrics}"
    );
    let log = server.proc.logs();
    assert_eq!(
        log.matches("POST /mcp").count(),
        posts_before,
        "nothing reached the server:\n{log}"
    );
    assert!(!log.contains("OPTIONS"), "{log}");
}

/// The value of one sample line of a Prometheus text (0 when absent).
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}
