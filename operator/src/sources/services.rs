//! The Services that route to an MCPServer's pods: their DNS names are allowed (policy
//! `allowServiceDNSNames`), ports that reach the pods without passing the guard are `GuardBypass`, and they are
//! what Ingress and HTTPRoute backends are judged against ([`ServerServices::judge`]).
//!
//! - **Which Services route to the server.** A Service in the MCPServer's namespace with a non-empty selector
//!   routes to the server's pods when either every label the Service selects on is implied by the MCPServer's
//!   selector (`matchLabels`, or `In` with a single value) — the Service selects all the server's pods, maybe
//!   more — or the MCPServer's selector matches the Service's selector read as a pod's labels — every pod the
//!   Service selects is a server pod. `spec.services` replaces this discovery with an explicit list.
//! - **Which Service ports reach the server.** A port whose `targetPort` (default: `port`) is the guarded port,
//!   or a named `targetPort` resolving to it through the selected pods' container ports (a name no pod is known
//!   for is assumed to be the server's port). A numeric `targetPort` that is not the guarded port reaches the pod
//!   on a port the guard does not cover: reported as `GuardBypass`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::Stores;
use super::pods::PodPorts;
use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Finding, Fold, servers_where};
use crate::crd::{MCPServer, MCPServerSpec, TrafficLayout};
use crate::index::{Facet, Index, Lookup};
use crate::pod_contract::SIDECAR_NAME;
use crate::stores::{Triggers, Watch};

/// Where a Service port sends traffic, relative to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortTarget {
    /// The server's port (numeric match, a name resolving to it, or an unresolvable name when no pod is known).
    Server,
    /// Another numeric pod port.
    Other(i32),
    /// A named targetPort that no container of the selected pods declares (no endpoints).
    Unresolved(String),
}

/// Where a Service port's traffic goes, resolving names through the selected pods' container ports.
pub fn port_target_in(port: &ServicePort, server_port: i32, pods: &PodPorts<'_>) -> PortTarget {
    match &port.target_port {
        None => target_number(port.port, server_port),
        Some(IntOrString::Int(n)) => target_number(*n, server_port),
        Some(IntOrString::String(s)) => match s.parse::<i32>() {
            Ok(n) => target_number(n, server_port),
            Err(_) if pods.pods.is_empty() => PortTarget::Server,
            Err(_) => match pods.resolve(s) {
                Some(n) => target_number(n, server_port),
                None => PortTarget::Unresolved(s.clone()),
            },
        },
    }
}

/// The exact `targetPort` to write for a Service port in the `GuardPort` layout: the name the guard took over
/// (as the injected pods declare it on the guard's port), or the guard's port number.
fn guard_port_target(pods: &PodPorts<'_>, guard_port: i32) -> String {
    let name = pods
        .containers()
        .filter(|c| c.name == SIDECAR_NAME)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.container_port == guard_port)
        .and_then(|p| p.name.clone());
    match name {
        Some(n) => format!("{n:?} (the name the guard's port {guard_port} took over) or {guard_port}"),
        None => format!(
            "{guard_port} (the guard's port), or to the name of the server's container port, which the guard \
             takes over"
        ),
    }
}

fn target_number(n: i32, server_port: i32) -> PortTarget {
    if n == server_port {
        PortTarget::Server
    } else {
        PortTarget::Other(n)
    }
}

/// The labels every pod selected by `selector` is known to carry (`matchLabels` and single-value `In`).
fn implied_labels(selector: &LabelSelector) -> BTreeMap<&str, &str> {
    let mut labels: BTreeMap<&str, &str> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        if expr.operator == "In"
            && let Some([v]) = expr.values.as_deref()
        {
            labels.insert(expr.key.as_str(), v.as_str());
        }
    }
    labels
}

