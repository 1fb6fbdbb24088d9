//! The request path: check the live allowlist, then stream the request to the upstream and the response back.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use mcp_guard_config::{Allowlist, Denial, HeaderSeen, Mode, Reason, RequestFacts, Verdict};
use tracing::{debug, warn};

use crate::body::{BodyTooLarge, RequestBody, ResponseBody, StreamCount};
use crate::config::LiveAllowlist;
use crate::field::Field;
use crate::metrics::{Metrics, Outcome, UpstreamError};
use crate::pool::{H1Pool, SendError};
use crate::upstream::Upstream;

/// Used when neither the config nor a flag sets `maxRequestBodyBytes`.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 4 * 1024 * 1024;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// A hop-by-hop field (RFC 9110 §7.6.1), never forwarded; one list for the hyper path and the HTTP/1.1 path.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    Field::of(name.as_str()).is_hop_by_hop()
}

/// Removes hop-by-hop headers, including every header the `Connection` header names. One pass over the
/// headers; nothing is removed (or allocated) when there is nothing to remove, the common case.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let mut named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    named.extend(headers.keys().filter(|k| is_hop_by_hop(k)).cloned());
    for name in named {
        headers.remove(&name);
    }
}

pub type LegacyClient = Client<crate::UpstreamConnector, RequestBody>;

/// How the guard talks to the upstream: its own lean HTTP/1.1 pool, or hyper-util's client for h2c.
pub enum UpstreamClient {
    H1(Arc<H1Pool>),
    H2(Box<LegacyClient>),
}

/// Everything the request path needs; shared by all connections.
pub struct Proxy {
    pub live: LiveAllowlist,
    pub client: UpstreamClient,
    pub upstream: Upstream,
    pub preserve_host: bool,
    pub metrics: Arc<Metrics>,
}

/// Facts about one client connection, computed once.
pub struct Peer {
    pub addr: SocketAddr,
    pub ip: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        Peer { addr, ip }
    }
}

/// Reads the facts the allowlist check needs from a request.
pub fn facts(req: &Request<Incoming>) -> RequestFacts<'_> {
    let headers = req.headers();
    RequestFacts {
        target_authority: req.uri().authority().map(|a| a.as_str()),
        http2: req.version() == Version::HTTP_2,
        scheme: req.uri().scheme_str(),
        host: HeaderSeen::collect(headers.get_all(header::HOST).iter().map(HeaderValue::as_bytes)),
        origin: HeaderSeen::collect(headers.get_all(header::ORIGIN).iter().map(HeaderValue::as_bytes)),
    }
}

impl Proxy {
    /// Handles one request; never fails (errors become JSON answers).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: Arc<Peer>) -> Response<ResponseBody> {
        let allowlist: Arc<Allowlist> = self.live.borrow().clone();
        let verdict = allowlist.check(&facts(&req));
        let allowed = match verdict {
            Verdict::Allow => {
                self.metrics.request(Outcome::Allowed, None);
                true
            }
            Verdict::Deny(denial) => {
                let enforce = allowlist.mode == Mode::Enforce;
                let origin = req.headers().get(header::ORIGIN).map(HeaderValue::as_bytes);
                log_denial(
                    &denial,
                    req.method().as_str(),
                    req.uri().path(),
                    origin,
                    &peer,
                    enforce,
                );
                debug!(headers = ?req.headers(), "rejected request headers");
                if enforce {
                    self.metrics.request(Outcome::Rejected, Some(denial.reason));
                    return reject(&allowlist, &denial);
                }
                self.metrics.request(Outcome::Audited, Some(denial.reason));
                false
            }
        };

