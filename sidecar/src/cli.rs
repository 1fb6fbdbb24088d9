//! The command line: every flag also settable by an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mcp_guard_config::{Mode, Rate};

/// mcp-guard: a streaming reverse proxy that enforces a Host/Origin allowlist in front of an MCP server.
///
/// Flags and the --config file are merged: allowed hosts, origins and trusted proxies are the union of both;
/// --mode and each limit flag, when given, override the file's setting. The file is re-read when it changes.
#[derive(Clone, Debug, Parser)]
#[command(name = "mcp-guard", version, about, long_about = None)]
pub struct Args {
    /// Address to accept MCP clients on (HTTP/1.1 and h2c). An IPv4 address may be bracketed as IPv6 ones are
    /// (`[10.0.0.7]:8000`), and the brackets may hold several addresses of one port (`[10.0.0.7,fd00::7]:8000`),
    /// so that one spelling, `[$(POD_IPS)]:8000`, serves pods of either family and dual-stack pods on both.
    #[arg(long, env = "MCP_GUARD_LISTEN", default_value = "0.0.0.0:8080", value_parser = parse_listen_addrs)]
    pub listen: ListenAddrs,

    /// The MCP server: `http://127.0.0.1:8000` (HTTP/1.1) or `h2c://127.0.0.1:8000` (HTTP/2 prior knowledge).
    #[arg(long, env = "MCP_GUARD_UPSTREAM")]
    pub upstream: String,

    /// Talk HTTP/2 (h2c, prior knowledge) to the upstream even with an `http://` URL.
    #[arg(long, env = "MCP_GUARD_UPSTREAM_H2C")]
    pub upstream_h2c: bool,

    /// An allowed host pattern (repeatable): `mcp.example.com`, `*.example.com`, `host:8080`, `[::1]`.
    #[arg(long = "allow-host", env = "MCP_GUARD_ALLOW_HOSTS", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,

    /// An allowed origin pattern (repeatable): `https://app.example.com`, `http://localhost:*`, `null`.
    #[arg(long = "allow-origin", env = "MCP_GUARD_ALLOW_ORIGINS", value_delimiter = ',')]
    pub allow_origins: Vec<String>,

    /// The guard config JSON file (as written by the operator); watched and reloaded when it changes.
    #[arg(long, env = "MCP_GUARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// `enforce` rejects violations; `audit` forwards them and still logs and counts them. Overrides the file.
    #[arg(long, env = "MCP_GUARD_MODE", value_enum)]
    pub mode: Option<ModeArg>,

    /// Address of the admin listener (`/livez`, `/readyz`, `/metrics`); none when not given. Bracketed IPv4 as for
    /// `--listen` (`[$(POD_IP)]:15081`).
    #[arg(long, env = "MCP_GUARD_ADMIN_LISTEN", value_parser = parse_listen)]
    pub admin_listen: Option<SocketAddr>,

    /// Forward the client's Host (and Origin) unchanged instead of rewriting them to the upstream's.
    #[arg(long, env = "MCP_GUARD_PRESERVE_HOST")]
    pub preserve_host: bool,

    /// Log format.
    #[arg(long, env = "MCP_GUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or tracing filter directives (`info`, `debug`, `mcp_guard=debug,info`).
    #[arg(long, env = "MCP_GUARD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Largest request body accepted (bytes); larger ones get 413. Overrides the file's limit.
    #[arg(long, env = "MCP_GUARD_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: Option<u64>,

    /// Rate limit for every request of one client (an IPv6 client by its /64): `REQUESTS_PER_MINUTE[:BURST]`,
    /// e.g. `600:100`; the burst defaults to a minute's worth. Over it: 429 with Retry-After.
    #[arg(long, env = "MCP_GUARD_RATE_LIMIT_PER_CLIENT", value_parser = parse_rate)]
    pub rate_limit_per_client: Option<Rate>,

