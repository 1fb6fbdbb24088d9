//! A lean HTTP/1.1 client and connection pool for the upstream, one per worker: idle connections in a short
//! vector; a connection goes back once its response body was read to the end and the upstream keeps it alive.
//!
//! It does only what the guard needs (RFC 9112): write the request head, stream the request body with its
//! `content-length` or chunked; parse the response head with `httparse`; decode a content-length, chunked or
//! read-until-close body. Reads go through one of the worker's spare buffers and each frame is a `Bytes` of
//! exactly what arrived, so an idle long-lived stream (SSE) holds no read buffer at all.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::{BoxError, RequestBody};
use crate::chunked::{ChunkedDecoder, Decoded};
use crate::field::{Field, lists_field_names};

/// At most this many idle upstream connections are kept per worker.
const MAX_IDLE: usize = 256;
/// The largest response head accepted from the upstream.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most response headers accepted from the upstream.
const MAX_HEADERS: usize = 128;
/// The most bytes read from the upstream at once (a frame is at most this large), and the size of a spare buffer.
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// Request body bytes coalesced with the request head into a single write.
const COALESCE: usize = 64 * 1024;

/// Why a request could not be exchanged with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] std::io::Error),
    #[error("timed out connecting to the upstream")]
    ConnectTimeout,
    #[error("upstream request failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("upstream request failed: {0}")]
    Protocol(String),
    #[error("reading the request body failed: {0}")]
    Body(#[source] BoxError),
    #[error("upstream request failed: {0}")]
    Legacy(#[source] hyper_util::client::legacy::Error),
}

/// The upstream's response body is malformed or ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream closed the connection before the end of the response body")]
    Incomplete,
    #[error("invalid chunked encoding from the upstream")]
    BadChunk,
    #[error("reading the upstream response failed: {0}")]
    Io(#[from] std::io::Error),
}

thread_local! {
    /// The worker's spare upstream read buffers: a read takes one once the upstream has something to say and
    /// gives it back, so neither a request nor an idle stream allocates one of its own.
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare buffers are kept per worker.
const MAX_SPARE: usize = 64;

pub(crate) fn spare_buffer() -> Vec<u8> {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
}

/// Gives `buf` back to the worker's spares (emptied), leaving an unallocated one in its place.
pub(crate) fn return_buffer(buf: &mut Vec<u8>) {
    let mut buf = std::mem::take(buf);
    if buf.capacity() >= READ_CHUNK {
        buf.clear();
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < MAX_SPARE {
                spare.push(buf);
            }
        });
    }
}

pub struct H1Pool {
    authority: String,
    connect_timeout: Duration,
    read_chunk: usize,
    idle: Mutex<Vec<TcpStream>>,
}

impl H1Pool {
    /// `read_buffer` bounds a single read from the upstream (0: 16 KiB).
    pub fn new(authority: String, connect_timeout: Duration, read_buffer: usize) -> Arc<Self> {
        let read_chunk = if read_buffer == 0 {
            READ_CHUNK
        } else {
            read_buffer.min(READ_CHUNK)
        };
        Arc::new(H1Pool {
            authority,
            connect_timeout,
            read_chunk,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// An idle connection that still looks open: nothing to read and no end of stream seen. The runtime's
    /// readiness answers without a system call; only a connection it reports readable (the upstream closed it,
    /// or a read that drained it did not say so) is probed with a read.
    pub(crate) fn take(&self) -> Option<TcpStream> {
        loop {
            let stream = self.idle.lock().ok()?.pop()?;
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if stream.poll_read_ready(&mut cx).is_pending() {
                return Some(stream);
            }
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(stream),
                _ => continue, // closed, errored, or unsolicited bytes: not reusable
            }
        }
    }

    pub(crate) fn put(&self, stream: TcpStream) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(stream);
        }
    }

    /// The most bytes read from the upstream at once (`--upstream-read-buffer`).
    pub fn read_chunk(&self) -> usize {
        self.read_chunk
    }

