//! The custom resources: `MCPServer` (namespaced, short name `mcpgs`) and `MCPGuardPolicy` (cluster-scoped),
//! group `mcpguard.dev`, version `v1alpha1`. The kind `MCPServer` exists in other groups too (`mcp.x-k8s.io`,
//! `toolhive.stacklok.dev`, `kagent.dev`, whose short name is `mcps`): docs and tools name ours fully,
//! `mcpservers.mcpguard.dev`.
//!
//! The YAML in `crds/` is generated from these types by `cargo run -p mcp-guard-operator --bin crdgen` and a test
//! (`crds_are_up_to_date`) fails when it drifts. Field-level schema validation (ranges, lengths, CEL rules whose
//! messages say the fix) lives here; the full Host/Origin syntax check is the guard's own parser in
//! [`crate::validate::validate_spec`], which the validating webhook calls (a regex in the schema would answer
//! first, with the regex as its message).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of both custom resources.
pub const GROUP: &str = "mcpguard.dev";
/// API version of both custom resources.
pub const VERSION: &str = "v1alpha1";
/// Name of the policy an MCPServer uses when `spec.policyRef` is not set.
pub const DEFAULT_POLICY_NAME: &str = "default";
/// Suffix of the ConfigMap the operator writes for each MCPServer: `<name>-mcp-guard`.
pub const CONFIG_MAP_SUFFIX: &str = "-mcp-guard";

/// The ConfigMap name for an MCPServer named `server`.
pub fn config_map_name(server: &str) -> String {
    format!("{server}{CONFIG_MAP_SUFFIX}")
}

/// The NetworkPolicy name for an MCPServer named `server` (the same `<name>-mcp-guard` as its ConfigMap).
pub fn network_policy_name(server: &str) -> String {
    format!("{server}{CONFIG_MAP_SUFFIX}")
}

/// The port the guard listens on in the `GuardPort` layout when `spec.traffic.guardPort` is not set.
pub const DEFAULT_GUARD_PORT: u16 = 15080;

/// What a bare `*` in a host list means, as the CRD says it (the guard's parser says the same).
const BARE_WILDCARD_MESSAGE: &str = "a bare * would allow every host, which is what the guard exists to prevent; \
     list the hostnames clients use (wildcards like *.example.com are fine), or set mode: audit";
/// A URL in a host list.
const HOST_SCHEME_MESSAGE: &str = "a host has no scheme: write mcp.example.com, not https://mcp.example.com";
/// An origin without a scheme.
const ORIGIN_SCHEME_MESSAGE: &str =
    "an origin needs a scheme: write https://app.example.com (or the literal null), not app.example.com";

/// A list of host patterns (guard syntax). The API server refuses only what is certainly wrong, with a message
/// that says the fix (a bare `*`, a URL); the full syntax is checked by the guard's own parser in the validating
/// webhook ([`crate::validate::validate_spec`]), which names the entry and the fix, instead of a regex the user
/// would have to read.
fn host_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 261,
            "x-kubernetes-validations": [
                { "rule": "self != '*'", "message": BARE_WILDCARD_MESSAGE },
                { "rule": "!self.contains('://')", "message": HOST_SCHEME_MESSAGE }
            ]
        }
    })
}

/// A list of origin patterns; as [`host_list_schema`].
fn origin_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 300,
            "x-kubernetes-validations": [
                { "rule": "self == 'null' || self.contains('://')", "message": ORIGIN_SCHEME_MESSAGE }
            ]
        }
    })
}

/// An optional mode. Checked by a CEL rule rather than an `enum`: the API server then answers `mode: block` with
/// this message alone, not with an enum that lists `null` plus "some validation rules were not checked".
fn mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "x-kubernetes-validations": [{
            "rule": "self == 'enforce' || self == 'audit'",
            "messageExpression": "'must be enforce (refuse requests whose Host or Origin is not allowed) or audit (forward them and log); got ' + self"
        }]
    })
}

/// An optional traffic layout, checked by a CEL rule rather than an `enum` (as [`mode_schema`]).
fn layout_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "x-kubernetes-validations": [{
            "rule": "self == 'SharedPort' || self == 'GuardPort'",
            "messageExpression": "'must be SharedPort (the server on 127.0.0.1, the guard on the pod IP at the same port) or GuardPort (a server bound to all interfaces; the guard on a port of its own); got ' + self"
        }]
    })
}

