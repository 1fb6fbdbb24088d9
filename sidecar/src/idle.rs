//! Idle detection for client connections: a connection with no bytes moving either way for the idle timeout is
//! closed. Not a total deadline: a stream that keeps sending (SSE events, keep-alive comments) lives on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts I/O on a connection; the idle watcher compares samples, so the hot path never reads a clock.
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

    /// Resolves once no byte has moved for at least `timeout` (and at most 1.5 × `timeout`).
    pub async fn idle(&self, timeout: Duration) {
        let step = (timeout / 2).max(Duration::from_millis(1));
        let mut last = self.ops.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(step).await;
            let now = self.ops.load(Ordering::Relaxed);
            if now == last {
                quiet += step;
                if quiet >= timeout {
                    return;
                }
            } else {
                last = now;
                quiet = Duration::ZERO;
            }
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
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
