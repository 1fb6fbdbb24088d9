//! The claims of docs/reverse-proxy.md ("What the guard sees"), checked with Debian's nginx in front of the real
//! guard and the MCP Python SDK server: which Host reaches the guard for each nginx setting, that Origin passes
//! through unchanged, and that the recommended configuration works.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use testkit::http;
use testkit::mcp::{GuardOptions, PyServer, Transport, initialize_request};
use testkit::nginx::Nginx;

/// An allowed host that none of the requests below uses, so every rejection shows what the guard received.
const ONLY_ALLOWED: &str = "only-this.example";

fn location(upstream: &str, host_header: Option<&str>) -> String {
    let set_host = host_header
        .map(|h| format!("proxy_set_header Host {h};"))
        .unwrap_or_default();
    format!(
        "location / {{ proxy_pass {upstream}; proxy_http_version 1.1; proxy_set_header Connection \"\"; \
         {set_host} proxy_buffering off; }}"
    )
}

/// Sends an MCP initialize through nginx with the given Host (and extra headers); returns status and JSON body.
fn send(nginx: &Nginx, host: &str, extra: &[&str]) -> (u16, Value) {
    let r = http::raw(nginx.addr(), &initialize_request("/mcp", host, extra)).unwrap();
    let body = if r.status == 200 {
        Value::Null
    } else {
        r.json().unwrap_or(Value::String(r.text()))
    };
    (r.status, body)
}

fn received(body: &Value) -> &str {
    body["error"]["data"]["received"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.data.received in {body}"))
}

#[test]
fn what_the_guard_sees_behind_nginx() {
    let server = PyServer::start(Transport::StreamableHttp).unwrap();
    let guard = GuardOptions::hosts(&[ONLY_ALLOWED])
        .start(&server.base_url())
        .unwrap();
    let g = guard.addr.port();

    // proxy_pass to an upstream block, nothing else: the guard sees the block's name.
    let port = testkit::tools::free_port();
    let upstream_block = Nginx::start_with(port, 1, |_| {
        format!(
            "upstream mcp_weather {{ server 127.0.0.1:{g}; }}\n    server {{ listen 127.0.0.1:{port}; {} }}",
            location("http://mcp_weather", None)
        )
    })
    .unwrap();
    let (status, body) = send(&upstream_block, "mcp.example.com", &[]);
    assert_eq!(status, 421, "{body}");
    assert_eq!(
        received(&body),
        "mcp_weather",
        "default proxy_pass to an upstream block: {body}"
    );

    // proxy_pass to an address, nothing else: the guard sees that address.
    let by_address = Nginx::start_server(&location(&guard.base_url(), None)).unwrap();
    let (status, body) = send(&by_address, "mcp.example.com", &[]);
    assert_eq!(status, 421, "{body}");
    assert_eq!(
        received(&body),
        format!("127.0.0.1:{g}"),
        "default proxy_pass to an address: {body}"
    );

    // $host: the client's Host lowercased, without its port.
    let host = Nginx::start_server(&location(&guard.base_url(), Some("$host"))).unwrap();
    let (status, body) = send(&host, "MCP.Example.COM:8443", &[]);
    assert_eq!(status, 421, "{body}");
    assert_eq!(
        received(&body),
        "mcp.example.com",
        "proxy_set_header Host $host: {body}"
    );

    // $http_host: the client's Host exactly as sent.
    let http_host = Nginx::start_server(&location(&guard.base_url(), Some("$http_host"))).unwrap();
    let (status, body) = send(&http_host, "MCP.Example.COM:8443", &[]);
    assert_eq!(status, 421, "{body}");
    assert_eq!(
        received(&body),
        "MCP.Example.COM:8443",
        "proxy_set_header Host $http_host: {body}"
    );
}

#[test]
fn the_recommended_nginx_configuration_works_and_passes_origin_through() {
    let server = PyServer::start(Transport::StreamableHttp).unwrap();
    // As in the doc: the guard allows the public name only.
    let guard = GuardOptions::hosts(&["mcp.example.com"])
        .start(&server.base_url())
        .unwrap();
    let port = testkit::tools::free_port();
    let g = guard.addr.port();
    let nginx = Nginx::start_with(port, 1, |_| {
        format!(
            "upstream mcp_weather {{ server 127.0.0.1:{g}; }}\n    server {{ listen 127.0.0.1:{port}; {} }}",
            location("http://mcp_weather", Some("$host"))
        )
    })
    .unwrap();

    // Any port of the public name passes ($host drops it; an entry without a port matches any port).
    for host in ["mcp.example.com", "mcp.example.com:8443"] {
        let (status, body) = send(&nginx, host, &[]);
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    // A same-origin page passes; another site's Origin reaches the guard unchanged and is refused.
    let (status, body) = send(&nginx, "mcp.example.com", &["Origin: https://mcp.example.com"]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(&nginx, "mcp.example.com", &["Origin: https://app.example.com"]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["data"]["reason"], "origin_not_allowed");
    assert_eq!(received(&body), "https://app.example.com");
    // A rebinding attempt through the same nginx.
    let (status, body) = send(&nginx, "attacker.test", &["Origin: http://attacker.test"]);
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"]["data"]["reason"], "host_not_allowed");
}
