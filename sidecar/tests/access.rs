//! Access rules, end to end through the guard's request path (`Proxy::handle`, the same path every connection
//! takes) in front of a real upstream on loopback that records every body it gets, so that "nothing forwarded"
//! is checked, not assumed. Tokens are signed by guard-config's `testing` keys: a Kubernetes service-account
//! issuer and an OAuth issuer, both inline.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mcp_guard::metrics::Metrics;
use mcp_guard::pool::{Paired, UpstreamPool};
use mcp_guard::proxy::{Peer, Proxy};
use mcp_guard::upstream::Upstream;
use mcp_guard_config::auth::Identity;
use mcp_guard_config::auth::testing::{self, TestKey};
use mcp_guard_config::{Allowlist, GuardConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const RESOURCE: &str = "http://mcp.example.com/mcp";
const KUBE: &str = "https://kubernetes.default.svc";
const OAUTH: &str = "https://auth.example.com";

/// The tools, prompts, resources and templates the upstream lists.
const TOOLS: [&str; 5] = ["read_file", "search", "delete_file", "echo", "deploy"];
const PROMPTS: [&str; 2] = ["greet", "incident"];
const RESOURCES: [&str; 3] = ["file:///docs/a.md", "file:///docs/b.md", "file:///secrets/key"];
const TEMPLATES: [&str; 2] = ["file:///docs/{path}", "file:///secrets/{name}"];

/// An MCP-ish upstream that records every body it gets and answers every call of it: lists from the constants
/// above (a page of them: `params.cursor` "2" gives the second half and no `nextCursor`), other calls with
/// their method. `/sse` answers as an event stream (a notification first, each answer its own event), `/big`
/// answers `tools/list` with a list over the guard's bound. A `GET` is a resumed stream ([`replay`]).
struct McpUpstream {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Ends `/resume-dies` with an error.
    die: Arc<tokio::sync::Notify>,
}

fn list_result(method: &str, cursor: Option<&str>, big: bool) -> Value {
    let page = |all: &[&str]| -> (Vec<String>, Option<&'static str>) {
        let half = all.len().div_ceil(2);
        match cursor {
            Some("2") => (all[half..].iter().map(|s| s.to_string()).collect(), None),
            _ => (all[..half].iter().map(|s| s.to_string()).collect(), Some("2")),
        }
    };
    let (key, items, next) = match method {
        "tools/list" if big => {
            let pad = "x".repeat(1024);
            let items = (0..5000)
                .map(|i| json!({"name": format!("t{i}"), "description": pad}))
                .collect::<Vec<_>>();
            return json!({ "tools": items });
        }
        "tools/list" => {
            let (names, next) = page(&TOOLS);
            let items: Vec<Value> = names
                .iter()
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect();
            ("tools", items, next)
        }
        "prompts/list" => {
            let items = PROMPTS.iter().map(|n| json!({ "name": n })).collect();
            ("prompts", items, None)
        }
        "resources/list" => {
            let items = RESOURCES.iter().map(|u| json!({"uri": u, "name": u})).collect();
            ("resources", items, None)
        }
        "resources/templates/list" => {
            let items = TEMPLATES
                .iter()
                .map(|u| json!({"uriTemplate": u, "name": u}))
                .collect();
            ("resourceTemplates", items, None)
        }
        other => return json!({ "method": other }),
    };
    let mut result = json!({ key: items });
    if let Some(next) = next {
        result["nextCursor"] = json!(next);
    }
    result
}

fn answer(message: &Value, big: bool) -> Option<Value> {
    let id = message.get("id")?;
    let method = message["method"].as_str().unwrap_or_default();
    let cursor = message["params"]["cursor"].as_str();
    Some(json!({"jsonrpc": "2.0", "id": id, "result": list_result(method, cursor, big)}))
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An event of a stream, its JSON pretty-printed over several `data:` lines.
fn event(id: &str, message: &Value) -> String {
    let data: String = serde_json::to_string_pretty(message)
        .unwrap()
        .lines()
        .map(|l| format!("data: {l}\r\n"))
        .collect();
    format!("id: {id}\r\n{data}\r\n")
}

/// What a server replays to a client that resumes a stream (`GET` with `Last-Event-ID`): the answers to list
/// calls made on another request, which the guard never saw, under ids it never forwarded. `/resume` replays
/// them whole; `/resume-big` replays a list over the guard's bound; `/resume-dies` dies in the middle of one when
/// `die` is notified (after its head and first events are out).
fn replay(path: &str, die: Arc<tokio::sync::Notify>) -> Response<UpstreamBody> {
    let answer = |id: &str, method: &str| json!({"jsonrpc": "2.0", "id": id, "result": list_result(method, None, false)});
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
    let mut text = event("e2", &progress);
    let body = match path {
        "/resume" => {
            text.push_str(": keep-alive\n\n");
            text.push_str(&event("e3", &answer("earlier-1", "tools/list")));
            text.push_str(&event("e4", &answer("earlier-2", "resources/list")));
            // A server whose JSON a lax parser (Go's `encoding/json`) reads as a result of tools all the same.
            let shouted = json!({"jsonrpc": "2.0", "id": 9, "RESULT": {"Tools": list_result("tools/list", Some("2"), false)["tools"]}});
            text.push_str(&event("e5", &shouted));
            full(Bytes::from(text))
        }
        "/resume-big" => {
            text.push_str(&event(
                "e3",
                &json!({"id": 1, "result": list_result("tools/list", None, true)}),
            ));
            full(Bytes::from(text))
        }
        _ => {
            let half = event("e3", &answer("earlier-1", "tools/list"));
            let cut = half[..half.len() / 2].to_owned();
            let frames = [text, cut].map(|t| Ok(http_body::Frame::data(Bytes::from(t))));
            let death = futures::stream::once(async move {
                die.notified().await;
                Err(std::io::Error::other("the server died"))
            });
            BodyExt::boxed(http_body_util::StreamBody::new(
                futures::stream::iter(frames).chain(death),
            ))
        }
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    resp
}

impl McpUpstream {
    async fn start() -> McpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let die = Arc::new(tokio::sync::Notify::new());
        let (seen, dying) = (bodies.clone(), die.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, dying) = (seen.clone(), dying.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (seen, dying) = (seen.clone(), dying.clone());
                    async move {
                        let path = req.uri().path().to_owned();
                        if req.method() == http::Method::GET {
                            return Ok::<_, Infallible>(replay(&path, dying));
                        }
                        // A body cut on its way never reached the server whole: not recorded.
                        let Ok(bytes) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
                            return Ok(Response::new(full(Bytes::new())));
                        };
                        let body: Value = serde_json::from_slice(&bytes)
                            .unwrap_or_else(|_| json!({ "unparsed": String::from_utf8_lossy(&bytes) }));
                        seen.lock().unwrap().push(body.clone());
                        let big = path == "/big";
                        let answers: Vec<Value> = match &body {
                            Value::Array(batch) => batch.iter().filter_map(|m| answer(m, big)).collect(),
                            m => answer(m, big).into_iter().collect(),
                        };
                        let (content_type, text) = if path.starts_with("/sse") {
                            let mut text =
                                "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
                                    .to_owned();
                            for a in &answers {
                                // Split over two data lines, as an SSE writer may.
                                let json = serde_json::to_string_pretty(a).unwrap();
                                let (first, rest) = json.split_once('\n').unwrap();
                                text.push_str(&format!(
                                    "id: e1\r\nevent: message\r\ndata: {first}\r\ndata: {}\r\n\r\n",
                                    rest.replace('\n', " ")
                                ));
                            }
                            if path == "/sse-stray" {
                                let stray = json!({"jsonrpc": "2.0", "id": "stray", "result": list_result("tools/list", None, false)});
                                text.push_str(&event("e9", &stray));
                            }
                            ("text/event-stream", text)
                        } else if body.is_array() {
                            ("application/json", Value::from(answers).to_string())
                        } else {
                            let one = answers.into_iter().next().unwrap_or(Value::Null);
                            ("application/json", one.to_string())
                        };
                        let mut resp = Response::new(full(Bytes::from(text)));
                        resp.headers_mut()
                            .insert("content-type", content_type.parse().unwrap());
                        Ok(resp)
                    }
                });
                tokio::spawn(
                    auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        McpUpstream { addr, bodies, die }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

fn now() -> u64 {
    mcp_guard::keys::unix_now()
}

/// The rules of every test here.
fn rules() -> Value {
    json!({"rules": [
        {"name": "agents-read", "from": [{"serviceAccount": "team-a/agent"}],
         "to": [{"method": "tools/call", "names": ["read_*", "search"]},
                {"method": "resources/read", "names": ["file:///docs/*"]}]},
        {"name": "sre", "from": [{"group": "sre"}], "to": [{"method": "tools/call"}, {"method": "prompts/get"}]},
        {"name": "everyone", "from": [{"authenticated": true}], "to": [{"method": "tools/call", "names": ["echo"]}]}
    ]})
}

struct Fixture {
    proxy: Arc<Proxy>,
    upstream: McpUpstream,
    kube: TestKey,
    oauth: TestKey,
    /// What the audit log wrote.
    audit: AuditOut,
}

/// The audit log's output, kept to read back.
#[derive(Clone, Default)]
struct AuditOut(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for AuditOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditOut {
    /// The decision lines, once `enough` holds of them (the writer thread writes soon after a response ends).
    async fn until(&self, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let lines = || -> Vec<Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        };
        support::eventually_or(
            "the audit lines the test waits for",
            Duration::from_secs(20),
            || format!("the audit log: {:?}", lines()),
            || {
                let ok = enough(&lines());
                async move { ok }
            },
        )
        .await;
        lines()
    }
}

impl Fixture {
    async fn start(mode: &str) -> Fixture {
        let kube = TestKey::es256("kube");
        let oauth = TestKey::ed25519("oauth");
        let upstream = McpUpstream::start().await;
        let config: GuardConfig = serde_json::from_value(json!({
            "mode": mode,
            "allowedHosts": ["mcp.example.com"],
            "auth": {"resources": [RESOURCE], "issuers": [
                {"issuer": KUBE, "jwks": testing::jwks(&[&kube]), "kubernetes": true},
                {"issuer": OAUTH, "jwks": testing::jwks(&[&oauth])}
            ]},
            "access": rules()
        }))
        .unwrap();
        let (tx, live) = tokio::sync::watch::channel(Arc::new(Allowlist::compile(&config).unwrap()));
        std::mem::forget(tx);
        let up = Upstream::parse(&upstream.url(), false).unwrap();
        let metrics = Arc::new(Metrics::new());
        let audit = AuditOut::default();
        let proxy = Arc::new(Proxy {
            live,
            pool: UpstreamPool::new(&up, Duration::from_secs(5), 0),
            upstream: up,
            preserve_host: false,
            limiter: mcp_guard::limiter::Limiter::new(metrics.rate_limit_tracked_clients.clone()),
            keys: mcp_guard::keys::KeyStore::new(metrics.clone()),
            tokens: Default::default(),
            audit: mcp_guard::audit::AuditLog::new(Box::new(audit.clone()), 64, metrics.clone()),
            metrics,
        });
        Fixture {
            proxy,
            upstream,
            kube,
            oauth,
            audit,
        }
    }

    /// A service account's token.
    fn sa(&self, ns: &str, name: &str) -> String {
        self.kube.sign(
            &json!({"iss": KUBE, "sub": format!("system:serviceaccount:{ns}:{name}"),
            "aud": RESOURCE, "exp": now() + 600,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": "u"}}}),
        )
    }

    /// A user's token, in these groups.
    fn user(&self, sub: &str, groups: &[&str]) -> String {
        self.oauth.sign(
            &json!({"iss": OAUTH, "sub": sub, "client_id": "cli", "aud": RESOURCE,
            "exp": now() + 600, "groups": groups}),
        )
    }

    async fn post(&self, path: &str, token: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(http::Method::POST, path, token, body, headers).await
    }

    /// A resumed event stream.
    async fn resume(&self, path: &str, token: &str) -> Answer {
        let headers = [("accept", "text/event-stream"), ("last-event-id", "e1")];
        self.send(http::Method::GET, path, token, "", &headers).await
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        token: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let resp = self.respond(method, path, token, body, headers).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = match resp.into_body().collect().await {
            Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
            Err(e) => Err(e.to_string()),
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The guard's response, its body not read yet.
    async fn respond(
        &self,
        method: http::Method,
        path: &str,
        token: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Response<mcp_guard::body::ResponseBody> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "mcp.example.com")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        // In frames of 4 KiB, as hyper hands a body over from the socket: the guard peeks at most 8 KiB.
        let frames: Vec<Bytes> = body.as_bytes().chunks(4096).map(Bytes::copy_from_slice).collect();
        let req = req
            .body(support::stream_body(futures::stream::iter(frames)))
            .unwrap();
        let peer = Arc::new(Peer::new(
            "127.0.0.1:40000".parse().unwrap(),
            Paired::new(self.proxy.pool.clone(), false),
        ));
        self.proxy.clone().handle(req, peer).await
    }

    fn metric(&self, sample: &str) -> f64 {
        self.proxy
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    /// `Err` when the body broke off.
    body: Result<String, String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(self.body.as_ref().unwrap()).unwrap_or(Value::Null)
    }

    fn reason(&self) -> String {
        self.json()["error"]["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The JSON-RPC messages of an event stream, in order (its lines end in LF or, unfiltered, CRLF).
    fn events(&self) -> Vec<Value> {
        let text = self.body.as_ref().unwrap().replace("\r\n", "\n");
        text.split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d)))
                    .collect();
                (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
            })
            .collect()
    }
}

fn call(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

fn tool(id: u64, name: &str) -> String {
    call(id, "tools/call", json!({"name": name, "arguments": {}}))
}

#[tokio::test]
async fn each_identity_calls_what_its_rules_allow_and_is_refused_the_rest() {
    let f = Fixture::start("enforce").await;
    let agent = f.sa("team-a", "agent");
    let other_sa = f.sa("team-b", "agent");
    let sre = f.user("alice", &["sre"]);
    let plain = f.user("bob", &["dev"]);
    let cases: Vec<(&str, &str, String, Result<(), &str>)> = vec![
        ("agent", &agent, tool(1, "read_file"), Ok(())),
        ("agent", &agent, tool(1, "search"), Ok(())),
        ("agent", &agent, tool(1, "echo"), Ok(())),
        ("agent", &agent, tool(1, "delete_file"), Err("tool_not_allowed")),
        (
            "agent",
            &agent,
            call(1, "resources/read", json!({"uri": "file:///docs/a.md"})),
            Ok(()),
        ),
        (
            "agent",
            &agent,
            call(1, "resources/read", json!({"uri": "file:///secrets/key"})),
            Err("tool_not_allowed"),
        ),
        (
            "agent",
            &agent,
            call(1, "prompts/get", json!({"name": "greet"})),
            Err("tool_not_allowed"),
        ),
        (
            "agent",
            &agent,
            call(1, "admin/reset", json!({})),
            Err("method_not_allowed"),
        ),
        ("team-b", &other_sa, tool(1, "read_file"), Err("tool_not_allowed")),
        ("team-b", &other_sa, tool(1, "echo"), Ok(())),
        ("sre", &sre, tool(1, "delete_file"), Ok(())),
        (
            "sre",
            &sre,
            call(1, "prompts/get", json!({"name": "incident"})),
            Ok(()),
        ),
        (
            "sre",
            &sre,
            call(1, "resources/read", json!({"uri": "file:///docs/a.md"})),
            Err("tool_not_allowed"),
        ),
        ("plain", &plain, tool(1, "search"), Err("tool_not_allowed")),
        ("plain", &plain, tool(1, "echo"), Ok(())),
        // Plumbing stays open to every verified caller.
        ("plain", &plain, call(1, "initialize", json!({})), Ok(())),
        ("plain", &plain, call(1, "tools/list", json!({})), Ok(())),
        (
            "plain",
            &plain,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(),
            Ok(()),
        ),
        (
            "plain",
            &plain,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into(),
            Ok(()),
        ),
    ];
    let mut forwarded = 0;
    for (who, token, body, want) in &cases {
        let r = f.post("/mcp", token, body, &[]).await;
        match want {
            Ok(()) => {
                assert_eq!(r.status, 200, "{who} {body}: {r:?}");
                forwarded += 1;
            }
            Err(reason) => {
                assert_eq!(
                    (r.status, r.reason().as_str()),
                    (403, *reason),
                    "{who} {body}: {r:?}"
                );
                let v = r.json();
                assert_eq!(v["error"]["code"], -32012);
                let data = &v["error"]["data"];
                assert!(data["hint"].as_str().unwrap().contains("access.rules"), "{v}");
                assert!(data["detail"].as_str().unwrap().contains("caller:"), "{v}");
            }
        }
        assert_eq!(
            f.upstream.count(),
            forwarded,
            "{who} {body}: what reached the upstream"
        );
    }
    let r = f.post("/mcp", &agent, &tool(1, "delete_file"), &[]).await;
    let v = r.json();
    assert_eq!(v["error"]["data"]["received"], "tools/call delete_file", "{v}");
    assert_eq!(
        v["error"]["data"]["detail"], "caller: service account team-a/agent",
        "{v}"
    );
    let denied = f.metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"tool_not_allowed\"}");
    assert_eq!(denied, 7.0);
}

#[tokio::test]
async fn hostile_bodies_never_carry_a_denied_call_past_the_guard() {
    let f = Fixture::start("enforce").await;
    let agent = f.sa("team-a", "agent");
    let pad = "p".repeat(9000);
    /// What it is, the body, the extra headers, and the refusal.
    type Hostile<'a> = (&'a str, String, &'a [(&'a str, &'a str)], u16, &'a str);
    let hostile: Vec<Hostile> = vec![
        (
            "a batch mixing an allowed and a denied call",
            format!("[{},{}]", tool(1, "read_file"), tool(2, "delete_file")),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "the denied call last in a long batch",
            format!("[{},{},{}]", tool(1, "read_file"), call(2, "ping", json!({})), tool(3, "deploy")),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "a denied call in a notification",
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file"}}"#.into(),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "a denied notification in a batch",
            format!(
                r#"[{},{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"delete_file"}}}}]"#,
                tool(1, "search")
            ),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "the tool name beyond the peek window",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"arguments":{{"pad":"{pad}"}},"name":"read_file"}}}}"#),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "the method beyond the peek window",
            format!(r#"{{"jsonrpc":"2.0","id":1,"pad":"{pad}","method":"tools/call","params":{{"name":"read_file"}}}}"#),
            &[],
            403,
            "method_not_allowed",
        ),
        (
            "a batch that does not end within the peek window",
            format!(r#"[{},{{"id":2,"pad":"{pad}"}}]"#, tool(1, "read_file")),
            &[],
            400,
            "uncountable_body",
        ),
        (
            "duplicate name keys, the denied one last",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","name":"delete_file"}}"#.into(),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "a name key in another case (Go reads it)",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","Name":"delete_file"}}"#.into(),
            &[],
            403,
            "method_not_allowed",
        ),
        (
            "an escaped method",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"delete_file"}}"#.into(),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "an escaped tool name",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"del\u0065te_file"}}"#.into(),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "a later params replacing the allowed one",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"},"params":{"name":"deploy"}}"#.into(),
            &[],
            403,
            "tool_not_allowed",
        ),
        (
            "headers naming an allowed tool over a denied body",
            tool(1, "delete_file"),
            &[("mcp-method", "tools/call"), ("mcp-name", "read_file")],
            400,
            "mcp_header_mismatch",
        ),
        (
            "headers naming an allowed resource over a denied body",
            call(1, "resources/read", json!({"uri": "file:///secrets/key"})),
            &[("mcp-method", "resources/read"), ("mcp-name", "file:///docs/a.md")],
            400,
            "mcp_header_mismatch",
        ),
        (
            "a body that is no JSON-RPC",
            "tools/call delete_file".into(),
            &[],
            400,
            "uncountable_body",
        ),
    ];
    for (name, body, headers, status, reason) in &hostile {
        let r = f.post("/mcp", &agent, body, headers).await;
        assert_eq!(
            (r.status, r.reason().as_str()),
            (*status, *reason),
            "{name}: {r:?}"
        );
    }
    assert_eq!(
        f.upstream.count(),
        0,
        "nothing hostile reached the upstream: {:?}",
        f.upstream.bodies()
    );
    let r = f
        .post(
            "/mcp",
            &agent,
            &format!("[{},{}]", tool(1, "read_file"), tool(2, "delete_file")),
            &[],
        )
        .await;
    assert!(
        r.json()["error"]["data"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("call 2 of a batch of 2: "),
        "{r:?}"
    );

    // Allowed bodies in the same shapes pass: the escapes decoded, the last duplicate winning, the name read
    // whole, the whole batch judged call by call.
    let allowed = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"re\u0061d_file"}}"#
            .to_owned(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","name":"search"}}"#
            .into(),
        format!(
            "[{},{},{}]",
            tool(1, "read_file"),
            call(2, "ping", json!({})),
            tool(3, "echo")
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"pad":"{pad}"}}}}}}"#
        ),
    ];
    for body in &allowed {
        let r = f.post("/mcp", &agent, body, &[]).await;
        assert_eq!(r.status, 200, "{body}: {r:?}");
    }
    assert_eq!(f.upstream.count(), allowed.len());
}

