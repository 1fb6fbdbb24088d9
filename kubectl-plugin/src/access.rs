//! `explain --as-service-account NS/NAME --tool NAME` (or `--as-subject`, `--as-client-id`, `--as-group`,
//! `--as-scope`, or the identity of an accepted `--token-file`): may this caller make this call, by the guard's
//! own decision (mcp-guard-config's `AccessPolicy::decide`) on the `access` section the operator wrote; and if
//! not, what to add. Pure: the config and the caller in, the text out.

use std::fmt::Write as _;

use mcp_guard_config::access::{Allowed, RuleConfig, SourceConfig, TargetConfig, named_by};
use mcp_guard_config::auth::Identity;
use mcp_guard_config::{AccessConfig, GuardConfig, Mode};
use mcp_guard_operator::access::{describe_source, describe_target};
use mcp_guard_operator::crd::AccessRuleStatus;

/// The caller given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub service_account: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

impl Caller {
    /// Whether any of it was given.
    pub fn is_given(&self) -> bool {
        self.service_account.is_some()
            || self.subject.is_some()
            || self.client_id.is_some()
            || !self.groups.is_empty()
            || !self.scopes.is_empty()
    }

    /// The identity the guard would have verified: a service account's token carries its `sub`
    /// (`system:serviceaccount:NS:NAME`), as the cluster's issuer writes it.
    pub fn identity(&self) -> anyhow::Result<Identity> {
        if let Some(sa) = &self.service_account {
            let ok = sa
                .split_once('/')
                .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'));
            anyhow::ensure!(ok, "--as-service-account {sa:?}: write NAMESPACE/NAME");
        }
        let subject = self.subject.clone().or_else(|| {
            self.service_account
                .as_ref()
                .map(|sa| format!("system:serviceaccount:{}", sa.replacen('/', ":", 1)))
        });
        Ok(Identity {
            issuer: "(given on the command line)".into(),
            subject,
            client_id: self.client_id.clone(),
            scopes: self.scopes.clone(),
            groups: self.groups.clone(),
            service_account: self.service_account.clone(),
            expires_at: u64::MAX,
        })
    }
}

/// The call to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// The tool (prompt, resource URI) for the methods that name one.
    pub name: Option<String>,
}

impl Call {
    /// `--method` (default `tools/call`) and `--tool`; a method that names something needs the name.
    pub fn new(method: Option<&str>, name: Option<&str>) -> anyhow::Result<Call> {
        let method = method.unwrap_or("tools/call").to_string();
        match (named_by(&method), name) {
            (Some(field), None) => {
                anyhow::bail!("{method} names its target (params.{field}): give it with --tool NAME")
            }
            (None, Some(n)) => anyhow::bail!("{method} names nothing, so --tool {n:?} does not apply"),
            _ => {}
        }
        Ok(Call {
            method,
            name: name.map(str::to_string),
        })
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{} {n}", self.method),
            None => self.method.clone(),
        }
    }
}

