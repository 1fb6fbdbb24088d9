//! The token issuers' keys, fetched by the guard itself: for each issuer of the `auth` section without inline
//! keys, its metadata (RFC 8414, or OpenID Connect discovery) unless `jwksUri` is given, then its JWKS. Kept in a
//! [`KeyStore`] that the request path reads ([`KeySource`]) with two short read locks, refreshed every
//! [`REFRESH_INTERVAL`], refetched when a token names a key the guard does not have (at most once per
//! [`REFETCH_GAP`] per issuer; concurrent requests wait for the same fetch). Keys once fetched stay through an
//! outage of the issuer: a failed fetch never removes them.
//!
//! Why the guard fetches them itself: an OAuth issuer rotates its keys on its own schedule and a token signed
//! with a new key must work at once; a copy made by the operator would lag by a reconcile. (The cluster's own
//! service-account issuer is the exception: the operator puts its keys inline, so that the guard needs neither
//! egress to the API server nor a token for it.)
//!
//! Every fetch is bounded: connect and whole-exchange timeouts, at most [`MAX_JWKS_BYTES`] read, `https` (with
//! the built-in web roots plus the issuer's `caFile`) unless `allowHttp`, and no redirect is followed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use mcp_guard_config::AuthPolicy;
use mcp_guard_config::auth::keys::MAX_JWKS_BYTES;
use mcp_guard_config::auth::{IssuerPolicy, KeySet, KeySource};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// How often an issuer's keys are fetched again while all is well.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// The least time between two refetches that tokens with an unknown key cause (per issuer): a stream of tokens
/// naming made-up keys must not turn the guard into a load generator against the issuer.
pub const REFETCH_GAP: Duration = Duration::from_secs(30);
/// The longest time one fetch (discovery and JWKS) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after a failed fetch start here and double up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// The largest discovery document read.
const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Why an issuer's keys could not be fetched; the message says which URL and what to check.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {why}")]
    Url { url: String, why: String },
    #[error("{url}: cannot connect: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: TLS: {source}")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {why}")]
    Http { url: String, why: String },
    #[error("{url}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("caFile {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("caBundle: {0}")]
    CaBundle(String),
    #[error("no discovery document at {tried}: set jwksUri to skip discovery")]
    NoMetadata { tried: String },
    #[error("{url}: the metadata names issuer {found:?}, not {expected:?} (RFC 8414 §3.3)")]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    #[error("{url}: {source}")]
    Jwks {
        url: String,
        #[source]
        source: mcp_guard_config::auth::JwksError,
    },
}

/// What the guard knows of one fetched issuer.
struct Issuer {
    policy: IssuerPolicy,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Why the last fetch failed, while it does; `None` after a good one.
    last_error: Mutex<Option<String>>,
    /// Wakes the fetcher for a refetch.
    demand: Notify,
    /// Fetches started so far; `completed` carries the number of the last one that ended.
    started: AtomicU64,
    completed: watch::Sender<u64>,
    /// When a refetch was last asked for, and the fetch number that answers it.
    last_demand: Mutex<Option<(Instant, u64)>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// The store's [`KeyStore::generation`], bumped when these keys change.
    generation: Arc<AtomicU64>,
}

impl Issuer {
    fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.read().ok().and_then(|k| k.clone())
    }
}

/// Whether two compilations of an issuer fetch the same way (otherwise its fetcher starts over).
fn same_fetch(a: &IssuerPolicy, b: &IssuerPolicy) -> bool {
    a.issuer == b.issuer
        && a.jwks_uri == b.jwks_uri
        && a.allow_http == b.allow_http
        && a.ca_file == b.ca_file
        && a.ca_certs == b.ca_certs
}

/// The keys of the issuers the guard fetches, shared by every worker.
pub struct KeyStore {
    issuers: RwLock<BTreeMap<String, Arc<Issuer>>>,
    /// Changes whenever any issuer's keys change or an issuer goes: what a cached verification depended on.
    generation: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl KeySource for KeyStore {
    fn keys(&self, issuer: &str) -> Option<Arc<KeySet>> {
        let issuers = self.issuers.read().ok()?;
        issuers.get(issuer)?.keys()
    }
}

impl KeyStore {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(KeyStore {
            issuers: RwLock::new(BTreeMap::new()),
            generation: Arc::new(AtomicU64::new(0)),
            metrics,
        })
    }

