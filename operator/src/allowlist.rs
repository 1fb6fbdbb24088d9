//! Derivation of an MCPServer's allowlist from plain objects: a pure function, no client.
//!
//! Rules (documented for users in `docs/operator.md`):
//!
//! - **Which Services route to the server.** A Service in the MCPServer's namespace with a non-empty selector
//!   routes to the server's pods when either every label the Service selects on is implied by the MCPServer's
//!   selector (`matchLabels`, or `In` with a single value) — the Service selects all the server's pods, maybe
//!   more — or the MCPServer's selector matches the Service's selector read as a pod's labels — every pod the
//!   Service selects is a server pod. `spec.services` replaces this discovery with an explicit list.
//! - **Which Service ports reach the server.** A port whose `targetPort` (default: `port`) is the server's
//!   `spec.port`, or a named `targetPort` (names are resolved by kubelet against the pod's container ports,
//!   which the operator does not watch; a name is assumed to be the server's port). A numeric `targetPort` that
//!   is not `spec.port` reaches the pod on a port the guard does not cover: reported as `GuardBypass`.
//! - **Ingress** (`networking.k8s.io/v1`, same namespace): a rule contributes its `host` when one of its paths
//!   has a backend Service port that reaches the server. Single-label wildcards stay `*.x` (same meaning in the
//!   guard). A rule without a host, or a `defaultBackend` to the server, accepts any host: reported as
//!   `CatchAllIngressRule`, never turned into `*`. A backend naming a server Service on a port that does not
//!   reach the server is `IngressBackendPortMismatch`. Hosts listed in `spec.tls[].hosts` give `https://`
//!   origins, others `http://`. Only Ingresses whose class an IngressClass serves count (or, with the policy's
//!   `ingressClasses`, whose class it lists); the rest are `IngressNotCounted`. ingress-nginx's `upstream-vhost`
//!   is allowed too.
//! - **HTTPRoute** (`gateway.networking.k8s.io/v1`, the namespace's, and other namespaces' when a ReferenceGrant
//!   lets them use the Service; when the CRD is installed): hostnames become Gateway multi-label wildcards
//!   (`*.x` → `**.x`), intersected with the hostnames of the parent Gateway's listeners (filtered by
//!   `sectionName`/`port` and `allowedRoutes`) when the Gateway is known and has not refused the route
//!   (`Accepted=False`); hostnames outside them are reported as dropped; a route with no hostnames takes its
//!   listeners' hostnames; a `URLRewrite` hostname is allowed too. HTTPS listeners give `https://` origins, HTTP
//!   `http://`; unknown parents give both.
//! - **Service DNS names** `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster-domain>` of every Service that
//!   routes to the server, when the policy's `allowServiceDNSNames` (default true).
//! - `spec.hosts` / `spec.origins` and the policy's `allowedHosts` / `allowedOrigins` are added as written.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, Service, ServicePort};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressServiceBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use mcp_guard_config::{ConfigSource, GuardConfig, Limits};

use crate::crd::{
    AllowlistEntry, GuardMode, MCPGuardPolicySpec, MCPServerSpec, RateLimitSpec, TrafficLayout,
};
use crate::gateway::{
    Gateway, HTTPRoute, ParentReference, ReferenceGrant, grants_route_to_service, listener_admits,
};
use crate::validate::{check_host_pattern, check_origin_pattern};
use crate::webhook::guarded_by;
use crate::webhook::inject::SIDECAR_NAME;

#[cfg(test)]
mod tests;

/// Everything a derivation reads. Lists hold the objects of the MCPServer's namespace (Gateways: any).
#[derive(Clone, Debug)]
pub struct DeriveInput<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a MCPServerSpec,
    /// The policy the server references; `None` when it does not exist (built-in defaults apply).
    pub policy: Option<&'a MCPGuardPolicySpec>,
    pub services: Vec<&'a Service>,
    pub ingresses: Vec<&'a Ingress>,
    /// The cluster's IngressClasses (cluster-scoped).
    pub ingress_classes: Vec<&'a IngressClass>,
    /// HTTPRoutes of the namespace, and those of other namespaces with a backendRef into it.
    pub http_routes: Vec<&'a HTTPRoute>,
    /// ReferenceGrants of the namespace (which routes elsewhere may use its Services).
    pub reference_grants: Vec<&'a ReferenceGrant>,
    pub gateways: Vec<&'a Gateway>,
    /// The other MCPServers of the namespace: `(name, selector)`.
    pub other_servers: Vec<(&'a str, &'a LabelSelector)>,
    /// Labels of the MCPServer's namespace (for listeners' `allowedRoutes.namespaces.selector`); `None`: unknown.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// Pods of the namespace (the derivation picks those the selector matches); empty when not watched.
    pub pods: Vec<&'a Pod>,
    pub cluster_domain: &'a str,
}

