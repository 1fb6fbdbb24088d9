//! Who may call what: access rules from verified identities to JSON-RPC methods and the tools, resources and
//! prompts they name. Pure: an identity and one call in, the rule that allows it or a [`Denial`] out.
//!
//! Once a config has rules, every call is denied unless a rule allows it, except the protocol's plumbing
//! ([`is_plumbing`]: `initialize`, `ping`, notifications, the list calls, ...), which stays open to every caller
//! the authentication let in. A rule allows a call when one of its sources (`from`) matches the caller and one
//! of its targets (`to`) matches the call. The shape follows the Kubernetes SIG's `XAccessPolicy` (sources by
//! service account, rules on `tools/call` by tool name), so that one maps onto it one to one.
//!
//! ```json
//! "access": {
//!   "rules": [
//!     { "name": "agents-read",
//!       "from": [{ "serviceAccount": "team-a/agent" }, { "group": "sre" }, { "scope": "tools:read" }],
//!       "to": [{ "method": "tools/call", "names": ["read_*", "search"] }, { "method": "resources/read" }] }
//!   ]
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::auth::Identity;
use crate::{Denial, Reason};

#[cfg(test)]
mod tests;

/// The `access` section of the guard config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessConfig {
    pub rules: Vec<RuleConfig>,
}

/// One rule: these callers may make these calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in denials and the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any of these callers.
    pub from: Vec<SourceConfig>,
    /// Any of these calls.
    pub to: Vec<TargetConfig>,
}

/// A caller. The fields set must all match; a source with none set matches nobody (use `authenticated`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    /// `namespace/name` or `namespace/*` (a Kubernetes service-account token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The token's `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The token's `client_id` (or `azp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// One of the token's `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// One of the token's scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Any caller the authentication verified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authenticated: bool,
}

/// A call: a JSON-RPC method and, for the methods that name something, the names (globs: `*` any run of
/// characters, `?` one); no names: any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetConfig {
    pub method: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// Why an `access` section is not valid; the message names the entry and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessConfigError {
    #[error("access.rules is empty: leave `access` out for no rules, or list at least one rule")]
    NoRules,
    #[error("access.rules[{rule}].from is empty: name who may call (serviceAccount, subject, group, ...)")]
    NoSources { rule: usize },
    #[error(
        "access.rules[{rule}].from[{source_index}] sets nothing: set serviceAccount, subject, clientId, group, \
         scope, or authenticated: true"
    )]
    EmptySource { rule: usize, source_index: usize },
    #[error(
        "access.rules[{rule}].from[{source_index}].serviceAccount {entry:?}: write namespace/name or namespace/*"
    )]
    ServiceAccount {
        rule: usize,
        source_index: usize,
        entry: String,
    },
    #[error("access.rules[{rule}].to is empty: name the calls it allows (method, names)")]
    NoTargets { rule: usize },
    #[error("access.rules[{rule}].to[{target}].method is empty")]
    EmptyMethod { rule: usize, target: usize },
    #[error(
        "access.rules[{rule}].to[{target}]: {method} names nothing, so `names` does not apply (only tools/call, \
         prompts/get, resources/read and resources/subscribe name something)"
    )]
    NamesNotApplicable {
        rule: usize,
        target: usize,
        method: String,
    },
    #[error("access.rules[{rule}].to[{target}].names[{index}] is empty (use \"*\" for any name)")]
    EmptyName {
        rule: usize,
        target: usize,
        index: usize,
    },
    #[error("access rules need authentication (an `auth` section): the guard must know who calls to decide")]
    NeedsAuth,
}

/// Calls every caller the authentication let in may make, whatever the rules: the protocol's plumbing.
/// `tools/list` and the other lists stay open; what they show a caller is filtered to what it may call.
pub fn is_plumbing(method: &str) -> bool {
    method.starts_with("notifications/")
        || matches!(
            method,
            "initialize"
                | "ping"
                | "server/discover"
                | "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/templates/list"
                | "logging/setLevel"
                | "completion/complete"
        )
}

/// The params field a method names its target by: `tools/call` and `prompts/get` a `name`, `resources/read` and
/// `resources/subscribe` a `uri`.
pub fn named_by(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

/// The access rules, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    name: String,
    from: Vec<SourceConfig>,
    to: Vec<TargetConfig>,
}

