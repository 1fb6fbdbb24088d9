//! The pods an MCPServer selects: those without its guard (or with another server's, or with a guard that is not
//! ready while the app runs) are `GuardBypass`; their container ports resolve the named `targetPort`s of the
//! Services (see [`super::services`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::Stores;
use super::findings::{Blocker, Fix, UnguardedPod, shortened};
use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Finding, Fold, servers_where};
use crate::crd::MCPServer;
use crate::index::{Facet, Index, Lookup};
use crate::pod_contract::{NAMESPACE_INJECTION_LABEL, POD_INJECT_LABEL, SIDECAR_NAME, guarded_by};
use crate::stores::{Triggers, Watch};

/// The container ports of the pods an MCPServer selects, to resolve named targetPorts and to tell whether a
/// port is served by the app (not the guard).
#[derive(Clone, Debug, Default)]
pub struct PodPorts<'a> {
    pub pods: Vec<&'a Pod>,
}

impl PodPorts<'_> {
    pub(crate) fn containers(&self) -> impl Iterator<Item = &Container> {
        self.pods
            .iter()
            .filter_map(|p| p.spec.as_ref())
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
    }

    /// The port number a named targetPort resolves to.
    pub fn resolve(&self, name: &str) -> Option<i32> {
        self.containers()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    }

    /// An app container (not the guard) declaring this port.
    pub fn app_container_with_port(&self, port: i32) -> Option<&str> {
        self.containers()
            .filter(|c| c.name != SIDECAR_NAME)
            .find(|c| c.ports.iter().flatten().any(|p| p.container_port == port))
            .map(|c| c.name.as_str())
    }
}

/// Whether a pod counts as one of the server's (with this selector): not being deleted, not finished, selected.
pub fn counts(pod: &Pod, selector: &LabelSelector) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    pod.metadata.deletion_timestamp.is_none()
        && !finished
        && crate::selector::matches(selector, pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
}

/// The pods the server selects (running or pending), what would bypass the guard on them, and their ports.
pub fn contribute<'a>(input: &DeriveInput<'a>, fold: &mut Fold) -> PodPorts<'a> {
    let d = &mut fold.d;
    let selected: Vec<&Pod> = input
        .pods
        .iter()
        .copied()
        .filter(|p| counts(p, &input.spec.selector))
        .collect();
    let unguarded = unguarded(&selected, input.namespace_labels);
    if !unguarded.is_empty() {
        d.findings.push(Finding::Unguarded(unguarded));
    }
    d.findings
        .extend(bypasses(&selected, input.name).into_iter().map(Finding::Bypass));
    for p in &selected {
        d.depend(DepKind::Pod, Some(input.namespace), &p.name_any());
    }
    let pods = PodPorts { pods: selected };
    // Informational: the app declares ports, but not spec.port (a likely typo in spec.port).
    let app_ports: BTreeSet<i32> = pods
        .containers()
        .filter(|c| c.name != SIDECAR_NAME)
        .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
        .collect();
    let port = input.spec.port;
    if !app_ports.is_empty() && !app_ports.contains(&port) {
        let declared: Vec<String> = app_ports.iter().map(ToString::to_string).collect();
        d.findings.push(Finding::problem(format!(
            "no container of the selected pods declares port {port} (spec.port); they declare {}: check \
             spec.port",
            declared.join(", ")
        )));
    }
    pods
}

/// Whether a pod's guard is not ready while its app runs: an ordinary-container guard in its start-up race, in
/// which the server can hold the port on all interfaces.
fn guard_lags(pod: &Pod) -> bool {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let guard_ready = statuses.iter().find(|c| c.name == SIDECAR_NAME).map(|c| c.ready);
    let app_running = statuses
        .iter()
        .any(|c| c.name != SIDECAR_NAME && c.state.as_ref().is_some_and(|s| s.running.is_some()));
    guard_ready == Some(false) && app_running
}