/// A body whose tool is judged within the prefix and then named otherwise by a later key is cut: the server
/// never gets it whole.
#[tokio::test]
async fn a_body_that_names_another_tool_after_the_judged_prefix_is_cut() {
    let f = Fixture::start("enforce").await;
    let agent = f.sa("team-a", "agent");
    let pad = "p".repeat(20_000);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"pad":"{pad}"}}}},"params":{{"name":"delete_file"}}}}"#
    );
    let r = f.post("/mcp", &agent, &body, &[]).await;
    assert_eq!(
        (r.status, r.reason().as_str()),
        (400, "uncountable_body"),
        "{r:?}"
    );
    assert!(
        f.upstream
            .bodies()
            .iter()
            .all(|b| b.get("unparsed").is_none() && b["params"]["name"] != "delete_file")
    );
}

#[tokio::test]
async fn audit_mode_forwards_denied_calls_and_counts_them() {
    let f = Fixture::start("audit").await;
    let agent = f.sa("team-a", "agent");
    let r = f.post("/mcp", &agent, &tool(1, "delete_file"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.upstream.count(), 1);
    assert_eq!(
        f.metric("mcp_guard_requests_total{verdict=\"audited\",reason=\"tool_not_allowed\"}"),
        1.0
    );
}

fn names(v: &Value, key: &str, field: &str) -> Vec<String> {
    v["result"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no result.{key}: {v}"))
        .iter()
        .map(|e| e[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_show_each_caller_only_what_it_may_call_in_json_and_in_event_streams() {
    let f = Fixture::start("enforce").await;
    let agent = f.sa("team-a", "agent");
    let sre = f.user("alice", &["sre"]);
    let plain = f.user("bob", &[]);
    let list = |cursor: Option<&str>| match cursor {
        Some(c) => call(7, "tools/list", json!({ "cursor": c })),
        None => call(7, "tools/list", json!({})),
    };
    // Both pages, each identity, JSON and SSE: the filter applies to every page, whoever's cursor it is.
    for path in ["/mcp", "/sse"] {
        for (token, want) in [
            (&agent, vec!["read_file", "search", "echo"]),
            (&sre, TOOLS.to_vec()),
            (&plain, vec!["echo"]),
        ] {
            let mut shown = Vec::new();
            for cursor in [None, Some("2")] {
                let r = f.post(path, token, &list(cursor), &[]).await;
                assert_eq!(r.status, 200, "{path}: {r:?}");
                assert!(
                    r.headers
                        .get("content-length")
                        .is_none_or(|l| l.to_str().unwrap() == r.body.as_ref().unwrap().len().to_string())
                );
                let answer = match path {
                    "/sse" => {
                        let events = r.events();
                        assert_eq!(events[0]["method"], "notifications/progress", "{events:?}");
                        events[1].clone()
                    }
                    _ => r.json(),
                };
                assert_eq!(answer["id"], 7);
                assert_eq!(
                    answer["result"].get("nextCursor").and_then(Value::as_str),
                    cursor.is_none().then_some("2"),
                    "pagination intact: {answer}"
                );
                shown.extend(names(&answer, "tools", "name"));
            }
            assert_eq!(shown, want, "{path}");
        }
    }
    // The other lists, in one batch beside a call: each answer filtered by its own list.
    let batch = format!(
        "[{},{},{},{}]",
        call(1, "prompts/list", json!({})),
        call(2, "resources/list", json!({})),
        call(3, "resources/templates/list", json!({})),
        tool(4, "read_file")
    );
    for path in ["/mcp", "/sse"] {
        let r = f.post(path, &agent, &batch, &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        let answers = match path {
            "/sse" => r.events()[1..].to_vec(),
            _ => r.json().as_array().unwrap().clone(),
        };
        assert_eq!(names(&answers[0], "prompts", "name"), Vec::<String>::new());
        assert_eq!(
            names(&answers[1], "resources", "uri"),
            ["file:///docs/a.md", "file:///docs/b.md"]
        );
        assert_eq!(
            names(&answers[2], "resourceTemplates", "uriTemplate"),
            ["file:///docs/{path}"]
        );
        assert_eq!(answers[3]["result"]["method"], "tools/call");
    }
    let r = f
        .post("/mcp", &sre, &call(1, "prompts/list", json!({})), &[])
        .await;
    assert_eq!(names(&r.json(), "prompts", "name"), PROMPTS);
}

#[tokio::test]
async fn a_list_answer_over_the_bound_is_refused_and_audit_mode_shows_lists_whole() {
    let f = Fixture::start("enforce").await;
    let sre = f.user("alice", &["sre"]);
    let r = f.post("/big", &sre, &call(1, "tools/list", json!({})), &[]).await;
    assert_eq!(
        (r.status, r.reason().as_str()),
        (502, "list_not_filtered"),
        "{r:?}"
    );
    assert!(
        r.json()["error"]["data"]["detail"]
            .as_str()
            .unwrap()
            .contains("bound of 4194304 bytes")
    );
    assert_eq!(
        f.metric("mcp_guard_requests_total{verdict=\"rejected\",reason=\"list_not_filtered\"}"),
        1.0
    );
    assert_eq!(
        f.metric("mcp_guard_requests_total{verdict=\"allowed\",reason=\"none\"}"),
        0.0,
        "counted once, as rejected"
    );
    // The same server's other answers pass: only list answers are held.
    let r = f.post("/big", &sre, &tool(1, "deploy"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");

    let f = Fixture::start("audit").await;
    let plain = f.user("bob", &[]);
    let r = f
        .post("/mcp", &plain, &call(1, "tools/list", json!({})), &[])
        .await;
    assert_eq!(names(&r.json(), "tools", "name"), TOOLS[..3]);
}

#[tokio::test]
async fn resumed_streams_replay_list_answers_filtered_and_a_cut_one_is_counted() {
    let f = Fixture::start("enforce").await;
    let agent = f.sa("team-a", "agent");
    // Answers to list calls the guard never saw, replayed: filtered by what they are.
    let r = f.resume("/resume", &agent).await;
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.body.as_ref().unwrap();
    for hidden in ["delete_file", "deploy", "file:///secrets"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    let events = r.events();
    assert_eq!(events.len(), 4, "{text}");
    assert_eq!(events[0]["method"], "notifications/progress");
    assert_eq!(events[1]["id"], "earlier-1");
    assert_eq!(names(&events[1], "tools", "name"), ["read_file", "search"]);
    assert_eq!(
        names(&events[2], "resources", "uri"),
        ["file:///docs/a.md", "file:///docs/b.md"]
    );
    assert_eq!(
        events[3]["RESULT"]["Tools"],
        json!([{"name": "echo", "inputSchema": {"type": "object"}}])
    );
    assert!(text.contains(": keep-alive\n"), "comments are kept: {text}");
    assert!(text.contains("id: e3\n"), "event ids are kept: {text}");
    // Whoever may call everything sees everything.
    let sre = f.user("alice", &["sre"]);
    let r = f.resume("/resume", &sre).await;
    assert_eq!(names(&r.events()[1], "tools", "name"), TOOLS[..3]);

    // A replayed list over the bound, and a server that dies in the middle of one: cut, never passed, counted.
    let cut = |reason: &str| f.metric(&format!("mcp_guard_responses_cut_total{{reason=\"{reason}\"}}"));
    assert_eq!(
        (cut("list_not_filtered"), cut("upstream_unavailable")),
        (0.0, 0.0)
    );
    let r = f.resume("/resume-big", &agent).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_err(), "{:?}", r.body.map(|b| b.len()));
    assert_eq!(cut("list_not_filtered"), 1.0);
    let headers = [("accept", "text/event-stream"), ("last-event-id", "e1")];
    let resp = f
        .respond(http::Method::GET, "/resume-dies", &agent, "", &headers)
        .await;
    assert_eq!(resp.status(), 200);
    f.upstream.die.notify_one();
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(cut("upstream_unavailable"), 1.0);
    assert_eq!(cut("list_not_filtered"), 1.0);
    // The guard's cut is a refusal in the audit log; the server's death is not the guard's decision.
    let lines = f
        .audit
        .until(|ls| ls.iter().any(|l| l["reason"] == "list_not_filtered"))
        .await;
    let cuts: Vec<&Value> = lines.iter().filter(|l| l["decision"] != "allowed").collect();
    assert_eq!(cuts.len(), 1, "{lines:?}");
    assert_eq!(
        (&cuts[0]["httpMethod"], &cuts[0]["decision"], &cuts[0]["status"]),
        (&json!("GET"), &json!("denied"), &json!(200))
    );

    // Audit mode shows replayed lists whole, as it does the others.
    let f = Fixture::start("audit").await;
    let plain = f.user("bob", &[]);
    let r = f.resume("/resume", &plain).await;
    assert_eq!(names(&r.events()[1], "tools", "name"), TOOLS[..3]);
}

#[tokio::test]
async fn a_list_answer_on_a_call_s_event_stream_is_filtered_whatever_its_id() {
    let f = Fixture::start("enforce").await;
    let agent = f.sa("team-a", "agent");
    // The server answers a tools/call and, in the same stream, a list under an id the client never sent (an
    // answer to another request): filtered all the same.
    let r = f.post("/sse-stray", &agent, &tool(4, "read_file"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let events = r.events();
    assert_eq!(events[1]["result"]["method"], "tools/call");
    assert_eq!(events[2]["id"], "stray");
    assert_eq!(names(&events[2], "tools", "name"), ["read_file", "search"]);
}

/// Identities for the property test: what each may call.
fn identity_tokens(f: &Fixture) -> Vec<(String, Identity)> {
    let sa = |ns: &str, name: &str| Identity {
        issuer: KUBE.into(),
        subject: Some(format!("system:serviceaccount:{ns}:{name}")),
        client_id: None,
        scopes: Vec::new(),
        groups: Vec::new(),
        service_account: Some(format!("{ns}/{name}")),
        expires_at: u64::MAX,
    };
    let user = |sub: &str, groups: &[&str]| Identity {
        issuer: OAUTH.into(),
        subject: Some(sub.into()),
        client_id: Some("cli".into()),
        scopes: Vec::new(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        service_account: None,
        expires_at: u64::MAX,
    };
    vec![
        (f.sa("team-a", "agent"), sa("team-a", "agent")),
        (f.user("alice", &["sre"]), user("alice", &["sre"])),
        (f.user("bob", &[]), user("bob", &[])),
    ]
}

mod property {
    use super::*;
    use mcp_guard_config::AccessConfig;
    use proptest::prelude::*;

    fn string(options: &[&'static str]) -> impl Strategy<Value = String> {
        prop::sample::select(options.to_vec()).prop_map(str::to_owned)
    }

    /// A method as JSON text, escaped or not.
    fn method() -> impl Strategy<Value = String> {
        string(&[
            r#""tools/call""#,
            r#""tools\u002fcall""#,
            r#""tools\/call""#,
            r#""prompts/get""#,
            r#""resources/read""#,
            r#""ping""#,
            r#""tools/list""#,
            r#""admin/reset""#,
            "7",
        ])
    }

    fn name() -> impl Strategy<Value = String> {
        string(&[
            r#""read_file""#,
            r#""re\u0061d_file""#,
            r#""delete_file""#,
            r#""del\u0065te_file""#,
            r#""echo""#,
            r#""greet""#,
            r#""file:///docs/a.md""#,
            r#""file:///secrets/key""#,
            "null",
        ])
    }

    fn member() -> impl Strategy<Value = String> {
        prop_oneof![
            (string(&["method", "m\\u0065thod", "Method"]), method())
                .prop_map(|(k, v)| format!("\"{k}\":{v}")),
            (
                string(&["params", "p\\u0061rams"]),
                prop::collection::vec(
                    prop_oneof![
                        (
                            string(&["name", "n\\u0061me", "NAME", "uri", "\\u0075ri", "Uri"]),
                            name()
                        )
                            .prop_map(|(k, v)| format!("\"{k}\":{v}")),
                        (0usize..9000)
                            .prop_map(|n| format!("\"arguments\":{{\"pad\":\"{}\"}}", "x".repeat(n))),
                    ],
                    0..4
                )
            )
                .prop_map(|(k, members)| format!("\"{k}\":{{{}}}", members.join(","))),
            string(&[r#""id":1"#, r#""jsonrpc":"2.0""#, r#""id":"x""#]),
            (0usize..9000).prop_map(|n| format!("\"pad\":\"{}\"", "p".repeat(n))),
        ]
    }

    fn message() -> impl Strategy<Value = String> {
        prop::collection::vec(member(), 1..6).prop_map(|m| format!("{{{}}}", m.join(",")))
    }

    fn body() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => message(),
            1 => prop::collection::vec(message(), 1..4).prop_map(|v| format!("[{}]", v.join(","))),
        ]
    }

    /// What serde_json reads of one message: its method and what it names (exact keys, last one winning).
    fn calls(v: &Value) -> Vec<(Option<String>, Option<String>)> {
        let one = |m: &Value| {
            let method = m["method"].as_str().map(str::to_owned);
            let field = method.as_deref().and_then(mcp_guard_config::access::named_by);
            let named = field.and_then(|f| m["params"][f].as_str()).map(str::to_owned);
            (method, named)
        };
        match v {
            Value::Array(batch) => batch.iter().map(one).collect(),
            m => vec![one(m)],
        }
    }

    /// Over generated bodies (single and batch, escaped, duplicated and cased keys, names past the peek
    /// window): a body reaches the upstream only if every call serde_json reads in it is one the access rules
    /// allow the caller.
    #[test]
    fn a_call_reaches_the_upstream_only_if_the_rules_allow_what_a_json_parser_reads() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let f = rt.block_on(Fixture::start("enforce"));
        let ids = identity_tokens(&f);
        let rules: AccessConfig = serde_json::from_value(rules()).unwrap();
        let rules = rules.compile().unwrap();
        let config = ProptestConfig {
            cases: 400,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let passed = std::cell::Cell::new(0);
        proptest!(config, |(body in body(), who in 0usize..3)| {
            let (token, identity) = &ids[who];
            let before = f.upstream.count();
            let r = rt.block_on(f.post("/mcp", token, &body, &[]));
            let reached = f.upstream.count() > before;
            if reached {
                passed.set(passed.get() + 1);
                let v: Value = serde_json::from_str(&body).expect("only JSON reaches the upstream");
                for (method, named) in calls(&v) {
                    // No method: a JSON-RPC response (or no JSON-RPC at all), which runs nothing.
                    let Some(method) = method else { continue };
                    prop_assert!(
                        rules.decide(Some(identity), Some(&method), named.as_deref()).is_ok(),
                        "{method} {named:?} reached the upstream for {identity:?}: {body}"
                    );
                }
            } else {
                prop_assert!(r.status != 200, "{r:?}");
            }
        });
        let passed = passed.get();
        assert!(
            passed > 20,
            "too few bodies passed to hold the property: {passed}"
        );
    }
}
