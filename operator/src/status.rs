//! Builds an MCPServer's status from a derivation: pure, so the condition logic is tested without a cluster.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    AllowlistEntry, AuthStatus, MCPGuardPolicyStatus, MCPServerStatus, UNGUARDED_PODS_LISTED,
    UnguardedPodStatus,
};
use crate::field_error::FieldError;
use crate::sources::{Derivation, FindingKind};

/// Condition types written by the operator.
pub mod condition {
    /// The guard config was written and the allowlist is usable.
    pub const READY: &str = "Ready";
    /// No host is allowed: the guard would reject every request.
    pub const EMPTY_ALLOWLIST: &str = "EmptyAllowlist";
    pub use crate::sources::findings::condition::*;
    /// The operator wrote the pods' NetworkPolicy (True), or did not (False: switched off, or the write failed).
    pub const NETWORK_POLICY: &str = "NetworkPolicy";
    /// The guard requires tokens (True), does not (False, `Disabled`), or cannot as asked (False: an issuer not
    /// discovered, an invalid section).
    pub const AUTHENTICATION: &str = "Authentication";
}

/// Reasons of the `Authentication` condition.
pub mod auth_reason {
    pub const ENABLED: &str = "Enabled";
    pub const DISABLED: &str = "Disabled";
    /// The cluster's service-account issuer (its discovery or keys) could not be fetched.
    pub const ISSUER_NOT_DISCOVERED: &str = "IssuerNotDiscovered";
    /// The effective `auth` section is one the guard does not load (no issuer, no resource URI, a bad entry).
    pub const INVALID: &str = "InvalidAuth";
}

/// What became of an MCPServer's NetworkPolicy in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkPolicyOutcome {
    /// Written (or already current): its name and what it admits.
    Written { name: String, admits: String },
    /// The policy's `networkPolicy.enabled` is false.
    Disabled { policy: String },
    /// The write failed (e.g. the operator may not write NetworkPolicies).
    Failed { name: String, error: String },
}

/// The operator cannot see the network plugin; every NetworkPolicy message says so.
pub const ENFORCEMENT_CAVEAT: &str = "it is enforced only if the cluster's network plugin enforces NetworkPolicies \
     (Calico, Cilium, kube-router, ...; flannel alone does not), which the operator cannot tell";

/// Condition types of an MCPGuardPolicy.
pub mod policy_condition {
    /// Every allowed host and origin is one the guard loads.
    pub const VALID: &str = "Valid";
    /// At least one MCPServer uses the policy.
    pub const IN_USE: &str = "InUse";
}

/// Reasons of the `EmptyAllowlist` condition.
pub mod reason {
    /// Empty for less than the grace period: Services, Ingresses or routes applied together with the MCPServer
    /// may still be on their way. No Warning yet.
    pub const NO_HOSTS_YET: &str = "NoHostsYet";
    /// Empty for longer than the grace period (or empty again after a warning): a Warning Event is published.
    pub const NO_HOSTS_FOUND: &str = "NoHostsFound";
    /// At least one host is allowed.
    pub const HOSTS_FOUND: &str = "HostsFound";
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
    /// How long an empty allowlist is `NoHostsYet` before it is `NoHostsFound` (and a Warning).
    pub empty_grace: Duration,
    pub network_policy: NetworkPolicyOutcome,
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
    let previous = input
        .previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    make_condition(
        previous,
        input.generation,
        &input.now,
        (type_, status, reason),
        message,
    )
}

/// A condition whose `lastTransitionTime` moves only when its status flips from the one in `previous`.
fn make_condition(
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
    (type_, status, reason): (&str, bool, &str),
    message: String,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: truncate(message),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The inputs of [`build_policy_status`].
pub struct PolicyStatusInput<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub previous: Option<&'a MCPGuardPolicyStatus>,
    pub now: Time,
    pub errors: &'a [FieldError],
    /// `namespace/name` of the MCPServers using the policy, sorted.
    pub users: &'a [String],
}

