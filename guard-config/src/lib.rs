//! The guard's configuration format and its Host/Origin matching rules.
//!
//! No kube, no hyper: both the guard (`mcp-guard`) and the operator depend on this crate, so the operator
//! validates and writes exactly what the guard will read.
//!
//! The file format (JSON, camelCase) is what the operator writes into the ConfigMap `<name>-mcp-guard` under the
//! key [`CONFIG_KEY`] and what `mcp-guard --config FILE` reads:
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "allowedHosts": ["mcp.example.com", "*.apps.example.com", "**.gw.example.com", "web.ns.svc:8080"],
//!   "allowedOrigins": ["https://mcp.example.com", "https://*.apps.example.com"],
//!   "source": { "kind": "MCPServer", "namespace": "team-a", "name": "weather" },
//!   "limits": { "maxRequestBodyBytes": 4194304 }
//! }
//! ```
//!
//! Host pattern syntax (matching is case-insensitive and ignores one trailing dot):
//! - `example.com` — that host on any port; `example.com:*` — the same, spelled out; `example.com:8080` — only
//!   that port. IPv4 literals work the same; IPv6 literals are bracketed: `[::1]`, `[::1]:8080`.
//! - `*.example.com` — exactly one label in place of `*` (Ingress semantics).
//! - `**.example.com` — one or more labels (Gateway API hostname wildcard semantics).
//! - A bare `*` is not a pattern: "allow every host" is what the guard exists to prevent; use audit mode instead.
//!
//! Origin pattern syntax: `scheme://host[:port]` with the host as above (wildcards included); default ports are
//! normalised (`https://a.com` = `https://a.com:443`). The literal `null` allows the `null` origin.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use serde::{Deserialize, Serialize};

pub mod allowlist;
pub mod host;
pub mod origin;

pub use allowlist::{Allowlist, Denial, HeaderSeen, Reason, RequestFacts, Verdict};
pub use host::{Authority, AuthorityError, Host, HostMatch, HostPattern, PortMatch};
pub use origin::{Origin, OriginError, OriginPattern};

/// Why a host or origin pattern is not valid. The messages are written for people: the operator shows them
/// when it validates an MCPServer, the guard when it loads a config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("whitespace is not allowed in a pattern")]
    Whitespace,
    #[error(
        "a bare `*` would allow every host, which is what the guard exists to prevent; list the hosts \
         (wildcards like `*.example.com` are fine), or run the guard in audit mode"
    )]
    BareWildcard,
    #[error("a host pattern has no scheme: write `example.com`, not `https://example.com`")]
    HasScheme,
    #[error("an origin pattern needs a scheme: `https://example.com` (or the literal `null`)")]
    NoScheme,
    #[error("invalid scheme {0:?}")]
    InvalidScheme(String),
    #[error("an origin has no path: write `https://example.com`, not `https://example.com/app`")]
    OriginHasPath,
    #[error(
        "a wildcard may only be the whole first label: `*.example.com` (one label) or `**.example.com` (one or more)"
    )]
    MisplacedWildcard,
    #[error("wildcards apply to DNS names, not to IP addresses")]
    WildcardIp,
    #[error("{0}")]
    Host(#[source] AuthorityError),
}

/// Why a guard config is not valid. It names the bad entry.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid guard config JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("allowedHosts[{index}] {entry:?} is not a valid host pattern: {source}")]
    InvalidHost {
        index: usize,
        entry: String,
        #[source]
        source: PatternError,
    },
    #[error("allowedOrigins[{index}] {entry:?} is not a valid origin pattern: {source}")]
    InvalidOrigin {
        index: usize,
        entry: String,
        #[source]
        source: PatternError,
    },
    #[error(
        "no allowed host: the guard would reject every request; add at least one host to allowedHosts \
         (or --allow-host / MCP_GUARD_ALLOW_HOSTS)"
    )]
    NoAllowedHosts,
    #[error("limits.maxRequestBodyBytes must be greater than 0")]
    ZeroBodyLimit,
}

impl GuardConfig {
    /// Parses the JSON file format (unknown fields are an error, so typos do not go unnoticed).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        serde_json::from_slice(bytes).map_err(ConfigError::Json)
    }

    /// Parses and compiles in one step.
    pub fn compile(&self) -> Result<Allowlist, ConfigError> {
        Allowlist::compile(self)
    }
}

/// The key of the guard config inside the operator's ConfigMap; the file name the guard reads when mounted.
pub const CONFIG_KEY: &str = "guard.json";

/// The guard's configuration as written by the operator or by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Host patterns; see the crate docs for the syntax.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origin patterns; see the crate docs for the syntax.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The object this allowlist was derived from, so that rejections can say where to allow a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ConfigSource>,
    #[serde(default)]
    pub limits: Limits,
}

/// `enforce` rejects violations; `audit` forwards them, still logging and counting them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// The Kubernetes object a config was derived from (normally an MCPServer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSource {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// Request limits; `None` means the guard's built-in default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
}