    /// A number that changes whenever the keys of any issuer change (or an issuer is no longer fetched).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts a fetcher for each issuer of `auth` that has no inline keys and stops those of issuers no longer
    /// configured; an issuer configured as before keeps its fetcher and its keys. Must run inside a tokio
    /// runtime that lives as long as the guard (the fetchers run there).
    pub fn sync(self: &Arc<Self>, auth: Option<&AuthPolicy>) {
        let wanted: Vec<&IssuerPolicy> = auth
            .map(|a| a.issuers().iter().filter(|i| i.inline_keys.is_none()).collect())
            .unwrap_or_default();
        let Ok(mut issuers) = self.issuers.write() else {
            return;
        };
        issuers.retain(|name, current| {
            let keep = wanted.iter().any(|w| same_fetch(w, &current.policy));
            if !keep {
                info!(issuer = %name, "no longer fetching the keys of this issuer");
                if let Some(task) = current.task.lock().ok().and_then(|mut t| t.take()) {
                    task.abort();
                }
                self.metrics.auth_issuer_gone(name);
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            keep
        });
        for policy in wanted {
            if issuers.contains_key(&policy.issuer) {
                continue;
            }
            let issuer = Arc::new(Issuer {
                policy: policy.clone(),
                keys: RwLock::new(None),
                last_error: Mutex::new(None),
                demand: Notify::new(),
                started: AtomicU64::new(0),
                completed: watch::channel(0).0,
                last_demand: Mutex::new(None),
                task: Mutex::new(None),
                generation: self.generation.clone(),
            });
            let task = tokio::spawn(fetch_forever(Arc::downgrade(&issuer), self.metrics.clone()));
            if let Ok(mut slot) = issuer.task.lock() {
                *slot = Some(task.abort_handle());
            }
            issuers.insert(policy.issuer.clone(), issuer);
        }
    }

    /// Fetches the issuer's keys again, for a token that names a key the guard does not have, and waits for that
    /// fetch (at most [`FETCH_TIMEOUT`]). Within [`REFETCH_GAP`] of the last refetch asked for, it only waits for
    /// that one if it is still running. An issuer the guard does not fetch returns at once.
    pub async fn refetch(&self, issuer: &str) {
        let Some(entry) = self.issuers.read().ok().and_then(|m| m.get(issuer).cloned()) else {
            return;
        };
        let target = {
            let Ok(mut last) = entry.last_demand.lock() else {
                return;
            };
            match *last {
                Some((at, target)) if at.elapsed() < REFETCH_GAP => target,
                _ => {
                    // The next fetch to start answers this demand (one running now may have begun before the
                    // issuer published the new key).
                    let target = entry.started.load(Ordering::SeqCst) + 1;
                    *last = Some((Instant::now(), target));
                    entry.demand.notify_one();
                    target
                }
            }
        };
        let mut completed = entry.completed.subscribe();
        let _ = tokio::time::timeout(FETCH_TIMEOUT, completed.wait_for(|n| *n >= target)).await;
    }

    /// Why the guard cannot verify tokens of every issuer yet: the first fetched issuer without keys, and why.
    pub fn not_ready(&self) -> Option<String> {
        let issuers = self.issuers.read().ok()?;
        issuers.values().find(|i| i.keys().is_none()).map(|i| {
            let why = i
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "the first fetch has not finished".into());
            format!(
                "not ready: no keys yet from token issuer {}: {why}\n",
                i.policy.issuer
            )
        })
    }
}