/// The status of an MCPGuardPolicy: `Valid` (naming each entry the guard would not load, and the fix) and
/// `InUse` (how many MCPServers use it, and which).
pub fn build_policy_status(input: &PolicyStatusInput<'_>) -> MCPGuardPolicyStatus {
    const SHOWN: usize = 10;
    let previous = input
        .previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let cond = |kind, message| make_condition(previous, input.generation, &input.now, kind, message);
    let valid = if input.errors.is_empty() {
        cond(
            (policy_condition::VALID, true, "AllEntriesValid"),
            "Every allowed host and origin is one the guard loads".into(),
        )
    } else {
        let errors: Vec<String> = input.errors.iter().map(ToString::to_string).collect();
        cond(
            (policy_condition::VALID, false, "InvalidEntries"),
            format!(
                "The operator skips these entries for every MCPServer using this policy: {}",
                errors.join("; ")
            ),
        )
    };
    let n = input.users.len();
    let in_use = if n == 0 {
        cond(
            (policy_condition::IN_USE, false, "Unused"),
            format!(
                "No MCPServer uses this policy: an MCPServer uses the policy named in its spec.policyRef, or the \
                 policy named \"default\" without one{}",
                if input.name == crate::crd::DEFAULT_POLICY_NAME {
                    ""
                } else {
                    "; set spec.policyRef on the MCPServers that should use it"
                }
            ),
        )
    } else {
        let mut shown = input
            .users
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if n > SHOWN {
            shown.push_str(&format!(" (+{} more)", n - SHOWN));
        }
        cond(
            (policy_condition::IN_USE, true, "UsedByMCPServers"),
            format!("Used by {n} MCPServer{}: {shown}", if n == 1 { "" } else { "s" }),
        )
    };
    MCPGuardPolicyStatus {
        observed_generation: input.generation,
        mcp_servers: Some(i32::try_from(n).unwrap_or(i32::MAX)),
        conditions: vec![valid, in_use],
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
    if d.has(FindingKind::CatchAll) {
        let rules = d.messages(FindingKind::CatchAll);
        m.push_str(&format!("; rules without a host: {}", rules.join("; ")));
    }
    m
}

/// Since when the allowlist has been empty without a break, according to the previous status.
fn empty_since(previous: Option<&MCPServerStatus>) -> Option<&Time> {
    previous?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::EMPTY_ALLOWLIST && c.status == "True")
        .map(|c| &c.last_transition_time)
}

fn elapsed(since: &Time, now: &Time) -> Duration {
    let secs = now.0.as_millisecond().saturating_sub(since.0.as_millisecond());
    Duration::from_millis(u64::try_from(secs).unwrap_or(0))
}

/// Whether an empty allowlist is still within its grace period: it became empty less than `empty_grace` ago and
/// has not been reported as `NoHostsFound` since (once warned, a server stays warned until it has hosts).
pub fn empty_is_pending(previous: Option<&MCPServerStatus>, now: &Time, grace: Duration) -> bool {
    let warned = previous.is_some_and(|p| {
        p.conditions.iter().any(|c| {
            c.type_ == condition::EMPTY_ALLOWLIST && c.status == "True" && c.reason == reason::NO_HOSTS_FOUND
        })
    });
    let empty_for = empty_since(previous).map_or(Duration::ZERO, |since| elapsed(since, now));
    !warned && empty_for < grace
}

/// When a status with a pending empty allowlist must be looked at again to turn it into a warning: the rest of
/// the grace period. `None` when nothing is pending.
pub fn recheck_after(status: &MCPServerStatus, now: &Time, grace: Duration) -> Option<Duration> {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::EMPTY_ALLOWLIST && c.reason == reason::NO_HOSTS_YET)?;
    Some(grace.saturating_sub(elapsed(&c.last_transition_time, now)))
}

/// The message of `EmptyAllowlist=True` within the grace period.
pub fn pending_message(d: &Derivation, input: &StatusInput<'_>) -> String {
    format!(
        "No host is allowed yet, so the guard rejects every request for now. Objects applied together with the \
         MCPServer (Services, Ingresses, HTTPRoutes) may still be arriving; if none routes to the server within {} s \
         of the allowlist becoming empty, this becomes a warning. {}",
        input.empty_grace.as_secs(),
        empty_allowlist_message(d, input)
    )
}