/// The kind of an object a derivation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DepKind {
    Pod,
    Service,
    Ingress,
    HTTPRoute,
    Gateway,
    MCPGuardPolicy,
    /// Another MCPServer of the namespace whose selector overlaps.
    MCPServer,
}

/// An object (existing or only referenced) whose change can change the derivation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dependency {
    pub kind: DepKind,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
}

impl Dependency {
    pub fn new(kind: DepKind, namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

/// The result of a derivation: the allowlist plus everything status should explain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Derivation {
    pub mode: GuardMode,
    pub hosts: Vec<AllowlistEntry>,
    pub origins: Vec<AllowlistEntry>,
    pub limits: Limits,
    /// Trusted proxy CIDRs (the policy's, then the server's).
    pub trusted_proxies: Vec<String>,
    /// Names of the Services that route to the server.
    pub services: Vec<String>,
    /// Ingress rules / routes that accept any host (`CatchAllIngressRule`).
    pub catch_all: Vec<String>,
    /// Ingress/Route backends on a Service port that does not reach the server (`IngressBackendPortMismatch`).
    pub port_mismatches: Vec<String>,
    /// Service ports that reach the pods without passing the guard (`GuardBypass`).
    pub bypasses: Vec<String>,
    /// Other MCPServers whose selectors overlap this one's (`SelectorOverlap`).
    pub overlaps: Vec<String>,
    /// Ingresses routing to the server that were not counted, each with why (`IngressNotCounted`).
    pub ignored_ingresses: Vec<String>,
    /// Other problems: missing explicit references, skipped invalid entries, routes outside their listeners.
    pub problems: Vec<String>,
    /// Whether the referenced policy was missing.
    pub policy_missing: bool,
    /// Objects whose change may change this derivation (for mapping watch events back to the MCPServer).
    pub dependencies: BTreeSet<Dependency>,
}

impl Derivation {
    /// The guard config the operator writes into the ConfigMap.
    pub fn guard_config(&self, namespace: &str, name: &str) -> GuardConfig {
        GuardConfig {
            mode: self.mode.into(),
            allowed_hosts: self.hosts.iter().map(|e| e.value.clone()).collect(),
            allowed_origins: self.origins.iter().map(|e| e.value.clone()).collect(),
            source: Some(ConfigSource {
                kind: "MCPServer".into(),
                namespace: Some(namespace.into()),
                name: name.into(),
            }),
            limits: self.limits.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            cors: false,
        }
    }
}

/// Values keyed by pattern, each with its sorted sources.
#[derive(Default)]
struct Collected(BTreeMap<String, BTreeSet<String>>);

impl Collected {
    fn add(&mut self, value: &str, source: &str) {
        let value = value.to_ascii_lowercase();
        self.0.entry(value).or_default().insert(source.to_string());
    }

    fn into_entries(self) -> Vec<AllowlistEntry> {
        self.0
            .into_iter()
            .map(|(value, sources)| AllowlistEntry {
                value,
                sources: sources.into_iter().collect(),
            })
            .collect()
    }
}

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

/// The container ports of the pods an MCPServer selects, to resolve named targetPorts and to tell whether a
/// port is served by the app (not the guard).
#[derive(Clone, Debug, Default)]
pub struct PodPorts<'a> {
    pub pods: Vec<&'a Pod>,
}

impl PodPorts<'_> {
    fn containers(&self) -> impl Iterator<Item = &Container> {
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

/// Whether a pod's labels match a label selector (concrete labels: all operators apply).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    let non_empty = selector.match_labels.as_ref().is_some_and(|m| !m.is_empty())
        || selector.match_expressions.as_ref().is_some_and(|m| !m.is_empty());
    non_empty && labels_ok && exprs_ok
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

/// The objects of one kind a derivation looks at, sorted by name: those an explicit spec list names (`field`),
/// or all of them when there is no list. A named object that does not exist is a problem, and a dependency, so
/// that its creation triggers a new derivation.
fn referenced<'a, K: ResourceExt<DynamicType = ()>>(
    all: &[&'a K],
    names: Option<&[String]>,
    (kind, field): (DepKind, &str),
    ns: &str,
    d: &mut Derivation,
) -> Vec<&'a K> {
    for n in names.into_iter().flatten() {
        d.dependencies.insert(Dependency::new(kind, Some(ns), n));
        if !all.iter().any(|o| o.name_any() == *n) {
            d.problems.push(format!(
                "{} {ns}/{n} (listed in {field}) does not exist",
                K::kind(&())
            ));
        }
    }
    let mut selected: Vec<&K> = all
        .iter()
        .copied()
        .filter(|o| names.is_none_or(|names| names.iter().any(|n| *n == o.name_any())))
        .collect();
    selected.sort_by_key(|o| o.name_any());
    selected
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

/// The Service names an Ingress routes to (rules and default backend).
pub fn ingress_backend_services(ingress: &Ingress) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if let Some(spec) = &ingress.spec {
        if let Some(svc) = spec.default_backend.as_ref().and_then(|b| b.service.as_ref()) {
            names.insert(svc.name.clone());
        }
        for rule in spec.rules.iter().flatten() {
            for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                if let Some(svc) = &path.backend.service {
                    names.insert(svc.name.clone());
                }
            }
        }
    }
    names
}

