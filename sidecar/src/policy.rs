//! The request policy: one pure decision per request, for every connection kind (HTTP/1.1 and h2c, either
//! side). Given the request head as hyper parsed it and the live allowlist, [`decide`] either refuses the
//! request or rewrites the head, in place, into exactly the head the upstream is sent. No IO here.
//!
//! Framing belongs to hyper: it decodes the client's body and re-encodes it for the upstream, so no framing field
//! (`Content-Length`, `Transfer-Encoding`) is ever copied from the client. What hyper tolerates but a security
//! proxy must not guess about is refused here, before anything reaches the upstream.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Version};
use mcp_guard_config::auth::identity_headers;
use mcp_guard_config::auth::{
    AuthDenial, AuthError, AuthPolicy, Credentials, Identity, Jwt, KeySource, Resource,
};
use mcp_guard_config::{
    AccessPolicy, Allowlist, CheckMemo, Denial, HeaderSeen, Limits, Mode, Reason, RequestFacts, Verdict,
};

pub mod cors;
pub mod lists;
pub mod peek;
pub mod rate;

use crate::token_cache::{Epoch, TokenCache};
use crate::upstream::Upstream;

/// Used when neither the config nor a flag sets `maxRequestBodyBytes` (one default, in the config format).
pub use mcp_guard_config::DEFAULT_MAX_REQUEST_BODY_BYTES;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// MCP 2026-07-28: the JSON-RPC method, and the tool (or prompt, resource) it names, mirrored into headers.
pub static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// Where the request goes and what the guard knows of the hop it came over.
pub struct Hop<'a> {
    pub upstream: &'a Upstream,
    /// The client's address, as `X-Forwarded-For` gets it (see [`client_address`]).
    pub peer_ip: &'a HeaderValue,
    /// The peer is a trusted proxy: its forwarded host is what is checked (see [`forwarded_host`]).
    pub trusted_proxy: bool,
    /// Send the client's (checked) Host and Origin on instead of the upstream's own.
    pub preserve_host: bool,
    /// The connection's memo of the facts its allowlist last allowed (skipped while another stream holds it).
    pub memo: &'a Mutex<CheckMemo>,
}

/// The admission rules a request is held to, in the order they are checked. Each names what it judges, so the
/// audit/enforce fold ([`fold`]) states in one place which refusals audit mode lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Request shapes where two parsers may disagree (request smuggling), targets the guard does not proxy, and
    /// a client body that breaks its framing while it streams.
    Framing,
    /// The host a trusted proxy forwarded, which the guard cannot read.
    ForwardedHost,
    /// The Host/Origin allowlist (and with it a CORS preflight from an origin it does not allow).
    Allowlist,
    /// `maxRequestBodyBytes`: on the declared length, and counted as the body streams.
    BodyLimit,
    /// The bearer token (when `auth` is configured): a verified identity, for a resource of this host.
    Authentication,
    /// The calls a body carries: `Mcp-Method` / `Mcp-Name` against the body, and whether the rate limits can
    /// count them at all.
    McpCalls,
    /// A body that names another call after the rate limits charged its prefix (found while it streams).
    BodyWatch,
    /// The scopes the server, each call's method and tool require of the token.
    Scopes,
    /// The access rules (when `access` is configured): every call the body carries, by the caller's identity.
    Access,
    /// The token buckets and the cap on requests in flight.
    RateLimits,
    /// The cap on open event streams.
    StreamCap,
}

impl Rule {
    /// Whether audit mode forwards a request this rule refuses. The rules that judge who may call what and how
    /// often do (that is what audit mode is for: to see what enforcing would refuse; under audit a body is not
    /// watched at all); a request whose framing or size is refused cannot be forwarded as the client sent it.
    pub const fn audit_forwards(self) -> bool {
        match self {
            Rule::Allowlist
            | Rule::Authentication
            | Rule::McpCalls
            | Rule::BodyWatch
            | Rule::Scopes
            | Rule::Access
            | Rule::RateLimits
            | Rule::StreamCap => true,
            Rule::Framing | Rule::ForwardedHost | Rule::BodyLimit => false,
        }
    }
}

/// A rule's refusal under the mode.
#[derive(Debug, PartialEq)]
pub enum Fold {
    /// Refused: answer the refusal.
    Refuse(Denial),
    /// Audit mode lets it through: log and count the violation, forward the request.
    Audit(Denial),
}

/// The audit/enforce fold, the one place that decides whether a rule's refusal refuses: always in enforce mode,
/// in audit mode only for the rules that audit mode may not forward.
pub fn refuses(mode: Mode, rule: Rule) -> bool {
    mode == Mode::Enforce || !rule.audit_forwards()
}

/// A rule's refusal under the mode (see [`refuses`]).
pub fn fold(mode: Mode, rule: Rule, denial: Denial) -> Fold {
    match refuses(mode, rule) {
        true => Fold::Refuse(denial),
        false => Fold::Audit(denial),
    }
}

/// A request on its way through the rules: each rule's result is folded ([`fold`]), and the violations audit mode
/// let through are kept.
#[derive(Debug)]
pub struct Admission {
    mode: Mode,
    /// The violations audit mode let through, in the order found.
    pub audited: Vec<Denial>,
}

impl Admission {
    pub fn new(mode: Mode) -> Self {
        Admission {
            mode,
            audited: Vec::new(),
        }
    }

    /// Folds one rule's result: `Err` when it refuses the request, `Ok(None)` when audit mode lets its refusal
    /// through.
    pub fn check<T>(&mut self, rule: Rule, result: Result<T, Denial>) -> Result<Option<T>, Denial> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(denial) => match fold(self.mode, rule, denial) {
                Fold::Refuse(denial) => Err(denial),
                Fold::Audit(denial) => {
                    self.audited.push(denial);
                    Ok(None)
                }
            },
        }
    }
}

