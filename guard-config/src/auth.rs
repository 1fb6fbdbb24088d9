//! Who may call: the guard as the MCP server's OAuth 2.0 resource server (MCP authorization, 2026-07-28).
//!
//! The config's `auth` section ([`AuthConfig`]) compiles into an [`AuthPolicy`], and the policy judges a request
//! purely: the `Authorization` header, the request's resource URI and the issuers' keys in, an [`Identity`] or a
//! [`Denial`] out. Fetching keys, answering, and setting headers are the guard's (IO) side.
//!
//! - A bearer JWT is accepted when it is signed by a key of a configured issuer with an algorithm the issuer
//!   allows (asymmetric only: never `none`, never HMAC), its `iss` is that issuer, it is within `exp`/`nbf` (with
//!   [`AuthConfig::clock_skew_seconds`] of skew), and its `aud` holds the request's resource URI (RFC 8707,
//!   compared canonically) or one of the issuer's configured audiences.
//! - The resource URI of a request is derived from the host it was sent to: [`AuthPolicy::resource_for`].
//! - Scopes: required of every request, per JSON-RPC method and per tool; a token without them is refused
//!   `403 insufficient_scope` naming every scope the request needs (step-up authorization).
//! - Kubernetes service-account issuers: the identity is the token's `kubernetes.io` claim, allowed by
//!   [`AuthConfig::service_accounts`]; scopes do not apply (service-account tokens carry none).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::host::{Authority, HostPattern};
use crate::origin::default_port;
use crate::{Denial, PatternError, Reason};

pub mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token;

#[cfg(test)]
mod tests;

pub use keys::{JwksError, KeySet, PublicKey};
pub use token::{Algorithm, Jwt, MAX_TOKEN_BYTES, TokenFormatError};

/// The default allowance for clock differences between the issuer and the guard.
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// The most keys one token's signature is checked against (a token without a `kid`, several keys that fit).
const MAX_CANDIDATE_KEYS: usize = 4;
/// RFC 9728 §3: where a resource publishes its metadata (the resource's path is appended to it).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The headers through which the guard tells the server who called; a client's copies are always dropped.
pub mod identity_headers {
    /// Every identity header starts with this; the guard drops any client header that does.
    pub const PREFIX: &str = "mcp-guard-";
    pub const SUBJECT: &str = "mcp-guard-subject";
    pub const CLIENT_ID: &str = "mcp-guard-client-id";
    pub const ISSUER: &str = "mcp-guard-issuer";
    pub const SCOPES: &str = "mcp-guard-scopes";
    pub const SERVICE_ACCOUNT: &str = "mcp-guard-service-account";
}

/// The `auth` section of the guard config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// The server's resource URIs, `scheme://HOST[:port]/path` with HOST an allowed-host pattern
    /// (`https://*.apps.example.com/mcp`); see [`AuthPolicy::resource_for`].
    pub resources: Vec<String>,
    pub issuers: Vec<IssuerConfig>,
    /// Scopes every request needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Scopes a JSON-RPC method needs (`tools/call`, `resources/read`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub method_scopes: BTreeMap<String, Vec<String>>,
    /// Scopes a tool needs (`tools/call` by `params.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// The service accounts (`namespace/name`, or `namespace/*`) whose tokens from a Kubernetes issuer are
    /// accepted; empty: every service account the issuer vouches for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Forward the client's `Authorization` header to the server. Off: the server never sees the token (the MCP
    /// authorization spec forbids passing a received token through; turn this on only for a server that
    /// checks the token itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_token: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_seconds: Option<u64>,
}

