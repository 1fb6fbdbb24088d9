//! An MCPServer's authentication as the guard enforces it: the guard config's `auth` section built from the
//! resolved settings ([`crate::settings::AuthSettings`]), the resource URIs derived from where clients reach the
//! server (nobody types a URL), and the cluster's service-account issuer with the keys the operator fetched
//! ([`crate::cluster_issuer`]). Pure: the derivation calls it, the webhook validates with it.
//!
//! Resource URIs: every place the sources found the server reachable at is an endpoint `scheme://HOST[:port]`
//! (an Ingress host, `https` when a `tls` entry covers it; an HTTPRoute hostname, `https` behind an HTTPS or TLS
//! listener, with the listener's port when it is not the scheme's default; each Service DNS name with each
//! Service port that reaches the server, `http`); the resource URI is the endpoint followed by
//! `auth.resourcePath` (default `/mcp`).

use std::collections::{BTreeMap, BTreeSet};

use mcp_guard_config::{AuthConfig, AuthConfigError, HostPattern, IssuerConfig};

use crate::crd::{AllowlistEntry, AuthSpec, IssuerSpec};
use crate::field_error::FieldError;
use crate::settings::AuthSettings;

#[cfg(test)]
mod tests;

/// What the guard enforces for one server, and what its status says about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DerivedAuth {
    /// The guard config's `auth` section.
    pub config: AuthConfig,
    /// `oauth`, `kubernetes` or `oauth+kubernetes`.
    pub mode: String,
    /// Why the guard cannot enforce it as asked (the `Authentication` condition's message); empty: it can.
    pub problems: Vec<String>,
    /// Whether a problem is the cluster issuer's discovery (reason `IssuerNotDiscovered`).
    pub issuer_not_discovered: bool,
    /// What is worth knowing while it works (a failed refresh of keys the guard still has).
    pub notes: Vec<String>,
}

/// The issuer written while the cluster's own is not discovered yet (with no keys: its tokens are refused). Most
/// clusters' issuer is this URL, so that their service-account tokens are then refused as "keys not yet known".
pub const UNDISCOVERED_CLUSTER_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The cluster's service-account issuer and its keys.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterIssuer {
    /// The `iss` of the cluster's service-account tokens (`--service-account-issuer`).
    pub issuer: String,
    /// Its JWKS document, as the API server serves it (checked to hold a key the guard can use).
    pub jwks: serde_json::Value,
}

/// What the operator knows of the cluster's issuer. Fetched by [`crate::cluster_issuer`] (the IO); defined here,
/// where the derivation reads it, so that the pure core imports no IO module.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IssuerState {
    /// The last issuer and keys fetched (kept through failed refreshes).
    pub current: Option<ClusterIssuer>,
    /// Why the last fetch failed, if it did.
    pub error: Option<String>,
    /// Whether a fetch has completed (either way): a reconcile waits for the first.
    pub attempted: bool,
}

