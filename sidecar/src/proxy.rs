//! The request path, IO only: the policy decides ([`crate::policy`]), [`crate::refusal`] renders what it refuses,
//! and hyper streams the request to the upstream and the response back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, Version};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use mcp_guard_config::{Allowlist, AuthPolicy, CheckMemo, Denial, Reason};
use tracing::{debug, warn};

use crate::audit::{AuditLog, Trail};
use crate::body::{BoxError, ClientFault, FaultSlot, RequestBody, ResponseBody, StreamCount};
use crate::config::LiveAllowlist;
use crate::keys::{self, KeyStore};
use crate::limiter::{Limiter, SlotGuard};
use crate::metrics::{Metrics, Outcome, UpstreamError};
use crate::policy::lists::{EventFilter, LIST_LIMIT, ListFilter};
use crate::policy::rate::{ClientKey, RequestClass};
use crate::policy::{self, Admission, Caller, Decision, Fold, Hop, Rule, TokenCheck, peek};
use crate::pool::{Paired, SendError, UpstreamPool};
use crate::refusal;
use crate::token_cache::{Epoch, TokenCache};
use crate::upstream::Upstream;

/// Everything the request path needs; shared by the connections of a worker.
pub struct Proxy {
    pub live: LiveAllowlist,
    pub pool: Arc<UpstreamPool>,
    pub upstream: Upstream,
    pub preserve_host: bool,
    pub metrics: Arc<Metrics>,
    /// The rate limits' state, shared by every worker.
    pub limiter: Arc<Limiter>,
    /// The token issuers' keys, shared by every worker.
    pub keys: Arc<KeyStore>,
    /// Tokens verified lately, shared by every worker.
    pub tokens: Arc<TokenCache>,
    /// The audit log's queue, shared by every worker.
    pub audit: Arc<AuditLog>,
}

/// One client connection: facts computed once, and its side of the upstream.
pub struct Peer {
    pub addr: SocketAddr,
    pub ip: HeaderValue,
    pub upstream: Paired,
    /// The facts the allowlist last allowed on this connection (see [`CheckMemo`]).
    pub memo: Mutex<CheckMemo>,
}

impl Peer {
    pub fn new(addr: SocketAddr, upstream: Paired) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        Peer {
            addr,
            ip,
            upstream,
            memo: Mutex::default(),
        }
    }
}

