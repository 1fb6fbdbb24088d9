//! Bearer-token authentication, end to end: the real guard binary started with the `--auth-*` flags, a token
//! issuer on loopback that serves OpenID Connect discovery and a JWKS (keys made by guard-config's `testing`
//! feature), and an upstream that records every request it gets, so that "nothing forwarded" is checked, not
//! assumed. The proptest drives the request path in memory (`Proxy::handle`) with inline keys.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mcp_guard_config::auth::testing::{self, TestKey};
use serde_json::{Value, json};
use support::{Guard, RawResponse, Ready, eventually, eventually_or, free_port, mcp_guard, raw, start_guard};
use tokio::net::TcpListener;

/// A token issuer on loopback: `/.well-known/openid-configuration` (RFC 8414's well-known URI answers 404, so
/// the guard's fallback to OpenID Connect discovery is exercised) and `/jwks`. `down` makes it answer 503.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Value>>,
    jwks_fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Issuer {
    async fn start(keys: &[&TestKey]) -> Issuer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), keys)
    }

    fn start_on(listener: TcpListener, keys: &[&TestKey]) -> Issuer {
        Self::serve(listener, None, keys)
    }

    /// The issuer over TLS, with `tls`'s certificate (one for 127.0.0.1): `https://127.0.0.1:PORT`.
    async fn start_tls(tls: Arc<rustls::ServerConfig>, keys: &[&TestKey]) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Some(tokio_rustls::TlsAcceptor::from(tls)), keys)
    }

    fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, keys: &[&TestKey]) -> Issuer {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(Mutex::new(testing::jwks(keys)));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (u, j, f, d) = (url.clone(), jwks.clone(), jwks_fetches.clone(), down.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (u, j, f, d) = (u.clone(), j.clone(), f.clone(), d.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (u, j, f, d) = (u.clone(), j.clone(), f.clone(), d.clone());
                    async move {
                        let (status, body) = match req.uri().path() {
                            _ if d.load(Ordering::SeqCst) => (503, "down".to_owned()),
                            "/.well-known/openid-configuration" => (
                                200,
                                json!({"issuer": u, "jwks_uri": format!("{u}/jwks")}).to_string(),
                            ),
                            "/jwks" => {
                                f.fetch_add(1, Ordering::SeqCst);
                                (200, j.lock().unwrap().to_string())
                            }
                            _ => (404, "not found".to_owned()),
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // A handshake the client aborts (it does not trust the certificate) just ends here.
                    let _ = match tls {
                        None => builder.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => Ok(()),
                        },
                    };
                });
            }
        });
        Issuer {
            url,
            jwks,
            jwks_fetches,
            down,
        }
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.jwks.lock().unwrap() = testing::jwks(keys);
    }
}

/// A private CA and a server certificate it signed for 127.0.0.1: (the CA's PEM, the server's TLS config).
fn private_ca() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "mcp-guard test private CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let signer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &signer).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)
        .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

