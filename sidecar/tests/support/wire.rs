//! HTTP/1.x over raw sockets for the guard's black-box tests: a client and upstream side that read messages off
//! the wire (the test's own reading, which hyper's inside the guard is held to), and scripted upstreams.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(5);
pub const HOST: &str = "mcp.example.com";

/// One HTTP/1.x message as read off the wire.
pub struct Msg {
    /// The request line or the status line.
    pub start: String,
    /// Lower-cased names, trimmed values, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(600).collect();
        f.debug_struct("Msg")
            .field("start", &self.start)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body", &shown)
            .finish()
    }
}

impl Msg {
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_chunked(&self) -> bool {
        is_chunked(&self.headers)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

pub fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
}

pub fn content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `pieces` one at a time, 30 ms apart, so that they arrive in separate reads; stops if the peer is gone.
pub async fn send_slowly(w: &mut Wire, pieces: impl IntoIterator<Item = String>) {
    for p in pieces {
        if w.send(p).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

pub fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A raw TCP connection with a read buffer that reads HTTP/1.x messages; every read is bounded by `timeout`
/// (none on the upstream side, where the guard's pooled connections may sit idle).
pub struct Wire {
    pub r: OwnedReadHalf,
    pub w: Option<OwnedWriteHalf>,
    pub buf: Vec<u8>,
    pub timeout: Option<Duration>,
}

impl Wire {
    pub fn new(s: TcpStream, timeout: Option<Duration>) -> Wire {
        let (r, w) = s.into_split();
        Wire {
            r,
            w: Some(w),
            buf: Vec::new(),
            timeout,
        }
    }

    pub async fn connect(addr: std::net::SocketAddr) -> Wire {
        Wire::new(TcpStream::connect(addr).await.unwrap(), Some(WAIT))
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.w.as_mut().unwrap().write_all(bytes.as_ref()).await
    }

    /// Reads more bytes into the buffer; `Ok(0)` at EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = match self.timeout {
            Some(t) => tokio::time::timeout(t, self.r.read(&mut chunk))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("nothing read for {t:?}")))??,
            None => self.r.read(&mut chunk).await?,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    pub async fn fill_or_eof_error(&mut self, what: &str) -> io::Result<()> {
        if self.fill().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "EOF before {what}; unread: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            ));
        }
        Ok(())
    }

    /// Reads a message head: the start line and the header fields.
    pub async fn head(&mut self) -> io::Result<(String, Vec<(String, String)>)> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                let mut lines = text.split("\r\n");
                let start = lines.next().unwrap_or("").to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                return Ok((start, headers));
            }
            self.fill_or_eof_error("a complete head").await?;
        }
    }

    pub async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill_or_eof_error(&format!("{n} body bytes")).await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    pub async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&l[..i]).into_owned());
            }
            self.fill_or_eof_error("a line").await?;
        }
    }

    /// Decodes a chunked body (extensions ignored), consuming the trailer section.
    pub async fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line().await?;
            let hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|e| bad_data(format!("bad chunk size line {size_line:?}: {e}")))?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exact(size).await?);
            let crlf = self.exact(2).await?;
            if crlf != b"\r\n" {
                return Err(bad_data(format!("chunk not followed by CRLF: {crlf:?}")));
            }
        }
    }

    /// Reads until the peer closes; the bytes read.
    pub async fn until_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? != 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads one response; 1xx, 204, 304 and responses to HEAD (`head_request`) have no body; a response
    /// framed by neither Content-Length nor chunked runs to EOF.
    pub async fn response(&mut self, head_request: bool) -> io::Result<Msg> {
        let (start, headers) = self.head().await?;
        let status: u16 = start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = if head_request || status / 100 == 1 || status == 204 || status == 304 {
            Vec::new()
        } else if is_chunked(&headers) {
            self.chunked().await?
        } else if let Some(n) = content_length(&headers) {
            self.exact(n).await?
        } else {
            self.until_eof().await?
        };
        Ok(Msg { start, headers, body })
    }

    /// Reads one request (as an upstream does): chunked, Content-Length, or no body.
    pub async fn request(&mut self) -> io::Result<Msg> {
        let (start, headers) = self.head().await?;
        let body = self.request_body(&headers).await?;
        Ok(Msg { start, headers, body })
    }

    pub async fn request_body(&mut self, headers: &[(String, String)]) -> io::Result<Vec<u8>> {
        if is_chunked(headers) {
            self.chunked().await
        } else if let Some(n) = content_length(headers) {
            self.exact(n).await
        } else {
            Ok(Vec::new())
        }
    }

    /// True when the peer closes the connection (EOF or reset) within 5 s, sending nothing more.
    pub async fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(WAIT, self.r.read(&mut chunk)).await {
            Ok(Ok(0)) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Ok(Err(e)) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
            ),
            Err(_) => false,
        }
    }
}

/// A scripted upstream on 127.0.0.1: `handler` gets every accepted connection.
pub async fn raw_upstream<F, Fut>(handler: F) -> String
where
    F: Fn(Wire) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let h = handler.clone();
            tokio::spawn(async move { h(Wire::new(s, None)).await });
        }
    });
    format!("http://{addr}")
}

/// What a recording upstream saw: every request line as soon as its head arrived, and every complete request.
#[derive(Default)]
pub struct Seen {
    pub heads: Vec<String>,
    pub requests: Vec<Msg>,
}

/// A keep-alive upstream that records requests (heads and bodies) and answers each with `200 ok`.
pub async fn recording_upstream() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    let url = raw_upstream(move |mut w| {
        let seen = record.clone();
        async move {
            loop {
                let Ok((start, headers)) = w.head().await else {
                    return;
                };
                seen.lock().unwrap().heads.push(start.clone());
                let Ok(body) = w.request_body(&headers).await else {
                    return;
                };
                seen.lock().unwrap().requests.push(Msg { start, headers, body });
                let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
                if w.send(ok).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (url, seen)
}

pub fn assert_rejection(r: &Msg, status: u16, reason: &str) {
    assert_eq!(r.status(), status, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let v = r.json();
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert!(v["id"].is_null(), "{v}");
    assert_eq!(v["error"]["data"]["reason"], reason, "{v}");
}

/// What hyper answers bytes it cannot parse as a request: its own plain `400`/`431` with no body, then it closes.
pub async fn assert_library_refusal(c: &mut Wire, status: u16, what: &str) {
    let r = c.response(false).await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status(), status, "{what}: {r:?}");
    assert!(r.body.is_empty(), "{what}: {r:?}");
    assert!(c.closed().await, "{what}: connection closed after {status}");
}
