//! Test support of the guard's tests: a small hyper upstream on 127.0.0.1 and the guard binary of this crate.
//! The helpers every test shares (polling, ports, the raw HTTP/1 client, the guard launcher) are the
//! `test-support` crate's, re-exported here.
// Each test binary uses a part of this module.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub mod wire;

pub use test_support::guard::{Guard, Launch, Ready};
pub use test_support::http1::{Response as RawResponse, get, get_with, raw};
pub use test_support::process::Signal;
pub use test_support::{eventually, eventually_or, free_port};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
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

/// This crate's guard, to start as [`Launch`] says (never a stale build: cargo names the binary it built).
pub fn mcp_guard(args: &[&str]) -> Launch {
    Launch::new(env!("CARGO_BIN_EXE_mcp-guard"), args.iter().copied())
}

/// Starts this crate's guard with `--listen`, `--admin-listen` and `args`, and waits until it is ready.
pub async fn start_guard(args: &[&str]) -> Guard {
    mcp_guard(args)
        .start()
        .await
        .unwrap_or_else(|e| panic!("mcp-guard {args:?}: {e:#}"))
}

/// Runs the binary to completion (for start-up failures).
pub fn run_to_exit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcp-guard"))
        .args(args)
        .env_remove("MCP_GUARD_ALLOW_HOSTS")
        .output()
        .unwrap()
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