/// An upstream that records the headers of every request it gets and echoes them.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let s = s.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let (head, body) = req.into_parts();
                        let _ = body.collect().await;
                        s.lock().unwrap().push(head.headers.clone());
                        let echo: serde_json::Map<String, Value> = head
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or("?"))))
                            .collect();
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                            Value::Object(echo).to_string(),
                        ))))
                    }
                });
                tokio::spawn(
                    auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        Recorder { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

const RESOURCE: &str = "http://mcp.example.com/mcp";

fn now() -> u64 {
    mcp_guard::keys::unix_now()
}

/// The claims of a good token of `issuer` for [`RESOURCE`].
fn claims(issuer: &str) -> Value {
    json!({"iss": issuer, "sub": "alice", "client_id": "agent-7", "aud": RESOURCE,
           "iat": now(), "exp": now() + 600, "scope": "mcp tools:read"})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// The guard's flags for one fetched issuer and [`RESOURCE`].
fn auth_args<'a>(upstream: &'a str, issuer: &'a str) -> Vec<&'a str> {
    vec![
        "--upstream",
        upstream,
        "--allow-host",
        "mcp.example.com",
        "--auth-issuer",
        issuer,
        "--auth-allow-http-issuer",
        "--auth-resource",
        RESOURCE,
    ]
}

/// A `POST /mcp` of `body` with these extra header lines.
async fn post(guard: &Guard, target: &str, headers: &[String], body: &str) -> RawResponse {
    let mut req =
        format!("POST {target} HTTP/1.1\r\nHost: mcp.example.com\r\ncontent-type: application/json\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "content-length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    raw(guard.addr, &req).await.unwrap()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

async fn call(guard: &Guard, token: &str) -> RawResponse {
    post(guard, "/mcp", &[format!("Authorization: Bearer {token}")], LIST).await
}

fn reason(r: &RawResponse) -> String {
    r.json().unwrap()["error"]["data"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_good_token_reaches_the_server_as_identity_headers_and_hostile_ones_never_do() {
    let key = TestKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let upstream = Recorder::start().await;
    let (u, i) = (upstream.url(), issuer.url.clone());
    let guard = start_guard(&auth_args(&u, &i)).await;

    let good = key.sign(&claims(&i));
    let r = post(
        &guard,
        "/mcp",
        &[
            format!("Authorization: Bearer {good}"),
            "mcp-guard-subject: root".into(),
            "MCP-Guard-Service-Account: kube-system/admin".into(),
        ],
        LIST,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}\n{}", guard.logs());
    let echo = r.json().unwrap();
    assert_eq!(echo["mcp-guard-subject"], "alice", "{echo}");
    assert_eq!(echo["mcp-guard-client-id"], "agent-7", "{echo}");
    assert_eq!(echo["mcp-guard-issuer"], i.as_str(), "{echo}");
    assert_eq!(echo["mcp-guard-scopes"], "mcp tools:read", "{echo}");
    assert!(echo.get("mcp-guard-service-account").is_none(), "{echo}");
    assert!(
        echo.get("authorization").is_none(),
        "the token is never passed on: {echo}"
    );
    assert_eq!(upstream.count(), 1);

    let other = TestKey::es256("k1");
    let c = || claims(&i);
    let long_claims = with(c(), "pad", Value::from("x".repeat(17 * 1024)));
    let hostile: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            testing::with_signature(&json!({"alg": "none", "typ": "JWT"}), &c(), b""),
            "invalid_token",
        ),
        (
            "alg none with a signature",
            testing::with_signature(&json!({"alg": "none", "kid": "k1"}), &c(), b"sig"),
            "invalid_token",
        ),
        (
            "HS256 with the public key",
            testing::hs256(&key.public_bytes(), &c(), "k1"),
            "invalid_token",
        ),
        (
            "signed by a stranger with the same kid",
            other.sign(&c()),
            "invalid_token",
        ),
        (
            "wrong aud",
            key.sign(&with(c(), "aud", json!("api://other"))),
            "token_audience_mismatch",
        ),
        (
            "another resource of the same issuer",
            key.sign(&with(c(), "aud", json!(["http://other.example.com/mcp"]))),
            "token_audience_mismatch",
        ),
        (
            "no aud",
            key.sign(&without(c(), "aud")),
            "token_audience_mismatch",
        ),
        ("no exp", key.sign(&without(c(), "exp")), "invalid_token"),
        (
            "wrong iss",
            key.sign(&with(c(), "iss", json!("http://evil.example"))),
            "invalid_token",
        ),
        (
            "expired",
            key.sign(&with(c(), "exp", json!(now() - 3600))),
            "token_expired",
        ),
        (
            "not yet valid",
            key.sign(&with(c(), "nbf", json!(now() + 3600))),
            "token_not_yet_valid",
        ),
        ("truncated", good[..good.len() - 12].to_owned(), "invalid_token"),
        (
            "two parts",
            good.rsplit_once('.').unwrap().0.to_owned(),
            "invalid_token",
        ),
        ("oversized", key.sign(&long_claims), "invalid_token"),
        ("garbage", "not-a-jwt".into(), "invalid_token"),
    ];
    for (name, token, want) in &hostile {
        let r = call(&guard, token).await;
        assert_eq!(reason(&r), *want, "{name}: {r:?}");
        assert_eq!(r.status, 401, "{name}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with(
                "Bearer resource_metadata=\"http://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
            ) && challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(!r.text().contains(token.as_str()), "{name}: the token is echoed");
    }
    // No token at all: a challenge without an error, pointing at the metadata.
    let r = post(&guard, "/mcp", &[], LIST).await;
    assert_eq!((r.status, reason(&r).as_str()), (401, "unauthenticated"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer resource_metadata=\"http://mcp.example.com/.well-known/oauth-protected-resource/mcp\"")
    );
    assert_eq!(r.json().unwrap()["error"]["code"], -32011);
    let r = post(&guard, "/mcp", &["Authorization: Basic YTpi".into()], LIST).await;
    assert_eq!(reason(&r), "unauthenticated");
    // Malformed requests: 400 invalid_request.
    let twice = [
        format!("Authorization: Bearer {good}"),
        format!("Authorization: Bearer {good}"),
    ];
    let r = post(&guard, "/mcp", &twice, LIST).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (400, "invalid_auth_request"),
        "{r:?}"
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_request\"")
    );
    let r = post(&guard, &format!("/mcp?access_token={good}"), &[], LIST).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (400, "invalid_auth_request"),
        "{r:?}"
    );
    let r = post(
        &guard,
        &format!("/mcp?x=1&access_token={good}"),
        &[format!("Authorization: Bearer {good}")],
        LIST,
    )
    .await;
    assert_eq!(
        reason(&r),
        "invalid_auth_request",
        "a token in the URL is refused even beside a good one"
    );

    assert_eq!(upstream.count(), 1, "nothing refused was forwarded");
    let logs = guard.logs();
    for (name, token, _) in &hostile {
        assert!(!logs.contains(token.as_str()), "{name}: the token is in the log");
    }
    assert!(!logs.contains(&good), "the good token is in the log");
    let invalid = guard
        .metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"invalid_token\"}")
        .await;
    assert!(invalid >= 9.0, "{invalid}");
}

#[tokio::test]
async fn an_unknown_key_is_refetched_once_so_rotation_works_and_keys_survive_an_outage() {
    let k1 = TestKey::es256("k1");
    let k2 = TestKey::ed25519("k2");
    let issuer = Issuer::start(&[&k1]).await;
    let upstream = Recorder::start().await;
    let (u, i) = (upstream.url(), issuer.url.clone());
    let guard = start_guard(&auth_args(&u, &i)).await;
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);

    // The issuer rotates: a token signed with its new key works at once.
    issuer.publish(&[&k1, &k2]);
    let r = call(&guard, &k2.sign(&claims(&i))).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", guard.logs());
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);

    // Made-up key ids: refused, and they do not make the guard hammer the issuer (one refetch per 30 s).
    let before = issuer.jwks_fetches.load(Ordering::SeqCst);
    for n in 0..5 {
        let stranger = TestKey::es256(&format!("k-unknown-{n}"));
        let r = call(&guard, &stranger.sign(&claims(&i))).await;
        assert_eq!((r.status, reason(&r).as_str()), (401, "invalid_token"), "{r:?}");
    }
    let after = issuer.jwks_fetches.load(Ordering::SeqCst);
    assert!(after <= before + 1, "{before} -> {after} fetches");

    // The issuer goes down: the keys the guard holds still verify tokens, and it stays ready.
    issuer.down.store(true, Ordering::SeqCst);
    let r = call(&guard, &k1.sign(&claims(&i))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(support::get(guard.admin, "/readyz").await.unwrap().status, 200);
    assert_eq!(upstream.count(), 2);
    let fetched = guard
        .metric(&format!(
            "mcp_guard_auth_key_fetches_total{{issuer=\"{i}\",result=\"ok\"}}"
        ))
        .await;
    assert!(fetched >= 2.0, "{fetched}");
    assert_eq!(
        guard
            .metric(&format!("mcp_guard_auth_keys{{issuer=\"{i}\"}}"))
            .await,
        2.0
    );
}

