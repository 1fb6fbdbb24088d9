//! HTTP/1.x over raw sockets, for tests that must send exactly the bytes they mean (forged, duplicated or
//! malformed Host and Origin headers, smuggling attempts), which real clients refuse to do.
//!
//! [`Wire`] is the one reader of HTTP/1 messages in the tests: a buffer over a connection that reads a head, a
//! `Content-Length` or chunked body, or everything to EOF. The guard's black-box tests hold hyper (inside the
//! guard) to it; the one-shot clients ([`raw`], and [`blocking::raw`] for tests without a runtime) read their
//! response with it, and its own tests feed it generated messages in generated pieces.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[cfg(test)]
mod tests;

/// The longest any single read of a [`Wire`] made by [`Wire::connect`] waits.
pub const WAIT: Duration = Duration::from_secs(5);
/// The longest a one-shot client's read waits for more of its response (an SSE stream may pause).
pub const RESPONSE_WAIT: Duration = Duration::from_secs(10);

/// A body that is not JSON: what it was, to show in the failure.
#[derive(Debug)]
pub struct NotJson {
    pub error: serde_json::Error,
    pub body: String,
}

impl NotJson {
    fn parse(body: &[u8]) -> Result<serde_json::Value, NotJson> {
        serde_json::from_slice(body).map_err(|error| NotJson {
            error,
            body: String::from_utf8_lossy(body).into_owned(),
        })
    }
}

impl fmt::Display for NotJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body is not JSON ({}): {:?}", self.error, self.body)
    }
}

impl std::error::Error for NotJson {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

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

    pub fn json(&self) -> Result<serde_json::Value, NotJson> {
        NotJson::parse(&self.body)
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
    pub r: Box<dyn AsyncRead + Send + Unpin>,
    pub w: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub buf: Vec<u8>,
    pub timeout: Option<Duration>,
}

impl Wire {
    pub fn new(s: TcpStream, timeout: Option<Duration>) -> Wire {
        let (r, w) = s.into_split();
        Wire::over(r, w, timeout)
    }

    /// A wire over any byte stream (an in-memory one in this crate's own tests).
    pub fn over(
        r: impl AsyncRead + Send + Unpin + 'static,
        w: impl AsyncWrite + Send + Unpin + 'static,
        timeout: Option<Duration>,
    ) -> Wire {
        Wire {
            r: Box::new(r),
            w: Some(Box::new(w)),
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

/// A response read by a one-shot client: the status, the header fields (names lower-cased, in order) and the
/// decoded body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, NotJson> {
        NotJson::parse(&self.body)
    }
}

/// Sends `request` (a whole HTTP/1.1 request, which should say `Connection: close`) on a new connection and reads
/// the one response to it; bytes after that response are an error (a server that resets the connection after
/// answering still answered).
pub async fn raw(addr: SocketAddr, request: impl AsRef<[u8]>) -> anyhow::Result<Response> {
    let request = request.as_ref();
    let mut wire = Wire::new(TcpStream::connect(addr).await?, Some(RESPONSE_WAIT));
    wire.send(request).await?;
    one_response(&mut wire, request.starts_with(b"HEAD ")).await
}

/// Reads the one response of a connection that then closes.
async fn one_response(wire: &mut Wire, head_request: bool) -> anyhow::Result<Response> {
    let msg = wire.response(head_request).await?;
    if let Ok(rest) = wire.until_eof().await
        && !rest.is_empty()
    {
        anyhow::bail!(
            "{} bytes after the response {msg:?}: {:?}",
            rest.len(),
            String::from_utf8_lossy(&rest)
        );
    }
    Ok(Response {
        status: msg.status(),
        headers: msg.headers,
        body: msg.body,
    })
}

/// The responses in `bytes` (everything a connection carried until it closed), one after another.
pub fn responses(bytes: &[u8]) -> io::Result<Vec<Msg>> {
    let mut wire = Wire::over(io::Cursor::new(bytes.to_vec()), tokio::io::sink(), None);
    crate::block_on(async move {
        let mut out = Vec::new();
        loop {
            if wire.buf.is_empty() && wire.fill().await? == 0 {
                return Ok(out);
            }
            out.push(wire.response(false).await?);
        }
    })
}

/// A simple GET with a Host of `localhost`.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A GET with the given header lines (each `Name: value`); panics when there is no response.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> Response {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    raw(addr, &req)
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e:#}"))
}

/// The one-shot clients for tests that run no async runtime of their own.
pub mod blocking {
    use std::net::{SocketAddr, ToSocketAddrs};

    use anyhow::anyhow;

    use super::Response;

    /// [`super::raw`], blocking.
    pub fn raw(addr: SocketAddr, request: &[u8]) -> anyhow::Result<Response> {
        crate::block_on(super::raw(addr, request))
    }

    /// `GET url` with `Connection: close`; `url` is `http://host:port/path`.
    pub fn get(url: &str) -> anyhow::Result<Response> {
        request("GET", url, &[], b"")
    }

    /// `METHOD url` with `headers` (`"Name: value"`) and `body` (its `Content-Length` added), `Connection:
    /// close`; `url` is `http://host:port/path`.
    pub fn request(method: &str, url: &str, headers: &[&str], body: &[u8]) -> anyhow::Result<Response> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let addr = authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow!("no address for {authority}"))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
        if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        raw(addr, &bytes)
    }
}
