//! A byte relay that does none of the guard's work: no parsing, no check, no pool, one upstream connection per
//! client connection. `bench/bench.py` measures it beside the guard as the floor of what any proxy reaches on
//! the machine: the system calls and the scheduling that relaying a request and its response over two loopback
//! connections cost, and nothing else.
//!
//! It is a measuring instrument, not a proxy: it takes each read from the client as one whole request and each
//! read from the upstream as one whole response, which holds for the benchmark's small keep-alive exchanges.
//! Shaped as the guard is: one single-threaded runtime per core, each with its own listener (SO_REUSEPORT).
//!
//!     cargo run --profile dist -p mcp-guard --example relay -- 127.0.0.1:8080 127.0.0.1:9000

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: relay LISTEN_ADDR UPSTREAM_ADDR");
    let listen: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let upstream: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| std::io::Error::other("a worker panicked"))??;
    }
    Ok(())
}

fn worker(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
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
            tokio::spawn(relay(client, upstream));
        }
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
