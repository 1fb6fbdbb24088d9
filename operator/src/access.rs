//! An MCPServer's access rules and audit log as the guard enforces them: the guard config's `access` and
//! `audit` sections from the server's `spec.access`/`spec.audit` and its policy's, and the webhook's checks of
//! both by the guard's own compiler. Pure: the derivation calls it, the webhook validates with it.
//!
//! How the policy's settings combine with the server's (docs/access.md):
//! - access: the server's rules, then the policy's, for servers with authentication on. A rule only ever
//!   allows, so the policy's rules are what the platform grants everywhere (an SRE group, a monitoring
//!   account), and a server can add to them but not take them away. A policy with rules makes every
//!   authenticated server using it deny-by-default. Servers without authentication get none of the policy's
//!   rules (they cannot be enforced without knowing the caller; a policy's `auth.enabled: true` turns
//!   authentication on everywhere).
//! - audit: field by field, the server's winning, except `redact`, whose fields are the policy's plus the
//!   server's (a platform's redaction is a floor).

use mcp_guard_config::access::{RuleConfig, SourceConfig, TargetConfig};
use mcp_guard_config::{AccessConfig, AccessConfigError, AuditConfig};

use crate::crd::{
    AccessRuleSpec, AccessRuleStatus, AccessSourceSpec, AccessSpec, AccessStatus, AccessTargetSpec,
    AuditSpec, MCPServerSpec,
};
use crate::field_error::FieldError;

#[cfg(test)]
mod tests;

/// The access rules a server's guard enforces, with where each came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DerivedAccess {
    /// The guard config's `access` section: every rule named (unnamed ones by their place).
    pub config: AccessConfig,
    /// The rules as status lists them, in the same order.
    pub rules: Vec<AccessRuleStatus>,
}

/// The effective rules: the server's (always, so that rules without authentication reach the guard, which
/// refuses such a config rather than run open), then the policy's when authentication is on. `None`: no rules.
pub fn derive(
    server: Option<&AccessSpec>,
    policy: Option<(&str, &AccessSpec)>,
    authenticated: bool,
) -> Option<DerivedAccess> {
    let mut derived = DerivedAccess::default();
    for (i, rule) in server.iter().flat_map(|a| a.rules.iter()).enumerate() {
        let name = rule.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
        derived.push(name, "MCPServer".into(), rule);
    }
    if let Some((policy_name, policy)) = policy.filter(|_| authenticated) {
        for (i, rule) in policy.rules.iter().enumerate() {
            let name = rule
                .name
                .clone()
                .unwrap_or_else(|| format!("policy/{policy_name}.rules[{i}]"));
            derived.push(name, format!("MCPGuardPolicy/{policy_name}"), rule);
        }
    }
    (!derived.rules.is_empty()).then_some(derived)
}

impl DerivedAccess {
    fn push(&mut self, name: String, source: String, rule: &AccessRuleSpec) {
        let config = rule_config(rule, Some(name.clone()));
        self.rules.push(AccessRuleStatus {
            name,
            source,
            from: config.from.iter().map(describe_source).collect(),
            to: config.to.iter().map(describe_target).collect(),
        });
        self.config.rules.push(config);
    }

    /// What status says.
    pub fn status(&self) -> AccessStatus {
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        AccessStatus {
            summary: summary(&names),
            rules: self.rules.clone(),
        }
    }
}

/// The rules' names for `kubectl get`: at most three, then how many more.
fn summary(names: &[&str]) -> String {
    match names.len() {
        0..=3 => names.join(","),
        n => format!("{} (+{} more)", names[..3].join(","), n - 3),
    }
}

/// A spec's rule as the guard config says it.
fn rule_config(rule: &AccessRuleSpec, name: Option<String>) -> RuleConfig {
    RuleConfig {
        name,
        from: rule.from.iter().map(source_config).collect(),
        to: rule.to.iter().map(target_config).collect(),
    }
}

fn source_config(s: &AccessSourceSpec) -> SourceConfig {
    SourceConfig {
        service_account: s.service_account.clone(),
        subject: s.subject.clone(),
        client_id: s.client_id.clone(),
        group: s.group.clone(),
        scope: s.scope.clone(),
        authenticated: s.authenticated.unwrap_or(false),
    }
}

fn target_config(t: &AccessTargetSpec) -> TargetConfig {
    TargetConfig {
        method: t.method.clone(),
        names: t.names.clone(),
    }
}

/// A source compactly: `serviceAccount team-a/agent`, `group sre + scope tools:read`, `authenticated`.
pub fn describe_source(s: &SourceConfig) -> String {
    let mut parts = Vec::new();
    for (key, value) in [
        ("serviceAccount", &s.service_account),
        ("subject", &s.subject),
        ("clientId", &s.client_id),
        ("group", &s.group),
        ("scope", &s.scope),
    ] {
        if let Some(v) = value {
            parts.push(format!("{key} {v}"));
        }
    }
    if s.authenticated {
        parts.push("authenticated".into());
    }
    parts.join(" + ")
}

/// A target compactly: `tools/call read_*,search`, `resources/read` (any name).
pub fn describe_target(t: &TargetConfig) -> String {
    match t.names.is_empty() {
        true => t.method.clone(),
        false => format!("{} {}", t.method, t.names.join(",")),
    }
}

