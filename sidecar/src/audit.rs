//! The audit log: one JSON line on stdout per `tools/call`, `resources/read` and `prompts/get` (each call of a
//! batch its own line) and per refused request, marked `"logger":"mcp-guard.audit"` so that log collectors can
//! select them (the guard's other logs go to stderr). See `docs/guard.md`, "Audit log".
//!
//! The request path never waits for it: a request's [`Trail`] gathers what the guard learns of it (its caller,
//! the calls in the body prefix, the refusal or audited violation), renders its lines when the response ends,
//! and hands them to a bounded queue ([`AuditLog`]); a writer thread of its own writes them out. When the queue is
//! full a line is dropped and counted (`mcp_guard_audit_lines_dropped_total`), and the writer says how many in a
//! line of its own (`"event":"dropped"`).

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use http::Response;
use mcp_guard_config::auth::Identity;
use mcp_guard_config::{Allowlist, AuditConfig, Reason};
use serde::Serialize;
use serde_json::Value;

use crate::body::ResponseBody;
use crate::metrics::Metrics;
use crate::policy::peek::PEEK_LIMIT;

pub mod calls;

/// The value of `logger` in every line of the audit log. Not `log`: Docker's json-file format and Fluent Bit's
/// CRI parser keep the container's raw line under `log`, which a merged line would clash with.
pub const LOGGER: &str = "mcp-guard.audit";
/// Lines queued for the writer at most, by default (`--audit-queue-lines`).
pub const DEFAULT_QUEUE_LINES: usize = 4096;
/// Tool names seen in allowed calls that get a label of their own in `mcp_guard_tool_calls_total`, besides the
/// tools the config names; every other name is counted as [`OTHER_TOOL`].
pub const SEEN_TOOL_LABELS: usize = 64;
/// The label of every tool beyond the bound.
pub const OTHER_TOOL: &str = "other";
/// The most bytes of any one text a client sent (a name, a trace field, an id) that a line holds.
pub const MAX_TEXT_BYTES: usize = 1024;
/// The longest tool name that gets a label of its own (MCP tool names have at most 128 characters).
const MAX_TOOL_LABEL_BYTES: usize = 128;
/// The most lines a refused request gives (its first messages): a batch of many tiny messages must not turn one
/// refusal into a flood that crowds other lines out of the queue. An allowed request has a line per logged call:
/// each runs on the server, and the rate limits charge each.
pub const MAX_REFUSED_LINES: usize = 64;
/// How often, at most, the writer reports lines dropped.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);
/// What replaces a redacted argument.
pub const REDACTED: &str = "[redacted]";

/// The methods whose every call is logged, also when allowed.
pub fn is_audited_method(method: &str) -> bool {
    matches!(method, "tools/call" | "resources/read" | "prompts/get")
}

/// What the guard decided about a request (and each call in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    /// Refused.
    Denied,
    /// A violation audit mode let through.
    Audited,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Audited => "audited",
        }
    }
}

/// The caller, as the line shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallerFields {
    pub service_account: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    /// The client's address: the peer's, or whom a trusted proxy forwarded for.
    pub address: Option<String>,
}

/// One call as the line shows it: what the audit log keeps of [`calls::CallFacts`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Call {
    pub method: Option<String>,
    pub name: Option<String>,
    pub id: Option<Value>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// SHA-256 (hex) of the arguments' bytes as sent, when they ended within the prefix.
    pub arguments_sha256: Option<String>,
    /// The arguments shown (with `audit.arguments`): redacted, and cut to a string when over the cap.
    pub arguments: Option<Value>,
    /// The call's object did not end within the prefix the guard read.
    pub truncated: bool,
}

impl Call {
    /// What the line keeps of a call read from the prefix, under the audit settings.
    pub fn new(facts: &calls::CallFacts<'_>, settings: &AuditConfig) -> Self {
        let arguments = facts
            .arguments
            .filter(|_| settings.arguments)
            .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
            .map(|value| shown_arguments(value, settings));
        Call {
            method: facts.method.as_deref().map(capped),
            name: facts.name().map(capped),
            id: facts.id.as_ref().and_then(shown_id),
            traceparent: facts.traceparent.as_deref().map(capped),
            tracestate: facts.tracestate.as_deref().map(capped),
            arguments_sha256: facts.arguments.map(sha256_hex),
            arguments,
            truncated: !facts.ended,
        }
    }
}

