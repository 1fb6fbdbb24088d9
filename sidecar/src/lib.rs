//! mcp-guard: a streaming reverse proxy that enforces a Host/Origin allowlist in front of an MCP server.
//!
//! Pure core, thin I/O shell: the decisions live in [`mcp_guard_config::Allowlist::check`]; this crate reads
//! the request facts, forwards or refuses, streams bodies, reloads the config and reports metrics.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod idle;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::AdminState;
use crate::cli::Args;
use crate::config::{ConfigSources, LoadError};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, UpstreamClient};
use crate::upstream::Upstream;

/// Why the guard could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigSources {
    pub fn from_args(args: &Args) -> Self {
        ConfigSources {
            allow_hosts: args
                .allow_hosts
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            allow_origins: args
                .allow_origins
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            mode: args.mode.map(Into::into),
            max_request_body_bytes: args.max_request_body_bytes,
            file: args.config.clone(),
        }
    }
}

/// The upstream HTTP client: pooled connections, bounded connect time, no Host rewriting of its own.
pub fn upstream_client(upstream: &Upstream, connect_timeout: Duration, read_buffer: usize) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(true);
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .set_host(false)
        .http2_only(upstream.h2);
    if read_buffer > 0 {
        b.http1_read_buf_exact_size(read_buffer);
    }
    b.build(connector)
}

/// Waits for SIGTERM or SIGINT.
async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the guard until SIGTERM/SIGINT (then drains) — the whole binary minus argument parsing and logging.
pub async fn run(args: Args) -> Result<(), StartError> {
    let sources = ConfigSources::from_args(&args);
    let (allowlist, content) = sources.load()?;
    let upstream = Upstream::parse(&args.upstream, args.upstream_h2c)?;
    let metrics = Arc::new(Metrics::new());
    config::describe(&metrics, &allowlist);
    info!(
        hosts = %allowlist.hosts().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        origins = %allowlist.origins().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        mode = ?allowlist.mode,
        config = ?args.config,
        "allowlist loaded"
    );
    let (tx, rx) = watch::channel(Arc::new(allowlist));

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: args.listen,
            source,
        })?;
    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        ready: false.into(),
    });
    let admin_task = match args.admin_listen {
        Some(addr) => {
            let admin = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            info!(addr = %admin.local_addr().unwrap_or(addr), "admin listening (/livez, /readyz, /metrics)");
            Some(tokio::spawn(admin::serve(admin, admin_state.clone())))
        }
        None => None,
    };
    let watcher = tokio::spawn(config::watch_file(
        sources,
        content,
        args.config_poll_interval,
        tx,
        metrics.clone(),
    ));

    let proxy = Arc::new(Proxy {
        live: rx,
        client: upstream_client(
            &upstream,
            args.upstream_connect_timeout,
            args.upstream_read_buffer,
        ),
        upstream: upstream.clone(),
        preserve_host: args.preserve_host,
        metrics: metrics.clone(),
    });
    let limits = server::Limits {
        max_header_bytes: args.max_header_bytes,
        max_headers: args.max_headers,
        max_connections: args.max_connections.max(1),
        header_read_timeout: args.header_read_timeout,
        idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
    };
    info!(
        listen = %listener.local_addr().unwrap_or(args.listen),
        upstream = %upstream.authority,
        h2c = upstream.h2,
        preserve_host = args.preserve_host,
        "mcp-guard listening"
    );
    admin_state.ready.store(true, Ordering::Relaxed);

    let graceful = server::serve(listener, proxy, limits, terminate_signal()).await;
    admin_state.ready.store(false, Ordering::Relaxed);
    info!(open = graceful.count(), grace = ?args.drain_timeout, "draining connections (send the signal again to exit now)");
    tokio::select! {
        () = graceful.shutdown() => info!("drained; exiting"),
        () = tokio::time::sleep(args.drain_timeout) => warn!("drain timeout reached; exiting with connections open"),
        () = terminate_signal() => {
            error!("second signal; exiting now");
            std::process::exit(1);
        }
    }
    watcher.abort();
    if let Some(t) = admin_task {
        t.abort();
    }
    Ok(())
}
