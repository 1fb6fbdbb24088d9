//! The real `mcp-guard` binary: start-up errors, config reload (kubelet symlink swap), upstream failures,
//! admin endpoints, idle timeout and graceful drain.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use test_support::process::Proc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_guard_on_the_same_port_fails_to_start() {
    // Two workers share the port through SO_REUSEPORT; a second process must not be able to join them silently.
    let up = TestUpstream::start().await;
    let first = start_guard(&[
        "--upstream",
        &up.url(),
        "--allow-host",
        "a.example",
        "--worker-threads",
        "2",
    ])
    .await;
    let addr = first.addr.to_string();
    for workers in ["1", "2"] {
        let out = run_to_exit(&[
            "--listen",
            &addr,
            "--upstream",
            &up.url(),
            "--allow-host",
            "b.example",
            "--worker-threads",
            workers,
        ]);
        assert!(!out.status.success(), "a second guard started on {addr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    }
    let r = get_with(first.addr, "/", &["Host: a.example"]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn start_without_any_allowed_host_fails_clearly() {
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no allowed host"), "{err}");

    let out = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:1",
        "--allow-host",
        "*",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allowedHosts[0]") && err.contains("every host"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let out = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:1",
        "--allow-host",
        "a.com",
        "--config",
        missing.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a missing config file is fatal even with --allow-host"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"allowedHosts": ["a.com"], "mode": "block"}"#).unwrap();
    let out = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:1",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));

    let out = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "https://127.0.0.1:1",
        "--allow-host",
        "a.com",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_is_reloaded_through_kubelet_symlink_swap() {
    let up = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_configmap(
        dir.path(),
        1,
        r#"{"allowedHosts":["one.example.com"],"source":{"kind":"MCPServer","namespace":"team-a","name":"weather"}}"#,
    );
    let config = dir.path().join("guard.json");
    let guard = start_guard(&[
        "--upstream",
        &up.url(),
        "--config",
        config.to_str().unwrap(),
        "--config-poll-interval",
        "200ms",
        "--allow-host",
        "flag.example.com",
    ])
    .await;
    let a = guard.addr;
    assert_eq!(get_with(a, "/", &["Host: one.example.com"]).await.status, 200);
    assert_eq!(
        get_with(a, "/", &["Host: flag.example.com"]).await.status,
        200,
        "flags merge with the file"
    );
    let r = get_with(a, "/", &["Host: two.example.com"]).await;
    assert_eq!(r.status, 421);
    let hint = r.json().unwrap()["error"]["data"]["hint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hint.contains("spec.hosts of MCPServer team-a/weather"), "{hint}");

    // keep a connection open across the reload: it must survive and see the new allowlist
    let mut open = open_sse_as(a, "one.example.com", "n=2&ms=1500").await;

    write_configmap(
        dir.path(),
        2,
        r#"{"allowedHosts":["two.example.com"],"mode":"enforce"}"#,
    );
    eventually_or(
        "the new config picked up",
        Duration::from_secs(5),
        || format!("new config not picked up:\n{}", guard.logs()),
        || async { get_with(a, "/", &["Host: two.example.com"]).await.status == 200 },
    )
    .await;
    assert_eq!(get_with(a, "/", &["Host: one.example.com"]).await.status, 421);
    assert_eq!(
        guard
            .metric("mcp_guard_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    let rest = read_stream(&mut open, "data: {\"n\":1}", Duration::from_secs(5)).await;
    assert!(
        rest.iter().any(|(_, c)| c.contains("data: {\"n\":1}")),
        "open stream dropped by reload: {rest:?}"
    );

    // an invalid config keeps the last good one
    write_configmap(dir.path(), 3, r#"{"allowedHosts":["*"]}"#);
    eventually_or(
        "the invalid config refused",
        Duration::from_secs(5),
        || guard.logs(),
        || async {
            guard
                .metric("mcp_guard_config_reloads_total{result=\"failed\"}")
                .await
                == 1.0
        },
    )
    .await;
    assert_eq!(get_with(a, "/", &["Host: two.example.com"]).await.status, 200);
    assert_eq!(get_with(a, "/", &["Host: evil.com"]).await.status, 421);
    assert_eq!(guard.metric("mcp_guard_config_last_reload_ok").await, 0.0);
    let logs = guard.logs();
    assert!(
        logs.contains("keeping the last good config") && logs.contains("allowedHosts[0]"),
        "{logs}"
    );
    write_configmap(dir.path(), 4, "not json");
    write_configmap(dir.path(), 5, r#"{"allowedHosts":[]}"#);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // the file may be empty when the flags allow hosts: then the flags alone apply
    eventually("the flags alone in effect", Duration::from_secs(5), || async {
        get_with(a, "/", &["Host: two.example.com"]).await.status == 421
    })
    .await;
    assert_eq!(get_with(a, "/", &["Host: flag.example.com"]).await.status, 200);

    // audit mode through the file
    write_configmap(
        dir.path(),
        6,
        r#"{"allowedHosts":["two.example.com"],"mode":"audit"}"#,
    );
    eventually("audit mode from the file", Duration::from_secs(5), || async {
        get_with(a, "/", &["Host: evil.com"]).await.status == 200
    })
    .await;
    assert_eq!(guard.metric("mcp_guard_config_last_reload_ok").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_file_edits_are_reloaded() {
    let up = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guard.json");
    std::fs::write(&config, r#"{"allowedHosts":["one.example.com"]}"#).unwrap();
    let guard = start_guard(&[
        "--upstream",
        &up.url(),
        "--config",
        config.to_str().unwrap(),
        "--config-poll-interval",
        "200ms",
    ])
    .await;
    std::fs::write(&config, r#"{"allowedHosts":["two.example.com"]}"#).unwrap();
    eventually("the new config picked up", Duration::from_secs(5), || async {
        get_with(guard.addr, "/", &["Host: two.example.com"]).await.status == 200
    })
    .await;
    // an empty allowlist is invalid (never fail open, never reject everything silently): last good stays
    std::fs::write(&config, r#"{"allowedHosts":[]}"#).unwrap();
    eventually("the empty allowlist refused", Duration::from_secs(5), || async {
        guard
            .metric("mcp_guard_config_reloads_total{result=\"failed\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(
        get_with(guard.addr, "/", &["Host: two.example.com"]).await.status,
        200
    );
    assert!(guard.logs().contains("no allowed host"));
    // the file vanishing keeps the last good config
    std::fs::remove_file(&config).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        get_with(guard.addr, "/", &["Host: two.example.com"]).await.status,
        200
    );
    assert!(guard.logs().contains("cannot read config file"));
}

/// A config file that vanishes and comes back unchanged is in effect again: `config_last_reload_ok` says so (the
/// documented alert stops), unless the content that came back is the invalid one the guard had refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_back_unchanged_is_in_effect_again() {
    let up = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guard.json");
    let good = r#"{"allowedHosts":["one.example.com"]}"#;
    std::fs::write(&config, good).unwrap();
    let guard = start_guard(&[
        "--upstream",
        &up.url(),
        "--config",
        config.to_str().unwrap(),
        "--config-poll-interval",
        "100ms",
    ])
    .await;
    let back_again = |n: usize| {
        let guard = &guard;
        async move { guard.logs().matches("config file readable again").count() == n }
    };
    let gauge = || guard.metric("mcp_guard_config_last_reload_ok");

    std::fs::remove_file(&config).unwrap();
    eventually("the missing file reported", Duration::from_secs(5), || async {
        gauge().await == 0.0
    })
    .await;
    std::fs::write(&config, good).unwrap();
    eventually_or(
        "the config back again",
        Duration::from_secs(5),
        || guard.logs(),
        || back_again(1),
    )
    .await;
    assert_eq!(gauge().await, 1.0, "{}", guard.logs());
    assert_eq!(
        get_with(guard.addr, "/", &["Host: one.example.com"]).await.status,
        200
    );

    // The invalid content vanishing and coming back changes nothing: the last good config is still in effect.
    let invalid = r#"{"allowedHosts":[]}"#;
    std::fs::write(&config, invalid).unwrap();
    eventually("the invalid config reported", Duration::from_secs(5), || async {
        gauge().await == 0.0
    })
    .await;
    std::fs::remove_file(&config).unwrap();
    eventually_or(
        "both read failures logged",
        Duration::from_secs(5),
        || guard.logs(),
        || async { guard.logs().matches("cannot read config file").count() == 2 },
    )
    .await;
    std::fs::write(&config, invalid).unwrap();
    eventually_or(
        "the config back again",
        Duration::from_secs(5),
        || guard.logs(),
        || back_again(2),
    )
    .await;
    assert_eq!(gauge().await, 0.0, "{}", guard.logs());
    assert_eq!(
        get_with(guard.addr, "/", &["Host: one.example.com"]).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_not_ready_and_502_json_and_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}");
    let guard = mcp_guard(&["--upstream", &url, "--allow-host", "mcp.example.com"])
        .until(Ready::AllButUpstream)
        .start()
        .await
        .unwrap();
    let r = get(guard.admin, "/readyz").await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    let why = r.text();
    assert!(
        why.contains(&format!("the upstream {addr} does not accept connections")),
        "{why}"
    );
    // Live all the same: the guard itself is fine.
    assert_eq!(get(guard.admin, "/livez").await.unwrap().status, 200);
    let r = get_with(guard.addr, "/", &["Host: mcp.example.com"]).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json().unwrap()["error"]["data"]["reason"],
        "upstream_unavailable"
    );
    assert_eq!(
        guard
            .metric("mcp_guard_upstream_errors_total{kind=\"connect\"}")
            .await,
        1.0
    );

    let up = TestUpstream::start_on(TcpListener::bind(addr).await.unwrap());
    assert_eq!(
        get(guard.admin, "/readyz").await.unwrap().status,
        200,
        "ready once the upstream listens"
    );
    let r = get_with(guard.addr, "/", &["Host: mcp.example.com"]).await;
    assert_eq!(r.status, 200, "{r:?}");

    // the upstream restarts: pooled connections die, the next request still gets through
    up.stop();
    drop(up);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get_with(guard.addr, "/", &["Host: mcp.example.com"]).await.status,
        502
    );
    let _up = TestUpstream::start_on(TcpListener::bind(addr).await.unwrap());
    assert_eq!(
        get_with(guard.addr, "/", &["Host: mcp.example.com"]).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let up = TestUpstream::start().await;
    let guard = start_guard(&["--upstream", &up.url(), "--allow-host", "mcp.example.com"]).await;
    let r = get(guard.admin, "/livez").await.unwrap();
    assert_eq!(r.status, 200);
    let r = get(guard.admin, "/readyz").await.unwrap();
    assert_eq!(r.status, 200);
    let r = get(guard.admin, "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    for name in [
        "mcp_guard_requests_total",
        "mcp_guard_upstream_errors_total",
        "mcp_guard_config_reloads_total",
        "mcp_guard_open_connections",
        "mcp_guard_open_streams",
        "mcp_guard_allowed_hosts",
    ] {
        assert!(r.text().contains(name), "{name} missing:\n{}", r.text());
    }
    assert_eq!(get(guard.admin, "/nope").await.unwrap().status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs() {
    let up = TestUpstream::start().await;
    let guard = start_guard(&[
        "--upstream",
        &up.url(),
        "--allow-host",
        "mcp.example.com",
        "--log-format",
        "json",
    ])
    .await;
    get_with(guard.addr, "/", &["Host: evil.com"]).await;
    let logs = guard.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("request rejected"))
        .unwrap_or_else(|| panic!("{logs}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["reason"], "host_not_allowed");
    assert_eq!(v["received"], "evil.com");
    assert_eq!(v["level"], "WARN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_busy_streams_live() {
    let up = TestUpstream::start().await;
    let guard = start_guard(&[
        "--upstream",
        &up.url(),
        "--allow-host",
        "mcp.example.com",
        "--idle-timeout",
        "1s",
    ])
    .await;
    // a stream that sends every 400ms outlives the 1s idle timeout
    let mut s = TcpStream::connect(guard.addr).await.unwrap();
    s.write_all(b"GET /sse?n=6&ms=400 HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n")
        .await
        .unwrap();
    let got = read_stream(&mut s, "data: {\"n\":5}", Duration::from_secs(6)).await;
    assert!(got.iter().any(|(_, c)| c.contains("data: {\"n\":5}")), "{got:?}");
    // a stream that goes quiet is closed
    let mut s = TcpStream::connect(guard.addr).await.unwrap();
    s.write_all(b"GET /sse?n=2&ms=5000 HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let got = read_stream(&mut s, "never", Duration::from_secs(4)).await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "idle stream not closed: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_streams_then_exits() {
    let up = TestUpstream::start().await;
    let mut guard = start_guard(&["--upstream", &up.url(), "--allow-host", "mcp.example.com"]).await;
    let mut s = open_sse(guard.addr, "n=3&ms=500").await;
    guard.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        get(guard.admin, "/readyz").await.unwrap().status,
        503,
        "not ready while draining"
    );
    assert!(TcpStream::connect(guard.addr).await.is_err(), "stopped accepting");
    let rest = read_stream(&mut s, "data: {\"n\":2}", Duration::from_secs(5)).await;
    assert!(
        rest.iter().any(|(_, c)| c.contains("data: {\"n\":2}")),
        "stream cut during drain: {rest:?}"
    );
    let status = guard
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits after draining");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let up = TestUpstream::start().await;
    let mut guard = start_guard(&["--upstream", &up.url(), "--allow-host", "mcp.example.com"]).await;
    let _stream = open_sse(guard.addr, "n=2&ms=30000").await; // open while the guard drains
    guard.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(guard.proc.is_running(), "first signal drains");
    guard.signal(Signal::SIGTERM);
    let status = guard
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("second signal exits at once");
    assert!(!status.success());
}

/// What the webhook injects, `--listen [$(POD_IP)]:PORT --allow-host [$(POD_IP)]`, serves pods of either family
/// (127.0.0.3 and ::1 stand in for the pod IP): kubelet's probes carry `Host: <pod IP>:PORT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bracketed_pod_ip_serves_ipv4_and_ipv6_pods() {
    let up = TestUpstream::start().await;
    for (ip, host) in [("127.0.0.3", "127.0.0.3"), ("::1", "[::1]")] {
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("{host}:{port}").parse().unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-guard"));
        cmd.args(["--listen", &format!("[{ip}]:{port}"), "--upstream", &up.url()])
            .args(["--allow-host", &format!("[{ip}]")])
            .env_remove("MCP_GUARD_ALLOW_HOSTS");
        let _guard = Proc::spawn("mcp-guard", cmd).unwrap();
        eventually_or(
            "the guard listening",
            Duration::from_secs(10),
            || format!("the guard does not listen on {addr}"),
            || async { TcpStream::connect(addr).await.is_ok() },
        )
        .await;
        let probe = get_with(addr, "/healthz", &[&format!("Host: {host}:{port}")]).await;
        assert_eq!(probe.status, 200, "a probe with Host {host}:{port}");
        let forged = get_with(addr, "/", &["Host: evil.example"]).await;
        assert_eq!(forged.status, 421, "a forged Host on {addr}");
    }
}

/// What the webhook injects into a dual-stack pod, `--listen [$(POD_IPS)]:PORT` with `status.podIPs` =
/// `<IPv4>,<IPv6>` (127.0.0.3 and ::1 stand in), serves both addresses with the two workers each: the allowed
/// Host passes on both, a forged Host and an IPv6 literal that is not allowed get 421 on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_pod_ips_serves_a_dual_stack_pod_on_both() {
    let up = TestUpstream::start().await;
    // A port free on both addresses: the one 127.0.0.3 got, held until ::1 has it too (or another try).
    let port = (0..20)
        .find_map(|_| {
            let v4 = std::net::TcpListener::bind(("127.0.0.3", 0)).ok()?;
            let port = v4.local_addr().ok()?.port();
            std::net::TcpListener::bind(("::1", port)).ok().map(|_| port)
        })
        .expect("a port free on 127.0.0.3 and ::1");
    let v4: std::net::SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-guard"));
    cmd.args([
        "--listen",
        &format!("[127.0.0.3,::1]:{port}"),
        "--upstream",
        &up.url(),
    ])
    .args(["--allow-host", "weather.team-a.svc", "--worker-threads", "2"])
    .env_remove("MCP_GUARD_ALLOW_HOSTS");
    let _guard = Proc::spawn("mcp-guard", cmd).unwrap();
    for addr in [v4, v6] {
        eventually_or(
            "the guard listening",
            Duration::from_secs(10),
            || format!("the guard does not listen on {addr}"),
            || async { TcpStream::connect(addr).await.is_ok() },
        )
        .await;
    }
    for addr in [v4, v6] {
        let allowed = get_with(addr, "/", &["Host: weather.team-a.svc"]).await;
        assert_eq!(allowed.status, 200, "the Service's name on {addr}");
        for forged in [
            "evil.example".to_string(),
            format!("[::1]:{port}"),
            "[::1]".into(),
        ] {
            let refused = get_with(addr, "/", &[&format!("Host: {forged}")]).await;
            assert_eq!(refused.status, 421, "Host {forged} on {addr}");
        }
    }
}