/// What the authentication checks a token against: the issuers' keys the guard holds, and the time.
pub struct TokenCheck<'a> {
    pub keys: &'a (dyn KeySource + Sync),
    /// Unix seconds.
    pub now: u64,
    /// The guard already refetched the keys for this request: a key it still lacks is refused, not refetched.
    pub refetched: bool,
    /// Tokens verified lately, and what their checks depended on (`None`: check every token).
    pub cache: Option<(&'a TokenCache, Epoch<'a>)>,
}

/// A verified caller: who, and for which resource (the scopes are checked once the calls are known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    pub resource: Resource,
}

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Send the (rewritten) head upstream; `audited` holds the violation that audit mode lets through, `caller`
    /// the verified identity when `auth` is configured.
    Forward {
        audited: Option<Denial>,
        caller: Option<Caller>,
    },
    Refuse(Denial),
    /// Refused by the authentication: answer with this `WWW-Authenticate` challenge.
    Challenge {
        denial: Denial,
        challenge: String,
    },
    /// A CORS preflight from an allowed origin, with CORS on: the guard answers `204` with these fields.
    Preflight(HeaderMap),
    /// A `GET` of the RFC 9728 metadata of this host's resource: the guard answers it with this document.
    Metadata(serde_json::Value),
    /// The token names a key the guard lacks of an issuer it fetches keys from: refetch them, then decide again
    /// (with [`TokenCheck::refetched`]). The head is as received.
    RefetchKeys {
        issuer: String,
    },
}

/// A rule's refusal, with the challenge the authentication answers with.
struct Refusal {
    denial: Denial,
    challenge: Option<String>,
}

impl From<Denial> for Refusal {
    fn from(denial: Denial) -> Self {
        Refusal {
            denial,
            challenge: None,
        }
    }
}

/// What the head rules let through, short of forwarding.
enum Admitted {
    Forward(Option<Caller>),
    Preflight(HeaderMap),
    Metadata(serde_json::Value),
    RefetchKeys(String),
}

/// Decides on one request head. On [`Decision::Forward`] `head` has become the upstream's request head (an
/// absolute URI naming the upstream, or with `preserve_host` the checked client authority); otherwise it is as
/// received.
pub fn decide(
    head: &mut Parts,
    allowlist: &Arc<Allowlist>,
    hop: &Hop<'_>,
    tokens: &TokenCheck<'_>,
) -> Decision {
    let mut admission = Admission::new(allowlist.mode);
    match admit_head(head, allowlist, hop, tokens, &mut admission) {
        Ok(Admitted::Preflight(fields)) => Decision::Preflight(fields),
        Ok(Admitted::Metadata(doc)) => Decision::Metadata(doc),
        Ok(Admitted::RefetchKeys(issuer)) => Decision::RefetchKeys { issuer },
        Ok(Admitted::Forward(caller)) => Decision::Forward {
            audited: admission.audited.into_iter().next(),
            caller,
        },
        Err(Refusal {
            denial,
            challenge: None,
        }) => Decision::Refuse(denial),
        Err(Refusal {
            denial,
            challenge: Some(challenge),
        }) => Decision::Challenge { denial, challenge },
    }
}

/// The origin whose page may read the response, when CORS is on: the request's `Origin`, once the allowlist let
/// it through without a violation (see [`cors`]).
pub fn cors_origin(head: &Parts, allowlist: &Allowlist) -> Option<HeaderValue> {
    match allowlist.cors {
        true => head.headers.get(header::ORIGIN).cloned(),
        false => None,
    }
}

/// The rules on the request head, in order; rewrites the head for the upstream once they let it through, or
/// returns the fields of the answer to a CORS preflight the guard answers itself.
fn admit_head(
    head: &mut Parts,
    allowlist: &Arc<Allowlist>,
    hop: &Hop<'_>,
    tokens: &TokenCheck<'_>,
    admission: &mut Admission,
) -> Result<Admitted, Refusal> {
    admission.check(Rule::Framing, refuse_ambiguous(head))?;
    let forwarded = match hop.trusted_proxy {
        true => admission
            .check(Rule::ForwardedHost, forwarded_host(&head.headers))?
            .flatten(),
        false => None,
    };
    let mut facts = facts(head);
    if let Some(host) = &forwarded {
        // What the client addressed, as the nearest trusted proxy saw it; the proxy's own Host says only where
        // the proxy sent the request.
        facts.target_authority = None;
        facts.http2 = false;
        facts.host = HeaderSeen {
            first: Some(host.as_bytes()),
            count: 1,
        };
    }
    let verdict = match hop.memo.try_lock() {
        Ok(mut memo) => memo.check(allowlist, &facts),
        Err(_) => allowlist.check(&facts),
    };
    let verdict = match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Deny(denial) => Err(denial),
    };
    // The host the allowlist checked (as a trusted proxy forwarded it), and its resource: authentication's.
    let checked = allowlist.auth.as_ref().and_then(|_| checked_authority(&facts));
    let resource = allowlist
        .auth
        .as_ref()
        .zip(checked.as_ref())
        .and_then(|(auth, authority)| auth.resource_for(authority));
    let allowed = admission.check(Rule::Allowlist, verdict)?.is_some();
    if allowed
        && cors::is_preflight(head)
        && let Some(origin) = cors_origin(head, allowlist)
    {
        return Ok(Admitted::Preflight(cors::preflight_fields(
            &origin,
            &head.headers,
        )));
    }
    if let (true, Some(auth), Some(resource)) = (allowed, &allowlist.auth, &resource)
        && matches!(head.method, Method::GET | Method::HEAD)
        && AuthPolicy::is_metadata_path(head.uri.path(), resource)
    {
        return Ok(Admitted::Metadata(auth.metadata(resource)));
    }
    admission.check(
        Rule::BodyLimit,
        declared_length(&head.headers, body_limit(allowlist)),
    )?;
    let mut caller = None;
    if let Some(auth) = &allowlist.auth {
        let checked = checked.map(|a| a.to_string()).unwrap_or_default();
        let verified = match authenticate(head, auth, &checked, resource, tokens) {
            Authn::Refetch(issuer) => return Ok(Admitted::RefetchKeys(issuer)),
            Authn::Verified(caller) => Ok(caller),
            Authn::Denied(refusal) => Err(refusal),
        };
        caller = match verified {
            Ok(c) => Some(c),
            Err(Refusal { denial, challenge }) => admission
                .check::<Caller>(Rule::Authentication, Err(denial))
                .map_err(|denial| Refusal { denial, challenge })?,
        };
    }
    let identity = caller.as_ref().map(|c| &c.identity);
    rewrite(
        head,
        hop,
        allowed,
        forwarded.as_deref(),
        allowlist.auth.as_ref(),
        identity,
    );
    Ok(Admitted::Forward(caller))
}