impl AccessConfig {
    pub fn compile(&self) -> Result<AccessPolicy, AccessConfigError> {
        if self.rules.is_empty() {
            return Err(AccessConfigError::NoRules);
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (r, rule) in self.rules.iter().enumerate() {
            if rule.from.is_empty() {
                return Err(AccessConfigError::NoSources { rule: r });
            }
            for (s, source) in rule.from.iter().enumerate() {
                let set = source.service_account.is_some()
                    || source.subject.is_some()
                    || source.client_id.is_some()
                    || source.group.is_some()
                    || source.scope.is_some()
                    || source.authenticated;
                if !set {
                    return Err(AccessConfigError::EmptySource {
                        rule: r,
                        source_index: s,
                    });
                }
                if let Some(sa) = &source.service_account
                    && !valid_service_account(sa)
                {
                    return Err(AccessConfigError::ServiceAccount {
                        rule: r,
                        source_index: s,
                        entry: sa.clone(),
                    });
                }
            }
            if rule.to.is_empty() {
                return Err(AccessConfigError::NoTargets { rule: r });
            }
            for (t, target) in rule.to.iter().enumerate() {
                if target.method.trim().is_empty() {
                    return Err(AccessConfigError::EmptyMethod { rule: r, target: t });
                }
                if !target.names.is_empty() && named_by(&target.method).is_none() {
                    return Err(AccessConfigError::NamesNotApplicable {
                        rule: r,
                        target: t,
                        method: target.method.clone(),
                    });
                }
                if let Some(index) = target.names.iter().position(|n| n.is_empty()) {
                    return Err(AccessConfigError::EmptyName {
                        rule: r,
                        target: t,
                        index,
                    });
                }
            }
            rules.push(Rule {
                name: rule.name.clone().unwrap_or_else(|| format!("rules[{r}]")),
                from: rule.from.clone(),
                to: rule.to.clone(),
            });
        }
        Ok(AccessPolicy { rules })
    }
}

fn valid_service_account(entry: &str) -> bool {
    let Some((ns, name)) = entry.split_once('/') else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    label(ns) && (name == "*" || label(name))
}

impl SourceConfig {
    /// Whether the caller is this source: every field set matches.
    fn matches(&self, id: &Identity) -> bool {
        let service_account = self.service_account.as_deref().is_none_or(|pattern| {
            let Some(sa) = id.service_account.as_deref() else {
                return false;
            };
            match pattern.strip_suffix("/*") {
                Some(ns) => sa.split_once('/').is_some_and(|(n, _)| n == ns),
                None => sa == pattern,
            }
        });
        let eq = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        service_account
            && eq(&self.subject, id.subject.as_deref())
            && eq(&self.client_id, id.client_id.as_deref())
            && self
                .group
                .as_deref()
                .is_none_or(|g| id.groups.iter().any(|h| h == g))
            && self
                .scope
                .as_deref()
                .is_none_or(|s| id.scopes.iter().any(|h| h == s))
    }
}

impl TargetConfig {
    fn matches(&self, method: &str, name: Option<&str>) -> bool {
        self.method == method
            && (self.names.is_empty() || name.is_some_and(|n| self.names.iter().any(|g| glob(g, n))))
    }
}

/// `*` matches any run of characters (`/` included), `?` any one; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Why a call was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed<'a> {
    /// The protocol's plumbing: open to every caller.
    Plumbing,
    /// The rule of this name.
    Rule(&'a str),
}

impl AccessPolicy {
    /// Decides one call: `method` and, for the methods that name something, the `name` read from the body
    /// (`None`: not readable, which is denied). `identity` is `None` for a caller the authentication did not
    /// verify (audit mode): no rule matches it.
    pub fn decide<'a>(
        &'a self,
        identity: Option<&Identity>,
        method: Option<&str>,
        name: Option<&str>,
    ) -> Result<Allowed<'a>, Denial> {
        let Some(method) = method else {
            return Err(Denial::new(
                Reason::MethodNotAllowed,
                "a call whose method the guard could not read",
            )
            .with_detail("with access rules, every call must name its method readably"));
        };
        if is_plumbing(method) {
            return Ok(Allowed::Plumbing);
        }
        let named = named_by(method);
        if let Some(field) = named
            && name.is_none()
        {
            return Err(Denial::new(
                Reason::ToolNotAllowed,
                format!("{method} without a readable params.{field}"),
            )
            .with_detail(format!(
                "{} (the guard reads the body's first 8 KiB)",
                who(identity)
            )));
        }
        let name = named.and(name);
        if let Some(id) = identity
            && let Some(rule) = self.rules.iter().find(|r| {
                r.from.iter().any(|s| s.matches(id)) && r.to.iter().any(|t| t.matches(method, name))
            })
        {
            return Ok(Allowed::Rule(&rule.name));
        }
        let (reason, received) = match name {
            Some(n) => (Reason::ToolNotAllowed, format!("{method} {n}")),
            None => (Reason::MethodNotAllowed, method.to_owned()),
        };
        Err(Denial::new(reason, received).with_detail(who(identity)))
    }

    /// Whether the caller may call `name` by `method` (what a list answer is filtered to: `tools/list` shows the
    /// tools `tools/call` may call, and so on).
    pub fn allows(&self, identity: Option<&Identity>, method: &str, name: &str) -> bool {
        self.decide(identity, Some(method), Some(name)).is_ok()
    }

    /// The rules' names, in order (for status and `explain`).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }
}

/// The caller as a denial describes it.
pub fn who(identity: Option<&Identity>) -> String {
    match identity {
        None => "caller not authenticated".into(),
        Some(id) => match (&id.service_account, &id.subject, &id.client_id) {
            (Some(sa), _, _) => format!("caller: service account {sa}"),
            (None, Some(sub), Some(client)) => format!("caller: subject {sub:?}, client {client:?}"),
            (None, Some(sub), None) => format!("caller: subject {sub:?}"),
            (None, None, Some(client)) => format!("caller: client {client:?}"),
            (None, None, None) => format!("caller: a token of {}", id.issuer),
        },
    }
}