    /// Rate limit per client for one JSON-RPC method (repeatable): `tools/call=120:10`.
    #[arg(long = "rate-limit-method", env = "MCP_GUARD_RATE_LIMIT_METHODS", value_delimiter = ',', value_parser = parse_named_rate)]
    pub rate_limit_methods: Vec<(String, Rate)>,

    /// Rate limit per client for one tool of `tools/call` (repeatable): `render_report=6:2`.
    #[arg(long = "rate-limit-tool", env = "MCP_GUARD_RATE_LIMIT_TOOLS", value_delimiter = ',', value_parser = parse_named_rate)]
    pub rate_limit_tools: Vec<(String, Rate)>,

    /// Most requests of one client in flight at once (SSE streams are counted by --max-streams-per-client).
    #[arg(long, env = "MCP_GUARD_MAX_CONCURRENT_REQUESTS_PER_CLIENT")]
    pub max_concurrent_requests_per_client: Option<u32>,

    /// Most SSE streams (`GET` with `Accept: text/event-stream`) of one client open at once.
    #[arg(long, env = "MCP_GUARD_MAX_STREAMS_PER_CLIENT")]
    pub max_streams_per_client: Option<u32>,

    /// Most clients whose rate-limit state is kept (default 10000); idle ones are forgotten first.
    #[arg(long, env = "MCP_GUARD_MAX_TRACKED_CLIENTS")]
    pub max_tracked_clients: Option<u32>,

    /// A proxy (CIDR or address, repeatable) whose `X-Forwarded-Host` / `Forwarded: host=` is checked instead of
    /// `Host`, and whose `X-Forwarded-For` names the client for the rate limits. See docs/reverse-proxy.md.
    #[arg(
        long = "trusted-proxy",
        env = "MCP_GUARD_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Answer CORS for browser-based MCP clients on the allowed origins: preflights get `204` from the guard,
    /// responses the `Access-Control-*` fields. Off by default; see docs/guard.md ("CORS").
    #[arg(long, env = "MCP_GUARD_CORS")]
    pub cors: bool,

    /// A token issuer whose JWT access tokens the guard accepts (repeatable): `https://auth.example.com`. Turns
    /// on bearer-token authentication; its keys are discovered (RFC 8414 / OpenID Connect) and fetched by the
    /// guard. See docs/guard.md ("Authentication").
    #[arg(long = "auth-issuer", env = "MCP_GUARD_AUTH_ISSUERS", value_delimiter = ',')]
    pub auth_issuers: Vec<String>,

