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
//!   "limits": {
//!     "maxRequestBodyBytes": 4194304,
//!     "perClient": { "requestsPerMinute": 600, "burst": 100 },
//!     "perMethod": { "tools/call": { "requestsPerMinute": 120 } },
//!     "perTool": { "render_report": { "requestsPerMinute": 6, "burst": 2 } },
//!     "maxConcurrentRequestsPerClient": 16,
//!     "maxStreamsPerClient": 4
//!   },
//!   "trustedProxies": ["10.0.0.0/8", "fd00::/8"],
//!   "auth": {
//!     "resources": ["https://mcp.example.com/mcp"],
//!     "issuers": [{ "issuer": "https://auth.example.com" }],
//!     "toolScopes": { "deploy": ["deploy:write"] }
//!   },
//!   "audit": { "arguments": true, "maxArgumentBytes": 1024, "redact": ["ssn"] }
//! }
//! ```
//!
//! Rate limits are token buckets per client address (an IPv6 client by its /64): `perClient` for every request,
//! `perMethod` per JSON-RPC method, `perTool` per tool of `tools/call`. A bucket holds `burst` requests (default:
//! `requestsPerMinute`) and refills at `requestsPerMinute`. `trustedProxies` lists the peers (CIDRs) whose
//! `X-Forwarded-Host` / `Forwarded: host=` is checked instead of `Host`.
//!
//! Host pattern syntax (matching is case-insensitive and ignores one trailing dot):
//! - `example.com` — that host on any port; `example.com:*` — the same, spelled out; `example.com:8080` — only
//!   that port. IPv4 literals work the same; IPv6 literals are bracketed: `[::1]`, `[::1]:8080`.
//! - `*.example.com` — exactly one label in place of `*` (Ingress semantics).
//! - `**.example.com` — one or more labels (Gateway API hostname wildcard semantics).
//! - A bare `*` is not a pattern: "allow every host" is what the guard exists to prevent; use audit mode instead.
//!
//! `auth` makes the guard the server's OAuth resource server: see [`auth`]. `audit` sets the audit log of calls and
//! refusals (on by default with `auth`): see [`AuditConfig`].
//!
//! Origin pattern syntax: `scheme://host[:port]` with the host as above (wildcards included); default ports are
//! normalised (`https://a.com` = `https://a.com:443`). The literal `null` allows the `null` origin.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod access;
pub mod allowlist;
pub mod auth;
pub mod cidr;
pub mod host;
pub mod origin;

