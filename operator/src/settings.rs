//! An MCPServer's effective settings: what it leaves out filled in from its MCPGuardPolicy, then from the
//! built-in defaults — resolved here once, for the derivation (mode, limits, trusted proxies, the port Services
//! must reach), the webhook (layout, ports, sidecar) and the NetworkPolicy (ports, peers).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};
use mcp_guard_config::Limits;

use crate::crd::{
    AuthSpec, DEFAULT_GUARD_PORT, GuardMode, ImagePullPolicy, IssuerSpec, LogLevel, MCPGuardPolicySpec,
    MCPServerSpec, NativeSidecars, RateLimitSpec, TrafficLayout,
};

#[cfg(test)]
mod tests;

/// The image injected when the policy names none (overridden by the operator's `--default-sidecar-image`).
pub const DEFAULT_SIDECAR_IMAGE: &str = "ghcr.io/mcp-guard/mcp-guard:0.2.0-dev";

/// What an MCPServer runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub mode: GuardMode,
    pub layout: TrafficLayout,
    /// The port the server listens on (`spec.port`).
    pub server_port: i32,
    /// The port clients reach the guard on, which Services must target: `spec.port` in `SharedPort`, the
    /// guard's own port (`traffic.guardPort`, default 15080) in `GuardPort`.
    pub guarded_port: i32,
    /// Each limit the MCPServer leaves out comes from the policy; the guard's built-in defaults fill the rest.
    pub limits: Limits,
    /// The policy's trusted proxy CIDRs, then the server's, each once, only those the guard loads.
    pub trusted_proxies: Vec<String>,
    /// Trusted proxies the guard would refuse, each with where it came from and why (reported, not written).
    pub rejected_proxies: Vec<String>,
    /// The guard container (the policy's `sidecar`, defaults filled in).
    pub sidecar: SidecarSettings,
    /// The policy's `injection.nativeSidecars`: `None` = `Auto` (the cluster decides).
    pub native_sidecars: Option<bool>,
    pub network: NetworkSettings,
    /// CORS answered by the guard: the server's `cors.enabled`, else the policy's, else off.
    pub cors: bool,
    /// Authentication, when on (`None`: the guard checks no tokens).
    pub auth: Option<AuthSettings>,
}

/// The path of the MCP endpoint in resource URIs when `auth.resourcePath` is not set.
pub const DEFAULT_RESOURCE_PATH: &str = "/mcp";

/// An MCPServer's authentication: its `spec.auth` over its policy's, field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthSettings {
    pub issuers: Vec<IssuerSpec>,
    /// Trust the cluster's service-account issuer.
    pub kubernetes: bool,
    pub required_scopes: Vec<String>,
    pub method_scopes: std::collections::BTreeMap<String, Vec<String>>,
    pub tool_scopes: std::collections::BTreeMap<String, Vec<String>>,
    pub service_accounts: Vec<String>,
    pub pass_token: bool,
    pub resource_path: String,
}

/// The guard container's settings (from the MCPGuardPolicy's `sidecar`, defaults filled in).
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarSettings {
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// `None`: the webhook's default requests and limits.
    pub resources: Option<ResourceRequirements>,
    /// `None`: the guard's default.
    pub log_level: Option<String>,
}

/// The NetworkPolicy the operator writes for the server (the policy's switch and admin peers, the server's
/// peers and extra ports).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkSettings {
    pub enabled: bool,
    /// Peers allowed to reach the guarded port; empty: every source.
    pub ingress_from: Vec<NetworkPolicyPeer>,
    /// Peers allowed to reach the guard's admin port; empty: every source.
    pub admin_ingress_from: Vec<NetworkPolicyPeer>,
    pub additional_ports: Vec<NetworkPolicyPort>,
}

/// Resolves a server's settings over its policy (`None`: the policy does not exist, built-in defaults apply).
/// `default_image` is the operator's `--default-sidecar-image` (only the webhook reads the sidecar).
pub fn resolve(spec: &MCPServerSpec, policy: Option<&MCPGuardPolicySpec>, default_image: &str) -> Settings {
    let default_policy = MCPGuardPolicySpec::default();
    let policy = policy.unwrap_or(&default_policy);
    // The server's own layout, else the policy's default, else SharedPort.
    let layout = spec
        .traffic
        .as_ref()
        .and_then(|t| t.layout)
        .or_else(|| policy.traffic.as_ref().and_then(|t| t.default_layout))
        .unwrap_or_default();
    let (trusted_proxies, rejected_proxies) = trusted_proxies(spec, policy);
    let np = policy.network_policy.clone().unwrap_or_default();
    let network = spec.network.clone().unwrap_or_default();
    Settings {
        mode: spec.mode.or(policy.default_mode).unwrap_or_default(),
        layout,
        server_port: spec.port,
        guarded_port: match layout {
            TrafficLayout::SharedPort => spec.port,
            TrafficLayout::GuardPort => guard_port(spec),
        },
        limits: limits(spec, policy),
        trusted_proxies,
        rejected_proxies,
        sidecar: sidecar(policy, default_image),
        native_sidecars: match policy.injection.as_ref().and_then(|i| i.native_sidecars) {
            None | Some(NativeSidecars::Auto) => None,
            Some(NativeSidecars::Always) => Some(true),
            Some(NativeSidecars::Never) => Some(false),
        },
        network: NetworkSettings {
            enabled: np.enabled,
            ingress_from: network.ingress_from,
            admin_ingress_from: np.admin_ingress_from,
            additional_ports: network.additional_ports,
        },
        cors: [&spec.cors, &policy.cors]
            .into_iter()
            .find_map(|c| c.as_ref().and_then(|c| c.enabled))
            .unwrap_or(false),
        auth: auth(spec.auth.as_ref(), policy.auth.as_ref()),
    }
}

