//! The cluster's MCP servers, guarded or not: which Services are MCP servers, and which MCPServer of ours (if
//! any) selects each. `kubectl mcp-guard scan` and the operator's `unguarded_servers` gauge read the same rules
//! from here, so that the alert and the command never disagree about what an MCP server is.
//!
//! A Service port is an MCP server's when
//! - its `appProtocol` is `mcp` (kagent's discovery, the mcp-lifecycle-operator's convention) or a
//!   domain-prefixed `…/mcp` as Kubernetes asks implementation-specific protocols to be written
//!   (`kgateway.dev/mcp` from kmcp, `agentgateway.dev/mcp`; a future `kubernetes.io/mcp` too), compared
//!   case-insensitively;
//! - or its name is `mcp` or starts with `mcp-` (`mcp-http`, the name the SIG's servers' pods declare);
//! - or the Service carries kagent's `kagent.dev/mcp-service: "true"` label (its port: the
//!   `kagent.dev/mcp-service-port` annotation, else every port);
//! - or the Service is the one another MCP operator created for its server (the SIG's `mcp.x-k8s.io`, ToolHive,
//!   kmcp: every port), which the caller says ([`Inventory::theirs`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::MCPServer;
use crate::metrics::{ControllerMetrics, NamespaceLabels};
use crate::sources::Stores;
use crate::sources::services::service_is_candidate;
use crate::sources::sig_servers::{self, SigMCPServer};

/// kagent's label marking a Service as an MCP server for its agents.
pub const KAGENT_SERVICE_LABEL: &str = "kagent.dev/mcp-service";
/// kagent's annotation naming the MCP port of such a Service.
pub const KAGENT_PORT_ANNOTATION: &str = "kagent.dev/mcp-service-port";
/// kagent's annotation naming the MCP endpoint's path.
pub const KAGENT_PATH_ANNOTATION: &str = "kagent.dev/mcp-service-path";

/// Whether an `appProtocol` value says MCP: `mcp`, or `<domain>/mcp`.
pub fn is_mcp_app_protocol(value: &str) -> bool {
    let value = value.to_ascii_lowercase();
    match value.split_once('/') {
        None => value == "mcp",
        Some((domain, proto)) => !domain.is_empty() && proto == "mcp",
    }
}

/// Whether a Service port name says MCP: `mcp` or `mcp-…`.
pub fn is_mcp_port_name(name: &str) -> bool {
    name == "mcp" || name.strip_prefix("mcp-").is_some_and(|rest| !rest.is_empty())
}

/// A port of a Service taken for an MCP server, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct McpPort<'a> {
    pub port: &'a ServicePort,
    pub why: String,
}

/// The ports of `service` that its own fields mark as MCP (see the module docs), in the Service's order.
pub fn marked_ports(service: &Service) -> Vec<McpPort<'_>> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let kagent = service.labels().get(KAGENT_SERVICE_LABEL).map(String::as_str) == Some("true");
    let kagent_port = service.annotations().get(KAGENT_PORT_ANNOTATION);
    ports
        .iter()
        .filter_map(|p| {
            let why = if let Some(proto) = p.app_protocol.as_deref().filter(|a| is_mcp_app_protocol(a)) {
                format!("appProtocol {proto}")
            } else if let Some(name) = p.name.as_deref().filter(|n| is_mcp_port_name(n)) {
                format!("port name {name}")
            } else if kagent && kagent_port.is_none_or(|want| port_is(p, want)) {
                format!("label {KAGENT_SERVICE_LABEL}")
            } else {
                return None;
            };
            Some(McpPort { port: p, why })
        })
        .collect()
}

/// Whether `port` is the one `want` names (its number or its name).
fn port_is(port: &ServicePort, want: &str) -> bool {
    want.parse::<i32>().is_ok_and(|n| n == port.port) || port.name.as_deref() == Some(want)
}

/// Every port of `service`, each with `why` (a Service another operator made for its server).
pub fn all_ports<'a>(service: &'a Service, why: &str) -> Vec<McpPort<'a>> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .map(|p| McpPort {
            port: p,
            why: why.to_string(),
        })
        .collect()
}

