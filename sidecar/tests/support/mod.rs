//! Test support: a small hyper upstream on 127.0.0.1, the real `mcp-guard` binary, and raw HTTP helpers.
#![allow(dead_code, clippy::unwrap_used)]

pub mod wire;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A small MCP-ish upstream: `/sse?n=N&ms=M` streams N events M ms apart; `/upload` counts the body; anything
/// else echoes method, path, version and headers as JSON.
pub struct TestUpstream {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Connections accepted so far.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TestUpstream {
    pub async fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut stopped_accept = stopped.clone();
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => r.unwrap(),
                    _ = stopped_accept.changed() => return,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let conn = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .into_owned();
                    tokio::select! {
                        _ = conn => {},
                        _ = stopped.changed() => {},
                    }
                });
            }
        });
        TestUpstream { addr, stop, accepted }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes every open connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match req.uri().path() {
        "/sse" => {
            let n = query_param(&req, "n").unwrap_or(3);
            let ms = query_param(&req, "ms").unwrap_or(200);
            let events = futures::stream::unfold(0u64, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let ev = format!("id: {i}\nevent: message\ndata: {{\"n\":{i}}}\n\n");
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(ev))), i + 1))
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(events)));
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            resp.headers_mut()
                .insert("cache-control", "no-cache".parse().unwrap());
            resp.headers_mut()
                .insert("mcp-session-id", "session-1".parse().unwrap());
            Ok(resp)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                    Err(_) => break,
                }
            }
            Ok(Response::new(full(format!("{{\"bytes\":{n}}}"))))
        }
        _ => {
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                let entry = headers
                    .entry(k.as_str())
                    .or_insert_with(|| serde_json::Value::Array(vec![]));
                if let serde_json::Value::Array(a) = entry {
                    a.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
                }
            }
            let echo = serde_json::json!({
                "method": req.method().as_str(),
                "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            let mut resp = Response::new(full(echo.to_string()));
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            resp.headers_mut()
                .insert("mcp-session-id", "session-1".parse().unwrap());
            resp.headers_mut().insert("connection", "x-hop".parse().unwrap());
            resp.headers_mut().insert("x-hop", "1".parse().unwrap());
            Ok(resp)
        }
    }
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `mcp-guard` binary, killed on drop.
pub struct Guard {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// What `Guard::start` waits for.
#[derive(Clone, Copy)]
enum Ready {
    Yes,
    AllButUpstream,
    /// Serving, and `/readyz` answers 503 saying this.
    NotReadyBecause(&'static str),
}

impl Guard {
    /// Starts the guard with `--listen`, `--admin-listen` and the given arguments; waits until ready. A port that
    /// `free_port` handed out twice (to this guard and to another test's) makes the guard exit with `cannot
    /// listen on`: then again on other ports.
    pub async fn start(args: &[&str]) -> Guard {
        Self::start_until(args, Ready::Yes, false).await
    }

    /// Starts the guard as [`Guard::start`] does, its stdout (the audit log) a pipe: `child.stdout`.
    pub async fn start_piped(args: &[&str]) -> Guard {
        Self::start_until(args, Ready::Yes, true).await
    }

    /// Starts the guard in front of an upstream that does not listen (yet): waits until the guard serves and
    /// `/readyz` says that only the upstream is missing.
    pub async fn start_without_upstream(args: &[&str]) -> Guard {
        Self::start_until(args, Ready::AllButUpstream, false).await
    }

    /// Starts the guard and waits until it serves while `/readyz` answers 503 with a body that contains `why`.
    pub async fn start_not_ready(args: &[&str], why: &'static str) -> Guard {
        Self::start_until(args, Ready::NotReadyBecause(why), false).await
    }

    async fn start_until(args: &[&str], ready: Ready, piped: bool) -> Guard {
        for _ in 0..2 {
            if let Some(guard) = Self::try_start(args, ready, piped).await {
                return guard;
            }
        }
        Self::try_start(args, ready, piped)
            .await
            .expect("mcp-guard could not bind its ports")
    }

    /// `None`: the guard could not bind its ports.
    async fn try_start(args: &[&str], ready: Ready, piped: bool) -> Option<Guard> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("guard.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mcp-guard"))
            .args([
                "--listen",
                &addr.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .args(args)
            .env_remove("MCP_GUARD_ALLOW_HOSTS")
            .stdout(if piped { Stdio::piped() } else { Stdio::null() })
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut guard = Guard {
            child,
            addr,
            admin,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = guard.child.try_wait().unwrap() {
                if guard.logs().contains("cannot listen on") {
                    return None;
                }
                panic!("mcp-guard exited early ({status}):\n{}", guard.logs());
            }
            if let Ok(r) = get(admin, "/readyz").await {
                let done = match ready {
                    Ready::Yes => r.status == 200,
                    Ready::AllButUpstream => {
                        r.status == 503 && r.body.contains("does not accept connections")
                    }
                    Ready::NotReadyBecause(why) => r.status == 503 && r.body.contains(why),
                };
                if done {
                    return Some(guard);
                }
            }
            assert!(
                Instant::now() < deadline,
                "mcp-guard not ready:\n{}",
                guard.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let body = get(self.admin, "/metrics").await.unwrap().body;
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for start-up failures).
pub fn run_to_exit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcp-guard"))
        .args(args)
        .env_remove("MCP_GUARD_ALLOW_HOSTS")
        .output()
        .unwrap()
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends raw bytes (a whole HTTP/1.1 request, which should say `Connection: close`) and reads to EOF.
pub async fn raw(addr: SocketAddr, request: &str) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout reading response"))??;
    Ok(parse_response(&buf))
}

pub fn parse_response(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// A simple GET with a Host of `localhost`.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<RawResponse> {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A GET with the given extra header lines (each `Name: value`).
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> RawResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    raw(addr, &req).await.unwrap()
}

/// Writes a kubelet-style ConfigMap volume: `<dir>/..<ts>/guard.json`, `..data -> ..<ts>`,
/// `guard.json -> ..data/guard.json`; a later call swaps `..data` atomically, like kubelet.
pub fn write_configmap(dir: &Path, generation: u32, content: &str) {
    let ts = dir.join(format!("..2026_11_21_{generation:04}"));
    std::fs::create_dir_all(&ts).unwrap();
    std::fs::write(ts.join("guard.json"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(ts.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("guard.json");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/guard.json", &link).unwrap();
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens an SSE stream of the test upstream through `addr` (`/sse?` + `query`, Host `mcp.example.com`) and waits
/// until its first event arrived.
pub async fn open_sse(addr: SocketAddr, query: &str) -> TcpStream {
    open_sse_as(addr, "mcp.example.com", query).await
}

/// [`open_sse`] with another Host.
pub async fn open_sse_as(addr: SocketAddr, host: &str, query: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /sse?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(
        !read_stream(&mut s, "data: {\"n\":0}", Duration::from_secs(3))
            .await
            .is_empty()
    );
    s
}

/// Reads an open SSE response from a raw stream, returning each chunk with the time it arrived.
pub async fn read_stream(s: &mut TcpStream, until: &str, timeout: Duration) -> Vec<(Duration, String)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    while !all.contains(until) && start.elapsed() < timeout {
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                all.push_str(&chunk);
                got.push((start.elapsed(), chunk));
            }
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    got
}

pub fn stream_body<S>(s: S) -> Body
where
    S: futures::Stream<Item = Bytes> + Send + Sync + 'static,
{
    BodyExt::boxed(StreamBody::new(s.map(|b| Ok::<_, Infallible>(Frame::data(b)))))
}