impl Proxy {
    /// Handles one request; never fails (errors become JSON answers). Generic over the body, as hyper hands it
    /// over or as a test builds it in memory. Whatever the answer to a chunked body, the connection closes after
    /// it, so nothing hyper read past such a body is ever taken as a request (see `docs/guard.md`, "Chunked
    /// request bodies").
    ///
    /// The future returned is a few words: hyper keeps the allocation of a connection's service future for the
    /// connection's lifetime (an open SSE stream's too), so the exchange's state (kilobytes) is boxed apart and
    /// freed with the response head.
    pub fn handle<B>(
        self: Arc<Self>,
        req: Request<B>,
        peer: Arc<Peer>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let allowlist: Arc<Allowlist> = self.live.borrow().clone();
        let chunked = policy::is_chunked(req.version(), req.headers());
        let (mut head, body) = req.into_parts();
        let body = RequestBody::new(body, policy::body_limit(&allowlist)).refusing_trailers(chunked);
        let trail = Trail::begin(&self.audit, &allowlist, &mut head);
        let exchange = Box::pin(self.exchange(allowlist, head, body, peer));
        async move {
            let mut answer = exchange.await;
            if let Some(trail) = trail {
                trail.finish(&mut answer);
            }
            if chunked {
                answer
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            answer
        }
    }

    /// An async block, not an `async fn`: an `async fn`'s future keeps its arguments twice (as given and as its
    /// locals), the request's head and body a third of a kilobyte.
    #[allow(clippy::manual_async_fn)]
    fn exchange(
        self: Arc<Self>,
        allowlist: Arc<Allowlist>,
        mut head: http::request::Parts,
        mut body: RequestBody,
        peer: Arc<Peer>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        async move {
            let started = Instant::now();
            let trusted_proxy = allowlist.trusts(peer.addr.ip());
            // Behind a trusted proxy the client is whom it forwarded for: that is who the rate limits count.
            let client = policy::client_address(&head.headers, &allowlist, peer.addr.ip());
            let trail = Trail::of(&head).cloned();
            if let Some(trail) = &trail {
                trail.client(client);
            }
            let client_ip = match trusted_proxy {
                true => HeaderValue::try_from(client.to_string()).unwrap_or_else(|_| peer.ip.clone()),
                false => peer.ip.clone(),
            };
            let hop = Hop {
                upstream: &self.upstream,
                peer_ip: &client_ip,
                preserve_host: self.preserve_host,
                trusted_proxy,
                memo: &peer.memo,
            };
            let mut cors = policy::cors_origin(&head, &allowlist);
            let verified: Option<Caller>;
            let tokens = |refetched| TokenCheck {
                keys: &*self.keys,
                now: keys::unix_now(),
                refetched,
                cache: Some((
                    &*self.tokens,
                    Epoch {
                        config: &allowlist,
                        keys: self.keys.generation(),
                    },
                )),
            };
            // The decision in a block of its own: held as a local to the end of the function, it would keep its
            // slot in the exchange's future while the request is forwarded.
            let mut outcome = {
                let decision = match policy::decide(&mut head, &allowlist, &hop, &tokens(false)) {
                    // A key the guard lacks: the issuer may have rotated its keys; fetch them (or wait for the fetch
                    // another request asked for) and decide once more.
                    Decision::RefetchKeys { issuer } => {
                        self.keys.refetch(&issuer).await;
                        policy::decide(&mut head, &allowlist, &hop, &tokens(true))
                    }
                    decision => decision,
                };
                match decision {
                    Decision::Preflight(fields) => {
                        self.metrics.cors_preflights.inc();
                        self.metrics.request(Outcome::Allowed, None);
                        self.metrics.request_duration(Outcome::Allowed, started);
                        return before_the_body(refusal::preflight(fields), &head, &body);
                    }
                    Decision::Metadata(document) => {
                        self.metrics.request(Outcome::Allowed, None);
                        self.metrics.request_duration(Outcome::Allowed, started);
                        let mut answer = refusal::metadata(&document);
                        if let Some(origin) = &cors {
                            policy::cors::add_response_fields(origin, answer.headers_mut());
                        }
                        return before_the_body(answer, &head, &body);
                    }
                    Decision::Refuse(denial) => {
                        self.violation(&denial, &head, &peer, true);
                        debug!(headers = ?redacted(&head.headers), "rejected request headers");
                        self.metrics.request_duration(Outcome::Rejected, started);
                        return before_the_body(refusal::render(&allowlist, &denial, None), &head, &body);
                    }
                    Decision::Challenge { denial, challenge } => {
                        // Never the headers: they hold the token.
                        self.violation(&denial, &head, &peer, true);
                        self.metrics.request_duration(Outcome::Rejected, started);
                        // Only enforce mode refuses here, so the allowlist let the request through: with CORS on, a
                        // browser-based client reads the challenge (`WWW-Authenticate` is exposed) to find the
                        // metadata.
                        let mut answer = refusal::render_challenge(&allowlist, &denial, &challenge);
                        if let Some(origin) = &cors {
                            policy::cors::add_response_fields(origin, answer.headers_mut());
                        }
                        return before_the_body(answer, &head, &body);
                    }
                    // Not after a refetch; refused all the same should it ever come.
                    Decision::RefetchKeys { issuer } => {
                        let denial =
                            Denial::new(Reason::InvalidToken, format!("a key of {issuer} the guard lacks"));
                        self.violation(&denial, &head, &peer, true);
                        self.metrics.request_duration(Outcome::Rejected, started);
                        return before_the_body(refusal::render(&allowlist, &denial, None), &head, &body);
                    }
                    Decision::Forward {
                        audited: Some(denial),
                        caller,
                    } => {
                        self.violation(&denial, &head, &peer, false);
                        // What audit mode forwards despite the allowlist is never shown to a page.
                        cors = None;
                        verified = caller;
                        Outcome::Audited
                    }
                    Decision::Forward {
                        audited: None,
                        caller,
                    } => {
                        verified = caller;
                        Outcome::Allowed
                    }
                }
            };
            if let Some(trail) = &trail {
                trail.caller(verified.as_ref().map(|c| &c.identity));
            }
            // From here on the allowlist let the request through: with CORS on, its page may read every answer.
            let mut answer = 'answer: {
                let mut slot = None;
                let mut lists = None;
                let scopes = verified
                    .as_ref()
                    .zip(allowlist.auth.as_ref())
                    .filter(|(_, auth)| auth.has_scopes());
                if allowlist.limits.limits_clients()
                    || scopes.is_some()
                    || allowlist.access.is_some()
                    || trail.is_some()
                {
                    let caller = verified.as_ref();
                    match self
                        .admit_calls(&allowlist, &head, &mut body, &peer, client, caller, scopes)
                        .await
                    {
                        Ok(Admitted {
                            slot: admitted,
                            audited,
                            lists: filter,
                        }) => {
                            if audited {
                                outcome = Outcome::Audited;
                            }
                            slot = admitted;
                            lists = filter;
                        }
                        Err(answer) => {
                            self.metrics.request_duration(Outcome::Rejected, started);
                            break 'answer before_the_body(answer, &head, &body);
                        }
                    }
                }
                if lists.is_some() {
                    // A list answer, and any event stream, is filtered as JSON or events the guard reads: never one
                    // it cannot decode.
                    head.headers.remove(http::header::ACCEPT_ENCODING);
                }
                policy::settle_length(&mut head.headers, body.size_hint().exact());
                let method = head.method.clone();
                // A body already read whole cannot fail on its way any more.
                let fault = (!body.is_done()).then(FaultSlot::default);
                body.reporting_to(fault.clone());
                let path = head.uri.path_and_query().cloned();
                let path = path.as_ref().map_or("/", |p| p.path());
                // The request is made in the call: a named one would keep its slot in this future, unused, while the
                // send future holds the request.
                let response = match peer.upstream.send(Request::from_parts(head, body)).await {
                    Ok(resp) => {
                        let (mut parts, inner) = resp.into_parts();
                        if let Some(slot) = slot.as_mut()
                            && policy::counts_as_stream(&method, &parts.headers)
                        {
                            match self.stream_cap(&allowlist, slot, &method, path, &peer, client) {
                                StreamCap::Within => {}
                                StreamCap::Audited(reason) => {
                                    outcome = Outcome::Audited;
                                    if let Some(trail) = &trail {
                                        trail.deny(reason, false);
                                    }
                                }
                                StreamCap::Over(answer, reason) => {
                                    if let Some(trail) = &trail {
                                        trail.deny(reason, true);
                                    }
                                    // The stream is dropped unread: the upstream sees its client go away.
                                    self.metrics.request_duration(Outcome::Rejected, started);
                                    break 'answer *answer;
                                }
                            }
                        }
                        let count = StreamCount::new(&self.metrics);
                        policy::strip_response(&mut parts.headers);
                        parts.version = Version::HTTP_11;
                        // Every event stream may replay list answers (a resumed stream); a JSON answer is one to this
                        // request's calls.
                        let event_stream = policy::may_be_event_stream(&parts.headers);
                        let answer = match lists
                            .filter(|l| event_stream || (l.asks_for_list() && parts.status.is_success()))
                        {
                            Some(lists) => match filter_list(lists, &mut parts, inner, count, slot).await {
                                Ok(body) => Response::from_parts(parts, body),
                                Err(denial) => {
                                    outcome = Outcome::Rejected;
                                    self.refuse_late(
                                        &denial,
                                        &allowlist,
                                        &method,
                                        path,
                                        &peer,
                                        trail.as_deref(),
                                    )
                                }
                            },
                            None => {
                                let body = ResponseBody::Upstream {
                                    inner,
                                    count,
                                    _slot: slot,
                                    audit: None,
                                };
                                Response::from_parts(parts, body)
                            }
                        };
                        // Counted once its answer is known: a list answer the guard refuses counts as rejected only.
                        if matches!(outcome, Outcome::Allowed) {
                            self.metrics.request(Outcome::Allowed, None);
                        }
                        answer
                    }
                    // The client's own body at fault: its refusal, counted once, as rejected.
                    Err(_) if let Some(fault) = fault.as_ref().and_then(|f| f.get()) => {
                        let denial = client_fault(fault, policy::body_limit(&allowlist));
                        outcome = Outcome::Rejected;
                        self.refuse_late(&denial, &allowlist, &method, path, &peer, trail.as_deref())
                    }
                    Err(err) => {
                        if matches!(outcome, Outcome::Allowed) {
                            self.metrics.request(Outcome::Allowed, None);
                        }
                        let denial = self.upstream_failure(&err, &method, path, &peer);
                        refusal::render(&allowlist, &denial, None)
                    }
                };
                // Under the policy's verdict, also when the exchange failed: the client waited that long for its
                // answer.
                self.metrics.request_duration(outcome, started);
                response
            };
            if let Some(origin) = &cors {
                policy::cors::add_response_fields(origin, answer.headers_mut());
            }
            answer
        }
    }

