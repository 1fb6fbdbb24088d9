//! The real `mcp-guard` binary in front of a small hyper upstream: forwarding, rejections, streaming, h2c.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn guard_for(upstream: &TestUpstream, extra: &[&str]) -> Guard {
    let url = upstream.url();
    let mut args = vec![
        "--upstream",
        url.as_str(),
        "--allow-host",
        "mcp.example.com",
        "--allow-host",
        "*.apps.example.com",
    ];
    args.extend_from_slice(extra);
    start_guard(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_request_is_forwarded_with_mcp_headers_and_rewrites() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &["--allow-origin", "https://app.example.org"]).await;
    let r = get_with(
        guard.addr,
        "/mcp?x=1",
        &[
            "Host: MCP.example.com:8443",
            "Origin: https://app.example.org",
            "Mcp-Session-Id: abc",
            "MCP-Protocol-Version: 2025-06-18",
            "Last-Event-ID: 42",
            "X-Forwarded-For: 10.1.2.3",
            "Keep-Alive: timeout=5",
            "X-Secret-Hop: 1",
            "Connection: X-Secret-Hop",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json().unwrap();
    let h = &echo["headers"];
    assert_eq!(echo["path"], "/mcp?x=1");
    assert_eq!(
        echo["uri"], "/mcp?x=1",
        "origin-form request target to the upstream"
    );
    assert_eq!(
        h["host"][0],
        up.addr.to_string(),
        "Host rewritten to the upstream's authority"
    );
    assert_eq!(
        h["origin"][0],
        format!("http://{}", up.addr),
        "validated Origin rewritten"
    );
    assert_eq!(h["mcp-session-id"][0], "abc");
    assert_eq!(h["mcp-protocol-version"][0], "2025-06-18");
    assert_eq!(h["last-event-id"][0], "42");
    assert_eq!(
        h["x-forwarded-for"][0], "127.0.0.1",
        "the client's own X-Forwarded-For is not passed on as if the guard had set it"
    );
    assert_eq!(h["x-forwarded-host"][0], "MCP.example.com:8443");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert!(
        h.get("x-secret-hop").is_none() && h.get("keep-alive").is_none(),
        "hop-by-hop stripped: {h}"
    );
    // response headers: MCP headers through, hop-by-hop out
    assert_eq!(r.header("mcp-session-id"), Some("session-1"));
    assert_eq!(r.header("x-hop"), None);
    assert_eq!(
        guard
            .metric("mcp_guard_requests_total{verdict=\"allowed\",reason=\"none\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_keeps_host_and_origin() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &["--preserve-host"]).await;
    let r = get_with(
        guard.addr,
        "/",
        &["Host: a.apps.example.com", "Origin: https://a.apps.example.com"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json().unwrap()["headers"];
    assert_eq!(h["host"][0], "a.apps.example.com");
    assert_eq!(h["origin"][0], "https://a.apps.example.com");
}

fn assert_rejection(r: &RawResponse, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let v = r.json().unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(v["id"].is_null());
    assert!(v["error"]["code"].is_i64());
    assert!(v["error"]["message"].is_string());
    assert_eq!(v["error"]["data"]["reason"], reason, "{v}");
    assert!(
        v["error"]["data"]["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_json_rpc_errors_with_reasons() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &[]).await;
    let a = guard.addr;

    let r = get_with(a, "/mcp", &["Host: evil.com"]).await;
    assert_rejection(&r, 421, "host_not_allowed");
    let v = r.json().unwrap();
    assert_eq!(v["error"]["data"]["received"], "evil.com");
    assert!(
        v["error"]["data"]["hint"]
            .as_str()
            .unwrap()
            .contains("--allow-host evil.com")
    );

    let r = get_with(
        a,
        "/mcp",
        &["Host: mcp.example.com", "Origin: http://attacker.test"],
    )
    .await;
    assert_rejection(&r, 403, "origin_not_allowed");
    assert!(
        r.json().unwrap()["error"]["data"]["hint"]
            .as_str()
            .unwrap()
            .contains("--allow-origin http://attacker.test")
    );
    assert_rejection(
        &get_with(a, "/mcp", &["Host: mcp.example.com", "Origin: null"]).await,
        403,
        "origin_not_allowed",
    );

    for bad in [
        "mcp.example.com@evil.com",
        "mcp.example.com:80.evil.com",
        "mcp.example.com:99999",
    ] {
        let r = get_with(a, "/mcp", &[&format!("Host: {bad}")]).await;
        assert!(r.status == 400, "{bad}: {r:?}");
        if r.header("content-type") == Some("application/json") {
            assert_rejection(&r, 400, "malformed_host");
        }
    }
    let r = get_with(a, "/mcp", &["Host: mcp.example.com", "Host: evil.com"]).await;
    assert_rejection(&r, 400, "multiple_host_headers");
    let r = get_with(
        a,
        "/mcp",
        &[
            "Host: mcp.example.com",
            "Origin: https://mcp.example.com",
            "Origin: https://x.com",
        ],
    )
    .await;
    assert_rejection(&r, 400, "multiple_origin_headers");
    let r = get_with(
        a,
        "/mcp",
        &["Host: mcp.example.com", "Origin: https://mcp.example.com/path"],
    )
    .await;
    assert_rejection(&r, 400, "malformed_origin");
    let r = raw(a, "GET /mcp HTTP/1.0\r\n\r\n").await.unwrap();
    assert_rejection(&r, 400, "missing_host");

    // every method and path is checked
    for method in ["POST", "DELETE", "OPTIONS", "PUT"] {
        let r = raw(a, &format!("{method} /anything HTTP/1.1\r\nHost: evil.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
            .await
            .unwrap();
        assert_rejection(&r, 421, "host_not_allowed");
    }

    // same-origin pages of an allowed host are allowed
    let r = get_with(
        a,
        "/",
        &["Host: mcp.example.com", "Origin: https://x.apps.example.com"],
    )
    .await;
    assert_eq!(r.status, 200);

    assert!(
        guard
            .metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"host_not_allowed\"}")
            .await
            >= 5.0
    );
    assert_eq!(
        guard
            .metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"origin_not_allowed\"}")
            .await,
        2.0
    );
    let logs = guard.logs();
    assert!(
        logs.contains("request rejected") && logs.contains("host_not_allowed"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_authority_is_what_is_checked() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &[]).await;
    let r = raw(
        guard.addr,
        "GET http://evil.com/mcp HTTP/1.1\r\nHost: mcp.example.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_rejection(&r, 421, "host_not_allowed");
    let r = raw(
        guard.addr,
        "GET http://mcp.example.com/mcp HTTP/1.1\r\nHost: evil.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json().unwrap();
    assert_eq!(echo["uri"], "/mcp", "absolute-form is forwarded in origin-form");
    assert_eq!(echo["headers"]["x-forwarded-host"][0], "mcp.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_forwards_violations_and_counts_them() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &["--mode", "audit"]).await;
    let r = get_with(guard.addr, "/", &["Host: evil.com", "Origin: http://evil.com"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json().unwrap()["headers"]["origin"][0],
        "http://evil.com",
        "an unvalidated Origin is not rewritten"
    );
    assert_eq!(
        guard
            .metric("mcp_guard_requests_total{verdict=\"audited\",reason=\"host_not_allowed\"}")
            .await,
        1.0
    );
    assert!(guard.logs().contains("audit"));
}

/// Each SSE event reaches the client before the upstream sends the next: the upstream sends one event, then waits
/// until the test has read it through the guard. A guard that buffered would never deliver it. No clock involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_are_flushed_one_by_one() {
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    let next = Arc::new(Semaphore::new(0));
    let gate = next.clone();
    let url = support::wire::raw_upstream(move |mut w| {
        let gate = gate.clone();
        async move {
            if w.head().await.is_err() {
                return;
            }
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            if w.send(head).await.is_err() {
                return;
            }
            for n in 0..3 {
                let event = format!("data: {{\"n\":{n}}}\n\n");
                if w.send(format!("{:x}\r\n{event}\r\n", event.len())).await.is_err() {
                    return;
                }
                // The next event only once the client has this one.
                let Ok(permit) = gate.acquire().await else { return };
                permit.forget();
            }
            let _ = w.send("0\r\n\r\n").await;
        }
    })
    .await;
    let guard = start_guard(&["--upstream", &url, "--allow-host", "mcp.example.com"]).await;
    let mut s = TcpStream::connect(guard.addr).await.unwrap();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: mcp.example.com\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    for n in 0..3 {
        let event = format!("data: {{\"n\":{n}}}");
        let got = read_stream(&mut s, &event, Duration::from_secs(20)).await;
        let all: String = got.iter().map(|(_, c)| c.as_str()).collect();
        assert!(
            all.contains(&event),
            "event {n} was not passed on before the next was sent: {all}"
        );
        if n == 0 {
            assert!(all.contains("text/event-stream"), "{all}");
            // The stream counts as open while it runs.
            assert_eq!(guard.metric("mcp_guard_open_connections").await, 1.0);
        }
        next.add_permits(1);
    }
}

/// What an upstream connection keeps after a large answer is capped (`UPSTREAM_MAX_BUF`, its read buffer's
/// bound), and with it the largest response head the guard takes: a head within the bound passes whole, a far
/// larger one (still within hyper's default bound of about 400 KiB) is the upstream's failure (502). hyper checks
/// the bound between reads, so a head just past it may still come whole in one read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_heads_are_bounded_by_the_read_buffer_cap() {
    use mcp_guard::pool::UPSTREAM_MAX_BUF;
    // `GET /head/N`: a response whose head carries a field of N bytes.
    let url = support::wire::raw_upstream(|mut w| async move {
        let Ok((start, _)) = w.head().await else { return };
        let size: usize = start
            .split(['/', ' '])
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let big = "a".repeat(size);
        let head =
            format!("HTTP/1.1 200 OK\r\nx-big: {big}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        let _ = w.send(head).await;
    })
    .await;
    let guard = start_guard(&["--upstream", &url, "--allow-host", "mcp.example.com"]).await;
    let host = ["Host: mcp.example.com"];
    let within = UPSTREAM_MAX_BUF - 1024;
    let r = get_with(guard.addr, &format!("/head/{within}"), &host).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-big").map(str::len), Some(within));
    assert_eq!(r.body, b"ok");
    let r = get_with(guard.addr, &format!("/head/{}", 3 * UPSTREAM_MAX_BUF), &host).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_transport_pair_works() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &[]).await;
    let mut s = TcpStream::connect(guard.addr).await.unwrap();
    s.write_all(b"GET /sse?n=2&ms=1500 HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n")
        .await
        .unwrap();
    let got = read_stream(&mut s, "data: {\"n\":0}", Duration::from_secs(5)).await;
    assert!(!got.is_empty());
    // while the stream is open, POST /messages on another connection
    let r = raw(
        guard.addr,
        "POST /messages/?session_id=1 HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["path"], "/messages/?session_id=1");
    let rest = read_stream(&mut s, "data: {\"n\":1}", Duration::from_secs(5)).await;
    assert!(rest.iter().any(|(_, c)| c.contains("data: {\"n\":1}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_and_are_limited() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &["--max-request-body-bytes", "100000"]).await;
    // within the limit, chunked
    let body = "x".repeat(50_000);
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: mcp.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let r = raw(guard.addr, &req).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().unwrap()["bytes"], 50_000);
    // declared too large
    let r = raw(guard.addr, "POST /upload HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_rejection(&r, 413, "request_body_too_large");
    // streamed too large (chunked, no length)
    let big = "y".repeat(60_000);
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: mcp.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{n:x}\r\n{big}\r\n{n:x}\r\n{big}\r\n0\r\n\r\n",
        n = big.len()
    );
    let r = raw(guard.addr, &req).await.unwrap();
    assert_eq!(r.status, 413, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &["--max-header-bytes", "16384"]).await;
    let big = format!("X-Big: {}", "a".repeat(40_000));
    let r = get_with(guard.addr, "/", &["Host: mcp.example.com", &big]).await;
    assert_eq!(r.status, 431, "{r:?}");
    let r = get_with(guard.addr, "/", &["Host: mcp.example.com"]).await;
    assert_eq!(r.status, 200);
}

async fn h2c_request(
    addr: std::net::SocketAddr,
    uri: &str,
    origin: Option<&str>,
) -> (u16, serde_json::Value) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(uri);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_checked_by_authority() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &[]).await;
    let (status, body) = h2c_request(
        guard.addr,
        "http://mcp.example.com/mcp",
        Some("https://mcp.example.com"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "HTTP/1.1", "upstream spoken to over HTTP/1.1");
    assert_eq!(body["headers"]["host"][0], up.addr.to_string());
    let (status, body) = h2c_request(guard.addr, "http://evil.com/mcp", None).await;
    assert_eq!(status, 421);
    assert_eq!(body["error"]["data"]["reason"], "host_not_allowed");
    let (status, _) = h2c_request(guard.addr, "http://mcp.example.com/mcp", Some("http://evil.com")).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_streams_too() {
    let up = TestUpstream::start().await;
    let url = format!("h2c://{}", up.addr);
    let guard = start_guard(&["--upstream", &url, "--allow-host", "mcp.example.com"]).await;
    let r = get_with(guard.addr, "/", &["Host: mcp.example.com"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().unwrap()["version"], "HTTP/2.0");
    let r = get_with(guard.addr, "/sse?n=2&ms=10", &["Host: mcp.example.com"]).await;
    assert!(r.text().contains("data: {\"n\":1}"), "{r:?}");
    // POST bodies go through h2 too
    let stream = TcpStream::connect(guard.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/upload")
        .header("host", "mcp.example.com")
        .body(Full::new(Bytes::from(vec![b'z'; 70_000])))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{\"bytes\":70000}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_sees_its_own_authority_or_with_preserve_host_the_clients() {
    let up = TestUpstream::start().await;
    let url = format!("h2c://{}", up.addr);
    let guard = start_guard(&["--upstream", &url, "--allow-host", "mcp.example.com"]).await;
    let r = get_with(guard.addr, "/x", &["Host: mcp.example.com"]).await;
    assert_eq!(r.json().unwrap()["uri"], format!("http://{}/x", up.addr), "{r:?}");

    let guard = start_guard(&[
        "--upstream",
        &url,
        "--allow-host",
        "mcp.example.com",
        "--preserve-host",
    ])
    .await;
    for _ in 0..2 {
        let r = get_with(guard.addr, "/x", &["Host: mcp.example.com:8443"]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json().unwrap()["uri"], "http://mcp.example.com:8443/x", "{r:?}");
        assert_eq!(r.json().unwrap()["version"], "HTTP/2.0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up, &["--worker-threads", "1"]).await;
    // `/readyz` connected once to see that the upstream listens (the upstream counts it once it accepts it).
    let accepted = || up.accepted.load(std::sync::atomic::Ordering::SeqCst);
    eventually(
        "the readiness probe accepted",
        Duration::from_secs(10),
        || async { accepted() == 1 },
    )
    .await;
    let probes = 1;
    for _ in 0..5 {
        assert_eq!(
            get_with(guard.addr, "/", &["Host: mcp.example.com"]).await.status,
            200
        );
    }
    let r = get_with(guard.addr, "/sse?n=2&ms=10", &["Host: mcp.example.com"]).await;
    assert!(r.text().contains("data: {\"n\":1}"));
    assert_eq!(
        get_with(guard.addr, "/", &["Host: mcp.example.com"]).await.status,
        200
    );
    assert_eq!(
        up.accepted.load(std::sync::atomic::Ordering::SeqCst) - probes,
        1,
        "one pooled upstream connection"
    );
    // a response the client abandons half-way does not put its connection back
    let s = open_sse(guard.addr, "n=3&ms=1000").await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get_with(guard.addr, "/", &["Host: mcp.example.com"]).await.status,
        200
    );
    assert_eq!(up.accepted.load(std::sync::atomic::Ordering::SeqCst) - probes, 2);
}