/// The selected pods that run without any guard, each with what puts the guard into it. `namespace_labels`:
/// `None` when unknown.
fn unguarded(pods: &[&Pod], namespace_labels: Option<&BTreeMap<String, String>>) -> Vec<UnguardedPod> {
    let mut out: Vec<UnguardedPod> = pods
        .iter()
        .filter(|p| guarded_by(p).is_none())
        .map(|p| UnguardedPod {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            fix: fix_for(p),
            blocker: blocker(p, namespace_labels),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What would make the webhook skip the pod again (`webhook::inject::plan`'s rules, in its order).
fn blocker(pod: &Pod, namespace_labels: Option<&BTreeMap<String, String>>) -> Option<Blocker> {
    let opted_in = |labels: &BTreeMap<String, String>| {
        labels.get(NAMESPACE_INJECTION_LABEL).map(String::as_str) == Some("enabled")
    };
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        Some(Blocker::HostNetwork)
    } else if namespace_labels.is_some_and(|l| !opted_in(l)) {
        Some(Blocker::NamespaceNotOptedIn)
    } else if pod.labels().get(POD_INJECT_LABEL).map(String::as_str) == Some("false") {
        Some(Blocker::PodOptedOut)
    } else {
        None
    }
}

/// What replaces a pod with one the webhook admits: a restart of the workload that owns it when there is one
/// (a Deployment is found through its ReplicaSet, named `<deployment>-<pod-template-hash>`), else the pod's
/// deletion (its controller replaces it) or its re-creation (nothing does).
fn fix_for(pod: &Pod) -> Fix {
    let Some(owner) = pod.owner_references().iter().find(|o| o.controller == Some(true)) else {
        return Fix::RecreatePod;
    };
    let rollout = |kind: &'static str, name: &str| Fix::RolloutRestart {
        kind,
        name: name.to_string(),
    };
    match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("apps/v1", "StatefulSet") => rollout("statefulset", &owner.name),
        ("apps/v1", "DaemonSet") => rollout("daemonset", &owner.name),
        ("apps/v1", "ReplicaSet") => {
            let hash = pod.labels().get("pod-template-hash");
            match hash.and_then(|h| owner.name.strip_suffix(h.as_str())?.strip_suffix('-')) {
                Some(deployment) if !deployment.is_empty() => rollout("deployment", deployment),
                _ => Fix::DeletePod,
            }
        }
        _ => Fix::DeletePod,
    }
}

/// Pods that carry a guard that does not protect them (docs/webhook.md "What the operator's GuardBypass
/// condition should detect"; pods without any guard are [`unguarded`]): another MCPServer's guard, or a guard
/// that is not ready while the app runs.
fn bypasses(pods: &[&Pod], server: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut foreign: Vec<String> = Vec::new();
    let mut not_ready = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        match guarded_by(pod) {
            None => {} // [`unguarded`]
            Some(other) if other != server => {
                foreign.push(format!("{name} (guarded for MCPServer {other:?})"))
            }
            Some(_) if guard_lags(pod) => not_ready.push(name),
            Some(_) => {}
        }
    }
    if !foreign.is_empty() {
        out.push(format!(
            "pods guarded with another MCPServer's allowlist: {} (selectors changed after injection); restart \
             them",
            shortened(&foreign, ", ")
        ));
    }
    if !not_ready.is_empty() {
        out.push(format!(
            "the guard is not ready while the server runs in pods {}: the server may hold the port on all \
             interfaces and answer on the pod IP without the guard; let it bind 127.0.0.1",
            shortened(&not_ready, ", ")
        ));
    }
    out
}

/// What a pod is looked up by: its labels.
pub fn facets(pod: &Pod) -> Vec<Facet> {
    pod.metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| Facet::Label(k.clone(), v.clone()))
        .collect()
}

/// The pods a selector may match ([`counts`] decides): those carrying a label it names (every pod it matches
/// carries them all), else the namespace's.
pub fn lookup(selector: &LabelSelector) -> Lookup {
    match super::services::selector_facets(selector) {
        facets if facets.is_empty() => Lookup::Namespace,
        facets => Lookup::Any(facets),
    }
}

/// Pods of the operator's scope. The derivation reads their labels, containers and ports, and statuses.
pub fn watch(w: &Watch<'_>, index: &Index<Pod>) -> (Store<Pod>, Triggers<Pod>) {
    w.indexed(index)
}

/// Pod changed → the MCPServers selecting it now, and those that selected it before.
pub fn map(stores: &Stores, index: &DependencyIndex, pod: &Pod) -> Vec<ObjectRef<MCPServer>> {
    let ns = pod.namespace().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let lookup = Lookup::Any(std::iter::once(Facet::Always).chain(facets(pod)).collect());
    let now = servers_where(stores, &ns, &lookup, |s| {
        crate::selector::matches(&s.spec.selector, labels)
    });
    index.with_dependents(Dependency::new(DepKind::Pod, Some(&ns), &pod.name_any()), now)
}

#[cfg(test)]
mod tests;