/// Trusted proxy entries: a CIDR or a single address. The API server's CEL IP/CIDR library refuses what is
/// certainly not one; the webhook's check (the guard's parser) also refuses host bits past the prefix.
fn trusted_proxies_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "x-kubernetes-validations": [{
                "rule": "isIP(self) || isCIDR(self)",
                "messageExpression": "'must be a CIDR such as 10.0.0.0/8 or fd00::/8, or one address such as 192.0.2.7; got ' + self"
            }]
        }
    })
}

/// A map of method or tool names to rates.
fn named_rates_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let rate = generator.subschema_for::<RateSpec>();
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": rate,
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) > 0 && size(k) <= 256)",
            "message": "a method or tool name must be 1-256 characters (tools/call, resources/read, or a tool's name)"
        }]
    })
}

/// A DNS-1123 subdomain (object names).
pub const NAME_REGEX: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Enforcement mode: `enforce` rejects requests with a bad Host/Origin, `audit` forwards them and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    #[default]
    Enforce,
    Audit,
}

impl From<GuardMode> for mcp_guard_config::Mode {
    fn from(m: GuardMode) -> Self {
        match m {
            GuardMode::Enforce => mcp_guard_config::Mode::Enforce,
            GuardMode::Audit => mcp_guard_config::Mode::Audit,
        }
    }
}

impl std::fmt::Display for GuardMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuardMode::Enforce => "enforce",
            GuardMode::Audit => "audit",
        })
    }
}

/// An MCP server running in this namespace: which pods, which port, and what else may reach it.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mcpguard.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    plural = "mcpservers",
    singular = "mcpserver",
    namespaced,
    shortname = "mcpgs",
    category = "mcpguard",
    status = "MCPServerStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".status.hosts","description":"Effective allowed hosts"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".status.mode","description":"enforce or audit"}"#,
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".status.auth.mode","description":"Tokens the guard requires: oauth, kubernetes or oauth+kubernetes"}"#,
    printcolumn = r#"{"name":"Access","type":"string","jsonPath":".status.access.summary","description":"The access rules the guard enforces","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.serverRef) || (has(self.selector) && has(self.port))"
).message(SERVER_FORM_MESSAGE))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.serverRef) || (!has(self.selector) && !has(self.port))"
).message(SERVER_REF_EXCLUSIVE_MESSAGE))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.serverRef) || !has(self.traffic) || !has(self.traffic.layout) || self.traffic.layout == 'GuardPort'"
).message(SERVER_REF_LAYOUT_MESSAGE))]
pub struct MCPServerSpec {
    /// Selects the pods that run this MCP server (same namespace). At least one of `matchLabels` or
    /// `matchExpressions` must be set: an empty selector would select every pod. Required unless `serverRef`
    /// is set (then it must be left out).
    #[serde(default, skip_serializing_if = "selector_is_unset")]
    #[x_kube(validation = kube::core::Rule::new(
        "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)"
    ).message("selector must set matchLabels or matchExpressions; an empty selector selects every pod"))]
    pub selector: LabelSelector,

    /// The port the MCP server listens on inside its container (1-65535). Required unless `serverRef` is set
    /// (then it must be left out).
    #[serde(default, skip_serializing_if = "port_is_unset")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 65535")
        .message("must be the port the MCP server listens on in its container, 1-65535"))]
    pub port: i32,

    /// A server deployed by another operator to guard, instead of `selector` and `port`, which are then read
    /// from it. Supported: `{apiGroup: mcp.x-k8s.io, kind: MCPServer, name: <name>}` (the Kubernetes SIG's
    /// mcp-lifecycle-operator, same namespace); the layout is then `GuardPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ref: Option<ServerRef>,

    /// Extra allowed hosts (guard host pattern syntax: `mcp.example.com`, `mcp.example.com:8443`,
    /// `*.example.com`, `**.example.com`, `10.0.0.1`, `[::1]:8080`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "host_list_schema")]
    pub hosts: Vec<String>,

    /// Extra allowed origins (`https://app.example.com`, `http://localhost:3000`, `null`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "origin_list_schema")]
    pub origins: Vec<String>,

    /// Services (by name, this namespace) to use instead of discovering those whose selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63), regex(pattern = NAME_REGEX)))]
    pub services: Option<Vec<String>>,

    /// Ingresses (by name, this namespace) to use instead of discovering those routing to the Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253), regex(pattern = NAME_REGEX)))]
    pub ingresses: Option<Vec<String>>,

    /// HTTPRoutes (by name, this namespace) to use instead of discovering those routing to the Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253), regex(pattern = NAME_REGEX)))]
    pub http_routes: Option<Vec<String>>,

    /// `enforce` or `audit`; default: the policy's `defaultMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub mode: Option<GuardMode>,

    /// Name of the cluster-scoped MCPGuardPolicy to use; default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_REGEX))]
    pub policy_ref: Option<String>,

    /// How traffic reaches the guard in the pod; default: the policy's `traffic.defaultLayout`, else
    /// `SharedPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSpec>,

    /// Who may reach the pods, written into the NetworkPolicy the operator keeps for this server (when the
    /// policy's `networkPolicy.enabled` is true, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// Rate limits and per-client caps; each setting left out comes from the policy's `rateLimits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimitSpec>,

    /// Proxies (CIDRs) in front of this server whose `X-Forwarded-Host` / `Forwarded: host=` the guard checks
    /// instead of `Host`, added to the policy's. Only for proxies that must rewrite Host: see
    /// docs/reverse-proxy.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "trusted_proxies_schema")]
    pub trusted_proxies: Vec<String>,
    /// CORS for browser-based MCP clients on this server's allowed origins; left out: the policy's `cors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    /// Bearer-token authentication: the guard as this server's OAuth resource server (docs/authentication.md).
    /// Each field left out comes from the policy's `auth`; a server with `auth` (even `{}`) turns it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Who may call which tools, resources and prompts (docs/access.md). Once there are rules (here or in the
    /// policy), `tools/call`, `resources/read` and `prompts/get` are denied unless a rule allows them. Needs
    /// `spec.auth`: the guard must know who calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
    /// The guard's audit log of calls and refusals; each field left out comes from the policy's `audit`. On by
    /// default when authentication is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSpec>,
}