    /// The rules on the calls a request carries: reads the body's prefix if the scopes, the access rules or a
    /// rate limit need to know its calls, checks the `Mcp-Method`/`Mcp-Name` headers against it, then the caller's
    /// scopes, then the access rules, then takes the client's slot of the rate limits (if any), or answers the
    /// refusal. A single call read before its body ended is watched to the end of the body.
    #[allow(clippy::too_many_arguments)]
    async fn admit_calls(
        &self,
        allowlist: &Arc<Allowlist>,
        head: &http::request::Parts,
        body: &mut RequestBody,
        peer: &Peer,
        client: std::net::IpAddr,
        caller: Option<&Caller>,
        scopes: Option<(&Caller, &AuthPolicy)>,
    ) -> Result<Admitted, Response<ResponseBody>> {
        let limits = &allowlist.limits;
        let mut admission = Admission::new(allowlist.mode);
        let claims_stream = policy::is_stream(head);
        let mut scanner = peek::Scanner::default();
        let mut read = None;
        let rules_read = limits.reads_body()
            || scopes.is_some_and(|(_, auth)| policy::scopes_read_calls(auth))
            || allowlist.access.is_some();
        // The audit log reads the prefix too, to the end of the top-level value if it fits, but only for its
        // lines: the rules judge the calls only when they asked for them. With access rules, even a stream's body
        // is read: whatever a body carries is judged.
        let trail = Trail::of(head);
        if (rules_read || trail.is_some())
            && (!claims_stream || allowlist.access.is_some())
            && !body.is_done()
        {
            let mut fed = 0;
            let enough = |data: &[u8]| {
                scanner.feed(&data[fed..]);
                fed = data.len();
                let p = scanner.peeked();
                match trail {
                    Some(_) => p.complete || p.broken,
                    None => !p.wants_more(),
                }
            };
            match body.peek(enough).await {
                Ok(p) => read = Some(p),
                Err(fault) => {
                    let denial = client_fault(&fault, policy::body_limit(allowlist));
                    self.violation(&denial, head, peer, true);
                    return Err(refusal::render(allowlist, &denial, None));
                }
            }
        }
        if let (Some(trail), Some(read)) = (trail, &read) {
            trail.read(&read.data);
        }
        if !limits.limits_clients() && scopes.is_none() && allowlist.access.is_none() {
            // Only the audit log asked for the calls: it judges nothing.
            return Ok(Admitted {
                slot: None,
                audited: false,
                lists: None,
            });
        }
        // A body that ended with nothing but whitespace carries no call.
        let peeked = read
            .as_ref()
            .filter(|p| rules_read && !(p.ended && p.data.trim_ascii().is_empty()))
            .map(|_| scanner.peeked());
        let calls = match policy::charged_calls(head, peeked, &mut admission) {
            Ok(calls) => calls,
            Err(denial) => {
                self.violation(&denial, head, peer, true);
                return Err(refusal::render(allowlist, &denial, None));
            }
        };
        for denial in &admission.audited {
            self.violation(denial, head, peer, false);
        }
        if let Some((caller, auth)) = scopes
            && let Err(refused) = policy::authorize(auth, &caller.identity, &calls)
        {
            match policy::fold(allowlist.mode, Rule::Scopes, refused.denial()) {
                Fold::Refuse(denial) => {
                    self.violation(&denial, head, peer, true);
                    let challenge = refused.challenge(&caller.resource, None);
                    return Err(refusal::render_challenge(allowlist, &denial, &challenge));
                }
                Fold::Audit(denial) => {
                    self.violation(&denial, head, peer, false);
                    admission.audited.push(denial);
                }
            }
        }
        if let Some(rules) = &allowlist.access
            && let Err(denied) = policy::access(rules, caller.map(|c| &c.identity), peeked)
        {
            let enforce = policy::refuses(allowlist.mode, Rule::Access);
            match trail.filter(|_| !denied.calls.is_empty()) {
                // The audit log gives each denied call its own line, and the others of a refused batch theirs.
                Some(trail) => {
                    self.report(&denied.denial, head, peer, enforce);
                    trail.deny_calls(&denied.calls, enforce);
                }
                None => self.violation(&denied.denial, head, peer, enforce),
            }
            match policy::fold(allowlist.mode, Rule::Access, denied.denial) {
                Fold::Refuse(denial) => return Err(refusal::render(allowlist, &denial, None)),
                Fold::Audit(denial) => admission.audited.push(denial),
            }
        }
        // Audit mode shows lists whole, as it forwards the calls it would deny.
        let lists = policy::refuses(allowlist.mode, Rule::Access)
            .then(|| ListFilter::new(allowlist.clone(), caller.map(|c| c.identity.clone()), peeked))
            .flatten();
        if rules_read
            && read.as_ref().is_some_and(|p| !p.ended)
            && policy::refuses(allowlist.mode, Rule::BodyWatch)
        {
            body.watch(policy::watch(&scanner, &calls));
        }
        if !limits.limits_clients() {
            return Ok(Admitted {
                slot: None,
                audited: !admission.audited.is_empty(),
                lists,
            });
        }
        let class = RequestClass {
            stream: policy::opens_stream(head, &calls, limits),
            calls: &calls,
        };
        let client = ClientKey::of(client);
        let slot = match self.limiter.admit(client, &class, limits) {
            Ok(slot) => slot,
            Err(refusal) => {
                let denial = Denial::new(refusal.reason, client.to_string()).with_detail(&refusal.detail);
                match policy::fold(allowlist.mode, Rule::RateLimits, denial) {
                    Fold::Refuse(denial) => {
                        self.violation(&denial, head, peer, true);
                        return Err(refusal::render(
                            allowlist,
                            &denial,
                            Some(refusal.retry_after_secs()),
                        ));
                    }
                    Fold::Audit(denial) => {
                        self.violation(&denial, head, peer, false);
                        admission.audited.push(denial);
                        self.limiter.hold(client, class.stream)
                    }
                }
            }
        };
        Ok(Admitted {
            slot: Some(slot),
            audited: !admission.audited.is_empty(),
            lists,
        })
    }