    /// How many idle connections the pool holds.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    pub(crate) async fn connect(&self) -> Result<TcpStream, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.authority.as_str()))
            .await
            .map_err(|_| SendError::ConnectTimeout)?
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Sends a request (origin-form URI, Host set) on an idle connection or a new one and returns the response
    /// with its body streaming. A reused connection that fails before the upstream answered a byte (it closed
    /// the idle connection meanwhile) is replaced by a new one, as long as the request can be replayed: its
    /// method is idempotent and it was written whole in the first write.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, mut body) = req.into_parts();
        let head_only = parts.method == Method::HEAD;
        let (first, chunked, written_whole) = encode_head(&parts, &mut body).await?;
        // Like nginx, never send a non-idempotent request (a POST carrying `tools/call`) twice: the upstream
        // may have acted on it before the connection failed. Idle connections are probed before reuse, so
        // only a race with the upstream's keep-alive close is left, and that POST gets a 502.
        let replayable = written_whole && parts.method.is_idempotent();
        drop(parts);
        let mut body_done = written_whole;
        loop {
            let (mut stream, reused) = match self.take() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            if let Err(e) = stream.write_all(&first).await {
                if reused && replayable {
                    continue;
                }
                return Err(SendError::Io(e));
            }
            if !body_done {
                // From here on the request cannot be replayed.
                stream_body(&mut stream, &mut body, chunked).await?;
                body_done = true;
            }
            match read_head(&mut stream, head_only).await {
                Ok(Some((resp, framing, keep_alive, rest))) => {
                    let body = UpstreamBody::new(stream, framing, keep_alive, rest, self.clone());
                    return Ok(resp.map(|()| body));
                }
                // Closed before answering anything: a stale keep-alive connection.
                Ok(None) if reused && replayable => continue,
                Ok(None) => {
                    return Err(SendError::Protocol(
                        "upstream closed the connection without a response".into(),
                    ));
                }
                Err(SendError::Io(e))
                    if reused && replayable && e.kind() == std::io::ErrorKind::ConnectionReset =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes the request head and as much of the body as is already available; says whether the rest is chunked
/// and whether the body is complete in what was written.
async fn encode_head(
    parts: &http::request::Parts,
    body: &mut RequestBody,
) -> Result<(Vec<u8>, bool, bool), SendError> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let has_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    let chunked = !has_length && !body.is_end_stream();
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if body.is_end_stream() {
        return Ok((out, false, true));
    }
    // A small body of known length is written with the head, in one write (and can be replayed on a new
    // connection); otherwise what the client already sent goes with the head and the rest streams.
    let whole = body.size_hint().exact().is_some_and(|n| n <= COALESCE as u64);
    while out.len() < COALESCE {
        let next = if whole {
            Some(body.frame().await)
        } else {
            body.frame().now_or_never()
        };
        match next {
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    push_data(&mut out, &data, chunked);
                }
            }
            Some(Some(Err(e))) => return Err(SendError::Body(e)),
            Some(None) => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                return Ok((out, chunked, true));
            }
            None => break,
        }
    }
    Ok((out, chunked, false))
}

/// Appends body bytes, as one chunk when `chunked`.
pub(crate) fn push_data(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Streams the rest of the request body as it arrives.
async fn stream_body(stream: &mut TcpStream, body: &mut RequestBody, chunked: bool) -> Result<(), SendError> {
    let mut out = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.clear();
                    push_data(&mut out, &data, chunked);
                    stream.write_all(&out).await.map_err(SendError::Io)?;
                }
            }
            Some(Err(e)) => return Err(SendError::Body(e)),
            None => {
                if chunked {
                    stream.write_all(b"0\r\n\r\n").await.map_err(SendError::Io)?;
                }
                return Ok(());
            }
        }
    }
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

type Head = (Response<()>, Framing, bool, BytesMut);

/// A parsed response head: the response, its body framing, whether the connection stays open, the head's length.
pub type ParsedHead = (Response<()>, Framing, bool, usize);

/// Reads the response head (skipping 1xx interim responses). `None`: the upstream closed before sending a byte.
async fn read_head(stream: &mut TcpStream, head_only: bool) -> Result<Option<Head>, SendError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Parse what is there (a previous interim response may have left bytes).
        if !buf.is_empty()
            && let Some((resp, framing, keep_alive, used)) = parse_head(&buf, head_only)?
        {
            if resp.status().is_informational() {
                buf.drain(..used);
                continue;
            }
            let rest = BytesMut::from(&buf[used..]);
            return Ok(Some((resp, framing, keep_alive, rest)));
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(SendError::Protocol("upstream response head too large".into()));
        }
        stream.readable().await.map_err(SendError::Io)?;
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        match stream.try_read_buf(&mut buf) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(SendError::Protocol(
                    "upstream closed the connection mid response head".into(),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(SendError::Io(e)),
        }
    }
}

