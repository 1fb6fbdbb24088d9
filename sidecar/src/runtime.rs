//! The guard's runtime: a control thread (admin listener, config watcher, signals) and the worker threads that
//! serve the guarded port, started, drained and stopped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::AdminState;
use crate::audit::AuditLog;
use crate::cli::{Args, ListenAddrs};
use crate::config::{self, ConfigSources};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::pool::UpstreamPool;
use crate::proxy::Proxy;
use crate::token_cache::TokenCache;
use crate::upstream::Upstream;
use crate::{StartError, admin, limiter, server};

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

/// Binds the guarded port. With `reuse_port`, several workers bind the same address and the kernel spreads
/// connections over them (SO_REUSEPORT).
fn bind_listener(addr: std::net::SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// One worker: a single-threaded runtime with its own listener socket and upstream connection pool, so a
/// request and its upstream exchange never hop between threads.
struct Worker {
    thread: std::thread::JoinHandle<()>,
}

struct WorkerSpec {
    index: usize,
    addr: std::net::SocketAddr,
    reuse_port: bool,
    live: config::LiveAllowlist,
    upstream: Upstream,
    preserve_host: bool,
    connect_timeout: Duration,
    read_buffer: usize,
    metrics: Arc<Metrics>,
    limiter: Arc<limiter::Limiter>,
    keys: Arc<KeyStore>,
    tokens: Arc<TokenCache>,
    audit: Arc<AuditLog>,
    limits: server::Limits,
    drain_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

fn start_worker(
    spec: WorkerSpec,
    bound: std::sync::mpsc::Sender<Result<std::net::SocketAddr, StartError>>,
) -> std::io::Result<Worker> {
    let thread = std::thread::Builder::new()
        .name(format!("mcp-guard-{}", spec.index))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(source) => {
                    let _ = bound.send(Err(StartError::Runtime {
                        what: "worker",
                        source,
                    }));
                    return;
                }
            };
            rt.block_on(async move {
            let listener = match bind_listener(spec.addr, spec.reuse_port) {
                Ok(l) => l,
                Err(source) => {
                    let _ = bound.send(Err(StartError::Bind { addr: spec.addr, source }));
                    return;
                }
            };
            let _ = bound.send(Ok(listener.local_addr().unwrap_or(spec.addr)));
            let pool = UpstreamPool::new(&spec.upstream, spec.connect_timeout, spec.read_buffer);
            let proxy = Arc::new(Proxy {
                live: spec.live,
                pool,
                upstream: spec.upstream,
                preserve_host: spec.preserve_host,
                metrics: spec.metrics,
                limiter: spec.limiter,
                keys: spec.keys,
                tokens: spec.tokens,
                audit: spec.audit,
            });
            let mut shutdown = spec.shutdown;
            let stop = async move {
                while !*shutdown.borrow_and_update() {
                    if shutdown.changed().await.is_err() {
                        return;
                    }
                }
            };
            let graceful = server::serve(listener, proxy, spec.limits, stop).await;
            tokio::select! {
                () = graceful.shutdown() => {},
                () = tokio::time::sleep(spec.drain_timeout) => {
                    warn!(worker = spec.index, "drain timeout reached; closing the connections still open");
                }
            }
        });
        })?;
    Ok(Worker { thread })
}

/// Starts and stops the key fetchers as reloaded configs name other issuers.
async fn sync_keys(keys: Arc<KeyStore>, mut live: config::LiveAllowlist) {
    while live.changed().await.is_ok() {
        let allowlist = live.borrow_and_update().clone();
        keys.sync(allowlist.auth.as_ref());
    }
}

/// How many workers (threads) to run: `--worker-threads`, or one per CPU up to 2.
pub fn worker_count(requested: usize) -> usize {
    match requested {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(2),
        n => n,
    }
}

/// Runs the guard until SIGTERM/SIGINT (then drains) — the whole binary minus argument parsing and logging.
/// Blocks the calling thread: a small control runtime runs the admin listener, the config watcher and the
/// signal handling; each worker thread serves the guarded port.
pub fn run(args: Args) -> Result<(), StartError> {
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StartError::Runtime {
            what: "control",
            source,
        })?;
    control.block_on(run_control(args))
}

