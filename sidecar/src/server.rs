//! The guarded listener: accepts clients (HTTP/1.1 and h2c), bounds them, and drains them on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::idle::{Activity, IdleIo};
use crate::proxy::{Peer, Proxy};

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

/// Accepts connections until `shutdown` resolves, then stops accepting and returns the drain handle.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> GracefulShutdown {
    let builder = Arc::new(builder(&limits));
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let activity = limits.idle_timeout.map(|_| Activity::new());
        let io = TokioIo::new(IdleIo::new(stream, activity.clone()));
        let peer = Arc::new(Peer::new(addr));
        let proxy = proxy.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let idle_timeout = limits.idle_timeout;
        let task = async move {
            let _permit = permit;
            let _open = ConnectionCount::new(&proxy.metrics.open_connections);
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                let peer = peer.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
            });
            let conn = watcher.watch(builder.serve_connection(io, service));
            let idle = async {
                match (activity, idle_timeout) {
                    (Some(a), Some(t)) => a.idle(t).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn => if let Err(e) = r { debug!(peer = %addr, error = %e, "connection ended with an error") },
                () = idle => debug!(peer = %addr, "idle connection closed"),
            }
        };
        tokio::spawn(task);
    }
    info!("stopped accepting connections");
    graceful
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