/// The complete status for a derivation.
pub fn build_status(d: &Derivation, input: &StatusInput<'_>) -> MCPServerStatus {
    let empty = d.hosts.is_empty();
    let pending = empty && empty_is_pending(input.previous, &input.now, input.empty_grace);
    let mut conditions = vec![
        ready_condition(d, input, pending),
        empty_allowlist_condition(d, input, pending),
        auth_condition(d, input),
    ];
    // One condition per kind of finding (Degraded last, after NetworkPolicy, as it has always been listed).
    for kind in FindingKind::ALL {
        if kind == FindingKind::Problem {
            conditions.push(network_policy_condition(input));
        }
        let mut messages = d.messages(kind);
        if kind == FindingKind::Problem && d.policy_missing && input.policy_explicit {
            messages.insert(
                0,
                format!(
                    "MCPGuardPolicy {} (spec.policyRef) does not exist; using built-in defaults",
                    input.policy_name
                ),
            );
        }
        conditions.push(finding_condition(kind, &messages, input));
    }
    MCPServerStatus {
        observed_generation: input.generation,
        mode: Some(d.mode),
        hosts: Some(hosts_summary(&d.hosts)),
        allowed_hosts: d.hosts.clone(),
        allowed_origins: d.origins.clone(),
        config_map: Some(input.config_map.to_string()),
        network_policy: match &input.network_policy {
            NetworkPolicyOutcome::Written { name, .. } => Some(name.clone()),
            _ => None,
        },
        auth: d.auth.as_ref().map(|a| AuthStatus {
            mode: a.mode.clone(),
            resource_uris: a.config.resources.clone(),
            issuers: a.config.issuers.iter().map(|i| i.issuer.clone()).collect(),
        }),
        access: d.access.as_ref().map(crate::access::DerivedAccess::status),
        unguarded_pods: unguarded_pods(d),
        conditions,
    }
}

/// The selected pods without the guard, each with its fix (the first [`UNGUARDED_PODS_LISTED`]).
fn unguarded_pods(d: &Derivation) -> Vec<UnguardedPodStatus> {
    d.unguarded_pods()
        .iter()
        .take(UNGUARDED_PODS_LISTED)
        .map(|p| UnguardedPodStatus {
            name: p.name.clone(),
            fix: p.command(),
        })
        .collect()
}

/// `Authentication`: whether the guard requires tokens, of whom, for which resource URIs; or why it cannot.
fn auth_condition(d: &Derivation, input: &StatusInput<'_>) -> Condition {
    let Some(auth) = &d.auth else {
        let message =
            "The guard checks no tokens: set spec.auth (or enabled: true in the MCPGuardPolicy's auth) to \
                       require them"
                .to_string();
        return condition(
            condition::AUTHENTICATION,
            false,
            auth_reason::DISABLED,
            message,
            input,
        );
    };
    if !auth.problems.is_empty() {
        let reason = match auth.issuer_not_discovered {
            true => auth_reason::ISSUER_NOT_DISCOVERED,
            false => auth_reason::INVALID,
        };
        return condition(
            condition::AUTHENTICATION,
            false,
            reason,
            auth.problems.join("; "),
            input,
        );
    }
    let issuers: Vec<String> = auth
        .config
        .issuers
        .iter()
        .map(|i| match i.kubernetes {
            true => format!("{} (the cluster's service accounts)", i.issuer),
            false => i.issuer.clone(),
        })
        .collect();
    let mut message = format!(
        "The guard requires a bearer token ({}) from {}, with aud one of {} (or an issuer's audiences)",
        auth.mode,
        issuers.join(", "),
        auth.config.resources.join(", ")
    );
    for note in &auth.notes {
        message.push_str(&format!("; {note}"));
    }
    condition(
        condition::AUTHENTICATION,
        true,
        auth_reason::ENABLED,
        message,
        input,
    )
}

