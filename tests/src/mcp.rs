//! Real MCP peers for the guard's end-to-end tests: the MCP Python SDK server and client
//! (`tests/mcp/py_server.py`, `tests/mcp/py_client.py`), the TypeScript SDK client (`tests/mcp/ts_client.cjs`),
//! `@modelcontextprotocol/server-everything`, the official conformance suite, and the guard itself.
//!
//! Everything listens on 127.0.0.1 (except where a test deliberately binds an unprotected server to
//! 0.0.0.0 to show what the guard prevents) and every child is a [`Proc`], killed when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use test_support::guard::Launch;

use crate::http::Response;
use crate::process::{Proc, tail, wait_for_tcp};
use crate::tools;

/// How long a peer may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client run (connect, list, two calls) may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The scripts directory, `tests/mcp/`.
pub fn scripts_dir() -> PathBuf {
    tools::workspace_root().join("tests/mcp")
}

/// The two HTTP transports of MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP: one endpoint, `/mcp`; POST answers are JSON or an SSE stream.
    StreamableHttp,
    /// The legacy HTTP+SSE transport: `GET /sse` stream plus `POST /messages/?session_id=..`.
    Sse,
}

impl Transport {
    /// The `--transport` value the scripts take.
    pub fn arg(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse",
        }
    }

    /// The path a client connects to.
    pub fn path(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "/mcp",
            Transport::Sse => "/sse",
        }
    }
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn spawn_listening(name: &str, cmd: Command, addr: SocketAddr) -> anyhow::Result<Proc> {
    let mut proc = Proc::spawn(name, cmd)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        proc.ensure_running()?;
        if wait_for_tcp(addr, Duration::from_millis(250)).is_ok() {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            bail!(
                "{name} does not listen on {addr} after {START_TIMEOUT:?}; its log:\n{}",
                tail(&proc.logs(), 40)
            );
        }
    }
}

/// The MCP Python SDK server of `tests/mcp/py_server.py` (tools `echo` and `countdown`).
pub struct PyServer {
    pub proc: Proc,
    pub port: u16,
    pub transport: Transport,
}

impl PyServer {
    /// Starts it at the SDK's defaults: 127.0.0.1, the SDK's own localhost-only Host/Origin check on.
    pub fn start(transport: Transport) -> anyhow::Result<PyServer> {
        Self::start_on(transport, "127.0.0.1")
    }

    /// Starts it bound to `host` (`0.0.0.0` switches the SDK's own protection off).
    pub fn start_on(transport: Transport, host: &str) -> anyhow::Result<PyServer> {
        Self::start_with(transport, host, &[])
    }

    /// Starts it bound to `host` with more arguments of `py_server.py` (`--sse-ping-interval 0.2`).
    pub fn start_with(transport: Transport, host: &str, extra: &[&str]) -> anyhow::Result<PyServer> {
        let port = tools::free_port();
        let mut cmd = Command::new(tools::python());
        cmd.arg(scripts_dir().join("py_server.py"))
            .args(["--transport", transport.arg(), "--host", host, "--port"])
            .arg(port.to_string())
            .args(extra)
            .env("PYTHONUNBUFFERED", "1");
        let proc = spawn_listening(&format!("py-server-{}", transport.arg()), cmd, loopback(port))?;
        Ok(PyServer {
            proc,
            port,
            transport,
        })
    }

    /// `http://127.0.0.1:PORT` — what the guard is given as `--upstream`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The endpoint a client connects to directly.
    pub fn url(&self) -> String {
        format!("{}{}", self.base_url(), self.transport.path())
    }
}

/// `@modelcontextprotocol/server-everything` on Streamable HTTP (listens on all interfaces, no Host check).
pub struct Everything {
    pub proc: Proc,
    pub port: u16,
}