/// The authority the allowlist checked: the target's (HTTP/2, absolute-form), or the Host (or the host a
/// trusted proxy forwarded, already put in its place).
fn checked_authority<'a>(facts: &RequestFacts<'a>) -> Option<mcp_guard_config::Authority<'a>> {
    match facts.target_authority {
        Some(target) => mcp_guard_config::Authority::parse(target).ok(),
        None => mcp_guard_config::Authority::parse_bytes(facts.host.first?).ok(),
    }
}

/// The outcome of [`authenticate`].
enum Authn {
    Verified(Caller),
    Refetch(String),
    Denied(Refusal),
}

/// [`Rule::Authentication`]: the request's bearer token, for the resource of its host.
fn authenticate(
    head: &Parts,
    auth: &AuthPolicy,
    host: &str,
    resource: Option<Resource>,
    tokens: &TokenCheck<'_>,
) -> Authn {
    let Some(resource) = resource else {
        return Authn::Denied(Denial::new(Reason::NoResourceForHost, host).into());
    };
    let authorization: Vec<&[u8]> = head
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let credentials = Credentials {
        authorization: &authorization,
        query: head.uri.query(),
    };
    let verified = AuthPolicy::bearer(credentials).and_then(|token| {
        let cached = tokens.cache.as_ref();
        if let Some(identity) = cached.and_then(|(c, epoch)| c.get(epoch, token, &resource.uri, tokens.now)) {
            return Ok(identity);
        }
        let identity = auth.verify(token, &resource, tokens.keys, tokens.now)?;
        identity_fields(&identity).map_err(|why| AuthDenial::new(AuthError::InvalidToken, why))?;
        if let Some((cache, epoch)) = cached {
            cache.insert(epoch, token, &resource.uri, &identity, tokens.now);
        }
        Ok(identity)
    });
    let denied = match verified {
        Ok(identity) => return Authn::Verified(Caller { identity, resource }),
        Err(d) => d,
    };
    if denied.error == AuthError::UnknownKey
        && !tokens.refetched
        && let Some(issuer) = fetched_issuer(auth, &authorization)
    {
        return Authn::Refetch(issuer);
    }
    // A 401 names the scopes every request needs, so that the client asks for them up front.
    let required: Vec<&str> = auth.scopes_needed(None, None).into_iter().collect();
    let required = required.join(" ");
    let challenge = denied.challenge(&resource, Some(required.as_str()).filter(|s| !s.is_empty()));
    Authn::Denied(Refusal {
        denial: denied.denial(),
        challenge: Some(challenge),
    })
}

/// The issuer of a token whose key the guard lacks, when the guard fetches that issuer's keys (a made-up `iss`
/// or an issuer with inline keys never causes a fetch).
fn fetched_issuer(auth: &AuthPolicy, authorization: &[&[u8]]) -> Option<String> {
    let [value] = authorization else { return None };
    let (_, token) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    let jwt = Jwt::decode(token.trim_matches(' ')).ok()?;
    let iss = jwt.string("iss")?;
    auth.issuers()
        .iter()
        .find(|i| i.issuer == iss && i.inline_keys.is_none())
        .map(|i| i.issuer.clone())
}

/// The identity headers the guard sets for a verified caller. A claim that cannot be a header value (control
/// characters) is refused rather than dropped: the server would take a missing header for "no subject".
pub fn identity_fields(identity: &Identity) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut fields = Vec::with_capacity(5);
    let scopes = identity.scopes.join(" ");
    let values = [
        (identity_headers::SUBJECT, identity.subject.as_deref()),
        (identity_headers::CLIENT_ID, identity.client_id.as_deref()),
        (identity_headers::ISSUER, Some(identity.issuer.as_str())),
        (
            identity_headers::SCOPES,
            Some(scopes.as_str()).filter(|s| !s.is_empty()),
        ),
        (
            identity_headers::SERVICE_ACCOUNT,
            identity.service_account.as_deref(),
        ),
    ];
    for (name, value) in values {
        let Some(value) = value else { continue };
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| format!("a claim for {name} holds characters a header cannot carry"))?;
        fields.push((HeaderName::from_static(name), value));
    }
    Ok(fields)
}

