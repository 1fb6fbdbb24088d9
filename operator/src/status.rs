//! Builds an MCPServer's status from a derivation: pure, so the condition logic is tested without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::allowlist::Derivation;
use crate::crd::{AllowlistEntry, MCPServerStatus};
use crate::validate::FieldError;

/// Condition types written by the operator.
pub mod condition {
    /// The guard config was written and the allowlist is usable.
    pub const READY: &str = "Ready";
    /// No host is allowed: the guard would reject every request.
    pub const EMPTY_ALLOWLIST: &str = "EmptyAllowlist";
    /// An Ingress rule / route accepts any host; its hosts cannot be derived.
    pub const CATCH_ALL_INGRESS_RULE: &str = "CatchAllIngressRule";
    /// An Ingress or HTTPRoute backend names a server Service on a port that does not reach the server.
    pub const INGRESS_BACKEND_PORT_MISMATCH: &str = "IngressBackendPortMismatch";
    /// A Service reaches the pods on a port the guard does not cover.
    pub const GUARD_BYPASS: &str = "GuardBypass";
    /// Something could not be resolved or was skipped (missing explicit references, invalid entries).
    pub const DEGRADED: &str = "Degraded";
}

/// Longest condition message written (the API allows 32 KiB; keep `kubectl describe` readable).
const MAX_MESSAGE: usize = 4000;

/// The inputs of [`build_status`] besides the derivation.
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub previous: Option<&'a MCPServerStatus>,
    pub now: Time,
    pub config_map: &'a str,
    pub policy_name: &'a str,
    /// Whether `spec.policyRef` was set explicitly (a missing explicit policy is an error, a missing `default`
    /// policy just means built-in defaults).
    pub policy_explicit: bool,
    pub server_port: i32,
    pub spec_errors: &'a [FieldError],
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …");
    }
    s
}

fn condition(type_: &str, status: bool, reason: &str, message: String, input: &StatusInput<'_>) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = input
        .previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| input.now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: truncate(message),
        observed_generation: input.generation,
        last_transition_time,
    }
}

/// A condition that is `True` while there are `problems` (its message lists them) and `False` with the `fine`
/// reason and message otherwise.
fn problem_condition(
    type_: &str,
    problems: &[String],
    (fine_reason, fine_message): (&str, &str),
    problem_reason: &str,
    input: &StatusInput<'_>,
) -> Condition {
    if problems.is_empty() {
        condition(type_, false, fine_reason, fine_message.to_string(), input)
    } else {
        condition(type_, true, problem_reason, problems.join("; "), input)
    }
}

/// `a, b, c (+N more)` for the `Hosts` printer column.
pub fn hosts_summary(hosts: &[AllowlistEntry]) -> String {
    const SHOWN: usize = 3;
    if hosts.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<&str> = hosts.iter().take(SHOWN).map(|e| e.value.as_str()).collect();
    let mut s = shown.join(",");
    if hosts.len() > SHOWN {
        s.push_str(&format!(" (+{} more)", hosts.len() - SHOWN));
    }
    s
}

/// The message of `EmptyAllowlist=True`: what to add.
pub fn empty_allowlist_message(d: &Derivation, input: &StatusInput<'_>) -> String {
    let mut m = format!(
        "No host is allowed, so the guard rejects every request. No Ingress rule with a host, HTTPRoute \
         hostname or Service DNS name routes to port {} of the selected pods. Add the hostnames clients use to \
         spec.hosts, create an Ingress or HTTPRoute with a host that routes to a Service selecting the pods \
         (targetPort {}), or add allowedHosts to MCPGuardPolicy {}",
        input.server_port, input.server_port, input.policy_name
    );
    if d.services.is_empty() {
        m.push_str(&format!(
            "; no Service selects the pods with targetPort {} (check spec.selector and spec.port)",
            input.server_port
        ));
    } else {
        m.push_str(&format!(
            "; Service DNS names of {} are not allowed because the policy sets allowServiceDNSNames: false",
            d.services.join(", ")
        ));
    }
    if !d.catch_all.is_empty() {
        m.push_str(&format!("; rules without a host: {}", d.catch_all.join("; ")));
    }
    m
}