/// One line of the audit log: every field always present (`null` when unknown), in this order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line<'a> {
    pub logger: &'static str,
    pub event: &'static str,
    pub time: &'a str,
    pub server: Option<&'a str>,
    pub caller: &'a CallerFields,
    pub http_method: &'a str,
    pub path: &'a str,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
    pub id: Option<&'a Value>,
    pub decision: Verdict,
    pub reason: Option<&'static str>,
    pub status: u16,
    pub duration_ms: f64,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    pub arguments_sha256: Option<&'a str>,
    pub truncated: bool,
    pub arguments: Option<&'a Value>,
}

/// The keys of every decision line, in order (the line format's contract; the tests hold lines to it).
pub const LINE_FIELDS: [&str; 19] = [
    "logger",
    "event",
    "time",
    "server",
    "caller",
    "httpMethod",
    "path",
    "method",
    "name",
    "id",
    "decision",
    "reason",
    "status",
    "durationMs",
    "traceparent",
    "tracestate",
    "argumentsSha256",
    "truncated",
    "arguments",
];

/// The line the writer adds when lines were dropped.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DropReport<'a> {
    logger: &'static str,
    event: &'static str,
    time: &'a str,
    /// Lines dropped since the last report.
    dropped: u64,
}

/// What a request's lines need to know, gathered as the guard handles it.
#[derive(Debug, Default)]
struct Facts {
    caller: CallerFields,
    /// The calls in the body prefix, when the guard read one.
    calls: Vec<Call>,
    /// What was refused (or let through by audit mode) of the request as a whole.
    verdict: Option<(Verdict, Reason)>,
    /// The calls the rules refused (or audit mode let through) one by one, by their place in the body.
    call_verdicts: Vec<(usize, Verdict, Reason)>,
}

/// The `reason` of a call that was refused only because another call of its batch was.
pub const BATCH_REFUSED: &str = "batch_refused";

impl Facts {
    /// What the guard decided about the call at `index`: the whole request's refusal, its own, the refusal of
    /// the batch it came in, what audit mode let through of it or of the request, or allowed.
    fn decision(&self, index: usize) -> (Verdict, Option<&'static str>) {
        let own = self
            .call_verdicts
            .iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, v, r)| (*v, *r));
        let batch_refused = self.call_verdicts.iter().any(|(_, v, _)| *v == Verdict::Denied);
        match (self.verdict, own) {
            (Some((Verdict::Denied, reason)), _) | (_, Some((Verdict::Denied, reason))) => {
                (Verdict::Denied, Some(reason.as_str()))
            }
            _ if batch_refused => (Verdict::Denied, Some(BATCH_REFUSED)),
            (_, Some((verdict, reason))) | (Some((verdict, reason)), None) => {
                (verdict, Some(reason.as_str()))
            }
            (None, None) => (Verdict::Allowed, None),
        }
    }

    /// Whether the guard refused or audited anything of the request.
    fn violated(&self) -> bool {
        self.verdict.is_some() || !self.call_verdicts.is_empty()
    }
}

/// One request's audit trail; reached from the request head's extensions ([`Trail::of`]) by the request path.
pub struct Trail {
    log: Arc<AuditLog>,
    allowlist: Arc<Allowlist>,
    settings: AuditConfig,
    http_method: http::Method,
    path: String,
    started: Instant,
    facts: Mutex<Facts>,
}

impl Trail {
    /// Starts the trail of a request when the config has the audit log on, and puts it in the head's extensions.
    pub fn begin(
        log: &Arc<AuditLog>,
        allowlist: &Arc<Allowlist>,
        head: &mut http::request::Parts,
    ) -> Option<Arc<Self>> {
        let settings = allowlist.audit.clone()?;
        let trail = Arc::new(Trail {
            log: log.clone(),
            allowlist: allowlist.clone(),
            settings,
            http_method: head.method.clone(),
            // Never the query: a client may put anything there, a token included.
            path: capped(head.uri.path()),
            started: Instant::now(),
            facts: Mutex::default(),
        });
        head.extensions.insert(trail.clone());
        Some(trail)
    }

