//! MCP 2026-07-28's long-lived streams through the guard: `subscriptions/listen` is a `POST` whose response stream
//! stays open as long as the client listens. The MCP Python SDK server keeps it alive with `: ping` comments; the
//! guard's idle and header-read timeouts, set far shorter than the stream lives, must not cut it, and every ping
//! must pass as it comes (never held back until the stream ends, which it never does).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::mcp::{GuardOptions, PyServer, Transport};

/// The guard's timeouts in this test: every one far shorter than the stream is held open.
const GUARD_TIMEOUT: Duration = Duration::from_secs(1);
/// The server's ping period: shorter than the guard's idle timeout, as a server behind a proxy sets it.
const PING_SECS: &str = "0.2";
/// Pings to read: at least 39 × 0.2 s ≈ 8 s of stream, several times every guard timeout.
const PINGS: usize = 40;

fn listen_request(port: u16) -> String {
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},"notifications":{"toolsListChanged":true}}}"#;
    format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: subscriptions/listen\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_listen_stream_outlives_every_guard_timeout_and_its_pings_pass_as_they_come() {
    let server = PyServer::start_with(
        Transport::StreamableHttp,
        "127.0.0.1",
        &["--sse-ping-interval", PING_SECS],
    )
    .expect("start server");
    let timeout = format!("{}ms", GUARD_TIMEOUT.as_millis());
    let guard = (GuardOptions {
        extra_args: vec![
            "--idle-timeout".into(),
            timeout.clone(),
            "--header-read-timeout".into(),
            timeout,
            // The rate limits read the body and hold a slot for the stream's lifetime: on the path too.
            "--rate-limit-method".into(),
            "subscriptions/listen=600:10".into(),
            "--max-concurrent-requests-per-client".into(),
            "4".into(),
        ],
        ..GuardOptions::hosts(&["127.0.0.1"])
    })
    .start(&server.base_url())
    .expect("start mcp-guard");

    let mut conn = TcpStream::connect(guard.addr).expect("connect");
    // Generous: a ping held back by the guard would never come, and this turns that into a failure.
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    conn.write_all(listen_request(guard.addr.port()).as_bytes())
        .expect("send the listen request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first_ping = None;
    let pings = |seen: &[u8]| seen.windows(6).filter(|w| w == b": ping").count();
    while pings(&seen) < PINGS {
        let n = match conn.read(&mut buf) {
            Ok(0) => panic!(
                "the stream was cut after {} pings:\n{}\nguard log:\n{}",
                pings(&seen),
                String::from_utf8_lossy(&seen),
                guard.proc.logs()
            ),
            Ok(n) => n,
            Err(e) => panic!(
                "no byte for 30 s ({e}) after {} pings: held back?\n{}",
                pings(&seen),
                String::from_utf8_lossy(&seen)
            ),
        };
        seen.extend_from_slice(&buf[..n]);
        if first_ping.is_none() && pings(&seen) > 0 {
            first_ping = Some(Instant::now());
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{text}"
    );
    assert!(
        text.contains("notifications/subscriptions/acknowledged"),
        "the server's first frame came through: {text}"
    );
    // The server waits at least its period between pings, so the stream lived at least this long: longer than
    // every guard timeout (a lower bound, whatever the machine's load).
    let lived = first_ping.map(|t| t.elapsed()).unwrap_or_default();
    assert!(
        lived > GUARD_TIMEOUT * 4,
        "the stream lived {lived:?}, past the guard's timeouts of {GUARD_TIMEOUT:?}"
    );
    let metrics = guard.metrics().expect("metrics");
    assert!(
        metrics.contains("mcp_guard_open_streams 1"),
        "the stream is still open through the guard:\n{metrics}"
    );
}