/// [`Rule::Scopes`]: whether the caller's token holds every scope its calls need. A call the guard could not
/// read whole (its method, or the tool of a `tools/call`) could be any: it needs every scope the config names.
pub fn authorize(auth: &AuthPolicy, identity: &Identity, calls: &[rate::Call<'_>]) -> Result<(), AuthDenial> {
    let mut pairs = Vec::with_capacity(calls.len());
    for call in calls {
        match call {
            rate::Call::Method { method, tool } if method != "tools/call" || tool.is_some() => {
                pairs.push((Some(method.as_ref()), tool.as_deref()))
            }
            _ => return authorize_every_scope(auth, identity),
        }
    }
    auth.authorize(identity, pairs)
}

/// [`authorize`] for a call that could be any: every scope the config names.
fn authorize_every_scope(auth: &AuthPolicy, identity: &Identity) -> Result<(), AuthDenial> {
    if identity.service_account.is_some() {
        // As `AuthPolicy::authorize`: service accounts are governed by `serviceAccounts`, not scopes.
        return Ok(());
    }
    let all = auth.scopes_supported();
    let missing: Vec<&str> = all
        .iter()
        .copied()
        .filter(|s| !identity.scopes.iter().any(|g| g == s))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(AuthDenial {
        error: AuthError::InsufficientScope,
        received: format!("scopes [{}]", identity.scopes.join(" ")),
        detail: Some(format!(
            "missing [{}] (a call the guard could not read whole needs every scope)",
            missing.join(" ")
        )),
        scope: Some(all.join(" ")),
    })
}

/// Whether the scopes depend on the calls (some method or tool needs a scope beyond the server's required
/// ones): then the guard reads the body's prefix to know them.
pub fn scopes_read_calls(auth: &AuthPolicy) -> bool {
    auth.scopes_supported().len() > auth.scopes_needed(None, None).len()
}

/// A body's declared length against `maxRequestBodyBytes`.
fn declared_length(headers: &HeaderMap, limit: u64) -> Result<(), Denial> {
    match content_length(headers) {
        Some(len) if len > limit => {
            Err(body_too_large(limit).with_detail(format!("content-length {len}, limit {limit} bytes")))
        }
        _ => Ok(()),
    }
}

/// The refusal of a body over `maxRequestBodyBytes`, whether its length said so up front or the guard counted
/// past the limit as it streamed.
pub fn body_too_large(limit: u64) -> Denial {
    Denial::new(Reason::RequestBodyTooLarge, format!("more than {limit} bytes"))
        .with_detail(format!("limit {limit} bytes"))
}

/// The host a trusted proxy forwarded: the last `X-Forwarded-Host` entry or the `host=` of the last `Forwarded`
/// element, which is what the nearest proxy added (entries further left came from hops before it, or from the
/// client). `None` when it sent neither; refused when it sent both and they differ, or a `Forwarded` the guard
/// cannot read.
pub fn forwarded_host(headers: &HeaderMap) -> Result<Option<String>, Denial> {
    let last_entry = |name: &HeaderName| -> Option<String> {
        let values = headers.get_all(name);
        let last = values.iter().next_back()?;
        let text = String::from_utf8_lossy(last.as_bytes()).into_owned();
        Some(text)
    };
    let x_forwarded =
        last_entry(&X_FORWARDED_HOST).map(|v| v.rsplit(',').next().unwrap_or_default().trim().to_owned());
    let forwarded = match last_entry(&header::FORWARDED) {
        None => None,
        Some(v) => forwarded_element_host(&v).map_err(|detail| {
            Denial::new(Reason::MalformedHost, v.clone())
                .with_detail(format!("Forwarded from a trusted proxy: {detail}"))
        })?,
    };
    match (x_forwarded, forwarded) {
        (Some(x), Some(f)) if !x.eq_ignore_ascii_case(&f) => Err(Denial::new(Reason::MalformedHost, x)
            .with_detail(format!(
                "X-Forwarded-Host and Forwarded host={f:?} from a trusted proxy differ"
            ))),
        (Some(x), _) => Ok(Some(x)),
        (None, f) => Ok(f),
    }
}

/// The `host=` parameter of the last element of a `Forwarded` field value (RFC 7239 §4), if it has one.
fn forwarded_element_host(value: &str) -> Result<Option<String>, &'static str> {
    // Split on commas (elements) and semicolons (pairs) outside quoted strings.
    let mut elements: Vec<Vec<String>> = vec![vec![String::new()]];
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        let Some(params) = elements.last_mut() else { break };
        match c {
            ';' if !quoted => params.push(String::new()),
            ',' if !quoted => elements.push(vec![String::new()]),
            c => {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    _ => {}
                }
                if let Some(p) = params.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    if quoted {
        return Err("an unterminated quoted string");
    }
    let mut host = None;
    for pair in elements.last().into_iter().flatten() {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, v) = pair.split_once('=').ok_or("a parameter without a value")?;
        if name.trim().eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err("host= twice in one element");
            }
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(q) => q.strip_suffix('"').ok_or("a bad quoted string")?,
                None => v,
            };
            host = Some(v.to_owned());
        }
    }
    Ok(host)
}

/// The client's address: the peer, or behind trusted proxies the rightmost `X-Forwarded-For` entry that is
/// not a trusted proxy itself (entries further left are whatever the client claimed). An entry that is not an
/// address ends the walk at the hop that added it.
pub fn client_address(
    headers: &HeaderMap,
    allowlist: &Allowlist,
    peer: std::net::IpAddr,
) -> std::net::IpAddr {
    if !allowlist.trusts(peer) {
        return peer;
    }
    let mut client = peer;
    let fields: Vec<&HeaderValue> = headers.get_all(&X_FORWARDED_FOR).iter().collect();
    for field in fields.iter().rev() {
        let Ok(text) = field.to_str() else { return client };
        for entry in text.rsplit(',') {
            let entry = entry.trim();
            // `1.2.3.4:5678` and `[::1]:5678`, which some proxies write, are the address too.
            let ip = entry
                .parse::<std::net::IpAddr>()
                .ok()
                .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()));
            let Some(ip) = ip else { return client };
            client = ip;
            if !allowlist.trusts(ip) {
                return client;
            }
        }
    }
    client
}

/// Whether a request claims to open an SSE stream (Streamable HTTP's `GET`, the SSE transport's `GET /sse`):
/// such a request is admitted against `maxStreamsPerClient` up front. What its response turns out to be decides
/// in the end (see [`counts_as_stream`]).
pub fn is_stream(head: &Parts) -> bool {
    head.method == Method::GET
        && head.headers.get_all(header::ACCEPT).iter().any(|v| {
            v.as_bytes()
                .windows(17)
                .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"))
        })
}

/// The method of MCP 2026-07-28 whose answer is a stream that stays open (it replaced the `GET` stream).
pub const SUBSCRIPTIONS_LISTEN: &str = "subscriptions/listen";