/// Neither form of saying which server to guard.
const SERVER_FORM_MESSAGE: &str = "set spec.selector and spec.port (the pods and port of your server), or \
     spec.serverRef (a server of the SIG's lifecycle operator: {apiGroup: mcp.x-k8s.io, kind: MCPServer, name: ...})";
/// Both forms at once.
const SERVER_REF_EXCLUSIVE_MESSAGE: &str = "spec.serverRef takes the pods and port from the referenced server: \
     remove spec.selector and spec.port, or remove spec.serverRef";
/// A layout other than GuardPort for a referenced server.
const SERVER_REF_LAYOUT_MESSAGE: &str = "a server of the SIG's lifecycle operator listens on all interfaces \
     behind the port name mcp, which only the GuardPort layout fits: set traffic.layout: GuardPort or remove it";

fn selector_is_unset(s: &LabelSelector) -> bool {
    s.match_labels.is_none() && s.match_expressions.is_none()
}

fn port_is_unset(p: &i32) -> bool {
    *p == 0
}

/// A server another operator deployed (`spec.serverRef`).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRef {
    /// `mcp.x-k8s.io` (the Kubernetes SIG's mcp-lifecycle-operator).
    #[x_kube(validation = kube::core::Rule::new("self == 'mcp.x-k8s.io'")
        .message("serverRef.apiGroup must be mcp.x-k8s.io (the SIG's mcp-lifecycle-operator), the only kind of server that can be referenced; for other servers set spec.selector and spec.port"))]
    pub api_group: String,
    /// `MCPServer`.
    #[x_kube(validation = kube::core::Rule::new("self == 'MCPServer'")
        .message("serverRef.kind must be MCPServer"))]
    pub kind: String,
    /// The referenced server's name (same namespace).
    #[schemars(length(min = 1, max = 253), regex(pattern = NAME_REGEX))]
    pub name: String,
}

/// CORS, answered by the guard from the Origin allowlist (docs/guard.md, "CORS").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Answer CORS preflights from allowed Origins and let their pages read the answers. Off unless set: it
    /// lets a page on an allowed origin call tools and read results, which is what a browser-based MCP client
    /// needs and what a page that only links to the server does not. The page's origin must be allowed (an
    /// allowed host's own origin, or `origins`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl MCPServerSpec {
    /// The policy this server uses.
    pub fn policy_name(&self) -> &str {
        self.policy_ref.as_deref().unwrap_or(DEFAULT_POLICY_NAME)
    }
}

/// How traffic reaches the guard inside the pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TrafficLayout {
    /// The server listens on `127.0.0.1:<port>` (its SDK's default); the guard listens on the pod IP at the same
    /// port. Nothing else changes. A server bound to all interfaces (`0.0.0.0`) cannot start in this layout.
    #[default]
    SharedPort,
    /// For servers bound to all interfaces, unchanged: the guard listens on a port of its own
    /// (`traffic.guardPort`) and takes over the name of the server's container port, so Services with a named
    /// `targetPort` reach the guard; the server's port is renamed and kept, closed to other pods by the
    /// NetworkPolicy.
    GuardPort,
}

