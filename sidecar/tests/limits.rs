//! The rate limits, caps, trusted proxies and extension origins of the real `mcp-guard` binary, from the wire:
//! 429 with `Retry-After` and the JSON-RPC error, recovery after waiting it, other clients (other source
//! addresses on loopback) unaffected, and request bodies reaching the upstream byte for byte after the guard
//! read their prefix.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use support::wire::{Msg, Wire, assert_rejection, recording_upstream};
use support::*;
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `addr` from another loopback address: another client as far as the limits know.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// One request on its own connection from `source`; the response.
async fn request_from(source: &str, addr: SocketAddr, request: &str) -> Msg {
    let mut w = Wire::new(connect_from(source, addr).await, Some(Duration::from_secs(10)));
    w.send(request).await.unwrap();
    w.response(false).await.unwrap()
}

fn get_request(extra: &str) -> String {
    format!("GET /echo HTTP/1.1\r\nHost: mcp.example.com\r\n{extra}Connection: close\r\n\r\n")
}

fn post(body: &str, extra: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn tools_call(tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
}

fn retry_after(r: &Msg) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {r:?}"))
        .parse()
        .unwrap()
}

async fn guard(upstream: &str, extra: &[&str]) -> Guard {
    let mut args = vec!["--upstream", upstream, "--allow-host", "mcp.example.com"];
    args.extend_from_slice(extra);
    start_guard(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_and_gets_through_after_retry_after() {
    let upstream = TestUpstream::start().await;
    let g = guard(&upstream.url(), &["--rate-limit-per-client", "60:2"]).await;
    for _ in 0..2 {
        assert_eq!(
            request_from("127.0.0.1", g.addr, &get_request("")).await.status(),
            200
        );
    }
    let refused = request_from("127.0.0.1", g.addr, &get_request("")).await;
    assert_rejection(&refused, 429, "rate_limited");
    let body = refused.json().unwrap();
    assert_eq!(body["error"]["code"], -32010, "{body}");
    assert_eq!(
        body["error"]["data"]["detail"], "perClient: 60/min, burst 2",
        "{body}"
    );
    assert!(
        body["error"]["data"]["hint"]
            .as_str()
            .unwrap()
            .contains("Retry-After"),
        "{body}"
    );
    let wait = retry_after(&refused);
    assert_eq!(wait, 1, "one request a second");

    // Another client is not affected.
    assert_eq!(
        request_from("127.0.0.2", g.addr, &get_request("")).await.status(),
        200
    );

    // Waiting what Retry-After says is enough (the wait is the protocol under test, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        request_from("127.0.0.1", g.addr, &get_request("")).await.status(),
        200
    );
    assert_eq!(
        g.metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"rate_limited\"}")
            .await,
        1.0
    );
    assert_eq!(g.metric("mcp_guard_rate_limit_tracked_clients").await, 2.0);
    assert!(g.logs().contains("rate_limited"), "{}", g.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_limits_read_the_body_and_the_upstream_still_gets_it_whole() {
    let (url, seen) = recording_upstream().await;
    let g = guard(
        &url,
        &[
            "--rate-limit-tool",
            "render=60:1",
            "--rate-limit-method",
            "tools/list=600",
        ],
    )
    .await;
    let render = tools_call("render");
    assert_eq!(
        request_from("127.0.0.1", g.addr, &post(&render, ""))
            .await
            .status(),
        200
    );
    let refused = request_from("127.0.0.1", g.addr, &post(&render, "")).await;
    assert_rejection(&refused, 429, "rate_limited");
    assert_eq!(
        refused.json().unwrap()["error"]["data"]["detail"],
        "perTool[\"render\"]: 60/min, burst 1"
    );
    assert!(retry_after(&refused) >= 1);
    // Another tool, and the same tool named in the MCP 2026-07-28 headers, agreeing with the body.
    let search = tools_call("search");
    let headers = "Mcp-Method: tools/call\r\nMcp-Name: search\r\n";
    assert_eq!(
        request_from("127.0.0.1", g.addr, &post(&search, headers))
            .await
            .status(),
        200
    );
    let seen = seen.lock().unwrap();
    let bodies: Vec<&[u8]> = seen.requests.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(bodies, [render.as_bytes(), search.as_bytes()]);
    assert_eq!(
        seen.requests[1].header("mcp-name"),
        Some("search"),
        "MCP headers pass on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_contradicts_the_body_is_refused_and_audit_mode_forwards_it() {
    let upstream = TestUpstream::start().await;
    let g = guard(&upstream.url(), &["--rate-limit-tool", "render=60:10"]).await;
    let lie = "Mcp-Method: tools/call\r\nMcp-Name: cheap\r\n";
    let refused = request_from("127.0.0.1", g.addr, &post(&tools_call("render"), lie)).await;
    assert_rejection(&refused, 400, "mcp_header_mismatch");
    let body = refused.json().unwrap();
    assert_eq!(body["error"]["code"], -32020, "MCP's HeaderMismatch: {body}");
    assert_eq!(body["error"]["data"]["received"], "cheap");
    assert_eq!(
        g.metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"mcp_header_mismatch\"}")
            .await,
        1.0
    );

    let audit = guard(
        &upstream.url(),
        &["--rate-limit-per-client", "60:1", "--mode", "audit"],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            request_from("127.0.0.1", audit.addr, &get_request(""))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        audit
            .metric("mcp_guard_requests_total{verdict=\"audited\",reason=\"rate_limited\"}")
            .await,
        2.0,
        "audit mode counts what it would refuse"
    );
    assert_eq!(
        audit
            .metric("mcp_guard_requests_total{verdict=\"allowed\",reason=\"none\"}")
            .await,
        1.0
    );
}

/// Opens an SSE stream (`Accept: text/event-stream`) from `source` and waits for its first event.
async fn open_stream(source: &str, addr: SocketAddr) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = connect_from(source, addr).await;
    let req = "GET /sse?n=1000&ms=50 HTTP/1.1\r\nHost: mcp.example.com\r\nAccept: text/event-stream\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let got = read_stream(&mut s, "data: {\"n\":0}", Duration::from_secs(5)).await;
    assert!(got.iter().any(|(_, c)| c.contains("200 OK")), "{got:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_requests_in_flight_are_capped_per_client() {
    let upstream = TestUpstream::start().await;
    let g = guard(
        &upstream.url(),
        &[
            "--max-streams-per-client",
            "1",
            "--max-concurrent-requests-per-client",
            "1",
        ],
    )
    .await;
    let mut first = open_stream("127.0.0.1", g.addr).await;
    let stream = "GET /sse?n=1 HTTP/1.1\r\nHost: mcp.example.com\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
    let refused = request_from("127.0.0.1", g.addr, stream).await;
    assert_rejection(&refused, 429, "too_many_streams");
    assert_eq!(retry_after(&refused), 1);
    // Streams are not requests in flight, and other clients have caps of their own.
    assert_eq!(
        request_from("127.0.0.1", g.addr, &get_request("")).await.status(),
        200
    );
    let mut other = open_stream("127.0.0.2", g.addr).await;
    // The open streams keep flowing.
    for s in [&mut first, &mut other] {
        let got = read_stream(s, "data: {\"n\":5}", Duration::from_secs(10)).await;
        assert!(got.iter().any(|(_, c)| c.contains("data: {\"n\":5}")), "{got:?}");
    }
    // A POST answered with an event stream is one call's answer: it holds a request slot until it ends.
    let mut slow = connect_from("127.0.0.3", g.addr).await;
    {
        use tokio::io::AsyncWriteExt;
        let req = "POST /sse?n=1000&ms=50 HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Length: 0\r\n\r\n";
        slow.write_all(req.as_bytes()).await.unwrap();
        assert!(
            !read_stream(&mut slow, "data: {\"n\":0}", Duration::from_secs(5))
                .await
                .is_empty()
        );
    }
    let refused = request_from("127.0.0.3", g.addr, &get_request("")).await;
    assert_rejection(&refused, 429, "too_many_concurrent_requests");
    drop(slow);
    drop(first);
    // Closing frees the slots; the guard learns of it when its next write fails, so poll.
    eventually("a place free again", Duration::from_secs(10), || async {
        request_from("127.0.0.3", g.addr, &get_request("")).await.status() == 200
    })
    .await;
    let reopen = "GET /sse?n=1 HTTP/1.1\r\nHost: mcp.example.com\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
    eventually(
        "a closed stream gave its slot back",
        Duration::from_secs(10),
        || async { request_from("127.0.0.1", g.addr, reopen).await.status() == 200 },
    )
    .await;
    // At least the refusals above; the polls may add some while the guard has not yet noticed a close.
    for reason in ["too_many_streams", "too_many_concurrent_requests"] {
        let sample = format!("mcp_guard_requests_total{{verdict=\"rejected\",reason=\"{reason}\"}}");
        assert!(g.metric(&sample).await >= 1.0, "{reason}");
    }
}

/// MCP 2026-07-28 has no `GET` stream: a client listens with a `subscriptions/listen` POST whose answer stays
/// open. The stream cap counts it as it counts a `GET` stream, so such a client cannot open streams without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriptions_listen_counts_against_the_stream_cap() {
    let upstream = TestUpstream::start().await;
    let g = guard(&upstream.url(), &["--max-streams-per-client", "1"]).await;
    let listen = r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{}}"#;
    // `n=1000&ms=50` stays open the whole test; `n=1` with `close` ends at once.
    let listen_request = |query: &str, close: &str| {
        format!(
            "POST /sse?{query} HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n{close}\r\n{listen}",
            listen.len()
        )
    };
    let open_listen = |source: &'static str| {
        let request = listen_request("n=1000&ms=50", "");
        async move {
            use tokio::io::AsyncWriteExt;
            let mut s = connect_from(source, g.addr).await;
            s.write_all(request.as_bytes()).await.unwrap();
            let got = read_stream(&mut s, "data: {\"n\":0}", Duration::from_secs(5)).await;
            assert!(got.iter().any(|(_, c)| c.contains("200 OK")), "{got:?}");
            s
        }
    };
    let first = open_listen("127.0.0.1").await;
    let close = "Connection: close\r\n";
    let refused = request_from("127.0.0.1", g.addr, &listen_request("n=1", close)).await;
    assert_rejection(&refused, 429, "too_many_streams");
    assert_eq!(
        refused.json().unwrap()["error"]["data"]["detail"],
        "maxStreamsPerClient: 1 open"
    );
    // A listen and a GET stream share the cap.
    let get_stream = "GET /sse?n=1 HTTP/1.1\r\nHost: mcp.example.com\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
    assert_rejection(
        &request_from("127.0.0.1", g.addr, get_stream).await,
        429,
        "too_many_streams",
    );
    // A call is no stream, and another client has a cap of its own.
    let call = request_from("127.0.0.1", g.addr, &post(&tools_call("echo"), "")).await;
    assert_eq!(call.status(), 200, "{call:?}");
    let _other = open_listen("127.0.0.2").await;
    drop(first);
    eventually(
        "the closed listen gave its place back",
        Duration::from_secs(10),
        || async {
            request_from("127.0.0.1", g.addr, &listen_request("n=1", close))
                .await
                .status()
                == 200
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_origins_are_allowed_as_listed_and_a_web_wildcard_is_refused_at_start() {
    let upstream = TestUpstream::start().await;
    let g = guard(
        &upstream.url(),
        &[
            "--allow-origin",
            "chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai",
            "--allow-origin",
            "moz-extension://*",
        ],
    )
    .await;
    let cases = [
        ("chrome-extension://mhjfbmdgcfjbbpaeojofohoefgiehjai", 200),
        ("chrome-extension://aaaabbbbccccddddeeeeffffgggghhhh", 403),
        ("moz-extension://5d5e8f6c-3c0b-4a8e-9b64-1f2e3d4c5b6a", 200),
        (
            "vscode-webview://1ccsq3cs7d1c5crnmv8cbg1hgnl69vnuhmasab8m1htsqjkmg1ql",
            403,
        ),
    ];
    for (origin, status) in cases {
        let r = request_from(
            "127.0.0.1",
            g.addr,
            &get_request(&format!("Origin: {origin}\r\n")),
        )
        .await;
        assert_eq!(r.status(), status, "{origin}: {r:?}");
        if status == 403 {
            assert_rejection(&r, 403, "origin_not_allowed");
        }
    }
    let out = run_to_exit(&[
        "--upstream",
        &upstream.url(),
        "--allow-host",
        "a.com",
        "--allow-origin",
        "https://*",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`https://*` would allow every web page"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_host_and_client_are_believed_and_nobody_elses() {
    let upstream = TestUpstream::start().await;
    let g = guard(
        &upstream.url(),
        &["--trusted-proxy", "127.0.0.1", "--rate-limit-per-client", "60:1"],
    )
    .await;
    let rewritten = |xff: &str| {
        format!(
            "GET /echo HTTP/1.1\r\nHost: backend.internal\r\nX-Forwarded-Host: mcp.example.com\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
        )
    };
    let r = request_from("127.0.0.1", g.addr, &rewritten("203.0.113.7")).await;
    assert_eq!(r.status(), 200, "{r:?}");
    let echo = r.json().unwrap();
    assert_eq!(echo["headers"]["x-forwarded-host"][0], "mcp.example.com");
    assert_eq!(echo["headers"]["x-forwarded-for"][0], "203.0.113.7");
    // The clients behind the proxy have buckets of their own; the proxy is not one client.
    assert_eq!(
        request_from("127.0.0.1", g.addr, &rewritten("203.0.113.8"))
            .await
            .status(),
        200
    );
    let refused = request_from("127.0.0.1", g.addr, &rewritten("203.0.113.7")).await;
    assert_rejection(&refused, 429, "rate_limited");
    assert_eq!(
        refused.json().unwrap()["error"]["data"]["received"],
        "203.0.113.7"
    );
    // From an untrusted peer the same fields count for nothing: Host is checked, and the peer is the client.
    let r = request_from("127.0.0.2", g.addr, &rewritten("203.0.113.9")).await;
    assert_rejection(&r, 421, "host_not_allowed");
}

/// The stream cap counts what the response is: `GET /sse` without `Accept: text/event-stream`, answered with an
/// event stream, is a stream too, and the third one is refused (the upstream's stream dropped unread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_cap_counts_event_streams_whatever_the_request_accepted() {
    let upstream = TestUpstream::start().await;
    let g = guard(&upstream.url(), &["--max-streams-per-client", "2"]).await;
    let open = |accept: &'static str| async move {
        use tokio::io::AsyncWriteExt;
        let mut s = connect_from("127.0.0.1", g.addr).await;
        let req = format!("GET /sse?n=1000&ms=50 HTTP/1.1\r\nHost: mcp.example.com\r\n{accept}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        s
    };
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = open("").await;
        let got = read_stream(&mut s, "data: {\"n\":0}", Duration::from_secs(5)).await;
        assert!(got.iter().any(|(_, c)| c.contains("200 OK")), "{got:?}");
        streams.push(s);
    }
    let bare_sse = "GET /sse?n=1000&ms=50 HTTP/1.1\r\nHost: mcp.example.com\r\nConnection: close\r\n\r\n";
    let refused = request_from("127.0.0.1", g.addr, bare_sse).await;
    assert_rejection(&refused, 429, "too_many_streams");
    assert_eq!(
        refused.json().unwrap()["error"]["data"]["detail"],
        "maxStreamsPerClient: 2 open"
    );
    assert_eq!(retry_after(&refused), 1);
    // Claimed by Accept, it is refused before it reaches the upstream; a request that is no stream goes through.
    let accepted = "GET /sse?n=1 HTTP/1.1\r\nHost: mcp.example.com\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
    assert_rejection(
        &request_from("127.0.0.1", g.addr, accepted).await,
        429,
        "too_many_streams",
    );
    assert_eq!(
        request_from("127.0.0.1", g.addr, &get_request("")).await.status(),
        200
    );
    // The open streams keep flowing; closing one frees its place (the guard learns of it at its next write).
    let got = read_stream(&mut streams[1], "data: {\"n\":3}", Duration::from_secs(10)).await;
    assert!(got.iter().any(|(_, c)| c.contains("data: {\"n\":3}")), "{got:?}");
    streams.truncate(1);
    eventually(
        "the closed stream's place free again",
        Duration::from_secs(10),
        || async {
            request_from(
                "127.0.0.1",
                g.addr,
                "GET /sse?n=1 HTTP/1.1\r\nHost: mcp.example.com\r\nConnection: close\r\n\r\n",
            )
            .await
            .status()
                == 200
        },
    )
    .await;
    let refused = g
        .metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"too_many_streams\"}")
        .await;
    assert!(
        refused >= 2.0,
        "the two refusals above (and polls before the guard noticed the close): {refused}"
    );
}

/// When a test client sends the rest of a body after its first piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rest {
    Now,
    /// Once the upstream has the request's head: the guard has charged it and is streaming the body.
    AfterUpstreamHead,
    /// Not at all: the guard must decide on the first piece (more than it reads) alone.
    Never,
}

