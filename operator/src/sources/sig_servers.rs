//! The Kubernetes SIG's MCPServers (`mcp.x-k8s.io/v1beta1`, kubernetes-sigs/mcp-lifecycle-operator), guarded by
//! an MCPServer of ours that references one (`spec.serverRef`) instead of naming a selector and a port.
//!
//! Their controller creates, per server, a Deployment whose pods carry `mcp-server: <name>` and declare one
//! container port named `mcp` (`spec.config.port`), a ClusterIP Service (`status.serviceName`) with
//! `targetPort: mcp`, and a NetworkPolicy admitting ingress to that port. So a reference resolves to:
//!
//! - the selector `mcp-server: <name>` and the port `spec.config.port` ([`effective`]), which every other source,
//!   the webhook and the NetworkPolicy read as if the user had written them;
//! - the `GuardPort` layout (unless set, and validation allows no other): the guard takes over the port name
//!   `mcp`, so their Service reaches the guard without a change;
//! - the Host their controller's MCP handshake sends, `<service>.<namespace>.svc.<cluster-domain>:<port>`
//!   ([`contribute`]), so that their `Verified` condition stays honest even when the policy leaves Service DNS
//!   names out (the Service source adds the shorter names when their Service is found).
//!
//! Only the fields read here are modelled; the rest of their object is ignored.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{CustomResource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::Stores;
use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Fold, servers_where};
use crate::crd::{MCPServer, MCPServerSpec, TrafficLayout, TrafficSpec};
use crate::stores::{Triggers, Watch};

/// Their API group and version.
pub const GROUP: &str = "mcp.x-k8s.io";
pub const VERSION: &str = "v1beta1";
/// The label their controller puts on each server's pods, valued with the server's name.
pub const SERVER_LABEL: &str = "mcp-server";

/// The parts of their MCPServer the operator reads.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mcp.x-k8s.io",
    version = "v1beta1",
    kind = "MCPServer",
    root = "SigMCPServer",
    plural = "mcpservers",
    namespaced,
    status = "SigMCPServerStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct SigMCPServerSpec {
    #[serde(default)]
    pub config: SigServerConfig,
}

/// `spec.config`: how their server runs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigServerConfig {
    /// The port the server listens on (their container port `mcp`, their Service's port).
    #[serde(default)]
    pub port: i32,
}

/// `status`: what their controller created.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigMCPServerStatus {
    /// The Service their controller created (and sends its handshake to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

impl SigMCPServer {
    /// Their Service's name: the status's, else the server's own (which their controller uses).
    pub fn service_name(&self) -> String {
        self.status
            .as_ref()
            .and_then(|s| s.service_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.name_any())
    }
}

/// The name of the SIG server `spec` references, if it references one.
pub fn referenced_name(spec: &MCPServerSpec) -> Option<&str> {
    spec.server_ref.as_ref().map(|r| r.name.as_str())
}

/// The pods of their server `name`.
pub fn selector_for(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(SERVER_LABEL.to_string(), name.to_string())].into()),
        ..Default::default()
    }
}

/// The spec everything else reads: unchanged without `spec.serverRef`; with it, the referenced server's
/// selector, its port (0 while it is not found: no pod declares it, and [`contribute`] says why) and the
/// `GuardPort` layout unless set.
pub fn effective<'a>(spec: &'a MCPServerSpec, theirs: Option<&SigMCPServer>) -> Cow<'a, MCPServerSpec> {
    let Some(name) = referenced_name(spec) else {
        return Cow::Borrowed(spec);
    };
    let mut spec = spec.clone();
    spec.selector = selector_for(name);
    spec.port = theirs.map_or(0, |t| t.spec.config.port);
    let traffic = spec.traffic.get_or_insert_with(TrafficSpec::default);
    traffic.layout.get_or_insert(TrafficLayout::GuardPort);
    Cow::Owned(spec)
}

/// The SIG server `spec` references, from the cache (`None`: no reference, not found, or their API is not
/// served).
pub fn lookup(stores: &Stores, ns: &str, spec: &MCPServerSpec) -> Option<Arc<SigMCPServer>> {
    let name = referenced_name(spec)?;
    stores.sig_servers.as_ref()?.get(&ObjectRef::new(name).within(ns))
}

