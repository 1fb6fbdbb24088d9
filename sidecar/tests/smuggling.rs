//! Request smuggling, black-box: the real `mcp-guard` binary between raw-socket clients and upstreams that record
//! every request they read. Whatever a client sends, an upstream sees exactly one well-framed request for each
//! request the guard lets through, and never one the guard refused or one hidden in another's body, on a fresh
//! upstream connection and on a reused one, with HTTP/1.1 and h2c upstreams. The classes are those of public
//! request-smuggling research: CL.TE, TE.CL, obfuscated `Transfer-Encoding`, `Connection`-named framing fields,
//! chunk-size, extension and trailer tricks, pipelining after a refusal, HTTP/1.0, bare CR/LF, obs-fold.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::wire::*;
use support::*;
use tokio::net::TcpListener;

/// A request as an upstream read it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An HTTP/1.1 keep-alive upstream that reads requests with the test's own reading of RFC 9112 and answers each
/// with its request line as the body, so a client that gets another's answer shows it.
async fn h1_recorder() -> (String, Log) {
    let log = Log::default();
    let record = log.clone();
    let url = raw_upstream(move |mut w| {
        let log = record.clone();
        async move {
            while let Ok(m) = w.request().await {
                let (method, target) = (m.method().to_owned(), m.target().to_owned());
                let line = format!("{method} {target}");
                log.lock().unwrap().push(Seen {
                    method,
                    target,
                    headers: m.headers.clone(),
                    body: m.body.clone(),
                });
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{line}",
                    line.len()
                );
                if w.send(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (url, log)
}

/// An h2c upstream (hyper's server) that records each request and answers as [`h1_recorder`] does.
async fn h2_recorder() -> (String, Log) {
    let log = Log::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = log.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let log = record.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let log = log.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    let line = format!("{} {target}", parts.method);
                    if let Ok(body) = body {
                        log.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            target,
                            headers: parts
                                .headers
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect(),
                            body,
                        });
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(line))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service),
            );
        }
    });
    (format!("h2c://{addr}"), log)
}

/// What a case must come to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// One request reaches the upstream with this target and body; the client gets its answer.
    Forwarded {
        target: &'static str,
        body: &'static [u8],
    },
    /// Refused with this status; no complete request reaches the upstream.
    Refused(u16),
}

struct Case {
    name: &'static str,
    bytes: String,
    expect: Expect,
    /// The guard closes the client connection after its answer.
    closes: bool,
}

fn case(name: &'static str, bytes: impl Into<String>, expect: Expect, closes: bool) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        expect,
        closes,
    }
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n";