/// The calls the upstream was sent whole, as its JSON parser (last key wins) reads them: (client, method, tool)
/// for each request object and each batch element.
fn executed(seen: &support::wire::Seen) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for m in &seen.requests {
        let client = m.header("x-forwarded-for").unwrap_or_default().to_owned();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.body) else {
            continue;
        };
        let messages = match v.as_array() {
            Some(batch) => batch.clone(),
            None => vec![v],
        };
        for m in messages {
            if let Some(method) = m["method"].as_str() {
                let tool = m["params"]["name"].as_str().map(str::to_owned);
                out.push((client.clone(), method.to_owned(), tool));
            }
        }
    }
    out
}

/// Issue 20's ways around `--rate-limit-tool render=6:1`, each from a client of its own, each tried three
/// times: the upstream runs `render` at most once per client (its burst), however the body is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_way_of_writing_a_body_runs_a_tool_past_its_limit() {
    let (url, seen) = recording_upstream().await;
    let g = guard(
        &url,
        &[
            "--rate-limit-tool",
            "render=6:1",
            "--rate-limit-tool",
            "cheap=600:100",
            "--rate-limit-method",
            "tools/call=600:100",
            "--rate-limit-per-client",
            "600:100",
        ],
    )
    .await;
    let pad = "x".repeat(9 * 1024);
    let render = tools_call("render");
    let cut = |body: String, at: usize| vec![body[..at].to_owned(), body[at..].to_owned()];
    // (what, the body in pieces, when to send the pieces after the first, renders run)
    use Rest::*;
    let attacks: Vec<(&str, Vec<String>, Rest, usize)> = vec![
        ("plain", vec![render.clone()], Now, 1),
        (
            "method twice",
            vec![r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/call","params":{"name":"render","arguments":{}}}"#.into()],
            Now,
            1,
        ),
        (
            "method twice, escaped",
            vec![r#"{"jsonrpc":"2.0","id":1,"method":"ping","m\u0065thod":"tools/call","params":{"name":"render"}}"#.into()],
            Now,
            1,
        ),
        (
            "name twice",
            vec![r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"cheap","name":"render"}}"#.into()],
            Now,
            1,
        ),
        (
            "params twice",
            vec![r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"cheap"},"params":{"name":"render"}}"#.into()],
            Now,
            1,
        ),
        (
            "name after 8 KiB of arguments, in two reads",
            cut(
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"arguments":{{"pad":"{pad}"}},"name":"render"}}}}"#),
                6000,
            ),
            Now,
            1,
        ),
        ("a batch of ten", vec![format!("[{}]", [render.as_str(); 10].join(","))], Now, 0),
        // Charged as `cheap` from the prefix; the second `params` comes once the upstream has the head.
        (
            "another name after the charge",
            cut(
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"cheap","arguments":{{"pad":"{pad}"}}}},"params":{{"name":"render"}}}}"#),
                100,
            ),
            AfterUpstreamHead,
            0,
        ),
        (
            "a batch past 8 KiB",
            cut(format!(r#"[{{"method":"ping","params":{{"pad":"{pad}"}}}},{render}]"#), 8500),
            Never,
            0,
        ),
    ];
    let attempt = |source: String, pieces: Vec<String>, rest: Rest| {
        let seen = seen.clone();
        async move {
            let len: usize = pieces.iter().map(String::len).sum();
            let mut w = Wire::new(connect_from(&source, g.addr).await, Some(Duration::from_secs(10)));
            let heads = seen.lock().unwrap().heads.len();
            w.send(format!(
                "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{}",
                pieces[0]
            ))
            .await
            .unwrap();
            if rest == Never {
                return w.response(false).await.unwrap();
            }
            if rest == AfterUpstreamHead {
                eventually(
                    "the guard forwards once it has charged",
                    Duration::from_secs(10),
                    || async { seen.lock().unwrap().heads.len() > heads },
                )
                .await;
            }
            for p in &pieces[1..] {
                tokio::task::yield_now().await;
                // A guard that refused on the prefix may have closed already.
                let _ = w.send(p.as_str()).await;
            }
            w.response(false).await.unwrap()
        }
    };
    let runs_of = |source: &str| {
        executed(&seen.lock().unwrap())
            .into_iter()
            .filter(|(client, method, tool)| {
                client == source && method == "tools/call" && tool.as_deref() == Some("render")
            })
            .count()
    };
    for (i, (attack, pieces, rest, expected)) in attacks.iter().enumerate() {
        let source = format!("127.0.0.{}", 10 + i);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(attempt(source.clone(), pieces.clone(), *rest).await.status());
        }
        assert_eq!(runs_of(&source), *expected, "{attack}: statuses {statuses:?}");
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            *expected,
            "{attack}: {statuses:?}"
        );
    }
    // Padding buys no bucket of its own: after one render, every unreadable form of it is refused too.
    let unreadable_forms = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"render"}}"#.to_owned(),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"params":{{"arguments":{{"pad":"{pad}"}},"name":"render"}},"method":"tools/call"}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"arguments":{{"pad":"{pad}"}},"name":"render"}}}}"#
        ),
    ];
    let source = "127.0.0.98".to_owned();
    assert_eq!(
        attempt(source.clone(), vec![render.clone()], Now).await.status(),
        200
    );
    for body in &unreadable_forms {
        let r = attempt(source.clone(), vec![body.clone()], Now).await;
        assert_rejection(&r, 429, "rate_limited");
    }
    assert_eq!(runs_of(&source), 1);
    // How each was refused: a batch that never fits the burst, a body that named another tool after the charge,
    // a batch the guard cannot count.
    let r = attempt("127.0.0.99".into(), attacks[6].1.clone(), Now).await;
    assert_rejection(&r, 429, "rate_limited");
    assert_eq!(
        r.json().unwrap()["error"]["data"]["detail"],
        "perTool[\"render\"]: 6/min, burst 1 (this request carries 10 calls for it: more than the burst never fits)"
    );
    let r = attempt("127.0.0.99".into(), attacks[7].1.clone(), AfterUpstreamHead).await;
    assert_rejection(&r, 400, "uncountable_body");
    assert_eq!(
        r.json().unwrap()["error"]["data"]["detail"],
        "the request body names another tool, prompt or resource after the part of it that the guard read to decide"
    );
    let r = attempt("127.0.0.99".into(), attacks[8].1.clone(), Never).await;
    assert_rejection(&r, 400, "uncountable_body");
    assert_eq!(
        g.metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"uncountable_body\"}")
            .await,
        8.0
    );
}

