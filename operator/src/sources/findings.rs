//! What a derivation finds besides the allowlist, typed: each finding knows the status condition it sets, that
//! condition's reason and its message. The status, the metrics and `kubectl mcp-guard explain` all read these
//! values; none of them parses a message.

use std::fmt;

use super::{DepKind, Dependency};
use crate::pod_contract::{NAMESPACE_INJECTION_LABEL, POD_INJECT_LABEL};

/// The status condition types a finding sets (`True` while there is one).
pub mod condition {
    /// An Ingress rule / route accepts any host; its hosts cannot be derived.
    pub const CATCH_ALL_INGRESS_RULE: &str = "CatchAllIngressRule";
    /// An Ingress or HTTPRoute backend names a server Service on a port that does not reach the server.
    pub const INGRESS_BACKEND_PORT_MISMATCH: &str = "IngressBackendPortMismatch";
    /// An Ingress routing to the server is not counted (its class is not served, or not one the policy counts).
    pub const INGRESS_NOT_COUNTED: &str = "IngressNotCounted";
    /// Another MCPServer of the namespace can select the same pods.
    pub const SELECTOR_OVERLAP: &str = "SelectorOverlap";
    /// A Service reaches the pods on a port the guard does not cover.
    pub const GUARD_BYPASS: &str = "GuardBypass";
    /// Something could not be resolved or was skipped (missing explicit references, invalid entries).
    pub const DEGRADED: &str = "Degraded";
}

/// The kind of a finding, one per status condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    CatchAll,
    PortMismatch,
    IngressNotCounted,
    SelectorOverlap,
    Bypass,
    Problem,
}

impl FindingKind {
    /// Every kind, in the order the status lists their conditions.
    pub const ALL: [FindingKind; 6] = [
        FindingKind::CatchAll,
        FindingKind::PortMismatch,
        FindingKind::IngressNotCounted,
        FindingKind::SelectorOverlap,
        FindingKind::Bypass,
        FindingKind::Problem,
    ];

    /// The status condition this kind sets.
    pub fn condition(self) -> &'static str {
        match self {
            FindingKind::CatchAll => condition::CATCH_ALL_INGRESS_RULE,
            FindingKind::PortMismatch => condition::INGRESS_BACKEND_PORT_MISMATCH,
            FindingKind::IngressNotCounted => condition::INGRESS_NOT_COUNTED,
            FindingKind::SelectorOverlap => condition::SELECTOR_OVERLAP,
            FindingKind::Bypass => condition::GUARD_BYPASS,
            FindingKind::Problem => condition::DEGRADED,
        }
    }

    /// The condition's reason while there is such a finding.
    pub fn reason(self) -> &'static str {
        match self {
            FindingKind::CatchAll => "RuleWithoutHost",
            FindingKind::PortMismatch => "BackendPortMismatch",
            FindingKind::IngressNotCounted => "IngressesNotCounted",
            FindingKind::SelectorOverlap => "SelectorsOverlap",
            FindingKind::Bypass => "GuardBypassed",
            FindingKind::Problem => "Unresolved",
        }
    }

    /// The condition's reason and message while there is none.
    pub fn fine(self) -> (&'static str, &'static str) {
        match self {
            FindingKind::CatchAll => (
                "AllRulesHaveHosts",
                "Every Ingress rule and route routing to the server names its hosts",
            ),
            FindingKind::PortMismatch => (
                "BackendPortsMatch",
                "Every Ingress/HTTPRoute backend on the server's Services reaches the server's port",
            ),
            FindingKind::IngressNotCounted => (
                "AllIngressesCounted",
                "Every Ingress routing to the server's Services is counted",
            ),
            FindingKind::SelectorOverlap => (
                "NoOverlap",
                "No other MCPServer of the namespace can select the same pods",
            ),
            FindingKind::Bypass => (
                "NoBypass",
                "Every port of the Services selecting the pods targets the server's port, which the guard listens on",
            ),
            FindingKind::Problem => ("AllResolved", "All references resolved; no entry skipped"),
        }
    }
}