/// `EmptyAllowlist`: pending within the grace period, then a warning.
fn empty_allowlist_condition(d: &Derivation, input: &StatusInput<'_>, pending: bool) -> Condition {
    let (status, reason, message) = if pending {
        (true, reason::NO_HOSTS_YET, pending_message(d, input))
    } else if d.hosts.is_empty() {
        (true, reason::NO_HOSTS_FOUND, empty_allowlist_message(d, input))
    } else {
        let message = format!("{} hosts and {} origins allowed", d.hosts.len(), d.origins.len());
        (false, reason::HOSTS_FOUND, message)
    };
    condition(condition::EMPTY_ALLOWLIST, status, reason, message, input)
}

/// The condition of one kind of finding: `True` with the findings' messages while there are any.
fn finding_condition(kind: FindingKind, messages: &[String], input: &StatusInput<'_>) -> Condition {
    problem_condition(kind.condition(), messages, kind.fine(), kind.reason(), input)
}

fn network_policy_condition(input: &StatusInput<'_>) -> Condition {
    let (status, reason, message) = match &input.network_policy {
        NetworkPolicyOutcome::Written { name, admits } => (
            true,
            "Written",
            format!("NetworkPolicy {name} {admits}; {ENFORCEMENT_CAVEAT}"),
        ),
        NetworkPolicyOutcome::Disabled { policy } => (
            false,
            "Disabled",
            format!(
                "MCPGuardPolicy {policy} sets networkPolicy.enabled: false; every port of the pods is reachable \
                 from other pods unless another NetworkPolicy closes it"
            ),
        ),
        NetworkPolicyOutcome::Failed { name, error } => (
            false,
            "WriteFailed",
            format!(
                "cannot write NetworkPolicy {name}: {error}; give the operator networkpolicies get/list/watch/\
                 create/patch/delete (the chart's ClusterRole does)"
            ),
        ),
    };
    condition(condition::NETWORK_POLICY, status, reason, message, input)
}

