//! mcp-guard: a streaming reverse proxy that enforces a Host/Origin allowlist in front of an MCP server.

use clap::Parser;
use mcp_guard::cli::{Args, LogFormat};
use tracing_subscriber::EnvFilter;

// The static (musl) build, the one that ships, allocates through mimalloc: musl's own allocator takes one lock
// for every call, which under two workers cost a third more CPU per request (docs/performance.md). mimalloc takes
// the place of the C library's malloc (its `override` feature), which Rust's default allocator calls; the crate
// is named here only so that it is linked.
#[cfg(target_env = "musl")]
use mimalloc as _;
// And copies through mcp-guard-memcpy's `memcpy`: musl's is slow for the small copies a request makes by the dozen.
#[cfg(target_env = "musl")]
use mcp_guard_memcpy as _;

fn init_logging(args: &Args) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("mcp-guard: {e:#}");
        return std::process::ExitCode::from(2);
    }
    match mcp_guard::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mcp-guard cannot start");
            eprintln!("mcp-guard: {}", mcp_guard::error_chain(&e));
            std::process::ExitCode::from(2)
        }
    }
}