/// The label pairs a selector is looked up by: its `matchLabels` and those it implies. Whatever the selector
/// matches, or a Service it routes from ([`service_selects_server`]), carries at least one of them.
pub(crate) fn selector_facets(selector: &LabelSelector) -> Vec<Facet> {
    let mut pairs: Vec<Facet> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| Facet::Label(k.clone(), v.clone()))
        .chain(
            implied_labels(selector)
                .into_iter()
                .map(|(k, v)| Facet::Label(k.into(), v.into())),
        )
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// What a Service is looked up by: the pairs of its selector.
pub fn facets(service: &Service) -> Vec<Facet> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| Facet::Label(k.clone(), v.clone()))
        .collect()
}

/// The Services that may route to a server ([`service_is_candidate`] decides): those `spec.services` lists, else
/// those selecting on a label the server's selector names (every routing Service does, unless the selector names
/// none: then the namespace's).
pub fn lookup(spec: &MCPServerSpec) -> Lookup {
    match &spec.services {
        Some(names) => Lookup::Named(names.clone()),
        None => match selector_facets(&spec.selector) {
            facets if facets.is_empty() => Lookup::Namespace,
            facets => Lookup::Any(facets),
        },
    }
}

/// The MCPServers `service` may route to ([`service_is_candidate`] decides): those listing it, those whose
/// selector names a label it selects on, and those looked up always.
fn servers_lookup(name: &str, service: Option<&Service>) -> Lookup {
    let mut facets = vec![Facet::Always, Facet::Lists(DepKind::Service, name.to_string())];
    facets.extend(service.map(self::facets).into_iter().flatten());
    Lookup::Any(facets)
}

/// Whether `selector` is known to match every pod carrying at least `labels`.
fn selector_implied_by(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_some_and(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            // Pods may carry labels beyond the Service's selector; absence cannot be implied.
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Whether a Service with this selector sends traffic to pods of a server with `server_selector` (see the
/// module docs). An empty Service selector (manually managed endpoints) never matches.
pub fn service_selects_server(
    service_selector: &BTreeMap<String, String>,
    server_selector: &LabelSelector,
) -> bool {
    if service_selector.is_empty() {
        return false;
    }
    let implied = implied_labels(server_selector);
    if implied.is_empty()
        && server_selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
    {
        return false;
    }
    let service_covers_server = service_selector
        .iter()
        .all(|(k, v)| implied.get(k.as_str()) == Some(&v.as_str()));
    service_covers_server || selector_implied_by(server_selector, service_selector)
}

/// Whether `service` selects the server's pods (or is listed in `spec.services`).
pub fn service_is_candidate(service: &Service, spec: &MCPServerSpec) -> bool {
    match &spec.services {
        Some(names) => names.iter().any(|n| *n == service.name_any()),
        None => service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|sel| service_selects_server(sel, &spec.selector)),
    }
}

/// A Service that selects the server's pods.
pub struct ServerService<'a> {
    service: &'a Service,
    name: String,
    pods: &'a PodPorts<'a>,
}

impl ServerService<'_> {
    fn ports(&self) -> &[ServicePort] {
        self.service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default()
    }

    fn target(&self, port: &ServicePort, server_port: i32) -> PortTarget {
        port_target_in(port, server_port, self.pods)
    }

    /// Resolves a backend port (number or name) to the Service port.
    fn find_port(&self, number: Option<i32>, name: Option<&str>) -> Option<&ServicePort> {
        let ports = self.ports();
        match (number, name) {
            (Some(n), _) => ports.iter().find(|p| p.port == n),
            (None, Some(name)) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
            // Gateway API: the port is required for Services; a single-port Service is unambiguous.
            (None, None) => (ports.len() == 1).then(|| &ports[0]),
        }
    }
}

/// How one backend reference (of an Ingress or HTTPRoute) relates to the server.
pub enum BackendVerdict {
    /// Not one of the server's Services.
    Unrelated,
    /// Reaches the server.
    Server,
    /// A server Service, but on a port that does not reach the server.
    Mismatch(String),
}

fn describe_port(number: Option<i32>, name: Option<&str>) -> String {
    match (number, name) {
        (Some(n), _) => n.to_string(),
        (None, Some(name)) => format!("{name:?}"),
        (None, None) => "(unset)".into(),
    }
}