/// An MCPServer of ours with its spec resolved from the cache ([`effective`]).
pub fn resolved<'a>(server: &'a MCPServer, stores: &Stores) -> Cow<'a, MCPServer> {
    let ns = server.metadata.namespace.as_deref().unwrap_or_default();
    with_spec(
        server,
        effective(&server.spec, lookup(stores, ns, &server.spec).as_deref()),
    )
}

/// `server` with `spec` when that is a resolved copy.
pub fn with_spec<'a>(server: &'a MCPServer, spec: Cow<'_, MCPServerSpec>) -> Cow<'a, MCPServer> {
    match spec {
        Cow::Borrowed(_) => Cow::Borrowed(server),
        Cow::Owned(spec) => {
            let mut server = server.clone();
            server.spec = spec;
            Cow::Owned(server)
        }
    }
}

/// An MCPServer of ours with a `spec.serverRef` read as the selector it stands for (the port left unresolved):
/// for the questions about pods alone (which server selects a pod, which selectors overlap).
pub fn with_selector(server: &MCPServer) -> Cow<'_, MCPServer> {
    with_spec(server, effective(&server.spec, None))
}

/// The referenced server: a dependency (its creation, port or Service change re-derives), a problem while it is
/// missing, and the Host their controller's handshake sends.
pub fn contribute(input: &DeriveInput<'_>, fold: &mut Fold) {
    let Some(name) = referenced_name(input.spec) else {
        return;
    };
    let ns = input.namespace;
    let dep = Dependency::new(DepKind::SigMCPServer, Some(ns), name);
    fold.d.depend(DepKind::SigMCPServer, Some(ns), name);
    let Some(theirs) = input.sig_server else {
        fold.problem(
            &dep,
            format!(
                "{dep} (spec.serverRef) does not exist, or the operator cannot see it (is the SIG's \
                 mcp-lifecycle-operator installed, and was it before the operator started?): nothing to guard \
                 until it does"
            ),
        );
        return;
    };
    let port = theirs.spec.config.port;
    if !(1..=65535).contains(&port) {
        fold.problem(
            &dep,
            format!("{dep} (spec.serverRef) has no spec.config.port between 1 and 65535 (got {port})"),
        );
        return;
    }
    let host = format!(
        "{}.{ns}.svc.{}:{port}",
        theirs.service_name(),
        input.cluster_domain.trim_end_matches('.')
    );
    fold.hosts
        .add(&host, &format!("{dep} (its controller's handshake)"));
    if input.settings.guarded_port == port {
        fold.problem(
            &dep,
            format!(
                "{dep} (spec.serverRef) listens on port {port}, the port the guard would take: set \
                 spec.traffic.layout: GuardPort and spec.traffic.guardPort to another port"
            ),
        );
    }
}

/// Their MCPServers in the operator's scope (only watched when their API is served).
pub fn watch(w: &Watch<'_>) -> (Store<SigMCPServer>, Triggers<SigMCPServer>) {
    w.namespaced()
}

/// Their MCPServer changed → our MCPServers referencing it (now, and in their last derivation).
pub fn map(stores: &Stores, index: &DependencyIndex, theirs: &SigMCPServer) -> Vec<ObjectRef<MCPServer>> {
    let ns = theirs.namespace().unwrap_or_default();
    let name = theirs.name_any();
    // Servers with a `serverRef` are always looked up.
    let always = crate::index::Lookup::Any(vec![crate::index::Facet::Always]);
    let now = servers_where(stores, &ns, &always, |s| {
        referenced_name(&s.spec) == Some(name.as_str())
    });
    index.with_dependents(Dependency::new(DepKind::SigMCPServer, Some(&ns), &name), now)
}

/// The SIG MCPServer `server`'s `spec.serverRef` names, read live (the webhook, the kubectl plugin); `None`: no
/// reference, or it does not exist or its API is not served (the server then has no port and guards no pod).
pub async fn fetch(client: &kube::Client, server: &MCPServer) -> Result<Option<SigMCPServer>, kube::Error> {
    let (Some(name), Some(ns)) = (referenced_name(&server.spec), server.namespace()) else {
        return Ok(None);
    };
    match kube::Api::<SigMCPServer>::namespaced(client.clone(), &ns)
        .get_opt(name)
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        other => other,
    }
}

/// Whether their API (`mcp.x-k8s.io/v1beta1` MCPServers) is served.
pub async fn served(client: &kube::Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "mcpservers")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