    /// A resource URI of this server (repeatable), `scheme://HOST[:port]/path` with HOST an allowed-host pattern:
    /// `https://mcp.example.com/mcp`, `https://*.apps.example.com/mcp`. Tokens must be issued for it.
    #[arg(
        long = "auth-resource",
        env = "MCP_GUARD_AUTH_RESOURCES",
        value_delimiter = ','
    )]
    pub auth_resources: Vec<String>,

    /// An audience the --auth-issuer issuers' tokens may carry instead of the resource URI (repeatable).
    #[arg(
        long = "auth-audience",
        env = "MCP_GUARD_AUTH_AUDIENCES",
        value_delimiter = ','
    )]
    pub auth_audiences: Vec<String>,

    /// A scope every request's token must hold (repeatable).
    #[arg(
        long = "auth-required-scope",
        env = "MCP_GUARD_AUTH_REQUIRED_SCOPES",
        value_delimiter = ','
    )]
    pub auth_required_scopes: Vec<String>,

    /// Let the --auth-issuer issuers be fetched over plain http:// (a lab only: anyone on the path could swap
    /// the keys).
    #[arg(long, env = "MCP_GUARD_AUTH_ALLOW_HTTP_ISSUER")]
    pub auth_allow_http_issuer: bool,

    /// A PEM file of CA certificates for the --auth-issuer issuers' TLS, besides the built-in web roots.
    #[arg(long, env = "MCP_GUARD_AUTH_CA_FILE")]
    pub auth_ca_file: Option<String>,

    /// Forward the client's Authorization header to the server (default: stripped; the server gets the verified
    /// identity in mcp-guard-* headers instead).
    #[arg(long, env = "MCP_GUARD_AUTH_PASS_TOKEN")]
    pub auth_pass_token: bool,

    /// Largest request head (request line and headers, bytes); larger ones get 431.
    #[arg(long, env = "MCP_GUARD_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// Most request headers accepted (HTTP/1.1, 1 to 256); more get 431.
    #[arg(long, env = "MCP_GUARD_MAX_HEADERS", default_value_t = crate::server::HYPER_MAX_HEADERS, value_parser = parse_max_headers)]
    pub max_headers: usize,

    /// Most client connections open at once; further clients wait in the listen backlog.
    #[arg(long, env = "MCP_GUARD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Time allowed to receive a request head, and to wait on an idle keep-alive connection.
    #[arg(long, env = "MCP_GUARD_HEADER_READ_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub header_read_timeout: Duration,

    /// Time allowed to connect to the upstream.
    #[arg(long, env = "MCP_GUARD_UPSTREAM_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub upstream_connect_timeout: Duration,

    /// A connection with no bytes moving either way for this long is closed (`0` = never). Not a total
    /// deadline: an SSE stream that keeps sending lives as long as it likes.
    #[arg(long, env = "MCP_GUARD_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "10m")]
    pub idle_timeout: Duration,

    /// On SIGTERM/SIGINT, time given to open requests and streams to finish before exiting.
    #[arg(long, env = "MCP_GUARD_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "20s")]
    pub drain_timeout: Duration,

    /// How often the --config file is checked for changes.
    #[arg(long, env = "MCP_GUARD_CONFIG_POLL_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub config_poll_interval: Duration,

    /// Audit log lines queued for the writer at most; past it, lines are dropped and counted (never waited for).
    #[arg(long, env = "MCP_GUARD_AUDIT_QUEUE_LINES", default_value_t = crate::audit::DEFAULT_QUEUE_LINES)]
    pub audit_queue_lines: usize,

    /// A fixed read buffer in bytes for upstream connections (0 = hyper's adaptive one, up to 128 KiB).
    #[arg(long, env = "MCP_GUARD_UPSTREAM_READ_BUFFER", default_value_t = 0)]
    pub upstream_read_buffer: usize,

    /// Worker threads, each with its own listener socket (SO_REUSEPORT) and upstream pool (0 = one per CPU, at
    /// most 2).
    #[arg(long, env = "MCP_GUARD_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The guarded port's addresses: one, or several IPs sharing one port (a dual-stack pod's addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddrs(pub Vec<SocketAddr>);

impl std::fmt::Display for ListenAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join(","))
    }
}

/// `--listen`: an address as [`parse_listen`] takes it, or `[IP,IP...]:port`, each IP of either family (the
/// downward API's `status.podIPs` is such a list). An IP listed twice is refused: it would be bound twice.
pub fn parse_listen_addrs(s: &str) -> Result<ListenAddrs, String> {
    let Some((ips, port)) = s
        .strip_prefix('[')
        .and_then(|r| r.split_once("]:"))
        .filter(|(ips, _)| ips.contains(','))
    else {
        return parse_listen(s).map(|addr| ListenAddrs(vec![addr]));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number (0-65535)"))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for ip in ips.split(',') {
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IP address (write [10.0.0.7,fd00::7]:8000)"))?;
        let addr = SocketAddr::new(ip, port);
        if addrs.contains(&addr) {
            return Err(format!("{s:?}: {ip} is listed twice"));
        }
        addrs.push(addr);
    }
    Ok(ListenAddrs(addrs))
}