        let limit = allowlist
            .limits
            .max_request_body_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES);
        if let Some(len) = content_length(req.headers())
            && len > limit
        {
            return self.too_large(&allowlist, &req, &peer, limit, len.to_string());
        }

        let method = req.method().clone();
        let path = req.uri().path_and_query().cloned();
        let upstream_req = self.upstream_request(req, &peer, allowed, limit);
        let sent: Result<Response<ResponseBody>, SendError> = match &self.client {
            // Boxed: hyper keeps the allocation of the service future for the connection's lifetime,
            // so the exchange's state (head buffers and the like) must not be part of it.
            UpstreamClient::H1(pool) => Box::pin(pool.send(upstream_req)).await.map(|r| {
                let count = StreamCount::new(&self.metrics.open_streams);
                r.map(|inner| ResponseBody::H1 { inner, _count: count })
            }),
            UpstreamClient::H2(client) => Box::pin(client.request(upstream_req))
                .await
                .map_err(SendError::Legacy)
                .map(|r| {
                    let count = StreamCount::new(&self.metrics.open_streams);
                    r.map(|inner| ResponseBody::H2 { inner, _count: count })
                }),
        };
        match sent {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.version = Version::HTTP_11;
                Response::from_parts(parts, body)
            }
            Err(err) => {
                let path = path.as_ref().map_or("/", |p| p.path());
                self.upstream_failed(&allowlist, err, &method, path, &peer, limit)
            }
        }
    }

    /// Rewrites the client's request into the upstream's.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        allowed: bool,
        limit: u64,
    ) -> Request<RequestBody> {
        let (mut parts, body) = req.into_parts();
        // The authority the client addressed (what the check looked at).
        let client_authority = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        if self.upstream.h2 {
            // hyper-util's client wants an absolute URI; its authority becomes `:authority` (the connection goes
            // to the upstream whatever it says). HTTP/1.1 gets origin-form.
            uri.scheme = Some(http::uri::Scheme::HTTP);
            // Only a checked host: each authority gets its own pooled connections.
            let preserved = client_authority
                .as_ref()
                .filter(|_| self.preserve_host && allowed)
                .and_then(|a| http::uri::Authority::try_from(a.as_bytes()).ok());
            uri.authority = Some(preserved.unwrap_or_else(|| self.upstream.authority.clone()));
        }
        uri.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| self.upstream.base_uri.clone());

        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        if self.upstream.h2 {
            parts.version = Version::HTTP_2;
            headers.remove(header::HOST);
        } else {
            parts.version = Version::HTTP_11;
            match (&client_authority, self.preserve_host) {
                (Some(client), true) => headers.insert(header::HOST, client.clone()),
                _ => headers.insert(header::HOST, self.upstream.host_header.clone()),
            };
        }
        if allowed && !self.preserve_host && headers.contains_key(header::ORIGIN) {
            headers.insert(header::ORIGIN, self.upstream.origin_header.clone());
        }
        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => {
                let joined = format!("{prior}, {}", peer.addr.ip());
                if let Ok(v) = HeaderValue::try_from(joined) {
                    headers.insert(X_FORWARDED_FOR.clone(), v);
                }
            }
            None => {
                headers.insert(X_FORWARDED_FOR.clone(), peer.ip.clone());
            }
        }
        if let Some(client) = client_authority {
            headers.insert(X_FORWARDED_HOST.clone(), client);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
        Request::from_parts(parts, RequestBody::new(body, limit))
    }

    fn too_large(
        &self,
        allowlist: &Allowlist,
        req: &Request<Incoming>,
        peer: &Peer,
        limit: u64,
        received: String,
    ) -> Response<ResponseBody> {
        let denial = Denial {
            reason: Reason::RequestBodyTooLarge,
            received,
            detail: Some(format!("limit {limit} bytes")),
        };
        log_denial(&denial, req.method().as_str(), req.uri().path(), None, peer, true);
        self.metrics.request(Outcome::Rejected, Some(denial.reason));
        reject(allowlist, &denial)
    }

    fn upstream_failed(
        &self,
        allowlist: &Allowlist,
        err: SendError,
        method: &http::Method,
        path: &str,
        peer: &Peer,
        limit: u64,
    ) -> Response<ResponseBody> {
        if find_source::<BodyTooLarge>(&err).is_some() {
            let denial = Denial {
                reason: Reason::RequestBodyTooLarge,
                received: format!("more than {limit} bytes"),
                detail: Some(format!("limit {limit} bytes")),
            };
            warn!(reason = %denial.reason, peer = %peer.addr, %method, path, limit, "request rejected");
            self.metrics.request(Outcome::Rejected, Some(denial.reason));
            return reject(allowlist, &denial);
        }
        reject(allowlist, &self.upstream_failure(&err, method, path, peer))
    }

    /// Logs and counts a failed upstream exchange; the refusal to answer with.
    pub fn upstream_failure(
        &self,
        err: &SendError,
        method: &http::Method,
        path: &str,
        peer: &Peer,
    ) -> Denial {
        let timed_out =
            find_source::<std::io::Error>(err).is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        let kind = match err {
            SendError::ConnectTimeout => UpstreamError::Timeout,
            SendError::Connect(_) => UpstreamError::Connect,
            SendError::Legacy(e) if e.is_connect() && timed_out => UpstreamError::Timeout,
            SendError::Legacy(e) if e.is_connect() => UpstreamError::Connect,
            _ => UpstreamError::Request,
        };
        self.metrics.upstream_error(kind);
        let detail = crate::error_chain(err);
        warn!(upstream = %self.upstream.authority, error = %detail, kind = ?kind, peer = %peer.addr, %method, path, "upstream request failed");
        Denial {
            reason: Reason::UpstreamUnavailable,
            received: self.upstream.authority.to_string(),
            detail: Some(detail),
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn find_source<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// Logs a refusal (or, in audit mode, a violation let through) with what the client sent.
pub fn log_denial(
    denial: &Denial,
    method: &str,
    path: &str,
    origin: Option<&[u8]>,
    peer: &Peer,
    enforce: bool,
) {
    let origin = origin.map(String::from_utf8_lossy);
    let detail = denial.detail.as_deref().unwrap_or("");
    let (mode, message) = if enforce {
        ("enforce", "request rejected")
    } else {
        ("audit", "request violates the allowlist; forwarded (audit mode)")
    };
    warn!(
        reason = %denial.reason,
        status = denial.status(),
        received = %denial.received,
        detail,
        origin = origin.as_deref().unwrap_or(""),
        peer = %peer.addr,
        method,
        path,
        mode,
        "{message}"
    );
}

#[derive(serde::Serialize)]
struct ErrorEnvelope<'a> {
    jsonrpc: &'static str,
    id: Option<()>,
    error: ErrorObject<'a>,
}

#[derive(serde::Serialize)]
struct ErrorObject<'a> {
    code: i32,
    message: &'static str,
    data: ErrorData<'a>,
}