pub use access::{AccessConfig, AccessConfigError, AccessPolicy};
pub use allowlist::{Allowlist, CheckMemo, Denial, HeaderSeen, Reason, RequestFacts, Verdict};
pub use auth::{AuthConfig, AuthConfigError, AuthPolicy, IssuerConfig};
pub use cidr::{Cidr, CidrError};
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
    #[error(
        "`{0}://*` would allow every web page, which is what the guard exists to prevent; list the origins \
         (wildcards like `{0}://*.example.com` are fine). `scheme://*` is only for extension and webview schemes \
         such as `chrome-extension://*`"
    )]
    WebSchemeWildcard(String),
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
    #[error("limits.{field} must be greater than 0 (leave it out for no limit)")]
    ZeroLimit { field: String },
    #[error("limits.{field}: a method or tool name must not be empty")]
    EmptyName { field: String },
    #[error(
        "trustedProxies[{index}] {entry:?} is not a CIDR: {source} (write 10.0.0.0/8, 192.0.2.7 or fd00::/8)"
    )]
    InvalidTrustedProxy {
        index: usize,
        entry: String,
        #[source]
        source: CidrError,
    },
    #[error(
        "audit.redact[{index}] is empty: it would redact every argument field; name the fields to redact, or \
         leave audit.arguments off"
    )]
    EmptyRedact { index: usize },
    #[error("{0}")]
    Auth(#[from] AuthConfigError),
    #[error("{0}")]
    Access(#[from] AccessConfigError),
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
    /// Peers (CIDRs) whose forwarded host is checked instead of `Host`; empty: none (forwarding fields dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Answer CORS for browser clients on the allowed origins (preflights, and the CORS fields of responses);
    /// off by default, because it lets pages on those origins read what the server answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cors: bool,
    /// Bearer-token authentication (the guard as the server's OAuth resource server); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Access rules: which verified callers may call which methods and tools; absent: any verified caller may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessConfig>,
    /// The audit log of calls and refusals; absent: on exactly when `auth` is configured (see [`AuditConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditConfig>,
}

/// The audit log: one JSON line on the guard's stdout per `tools/call`, `resources/read` and `prompts/get`, and
/// per refused request. Without this section it is on exactly when `auth` is: a verified caller is what makes
/// the log a record of who called what, and the body prefix it needs is read anyway for scopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// `false` switches the log off (also when `auth` is configured).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Also log each call's `params.arguments` (redacted, cut at `maxArgumentBytes`); off: only their digest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arguments: bool,
    /// The most bytes of a call's arguments logged; default [`DEFAULT_MAX_ARGUMENT_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_argument_bytes: Option<u32>,
    /// Argument fields (at any depth) whose values are never logged, matched case-insensitively as a part of the
    /// field's name, in addition to [`REDACTED_ALWAYS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            arguments: false,
            max_argument_bytes: None,
            redact: Vec::new(),
        }
    }
}

/// The most bytes of a call's arguments the audit log shows when `maxArgumentBytes` is not set.
pub const DEFAULT_MAX_ARGUMENT_BYTES: u32 = 1024;

/// Argument fields the audit log always redacts (a field whose name contains one, case-insensitively).
pub const REDACTED_ALWAYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "authorization",
    "cookie",
    "credential",
];

impl AuditConfig {
    /// The audit settings in force for a config: its section if it has one (unless switched off), else the
    /// defaults when `auth` is configured; `None`: no audit log.
    pub fn effective(config: &GuardConfig) -> Option<AuditConfig> {
        match &config.audit {
            Some(audit) => audit.enabled.then(|| audit.clone()),
            None => config.auth.is_some().then(AuditConfig::default),
        }
    }

    /// The most bytes of a call's arguments logged.
    pub fn max_argument_bytes(&self) -> usize {
        self.max_argument_bytes.unwrap_or(DEFAULT_MAX_ARGUMENT_BYTES) as usize
    }