fn cases() -> Vec<Case> {
    use Expect::*;
    let h = HOST;
    vec![
        case(
            "plain",
            format!("GET /plain HTTP/1.1\r\nHost: {h}\r\n\r\n"),
            Forwarded {
                target: "/plain",
                body: b"",
            },
            false,
        ),
        // CL.TE: the front end reads Content-Length, the back end chunked (or the other way round). hyper drops the
        // Content-Length (RFC 9112 §6.3), reads the chunked body, and closes after the answer.
        case(
            "CL.TE",
            format!(
                "POST /cl-te HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            Forwarded {
                target: "/cl-te",
                body: b"",
            },
            true,
        ),
        case(
            "TE.CL",
            format!(
                "POST /te-cl HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"
            ),
            Forwarded {
                target: "/te-cl",
                body: b"SMUGGLED",
            },
            true,
        ),
        case(
            "TE list",
            format!(
                "POST /te HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        case(
            "TE twice",
            format!(
                "POST /te HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        case(
            "TE chunked not last",
            format!(
                "POST /te HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        case(
            "TE xchunked",
            format!(
                "POST /te HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        case(
            "TE space before colon",
            format!(
                "POST /te HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        case(
            "TE in HTTP/1.0",
            format!(
                "POST /te HTTP/1.0\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        // The original flaw: a field the client names in Connection is hop-by-hop, but a framing field never is.
        case(
            "Connection names Content-Length",
            format!(
                "POST /conn-cl HTTP/1.1\r\nHost: {h}\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            Forwarded {
                target: "/conn-cl",
                body: SMUGGLED.as_bytes(),
            },
            false,
        ),
        case(
            "Connection names Transfer-Encoding",
            format!(
                "POST /conn-te HTTP/1.1\r\nHost: {h}\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            Forwarded {
                target: "/conn-te",
                body: b"hello",
            },
            true,
        ),
        case(
            "Connection names Host",
            format!("GET /conn-host HTTP/1.1\r\nHost: {h}\r\nConnection: host, x-forwarded-for\r\n\r\n"),
            Forwarded {
                target: "/conn-host",
                body: b"",
            },
            false,
        ),
        case(
            "chunk extension",
            format!(
                "POST /ext HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d\"\r\nhello\r\n0\r\n\r\n"
            ),
            Forwarded {
                target: "/ext",
                body: b"hello",
            },
            true,
        ),
        case(
            "chunk extensions beyond hyper's limit",
            format!(
                "POST /ext HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\na\r\n0\r\n\r\n",
                "x".repeat(40 * 1024)
            ),
            Refused(400),
            true,
        ),
        case(
            "chunk size not hex",
            format!(
                "POST /size HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            ),
            Refused(400),
            true,
        ),
        case(
            "chunk size with a sign",
            format!(
                "POST /size HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"
            ),
            Refused(400),
            true,
        ),
        case(
            "chunk size overflowing",
            format!(
                "POST /size HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n"
            ),
            Refused(400),
            true,
        ),
        case(
            "chunk data longer than its size",
            format!(
                "POST /size HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"
            ),
            Refused(400),
            true,
        ),
        // A trailer section is where hyper's chunked decoder and its field parser disagree (see the line-end
        // table below): refused, well-formed or not.
        case(
            "trailer field",
            format!(
                "POST /trailer HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n"
            ),
            Refused(400),
            true,
        ),
        case(
            "trailer line that is a request",
            format!(
                "POST /trailer HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        case(
            "Content-Length with a sign",
            format!("POST /cl HTTP/1.1\r\nHost: {h}\r\nContent-Length: +5\r\n\r\nhello"),
            Refused(400),
            true,
        ),
        case(
            "Content-Length twice, different",
            format!(
                "POST /cl HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\nContent-Length: 44\r\n\r\nhello{SMUGGLED}"
            ),
            Refused(400),
            true,
        ),
        case(
            "HTTP/1.0 with a body",
            format!("POST /http10 HTTP/1.0\r\nHost: {h}\r\nContent-Length: 5\r\n\r\nhello"),
            Forwarded {
                target: "/http10",
                body: b"hello",
            },
            true,
        ),
        case(
            "bare CR",
            format!("GET /cr HTTP/1.1\rHost: {h}\r\n\r\n"),
            Refused(400),
            true,
        ),
        // RFC 9112 §2.2: a recipient may take a bare LF as a line end, as hyper does; the upstream gets CRLF.
        case(
            "bare LF as a line end",
            format!("POST /lf HTTP/1.1\nHost: {h}\nContent-Length: 5\n\nhello"),
            Forwarded {
                target: "/lf",
                body: b"hello",
            },
            false,
        ),
        // `_` for `-`: an ordinary field to hyper, the framing field itself to CGI-style servers.
        case(
            "Transfer_Encoding",
            format!(
                "POST /te HTTP/1.1\r\nHost: {h}\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"
            ),
            Refused(400),
            true,
        ),
        case(
            "obs-fold",
            format!("GET /fold HTTP/1.1\r\nHost: {h}\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n"),
            Refused(400),
            true,
        ),
        case(
            "absolute-form",
            format!("GET http://{h}/abs?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
            Forwarded {
                target: "/abs?x=1",
                body: b"",
            },
            false,
        ),
        case(
            "absolute-form to another host",
            format!("GET http://evil.example/abs HTTP/1.1\r\nHost: {h}\r\n\r\n"),
            Refused(421),
            false,
        ),
        case(
            "ws:// target",
            format!("GET ws://{h}/abs HTTP/1.1\r\nHost: {h}\r\n\r\n"),
            Refused(400),
            true,
        ),
        case(
            "CONNECT",
            format!("CONNECT {h}:443 HTTP/1.1\r\nHost: {h}:443\r\n\r\n"),
            Refused(400),
            true,
        ),
        case(
            "forbidden Host with a body",
            format!(
                "POST /evil HTTP/1.1\r\nHost: evil.example\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            Refused(421),
            false,
        ),
    ]
}

/// Runs one case on a client connection (after `warmup`, a request that makes the case's upstream connection a
/// reused one), then a canary from another client, which reuses the same upstream connection when it survived.
async fn run(guard: &Guard, log: &Log, c: &Case, warmup: bool, h2: bool) {
    let what = format!("{} (warm-up: {warmup})", c.name);
    log.lock().unwrap().clear();
    let mut client = Wire::connect(guard.addr).await;
    if warmup {
        client
            .send(format!("GET /warmup HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
            .await
            .unwrap();
        let r = client.response(false).await.unwrap();
        assert_eq!((r.status(), r.text().as_str()), (200, "GET /warmup"), "{what}");
    }
    client.send(&c.bytes).await.unwrap();
    let r = client
        .response(false)
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    if c.closes {
        assert!(
            client.closed().await,
            "{what}: the connection closes after the answer"
        );
    }
    drop(client);

    let mut canary = Wire::connect(guard.addr).await;
    canary
        .send(format!(
            "GET /canary HTTP/1.1\r\nHost: {HOST}\r\nX-Canary: 1\r\n\r\n"
        ))
        .await
        .unwrap();
    let answer = canary.response(false).await.unwrap();
    assert_eq!(
        (answer.status(), answer.text().as_str()),
        (200, "GET /canary"),
        "{what}: the next client gets its own answer"
    );

    let seen = log.lock().unwrap().clone();
    let (warm, rest) = seen.split_at(usize::from(warmup));
    if warmup {
        assert_eq!(warm[0].target, "/warmup", "{what}: {seen:?}");
    }
    let (canary_seen, case_seen) = rest.split_last().unwrap_or_else(|| panic!("{what}: {seen:?}"));
    assert_eq!(canary_seen.target, "/canary", "{what}: {seen:?}");
    assert_eq!(canary_seen.header("x-canary"), Some("1"), "{what}: {seen:?}");
    assert!(canary_seen.body.is_empty(), "{what}: {seen:?}");
    match c.expect {
        Expect::Forwarded { target, body } => {
            assert_eq!(
                (r.status(), r.text()),
                (200, case_seen_line(case_seen)),
                "{what}: {r:?}"
            );
            assert_eq!(
                case_seen.len(),
                1,
                "{what}: exactly one request reached the upstream: {seen:?}"
            );
            let s = &case_seen[0];
            assert_eq!(
                (s.target.as_str(), s.body.as_slice()),
                (target, body),
                "{what}: {s:?}"
            );
            // One Host, the upstream's (an h2c upstream has `:authority` instead).
            let hosts: Vec<_> = s.headers.iter().filter(|(n, _)| n == "host").collect();
            assert_eq!(hosts.len(), usize::from(!h2), "{what}: {s:?}");
        }
        Expect::Refused(status) => {
            assert_eq!(r.status(), status, "{what}: {r:?}");
            assert!(
                case_seen.is_empty(),
                "{what}: nothing reached the upstream: {seen:?}"
            );
        }
    }
}

fn case_seen_line(seen: &[Seen]) -> String {
    seen.first()
        .map(|s| format!("{} {}", s.method, s.target))
        .unwrap_or_default()
}

async fn all_cases(upstream: &str, log: &Log) {
    let guard = start_guard(&[
        "--upstream",
        upstream,
        "--allow-host",
        HOST,
        "--worker-threads",
        "1",
    ])
    .await;
    let h2 = upstream.starts_with("h2c:");
    for c in cases() {
        run(&guard, log, &c, false, h2).await;
        run(&guard, log, &c, true, h2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_refused_or_hidden_reaches_an_http1_upstream() {
    let (url, log) = h1_recorder().await;
    all_cases(&url, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_refused_or_hidden_reaches_an_h2c_upstream() {
    let (url, log) = h2_recorder().await;
    all_cases(&url, &log).await;
}

/// h2c clients: hyper's h2 server frames their requests; the same policy decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_meet_the_same_policy() {
    for (url, log) in [h1_recorder().await, h2_recorder().await] {
        let guard = start_guard(&["--upstream", &url, "--allow-host", HOST]).await;
        let stream = tokio::net::TcpStream::connect(guard.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut exchange = async |req: Request<Full<Bytes>>| {
            let resp = send.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        let post = Request::post(format!("http://{HOST}/h2-post"))
            .header("connection-like", "x")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        assert_eq!(exchange(post).await, (200, "POST /h2-post".to_owned()), "{url}");
        let evil = Request::get("http://evil.example/h2-evil")
            .body(Full::default())
            .unwrap();
        assert_eq!(exchange(evil).await.0, 421, "{url}");
        let connect = Request::connect(format!("{HOST}:443"))
            .body(Full::default())
            .unwrap();
        let (status, body) = exchange(connect).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(body.contains("CONNECT"), "{url}: {body}");
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{url}: {seen:?}");
        assert_eq!(
            (seen[0].target.as_str(), seen[0].body.as_slice()),
            ("/h2-post", &b"hello"[..])
        );
    }
}

/// One generated request: what the client means, and how it frames and spells it.
#[derive(Clone, Debug)]
struct Intent {
    method: &'static str,
    path: String,
    allowed_host: bool,
    /// End-to-end fields (distinct names) with the casing to send them in.
    fields: Vec<(String, String)>,
    /// Names listed in `Connection`.
    connection: Vec<&'static str>,
    framing: Framing,
    body: Vec<u8>,
    /// Where the Host field goes among the others.
    host_at: usize,
}

#[derive(Clone, Debug)]
enum Framing {
    None,
    /// A Content-Length, after this many leading zeros (valid, not as hyper writes it).
    Length(usize),
    /// Chunked, cut at these sizes (the rest in a last chunk).
    Chunked(Vec<usize>),
    /// Both: chunked, and a Content-Length that disagrees.
    Both(usize),
}

fn intent() -> impl proptest::strategy::Strategy<Value = Intent> {
    use proptest::prelude::*;
    let names = [
        "x-a",
        "x-b",
        "mcp-session-id",
        "content-type",
        "x-forwarded-for",
        "forwarded",
        "x-original-host",
    ];
    let connection = [
        "keep-alive",
        "x-a",
        "content-length",
        "transfer-encoding",
        "host",
        "origin",
        "x-forwarded-proto",
        "te",
    ];
    let framing = prop_oneof![
        Just(Framing::None),
        prop_oneof![3 => Just(0usize), 1 => 1usize..3].prop_map(Framing::Length),
        proptest::collection::vec(1usize..8, 0..4).prop_map(Framing::Chunked),
        (0usize..10).prop_map(Framing::Both),
    ];
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
        "[a-z0-9]{1,8}",
        prop::bool::weighted(0.8),
        prop::sample::subsequence(names.to_vec(), 0..=names.len()),
        proptest::collection::vec(("[a-zA-Z0-9]{1,6}", prop::bool::ANY), names.len()),
        prop::sample::subsequence(connection.to_vec(), 0..4),
        framing,
        proptest::collection::vec(b'!'..=b'~', 0..40),
        0usize..8,
    )
        .prop_map(
            |(method, path, allowed_host, chosen, values, connection, framing, body, host_at)| {
                let fields = chosen
                    .iter()
                    .zip(values)
                    .map(|(n, (v, upper))| {
                        (
                            if upper {
                                n.to_ascii_uppercase()
                            } else {
                                (*n).to_owned()
                            },
                            v,
                        )
                    })
                    .collect();
                Intent {
                    method,
                    path: format!("/{path}"),
                    allowed_host,
                    fields,
                    connection,
                    framing,
                    body,
                    host_at,
                }
            },
        )
}

impl Intent {
    fn body(&self) -> &[u8] {
        if matches!(self.framing, Framing::None) {
            b""
        } else {
            &self.body
        }
    }

    fn wire(&self) -> Vec<u8> {
        let host = if self.allowed_host { HOST } else { "evil.example" };
        let mut lines: Vec<String> = self.fields.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        if !self.connection.is_empty() {
            lines.push(format!("Connection: {}", self.connection.join(", ")));
        }
        let body = self.body();
        match &self.framing {
            Framing::None => {}
            Framing::Length(zeros) => {
                lines.push(format!("Content-Length: {}{}", "0".repeat(*zeros), body.len()))
            }
            Framing::Chunked(_) => lines.push("Transfer-Encoding: chunked".into()),
            Framing::Both(cl) => {
                lines.push(format!("Content-Length: {cl}"));
                lines.push("Transfer-Encoding: chunked".into());
            }
        }
        lines.insert(self.host_at.min(lines.len()), format!("Host: {host}"));
        let mut out = format!(
            "{} {} HTTP/1.1\r\n{}\r\n\r\n",
            self.method,
            self.path,
            lines.join("\r\n")
        )
        .into_bytes();
        let cuts = match &self.framing {
            Framing::Chunked(cuts) => cuts.clone(),
            Framing::Both(_) => vec![],
            _ => {
                out.extend_from_slice(body);
                return out;
            }
        };
        let mut rest = body;
        for n in cuts {
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            if !chunk.is_empty() {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            rest = tail;
        }
        if !rest.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    /// What the upstream must see of the fields: the end-to-end ones not named in `Connection`.
    fn expected_fields(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .fields
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .filter(|(n, _)| {
                !self.connection.contains(&n.as_str())
                    && !matches!(n.as_str(), "x-forwarded-for" | "forwarded" | "x-original-host")
            })
            .collect();
        v.sort();
        v
    }
}

/// Generated requests (field order and casing, `Connection` lists, framing, bodies, allowed or not): the
/// upstream's view is exactly the client's intent, or the request was refused and the upstream saw nothing.
#[test]
fn the_upstream_sees_the_clients_intent_or_nothing() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, log) = rt.block_on(h1_recorder());
    let guard = rt.block_on(start_guard(&["--upstream", &url, "--allow-host", HOST]));
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&intent(), |i| {
        rt.block_on(async {
            log.lock().unwrap().clear();
            let mut c = Wire::connect(guard.addr).await;
            c.send(i.wire()).await.unwrap();
            let r = c.response(false).await.unwrap();
            let seen = log.lock().unwrap().clone();
            if !i.allowed_host {
                assert_eq!(r.status(), 421, "{r:?}");
                assert!(seen.is_empty(), "{seen:?}");
                return;
            }
            assert_eq!(r.status(), 200, "{r:?}");
            assert_eq!(seen.len(), 1, "{seen:?}");
            let s = &seen[0];
            assert_eq!(
                (s.method.as_str(), s.target.as_str()),
                (i.method, i.path.as_str())
            );
            let body: &[u8] = if matches!(i.framing, Framing::Both(_)) {
                &i.body
            } else {
                i.body()
            };
            assert_eq!(s.body, body, "{s:?}");
            let mut fields: Vec<(String, String)> = s
                .headers
                .iter()
                .filter(|(n, _)| !matches!(n.as_str(), "host" | "content-length" | "transfer-encoding"))
                .filter(|(n, _)| !n.starts_with("x-forwarded-"))
                .cloned()
                .collect();
            fields.sort();
            assert_eq!(fields, i.expected_fields(), "{s:?}");
            assert_eq!(s.header("host"), Some(url.trim_start_matches("http://")), "{s:?}");
            // Framed again: a length is the body's, in hyper's form, whatever form the client's had.
            match (&i.framing, s.header("content-length")) {
                (Framing::Chunked(_) | Framing::Both(_), length) => {
                    assert_eq!(length, None, "{s:?}");
                    assert_eq!(s.header("transfer-encoding"), Some("chunked"), "{s:?}");
                }
                (_, Some(length)) => assert_eq!(length, body.len().to_string(), "{s:?}"),
                (_, None) => assert!(body.is_empty(), "{s:?}"),
            }
            assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"), "{s:?}");
            assert_eq!(s.header("x-forwarded-host"), Some(HOST), "{s:?}");
        });
        Ok(())
    });
    result.unwrap();
}

/// The first request of the issue's attack, up to the line end after its last chunk.
const CHUNKED_HEAD: &str =
    "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";

/// What a client pipelines after a chunked body: a request the guard allows, one it refuses, and the issue's
/// carrier (a front proxy reads `GET /SMUGGLED` as its body).
const FOLLOWERS: [(&str, &str); 3] = [
    ("allowed", "GET /next HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n"),
    (
        "forbidden",
        "GET /forbidden HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    ),
    (
        "carrier",
        "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Length: 49\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n",
    ),
];

/// Sends `bytes` as one write and reads every answer until the guard closes the connection. A connection left
/// open with nothing more to say (the guard waiting for bytes a front proxy would think were all sent) fails.
async fn answers_until_closed(guard: &Guard, bytes: &str, what: &str) -> Vec<Msg> {
    let mut c = Wire::connect(guard.addr).await;
    c.send(bytes).await.unwrap();
    let mut answers = Vec::new();
    loop {
        match c.response(false).await {
            Ok(m) => answers.push(m),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("{what}: the connection hangs after {answers:?}: {e}")
            }
            // EOF or a reset: closed.
            Err(_) => return answers,
        }
    }
}

/// The issue's bytes: the front proxy (reading a bare LF as a line end, as nginx does) sees `POST /mcp` with
/// `hello`, then `POST /mcp` with `GET /SMUGGLED ...` as its body. The guard refuses the first (its trailer
/// section is where hyper reads on past the front proxy's end) and closes: `GET /SMUGGLED` never reaches the
/// upstream, and no request is left unanswered on an open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_bare_lf_after_the_last_chunk_smuggles_nothing() {
    let (url, log) = h1_recorder().await;
    let guard = start_guard(&["--upstream", &url, "--allow-host", HOST]).await;
    let bytes = format!("{CHUNKED_HEAD}5\r\nhello\r\n0\r\n\n{}", FOLLOWERS[2].1);
    let answers = answers_until_closed(&guard, &bytes, "the issue's bytes").await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_rejection(&answers[0], 400, "malformed_request");
    assert!(answers[0].text().contains("trailer section"), "{answers:?}");
    assert_eq!(answers[0].header("connection"), Some("close"), "{answers:?}");
    let seen = log.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "no complete request reached the upstream: {seen:?}"
    );
}

/// Where a line end of a chunked body is varied (`{E}`), and whether the body has a trailer section.
const PLACES: [(&str, &str, bool); 8] = [
    ("chunk-size line", "5{E}hello\r\n0\r\n\r\n", false),
    ("chunk-extension line", "5;ext=1{E}hello\r\n0\r\n\r\n", false),
    ("chunk data end", "5\r\nhello{E}0\r\n\r\n", false),
    ("last-chunk line", "5\r\nhello\r\n0{E}\r\n", false),
    ("last-chunk extension", "5\r\nhello\r\n0;ext=1{E}\r\n", false),
    ("end of the body", "5\r\nhello\r\n0\r\n{E}", false),
    ("trailer line", "5\r\nhello\r\n0\r\nX-T: 1{E}\r\n", true),
    ("end of the trailers", "5\r\nhello\r\n0\r\nX-T: 1\r\n{E}", true),
];

/// Every line end of one to three CRs and LFs.
fn line_ends() -> Vec<String> {
    (1..=3)
        .flat_map(|n| {
            (0..1u32 << n).map(move |bits| {
                (0..n)
                    .map(|i| if bits >> i & 1 == 1 { '\n' } else { '\r' })
                    .collect()
            })
        })
        .collect()
}

/// Issue 20: every line end of one to three CRs and LFs in every line of a chunked body (chunk size, extension,
/// data end, last chunk, trailer), followed by a pipelined request. Whatever a front proxy makes of the bytes, the
/// guard's reading never gives the upstream a request the client did not send as one, nor one the guard did not
/// check: only the well-formed body (CRLF everywhere, no trailers) is forwarded, anything else is refused with
/// `400`, and the connection closes after the one answer, so the pipelined request is neither smuggled, nor
/// swallowed with the connection left open until the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_line_end_in_a_chunked_body_desynchronises_the_guard() {
    let (url, log) = h1_recorder().await;
    let guard = start_guard(&["--upstream", &url, "--allow-host", HOST]).await;
    let mut cases = 0;
    for (place, template, trailers) in PLACES {
        for end in line_ends() {
            for (follower, next) in FOLLOWERS {
                let what = format!("{place} ending {end:?}, then the {follower} request");
                log.lock().unwrap().clear();
                let bytes = format!("{CHUNKED_HEAD}{}{next}", template.replace("{E}", &end));
                let answers = answers_until_closed(&guard, &bytes, &what).await;
                let seen = log.lock().unwrap().clone();
                assert_eq!(answers.len(), 1, "{what}: one answer, then closed: {answers:?}");
                let answer = &answers[0];
                assert_eq!(answer.header("connection"), Some("close"), "{what}: {answer:?}");
                // Well-formed: CRLF where a line ends, no trailers; a body that ends well-formed may be followed
                // by stray line ends, which nothing reads (the connection closes after the answer).
                let well_formed =
                    !trailers && (end == "\r\n" || (template.ends_with("{E}") && end.starts_with("\r\n")));
                if well_formed {
                    assert_eq!(answer.status(), 200, "{what}: {answer:?}");
                    assert_eq!(seen.len(), 1, "{what}: {seen:?}");
                    assert_eq!(
                        (seen[0].target.as_str(), seen[0].body.as_slice()),
                        ("/mcp", &b"hello"[..]),
                        "{what}"
                    );
                } else {
                    assert_rejection(answer, 400, "malformed_request");
                    assert!(seen.is_empty(), "{what}: nothing reached the upstream: {seen:?}");
                }
                cases += 1;
            }
        }
    }
    assert_eq!(cases, PLACES.len() * 14 * FOLLOWERS.len());
}