async fn run_control(args: Args) -> Result<(), StartError> {
    let sources = ConfigSources::from_args(&args)?;
    let (allowlist, content) = sources.load()?;
    let upstream = Upstream::parse(&args.upstream, args.upstream_h2c)?;
    let metrics = Arc::new(Metrics::new());
    config::describe(&metrics, &allowlist);
    info!(
        hosts = %allowlist.hosts().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        origins = %allowlist.origins().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        mode = ?allowlist.mode,
        trusted_proxies = %allowlist.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        rate_limits = allowlist.limits.limits_clients(),
        auth = allowlist.auth.is_some(),
        audit = allowlist.audit.is_some(),
        config = ?args.config,
        "allowlist loaded"
    );
    // The issuers' keys are fetched on this (control) runtime, and again whenever a new config names others.
    let keys = KeyStore::new(metrics.clone());
    let tokens = Arc::new(TokenCache::default());
    keys.sync(allowlist.auth.as_ref());
    let (tx, rx) = watch::channel(Arc::new(allowlist));
    let key_sync = tokio::spawn(sync_keys(keys.clone(), rx.clone()));

    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        started: false.into(),
        serving: false.into(),
        upstream: upstream.authority.to_string(),
        keys: keys.clone(),
    });
    let admin_task = match args.admin_listen {
        Some(addr) => {
            let admin = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::AdminBind { addr, source })?;
            info!(addr = %admin.local_addr().unwrap_or(addr), "admin listening (/livez, /readyz, /metrics)");
            Some(tokio::spawn(admin::serve(admin, admin_state.clone())))
        }
        None => None,
    };

    let limits = server::Limits {
        max_header_bytes: args.max_header_bytes,
        max_headers: args.max_headers,
        max_connections: args.max_connections.max(1),
        header_read_timeout: args.header_read_timeout,
        idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
    };
    let workers = worker_count(args.worker_threads);
    let (stop_tx, stop_rx) = watch::channel(false);
    let addrs = &args.listen.0;
    let mut threads = Vec::with_capacity(workers * addrs.len());
    let mut listening = Vec::with_capacity(addrs.len());
    let limiter = limiter::Limiter::new(metrics.rate_limit_tracked_clients.clone());
    // The audit log has stdout to itself: every other log goes to stderr.
    let audit = AuditLog::new(
        Box::new(std::io::stdout()),
        args.audit_queue_lines,
        metrics.clone(),
    );
    // Each address (a dual-stack pod has two) gets its own workers; the connection limit is shared out over all.
    let per_worker_connections = (limits.max_connections / (workers * addrs.len())).max(1);
    for &listen in addrs {
        let mut addr = listen;
        if workers > 1 {
            // The workers share the port through SO_REUSEPORT, which would also let a second process of the same
            // user (another guard started on the same port by mistake) silently take part of the connections. A
            // plain bind first turns that into a clear start-up error; it also fixes the port when `--listen` asks
            // for port 0. Workers of an earlier address are stopped if this one fails.
            let probe = std::net::TcpListener::bind(addr)
                .inspect_err(|_| {
                    let _ = stop_tx.send(true);
                })
                .map_err(|source| StartError::Bind { addr, source })?;
            addr = probe.local_addr().unwrap_or(addr);
        }
        for _ in 0..workers {
            let index = threads.len();
            let (bound_tx, bound_rx) = std::sync::mpsc::channel();
            let spec = WorkerSpec {
                index,
                addr,
                reuse_port: workers > 1,
                live: rx.clone(),
                upstream: upstream.clone(),
                preserve_host: args.preserve_host,
                connect_timeout: args.upstream_connect_timeout,
                read_buffer: args.upstream_read_buffer,
                metrics: metrics.clone(),
                limiter: limiter.clone(),
                keys: keys.clone(),
                tokens: tokens.clone(),
                audit: audit.clone(),
                limits: server::Limits {
                    max_connections: per_worker_connections,
                    ..limits.clone()
                },
                drain_timeout: args.drain_timeout,
                shutdown: stop_rx.clone(),
            };
            let worker = start_worker(spec, bound_tx)
                .inspect_err(|_| {
                    let _ = stop_tx.send(true);
                })
                .map_err(|source| StartError::Spawn { index, source })?;
            threads.push(worker);
            let bound = tokio::task::spawn_blocking(move || bound_rx.recv())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(Err(StartError::WorkerLost { index }));
            match bound {
                // later workers bind the address the first one got (a port of 0 picks one)
                Ok(local) => addr = local,
                Err(e) => {
                    let _ = stop_tx.send(true);
                    return Err(e);
                }
            }
        }
        listening.push(addr);
    }
    let watcher = tokio::spawn(config::watch_file(
        sources,
        content,
        args.config_poll_interval,
        tx,
        metrics.clone(),
    ));
    info!(
        listen = %ListenAddrs(listening),
        upstream = %upstream.authority,
        h2c = upstream.h2,
        preserve_host = args.preserve_host,
        workers,
        "mcp-guard listening"
    );
    admin_state.started.store(true, Ordering::Relaxed);
    admin_state.serving.store(true, Ordering::Relaxed);

    terminate_signal().await;
    admin_state.serving.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    info!(
        open = metrics.open_connections.get(),
        grace = ?args.drain_timeout,
        "draining connections (send the signal again to exit now)"
    );
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.thread.join();
        }
    });
    tokio::select! {
        _ = joined => info!("drained; exiting"),
        () = terminate_signal() => {
            error!("second signal; exiting now");
            std::process::exit(1);
        }
    }
    watcher.abort();
    key_sync.abort();
    if let Some(t) = admin_task {
        t.abort();
    }
    Ok(())
}