/// Bodies of every size around the peek limit, with the method early, late or missing, sent whole or in
/// pieces, chunked or with a length: the upstream gets exactly the bytes the client sent.
#[test]
fn the_upstream_gets_the_exact_body_whatever_the_guard_peeked() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (url, seen) = rt.block_on(recording_upstream());
    let g = rt.block_on(guard(&url, &["--rate-limit-method", "tools/call=100000:100000"]));
    let strategy = (
        0usize..20_000,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(1usize..4_000, 0..6),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(pad, method_first, chunked, cuts)| {
            let padding = "x".repeat(pad);
            let body = if method_first {
                format!(r#"{{"method":"tools/call","params":{{"name":"t","arguments":{{"p":"{padding}"}}}},"id":1}}"#)
            } else {
                format!(r#"{{"id":1,"params":{{"arguments":{{"p":"{padding}"}},"name":"t"}},"method":"tools/call"}}"#)
            };
            let bytes = body.as_bytes();
            // The body in pieces, cut where the strategy says.
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in &cuts {
                let end = (at + c).min(bytes.len());
                pieces.push(&bytes[at..end]);
                at = end;
            }
            pieces.push(&bytes[at..]);
            let before = seen.lock().unwrap().requests.len();
            let status = rt.block_on(async {
                let mut w = Wire::new(connect_from("127.0.0.1", g.addr).await, Some(Duration::from_secs(10)));
                let framing = if chunked {
                    "Transfer-Encoding: chunked".to_owned()
                } else {
                    format!("Content-Length: {}", bytes.len())
                };
                w.send(format!("POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\n{framing}\r\nConnection: close\r\n\r\n"))
                    .await
                    .unwrap();
                for p in pieces.iter().filter(|p| !p.is_empty()) {
                    if chunked {
                        w.send(format!("{:x}\r\n", p.len())).await.unwrap();
                        w.send(p).await.unwrap();
                        w.send("\r\n").await.unwrap();
                    } else {
                        w.send(p).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                }
                if chunked {
                    w.send("0\r\n\r\n").await.unwrap();
                }
                w.response(false).await.unwrap().status()
            });
            prop_assert_eq!(status, 200);
            let seen = seen.lock().unwrap();
            prop_assert_eq!(seen.requests.len(), before + 1);
            prop_assert!(seen.requests[before].body == bytes, "body of {} bytes changed", bytes.len());
            Ok(())
        })
        .unwrap();
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_reload_and_a_bad_one_keeps_the_last_good_config() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let limited = r#"{"allowedHosts":["mcp.example.com"],"limits":{"perClient":{"requestsPerMinute":1}}}"#;
    write_configmap(dir.path(), 1, r#"{"allowedHosts":["mcp.example.com"]}"#);
    let config = dir.path().join("guard.json");
    let g = start_guard(&[
        "--upstream",
        &upstream.url(),
        "--config",
        config.to_str().unwrap(),
        "--config-poll-interval",
        "100ms",
    ])
    .await;
    for _ in 0..3 {
        assert_eq!(
            request_from("127.0.0.1", g.addr, &get_request("")).await.status(),
            200,
            "no limit yet"
        );
    }
    write_configmap(dir.path(), 2, limited);
    // The new limit applies once loaded: a client spends its one token and is then refused.
    eventually_or(
        "the new limit in effect",
        Duration::from_secs(10),
        || g.logs(),
        || async { request_from("127.0.0.1", g.addr, &get_request("")).await.status() == 429 },
    )
    .await;
    write_configmap(
        dir.path(),
        3,
        r#"{"allowedHosts":["mcp.example.com"],"limits":{"perClient":{"requestsPerMinute":0}}}"#,
    );
    eventually_or(
        "the invalid limits refused",
        Duration::from_secs(10),
        || g.logs(),
        || async {
            g.metric("mcp_guard_config_reloads_total{result=\"failed\"}")
                .await
                >= 1.0
        },
    )
    .await;
    assert!(
        g.logs()
            .contains("limits.perClient.requestsPerMinute must be greater than 0"),
        "{}",
        g.logs()
    );
    assert_eq!(g.metric("mcp_guard_config_last_reload_ok").await, 0.0);
    // Still limited: the last good config, never none.
    let r = request_from("127.0.0.1", g.addr, &get_request("")).await;
    assert_rejection(&r, 429, "rate_limited");
}

/// HTTP/2 clients (h2c) go through the same limits: the body is read from DATA frames, replayed whole, and a
/// refusal is the same 429 on one stream while the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_limited_by_the_body_they_stream() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (url, seen) = recording_upstream().await;
    let g = guard(&url, &["--rate-limit-tool", "render=60:1"]).await;
    let stream = connect_from("127.0.0.1", g.addr).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = tools_call("render");
    let mut statuses = Vec::new();
    for _ in 0..2 {
        // The body in two DATA frames, cut inside the tool's name.
        let (a, b) = body.split_at(body.find("render").unwrap() + 3);
        let frames = futures::stream::iter([Bytes::from(a.to_owned()), Bytes::from(b.to_owned())])
            .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
        let req = http::Request::post("http://mcp.example.com/mcp")
            .header("content-type", "application/json")
            .body(StreamBody::new(frames))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").cloned();
        let json: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap_or_default();
        statuses.push((status, retry.is_some(), json["error"]["data"]["reason"].clone()));
    }
    assert_eq!(
        statuses,
        [
            (200, false, serde_json::Value::Null),
            (429, true, serde_json::json!("rate_limited"))
        ]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 1);
    assert_eq!(seen.requests[0].body, body.as_bytes());
}
