//! A byte relay that does none of the guard's work: no parsing, no check, no pool, one upstream connection per
//! client connection. `bench/bench.py` measures it beside the guard as the floor of what any proxy reaches on
//! the machine: the system calls and the scheduling that relaying a request and its response over two loopback
//! connections cost, and nothing else.
//!
//! It is a measuring instrument, not a proxy: it takes each read from the client as one whole request and each
//! read from the upstream as one whole response, which holds for the benchmark's small keep-alive exchanges.
//! Shaped as the guard is: one single-threaded runtime per core, each with its own listener (SO_REUSEPORT).
//!
//!     cargo run --profile dist -p mcp-guard --example relay -- 127.0.0.1:8080 127.0.0.1:9000 [WORKERS]

mod shaped;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() -> std::io::Result<()> {
    let (listen, upstream, workers) = shaped::args("relay")?;
    shaped::run(listen, upstream, workers, |client, upstream| async move {
        let _ = relay(client, upstream).await;
    })
}

async fn relay(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        up.write_all(&buf[..n]).await?;
        let n = up.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        client.write_all(&buf[..n]).await?;
    }
}