/// Whether a request is admitted as a stream, against `maxStreamsPerClient` instead of
/// `maxConcurrentRequestsPerClient`: one that claims to open an SSE stream ([`is_stream`]), or one that carries a
/// `subscriptions/listen` call, whose answer stays open as long as the client likes. A call the guard could not
/// read may be one too, so under a stream cap it counts as a stream: otherwise a listen hidden from the guard's
/// reading (`METHOD` beside `method`, which JSON parsers read differently) would open streams without end.
pub fn opens_stream(head: &Parts, calls: &[rate::Call<'_>], limits: &Limits) -> bool {
    is_stream(head)
        || calls.iter().any(|call| match call {
            rate::Call::Method { method, .. } => method == SUBSCRIPTIONS_LISTEN,
            rate::Call::Unreadable => limits.max_streams_per_client.is_some(),
        })
}

/// Whether a response is an event stream that `maxStreamsPerClient` counts, whatever the request's `Accept`
/// said: any `text/event-stream` answer but a `POST`'s (that is one call's answer, a request in flight).
pub fn counts_as_stream(method: &Method, response: &HeaderMap) -> bool {
    *method != Method::POST && is_event_stream(response)
}

/// Whether a response says it is an event stream (`text/event-stream`).
pub fn is_event_stream(response: &HeaderMap) -> bool {
    response.get_all(header::CONTENT_TYPE).iter().any(|v| {
        let media = v.as_bytes().split(|&b| b == b';').next().unwrap_or_default();
        media.trim_ascii().eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// Whether a client may read a response as an event stream: any `Content-Type` that starts with
/// `text/event-stream` (the MCP Python SDK checks no more), so that the list filter misses none that
/// [`is_event_stream`] would not call one.
pub fn may_be_event_stream(response: &HeaderMap) -> bool {
    const MEDIA: &[u8] = b"text/event-stream";
    response.get_all(header::CONTENT_TYPE).iter().any(|v| {
        let v = v.as_bytes().trim_ascii_start();
        v.get(..MEDIA.len())
            .is_some_and(|m| m.eq_ignore_ascii_case(MEDIA))
    })
}

/// One `Mcp-Method` / `Mcp-Name` value: `Ok(None)` when absent, an error when repeated or not text.
fn mcp_header<'a>(head: &'a Parts, name: &HeaderName) -> Result<Option<&'a str>, Denial> {
    let mut values = head.headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let lossy = || String::from_utf8_lossy(first.as_bytes()).into_owned();
    if values.next().is_some() {
        return Err(Denial::new(Reason::McpHeaderMismatch, lossy())
            .with_detail(format!("more than one {name} header")));
    }
    first.to_str().map(Some).map_err(|_| {
        Denial::new(Reason::McpHeaderMismatch, lossy()).with_detail(format!("{name} is not text"))
    })
}

/// The calls a request is charged for, from its body (`body`, when the guard read a prefix of one) and its
/// `Mcp-Method` / `Mcp-Name` headers (MCP 2026-07-28).
///
/// The body is what the server executes, so the body decides: a header that names another method or tool than
/// the body (than any message of a batch) is refused (`400 mcp_header_mismatch`, as the spec tells servers to),
/// and a header never lowers the charge of a body the guard could not read. Without a body (a `GET`, a
/// `DELETE`) the headers are taken as they are.
pub fn mcp_calls<'a>(head: &'a Parts, body: Option<&'a peek::Peeked>) -> Result<Vec<rate::Call<'a>>, Denial> {
    let header_method = mcp_header(head, &MCP_METHOD)?;
    let decoded_name = mcp_header(head, &MCP_NAME)?.map(decode_mcp_name).transpose()?;
    let header_name = decoded_name.as_deref();
    let Some(body) = body else {
        return Ok(header_method
            .map(|m| rate::Call::Method {
                method: Cow::Borrowed(m),
                tool: decoded_name.filter(|_| m == "tools/call"),
            })
            .into_iter()
            .collect());
    };
    let mismatch = |field: &HeaderName, header: &str, body: &str| {
        Denial::new(Reason::McpHeaderMismatch, header.to_owned())
            .with_detail(format!("{field} {header:?} but the body says {body:?}"))
    };
    for m in &body.messages {
        if let (Some(b), Some(h)) = (&m.method, header_method)
            && b != h
        {
            return Err(mismatch(&MCP_METHOD, h, b));
        }
        // The tool of a `tools/call`, the prompt of a `prompts/get`, the uri of a `resources/read`.
        if let (Some(n), Some(h)) = (m.target(), header_name)
            && n != h
        {
            return Err(mismatch(&MCP_NAME, h, n));
        }
    }
    body_calls(body)
}

/// The calls a request is charged for under the mode: [`mcp_calls`], folded by [`Rule::McpCalls`]. What audit mode
/// lets through is charged as the body shows it (a body the limits cannot count: one unreadable call).
pub fn charged_calls<'a>(
    head: &'a Parts,
    body: Option<&'a peek::Peeked>,
    admission: &mut Admission,
) -> Result<Vec<rate::Call<'a>>, Denial> {
    if let Some(calls) = admission.check(Rule::McpCalls, mcp_calls(head, body))? {
        return Ok(calls);
    }
    Ok(match body.map(body_calls) {
        Some(Ok(calls)) => calls,
        Some(Err(_)) => vec![rate::Call::Unreadable],
        None => Vec::new(),
    })
}

/// An `Mcp-Name` value as the client meant it: SEP-2243 wraps a name that is not plain printable ASCII as
/// `=?base64?<base64 of its UTF-8>?=`, and servers compare the decoded name.
fn decode_mcp_name(value: &str) -> Result<Cow<'_, str>, Denial> {
    use base64::Engine as _;
    let Some(encoded) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        return Ok(Cow::Borrowed(value));
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Cow::Owned)
        .ok_or_else(|| {
            Denial::new(Reason::McpHeaderMismatch, value.to_owned())
                .with_detail("mcp-name is marked =?base64?...?= but is not base64 of UTF-8 text")
        })
}

