//! The compiled allowlist and the pure request check: request facts in, [`Verdict`] out.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::access::{AccessConfigError, AccessPolicy};
use crate::auth::AuthPolicy;
use crate::cidr::Cidr;
use crate::host::{Authority, HostPattern};
use crate::origin::{Origin, OriginPattern, default_port};
use crate::{AuditConfig, ConfigError, ConfigSource, GuardConfig, Limits, Mode};

#[cfg(test)]
mod tests;

/// What the guard enforces, compiled from a [`GuardConfig`]: parsed patterns, ready for [`Allowlist::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowlist {
    pub mode: Mode,
    hosts: Vec<HostPattern>,
    origins: Vec<OriginPattern>,
    pub source: Option<ConfigSource>,
    pub limits: Limits,
    /// Peers whose forwarded host is checked instead of `Host`.
    pub trusted_proxies: Vec<Cidr>,
    /// Answer CORS on the allowed origins.
    pub cors: bool,
    /// Bearer-token authentication, when configured.
    pub auth: Option<AuthPolicy>,
    /// Access rules, when configured (they need `auth`).
    pub access: Option<AccessPolicy>,
    /// The audit log's settings, when it is on ([`AuditConfig::effective`]).
    pub audit: Option<AuditConfig>,
}

/// How often a header occurred in a request, and its first value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderSeen<'a> {
    pub first: Option<&'a [u8]>,
    pub count: usize,
}

impl<'a> HeaderSeen<'a> {
    /// Collects the occurrences of one header from an iterator over its values.
    pub fn collect<I: IntoIterator<Item = &'a [u8]>>(values: I) -> Self {
        let mut seen = HeaderSeen::default();
        for v in values {
            if seen.first.is_none() {
                seen.first = Some(v);
            }
            seen.count += 1;
        }
        seen
    }
}

/// The facts about a request that the check needs; borrowed from the request, nothing copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// The authority of the request target: HTTP/2 `:authority`, or the authority of an absolute-form
    /// HTTP/1.1 target. When present it is what is checked (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
    pub target_authority: Option<&'a str>,
    /// The target authority came from HTTP/2 `:authority`; a `Host` header that disagrees is then malformed.
    pub http2: bool,
    /// The scheme of the request as received (`http` unless an absolute-form target says otherwise); it
    /// supplies the default port for patterns with an explicit port.
    pub scheme: Option<&'a str>,
    pub host: HeaderSeen<'a>,
    pub origin: HeaderSeen<'a>,
}

/// Why a request was refused (or, in audit mode, would have been).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    HostNotAllowed,
    OriginNotAllowed,
    MalformedHost,
    MissingHost,
    MalformedOrigin,
    MultipleHostHeaders,
    MultipleOriginHeaders,
    /// Set by the proxy, not by [`Allowlist::check`]: the request body exceeded the limit.
    RequestBodyTooLarge,
    /// Set by the proxy: the upstream could not be reached or failed.
    UpstreamUnavailable,
    /// Set by the proxy: the request is not valid HTTP/1.1 (or is ambiguous about where its body ends).
    MalformedRequest,
    /// Set by the proxy: the request head is larger than allowed, or has too many header fields.
    RequestHeadersTooLarge,
    /// Set by the rate limits: a token bucket of the client (overall, per method or per tool) is empty.
    RateLimited,
    /// Set by the rate limits: the client has `maxConcurrentRequestsPerClient` requests in flight.
    TooManyConcurrentRequests,
    /// Set by the rate limits: the client has `maxStreamsPerClient` SSE streams open.
    TooManyStreams,
    /// Set by the proxy: the `Mcp-Method` / `Mcp-Name` header says another method or tool than the body.
    McpHeaderMismatch,
    /// Set by the rate limits: they cannot count the JSON-RPC calls in the request body (a batch that does not end
    /// within the prefix the guard reads, a body that is not a JSON object or array, a body that names another
    /// call after the prefix was charged).
    UncountableBody,
    /// Set by the authentication: no bearer token (`401`, the challenge names the resource metadata).
    Unauthenticated,
    /// Set by the authentication: the token is malformed, not signed by a trusted issuer's key, or not for an
    /// algorithm the issuer allows.
    InvalidToken,
    TokenExpired,
    TokenNotYetValid,
    /// Set by the authentication: the token was issued for another resource.
    TokenAudienceMismatch,
    /// Set by the authentication: two `Authorization` headers, or a token in the query string.
    InvalidAuthRequest,
    /// Set by the scopes: the token lacks a scope the request needs (step-up).
    InsufficientScope,
    /// Set by the authentication: a verified identity that `serviceAccounts` does not allow.
    IdentityNotAllowed,
    /// Set by the authentication: the request's host is allowed but is not one of the server's resources.
    NoResourceForHost,
    /// Set by the authentication: the guard has no keys of the token's issuer yet.
    AuthKeysUnavailable,
    /// Set by the access rules: no rule lets this caller call this tool (or prompt, or resource).
    ToolNotAllowed,
    /// Set by the access rules: no rule lets this caller call this method.
    MethodNotAllowed,
    /// Set by the proxy: a list answer the access rules filter that the guard cannot filter (over its bound, or
    /// not JSON it can read).
    ListNotFiltered,
}