    /// Counts a request whose response turned out to be an event stream against `maxStreamsPerClient` (the
    /// cap counts what the response is, not what the request's `Accept` claimed).
    fn stream_cap(
        &self,
        allowlist: &Allowlist,
        slot: &mut SlotGuard,
        method: &http::Method,
        path: &str,
        peer: &Peer,
        client: std::net::IpAddr,
    ) -> StreamCap {
        let enforce = policy::refuses(allowlist.mode, Rule::StreamCap);
        let Err(refusal) = slot.become_stream(&allowlist.limits, enforce) else {
            return StreamCap::Within;
        };
        let denial =
            Denial::new(refusal.reason, ClientKey::of(client).to_string()).with_detail(&refusal.detail);
        log_denial(&denial, method.as_str(), path, None, peer, enforce);
        match policy::fold(allowlist.mode, Rule::StreamCap, denial) {
            Fold::Audit(denial) => {
                self.metrics.request(Outcome::Audited, Some(denial.reason));
                StreamCap::Audited(denial.reason)
            }
            Fold::Refuse(denial) => {
                self.metrics.request(Outcome::Rejected, Some(denial.reason));
                let answer = refusal::render(allowlist, &denial, Some(refusal.retry_after_secs()));
                StreamCap::Over(Box::new(answer), denial.reason)
            }
        }
    }

