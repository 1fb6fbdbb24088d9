//! Streaming bodies: nothing is collected; frames pass through as hyper decodes them, and hyper encodes them
//! again for the other side.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use mcp_guard_config::Reason;

use crate::metrics::Metrics;

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
pub struct ClientBodyError(#[source] pub BoxError);

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
    /// The body named another call after the guard decided on its prefix (see [`crate::policy::peek::Watch`]).
    Uncountable(String),
}

pub type FaultSlot = Arc<OnceLock<ClientFault>>;

/// A client's request body as hyper (or a test) hands it over, boxed: the request path is generic over the body
/// type and the upstream connections are not.
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// A client's request body on its way to the upstream: the frames [`RequestBody::peek`] read ahead first,
/// unchanged, then the rest. Every frame passes [`RequestBody::admit`], the one place the body is held to
/// `maxRequestBodyBytes`, its framing and what the rate limits charged; a refused frame is never sent.
pub struct RequestBody {
    /// Frames read ahead, to be sent first.
    queued: VecDeque<Frame<Bytes>>,
    /// The body ended within what was read ahead.
    ended: bool,
    inner: ClientBody,
    seen: u64,
    limit: u64,
    fault: Option<FaultSlot>,
    /// Refuse a trailer section ([`TrailersRefused`]): the body is chunked.
    refuse_trailers: bool,
    /// What the rest of the body must not contradict: it is cut (never sent whole) when it does. Boxed: a
    /// request waits in hyper's dispatch channel to its upstream connection, whose first block holds 32 of them
    /// for as long as the connection lives, and few requests are watched.
    watch: Option<Box<crate::policy::peek::Watch>>,
}

impl RequestBody {
    pub fn new<B>(inner: B, limit: u64) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        RequestBody {
            queued: VecDeque::new(),
            ended: false,
            inner: inner.map_err(Into::into).boxed_unsync(),
            seen: 0,
            limit,
            fault: None,
            refuse_trailers: false,
            watch: None,
        }
    }

    /// A chunked body (HTTP/1.1): its trailer section, if it has one, fails the body with [`TrailersRefused`].
    pub fn refusing_trailers(mut self, refuse: bool) -> Self {
        self.refuse_trailers = refuse;
        self
    }

    /// `fault` learns why the body failed as it streams, if it does (a body that is already whole needs none).
    pub fn reporting_to(&mut self, fault: Option<FaultSlot>) {
        self.fault = fault;
    }

    /// Watches the rest of the body (see [`crate::policy::watch`]).
    pub fn watch(&mut self, watch: Option<crate::policy::peek::Watch>) {
        self.watch = watch.map(Box::new);
    }

    /// Whether no frame is left to send.
    pub fn is_done(&self) -> bool {
        self.queued.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    /// Reads ahead until `enough` says so, [`crate::policy::peek::PEEK_LIMIT`] bytes have come, or the body ends,
    /// and returns what was read (the frames are sent first, unchanged). Holds at most one frame past the limit
    /// (hyper's frames are bounded by its read buffer), never the body.
    pub async fn peek(
        &mut self,
        mut enough: impl FnMut(&[u8]) -> bool + Send,
    ) -> Result<ReadAhead, ClientFault> {
        let mut data = ReadData::default();
        while data.len() < crate::policy::peek::PEEK_LIMIT {
            match http_body_util::BodyExt::frame(&mut self.inner).await {
                None => {
                    self.ended = true;
                    break;
                }
                Some(Err(e)) => return Err(ClientFault::Malformed(crate::error::chain(&ClientBodyError(e)))),
                Some(Ok(frame)) => {
                    self.admit(&frame)?;
                    if let Some(d) = frame.data_ref() {
                        data.add(d);
                    }
                    let trailers = frame.is_trailers();
                    self.queued.push_back(frame);
                    if trailers {
                        self.ended = true;
                        break;
                    }
                    if enough(data.bytes()) {
                        break;
                    }
                }
            }
        }
        Ok(ReadAhead {
            data: data.into_bytes(),
            ended: self.ended,
        })
    }

    /// Holds one frame from the client to the limit, the framing and the watch: the one place they are checked,
    /// whether the frame was read ahead or streams.
    fn admit(&mut self, frame: &Frame<Bytes>) -> Result<(), ClientFault> {
        if self.refuse_trailers && frame.is_trailers() {
            return Err(ClientFault::Malformed(TrailersRefused.to_string()));
        }
        let Some(data) = frame.data_ref() else {
            return Ok(());
        };
        self.seen += data.len() as u64;
        if self.seen > self.limit {
            return Err(ClientFault::TooLarge);
        }
        match self.watch.as_mut().map(|w| w.feed(data)) {
            // This frame is not sent: the server never gets a whole body to run.
            Some(Err(why)) => Err(ClientFault::Uncountable(why.clone())),
            _ => Ok(()),
        }
    }

    /// Fails the body: `fault` says why to the request path, the error to the upstream exchange.
    fn fail(&self, fault: ClientFault) -> BoxError {
        let error: BoxError = match &fault {
            ClientFault::TooLarge => Box::new(BodyTooLarge { limit: self.limit }),
            ClientFault::Malformed(why) | ClientFault::Uncountable(why) => why.clone().into(),
        };
        if let Some(slot) = &self.fault {
            let _ = slot.set(fault);
        }
        error
    }
}