/// The complete status for a derivation.
pub fn build_status(d: &Derivation, input: &StatusInput<'_>) -> MCPServerStatus {
    let empty = d.hosts.is_empty();
    let mut conditions = Vec::new();

    conditions.push(if empty {
        condition(
            condition::EMPTY_ALLOWLIST,
            true,
            "NoHostsFound",
            empty_allowlist_message(d, input),
            input,
        )
    } else {
        condition(
            condition::EMPTY_ALLOWLIST,
            false,
            "HostsFound",
            format!("{} hosts and {} origins allowed", d.hosts.len(), d.origins.len()),
            input,
        )
    });
    conditions.push(problem_condition(
        condition::CATCH_ALL_INGRESS_RULE,
        &d.catch_all,
        (
            "AllRulesHaveHosts",
            "Every Ingress rule and route routing to the server names its hosts",
        ),
        "RuleWithoutHost",
        input,
    ));
    conditions.push(problem_condition(
        condition::INGRESS_BACKEND_PORT_MISMATCH,
        &d.port_mismatches,
        (
            "BackendPortsMatch",
            "Every Ingress/HTTPRoute backend on the server's Services reaches the server's port",
        ),
        "BackendPortMismatch",
        input,
    ));
    conditions.push(problem_condition(
        condition::GUARD_BYPASS,
        &d.bypasses,
        (
            "NoBypass",
            "Every port of the Services selecting the pods targets the server's port, which the guard listens on",
        ),
        "GuardBypassed",
        input,
    ));
    let mut problems: Vec<String> = d.problems.clone();
    if d.policy_missing && input.policy_explicit {
        problems.insert(
            0,
            format!(
                "MCPGuardPolicy {} (spec.policyRef) does not exist; using built-in defaults",
                input.policy_name
            ),
        );
    }
    conditions.push(problem_condition(
        condition::DEGRADED,
        &problems,
        ("AllResolved", "All references resolved; no entry skipped"),
        "Unresolved",
        input,
    ));

    let ready = if !input.spec_errors.is_empty() {
        let errors: Vec<String> = input.spec_errors.iter().map(|e| e.to_string()).collect();
        condition(
            condition::READY,
            false,
            "InvalidSpec",
            format!("Invalid spec (invalid entries skipped): {}", errors.join("; ")),
            input,
        )
    } else if d.policy_missing && input.policy_explicit {
        condition(
            condition::READY,
            false,
            "PolicyNotFound",
            format!(
                "MCPGuardPolicy {} (spec.policyRef) does not exist; create it or remove spec.policyRef",
                input.policy_name
            ),
            input,
        )
    } else if empty {
        condition(
            condition::READY,
            false,
            "EmptyAllowlist",
            empty_allowlist_message(d, input),
            input,
        )
    } else {
        condition(
            condition::READY,
            true,
            "AllowlistApplied",
            format!(
                "{} hosts and {} origins written to ConfigMap {}",
                d.hosts.len(),
                d.origins.len(),
                input.config_map
            ),
            input,
        )
    };
    conditions.insert(0, ready);

    MCPServerStatus {
        observed_generation: input.generation,
        mode: Some(d.mode),
        hosts: Some(hosts_summary(&d.hosts)),
        allowed_hosts: d.hosts.clone(),
        allowed_origins: d.origins.clone(),
        config_map: Some(input.config_map.to_string()),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::GuardMode;

    fn time(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("ts"))
    }

    fn input<'a>(
        previous: Option<&'a MCPServerStatus>,
        now: i64,
        errors: &'a [FieldError],
    ) -> StatusInput<'a> {
        StatusInput {
            generation: Some(3),
            previous,
            now: time(now),
            config_map: "weather-mcp-guard",
            policy_name: "default",
            policy_explicit: false,
            server_port: 8000,
            spec_errors: errors,
        }
    }

    fn cond<'a>(s: &'a MCPServerStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition present")
    }

    fn entry(v: &str) -> AllowlistEntry {
        AllowlistEntry {
            value: v.into(),
            sources: vec!["MCPServer spec.hosts".into()],
        }
    }

    #[test]
    fn empty_allowlist_is_not_ready_and_explains() {
        let d = Derivation {
            catch_all: vec!["Ingress a/b: rule 0 has no host".into()],
            ..Default::default()
        };
        let s = build_status(&d, &input(None, 100, &[]));
        let ready = cond(&s, condition::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "EmptyAllowlist")
        );
        let empty = cond(&s, condition::EMPTY_ALLOWLIST);
        assert_eq!(empty.status, "True");
        assert!(empty.message.contains("spec.hosts"), "{}", empty.message);
        assert!(empty.message.contains("rule 0 has no host"));
        assert_eq!(cond(&s, condition::CATCH_ALL_INGRESS_RULE).status, "True");
        assert_eq!(s.hosts.as_deref(), Some("<none>"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[0].type_, "Ready");
    }

    #[test]
    fn ready_with_hosts_and_transition_times_kept() {
        let d = Derivation {
            hosts: vec![entry("a.example.com"), entry("b"), entry("c"), entry("d")],
            mode: GuardMode::Audit,
            ..Default::default()
        };
        let first = build_status(&d, &input(None, 100, &[]));
        assert_eq!(cond(&first, condition::READY).status, "True");
        assert_eq!(first.hosts.as_deref(), Some("a.example.com,b,c (+1 more)"));
        assert_eq!(first.mode, Some(GuardMode::Audit));
        let second = build_status(&d, &input(Some(&first), 200, &[]));
        assert_eq!(cond(&second, condition::READY).last_transition_time, time(100));
        assert_eq!(second, first, "same inputs, same status: no write needed");
        let d2 = Derivation { hosts: vec![], ..d };
        let third = build_status(&d2, &input(Some(&second), 300, &[]));
        assert_eq!(cond(&third, condition::READY).last_transition_time, time(300));
        assert_eq!(
            cond(&third, condition::GUARD_BYPASS).last_transition_time,
            time(100)
        );
    }

    #[test]
    fn invalid_spec_and_missing_policy() {
        let d = Derivation {
            hosts: vec![entry("a")],
            policy_missing: true,
            ..Default::default()
        };
        let errors = [FieldError {
            field: "spec.hosts[0]".into(),
            message: "bad".into(),
        }];
        let s = build_status(&d, &input(None, 1, &errors));
        assert_eq!(cond(&s, condition::READY).reason, "InvalidSpec");
        let mut i = input(None, 1, &[]);
        i.policy_explicit = true;
        i.policy_name = "strict";
        let s = build_status(&d, &i);
        assert_eq!(cond(&s, condition::READY).reason, "PolicyNotFound");
        assert_eq!(cond(&s, condition::DEGRADED).status, "True");
        let s = build_status(&d, &input(None, 1, &[]));
        assert_eq!(
            cond(&s, condition::READY).status,
            "True",
            "missing default policy: built-in defaults"
        );
    }
}