    /// A refusal decided once the request went upstream (a list answer the guard cannot filter, the client's own
    /// body at fault): logged, on the audit trail, counted once as rejected.
    fn refuse_late(
        &self,
        denial: &Denial,
        allowlist: &Allowlist,
        method: &http::Method,
        path: &str,
        peer: &Peer,
        trail: Option<&Trail>,
    ) -> Response<ResponseBody> {
        log_denial(denial, method.as_str(), path, None, peer, true);
        if let Some(trail) = trail {
            trail.deny(denial.reason, true);
        }
        self.metrics.request(Outcome::Rejected, Some(denial.reason));
        refusal::render(allowlist, denial, None)
    }

    /// Logs, counts and audits a request the allowlist or the policy refused (`enforce`), or that audit mode let
    /// through.
    fn violation(&self, denial: &Denial, head: &http::request::Parts, peer: &Peer, enforce: bool) {
        self.report(denial, head, peer, enforce);
        if let Some(trail) = Trail::of(head) {
            trail.deny(denial.reason, enforce);
        }
    }

    /// Logs and counts a refusal, or a violation audit mode let through.
    fn report(&self, denial: &Denial, head: &http::request::Parts, peer: &Peer, enforce: bool) {
        let origin = head.headers.get(http::header::ORIGIN).map(HeaderValue::as_bytes);
        log_denial(
            denial,
            head.method.as_str(),
            head.uri.path(),
            origin,
            peer,
            enforce,
        );
        let outcome = if enforce {
            Outcome::Rejected
        } else {
            Outcome::Audited
        };
        self.metrics.request(outcome, Some(denial.reason));
    }