/// One thing a derivation found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// An Ingress rule or `defaultBackend`, or an HTTPRoute, that sends requests for any host to the server.
    CatchAll { route: Dependency, message: String },
    /// A backend of `route` on a server Service port that does not reach the server.
    PortMismatch { route: Dependency, message: String },
    /// An Ingress that routes to the server's Services and is not counted, and why.
    IngressNotCounted { ingress: Dependency, why: String },
    /// Another MCPServer of the namespace that can select the same pods.
    SelectorOverlap { other: String, message: String },
    /// A way into the pods that does not pass the guard.
    Bypass(String),
    /// Selected pods that run without any guard (condition `GuardBypass`), each with what puts the guard into
    /// it.
    Unguarded(Vec<UnguardedPod>),
    /// Anything else unresolved or skipped; `about` names the object when there is one.
    Problem {
        about: Option<Dependency>,
        message: String,
    },
}

impl Finding {
    pub fn kind(&self) -> FindingKind {
        match self {
            Finding::CatchAll { .. } => FindingKind::CatchAll,
            Finding::PortMismatch { .. } => FindingKind::PortMismatch,
            Finding::IngressNotCounted { .. } => FindingKind::IngressNotCounted,
            Finding::SelectorOverlap { .. } => FindingKind::SelectorOverlap,
            Finding::Bypass(_) | Finding::Unguarded(_) => FindingKind::Bypass,
            Finding::Problem { .. } => FindingKind::Problem,
        }
    }

    /// The object the finding is about, when it is about one.
    pub fn about(&self) -> Option<&Dependency> {
        match self {
            Finding::CatchAll { route, .. } | Finding::PortMismatch { route, .. } => Some(route),
            Finding::IngressNotCounted { ingress, .. } => Some(ingress),
            Finding::Problem { about, .. } => about.as_ref(),
            Finding::SelectorOverlap { .. } | Finding::Bypass(_) | Finding::Unguarded(_) => None,
        }
    }

    /// What the status condition says about it.
    pub fn message(&self) -> String {
        match self {
            Finding::IngressNotCounted { ingress, why } => format!("{ingress} is not counted: {why}"),
            Finding::Unguarded(pods) => unguarded_message(pods),
            Finding::CatchAll { message, .. }
            | Finding::PortMismatch { message, .. }
            | Finding::SelectorOverlap { message, .. }
            | Finding::Bypass(message)
            | Finding::Problem { message, .. } => message.clone(),
        }
    }

    /// A problem not about one object.
    pub fn problem(message: String) -> Finding {
        Finding::Problem { about: None, message }
    }
}

/// A pod an MCPServer selects that runs without any guard: created before the MCPServer or the webhook, in a
/// namespace not opted in, opted out, on the host network, or admitted while the webhook was unreachable with
/// `failurePolicy: Ignore`. Only a new pod, created through the webhook, gets the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnguardedPod {
    pub namespace: String,
    pub name: String,
    /// What replaces it with a pod created through the webhook.
    pub fix: Fix,
    /// What would make the webhook skip the new pod too, to change first.
    pub blocker: Option<Blocker>,
}

/// Why the webhook would skip a pod again when it is replaced (its skip rules, in the order it checks them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// Host-network pods are never injected.
    HostNetwork,
    /// The namespace is not labelled `mcpguard.dev/injection=enabled`.
    NamespaceNotOptedIn,
    /// The pod is labelled `mcpguard.dev/inject=false`.
    PodOptedOut,
}

/// What replaces a pod with one created through the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    /// Restart the workload that owns it: `kind` is `deployment`, `statefulset` or `daemonset`.
    RolloutRestart { kind: &'static str, name: String },
    /// Delete the pod; its controller (a ReplicaSet of no Deployment, a Job, …) creates a new one.
    DeletePod,
    /// Delete the pod and create it again from its manifest: nothing owns it.
    RecreatePod,
}

impl UnguardedPod {
    /// The command that puts the guard into this pod, after what must change first.
    pub fn command(&self) -> String {
        let (namespace, pod) = (&self.namespace, &self.name);
        let fix = self.replacement();
        match self.blocker {
            None => fix,
            Some(Blocker::HostNetwork) => {
                "none while it uses the host network (never injected): run it without hostNetwork".to_string()
            }
            Some(Blocker::NamespaceNotOptedIn) => format!(
                "kubectl label namespace {namespace} {NAMESPACE_INJECTION_LABEL}=enabled --overwrite, then {fix}"
            ),
            Some(Blocker::PodOptedOut) => {
                format!(
                    "remove the label {POD_INJECT_LABEL}=false from pod {pod} (or its template), then {fix}"
                )
            }
        }
    }

