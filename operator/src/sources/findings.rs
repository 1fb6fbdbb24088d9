//! What a derivation finds besides the allowlist, typed: each finding knows the status condition it sets, that
//! condition's reason and its message. The status, the metrics and `kubectl mcp-guard explain` all read these
//! values; none of them parses a message.

use std::fmt;

use super::{DepKind, Dependency};

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
            Finding::Bypass(_) => FindingKind::Bypass,
            Finding::Problem { .. } => FindingKind::Problem,
        }
    }

    /// The object the finding is about, when it is about one.
    pub fn about(&self) -> Option<&Dependency> {
        match self {
            Finding::CatchAll { route, .. } | Finding::PortMismatch { route, .. } => Some(route),
            Finding::IngressNotCounted { ingress, .. } => Some(ingress),
            Finding::Problem { about, .. } => about.as_ref(),
            Finding::SelectorOverlap { .. } | Finding::Bypass(_) => None,
        }
    }

    /// What the status condition says about it.
    pub fn message(&self) -> String {
        match self {
            Finding::IngressNotCounted { ingress, why } => format!("{ingress} is not counted: {why}"),
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
}
