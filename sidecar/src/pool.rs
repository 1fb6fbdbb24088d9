//! Upstream connections, each one hyper's (`hyper::client::conn`). An HTTP/1.1 client connection keeps an
//! upstream connection of its own for its requests, which come one after another: no pool lookup and no task
//! hop per request, and reuse does not depend on which task runs first. When the client leaves, that upstream
//! connection goes to the worker's idle list for the next client. An h2c upstream gets one multiplexed
//! connection per worker.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::RequestBody;
use crate::upstream::Upstream;

type H1Sender = http1::SendRequest<RequestBody>;
type H2Sender = http2::SendRequest<RequestBody>;

/// Idle upstream connections a worker keeps at most.
const MAX_IDLE: usize = 256;

/// The most an upstream connection's read buffer grows to (and so the largest response head it takes). hyper's
/// adaptive buffer doubles after every read that fills it, by default up to about 400 KiB, and a connection keeps
/// what it grew to for its lifetime, idle in the pool too. Measured with 1 MiB answers over 32 connections
/// (docs/performance.md): the guard then kept 7 MiB instead of 20, for 8 % more CPU time per answer (64 KiB:
/// 5 MiB, 25 % more).
pub const UPSTREAM_MAX_BUF: usize = 128 * 1024;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting to the upstream timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("connecting to the upstream")]
    Connect(#[source] std::io::Error),
    #[error("upstream connection handshake")]
    Handshake(#[source] hyper::Error),
    #[error("upstream exchange")]
    Exchange(#[source] hyper::Error),
}

/// The upstream connections of one worker.
pub struct UpstreamPool {
    /// What to dial: the upstream's authority.
    addr: String,
    h2: bool,
    connect_timeout: Duration,
    h1: http1::Builder,
    h2_builder: http2::Builder<TokioExecutor>,
    idle: Mutex<Vec<H1Sender>>,
    shared_h2: Mutex<Option<H2Sender>>,
}

/// Drives an upstream connection in a task of its own until it ends.
fn run_connection(conn: impl Future<Output = hyper::Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl UpstreamPool {
    pub fn new(upstream: &Upstream, connect_timeout: Duration, read_buffer: usize) -> Arc<Self> {
        let mut h1 = http1::Builder::new();
        match read_buffer {
            0 => h1.max_buf_size(UPSTREAM_MAX_BUF),
            exact => h1.read_buf_exact_size(Some(exact)),
        };
        let mut h2_builder = http2::Builder::new(TokioExecutor::new());
        h2_builder.timer(TokioTimer::new());
        Arc::new(UpstreamPool {
            addr: upstream.authority.to_string(),
            h2: upstream.h2,
            connect_timeout,
            h1,
            h2_builder,
            idle: Mutex::new(Vec::new()),
            shared_h2: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))?
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    /// Connects and shakes hands; the connection is driven by a task of its own.
    async fn dial<S, C, H>(&self, handshake: impl FnOnce(TokioIo<TcpStream>) -> H) -> Result<S, SendError>
    where
        H: Future<Output = hyper::Result<(S, C)>>,
        C: Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let (sender, conn) = handshake(self.connect().await?)
            .await
            .map_err(SendError::Handshake)?;
        run_connection(conn);
        Ok(sender)
    }

    async fn dial_h1(&self) -> Result<H1Sender, SendError> {
        self.dial(|io| self.h1.handshake(io)).await
    }

    async fn h2_sender(&self) -> Result<H2Sender, SendError> {
        if let Some(s) = lock(&self.shared_h2).as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let sender: H2Sender = self.dial(|io| self.h2_builder.handshake(io)).await?;
        *lock(&self.shared_h2) = Some(sender.clone());
        Ok(sender)
    }

    fn take_idle(&self) -> Option<H1Sender> {
        let mut idle = lock(&self.idle);
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, sender: H1Sender) {
        let mut idle = lock(&self.idle);
        if !sender.is_closed() && idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}

/// The upstream side of one client connection.
pub struct Paired {
    pool: Arc<UpstreamPool>,
    /// The client speaks h2c: its requests come concurrently and cannot wait for one connection.
    client_h2: bool,
    own: Mutex<Option<H1Sender>>,
}

impl Paired {
    pub fn new(pool: Arc<UpstreamPool>, client_h2: bool) -> Self {
        Paired {
            pool,
            client_h2,
            own: Mutex::new(None),
        }
    }

    /// Sends a request upstream; the response's body streams on as hyper reads it. An async block, not an `async
    /// fn`: an `async fn`'s future keeps its arguments twice, and this one is part of every exchange's.
    #[allow(clippy::manual_async_fn)]
    pub fn send(
        &self,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + Send + '_ {
        async move {
            // The h2 paths are boxed apart: inline they doubled the future every request's send moves and carries
            // (2,064 bytes against 1,048), and the common case is an HTTP/1.1 client's exchange over its own
            // connection, below.
            if self.pool.h2 {
                return Box::pin(async {
                    let mut sender = self.pool.h2_sender().await?;
                    sender.send_request(req).await.map_err(SendError::Exchange)
                })
                .await;
            }
            if self.client_h2 {
                return Box::pin(self.send_concurrent(req)).await;
            }
            let reused = lock(&self.own).take().or_else(|| self.pool.take_idle());
            if let Some(mut sender) = reused {
                // The client's previous exchange has ended (hyper reads the next request only then), so this waits
                // at most for hyper to notice; a connection the upstream closed meanwhile fails here.
                if sender.ready().await.is_ok() {
                    let exchange = sender.try_send_request(req);
                    *lock(&self.own) = Some(sender);
                    match exchange.await {
                        Ok(resp) => return Ok(resp),
                        Err(mut e) => match e.take_message() {
                            // Not sent: the connection closed just before; a new one takes the request.
                            Some(r) => req = r,
                            None => return Err(SendError::Exchange(e.into_error())),
                        },
                    }
                }
            }
            let mut sender = self.pool.dial_h1().await?;
            let exchange = sender.send_request(req);
            *lock(&self.own) = Some(sender);
            exchange.await.map_err(SendError::Exchange)
        }
    }

    /// An h2c client's request to an HTTP/1.1 upstream: on an idle connection or a new one, which goes to the
    /// idle list once its exchange is over.
    async fn send_concurrent(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, SendError> {
        let mut sender = match self.pool.take_idle() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.pool.dial_h1().await?,
            },
            None => self.pool.dial_h1().await?,
        };
        let exchange = sender.send_request(req);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put_idle(sender);
            }
        });
        exchange.await.map_err(SendError::Exchange)
    }
}

impl Drop for Paired {
    fn drop(&mut self) {
        if let Some(sender) = lock(&self.own).take() {
            self.pool.put_idle(sender);
        }
    }
}