    /// The command that replaces the pod by one the webhook admits.
    fn replacement(&self) -> String {
        let (namespace, pod) = (&self.namespace, &self.name);
        match &self.fix {
            Fix::RolloutRestart { kind, name } => {
                format!("kubectl rollout restart -n {namespace} {kind}/{name}")
            }
            Fix::DeletePod => format!("kubectl delete pod -n {namespace} {pod}"),
            Fix::RecreatePod => {
                format!("kubectl delete pod -n {namespace} {pod} (then create it again from its manifest)")
            }
        }
    }
}

/// The commands that put the guard into these pods, one per workload, in order, each once.
fn fix_commands(pods: &[UnguardedPod]) -> Vec<String> {
    let mut commands: Vec<String> = Vec::new();
    for pod in pods {
        let command = pod.command();
        if !commands.contains(&command) {
            commands.push(command);
        }
    }
    commands
}

/// At most this many pod names and commands in a message (`status.unguardedPods` lists more, the metric counts
/// them all).
const SHOWN: usize = 5;

pub(crate) fn shortened(items: &[String], separator: &str) -> String {
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(separator);
    if items.len() > SHOWN {
        s.push_str(&format!(" (+{} more)", items.len() - SHOWN));
    }
    s
}

fn unguarded_message(pods: &[UnguardedPod]) -> String {
    let namespace = pods.first().map(|p| p.namespace.as_str()).unwrap_or_default();
    let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    format!(
        "pods without the guard in {namespace}: {} (created before the MCPServer or the webhook, namespace not \
         opted in with mcpguard.dev/injection=enabled, pod opted out, host network, or admitted while the \
         webhook was down); restart them to inject the guard: {}",
        shortened(&names, ", "),
        shortened(&fix_commands(pods), "; ")
    )
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DepKind::Pod => "Pod",
            DepKind::Service => "Service",
            DepKind::Ingress => "Ingress",
            DepKind::HTTPRoute => "HTTPRoute",
            DepKind::Gateway => "Gateway",
            DepKind::MCPGuardPolicy => "MCPGuardPolicy",
            DepKind::MCPServer => "MCPServer",
            DepKind::SigMCPServer => "MCPServer.mcp.x-k8s.io",
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn each_kind_has_its_own_condition_and_reasons() {
        let conditions: BTreeSet<&str> = FindingKind::ALL.iter().map(|k| k.condition()).collect();
        assert_eq!(conditions.len(), FindingKind::ALL.len());
        for kind in FindingKind::ALL {
            let (fine, _) = kind.fine();
            assert_ne!(fine, kind.reason(), "{kind:?}");
        }
        let ingress = Dependency::new(DepKind::Ingress, Some("ns"), "web");
        let f = Finding::IngressNotCounted {
            ingress: ingress.clone(),
            why: "its class \"gone\" is served by no IngressClass".into(),
        };
        assert_eq!(f.kind().condition(), condition::INGRESS_NOT_COUNTED);
        assert_eq!(f.about(), Some(&ingress));
        assert_eq!(
            f.message(),
            "Ingress ns/web is not counted: its class \"gone\" is served by no IngressClass"
        );
        assert_eq!(Finding::problem("x".into()).about(), None);
    }

    #[test]
    fn unguarded_pods_are_a_guard_bypass_with_one_command_per_workload() {
        let pod = |name: &str, fix: Fix| UnguardedPod {
            namespace: "ns".into(),
            name: name.into(),
            fix,
            blocker: None,
        };
        let deployment = || Fix::RolloutRestart {
            kind: "deployment",
            name: "web".into(),
        };
        let pods = vec![
            pod("web-1", deployment()),
            pod("web-2", deployment()),
            pod("job-x", Fix::DeletePod),
            pod("bare", Fix::RecreatePod),
        ];
        assert_eq!(
            fix_commands(&pods),
            vec![
                "kubectl rollout restart -n ns deployment/web",
                "kubectl delete pod -n ns job-x",
                "kubectl delete pod -n ns bare (then create it again from its manifest)",
            ]
        );
        let f = Finding::Unguarded(pods);
        assert_eq!(f.kind(), FindingKind::Bypass);
        assert_eq!(f.kind().condition(), condition::GUARD_BYPASS);
        assert_eq!(f.about(), None);
        let message = f.message();
        assert!(
            message.starts_with("pods without the guard in ns: web-1, web-2, job-x, bare ("),
            "{message}"
        );
        assert!(
            message.ends_with(
                "restart them to inject the guard: kubectl rollout restart -n ns deployment/web; kubectl delete \
                 pod -n ns job-x; kubectl delete pod -n ns bare (then create it again from its manifest)"
            ),
            "{message}"
        );
    }
}