/// The `(namespace, name)` of the Services an HTTPRoute routes to.
pub fn route_backend_services(route: &HTTPRoute) -> BTreeSet<(String, String)> {
    let ns = route.namespace().unwrap_or_default();
    route
        .spec
        .rules
        .iter()
        .flat_map(|r| r.backend_refs.iter())
        .filter(|b| b.is_service())
        .map(|b| (b.namespace.clone().unwrap_or_else(|| ns.clone()), b.name.clone()))
        .collect()
}

/// The Gateway API host pattern for an HTTPRoute/listener hostname: `*.x` means one or more labels there,
/// which the guard spells `**.x`.
pub fn gateway_host(hostname: &str) -> String {
    match hostname.strip_prefix("*.") {
        Some(rest) => format!("**.{rest}"),
        None => hostname.to_string(),
    }
}

/// Whether a Gateway-style wildcard `*.suffix` (one or more labels) matches a host or narrower wildcard.
fn gw_wildcard_covers(suffix: &str, other: &str) -> bool {
    let other = other.strip_prefix("*.").unwrap_or(other).to_ascii_lowercase();
    other.ends_with(&format!(".{}", suffix.to_ascii_lowercase()))
}

/// The intersection of a listener hostname and a route hostname (Gateway API rules), in Gateway syntax
/// (`*.x` = one or more labels); `None` when they do not overlap.
pub fn intersect_hostnames(listener: &str, route: &str) -> Option<String> {
    let lw = listener.strip_prefix("*.");
    let rw = route.strip_prefix("*.");
    match (lw, rw) {
        (None, None) => listener.eq_ignore_ascii_case(route).then(|| route.to_string()),
        (None, Some(rs)) => gw_wildcard_covers(rs, listener).then(|| listener.to_string()),
        (Some(ls), None) => gw_wildcard_covers(ls, route).then(|| route.to_string()),
        (Some(ls), Some(rs)) => {
            if ls.eq_ignore_ascii_case(rs) || gw_wildcard_covers(ls, route) {
                Some(route.to_string())
            } else if gw_wildcard_covers(rs, listener) {
                Some(listener.to_string())
            } else {
                None
            }
        }
    }
}

/// Why a parent Gateway refused a route, from the route's status (`Accepted=False` for that parent); `None` when
/// it accepted the route or has not said (no Gateway controller has written a status yet).
pub fn route_refused_by(route: &HTTPRoute, parent: &ParentReference, route_ns: &str) -> Option<String> {
    let same = |p: &ParentReference| {
        p.name == parent.name
            && p.namespace.as_deref().unwrap_or(route_ns) == parent.namespace.as_deref().unwrap_or(route_ns)
            && p.section_name == parent.section_name
            && p.port == parent.port
    };
    route
        .status
        .iter()
        .flat_map(|s| s.parents.iter())
        .filter(|p| same(&p.parent_ref))
        .flat_map(|p| p.conditions.iter())
        .find(|c| c.type_ == "Accepted" && c.status == "False")
        .map(|c| format!("Accepted=False, {}: {}", c.reason, c.message))
}

/// Whether an Ingress TLS host (`*.x` = exactly one label) covers a rule host.
fn tls_covers(tls_host: &str, rule_host: &str) -> bool {
    if tls_host.eq_ignore_ascii_case(rule_host) {
        return true;
    }
    match tls_host.strip_prefix("*.") {
        Some(suffix) => rule_host.split_once('.').is_some_and(|(first, rest)| {
            first != "*" && !first.is_empty() && rest.eq_ignore_ascii_case(suffix)
        }),
        None => false,
    }
}

/// The legacy annotation naming an Ingress's class (before `spec.ingressClassName`).
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation marking the default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// ingress-nginx: the Host header it sends upstream instead of the request's.
pub const UPSTREAM_VHOST_ANNOTATION: &str = "nginx.ingress.kubernetes.io/upstream-vhost";

/// The class an Ingress is served as, and how it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngressClassOf {
    /// `spec.ingressClassName`.
    Field(String),
    /// The legacy annotation `kubernetes.io/ingress.class`.
    Annotation(String),
    /// Neither: the default IngressClass (`ingressclass.kubernetes.io/is-default-class: "true"`).
    Default(String),
    /// Neither, and no default IngressClass.
    None,
}

