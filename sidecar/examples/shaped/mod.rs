//! What the measuring examples share: shaped as the guard is, one single-threaded runtime per worker thread, each
//! with its own listener on the same address (SO_REUSEPORT), each connection served by a task of its own, and the
//! guard's allocator and `memcpy` in its static (musl) build.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

// mimalloc replaces the C library's malloc, mcp-guard-memcpy its memcpy (see sidecar/src/main.rs); named so
// that they are linked.
#[cfg(target_env = "musl")]
use mcp_guard_memcpy as _;
#[cfg(target_env = "musl")]
use mimalloc as _;

/// `LISTEN_ADDR UPSTREAM_ADDR [WORKERS]` from the command line (workers: one per core when not given).
pub fn args(name: &str) -> std::io::Result<(SocketAddr, SocketAddr, usize)> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other(format!("usage: {name} LISTEN_ADDR UPSTREAM_ADDR [WORKERS]"));
    let listen = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let upstream = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let workers = match args.next() {
        Some(n) => n.parse().map_err(|_| usage())?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok((listen, upstream, workers))
}

/// Runs `workers` threads, each accepting on `listen` and spawning `serve(client, upstream)` for every connection;
/// returns when one fails.
pub fn run<F, S>(listen: SocketAddr, upstream: SocketAddr, workers: usize, serve: S) -> std::io::Result<()>
where
    S: Fn(TcpStream, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let serve = serve.clone();
            std::thread::spawn(move || worker(listen, upstream, serve))
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| std::io::Error::other("a worker panicked"))??;
    }
    Ok(())
}

fn worker<F, S>(listen: SocketAddr, upstream: SocketAddr, serve: S) -> std::io::Result<()>
where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = if listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(serve(client, upstream));
        }
    })
}