    /// Logs and counts a failed upstream exchange; the refusal to answer with.
    fn upstream_failure(&self, err: &SendError, method: &http::Method, path: &str, peer: &Peer) -> Denial {
        let kind = match err {
            SendError::ConnectTimeout(_) => UpstreamError::Timeout,
            SendError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut => UpstreamError::Timeout,
            SendError::Connect(_) => UpstreamError::Connect,
            SendError::Handshake(_) | SendError::Exchange(_) => UpstreamError::Request,
        };
        self.metrics.upstream_error(kind);
        let detail = crate::error::chain(err);
        warn!(upstream = %self.upstream.authority, error = %detail, kind = ?kind, peer = %peer.addr, %method, path, "upstream request failed");
        Denial {
            reason: Reason::UpstreamUnavailable,
            received: self.upstream.authority.to_string(),
            detail: Some(detail),
        }
    }
}

/// What the calls' rules let through: the client's slot of the rate limits, whether audit mode let a refusal
/// pass, and what filters list answers (with access rules enforced).
struct Admitted {
    slot: Option<SlotGuard>,
    audited: bool,
    lists: Option<ListFilter>,
}

/// An answer that may carry list answers, filtered ([`crate::policy::lists`]): an event stream as it streams,
/// anything else read whole (up to [`LIST_LIMIT`]) as JSON. Its length is hyper's to set again. An error: an
/// answer the guard cannot filter, which is never passed on.
async fn filter_list(
    lists: ListFilter,
    parts: &mut http::response::Parts,
    inner: hyper::body::Incoming,
    count: StreamCount,
    slot: Option<SlotGuard>,
) -> Result<ResponseBody, Denial> {
    let refused = |detail: String| Denial::new(Reason::ListNotFiltered, "list answer").with_detail(detail);
    let headers = &mut parts.headers;
    if let Some(coding) = headers
        .get(http::header::CONTENT_ENCODING)
        .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(refused(format!(
            "content-encoding {}",
            String::from_utf8_lossy(coding.as_bytes())
        )));
    }
    headers.remove(http::header::CONTENT_LENGTH);
    if policy::may_be_event_stream(headers) {
        return Ok(ResponseBody::Events {
            inner,
            events: Box::new(EventFilter::new(lists)),
            count,
            _slot: slot,
            audit: None,
        });
    }
    let body = http_body_util::Limited::new(inner, LIST_LIMIT)
        .collect()
        .await
        .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
            Some(_) => format!("a list answer over the guard's bound of {LIST_LIMIT} bytes"),
            None => format!("reading the list answer: {}", crate::error::chain(&*e)),
        })
        .map_err(refused)?
        .to_bytes();
    if body.is_empty() {
        return Ok(ResponseBody::Full(None));
    }
    Ok(ResponseBody::full(lists.json(&body).map_err(refused)?))
}

