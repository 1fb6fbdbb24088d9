//! Pure validation of MCPServer and MCPGuardPolicy specs, beyond what the CRD schema can say. The validating webhook
//! (`/validate-mcpserver`) turns the returned errors into a denial; the controller reports them in status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::crd::{MCPGuardPolicySpec, MCPServerSpec, RateLimitSpec, RateSpec};
use crate::field_error::{FieldError, check_host_pattern, check_origin_pattern};

#[cfg(test)]
mod tests;

/// `spec.selector` and `spec.port`: the pods and port of the user's own server.
fn validate_server_form(spec: &MCPServerSpec, errors: &mut Vec<FieldError>) {
    validate_selector(&spec.selector, errors);
    if !(1..=65535).contains(&spec.port) {
        let message = if spec.port == 0 {
            "must be set: the port the MCP server listens on in its container, 1-65535 (or set spec.serverRef \
             instead of spec.selector and spec.port, to guard a server of the SIG's lifecycle operator)"
                .to_string()
        } else {
            format!("must be between 1 and 65535, got {}", spec.port)
        };
        errors.push(FieldError::new("spec.port", message));
    }
}

/// `spec.serverRef`: a server of the SIG's lifecycle operator, which stands for the selector and the port.
fn validate_server_ref(spec: &MCPServerSpec, r: &crate::crd::ServerRef, errors: &mut Vec<FieldError>) {
    let exclusive = "spec.serverRef takes it from the referenced server: remove it, or remove spec.serverRef";
    if spec.selector.match_labels.is_some() || spec.selector.match_expressions.is_some() {
        errors.push(FieldError::new("spec.selector", exclusive));
    }
    if spec.port != 0 {
        errors.push(FieldError::new("spec.port", exclusive));
    }
    if r.api_group != crate::sources::sig_servers::GROUP {
        errors.push(FieldError::new(
            "spec.serverRef.apiGroup",
            format!(
                "must be mcp.x-k8s.io (the SIG's mcp-lifecycle-operator), the only kind of server that can be \
                 referenced, got {:?}; for other servers set spec.selector and spec.port",
                r.api_group
            ),
        ));
    }
    if r.kind != "MCPServer" {
        errors.push(FieldError::new(
            "spec.serverRef.kind",
            format!("must be MCPServer, got {:?}", r.kind),
        ));
    }
    // The name is also the value of the label on their pods.
    if let Err(e) = check_dns_subdomain(&r.name).and_then(|()| check_label_value(&r.name)) {
        errors.push(FieldError::new("spec.serverRef.name", e));
    }
    if spec.traffic.as_ref().and_then(|t| t.layout) == Some(crate::crd::TrafficLayout::SharedPort) {
        errors.push(FieldError::new(
            "spec.traffic.layout",
            "a server of the SIG's lifecycle operator listens on all interfaces behind the port name mcp, which \
             only the GuardPort layout fits: set GuardPort or remove it",
        ));
    }
}

