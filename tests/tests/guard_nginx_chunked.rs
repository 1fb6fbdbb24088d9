//! Issue 20 with a real front proxy: client → nginx (Debian; HTTP/1.1 to the guard over kept-alive connections,
//! `proxy_request_buffering off`, so a chunked body goes on chunked as it arrives) → guard → a back-end nginx that
//! logs every request it gets. Whatever line ends a client puts in a chunked body, the requests that reach the
//! back end are exactly those nginx answered from it: nginx and the guard count the same requests.
//!
//! nginx 1.22 does not forward a client's chunked bytes verbatim: it decodes them (reading a bare LF as a line end)
//! and sends chunks of its own, without extensions or trailers. So the attack cannot pass through it; the direct
//! tests (`sidecar/tests/smuggling.rs`) send the bytes to the guard itself.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::mcp::{Guard, GuardOptions};
use testkit::nginx::{Nginx, proxy_location};

const HOST: &str = "mcp.example.com";
const HEAD: &str = "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Where a line end of the chunked body is varied (`{E}`).
const PLACES: [&str; 8] = [
    "5{E}hello\r\n0\r\n\r\n",
    "5;ext=1{E}hello\r\n0\r\n\r\n",
    "5\r\nhello{E}0\r\n\r\n",
    "5\r\nhello\r\n0{E}\r\n",
    "5\r\nhello\r\n0;ext=1{E}\r\n",
    "5\r\nhello\r\n0\r\n{E}",
    "5\r\nhello\r\n0\r\nX-T: 1{E}\r\n",
    "5\r\nhello\r\n0\r\nX-T: 1\r\n{E}",
];

/// Pipelined after the body, each closing the client connection when nginx reads it as a request: an allowed
/// request, a forbidden one, and the issue's carrier (its body is a request).
fn followers() -> [String; 3] {
    let smuggled = "GET /SMUGGLED HTTP/1.1\r\nHost: mcp.example.com\r\nConnection: close\r\n\r\n";
    [
        "GET /next HTTP/1.1\r\nHost: mcp.example.com\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /forbidden HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_owned(),
        format!(
            "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
            smuggled.len()
        ),
    ]
}

struct Stack {
    back: Nginx,
    _guard: Guard,
    front: Nginx,
}

fn stack() -> Stack {
    let port = testkit::tools::free_port();
    let back = Nginx::start_with(port, 1, |dir| {
        format!(
            r#"log_format seen '$request_method $request_uri';
    server {{
        listen 127.0.0.1:{port};
        access_log {}/seen.log seen;
        location / {{ return 200 "$request_method $request_uri"; }}
    }}"#,
            dir.display()
        )
    });
    let back = back.expect("start the back-end nginx");
    let guard = GuardOptions::hosts(&[HOST])
        .start(&back.base_url())
        .expect("start mcp-guard");
    let (guard_port, port) = (guard.addr.port(), testkit::tools::free_port());
    let front = Nginx::start_with(port, 1, |_| {
        format!(
            "upstream guard {{ server 127.0.0.1:{guard_port}; keepalive 8; }}\n    server {{\n        listen 127.0.0.1:{port};\n{}\n    }}",
            proxy_location("http://guard")
        )
    })
    .expect("start the front nginx");
    Stack {
        back,
        _guard: guard,
        front,
    }
}

impl Stack {
    /// The request lines the back end logged so far.
    fn seen(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.back.dir.path().join("seen.log")).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }

    /// Sends the head, then (apart, so that nginx streams the body instead of reading it whole) the rest; reads
    /// until nginx closes. Each answer as `(status, body)`.
    fn exchange(&self, head: &str, rest: &str) -> Vec<(u16, String)> {
        let mut s = TcpStream::connect(self.front.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        // nginx may have refused the head already and closed.
        let _ = s.write_all(rest.as_bytes());
        let mut buf = Vec::new();
        if let Err(e) = s.read_to_end(&mut buf) {
            assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty(),
                "nginx did not close the connection: {e}; read {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        responses(&buf)
    }
}

/// The responses in `buf`, each as `(status, body)`.
fn responses(buf: &[u8]) -> Vec<(u16, String)> {
    test_support::http1::responses(buf)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(buf)))
        .iter()
        .map(|m| (m.status(), m.text()))
        .collect()
}

/// Every line end of one or two CRs and LFs.
fn line_ends() -> Vec<String> {
    ["\r", "\n", "\r\r", "\r\n", "\n\r", "\n\n"]
        .map(String::from)
        .to_vec()
}

/// Waits until the back end logged `n` requests (its log line follows its answer), at most 10 s.
fn seen_after(stack: &Stack, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = stack.seen();
        if seen.len() >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nginx_and_the_guard_count_the_same_requests_whatever_the_line_ends() {
    let stack = stack();
    let issue = format!("5\r\nhello\r\n0\r\n\n{}", followers()[2]);
    let mut cases = vec![("the issue's bytes".to_owned(), issue)];
    for place in PLACES {
        for end in line_ends() {
            for next in followers() {
                let rest = format!("{}{next}", place.replace("{E}", &end));
                cases.push((format!("{place:?} with {end:?} then {next:?}"), rest));
            }
        }
    }
    for (what, rest) in &cases {
        let before = stack.seen().len();
        let answers = stack.exchange(HEAD, rest);
        // Each answer nginx got from the back end through the guard names the request the back end read.
        let forwarded: Vec<String> = answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body.clone())
            .collect();
        let seen = seen_after(&stack, before + forwarded.len());
        assert_eq!(
            seen[before..],
            forwarded[..],
            "{what}: the back end got exactly the requests nginx answered from it: {answers:?}"
        );
        assert!(
            !seen[before..]
                .iter()
                .any(|l| l.contains("SMUGGLED") || l.contains("forbidden")),
            "{what}: {seen:?}"
        );
        // Refused ones are refused by nginx (its HTML page) or by the guard (its JSON body), never lost.
        for (status, body) in &answers {
            assert!(
                *status == 200 || (*status >= 400 && !body.is_empty()),
                "{what}: {answers:?}"
            );
        }
    }
    // The issue's bytes in one write, as the issue sends them: two POSTs for nginx, the same two for the guard and
    // the back end. (Sent apart, nginx streams the first body chunked, the back end answers it before the body has
    // ended, and nginx closes the client connection after that one answer: one request each then, as the loop
    // above checks.)
    let answers = stack.exchange(&format!("{HEAD}{}", cases[0].1), "");
    assert_eq!(
        answers,
        vec![(200, "POST /mcp".to_owned()), (200, "POST /mcp".to_owned())],
        "the issue's bytes through nginx"
    );
}