/// An Ingress's class: `spec.ingressClassName`, else the legacy annotation, else the default IngressClass (the
/// newest, as the API server's admission picks when several are marked default).
pub fn ingress_class_of(ingress: &Ingress, classes: &[&IngressClass]) -> IngressClassOf {
    if let Some(c) = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_ref()) {
        return IngressClassOf::Field(c.clone());
    }
    if let Some(c) = ingress.annotations().get(INGRESS_CLASS_ANNOTATION) {
        return IngressClassOf::Annotation(c.clone());
    }
    classes
        .iter()
        .filter(|c| c.annotations().get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true"))
        .max_by_key(|c| (c.metadata.creation_timestamp.clone().map(|t| t.0), c.name_any()))
        .map_or(IngressClassOf::None, |c| IngressClassOf::Default(c.name_any()))
}

/// Whether an Ingress's hosts count, and if not why: its class must be one an IngressClass serves (an Ingress
/// naming a class nobody serves routes nothing), or, when the policy lists `ingressClasses`, one of those. An
/// Ingress without any class counts (controllers such as ingress-nginx can serve those) unless the policy lists
/// classes.
pub fn ingress_counts(
    ingress: &Ingress,
    classes: &[&IngressClass],
    only: Option<&[String]>,
) -> Result<(), String> {
    let class = ingress_class_of(ingress, classes);
    let (name, how) = match &class {
        IngressClassOf::Field(c) => (c.as_str(), "spec.ingressClassName"),
        IngressClassOf::Annotation(c) => (c.as_str(), "annotation kubernetes.io/ingress.class"),
        IngressClassOf::Default(c) => (c.as_str(), "the default IngressClass"),
        IngressClassOf::None => {
            return match only {
                Some(only) => Err(format!(
                    "it has no class (no spec.ingressClassName, no kubernetes.io/ingress.class annotation, no \
                     default IngressClass) and the policy counts only ingressClasses {}; set \
                     spec.ingressClassName",
                    only.join(", ")
                )),
                None => Ok(()),
            };
        }
    };
    match only {
        Some(only) if only.iter().any(|c| c == name) => Ok(()),
        Some(only) => Err(format!(
            "its class {name:?} ({how}) is not one the policy counts (ingressClasses: {}); another controller \
             serves it",
            only.join(", ")
        )),
        None if classes.iter().any(|c| c.name_any() == name) => Ok(()),
        None => Err(format!(
            "its class {name:?} ({how}) is served by no IngressClass, so no controller routes it; create the \
             IngressClass or fix the class"
        )),
    }
}

struct ServerService<'a> {
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

/// How one backend reference relates to the server.
enum BackendVerdict {
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

fn judge_ingress_backend(
    services: &[ServerService<'_>],
    backend: &IngressServiceBackend,
    server_port: i32,
) -> BackendVerdict {
    let port = backend.port.as_ref();
    judge_backend(
        services,
        &backend.name,
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref()),
        server_port,
    )
}

fn short_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" (+{} more)", names.len() - SHOWN));
    }
    s
}

/// Pods that the guard does not protect (docs/webhook.md "What the operator's GuardBypass condition should
/// detect"): no guard, another MCPServer's guard, or an ordinary-container guard that is not ready while the app
/// runs (the start-up race in which the server can hold the port on all interfaces).
fn pod_bypasses(pods: &[&Pod], server: &str, d: &mut Derivation) {
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
            Some(_) => {
                let statuses = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_deref())
                    .unwrap_or_default();
                let guard_ready = statuses.iter().find(|c| c.name == SIDECAR_NAME).map(|c| c.ready);
                let app_running = statuses
                    .iter()
                    .any(|c| c.name != SIDECAR_NAME && c.state.as_ref().is_some_and(|s| s.running.is_some()));
                if guard_ready == Some(false) && app_running {
                    not_ready.push(name);
                }
            }
        }
    }
    let ns = pods.first().and_then(|p| p.namespace()).unwrap_or_default();
    if !unguarded.is_empty() {
        d.bypasses.push(format!(
            "pods without the guard in {ns}: {} (created before the MCPServer or the webhook, namespace not \
             opted in with mcpguard.dev/injection=enabled, pod opted out, host network, or admitted while the \
             webhook was down); restart them to inject the guard",
            short_names(&unguarded)
        ));
    }
    if !foreign.is_empty() {
        d.bypasses.push(format!(
            "pods guarded with another MCPServer's allowlist: {} (selectors changed after injection); restart \
             them",
            short_names(&foreign)
        ));
    }
    if !not_ready.is_empty() {
        d.bypasses.push(format!(
            "the guard is not ready while the server runs in pods {}: the server may hold the port on all \
             interfaces and answer on the pod IP without the guard; let it bind 127.0.0.1",
            short_names(&not_ready)
        ));
    }
}

