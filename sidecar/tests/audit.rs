//! The audit log end to end: the real guard binary with a config file (tokens signed by guard-config's
//! `testing` keys, published inline), an echoing upstream on loopback, and the guard's stdout read back line by
//! line and checked field by field against what was sent.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mcp_guard::audit::{LINE_FIELDS, rfc3339};
use mcp_guard_config::auth::testing::{self, TestKey};
use serde_json::{Value, json};
use support::{Guard, RawResponse, TestUpstream, eventually_or, mcp_guard, raw};

const RESOURCE: &str = "http://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";
const CLUSTER: &str = "https://kubernetes.default.svc";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn now() -> u64 {
    mcp_guard::keys::unix_now()
}

/// The guard config: an OAuth issuer and a Kubernetes one (keys inline), the MCPServer it speaks for, and
/// `extra` merged in.
fn config(oauth: &TestKey, cluster: &TestKey, extra: Value) -> Value {
    let mut config = json!({
        "allowedHosts": ["mcp.example.com"],
        "source": { "kind": "MCPServer", "namespace": "team-a", "name": "weather" },
        "auth": {
            "resources": [RESOURCE],
            "issuers": [
                { "issuer": ISSUER, "jwks": testing::jwks(&[oauth]) },
                { "issuer": CLUSTER, "jwks": testing::jwks(&[cluster]), "kubernetes": true },
            ],
        },
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

/// The guard in front of `upstream` with `config`, its stdout piped; the directory holds the config file.
async fn guard(upstream: &TestUpstream, config: &Value, flags: &[&str]) -> (Guard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let (url, file) = (upstream.url(), file.to_str().unwrap().to_owned());
    let mut args = vec!["--upstream", &url, "--config", &file];
    args.extend_from_slice(flags);
    (mcp_guard(&args).stdout_piped().start().await.unwrap(), dir)
}

/// The guard's stdout, read line by line on a thread of its own.
#[derive(Clone)]
struct Stdout(Arc<Mutex<Vec<String>>>);

impl Stdout {
    fn read(guard: &mut Guard) -> Stdout {
        let out = guard.proc.take_stdout().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                l.lock().unwrap().push(line);
            }
        });
        Stdout(lines)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Every line, parsed, once `enough` holds of them (the writer writes them soon after the responses end).
    async fn until(&self, what: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let parsed = || -> Vec<Value> {
            let lines = self.0.lock().unwrap().clone();
            lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect()
        };
        eventually_or(
            what,
            Duration::from_secs(20),
            || format!("the audit log:\n{}", self.text()),
            || {
                let ok = enough(&parsed());
                async move { ok }
            },
        )
        .await;
        parsed()
    }

    /// The decision lines, once there are `n`.
    async fn decisions(&self, n: usize) -> Vec<Value> {
        let all = self
            .until(&format!("{n} decision lines"), |ls| decisions(ls).len() >= n)
            .await;
        decisions(&all)
    }
}

fn decisions(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["event"] == "decision")
        .cloned()
        .collect()
}

