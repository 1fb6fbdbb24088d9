//! The guarded listener: accepts clients (HTTP/1.1 and h2c), bounds them, and drains them on shutdown.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use crate::idle::{Activity, Exchanges, IdleIo, Marked, Overdue, Watch};
use crate::pool::Paired;
use crate::proxy::{Peer, Proxy};

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

/// The most header fields hyper's HTTP/1.1 server takes in a request when no limit is set (its
/// `DEFAULT_MAX_HEADERS`); `--max-headers` defaults to it.
pub const HYPER_MAX_HEADERS: usize = 100;

/// The HTTP/1.1 and h2c connection builders with the limits applied.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    pub fn new(limits: &Limits) -> Self {
        let mut h1 = http1::Builder::new();
        // The upstream's Date header passes through; not stamping our own saves a clock read per response.
        // The header read timeout is the connection's watch's (`idle::Watch`), one timer per connection: hyper's
        // arms a timer for every request head (a boxed sleep, clock reads, and the time driver's wake-up writes).
        h1.auto_date_header(false)
            .header_read_timeout(None)
            // A larger head gets hyper's 431; the read buffer stays as small as the head limit allows.
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(8192));
        // hyper's own limit is the default one; set it only when it differs: with a limit set, hyper fills its two
        // header arrays for every request head it parses (about 1,700 instructions a request), without one they
        // stay uninitialised until parsed into. Either way a head with more fields gets 431.
        if limits.max_headers != HYPER_MAX_HEADERS {
            h1.max_headers(limits.max_headers);
        }
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .auto_date_header(false)
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_concurrent_streams(Some(256))
            .max_pending_accept_reset_streams(Some(64));
        Builders { h1, h2 }
    }
}

/// The open connections of a worker that stopped accepting: [`Drain::shutdown`] asks them to finish (idle ones
/// close at once, open exchanges complete) and waits until they have.
pub struct Drain {
    signal: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

impl Drain {
    pub async fn shutdown(mut self) {
        let _ = self.signal.send(true);
        // Every connection task holds a sender; `recv` ends once the last one is gone.
        while self.done.recv().await.is_some() {}
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting and returns the drain handle.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Drain {
    let builders = Arc::new(Builders::new(&limits));
    let (signal, draining) = watch::channel(false);
    let (open, done) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = limits.idle_timeout.map(|t| (Activity::new(), t));
        let proxy = proxy.clone();
        let builders = builders.clone();
        let header_read_timeout = limits.header_read_timeout;
        let mut draining = draining.clone();
        let open = open.clone();
        let task = async move {
            let _open_task = open;
            let _permit = permit;
            let _open = ConnectionCount::new(&proxy.metrics.open_connections);
            let mut stream = stream;
            let preface = match tokio::time::timeout(header_read_timeout, read_preface(&mut stream)).await {
                Ok(Ok(Some(p))) => p,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    debug!(peer = %addr, error = %e, "connection ended before a request");
                    return;
                }
                Err(_) => {
                    debug!(peer = %addr, "no request within the header read timeout");
                    return;
                }
            };
            let h2 = preface.is_h2();
            // HTTP/2 streams have no head to wait for: only HTTP/1.1 connections have their heads timed.
            let exchanges = (!h2).then(Exchanges::default);
            let conn_watch = Watch {
                idle: activity.clone(),
                head: exchanges.clone().map(|e| (e, header_read_timeout)),
            };
            let io = TokioIo::new(Prefixed::new(preface, IdleIo::new(stream, activity.map(|a| a.0))));
            let peer = Arc::new(Peer::new(addr, Paired::new(proxy.pool.clone(), h2)));
            // The request's future is made here, not in the service future: hyper keeps that one's allocation for
            // the connection's lifetime, which is best a few words (see `Proxy::handle`).
            let service = service_fn(move |req| {
                let mark = exchanges.as_ref().map(Exchanges::begin);
                let answer = proxy.clone().handle(req, peer.clone());
                async move { Ok::<_, std::convert::Infallible>(answer.await.map(|body| Marked { body, mark })) }
            });
            let overdue = conn_watch.overdue();
            // Boxed: hyper's connection state is large; inline it would make the task's future larger still.
            let ended = if h2 {
                let conn = Box::pin(builders.h2.serve_connection(io, service));
                drive(conn, |c| c.graceful_shutdown(), &mut draining, overdue).await
            } else {
                let conn = Box::pin(builders.h1.serve_connection(io, service));
                drive(conn, |c| c.graceful_shutdown(), &mut draining, overdue).await
            };
            match ended {
                Ended::Overdue(Overdue::Idle) => debug!(peer = %addr, "idle connection closed"),
                Ended::Overdue(Overdue::Head) => {
                    debug!(peer = %addr, "no request head within the header read timeout")
                }
                Ended::Done(Err(e)) => debug!(peer = %addr, error = %e, "connection ended with an error"),
                Ended::Done(Ok(())) => {}
            }
        };
        tokio::spawn(task);
    }
    info!("stopped accepting connections");
    Drain { signal, done }
}

enum Ended {
    Done(hyper::Result<()>),
    Overdue(Overdue),
}

/// Serves a connection until it ends, its watch finds it overdue, or the worker drains (then what is in flight
/// finishes and no new request is taken).
async fn drive<C: Future<Output = hyper::Result<()>>>(
    mut conn: Pin<Box<C>>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    draining: &mut watch::Receiver<bool>,
    overdue: impl Future<Output = Overdue>,
) -> Ended {
    let drain = drained(draining);
    tokio::pin!(overdue, drain);
    // hyper's connection wakes the task several times a request; the watch and the drain signal are polled only
    // when they woke it themselves.
    let mut overdue = Quiet::new(overdue);
    let mut drain = Quiet::new(drain);
    tokio::select! {
        biased;
        r = conn.as_mut() => Ended::Done(r),
        () = &mut drain => {
            graceful_shutdown(conn.as_mut());
            tokio::select! {
                biased;
                r = conn.as_mut() => Ended::Done(r),
                why = &mut overdue => Ended::Overdue(why),
            }
        }
        why = &mut overdue => Ended::Overdue(why),
    }
}

/// A future polled only once it has woken its task (and at its first poll), not at every wake-up of the task
/// it shares with others.
struct Quiet<'a, F> {
    inner: Pin<&'a mut F>,
    woken: Arc<Woken>,
    /// The task's waker as last given to `woken`: given again only when the task's differs. A task's waker is the
    /// same at every poll, so most polls cost a comparison and a load, no atomic read-modify-write.
    given: Option<Waker>,
}