/// The guard's decision on `call` by `identity` under `config`, written for people; `server` is
/// `NAMESPACE/NAME` and `rules` the status's rows (for where each rule comes from). `true`: allowed (or
/// forwarded in audit mode).
pub fn explain(
    config: &GuardConfig,
    server: &str,
    rules: &[AccessRuleStatus],
    identity: &Identity,
    call: &Call,
) -> (bool, String) {
    let mut out = String::from("\nAccess:\n");
    let who = mcp_guard_config::access::who(Some(identity));
    let _ = writeln!(out, "  {who}; call: {}", call.describe());
    let Some(access) = &config.access else {
        let _ = writeln!(
            out,
            "  Verdict: allowed: the MCPServer has no access rules, so every caller the authentication lets in \
             may call anything (set spec.access to say who may call what)"
        );
        return (true, out);
    };
    if config.auth.is_none() {
        let _ = writeln!(
            out,
            "  Verdict: cannot tell: the config has access rules but no authentication, which the guard refuses \
             (it keeps its last config); turn on spec.auth"
        );
        return (false, out);
    }
    let policy = match access.compile() {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                out,
                "  Verdict: cannot tell: the access section is invalid ({e}); the guard keeps its last config"
            );
            return (false, out);
        }
    };
    let verdict = policy.decide(Some(identity), Some(&call.method), call.name.as_deref());
    let allowed = match &verdict {
        Ok(Allowed::Plumbing) => {
            let _ = writeln!(
                out,
                "  Verdict: allowed: {} is protocol plumbing, open to every caller the authentication lets in",
                call.method
            );
            true
        }
        Ok(Allowed::Rule(rule)) => {
            let _ = writeln!(out, "  Verdict: allowed by rule {rule:?}");
            true
        }
        Err(d) => {
            let audit = config.mode == Mode::Audit;
            let _ = writeln!(
                out,
                "  Verdict: {} {} {}: {:?}",
                if audit {
                    "would refuse (audit mode: forwarded, logged and counted)"
                } else {
                    "refused with"
                },
                d.status(),
                d.reason.as_str(),
                d.received
            );
            audit
        }
    };
    let _ = writeln!(
        out,
        "  Rules (in order; a call is allowed when one rule's from and to both match):"
    );
    for (i, rule) in access.rules.iter().enumerate() {
        let name = rule.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
        let source = rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| format!(" ({})", r.source))
            .unwrap_or_default();
        let from: Vec<String> = rule.from.iter().map(describe_source).collect();
        let to: Vec<String> = rule.to.iter().map(describe_target).collect();
        let _ = writeln!(
            out,
            "    {name}{source}: from {} to {}",
            from.join("; "),
            to.join("; ")
        );
    }
    if verdict.is_err() {
        remedies(&mut out, access, server, identity, call);
    }
    (allowed, out)
}

/// What would allow the call: its name added to a rule that already lets this caller make this method's calls,
/// or a new rule.
fn remedies(out: &mut String, access: &AccessConfig, server: &str, identity: &Identity, call: &Call) {
    let _ = writeln!(out, "  What would allow it:");
    // A rule whose callers include this one and whose calls include the method.
    if let Some(name) = &call.name
        && let Some((i, rule)) = access
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| widens(rule, identity, &call.method, name))
    {
        let rule_name = rule.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
        let _ = writeln!(
            out,
            "    add {name:?} to the names of rule {rule_name:?} (it already lets this caller make some {} \
             calls), or",
            call.method
        );
    }
    let source = suggested_source(identity);
    let new = RuleConfig {
        name: None,
        from: vec![source],
        to: vec![TargetConfig {
            method: call.method.clone(),
            names: call.name.iter().cloned().collect(),
        }],
    };
    let _ = writeln!(out, "    add a rule to spec.access.rules of MCPServer {server}:");
    let from = serde_json::to_string(&new.from[0]).unwrap_or_default();
    let to = serde_json::to_string(&new.to[0]).unwrap_or_default();
    let _ = writeln!(out, "      - from: [{from}]");
    let _ = writeln!(out, "        to: [{to}]");
}

/// Whether `rule` lets this caller make some `method` calls, so adding `name` to it would allow the call: by the
/// guard's own matching, on the rule alone with its targets widened to the method for any name.
fn widens(rule: &RuleConfig, identity: &Identity, method: &str, name: &str) -> bool {
    let mut widened = rule.clone();
    widened.to = vec![TargetConfig {
        method: method.to_string(),
        names: Vec::new(),
    }];
    let one = AccessConfig { rules: vec![widened] };
    let caller_matches = one
        .compile()
        .is_ok_and(|p| p.decide(Some(identity), Some(method), Some(name)).is_ok());
    caller_matches && rule.to.iter().any(|t| t.method == method)
}

/// The most specific source that names this caller: its service account, else subject, else client, else a
/// group, else a scope.
fn suggested_source(id: &Identity) -> SourceConfig {
    let mut s = SourceConfig::default();
    if let Some(sa) = &id.service_account {
        s.service_account = Some(sa.clone());
    } else if let Some(sub) = &id.subject {
        s.subject = Some(sub.clone());
    } else if let Some(c) = &id.client_id {
        s.client_id = Some(c.clone());
    } else if let Some(g) = id.groups.first() {
        s.group = Some(g.clone());
    } else if let Some(sc) = id.scopes.first() {
        s.scope = Some(sc.clone());
    } else {
        s.authenticated = true;
    }
    s
}

#[cfg(test)]
mod tests;