/// Authentication: on when the server's `enabled` says so, else the policy's, else when the server has
/// `spec.auth` at all (a policy's issuers alone are defaults, not a switch). Each field the server sets wins;
/// the scope maps are merged, the server's entries winning.
pub fn auth(server: Option<&AuthSpec>, policy: Option<&AuthSpec>) -> Option<AuthSettings> {
    let enabled = server
        .and_then(|a| a.enabled)
        .or_else(|| policy.and_then(|a| a.enabled))
        .unwrap_or(server.is_some());
    if !enabled {
        return None;
    }
    let empty = AuthSpec::default();
    let (s, p) = (server.unwrap_or(&empty), policy.unwrap_or(&empty));
    let list =
        |f: fn(&AuthSpec) -> &Option<Vec<String>>| f(s).clone().or_else(|| f(p).clone()).unwrap_or_default();
    let merged = |f: fn(&AuthSpec) -> &std::collections::BTreeMap<String, Vec<String>>| {
        let mut m = f(p).clone();
        m.extend(f(s).clone());
        m
    };
    Some(AuthSettings {
        issuers: s
            .issuers
            .clone()
            .or_else(|| p.issuers.clone())
            .unwrap_or_default(),
        kubernetes: s.kubernetes.or(p.kubernetes).unwrap_or(false),
        required_scopes: list(|a| &a.required_scopes),
        method_scopes: merged(|a| &a.method_scopes),
        tool_scopes: merged(|a| &a.tool_scopes),
        service_accounts: list(|a| &a.service_accounts),
        pass_token: s.pass_token.or(p.pass_token).unwrap_or(false),
        resource_path: s
            .resource_path
            .clone()
            .or_else(|| p.resource_path.clone())
            .unwrap_or_else(|| DEFAULT_RESOURCE_PATH.to_string()),
    })
}

/// The guard's own port in the `GuardPort` layout (`traffic.guardPort`, default 15080).
pub fn guard_port(spec: &MCPServerSpec) -> i32 {
    spec.traffic
        .as_ref()
        .and_then(|t| t.guard_port)
        .unwrap_or(i32::from(DEFAULT_GUARD_PORT))
}

/// Rate limits: each setting the MCPServer leaves out comes from the policy (`maxRequestBodyBytes` from the
/// policy's `limits` only).
fn limits(spec: &MCPServerSpec, policy: &MCPGuardPolicySpec) -> Limits {
    let policy_limits = Limits {
        max_request_body_bytes: policy
            .limits
            .as_ref()
            .and_then(|l| l.max_request_body_bytes)
            .and_then(|n| u64::try_from(n).ok()),
        ..policy
            .rate_limits
            .as_ref()
            .map(RateLimitSpec::to_limits)
            .unwrap_or_default()
    };
    spec.rate_limits
        .as_ref()
        .map(RateLimitSpec::to_limits)
        .unwrap_or_default()
        .or(&policy_limits)
}

/// The policy's trusted proxies, then the server's: those the guard loads, and messages for those it would not.
fn trusted_proxies(spec: &MCPServerSpec, policy: &MCPGuardPolicySpec) -> (Vec<String>, Vec<String>) {
    let (mut kept, mut rejected) = (Vec::new(), Vec::new());
    for (entries, source) in [
        (&policy.trusted_proxies, "MCPGuardPolicy"),
        (&spec.trusted_proxies, "MCPServer"),
    ] {
        for p in entries {
            match mcp_guard_config::Cidr::parse(p) {
                Ok(_) if !kept.contains(p) => kept.push(p.clone()),
                Ok(_) => {}
                Err(err) => rejected.push(format!("skipped trusted proxy {p:?} from {source}: {err}")),
            }
        }
    }
    (kept, rejected)
}

/// The policy's `sidecar` with defaults filled in.
pub fn sidecar(policy: &MCPGuardPolicySpec, default_image: &str) -> SidecarSettings {
    let sidecar = policy.sidecar.clone().unwrap_or_default();
    SidecarSettings {
        image: sidecar.image.unwrap_or_else(|| default_image.to_string()),
        image_pull_policy: sidecar.image_pull_policy.map(|p| {
            match p {
                ImagePullPolicy::Always => "Always",
                ImagePullPolicy::IfNotPresent => "IfNotPresent",
                ImagePullPolicy::Never => "Never",
            }
            .to_string()
        }),
        resources: sidecar.resources,
        log_level: sidecar.log_level.map(|l| {
            match l {
                LogLevel::Error => "error",
                LogLevel::Warn => "warn",
                LogLevel::Info => "info",
                LogLevel::Debug => "debug",
                LogLevel::Trace => "trace",
            }
            .to_string()
        }),
    }
}