fn judge_backend(
    services: &[ServerService<'_>],
    svc_name: &str,
    number: Option<i32>,
    name: Option<&str>,
    server_port: i32,
) -> BackendVerdict {
    let Some(svc) = services.iter().find(|s| s.name == svc_name) else {
        return BackendVerdict::Unrelated;
    };
    match svc.find_port(number, name) {
        Some(p) => match svc.target(p, server_port) {
            PortTarget::Server => BackendVerdict::Server,
            PortTarget::Other(t) => BackendVerdict::Mismatch(format!(
                "Service {svc_name} port {} targets pod port {t}, not the server's port {server_port}",
                describe_port(number, name)
            )),
            PortTarget::Unresolved(n) => BackendVerdict::Mismatch(format!(
                "Service {svc_name} port {} targets the named port {n:?}, which no container of the selected \
                 pods declares",
                describe_port(number, name)
            )),
        },
        None => BackendVerdict::Mismatch(format!(
            "Service {svc_name} has no port {}",
            describe_port(number, name)
        )),
    }
}

/// The Services that select the server's pods (sorted by name), against which backends are judged: including
/// those with no port reaching the server (a backend on them is a port mismatch).
pub struct ServerServices<'a> {
    list: Vec<ServerService<'a>>,
    /// The port Services must target to reach the guard.
    guarded_port: i32,
}

impl ServerServices<'_> {
    /// Whether the named Service (of the server's namespace) selects the server's pods.
    pub fn contains(&self, name: &str) -> bool {
        self.list.iter().any(|s| s.name == name)
    }

    /// How a backend on Service `svc_name`, port `number` or `name`, relates to the server.
    pub fn judge(&self, svc_name: &str, number: Option<i32>, name: Option<&str>) -> BackendVerdict {
        judge_backend(&self.list, svc_name, number, name, self.guarded_port)
    }
}

