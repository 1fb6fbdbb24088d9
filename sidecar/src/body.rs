//! Streaming bodies: nothing is collected; frames pass through as hyper decodes them, and hyper encodes them
//! again for the other side.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body exceeded the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The client's body could not be read (a bad chunk, a body cut short): the client's error, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("reading the client's request body: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// A chunked request body ended in a trailer section, which the guard refuses: hyper's chunked decoder reads the
/// section up to CRLF CRLF, taking a bare LF as part of a line, while the field parser it then hands the section
/// to takes a bare LF as a line end and drops whatever follows the first empty line. A front proxy that reads as
/// the field parser does sees another request there (see `docs/guard.md`, "Chunked request bodies").
#[derive(Debug, thiserror::Error)]
#[error("a chunked request body with a trailer section (trailer fields are not accepted)")]
pub struct TrailersRefused;

/// What went wrong with a client's body, as the body saw it: the upstream client reports the failed exchange in
/// its own terms (an h2 stream reset, say), so the body also says so here.
#[derive(Debug)]
pub enum ClientFault {
    TooLarge,
    Malformed(String),
    /// The body named another call after the rate limits charged its prefix (see [`crate::policy::peek::Watch`]).
    Uncountable(String),
}

pub type FaultSlot = Arc<OnceLock<ClientFault>>;

/// The first frames of a client's body, read to learn its MCP method: passed on first, unchanged, then the rest.
#[derive(Debug, Default)]
pub struct Prefix {
    frames: VecDeque<Frame<Bytes>>,
    /// The data of those frames, contiguous, for the scanner.
    pub data: Vec<u8>,
    /// The body ended within the prefix.
    pub ended: bool,
    /// What the rest of the body must not contradict: it is cut (never sent whole) when it does.
    pub watch: Option<crate::policy::peek::Watch>,
}

/// Reads `body` until `enough` says so, [`crate::policy::peek::PEEK_LIMIT`] bytes have come, or the body ends.
/// Holds at most one frame past the limit (hyper's frames are bounded by its read buffer), never the body.
pub async fn peek(
    body: &mut Incoming,
    limit: u64,
    mut enough: impl FnMut(&[u8]) -> bool + Send,
) -> Result<Prefix, ClientFault> {
    let mut prefix = Prefix::default();
    while prefix.data.len() < crate::policy::peek::PEEK_LIMIT {
        match http_body_util::BodyExt::frame(body).await {
            None => {
                prefix.ended = true;
                break;
            }
            Some(Err(e)) => return Err(ClientFault::Malformed(crate::error::chain(&ClientBodyError(e)))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    prefix.data.extend_from_slice(data);
                    if prefix.data.len() as u64 > limit {
                        return Err(ClientFault::TooLarge);
                    }
                }
                let trailers = frame.is_trailers();
                prefix.frames.push_back(frame);
                if trailers {
                    prefix.ended = true;
                    break;
                }
                if enough(&prefix.data) {
                    break;
                }
            }
        }
    }
    Ok(prefix)
}

/// A client's request body on its way to the upstream, cut off with [`BodyTooLarge`] past the limit.
pub struct RequestBody {
    prefix: Prefix,
    inner: Incoming,
    seen: u64,
    limit: u64,
    fault: Option<FaultSlot>,
    /// Refuse a trailer section ([`TrailersRefused`]): the body is chunked.
    refuse_trailers: bool,
}

impl RequestBody {
    /// `fault` learns why the body failed, if it does (a body that is already complete needs none).
    pub fn new(inner: Incoming, limit: u64, fault: Option<FaultSlot>) -> Self {
        Self::with_prefix(Prefix::default(), inner, limit, fault)
    }

    /// A body whose first frames were already read (and counted against the limit) by [`peek`].
    pub fn with_prefix(prefix: Prefix, inner: Incoming, limit: u64, fault: Option<FaultSlot>) -> Self {
        RequestBody {
            seen: prefix.data.len() as u64,
            prefix,
            inner,
            limit,
            fault,
            refuse_trailers: false,
        }
    }

    /// A chunked body (HTTP/1.1): its trailer section, if it has one, fails the body with [`TrailersRefused`].
    pub fn refusing_trailers(mut self, refuse: bool) -> Self {
        self.refuse_trailers = refuse;
        self
    }

    /// Passes a frame on, or fails the body with [`TrailersRefused`].
    fn pass(&self, frame: Frame<Bytes>) -> Result<Frame<Bytes>, BoxError> {
        if self.refuse_trailers && frame.is_trailers() {
            self.failed(ClientFault::Malformed(TrailersRefused.to_string()));
            return Err(Box::new(TrailersRefused));
        }
        Ok(frame)
    }

    fn failed(&self, fault: ClientFault) {
        if let Some(slot) = &self.fault {
            let _ = slot.set(fault);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.prefix.frames.pop_front() {
            return Poll::Ready(Some(this.pass(frame)));
        }
        if this.prefix.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.failed(ClientFault::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: this.limit }))));
                    }
                    if let Some(Err(why)) = this.prefix.watch.as_mut().map(|w| w.feed(data)) {
                        // This frame is not sent: the server never gets a whole body to run.
                        this.failed(ClientFault::Uncountable(why.clone()));
                        return Poll::Ready(Some(Err(why.into())));
                    }
                }
                Poll::Ready(Some(this.pass(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = ClientBodyError(e);
                this.failed(ClientFault::Malformed(crate::error::chain(&e)));
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.frames.is_empty() && (self.prefix.ended || self.inner.is_end_stream())
    }

    /// The prefix still to send plus what hyper says of the rest (which it counts down as it reads): exact when
    /// the client's length was, so the upstream gets a `Content-Length` body exactly when the client sent one.
    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self
            .prefix
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        if self.prefix.ended {
            return SizeHint::with_exact(queued);
        }
        let rest = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + queued);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + queued);
        }
        hint
    }
}

/// Counts a streaming response in a gauge for as long as it lives.
pub struct StreamCount(Gauge);

impl StreamCount {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        StreamCount(gauge.clone())
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the guard answers with: the upstream's streaming body, or a small body of its own.
pub enum ResponseBody {
    Upstream {
        inner: Incoming,
        _count: StreamCount,
        /// The request's place in its client's caps, held until the response ends.
        _slot: Option<crate::limiter::SlotGuard>,
    },
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream { inner, .. } => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}