    /// The trail of a request, when the audit log is on.
    pub fn of(head: &http::request::Parts) -> Option<&Arc<Self>> {
        head.extensions.get::<Arc<Self>>()
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        // A panic elsewhere while the lock was held leaves plain data behind: keep using it.
        self.facts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The client's address.
    pub fn client(&self, address: IpAddr) {
        self.facts().caller.address = Some(address.to_string());
    }

    /// The verified caller, when `auth` is configured.
    pub fn caller(&self, identity: Option<&Identity>) {
        let Some(id) = identity else { return };
        let mut facts = self.facts();
        let caller = &mut facts.caller;
        caller.service_account = id.service_account.as_deref().map(capped);
        caller.subject = id.subject.as_deref().map(capped);
        caller.client_id = id.client_id.as_deref().map(capped);
        caller.issuer = Some(capped(&id.issuer));
    }

    /// The body prefix the guard read: the calls its first [`PEEK_LIMIT`] bytes carry (the read may hold a
    /// little more, up to the end of the frame that crossed the limit; the log's contract is the limit).
    pub fn read(&self, prefix: &[u8]) {
        let prefix = &prefix[..prefix.len().min(PEEK_LIMIT)];
        let calls = calls::read(prefix)
            .iter()
            .map(|facts| Call::new(facts, &self.settings))
            .collect();
        self.facts().calls = calls;
    }

    /// A refusal (`enforce`) or a violation audit mode let through. A refusal outranks what audit mode let
    /// through; of several of a kind, the first is kept.
    pub fn deny(&self, reason: Reason, enforce: bool) {
        let verdict = if enforce {
            Verdict::Denied
        } else {
            Verdict::Audited
        };
        let mut facts = self.facts();
        match facts.verdict {
            Some((Verdict::Denied, _)) => {}
            Some((Verdict::Audited, _)) if !enforce => {}
            _ => facts.verdict = Some((verdict, reason)),
        }
    }

    /// Calls the rules refused (`enforce`) or that audit mode let through, one by one: `(place in the body,
    /// reason)`. A batch refused for one call gives that call's line its reason and the others
    /// [`BATCH_REFUSED`].
    pub fn deny_calls(&self, calls: &[(usize, Reason)], enforce: bool) {
        let verdict = if enforce {
            Verdict::Denied
        } else {
            Verdict::Audited
        };
        let mut facts = self.facts();
        for &(index, reason) in calls {
            if !facts.call_verdicts.iter().any(|(i, _, _)| *i == index) {
                facts.call_verdicts.push((index, verdict, reason));
            }
        }
    }

    /// The answer is ready: its lines are written when its body ends (an upstream's streamed body), or now (the
    /// guard's own answers, which are sent at once).
    pub fn finish(self: Arc<Self>, answer: &mut Response<ResponseBody>) {
        let status = answer.status().as_u16();
        match answer.body_mut() {
            ResponseBody::Upstream { audit, .. } | ResponseBody::Events { audit, .. } => {
                *audit = Some(Ended { trail: self, status })
            }
            ResponseBody::Full(_) => self.write(status),
        }
    }

    /// Renders and queues the request's lines, and counts its tool calls.
    fn write(&self, status: u16) {
        let elapsed = self.started.elapsed();
        let facts = std::mem::take(&mut *self.facts());
        // A line per call that is logged when allowed, and per call refused or audited; a call the rules judged
        // beyond the prefix this log reads gets one too (its method unread), and a request refused before its
        // calls were read one for itself.
        let unread = Call::default();
        let read = facts
            .calls
            .iter()
            .enumerate()
            .map(|(i, c)| (c, facts.decision(i)));
        let beyond = facts
            .call_verdicts
            .iter()
            .filter(|(i, _, _)| *i >= facts.calls.len())
            .map(|(_, verdict, reason)| (&unread, (*verdict, Some(reason.as_str()))));
        let mut calls: Vec<(&Call, (Verdict, Option<&str>))> = read
            .filter(|(c, (verdict, _))| {
                *verdict != Verdict::Allowed || c.method.as_deref().is_some_and(is_audited_method)
            })
            .chain(beyond)
            .take(match facts.violated() {
                true => MAX_REFUSED_LINES,
                false => usize::MAX,
            })
            .collect();
        if let (true, Some((verdict, reason))) = (facts.calls.is_empty(), facts.verdict) {
            calls.push((&unread, (verdict, Some(reason.as_str()))));
        }
        if calls.is_empty() {
            return;
        }
        let time = rfc3339(SystemTime::now());
        let server = self.allowlist.source.as_ref().map(|s| match &s.namespace {
            Some(ns) => format!("{ns}/{}", s.name),
            None => s.name.clone(),
        });
        for (call, (verdict, reason)) in calls {
            if call.method.as_deref() == Some("tools/call") {
                let tool = self
                    .log
                    .tools
                    .label(call.name.as_deref(), verdict, &self.allowlist);
                self.log.metrics.tool_call(&tool, verdict.as_str());
            }
            let line = Line {
                logger: LOGGER,
                event: "decision",
                time: &time,
                server: server.as_deref(),
                caller: &facts.caller,
                http_method: self.http_method.as_str(),
                path: &self.path,
                method: call.method.as_deref(),
                name: call.name.as_deref(),
                id: call.id.as_ref(),
                decision: verdict,
                reason,
                status,
                duration_ms: (elapsed.as_micros() as f64) / 1000.0,
                traceparent: call.traceparent.as_deref(),
                tracestate: call.tracestate.as_deref(),
                arguments_sha256: call.arguments_sha256.as_deref(),
                truncated: call.truncated,
                arguments: call.arguments.as_ref(),
            };
            if let Ok(text) = serde_json::to_string(&line) {
                self.log.send(text);
            }
        }
    }
}

/// Writes a trail's lines when the response body it rides on ends (or is dropped with its connection).
pub struct Ended {
    trail: Arc<Trail>,
    status: u16,
}

impl Ended {
    /// The guard cut the response after its head was sent (see [`Trail::deny`]).
    pub fn deny(&self, reason: Reason) {
        self.trail.deny(reason, true);
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.trail.write(self.status);
    }
}

/// The queue to the writer thread, shared by every worker.
pub struct AuditLog {
    /// The queue, made and its writer started with the first line: a guard that logs no call keeps neither the
    /// thread nor the queue's slots (allocated whole, 32 bytes each). `None`: the thread could not start.
    queue: OnceLock<Option<SyncSender<String>>>,
    /// Where the writer writes, until it starts.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    capacity: usize,
    /// Lines dropped since the writer's last report.
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    tools: ToolLabels,
}

impl AuditLog {
    /// The audit log on `out` (the guard's stdout), with room for `capacity` lines in the queue to its writer.
    pub fn new(out: Box<dyn Write + Send>, capacity: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(AuditLog {
            queue: OnceLock::new(),
            out: Mutex::new(Some(out)),
            capacity: capacity.max(1),
            dropped: Arc::new(AtomicU64::new(0)),
            metrics,
            tools: ToolLabels::default(),
        })
    }

