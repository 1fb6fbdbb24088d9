//! The `mcp-guard-operator` command line (every flag also as env `MCP_GUARD_OPERATOR_<FLAG>`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::controller::ControllerSettings;
use crate::leader::LeaseSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether to watch HTTPRoutes and Gateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GatewayApi {
    /// Discover at start-up and every `--discovery-interval-seconds`.
    Auto,
    Enabled,
    Disabled,
}

/// Derives each MCPServer's Host/Origin allowlist from Ingresses, HTTPRoutes and Services, and injects the
/// mcp-guard sidecar.
#[derive(Clone, Debug, Parser)]
#[command(name = "mcp-guard-operator", version, about)]
pub struct Cli {
    /// Admin listener: /livez, /readyz, /metrics. An IPv4 address may be bracketed as IPv6 ones are, so that the
    /// chart's `[$(POD_IP)]:8080` serves pods of either family.
    #[arg(long, env = "MCP_GUARD_OPERATOR_ADMIN_LISTEN", default_value = "0.0.0.0:8080", value_parser = parse_listen)]
    pub admin_listen: SocketAddr,
    /// Webhook listener (HTTPS): /mutate-pods, /validate-mcpserver. Bracketed IPv4 as for `--admin-listen`.
    #[arg(
        long,
        env = "MCP_GUARD_OPERATOR_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:9443",
        value_parser = parse_listen
    )]
    pub webhook_listen: SocketAddr,
    /// Webhook serving certificate (PEM).
    #[arg(
        long,
        env = "MCP_GUARD_OPERATOR_TLS_CERT_FILE",
        default_value = "/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,
    /// Webhook serving key (PEM).
    #[arg(long, env = "MCP_GUARD_OPERATOR_TLS_KEY_FILE", default_value = "/tls/tls.key")]
    pub tls_key_file: PathBuf,
    /// Do not serve the admission webhook.
    #[arg(long, env = "MCP_GUARD_OPERATOR_NO_WEBHOOK")]
    pub no_webhook: bool,
    /// Do not run the controller.
    #[arg(long, env = "MCP_GUARD_OPERATOR_NO_CONTROLLER")]
    pub no_controller: bool,
    /// Namespace of the leader-election Lease (default: env POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long, env = "MCP_GUARD_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "MCP_GUARD_OPERATOR_LEASE_NAME",
        default_value = "mcp-guard-operator"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (default: env POD_NAME, else the host name).
    #[arg(long, env = "MCP_GUARD_OPERATOR_IDENTITY")]
    pub identity: Option<String>,
    /// Run the controller without leader election (single replica only).
    #[arg(long, env = "MCP_GUARD_OPERATOR_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Lease validity without renewal.
    #[arg(long, env = "MCP_GUARD_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// How long the leader keeps leading while renewals fail.
    #[arg(long, env = "MCP_GUARD_OPERATOR_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    pub renew_deadline_seconds: u64,
    /// How often candidates try and the leader renews.
    #[arg(long, env = "MCP_GUARD_OPERATOR_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub retry_period_seconds: u64,
    /// Cluster DNS domain used for Service DNS names.
    #[arg(
        long,
        env = "MCP_GUARD_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Watch HTTPRoutes/Gateways: auto (discover), enabled, disabled.
    #[arg(long, env = "MCP_GUARD_OPERATOR_GATEWAY_API", value_enum, default_value_t = GatewayApi::Auto)]
    pub gateway_api: GatewayApi,
    /// How often to re-discover the Gateway API when `--gateway-api auto`.
    #[arg(
        long,
        env = "MCP_GUARD_OPERATOR_DISCOVERY_INTERVAL_SECONDS",
        default_value_t = 30
    )]
    pub discovery_interval_seconds: u64,
    /// Reconciles running at once.
    #[arg(long, env = "MCP_GUARD_OPERATOR_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,
    /// Seconds an empty allowlist may last before it is a Warning (objects applied together arrive one by one).
    #[arg(
        long,
        env = "MCP_GUARD_OPERATOR_EMPTY_ALLOWLIST_GRACE_SECONDS",
        default_value_t = 10
    )]
    pub empty_allowlist_grace_seconds: u64,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MCP_GUARD_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Guard image injected when the policy names none.
    #[arg(long, env = "MCP_GUARD_OPERATOR_DEFAULT_SIDECAR_IMAGE", default_value = crate::webhook::DEFAULT_SIDECAR_IMAGE)]
    pub default_sidecar_image: String,
    /// Log format.
    #[arg(long, env = "MCP_GUARD_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax); `RUST_LOG` works too.
    #[arg(long, env = "MCP_GUARD_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Seconds to drain on SIGTERM before exiting (a second signal exits at once).
    #[arg(long, env = "MCP_GUARD_OPERATOR_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// Seconds to go on serving the webhook after SIGTERM, before the drain: a stopping pod leaves its Service's
    /// endpoints at once, but kube-proxy and the API server learn so a moment later and may still send it
    /// admission reviews, which `failurePolicy: Fail` turns into refused pods.
    #[arg(long, env = "MCP_GUARD_OPERATOR_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,
    /// Run a one-off command instead of the operator.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Wait until the admission webhooks answer through the API server, then exit 0; exit 1 with the last
    /// reason after `--timeout-seconds`. The chart's post-install/post-upgrade hook runs it, so that
    /// `helm install --wait` returns only when `kubectl apply` of an MCPServer reaches the webhook.
    CheckWebhooks(CheckWebhooksArgs),
}