impl Everything {
    pub fn start() -> anyhow::Result<Everything> {
        let port = tools::free_port();
        let mut cmd = Command::new(tools::node_bin("mcp-server-everything"));
        cmd.arg("streamableHttp").env("PORT", port.to_string());
        let proc = spawn_listening("server-everything", cmd, loopback(port))?;
        Ok(Everything { proc, port })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub use test_support::guard::Guard;

/// How to start a guard in front of an upstream (the workspace's debug build unless `binary` says otherwise).
#[derive(Debug, Clone, Default)]
pub struct GuardOptions {
    pub allow_hosts: Vec<String>,
    pub allow_origins: Vec<String>,
    pub extra_args: Vec<String>,
    /// Defaults to `tools::cargo_bin("mcp-guard")`.
    pub binary: Option<PathBuf>,
}

impl GuardOptions {
    pub fn hosts(hosts: &[&str]) -> GuardOptions {
        GuardOptions {
            allow_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn origins(mut self, origins: &[&str]) -> GuardOptions {
        self.allow_origins = origins.iter().map(|o| o.to_string()).collect();
        self
    }

    /// Starts `mcp-guard --listen 127.0.0.1:P --admin-listen 127.0.0.1:A --upstream UPSTREAM ...` and waits
    /// until `/readyz` answers 200 ([`test_support::guard::Launch`]).
    pub fn start(&self, upstream: &str) -> anyhow::Result<Guard> {
        let mut args = vec!["--upstream".to_string(), upstream.to_string()];
        for h in &self.allow_hosts {
            args.extend(["--allow-host".to_string(), h.clone()]);
        }
        for o in &self.allow_origins {
            args.extend(["--allow-origin".to_string(), o.clone()]);
        }
        args.extend(self.extra_args.iter().cloned());
        let binary = self
            .binary
            .clone()
            .unwrap_or_else(|| tools::cargo_bin("mcp-guard"));
        Launch::new(binary, args).start_blocking()
    }
}

/// What one run of `py_client.py` or `ts_client.cjs` reported.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub kind: ClientKind,
    pub exit_code: Option<i32>,
    /// The JSON line the script printed.
    pub report: Value,
    /// Everything it printed (stdout and stderr), for failure messages.
    pub output: String,
}

impl ClientRun {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && self.report["ok"] == Value::Bool(true)
    }

    /// Asserts a full, successful session: initialize, the two tools listed, `echo` answered, and
    /// `countdown`'s three log notifications and its progress notifications received in order. Nothing here
    /// depends on timing: that the guard streams events one by one (does not buffer) is held deterministically
    /// by the guard's own `sse_events_are_flushed_one_by_one`.
    pub fn assert_full_session(&self, what: &str) {
        let r = &self.report;
        assert!(
            self.ok(),
            "{what}: client failed: {r}\n{}",
            tail(&self.output, 30)
        );
        assert_eq!(
            r["server"], "mcp-guard-e2e",
            "{what}: server name from initialize: {r}"
        );
        assert_eq!(
            r["tools"],
            serde_json::json!(["countdown", "echo"]),
            "{what}: tools/list: {r}"
        );
        assert_eq!(
            r["echo"], "echo: hello through the guard",
            "{what}: tools/call echo: {r}"
        );
        assert_eq!(
            r["countdown"], "countdown 3 done",
            "{what}: tools/call countdown: {r}"
        );
        let progress = r["progress"].as_array().cloned().unwrap_or_default();
        let steps: Vec<f64> = progress.iter().filter_map(|p| p["progress"].as_f64()).collect();
        // The TypeScript SDK handles a notification in a later microtask but a response at once, and forgets a
        // request's progress handler with its response: progress that reaches it in the same read as the result
        // (as on a busy machine) is dropped by the SDK ("unknown token"). So it gets an in-order prefix; the
        // Python SDK, and the log notifications of both, get all three.
        let expected = [1.0, 2.0, 3.0];
        match self.kind {
            ClientKind::Python => assert_eq!(steps, expected, "{what}: streamed progress notifications: {r}"),
            ClientKind::TypeScript => assert!(
                expected.starts_with(&steps),
                "{what}: streamed progress notifications out of order: {r}"
            ),
        }
        if let Some(p) = progress.first() {
            assert_eq!(p["message"], "step 1 of 3", "{what}: progress message: {r}");
        }
        assert_eq!(
            r["logs"],
            serde_json::json!(["tick 1", "tick 2", "tick 3"]),
            "{what}: streamed log notifications: {r}"
        );
    }

    /// Asserts the client failed because the guard rejected it with `status` and JSON `reason`.
    pub fn assert_rejected(&self, what: &str, status: u16, reason: &str) {
        let r = &self.report;
        assert!(!self.ok(), "{what}: client unexpectedly succeeded: {r}");
        assert_eq!(
            r["tools"],
            Value::Null,
            "{what}: a rejected client must not list tools: {r}"
        );
        assert_eq!(
            r["status"],
            status,
            "{what}: HTTP status the client saw: {r}\n{}",
            tail(&self.output, 30)
        );
        let body = r["body"].as_str().unwrap_or_default();
        let json: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: rejection body is not JSON ({e}): {body:?}"));
        assert_guard_error_body(&json, reason, what);
        let ct = r["content_type"].as_str().unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "{what}: rejection content-type {ct:?}"
        );
    }
}

/// Which MCP client implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Python,
    TypeScript,
}