/// Every line has exactly the fixed fields, `logger` first.
fn assert_shape(lines: &[Value], raw: &str) {
    for line in raw.lines() {
        assert!(line.starts_with(r#"{"logger":"mcp-guard.audit","#), "{line}");
    }
    for line in lines.iter().filter(|l| l["event"] == "decision") {
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = LINE_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields, "{line}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `POST /mcp` of `body` (to `target`, with these header lines).
async fn post_to(guard: &Guard, host: &str, target: &str, headers: &[String], body: &str) -> RawResponse {
    let mut req = format!("POST {target} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "content-length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    raw(guard.addr, &req).await.unwrap()
}

async fn post(guard: &Guard, token: &str, body: &str) -> RawResponse {
    post_to(
        guard,
        "mcp.example.com",
        "/mcp",
        &[format!("Authorization: Bearer {token}")],
        body,
    )
    .await
}

fn oauth_token(key: &TestKey) -> String {
    key.sign(
        &json!({"iss": ISSUER, "sub": "alice", "client_id": "agent-7", "aud": RESOURCE,
                     "iat": now(), "exp": now() + 600, "scope": "mcp"}),
    )
}

fn account_token(key: &TestKey) -> String {
    key.sign(&json!({"iss": CLUSTER, "sub": "system:serviceaccount:team-a:agent", "aud": RESOURCE,
                     "iat": now(), "exp": now() + 600,
                     "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "agent", "uid": "u"}}}))
}

fn by_id(lines: &[Value], id: Value) -> Value {
    lines
        .iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("no line with id {id}: {lines:?}"))
        .clone()
}

#[tokio::test]
async fn a_line_per_call_with_every_field_as_sent() {
    let (oauth, cluster) = (TestKey::es256("o1"), TestKey::es256("c1"));
    let upstream = TestUpstream::start().await;
    let (mut guard, _dir) = guard(&upstream, &config(&oauth, &cluster, json!({})), &[]).await;
    let out = Stdout::read(&mut guard);
    let before = rfc3339(SystemTime::now());

    let alice = oauth_token(&oauth);
    let arguments = r#"{"city":"Zürich","note":"say \"hi\"\n\u0000","n":[1,2.5e3]}"#;
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{{"name":"get_weather","arguments":  {arguments} ,"_meta":{{"traceparent":"{TRACEPARENT}","tracestate":"rojo=00f067aa0ba902b7"}}}}}}"#
    );
    let r = post_to(
        &guard,
        "mcp.example.com",
        "/mcp",
        &[
            format!("Authorization: Bearer {alice}"),
            "Cookie: session=c00k1e-s3cr3t".into(),
        ],
        &call,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}\n{}", guard.logs());

    let agent = account_token(&cluster);
    let prompt = r#"{"jsonrpc":"2.0","id":"p-1","method":"prompts/get","params":{"name":"summary"}}"#;
    assert_eq!(post(&guard, &agent, prompt).await.status, 200);
    let read =
        r#"{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":"file:///srv/report.md"}}"#;
    assert_eq!(post(&guard, &agent, read).await.status, 200);
    // Plumbing that is allowed has no line.
    let list = r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#;
    assert_eq!(post(&guard, &alice, list).await.status, 200);

    let lines = out.decisions(3).await;
    let after = rfc3339(SystemTime::now());
    let l = by_id(&lines, json!(42));
    assert_eq!(l["logger"], "mcp-guard.audit");
    let time = l["time"].as_str().unwrap();
    assert!(
        before.as_str() <= time && time <= after.as_str(),
        "{before} {time} {after}"
    );
    assert_eq!(l["server"], "team-a/weather");
    assert_eq!(
        l["caller"],
        json!({"serviceAccount": null, "subject": "alice", "clientId": "agent-7", "issuer": ISSUER,
               "address": "127.0.0.1"})
    );
    assert_eq!(l["httpMethod"], "POST");
    assert_eq!(l["path"], "/mcp");
    assert_eq!(l["method"], "tools/call");
    assert_eq!(l["name"], "get_weather");
    assert_eq!(l["decision"], "allowed");
    assert_eq!(l["reason"], Value::Null);
    assert_eq!(l["status"], 200);
    assert!(l["durationMs"].as_f64().unwrap() >= 0.0);
    assert_eq!(l["traceparent"], TRACEPARENT);
    assert_eq!(l["tracestate"], "rojo=00f067aa0ba902b7");
    assert_eq!(l["argumentsSha256"], sha256_hex(arguments.as_bytes()));
    assert_eq!(l["truncated"], false);
    assert_eq!(l["arguments"], Value::Null, "arguments only when opted in");

    let p = by_id(&lines, json!("p-1"));
    assert_eq!(
        p["caller"],
        json!({"serviceAccount": "team-a/agent", "subject": "system:serviceaccount:team-a:agent",
               "clientId": null, "issuer": CLUSTER, "address": "127.0.0.1"})
    );
    assert_eq!(
        (&p["method"], &p["name"]),
        (&json!("prompts/get"), &json!("summary"))
    );
    assert_eq!(p["argumentsSha256"], Value::Null);
    assert_eq!(p["traceparent"], Value::Null);
    let r = by_id(&lines, json!(7));
    assert_eq!(
        (&r["method"], &r["name"]),
        (&json!("resources/read"), &json!("file:///srv/report.md"))
    );
    assert!(lines.iter().all(|l| l["method"] != "tools/list"), "{lines:?}");

    let text = out.text();
    assert_shape(&out.until("lines", |_| true).await, &text);
    for secret in [
        alice.as_str(),
        agent.as_str(),
        "Bearer",
        "c00k1e-s3cr3t",
        "session=",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }
    assert_eq!(
        guard
            .metric(r#"mcp_guard_tool_calls_total{tool="get_weather",decision="allowed"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_line_per_refusal() {
    let (oauth, cluster) = (TestKey::es256("o1"), TestKey::es256("c1"));
    let upstream = TestUpstream::start().await;
    let limits =
        json!({ "limits": { "perTool": { "get_weather": { "requestsPerMinute": 1, "burst": 1 } } } });
    let (mut guard, _dir) = guard(&upstream, &config(&oauth, &cluster, limits), &[]).await;
    let out = Stdout::read(&mut guard);
    let alice = oauth_token(&oauth);
    let call =
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_weather","arguments":{}}}"#;

    // Host refused: before any token or body is read.
    let r = post_to(
        &guard,
        "evil.example",
        "/mcp",
        &[format!("Authorization: Bearer {alice}")],
        call,
    )
    .await;
    assert_eq!(r.status, 421);
    // A token signed by a stranger (with the issuer's kid).
    let forged = TestKey::es256("o1").sign(&json!({"iss": ISSUER, "sub": "mallory", "aud": RESOURCE,
                                                   "iat": now(), "exp": now() + 600}));
    assert_eq!(post(&guard, &forged, call).await.status, 401);
    // A token in the query: refused, and the query never logged.
    let r = post_to(
        &guard,
        "mcp.example.com",
        "/mcp?access_token=qu3ry-t0k3n",
        &[],
        call,
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    // The tool's bucket holds one call: the second is rate limited, its call read and its caller known.
    assert_eq!(post(&guard, &alice, call).await.status, 200);
    assert_eq!(post(&guard, &alice, call).await.status, 429);

    let lines = out.decisions(5).await;
    let brief: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["decision"].as_str().unwrap().to_owned(),
                l["reason"].as_str().unwrap_or("").to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("denied", "host_not_allowed", 421),
        ("denied", "invalid_token", 401),
        ("denied", "invalid_auth_request", 400),
        ("allowed", "", 200),
        ("denied", "rate_limited", 429),
    ];
    assert_eq!(
        brief,
        expected.map(|(d, r, s)| (d.to_owned(), r.to_owned(), s)),
        "{lines:?}"
    );
    // Refused before the body was read: no call; refused after: the call, and who made it.
    assert_eq!(lines[0]["method"], Value::Null);
    assert_eq!(lines[0]["caller"]["subject"], Value::Null);
    assert_eq!(lines[0]["caller"]["address"], "127.0.0.1");
    assert_eq!(lines[1]["caller"]["subject"], Value::Null);
    assert_eq!(lines[2]["path"], "/mcp");
    let limited = &lines[4];
    assert_eq!(
        (&limited["method"], &limited["name"], &limited["id"]),
        (&json!("tools/call"), &json!("get_weather"), &json!(5))
    );
    assert_eq!(limited["caller"]["subject"], "alice");
    let text = out.text();
    assert_shape(&out.until("lines", |_| true).await, &text);
    for secret in [alice.as_str(), forged.as_str(), "qu3ry-t0k3n", "access_token"] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }
    assert_eq!(
        guard
            .metric(r#"mcp_guard_tool_calls_total{tool="get_weather",decision="denied"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_batch_has_a_line_per_call() {
    let (oauth, cluster) = (TestKey::es256("o1"), TestKey::es256("c1"));
    let upstream = TestUpstream::start().await;
    let (mut guard, _dir) = guard(&upstream, &config(&oauth, &cluster, json!({})), &[]).await;
    let out = Stdout::read(&mut guard);
    let batch = r#"[
        {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1}}},
        {"jsonrpc":"2.0","method":"notifications/initialized"},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b","arguments":{"x":2}}},
        {"jsonrpc":"2.0","id":3,"method":"tools/list"},
        {"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"c"}}
    ]"#;
    assert_eq!(post(&guard, &oauth_token(&oauth), batch).await.status, 200);
    let lines = out.decisions(3).await;
    let calls: Vec<_> = lines
        .iter()
        .map(|l| (l["id"].clone(), l["name"].clone(), l["status"].clone()))
        .collect();
    assert_eq!(
        calls,
        [
            (json!(1), json!("a"), json!(200)),
            (json!(2), json!("b"), json!(200)),
            (json!(4), json!("c"), json!(200))
        ]
    );
    assert_eq!(lines[0]["argumentsSha256"], sha256_hex(br#"{"x":1}"#));
    assert_eq!(lines[1]["argumentsSha256"], sha256_hex(br#"{"x":2}"#));
}

#[tokio::test]
async fn each_call_of_a_batch_has_its_own_decision() {
    let (oauth, cluster) = (TestKey::es256("o1"), TestKey::es256("c1"));
    let access = json!({"rules": [{"from": [{"subject": "alice"}], "to": [{"method": "tools/call", "names": ["a"]}]}]});
    let batch = r#"[
        {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}},
        {"jsonrpc":"2.0","id":3,"method":"ping"}
    ]"#;
    let seen = |lines: &[Value]| -> Vec<(Value, Value, Value, Value)> {
        lines
            .iter()
            .map(|l| {
                (
                    l["id"].clone(),
                    l["decision"].clone(),
                    l["reason"].clone(),
                    l["status"].clone(),
                )
            })
            .collect()
    };
    // Enforced: the batch is refused for its second call; the others say they were refused with it.
    let upstream = TestUpstream::start().await;
    let config = config(&oauth, &cluster, json!({ "access": access }));
    let (mut enforcing, _dir) = guard(&upstream, &config, &[]).await;
    let out = Stdout::read(&mut enforcing);
    assert_eq!(post(&enforcing, &oauth_token(&oauth), batch).await.status, 403);
    let lines = out.decisions(3).await;
    assert_eq!(
        seen(&lines),
        [
            (json!(1), json!("denied"), json!("batch_refused"), json!(403)),
            (json!(2), json!("denied"), json!("tool_not_allowed"), json!(403)),
            (json!(3), json!("denied"), json!("batch_refused"), json!(403)),
        ]
    );
    assert_shape(&lines, &out.text());
    // Audit mode forwards the batch: the allowed call is allowed, the denied one audited, plumbing unlogged.
    let upstream = TestUpstream::start().await;
    let mut config = config;
    config["mode"] = json!("audit");
    let (mut audited, _dir) = guard(&upstream, &config, &[]).await;
    let out = Stdout::read(&mut audited);
    assert_eq!(post(&audited, &oauth_token(&oauth), batch).await.status, 200);
    // A call after it: its line comes after every line of the batch.
    let after = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"a"}}"#;
    assert_eq!(post(&audited, &oauth_token(&oauth), after).await.status, 200);
    let lines = out.decisions(3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[2]["id"], 9);
    assert_eq!(
        seen(&lines[..2]),
        [
            (json!(1), json!("allowed"), Value::Null, json!(200)),
            (json!(2), json!("audited"), json!("tool_not_allowed"), json!(200)),
        ]
    );
}

#[tokio::test]
async fn arguments_only_with_opt_in_redacted_and_capped() {
    let upstream = TestUpstream::start().await;
    // The audit log without auth: on because the config has the section.
    let config = json!({
        "allowedHosts": ["mcp.example.com"],
        "audit": { "arguments": true, "maxArgumentBytes": 160, "redact": ["ssn"] },
    });
    let (mut guard, _dir) = guard(&upstream, &config, &[]).await;
    let out = Stdout::read(&mut guard);
    let call = |id: u32, arguments: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"lookup","arguments":{arguments}}}}}"#
        )
    };
    let secret = r#"{"city":"Paris","user_ssn":"078-05-1120","auth":{"Password":"hunter2"},"list":[{"apiKey":"k-123"}]}"#;
    let long = format!(r#"{{"text":"{}"}}"#, "é".repeat(200));
    // Beyond the prefix the guard reads (8 KiB): the name is read, the arguments are not.
    let huge = format!(r#"{{"blob":"{}"}}"#, "x".repeat(10 * 1024));
    for (id, arguments) in [(1, secret), (2, &long), (3, &huge)] {
        let r = post_to(&guard, "mcp.example.com", "/mcp", &[], &call(id, arguments)).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let lines = out.decisions(3).await;
    let redacted = by_id(&lines, json!(1));
    assert_eq!(
        redacted["arguments"],
        json!({"city": "Paris", "user_ssn": "[redacted]", "auth": {"Password": "[redacted]"},
               "list": [{"apiKey": "[redacted]"}]})
    );
    assert_eq!(redacted["argumentsSha256"], sha256_hex(secret.as_bytes()));
    assert_eq!(redacted["caller"]["subject"], Value::Null);
    assert_eq!(redacted["caller"]["address"], "127.0.0.1");
    let cut = by_id(&lines, json!(2));
    let shown = cut["arguments"].as_str().expect("over the cap: a string");
    assert!(
        shown.len() <= 160 && shown.starts_with(r#"{"text":"éé"#),
        "{shown}"
    );
    assert_eq!(cut["argumentsSha256"], sha256_hex(long.as_bytes()));
    let beyond = by_id(&lines, json!(3));
    assert_eq!(beyond["name"], "lookup");
    assert_eq!(beyond["truncated"], true);
    assert_eq!(beyond["argumentsSha256"], Value::Null);
    assert_eq!(beyond["arguments"], Value::Null);
    let text = out.text();
    for secret in ["078-05-1120", "hunter2", "k-123"] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }
}

#[tokio::test]
async fn a_slow_reader_loses_lines_counted_never_requests() {
    let upstream = TestUpstream::start().await;
    let config = json!({ "allowedHosts": ["mcp.example.com"], "audit": {} });
    let (mut guard, _dir) = guard(&upstream, &config, &["--audit-queue-lines", "8"]).await;
    // Nobody reads the guard's stdout yet: the pipe fills, then the writer's buffer, then the queue.
    let sent = 800;
    for id in 0..sent {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"pad":"{}"}}}}}}"#,
            "p".repeat(200)
        );
        let r = post_to(&guard, "mcp.example.com", "/mcp", &[], &body).await;
        assert_eq!(r.status, 200, "call {id}: {r:?}");
    }
    let out = Stdout::read(&mut guard);
    let dropped_in = |lines: &[Value]| -> u64 {
        lines
            .iter()
            .filter(|l| l["event"] == "dropped")
            .map(|l| l["dropped"].as_u64().unwrap())
            .sum()
    };
    let lines = out
        .until("every call written or reported dropped", |ls| {
            decisions(ls).len() as u64 + dropped_in(ls) == sent
        })
        .await;
    let dropped = dropped_in(&lines);
    assert!(dropped > 0, "the queue never overflowed");
    assert_eq!(
        guard.metric("mcp_guard_audit_lines_dropped_total").await,
        dropped as f64
    );
    // Counted whether or not their line was written.
    assert_eq!(
        guard
            .metric(r#"mcp_guard_tool_calls_total{tool="echo",decision="allowed"}"#)
            .await,
        sent as f64
    );
    assert_shape(&lines, &out.text());
}