/// The guard remembers tokens it verified (so that a client's next request skips the signature check), but never
/// across a change of the issuer's keys: a key withdrawn (say, after a leak) refuses its tokens at the next fetch.
#[tokio::test]
async fn a_remembered_token_is_checked_again_once_its_key_is_withdrawn() {
    let (k1, k2) = (TestKey::es256("k1"), TestKey::es256("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let upstream = Recorder::start().await;
    let (u, i) = (upstream.url(), issuer.url.clone());
    let guard = start_guard(&auth_args(&u, &i)).await;
    let old = k1.sign(&claims(&i));
    for _ in 0..3 {
        let r = call(&guard, &old).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // The issuer withdraws k1; a token of its new key makes the guard fetch the keys again.
    issuer.publish(&[&k2]);
    let r = call(&guard, &k2.sign(&claims(&i))).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", guard.logs());
    let r = call(&guard, &old).await;
    assert_eq!((r.status, reason(&r).as_str()), (401, "invalid_token"), "{r:?}");
    assert_eq!(upstream.count(), 4);
}

#[tokio::test]
async fn an_issuer_down_at_start_means_not_ready_and_503_until_its_keys_arrive() {
    let key = TestKey::ed25519("k1");
    let port = free_port();
    let i = format!("http://127.0.0.1:{port}");
    let upstream = Recorder::start().await;
    let u = upstream.url();
    let guard = mcp_guard(&auth_args(&u, &i))
        .until(Ready::NotReadyBecause("no keys yet from token issuer"))
        .start()
        .await
        .unwrap();
    eventually(
        "readyz names the issuer and why",
        Duration::from_secs(10),
        || async {
            let body = support::get(guard.admin, "/readyz").await.unwrap().text();
            body.contains(&format!("no keys yet from token issuer {i}: ")) && body.contains("cannot connect")
        },
    )
    .await;

    let token = key.sign(&claims(&i));
    let r = call(&guard, &token).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (503, "auth_keys_unavailable"),
        "{r:?}"
    );
    assert_eq!(upstream.count(), 0);

    let _issuer = Issuer::start_on(TcpListener::bind(("127.0.0.1", port)).await.unwrap(), &[&key]);
    eventually_or(
        "ready once the issuer answers",
        Duration::from_secs(40),
        || guard.logs(),
        || async {
            support::get(guard.admin, "/readyz")
                .await
                .is_ok_and(|r| r.status == 200)
        },
    )
    .await;
    assert_eq!(call(&guard, &token).await.status, 200);
    assert_eq!(upstream.count(), 1);
}

/// An issuer whose TLS certificate comes from a private CA (an authorization server in the cluster, signed by
/// cert-manager's CA): the guard trusts it with the CA given inline (`caBundle`, what the operator writes) or as a
/// file (`--auth-ca-file`), and without it refuses the keys — not ready, calls 503, never a token let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_with_a_private_ca_is_trusted_through_its_ca_bundle_or_file_and_only_then() {
    let key = TestKey::es256("k1");
    let (ca_pem, tls) = private_ca();
    let issuer = Issuer::start_tls(tls, &[&key]).await;
    let i = issuer.url.clone();
    let upstream = Recorder::start().await;
    let u = upstream.url();
    let token = key.sign(&claims(&i));
    let dir = tempfile::tempdir().unwrap();

    let config = dir.path().join("guard.json");
    let doc = json!({
        "allowedHosts": ["mcp.example.com"],
        "auth": {"resources": [RESOURCE], "issuers": [{"issuer": i, "caBundle": ca_pem}]}
    });
    std::fs::write(&config, doc.to_string()).unwrap();
    let inline = start_guard(&["--upstream", &u, "--config", config.to_str().unwrap()]).await;
    assert_eq!(call(&inline, &token).await.status, 200, "{}", inline.logs());

    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let args = [
        "--upstream",
        &u,
        "--allow-host",
        "mcp.example.com",
        "--auth-issuer",
        &i,
        "--auth-resource",
        RESOURCE,
    ];
    let mut with_file = args.to_vec();
    with_file.extend(["--auth-ca-file", ca_file.to_str().unwrap()]);
    let file = start_guard(&with_file).await;
    assert_eq!(call(&file, &token).await.status, 200, "{}", file.logs());
    assert_eq!(upstream.count(), 2);

    let untrusting = mcp_guard(&args)
        .until(Ready::NotReadyBecause("no keys yet from token issuer"))
        .start()
        .await
        .unwrap();
    eventually(
        "readyz says the issuer's certificate is not trusted",
        Duration::from_secs(10),
        || async {
            let body = support::get(untrusting.admin, "/readyz").await.unwrap().text();
            body.contains(&format!("no keys yet from token issuer {i}: ")) && body.contains("UnknownIssuer")
        },
    )
    .await;
    let r = call(&untrusting, &token).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (503, "auth_keys_unavailable"),
        "{r:?}"
    );
    assert_eq!(upstream.count(), 2, "no call passed the guard that trusts no CA");
}

