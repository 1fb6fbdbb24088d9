//! `kubectl mcp-guard`: answers the two questions people ask of mcp-guard in a cluster, from the live objects and
//! with the operator's own rules (no copy of them here):
//!
//! - `explain MCPSERVER HOST|URL [--origin O]`: would the guard allow this request, and if not, which field,
//!   Ingress or Route would; where the current entries come from.
//! - `check-inject POD|deployment/NAME`: is the pod injected, or would it be, and why not.
//!
//! Exit status: 0 allowed / injected, 1 refused / not injected, 2 the question could not be answered.
//! docs/kubectl-plugin.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check_inject;
mod cluster;
mod explain;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl mcp-guard",
    version,
    about = "Explain mcp-guard's decisions in a cluster"
)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Whether the guard of an MCPServer would allow a request with this Host (or URL) and Origin, and if not,
    /// what would allow it.
    Explain {
        /// The MCPServer (name, or mcps/NAME).
        mcpserver: String,
        /// A Host header value (`mcp.example.com`, `mcp.example.com:8443`) or a URL (`https://mcp.example.com/mcp`).
        target: String,
        /// The request's Origin header, as a browser sends it (`https://app.example.com`).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Whether a pod (or a Deployment's pods) is or would be injected with the guard, and why not.
    CheckInject {
        /// A pod (NAME or pod/NAME) or a Deployment (deployment/NAME, deploy/NAME).
        target: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(true)`: allowed / injected.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let kube =
        cluster::Kube::connect(cli.kubeconfig.as_deref(), cli.context.as_deref(), cli.namespace).await?;
    match cli.command {
        Command::Explain {
            mcpserver,
            target,
            origin,
        } => {
            let name = mcpserver
                .strip_prefix("mcps/")
                .or_else(|| mcpserver.strip_prefix("mcpserver/"))
                .unwrap_or(&mcpserver);
            let facts = explain::fetch(&kube, name).await?;
            let request = explain::Request::parse(&target, origin.as_deref())?;
            let report = explain::report(&facts, &request);
            print!("{}", report.text);
            Ok(report.allowed)
        }
        Command::CheckInject { target } => {
            let report = check_inject::run(&kube, &target).await?;
            print!("{}", report.text);
            Ok(report.injected)
        }
    }
}
