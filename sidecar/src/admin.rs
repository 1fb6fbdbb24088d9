//! The admin listener: `/livez`, `/readyz`, `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::metrics::Metrics;

/// What the admin endpoints report on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// The guarded port is bound (and stays so until exit): what `/livez`, and so a startup probe, reports. A
    /// native sidecar's startup probe passing means the guard holds its port before the app container starts.
    pub started: AtomicBool,
    /// Config loaded and the guarded listener bound; false again while draining.
    pub serving: AtomicBool,
    /// The upstream's address: ready also means that it accepts connections, so that a ready guard does not
    /// answer `502` because its server is still starting.
    pub upstream: String,
    /// Ready also means that the guard holds keys of every token issuer it fetches keys from (it refuses their
    /// tokens until it does).
    pub keys: Arc<crate::keys::KeyStore>,
}

/// How long `/readyz` waits for the upstream to accept a connection.
const UPSTREAM_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl AdminState {
    /// Why the guard cannot serve yet, or `None` when it can.
    pub async fn not_ready(&self) -> Option<String> {
        if !self.serving.load(Ordering::Relaxed) {
            return Some("not ready: the guard is starting or draining\n".into());
        }
        if let Some(why) = self.keys.not_ready() {
            return Some(why);
        }
        match tokio::time::timeout(UPSTREAM_PROBE_TIMEOUT, TcpStream::connect(&self.upstream)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!(
                "not ready: the upstream {} does not accept connections: {e}\n",
                self.upstream
            )),
            Err(_) => Some(format!(
                "not ready: the upstream {} did not accept a connection within {UPSTREAM_PROBE_TIMEOUT:?}\n",
                self.upstream
            )),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

pub async fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match req.uri().path() {
        "/livez" if state.started.load(Ordering::Relaxed) => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/livez" => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n"),
        "/readyz" => match state.not_ready().await {
            None => respond(StatusCode::OK, "text/plain", "ready\n"),
            Some(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why),
        },
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /livez, /readyz, /metrics\n",
        ),
    }
}

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(error = %e, "admin connection error");
            }
        });
    }
}