/// Other MCPServers of the namespace that can select the same pods (the pod webhook refuses such pods), each a
/// dependency so that its change or deletion re-derives this one.
fn selector_overlaps(spec: &MCPServerSpec, others: &[(&str, &LabelSelector)], ns: &str, d: &mut Derivation) {
    use crate::selector::{Overlap, describe, overlap};
    for (other, theirs) in others {
        let ours = overlap(&spec.selector, theirs);
        if ours == Overlap::Disjoint {
            continue;
        }
        let message = match (ours, overlap(theirs, &spec.selector)) {
            (Overlap::Disjoint, _) => continue,
            (Overlap::Within, _) => format!(
                "every pod spec.selector selects is also selected by MCPServer {other:?}: the pod webhook refuses \
                 such pods (each pod can be guarded by exactly one MCPServer); make the selectors disjoint"
            ),
            (_, Overlap::Within) => format!(
                "spec.selector selects every pod of MCPServer {other:?}: the pod webhook refuses such pods (each pod \
                 can be guarded by exactly one MCPServer); make the selectors disjoint"
            ),
            (Overlap::Possible(labels), _) => format!(
                "a pod labelled {} would be selected by this MCPServer and by MCPServer {other:?}, and the pod \
                 webhook would refuse it; keep their pods' labels apart",
                describe(&labels)
            ),
        };
        d.overlaps.push(message);
        d.dependencies
            .insert(Dependency::new(DepKind::MCPServer, Some(ns), other));
    }
}