/// The MCPServer of ours (among `servers`, any namespace) that selects `service`'s pods, if any; a
/// `spec.serverRef` stands for the selector it implies. The first by name when several do (the webhook refuses
/// such pods; the scan reports the one).
pub fn selected_by<'a>(service: &Service, servers: &[&'a MCPServer]) -> Option<&'a MCPServer> {
    let ns = service.namespace();
    let mut selecting: Vec<&MCPServer> = servers
        .iter()
        .copied()
        .filter(|s| s.namespace() == ns && s.metadata.deletion_timestamp.is_none())
        .filter(|s| service_is_candidate(service, &sig_servers::with_selector(s).spec))
        .collect();
    selecting.sort_by_key(|s| s.name_any());
    selecting.first().copied()
}

/// What the gauge is computed from: the Services, our MCPServers, and the Services other operators created for
/// their servers (`theirs`: namespace and name).
pub struct Inventory<'a> {
    pub services: &'a [Arc<Service>],
    pub servers: &'a [Arc<MCPServer>],
    pub theirs: BTreeSet<(String, String)>,
}

impl Inventory<'_> {
    /// Whether `service` is an MCP server by the module's rules.
    pub fn is_mcp(&self, service: &Service) -> bool {
        !marked_ports(service).is_empty()
            || self
                .theirs
                .contains(&(service.namespace().unwrap_or_default(), service.name_any()))
    }

    /// The number of MCP Services per namespace that no MCPServer of ours selects (namespaces with none left
    /// out).
    pub fn unguarded_by_namespace(&self) -> BTreeMap<String, i64> {
        let mut by_ns: HashMap<String, Vec<&MCPServer>> = HashMap::new();
        for s in self.servers {
            by_ns
                .entry(s.namespace().unwrap_or_default())
                .or_default()
                .push(s);
        }
        let mut counts = BTreeMap::new();
        for svc in self.services.iter().filter(|s| self.is_mcp(s)) {
            let ns = svc.namespace().unwrap_or_default();
            let servers = by_ns.get(&ns).map(Vec::as_slice).unwrap_or_default();
            if selected_by(svc, servers).is_none() {
                *counts.entry(ns).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// The Services the SIG's MCPServers in the cache created (their controller names it in the status).
fn sig_services(sig: &[Arc<SigMCPServer>]) -> BTreeSet<(String, String)> {
    sig.iter()
        .map(|s| (s.namespace().unwrap_or_default(), s.service_name()))
        .collect()
}

/// Sets the `unguarded_servers` gauge from the caches now, dropping namespaces that have none left
/// (`previous`: the namespaces set last time).
pub fn record(stores: &Stores, metrics: &ControllerMetrics, previous: &mut BTreeSet<String>) {
    let services = stores.services.state();
    let servers = stores.servers.state();
    let sig = stores.sig_servers.as_ref().map(|s| s.state()).unwrap_or_default();
    let counts = Inventory {
        services: &services,
        servers: &servers,
        theirs: sig_services(&sig),
    }
    .unguarded_by_namespace();
    for (ns, n) in &counts {
        metrics
            .unguarded_servers
            .get_or_create(&NamespaceLabels {
                namespace: ns.clone(),
            })
            .set(*n);
    }
    for gone in previous.iter().filter(|ns| !counts.contains_key(*ns)) {
        metrics.unguarded_servers.remove(&NamespaceLabels {
            namespace: gone.clone(),
        });
    }
    *previous = counts.into_keys().collect();
}

/// Keeps the gauge current: once the caches are synced, then every `every` (a scan of the caches, no API call;
/// a Service or MCPServer change shows within one period, which alerting does not need faster).
pub async fn run(stores: Stores, metrics: ControllerMetrics, every: Duration) {
    stores.wait_synced().await;
    let mut previous = BTreeSet::new();
    loop {
        record(&stores, &metrics, &mut previous);
        tokio::time::sleep(every).await;
    }
}

/// The number a Service port sends traffic to on the pods, when the Service says it (`targetPort` number or
/// default); `None` for a named `targetPort` (resolved through the pods' container ports by the caller).
pub fn target_number(port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests;