#[derive(serde::Serialize)]
struct ErrorData<'a> {
    reason: &'static str,
    received: &'a str,
    hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// The JSON-RPC error body the guard answers refusals with:
/// `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":..,"data":{"reason":..,"received":..,"hint":..}}}`.
pub fn error_body(allowlist: Option<&Allowlist>, denial: &Denial) -> Bytes {
    let code = match denial.reason {
        Reason::UpstreamUnavailable => -32603,
        _ => -32600,
    };
    let envelope = ErrorEnvelope {
        jsonrpc: "2.0",
        id: None,
        error: ErrorObject {
            code,
            message: denial.reason.message(),
            data: ErrorData {
                reason: denial.reason.as_str(),
                received: &denial.received,
                hint: allowlist.map(|a| a.hint(denial)).unwrap_or_default(),
                detail: denial.detail.as_deref(),
            },
        },
    };
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// A refusal as an HTTP response: the reason's status, `content-type: application/json`, the JSON-RPC body.
pub fn reject(allowlist: &Allowlist, denial: &Denial) -> Response<ResponseBody> {
    json_response(denial.status(), error_body(Some(allowlist), denial))
}

/// The header fields of every answer the guard gives itself (both paths).
pub const JSON_ANSWER_FIELDS: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
];

pub fn json_response(status: u16, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    for (name, value) in JSON_ANSWER_FIELDS {
        resp.headers_mut()
            .insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("mcp-session-id", HeaderValue::from_static("abc"));
        h.insert("mcp-protocol-version", HeaderValue::from_static("2025-06-18"));
        h.insert("last-event-id", HeaderValue::from_static("7"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["mcp-session-id", "mcp-protocol-version", "last-event-id"]);
    }

    #[test]
    fn error_body_shape() {
        let allowlist = Allowlist::compile(&mcp_guard_config::GuardConfig {
            allowed_hosts: vec!["a.com".into()],
            ..Default::default()
        })
        .unwrap();
        let d = Denial::new(Reason::HostNotAllowed, "evil.com");
        let v: serde_json::Value = serde_json::from_slice(&error_body(Some(&allowlist), &d)).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["error"]["data"]["reason"], "host_not_allowed");
        assert_eq!(v["error"]["data"]["received"], "evil.com");
        assert!(
            v["error"]["data"]["hint"]
                .as_str()
                .unwrap()
                .contains("--allow-host evil.com")
        );
    }
}