impl Reason {
    pub const ALL: [Reason; 29] = [
        Reason::HostNotAllowed,
        Reason::OriginNotAllowed,
        Reason::MalformedHost,
        Reason::MissingHost,
        Reason::MalformedOrigin,
        Reason::MultipleHostHeaders,
        Reason::MultipleOriginHeaders,
        Reason::RequestBodyTooLarge,
        Reason::UpstreamUnavailable,
        Reason::MalformedRequest,
        Reason::RequestHeadersTooLarge,
        Reason::RateLimited,
        Reason::TooManyConcurrentRequests,
        Reason::TooManyStreams,
        Reason::McpHeaderMismatch,
        Reason::UncountableBody,
        Reason::Unauthenticated,
        Reason::InvalidToken,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::TokenAudienceMismatch,
        Reason::InvalidAuthRequest,
        Reason::InsufficientScope,
        Reason::IdentityNotAllowed,
        Reason::NoResourceForHost,
        Reason::AuthKeysUnavailable,
        Reason::ToolNotAllowed,
        Reason::MethodNotAllowed,
        Reason::ListNotFiltered,
    ];

    /// The machine-readable reason, as in the JSON body, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HostNotAllowed => "host_not_allowed",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::MalformedHost => "malformed_host",
            Reason::MissingHost => "missing_host",
            Reason::MalformedOrigin => "malformed_origin",
            Reason::MultipleHostHeaders => "multiple_host_headers",
            Reason::MultipleOriginHeaders => "multiple_origin_headers",
            Reason::RequestBodyTooLarge => "request_body_too_large",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::MalformedRequest => "malformed_request",
            Reason::RequestHeadersTooLarge => "request_headers_too_large",
            Reason::RateLimited => "rate_limited",
            Reason::TooManyConcurrentRequests => "too_many_concurrent_requests",
            Reason::TooManyStreams => "too_many_streams",
            Reason::McpHeaderMismatch => "mcp_header_mismatch",
            Reason::UncountableBody => "uncountable_body",
            Reason::Unauthenticated => "unauthenticated",
            Reason::InvalidToken => "invalid_token",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenAudienceMismatch => "token_audience_mismatch",
            Reason::InvalidAuthRequest => "invalid_auth_request",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::IdentityNotAllowed => "identity_not_allowed",
            Reason::NoResourceForHost => "no_resource_for_host",
            Reason::AuthKeysUnavailable => "auth_keys_unavailable",
            Reason::ToolNotAllowed => "tool_not_allowed",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::ListNotFiltered => "list_not_filtered",
        }
    }

    /// The HTTP status: 421 for a host not allowed, 403 for an origin not allowed, 400 for malformed input.
    pub fn status(self) -> u16 {
        match self {
            Reason::HostNotAllowed => 421,
            Reason::OriginNotAllowed => 403,
            Reason::MalformedHost
            | Reason::MissingHost
            | Reason::MalformedOrigin
            | Reason::MultipleHostHeaders
            | Reason::MultipleOriginHeaders
            | Reason::MalformedRequest
            | Reason::McpHeaderMismatch
            | Reason::UncountableBody
            | Reason::InvalidAuthRequest => 400,
            Reason::Unauthenticated
            | Reason::InvalidToken
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::TokenAudienceMismatch => 401,
            Reason::InsufficientScope
            | Reason::IdentityNotAllowed
            | Reason::NoResourceForHost
            | Reason::ToolNotAllowed
            | Reason::MethodNotAllowed => 403,
            Reason::AuthKeysUnavailable => 503,
            Reason::RequestBodyTooLarge => 413,
            Reason::UpstreamUnavailable | Reason::ListNotFiltered => 502,
            Reason::RequestHeadersTooLarge => 431,
            Reason::RateLimited | Reason::TooManyConcurrentRequests | Reason::TooManyStreams => 429,
        }
    }

    /// A short human message for the JSON-RPC error.
    pub fn message(self) -> &'static str {
        match self {
            Reason::HostNotAllowed => "Misdirected request: Host not allowed",
            Reason::OriginNotAllowed => "Forbidden: Origin not allowed",
            Reason::MalformedHost => "Bad request: malformed Host",
            Reason::MissingHost => "Bad request: missing Host",
            Reason::MalformedOrigin => "Bad request: malformed Origin",
            Reason::MultipleHostHeaders => "Bad request: more than one Host header",
            Reason::MultipleOriginHeaders => "Bad request: more than one Origin header",
            Reason::RequestBodyTooLarge => "Request body too large",
            Reason::UpstreamUnavailable => "Bad gateway: the MCP server is not reachable",
            Reason::MalformedRequest => "Bad request: malformed HTTP request",
            Reason::RequestHeadersTooLarge => "Request header fields too large",
            Reason::RateLimited => "Too many requests: rate limit exceeded",
            Reason::TooManyConcurrentRequests => "Too many requests: too many requests in flight",
            Reason::TooManyStreams => "Too many requests: too many open SSE streams",
            Reason::McpHeaderMismatch => "Bad request: Mcp-Method/Mcp-Name header does not match the body",
            Reason::UncountableBody => "Bad request: the rate limits cannot count the calls in this body",
            Reason::Unauthenticated => "Unauthorized: a bearer token is required",
            Reason::InvalidToken => "Unauthorized: invalid token",
            Reason::TokenExpired => "Unauthorized: the token has expired",
            Reason::TokenNotYetValid => "Unauthorized: the token is not valid yet",
            Reason::TokenAudienceMismatch => "Unauthorized: the token was issued for another resource",
            Reason::InvalidAuthRequest => "Bad request: invalid authorization",
            Reason::InsufficientScope => "Forbidden: the token lacks a required scope",
            Reason::IdentityNotAllowed => "Forbidden: this identity may not call this server",
            Reason::NoResourceForHost => "Forbidden: this host is not one of the server's resource URIs",
            Reason::AuthKeysUnavailable => {
                "Service unavailable: the token issuer's keys are not available yet"
            }
            Reason::ToolNotAllowed => "Forbidden: no access rule lets this caller call this tool",
            Reason::MethodNotAllowed => "Forbidden: no access rule lets this caller call this method",
            Reason::ListNotFiltered => "Bad gateway: the guard cannot filter the MCP server's list answer",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason, the offending value as received (lossy UTF-8), and a detail for malformed values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub received: String,
    pub detail: Option<String>,
}