impl std::fmt::Display for TrafficLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrafficLayout::SharedPort => "SharedPort",
            TrafficLayout::GuardPort => "GuardPort",
        })
    }
}

/// An MCPServer's traffic layout.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.guardPort) || (has(self.layout) && self.layout == 'GuardPort')"
).message("traffic.guardPort applies to the GuardPort layout only: set traffic.layout: GuardPort, or remove traffic.guardPort"))]
pub struct TrafficSpec {
    /// `SharedPort` (server on 127.0.0.1, guard on the pod IP at the same port) or `GuardPort` (server bound to
    /// all interfaces, guard on a port of its own that takes over the server port's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "layout_schema")]
    pub layout: Option<TrafficLayout>,
    /// `GuardPort` layout: the port the guard listens on (1024-65535, not 15081 and not `spec.port`); default 15080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1024 && self <= 65535 && self != 15081")
        .message("traffic.guardPort must be 1024-65535 and not 15081 (the guard's admin port)"))]
    pub guard_port: Option<i32>,
}

/// Who may reach an MCPServer's pods (the NetworkPolicy the operator writes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Peers allowed to reach the guarded port (NetworkPolicy `from` syntax); empty: every source (the guard
    /// still checks Host and Origin).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ingress_from: Vec<NetworkPolicyPeer>,
    /// More ports of the pods to admit from every source (e.g. an app's metrics port). Ports not listed, other
    /// than the guard's, are closed to other pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub additional_ports: Vec<NetworkPolicyPort>,
}

/// One allowed host or origin and where it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowlistEntry {
    /// The pattern as written into the guard config.
    pub value: String,
    /// Where it came from, e.g. `Ingress team-a/web`, `HTTPRoute team-a/mcp`, `Service team-a/weather`,
    /// `MCPServer spec.hosts`, `MCPGuardPolicy default`.
    pub sources: Vec<String>,
}

/// Observed state of an MCPServer, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Effective mode (`enforce` or `audit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub mode: Option<GuardMode>,
    /// Comma-separated effective hosts, shortened for `kubectl get` (full list in `allowedHosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
    /// Effective allowed host patterns with their sources.
    #[serde(default)]
    pub allowed_hosts: Vec<AllowlistEntry>,
    /// Effective allowed origin patterns with their sources.
    #[serde(default)]
    pub allowed_origins: Vec<AllowlistEntry>,
    /// The ConfigMap holding the guard config (`<name>-mcp-guard`, key `guard.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// The NetworkPolicy the operator wrote for the pods (none when the policy disables it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    /// Authentication as the guard enforces it (absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStatus>,
    /// The access rules the guard enforces, the server's then its policy's (absent: none, every caller the
    /// authentication lets in may call anything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessStatus>,
    /// Selected pods that run without the guard (admitted while the webhook was unreachable with
    /// `failurePolicy: Ignore`, created before the MCPServer, ...), each with the command that puts the guard
    /// into it; the first 50 (the metric `mcp_guard_operator_unguarded_pods` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unguarded_pods: Vec<UnguardedPodStatus>,
    /// `Ready`, `EmptyAllowlist`, `CatchAllIngressRule`, `IngressBackendPortMismatch`, `GuardBypass`, ...
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Image pull policy for the injected guard container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Log level of the injected guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The guard sidecar the webhook injects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Guard image; default: the operator's `--default-sidecar-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
}

/// Whether the guard is injected as a native sidecar (an init container with `restartPolicy: Always`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NativeSidecars {
    /// When the API server is 1.29 or newer and every node's kubelet is too (a kubelet older than its API
    /// server, as during an upgrade, would keep the pod in `Init`).
    #[default]
    Auto,
    /// Always a native sidecar.
    Always,
    /// Always an ordinary container.
    Never,
}

/// Injection settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjectionSpec {
    /// `Auto` (default), `Always` or `Never`; a pod's annotation `mcpguard.dev/native-sidecar: "true"|"false"`
    /// overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_sidecars: Option<NativeSidecars>,
}

/// Traffic defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTrafficSpec {
    /// Layout of MCPServers that do not set `spec.traffic.layout`: `SharedPort` (default) or `GuardPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "layout_schema")]
    pub default_layout: Option<TrafficLayout>,
}

/// The NetworkPolicy the operator writes per MCPServer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySettings {
    /// Write a NetworkPolicy per MCPServer admitting ingress only on the guard's ports and the MCPServer's
    /// `network.additionalPorts`; default `true`. It takes effect only where the cluster's network plugin
    /// enforces NetworkPolicies.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Peers allowed to reach the guard's admin port 15081 (`/livez`, `/readyz`, `/metrics`); empty: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub admin_ingress_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            admin_ingress_from: Vec::new(),
        }
    }
}

