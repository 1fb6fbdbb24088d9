//! The guarded listener: accepts clients (HTTP/1.1 and h2c), bounds them, and drains them on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::idle::{Activity, IdleIo};
use crate::proxy::{Peer, Proxy, UpstreamClient};

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

/// The HTTP/1.1 + h2c connection builder with the limits applied.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    {
        let mut h1 = b.http1();
        // The upstream's Date header passes through; not stamping our own saves a clock read per response.
        h1.timer(TokioTimer::new())
            .auto_date_header(false)
            .header_read_timeout(limits.header_read_timeout)
            // The read buffer bounds the request head: a larger head gets 431.
            .max_buf_size(limits.max_header_bytes.max(8192));
        if limits.max_headers != 100 {
            h1.max_headers(limits.max_headers);
        }
    }
    b.http2()
        .timer(TokioTimer::new())
        .auto_date_header(false)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(Some(256))
        .max_pending_accept_reset_streams(Some(64));
    b
}

/// The open connections of a worker that stopped accepting: [`Drain::shutdown`] asks them to finish (idle ones
/// close at once, open exchanges complete) and waits until they have.
pub struct Drain {
    signal: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

impl Drain {
    pub async fn shutdown(mut self) {
        let _ = self.signal.send(true);
        // Every connection task holds a sender; `recv` ends once the last one is gone.
        while self.done.recv().await.is_some() {}
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting and returns the drain handle.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Drain {
    // The protocol is told apart by peeking at the first bytes, so hyper's HTTP/1.1 connection reads the
    // request head into its buffer in one go (hyper-util's detection hands it the first bytes in a separate
    // read, which doubles hyper's read buffer to 16 KiB for the connection's lifetime).
    let builders = Arc::new((builder(&limits).http1_only(), builder(&limits).http2_only()));
    let (signal, draining) = watch::channel(false);
    let (open, done) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let accepted = Instant::now();
        let _ = stream.set_nodelay(true);
        let activity = limits.idle_timeout.map(|_| Activity::new());
        let peer = Peer::new(addr);
        let proxy = proxy.clone();
        let builders = builders.clone();
        let header_read_timeout = limits.header_read_timeout;
        let mut draining = draining.clone();
        let open = open.clone();
        let idle_timeout = limits.idle_timeout;
        let conn_limits = limits.clone();
        let task = async move {
            let _open_task = open;
            let _permit = permit;
            let _open = ConnectionCount::new(&proxy.metrics.open_connections);
            let h2 = match tokio::time::timeout(header_read_timeout, is_h2(&stream)).await {
                Ok(Ok(Some(h2))) => h2,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    debug!(peer = %addr, error = %e, "connection ended before a request");
                    return;
                }
                Err(_) => {
                    debug!(peer = %addr, "no request within the header read timeout");
                    return;
                }
            };
            let idle = {
                let activity = activity.clone();
                async move {
                    match (activity, idle_timeout) {
                        (Some(a), Some(t)) => a.idle(t).await,
                        _ => std::future::pending().await,
                    }
                }
            };
            tokio::pin!(idle);
            // HTTP/1.1 to an HTTP/1.1 upstream takes the lean path; h2c on either side goes through hyper.
            if !h2 && matches!(proxy.client, UpstreamClient::H1(_)) {
                let conn = crate::h1::serve(stream, peer, proxy, conn_limits, accepted, draining, activity);
                tokio::select! {
                    () = conn => {},
                    () = &mut idle => debug!(peer = %addr, "idle connection closed"),
                }
                return;
            }
            let builder = if h2 { &builders.1 } else { &builders.0 };
            let io = TokioIo::new(IdleIo::new(stream, activity));
            let peer = Arc::new(peer);
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                let peer = peer.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
            });
            // Boxed: hyper's connection state is large, and inline it would size every connection task, also
            // those of the HTTP/1.1 path.
            let mut conn = Box::pin(builder.serve_connection(io, service));
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = drained(&mut draining) => {
                    // Finish what is in flight, take no new requests.
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        r = conn.as_mut() => r,
                        () = &mut idle => { debug!(peer = %addr, "idle connection closed"); return; }
                    }
                }
                () = &mut idle => { debug!(peer = %addr, "idle connection closed"); return; }
            };
            if let Err(e) = result {
                debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        };
        tokio::spawn(task);
    }
    info!("stopped accepting connections");
    Drain { signal, done }
}

/// Resolves once the worker starts draining.
pub async fn drained(drain: &mut watch::Receiver<bool>) {
    while !*drain.borrow_and_update() {
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client speaks h2c (it starts with the HTTP/2 connection preface) or HTTP/1.1, by peeking at its
/// first bytes without consuming them. `None`: the client closed before sending anything.
pub async fn is_h2(stream: &tokio::net::TcpStream) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // A prefix of the preface so far: peeking again would return at once, so wait for more bytes.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct ConnectionCount(prometheus_client::metrics::gauge::Gauge);

impl ConnectionCount {
    fn new(g: &prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        ConnectionCount(g.clone())
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    async fn sniff(pieces: &[&'static [u8]]) -> Option<bool> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pieces = pieces.to_vec();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for p in pieces {
                c.write_all(p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Closing after the last piece: peeking still sees what was sent.
            drop(c);
        });
        let (s, _) = listener.accept().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), is_h2(&s))
            .await
            .unwrap()
            .unwrap();
        // Peeking consumed nothing.
        let mut buf = [0u8; 3];
        if got.is_some() {
            let n = s.peek(&mut buf).await.unwrap();
            assert!(b"GET".starts_with(&buf[..n]) || b"PRI".starts_with(&buf[..n]));
        }
        client.await.unwrap();
        got
    }

    #[tokio::test]
    async fn tells_h2c_from_http1_by_peeking() {
        assert_eq!(sniff(&[b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"]).await, Some(false));
        assert_eq!(sniff(&[b"G"]).await, Some(false));
        assert_eq!(sniff(&[H2_PREFACE]).await, Some(true));
        assert_eq!(
            sniff(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await,
            Some(true)
        );
        assert_eq!(sniff(&[b"PRI * HTTP/2.0\r\n", b"\r\nXX"]).await, Some(false));
        assert_eq!(sniff(&[]).await, None);
    }
}