/// Runs one client session against `url`, adding `headers` (`"Name: value"`; a `Host` header forges the
/// authority the request is for) to every request.
pub fn run_client(
    kind: ClientKind,
    transport: Transport,
    url: &str,
    headers: &[&str],
) -> anyhow::Result<ClientRun> {
    run_client_with(kind, transport, url, headers, None, &[])
}

/// [`run_client`] connecting from `local_address` (another loopback address is another client to the guard's
/// rate limits); the Python client only.
pub fn run_client_from(
    kind: ClientKind,
    transport: Transport,
    url: &str,
    headers: &[&str],
    local_address: Option<&str>,
) -> anyhow::Result<ClientRun> {
    run_client_with(kind, transport, url, headers, local_address, &[])
}

/// A session that lists the tools and calls `tool` with `arguments` (instead of the test server's `echo` and
/// `countdown`): for servers other than the tests' own, such as the examples' weather server. The tool's text is
/// in `report["call"]`.
pub fn call_tool(
    kind: ClientKind,
    url: &str,
    headers: &[&str],
    tool: &str,
    arguments: &Value,
) -> anyhow::Result<ClientRun> {
    let arguments = arguments.to_string();
    run_client_with(
        kind,
        Transport::StreamableHttp,
        url,
        headers,
        None,
        &["--call", tool, "--arguments", &arguments],
    )
}

fn run_client_with(
    kind: ClientKind,
    transport: Transport,
    url: &str,
    headers: &[&str],
    local_address: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<ClientRun> {
    let mut cmd = match kind {
        ClientKind::Python => {
            let mut c = Command::new(tools::python());
            c.arg(scripts_dir().join("py_client.py"));
            c
        }
        ClientKind::TypeScript => {
            let mut c = Command::new("node");
            c.arg(scripts_dir().join("ts_client.cjs"))
                .env("NODE_PATH", tools::node_modules());
            c
        }
    };
    cmd.args(["--transport", transport.arg(), "--url", url, "--timeout", "45"]);
    cmd.args(extra);
    for h in headers {
        cmd.arg("--header").arg(h);
    }
    if let Some(addr) = local_address {
        anyhow::ensure!(
            kind == ClientKind::Python,
            "only the Python client takes a local address"
        );
        cmd.arg("--local-address").arg(addr);
    }
    let name = match kind {
        ClientKind::Python => "py-client",
        ClientKind::TypeScript => "ts-client",
    };
    let (exit_code, output) = run_bounded(name, cmd, CLIENT_TIMEOUT)?;
    let report = output
        .lines()
        .rev()
        .filter(|l| l.starts_with('{'))
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("ok").is_some())
        })
        .ok_or_else(|| {
            anyhow!(
                "{name} printed no report (exit {exit_code:?}):\n{}",
                tail(&output, 40)
            )
        })?;
    Ok(ClientRun {
        kind,
        exit_code,
        report,
        output,
    })
}

/// Runs `cmd` to completion (killed after `timeout`), returning its exit code and combined output.
pub fn run_bounded(name: &str, cmd: Command, timeout: Duration) -> anyhow::Result<(Option<i32>, String)> {
    let mut proc = Proc::spawn(name, cmd)?;
    match proc.wait_exit(timeout) {
        Ok(code) => Ok((code, proc.logs())),
        Err(e) => {
            proc.kill();
            bail!("{e}; its log:\n{}", tail(&proc.logs(), 40))
        }
    }
}

/// Asserts a JSON body is the guard's rejection: a JSON-RPC error with `"id": null` whose `error.data.reason`
/// is `reason`.
pub fn assert_guard_error_body(json: &Value, reason: &str, what: &str) {
    assert_eq!(json["jsonrpc"], "2.0", "{what}: JSON-RPC envelope: {json}");
    assert!(
        json.get("id").is_some_and(Value::is_null),
        "{what}: \"id\": null expected: {json}"
    );
    assert!(json["error"]["code"].is_i64(), "{what}: error.code: {json}");
    assert!(
        json["error"]["message"].is_string(),
        "{what}: error.message: {json}"
    );
    assert_eq!(
        json["error"]["data"]["reason"], reason,
        "{what}: error.data.reason: {json}"
    );
}