/// A socket address; `[a.b.c.d]:port` is taken as the IPv4 address it holds.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bracketed_v4 = s
        .strip_prefix('[')
        .and_then(|r| r.split_once("]:"))
        .and_then(|(ip, port)| {
            Some(SocketAddr::new(
                ip.parse::<std::net::Ipv4Addr>().ok()?.into(),
                port.parse().ok()?,
            ))
        });
    bracketed_v4
        .ok_or_else(|| format!("{s:?} is not an address: 10.0.0.7:8000, [10.0.0.7]:8000 or [fd00::7]:8000"))
}

/// Parses `500ms`, `30s`, `10m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 500ms, 30s, 10m, 1h)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration unit in {s:?} (use ms, s, m or h)")),
    }
}

/// Parses `REQUESTS_PER_MINUTE[:BURST]`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || {
        format!("{s:?} is not a rate: write REQUESTS_PER_MINUTE[:BURST], e.g. 600 or 600:100 (both above 0)")
    };
    let (rpm, burst) = match s.trim().split_once(':') {
        Some((r, b)) => (r, Some(b)),
        None => (s.trim(), None),
    };
    let requests_per_minute: u32 = rpm.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let burst = burst
        .map(|b| b.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(bad))
        .transpose()?;
    Ok(Rate {
        requests_per_minute,
        burst,
    })
}

/// Parses `NAME=REQUESTS_PER_MINUTE[:BURST]`.
pub fn parse_named_rate(s: &str) -> Result<(String, Rate), String> {
    let (name, rate) = s
        .rsplit_once('=')
        .filter(|(n, _)| !n.trim().is_empty())
        .ok_or_else(|| format!("{s:?}: write NAME=REQUESTS_PER_MINUTE[:BURST], e.g. tools/call=120:10"))?;
    Ok((name.trim().to_owned(), parse_rate(rate)?))
}

/// The most header fields `--max-headers` may allow in an HTTP/1.1 request.
pub const MAX_HEADERS: usize = 256;