/// The calls a body carries as its prefix tells them, last key winning as in the server's JSON parser: one per
/// request object, one per element of a batch (each element runs), none for a JSON-RPC response the client
/// sends back. A call the prefix does not show whole is [`rate::Call::Unreadable`]. Refused when the guard
/// cannot count the calls: a batch that does not end within the prefix (it could carry any number of them), or a
/// body that is not a JSON object or array at all (another encoding could hide a batch from the guard and not
/// from the server's parser: Python's `json` also reads UTF-16 and UTF-32). Audit mode charges such a body as
/// one unreadable call.
pub fn body_calls(body: &peek::Peeked) -> Result<Vec<rate::Call<'_>>, Denial> {
    let uncountable =
        |detail: String| Denial::new(Reason::UncountableBody, "request body").with_detail(detail);
    if body.batch {
        if body.broken || !body.complete {
            return Err(uncountable(format!(
                "a JSON-RPC batch that does not end, as valid JSON, within the first {} bytes",
                peek::PEEK_LIMIT
            )));
        }
        return Ok(body.messages.iter().filter_map(message_call).collect());
    }
    match body.messages.first() {
        None => Err(uncountable(format!(
            "the body does not start with a JSON object or array (UTF-8) within the first {} bytes",
            peek::PEEK_LIMIT
        ))),
        Some(_) if body.broken => Ok(vec![rate::Call::Unreadable]),
        Some(m) => Ok(message_call(m).into_iter().collect()),
    }
}

/// The call one message makes, if any.
fn message_call(m: &peek::Message) -> Option<rate::Call<'_>> {
    if m.ambiguous {
        return Some(rate::Call::Unreadable);
    }
    match &m.method {
        Some(method) => Some(rate::Call::method(
            method,
            m.name.as_deref().filter(|_| method == "tools/call"),
        )),
        // A whole object without a method is a JSON-RPC response (or no JSON-RPC at all): it runs nothing.
        None if m.ended => None,
        None => Some(rate::Call::Unreadable),
    }
}

/// [`Rule::Access`]: every call a body carries, judged by the access rules for the caller (`None`: not
/// verified, which no rule matches). A batch is judged call by call and refused whole when one call is denied;
/// a notification (no `id`) is judged as any call; a call the guard cannot read (its method, or what it names,
/// not within the prefix; a key parsers read differently; a batch that does not end within the prefix; a body
/// that is no JSON object or array) is denied. A request without a body carries no call.
pub fn access(
    rules: &AccessPolicy,
    identity: Option<&Identity>,
    body: Option<&peek::Peeked>,
) -> Result<(), AccessDenied> {
    let Some(body) = body else { return Ok(()) };
    let unreadable = |why: &str| {
        Denial::new(Reason::MethodNotAllowed, why).with_detail(format!(
            "with access rules every call must be readable within the body's first {} bytes ({})",
            peek::PEEK_LIMIT,
            mcp_guard_config::access::who(identity)
        ))
    };
    let whole = |denial| AccessDenied {
        denial,
        calls: Vec::new(),
    };
    if body.batch && (body.broken || !body.complete) {
        return Err(whole(unreadable(
            "a body the guard cannot read as JSON-RPC calls",
        )));
    }
    if body.messages.is_empty() {
        return Err(whole(unreadable("a body that is no JSON object or array")));
    }
    let mut denied: Option<AccessDenied> = None;
    for (i, m) in body.messages.iter().enumerate() {
        // A whole object without a method is a JSON-RPC response the client sends back: it runs nothing.
        if m.method.is_none() && m.ended && !m.ambiguous && !body.broken {
            continue;
        }
        let decided = match (m.ambiguous || body.broken, m.method.as_deref()) {
            (false, Some(method)) => rules.decide(identity, Some(method), m.target()),
            _ => Err(unreadable("a call whose method the guard cannot read")),
        };
        let Err(mut denial) = decided else { continue };
        // Every call is judged, so that the audit log gives each its own decision; the first one denied
        // refuses the request.
        match &mut denied {
            Some(first) => first.calls.push((i, denial.reason)),
            None => {
                if body.batch {
                    let detail = denial.detail.take().unwrap_or_default();
                    denial.detail = Some(format!(
                        "call {} of a batch of {}: {detail}; one call denied refuses the whole batch",
                        i + 1,
                        body.messages.len()
                    ));
                }
                denied = Some(AccessDenied {
                    calls: vec![(i, denial.reason)],
                    denial,
                });
            }
        }
    }
    denied.map_or(Ok(()), Err)
}

/// What the access rules deny of a body: the refusal (the first denied call's), and each denied call by its
/// place among the body's messages (empty when the body as a whole cannot be read).
#[derive(Debug)]
pub struct AccessDenied {
    pub denial: Denial,
    pub calls: Vec<(usize, Reason)>,
}

/// What must watch the rest of a body after its prefix was charged: a single call read before its object
/// ended, which a later key could still change. `None` when nothing later can lower the charge.
/// The calls borrow from the scanner's reading, so the watch takes a copy of the scanner (only a body that did
/// not end within the prefix needs one).
pub fn watch(scanner: &peek::Scanner, calls: &[rate::Call<'_>]) -> Option<peek::Watch> {
    let p = scanner.peeked();
    if p.complete || p.batch {
        return None;
    }
    match calls {
        [rate::Call::Method { method, .. }] => {
            let target = p
                .messages
                .first()
                .and_then(peek::Message::target)
                .map(str::to_owned);
            Some(peek::Watch::new(scanner.clone(), method.to_string(), target))
        }
        _ => None,
    }
}

/// The largest request body the allowlist's limits let through.
pub fn body_limit(allowlist: &Allowlist) -> u64 {
    allowlist
        .limits
        .max_request_body_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES)
}

/// The facts the allowlist check reads from a request head.
pub fn facts(head: &Parts) -> RequestFacts<'_> {
    RequestFacts {
        target_authority: head.uri.authority().map(Authority::as_str),
        http2: head.version == Version::HTTP_2,
        scheme: head.uri.scheme_str(),
        host: HeaderSeen::collect(
            head.headers
                .get_all(header::HOST)
                .iter()
                .map(HeaderValue::as_bytes),
        ),
        origin: HeaderSeen::collect(
            head.headers
                .get_all(header::ORIGIN)
                .iter()
                .map(HeaderValue::as_bytes),
        ),
    }
}

fn malformed(received: impl Into<String>, detail: impl ToString) -> Denial {
    Denial::new(Reason::MalformedRequest, received).with_detail(detail)
}