/// Derives the allowlist and everything status reports about it.
pub fn derive(input: &DeriveInput<'_>) -> Derivation {
    let ns = input.namespace;
    let spec = input.spec;
    let mut d = Derivation::default();
    let mut hosts = Collected::default();
    let mut origins = Collected::default();

    // Policy.
    let policy_name = spec.policy_name();
    d.dependencies
        .insert(Dependency::new(DepKind::MCPGuardPolicy, None, policy_name));
    let default_policy = MCPGuardPolicySpec::default();
    let policy = match input.policy {
        Some(p) => p,
        None => {
            d.policy_missing = true;
            &default_policy
        }
    };
    d.mode = spec.mode.or(policy.default_mode).unwrap_or_default();
    // The port Services must target to reach the guard: the server's in SharedPort, the guard's own in GuardPort.
    let layout = spec.layout(Some(policy));
    let server_port = spec.guarded_port(Some(policy));
    // Rate limits: each setting the MCPServer leaves out comes from the policy.
    let policy_limits = Limits {
        max_request_body_bytes: policy
            .limits
            .as_ref()
            .and_then(|l| l.max_request_body_bytes)
            .and_then(|n| u64::try_from(n).ok()),
        ..policy
            .rate_limits
            .as_ref()
            .map(RateLimitSpec::to_limits)
            .unwrap_or_default()
    };
    d.limits = spec
        .rate_limits
        .as_ref()
        .map(RateLimitSpec::to_limits)
        .unwrap_or_default()
        .or(&policy_limits);
    // Trusted proxies: the policy's and the server's, only those the guard will load.
    for (entries, source) in [
        (&policy.trusted_proxies, "MCPGuardPolicy"),
        (&spec.trusted_proxies, "MCPServer"),
    ] {
        for p in entries {
            match mcp_guard_config::Cidr::parse(p) {
                Ok(_) if !d.trusted_proxies.contains(p) => d.trusted_proxies.push(p.clone()),
                Ok(_) => {}
                Err(err) => d
                    .problems
                    .push(format!("skipped trusted proxy {p:?} from {source}: {err}")),
            }
        }
    }

    // Pods the server selects (running or pending) and what would bypass the guard on them.
    let selected: Vec<&Pod> = input
        .pods
        .iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| {
            selector_matches(
                &spec.selector,
                p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            )
        })
        .collect();
    pod_bypasses(&selected, input.name, &mut d);
    selector_overlaps(spec, &input.other_servers, ns, &mut d);
    for p in &selected {
        d.dependencies
            .insert(Dependency::new(DepKind::Pod, Some(ns), &p.name_any()));
    }
    let pod_ports = PodPorts { pods: selected };
    // Informational: the app declares ports, but not spec.port (a likely typo in spec.port).
    let app_ports: BTreeSet<i32> = pod_ports
        .containers()
        .filter(|c| c.name != SIDECAR_NAME)
        .flat_map(|c| c.ports.iter().flatten().map(|p| p.container_port))
        .collect();
    if !app_ports.is_empty() && !app_ports.contains(&spec.port) {
        let declared: Vec<String> = app_ports.iter().map(ToString::to_string).collect();
        d.problems.push(format!(
            "no container of the selected pods declares port {} (spec.port); they declare {}: check \
             spec.port",
            spec.port,
            declared.join(", ")
        ));
    }

    // Services.
    if let Some(names) = &spec.services {
        for n in names {
            d.dependencies
                .insert(Dependency::new(DepKind::Service, Some(ns), n));
            if !input.services.iter().any(|s| s.name_any() == *n) {
                d.problems.push(format!(
                    "Service {ns}/{n} (listed in spec.services) does not exist"
                ));
            }
        }
    }
    let mut server_services: Vec<ServerService<'_>> = input
        .services
        .iter()
        .filter(|s| service_is_candidate(s, spec))
        .map(|s| ServerService {
            service: s,
            name: s.name_any(),
            pods: &pod_ports,
        })
        .collect();
    server_services.sort_by(|a, b| a.name.cmp(&b.name));
    for svc in &server_services {
        d.dependencies
            .insert(Dependency::new(DepKind::Service, Some(ns), &svc.name));
        let mut reaches = false;
        for p in svc.ports() {
            let port_desc = p
                .name
                .as_deref()
                .map_or_else(|| p.port.to_string(), |n| format!("{n:?} ({})", p.port));
            match svc.target(p, server_port) {
                PortTarget::Server => reaches = true,
                PortTarget::Other(t) if layout == TrafficLayout::GuardPort && t == spec.port => {
                    d.bypasses.push(format!(
                        "Service {ns}/{} port {port_desc} targets port {t}, the server's own port, which the \
                         GuardPort layout leaves unguarded (and the operator's NetworkPolicy closes): set its \
                         targetPort to {}",
                        svc.name,
                        guard_port_target(&pod_ports, server_port),
                    ));
                }
                PortTarget::Other(t) if pod_ports.pods.is_empty() => d.bypasses.push(format!(
                    "Service {ns}/{} port {port_desc} targets pod port {t}, not the server's port {server_port} \
                     that the guard listens on; anything listening on {t} on all interfaces is reachable without \
                     Host/Origin checks",
                    svc.name,
                )),
                PortTarget::Other(t) => {
                    if let Some(c) = pod_ports.app_container_with_port(t) {
                        d.bypasses.push(format!(
                            "Service {ns}/{} port {port_desc} targets port {t} of container {c:?}, which the guard \
                             does not cover (it guards port {server_port} only); point targetPort at {server_port} \
                             or remove the port",
                            svc.name,
                        ));
                    }
                }
                PortTarget::Unresolved(_) => {}
            }
        }
        if reaches {
            d.services.push(svc.name.clone());
            if policy.allow_service_dns_names {
                let source = format!("Service {ns}/{}", svc.name);
                let s = &svc.name;
                for h in [
                    s.clone(),
                    format!("{s}.{ns}"),
                    format!("{s}.{ns}.svc"),
                    format!("{s}.{ns}.svc.{}", input.cluster_domain.trim_end_matches('.')),
                ] {
                    hosts.add(&h, &source);
                }
            }
        }
    }
    // Backends are judged against every server Service, including ones without a server port (mismatch).
    let candidates = server_services;

    // Ingresses.
    let ingresses = referenced(
        &input.ingresses,
        spec.ingresses.as_deref(),
        (DepKind::Ingress, "spec.ingresses"),
        ns,
        &mut d,
    );
    let only_classes = policy.ingress_classes.as_deref();
    for ing in ingresses {
        let name = ing.name_any();
        let source = format!("Ingress {ns}/{name}");
        let Some(ispec) = &ing.spec else { continue };
        if let Err(why) = ingress_counts(ing, &input.ingress_classes, only_classes) {
            // Reported only for Ingresses that name one of the server's Services (an IngressClass change reconciles
            // every MCPServer).
            let routes_here = ingress_backend_services(ing)
                .iter()
                .any(|svc| candidates.iter().any(|c| c.name == *svc));
            if routes_here {
                d.ignored_ingresses
                    .push(format!("{source} is not counted: {why}"));
                d.dependencies
                    .insert(Dependency::new(DepKind::Ingress, Some(ns), &name));
            }
            continue;
        }
        // ingress-nginx sends this Host upstream for every rule: that is what the guard sees. Added when a rule
        // routes to the server (below), beside the rule hosts (other controllers ignore the annotation).
        let vhost = ing
            .annotations()
            .get(UPSTREAM_VHOST_ANNOTATION)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        let tls_hosts: Vec<&str> = ispec
            .tls
            .iter()
            .flatten()
            .flat_map(|t| t.hosts.iter().flatten())
            .map(String::as_str)
            .collect();
        let mut involved = false;
        if let Some(b) = ispec.default_backend.as_ref().and_then(|b| b.service.as_ref()) {
            match judge_ingress_backend(&candidates, b, server_port) {
                BackendVerdict::Unrelated => {}
                BackendVerdict::Server => {
                    involved = true;
                    d.catch_all.push(format!(
                        "{source}: defaultBackend sends requests for any host to Service {}; list the hostnames \
                         clients use in Ingress rules or in spec.hosts",
                        b.name
                    ));
                }
                BackendVerdict::Mismatch(m) => {
                    involved = true;
                    d.port_mismatches.push(format!("{source} defaultBackend: {m}"));
                }
            }
        }
        for (i, rule) in ispec.rules.iter().flatten().enumerate() {
            let mut routes = false;
            for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let Some(b) = &path.backend.service else { continue };
                match judge_ingress_backend(&candidates, b, server_port) {
                    BackendVerdict::Unrelated => {}
                    BackendVerdict::Server => routes = true,
                    BackendVerdict::Mismatch(m) => {
                        involved = true;
                        let host = rule.host.as_deref().unwrap_or("*");
                        d.port_mismatches.push(format!(
                            "{source} rule {host} path {}: {m}",
                            path.path.as_deref().unwrap_or("/")
                        ));
                    }
                }
            }
            if !routes {
                continue;
            }
            involved = true;
            if let Some(vhost) = vhost {
                hosts.add(vhost, &format!("{source} ({UPSTREAM_VHOST_ANNOTATION})"));
            }
            match rule.host.as_deref().filter(|h| !h.is_empty()) {
                Some(host) => {
                    hosts.add(host, &source);
                    let scheme = if tls_hosts.iter().any(|t| tls_covers(t, host)) {
                        "https"
                    } else {
                        "http"
                    };
                    origins.add(&format!("{scheme}://{host}"), &source);
                }
                None => d.catch_all.push(format!(
                    "{source}: rule {i} has no host, so it routes requests for any host to the server; set \
                     `host` on the rule (or add the hostnames clients use to spec.hosts)"
                )),
            }
        }
        if involved {
            d.dependencies
                .insert(Dependency::new(DepKind::Ingress, Some(ns), &name));
        }
    }

    // HTTPRoutes.
    // An explicit spec.httpRoutes names routes of the server's namespace.
    let listed_routes: Vec<&HTTPRoute> = match spec.http_routes {
        Some(_) => input
            .http_routes
            .iter()
            .copied()
            .filter(|r| r.namespace().as_deref().is_none_or(|n| n == ns))
            .collect(),
        None => input.http_routes.clone(),
    };
    let routes = referenced(
        &listed_routes,
        spec.http_routes.as_deref(),
        (DepKind::HTTPRoute, "spec.httpRoutes"),
        ns,
        &mut d,
    );
    for route in routes {
        let name = route.name_any();
        let route_ns = route.namespace().unwrap_or_else(|| ns.to_string());
        let source = format!("HTTPRoute {route_ns}/{name}");
        let mut reaches = false;
        let mut involved = false;
        // Hosts a URLRewrite filter sends to the server instead of the request's.
        let mut rewritten: BTreeSet<&str> = BTreeSet::new();
        for rule in &route.spec.rules {
            for b in rule.backend_refs.iter().filter(|b| b.is_service()) {
                if b.namespace.as_deref().unwrap_or(&route_ns) != ns {
                    continue;
                }
                if route_ns != ns
                    && !input
                        .reference_grants
                        .iter()
                        .any(|g| grants_route_to_service(g, &route_ns, &b.name))
                {
                    if candidates.iter().any(|c| c.name == b.name) {
                        involved = true;
                        d.problems.push(format!(
                            "{source} refers to Service {ns}/{} from another namespace, and no ReferenceGrant in {ns} \
                             lets HTTPRoutes from {route_ns} use it, so the gateway sends nothing there; create one \
                             (from HTTPRoute in {route_ns}, to Service {})",
                            b.name, b.name
                        ));
                    }
                    continue;
                }
                match judge_backend(&candidates, &b.name, b.port, None, server_port) {
                    BackendVerdict::Unrelated => {}
                    BackendVerdict::Server => {
                        reaches = true;
                        rewritten.extend(
                            rule.filters
                                .iter()
                                .chain(&b.filters)
                                .filter_map(|f| f.rewritten_host()),
                        );
                    }
                    BackendVerdict::Mismatch(m) => {
                        involved = true;
                        d.port_mismatches.push(format!("{source}: {m}"));
                    }
                }
            }
        }
        if !reaches {
            if involved {
                d.dependencies
                    .insert(Dependency::new(DepKind::HTTPRoute, Some(&route_ns), &name));
            }
            continue;
        }
        d.dependencies
            .insert(Dependency::new(DepKind::HTTPRoute, Some(&route_ns), &name));

        // Listeners of the parent Gateways that are known, that admit the route and whose Gateway did not
        // refuse it (the route's Accepted condition for that parent).
        let mut listeners: Vec<(Option<&str>, &str)> = Vec::new();
        let mut known_parent = false;
        for parent in route.spec.parent_refs.iter().filter(|p| p.is_gateway()) {
            let gw_ns = parent.namespace.as_deref().unwrap_or(&route_ns);
            d.dependencies
                .insert(Dependency::new(DepKind::Gateway, Some(gw_ns), &parent.name));
            if let Some(refused) = route_refused_by(route, parent, &route_ns) {
                known_parent = true;
                d.problems.push(format!(
                    "{source} is not accepted by Gateway {gw_ns}/{} ({refused}); its hostnames are not allowed \
                     through it",
                    parent.name
                ));
                continue;
            }
            let Some(gw) = input
                .gateways
                .iter()
                .find(|g| g.name_any() == parent.name && g.namespace().as_deref() == Some(gw_ns))
            else {
                continue;
            };
            known_parent = true;
            for l in &gw.spec.listeners {
                if parent.section_name.as_ref().is_some_and(|s| *s != l.name) {
                    continue;
                }
                if parent.port.is_some_and(|p| p != l.port) {
                    continue;
                }
                if let Err(why) = listener_admits(l, gw_ns, &route_ns, input.namespace_labels) {
                    d.problems.push(format!(
                        "{source}: listener {} of Gateway {gw_ns}/{} {why}, so the route is not attached to it",
                        l.name, parent.name
                    ));
                    continue;
                }
                listeners.push((
                    l.hostname.as_deref().filter(|h| !h.is_empty()),
                    l.protocol.as_str(),
                ));
            }
        }
        let mut add = |host: &str, protocol: Option<&str>| {
            let h = gateway_host(host);
            hosts.add(&h, &source);
            match protocol {
                Some("HTTPS") | Some("TLS") => origins.add(&format!("https://{h}"), &source),
                Some(_) => origins.add(&format!("http://{h}"), &source),
                None => {
                    origins.add(&format!("https://{h}"), &source);
                    origins.add(&format!("http://{h}"), &source);
                }
            }
        };
        let route_hosts: Vec<&str> = route
            .spec
            .hostnames
            .iter()
            .map(String::as_str)
            .filter(|h| !h.is_empty())
            .collect();
        let rewrite_source = format!("{source} (URLRewrite hostname)");
        if !known_parent {
            if route_hosts.is_empty() {
                d.catch_all.push(format!(
                    "{source} has no hostnames and no known parent Gateway listener hostname, so it accepts any \
                     host; set spec.hostnames on the route (or add the hostnames clients use to spec.hosts)"
                ));
            }
            for h in &route_hosts {
                add(h, None);
            }
            for h in &rewritten {
                hosts.add(h, &rewrite_source);
            }
            continue;
        }
        let mut attached = false;
        let mut kept: BTreeSet<&str> = BTreeSet::new();
        for (listener_host, protocol) in listeners {
            attached = true;
            match (listener_host, route_hosts.is_empty()) {
                (None, true) => d.catch_all.push(format!(
                    "{source}: neither the route nor its Gateway listener sets a hostname, so it accepts any \
                     host; set spec.hostnames on the route or hostname on the listener"
                )),
                (Some(l), true) => add(l, Some(protocol)),
                (None, false) => {
                    for h in &route_hosts {
                        kept.insert(h);
                        add(h, Some(protocol));
                    }
                }
                (Some(l), false) => {
                    for h in &route_hosts {
                        if let Some(i) = intersect_hostnames(l, h) {
                            kept.insert(h);
                            add(&i, Some(protocol));
                        }
                    }
                }
            }
        }
        if attached {
            for h in &rewritten {
                hosts.add(h, &rewrite_source);
            }
            let dropped: Vec<&str> = route_hosts
                .iter()
                .copied()
                .filter(|h| !kept.contains(h))
                .collect();
            if !dropped.is_empty() {
                d.problems.push(format!(
                    "{source}: hostnames outside every listener it is attached to were dropped: {}",
                    dropped.join(", ")
                ));
            }
        }
    }

    // Explicit entries.
    for h in &spec.hosts {
        hosts.add(h, "MCPServer spec.hosts");
    }
    for o in &spec.origins {
        origins.add(o, "MCPServer spec.origins");
    }
    let policy_source = format!("MCPGuardPolicy {policy_name}");
    if input.policy.is_some() {
        for h in &policy.allowed_hosts {
            hosts.add(h, &policy_source);
        }
        for o in &policy.allowed_origins {
            origins.add(o, &policy_source);
        }
    }

    // Keep only what the guard will load; say what was dropped.
    let mut host_entries = hosts.into_entries();
    host_entries.retain(|e| match check_host_pattern(&e.value) {
        Ok(()) => true,
        Err(err) => {
            d.problems.push(format!(
                "skipped host {:?} from {}: {err}",
                e.value,
                e.sources.join(", ")
            ));
            false
        }
    });
    let mut origin_entries = origins.into_entries();
    origin_entries.retain(|e| match check_origin_pattern(&e.value) {
        Ok(()) => true,
        Err(err) => {
            d.problems.push(format!(
                "skipped origin {:?} from {}: {err}",
                e.value,
                e.sources.join(", ")
            ));
            false
        }
    });
    d.hosts = host_entries;
    d.origins = origin_entries;
    d
}