/// Asserts a raw response is the guard's rejection with `status` and `reason`, and that the rejected
/// value appears in the body (so a user can see what was refused).
pub fn assert_guard_rejection(resp: &Response, status: u16, reason: &str, received: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: status; body {}", resp.text());
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct:?}; body {}",
        resp.text()
    );
    let json = resp.json().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_guard_error_body(&json, reason, what);
    assert!(
        json["error"]["data"].to_string().contains(received),
        "{what}: error.data should name the received value {received:?}: {json}"
    );
}

/// A JSON-RPC `initialize` POST for Streamable HTTP with the given extra header lines, as raw bytes.
pub fn initialize_request(path: &str, host: &str, extra_headers: &[&str]) -> Vec<u8> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in extra_headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    req.into_bytes()
}

/// The result of one conformance scenario: its checks by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScenarioResult {
    pub passed: usize,
    pub failed: usize,
    pub other: usize,
    /// `id: errorMessage` of each failed check.
    pub failures: Vec<String>,
}

impl ScenarioResult {
    /// A scenario passes when it ran at least one check and none failed.
    pub fn passes(&self) -> bool {
        self.passed > 0 && self.failed == 0
    }
}

/// A conformance run: scenario name → result.
#[derive(Debug, Clone, Default)]
pub struct ConformanceReport {
    pub scenarios: BTreeMap<String, ScenarioResult>,
    pub output: String,
}

impl ConformanceReport {
    pub fn passing(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .filter(|(_, r)| r.passes())
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Runs `conformance server --url URL [--scenario NAME] -o DIR` (the pinned `@modelcontextprotocol/conformance`)
/// and reads each scenario's `checks.json` from the output directory.
pub fn run_conformance(url: &str, scenario: Option<&str>) -> anyhow::Result<ConformanceReport> {
    let out = tempfile::tempdir()?;
    let mut cmd = Command::new(tools::node_bin("conformance"));
    cmd.args(["server", "--url", url, "-o"]).arg(out.path());
    if let Some(s) = scenario {
        cmd.args(["--scenario", s]);
    }
    let (_code, output) = run_bounded("conformance", cmd, Duration::from_secs(120))?;
    let scenarios = read_conformance_results(out.path())
        .with_context(|| format!("reading conformance results; its output:\n{}", tail(&output, 40)))?;
    if scenarios.is_empty() {
        bail!("conformance wrote no results; its output:\n{}", tail(&output, 40));
    }
    Ok(ConformanceReport { scenarios, output })
}

/// Parses `<dir>/server-<scenario>-<timestamp>/checks.json` files.
pub fn read_conformance_results(dir: &Path) -> anyhow::Result<BTreeMap<String, ScenarioResult>> {
    let mut scenarios = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let checks_path = entry.path().join("checks.json");
        if !checks_path.exists() {
            continue;
        }
        let scenario = scenario_name(&name);
        let checks: Value = serde_json::from_slice(&std::fs::read(&checks_path)?)
            .with_context(|| format!("parse {}", checks_path.display()))?;
        let mut result = ScenarioResult::default();
        for check in checks
            .as_array()
            .ok_or_else(|| anyhow!("{} is not an array", checks_path.display()))?
        {
            match check["status"].as_str().unwrap_or_default() {
                "SUCCESS" => result.passed += 1,
                "FAILURE" => {
                    result.failed += 1;
                    result.failures.push(format!(
                        "{}: {}",
                        check["id"].as_str().unwrap_or("?"),
                        check["errorMessage"].as_str().unwrap_or("")
                    ));
                }
                _ => result.other += 1,
            }
        }
        scenarios.insert(scenario, result);
    }
    Ok(scenarios)
}

/// `server-dns-rebinding-protection-2026-11-21T05-43-28-816Z` → `dns-rebinding-protection`.
fn scenario_name(dir_name: &str) -> String {
    let name = dir_name.strip_prefix("server-").unwrap_or(dir_name);
    // The timestamp starts at the last "-YYYY-MM-DDT".
    let bytes = name.as_bytes();
    for i in (0..name.len()).rev() {
        if bytes[i] == b'-'
            && name.len() >= i + 12
            && name[i + 1..i + 5].bytes().all(|b| b.is_ascii_digit())
            && bytes[i + 5] == b'-'
            && name[i + 1..].contains('T')
        {
            return name[..i].to_string();
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_lose_prefix_and_timestamp() {
        assert_eq!(
            scenario_name("server-dns-rebinding-protection-2026-11-21T05-43-28-816Z"),
            "dns-rebinding-protection"
        );
        assert_eq!(
            scenario_name("server-tools-call-with-progress-2026-01-02T00-00-00-000Z"),
            "tools-call-with-progress"
        );
        assert_eq!(scenario_name("server-ping"), "ping");
    }
}