/// `Ready`: the spec is valid, the policy exists, and hosts are allowed.
fn ready_condition(d: &Derivation, input: &StatusInput<'_>, pending: bool) -> Condition {
    let empty = d.hosts.is_empty();
    if !input.spec_errors.is_empty() {
        let errors: Vec<String> = input.spec_errors.iter().map(|e| e.to_string()).collect();
        condition(
            condition::READY,
            false,
            "InvalidSpec",
            format!("Invalid spec (invalid entries skipped): {}", errors.join("; ")),
            input,
        )
    } else if let Some(problems) = d.auth.as_ref().map(|a| &a.problems).filter(|p| !p.is_empty()) {
        condition(
            condition::READY,
            false,
            "AuthNotReady",
            format!(
                "Authentication is on but the guard cannot enforce it, so it refuses requests (or keeps its last \
                 config): {}",
                problems.join("; ")
            ),
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
    } else if pending {
        condition(
            condition::READY,
            false,
            "WaitingForHosts",
            pending_message(d, input),
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
            empty_grace: Duration::ZERO,
            network_policy: NetworkPolicyOutcome::Written {
                name: "weather-mcp-guard".into(),
                admits: "admits ingress only on port 8000 (guard) from every source".into(),
            },
        }
    }

    #[test]
    fn unguarded_pods_are_listed_with_their_fix_and_set_guard_bypass() {
        use crate::sources::{Finding, Fix, UnguardedPod};
        let pods = |n: usize| -> Vec<UnguardedPod> {
            (0..n)
                .map(|i| UnguardedPod {
                    namespace: "team-a".into(),
                    name: format!("weather-{i:03}"),
                    fix: Fix::RolloutRestart {
                        kind: "deployment",
                        name: "weather".into(),
                    },
                    blocker: None,
                })
                .collect()
        };
        let d = Derivation {
            findings: vec![Finding::Unguarded(pods(2))],
            ..Default::default()
        };
        let s = build_status(&d, &input(None, 0, &[]));
        assert_eq!(
            s.unguarded_pods,
            vec![
                UnguardedPodStatus {
                    name: "weather-000".into(),
                    fix: "kubectl rollout restart -n team-a deployment/weather".into(),
                },
                UnguardedPodStatus {
                    name: "weather-001".into(),
                    fix: "kubectl rollout restart -n team-a deployment/weather".into(),
                },
            ]
        );
        let c = cond(&s, condition::GUARD_BYPASS);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "GuardBypassed"));
        assert!(
            c.message
                .contains("kubectl rollout restart -n team-a deployment/weather"),
            "{}",
            c.message
        );
        // Many pods: status lists the first ones only, the condition counts the rest.
        let d = Derivation {
            findings: vec![Finding::Unguarded(pods(UNGUARDED_PODS_LISTED + 7))],
            ..Default::default()
        };
        let s = build_status(&d, &input(None, 0, &[]));
        assert_eq!(s.unguarded_pods.len(), UNGUARDED_PODS_LISTED);
        assert!(
            cond(&s, condition::GUARD_BYPASS)
                .message
                .contains(&format!("(+{} more)", UNGUARDED_PODS_LISTED + 7 - 5)),
            "{}",
            cond(&s, condition::GUARD_BYPASS).message
        );
        // None: the field is left out.
        let s = build_status(&Derivation::default(), &input(None, 0, &[]));
        assert!(s.unguarded_pods.is_empty());
        assert!(
            !serde_json::to_string(&s).expect("json").contains("unguardedPods"),
            "an empty list is not written"
        );
    }

    #[test]
    fn network_policy_condition_names_what_was_written_and_the_caveat() {
        let d = Derivation::default();
        let s = build_status(&d, &input(None, 0, &[]));
        let c = cond(&s, condition::NETWORK_POLICY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Written"));
        assert!(
            c.message
                .contains("weather-mcp-guard admits ingress only on port 8000"),
            "{}",
            c.message
        );
        assert!(
            c.message.contains("network plugin enforces NetworkPolicies"),
            "{}",
            c.message
        );
        assert_eq!(s.network_policy.as_deref(), Some("weather-mcp-guard"));

        let off = StatusInput {
            network_policy: NetworkPolicyOutcome::Disabled {
                policy: "default".into(),
            },
            ..input(None, 0, &[])
        };
        let s = build_status(&d, &off);
        let c = cond(&s, condition::NETWORK_POLICY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Disabled"));
        assert!(
            c.message.contains("networkPolicy.enabled: false"),
            "{}",
            c.message
        );
        assert_eq!(s.network_policy, None);

        let failed = StatusInput {
            network_policy: NetworkPolicyOutcome::Failed {
                name: "weather-mcp-guard".into(),
                error: "forbidden".into(),
            },
            ..input(None, 0, &[])
        };
        let c = cond(&build_status(&d, &failed), condition::NETWORK_POLICY).clone();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "WriteFailed"));
        assert!(
            c.message.contains("forbidden") && c.message.contains("networkpolicies"),
            "{}",
            c.message
        );
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
            findings: vec![crate::sources::Finding::CatchAll {
                route: crate::sources::Dependency::new(crate::sources::DepKind::Ingress, Some("a"), "b"),
                message: "Ingress a/b: rule 0 has no host".into(),
            }],
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

    fn empty_condition(s: &MCPServerStatus) -> (&str, &str) {
        let c = cond(s, condition::EMPTY_ALLOWLIST);
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn an_empty_allowlist_waits_out_the_grace_period_before_it_is_a_warning() {
        let grace = Duration::from_secs(10);
        let with_grace = |previous, now| StatusInput {
            empty_grace: grace,
            ..input(previous, now, &[])
        };
        let empty = Derivation::default();
        let hosts = Derivation {
            hosts: vec![entry("a.example.com")],
            ..Default::default()
        };

        // (previous status, seconds since the allowlist became empty, expected EmptyAllowlist, Ready reason)
        let first = build_status(&empty, &with_grace(None, 100));
        assert_eq!(empty_condition(&first), ("True", reason::NO_HOSTS_YET));
        assert_eq!(cond(&first, condition::READY).reason, "WaitingForHosts");
        assert_eq!(cond(&first, condition::READY).status, "False");
        assert!(cond(&first, condition::READY).message.contains("10 s"));
        assert_eq!(
            recheck_after(&first, &time(100), grace),
            Some(Duration::from_secs(10))
        );

        // Still empty 9 s later: still pending, and the transition time is kept.
        let later = build_status(&empty, &with_grace(Some(&first), 109));
        assert_eq!(empty_condition(&later), ("True", reason::NO_HOSTS_YET));
        assert_eq!(
            recheck_after(&later, &time(109), grace),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            cond(&later, condition::EMPTY_ALLOWLIST).last_transition_time,
            time(100)
        );

        // The Service arrives within the grace period: never a warning.
        let found = build_status(&hosts, &with_grace(Some(&later), 105));
        assert_eq!(empty_condition(&found), ("False", reason::HOSTS_FOUND));
        assert_eq!(recheck_after(&found, &time(105), grace), None);

        // Nothing arrives: after the grace period it is NoHostsFound, and stays so.
        let warned = build_status(&empty, &with_grace(Some(&later), 110));
        assert_eq!(empty_condition(&warned), ("True", reason::NO_HOSTS_FOUND));
        assert_eq!(cond(&warned, condition::READY).reason, "EmptyAllowlist");
        assert_eq!(recheck_after(&warned, &time(110), grace), None);
        let still = build_status(&empty, &with_grace(Some(&warned), 111));
        assert_eq!(empty_condition(&still), ("True", reason::NO_HOSTS_FOUND));

        // A server that had hosts and loses them gets a new grace period.
        let lost = build_status(&empty, &with_grace(Some(&found), 200));
        assert_eq!(empty_condition(&lost), ("True", reason::NO_HOSTS_YET));

        // No grace: warned at once.
        let at_once = build_status(&empty, &input(None, 100, &[]));
        assert_eq!(empty_condition(&at_once), ("True", reason::NO_HOSTS_FOUND));
    }

    #[test]
    fn policy_status_says_validity_and_users() {
        let errors = [FieldError {
            field: "spec.allowedHosts[1]".into(),
            message: "invalid host pattern \"*\": a bare `*` would allow every host".into(),
        }];
        let users = ["a/one".to_string(), "b/two".to_string()];
        let input = |previous, now, errors, users| PolicyStatusInput {
            name: "strict",
            generation: Some(2),
            previous,
            now: time(now),
            errors,
            users,
        };
        let s = build_policy_status(&input(None, 10, &errors, &users));
        let valid = &s.conditions[0];
        assert_eq!(
            (valid.type_.as_str(), valid.status.as_str(), valid.reason.as_str()),
            ("Valid", "False", "InvalidEntries")
        );
        assert!(
            valid
                .message
                .contains("spec.allowedHosts[1]: invalid host pattern"),
            "{}",
            valid.message
        );
        let in_use = &s.conditions[1];
        assert_eq!(
            (in_use.status.as_str(), in_use.reason.as_str()),
            ("True", "UsedByMCPServers")
        );
        assert_eq!(in_use.message, "Used by 2 MCPServers: a/one, b/two");
        assert_eq!(s.mcp_servers, Some(2));
        assert_eq!(s.observed_generation, Some(2));

        let fixed = build_policy_status(&input(Some(&s), 20, &[], &[]));
        assert_eq!(fixed.conditions[0].status, "True");
        assert_eq!(fixed.conditions[0].last_transition_time, time(20));
        assert_eq!(fixed.conditions[1].reason, "Unused");
        assert!(
            fixed.conditions[1].message.contains("spec.policyRef"),
            "{}",
            fixed.conditions[1].message
        );
        assert_eq!(fixed.mcp_servers, Some(0));
        let again = build_policy_status(&input(Some(&fixed), 30, &[], &[]));
        assert_eq!(again, fixed, "same inputs, same status: no write");
    }
}