/// Set when the inner future's waker was woken; wakes the task (whose waker it keeps, to wake it again).
struct Woken {
    set: AtomicBool,
    task: std::sync::Mutex<Option<Waker>>,
}

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set.store(true, Ordering::Release);
        // Set first: the task, once woken, finds it. A poisoned lock still holds the waker.
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<'a, F: Future> Quiet<'a, F> {
    fn new(inner: Pin<&'a mut F>) -> Self {
        Quiet {
            inner,
            woken: Arc::new(Woken {
                set: AtomicBool::new(true),
                task: std::sync::Mutex::new(None),
            }),
            given: None,
        }
    }
}

impl<F: Future> Future for Quiet<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.given.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            *self.woken.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
            self.given = Some(waker);
        }
        if !self.woken.set.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // A wake-up between the load and this store is not lost: the inner future, polled next, sees its cause.
        self.woken.set.store(false, Ordering::Release);
        let waker = Waker::from(self.woken.clone());
        self.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// Resolves once the worker starts draining.
pub async fn drained(drain: &mut watch::Receiver<bool>) {
    while !*drain.borrow_and_update() {
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first bytes of a connection, read to tell h2c (the HTTP/2 connection preface) from HTTP/1.1; they are
/// handed to hyper first, as if unread.
pub struct Preface {
    buf: [u8; H2_PREFACE.len()],
    len: usize,
}

impl Preface {
    pub fn is_h2(&self) -> bool {
        self.buf[..self.len] == *H2_PREFACE
    }
}

/// Reads until the bytes so far tell the protocol: they stop matching the h2 preface (HTTP/1.1), or all of it has
/// arrived (h2c). `None`: the client closed before sending anything. Each read waits for the socket.
pub async fn read_preface<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<Option<Preface>> {
    let mut p = Preface {
        buf: [0; H2_PREFACE.len()],
        len: 0,
    };
    while p.len < H2_PREFACE.len() {
        let n = stream.read(&mut p.buf[p.len..]).await?;
        if n == 0 {
            return Ok((p.len > 0).then_some(p));
        }
        p.len += n;
        if p.buf[..p.len] != H2_PREFACE[..p.len] {
            break;
        }
    }
    Ok(Some(p))
}

/// An I/O stream that first yields the bytes [`read_preface`] took from it.
pub struct Prefixed<T> {
    preface: Preface,
    pos: usize,
    /// An error the inner stream returned in the read that also yielded the preface's last bytes: the next read's.
    error: Option<std::io::Error>,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(preface: Preface, inner: T) -> Self {
        Prefixed {
            preface,
            pos: 0,
            error: None,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        let rest = &this.preface.buf[this.pos..this.preface.len];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        // The same read also takes what else has arrived: hyper sizes its read buffer by its first reads, and a
        // short one (the preface alone) made it double the buffer, which a connection then kept for its lifetime
        // (16 KiB instead of 8 per open SSE stream). Pending only means nothing more has arrived yet.
        if this.pos == this.preface.len
            && buf.remaining() > 0
            && let Poll::Ready(Err(e)) = Pin::new(&mut this.inner).poll_read(cx, buf)
        {
            this.error = Some(e);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

struct ConnectionCount(prometheus_client::metrics::gauge::Gauge);

impl ConnectionCount {
    fn new(g: &prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        ConnectionCount(g.clone())
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Sends `pieces` apart, then closes; what the guard's side makes of them, and every byte it then reads.
    async fn sniff(pieces: &[&'static [u8]]) -> Option<(bool, Vec<u8>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pieces = pieces.to_vec();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for p in pieces {
                c.write_all(p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(c);
        });
        let (mut s, _) = listener.accept().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), read_preface(&mut s))
            .await
            .unwrap()
            .unwrap();
        client.await.unwrap();
        let preface = got?;
        let h2 = preface.is_h2();
        // Nothing is lost: the prefixed stream yields every byte the client sent.
        let mut all = Vec::new();
        Prefixed::new(preface, s).read_to_end(&mut all).await.unwrap();
        Some((h2, all))
    }

    #[tokio::test]
    async fn tells_h2c_from_http1_and_loses_no_byte() {
        let get = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(sniff(&[get]).await, Some((false, get.to_vec())));
        assert_eq!(sniff(&[b"G"]).await, Some((false, b"G".to_vec())));
        assert_eq!(sniff(&[H2_PREFACE]).await, Some((true, H2_PREFACE.to_vec())));
        assert_eq!(
            sniff(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n", b"frames"]).await,
            Some((true, [H2_PREFACE, b"frames"].concat()))
        );
        assert_eq!(
            sniff(&[b"PRI * HTTP/2.0\r\n", b"\r\nXX"]).await,
            Some((false, b"PRI * HTTP/2.0\r\n\r\nXX".to_vec()))
        );
        // A partial preface then silence: the connection ends, no spinning in between.
        assert_eq!(sniff(&[b"PRI * HT"]).await, Some((false, b"PRI * HT".to_vec())));
        assert_eq!(sniff(&[]).await, None);
    }

    /// hyper's first read of a connection gets the preface and whatever else has arrived, as one read would have
    /// without the preface taken: a short first read made hyper double its read buffer for the connection.
    #[tokio::test]
    async fn the_first_read_yields_the_preface_and_what_followed() {
        let request = b"GET /sse HTTP/1.1\r\nhost: a\r\naccept: text/event-stream\r\n\r\n";
        let mut client = &request[..];
        let preface = read_preface(&mut client).await.unwrap().unwrap();
        assert!(!preface.is_h2());
        assert!(client.len() < request.len(), "the preface took bytes");
        let mut io = Prefixed::new(preface, client);
        let mut buf = [0u8; 8192];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], request, "one read, all of it");

        // Nothing more arrived yet: the preface alone, at once (not Pending).
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut server = server;
        let preface = read_preface(&mut server).await.unwrap().unwrap();
        let mut io = Prefixed::new(preface, server);
        let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n");
        client.write_all(b"host: a\r\n\r\n").await.unwrap();
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"host: a\r\n\r\n");
    }

    /// The idle watch and the drain signal beside hyper's connection: not polled when the connection's events wake
    /// the task, polled when they woke it themselves.
    #[tokio::test]
    async fn a_quiet_future_is_polled_only_after_it_woke_the_task() {
        let polls = std::sync::atomic::AtomicUsize::new(0);
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let inner = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut rx).poll(cx).map(|_| ())
        });
        tokio::pin!(inner);
        let mut quiet = Quiet::new(inner);
        // Another future of the same task wakes it 20 times.
        let mut busy = Box::pin(async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        });
        tokio::select! {
            biased;
            () = &mut quiet => panic!("nothing woke it"),
            () = &mut busy => {}
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once, at first");
        tx.send(()).unwrap();
        quiet.await;
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "and once more after its own wake-up"
        );
    }

    /// A quiet future polled by another task (another waker) wakes that one, and keeps waking its task after the
    /// first wake-up, not only once.
    #[test]
    fn a_quiet_future_wakes_the_task_that_polled_it_last_every_time() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (a, b) = (
            Arc::new(Count(Default::default())),
            Arc::new(Count(Default::default())),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let inner_waker: std::sync::Mutex<Option<Waker>> = Default::default();
        let fired = AtomicBool::new(false);
        let inner = std::future::poll_fn(|cx| {
            *inner_waker.lock().unwrap() = Some(cx.waker().clone());
            match fired.swap(false, Ordering::SeqCst) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        });
        let mut inner = std::pin::pin!(inner);
        let mut quiet = Quiet::new(inner.as_mut());
        let fire = || {
            fired.store(true, Ordering::SeqCst);
            inner_waker.lock().unwrap().as_ref().unwrap().wake_by_ref();
        };
        assert!(
            Pin::new(&mut quiet)
                .poll(&mut Context::from_waker(&wa))
                .is_pending()
        );
        assert!(
            Pin::new(&mut quiet)
                .poll(&mut Context::from_waker(&wb))
                .is_pending()
        );
        // Pending, so its inner future made a waker: firing it wakes the task that polled last.
        fired.store(false, Ordering::SeqCst);
        inner_waker.lock().unwrap().as_ref().unwrap().wake_by_ref();
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (0, 1));
        // Woken but not ready (a spurious wake-up): polled, pending again; the next wake-up still reaches the task.
        assert!(
            Pin::new(&mut quiet)
                .poll(&mut Context::from_waker(&wb))
                .is_pending()
        );
        fire();
        assert_eq!(b.0.load(Ordering::SeqCst), 2);
        assert!(
            Pin::new(&mut quiet)
                .poll(&mut Context::from_waker(&wb))
                .is_ready()
        );
    }

    /// How a scripted client's bytes arrive: in pieces, with waits between, and possibly ending in an error.
    #[derive(Clone, Debug)]
    enum Arrival {
        Bytes(Vec<u8>),
        Wait,
        Fail,
    }

    struct Scripted(std::collections::VecDeque<Arrival>);

    impl AsyncRead for Scripted {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let script = &mut self.get_mut().0;
            match script.pop_front() {
                None => Poll::Ready(Ok(())),
                Some(Arrival::Wait) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Arrival::Fail) => Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into())),
                Some(Arrival::Bytes(mut b)) => {
                    let n = b.len().min(buf.remaining());
                    buf.put_slice(&b[..n]);
                    if n < b.len() {
                        script.push_front(Arrival::Bytes(b.split_off(n)));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    fn arrival() -> impl proptest::strategy::Strategy<Value = Arrival> {
        use proptest::prelude::*;
        // Bytes that often start like the h2 preface, so both protocols and every split within it come up.
        let preface_part = (1..=H2_PREFACE.len()).prop_map(|n| H2_PREFACE[..n].to_vec());
        let bytes = prop_oneof![preface_part, proptest::collection::vec(any::<u8>(), 1..40)];
        prop_oneof![6 => bytes.prop_map(Arrival::Bytes), 2 => Just(Arrival::Wait), 1 => Just(Arrival::Fail)]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever way a client's bytes arrive and whatever the reader's buffer: the sniff plus [`Prefixed`] yield
        /// exactly the bytes sent, in order, then the stream's error if it had one; h2c is told only from a whole
        /// preface.
        #[test]
        fn the_sniffed_stream_is_the_stream_sent(
            script in proptest::collection::vec(arrival(), 0..12),
            reads in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let sent: Vec<u8> = script
                .iter()
                .take_while(|a| !matches!(a, Arrival::Fail))
                .flat_map(|a| match a { Arrival::Bytes(b) => b.clone(), _ => Vec::new() })
                .collect();
            let fails = script.iter().any(|a| matches!(a, Arrival::Fail));
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (got, error, h2) = rt.block_on(async {
                let mut stream = Scripted(script.into_iter().collect());
                let preface = match read_preface(&mut stream).await {
                    Ok(Some(p)) => p,
                    Ok(None) => return (Vec::new(), false, None),
                    Err(_) => return (Vec::new(), true, None),
                };
                let h2 = preface.is_h2();
                let mut io = Prefixed::new(preface, stream);
                let mut got = Vec::new();
                for size in reads.iter().cycle() {
                    let mut buf = vec![0u8; *size];
                    match io.read(&mut buf).await {
                        Ok(0) => return (got, false, Some(h2)),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(_) => return (got, true, Some(h2)),
                    }
                }
                unreachable!()
            });
            match h2 {
                // The sniff itself failed or saw nothing: nothing was handed on.
                None => proptest::prop_assert!(error == fails && (error || sent.is_empty())),
                Some(h2) => {
                    proptest::prop_assert_eq!(&got, &sent);
                    proptest::prop_assert_eq!(error, fails);
                    proptest::prop_assert_eq!(h2, sent.starts_with(H2_PREFACE));
                }
            }
        }
    }

    /// An error the stream reports in the read that completed the preface is not lost: the next read returns it.
    #[tokio::test]
    async fn an_error_after_the_preface_comes_with_the_next_read() {
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
            }
        }
        let preface = read_preface(&mut &b"GET"[..]).await.unwrap().unwrap();
        let mut io = Prefixed::new(preface, Failing);
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        assert_eq!(&buf[..3], b"GET");
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    }
}
