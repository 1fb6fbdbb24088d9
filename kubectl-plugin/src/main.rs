//! `kubectl mcp-guard`: answers the two questions people ask of mcp-guard in a cluster, from the live objects and
//! with the operator's own rules (no copy of them here):
//!
//! - `explain MCPSERVER HOST|URL [--origin O] [--token-file FILE|-]`: would the guard allow this request, and if
//!   not, which field, Ingress or Route would; where the current entries come from; with a token, whether the
//!   guard would accept it and why not (issuer, alg, aud against the server's resource URIs, exp, scopes).
//!   `explain MCPSERVER --as-service-account NS/NAME --tool NAME` (or `--as-subject`, `--as-group`, ...): may
//!   this caller make this call under the access rules, by which rule, and if not what to add.
//! - `check-inject POD|deployment/NAME`: is the pod injected, or would it be, and why not.
//! - `scan [-A] [--probe] [-o table|json]`: the MCP servers in the namespace (or all), whether each is guarded,
//!   and whether each answers a forged Host or Origin.
//!
//! Exit status: 0 allowed / injected / every server guarded, 1 refused / not injected / a server unguarded,
//! 2 the question could not be answered.
//! docs/kubectl-plugin.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod access;
mod check_inject;
mod cluster;
mod explain;
mod scan;
mod token;

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

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Whether the guard of an MCPServer would allow a request with this Host (or URL) and Origin, and if not,
    /// what would allow it.
    Explain {
        /// The MCPServer of mcpguard.dev: NAME, or TYPE/NAME with TYPE one of mcpservers.mcpguard.dev, mcpgs,
        /// mcpserver, mcpservers (only ours is meant here, whichever other MCPServer kinds the cluster has).
        mcpserver: String,
        /// A Host header value (`mcp.example.com`, `mcp.example.com:8443`) or a URL (`https://mcp.example.com/mcp`);
        /// may be left out with a caller (`--as-...`) to ask about the access rules alone.
        #[arg(required_unless_present_any = ["as_service_account", "as_subject", "as_client_id", "as_group", "as_scope"])]
        target: Option<String>,
        /// The request's Origin header, as a browser sends it (`https://app.example.com`).
        #[arg(long)]
        origin: Option<String>,
        /// A bearer token to check as the guard would (a file, or `-` for stdin; never printed).
        #[arg(long, value_name = "FILE")]
        token_file: Option<String>,
        /// The JWKS of an issuer whose keys the guard fetches itself (the cluster's are in the guard config).
        #[arg(long, value_name = "FILE", requires = "token_file")]
        jwks: Option<std::path::PathBuf>,
        /// The JSON-RPC method of the call, for its scopes and the access rules (default with --tool: `tools/call`).
        #[arg(long)]
        method: Option<String>,
        /// The tool of a `tools/call` (the prompt of `prompts/get`, the URI of `resources/read`), for its scopes and
        /// the access rules.
        #[arg(long, visible_alias = "name")]
        tool: Option<String>,
        /// Ask for this caller under the access rules: the ServiceAccount NAMESPACE/NAME of a projected token.
        #[arg(long, value_name = "NAMESPACE/NAME")]
        as_service_account: Option<String>,
        /// Ask for a token with this `sub`.
        #[arg(long, value_name = "SUB")]
        as_subject: Option<String>,
        /// Ask for a token with this `client_id` (or `azp`).
        #[arg(long, value_name = "CLIENT")]
        as_client_id: Option<String>,
        /// Ask for a token with this group (repeatable).
        #[arg(long, value_name = "GROUP")]
        as_group: Vec<String>,
        /// Ask for a token with this scope (repeatable).
        #[arg(long, value_name = "SCOPE")]
        as_scope: Vec<String>,
    },
    /// Whether a pod (or a Deployment's pods) is or would be injected with the guard, and why not.
    CheckInject {
        /// A pod (NAME or pod/NAME) or a Deployment (deployment/NAME, deploy/NAME).
        target: String,
    },
    /// The MCP servers in the namespace (or every namespace), whether mcp-guard guards each, and with --probe
    /// whether each answers a request with a forged Host or a forged Origin.
    Scan {
        /// Every namespace the user may list.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Send each MCP port a JSON-RPC ping with a forged Host, then a forged Origin, through the API server's
        /// Service proxy (needs `create services/proxy`).
        #[arg(long)]
        probe: bool,
        /// How long each probe request may take.
        #[arg(long, default_value = "5", value_name = "SECONDS")]
        probe_timeout: u64,
        /// `table` (for people) or `json`.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
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
/// The name in `NAME` or `TYPE/NAME`. A type of another group (`mcpservers.kagent.dev/x`, kagent's short name
/// `mcps`) is refused rather than read as ours.
fn mcpserver_name(arg: &str) -> anyhow::Result<&str> {
    const OURS: [&str; 5] = [
        "mcpservers.mcpguard.dev",
        "mcpserver.mcpguard.dev",
        "mcpgs",
        "mcpserver",
        "mcpservers",
    ];
    match arg.split_once('/') {
        None => Ok(arg),
        Some((kind, name)) if OURS.contains(&kind.to_ascii_lowercase().as_str()) && !name.is_empty() => {
            Ok(name)
        }
        Some((kind, _)) => anyhow::bail!(
            "{arg:?}: {kind:?} is not mcp-guard's MCPServer; write NAME or mcpservers.mcpguard.dev/NAME"
        ),
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let kube =
        cluster::Kube::connect(cli.kubeconfig.as_deref(), cli.context.as_deref(), cli.namespace).await?;
    match cli.command {
        Command::Explain {
            mcpserver,
            target,
            origin,
            token_file,
            jwks,
            method,
            tool,
            as_service_account,
            as_subject,
            as_client_id,
            as_group,
            as_scope,
        } => {
            let name = mcpserver_name(&mcpserver)?;
            let caller = access::Caller {
                service_account: as_service_account,
                subject: as_subject,
                client_id: as_client_id,
                groups: as_group,
                scopes: as_scope,
            };
            // Usage errors before any cluster work: a token that cannot be read, a call that cannot be judged.
            let token = token_file.as_deref().map(token::read_token).transpose()?;
            anyhow::ensure!(
                token.is_none() || target.is_some(),
                "--token-file needs the HOST or URL the token is sent to (its resource URI)"
            );
            anyhow::ensure!(
                !caller.is_given() || token.is_none(),
                "give a caller either with --as-... or with --token-file, not both"
            );
            anyhow::ensure!(
                token.is_some() || caller.is_given() || (method.is_none() && tool.is_none()),
                "--method and --tool need a caller: --token-file, or --as-service-account and the like"
            );
            // With a caller, the call must be one the rules can judge; with a token, `--method` alone may ask
            // for scopes only.
            let call = match (caller.is_given(), tool.is_some() || method.is_some()) {
                (true, _) => Some(access::Call::new(method.as_deref(), tool.as_deref())?),
                (false, true) => access::Call::new(method.as_deref(), tool.as_deref()).ok(),
                (false, false) => None,
            };
            let caller_identity = caller.is_given().then(|| caller.identity()).transpose()?;
            let keys = match &jwks {
                None => None,
                Some(path) => {
                    let bytes = std::fs::read(path)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                    let set = mcp_guard_config::auth::KeySet::from_jwks_json(&bytes)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    Some(std::sync::Arc::new(set))
                }
            };
            let facts = explain::fetch(&kube, name).await?;
            let mut allowed = true;
            let mut identity = caller_identity;
            if let Some(target) = &target {
                let request = explain::Request::parse(target, origin.as_deref())?;
                let report = explain::report(&facts, &request);
                print!("{}", report.text);
                allowed &= report.allowed;
                if let Some(token) = &token {
                    let auth = facts.config.as_ref().ok().and_then(|c| c.auth.as_ref());
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_secs();
                    let calls = [(method.as_deref(), tool.as_deref())];
                    let (accepted, text, verified) =
                        token::explain(auth, &request.host, token, &token::GivenKeys(keys), &calls, now);
                    print!("{text}");
                    allowed &= accepted;
                    identity = identity.or(verified);
                }
            }
            if let Some(call) = &call {
                let config = facts.config.as_ref().map_err(|why| anyhow::anyhow!("{why}"))?;
                match &identity {
                    Some(id) => {
                        let rules = facts
                            .server
                            .status
                            .as_ref()
                            .and_then(|s| s.access.as_ref())
                            .map(|a| a.rules.clone())
                            .unwrap_or_default();
                        let server = format!("{}/{name}", facts.namespace);
                        let (ok, text) = access::explain(config, &server, &rules, id, call);
                        print!("{text}");
                        allowed &= ok;
                    }
                    // A token the guard refused: the access rules are never reached.
                    None => allowed = false,
                }
            }
            Ok(allowed)
        }
        Command::CheckInject { target } => {
            let report = check_inject::run(&kube, &target).await?;
            print!("{}", report.text);
            Ok(report.injected)
        }
        Command::Scan {
            all_namespaces,
            probe,
            probe_timeout,
            output,
        } => {
            let namespace = (!all_namespaces).then_some(kube.namespace.as_str());
            let cluster = scan::fetch(&kube, namespace).await?;
            let mut found = scan::discover(&cluster);
            if probe {
                scan::probe(
                    &kube.client,
                    &mut found,
                    std::time::Duration::from_secs(probe_timeout),
                )
                .await;
            }
            match output.as_str() {
                "json" => print!("{}", scan::json(&found)),
                _ => print!("{}", scan::table(&found, probe)),
            }
            Ok(found.iter().all(|f| f.guard.is_guarded()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mcpserver_name;

    #[test]
    fn only_our_mcpserver_kind_is_read() {
        for ours in [
            "weather",
            "mcpservers.mcpguard.dev/weather",
            "mcpgs/weather",
            "mcpserver/weather",
            "MCPServers/weather",
        ] {
            assert_eq!(mcpserver_name(ours).ok(), Some("weather"), "{ours}");
        }
        for other in [
            "mcps/weather",
            "mcpservers.kagent.dev/weather",
            "mcpservers.mcp.x-k8s.io/weather",
            "mcpgs/",
        ] {
            assert!(mcpserver_name(other).is_err(), "{other}");
        }
    }
}
