//! A client connection's watch, one timer per connection: closed when no byte has moved either way for the idle
//! timeout, or when an HTTP/1.1 connection has waited longer than the header read timeout for a request head.
//! The request path only counts (bytes moved, exchanges begun and ended); the watch samples the counts, so no
//! request reads a clock or arms a timer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts I/O on a connection; the idle watch compares samples, so the hot path never reads a clock.
#[derive(Clone)]
pub struct Activity {
    ops: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            ops: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn touch(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// The exchanges of an HTTP/1.1 connection, begun (a request head parsed) and ended (the response's body
/// dropped: sent, or given up). While every one begun has ended, the connection is waiting for a request head.
#[derive(Clone, Default)]
pub struct Exchanges(Arc<ExchangeCounts>);

#[derive(Default)]
struct ExchangeCounts {
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Exchanges {
    /// A request head arrived: the exchange lasts until the returned mark is dropped.
    pub fn begin(&self) -> ExchangeMark {
        self.0.begun.fetch_add(1, Ordering::Relaxed);
        ExchangeMark(self.0.clone())
    }

    /// `Some(n)` while the connection waits for its next head (`n` exchanges so far), `None` during an exchange.
    fn waiting(&self) -> Option<u64> {
        let ended = self.0.ended.load(Ordering::Relaxed);
        let begun = self.0.begun.load(Ordering::Relaxed);
        (begun == ended).then_some(begun)
    }
}

/// Ends its exchange when dropped.
pub struct ExchangeMark(Arc<ExchangeCounts>);

impl Drop for ExchangeMark {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that ends its exchange when hyper drops it.
pub struct Marked<B> {
    pub body: B,
    pub mark: Option<ExchangeMark>,
}

impl<B: Body + Unpin> Body for Marked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a connection's watch closed it.
#[derive(Debug, PartialEq, Eq)]
pub enum Overdue {
    /// No byte moved either way for the idle timeout.
    Idle,
    /// An HTTP/1.1 connection waited for a request head longer than the header read timeout.
    Head,
}

/// What a connection's watch samples, and for how long each may stay unchanged.
pub struct Watch {
    pub idle: Option<(Activity, Duration)>,
    pub head: Option<(Exchanges, Duration)>,
}

impl Watch {
    /// Resolves once the connection is overdue: idle for at least its timeout, or waiting for a request head for at
    /// least its timeout (each at most 1.5 × its timeout). One timer, woken every half of the shorter timeout.
    pub async fn overdue(self) -> Overdue {
        let timeouts = [self.idle.as_ref().map(|i| i.1), self.head.as_ref().map(|h| h.1)];
        let Some(shortest) = timeouts.into_iter().flatten().min() else {
            return std::future::pending().await;
        };
        let step = (shortest / 2).max(Duration::from_millis(1));
        let mut idle = self
            .idle
            .map(|(a, t)| (Steady::new(Some(a.ops.load(Ordering::Relaxed))), a, t));
        let mut head = self.head.map(|(e, t)| (Steady::new(e.waiting()), e, t));
        loop {
            tokio::time::sleep(step).await;
            if let Some((steady, activity, timeout)) = &mut idle
                && steady.sample(Some(activity.ops.load(Ordering::Relaxed)), step) >= *timeout
            {
                return Overdue::Idle;
            }
            if let Some((steady, exchanges, timeout)) = &mut head
                && steady.sample(exchanges.waiting(), step) >= *timeout
            {
                return Overdue::Head;
            }
        }
    }
}

/// How long a sampled count has stayed the same `Some` value; `None` (not waiting) or a new value starts over.
struct Steady {
    last: Option<u64>,
    quiet: Duration,
}

impl Steady {
    fn new(first: Option<u64>) -> Self {
        Steady {
            last: first,
            quiet: Duration::ZERO,
        }
    }

    /// Takes a sample `step` after the last one; returns how long the value has held.
    fn sample(&mut self, now: Option<u64>, step: Duration) -> Duration {
        if now.is_some() && now == self.last {
            self.quiet += step;
        } else {
            self.quiet = Duration::ZERO;
        }
        self.last = now;
        self.quiet
    }
}

/// An I/O stream that records activity.
pub struct IdleIo<T> {
    inner: T,
    activity: Option<Activity>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, activity: Option<Activity>) -> Self {
        IdleIo { inner, activity }
    }

    fn touch(&self) {
        if let Some(a) = &self.activity {
            a.touch();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_secs(5);

    #[test]
    fn a_count_is_steady_while_it_keeps_one_value_and_starts_over_when_it_changes_or_stops_waiting() {
        let mut s = Steady::new(Some(0));
        assert_eq!(s.sample(Some(0), STEP), STEP);
        assert_eq!(s.sample(Some(0), STEP), 2 * STEP);
        // Something moved since: the quiet time starts over at this sample.
        assert_eq!(s.sample(Some(1), STEP), Duration::ZERO);
        assert_eq!(s.sample(Some(1), STEP), STEP);
        // Not waiting (an exchange open) never counts, however long it lasts.
        for _ in 0..10 {
            assert_eq!(s.sample(None, STEP), Duration::ZERO);
        }
        // Waiting again, with the same count as before the exchange could not be: a new value starts over.
        assert_eq!(s.sample(Some(2), STEP), Duration::ZERO);
        assert_eq!(s.sample(Some(2), STEP), STEP);
    }

    #[test]
    fn a_connection_waits_for_a_head_only_while_no_exchange_is_open() {
        let e = Exchanges::default();
        assert_eq!(e.waiting(), Some(0), "a new connection waits for its first head");
        let first = e.begin();
        assert_eq!(
            e.waiting(),
            None,
            "the response (a stream, say) is not waiting for a head"
        );
        drop(first);
        assert_eq!(e.waiting(), Some(1));
        // One exchange begun and ended between two samples still moves the count: the wait starts over.
        drop(e.begin());
        assert_eq!(e.waiting(), Some(2));
    }

    #[test]
    fn a_marked_body_ends_its_exchange_when_dropped_and_passes_frames_through() {
        use http_body_util::BodyExt;
        let e = Exchanges::default();
        let body = Marked {
            body: http_body_util::Full::new(bytes::Bytes::from_static(b"hello")),
            mark: Some(e.begin()),
        };
        assert_eq!(body.size_hint().exact(), Some(5));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(async {
            let mut body = body;
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(e.waiting(), None, "still open while hyper holds the body");
            drop(body);
            frame.into_data().unwrap()
        });
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(e.waiting(), Some(1));
    }
}