    /// Whether an argument field's value is redacted.
    pub fn redacts(&self, field: &str) -> bool {
        let field = field.to_lowercase();
        REDACTED_ALWAYS.iter().any(|r| field.contains(r))
            || self.redact.iter().any(|r| field.contains(&r.to_lowercase()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_argument_bytes == Some(0) {
            return Err(ConfigError::ZeroLimit {
                field: "audit.maxArgumentBytes".into(),
            });
        }
        if let Some(index) = self.redact.iter().position(|r| r.trim().is_empty()) {
            return Err(ConfigError::EmptyRedact { index });
        }
        Ok(())
    }
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

/// The guard's built-in `maxRequestBodyBytes`, used when neither the config nor a flag sets one.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// The guard's built-in `maxTrackedClients`: clients whose rate-limit state is kept.
pub const DEFAULT_MAX_TRACKED_CLIENTS: u32 = 10_000;

/// Request limits; `None` means the guard's built-in default ([`DEFAULT_MAX_REQUEST_BODY_BYTES`],
/// [`DEFAULT_MAX_TRACKED_CLIENTS`]; no rate limit otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Every request of one client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<Rate>,
    /// Requests of one client per JSON-RPC method (`tools/call`, `resources/read`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_method: BTreeMap<String, Rate>,
    /// `tools/call` requests of one client per tool (`params.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_tool: BTreeMap<String, Rate>,
    /// Requests of one client in flight at once (SSE streams are counted by `maxStreamsPerClient` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests_per_client: Option<u32>,
    /// SSE streams of one client open at once: `GET`s answered with an event stream, and MCP 2026-07-28's
    /// `subscriptions/listen` (a `POST` whose answer stays open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_client: Option<u32>,
    /// Clients whose buckets and counters are kept; past it, idle ones are forgotten first. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tracked_clients: Option<u32>,
}

impl Limits {
    /// Whether any per-client limit is set (otherwise the guard keeps no per-client state at all).
    pub fn limits_clients(&self) -> bool {
        self.per_client.is_some()
            || !self.per_method.is_empty()
            || !self.per_tool.is_empty()
            || self.max_concurrent_requests_per_client.is_some()
            || self.max_streams_per_client.is_some()
    }

    /// Whether a limit needs the request's MCP method (and so may read a prefix of its body).
    pub fn needs_method(&self) -> bool {
        !self.per_method.is_empty() || !self.per_tool.is_empty()
    }

    /// Whether a limit counts the JSON-RPC calls of a request body (every bucket charges a batch call by call;
    /// the stream cap counts a `subscriptions/listen`), so the guard reads a prefix of it.
    pub fn reads_body(&self) -> bool {
        self.per_client.is_some() || self.needs_method() || self.max_streams_per_client.is_some()
    }

    /// Fills each setting `self` leaves unset from `defaults` (an MCPServer's limits over its policy's); the
    /// method and tool maps are merged, `self`'s entries winning.
    pub fn or(mut self, defaults: &Limits) -> Limits {
        self.max_request_body_bytes = self.max_request_body_bytes.or(defaults.max_request_body_bytes);
        self.per_client = self.per_client.or(defaults.per_client);
        for (k, v) in &defaults.per_method {
            self.per_method.entry(k.clone()).or_insert(*v);
        }
        for (k, v) in &defaults.per_tool {
            self.per_tool.entry(k.clone()).or_insert(*v);
        }
        self.max_concurrent_requests_per_client = self
            .max_concurrent_requests_per_client
            .or(defaults.max_concurrent_requests_per_client);
        self.max_streams_per_client = self.max_streams_per_client.or(defaults.max_streams_per_client);
        self.max_tracked_clients = self.max_tracked_clients.or(defaults.max_tracked_clients);
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_request_body_bytes == Some(0) {
            return Err(ConfigError::ZeroBodyLimit);
        }
        let zero = |field: String| Err(ConfigError::ZeroLimit { field });
        if let Some(r) = &self.per_client {
            r.validate("perClient")?;
        }
        for (map, field) in [(&self.per_method, "perMethod"), (&self.per_tool, "perTool")] {
            for (name, rate) in map {
                if name.trim().is_empty() {
                    return Err(ConfigError::EmptyName { field: field.into() });
                }
                rate.validate(&format!("{field}[{name:?}]"))?;
            }
        }
        for (v, field) in [
            (
                self.max_concurrent_requests_per_client,
                "maxConcurrentRequestsPerClient",
            ),
            (self.max_streams_per_client, "maxStreamsPerClient"),
            (self.max_tracked_clients, "maxTrackedClients"),
        ] {
            if v == Some(0) {
                return zero(field.into());
            }
        }
        Ok(())
    }
}

/// A token bucket's shape: refilled at `requestsPerMinute`, holding at most `burst` requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    pub requests_per_minute: u32,
    /// Requests allowed at once after a quiet spell; default `requestsPerMinute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Rate {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_minute).max(1)
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.requests_per_minute == 0 {
            return Err(ConfigError::ZeroLimit {
                field: format!("{field}.requestsPerMinute"),
            });
        }
        if self.burst == Some(0) {
            return Err(ConfigError::ZeroLimit {
                field: format!("{field}.burst"),
            });
        }
        Ok(())
    }
}