/// One trusted token issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer identifier, exactly as tokens' `iss` says it; its metadata is discovered from it.
    pub issuer: String,
    /// Where its keys are, when discovery should be skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Its keys, inline (a JWKS document): nothing is fetched. The operator puts the cluster's service-account
    /// issuer keys here, so the guard needs neither egress nor an API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Audiences accepted besides the request's resource URI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The algorithms accepted; default: every asymmetric one the guard knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// A Kubernetes service-account issuer: identities from the `kubernetes.io` claim, not listed as an
    /// authorization server in the resource metadata.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kubernetes: bool,
    /// Accept an `http://` issuer or JWKS URI (a lab; tokens' keys then travel unprotected).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_http: bool,
    /// A PEM file of CA certificates for the issuer's TLS, besides the built-in roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// CA certificates for the issuer's TLS, inline (PEM), besides the built-in roots: an authorization server
    /// in the cluster with a certificate from the cluster's own CA. The operator writes the MCPServer's here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// Why an `auth` section is not valid; the message names the entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "auth.resources is empty: list the URLs clients reach this server at (https://mcp.example.com/mcp); \
         the operator derives them from the Ingresses, HTTPRoutes and Services"
    )]
    NoResources,
    #[error("auth.resources[{index}] {entry:?}: {why}")]
    Resource {
        index: usize,
        entry: String,
        why: String,
    },
    #[error("auth.issuers is empty: name at least one token issuer")]
    NoIssuers,
    #[error("auth.issuers[{index}].issuer {entry:?}: {why}")]
    Issuer {
        index: usize,
        entry: String,
        why: String,
    },
    #[error("auth.issuers[{index}]: {why}")]
    IssuerField { index: usize, why: String },
    #[error("auth.{field}: a scope must be a non-empty token without spaces or quotes, not {scope:?}")]
    Scope { field: String, scope: String },
    #[error("auth.serviceAccounts[{index}] {entry:?}: write namespace/name or namespace/*")]
    ServiceAccount { index: usize, entry: String },
}

/// A resource URI pattern: where the server is reached, and the path of its MCP endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ResourcePattern {
    scheme: &'static str,
    host: HostPattern,
    path: String,
}

/// The resource URI a request is for (RFC 8707 canonical: lowercase scheme and host, no default port, no
/// trailing slash), and where its metadata is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub uri: String,
    /// `scheme://host[:port]`.
    pub origin: String,
    /// The path of the resource (`/mcp`; empty for a resource without one).
    pub path: String,
}

impl Resource {
    /// RFC 9728 §3.1: the metadata URL, the well-known prefix inserted before the resource's path.
    pub fn metadata_url(&self) -> String {
        format!("{}{METADATA_PATH}{}", self.origin, self.path)
    }
}

/// A trusted issuer, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPolicy {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    /// Inline keys: when set, the guard fetches nothing for this issuer.
    /// Inline keys: when set, the guard fetches nothing for this issuer. Empty (`"jwks": {"keys": []}`): the
    /// keys are not known yet, and the issuer's tokens are refused until they are (what the operator writes before
    /// it has read the cluster's service-account keys: closed, never the last config without authentication).
    pub inline_keys: Option<std::sync::Arc<KeySet>>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub kubernetes: bool,
    pub allow_http: bool,
    pub ca_file: Option<String>,
    /// The certificates of `caBundle`, read and checked when the config is.
    pub ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// A service account allowed to call: `namespace/name` or `namespace/*`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceAccountPattern {
    namespace: String,
    name: Option<String>,
}

/// The `auth` section compiled: ready to judge requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthPolicy {
    resources: Vec<ResourcePattern>,
    issuers: Vec<IssuerPolicy>,
    required_scopes: Vec<String>,
    method_scopes: BTreeMap<String, Vec<String>>,
    tool_scopes: BTreeMap<String, Vec<String>>,
    service_accounts: Vec<ServiceAccountPattern>,
    pub pass_token: bool,
    clock_skew: u64,
}

/// Who called, as a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: Option<String>,
    /// `client_id` (RFC 9068), or `azp` where an issuer writes that instead.
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    /// The token's `groups` claim (an array of strings, as Keycloak, Dex and Entra ID write it).
    pub groups: Vec<String>,
    /// `namespace/name`, for tokens of a Kubernetes issuer.
    pub service_account: Option<String>,
    /// `exp`: a cached verification must not outlive it.
    pub expires_at: u64,
}

/// Where the guard gets an issuer's keys from (its cache, fed by discovery and JWKS fetches, or the config).
pub trait KeySource {
    /// The issuer's keys, if the guard has any yet.
    fn keys(&self, issuer: &str) -> Option<std::sync::Arc<KeySet>>;
}

/// What the request shows of its credentials.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// The values of the `Authorization` header fields, as received.
    pub authorization: &'a [&'a [u8]],
    /// The request target's query, if any: a token there is refused (MCP authorization: never in the URI).
    pub query: Option<&'a str>,
}