/// The `auth` section for a server: its resource URIs (from `endpoints`, see the module docs), its issuers, and
/// the cluster's service-account issuer with the operator's keys when `kubernetes` is on.
pub fn derive(settings: &AuthSettings, endpoints: &[AllowlistEntry], cluster: &IssuerState) -> DerivedAuth {
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    let mut issuers: Vec<IssuerConfig> = settings.issuers.iter().map(issuer_config).collect();
    let mut issuer_not_discovered = false;
    if settings.kubernetes {
        match &cluster.current {
            Some(c) => issuers.push(IssuerConfig {
                issuer: c.issuer.clone(),
                jwks: Some(c.jwks.clone()),
                kubernetes: true,
                ..Default::default()
            }),
            None => {
                // Closed until the keys are known: an issuer without keys refuses its tokens, where a section
                // without issuers would be refused by the guard, which would keep its last config (perhaps
                // one without authentication).
                issuers.push(IssuerConfig {
                    issuer: UNDISCOVERED_CLUSTER_ISSUER.into(),
                    jwks: Some(serde_json::json!({"keys": []})),
                    kubernetes: true,
                    ..Default::default()
                });
                issuer_not_discovered = true;
                problems.push(format!(
                    "the cluster's service-account issuer is not discovered yet ({}), so service-account tokens \
                     are refused; the operator reads /.well-known/openid-configuration and /openid/v1/jwks from \
                     the API server (its ClusterRole needs get on those nonResourceURLs)",
                    cluster.error.as_deref().unwrap_or("not fetched yet")
                ));
            }
        }
        if let Some(e) = cluster.error.as_deref().filter(|_| cluster.current.is_some()) {
            notes.push(format!(
                "refreshing the cluster's service-account issuer keys failed ({e}); the guard keeps the last keys"
            ));
        }
    }
    let mut config = AuthConfig {
        resources: resource_uris(endpoints, &settings.resource_path),
        issuers,
        required_scopes: settings.required_scopes.clone(),
        method_scopes: settings.method_scopes.clone(),
        tool_scopes: settings.tool_scopes.clone(),
        service_accounts: settings.service_accounts.clone(),
        pass_token: settings.pass_token,
        clock_skew_seconds: None,
    };
    if let Err(e) = config.compile()
        && !(issuer_not_discovered && e == AuthConfigError::NoIssuers)
    {
        problems.push(match e {
            AuthConfigError::NoResources => {
                "no resource URI: the server has no allowed host that clients reach \
                 it at (an Ingress host, HTTPRoute hostname or Service DNS name), so the guard refuses every \
                 request"
                    .to_string()
            }
            AuthConfigError::NoIssuers => "no issuer: list spec.auth.issuers (or the policy's), or set \
                 spec.auth.kubernetes: true for the cluster's service accounts"
                .to_string(),
            other => other.to_string(),
        });
        close_what_is_missing(&mut config);
    }
    DerivedAuth {
        mode: mode(!settings.issuers.is_empty(), settings.kubernetes),
        config,
        problems,
        issuer_not_discovered,
        notes,
    }
}

/// The resource written when a server has none: no request's host is it, so every request is refused.
pub const NO_RESOURCE: &str = "https://no-resource.invalid/";
/// The issuer written when a server has none: it has no keys, so every token is refused.
pub const NO_ISSUER: &str = "https://no-issuer.invalid";

/// Authentication asked for but missing its resources or issuers: a section the guard would refuse as invalid,
/// keeping its last config — perhaps one without authentication, open to every caller. What is written instead
/// is valid and refuses every call (no host is the placeholder resource, no token has a key of the placeholder
/// issuer) until the spec is fixed; the `Authentication` condition says what is missing.
fn close_what_is_missing(config: &mut AuthConfig) {
    if config.resources.is_empty() {
        config.resources.push(NO_RESOURCE.into());
    }
    if config.issuers.is_empty() {
        config.issuers.push(IssuerConfig {
            issuer: NO_ISSUER.into(),
            jwks: Some(serde_json::json!({"keys": []})),
            ..Default::default()
        });
    }
}

/// `oauth`, `kubernetes`, `oauth+kubernetes`, or `none` (no issuer at all: every token is refused).
pub fn mode(oauth: bool, kubernetes: bool) -> String {
    match (oauth, kubernetes) {
        (true, true) => "oauth+kubernetes",
        (true, false) => "oauth",
        (false, true) => "kubernetes",
        (false, false) => "none",
    }
    .to_string()
}

fn issuer_config(i: &IssuerSpec) -> IssuerConfig {
    IssuerConfig {
        issuer: i.issuer.clone(),
        jwks_uri: i.jwks_uri.clone(),
        audiences: i.audiences.clone(),
        algorithms: i.algorithms.clone(),
        allow_http: i.allow_http,
        ca_bundle: i.ca_bundle.clone(),
        ..Default::default()
    }
}

/// The resource URIs of a server's endpoints (`scheme://HOST[:port]`), each endpoint's authority once: `https`
/// when it is reached both ways (the public one). The guard takes the first entry whose host matches, so the
/// more specific come first: exact hosts before wildcards, and a host with a port before the same host on any
/// port.
pub fn resource_uris(endpoints: &[AllowlistEntry], resource_path: &str) -> Vec<String> {
    let path = resource_path.trim_end_matches('/');
    let mut by_authority: BTreeMap<(u8, bool, &str), &str> = BTreeMap::new();
    for e in endpoints {
        let Some((scheme, authority)) = e.value.split_once("://") else {
            continue;
        };
        let rank = match authority {
            a if a.starts_with("**.") => 2,
            a if a.starts_with("*.") => 1,
            _ => 0,
        };
        let any_port = authority
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err());
        let slot = by_authority.entry((rank, any_port, authority)).or_insert(scheme);
        if scheme == "https" {
            *slot = scheme;
        }
    }
    by_authority
        .into_iter()
        .map(|((_, _, authority), scheme)| format!("{scheme}://{authority}{path}"))
        .collect()
}