#[tokio::test]
async fn the_guard_answers_the_resource_metadata_of_each_host_itself() {
    let key = TestKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let upstream = Recorder::start().await;
    let (u, i) = (upstream.url(), issuer.url.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guard.json");
    let doc = json!({
        "allowedHosts": ["*.apps.example.com", "mcp.example.com"],
        "auth": {
            "resources": ["https://*.apps.example.com/mcp"],
            "issuers": [{"issuer": i, "allowHttp": true}],
            "requiredScopes": ["mcp"],
            "toolScopes": {"deploy": ["deploy:write"]}
        }
    });
    std::fs::write(&config, doc.to_string()).unwrap();
    let guard = start_guard(&["--upstream", &u, "--config", config.to_str().unwrap()]).await;
    let get = |host: &'static str, path: &'static str| {
        let addr = guard.addr;
        async move {
            raw(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            )
            .await
            .unwrap()
        }
    };
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = get("A.apps.example.com:443", path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(
            r.json().unwrap(),
            json!({"resource": "https://a.apps.example.com/mcp", "authorization_servers": [i],
                   "scopes_supported": ["deploy:write", "mcp"], "bearer_methods_supported": ["header"]}),
            "{path}"
        );
    }
    let r = get("b.apps.example.com", "/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(r.json().unwrap()["resource"], "https://b.apps.example.com/mcp");
    // HEAD is GET without the body (RFC 9110): it needs no token either.
    let head = raw(
        guard.addr,
        "HEAD /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: a.apps.example.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-type"), Some("application/json"), "{head:?}");
    // Another path under the well-known prefix is no metadata: it needs a token like any request.
    let r = get(
        "a.apps.example.com",
        "/.well-known/oauth-protected-resource/other",
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate").unwrap().contains("scope=\"mcp\""),
        "{r:?}"
    );
    // An allowed host that is no resource: no metadata, and refused with a hint.
    let r = get("mcp.example.com", "/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (403, "no_resource_for_host"),
        "{r:?}"
    );
    assert!(
        r.json().unwrap()["error"]["data"]["hint"]
            .as_str()
            .unwrap()
            .contains("--auth-resource")
    );
    // A host that is not allowed gets no metadata either.
    assert_eq!(
        get("evil.example", "/.well-known/oauth-protected-resource")
            .await
            .status,
        421
    );
    assert_eq!(upstream.count(), 0, "the metadata is never forwarded");

    // Step-up: a tool's scope the token lacks is 403 insufficient_scope naming every scope the call needs.
    let token = key.sign(&with(
        with(claims(&i), "aud", json!("https://a.apps.example.com/mcp")),
        "scope",
        json!("mcp"),
    ));
    let send = |body: &'static str| {
        let addr = guard.addr;
        let token = token.clone();
        async move {
            raw(
                addr,
                &format!(
                    "POST /mcp HTTP/1.1\r\nHost: a.apps.example.com\r\nAuthorization: Bearer {token}\r\n\
                     content-length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
            .await
            .unwrap()
        }
    };
    let r = send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy"}}"#).await;
    assert_eq!(
        (r.status, reason(&r).as_str()),
        (403, "insufficient_scope"),
        "{r:?}"
    );
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"deploy:write mcp\"")
            && challenge.contains(
                "resource_metadata=\"https://a.apps.example.com/.well-known/oauth-protected-resource/mcp\""
            ),
        "{challenge}"
    );
    assert_eq!(r.json().unwrap()["error"]["code"], -32012);
    // A batch the guard cannot read whole could call any tool: refused.
    let r = send(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read"}},"#).await;
    assert_ne!(r.status, 200, "{r:?}");
    assert_eq!(upstream.count(), 0);
    let r = send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read"}}"#).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn client_identity_headers_are_dropped_with_auth_off_too() {
    let upstream = Recorder::start().await;
    let u = upstream.url();
    let guard = start_guard(&["--upstream", &u, "--allow-host", "mcp.example.com"]).await;
    let r = post(
        &guard,
        "/mcp",
        &[
            "mcp-guard-subject: root".into(),
            "mcp-guard-scopes: admin".into(),
            "Authorization: Bearer x".into(),
        ],
        LIST,
    )
    .await;
    assert_eq!(r.status, 200);
    let echo = r.json().unwrap();
    assert!(
        echo.get("mcp-guard-subject").is_none() && echo.get("mcp-guard-scopes").is_none(),
        "{echo}"
    );
    assert_eq!(
        echo["authorization"], "Bearer x",
        "without auth the guard leaves Authorization alone"
    );
}