impl Denial {
    pub fn new(reason: Reason, received: impl Into<String>) -> Self {
        Denial {
            reason,
            received: received.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl ToString) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    pub fn status(&self) -> u16 {
        self.reason.status()
    }
}

/// The outcome of [`Allowlist::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Denial),
}

/// [`Allowlist::check`] for one client connection, remembering the last request facts it allowed: a client sends
/// the same `Host` and `Origin` on every request of a connection, and the same facts under the same allowlist get
/// the same verdict, so they are compared instead of parsed again. Only an allow is remembered (a refusal is
/// rendered from its parse); the allowlist is held, so a reload (a new allowlist) is never mistaken for the old.
#[derive(Debug, Default)]
pub struct CheckMemo {
    allowed: Option<(Arc<Allowlist>, OwnedFacts)>,
}

impl CheckMemo {
    pub fn check(&mut self, allowlist: &Arc<Allowlist>, facts: &RequestFacts<'_>) -> Verdict {
        if let Some((remembered, seen)) = &self.allowed
            && Arc::ptr_eq(remembered, allowlist)
            && seen.facts() == *facts
        {
            return Verdict::Allow;
        }
        let verdict = allowlist.check(facts);
        self.allowed = match verdict {
            Verdict::Allow => Some((allowlist.clone(), OwnedFacts::of(facts))),
            Verdict::Deny(_) => None,
        };
        verdict
    }
}