#[derive(Clone, Debug, Args)]
pub struct CheckWebhooksArgs {
    /// Namespace of the dry-run probe (the release namespace; env POD_NAMESPACE, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How long to keep trying.
    #[arg(long, default_value_t = 180)]
    pub timeout_seconds: u64,
    /// Seconds between probes.
    #[arg(long, default_value_t = 2)]
    pub interval_seconds: u64,
}

impl Cli {
    /// This replica's identity: `--identity`, env `POD_NAME`, the host name, or a fixed fallback.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("mcp-guard-operator-{}", std::process::id()))
    }

    /// The Lease namespace: `--leader-election-namespace`, env `POD_NAMESPACE`, else `fallback`.
    pub fn lease_namespace(&self, fallback: &str) -> String {
        self.leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| fallback.to_string())
    }

    pub fn controller_settings(&self) -> ControllerSettings {
        ControllerSettings {
            cluster_domain: self.cluster_domain.clone(),
            identity: self.identity(),
            gateway_api: match self.gateway_api {
                GatewayApi::Auto => None,
                GatewayApi::Enabled => Some(true),
                GatewayApi::Disabled => Some(false),
            },
            discovery_interval: Duration::from_secs(self.discovery_interval_seconds.max(1)),
            concurrency: self.concurrency.max(1),
            empty_allowlist_grace: Duration::from_secs(self.empty_allowlist_grace_seconds),
            namespace: self.watch_namespace.clone().filter(|s| !s.is_empty()),
        }
    }

    /// Lease settings, or `None` with `--no-leader-election`.
    pub fn lease_settings(&self, fallback_namespace: &str) -> Option<LeaseSettings> {
        (!self.no_leader_election).then(|| LeaseSettings {
            namespace: self.lease_namespace(fallback_namespace),
            name: self.lease_name.clone(),
            identity: self.identity(),
            lease_duration: Duration::from_secs(self.lease_duration_seconds.max(1)),
            renew_deadline: Duration::from_secs(self.renew_deadline_seconds.max(1)),
            retry_period: Duration::from_secs(self.retry_period_seconds.max(1)),
        })
    }
}

/// Installs the tracing subscriber (text or JSON).
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves on the first SIGTERM/SIGINT; a second one exits the process at once.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down (send the signal again to exit at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// A listen address: `10.0.0.7:9443`, `[fd00::7]:9443`, or a bracketed IPv4 address `[10.0.0.7]:9443` (what
/// `[$(POD_IP)]:9443` becomes on an IPv4 pod).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
        .and_then(|(ip, port)| {
            Some(SocketAddr::new(
                ip.parse::<std::net::Ipv4Addr>().ok()?.into(),
                port.parse().ok()?,
            ))
        })
        .ok_or_else(|| {
            format!("{s:?} is not an address:port (10.0.0.7:9443, [fd00::7]:9443 or [10.0.0.7]:9443)")
        })
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses_of_either_family() {
        assert_eq!(
            parse_listen("0.0.0.0:8080").map(|a| a.to_string()),
            Ok("0.0.0.0:8080".into())
        );
        assert_eq!(
            parse_listen("[fd00::7]:9443").map(|a| a.to_string()),
            Ok("[fd00::7]:9443".into())
        );
        assert_eq!(
            parse_listen("[10.0.0.7]:9443").map(|a| a.to_string()),
            Ok("10.0.0.7:9443".into())
        );
        for bad in [
            "[10.0.0.7]",
            "10.0.0.7",
            "[10.0.0.7]:x",
            "[$(POD_IP)]:8080",
            "[::1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }
}