#[test]
fn bad_flag_combinations_are_clear_startup_errors() {
    for (args, want) in [
        (
            vec!["--auth-audience", "api://mcp"],
            "--auth-audience applies to the issuers of --auth-issuer",
        ),
        (vec!["--auth-resource", RESOURCE], "need a token issuer"),
        (
            vec!["--auth-issuer", "https://auth.example.com"],
            "auth.resources is empty",
        ),
        (
            vec![
                "--auth-issuer",
                "http://auth.example.com",
                "--auth-resource",
                RESOURCE,
            ],
            "allowHttp",
        ),
        (
            vec![
                "--auth-issuer",
                "https://auth.example.com",
                "--auth-resource",
                "mcp.example.com",
            ],
            "not a URL",
        ),
    ] {
        let mut all = vec![
            "--upstream",
            "http://127.0.0.1:1",
            "--allow-host",
            "mcp.example.com",
        ];
        all.extend(args.iter());
        let out = support::run_to_exit(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

mod mutations {
    //! No mutation of a valid token verifies: bit flips, parts swapped or dropped, re-encodings of its header
    //! and claims, a claim changed under the old signature. Driven in memory against inline keys.
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    use mcp_guard::metrics::Metrics;
    use mcp_guard::pool::{Paired, UpstreamPool};
    use mcp_guard::proxy::{Peer, Proxy};
    use mcp_guard::upstream::Upstream;
    use mcp_guard_config::{Allowlist, GuardConfig};
    use proptest::prelude::*;

    const ISSUER: &str = "https://auth.example.com";

    fn proxy(key: &TestKey, upstream: &str) -> Arc<Proxy> {
        let config: GuardConfig = serde_json::from_value(json!({
            "allowedHosts": ["mcp.example.com"],
            "auth": {"resources": [RESOURCE], "issuers": [{"issuer": ISSUER, "jwks": testing::jwks(&[key])}]}
        }))
        .unwrap();
        let (tx, live) = tokio::sync::watch::channel(Arc::new(Allowlist::compile(&config).unwrap()));
        std::mem::forget(tx);
        let upstream = Upstream::parse(upstream, false).unwrap();
        let metrics = Arc::new(Metrics::new());
        Arc::new(Proxy {
            live,
            pool: UpstreamPool::new(&upstream, Duration::from_secs(5), 0),
            upstream,
            preserve_host: false,
            limiter: mcp_guard::limiter::Limiter::new(metrics.rate_limit_tracked_clients.clone()),
            keys: mcp_guard::keys::KeyStore::new(metrics.clone()),
            tokens: Default::default(),
            audit: mcp_guard::audit::AuditLog::new(Box::new(std::io::sink()), 16, metrics.clone()),
            metrics,
        })
    }

    async fn status(proxy: &Arc<Proxy>, token: &str) -> Option<u16> {
        let value = http::HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        let req = Request::post("/mcp")
            .header("host", "mcp.example.com")
            .header("authorization", value)
            .body(Full::new(Bytes::from_static(LIST.as_bytes())))
            .unwrap();
        let peer = Arc::new(Peer::new(
            "127.0.0.1:40000".parse().unwrap(),
            Paired::new(proxy.pool.clone(), false),
        ));
        Some(proxy.clone().handle(req, peer).await.status().as_u16())
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        FlipBit(usize, u8),
        Permute(usize),
        Truncate(usize),
        Append(char),
        ReencodePart(usize, u8),
        ChangeClaim(String, Value),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
            (1usize..27).prop_map(Mutation::Permute),
            any::<usize>().prop_map(Mutation::Truncate),
            prop::char::range('!', '~').prop_map(Mutation::Append),
            (0usize..3, 0u8..4).prop_map(|(p, how)| Mutation::ReencodePart(p, how)),
            (
                prop::sample::select(vec!["aud", "iss", "exp", "sub", "scope", "nbf"]),
                prop_oneof![
                    Just(json!(RESOURCE)),
                    Just(json!("http://mcp.example.com/mcp/")),
                    Just(json!(9_999_999_999u64)),
                    Just(json!("admin")),
                    Just(Value::Null)
                ]
            )
                .prop_map(|(k, v)| Mutation::ChangeClaim(k.to_owned(), v)),
        ]
    }

    fn apply(token: &str, m: &Mutation) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        match m {
            Mutation::FlipBit(i, b) => {
                let mut bytes = token.as_bytes().to_vec();
                let i = i % bytes.len();
                bytes[i] ^= 1 << b;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Mutation::Permute(n) => {
                // base-3 digits pick each slot's part: swaps, duplicates, and the parts reordered.
                let pick = |d: usize| parts[(n / 3usize.pow(d as u32)) % 3];
                format!("{}.{}.{}", pick(0), pick(1), pick(2))
            }
            Mutation::Truncate(i) => token[..i % token.len()].to_owned(),
            Mutation::Append(c) => format!("{token}{c}"),
            Mutation::ReencodePart(p, how) => {
                let raw = URL_SAFE_NO_PAD.decode(parts[*p]).unwrap();
                let raw = match (*how, *p) {
                    // JSON parts re-serialized with whitespace: same claims, other bytes.
                    (0, 0 | 1) => {
                        let v: Value = serde_json::from_slice(&raw).unwrap();
                        serde_json::to_vec_pretty(&v).unwrap()
                    }
                    _ => raw,
                };
                let encoded = match how {
                    1 => URL_SAFE.encode(&raw),
                    2 => STANDARD.encode(&raw),
                    3 => format!("{}=", URL_SAFE_NO_PAD.encode(&raw)),
                    _ => URL_SAFE_NO_PAD.encode(&raw),
                };
                let mut out: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
                out[*p] = encoded;
                out.join(".")
            }
            Mutation::ChangeClaim(k, v) => {
                let mut claims: Value =
                    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
                claims[k.as_str()] = v.clone();
                format!(
                    "{}.{}.{}",
                    parts[0],
                    URL_SAFE_NO_PAD.encode(claims.to_string()),
                    parts[2]
                )
            }
        }
    }

    #[test]
    fn no_mutation_of_a_valid_token_is_accepted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let key = TestKey::es256("k1");
        let claims = json!({"iss": ISSUER, "sub": "alice", "aud": RESOURCE, "exp": now() + 3600,
                            "scope": "mcp"});
        let token = key.sign(&claims);
        let upstream = rt.block_on(Recorder::start());
        let proxy = rt.block_on(async { proxy(&key, &upstream.url()) });
        assert_eq!(
            rt.block_on(status(&proxy, &token)),
            Some(200),
            "the original is accepted"
        );
        let config = ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(m in mutation())| {
            let mutated = apply(&token, &m);
            prop_assume!(mutated != token);
            if let Some(status) = rt.block_on(status(&proxy, &mutated)) {
                prop_assert!(status != 200, "{m:?} accepted: {mutated}");
            }
        });
        assert_eq!(upstream.count(), 1, "only the original reached the server");
    }
}