/// Request limits enforced by the guard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLimits {
    /// Largest request body the guard forwards; default: the guard's built-in limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_request_body_bytes: Option<i64>,
}

/// A token bucket: refilled at `requestsPerMinute`, holding at most `burst` requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateSpec {
    /// Requests per minute the bucket refills with (at least 1).
    #[x_kube(validation = kube::core::Rule::new("self >= 1")
        .message("requestsPerMinute must be at least 1; leave the limit out for none"))]
    pub requests_per_minute: i32,
    /// Requests allowed at once after a quiet spell; default `requestsPerMinute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1")
        .message("burst must be at least 1 (1 = no burst: one request per interval)"))]
    pub burst: Option<i32>,
}

/// Rate limits and caps the guard enforces per client address (an IPv6 client by its /64; behind trusted
/// proxies, the client they forwarded for). Over a limit: `429` with `Retry-After`; `audit` mode counts instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Every request of one client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<RateSpec>,
    /// Per JSON-RPC method (`tools/call`, `resources/read`, ...), read from `Mcp-Method` or the body.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "named_rates_schema")]
    pub per_method: BTreeMap<String, RateSpec>,
    /// Per tool of `tools/call` (`params.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "named_rates_schema")]
    pub per_tool: BTreeMap<String, RateSpec>,
    /// Requests of one client in flight at once (streams are counted by maxStreamsPerClient instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1")
        .message("maxConcurrentRequestsPerClient must be at least 1; leave it out for no cap"))]
    pub max_concurrent_requests_per_client: Option<i32>,
    /// SSE streams of one client open at once: GET streams and MCP 2026-07-28 subscriptions/listen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1")
        .message("maxStreamsPerClient must be at least 1; leave it out for no cap"))]
    pub max_streams_per_client: Option<i32>,
    /// Clients whose state the guard keeps (default 10000); idle ones are forgotten first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 1000000")
        .message("maxTrackedClients must be between 1 and 1000000"))]
    pub max_tracked_clients: Option<i32>,
}

fn positive(n: i32) -> Option<u32> {
    u32::try_from(n).ok().filter(|n| *n > 0)
}

impl From<&RateSpec> for mcp_guard_config::Rate {
    fn from(r: &RateSpec) -> Self {
        mcp_guard_config::Rate {
            requests_per_minute: positive(r.requests_per_minute).unwrap_or(1),
            burst: r.burst.and_then(positive),
        }
    }
}