fn parse_max_headers(s: &str) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|e| format!("{e}"))?;
    if (1..=MAX_HEADERS).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between 1 and {MAX_HEADERS}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_of_either_family_and_bracketed_ipv4() {
        for (given, want) in [
            ("10.0.0.7:8000", "10.0.0.7:8000"),
            ("[10.0.0.7]:8000", "10.0.0.7:8000"),
            ("[fd00::7]:8000", "[fd00::7]:8000"),
            ("0.0.0.0:80", "0.0.0.0:80"),
        ] {
            assert_eq!(parse_listen(given).unwrap().to_string(), want, "{given}");
        }
        for bad in [
            "10.0.0.7",
            "[10.0.0.7]",
            "[10.0.0.7]:x",
            "[10.0.0.7]:70000",
            "fd00::7:8000",
            "[a.b]:80",
            "",
        ] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains("is not an address"), "{bad}: {err}");
        }
    }

    #[test]
    fn listen_lists_of_either_family() {
        for (given, want) in [
            ("[10.0.0.7,fd00::7]:8000", "10.0.0.7:8000,[fd00::7]:8000"),
            ("[fd00::7,10.0.0.7]:80", "[fd00::7]:80,10.0.0.7:80"),
            ("[10.0.0.7]:8000", "10.0.0.7:8000"),
            ("[fd00::7]:8000", "[fd00::7]:8000"),
            ("0.0.0.0:8080", "0.0.0.0:8080"),
        ] {
            assert_eq!(parse_listen_addrs(given).unwrap().to_string(), want, "{given}");
        }
        for (bad, why) in [
            ("[10.0.0.7,fd00::7]:x", "is not a port number"),
            ("[10.0.0.7,fd00::7]:70000", "is not a port number"),
            ("[10.0.0.7,]:80", "\"\" is not an IP address"),
            ("[,10.0.0.7]:80", "\"\" is not an IP address"),
            ("[10.0.0.7,[fd00::7]]:80", "is not an IP address"),
            ("[10.0.0.7,evil.com]:80", "\"evil.com\" is not an IP address"),
            ("[10.0.0.7, fd00::7]:80", "\" fd00::7\" is not an IP address"),
            ("[10.0.0.7,10.0.0.7]:80", "10.0.0.7 is listed twice"),
            ("[fd00::7,fd00:0::7]:80", "fd00::7 is listed twice"),
            ("10.0.0.7,fd00::7:80", "is not an address"),
        ] {
            let err = parse_listen_addrs(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// Any list of distinct IPs and a port, written as `[$(POD_IPS)]:port` writes it, reads back as exactly
        /// those addresses in that order; and one address reads as `parse_listen` reads it.
        #[test]
        fn listen_lists_round_trip(ips in proptest::collection::vec(proptest::prelude::any::<std::net::IpAddr>(), 1..4), port: u16) {
            let mut distinct: Vec<std::net::IpAddr> = Vec::new();
            for ip in ips {
                if !distinct.contains(&ip) {
                    distinct.push(ip);
                }
            }
            let spelled = format!(
                "[{}]:{port}",
                distinct.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
            );
            let want: Vec<SocketAddr> = distinct.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            proptest::prop_assert_eq!(parse_listen_addrs(&spelled), Ok(ListenAddrs(want)));
            if let [one] = distinct[..] {
                proptest::prop_assert_eq!(parse_listen(&spelled), Ok(SocketAddr::new(one, port)));
            }
        }

        /// Whatever the text: without a comma the list parser answers as the single one does; with commas, what
        /// it accepts is one address per listed item, each on the port written after the brackets.
        #[test]
        fn listen_lists_agree_with_the_single_parser(s in "\\[[0-9a-f.:,\\[\\] ]{0,24}\\]:[0-9x]{0,6}") {
            match parse_listen_addrs(&s) {
                got if !s.contains(',') => {
                    proptest::prop_assert_eq!(got, parse_listen(&s).map(|a| ListenAddrs(vec![a])));
                }
                Ok(ListenAddrs(addrs)) => {
                    let (items, port) = s[1..].split_once("]:").expect("accepted lists are bracketed");
                    proptest::prop_assert_eq!(addrs.len(), items.split(',').count(), "{:?}", s);
                    proptest::prop_assert!(addrs.iter().all(|a| Ok(a.port()) == port.parse()), "{:?}", s);
                }
                Err(_) => {}
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from([
            "mcp-guard",
            "--listen",
            "127.0.0.1:9000",
            "--upstream",
            "http://127.0.0.1:8000",
            "--allow-host",
            "a.com",
            "--allow-host",
            "b.com,c.com",
            "--mode",
            "audit",
        ])
        .unwrap();
        assert_eq!(a.allow_hosts, ["a.com", "b.com", "c.com"]);
        assert_eq!(a.mode, Some(ModeArg::Audit));
        let with =
            |n: &str| Args::try_parse_from(["mcp-guard", "--upstream", "http://a:1", "--max-headers", n]);
        assert_eq!(with("256").unwrap().max_headers, 256);
        assert!(with("257").is_err());
        assert!(with("0").is_err());
    }

    #[test]
    fn rate_limit_flags_parse() {
        let a = Args::try_parse_from([
            "mcp-guard",
            "--upstream",
            "http://a:1",
            "--rate-limit-per-client",
            "600:100",
            "--rate-limit-method",
            "tools/call=120,tools/list=60:5",
            "--rate-limit-tool",
            "a=b=6:2",
            "--trusted-proxy",
            "10.0.0.0/8",
        ])
        .unwrap();
        assert_eq!(a.rate_limit_per_client.unwrap().burst(), 100);
        assert_eq!(a.rate_limit_methods.len(), 2);
        assert_eq!(a.rate_limit_methods[1].1.burst(), 5);
        assert_eq!(a.rate_limit_tools[0].0, "a=b", "the last = splits");
        assert_eq!(a.trusted_proxies, ["10.0.0.0/8"]);
        for bad in ["0", "10:0", "x", "10:", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_named_rate("=10").is_err());
        assert!(parse_named_rate("tools/call").is_err());
    }
}