/// Fetches an issuer's keys until the issuer is dropped from the store: every [`REFRESH_INTERVAL`], sooner on
/// demand, and after a failure again with a growing delay.
async fn fetch_forever(issuer: std::sync::Weak<Issuer>, metrics: Arc<Metrics>) {
    let mut retry = RETRY_MIN;
    loop {
        let Some(entry) = issuer.upgrade() else { return };
        let n = entry.started.fetch_add(1, Ordering::SeqCst) + 1;
        let name = entry.policy.issuer.clone();
        let wait = match fetch_keys(&entry.policy).await {
            Ok(keys) => {
                info!(issuer = %name, keys = keys.len(), skipped = ?keys.skipped, "fetched the token issuer's keys");
                metrics.auth_key_fetch(&name, true, Some(&keys));
                if let Ok(mut slot) = entry.keys.write()
                    && slot.as_deref() != Some(&keys)
                {
                    *slot = Some(Arc::new(keys));
                    entry.generation.fetch_add(1, Ordering::SeqCst);
                }
                if let Ok(mut e) = entry.last_error.lock() {
                    *e = None;
                }
                retry = RETRY_MIN;
                REFRESH_INTERVAL
            }
            Err(e) => {
                let why = crate::error::chain(&e);
                let kept = entry.keys().is_some();
                warn!(issuer = %name, error = %why, keeping_last_keys = kept, "cannot fetch the token issuer's keys");
                metrics.auth_key_fetch(&name, false, None);
                if let Ok(mut slot) = entry.last_error.lock() {
                    *slot = Some(why);
                }
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                wait
            }
        };
        entry.completed.send_replace(n);
        let demand = entry.clone();
        drop(entry);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = demand.demand.notified() => {}
        }
    }
}

/// Discovery (unless `jwksUri` is set), then the JWKS.
pub async fn fetch_keys(issuer: &IssuerPolicy) -> Result<KeySet, FetchError> {
    let client = Client::new(issuer)?;
    tokio::time::timeout(FETCH_TIMEOUT, async {
        let jwks_uri = match &issuer.jwks_uri {
            Some(uri) => uri.clone(),
            None => discover(&client, &issuer.issuer).await?,
        };
        let body = client.get(&jwks_uri, MAX_JWKS_BYTES).await?;
        KeySet::from_jwks_json(&body).map_err(|source| FetchError::Jwks {
            url: jwks_uri,
            source,
        })
    })
    .await
    .map_err(|_| FetchError::Timeout {
        url: issuer.issuer.clone(),
    })?
}

/// The metadata URLs of an issuer, in the order tried: RFC 8414 §3.1 inserts the well-known path between the
/// host and the issuer's path; OpenID Connect Discovery 1.0 §4 appends it to the issuer.
pub fn discovery_urls(issuer: &str) -> Vec<String> {
    let (origin, path) = split_origin(issuer);
    let path = path.trim_end_matches('/');
    vec![
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}{path}/.well-known/openid-configuration"),
    ]
}

/// `scheme://authority` and the path (with its leading `/`) of a URL.
fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

#[derive(serde::Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: Option<String>,
}

/// Finds the issuer's JWKS URI from its metadata; the document must name this very issuer.
async fn discover(client: &Client, issuer: &str) -> Result<String, FetchError> {
    let urls = discovery_urls(issuer);
    for url in &urls {
        let body = match client.get(url, MAX_METADATA_BYTES).await {
            Ok(body) => body,
            // Not this well-known URI: try the other.
            Err(FetchError::Http { .. }) => continue,
            Err(e) => return Err(e),
        };
        let meta: Metadata = serde_json::from_slice(&body).map_err(|e| FetchError::Http {
            url: url.clone(),
            why: format!("not a metadata document: {e}"),
        })?;
        if meta.issuer != issuer {
            return Err(FetchError::IssuerMismatch {
                url: url.clone(),
                found: meta.issuer,
                expected: issuer.to_owned(),
            });
        }
        return meta.jwks_uri.ok_or_else(|| FetchError::Http {
            url: url.clone(),
            why: "the metadata has no jwks_uri".into(),
        });
    }
    Err(FetchError::NoMetadata {
        tried: urls.join(" and "),
    })
}

/// A one-request-per-connection HTTP/1.1 client for one issuer: its TLS roots, whether it may speak http.
struct Client {
    tls: tokio_rustls::TlsConnector,
    allow_http: bool,
}