/// Every problem in an MCPServer spec (empty when valid).
pub fn validate_spec(spec: &MCPServerSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match &spec.server_ref {
        Some(r) => validate_server_ref(spec, r, &mut errors),
        None => validate_server_form(spec, &mut errors),
    }
    if let Some(t) = &spec.traffic {
        if let Some(g) = t.guard_port {
            if t.layout != Some(crate::crd::TrafficLayout::GuardPort) {
                errors.push(FieldError::new(
                    "spec.traffic.guardPort",
                    "applies to the GuardPort layout only: set spec.traffic.layout: GuardPort, or remove it",
                ));
            }
            if !(1024..=65535).contains(&g) || g == i32::from(crate::pod_contract::ADMIN_PORT) {
                errors.push(FieldError::new(
                    "spec.traffic.guardPort",
                    format!("must be 1024-65535 and not 15081 (the guard's admin port), got {g}"),
                ));
            }
        }
        if t.layout == Some(crate::crd::TrafficLayout::GuardPort)
            && spec.server_ref.is_none()
            && crate::settings::guard_port(spec) == spec.port
        {
            errors.push(FieldError::new(
                "spec.traffic.guardPort",
                format!(
                    "is spec.port ({}); the guard needs a port of its own in the GuardPort layout",
                    spec.port
                ),
            ));
        }
    }
    check_patterns(
        "spec.hosts",
        &spec.hosts,
        ("host", check_host_pattern),
        &mut errors,
    );
    check_patterns(
        "spec.origins",
        &spec.origins,
        ("origin", check_origin_pattern),
        &mut errors,
    );
    for (field, names) in [
        ("spec.services", &spec.services),
        ("spec.ingresses", &spec.ingresses),
        ("spec.httpRoutes", &spec.http_routes),
    ] {
        for (i, n) in names.iter().flatten().enumerate() {
            if let Err(e) = check_dns_subdomain(n) {
                errors.push(FieldError::new(
                    format!("{field}[{i}]"),
                    format!("invalid name {n:?}: {e}"),
                ));
            }
        }
    }
    validate_rate_limits("spec.rateLimits", spec.rate_limits.as_ref(), &mut errors);
    check_trusted_proxies("spec.trustedProxies", &spec.trusted_proxies, &mut errors);
    if let Some(auth) = &spec.auth {
        errors.extend(crate::auth::validate("spec.auth", auth));
    }
    if let Some(access) = &spec.access {
        errors.extend(crate::access::validate("spec.access", access));
    }
    errors.extend(crate::access::validate_needs_auth(spec));
    if let Some(audit) = &spec.audit {
        errors.extend(crate::access::validate_audit("spec.audit", audit));
    }
    if let Some(p) = &spec.policy_ref
        && let Err(e) = check_dns_subdomain(p)
    {
        errors.push(FieldError::new(
            "spec.policyRef",
            format!("invalid policy name {p:?}: {e}"),
        ));
    }
    errors
}

/// A pattern checker: [`check_host_pattern`] or [`check_origin_pattern`].
type PatternCheck = fn(&str) -> Result<(), String>;

fn check_patterns(
    field: &str,
    values: &[String],
    (what, check): (&str, PatternCheck),
    errors: &mut Vec<FieldError>,
) {
    for (i, v) in values.iter().enumerate() {
        if let Err(e) = check(v) {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("invalid {what} pattern {v:?}: {e}"),
            ));
        }
    }
}

/// Every problem in an MCPGuardPolicy spec (empty when valid): entries the guard would not load (the operator
/// skips them for every MCPServer using the policy).
pub fn validate_policy(spec: &MCPGuardPolicySpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_patterns(
        "spec.allowedHosts",
        &spec.allowed_hosts,
        ("host", check_host_pattern),
        &mut errors,
    );
    check_patterns(
        "spec.allowedOrigins",
        &spec.allowed_origins,
        ("origin", check_origin_pattern),
        &mut errors,
    );
    validate_rate_limits("spec.rateLimits", spec.rate_limits.as_ref(), &mut errors);
    check_trusted_proxies("spec.trustedProxies", &spec.trusted_proxies, &mut errors);
    if let Some(auth) = &spec.auth {
        errors.extend(crate::auth::validate("spec.auth", auth));
    }
    if let Some(access) = &spec.access {
        errors.extend(crate::access::validate("spec.access", access));
    }
    if let Some(audit) = &spec.audit {
        errors.extend(crate::access::validate_audit("spec.audit", audit));
    }
    errors
}

/// Trusted proxy entries, with the guard's own CIDR parser (which also refuses host bits past the prefix).
fn check_trusted_proxies(field: &str, values: &[String], errors: &mut Vec<FieldError>) {
    for (i, v) in values.iter().enumerate() {
        if let Err(e) = mcp_guard_config::Cidr::parse(v) {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("invalid trusted proxy {v:?}: {e} (write 10.0.0.0/8, 192.0.2.7 or fd00::/8)"),
            ));
        }
    }
}

