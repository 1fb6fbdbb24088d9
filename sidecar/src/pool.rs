//! A lean HTTP/1.1 connection pool for the upstream, one per worker: idle connections in a short vector, a
//! connection goes back once its response body has been read to the end. No per-request connect machinery,
//! no hash map, no extra hop: the common case is pop, send, push.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::RequestBody;

/// At most this many idle upstream connections are kept per worker.
const MAX_IDLE: usize = 256;

/// Why a request could not be exchanged with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] std::io::Error),
    #[error("timed out connecting to the upstream")]
    ConnectTimeout,
    #[error("upstream request failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("upstream request failed: {0}")]
    Legacy(#[source] hyper_util::client::legacy::Error),
}

pub struct H1Pool {
    authority: String,
    connect_timeout: Duration,
    read_buffer: usize,
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
}

/// A connection lent to one response; it returns to the pool when the response body was read to the end.
pub struct Lease {
    sender: SendRequest<RequestBody>,
    pool: Arc<H1Pool>,
}

impl Lease {
    pub fn give_back(self) {
        self.pool.put(self.sender);
    }
}

impl H1Pool {
    pub fn new(authority: String, connect_timeout: Duration, read_buffer: usize) -> Arc<Self> {
        Arc::new(H1Pool {
            authority,
            connect_timeout,
            read_buffer,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Option<SendRequest<RequestBody>> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.authority.as_str()))
            .await
            .map_err(|_| SendError::ConnectTimeout)?
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let mut builder = Builder::new();
        if self.read_buffer > 0 {
            builder.read_buf_exact_size(Some(self.read_buffer));
        }
        let (sender, conn) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends a request (origin-form URI, Host set) on an idle connection or a new one. A request that an idle
    /// connection could not take (closed by the upstream meanwhile) is retried on the next one.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        loop {
            let (mut sender, reused) = match self.take() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            if sender.is_closed() || (reused && sender.ready().await.is_err()) {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok((
                        resp,
                        Lease {
                            sender,
                            pool: self.clone(),
                        },
                    ));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }
}
