//! The real `mcp-guard` binary's HTTP/1.1 behaviour over raw sockets, with scripted raw upstreams.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::wire::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

async fn guard_for(upstream: &str, extra: &[&str]) -> Guard {
    let mut args = vec!["--upstream", upstream, "--allow-host", HOST];
    args.extend_from_slice(extra);
    start_guard(&args).await
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_sequential_and_pipelined_requests_on_one_connection() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &[]).await;
    let mut c = Wire::connect(guard.addr).await;

    c.send(get("/k0", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.json().unwrap()["path"], "/k0");

    c.send(format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello"
    ))
    .await
    .unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.json().unwrap()["bytes"], 5, "the body went through");

    c.send(get("/k2", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.json().unwrap()["path"], "/k2");

    // two requests in a single write: both answered, in order
    c.send(format!("{}{}", get("/p1", HOST), get("/p2", HOST)))
        .await
        .unwrap();
    let first = c.response(false).await.unwrap();
    let second = c.response(false).await.unwrap();
    assert_eq!(first.status(), 200, "{first:?}");
    assert_eq!(second.status(), 200, "{second:?}");
    assert_eq!(first.json().unwrap()["path"], "/p1");
    assert_eq!(second.json().unwrap()["path"], "/p2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_close() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &["--max-header-bytes", "4096", "--max-headers", "10"]).await;

    // a 10 KB header
    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10 * 1024)
    ))
    .await
    .unwrap();
    assert_library_refusal(&mut c, 431, "a 10 KB head").await;

    // 20 headers, limit 10
    let mut req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let mut c = Wire::connect(guard.addr).await;
    c.send(req).await.unwrap();
    assert_library_refusal(&mut c, 431, "20 fields").await;

    // within both limits: fine
    let mut c = Wire::connect(guard.addr).await;
    c.send(get("/", HOST)).await.unwrap();
    assert_eq!(c.response(false).await.unwrap().status(), 200);
}

