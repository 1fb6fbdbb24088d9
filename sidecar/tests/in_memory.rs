//! The request path driven in memory: requests built here go straight into `Proxy::handle` (generic over the
//! body type), with a real upstream behind it; the guard's metrics say how each was counted.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use mcp_guard::metrics::Metrics;
use mcp_guard::pool::{Paired, UpstreamPool};
use mcp_guard::proxy::{Peer, Proxy};
use mcp_guard::upstream::Upstream;
use mcp_guard_config::{Allowlist, GuardConfig, Limits};
use support::TestUpstream;

fn proxy(upstream: &TestUpstream, limits: Limits) -> Arc<Proxy> {
    proxy_with(
        upstream,
        GuardConfig {
            allowed_hosts: vec!["mcp.example.com".into()],
            limits,
            ..Default::default()
        },
    )
}

fn proxy_with(upstream: &TestUpstream, config: GuardConfig) -> Arc<Proxy> {
    let allowlist = Allowlist::compile(&config).unwrap();
    let (tx, live) = tokio::sync::watch::channel(Arc::new(allowlist));
    std::mem::forget(tx);
    let upstream = Upstream::parse(&upstream.url(), false).unwrap();
    let metrics = Arc::new(Metrics::new());
    Arc::new(Proxy {
        live,
        pool: UpstreamPool::new(&upstream, Duration::from_secs(5), 64 * 1024),
        upstream,
        preserve_host: false,
        limiter: mcp_guard::limiter::Limiter::new(metrics.rate_limit_tracked_clients.clone()),
        keys: mcp_guard::keys::KeyStore::new(metrics.clone()),
        tokens: Default::default(),
        audit: mcp_guard::audit::AuditLog::new(Box::new(std::io::sink()), 16, metrics.clone()),
        metrics,
    })
}

fn peer(proxy: &Proxy) -> Arc<Peer> {
    Arc::new(Peer::new(
        "127.0.0.1:40000".parse().unwrap(),
        Paired::new(proxy.pool.clone(), false),
    ))
}

/// The `mcp_guard_requests_total` samples, as `verdict/reason value` lines.
fn requests(proxy: &Proxy) -> Vec<String> {
    proxy
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("mcp_guard_requests_total{") && !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_in_memory_request_is_forwarded_and_counted_allowed() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy(&upstream, Limits::default());
    let req = Request::post("/echo")
        .header("host", "mcp.example.com")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = proxy.clone().handle(req, peer(&proxy)).await;
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["method"], "POST", "{echo}");
    let counted = requests(&proxy);
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(counted[0].contains("verdict=\"allowed\""), "{counted:?}");
}

/// A body with no declared length that streams past `maxRequestBodyBytes` is refused once: `413`, counted
/// rejected, and not also allowed.
#[tokio::test]
async fn a_streamed_body_over_the_limit_is_counted_once_as_rejected() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy(
        &upstream,
        Limits {
            max_request_body_bytes: Some(1000),
            ..Default::default()
        },
    );
    let chunks =
        (0..20).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; 100]))));
    let req = Request::post("/upload")
        .header("host", "mcp.example.com")
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let resp = proxy.clone().handle(req, peer(&proxy)).await;
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"]["data"]["reason"], "request_body_too_large",
        "{json}"
    );
    assert_eq!(
        json["error"]["data"]["received"], "more than 1000 bytes",
        "{json}"
    );
    let counted = requests(&proxy);
    assert_eq!(counted.len(), 1, "one verdict, not two: {counted:?}");
    assert!(
        counted[0].contains("verdict=\"rejected\"") && counted[0].contains("request_body_too_large"),
        "{counted:?}"
    );
}

/// The same limit on a declared length answers with the same `received` text.
#[tokio::test]
async fn a_declared_length_over_the_limit_says_the_same() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy(
        &upstream,
        Limits {
            max_request_body_bytes: Some(1000),
            ..Default::default()
        },
    );
    let req = Request::post("/upload")
        .header("host", "mcp.example.com")
        .header("content-length", "2000")
        .body(Full::new(Bytes::from(vec![b'x'; 2000])))
        .unwrap();
    let resp = proxy.clone().handle(req, peer(&proxy)).await;
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"]["data"]["received"], "more than 1000 bytes",
        "{json}"
    );
    assert_eq!(upstream.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// With CORS on: a preflight from an allowed origin is answered by the guard (the upstream never sees it), an
/// actual response carries the origin and the exposed fields, and a page on another origin gets nothing.
#[tokio::test]
async fn cors_is_answered_for_allowed_origins_only() {
    let upstream = TestUpstream::start().await;
    let proxy = proxy_with(
        &upstream,
        GuardConfig {
            allowed_hosts: vec!["mcp.example.com".into()],
            allowed_origins: vec!["https://app.example.com".into()],
            cors: true,
            ..Default::default()
        },
    );
    let preflight = |origin: &str| {
        Request::options("/mcp")
            .header("host", "mcp.example.com")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,mcp-protocol-version,mcp-param-region",
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let resp = proxy
        .clone()
        .handle(preflight("https://app.example.com"), peer(&proxy))
        .await;
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("mcp-param-region")
    );
    assert_eq!(
        upstream.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "answered by the guard"
    );

    let resp = proxy
        .clone()
        .handle(preflight("https://evil.example"), peer(&proxy))
        .await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(
        upstream.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "refused by the guard"
    );

    let req = Request::post("/echo")
        .header("host", "mcp.example.com")
        .header("origin", "https://app.example.com")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = proxy.clone().handle(req, peer(&proxy)).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(
        h["access-control-expose-headers"],
        "WWW-Authenticate, Mcp-Session-Id"
    );
    assert!(h.get_all("vary").iter().any(|v| v == "Origin"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["method"], "POST", "forwarded: {echo}");
    let counted = proxy.metrics.encode();
    assert!(counted.contains("mcp_guard_cors_preflights_total 1"), "{counted}");
}