    /// The queue to the writer, started by the first caller.
    fn queue(&self) -> Option<&SyncSender<String>> {
        self.queue
            .get_or_init(|| {
                let out = self.out.lock().unwrap_or_else(PoisonError::into_inner).take()?;
                let (queue, lines) = std::sync::mpsc::sync_channel(self.capacity);
                let writer = Writer {
                    out: std::io::BufWriter::new(out),
                    lines,
                    dropped: self.dropped.clone(),
                };
                match std::thread::Builder::new()
                    .name("mcp-guard-audit".into())
                    .spawn(move || writer.run())
                {
                    Ok(_) => Some(queue),
                    Err(e) => {
                        tracing::error!(error = %e, "the audit log's writer thread did not start: its lines are dropped and counted");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Queues a line, or drops and counts it when the queue is full: never waits.
    fn send(&self, line: String) {
        let sent = self.queue().is_some_and(|queue| match queue.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        });
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.audit_lines_dropped.inc();
        }
    }
}

/// The writer thread: blocking writes to stdout happen here, off the workers' runtimes.
struct Writer {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    lines: Receiver<String>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self) {
        let mut last_report: Option<Instant> = None;
        loop {
            match self.lines.recv_timeout(DROP_REPORT_EVERY) {
                Ok(line) => {
                    self.line(&line);
                    // Flush once the queue is empty, so that a burst goes out in few writes.
                    while let Ok(line) = self.lines.try_recv() {
                        self.line(&line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.report_drops();
                    let _ = self.out.flush();
                    return;
                }
            }
            if last_report.is_none_or(|at| at.elapsed() >= DROP_REPORT_EVERY) && self.report_drops() {
                last_report = Some(Instant::now());
            }
            let _ = self.out.flush();
        }
    }

    fn line(&mut self, line: &str) {
        // A write error (stdout closed) loses the line; nothing else the guard could do with it.
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.write_all(b"\n");
    }

    /// Writes how many lines were dropped since the last report, if any; whether it did.
    fn report_drops(&mut self) -> bool {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return false;
        }
        let time = rfc3339(SystemTime::now());
        let report = DropReport {
            logger: LOGGER,
            event: "dropped",
            time: &time,
            dropped,
        };
        if let Ok(text) = serde_json::to_string(&report) {
            self.line(&text);
        }
        true
    }
}

/// The tool label of `mcp_guard_tool_calls_total`, bounded: a tool the config names (in `limits.perTool`), or
/// one of the first [`SEEN_TOOL_LABELS`] distinct tools of allowed calls, keeps its name; every other is
/// [`OTHER_TOOL`]. Only allowed calls take a place, so a client that is refused cannot fill them with made-up
/// names; a name once labelled stays labelled (a series does not come and go).
#[derive(Debug, Default)]
struct ToolLabels {
    seen: RwLock<HashSet<String>>,
}

impl ToolLabels {
    fn label(&self, name: Option<&str>, verdict: Verdict, allowlist: &Allowlist) -> String {
        let Some(name) = name.filter(|n| !n.is_empty() && n.len() <= MAX_TOOL_LABEL_BYTES) else {
            return OTHER_TOOL.into();
        };
        if allowlist.limits.per_tool.contains_key(name) {
            return name.into();
        }
        let known = |seen: &HashSet<String>| seen.contains(name);
        if known(
            &self
                .seen
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return name.into();
        }
        if verdict == Verdict::Allowed {
            let mut seen = self
                .seen
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if known(&seen) || seen.len() < SEEN_TOOL_LABELS {
                seen.insert(name.into());
                return name.into();
            }
        }
        OTHER_TOOL.into()
    }
}

/// The arguments as a line shows them: named fields redacted at any depth, then the whole cut to a string of at
/// most `maxArgumentBytes` when its JSON is longer.
pub fn shown_arguments(mut value: Value, settings: &AuditConfig) -> Value {
    redact(&mut value, settings);
    let text = value.to_string();
    let max = settings.max_argument_bytes();
    if text.len() <= max {
        return value;
    }
    Value::String(cut(&text, max).to_owned())
}

fn redact(value: &mut Value, settings: &AuditConfig) {
    match value {
        Value::Object(fields) => {
            for (name, v) in fields.iter_mut() {
                if settings.redacts(name) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v, settings);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, settings)),
        _ => {}
    }
}

/// The JSON-RPC id as a line shows it: a number, or a string cut to [`MAX_TEXT_BYTES`]; anything else (not a
/// valid id) as `null`.
fn shown_id(id: &Value) -> Option<Value> {
    match id {
        Value::Number(_) => Some(id.clone()),
        Value::String(s) => Some(Value::String(capped(s))),
        _ => None,
    }
}

/// At most [`MAX_TEXT_BYTES`] of a text, cut at a character boundary.
fn capped(text: &str) -> String {
    cut(text, MAX_TEXT_BYTES).to_owned()
}

fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A time as RFC 3339 in UTC with milliseconds: `2026-07-28T09:15:02.345Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests;