/// The default limit of 100 fields is hyper's own (the guard does not set it, which spares hyper filling its
/// header arrays per request): it must hold all the same, at exactly 100. The Host is one the guard refuses, so
/// that the answer is the guard's own (421: the head was parsed) and not the upstream's, whose limit is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_field_limit_is_100() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &[]).await;
    let head = |fields: usize| {
        let mut req = "GET / HTTP/1.1\r\nHost: evil.example\r\n".to_string();
        for i in 1..fields {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req + "\r\n"
    };
    let mut c = Wire::connect(guard.addr).await;
    c.send(head(100)).await.unwrap();
    assert_eq!(c.response(false).await.unwrap().status(), 421, "100 fields");
    let mut c = Wire::connect(guard.addr).await;
    c.send(head(101)).await.unwrap();
    assert_library_refusal(&mut c, 431, "101 fields").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_requests_get_400_and_close() {
    let (url, seen) = recording_upstream().await;
    let guard = guard_for(&url, &[]).await;
    for bad in [
        format!("GET / HTTP/1.1\r\nHost {HOST}\r\n\r\n"),
        format!("NOT AN HTTP REQUEST LINE\r\nHost: {HOST}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost : {HOST}\r\n\r\n"),
        // obs-fold (RFC 9112 §5.2), a bare LF inside a field value, a bare CR as a line end
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\r\n folded\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\n2\r\n\r\n"),
        format!("GET / HTTP/1.1\rHost: {HOST}\r\n\r\n"),
        // HTTP/1.0 has no transfer codings
        format!("POST / HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ] {
        let mut c = Wire::connect(guard.addr).await;
        c.send(&bad).await.unwrap();
        assert_library_refusal(&mut c, 400, &format!("{bad:?}")).await;
    }
    assert!(
        seen.lock().unwrap().heads.is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_invalid_framing_is_refused_and_never_forwarded() {
    let (url, seen) = recording_upstream().await;
    let guard = guard_for(&url, &[]).await;

    // Content-Length and Transfer-Encoding together, hiding a second request: hyper drops the Content-Length, reads
    // the chunked body (RFC 9112 §6.3, as an intermediary must), and closes the connection after the answer, so
    // the bytes after the body are never read as a request.
    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "POST /cl-te HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    ))
    .await
    .unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert!(c.closed().await, "connection closed after CL+TE");

    // Codings the policy refuses: the JSON 400, and the connection closes (the body was not read).
    for te in [
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
    ] {
        let mut c = Wire::connect(guard.addr).await;
        c.send(format!(
            "POST /te HTTP/1.1\r\nHost: {HOST}\r\n{te}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        ))
        .await
        .unwrap();
        let r = c.response(false).await.unwrap_or_else(|e| panic!("{te:?}: {e}"));
        assert_rejection(&r, 400, "malformed_request");
    }

    for cl in [
        "Content-Length: abc",
        "Content-Length: 3\r\nContent-Length: 5",
        "Content-Length: 3, 5",
        "Transfer-Encoding: gzip",
    ] {
        let mut c = Wire::connect(guard.addr).await;
        c.send(format!(
            "POST /bad-cl HTTP/1.1\r\nHost: {HOST}\r\n{cl}\r\n\r\nabcde"
        ))
        .await
        .unwrap();
        assert_library_refusal(&mut c, 400, cl).await;
    }

    // a good request afterwards is the only thing the upstream ever saw
    let mut c = Wire::connect(guard.addr).await;
    c.send(get("/after", HOST)).await.unwrap();
    assert_eq!(c.response(false).await.unwrap().status(), 200);
    let heads = seen.lock().unwrap().heads.clone();
    assert_eq!(
        heads,
        vec![
            "POST /cl-te HTTP/1.1".to_owned(),
            "GET /after HTTP/1.1".to_owned()
        ]
    );
    let cl_te = &seen.lock().unwrap().requests[0];
    assert!(cl_te.body.is_empty(), "{cl_te:?}");
    assert!(
        !cl_te.headers.iter().any(|(n, _)| n == "content-length"),
        "the client's Content-Length is not passed on: {cl_te:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_arrive_intact_and_are_limited() {
    let (url, seen) = recording_upstream().await;
    let guard = guard_for(&url, &["--max-request-body-bytes", "1000"]).await;

    let mut c = Wire::connect(guard.addr).await;
    let pieces = [
        format!("POST /chunked HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "6\r\nhello \r\n".to_owned(),
        "8\r\nchun".to_owned(),
        "ked \r\n".to_owned(),
        "5\r\nworld\r\n0\r\n\r\n".to_owned(),
    ];
    for p in &pieces {
        c.send(p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), "ok");
    {
        let seen = seen.lock().unwrap();
        let req = seen.requests.iter().find(|m| m.target() == "/chunked").unwrap();
        assert_eq!(req.method(), "POST");
        assert_eq!(String::from_utf8_lossy(&req.body), "hello chunked world");
    }
    // nothing after a chunked body is read as a request: the connection closes after the answer
    // (docs/guard.md, "Chunked request bodies")
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(c.closed().await);

    // a chunked body over the limit
    let big = "y".repeat(600);
    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "POST /chunked-big HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
         {n:x}\r\n{big}\r\n{n:x}\r\n{big}\r\n{n:x}\r\n{big}\r\n0\r\n\r\n",
        n = big.len()
    ))
    .await
    .unwrap();
    let r = c.response(false).await.unwrap();
    assert_rejection(&r, 413, "request_body_too_large");

    // a declared Content-Length over the limit: refused before the upstream hears of it
    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "POST /cl-big HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5000\r\n\r\n"
    ))
    .await
    .unwrap();
    let r = c.response(false).await.unwrap();
    assert_rejection(&r, 413, "request_body_too_large");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heads = seen.lock().unwrap().heads.clone();
    assert!(!heads.iter().any(|h| h.contains("/cl-big")), "{heads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_interim_response_unless_rejected() {
    let (url, seen) = recording_upstream().await;
    let guard = guard_for(&url, &[]).await;
    let body = r#"{"a":"hello"}"#;

    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "POST /expect HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        body.len()
    ))
    .await
    .unwrap();
    let interim = c.response(false).await.unwrap();
    assert_eq!(interim.status(), 100, "{interim:?}");
    assert!(interim.start.starts_with("HTTP/1.1 100"), "{interim:?}");
    c.send(body).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    {
        let seen = seen.lock().unwrap();
        let req = seen.requests.iter().find(|m| m.target() == "/expect").unwrap();
        assert_eq!(String::from_utf8_lossy(&req.body), body);
    }

    // a rejected request: the final 421 straight away, no 100 first
    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "POST /expect-evil HTTP/1.1\r\nHost: evil.com\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    ))
    .await
    .unwrap();
    let r = c.response(false).await.unwrap();
    assert_rejection(&r, 421, "host_not_allowed");
    let heads = seen.lock().unwrap().heads.clone();
    assert!(!heads.iter().any(|h| h.contains("/expect-evil")), "{heads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_complete_bodies_then_close() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &[]).await;

    // An HTTP/1.0 exchange: the response ends when the guard closes, without chunked coding.
    let exchange = |path: &'static str| async move {
        let mut c = Wire::connect(guard.addr).await;
        c.send(format!("GET {path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n"))
            .await
            .unwrap();
        let (start, headers) = c.head().await.unwrap();
        let body = c
            .until_eof()
            .await
            .expect("the guard closes after an HTTP/1.0 response");
        let r = Msg { start, headers, body };
        assert_eq!(r.status(), 200, "{r:?}");
        assert!(
            !r.is_chunked(),
            "no chunked encoding for an HTTP/1.0 client: {r:?}"
        );
        r
    };

    // a sized response
    let r = exchange("/ten").await;
    if let Some(n) = content_length(&r.headers) {
        assert_eq!(n, r.body.len(), "{r:?}");
    }
    assert_eq!(r.json().unwrap()["path"], "/ten");

    // an unsized (streamed) response: close-delimited
    let r = exchange("/sse?n=3&ms=50").await;
    let text = r.text();
    for i in 0..3 {
        assert!(text.contains(&format!("data: {{\"n\":{i}}}\n\n")), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_answering_before_reading_the_body_reaches_the_client() {
    let url = raw_upstream(|mut w| async move {
        if w.head().await.is_err() {
            return;
        }
        let _ = w
            .send(
                "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\
                 Connection: close\r\n\r\ntoo large",
            )
            .await;
        let _ = w.w.take().unwrap().shutdown().await;
        // a short lingering close, as servers do, then the socket goes away
        let _ = tokio::time::timeout(Duration::from_millis(300), w.until_eof()).await;
    })
    .await;
    let guard = guard_for(&url, &[]).await;

    let mut c = Wire::connect(guard.addr).await;
    let total = 1024 * 1024;
    c.send(format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {total}\r\n\r\n"
    ))
    .await
    .unwrap();
    let mut writer = c.w.take().unwrap();
    let sender = tokio::spawn(async move {
        let piece = vec![b'b'; 32 * 1024];
        for _ in 0..total / piece.len() {
            if writer.write_all(&piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 413, "the upstream's early answer, not a 502: {r:?}");
    assert_eq!(r.text(), "too large");
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_chunked_response_with_trailers_arrives_intact() {
    let big = "z".repeat(40_000);
    let big2 = big.clone();
    let url = raw_upstream(move |mut w| {
        let big = big2.clone();
        async move {
            while let Ok(req) = w.request().await {
                if req.target() != "/chunked" {
                    let _ = w.send("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext").await;
                    continue;
                }
                let pieces = [
                    concat!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n",
                        "Trailer: X-Checksum\r\n\r\n"
                    )
                    .to_owned(),
                    "5\r\nhello\r\n".to_owned(),
                    "1\r\n \r\n1a\r\nabcdefghijklm".to_owned(),
                    "nopqrstuvwxyz\r\n".to_owned(),
                    format!("{:x}\r\n{big}\r\n", big.len()),
                    "0\r\nX-Checksum: abc\r\n\r\n".to_owned(),
                ];
                send_slowly(&mut w, pieces).await;
            }
        }
    })
    .await;
    let guard = guard_for(&url, &[]).await;

    let mut c = Wire::connect(guard.addr).await;
    c.send(get("/chunked", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), format!("hello abcdefghijklmnopqrstuvwxyz{big}"));
    // the framing left the connection in sync
    c.send(get("/next", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status(), r.text().as_str()), (200, "next"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_http10_close_delimited_response_arrives_whole() {
    let middle = "m".repeat(30_000);
    let m2 = middle.clone();
    let url = raw_upstream(move |mut w| {
        let middle = m2.clone();
        async move {
            if w.head().await.is_err() {
                return;
            }
            let pieces = [
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst-".to_owned(),
                middle,
                "-last".to_owned(),
            ];
            send_slowly(&mut w, pieces).await;
            // dropping `w` closes the connection: that ends the body
        }
    })
    .await;
    let guard = guard_for(&url, &[]).await;

    let mut c = Wire::connect(guard.addr).await;
    c.send(get("/old", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), format!("first-{middle}-last"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_an_sse_stream_closes_the_upstream_connection() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let url = raw_upstream(move |mut w| {
        let tx = tx.clone();
        async move {
            if w.head().await.is_err() {
                return;
            }
            let event = "data: 1\n\n";
            let _ = w
                .send(format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                     Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                ))
                .await;
            // then nothing: wait for the guard to go away
            let mut sink = [0u8; 1024];
            loop {
                match w.r.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = tx.send(Instant::now());
        }
    })
    .await;
    let guard = guard_for(&url, &[]).await;

    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "GET /events HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n"
    ))
    .await
    .unwrap();
    while find(&c.buf, b"data: 1").is_none() {
        c.fill_or_eof_error("the first event").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "the upstream stream stays open while the client is there"
    );

    let left = Instant::now();
    drop(c);
    let closed = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("the guard did not close its upstream connection within 3 s of the client leaving")
        .unwrap();
    assert!(closed >= left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_responses_have_headers_and_no_body() {
    let url = raw_upstream(|mut w| async move {
        while let Ok(req) = w.request().await {
            let resp = if req.method() == "HEAD" {
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nafter-head"
            };
            if w.send(resp).await.is_err() {
                return;
            }
        }
    })
    .await;
    let guard = guard_for(&url, &[]).await;

    let mut c = Wire::connect(guard.addr).await;
    c.send(format!("HEAD /h HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await
        .unwrap();
    let r = c.response(true).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("1234"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    // no body bytes follow: the next response on the connection parses cleanly
    c.send(get("/g", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status(), r.text().as_str()), (200, "after-head"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_are_checked_by_authority_and_forwarded_in_origin_form() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &[]).await;

    let mut c = Wire::connect(guard.addr).await;
    c.send(format!("GET http://{HOST}/x HTTP/1.1\r\nHost: evil.com\r\n\r\n"))
        .await
        .unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    let echo = r.json().unwrap();
    assert_eq!(echo["uri"], "/x", "origin-form to the upstream: {echo}");
    assert_eq!(echo["path"], "/x");

    let mut c = Wire::connect(guard.addr).await;
    c.send(format!("GET http://evil.com/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await
        .unwrap();
    let r = c.response(false).await.unwrap();
    assert_rejection(&r, 421, "host_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &[]).await;
    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "GET /hop HTTP/1.1\r\nHost: {HOST}\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n\r\n"
    ))
    .await
    .unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    let h = &r.json().unwrap()["headers"];
    assert!(
        h.get("x-secret").is_none(),
        "named in Connection, so not forwarded: {h}"
    );
    assert_eq!(h["x-kept"][0], "2", "{h}");
    if let Some(conn) = h.get("connection") {
        assert!(
            !conn.to_string().to_ascii_lowercase().contains("x-secret"),
            "the client's Connection header is not forwarded: {h}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_not_returned() {
    // one response per upstream connection, then the upstream closes it (`Connection: close`)
    let url = raw_upstream(|mut w| async move {
        if w.request().await.is_err() {
            return;
        }
        let _ = w
            .send(
                "HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nx-hop: 1\r\nx-end: 2\r\n\
                 Content-Length: 2\r\n\r\nok",
            )
            .await;
    })
    .await;
    let guard = guard_for(&url, &[]).await;

    for i in 0..2 {
        let mut c = Wire::connect(guard.addr).await;
        c.send(get(&format!("/r{i}"), HOST)).await.unwrap();
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status(), 200, "request {i}: {r:?}");
        assert_eq!(r.text(), "ok", "{r:?}");
        assert_eq!(
            r.header("x-hop"),
            None,
            "named in Connection, so not returned: {r:?}"
        );
        assert_eq!(r.header("x-end"), Some("2"), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_a_421_rejection() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &[]).await;
    let mut c = Wire::connect(guard.addr).await;

    c.send(get("/denied", "evil.com")).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_rejection(&r, 421, "host_not_allowed");

    c.send(get("/allowed", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.json().unwrap()["path"], "/allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_answered_before_its_body_arrived_says_the_connection_closes() {
    // The guard refuses from the head while the body is still on its way (a client writing head and body apart,
    // on a busy machine). hyper finds the body unread only after the answer went out, and then closes: an answer
    // saying keep-alive would have the client send its next request into a closing connection and lose it.
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &[]).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    for (host, origin, status, reason) in [
        ("evil.com", "", 421, "host_not_allowed"),
        (HOST, "Origin: http://evil.com\r\n", 403, "origin_not_allowed"),
    ] {
        let mut c = Wire::connect(guard.addr).await;
        c.send(format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        ))
        .await
        .unwrap();
        let r = c.response(false).await.unwrap();
        assert_rejection(&r, status, reason);
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        // What the answer said holds: the body and a next request on this connection get no answer.
        let _ = c.send(format!("{body}{}", get("/next", HOST))).await;
        assert!(
            c.response(false).await.is_err(),
            "a request after a closing answer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_still_being_sent_does_not_cost_the_client_its_answer() {
    // The client declares 2 MB over a 1,000-byte limit and keeps sending while the guard answers 413 and closes:
    // the answer reaches it whole and the connection ends within the timeout (the guard reads and drops the rest
    // of the body for a moment before it closes, as nginx does).
    let (url, _seen) = recording_upstream().await;
    let guard = guard_for(&url, &["--max-request-body-bytes", "1000"]).await;
    for _ in 0..3 {
        let stream = TcpStream::connect(guard.addr).await.unwrap();
        let (mut r, mut w) = stream.into_split();
        let body = vec![b'z'; 2 << 20];
        let writer = tokio::spawn(async move {
            let head = format!(
                "POST /big HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = w.write_all(head.as_bytes()).await;
            for piece in body.chunks(64 * 1024) {
                if w.write_all(piece).await.is_err() {
                    break;
                }
            }
            w
        });
        let mut got = Vec::new();
        let read = tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 4096];
            loop {
                match r.read(&mut chunk).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("the guard closed the connection within the timeout");
        let text = String::from_utf8_lossy(&got);
        assert!(
            read.is_ok() || text.contains("request_body_too_large"),
            "{read:?}: {text}"
        );
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        assert!(text.contains("\"reason\":\"request_body_too_large\""), "{text}");
        let _ = writer.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reads_are_bounded_by_upstream_read_buffer() {
    // A close-delimited body is re-chunked read by read, so the chunk sizes show how much each read took.
    let url = raw_upstream(|mut w| async move {
        if w.head().await.is_err() {
            return;
        }
        let mut whole = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        whole.extend_from_slice(&[b'r'; 5000]);
        let _ = w.send(whole).await;
    })
    .await;
    let guard = guard_for(&url, &["--upstream-read-buffer", "1024"]).await;
    let mut c = Wire::connect(guard.addr).await;
    c.send(format!(
        "GET /big HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    ))
    .await
    .unwrap();
    let (start, headers) = c.head().await.unwrap();
    assert!(start.starts_with("HTTP/1.1 200"), "{start}");
    assert!(is_chunked(&headers), "{headers:?}");
    let raw = c.until_eof().await.unwrap();
    let mut at = 0;
    let mut sizes = Vec::new();
    loop {
        let line_end = at + find(&raw[at..], b"\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[at..line_end]).unwrap(), 16).unwrap();
        at = line_end + 2 + size + 2;
        if size == 0 {
            break;
        }
        sizes.push(size);
    }
    assert_eq!(sizes.iter().sum::<usize>(), 5000, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 1024), "{sizes:?}");
}

/// How long until the guard closes `stream`, which sends `pieces` 100 ms apart meanwhile (then nothing).
async fn time_to_close(stream: TcpStream, pieces: Vec<String>) -> Duration {
    let start = Instant::now();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        for p in pieces {
            if w.write_all(p.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::future::pending::<()>().await; // keep the write side open
    });
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    writer.abort();
    assert!(
        closed.is_ok(),
        "the guard did not close the connection within {WAIT:?}"
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_bounds_each_request_head_and_each_idle_keep_alive_wait() {
    let up = TestUpstream::start().await;
    let guard = guard_for(&up.url(), &["--header-read-timeout", "1s"]).await;
    // The guard may be up to half the timeout late; the upper bounds leave room for a busy machine.
    let within = |d: Duration| d >= Duration::from_millis(950) && d <= Duration::from_millis(2500);

    // A head that trickles in (slowloris) is cut off although bytes keep coming.
    let mut pieces = vec![format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n")];
    pieces.extend((0..40).map(|i| format!("X-Slow-{i}: 1\r\n")));
    let t = time_to_close(TcpStream::connect(guard.addr).await.unwrap(), pieces).await;
    assert!(within(t), "a trickling head was cut off after {t:?}");

    // A connection that never sends a byte.
    let t = time_to_close(TcpStream::connect(guard.addr).await.unwrap(), vec![]).await;
    assert!(within(t), "a silent connection was closed after {t:?}");

    // Not a total deadline: a keep-alive connection whose requests come 400 ms apart lives on, and so does a
    // response that takes longer than the timeout (SSE, 1.5 s) with a request right after it.
    let mut c = Wire::connect(guard.addr).await;
    for i in 0..6 {
        c.send(get(&format!("/k{i}"), HOST)).await.unwrap();
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status(), 200, "request {i}: {r:?}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    c.send(get("/sse?n=4&ms=500", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text().matches("data:").count(), 4, "{r:?}");
    c.send(get("/after-sse", HOST)).await.unwrap();
    let r = c.response(false).await.unwrap();
    assert_eq!(r.json().unwrap()["path"], "/after-sse", "{r:?}");

    // Then, idle, it is closed after the timeout.
    let start = Instant::now();
    assert!(c.closed().await, "an idle keep-alive connection stays open");
    let t = start.elapsed();
    assert!(within(t), "an idle keep-alive connection was closed after {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_on_a_keep_alive_connection_is_checked_on_its_own() {
    let up = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guard.json");
    std::fs::write(
        &config,
        format!(r#"{{"allowedHosts":["{HOST}"],"allowedOrigins":["https://app.example.com"]}}"#),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let guard = start_guard(&[
        "--upstream",
        &up.url(),
        "--config",
        &config_arg,
        "--config-poll-interval",
        "100ms",
    ])
    .await;
    let mut c = Wire::connect(guard.addr).await;
    let mut ask = async |fields: &str| {
        c.send(format!("GET /x HTTP/1.1\r\n{fields}\r\n")).await.unwrap();
        c.response(false).await.unwrap()
    };
    let host = format!("Host: {HOST}\r\n");
    let app = "Origin: https://app.example.com\r\n";
    // Allowed requests between refused ones on the same connection: each verdict is the request's own.
    let script: Vec<(String, u16, Option<&str>)> = vec![
        (format!("{host}{app}"), 200, None),
        (
            format!("{host}Origin: https://evil.example\r\n"),
            403,
            Some("origin_not_allowed"),
        ),
        (format!("{host}{app}"), 200, None),
        ("Host: evil.example\r\n".to_owned(), 421, Some("host_not_allowed")),
        (format!("{host}{app}{app}"), 400, Some("multiple_origin_headers")),
        (host.clone(), 200, None),
        (format!("{host}Origin: null\r\n"), 403, Some("origin_not_allowed")),
        (format!("{host}{host}{app}"), 400, Some("multiple_host_headers")),
        (format!("Host: {}\r\n{app}", HOST.to_uppercase()), 200, None),
        (format!("{host}{app}"), 200, None),
    ];
    for (i, (fields, status, reason)) in script.iter().enumerate() {
        let r = ask(fields).await;
        match reason {
            Some(reason) => assert_rejection(&r, *status, reason),
            None => assert_eq!(r.status(), *status, "request {i} ({fields:?}): {r:?}"),
        }
    }
    // A reload that drops the host applies to the next request on the same connection.
    std::fs::write(&config, r#"{"allowedHosts":["other.example.com"]}"#).unwrap();
    eventually_or(
        "the new config picked up",
        WAIT,
        || format!("the new config was not picked up:\n{}", guard.logs()),
        || async {
            get_with(guard.addr, "/", &["Host: other.example.com"])
                .await
                .status
                == 200
        },
    )
    .await;
    let r = ask(&format!("{host}{app}")).await;
    assert_rejection(&r, 421, "host_not_allowed");
}