/// The Services routing to the server: their DNS names, and their ports that bypass the guard.
pub fn contribute<'a>(
    input: &DeriveInput<'a>,
    pods: &'a PodPorts<'a>,
    fold: &mut Fold,
) -> ServerServices<'a> {
    let (ns, spec) = (input.namespace, input.spec);
    for n in spec.services.iter().flatten() {
        fold.d.depend(DepKind::Service, Some(ns), n);
        if !input.services.iter().any(|s| s.name_any() == *n) {
            let listed = Dependency::new(DepKind::Service, Some(ns), n);
            fold.problem(
                &listed,
                format!("{listed} (listed in spec.services) does not exist"),
            );
        }
    }
    let mut list: Vec<ServerService<'a>> = input
        .services
        .iter()
        .filter(|s| service_is_candidate(s, spec))
        .map(|s| ServerService {
            service: s,
            name: s.name_any(),
            pods,
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let guarded_port = input.settings.guarded_port;
    let allow_dns = input.policy.is_none_or(|p| p.allow_service_dns_names);
    for svc in &list {
        fold.d.depend(DepKind::Service, Some(ns), &svc.name);
        let mut reaching_ports = Vec::new();
        for port in svc.ports() {
            match svc.target(port, guarded_port) {
                PortTarget::Server => reaching_ports.push(port.port),
                PortTarget::Other(t) => {
                    if let Some(why) = bypass(input, svc, port, t, pods) {
                        fold.find(Finding::Bypass(why));
                    }
                }
                PortTarget::Unresolved(_) => {}
            }
        }
        if !reaching_ports.is_empty() {
            fold.d.services.push(svc.name.clone());
            if allow_dns {
                let source = format!("Service {ns}/{}", svc.name);
                for h in dns_names(&svc.name, ns, input.cluster_domain) {
                    fold.hosts.add(&h, &source);
                    // In the cluster, plain http on each Service port that reaches the server.
                    for port in &reaching_ports {
                        fold.endpoint("http", &h, Some(*port), &source);
                    }
                }
            }
        }
    }
    ServerServices { list, guarded_port }
}

/// The names a Service is reached by in the cluster.
fn dns_names(svc: &str, ns: &str, cluster_domain: &str) -> [String; 4] {
    [
        svc.to_string(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.{}", cluster_domain.trim_end_matches('.')),
    ]
}

/// Why a Service port that targets pod port `t` (not the guarded port) bypasses the guard, if it does.
fn bypass(
    input: &DeriveInput<'_>,
    svc: &ServerService<'_>,
    port: &ServicePort,
    t: i32,
    pods: &PodPorts<'_>,
) -> Option<String> {
    let ns = input.namespace;
    let guarded = input.settings.guarded_port;
    let port_desc = port
        .name
        .as_deref()
        .map_or_else(|| port.port.to_string(), |n| format!("{n:?} ({})", port.port));
    let name = &svc.name;
    if input.settings.layout == TrafficLayout::GuardPort && t == input.spec.port {
        return Some(format!(
            "Service {ns}/{name} port {port_desc} targets port {t}, the server's own port, which the GuardPort \
             layout leaves unguarded (and the operator's NetworkPolicy closes): set its targetPort to {}",
            guard_port_target(pods, guarded),
        ));
    }
    if pods.pods.is_empty() {
        return Some(format!(
            "Service {ns}/{name} port {port_desc} targets pod port {t}, not the server's port {guarded} that the \
             guard listens on; anything listening on {t} on all interfaces is reachable without Host/Origin checks"
        ));
    }
    pods.app_container_with_port(t).map(|c| {
        format!(
            "Service {ns}/{name} port {port_desc} targets port {t} of container {c:?}, which the guard does not \
             cover (it guards port {guarded} only); point targetPort at {guarded} or remove the port"
        )
    })
}

/// MCPServers in `ns` for which the named Service is (or is listed as) one of theirs.
fn servers_for_service_name(stores: &Stores, ns: &str, svc_name: &str) -> Vec<ObjectRef<MCPServer>> {
    let svc = stores.services.get(&ObjectRef::new(svc_name).within(ns));
    servers_where(
        stores,
        ns,
        &servers_lookup(svc_name, svc.as_deref()),
        |s| match &s.spec.services {
            Some(names) => names.iter().any(|n| n == svc_name),
            None => svc
                .as_deref()
                .is_some_and(|svc| service_is_candidate(svc, &s.spec)),
        },
    )
}

/// Services of the operator's scope.
pub fn watch(w: &Watch<'_>, index: &Index<Service>) -> (Store<Service>, Triggers<Service>) {
    w.indexed(index)
}

/// Service changed → the MCPServers it selects now, and those that used it before.
pub fn map(stores: &Stores, index: &DependencyIndex, svc: &Service) -> Vec<ObjectRef<MCPServer>> {
    let ns = svc.namespace().unwrap_or_default();
    let lookup = servers_lookup(&svc.name_any(), Some(svc));
    let now = servers_where(stores, &ns, &lookup, |s| service_is_candidate(svc, &s.spec));
    index.with_dependents(Dependency::new(DepKind::Service, Some(&ns), &svc.name_any()), now)
}

/// An object routing to Services (Ingress, HTTPRoute) changed → the MCPServers of the Services it routes to now
/// (`backends`: namespace and name), those listing it by name in a spec field (`listed`), and those it
/// contributed to before (`dep`).
pub fn map_routing(
    stores: &Stores,
    index: &DependencyIndex,
    dep: Dependency,
    backends: &[(String, String)],
    listed: fn(&MCPServerSpec) -> Option<&Vec<String>>,
) -> Vec<ObjectRef<MCPServer>> {
    let ns = dep.namespace.clone().unwrap_or_default();
    let mut now: Vec<_> = backends
        .iter()
        .flat_map(|(svc_ns, svc)| servers_for_service_name(stores, svc_ns, svc))
        .collect();
    let listing = Lookup::Any(vec![Facet::Lists(dep.kind, dep.name.clone())]);
    now.extend(servers_where(stores, &ns, &listing, |s| {
        listed(&s.spec).is_some_and(|names| names.contains(&dep.name))
    }));
    index.with_dependents(dep, now)
}

#[cfg(test)]
mod tests;