/// How a response's body is delimited and whether its connection can carry another exchange (RFC 9112 §6.3, §9.3),
/// read from its parsed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFraming {
    pub framing: Framing,
    pub keep_alive: bool,
    /// The head has a `content-length` that `transfer-encoding` overrides; it must not be passed on.
    pub length_overridden: bool,
    /// `Connection` names further fields, which are hop-by-hop too.
    pub connection_names: bool,
}

/// Works out a response's [`ResponseFraming`] from its status, version and header fields.
pub fn response_framing(
    code: u16,
    http10: bool,
    headers: &[httparse::Header<'_>],
    head_only: bool,
) -> Result<ResponseFraming, SendError> {
    let mut keep_alive = !http10;
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None; // Some(chunked is last)
    let mut connection_names = false;
    for h in headers {
        let field = Field::of(h.name);
        if field == Field::Connection {
            connection_names |= lists_field_names(h.value);
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if field == Field::TransferEncoding {
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            transfer_encoding = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if field == Field::ContentLength {
            let n = parse_content_length(h.value)
                .ok_or_else(|| SendError::Protocol("invalid content-length from the upstream".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(SendError::Protocol(
                    "conflicting content-length from the upstream".into(),
                ));
            }
            length = Some(n);
        }
    }
    let mut length_overridden = false;
    let framing = if head_only || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::Empty
    } else if let Some(chunked) = transfer_encoding {
        if length.is_some() {
            // RFC 9112 §6.3: Transfer-Encoding wins; the connection must not be reused.
            keep_alive = false;
            length_overridden = true;
        }
        if http10 {
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(ResponseFraming {
        framing,
        keep_alive,
        length_overridden,
        connection_names,
    })
}

/// A `content-length` value: digits only (surrounding whitespace allowed), no list, no sign.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// Parses a complete response head: the response, its body framing, whether the connection stays open, and the
/// head's length. `Ok(None)`: incomplete.
pub fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<ParsedHead>, SendError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(SendError::Protocol(format!(
                "invalid response head from the upstream: {e}"
            )));
        }
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| SendError::Protocol(format!("invalid status {code} from the upstream")))?;
    let http10 = parsed.version == Some(0);
    let framed = response_framing(code, http10, parsed.headers, head_only)?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            SendError::Protocol(format!("invalid header name {:?} from the upstream", h.name))
        })?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| SendError::Protocol(format!("invalid value of {name} from the upstream")))?;
        if !(framed.length_overridden && name == header::CONTENT_LENGTH) {
            map.append(name, value);
        }
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *resp.headers_mut() = map;
    Ok(Some((resp, framed.framing, framed.keep_alive, used)))
}

enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// The upstream's response body, streamed as it arrives. The connection returns to the pool when the body was
/// read to the end and the upstream keeps it alive; otherwise it is closed when the body is dropped.
pub struct UpstreamBody {
    stream: Option<TcpStream>,
    decoder: Decoder,
    /// Bytes read past what was decoded (empty, with no allocation, when idle).
    buf: BytesMut,
    keep_alive: bool,
    read_chunk: usize,
    pool: Arc<H1Pool>,
}

impl UpstreamBody {
    fn new(stream: TcpStream, framing: Framing, keep_alive: bool, rest: BytesMut, pool: Arc<H1Pool>) -> Self {
        let decoder = match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => Decoder::UntilClose,
        };
        let read_chunk = pool.read_chunk;
        let mut body = UpstreamBody {
            stream: Some(stream),
            decoder,
            buf: rest,
            keep_alive,
            read_chunk,
            pool,
        };
        if matches!(body.decoder, Decoder::Done) {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes back to the pool if it can carry another exchange.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        if let Some(stream) = self.stream.take()
            && self.keep_alive
            && self.buf.is_empty()
        {
            self.pool.put(stream);
        }
        self.buf = BytesMut::new();
    }

