//! mcp-guard: a streaming reverse proxy that enforces a Host/Origin allowlist in front of an MCP server.
//!
//! Pure core, thin I/O shell: every admission rule lives in [`policy`] (which asks
//! [`mcp_guard_config::Allowlist::check`]), whose one audit/enforce fold ([`policy::fold`]) says which refusals
//! audit mode forwards; [`refusal`] renders every refusal; [`proxy`] only moves requests and bodies; [`runtime`]
//! starts the threads. hyper serves every connection, HTTP/1.1 and h2c, client side and upstream side, and owns
//! the framing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod audit;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod idle;
pub mod keys;
pub mod limiter;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod refusal;
pub mod runtime;
pub mod server;
pub mod token_cache;
pub mod upstream;

pub use crate::error::chain as error_chain;
pub use crate::runtime::{run, worker_count};

use crate::config::LoadError;

/// Why the guard could not start: one variant per cause.
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
    #[error("cannot listen on {addr} for the admin endpoints: {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the {what} runtime: {source}")]
    Runtime {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start worker thread {index}: {source}")]
    Spawn {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("worker thread {index} ended before it was listening")]
    WorkerLost { index: usize },
}
