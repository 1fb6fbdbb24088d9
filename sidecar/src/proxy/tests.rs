use super::*;
use mcp_guard_config::GuardConfig;

fn proxy() -> Arc<Proxy> {
    let allowlist = Allowlist::compile(&GuardConfig {
        allowed_hosts: vec!["mcp.example.com".into()],
        ..Default::default()
    })
    .unwrap();
    let (tx, live) = tokio::sync::watch::channel(Arc::new(allowlist));
    std::mem::forget(tx);
    let upstream = Upstream::parse("http://127.0.0.1:1", false).unwrap();
    let metrics = Arc::new(Metrics::new());
    Arc::new(Proxy {
        live,
        pool: UpstreamPool::new(&upstream, std::time::Duration::from_secs(5), 0),
        upstream,
        preserve_host: false,
        limiter: crate::limiter::Limiter::new(metrics.rate_limit_tracked_clients.clone()),
        keys: KeyStore::new(metrics.clone()),
        tokens: Default::default(),
        audit: AuditLog::new(Box::new(std::io::sink()), 16, metrics.clone()),
        metrics,
    })
}

/// An HTTP/1.1 client's connection.
fn peer(proxy: &Proxy) -> Arc<Peer> {
    Arc::new(Peer::new(
        "127.0.0.1:40000".parse().unwrap(),
        Paired::new(proxy.pool.clone(), false),
    ))
}

/// hyper keeps the allocation of a connection's service future for the connection's lifetime: the future
/// `handle` returns stays a few words whatever the request path holds (kilobytes, boxed apart and freed with
/// the response head), or every open SSE stream would carry it.
#[tokio::test]
async fn the_future_hyper_keeps_per_connection_is_a_few_words() {
    let proxy = proxy();
    let peer = peer(&proxy);
    let req = Request::get("/sse")
        .header("host", "mcp.example.com")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let answer = proxy.clone().handle(req, peer);
    let size = std::mem::size_of_val(&answer);
    assert!(size <= 64, "the request's future is {size} bytes");
}

/// A request to the upstream waits in hyper's dispatch channel, whose first block (32 requests) each upstream
/// connection keeps for its lifetime: the guard's request body adds little to hyper's own request head.
#[test]
fn a_request_to_the_upstream_is_little_more_than_its_head() {
    let head = std::mem::size_of::<Request<()>>();
    let ours = std::mem::size_of::<Request<RequestBody>>() - head;
    assert!(ours <= 96, "the request body is {ours} bytes");
}

/// Every request's exchange is boxed (`handle`) and its send future moved into it: what they hold is allocated
/// and copied per request. Each names its request once (an `async fn` keeps its arguments twice, a named local
/// keeps its slot once moved), so neither carries the request's head more than once (3.6 and 1.1 KB before).
#[tokio::test]
async fn the_exchange_holds_the_request_once() {
    let proxy = proxy();
    let peer = peer(&proxy);
    let allowlist: Arc<Allowlist> = proxy.live.borrow().clone();
    let (head, _) = Request::post("/mcp")
        .header("host", "mcp.example.com")
        .body(())
        .unwrap()
        .into_parts();
    let body = || RequestBody::new(http_body_util::Empty::<Bytes>::new(), 100);
    let exchange = proxy
        .clone()
        .exchange(allowlist, head.clone(), body(), peer.clone());
    let size = std::mem::size_of_val(&exchange);
    assert!(size <= 2304, "the exchange's future is {size} bytes");
    let send = peer.upstream.send(Request::from_parts(head, body()));
    let size = std::mem::size_of_val(&send);
    assert!(size <= 832, "the send future is {size} bytes");
}