impl RateLimitSpec {
    /// The guard config's limits for these settings (`maxRequestBodyBytes` left unset).
    pub fn to_limits(&self) -> mcp_guard_config::Limits {
        let rates = |m: &BTreeMap<String, RateSpec>| m.iter().map(|(k, v)| (k.clone(), v.into())).collect();
        mcp_guard_config::Limits {
            max_request_body_bytes: None,
            per_client: self.per_client.as_ref().map(Into::into),
            per_method: rates(&self.per_method),
            per_tool: rates(&self.per_tool),
            max_concurrent_requests_per_client: self.max_concurrent_requests_per_client.and_then(positive),
            max_streams_per_client: self.max_streams_per_client.and_then(positive),
            max_tracked_clients: self.max_tracked_clients.and_then(positive),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Cluster-wide defaults for every MCPServer that references this policy (`default` unless `spec.policyRef`).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mcpguard.dev",
    version = "v1alpha1",
    kind = "MCPGuardPolicy",
    plural = "mcpguardpolicies",
    singular = "mcpguardpolicy",
    shortname = "mcpgp",
    category = "mcpguard",
    status = "MCPGuardPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.defaultMode"}"#,
    printcolumn = r#"{"name":"ServiceDNS","type":"boolean","jsonPath":".spec.allowServiceDNSNames"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"MCPServers","type":"integer","jsonPath":".status.mcpServers","description":"MCPServers using this policy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MCPGuardPolicySpec {
    /// Mode for MCPServers that do not set `spec.mode`; default `enforce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub default_mode: Option<GuardMode>,
    /// Hosts always allowed for every MCPServer using this policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "host_list_schema")]
    pub allowed_hosts: Vec<String>,
    /// Origins always allowed for every MCPServer using this policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "origin_list_schema")]
    pub allowed_origins: Vec<String>,
    /// Allow the Service DNS names (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster-domain>`) of the
    /// Services that route to a server; default `true`.
    #[serde(default = "default_true", rename = "allowServiceDNSNames")]
    pub allow_service_dns_names: bool,
    /// Count only Ingresses of these classes (by `spec.ingressClassName`, the legacy annotation
    /// `kubernetes.io/ingress.class`, or the default IngressClass); Ingresses without any class are then not
    /// counted. Default: every Ingress whose class an IngressClass serves, and those without a class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub ingress_classes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<InjectionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<PolicyTrafficSpec>,
    /// Default: enabled, admin port open to every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySettings>,
    /// Default rate limits and caps for every MCPServer using this policy (each overridable per MCPServer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimitSpec>,
    /// Proxies (CIDRs) trusted for every MCPServer using this policy; see MCPServer `spec.trustedProxies`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "trusted_proxies_schema")]
    pub trusted_proxies: Vec<String>,
    /// CORS for every MCPServer using this policy that does not set its own (default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    /// Authentication defaults for every MCPServer using this policy (e.g. the cluster's identity provider);
    /// each field an MCPServer's `spec.auth` sets wins. Applies to the servers that set `spec.auth`, or to all
    /// of them with `enabled: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Access rules for every MCPServer using this policy that has authentication on, added after the server's
    /// own rules (a rule only ever allows, so a server cannot take one away; docs/access.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,
    /// Audit log defaults for every MCPServer using this policy; each field an MCPServer's `spec.audit` sets
    /// wins, except `redact`, whose fields are added to the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSpec>,
}

/// Observed state of an MCPGuardPolicy, written by the operator (when it watches all namespaces).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPGuardPolicyStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many MCPServers use this policy (by `spec.policyRef`, or by default for the policy named `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<i32>,
    /// `Valid` (every entry is one the guard loads; the message names each that is not, and the fix) and
    /// `InUse` (which MCPServers use it).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl Default for MCPGuardPolicySpec {
    fn default() -> Self {
        Self {
            default_mode: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            allow_service_dns_names: true,
            ingress_classes: None,
            sidecar: None,
            injection: None,
            limits: None,
            traffic: None,
            network_policy: None,
            rate_limits: None,
            trusted_proxies: Vec::new(),
            cors: None,
            auth: None,
            access: None,
            audit: None,
        }
    }
}

/// Scopes: OAuth scope tokens (RFC 6749 §3.3), checked fully by the webhook with the guard's parser.
fn scopes_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "x-kubernetes-validations": [{
                "rule": "!self.contains(' ')",
                "messageExpression": "'a scope is one token without spaces (RFC 6749), got ' + self"
            }]
        }
    })
}

/// Method or tool names to the scopes they need.
fn named_scopes_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let scopes = scopes_schema(generator);
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 128,
        "additionalProperties": scopes,
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) > 0 && size(k) <= 256)",
            "message": "a method or tool name must be 1-256 characters (tools/call, resources/read, or a tool's name)"
        }]
    })
}

/// `namespace/name` or `namespace/*`.
fn service_accounts_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "string",
            "minLength": 3,
            "maxLength": 507,
            "x-kubernetes-validations": [{
                "rule": "self.matches('^[a-z0-9.-]+/([a-z0-9.-]+|[*])$')",
                "messageExpression": "'write namespace/name or namespace/* (a service account, or every one of a namespace), got ' + self"
            }]
        }
    })
}

/// The message of an `http://` issuer or JWKS URI without `allowHttp`.
const HTTP_ISSUER_MESSAGE: &str = "an issuer and its jwksUri must be https:// URLs (http would let anyone on the \
     path swap the keys); set allowHttp: true only for a lab";

/// A token issuer (an OAuth 2.0 authorization server / OpenID Provider) the guard trusts.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.issuer.startsWith('https://') || (has(self.allowHttp) && self.allowHttp && self.issuer.startsWith('http://'))"
).message(HTTP_ISSUER_MESSAGE))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.jwksUri) || self.jwksUri.startsWith('https://') || (has(self.allowHttp) && self.allowHttp && self.jwksUri.startsWith('http://'))"
).message(HTTP_ISSUER_MESSAGE))]
pub struct IssuerSpec {
    /// The issuer identifier, exactly as its tokens' `iss` claim says it (`https://auth.example.com`,
    /// `https://login.microsoftonline.com/<tenant>/v2.0`); its keys are found by discovery (RFC 8414 / OpenID
    /// Connect) from it.
    #[schemars(length(min = 1, max = 512))]
    pub issuer: String,
    /// Where its keys (JWKS) are, to skip discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub jwks_uri: Option<String>,
    /// Audiences accepted besides the server's resource URI (an issuer that cannot put the resource URI in
    /// `aud`, e.g. Entra ID's `api://<app-id>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted (`RS256`, `PS256`, `ES256`, `EdDSA`, ...); default: every asymmetric one.
    /// Never `none` or `HS*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(a, a in ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA'])"
    ).message("algorithms: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA (never none or HS*: the guard checks signatures with the issuer's public keys)"))]
    pub algorithms: Vec<String>,
    /// Accept an `http://` issuer and JWKS URI: a lab only (the keys then travel unprotected).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
    /// CA certificates (PEM) the guard trusts for this issuer's TLS besides the public roots: an authorization
    /// server whose certificate comes from a private CA (cert-manager's, the cluster's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    #[x_kube(validation = kube::core::Rule::new("self.contains('-----BEGIN CERTIFICATE-----')")
        .message("caBundle must hold PEM certificates (-----BEGIN CERTIFICATE-----), the CA that signed the issuer's TLS certificate"))]
    pub ca_bundle: Option<String>,
}

