//! The HTTP/1.1 path, client to upstream, without hyper: one task per client connection reads each request
//! head, checks it against the live allowlist and exchanges it with the upstream over a pooled connection. Heads
//! are rewritten as bytes (hop-by-hop fields out; Host, Origin and X-Forwarded-* set) and bodies pass verbatim,
//! so a small request costs one read and one write on each side. h2c clients, and every client when the upstream
//! speaks h2c, go through hyper instead (see `server.rs`).

use std::mem::MaybeUninit;
use std::sync::Arc;

use bytes::BufMut;
use mcp_guard_config::{Allowlist, Denial, HeaderSeen, Mode, Reason, RequestFacts, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::body::StreamCount;
use crate::chunked::{ChunkedScanner, Step};
use crate::config::LiveAllowlist;
use crate::field::Field;
use crate::idle::Activity;
use crate::metrics::Outcome;
use crate::pool::{
    Framing, H1Pool, READ_CHUNK, SendError, parse_content_length, push_data, response_framing, return_buffer,
    spare_buffer,
};
use crate::proxy::{
    DEFAULT_MAX_REQUEST_BODY_BYTES, JSON_ANSWER_FIELDS, Peer, Proxy, UpstreamClient, error_body, log_denial,
};
use crate::server::{Limits, drained};

/// Request header fields parsed at most (`--max-headers` is capped here).
pub const MAX_HEADERS: usize = 256;
/// Response header fields accepted from the upstream.
const MAX_RESPONSE_HEADERS: usize = 128;
/// The largest response head accepted from the upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The read buffer for a request head (grown up to `--max-header-bytes`).
const CLIENT_READ: usize = 4096;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves one client connection until it closes, breaks the protocol, idles out (the caller's timer) or the
/// worker drains.
pub async fn serve(
    client: TcpStream,
    peer: Peer,
    proxy: Arc<Proxy>,
    limits: Limits,
    accepted: Instant,
    drain: watch::Receiver<bool>,
    activity: Option<Activity>,
) {
    let UpstreamClient::H1(pool) = &proxy.client else {
        return; // the caller sends every client of an h2c upstream through hyper
    };
    let pool = pool.clone();
    let mut live = proxy.live.clone();
    let allowlist = live.borrow_and_update().clone();
    let head_clock = Box::pin(tokio::time::sleep_until(accepted + head_tick(&limits)));
    let mut conn = Conn {
        client,
        live,
        allowlist,
        peer,
        proxy,
        pool,
        limits,
        drain,
        activity,
        input: Vec::with_capacity(CLIENT_READ),
        up_buf: Vec::new(),
        out: Vec::with_capacity(1024),
        unread_body: false,
        head_clock,
        head_ticks: 0,
        last_allowed: LastAllowed::default(),
        spare_request: None,
    };
    loop {
        let keep_alive = match conn.next_request().await {
            Some(mut request) => {
                let keep_alive = conn.exchange(&mut request).await;
                conn.spare_request = Some(request);
                keep_alive
            }
            None => false,
        };
        if !keep_alive {
            break;
        }
    }
    if conn.unread_body {
        linger(&mut conn.client).await;
    } else {
        let _ = conn.client.shutdown().await;
    }
}

/// The header-read timeout is kept by a clock that ticks every half timeout, so that a request costs no clock
/// read and no timer (un)registration: a head still incomplete at the third tick since its wait began is late.
/// The wait may end up to half the timeout later than the timeout (as the idle timeout, see `idle.rs`).
fn head_tick(limits: &Limits) -> std::time::Duration {
    (limits.header_read_timeout / 2).max(std::time::Duration::from_millis(1))
}

/// Ticks of the head clock after which a request head is late (see [`head_tick`]).
const LATE_AT_TICK: u8 = 3;

/// How long, and how much, a closing connection still reads from the client.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Closes as nginx's lingering close does: end the sending side, then read and drop what the client still sends
/// (the body the guard did not read) for a moment, so that the kernel does not answer it with a reset, which could
/// destroy the answer before the client read it.
async fn linger(client: &mut TcpStream) {
    let _ = client.shutdown().await;
    // On the heap: a buffer in this future would size every connection's task.
    let mut sink = vec![0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum RequestBody {
    #[default]
    None,
    Length(u64),
    Chunked,
}

/// A checked request, its upstream head already encoded in `Conn::out`.
#[derive(Default)]
struct Request {
    method: http::Method,
    path: String,
    body: RequestBody,
    /// Body bytes still to come from the client (for a chunked body: until the scanner is done).
    left: u64,
    chunks: ChunkedScanner,
    body_seen: u64,
    limit: u64,
    expect_continue: bool,
    /// The client keeps the connection open after this exchange (HTTP/1.1 without `Connection: close`).
    keep_alive: bool,
    /// An HTTP/1.0 client: no chunked coding in the response.
    http10: bool,
}

impl Request {
    fn body_done(&self) -> bool {
        match self.body {
            RequestBody::None => true,
            RequestBody::Length(_) => self.left == 0,
            RequestBody::Chunked => self.chunks.is_done(),
        }
    }

    /// Takes the body's bytes from the front of `input` (up to its end): how many belong to it.
    fn take_body(&mut self, input: &[u8]) -> Result<usize, Refusal> {
        let n = match self.body {
            RequestBody::None => 0,
            RequestBody::Length(_) => {
                let n = self.left.min(input.len() as u64);
                self.left -= n;
                self.body_seen += n;
                n as usize
            }
            RequestBody::Chunked => {
                let (n, data, _) = self.chunks.scan(input).map_err(|e| {
                    Refusal::new(Denial::new(Reason::MalformedRequest, "chunked body").with_detail(e))
                })?;
                self.body_seen += data;
                n
            }
        };
        if self.body_seen > self.limit {
            let denial = Denial::new(
                Reason::RequestBodyTooLarge,
                format!("more than {} bytes", self.limit),
            )
            .with_detail(format!("limit {} bytes", self.limit));
            return Err(Refusal::new(denial));
        }
        Ok(n)
    }
}

/// A request refused before it reached the upstream.
struct Refusal {
    denial: Denial,
    /// The allowlist check logged it already, with the request's details.
    logged: bool,
    /// A refused request without a body leaves the connection usable: the length of its head, to skip.
    keep_alive_after: Option<usize>,
}

impl Refusal {
    fn new(denial: Denial) -> Self {
        Refusal {
            denial,
            logged: false,
            keep_alive_after: None,
        }
    }
}

/// What reading a request head gave.
enum Head {
    Partial,
    Ready(Box<Request>),
    Refused(Refusal, Option<(http::Method, String)>),
}

struct Conn {
    client: TcpStream,
    live: LiveAllowlist,
    allowlist: Arc<Allowlist>,
    peer: Peer,
    proxy: Arc<Proxy>,
    pool: Arc<H1Pool>,
    limits: Limits,
    drain: watch::Receiver<bool>,
    activity: Option<Activity>,
    /// Client bytes read and not yet used: the next request's head, the start of a body.
    input: Vec<u8>,
    /// Upstream bytes read and not yet passed on.
    up_buf: Vec<u8>,
    /// What goes out next: the upstream request head, the client's response head.
    out: Vec<u8>,
    /// The connection closes with request bytes the guard did not read (a refused or cut-short request).
    unread_body: bool,
    /// Keeps the header-read timeout (see [`head_tick`]); boxed, to keep the connection's task small.
    head_clock: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Ticks seen while waiting for the current request head.
    head_ticks: u8,
    /// The Host and Origin of the last request allowed under `allowlist`.
    last_allowed: LastAllowed,
    /// The last request, done with, for the next one to reuse.
    spare_request: Option<Box<Request>>,
}

/// The Host and Origin values a connection's last allowed request (origin-form) came with. A keep-alive client
/// sends the same ones request after request, and for such a request the check is a function of those bytes and
/// the allowlist alone: the same bytes under the same allowlist get the same verdict without parsing them again.
#[derive(Default)]
struct LastAllowed {
    host: Vec<u8>,
    origin: Option<Vec<u8>>,
    valid: bool,
}

impl LastAllowed {
    /// Whether a request with these fields was allowed last (one Host, at most one Origin, the same bytes).
    fn holds(&self, host: HeaderSeen<'_>, origin: HeaderSeen<'_>) -> bool {
        self.valid
            && host.count == 1
            && origin.count <= 1
            && host.first == Some(self.host.as_slice())
            && origin.first == self.origin.as_deref()
    }

    fn remember(&mut self, host: HeaderSeen<'_>, origin: HeaderSeen<'_>) {
        let Some(h) = host.first.filter(|_| host.count == 1 && origin.count <= 1) else {
            self.valid = false;
            return;
        };
        self.valid = true;
        self.host.clear();
        self.host.extend_from_slice(h);
        match (origin.first, &mut self.origin) {
            (Some(o), Some(kept)) => {
                kept.clear();
                kept.extend_from_slice(o);
            }
            (o, kept) => *kept = o.map(<[u8]>::to_vec),
        }
    }

    /// The allowlist changed.
    fn forget(&mut self) {
        self.valid = false;
    }
}

/// How an exchange with the upstream ended.
enum Exchanged {
    /// The response went out whole; whether the client connection can carry another request.
    Done { keep_alive: bool },
    /// The upstream failed before the response started; the client gets a 502.
    Failed(SendError),
    /// The client went away, or the upstream failed mid-response: close the client connection.
    Abort,
}

impl Conn {
    fn touch(&self) {
        if let Some(a) = &self.activity {
            a.touch();
        }
    }

    fn draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// Reads and checks the next request head. `None`: the connection is done (closed, timed out, refused,
    /// draining).
    async fn next_request(&mut self) -> Option<Box<Request>> {
        loop {
            if !self.input.is_empty() {
                let head = self.parse_head();
                if !matches!(head, Head::Partial) {
                    self.head_ticks = 0;
                }
                match head {
                    Head::Partial => {}
                    Head::Ready(request) => return Some(request),
                    Head::Refused(refusal, line) => {
                        let (method, path) = line.unwrap_or((http::Method::GET, String::new()));
                        let skip = refusal.keep_alive_after.filter(|_| !self.draining());
                        if !self.refuse(refusal, &method, &path, skip.is_none()).await {
                            return None;
                        }
                        if let Some(n) = skip {
                            consume(&mut self.input, n);
                            continue;
                        }
                        return None;
                    }
                }
            }
            if self.input.capacity() - self.input.len() < 512 {
                self.input.reserve(CLIENT_READ);
            }
            let idle = self.input.is_empty();
            let read = tokio::select! {
                biased;
                r = self.client.read_buf(&mut self.input) => r,
                () = self.head_clock.as_mut() => {
                    self.head_ticks += 1;
                    if self.head_ticks >= LATE_AT_TICK {
                        debug!(peer = %self.peer.addr, "no complete request head within the header read timeout");
                        return None;
                    }
                    let next = Instant::now() + head_tick(&self.limits);
                    self.head_clock.as_mut().reset(next);
                    continue;
                }
                () = drained(&mut self.drain), if idle => return None,
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => self.touch(),
            }
        }
    }

    /// Parses the request head in `input`, checks it, and encodes the upstream request head (with the body bytes
    /// already received) into `out`.
    fn parse_head(&mut self) -> Head {
        // The connection keeps its own handle on the allowlist: a reload is seen by a cheap version check, and
        // requests share no reference count between workers.
        if self.live.has_changed().unwrap_or(false) {
            self.allowlist = self.live.borrow_and_update().clone();
            self.last_allowed.forget();
        }
        let max_headers = self.limits.max_headers.clamp(1, MAX_HEADERS);
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let too_large = || {
            let denial = Denial::new(Reason::RequestHeadersTooLarge, "request head").with_detail(format!(
                "limits: {} bytes, {} header fields",
                self.limits.max_header_bytes, max_headers
            ));
            Head::Refused(Refusal::new(denial), None)
        };
        let head_len = match parsed.parse_with_uninit_headers(&self.input, &mut storage[..max_headers]) {
            Ok(httparse::Status::Complete(n)) if n <= self.limits.max_header_bytes => n,
            Ok(httparse::Status::Complete(_)) => return too_large(),
            Ok(httparse::Status::Partial) if self.input.len() >= self.limits.max_header_bytes => {
                return too_large();
            }
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(httparse::Error::TooManyHeaders) => return too_large(),
            Err(e) => {
                let denial = Denial::new(Reason::MalformedRequest, "request head").with_detail(e);
                return Head::Refused(Refusal::new(denial), None);
            }
        };
        let method = http::Method::from_bytes(parsed.method.unwrap_or("GET").as_bytes()).unwrap_or_default();
        let target = parsed.path.unwrap_or("/");
        let http11 = parsed.version == Some(1);
        let line = || Some((method.clone(), target.to_owned()));
        let headers = &*parsed.headers;

        // Where the request is addressed: origin-form, or absolute-form whose authority is what is checked.
        let absolute = if target.starts_with('/') || (target == "*" && method == http::Method::OPTIONS) {
            None
        } else {
            match target.parse::<http::Uri>() {
                Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Some(uri),
                _ => {
                    let denial = Denial::new(Reason::MalformedRequest, target).with_detail("request target");
                    return Head::Refused(Refusal::new(denial), line());
                }
            }
        };
        let fields = match Fields::read(headers) {
            Ok(f) => f,
            Err(denial) => return Head::Refused(Refusal::new(denial), line()),
        };
        let facts = RequestFacts {
            target_authority: absolute.as_ref().and_then(|u| u.authority()).map(|a| a.as_str()),
            http2: false,
            scheme: absolute.as_ref().and_then(|u| u.scheme_str()),
            host: fields.host,
            origin: fields.origin,
        };
        let allowlist = &self.allowlist;
        let again = absolute.is_none() && self.last_allowed.holds(fields.host, fields.origin);
        let verdict = if again {
            Verdict::Allow
        } else {
            allowlist.check(&facts)
        };
        let allowed = match verdict {
            Verdict::Allow => {
                if !again && absolute.is_none() {
                    self.last_allowed.remember(fields.host, fields.origin);
                }
                self.proxy.metrics.request(Outcome::Allowed, None);
                true
            }
            Verdict::Deny(denial) => {
                let enforce = allowlist.mode == Mode::Enforce;
                log_denial(
                    &denial,
                    method.as_str(),
                    target,
                    fields.origin.first,
                    &self.peer,
                    enforce,
                );
                if enforce {
                    let bodyless = matches!(fields.body, RequestBody::None | RequestBody::Length(0));
                    let keep_alive_after = (http11 && !fields.close && bodyless).then_some(head_len);
                    return Head::Refused(
                        Refusal {
                            denial,
                            logged: true,
                            keep_alive_after,
                        },
                        line(),
                    );
                }
                self.proxy.metrics.request(Outcome::Audited, Some(denial.reason));
                false
            }
        };
        let limit = allowlist
            .limits
            .max_request_body_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES);
        let (body, left) = match fields.body {
            RequestBody::Length(n) if n > limit => {
                let denial = Denial::new(Reason::RequestBodyTooLarge, n.to_string())
                    .with_detail(format!("limit {limit} bytes"));
                return Head::Refused(Refusal::new(denial), line());
            }
            RequestBody::Length(0) => (RequestBody::None, 0),
            RequestBody::Length(n) => (RequestBody::Length(n), n),
            other => (other, 0),
        };

        // The upstream's request head.
        let client_authority = facts.target_authority.map(str::as_bytes).or(fields.host.first);
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        match &absolute {
            Some(uri) => out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes()),
            None => out.extend_from_slice(target.as_bytes()),
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let rewrite_origin = allowed && !self.proxy.preserve_host;
        for h in headers {
            let field = Field::of(h.name);
            match field {
                Field::Host | Field::XForwardedFor | Field::XForwardedHost | Field::Expect => continue,
                _ if !forwardable(field, h.name, headers, fields.connection_names) => continue,
                Field::Origin if rewrite_origin => {
                    push_field(out, "origin", self.proxy.upstream.origin_header.as_bytes());
                }
                _ => push_field(out, h.name, h.value),
            }
        }
        let host = match client_authority {
            Some(a) if self.proxy.preserve_host => a,
            _ => self.proxy.upstream.host_header.as_bytes(),
        };
        push_field(out, "host", host);
        match fields.forwarded_for {
            Some(prior) => {
                out.extend_from_slice(b"x-forwarded-for: ");
                out.extend_from_slice(prior.trim_ascii());
                out.extend_from_slice(b", ");
                out.extend_from_slice(self.peer.ip.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            None => push_field(out, "x-forwarded-for", self.peer.ip.as_bytes()),
        }
        if let Some(a) = client_authority {
            push_field(out, "x-forwarded-host", a);
        }
        if !fields.forwarded_proto {
            push_field(out, "x-forwarded-proto", b"http");
        }
        if body == RequestBody::Chunked {
            push_field(out, "transfer-encoding", b"chunked");
        }
        out.extend_from_slice(b"\r\n");

        // The last request's box and path buffer are reused: nothing is allocated for a request.
        let mut request = self.spare_request.take().unwrap_or_default();
        let mut path = std::mem::take(&mut request.path);
        path.clear();
        path.push_str(target);
        *request = Request {
            method,
            path,
            body,
            left,
            chunks: ChunkedScanner::default(),
            body_seen: 0,
            limit,
            expect_continue: fields.expect_continue,
            keep_alive: http11 && !fields.close,
            http10: !http11,
        };
        // The body bytes that came with the head go out with it.
        let taken = match request.take_body(&self.input[head_len..]) {
            Ok(n) => n,
            Err(refusal) => {
                let line = Some((request.method.clone(), request.path.clone()));
                return Head::Refused(refusal, line);
            }
        };
        self.out
            .extend_from_slice(&self.input[head_len..head_len + taken]);
        consume(&mut self.input, head_len + taken);
        Head::Ready(request)
    }

    /// Answers a refused request and counts it; whether the answer went out.
    async fn refuse(&mut self, refusal: Refusal, method: &http::Method, path: &str, close: bool) -> bool {
        let denial = refusal.denial;
        if !refusal.logged {
            log_denial(&denial, method.as_str(), path, None, &self.peer, true);
        }
        self.proxy.metrics.request(Outcome::Rejected, Some(denial.reason));
        let body = error_body(Some(&self.allowlist), &denial);
        json_response(&mut self.out, denial.status(), &body, close);
        self.unread_body |= close;
        let sent = self.client.write_all(&self.out).await.is_ok();
        if sent {
            self.touch();
        }
        sent
    }

    /// Exchanges one checked request with the upstream and answers the client. Whether the client connection can
    /// carry another request.
    async fn exchange(&mut self, request: &mut Request) -> bool {
        if request.expect_continue && !request.body_done() && self.input.is_empty() {
            if self.client.write_all(CONTINUE).await.is_err() {
                return false;
            }
            self.touch();
        }
        let exchanged = self.forward(request).await;
        // An idle keep-alive connection holds no upstream read buffer (and the next exchange starts empty).
        return_buffer(&mut self.up_buf);
        // Closing with part of the body unread: the client may still be sending it.
        self.unread_body = !request.body_done();
        match exchanged {
            Ok(Exchanged::Done { keep_alive }) => keep_alive,
            Ok(Exchanged::Abort) => false,
            Ok(Exchanged::Failed(err)) => {
                let denial = self
                    .proxy
                    .upstream_failure(&err, &request.method, &request.path, &self.peer);
                let keep_alive = request.keep_alive && request.body_done() && !self.draining();
                let body = error_body(Some(&self.allowlist), &denial);
                json_response(&mut self.out, denial.status(), &body, !keep_alive);
                self.client.write_all(&self.out).await.is_ok() && keep_alive
            }
            Err(refusal) => {
                self.refuse(refusal, &request.method, &request.path, true).await;
                false
            }
        }
    }

    /// Sends the request (head, then the body as the client sends it) and streams the response back.
    async fn forward(&mut self, request: &mut Request) -> Result<Exchanged, Refusal> {
        // Like nginx, a request is replayed on a fresh connection only if the upstream cannot have acted on it:
        // idempotent, written whole, and the reused connection failed before answering a byte.
        let replayable = request.body_done() && request.method.is_idempotent();
        loop {
            let (mut upstream, reused) = match self.pool.take() {
                Some(s) => (s, true),
                None => match self.pool.connect().await {
                    Ok(s) => (s, false),
                    Err(e) => return Ok(Exchanged::Failed(e)),
                },
            };
            if let Err(e) = upstream.write_all(&self.out).await {
                if reused && replayable {
                    continue;
                }
                return Ok(Exchanged::Failed(SendError::Io(e)));
            }
            if !request.body_done() {
                match self.upload(&upstream, request).await? {
                    Upload::Done | Upload::AnsweredEarly => {}
                    Upload::ClientGone => return Ok(Exchanged::Abort),
                    Upload::Failed(e) => return Ok(Exchanged::Failed(SendError::Io(e))),
                }
            }
            match self.response_head(&mut upstream, request).await {
                Ok(Some(head)) => return Ok(self.stream_response(upstream, request, head).await),
                Ok(None) => return Ok(Exchanged::Abort),
                Err(ResponseError::Stale) if reused && replayable => continue,
                Err(ResponseError::Stale) => {
                    let err = SendError::Protocol("upstream closed the connection without a response".into());
                    return Ok(Exchanged::Failed(err));
                }
                Err(ResponseError::Failed(e)) => return Ok(Exchanged::Failed(e)),
            }
        }
    }

    /// Streams the rest of the request body to the upstream, watching it for an early answer.
    async fn upload(&mut self, upstream: &TcpStream, request: &mut Request) -> Result<Upload, Refusal> {
        while !request.body_done() {
            if self.input.is_empty() {
                self.input.reserve(READ_CHUNK);
                tokio::select! {
                    r = self.client.read_buf(&mut self.input) => match r {
                        Ok(0) | Err(_) => return Ok(Upload::ClientGone),
                        Ok(_) => self.touch(),
                    },
                    r = upstream.readable() => {
                        if r.is_err() || early_answer(upstream, &mut self.up_buf) {
                            return Ok(Upload::AnsweredEarly);
                        }
                        continue;
                    }
                }
            }
            let n = request.take_body(&self.input)?;
            let sent = write_unless_answered(upstream, &self.input[..n], &mut self.up_buf).await;
            consume(&mut self.input, n);
            match sent {
                Ok(false) => {}
                Ok(true) => return Ok(Upload::AnsweredEarly),
                Err(e) => return Ok(Upload::Failed(e)),
            }
        }
        Ok(Upload::Done)
    }

    /// Reads the upstream's response head (interim 1xx responses are dropped) and encodes the client's response
    /// head into `out`. `Ok(None)`: the client went away meanwhile.
    async fn response_head(
        &mut self,
        upstream: &mut TcpStream,
        request: &Request,
    ) -> Result<Option<ResponseHead>, ResponseError> {
        let head_only = request.method == http::Method::HEAD;
        loop {
            if !self.up_buf.is_empty() {
                let close = !request.keep_alive || !request.body_done() || self.draining();
                match encode_response_head(&self.up_buf, head_only, request.http10, close, &mut self.out) {
                    Ok(Parsed::Partial) => {}
                    Ok(Parsed::Interim(n)) => {
                        consume(&mut self.up_buf, n);
                        continue;
                    }
                    Ok(Parsed::Head(head)) => {
                        consume(&mut self.up_buf, head.len);
                        return Ok(Some(head));
                    }
                    Err(e) => return Err(ResponseError::Failed(e)),
                }
                if self.up_buf.len() >= MAX_RESPONSE_HEAD {
                    return Err(ResponseError::Failed(SendError::Protocol(
                        "upstream response head too large".into(),
                    )));
                }
            }
            // The read buffer is taken once the upstream has something to say: a request still waiting for its
            // answer (an SSE stream being opened, a long tool call) holds none.
            tokio::select! {
                biased;
                r = upstream.readable() => {
                    if let Err(e) = r {
                        return Err(ResponseError::Failed(SendError::Io(e)));
                    }
                }
                gone = client_gone(&self.client, &mut self.input, self.limits.max_header_bytes) => {
                    if gone {
                        return Ok(None);
                    }
                    continue;
                }
            }
            if self.up_buf.capacity() == 0 {
                self.up_buf = spare_buffer();
            } else if self.up_buf.capacity() - self.up_buf.len() < 1024 {
                self.up_buf.reserve(READ_CHUNK);
            }
            // Through `read_buf`, which reads at once on a ready socket and notes a short read as drained (no
            // extra system call to find that out, here or when the connection is next taken from the pool).
            let max = self.pool.read_chunk();
            match upstream.read_buf(&mut (&mut self.up_buf).limit(max)).await {
                Ok(0) if self.up_buf.is_empty() => return Err(ResponseError::Stale),
                Ok(0) => {
                    return Err(ResponseError::Failed(SendError::Protocol(
                        "upstream closed the connection mid response head".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && self.up_buf.is_empty() => {
                    return Err(ResponseError::Stale);
                }
                Err(e) => return Err(ResponseError::Failed(SendError::Io(e))),
            }
        }
    }

    /// Writes the response head and streams the body, as it arrives, to the client; pools the upstream
    /// connection if it can carry another exchange.
    async fn stream_response(
        &mut self,
        mut upstream: TcpStream,
        request: &Request,
        head: ResponseHead,
    ) -> Exchanged {
        let mut body = head.body;
        // The body bytes that came with the head go out with it, in one write.
        let (used, mut end) = match body.pass(&self.up_buf, &mut self.out) {
            Ok(r) => r,
            Err(_) => return Exchanged::Abort,
        };
        consume(&mut self.up_buf, used);
        if write_client(&mut self.client, &self.out, &self.activity)
            .await
            .is_err()
        {
            return Exchanged::Abort;
        }
        let mut at_eof = false;
        // Counted as an open stream once the response outlives its first write (SSE, long bodies).
        let _open = (!end).then(|| StreamCount::new(&self.proxy.metrics.open_streams));
        while !end {
            // Between events an open stream holds no buffer.
            if self.up_buf.is_empty() {
                return_buffer(&mut self.up_buf);
            }
            if self.input.is_empty() {
                self.input = Vec::new();
            }
            self.out = Vec::new();
            tokio::select! {
                biased;
                r = upstream.readable() => if r.is_err() { return Exchanged::Abort },
                gone = client_gone(&self.client, &mut self.input, self.limits.max_header_bytes) => {
                    if gone {
                        return Exchanged::Abort;
                    }
                    continue;
                }
            }
            if self.up_buf.capacity() == 0 {
                self.up_buf = spare_buffer();
            }
            self.up_buf.reserve(READ_CHUNK / 2);
            let max = self.pool.read_chunk();
            match upstream.read_buf(&mut (&mut self.up_buf).limit(max)).await {
                Ok(0) => at_eof = true,
                Ok(_) => {}
                Err(_) => return Exchanged::Abort,
            }
            let (used, done) = if at_eof {
                match body.eof(&mut self.out) {
                    Ok(()) => (0, true),
                    Err(()) => return Exchanged::Abort,
                }
            } else {
                match body.pass(&self.up_buf, &mut self.out) {
                    Ok(r) => r,
                    Err(_) => return Exchanged::Abort,
                }
            };
            consume(&mut self.up_buf, used);
            end = done;
            if !self.out.is_empty()
                && write_client(&mut self.client, &self.out, &self.activity)
                    .await
                    .is_err()
            {
                return Exchanged::Abort;
            }
        }
        // Bytes past the end of the response, or an upstream that closes: not reusable.
        if head.upstream_keep_alive && !at_eof && self.up_buf.is_empty() && request.body_done() {
            self.pool.put(upstream);
        }
        Exchanged::Done {
            keep_alive: !head.close && request.keep_alive && request.body_done() && !self.draining(),
        }
    }
}

enum Upload {
    Done,
    AnsweredEarly,
    ClientGone,
    Failed(std::io::Error),
}

enum ResponseError {
    /// The upstream closed (or reset) the connection before answering a byte.
    Stale,
    Failed(SendError),
}

/// The parts of a response head the exchange needs after encoding it.
struct ResponseHead {
    len: usize,
    body: BodyOut,
    upstream_keep_alive: bool,
    /// The client connection closes after this response.
    close: bool,
}

enum Parsed {
    Partial,
    /// A 1xx interim response of this length, dropped.
    Interim(usize),
    Head(ResponseHead),
}

/// How the response body goes to the client.
enum BodyOut {
    None,
    /// `content-length`, passed verbatim.
    Length(u64),
    /// Chunked, passed verbatim (trailers included).
    Chunked(ChunkedScanner),
    /// Until the upstream closes: re-chunked for an HTTP/1.1 client.
    Rechunk,
    /// Until the upstream closes, passed as is; the client connection closes after it (HTTP/1.0 clients).
    UntilClose,
    /// Chunked from the upstream, decoded for an HTTP/1.0 client.
    Dechunk(ChunkedScanner),
}

impl BodyOut {
    /// Appends what of `buf` belongs to the body to `out` in the client's framing: bytes used, and whether the
    /// body ended.
    fn pass(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), crate::chunked::BadChunk> {
        match self {
            BodyOut::None => Ok((0, true)),
            BodyOut::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                out.extend_from_slice(&buf[..n as usize]);
                Ok((n as usize, *left == 0))
            }
            BodyOut::Chunked(scanner) => {
                let (n, _, end) = scanner.scan(buf)?;
                out.extend_from_slice(&buf[..n]);
                Ok((n, end))
            }
            BodyOut::Rechunk => {
                push_data(out, buf, true);
                Ok((buf.len(), false))
            }
            BodyOut::UntilClose => {
                out.extend_from_slice(buf);
                Ok((buf.len(), false))
            }
            BodyOut::Dechunk(scanner) => {
                let mut at = 0;
                loop {
                    match scanner.step(&buf[at..])? {
                        Step::Framing(n) => at += n,
                        Step::Data(n) => {
                            out.extend_from_slice(&buf[at..at + n]);
                            at += n;
                        }
                        Step::End(n) => return Ok((at + n, true)),
                        Step::NeedMore => return Ok((at, false)),
                    }
                }
            }
        }
    }

    /// The upstream closed: ends a close-delimited body; any other body is cut short (`Err`).
    fn eof(&mut self, out: &mut Vec<u8>) -> Result<(), ()> {
        match self {
            BodyOut::Rechunk => {
                out.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            BodyOut::UntilClose | BodyOut::None => Ok(()),
            _ => Err(()),
        }
    }
}

/// Parses the upstream's response head at the front of `buf` and encodes the client's into `out`: same status
/// and fields minus hop-by-hop ones, framed for the client (`http10_client`: no chunked coding), with
/// `connection: close` when the client connection closes after it.
fn encode_response_head(
    buf: &[u8],
    head_only: bool,
    http10_client: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Parsed, SendError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut storage);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => {
            return Err(SendError::Protocol(format!(
                "invalid response head from the upstream: {e}"
            )));
        }
    };
    let code = parsed.code.unwrap_or(0);
    if !(100..=999).contains(&code) {
        return Err(SendError::Protocol(format!(
            "invalid status {code} from the upstream"
        )));
    }
    if (100..200).contains(&code) {
        return Ok(Parsed::Interim(len));
    }
    let headers = &*parsed.headers;
    let framed = response_framing(code, parsed.version == Some(0), headers, head_only)?;
    let mut close = close;
    let body = match framed.framing {
        Framing::Empty => BodyOut::None,
        Framing::Length(0) => BodyOut::None,
        Framing::Length(n) => BodyOut::Length(n),
        Framing::Chunked if http10_client => {
            close = true;
            BodyOut::Dechunk(ChunkedScanner::default())
        }
        Framing::Chunked => BodyOut::Chunked(ChunkedScanner::default()),
        Framing::UntilClose if http10_client => {
            close = true;
            BodyOut::UntilClose
        }
        Framing::UntilClose => BodyOut::Rechunk,
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(code).as_slice());
    out.push(b' ');
    out.extend_from_slice(parsed.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let field = Field::of(h.name);
        if !forwardable(field, h.name, headers, framed.connection_names)
            || (framed.length_overridden && field == Field::ContentLength)
        {
            continue;
        }
        push_field(out, h.name, h.value);
    }
    match body {
        // Passed verbatim: the upstream's codings stay as they were.
        BodyOut::Chunked(_) => {
            for h in headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            {
                push_field(out, "transfer-encoding", h.value);
            }
        }
        BodyOut::Rechunk => push_field(out, "transfer-encoding", b"chunked"),
        _ => {}
    }
    if close {
        push_field(out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Head(ResponseHead {
        len,
        body,
        upstream_keep_alive: framed.keep_alive,
        close,
    }))
}

fn itoa3(code: u16) -> [u8; 3] {
    [
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

/// What the request's header fields say, read in one pass.
struct Fields<'a> {
    host: HeaderSeen<'a>,
    origin: HeaderSeen<'a>,
    body: RequestBody,
    close: bool,
    expect_continue: bool,
    /// `Connection` names fields besides `close`/`keep-alive`: those are hop-by-hop too.
    connection_names: bool,
    forwarded_for: Option<&'a [u8]>,
    forwarded_proto: bool,
}

impl<'a> Fields<'a> {
    fn read(headers: &'a [httparse::Header<'a>]) -> Result<Self, Denial> {
        let mut f = Fields {
            host: HeaderSeen::default(),
            origin: HeaderSeen::default(),
            body: RequestBody::None,
            close: false,
            expect_continue: false,
            connection_names: false,
            forwarded_for: None,
            forwarded_proto: false,
        };
        let malformed = |what: &str, value: &[u8]| {
            Denial::new(
                Reason::MalformedRequest,
                String::from_utf8_lossy(value).into_owned(),
            )
            .with_detail(what)
        };
        let mut length: Option<u64> = None;
        let mut codings = 0;
        for h in headers {
            let (name, value) = (h.name, h.value);
            let seen = |s: &mut HeaderSeen<'a>| {
                s.first.get_or_insert(value);
                s.count += 1;
            };
            match Field::of(name) {
                Field::Host => seen(&mut f.host),
                Field::Origin => seen(&mut f.origin),
                Field::ContentLength => {
                    let n = parse_content_length(value)
                        .ok_or_else(|| malformed("invalid content-length", value))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(malformed("conflicting content-length values", value));
                    }
                    length = Some(n);
                }
                Field::TransferEncoding => {
                    // Only the chunked coding alone: other codings would have to be passed on undecoded.
                    if codings > 0 || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        return Err(malformed("transfer-encoding other than a single chunked", value));
                    }
                    codings += 1;
                }
                Field::Connection => {
                    for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                        if token.eq_ignore_ascii_case(b"close") {
                            f.close = true;
                        } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                            f.connection_names = true;
                        }
                    }
                }
                Field::Expect => f.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue"),
                Field::XForwardedFor => {
                    f.forwarded_for.get_or_insert(value);
                }
                Field::XForwardedProto => f.forwarded_proto = true,
                Field::XForwardedHost | Field::OtherHopByHop | Field::Other => {}
            }
        }
        // RFC 9112 §6.1, §6.3: a body framed two ways, or by codings the upstream may read differently, is where
        // request smuggling lives; refuse it rather than guess.
        f.body = match (codings > 0, length) {
            (true, Some(_)) => {
                let denial = malformed("both content-length and transfer-encoding", b"transfer-encoding");
                return Err(denial);
            }
            (true, None) => RequestBody::Chunked,
            (false, Some(n)) => RequestBody::Length(n),
            (false, None) => RequestBody::None,
        };
        Ok(f)
    }
}

/// Whether a field goes on to the next hop: not hop-by-hop (RFC 9110 §7.6.1) and not named by `Connection`.
fn forwardable(field: Field, name: &str, headers: &[httparse::Header<'_>], connection_names: bool) -> bool {
    if field.is_hop_by_hop() {
        return false;
    }
    !connection_names
        || !headers.iter().any(|c| {
            c.name.eq_ignore_ascii_case("connection")
                && c.value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        })
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A JSON answer of the guard's own.
fn json_response(out: &mut Vec<u8>, status: u16, body: &[u8], close: bool) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.clear();
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    for (name, value) in JSON_ANSWER_FIELDS {
        push_field(out, name, value.as_bytes());
    }
    push_field(out, "content-length", body.len().to_string().as_bytes());
    if close {
        push_field(out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Drops the first `n` bytes of `buf`.
fn consume(buf: &mut Vec<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else if n > 0 {
        buf.drain(..n);
    }
}

/// Waits for the client to send something while a response is on its way: `true` when it closed the connection
/// (or half-closed it, as nginx takes it too); bytes of a pipelined request are kept in `input`. Pends forever
/// once `input` holds a full head's worth.
async fn client_gone(client: &TcpStream, input: &mut Vec<u8>, max: usize) -> bool {
    if input.len() >= max {
        return std::future::pending().await;
    }
    if client.readable().await.is_err() {
        return true;
    }
    input.reserve(CLIENT_READ.min(max - input.len()).max(1));
    match client.try_read_buf(input) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Whether the upstream started answering (bytes are kept in `buf`) or closed; `false` on a stale wake-up.
fn early_answer(upstream: &TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(READ_CHUNK);
    match upstream.try_read_buf(buf) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Writes all of `data` to the upstream unless it answers first (`Ok(true)`: an early response, kept in `buf`).
async fn write_unless_answered(
    upstream: &TcpStream,
    data: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut at = 0;
    while at < data.len() {
        match upstream.try_write(&data[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::select! {
                    r = upstream.writable() => r?,
                    r = upstream.readable() => {
                        r?;
                        if early_answer(upstream, buf) {
                            return Ok(true);
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

async fn write_client(
    client: &mut TcpStream,
    data: &[u8],
    activity: &Option<Activity>,
) -> std::io::Result<()> {
    client.write_all(data).await?;
    if let Some(a) = activity {
        a.touch();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::lists_field_names;

    fn head(raw: &str, head_only: bool, http10_client: bool, close: bool) -> (String, ResponseHead) {
        let mut out = Vec::new();
        match encode_response_head(raw.as_bytes(), head_only, http10_client, close, &mut out).unwrap() {
            Parsed::Head(h) => (String::from_utf8(out).unwrap(), h),
            _ => panic!("no head in {raw:?}"),
        }
    }

    #[test]
    fn response_heads_lose_hop_by_hop_fields_and_are_framed_for_the_client() {
        let (out, h) = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Mcp-Session-Id: s1\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
            false,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nMcp-Session-Id: s1\r\nContent-Length: 2\r\n\r\n"
        );
        assert_eq!(h.len, 122, "the upstream's head, up to the body");
        assert!(matches!(h.body, BodyOut::Length(2)) && h.upstream_keep_alive && !h.close);

        // Close-delimited: re-chunked for HTTP/1.1, passed as is (and the connection closed) for HTTP/1.0.
        let (out, h) = head(
            "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
            false,
            false,
            false,
        );
        assert!(out.ends_with("transfer-encoding: chunked\r\n\r\n"), "{out}");
        assert!(matches!(h.body, BodyOut::Rechunk) && !h.upstream_keep_alive && !h.close);
        let (out, h) = head("HTTP/1.0 200 OK\r\n\r\n", false, true, false);
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
        assert!(matches!(h.body, BodyOut::UntilClose) && h.close);

        // Chunked passes verbatim with the upstream's codings; an HTTP/1.0 client gets it decoded.
        let (out, h) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            false,
            true,
        );
        assert!(
            out.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{out}"
        );
        assert!(matches!(h.body, BodyOut::Chunked(_)));
        let (_, h) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            true,
            false,
        );
        assert!(matches!(h.body, BodyOut::Dechunk(_)) && h.close);

        // HEAD: the length stays, no body follows.
        let (out, h) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            true,
            false,
            false,
        );
        assert!(out.contains("Content-Length: 1234\r\n"));
        assert!(matches!(h.body, BodyOut::None));

        let mut out = Vec::new();
        let interim = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        assert!(matches!(
            encode_response_head(interim.as_bytes(), false, false, false, &mut out).unwrap(),
            Parsed::Interim(n) if n == interim.len()
        ));
        assert!(
            encode_response_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                false,
                false,
                false,
                &mut out
            )
            .is_err()
        );
    }

    #[test]
    fn bodies_are_passed_in_the_clients_framing() {
        let mut out = Vec::new();
        let mut rechunk = BodyOut::Rechunk;
        assert_eq!(rechunk.pass(b"data: 1\n\n", &mut out).unwrap(), (9, false));
        rechunk.eof(&mut out).unwrap();
        assert_eq!(out, b"9\r\ndata: 1\n\n\r\n0\r\n\r\n");

        out.clear();
        let mut dechunk = BodyOut::Dechunk(ChunkedScanner::default());
        assert_eq!(
            dechunk.pass(b"3\r\nabc\r\n2\r\nde", &mut out).unwrap(),
            (13, false)
        );
        assert_eq!(dechunk.pass(b"\r\n0\r\n\r\nnext", &mut out).unwrap(), (7, true));
        assert_eq!(out, b"abcde");

        out.clear();
        let mut length = BodyOut::Length(3);
        assert_eq!(length.pass(b"abcdef", &mut out).unwrap(), (3, true));
        assert_eq!(out, b"abc");
        assert!(
            BodyOut::Length(1).eof(&mut out).is_err(),
            "a body cut short is an error"
        );
    }

    fn body_of(raw: &str) -> Result<RequestBody, Reason> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw.as_bytes()).unwrap();
        Fields::read(req.headers).map(|f| f.body).map_err(|d| d.reason)
    }

    #[test]
    fn request_bodies_framed_ambiguously_are_refused() {
        let req = |fields: &str| body_of(&format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n"));
        assert_eq!(req("Content-Length: 5\r\n"), Ok(RequestBody::Length(5)));
        assert_eq!(
            req("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(RequestBody::Length(5))
        );
        assert_eq!(req("Transfer-Encoding: Chunked\r\n"), Ok(RequestBody::Chunked));
        assert_eq!(req(""), Ok(RequestBody::None));
        for bad in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: +5\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity\r\n",
        ] {
            assert_eq!(req(bad), Err(Reason::MalformedRequest), "{bad}");
        }
    }

    #[test]
    fn fields_named_by_connection_are_hop_by_hop() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(b"GET / HTTP/1.1\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nTE: trailers\r\nX-Kept: 2\r\n\r\n")
            .unwrap();
        let kept: Vec<&str> = req
            .headers
            .iter()
            .map(|h| h.name)
            .filter(|n| forwardable(Field::of(n), n, req.headers, true))
            .collect();
        assert_eq!(kept, ["X-Kept"]);
        assert!(lists_field_names(b"close, X-Secret"));
        assert!(!lists_field_names(b"Keep-Alive , close"));
    }
}
