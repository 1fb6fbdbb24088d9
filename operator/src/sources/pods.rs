//! The pods an MCPServer selects: those without its guard (or with another server's, or with a guard that is not
//! ready while the app runs) are `GuardBypass`; their container ports resolve the named `targetPort`s of the
//! Services (see [`super::services`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Finding, Fold, servers_where};
use crate::crd::MCPServer;
use crate::pod_contract::{SIDECAR_NAME, guarded_by};
use crate::stores::{Stores, Triggers, Watch};

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

fn short_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" (+{} more)", names.len() - SHOWN));
    }
    s
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

/// Pods that the guard does not protect (docs/webhook.md "What the operator's GuardBypass condition should
/// detect"): no guard, another MCPServer's guard, or a guard that is not ready while the app runs.
fn bypasses(pods: &[&Pod], server: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut unguarded = Vec::new();
    let mut foreign: Vec<String> = Vec::new();
    let mut not_ready = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        match guarded_by(pod) {
            None => unguarded.push(name),
            Some(other) if other != server => {
                foreign.push(format!("{name} (guarded for MCPServer {other:?})"))
            }
            Some(_) if guard_lags(pod) => not_ready.push(name),
            Some(_) => {}
        }
    }
    let ns = pods.first().and_then(|p| p.namespace()).unwrap_or_default();
    if !unguarded.is_empty() {
        out.push(format!(
            "pods without the guard in {ns}: {} (created before the MCPServer or the webhook, namespace not \
             opted in with mcpguard.dev/injection=enabled, pod opted out, host network, or admitted while the \
             webhook was down); restart them to inject the guard",
            short_names(&unguarded)
        ));
    }
    if !foreign.is_empty() {
        out.push(format!(
            "pods guarded with another MCPServer's allowlist: {} (selectors changed after injection); restart \
             them",
            short_names(&foreign)
        ));
    }
    if !not_ready.is_empty() {
        out.push(format!(
            "the guard is not ready while the server runs in pods {}: the server may hold the port on all \
             interfaces and answer on the pod IP without the guard; let it bind 127.0.0.1",
            short_names(&not_ready)
        ));
    }
    out
}

/// Pods of the operator's scope. The derivation reads their labels, containers and ports, and statuses.
pub fn watch(w: &Watch<'_>) -> (Store<Pod>, Triggers<Pod>) {
    w.namespaced()
}

/// Pod changed → the MCPServers selecting it now, and those that selected it before.
pub fn map(stores: &Stores, index: &DependencyIndex, pod: &Pod) -> Vec<ObjectRef<MCPServer>> {
    let ns = pod.namespace().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let now = servers_where(stores, &ns, |s| {
        crate::selector::matches(&s.spec.selector, labels)
    });
    index.with_dependents(Dependency::new(DepKind::Pod, Some(&ns), &pod.name_any()), now)
}

#[cfg(test)]
mod tests;