/// Authentication settings (docs/authentication.md). On an MCPServer each field it sets wins over its policy's;
/// lists replace the policy's, scope maps are merged (the server's entries winning).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Require a token. Default: on for an MCPServer that has `spec.auth`; a policy with `enabled: true` turns it
    /// on for every MCPServer using it (an MCPServer opts out with `enabled: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Token issuers trusted (OAuth authorization servers: Hydra, Keycloak, Entra ID, Dex, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub issuers: Option<Vec<IssuerSpec>>,
    /// Trust the cluster's own service-account issuer: pods call with a projected ServiceAccount token whose
    /// audience is the server's resource URI. The operator fetches its keys and hands them to the guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<bool>,
    /// Scopes every request needs (OAuth tokens; service-account tokens carry none and are governed by
    /// `serviceAccounts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_scopes_schema")]
    pub required_scopes: Option<Vec<String>>,
    /// Scopes per JSON-RPC method (`tools/call`, `resources/read`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "named_scopes_schema")]
    pub method_scopes: BTreeMap<String, Vec<String>>,
    /// Scopes per tool of `tools/call`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "named_scopes_schema")]
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// Service accounts (`namespace/name`, `namespace/*`) whose tokens from the cluster's issuer are accepted;
    /// empty or left out: every service account of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_service_accounts_schema")]
    pub service_accounts: Option<Vec<String>>,
    /// Forward the client's `Authorization` header to the server; default false: the server never sees the
    /// token (the MCP authorization spec forbids passing it through), only the identity headers the guard sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_token: Option<bool>,
    /// The path of the MCP endpoint in the resource URIs (`https://HOST/mcp`); default `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/') && !self.contains('?') && !self.contains('#')")
        .message("resourcePath is the path of the MCP endpoint: it starts with / and has no query or fragment, e.g. /mcp"))]
    pub resource_path: Option<String>,
}

fn optional_scopes_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = scopes_schema(generator);
    schema.insert("nullable".into(), true.into());
    schema
}

fn optional_service_accounts_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = service_accounts_schema(generator);
    schema.insert("nullable".into(), true.into());
    schema
}

/// Authentication as the guard enforces it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthStatus {
    /// `oauth` (issuers), `kubernetes` (the cluster's service-account issuer) or `oauth+kubernetes`.
    pub mode: String,
    /// The resource URIs the guard serves (RFC 8707/9728): a token's `aud` must hold the one the client used.
    /// Derived from the Ingresses, HTTPRoutes and Services, like the allowed hosts.
    #[serde(default, rename = "resourceURIs")]
    pub resource_uris: Vec<String>,
    /// The issuers whose tokens are accepted.
    #[serde(default)]
    pub issuers: Vec<String>,
}

/// The methods whose target is named (`params.name` or `params.uri`), so a target may list `names`; the guard's
/// `named_by` says the same (a test holds them together).
pub const NAMED_METHODS: [&str; 5] = [
    "tools/call",
    "prompts/get",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// Access rules (docs/access.md): the shape of the Kubernetes SIG's `XAccessPolicy`, one to one.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// Each rule allows its callers (`from`, any of them) its calls (`to`, any of them).
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(r, !has(r.name) || self.exists_one(o, has(o.name) && o.name == r.name))"
    ).message("rule names must be unique: the audit log and denials name the rule"))]
    pub rules: Vec<AccessRuleSpec>,
}