/// An endpoint the guard loads: `http` or `https`, and a host pattern it parses.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let (scheme, authority) = endpoint.split_once("://").ok_or("no scheme")?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme {scheme:?} is not http or https"));
    }
    HostPattern::parse(authority)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The scheme of a host a person listed (`spec.hosts`, the policy's `allowedHosts`), where no Ingress or route
/// says it: what an allowed origin says (`https://host`, else `http://host`), else `http` for names only the
/// cluster or the machine resolves (`localhost`, IP literals, single labels, `*.svc`, `*.cluster.local`), else
/// `https` (a public name).
pub fn listed_host_scheme(host: &str, has_origin: impl Fn(&str) -> bool) -> &'static str {
    if has_origin(&format!("https://{host}")) {
        return "https";
    }
    if has_origin(&format!("http://{host}")) {
        return "http";
    }
    let name = host.to_ascii_lowercase();
    let name = match name.starts_with('[') {
        true => return "http",
        false => name
            .split(':')
            .next()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_string(),
    };
    let local = name == "localhost"
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || !name.contains('.')
        || name.ends_with(".svc")
        || name.ends_with(".cluster.local")
        || name.ends_with(".localhost");
    if local { "http" } else { "https" }
}

/// The problems of an `auth` section of a spec (MCPServer or MCPGuardPolicy), each naming its field under
/// `field` (`spec.auth`). The guard's own compiler decides, so the operator accepts exactly what the guard
/// loads; each part is compiled beside placeholders for the parts it is not (resources are derived, issuers may
/// come from the policy).
pub fn validate(field: &str, auth: &AuthSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let placeholder_issuer = IssuerConfig {
        issuer: "https://issuer.invalid".into(),
        ..Default::default()
    };
    let placeholder_resource = "https://mcp.invalid/mcp".to_string();
    let mut check = |config: AuthConfig| {
        if let Err(e) = config.compile() {
            errors.push(field_error(field, auth, e));
        }
    };
    if let Some(path) = &auth.resource_path {
        check(AuthConfig {
            resources: vec![format!("https://mcp.invalid{}", path)],
            issuers: vec![placeholder_issuer.clone()],
            ..Default::default()
        });
    }
    for (i, issuer) in auth.issuers.iter().flatten().enumerate() {
        // One at a time, so the index of the error is the spec's.
        let mut issuers = vec![placeholder_issuer.clone(); i];
        issuers.push(issuer_config(issuer));
        check(AuthConfig {
            resources: vec![placeholder_resource.clone()],
            issuers,
            ..Default::default()
        });
    }
    check(AuthConfig {
        resources: vec![placeholder_resource],
        issuers: vec![placeholder_issuer],
        required_scopes: auth.required_scopes.clone().unwrap_or_default(),
        method_scopes: auth.method_scopes.clone(),
        tool_scopes: auth.tool_scopes.clone(),
        service_accounts: auth.service_accounts.clone().unwrap_or_default(),
        ..Default::default()
    });
    let mut seen = BTreeSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    errors
}

/// A compile error of the guard as a problem with a field of the spec.
fn field_error(field: &str, auth: &AuthSpec, e: AuthConfigError) -> FieldError {
    let (at, message) = match e {
        AuthConfigError::Resource { why, .. } => (
            format!("{field}.resourcePath"),
            format!("{:?}: {why}", auth.resource_path.as_deref().unwrap_or_default()),
        ),
        AuthConfigError::Issuer { index, entry, why } => (
            format!("{field}.issuers[{index}].issuer"),
            format!("{entry:?}: {why}"),
        ),
        AuthConfigError::IssuerField { index, why } => (format!("{field}.issuers[{index}]"), why),
        AuthConfigError::Scope { field: f, scope } => (
            format!("{field}.{f}"),
            format!("a scope must be a non-empty token without spaces or quotes, not {scope:?}"),
        ),
        AuthConfigError::ServiceAccount { index, entry } => (
            format!("{field}.serviceAccounts[{index}]"),
            format!("{entry:?}: write namespace/name or namespace/*"),
        ),
        other @ (AuthConfigError::NoResources | AuthConfigError::NoIssuers) => {
            (field.to_string(), other.to_string())
        }
    };
    FieldError { field: at, message }
}