impl AuthConfig {
    /// Validates and compiles the section.
    pub fn compile(&self) -> Result<AuthPolicy, AuthConfigError> {
        if self.resources.is_empty() {
            return Err(AuthConfigError::NoResources);
        }
        let resources = self
            .resources
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                parse_resource(entry).map_err(|why| AuthConfigError::Resource {
                    index,
                    entry: entry.clone(),
                    why,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.issuers.is_empty() {
            return Err(AuthConfigError::NoIssuers);
        }
        let issuers = self
            .issuers
            .iter()
            .enumerate()
            .map(|(index, i)| i.compile(index))
            .collect::<Result<Vec<_>, _>>()?;
        let check_scopes = |field: String, scopes: &[String]| match scopes.iter().find(|s| !is_scope_token(s))
        {
            Some(bad) => Err(AuthConfigError::Scope {
                field,
                scope: bad.clone(),
            }),
            None => Ok(()),
        };
        check_scopes("requiredScopes".into(), &self.required_scopes)?;
        for (field, map) in [
            ("methodScopes", &self.method_scopes),
            ("toolScopes", &self.tool_scopes),
        ] {
            for (name, scopes) in map {
                check_scopes(format!("{field}[{name:?}]"), scopes)?;
            }
        }
        let service_accounts = self
            .service_accounts
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                parse_service_account(entry).ok_or_else(|| AuthConfigError::ServiceAccount {
                    index,
                    entry: entry.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AuthPolicy {
            resources,
            issuers,
            required_scopes: self.required_scopes.clone(),
            method_scopes: self.method_scopes.clone(),
            tool_scopes: self.tool_scopes.clone(),
            service_accounts,
            pass_token: self.pass_token,
            clock_skew: self.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS),
        })
    }
}

impl IssuerConfig {
    fn compile(&self, index: usize) -> Result<IssuerPolicy, AuthConfigError> {
        let issuer_err = |why: String| AuthConfigError::Issuer {
            index,
            entry: self.issuer.clone(),
            why,
        };
        check_fetch_url(&self.issuer, self.allow_http).map_err(issuer_err)?;
        if let Some(uri) = &self.jwks_uri {
            check_fetch_url(uri, self.allow_http).map_err(|why| AuthConfigError::IssuerField {
                index,
                why: format!("jwksUri {uri:?}: {why}"),
            })?;
        }
        let inline_keys = match &self.jwks {
            None => None,
            Some(doc) if *doc == serde_json::json!({"keys": []}) => Some(Default::default()),
            Some(doc) => Some(std::sync::Arc::new(
                KeySet::from_jwks_json(doc.to_string().as_bytes()).map_err(|e| {
                    AuthConfigError::IssuerField {
                        index,
                        why: format!("jwks: {e}"),
                    }
                })?,
            )),
        };
        let algorithms = match self.algorithms.is_empty() {
            true => Algorithm::ALL.to_vec(),
            false => self
                .algorithms
                .iter()
                .map(|a| {
                    Algorithm::parse(a).map_err(|why| AuthConfigError::IssuerField {
                        index,
                        why: format!("algorithms: {a:?}: {why}"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if let Some(a) = self.audiences.iter().find(|a| a.trim().is_empty()) {
            return Err(AuthConfigError::IssuerField {
                index,
                why: format!("audiences: {a:?} is empty"),
            });
        }
        Ok(IssuerPolicy {
            issuer: self.issuer.clone(),
            jwks_uri: self.jwks_uri.clone(),
            inline_keys,
            audiences: self.audiences.iter().map(|a| canonical_audience(a)).collect(),
            algorithms,
            kubernetes: self.kubernetes,
            allow_http: self.allow_http,
            ca_file: self.ca_file.clone(),
            ca_certs: match &self.ca_bundle {
                None => Vec::new(),
                Some(pem) => ca_certificates(pem).map_err(|why| AuthConfigError::IssuerField {
                    index,
                    why: format!("caBundle: {why}"),
                })?,
            },
        })
    }
}

/// The certificates of a PEM bundle: at least one, and no other kind of block (a private key pasted by mistake is
/// refused, not carried around). The guard's TLS client checks each certificate itself when it trusts it.
fn ca_certificates(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::{PemObject as _, SectionKind};
    let mut certs = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match section.map_err(|e| format!("not PEM: {e}"))? {
            (SectionKind::Certificate, der) => certs.push(der.into()),
            (kind, _) => {
                return Err(format!(
                    "a {kind:?} block: only CA certificates (BEGIN CERTIFICATE) belong here, never a key"
                ));
            }
        }
    }
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// An issuer or key URL the guard may fetch from: https (http only when allowed), a host, no fragment.
fn check_fetch_url(url: &str, allow_http: bool) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not a URL: write https://issuer.example.com")?;
    match scheme {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(
                "http:// would let anyone on the path swap the keys; use https (or allowHttp for a lab)"
                    .into(),
            );
        }
        other => return Err(format!("scheme {other:?} is not https")),
    }
    if url.contains('#') {
        return Err("a fragment is not allowed".into());
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    Authority::parse(authority).map_err(|e| e.to_string())?;
    Ok(())
}

fn parse_resource(entry: &str) -> Result<ResourcePattern, String> {
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or("not a URL: write https://mcp.example.com/mcp")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => "https",
        "http" => "http",
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    if rest.contains(['?', '#']) {
        return Err("a resource URI has no query or fragment (RFC 8707)".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = HostPattern::parse(authority).map_err(|e: PatternError| e.to_string())?;
    let path = path.trim_end_matches('/');
    if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
        return Err("the path is not canonical (no `//`, `.` or `..` segments)".into());
    }
    Ok(ResourcePattern {
        scheme,
        host,
        path: path.to_owned(),
    })
}

fn parse_service_account(entry: &str) -> Option<ServiceAccountPattern> {
    let (ns, name) = entry.split_once('/')?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !label(ns) {
        return None;
    }
    let name = match name {
        "*" => None,
        n if label(n) => Some(n.to_owned()),
        _ => return None,
    };
    Some(ServiceAccountPattern {
        namespace: ns.to_owned(),
        name,
    })
}

/// RFC 6749 §3.3 scope-token: printable ASCII but space, `"` and `\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// An audience as compared: an http(s) URI in RFC 8707 canonical form (lowercase scheme and host, no default
/// port, no trailing slash); anything else as it is.
pub fn canonical_audience(aud: &str) -> String {
    let Some((scheme, rest)) = aud.split_once("://") else {
        return aud.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return aud.to_owned();
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Ok(a) = Authority::parse(authority) else {
        return aud.to_owned();
    };
    let port = a.port.filter(|p| Some(*p) != default_port(&scheme));
    let host = a.host.to_string().to_ascii_lowercase();
    let path = match path.starts_with('/') {
        true => path.trim_end_matches('/'),
        false => path,
    };
    match port {
        Some(p) => format!("{scheme}://{host}:{p}{path}"),
        None => format!("{scheme}://{host}{path}"),
    }
}

impl AuthPolicy {
    pub fn issuers(&self) -> &[IssuerPolicy] {
        &self.issuers
    }

    /// The resource a request sent to `authority` (the host the allowlist checked) is for: the first resource
    /// pattern whose host matches, with the request's host in place of the pattern. `None`: the host is not
    /// one of the server's resources.
    pub fn resource_for(&self, authority: &Authority<'_>) -> Option<Resource> {
        let pattern = self
            .resources
            .iter()
            .find(|r| r.host.matches(authority, default_port(r.scheme)))?;
        let host = authority.host.to_string().to_ascii_lowercase();
        let origin = match authority
            .port
            .filter(|p| Some(*p) != default_port(pattern.scheme))
        {
            Some(p) => format!("{}://{host}:{p}", pattern.scheme),
            None => format!("{}://{host}", pattern.scheme),
        };
        Some(Resource {
            uri: format!("{origin}{}", pattern.path),
            origin,
            path: pattern.path.clone(),
        })
    }

    /// Whether `path` (of a `GET`) asks for this resource's metadata (RFC 9728 §3): the well-known prefix
    /// followed by the resource's path, or alone.
    pub fn is_metadata_path(path: &str, resource: &Resource) -> bool {
        path.strip_prefix(METADATA_PATH)
            .is_some_and(|rest| rest.is_empty() || rest == "/" || rest == resource.path)
    }

    /// The RFC 9728 metadata document of a resource.
    pub fn metadata(&self, resource: &Resource) -> serde_json::Value {
        let servers: Vec<&str> = self
            .issuers
            .iter()
            .filter(|i| !i.kubernetes)
            .map(|i| i.issuer.as_str())
            .collect();
        let mut doc = serde_json::json!({
            "resource": resource.uri,
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
        });
        let scopes = self.scopes_supported();
        if !scopes.is_empty() {
            doc["scopes_supported"] = serde_json::json!(scopes);
        }
        doc
    }

    /// Every scope the config names.
    pub fn scopes_supported(&self) -> Vec<&str> {
        let all: BTreeSet<&str> = self
            .required_scopes
            .iter()
            .chain(self.method_scopes.values().flatten())
            .chain(self.tool_scopes.values().flatten())
            .map(String::as_str)
            .collect();
        all.into_iter().collect()
    }

    /// Checks the request's bearer token: [`AuthPolicy::bearer`], then [`AuthPolicy::verify`]. `now` is Unix
    /// seconds.
    pub fn authenticate(
        &self,
        credentials: Credentials<'_>,
        resource: &Resource,
        keys: &dyn KeySource,
        now: u64,
    ) -> Result<Identity, AuthDenial> {
        let token = Self::bearer(credentials)?;
        self.verify(token, resource, keys, now)
    }

    /// The request's one bearer token: exactly one `Authorization: Bearer` header, and no token in the query.
    pub fn bearer<'a>(credentials: Credentials<'a>) -> Result<&'a str, AuthDenial> {
        if let Some(query) = credentials.query
            && query
                .split('&')
                .any(|pair| pair.split('=').next() == Some("access_token"))
        {
            return Err(
                AuthDenial::new(AuthError::InvalidRequest, "a token in the query string")
                    .detail("the MCP authorization spec allows the token only in the Authorization header"),
            );
        }
        let value = match credentials.authorization {
            [] => return Err(AuthDenial::new(AuthError::NoToken, "no Authorization header")),
            [one] => *one,
            _ => {
                return Err(
                    AuthDenial::new(AuthError::InvalidRequest, "several Authorization headers")
                        .detail("send one Authorization: Bearer header"),
                );
            }
        };
        let Some(token) = bearer_token(value) else {
            let scheme = String::from_utf8_lossy(value.split(|b| *b == b' ').next().unwrap_or_default())
                .chars()
                .take(20)
                .collect::<String>();
            return Err(
                AuthDenial::new(AuthError::NoToken, format!("Authorization scheme {scheme:?}"))
                    .detail("send an OAuth access token: Authorization: Bearer <token>"),
            );
        };
        Ok(token)
    }

    /// Checks a bearer token for `resource`: its signature by a trusted issuer's key, its times, its audience,
    /// and (for a Kubernetes issuer) its service account.
    pub fn verify(
        &self,
        token: &str,
        resource: &Resource,
        keys: &dyn KeySource,
        now: u64,
    ) -> Result<Identity, AuthDenial> {
        let jwt = Jwt::decode(token).map_err(|e| AuthDenial::new(AuthError::InvalidToken, e.to_string()))?;
        let iss = jwt
            .string("iss")
            .ok_or_else(|| AuthDenial::new(AuthError::InvalidToken, "no iss claim"))?;
        let issuer = self.issuers.iter().find(|i| i.issuer == iss).ok_or_else(|| {
            AuthDenial::new(
                AuthError::InvalidToken,
                format!("issuer {:?} is not trusted", clip(iss)),
            )
        })?;
        if !issuer.algorithms.contains(&jwt.alg) {
            return Err(AuthDenial::new(
                AuthError::InvalidToken,
                format!("alg {} is not allowed for issuer {}", jwt.alg, issuer.issuer),
            ));
        }
        let key_set = match &issuer.inline_keys {
            Some(inline) if inline.is_empty() => {
                return Err(AuthDenial::new(
                    AuthError::KeysUnavailable,
                    format!("the keys of {} are not in the config yet", issuer.issuer),
                ));
            }
            Some(inline) => inline.clone(),
            None => keys.keys(&issuer.issuer).ok_or_else(|| {
                AuthDenial::new(
                    AuthError::KeysUnavailable,
                    format!("no keys yet from {}", issuer.issuer),
                )
            })?,
        };
        // A token without a `kid` is tried against each key that fits its algorithm, but only a few: a forged
        // token must not cost a signature check per key of a large set.
        let mut candidates = key_set
            .candidates(jwt.kid.as_deref(), jwt.alg)
            .take(MAX_CANDIDATE_KEYS)
            .peekable();
        if candidates.peek().is_none() {
            return Err(AuthDenial::new(
                AuthError::UnknownKey,
                format!(
                    "no {} key {} of issuer {}",
                    jwt.alg,
                    jwt.kid
                        .as_deref()
                        .map(|k| format!("{:?}", clip(k)))
                        .unwrap_or_default(),
                    issuer.issuer
                ),
            ));
        }
        if !candidates.any(|k| k.verify(jwt.alg, jwt.signing_input, &jwt.signature)) {
            return Err(AuthDenial::new(
                AuthError::InvalidToken,
                "the signature does not verify",
            ));
        }
        // Signed by the issuer: the claims can be believed now.
        let invalid = |why: String| AuthDenial::new(AuthError::InvalidToken, why);
        let exp = jwt
            .time("exp")
            .map_err(invalid)?
            .ok_or_else(|| invalid("no exp claim".into()))?;
        if now > exp.saturating_add(self.clock_skew) {
            return Err(AuthDenial::new(
                AuthError::Expired,
                format!("expired {}s ago", now - exp),
            ));
        }
        if let Some(nbf) = jwt.time("nbf").map_err(invalid)?
            && now.saturating_add(self.clock_skew) < nbf
        {
            return Err(AuthDenial::new(
                AuthError::NotYetValid,
                format!("valid in {}s", nbf - now),
            ));
        }
        let audiences = jwt.audiences().map_err(invalid)?;
        let fits = audiences.iter().any(|a| {
            let a = canonical_audience(a);
            a == resource.uri || issuer.audiences.contains(&a)
        });
        if !fits {
            let seen: Vec<String> = audiences
                .iter()
                .take(4)
                .map(|a| format!("{:?}", clip(a)))
                .collect();
            return Err(AuthDenial::new(
                AuthError::AudienceMismatch,
                format!("aud [{}], this server is {}", seen.join(", "), resource.uri),
            ));
        }
        let service_account = match issuer.kubernetes {
            true => Some(self.service_account(&jwt)?),
            false => None,
        };
        Ok(Identity {
            issuer: issuer.issuer.clone(),
            subject: jwt.string("sub").map(str::to_owned),
            client_id: jwt
                .string("client_id")
                .or_else(|| jwt.string("azp"))
                .map(str::to_owned),
            scopes: jwt.scopes(),
            groups: jwt.groups(),
            service_account,
            expires_at: exp,
        })
    }

    /// The service account a Kubernetes token speaks for, if it may call.
    fn service_account(&self, jwt: &Jwt<'_>) -> Result<String, AuthDenial> {
        let claim = jwt.claims.get("kubernetes.io");
        let ns = claim.and_then(|c| c.get("namespace")).and_then(|v| v.as_str());
        let name = claim
            .and_then(|c| c.get("serviceaccount"))
            .and_then(|s| s.get("name"))
            .and_then(|v| v.as_str());
        let (Some(ns), Some(name)) = (ns, name) else {
            return Err(AuthDenial::new(
                AuthError::InvalidToken,
                "a Kubernetes token without a kubernetes.io service account",
            ));
        };
        let allowed = self.service_accounts.is_empty()
            || self
                .service_accounts
                .iter()
                .any(|p| p.namespace == ns && p.name.as_deref().is_none_or(|n| n == name));
        match allowed {
            true => Ok(format!("{ns}/{name}")),
            false => Err(AuthDenial::new(
                AuthError::NotAllowed,
                format!("service account {ns}/{name}"),
            )),
        }
    }

    /// The scopes a call needs: the server's, its method's, and (for `tools/call`) its tool's.
    pub fn scopes_needed<'a>(&'a self, method: Option<&str>, tool: Option<&str>) -> BTreeSet<&'a str> {
        let mut needed: BTreeSet<&str> = self.required_scopes.iter().map(String::as_str).collect();
        if let Some(scopes) = method.and_then(|m| self.method_scopes.get(m)) {
            needed.extend(scopes.iter().map(String::as_str));
        }
        if method == Some("tools/call")
            && let Some(scopes) = tool.and_then(|t| self.tool_scopes.get(t))
        {
            needed.extend(scopes.iter().map(String::as_str));
        }
        needed
    }

    /// Whether any scope is configured at all (otherwise the calls need not be known to authorize).
    pub fn has_scopes(&self) -> bool {
        !self.required_scopes.is_empty() || !self.method_scopes.is_empty() || !self.tool_scopes.is_empty()
    }

    /// Whether the identity holds every scope the calls need (`(method, tool)` per call). Kubernetes identities
    /// are governed by `serviceAccounts` instead: their tokens carry no scopes.
    pub fn authorize<'c>(
        &self,
        identity: &Identity,
        calls: impl IntoIterator<Item = (Option<&'c str>, Option<&'c str>)>,
    ) -> Result<(), AuthDenial> {
        if identity.service_account.is_some() {
            return Ok(());
        }
        let mut needed = BTreeSet::new();
        for (method, tool) in calls {
            needed.extend(self.scopes_needed(method, tool));
        }
        if needed.is_empty() {
            needed = self.scopes_needed(None, None);
        }
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|s| !identity.scopes.iter().any(|g| g == s))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let all: Vec<&str> = needed.into_iter().collect();
        Err(AuthDenial {
            error: AuthError::InsufficientScope,
            received: format!("scopes [{}]", identity.scopes.join(" ")),
            detail: Some(format!("missing [{}]", missing.join(" "))),
            scope: Some(all.join(" ")),
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1; the scheme is case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ')).then_some(token)
}

/// A value from a token, cut short for a message (a token's claims are the attacker's text).
fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Why a token was refused, in the terms RFC 6750 answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer token: `401` with a challenge and no `error` (RFC 6750 §3.1).
    NoToken,
    /// `400 invalid_request`.
    InvalidRequest,
    /// `401 invalid_token`.
    InvalidToken,
    /// `401 invalid_token`: its key is not (yet) among the issuer's keys; the guard refetches them once and asks
    /// again before it refuses.
    UnknownKey,
    Expired,
    NotYetValid,
    AudienceMismatch,
    /// `403 insufficient_scope`.
    InsufficientScope,
    /// `403`: a service account not in `serviceAccounts`.
    NotAllowed,
    /// `503`: the guard has no keys of the issuer yet (never fetched); it does not guess.
    KeysUnavailable,
}

impl AuthError {
    pub fn reason(self) -> Reason {
        match self {
            AuthError::NoToken => Reason::Unauthenticated,
            AuthError::InvalidRequest => Reason::InvalidAuthRequest,
            AuthError::InvalidToken | AuthError::UnknownKey => Reason::InvalidToken,
            AuthError::Expired => Reason::TokenExpired,
            AuthError::NotYetValid => Reason::TokenNotYetValid,
            AuthError::AudienceMismatch => Reason::TokenAudienceMismatch,
            AuthError::InsufficientScope => Reason::InsufficientScope,
            AuthError::NotAllowed => Reason::IdentityNotAllowed,
            AuthError::KeysUnavailable => Reason::AuthKeysUnavailable,
        }
    }

    /// The RFC 6750 `error` code of the challenge, if it has one.
    pub fn code(self) -> Option<&'static str> {
        match self {
            AuthError::NoToken | AuthError::NotAllowed | AuthError::KeysUnavailable => None,
            AuthError::InvalidRequest => Some("invalid_request"),
            AuthError::InsufficientScope => Some("insufficient_scope"),
            AuthError::InvalidToken
            | AuthError::UnknownKey
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::AudienceMismatch => Some("invalid_token"),
        }
    }
}

/// A refusal by the authentication or the scopes: what to answer, and the challenge to answer it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthDenial {
    pub error: AuthError,
    /// What was received, described (never the token itself).
    pub received: String,
    pub detail: Option<String>,
    /// For `insufficient_scope`: every scope the request needs.
    pub scope: Option<String>,
}

impl AuthDenial {
    pub fn new(error: AuthError, received: impl Into<String>) -> Self {
        AuthDenial {
            error,
            received: received.into(),
            detail: None,
            scope: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The refusal as every other refusal of the guard (reason, received value, detail).
    pub fn denial(&self) -> Denial {
        let denial = Denial::new(self.error.reason(), self.received.clone());
        match &self.detail {
            Some(d) => denial.with_detail(d),
            None => denial,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3, RFC 9728 §5.1). `required_scope`: the scopes to name in a
    /// `401` challenge, so that a client asks for them up front.
    pub fn challenge(&self, resource: &Resource, required_scope: Option<&str>) -> String {
        let mut c = format!("Bearer resource_metadata=\"{}\"", resource.metadata_url());
        if let Some(code) = self.error.code() {
            c.push_str(&format!(", error=\"{code}\""));
            let description = self.received.replace(['"', '\\'], "'");
            let description: String = description.chars().filter(|c| (' '..='~').contains(c)).collect();
            c.push_str(&format!(", error_description=\"{description}\""));
        }
        if let Some(scope) = self.scope.as_deref().or(required_scope).filter(|s| !s.is_empty()) {
            c.push_str(&format!(", scope=\"{scope}\""));
        }
        c
    }
}
