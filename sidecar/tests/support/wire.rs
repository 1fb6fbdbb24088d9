//! HTTP/1.x over raw sockets for the guard's black-box tests: the one reader of messages off the wire
//! (`test_support::http1`, which hyper inside the guard is held to), and scripted upstreams built on it.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

pub use test_support::http1::*;

pub const HOST: &str = "mcp.example.com";

/// A scripted upstream on 127.0.0.1: `handler` gets every accepted connection.
pub async fn raw_upstream<F, Fut>(handler: F) -> String
where
    F: Fn(Wire) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let h = handler.clone();
            tokio::spawn(async move { h(Wire::new(s, None)).await });
        }
    });
    format!("http://{addr}")
}

/// What a recording upstream saw: every request line as soon as its head arrived, and every complete request.
#[derive(Default)]
pub struct Seen {
    pub heads: Vec<String>,
    pub requests: Vec<Msg>,
}

/// A keep-alive upstream that records requests (heads and bodies) and answers each with `200 ok`.
pub async fn recording_upstream() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    let url = raw_upstream(move |mut w| {
        let seen = record.clone();
        async move {
            loop {
                let Ok((start, headers)) = w.head().await else {
                    return;
                };
                seen.lock().unwrap().heads.push(start.clone());
                let Ok(body) = w.request_body(&headers).await else {
                    return;
                };
                seen.lock().unwrap().requests.push(Msg { start, headers, body });
                let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
                if w.send(ok).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (url, seen)
}

pub fn assert_rejection(r: &Msg, status: u16, reason: &str) {
    assert_eq!(r.status(), status, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let v = r.json().unwrap();
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert!(v["id"].is_null(), "{v}");
    assert_eq!(v["error"]["data"]["reason"], reason, "{v}");
}

/// What hyper answers bytes it cannot parse as a request: its own plain `400`/`431` with no body, then it closes.
pub async fn assert_library_refusal(c: &mut Wire, status: u16, what: &str) {
    let r = c.response(false).await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status(), status, "{what}: {r:?}");
    assert!(r.body.is_empty(), "{what}: {r:?}");
    assert!(c.closed().await, "{what}: connection closed after {status}");
}