/// Refuses the request shapes where two parsers may disagree (request smuggling) and targets the guard does not
/// proxy. hyper already refuses some of them itself (with its plain `400`); this holds whatever it lets through.
fn refuse_ambiguous(head: &Parts) -> Result<(), Denial> {
    // RFC 9110 §9.3.6: CONNECT asks for a tunnel, which would carry bytes the guard never parses.
    if head.method == Method::CONNECT {
        return Err(malformed("CONNECT", "CONNECT (a tunnel) is not proxied"));
    }
    match head.uri.scheme() {
        None if head.uri.path().starts_with('/') => {}
        None => {
            // RFC 9112 §3.2.4: the asterisk-form has no path to forward it to.
            return Err(malformed(
                head.uri.to_string(),
                "request target: asterisk-form is not proxied",
            ));
        }
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => {}
        Some(_) => {
            return Err(malformed(
                head.uri.to_string(),
                "request target: only http:// and https:// absolute targets are proxied",
            ));
        }
    }
    let codings = head.headers.get_all(header::TRANSFER_ENCODING);
    if codings.iter().next().is_some() {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; a 1.0 hop in between would read the body differently.
        if head.version < Version::HTTP_11 {
            return Err(malformed(
                "transfer-encoding",
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        // RFC 9112 §6.3: a body framed two ways is the classic smuggling shape (CL.TE, TE.CL).
        if head.headers.contains_key(header::CONTENT_LENGTH) {
            return Err(malformed(
                "transfer-encoding",
                "both content-length and transfer-encoding",
            ));
        }
        // Only a single `chunked`: other codings, lists and repeated fields are where parsers differ.
        let mut tokens = codings.iter().flat_map(list_items);
        let single_chunked = tokens.next().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
            && tokens.next().is_none()
            && codings.iter().count() == 1;
        if !single_chunked {
            let received = codings
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(malformed(
                received,
                "transfer-encoding other than a single chunked",
            ));
        }
    }
    if let Some((name, field)) = head.headers.keys().find_map(|n| look_alike(n).map(|f| (n, f))) {
        return Err(malformed(
            name.as_str(),
            format!("header {name} is {field} to servers that read _ as - (CGI, WSGI, PHP)"),
        ));
    }
    let mut lengths = head.headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let n = parse_content_length(first.as_bytes()).ok_or_else(|| {
            malformed(
                String::from_utf8_lossy(first.as_bytes()),
                "invalid content-length",
            )
        })?;
        for other in lengths {
            if parse_content_length(other.as_bytes()) != Some(n) {
                return Err(malformed(
                    String::from_utf8_lossy(other.as_bytes()),
                    "conflicting content-length values",
                ));
            }
        }
    }
    Ok(())
}

/// The field the guard decides on that `name` spells with `_` for `-` (`Transfer_Encoding`, `X_Forwarded_For`).
/// hyper reads it as an ordinary field, but servers that map header names to CGI-style variables
/// (`HTTP_TRANSFER_ENCODING`) read it as that very field: it would frame, address or forward past the guard's
/// checks. Other names with `_` are ordinary end-to-end fields either way, and pass.
fn look_alike(name: &HeaderName) -> Option<HeaderName> {
    if !name.as_str().contains('_') {
        return None;
    }
    let field = HeaderName::try_from(name.as_str().replace('_', "-")).ok()?;
    let decided =
        is_hop_by_hop(&field) || is_set_by_guard(&field) || field == MCP_METHOD || field == MCP_NAME;
    decided.then_some(field)
}

/// Whether the client's body is chunked (HTTP/1.1): nothing the guard answers it with keeps the connection open
/// (see `docs/guard.md`, "Chunked request bodies"), and a trailer section is refused, because that is where
/// hyper's chunked decoder and its field parser disagree about where the message ends.
pub fn is_chunked(version: Version, headers: &HeaderMap) -> bool {
    version < Version::HTTP_2 && headers.contains_key(header::TRANSFER_ENCODING)
}

/// RFC 9110 §8.6: one or more digits, nothing else.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    parse_content_length(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and the framing fields the library sets for the next hop.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Runs for every field of every request and response: one match on the text (a standard name's is a table's),
    // which compares lengths first.
    matches!(
        name.as_str(),
        "connection" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "keep-alive" | "proxy-connection"
    )
}

/// Fields the guard decides on itself (sets, rewrites or drops): a client can neither pass its own on nor have
/// the guard's removed by naming them in `Connection`.
fn is_set_by_guard(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::ORIGIN
        || name == header::CONTENT_LENGTH
        || name == header::FORWARDED
        || name == header::EXPECT
        || name.as_str().starts_with("x-forwarded-")
        || name.as_str() == "x-original-host"
        || name.as_str().starts_with(identity_headers::PREFIX)
}

/// Rewrites the client's head into the upstream's. `forwarded` is the host a trusted proxy forwarded.
fn rewrite(
    head: &mut Parts,
    hop: &Hop<'_>,
    allowed: bool,
    forwarded: Option<&str>,
    auth: Option<&AuthPolicy>,
    identity: Option<&Identity>,
) {
    let upstream = hop.upstream;
    // The authority the client addressed: what the check looked at.
    let client_authority = match (forwarded, head.uri.authority()) {
        (Some(f), _) => HeaderValue::from_str(f).ok(),
        (None, Some(a)) => HeaderValue::from_str(a.as_str()).ok(),
        (None, None) => head.headers.get(header::HOST).cloned(),
    };
    let preserved = client_authority.as_ref().filter(|_| hop.preserve_host && allowed);

    // HTTP/1.1 upstreams get origin-form; h2c ones an absolute URI (`:scheme`, `:authority`, `:path`). The
    // connection goes to the upstream whatever authority the URI names.
    let path = match head.uri.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => p.clone(),
        // `http://h?x=1`: the path is empty, the query is not.
        Some(p) => PathAndQuery::try_from(format!("/{}", p.as_str()))
            .unwrap_or_else(|_| PathAndQuery::from_static("/")),
        None => PathAndQuery::from_static("/"),
    };
    let mut uri = http::uri::Parts::default();
    if upstream.h2 {
        let authority = preserved
            .and_then(|a| Authority::try_from(a.as_bytes()).ok())
            .unwrap_or_else(|| upstream.authority.clone());
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
    }
    uri.path_and_query = Some(path);
    head.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    head.version = if upstream.h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    // hyper decoded a chunked body; re-encoded, it is chunked again. Said explicitly, because hyper's client
    // would otherwise send a body of unknown length on a GET as no body at all.
    let chunked = head.headers.contains_key(header::TRANSFER_ENCODING);
    strip(&mut head.headers);
    let headers = &mut head.headers;
    if chunked && !upstream.h2 {
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    if upstream.h2 {
        // h2 carries the authority in the URI (`:authority`).
        headers.remove(header::HOST);
    } else {
        // Replaces every Host the client sent.
        let host = preserved.cloned().unwrap_or_else(|| upstream.host_header.clone());
        headers.insert(header::HOST, host);
    }
    if allowed
        && !hop.preserve_host
        && let header::Entry::Occupied(mut origin) = headers.entry(header::ORIGIN)
    {
        // The client's Origin passed the check; the server's own localhost check sees its own origin.
        origin.insert(upstream.origin_header.clone());
    }
    headers.insert(X_FORWARDED_FOR.clone(), hop.peer_ip.clone());
    if let Some(client) = client_authority {
        headers.insert(X_FORWARDED_HOST.clone(), client);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if auth.is_some_and(|a| !a.pass_token) {
        // MCP authorization: a token received is never passed through (unless the server asks for it).
        headers.remove(header::AUTHORIZATION);
    }
    // Checked when the token was verified: a claim that cannot be a header refused it.
    for (name, value) in identity
        .map(identity_fields)
        .and_then(Result::ok)
        .unwrap_or_default()
    {
        headers.insert(name, value);
    }
}

/// Removes hop-by-hop fields, the fields `Connection` names (but never one the guard decides on), framing
/// fields and the client's own forwarding fields. Host and Origin stay: [`rewrite`] sets them (every request has
/// a Host; replacing it in place saves removing it first).
fn strip(headers: &mut HeaderMap) {
    // One Content-Length in canonical form (digits, no leading zero) stays where it is, for the proxy to keep only
    // as the body's exact length ([`settle_length`]): then it is the field hyper would write, not built again. Any
    // other (two, or not canonical) goes.
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let keep_length = match (lengths.next(), lengths.next()) {
        (Some(one), None) => canonical_length(one.as_bytes()).is_some(),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !keep_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut remove: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let set_in_place =
            *name == header::HOST || *name == header::ORIGIN || *name == header::CONTENT_LENGTH;
        if is_hop_by_hop(name) || (is_set_by_guard(name) && !set_in_place) {
            remove.push(name.clone());
        }
    }
    remove.extend(connection_named(headers).filter(|n| !is_set_by_guard(n)));
    for name in remove {
        headers.remove(&name);
    }
}

/// A forwarded request's `Content-Length` stays only when it is `exact`, the length of the body the guard sends
/// (hyper checks the client's framing; this checks the guard's body against the field). Otherwise hyper frames
/// the body from its size, as for a request without one.
pub fn settle_length(headers: &mut HeaderMap, exact: Option<u64>) {
    let kept = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| canonical_length(v.as_bytes()));
    if kept.is_some_and(|n| n.is_none() || n != exact) {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// A length as hyper writes one: digits without a leading zero (or `0`).
fn canonical_length(v: &[u8]) -> Option<u64> {
    parse_content_length(v).filter(|_| v.len() == 1 || v[0] != b'0')
}

/// Removes the hop-by-hop fields of an upstream response (and those its `Connection` names) before hyper frames
/// it again for the client. `Content-Length` stays: it is the length of the body hyper read (and for `HEAD`, of
/// the body a `GET` would have had).
pub fn strip_response(headers: &mut HeaderMap) {
    // One pass over the names finds what goes (the hop-by-hop fields present, and the fields `Connection` lists but
    // `Content-Length`); each is removed once, by its `HeaderName`. Removing every hop-by-hop name by text, present
    // or not, parsed and hashed each, cost more than the rest of the response's handling.
    let connection = headers.get_all(header::CONNECTION);
    // Most upstreams send `Connection: keep-alive` on every response: it names no field that is not hop-by-hop
    // already, and then no name needs comparing with its list.
    let names_more = connection
        .iter()
        .flat_map(list_items)
        .any(|listed| !listed.is_empty() && !listed.eq_ignore_ascii_case(b"keep-alive"));
    if !names_more {
        // Then only the hop-by-hop fields go, found one by one (mostly there is one, `Connection`): a head's few
        // names scanned again cost less than collecting them.
        while let Some(name) = headers.keys().find(|name| is_hop_by_hop(name)).cloned() {
            headers.remove(&name);
        }
        return;
    }
    let mut few: [Option<HeaderName>; 4] = [const { None }; 4];
    let mut more: Vec<HeaderName> = Vec::new();
    for (i, name) in headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name)
                || (*name != header::CONTENT_LENGTH && connection.iter().any(|value| lists(value, name)))
        })
        .enumerate()
    {
        match few.get_mut(i) {
            Some(slot) => *slot = Some(name.clone()),
            None => more.push(name.clone()),
        }
    }
    for name in few.into_iter().flatten().chain(more) {
        headers.remove(&name);
    }
}

/// Whether a `Connection` field's value lists `name` (a comma-separated list of names in any case, with
/// whitespace around each).
fn lists(value: &HeaderValue, name: &HeaderName) -> bool {
    list_items(value).any(|listed| listed.eq_ignore_ascii_case(name.as_str().as_bytes()))
}

/// The field names a `Connection` header lists (RFC 9110 §7.6.1).
fn connection_named(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(list_items)
        .filter_map(|t| HeaderName::from_bytes(t).ok())
}

/// The items of a comma-separated field value (RFC 9110 §5.6.1), the whitespace around each trimmed; empty ones
/// included.
pub(crate) fn list_items(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

#[cfg(test)]
mod tests;