/// [`RequestFacts`], owned: every field the check reads (both conversions name each field, so a new one cannot be
/// left out of the comparison).
#[derive(Debug)]
struct OwnedFacts {
    target_authority: Option<Box<str>>,
    http2: bool,
    scheme: Option<Box<str>>,
    host: (Option<Box<[u8]>>, usize),
    origin: (Option<Box<[u8]>>, usize),
}

impl OwnedFacts {
    fn of(f: &RequestFacts<'_>) -> Self {
        let RequestFacts {
            target_authority,
            http2,
            scheme,
            host,
            origin,
        } = *f;
        OwnedFacts {
            target_authority: target_authority.map(Into::into),
            http2,
            scheme: scheme.map(Into::into),
            host: (host.first.map(Into::into), host.count),
            origin: (origin.first.map(Into::into), origin.count),
        }
    }

    /// Borrowed back, to compare with [`RequestFacts`]' own equality.
    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            target_authority: self.target_authority.as_deref(),
            http2: self.http2,
            scheme: self.scheme.as_deref(),
            host: seen(&self.host),
            origin: seen(&self.origin),
        }
    }
}

fn seen(&(ref first, count): &(Option<Box<[u8]>>, usize)) -> HeaderSeen<'_> {
    HeaderSeen {
        first: first.as_deref(),
        count,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Allowlist {
    /// Compiles a config; every entry must parse, and at least one host must be allowed (never fail open).
    pub fn compile(config: &GuardConfig) -> Result<Self, ConfigError> {
        let hosts = config
            .allowed_hosts
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                HostPattern::parse(entry).map_err(|source| ConfigError::InvalidHost {
                    index,
                    entry: entry.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let origins = config
            .allowed_origins
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                OriginPattern::parse(entry).map_err(|source| ConfigError::InvalidOrigin {
                    index,
                    entry: entry.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err(ConfigError::NoAllowedHosts);
        }
        config.limits.validate()?;
        if let Some(audit) = &config.audit {
            audit.validate()?;
        }
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                Cidr::parse(entry).map_err(|source| ConfigError::InvalidTrustedProxy {
                    index,
                    entry: entry.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist {
            mode: config.mode,
            hosts,
            origins,
            source: config.source.clone(),
            limits: config.limits.clone(),
            trusted_proxies,
            cors: config.cors,
            auth: config.auth.as_ref().map(|a| a.compile()).transpose()?,
            access: match (&config.access, &config.auth) {
                (None, _) => None,
                (Some(_), None) => return Err(AccessConfigError::NeedsAuth.into()),
                (Some(access), Some(_)) => Some(access.compile()?),
            },
            audit: AuditConfig::effective(config),
        })
    }

    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    pub fn origins(&self) -> &[OriginPattern] {
        &self.origins
    }

    /// Whether a peer is one of the trusted proxies.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }

    /// Whether an authority (host and port) matches an allowed host.
    pub fn allows_authority(&self, authority: &Authority<'_>, default_port: Option<u16>) -> bool {
        self.hosts.iter().any(|p| p.matches(authority, default_port))
    }

    /// Whether a received origin is allowed: listed in the allowed origins, or the origin of an allowed host
    /// (a same-origin page, `http` or `https`).
    pub fn allows_origin(&self, origin: &Origin<'_>) -> bool {
        if self.origins.iter().any(|p| p.matches(origin)) {
            return true;
        }
        match origin {
            Origin::Null => false,
            Origin::Tuple { scheme, authority } => {
                (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
                    && self.allows_authority(
                        &Authority {
                            host: authority.host,
                            port: origin.effective_port(),
                        },
                        None,
                    )
            }
        }
    }

    /// The check, applied to every request on the guarded port: Host (or `:authority`/absolute-form target)
    /// first, then Origin. Pure: no I/O, no allocation unless the request is refused.
    pub fn check(&self, req: &RequestFacts<'_>) -> Verdict {
        match self.check_host(req) {
            Err(d) => Verdict::Deny(d),
            Ok(()) => match self.check_origin(req) {
                Err(d) => Verdict::Deny(d),
                Ok(()) => Verdict::Allow,
            },
        }
    }

    fn check_host(&self, req: &RequestFacts<'_>) -> Result<(), Denial> {
        if req.host.count > 1 {
            let first = req.host.first.map(lossy).unwrap_or_default();
            return Err(Denial::new(Reason::MultipleHostHeaders, first)
                .with_detail(format!("{} Host headers", req.host.count)));
        }
        let default_port = default_port(req.scheme.unwrap_or("http"));
        let authority = match (req.target_authority, req.host.first) {
            (Some(target), host) => {
                if let (true, Some(host)) = (req.http2, host)
                    && !host.eq_ignore_ascii_case(target.as_bytes())
                {
                    return Err(Denial::new(Reason::MalformedHost, lossy(host))
                        .with_detail(format!("the Host header differs from :authority {target:?}")));
                }
                Authority::parse(target)
                    .map_err(|e| Denial::new(Reason::MalformedHost, target).with_detail(e))?
            }
            (None, Some(host)) => Authority::parse_bytes(host)
                .map_err(|e| Denial::new(Reason::MalformedHost, lossy(host)).with_detail(e))?,
            (None, None) => return Err(Denial::new(Reason::MissingHost, "")),
        };
        if self.allows_authority(&authority, default_port) {
            Ok(())
        } else {
            Err(Denial::new(Reason::HostNotAllowed, authority.to_string()))
        }
    }

    fn check_origin(&self, req: &RequestFacts<'_>) -> Result<(), Denial> {
        let Some(raw) = req.origin.first else {
            return Ok(());
        };
        if req.origin.count > 1 {
            return Err(Denial::new(Reason::MultipleOriginHeaders, lossy(raw))
                .with_detail(format!("{} Origin headers", req.origin.count)));
        }
        let origin = Origin::parse_bytes(raw)
            .map_err(|e| Denial::new(Reason::MalformedOrigin, lossy(raw)).with_detail(e))?;
        if self.allows_origin(&origin) {
            Ok(())
        } else {
            Err(Denial::new(Reason::OriginNotAllowed, lossy(raw)))
        }
    }

    /// Where to allow a refused value: with a [`ConfigSource`] the MCPServer field or an Ingress/HTTPRoute,
    /// otherwise the guard's own flags.
    pub fn hint(&self, denial: &Denial) -> String {
        let mut hint = String::new();
        let source = self.source.as_ref().map(|s| match &s.namespace {
            Some(ns) => format!("{} {ns}/{}", s.kind, s.name),
            None => format!("{} {}", s.kind, s.name),
        });
        match denial.reason {
            Reason::HostNotAllowed => {
                let host = suggested_host(&denial.received);
                match source {
                    Some(src) => {
                        let _ = write!(
                            hint,
                            "to allow this host add \"{host}\" to spec.hosts of {src}, or route it to this server \
                             through an Ingress or HTTPRoute rule with that host"
                        );
                    }
                    None => {
                        let _ = write!(
                            hint,
                            "to allow this host start mcp-guard with --allow-host {host} (or add it to \
                             MCP_GUARD_ALLOW_HOSTS or to allowedHosts in the --config file)"
                        );
                    }
                }
            }
            Reason::OriginNotAllowed => {
                let origin = denial.received.as_str();
                let null_note = if origin == "null" {
                    "browsers send `Origin: null` from sandboxed frames and file: pages; allow it only if you must: "
                } else {
                    ""
                };
                match source {
                    Some(src) => {
                        let _ = write!(
                            hint,
                            "{null_note}to allow this origin add \"{origin}\" to spec.origins of {src} (pages served \
                             from an allowed host are always allowed)"
                        );
                    }
                    None => {
                        let _ = write!(
                            hint,
                            "{null_note}to allow this origin start mcp-guard with --allow-origin {origin} (or add it \
                             to MCP_GUARD_ALLOW_ORIGINS or to allowedOrigins in the --config file)"
                        );
                    }
                }
            }
            Reason::MalformedHost => hint.push_str(
                "send one Host header of the form host[:port]: no userinfo, no path, no whitespace, port 1-65535, \
                 IPv6 literals in brackets",
            ),
            Reason::MissingHost => hint.push_str("send a Host header (HTTP/1.1 requires one)"),
            Reason::MultipleHostHeaders => hint.push_str("send exactly one Host header"),
            Reason::MalformedOrigin => hint.push_str("the Origin header must be scheme://host[:port] or null"),
            Reason::MultipleOriginHeaders => hint.push_str("send at most one Origin header"),
            Reason::RequestBodyTooLarge => hint.push_str(
                "send a smaller request, or raise the limit (limits.maxRequestBodyBytes in the config, \
                 --max-request-body-bytes, or the MCPGuardPolicy's limits.maxRequestBodyBytes)",
            ),
            Reason::UpstreamUnavailable => {
                hint.push_str("the MCP server behind the guard is not reachable; check that it is running")
            }
            Reason::MalformedRequest => hint.push_str(
                "send a valid HTTP/1.1 request: a request line, header fields of the form name: value, and at most \
                 one of Content-Length and Transfer-Encoding: chunked",
            ),
            Reason::RequestHeadersTooLarge => hint.push_str(
                "send fewer or smaller header fields, or raise the guard's --max-header-bytes / --max-headers",
            ),
            Reason::RateLimited | Reason::TooManyConcurrentRequests | Reason::TooManyStreams => {
                let setting = match denial.reason {
                    Reason::RateLimited => "perClient, perMethod or perTool",
                    Reason::TooManyConcurrentRequests => "maxConcurrentRequestsPerClient",
                    _ => "maxStreamsPerClient",
                };
                let place = match source {
                    Some(src) => format!("spec.rateLimits of {src} or of its MCPGuardPolicy"),
                    None => "the guard's rate-limit flags or limits in the --config file".to_owned(),
                };
                let _ = write!(
                    hint,
                    "retry after the time in Retry-After (or once a request or stream of yours ends); to raise the \
                     limit change {setting} in {place}"
                );
            }
            Reason::McpHeaderMismatch => hint.push_str(
                "send Mcp-Method equal to the JSON-RPC method and Mcp-Name equal to params.name (MCP 2026-07-28), \
                 or leave the headers out",
            ),
            Reason::UncountableBody => hint.push_str(
                "send one JSON-RPC message as UTF-8 JSON, or a batch that ends within the first 8 KiB (the rate \
                 limits charge every call of a batch), with each key once",
            ),
            Reason::Unauthenticated
            | Reason::InvalidToken
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::TokenAudienceMismatch => hint.push_str(
                "get an access token for this server from one of the authorization servers its metadata lists \
                 (the URL in WWW-Authenticate resource_metadata), with `resource` set to the metadata's resource, \
                 and send it as Authorization: Bearer <token>",
            ),
            Reason::InvalidAuthRequest => {
                hint.push_str("send the token in exactly one Authorization: Bearer header, never in the URL")
            }
            Reason::InsufficientScope => hint.push_str(
                "get a token with every scope in the WWW-Authenticate scope parameter (step-up authorization)",
            ),
            Reason::IdentityNotAllowed => {
                let place = match &source {
                    Some(src) => format!("spec.auth.serviceAccounts of {src}"),
                    None => "auth.serviceAccounts in the --config file".to_owned(),
                };
                let _ = write!(hint, "to let this service account call, add it to {place}");
            }
            Reason::NoResourceForHost => {
                let place = match &source {
                    Some(src) => format!("route the host to {src} through an Ingress or HTTPRoute, or add it to its spec.hosts"),
                    None => "start mcp-guard with --auth-resource https://HOST/PATH (or add it to auth.resources in the --config file)".to_owned(),
                };
                let _ = write!(hint, "this host has no resource URI for tokens to be issued for: {place}");
            }
            Reason::AuthKeysUnavailable => hint.push_str(
                "the guard has not fetched the token issuer's keys yet: check that the issuer is reachable from \
                 the guard (its /readyz and logs say why), then retry",
            ),
            Reason::ToolNotAllowed | Reason::MethodNotAllowed => {
                let place = match &source {
                    Some(src) => format!("spec.access of {src} (or its MCPGuardPolicy)"),
                    None => "access.rules in the --config file".to_owned(),
                };
                let _ = write!(
                    hint,
                    "to let this caller make this call, add a rule to {place} whose `from` matches the caller \
                     and whose `to` names the method (and the tool, prompt or resource)"
                );
            }
            Reason::ListNotFiltered => hint.push_str(
                "with access rules the guard filters every list answer to what the caller may call, and passes \
                 none it cannot read: have the server answer lists as JSON (no content-encoding) in pages the \
                 guard's bound holds (nextCursor)",
            ),
        }
        hint
    }
}

/// The received host lowercased without its port, as the entry to suggest (port-agnostic).
fn suggested_host(received: &str) -> String {
    match Authority::parse(received) {
        Ok(a) => a.host.to_string().to_ascii_lowercase(),
        Err(_) => received.to_owned(),
    }
}
