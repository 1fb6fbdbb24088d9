//! The HTTPS server: tokio-rustls (ring) + hyper (HTTP/1.1 and HTTP/2 by ALPN), a short TLS handshake and
//! header-read timeout, bounded request bodies, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::{CertStore, RELOAD_INTERVAL};
use super::{MUTATE_PODS_PATH, VALIDATE_MCPSERVER_PATH, WebhookError, WebhookState, admission};

/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB per object; a review carries
/// the object and, on UPDATE, the old one).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Time allowed for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to receive request headers (HTTP/1.1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to receive a request body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful shutdown waits for in-flight reviews.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bound webhook server; [`WebhookServer::run`] serves until shutdown.
pub struct WebhookServer {
    listener: TcpListener,
    certs: Arc<CertStore>,
    acceptor: TlsAcceptor,
    state: Arc<WebhookState>,
}

impl WebhookServer {
    /// Validates the certificate pair and binds. Errors here should stop start-up with the message.
    pub async fn bind(
        addr: SocketAddr,
        cert_path: &Path,
        key_path: &Path,
        state: Arc<WebhookState>,
    ) -> Result<Self, WebhookError> {
        let certs = CertStore::load(cert_path, key_path)?;
        let acceptor = TlsAcceptor::from(Arc::new(certs.server_config()?));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| WebhookError::Bind { addr, source })?;
        Ok(Self {
            listener,
            certs,
            acceptor,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight connections for up to [`SHUTDOWN_GRACE`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let reloader = self
            .certs
            .spawn_reloader(RELOAD_INTERVAL, self.state.metrics().clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, "admission webhook listening (HTTPS)");
        }
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let state = Arc::clone(&self.state);
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(route(&state, req).await) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(256);
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("webhook connections still open after the grace period; closing");
        }
        reloader.abort();
    }
}

/// Serves the webhook on `addr` with the certificate and key files (reloaded when they change) until the
/// process ends. Fails at once when the certificate pair is unusable or the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    cert_path: &Path,
    key_path: &Path,
    state: Arc<WebhookState>,
) -> Result<(), WebhookError> {
    serve_with_shutdown(addr, cert_path, key_path, state, std::future::pending()).await
}

/// [`serve`] with a shutdown signal (graceful: in-flight reviews finish).
pub async fn serve_with_shutdown(
    addr: SocketAddr,
    cert_path: &Path,
    key_path: &Path,
    state: Arc<WebhookState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    WebhookServer::bind(addr, cert_path, key_path, state)
        .await?
        .run(shutdown)
        .await;
    Ok(())
}

async fn route(state: &WebhookState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz" | "/livez") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if state.is_synced() {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
            }
        }
        (&Method::POST, MUTATE_PODS_PATH | VALIDATE_MCPSERVER_PATH) => {
            let body = match tokio::time::timeout(
                BODY_READ_TIMEOUT,
                Limited::new(req.into_body(), MAX_BODY_BYTES).collect(),
            )
            .await
            {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}\n")),
                Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "body read timed out\n"),
            };
            let review = if path == MUTATE_PODS_PATH {
                admission::mutate_pods(state, &body).await
            } else {
                admission::validate_mcpserver(state, &body).await
            };
            match serde_json::to_vec(&review) {
                Ok(json) => Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(json)))
                    .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "cannot build response\n")),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot encode review: {e}\n"),
                ),
            }
        }
        (_, MUTATE_PODS_PATH | VALIDATE_MCPSERVER_PATH) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
