use super::*;
use crate::policy::peek;
use mcp_guard_config::GuardConfig;
use proptest::prelude::*;
use serde_json::json;

fn allowlist(audit: serde_json::Value) -> Arc<Allowlist> {
    let config = json!({
        "allowedHosts": ["mcp.example.com"],
        "source": { "kind": "MCPServer", "namespace": "team-a", "name": "weather" },
        "limits": { "perTool": { "render_report": { "requestsPerMinute": 6 } } },
        "audit": audit,
    });
    let config: GuardConfig = serde_json::from_value(config).unwrap();
    Arc::new(config.compile().unwrap())
}

/// A writer whose bytes the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Every line written, once the writer thread has ended (when every sender is gone) and dropped its copy.
    fn all_when_closed(&self) -> Vec<Value> {
        for _ in 0..2000 {
            if Arc::strong_count(&self.0) == 1 {
                let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
                return text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the audit writer did not end");
    }

    /// The lines written, once there are `n` (the writer thread writes them soon after they are queued).
    fn lines(&self, n: usize) -> Vec<Value> {
        for _ in 0..2000 {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            if text.lines().count() >= n {
                return text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("fewer than {n} audit lines written");
    }
}

fn log() -> (Arc<AuditLog>, Captured, Arc<Metrics>) {
    let out = Captured::default();
    let metrics = Arc::new(Metrics::new());
    let log = AuditLog::new(Box::new(out.clone()), 64, metrics.clone());
    (log, out, metrics)
}

fn head() -> http::request::Parts {
    http::Request::post("/mcp?token=secret")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[test]
fn rfc3339_in_utc() {
    let at = |secs: u64, millis: u64| {
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
    assert_eq!(at(1_700_000_000, 999), "2023-11-14T22:13:20.999Z");
    assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
}

#[test]
fn reads_a_call_with_its_trace_context_and_argument_bytes() {
    let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather","arguments": {"city":"Paris" , "units":"\u00b0C"} ,"_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"k=v"}}}"#;
    let calls = calls::read(body);
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.method.as_deref(), Some("tools/call"));
    assert_eq!(c.name(), Some("get_weather"));
    assert_eq!(c.id, Some(json!(7)));
    assert_eq!(
        c.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(c.tracestate.as_deref(), Some("k=v"));
    // The value's own bytes, escapes as written, without the whitespace around it.
    assert_eq!(c.arguments, Some(&br#"{"city":"Paris" , "units":"\u00b0C"}"#[..]));
    assert!(c.ended);
}

#[test]
fn names_per_method_and_the_last_key_wins() {
    let body = br#"[
        {"id":"a","method":"resources/read","params":{"name":"n","uri":"file:///etc/motd"}},
        {"id":1,"method":"prompts/get","params":{"name":"first","arguments":{"x":1}},"params":{"name":"second"}},
        {"method":"notifications/initialized"},
        5,
        {"id":2,"method":"tools/call","method":"tools/list"}
    ]"#;
    let calls = calls::read(body);
    let seen: Vec<_> = calls.iter().map(|c| (c.method.as_deref(), c.name())).collect();
    assert_eq!(
        seen,
        [
            (Some("resources/read"), Some("file:///etc/motd")),
            (Some("prompts/get"), Some("second")),
            (Some("notifications/initialized"), None),
            (Some("tools/list"), None),
        ]
    );
    // A later `params` replaced the whole object, arguments included.
    assert_eq!(calls[1].arguments, None);
    assert!(calls.iter().all(|c| c.ended));
}

#[test]
fn a_prefix_keeps_what_ended_within_it() {
    let body = br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"upload","arguments":{"data":"AAAAAAAA"#;
    let calls = calls::read(body);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method.as_deref(), Some("tools/call"));
    assert_eq!(calls[0].name(), Some("upload"));
    assert_eq!(calls[0].id, Some(json!(9)));
    assert_eq!(calls[0].arguments, None);
    assert!(!calls[0].ended);
    // Arguments that ended within the prefix are kept, the call still marked as not read whole.
    let body = br#"{"method":"tools/call","params":{"arguments":{"a":1},"name":"x"#;
    let calls = calls::read(body);
    assert_eq!(calls[0].arguments, Some(&b"{\"a\":1}"[..]));
    assert_eq!(calls[0].name(), None);
    assert!(!calls[0].ended);
}

#[test]
fn arguments_are_redacted_at_any_depth_then_cut() {
    let settings = AuditConfig {
        arguments: true,
        max_argument_bytes: Some(64),
        redact: vec!["ssn".into()],
        ..AuditConfig::default()
    };
    let shown = shown_arguments(
        json!({"city": "Paris", "auth": {"Password": "hunter2", "user_ssn": "123"}, "list": [{"apiKey": "k"}]}),
        &AuditConfig {
            max_argument_bytes: Some(4096),
            ..settings.clone()
        },
    );
    assert_eq!(
        shown,
        json!({"city": "Paris", "auth": {"Password": REDACTED, "user_ssn": REDACTED}, "list": [{"apiKey": REDACTED}]})
    );
    let long = shown_arguments(
        json!({"text": "é".repeat(100), "token": "secret-value"}),
        &settings,
    );
    let Value::String(cut) = long else {
        panic!("over the cap: a string")
    };
    assert!(cut.len() <= 64, "{cut}");
    assert!(!cut.contains("secret-value"));
}

#[test]
fn a_line_per_call_of_a_batch_and_none_for_plumbing() {
    let (log, out, metrics) = log();
    let allowlist = allowlist(json!({ "arguments": true }));
    let mut head = head();
    let trail = Trail::begin(&log, &allowlist, &mut head).unwrap();
    trail.client("10.0.0.7".parse().unwrap());
    let arguments = br#"{"city":"Paris","token":"t0k3n"}"#;
    let mut body = br#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}},"#.to_vec();
    body.extend_from_slice(
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_weather","arguments":"#,
    );
    body.extend_from_slice(arguments);
    body.extend_from_slice(
        br#"}},{"jsonrpc":"2.0","id":"r","method":"resources/read","params":{"uri":"file:///a"}}]"#,
    );
    trail.read(&body);
    trail.write(200);
    let lines = out.lines(2);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["method"], "tools/call");
    assert_eq!(lines[0]["name"], "get_weather");
    assert_eq!(lines[0]["id"], 2);
    assert_eq!(lines[0]["argumentsSha256"], sha256_hex(arguments));
    assert_eq!(lines[0]["arguments"], json!({"city": "Paris", "token": REDACTED}));
    assert_eq!(lines[0]["server"], "team-a/weather");
    assert_eq!(lines[0]["path"], "/mcp");
    assert_eq!(lines[0]["caller"]["address"], "10.0.0.7");
    assert_eq!(lines[1]["name"], "file:///a");
    assert_eq!(lines[1]["arguments"], Value::Null);
    let text = metrics.encode();
    assert!(
        text.contains(r#"mcp_guard_tool_calls_total{tool="get_weather",decision="allowed"} 1"#),
        "{text}"
    );
}

#[test]
fn a_refused_request_has_a_line_even_when_its_calls_were_not_read() {
    let (log, out, _) = log();
    let allowlist = allowlist(json!({}));
    let mut head = head();
    let trail = Trail::begin(&log, &allowlist, &mut head).unwrap();
    Trail::of(&head).unwrap().deny(Reason::RateLimited, false);
    trail.deny(Reason::HostNotAllowed, true);
    trail.deny(Reason::OriginNotAllowed, true);
    trail.write(421);
    let lines = out.lines(1);
    assert_eq!(lines[0]["decision"], "denied");
    assert_eq!(lines[0]["reason"], "host_not_allowed");
    assert_eq!(lines[0]["status"], 421);
    assert_eq!(lines[0]["method"], Value::Null);
    assert_eq!(lines[0]["httpMethod"], "POST");
}

/// The decision and reason of each line of a batch of an allowed `tools/call`, a denied one and a `ping`, after
/// `record` on its trail.
fn batch_lines(record: impl FnOnce(&Trail)) -> Vec<(String, String, Value)> {
    let (log, out, _) = log();
    let allowlist = allowlist(json!({}));
    let mut head = head();
    let trail = Trail::begin(&log, &allowlist, &mut head).unwrap();
    trail.read(
        br#"[{"id":1,"method":"tools/call","params":{"name":"read"}},
             {"id":2,"method":"tools/call","params":{"name":"delete"}},
             {"id":3,"method":"ping"}]"#,
    );
    record(&trail);
    trail.write(403);
    drop((trail, log, head));
    out.all_when_closed()
        .iter()
        .map(|l| {
            (
                l["name"].to_string(),
                l["decision"].to_string(),
                l["reason"].clone(),
            )
        })
        .collect()
}

#[test]
fn each_call_of_a_batch_has_its_own_decision() {
    let line =
        |name: &str, decision: &str, reason: Value| (name.to_owned(), format!("\"{decision}\""), reason);
    // Refused for its second call: that call's line says why, the others that they were refused with it.
    let refused = batch_lines(|t| t.deny_calls(&[(1, Reason::ToolNotAllowed)], true));
    assert_eq!(
        refused,
        [
            line("\"read\"", "denied", json!(BATCH_REFUSED)),
            line("\"delete\"", "denied", json!("tool_not_allowed")),
            line("null", "denied", json!(BATCH_REFUSED)),
        ]
    );
    // Audit mode forwards the batch: the allowed call is allowed, the ping gives no line.
    let audited = batch_lines(|t| t.deny_calls(&[(1, Reason::ToolNotAllowed)], false));
    assert_eq!(
        audited,
        [
            line("\"read\"", "allowed", Value::Null),
            line("\"delete\"", "audited", json!("tool_not_allowed")),
        ]
    );
    // What audit mode let through of the whole request stays on every call that has nothing of its own.
    let both = batch_lines(|t| {
        t.deny(Reason::HostNotAllowed, false);
        t.deny_calls(&[(1, Reason::ToolNotAllowed)], false);
    });
    assert_eq!(
        both,
        [
            line("\"read\"", "audited", json!("host_not_allowed")),
            line("\"delete\"", "audited", json!("tool_not_allowed")),
            line("null", "audited", json!("host_not_allowed")),
        ]
    );
    // A call the rules judged beyond the prefix the audit log reads still gets its line, with its reason.
    let beyond = batch_lines(|t| t.deny_calls(&[(5, Reason::MethodNotAllowed)], true));
    assert_eq!(
        beyond,
        [
            line("\"read\"", "denied", json!(BATCH_REFUSED)),
            line("\"delete\"", "denied", json!(BATCH_REFUSED)),
            line("null", "denied", json!(BATCH_REFUSED)),
            line("null", "denied", json!("method_not_allowed")),
        ]
    );
    // A refusal of the whole request (its body broken later, say) outranks what was audited of one call.
    let later = batch_lines(|t| {
        t.deny_calls(&[(1, Reason::ToolNotAllowed)], false);
        t.deny(Reason::MalformedRequest, true);
    });
    assert_eq!(
        later
            .iter()
            .map(|(_, d, r)| (d.as_str(), r.clone()))
            .collect::<Vec<_>>(),
        vec![("\"denied\"", json!("malformed_request")); 3]
    );
}

#[test]
fn a_refused_batch_of_many_messages_gives_a_bounded_number_of_lines() {
    let (log, out, _) = log();
    let allowlist = allowlist(json!({}));
    let mut head = head();
    let trail = Trail::begin(&log, &allowlist, &mut head).unwrap();
    let batch = format!("[{}]", vec![r#"{"method":"x"}"#; 500].join(","));
    trail.read(batch.as_bytes());
    trail.deny(Reason::RateLimited, true);
    trail.write(429);
    drop((trail, head, log));
    assert_eq!(out.all_when_closed().len(), MAX_REFUSED_LINES);
}

#[test]
fn tool_labels_are_bounded_and_only_allowed_calls_take_a_place() {
    let labels = ToolLabels::default();
    let allowlist = allowlist(json!({}));
    assert_eq!(
        labels.label(Some("junk"), Verdict::Denied, &allowlist),
        OTHER_TOOL
    );
    assert_eq!(
        labels.label(Some("render_report"), Verdict::Denied, &allowlist),
        "render_report"
    );
    for i in 0..SEEN_TOOL_LABELS {
        assert_eq!(
            labels.label(Some(&format!("t{i}")), Verdict::Allowed, &allowlist),
            format!("t{i}")
        );
    }
    assert_eq!(
        labels.label(Some("late"), Verdict::Allowed, &allowlist),
        OTHER_TOOL
    );
    assert_eq!(labels.label(Some("t3"), Verdict::Denied, &allowlist), "t3");
    assert_eq!(
        labels.label(Some(&"x".repeat(129)), Verdict::Allowed, &allowlist),
        OTHER_TOOL
    );
    assert_eq!(labels.label(None, Verdict::Allowed, &allowlist), OTHER_TOOL);
    // The config's tools keep their names past the bound.
    assert_eq!(
        labels.label(Some("render_report"), Verdict::Allowed, &allowlist),
        "render_report"
    );
}

#[test]
fn a_full_queue_drops_and_counts_and_the_writer_says_so() {
    /// Holds every write until the gate opens; says when the writer is held.
    #[derive(Default)]
    struct Gate {
        open: bool,
        waiting: bool,
    }
    struct Stalled(Arc<(Mutex<Gate>, std::sync::Condvar)>, Captured);
    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (gate, cv) = &*self.0;
            let mut g = gate.lock().unwrap();
            g.waiting = true;
            cv.notify_all();
            while !g.open {
                g = cv.wait(g).unwrap();
            }
            drop(g);
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let gate = Arc::new((Mutex::new(Gate::default()), std::sync::Condvar::new()));
    let out = Captured::default();
    let metrics = Arc::new(Metrics::new());
    let capacity = 4;
    let log = AuditLog::new(
        Box::new(Stalled(gate.clone(), out.clone())),
        capacity,
        metrics.clone(),
    );
    log.send("{\"n\":0}".into());
    {
        let (g, cv) = &*gate;
        let mut g = g.lock().unwrap();
        while !g.waiting {
            g = cv.wait(g).unwrap();
        }
    }
    // The writer is stuck on the first line: the queue takes `capacity` more, the rest are dropped at once.
    let sent = 50;
    for i in 1..=sent {
        log.send(format!("{{\"n\":{i}}}"));
    }
    let dropped = metrics.audit_lines_dropped.get();
    assert_eq!(dropped, sent - capacity as u64);
    gate.0.lock().unwrap().open = true;
    gate.1.notify_all();
    let lines = out.lines(1 + capacity + 1);
    let reports: Vec<_> = lines.iter().filter(|l| l["event"] == "dropped").collect();
    assert_eq!(reports.len(), 1, "{lines:?}");
    assert_eq!(reports[0]["dropped"], dropped);
    assert_eq!(reports[0]["logger"], LOGGER);
    assert_eq!(lines.len(), 1 + capacity + 1);
}

fn body_value() -> impl Strategy<Value = String> {
    // Text with what JSON must escape: quotes, backslashes, control characters, and beyond ASCII.
    proptest::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just('\u{0}'),
            Just('\u{1f}'),
            Just('é'),
            Just('😀'),
            Just('\u{2028}'),
            any::<char>(),
            proptest::char::range('a', 'z'),
        ],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect::<String>())
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tools/call".to_owned()),
        Just("resources/read".to_owned()),
        Just("prompts/get".to_owned()),
        Just("tools/list".to_owned()),
        body_value(),
    ]
}

/// A JSON-RPC message, its keys in any order, some doubled, some escaped.
fn message() -> impl Strategy<Value = String> {
    (
        method(),
        body_value(),
        body_value(),
        proptest::option::of(body_value()),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(method, name, arg, trace, order, escape)| {
            let m = serde_json::to_string(&method).unwrap();
            let n = serde_json::to_string(&name).unwrap();
            let a = serde_json::to_string(&arg).unwrap();
            let meta = trace
                .map(|t| {
                    format!(
                        r#","_meta":{{"traceparent":{}}}"#,
                        serde_json::to_string(&t).unwrap()
                    )
                })
                .unwrap_or_default();
            let method_key = if escape { r#""m\u0065thod""# } else { r#""method""# };
            let params = format!(r#"{{"name":{n},"uri":{n},"arguments":{{"q":{a},"password":{a}}}{meta}}}"#);
            let mut fields = vec![
                r#""jsonrpc":"2.0""#.to_owned(),
                format!(r#""id":{order}"#),
                format!("{method_key}:{m}"),
                format!(r#""params":{params}"#),
            ];
            if order % 5 == 0 {
                fields.push(r#""method":"tools/call""#.to_owned());
            }
            fields.rotate_left(usize::from(order % 4));
            format!("{{{}}}", fields.join(","))
        })
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        message(),
        proptest::collection::vec(message(), 1..4).prop_map(|ms| format!("[{}]", ms.join(","))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The audit reader and the guard's scanner read the same method and tool name of every message, whole or
    /// cut anywhere.
    #[test]
    fn the_reader_agrees_with_the_scanner(body in body(), cut in any::<prop::sample::Index>()) {
        for prefix in [body.as_bytes(), &body.as_bytes()[..cut.index(body.len() + 1)]] {
            let scanned = peek::scan(prefix);
            let read = calls::read(prefix);
            prop_assert!(read.len() <= scanned.messages.len());
            for (r, s) in read.iter().zip(&scanned.messages) {
                if s.ambiguous {
                    continue;
                }
                prop_assert_eq!(&r.method, &s.method);
                prop_assert_eq!(&r.params_name, &s.name);
            }
        }
    }

    /// Every line is one valid JSON object with the fixed field set, whatever the client sent; no argument
    /// shows unless opted in, and a redacted one never.
    #[test]
    fn every_line_has_the_fixed_fields(body in body(), opt_in in any::<bool>()) {
        let (log, out, _) = log();
        let allowlist = allowlist(json!({ "arguments": opt_in }));
        let mut head = head();
        let trail = Trail::begin(&log, &allowlist, &mut head).unwrap();
        trail.read(body.as_bytes());
        trail.deny(Reason::RateLimited, true);
        let expected = calls::read(body.as_bytes()).len();
        trail.write(429);
        out.lines(expected);
        let raw = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        prop_assert_eq!(raw.lines().count(), expected);
        for line in raw.lines() {
            // Collectors may select the lines by their start, too.
            prop_assert!(line.starts_with(r#"{"logger":"mcp-guard.audit","event":"decision","#), "{}", line);
            let value: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            let keys: Vec<&str> = value.keys().map(String::as_str).collect();
            let mut fields = LINE_FIELDS.to_vec();
            fields.sort_unstable();
            let mut keys = keys;
            keys.sort_unstable();
            prop_assert_eq!(keys, fields);
            prop_assert_eq!(&value["logger"], LOGGER);
            prop_assert_eq!(&value["decision"], "denied");
            match &value["arguments"] {
                Value::Null => {}
                Value::Object(args) => {
                    prop_assert!(opt_in);
                    prop_assert_eq!(&args["password"], REDACTED);
                }
                other => prop_assert!(false, "arguments {}", other),
            }
            prop_assert!(value["argumentsSha256"].as_str().is_some_and(|h| h.len() == 64));
        }
    }
}