/// One rule: these callers may make these calls.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRuleSpec {
    /// Shown in denials, the audit log, status and `kubectl mcp-guard explain`; default `rules[<index>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// Any of these callers.
    #[schemars(length(min = 1, max = 32))]
    pub from: Vec<AccessSourceSpec>,
    /// Any of these calls.
    #[schemars(length(min = 1, max = 32))]
    pub to: Vec<AccessTargetSpec>,
}

/// A caller: every field set must match.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.serviceAccount) || has(self.subject) || has(self.clientId) || has(self.group) || has(self.scope) || (has(self.authenticated) && self.authenticated)"
).message("a source sets nothing, so it would match nobody: set serviceAccount, subject, clientId, group, scope, or authenticated: true"))]
pub struct AccessSourceSpec {
    /// `namespace/name`, or `namespace/*` for every service account of a namespace (a projected
    /// ServiceAccount token; the SPIFFE ID `spiffe://<trust domain>/ns/<ns>/sa/<name>` maps to `<ns>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 507))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9.-]+/([a-z0-9.-]+|[*])$')")
        .message("write namespace/name or namespace/* (a service account, or every one of a namespace)"))]
    pub service_account: Option<String>,
    /// The token's `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub subject: Option<String>,
    /// The token's `client_id` (or `azp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub client_id: Option<String>,
    /// One of the token's `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub group: Option<String>,
    /// One of the token's scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub scope: Option<String>,
    /// Any caller the authentication verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
}

/// A call: a JSON-RPC method and, for `tools/call`, `prompts/get` and `resources/read` (and
/// `resources/subscribe`), the names it may name (globs: `*` any run of characters, `?` one); no names: any.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.names) || size(self.names) == 0 || self.method in ['tools/call', 'prompts/get', 'resources/read', 'resources/subscribe', 'resources/unsubscribe']"
).message("names apply only to tools/call, prompts/get, resources/read and resources/subscribe: other methods name nothing"))]
pub struct AccessTargetSpec {
    /// `tools/call`, `resources/read`, `prompts/get`, or any other JSON-RPC method.
    #[schemars(length(min = 1, max = 256))]
    pub method: String,
    /// Tool or prompt names, or resource URIs (`read_*`, `search`, `file:///docs/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 256)))]
    pub names: Vec<String>,
}

/// The guard's audit log (docs/guard.md "Audit log"): one JSON line per `tools/call`, `resources/read` and
/// `prompts/get`, and per refused request, on the guard's stdout.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditSpec {
    /// `false` switches the log off; default: on when authentication is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Also log each call's arguments (redacted, cut at `maxArgumentBytes`); default off: only their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<bool>,
    /// The most bytes of a call's arguments logged; default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 1048576")
        .message("maxArgumentBytes must be 1-1048576 (leave it out for 1024)"))]
    pub max_argument_bytes: Option<i32>,
    /// Argument fields (at any depth, matched case-insensitively as part of the field's name) whose values are
    /// never logged, besides those always redacted (password, secret, token, authorization, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub redact: Vec<String>,
}

/// The most unguarded pods status lists (a status stays small however many pods a server selects); the CRD's
/// description of `unguardedPods` says the number.
pub const UNGUARDED_PODS_LISTED: usize = 50;

/// A selected pod that runs without the guard, as status lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnguardedPodStatus {
    /// The pod's name.
    pub name: String,
    /// The command that replaces it with a pod the webhook injects, e.g.
    /// `kubectl rollout restart -n team-a deployment/weather`.
    pub fix: String,
}

/// The access rules in force, as status lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    /// The rules' names, comma-separated and shortened for `kubectl get`.
    pub summary: String,
    /// Every rule, in the order the guard tries them.
    #[serde(default)]
    pub rules: Vec<AccessRuleStatus>,
}

/// One effective access rule, as status lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRuleStatus {
    /// The rule's name (`rules[<index>]` when it has none; `policy.rules[<index>]` for the policy's).
    pub name: String,
    /// `MCPServer` or `MCPGuardPolicy/<name>`.
    pub source: String,
    /// Its callers, compactly: `serviceAccount team-a/agent`, `group sre`, `authenticated`.
    pub from: Vec<String>,
    /// Its calls, compactly: `tools/call read_*,search`, `resources/read`.
    pub to: Vec<String>,
}

/// Both CRDs, in the order `crdgen` writes them: `(file name, CRD)`.
pub fn all_crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("mcpservers.yaml", MCPServer::crd()),
        ("mcpguardpolicies.yaml", MCPGuardPolicy::crd()),
    ]
}

/// A CRD rendered as the YAML checked into `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated by `cargo run -p mcp-guard-operator --bin crdgen` from operator/src/crd.rs. Do not edit.\n{body}"
    ))
}
