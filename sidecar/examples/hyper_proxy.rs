//! The least an HTTP/1.1 reverse proxy on hyper does: each client connection gets an upstream connection of its
//! own (hyper's client connection), every request is handed over as hyper parsed it and every response handed
//! back as hyper read it, bodies streaming through. No check, no header rewrite, no limit, no timer.
//! `bench/bench.py` measures it beside the guard: the share of the guard's CPU time per request that is hyper's
//! and tokio's (parsing and writing both connections, the body channels, the tasks), which nothing the guard does
//! less can remove short of framing HTTP by hand; the rest is the guard's own work.
//!
//! A measuring instrument, not a proxy. Shaped as the guard is: one single-threaded runtime per core (or
//! WORKERS), each with its own listener (SO_REUSEPORT).
//!
//!     cargo run --profile dist -p mcp-guard --example hyper_proxy -- 127.0.0.1:8080 127.0.0.1:9000 [WORKERS]

mod shaped;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

fn main() -> std::io::Result<()> {
    let (listen, upstream, workers) = shaped::args("hyper_proxy")?;
    shaped::run(listen, upstream, workers, serve)
}

type Sender = client::SendRequest<Incoming>;

/// One client connection: its requests, one after another, over its own upstream connection.
async fn serve(stream: TcpStream, upstream: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let own: Arc<Mutex<Option<Sender>>> = Arc::default();
    let service = service_fn(move |req: Request<Incoming>| {
        let own = own.clone();
        async move {
            let reused = lock(&own).take().filter(|s| !s.is_closed());
            let mut sender = match reused {
                Some(s) => s,
                None => dial(upstream).await?,
            };
            sender.ready().await.map_err(std::io::Error::other)?;
            let exchange = sender.send_request(req);
            *lock(&own) = Some(sender);
            exchange.await.map_err(std::io::Error::other)
        }
    });
    let _ = server::Builder::new()
        .auto_date_header(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn lock(own: &Mutex<Option<Sender>>) -> std::sync::MutexGuard<'_, Option<Sender>> {
    own.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn dial(upstream: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = client::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}