/// Rate limits: every rate and cap at least 1, names not empty (the CRD's CEL rules say the same).
fn validate_rate_limits(field: &str, limits: Option<&RateLimitSpec>, errors: &mut Vec<FieldError>) {
    let Some(limits) = limits else { return };
    let mut rate = |at: String, r: &RateSpec| {
        if r.requests_per_minute < 1 {
            errors.push(FieldError::new(
                format!("{at}.requestsPerMinute"),
                "must be at least 1",
            ));
        }
        if r.burst.is_some_and(|b| b < 1) {
            errors.push(FieldError::new(format!("{at}.burst"), "must be at least 1"));
        }
    };
    if let Some(r) = &limits.per_client {
        rate(format!("{field}.perClient"), r);
    }
    for (map, name) in [(&limits.per_method, "perMethod"), (&limits.per_tool, "perTool")] {
        for (k, r) in map {
            rate(format!("{field}.{name}[{k:?}]"), r);
        }
    }
    for (map, name) in [(&limits.per_method, "perMethod"), (&limits.per_tool, "perTool")] {
        if map.keys().any(|k| k.trim().is_empty()) {
            errors.push(FieldError::new(
                format!("{field}.{name}"),
                "a method or tool name must not be empty",
            ));
        }
    }
    for (v, name) in [
        (
            limits.max_concurrent_requests_per_client,
            "maxConcurrentRequestsPerClient",
        ),
        (limits.max_streams_per_client, "maxStreamsPerClient"),
        (limits.max_tracked_clients, "maxTrackedClients"),
    ] {
        if v.is_some_and(|n| n < 1) {
            errors.push(FieldError::new(
                format!("{field}.{name}"),
                "must be at least 1 (leave it out for no cap)",
            ));
        }
    }
}

fn validate_selector(sel: &LabelSelector, errors: &mut Vec<FieldError>) {
    let labels = sel.match_labels.as_ref().map_or(0, |m| m.len());
    let exprs = sel.match_expressions.as_ref().map_or(0, |m| m.len());
    if labels == 0 && exprs == 0 {
        errors.push(FieldError::new(
            "spec.selector",
            "must set matchLabels or matchExpressions; an empty selector would select every pod",
        ));
    }
    for (k, v) in sel.match_labels.iter().flatten() {
        if let Err(e) = check_label_key(k) {
            errors.push(FieldError::new(format!("spec.selector.matchLabels[{k}]"), e));
        }
        if let Err(e) = check_label_value(v) {
            errors.push(FieldError::new(format!("spec.selector.matchLabels[{k}]"), e));
        }
    }
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let field = format!("spec.selector.matchExpressions[{i}]");
        if let Err(e) = check_label_key(&expr.key) {
            errors.push(FieldError::new(format!("{field}.key"), e));
        }
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errors.push(FieldError::new(
                        format!("{field}.values"),
                        format!("operator {} needs at least one value", expr.operator),
                    ));
                }
                for v in values {
                    if let Err(e) = check_label_value(v) {
                        errors.push(FieldError::new(format!("{field}.values"), e));
                    }
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errors.push(FieldError::new(
                        format!("{field}.values"),
                        format!("operator {} takes no values", expr.operator),
                    ));
                }
            }
            other => errors.push(FieldError::new(
                format!("{field}.operator"),
                format!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
            )),
        }
    }
}

/// A DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, at most 253 characters.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    for label in s.split('.') {
        check_dns_label_chars(label)?;
    }
    Ok(())
}

fn check_dns_label_chars(label: &str) -> Result<(), String> {
    let ok_chars = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = label.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && label.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if label.len() > 63 || !ok_chars || !ok_ends {
        return Err(
            "must consist of lower-case alphanumeric characters, '-' or '.', and start and end with an \
                    alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|e| format!("label key {k:?}: prefix {e}"))?;
    }
    if name.is_empty() || name.len() > 63 || !is_label_value_chars(name) {
        return Err(format!(
            "label key {k:?}: name must be 1-63 alphanumeric characters, '-', '_' or '.', starting and ending \
             alphanumeric"
        ));
    }
    Ok(())
}

fn check_label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 || (!v.is_empty() && !is_label_value_chars(v)) {
        return Err(format!(
            "label value {v:?}: must be at most 63 alphanumeric characters, '-', '_' or '.', starting and ending \
             alphanumeric"
        ));
    }
    Ok(())
}

fn is_label_value_chars(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}