/// A response that turned out to be an event stream, and the stream cap.
enum StreamCap {
    Within,
    /// Over the cap, let through by audit mode.
    Audited(Reason),
    /// Over the cap: the `429` to answer instead.
    Over(Box<Response<ResponseBody>>, Reason),
}

/// An answer the guard gives itself while the request's body may still be on its way closes the connection.
/// hyper notices a body nobody reads only after the answer's head went out saying keep-alive, then closes unless
/// the rest had already arrived: a client that sent its next request on that connection would lose it ("server
/// disconnected without sending a response"). Said in the answer, the client opens another one instead.
fn before_the_body(
    mut answer: Response<ResponseBody>,
    head: &http::request::Parts,
    body: &RequestBody,
) -> Response<ResponseBody> {
    if head.version < Version::HTTP_2 && !body.is_done() {
        answer
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// The refusal for a client's body at fault: too large (`413`), not valid (`400`), or naming another call than
/// the one charged (`400`).
fn client_fault(fault: &ClientFault, limit: u64) -> Denial {
    match fault {
        ClientFault::TooLarge => policy::body_too_large(limit),
        ClientFault::Malformed(detail) => {
            Denial::new(Reason::MalformedRequest, "request body").with_detail(detail)
        }
        ClientFault::Uncountable(detail) => {
            Denial::new(Reason::UncountableBody, "request body").with_detail(detail)
        }
    }
}

/// Request headers as the debug log shows them: credentials replaced by their length.
fn redacted(headers: &http::HeaderMap) -> Vec<(&str, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = match *name == http::header::AUTHORIZATION
                || *name == http::header::COOKIE
                || *name == http::header::PROXY_AUTHORIZATION
            {
                true => format!("<{} bytes>", value.len()),
                false => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            (name.as_str(), shown)
        })
        .collect()
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

#[cfg(test)]
mod tests;
