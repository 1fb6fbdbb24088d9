//! Streaming bodies: nothing is collected; frames pass through as hyper decodes them, and hyper encodes them
//! again for the other side.

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

/// What went wrong with a client's body, as the body saw it: the upstream client reports the failed exchange in
/// its own terms (an h2 stream reset, say), so the body also says so here.
#[derive(Debug)]
pub enum ClientFault {
    TooLarge,
    Malformed(String),
}

pub type FaultSlot = Arc<OnceLock<ClientFault>>;

/// A client's request body on its way to the upstream, cut off with [`BodyTooLarge`] past the limit.
pub struct RequestBody {
    inner: Incoming,
    seen: u64,
    limit: u64,
    fault: Option<FaultSlot>,
}

impl RequestBody {
    /// `fault` learns why the body failed, if it does (a body that is already complete needs none).
    pub fn new(inner: Incoming, limit: u64, fault: Option<FaultSlot>) -> Self {
        RequestBody {
            inner,
            seen: 0,
            limit,
            fault,
        }
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.failed(ClientFault::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: this.limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
    Upstream { inner: Incoming, _count: StreamCount },
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