/// The data [`RequestBody::peek`] read ahead.
#[derive(Debug, Default)]
pub struct ReadAhead {
    pub data: Bytes,
    /// The body ended within it.
    pub ended: bool,
}

/// The data frames read ahead, joined: the first one as it came (most bodies are one frame: no copy), the
/// following ones copied after it.
#[derive(Default)]
struct ReadData {
    first: Bytes,
    joined: Vec<u8>,
}

impl ReadData {
    fn add(&mut self, data: &Bytes) {
        if self.first.is_empty() && self.joined.is_empty() {
            self.first = data.clone();
            return;
        }
        if self.joined.is_empty() {
            self.joined.extend_from_slice(&std::mem::take(&mut self.first));
        }
        self.joined.extend_from_slice(data);
    }

    fn bytes(&self) -> &[u8] {
        match self.joined.is_empty() {
            true => &self.first,
            false => &self.joined,
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }

    fn into_bytes(self) -> Bytes {
        match self.joined.is_empty() {
            true => self.first,
            false => self.joined.into(),
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
        if let Some(frame) = this.queued.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match this.admit(&frame) {
                Ok(()) => Poll::Ready(Some(Ok(frame))),
                Err(fault) => Poll::Ready(Some(Err(this.fail(fault)))),
            },
            Poll::Ready(Some(Err(e))) => {
                let e = ClientBodyError(e);
                let fault = ClientFault::Malformed(crate::error::chain(&e));
                this.fail(fault);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    /// The frames still queued plus what the client's body says of the rest (hyper counts it down as it reads):
    /// exact when the client's length was, so the upstream gets a `Content-Length` body exactly when the client
    /// sent one.
    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self
            .queued
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        if self.ended {
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

/// Counts a streaming response in `mcp_guard_open_streams` for as long as it lives, and in
/// `mcp_guard_responses_cut_total` when it is cut.
pub struct StreamCount(Arc<Metrics>);

impl StreamCount {
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.open_streams.inc();
        StreamCount(metrics.clone())
    }

    /// The response was cut after its head was sent: by the upstream, or by the guard (an event it cannot filter).
    fn cut(&self, reason: Reason, detail: &str) {
        tracing::warn!(reason = reason.as_str(), detail, "response cut");
        self.0.response_cut(reason);
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.open_streams.dec();
    }
}

/// What the guard answers with: the upstream's streaming body, or a small body of its own.
pub enum ResponseBody {
    Upstream {
        inner: Incoming,
        count: StreamCount,
        /// The request's place in its client's caps, held until the response ends.
        _slot: Option<crate::limiter::SlotGuard>,
        /// The request's audit lines, written when the response ends.
        audit: Option<crate::audit::Ended>,
    },
    /// An event stream with access rules on: filtered as it streams (see
    /// [`crate::policy::lists::EventFilter`]); an event the guard cannot filter ends it.
    Events {
        inner: Incoming,
        events: Box<crate::policy::lists::EventFilter>,
        count: StreamCount,
        _slot: Option<crate::limiter::SlotGuard>,
        /// The request's audit lines, written when the response ends.
        audit: Option<crate::audit::Ended>,
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
            ResponseBody::Upstream { inner, count, .. } => {
                let polled = std::task::ready!(Pin::new(inner).poll_frame(cx));
                if let Some(Err(e)) = &polled {
                    count.cut(Reason::UpstreamUnavailable, &crate::error::chain(e));
                }
                Poll::Ready(polled.map(|r| r.map_err(Into::into)))
            }
            ResponseBody::Events {
                inner,
                events,
                count,
                audit,
                ..
            } => loop {
                let frame = match std::task::ready!(Pin::new(&mut *inner).poll_frame(cx)) {
                    None => {
                        events.finish();
                        return Poll::Ready(None);
                    }
                    Some(Err(e)) => {
                        // An event the upstream did not finish is never sent: the client sees the stream end.
                        count.cut(Reason::UpstreamUnavailable, &crate::error::chain(&e));
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Some(Ok(frame)) => frame,
                };
                let data = match frame.into_data() {
                    Ok(data) => data,
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                };
                let mut out = Vec::new();
                if let Err(why) = events.feed(&data, &mut out) {
                    count.cut(Reason::ListNotFiltered, &why);
                    if let Some(audit) = audit {
                        audit.deny(Reason::ListNotFiltered);
                    }
                    return Poll::Ready(Some(Err(why.into())));
                }
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            },
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { inner, .. } | ResponseBody::Events { inner, .. } => {
                inner.is_end_stream()
            }
            ResponseBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            // Rewritten as it streams: its length is not known.
            ResponseBody::Events { .. } => SizeHint::new(),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Frames read ahead join to the bytes that came, in order, however the body was split (empty frames too).
        #[test]
        fn read_ahead_data_is_the_frames_joined(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..6)) {
            let mut data = ReadData::default();
            let mut expected = Vec::new();
            for frame in &frames {
                data.add(&Bytes::copy_from_slice(frame));
                expected.extend_from_slice(frame);
                prop_assert_eq!(data.bytes(), &expected[..]);
                prop_assert_eq!(data.len(), expected.len());
            }
            prop_assert_eq!(&data.into_bytes()[..], &expected[..]);
        }
    }
}