impl Client {
    fn new(issuer: &IssuerPolicy) -> Result<Client, FetchError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &issuer.ca_file {
            use rustls_pki_types::pem::PemObject as _;
            let ca_err = |why: String| FetchError::CaFile {
                path: path.clone(),
                why,
            };
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        for cert in &issuer.ca_certs {
            roots
                .add(cert.clone())
                .map_err(|e| FetchError::CaBundle(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Url {
                url: issuer.issuer.clone(),
                why: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            allow_http: issuer.allow_http,
        })
    }

    /// GETs `url`: a `200` answer's body, at most `limit` bytes. Redirects are not followed.
    async fn get(&self, url: &str, limit: usize) -> Result<Bytes, FetchError> {
        let bad = |why: &str| FetchError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.allow_http => false,
            Some("http") => {
                return Err(bad(
                    "http:// is refused (allowHttp is off): keys must come over https",
                ));
            }
            _ => return Err(bad("not an https:// URL")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(bad("userinfo is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| FetchError::Connect {
                url: url.to_owned(),
                source: std::io::ErrorKind::TimedOut.into(),
            })?
            .map_err(|source| FetchError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let request = Request::get(path)
            .header(header::HOST, authority.as_str())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("mcp-guard/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| bad(&e.to_string()))?;
        let response = match tls {
            true => {
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| bad("not a TLS server name"))?;
                let stream = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|source| FetchError::Tls {
                        url: url.to_owned(),
                        source,
                    })?;
                exchange(TokioIo::new(stream), request, url).await?
            }
            false => exchange(TokioIo::new(tcp), request, url).await?,
        };
        let status = response.status();
        if status != StatusCode::OK {
            let why = match status.is_redirection() {
                true => format!("answered {status} (redirects are not followed: configure the final URL)"),
                false => format!("answered {status}"),
            };
            return Err(FetchError::Http {
                url: url.to_owned(),
                why,
            });
        }
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| FetchError::Http {
                url: url.to_owned(),
                why: format!("reading the body (at most {limit} bytes): {e}"),
            })?;
        Ok(body.to_bytes())
    }
}

async fn exchange<T>(
    io: TokioIo<T>,
    request: Request<Empty<Bytes>>,
    url: &str,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| FetchError::Http {
        url: url.to_owned(),
        why: crate::error::chain(&e),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(http)?;
    tokio::spawn(conn);
    sender.send_request(request).await.map_err(http)
}

/// Seconds since the Unix epoch, as tokens count time.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_follow_rfc_8414_and_oidc() {
        assert_eq!(
            discovery_urls("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            discovery_urls("https://auth.example.com/"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            discovery_urls("https://kc.example.com:8443/realms/mcp"),
            [
                "https://kc.example.com:8443/.well-known/oauth-authorization-server/realms/mcp",
                "https://kc.example.com:8443/realms/mcp/.well-known/openid-configuration"
            ]
        );
    }

    fn issuer(url: &str, allow_http: bool) -> IssuerPolicy {
        let config = mcp_guard_config::AuthConfig {
            resources: vec!["https://mcp.example.com/mcp".into()],
            issuers: vec![mcp_guard_config::IssuerConfig {
                issuer: url.into(),
                allow_http,
                ..Default::default()
            }],
            ..Default::default()
        };
        config.compile().unwrap().issuers()[0].clone()
    }

    #[tokio::test]
    async fn http_needs_allow_http_and_a_missing_ca_file_is_named() {
        let client = Client::new(&issuer("https://auth.example.com", false)).unwrap();
        let err = client.get("http://127.0.0.1:1/jwks", 10).await.unwrap_err();
        assert!(err.to_string().contains("allowHttp is off"), "{err}");
        let mut with_ca = issuer("https://auth.example.com", false);
        with_ca.ca_file = Some("/nonexistent/ca.pem".into());
        let err = Client::new(&with_ca).err().unwrap();
        assert!(err.to_string().contains("caFile /nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_issuer_fails_with_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = fetch_keys(&issuer(&format!("http://127.0.0.1:{port}"), true))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("oauth-authorization-server"), "{err}");
    }
}