    /// Reads what is available through one of the worker's spare buffers; `Ok(None)` at end of stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<Bytes>, BodyError>> {
        let Some(stream) = self.stream.as_ref() else {
            return Poll::Ready(Ok(None));
        };
        let max = max.clamp(1, self.read_chunk);
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let mut buf = spare_buffer();
            let read = match stream.try_read_buf(&mut (&mut buf).limit(max)) {
                Ok(0) => Some(Ok(None)),
                Ok(n) => Some(Ok(Some(Bytes::copy_from_slice(&buf[..n])))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(e) => Some(Err(e.into())),
            };
            return_buffer(&mut buf);
            if let Some(read) = read {
                return Poll::Ready(read);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match &mut this.decoder {
                Decoder::Done => return Poll::Ready(None),
                Decoder::Length(left) => {
                    let data = if !this.buf.is_empty() {
                        let n = (*left).min(this.buf.len() as u64) as usize;
                        let data = this.buf.split_to(n).freeze();
                        if this.buf.is_empty() {
                            this.buf = BytesMut::new();
                        }
                        data
                    } else {
                        let want = (*left).min(READ_CHUNK as u64) as usize;
                        match ready!(this.poll_read(cx, want)) {
                            Ok(Some(data)) => data,
                            Ok(None) => {
                                this.stream = None;
                                return Poll::Ready(Some(Err(BodyError::Incomplete)));
                            }
                            Err(e) => {
                                this.stream = None;
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                    };
                    let Decoder::Length(left) = &mut this.decoder else {
                        unreachable!()
                    };
                    *left -= data.len() as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Chunked(dec) => match dec.decode(&mut this.buf).map_err(|_| BodyError::BadChunk) {
                    Ok(Decoded::Data(data)) => {
                        if this.buf.is_empty() {
                            this.buf = BytesMut::new();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => match ready!(this.poll_read(cx, READ_CHUNK)) {
                        Ok(Some(data)) => {
                            if this.buf.is_empty() {
                                this.buf = BytesMut::from(data);
                            } else {
                                this.buf.extend_from_slice(&data);
                            }
                        }
                        Ok(None) => {
                            this.stream = None;
                            return Poll::Ready(Some(Err(BodyError::Incomplete)));
                        }
                        Err(e) => {
                            this.stream = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                    },
                    Err(e) => {
                        this.stream = None;
                        this.decoder = Decoder::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Decoder::UntilClose => {
                    if !this.buf.is_empty() {
                        let data = std::mem::take(&mut this.buf).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_read(cx, READ_CHUNK)) {
                        Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(None) => {
                            this.stream = None;
                            this.decoder = Decoder::Done;
                            return Poll::Ready(None);
                        }
                        Err(e) => {
                            this.stream = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn content_lengths_are_digits_only_and_fit_in_64_bits() {
        for (value, want) in [
            ("0", Some(0)),
            ("42", Some(42)),
            (" 7 ", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            ("  ", None),
            ("1a", None),
            ("-1", None),
            ("+1", None),
            ("1 2", None),
        ] {
            assert_eq!(parse_content_length(value.as_bytes()), want, "{value:?}");
        }
    }

    #[test]
    fn response_framing() {
        let parse = |s: &str, head: bool| {
            let (r, f, k, n) = parse_head(s.as_bytes(), head).unwrap().unwrap();
            assert_eq!(n, s.len());
            (r.status().as_u16(), f, k)
        };
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
            (200, Framing::Length(5), true)
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true),
            (200, Framing::Empty, true)
        );
        assert_eq!(
            parse("HTTP/1.1 204 No Content\r\n\r\n", false),
            (204, Framing::Empty, true)
        );
        assert_eq!(
            parse("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", false),
            (304, Framing::Empty, true)
        );
        assert_eq!(
            parse(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                false
            ),
            (200, Framing::Chunked, true)
        );
        assert_eq!(
            parse(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                false
            ),
            (200, Framing::Chunked, false)
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            (200, Framing::UntilClose, false)
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\n\r\n", false),
            (200, Framing::UntilClose, false)
        );
        assert_eq!(
            parse(
                "HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n",
                false
            ),
            (200, Framing::Length(0), false)
        );
        assert_eq!(
            parse("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false),
            (200, Framing::Length(1), false)
        );
        assert_eq!(
            parse(
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                false
            ),
            (200, Framing::Length(1), true)
        );
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1,1\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes(), false).is_err(), "{bad}");
        }
    }

    /// A scripted upstream: for each accepted connection, reads one request head (and `body_len` bytes after
    /// it) per answer and writes the answer; then closes. Sends what it read over the channel.
    async fn upstream(
        script: Vec<Vec<&'static str>>,
    ) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for answers in script {
                let (mut s, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for answer in answers {
                        // Read until the request (head and, when framed, its body) is in.
                        loop {
                            if request_complete(&seen) {
                                break;
                            }
                            let mut b = [0u8; 4096];
                            let n = s.read(&mut b).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&b[..n]);
                        }
                        let len = request_len(&seen);
                        let req: Vec<u8> = seen.drain(..len).collect();
                        tx.send(String::from_utf8_lossy(&req).into_owned()).unwrap();
                        s.write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (addr, rx)
    }

    fn request_len(buf: &[u8]) -> usize {
        let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
            return usize::MAX;
        };
        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        if let Some(l) = text.lines().find_map(|l| l.strip_prefix("content-length: ")) {
            return head + l.trim().parse::<usize>().unwrap();
        }
        if text.contains("transfer-encoding: chunked") {
            return buf[head..]
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
                .map_or(usize::MAX, |p| head + p + 5);
        }
        head
    }

    fn request_complete(buf: &[u8]) -> bool {
        request_len(buf) <= buf.len()
    }

    fn request(addr: std::net::SocketAddr, method: &str, body: RequestBody) -> Request<RequestBody> {
        let mut b = Request::builder()
            .method(method)
            .uri("/mcp?x=1")
            .header("host", addr.to_string());
        // As the proxy does: the client's content-length is forwarded.
        if let Some(n) = body.size_hint().exact() {
            b = b.header("content-length", n);
        }
        b.body(body).unwrap()
    }

    /// A request body fed through a real hyper server connection, so the test exercises `RequestBody`.
    async fn with_body<F, Fut>(chunks: Vec<&'static [u8]>, length: Option<usize>, f: F)
    where
        F: FnOnce(RequestBody) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        with_limited_body(chunks, length, 1 << 20, f).await
    }

    async fn with_limited_body<F, Fut>(chunks: Vec<&'static [u8]>, length: Option<usize>, limit: u64, f: F)
    where
        F: FnOnce(RequestBody) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let f = f.clone();
                let done_tx = done_tx.clone();
                async move {
                    f(RequestBody::new(req.into_body(), limit)).await;
                    if let Some(tx) = done_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let framing = match length {
            Some(n) => format!("content-length: {n}\r\n"),
            None => "transfer-encoding: chunked\r\n".to_owned(),
        };
        c.write_all(format!("POST / HTTP/1.1\r\nhost: x\r\n{framing}\r\n").as_bytes())
            .await
            .unwrap();
        for chunk in chunks {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if length.is_some() {
                c.write_all(chunk).await.unwrap();
            } else {
                c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .unwrap();
                c.write_all(chunk).await.unwrap();
                c.write_all(b"\r\n").await.unwrap();
            }
        }
        if length.is_none() {
            c.write_all(b"0\r\n\r\n").await.unwrap();
        }
        done_rx.await.unwrap();
    }

    async fn collect(body: UpstreamBody) -> Result<Vec<u8>, BodyError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn keep_alive_reuse_and_framings() {
        let (addr, mut seen) = upstream(vec![vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ]])
        .await;
        let pool = H1Pool::new(addr.to_string(), Duration::from_secs(2), 0);
        let p = pool.clone();
        with_body(vec![b"{\"a\":", b"1}"], Some(7), move |body| async move {
            let resp = p.send(request(addr, "POST", body)).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(collect(resp.into_body()).await.unwrap(), b"hello");
        })
        .await;
        let req = seen.recv().await.unwrap();
        assert!(req.starts_with("POST /mcp?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
        assert_eq!(pool.idle_count(), 1, "the connection went back to the pool");
        // Second request, chunked request body, on the same connection.
        let p = pool.clone();
        with_body(vec![b"ab", b"cd"], None, move |body| async move {
            let resp = p.send(request(addr, "POST", body)).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(collect(resp.into_body()).await.unwrap(), b"abcde");
        })
        .await;
        let req = seen.recv().await.unwrap();
        assert!(req.contains("transfer-encoding: chunked\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"), "{req}");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn stale_connection_is_replaced() {
        // The first connection answers once and closes; the second request must go to a new connection.
        let (addr, _seen) = upstream(vec![
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"],
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"],
        ])
        .await;
        let pool = H1Pool::new(addr.to_string(), Duration::from_secs(2), 0);
        for want in [b"a", b"b"] {
            let p = pool.clone();
            with_body(vec![b"x"], Some(1), move |body| async move {
                let resp = p.send(request(addr, "POST", body)).await.unwrap();
                assert_eq!(collect(resp.into_body()).await.unwrap(), want);
            })
            .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first connection answers one request, then takes the next one and closes without answering, as an
    /// upstream that crashed mid-request would; the second connection answers `b`.
    async fn upstream_that_drops_the_second_request()
    -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        upstream(vec![
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", ""],
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"],
        ])
        .await
    }

    #[tokio::test]
    async fn a_post_the_upstream_may_have_acted_on_is_not_sent_twice() {
        let (addr, mut seen) = upstream_that_drops_the_second_request().await;
        let pool = H1Pool::new(addr.to_string(), Duration::from_secs(2), 0);
        for expect in [Some(&b"a"[..]), None] {
            let p = pool.clone();
            with_body(vec![b"x"], Some(1), move |body| async move {
                let sent = p.send(request(addr, "POST", body)).await;
                match expect {
                    Some(want) => assert_eq!(collect(sent.unwrap().into_body()).await.unwrap(), want),
                    None => assert!(
                        sent.is_err(),
                        "a POST whose connection failed must not be replayed"
                    ),
                }
            })
            .await;
        }
        assert!(seen.recv().await.unwrap().starts_with("POST "));
        assert!(seen.recv().await.unwrap().starts_with("POST "));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(seen.try_recv().is_err(), "the upstream saw the POST once");
    }

    #[tokio::test]
    async fn an_idempotent_request_is_replayed_on_a_new_connection() {
        let (addr, mut seen) = upstream_that_drops_the_second_request().await;
        let pool = H1Pool::new(addr.to_string(), Duration::from_secs(2), 0);
        for want in [b"a", b"b"] {
            let p = pool.clone();
            with_body(vec![], Some(0), move |body| async move {
                let resp = p.send(request(addr, "GET", body)).await.unwrap();
                assert_eq!(collect(resp.into_body()).await.unwrap(), want);
            })
            .await;
        }
        for _ in 0..3 {
            assert!(seen.recv().await.unwrap().starts_with("GET "));
        }
    }

    #[tokio::test]
    async fn upstream_closing_mid_body_is_an_error_and_not_reused() {
        let (addr, _seen) = upstream(vec![
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
            vec!["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"],
            vec!["HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: 1\n\n"],
        ])
        .await;
        let pool = H1Pool::new(addr.to_string(), Duration::from_secs(2), 0);
        for expect_err in [true, true, false] {
            let p = pool.clone();
            with_body(vec![b"x"], Some(1), move |body| async move {
                let resp = p.send(request(addr, "POST", body)).await.unwrap();
                let got = collect(resp.into_body()).await;
                if expect_err {
                    assert!(matches!(got, Err(BodyError::Incomplete)), "{got:?}");
                } else {
                    assert_eq!(got.unwrap(), b"data: 1\n\n", "read until close");
                }
            })
            .await;
            assert_eq!(pool.idle_count(), 0);
        }
    }

    #[tokio::test]
    async fn connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = H1Pool::new(addr.to_string(), Duration::from_secs(2), 0);
        let p = pool.clone();
        with_body(vec![b"x"], Some(1), move |body| async move {
            let Err(err) = p.send(request(addr, "POST", body)).await else {
                panic!("connected to a closed port")
            };
            assert!(matches!(err, SendError::Connect(_)), "{err:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn request_body_over_the_limit_while_streaming() {
        let (addr, _seen) = upstream(vec![vec!["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]]).await;
        let pool = H1Pool::new(addr.to_string(), Duration::from_secs(2), 0);
        let p = pool.clone();
        with_limited_body(vec![b"abcd", b"efgh"], None, 6, move |body| async move {
            let Err(err) = p.send(request(addr, "POST", body)).await else {
                panic!("a body over the limit was sent")
            };
            let source =
                std::error::Error::source(&err).and_then(|e| e.downcast_ref::<crate::body::BodyTooLarge>());
            assert!(source.is_some(), "{err:?}");
        })
        .await;
        assert_eq!(pool.idle_count(), 0);
    }
}