/// The guard config's `audit` section: `None` when neither sets one (the guard's default: on with
/// authentication); else field by field, the server's winning, `redact` the policy's plus the server's.
pub fn audit(server: Option<&AuditSpec>, policy: Option<&AuditSpec>) -> Option<AuditConfig> {
    if server.is_none() && policy.is_none() {
        return None;
    }
    let empty = AuditSpec::default();
    let (s, p) = (server.unwrap_or(&empty), policy.unwrap_or(&empty));
    let mut redact = p.redact.clone();
    for field in &s.redact {
        if !redact.contains(field) {
            redact.push(field.clone());
        }
    }
    Some(AuditConfig {
        enabled: s.enabled.or(p.enabled).unwrap_or(true),
        arguments: s.arguments.or(p.arguments).unwrap_or(false),
        max_argument_bytes: s
            .max_argument_bytes
            .or(p.max_argument_bytes)
            .and_then(|n| u32::try_from(n).ok()),
        redact,
    })
}

/// The problems of an `access` section (MCPServer or MCPGuardPolicy), each naming its field under `field`
/// (`spec.access`). The guard's own compiler decides, rule by rule so that every bad rule is named.
pub fn validate(field: &str, access: &AccessSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if access.rules.is_empty() {
        errors.push(FieldError {
            field: format!("{field}.rules"),
            message: "is empty: leave access out for no rules, or list at least one rule".into(),
        });
    }
    for (r, rule) in access.rules.iter().enumerate() {
        let one = AccessConfig {
            rules: vec![rule_config(rule, rule.name.clone())],
        };
        if let Err(e) = one.compile() {
            errors.push(field_error(&format!("{field}.rules[{r}]"), rule, e));
        }
        if let Some(name) = &rule.name
            && access.rules[..r].iter().any(|o| o.name.as_ref() == Some(name))
        {
            errors.push(FieldError {
                field: format!("{field}.rules[{r}].name"),
                message: format!(
                    "{name:?} is already the name of an earlier rule: the audit log and denials name the rule, so \
                     names must be unique"
                ),
            });
        }
    }
    errors
}

/// A compile error of one rule (compiled alone, so its index is 0) as a problem with a field of the spec.
fn field_error(at: &str, rule: &AccessRuleSpec, e: AccessConfigError) -> FieldError {
    let (field, message) = match e {
        AccessConfigError::NoSources { .. } => (
            format!("{at}.from"),
            "is empty: name who may call (serviceAccount, subject, clientId, group, scope, or authenticated: true)"
                .to_string(),
        ),
        AccessConfigError::EmptySource { source_index, .. } => (
            format!("{at}.from[{source_index}]"),
            "sets nothing, so it would match nobody: set serviceAccount, subject, clientId, group, scope, or \
             authenticated: true"
                .to_string(),
        ),
        AccessConfigError::ServiceAccount {
            source_index, entry, ..
        } => (
            format!("{at}.from[{source_index}].serviceAccount"),
            format!("{entry:?}: write namespace/name or namespace/* (a service account, or every one of a namespace)"),
        ),
        AccessConfigError::NoTargets { .. } => (
            format!("{at}.to"),
            "is empty: name the calls it allows (method, and names for tools/call, prompts/get, resources/read)"
                .to_string(),
        ),
        AccessConfigError::EmptyMethod { target, .. } => (
            format!("{at}.to[{target}].method"),
            "is empty: write a JSON-RPC method such as tools/call".to_string(),
        ),
        AccessConfigError::NamesNotApplicable { target, method, .. } => (
            format!("{at}.to[{target}].names"),
            format!(
                "{method} names nothing, so names do not apply (only tools/call, prompts/get, resources/read and \
                 resources/subscribe name something); remove names, or use one of those methods"
            ),
        ),
        AccessConfigError::EmptyName { target, index, .. } => (
            format!("{at}.to[{target}].names[{index}]"),
            "is empty (use \"*\" for any name)".to_string(),
        ),
        other @ (AccessConfigError::NoRules | AccessConfigError::NeedsAuth) => {
            (at.to_string(), format!("{other} (rule {:?})", rule.name))
        }
    };
    FieldError { field, message }
}

/// An MCPServer's `spec.access` without `spec.auth` (or with `enabled: false`): the guard cannot tell callers
/// apart, and refuses a config with rules but no authentication.
pub fn validate_needs_auth(spec: &MCPServerSpec) -> Option<FieldError> {
    spec.access.as_ref()?;
    let on = spec.auth.as_ref().is_some_and(|a| a.enabled != Some(false));
    (!on).then(|| FieldError {
        field: "spec.access".into(),
        message: "access rules need authentication, so that the guard knows who calls: turn on spec.auth (e.g. \
                  auth: {kubernetes: true} for the cluster's service accounts, or auth: {} to take the issuers \
                  from the MCPGuardPolicy)"
            .into(),
    })
}

/// The problems of an `audit` section, by the guard's own check.
pub fn validate_audit(field: &str, audit: &AuditSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if audit.max_argument_bytes.is_some_and(|n| n < 1) {
        errors.push(FieldError {
            field: format!("{field}.maxArgumentBytes"),
            message: "must be at least 1 (leave it out for 1024)".into(),
        });
    }
    for (i, r) in audit.redact.iter().enumerate() {
        if r.trim().is_empty() {
            errors.push(FieldError {
                field: format!("{field}.redact[{i}]"),
                message: "is empty: it would redact every argument field; name the fields to redact".into(),
            });
        }
    }
    // The guard's own check decides too (a rule it adds later is then not missed here).
    if errors.is_empty()
        && let Some(config) = self::audit(Some(audit), None)
    {
        let guard = mcp_guard_config::GuardConfig {
            allowed_hosts: vec!["mcp.invalid".into()],
            audit: Some(config),
            ..Default::default()
        };
        if let Err(e) = guard.compile() {
            errors.push(FieldError {
                field: field.to_string(),
                message: e.to_string(),
            });
        }
    }
    errors
}
