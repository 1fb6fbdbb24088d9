//! HTTPRoutes (`gateway.networking.k8s.io/v1`, when the CRD is installed): those of the server's namespace, and
//! those of other namespaces when a ReferenceGrant lets them use its Services; with their parent Gateways and the
//! labels of their namespaces.
//!
//! Hostnames become Gateway multi-label wildcards (`*.x` → `**.x`), intersected with the hostnames of the parent
//! Gateway's listeners (filtered by `sectionName`/`port` and `allowedRoutes`) when the Gateway is known and has
//! not refused the route (`Accepted=False`); hostnames outside them are reported as dropped; a route with no
//! hostnames takes its listeners' hostnames; a `URLRewrite` hostname is allowed too. HTTPS listeners give
//! `https://` origins, HTTP `http://`; unknown parents give both.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::Stores;
use super::services::{BackendVerdict, ServerServices, map_routing};
use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Fold, referenced, servers_of_namespace};
use crate::crd::MCPServer;
use crate::gateway::{
    Gateway, HTTPRoute, ParentReference, ReferenceGrant, grants_route_to_service, listener_admits,
};
use crate::stores::{Triggers, Watch};

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

/// The routes that reach the server's Services: their hostnames, within their listeners'.
pub fn contribute(input: &DeriveInput<'_>, services: &ServerServices<'_>, fold: &mut Fold) {
    let ns = input.namespace;
    // An explicit spec.httpRoutes names routes of the server's namespace.
    let candidates: Vec<&HTTPRoute> = match input.spec.http_routes {
        Some(_) => input
            .http_routes
            .iter()
            .copied()
            .filter(|r| r.namespace().as_deref().is_none_or(|n| n == ns))
            .collect(),
        None => input.http_routes.clone(),
    };
    let routes = referenced(
        &candidates,
        input.spec.http_routes.as_deref(),
        (DepKind::HTTPRoute, "spec.httpRoutes"),
        ns,
        &mut fold.d,
    );
    for route in routes {
        contribute_route(input, services, route, fold);
    }
}

/// What a route's backends say about the server.
#[derive(Default)]
struct Backends<'a> {
    /// A backend reaches the server.
    reaches: bool,
    /// A backend names one of the server's Services (reaching it or not).
    involved: bool,
    /// Hosts a URLRewrite filter sends to the server instead of the request's.
    rewritten: BTreeSet<&'a str>,
}

fn judge_backends<'a>(
    input: &DeriveInput<'_>,
    services: &ServerServices<'_>,
    route: &'a HTTPRoute,
    dep: &Dependency,
    fold: &mut Fold,
) -> Backends<'a> {
    let ns = input.namespace;
    let route_ns = route.namespace().unwrap_or_else(|| ns.to_string());
    let mut out = Backends::default();
    for rule in &route.spec.rules {
        for b in rule.backend_refs.iter().filter(|b| b.is_service()) {
            if b.namespace.as_deref().unwrap_or(&route_ns) != ns {
                continue;
            }
            let granted = route_ns == ns
                || input
                    .reference_grants
                    .iter()
                    .any(|g| grants_route_to_service(g, &route_ns, &b.name));
            if !granted {
                if services.contains(&b.name) {
                    out.involved = true;
                    let message = format!(
                        "{dep} refers to Service {ns}/{} from another namespace, and no ReferenceGrant in {ns} \
                         lets HTTPRoutes from {route_ns} use it, so the gateway sends nothing there; create one \
                         (from HTTPRoute in {route_ns}, to Service {})",
                        b.name, b.name
                    );
                    fold.problem(dep, message);
                }
                continue;
            }
            match services.judge(&b.name, b.port, None) {
                BackendVerdict::Unrelated => {}
                BackendVerdict::Server => {
                    out.reaches = true;
                    let filters = rule.filters.iter().chain(&b.filters);
                    out.rewritten.extend(filters.filter_map(|f| f.rewritten_host()));
                }
                BackendVerdict::Mismatch(m) => {
                    out.involved = true;
                    fold.port_mismatch(dep, format!("{dep}: {m}"));
                }
            }
        }
    }
    out
}

/// What a route takes of a listener it is attached to.
#[derive(Clone, Copy)]
struct AttachedListener<'a> {
    hostname: Option<&'a str>,
    protocol: &'a str,
    port: i32,
}

/// The listeners a route is attached to: hostname, protocol and port of each listener of a known parent Gateway that
/// admits the route, whose Gateway did not refuse it (the route's Accepted condition for that parent). `None`
/// when no parent is known.
fn attached_listeners<'a>(
    input: &DeriveInput<'a>,
    route: &HTTPRoute,
    dep: &Dependency,
    fold: &mut Fold,
) -> Option<Vec<AttachedListener<'a>>> {
    let route_ns = route.namespace().unwrap_or_else(|| input.namespace.to_string());
    let mut listeners = Vec::new();
    let mut known_parent = false;
    for parent in route.spec.parent_refs.iter().filter(|p| p.is_gateway()) {
        let gw_ns = parent.namespace.as_deref().unwrap_or(&route_ns);
        fold.d.depend(DepKind::Gateway, Some(gw_ns), &parent.name);
        if let Some(refused) = route_refused_by(route, parent, &route_ns) {
            known_parent = true;
            let message = format!(
                "{dep} is not accepted by Gateway {gw_ns}/{} ({refused}); its hostnames are not allowed \
                 through it",
                parent.name
            );
            fold.problem(dep, message);
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
            if parent.section_name.as_ref().is_some_and(|s| *s != l.name)
                || parent.port.is_some_and(|p| p != l.port)
            {
                continue;
            }
            if let Err(why) = listener_admits(l, gw_ns, &route_ns, input.namespace_labels) {
                let message = format!(
                    "{dep}: listener {} of Gateway {gw_ns}/{} {why}, so the route is not attached to it",
                    l.name, parent.name
                );
                fold.problem(dep, message);
                continue;
            }
            listeners.push(AttachedListener {
                hostname: l.hostname.as_deref().filter(|h| !h.is_empty()),
                protocol: l.protocol.as_str(),
                port: l.port,
            });
        }
    }
    known_parent.then_some(listeners)
}

/// Adds a route hostname (Gateway syntax) with the origins its listener's protocol gives (both when unknown),
/// and where clients reach it: at the listener's scheme and port (`https` when the listener is unknown: a
/// Gateway in front of a server is a public door, and the guard takes `https` for a host reached both ways).
fn add_host(fold: &mut Fold, source: &str, host: &str, listener: Option<AttachedListener<'_>>) {
    let h = gateway_host(host);
    fold.hosts.add(&h, source);
    match listener.map(|l| (l.protocol, l.port)) {
        Some(("HTTPS" | "TLS", port)) => {
            fold.origins.add(&format!("https://{h}"), source);
            fold.endpoint("https", &h, Some(port), source);
        }
        Some((_, port)) => {
            fold.origins.add(&format!("http://{h}"), source);
            fold.endpoint("http", &h, Some(port), source);
        }
        None => {
            fold.origins.add(&format!("https://{h}"), source);
            fold.origins.add(&format!("http://{h}"), source);
            fold.endpoint("https", &h, None, source);
        }
    }
}

fn contribute_route(
    input: &DeriveInput<'_>,
    services: &ServerServices<'_>,
    route: &HTTPRoute,
    fold: &mut Fold,
) {
    let name = route.name_any();
    let route_ns = route.namespace().unwrap_or_else(|| input.namespace.to_string());
    let dep = Dependency::new(DepKind::HTTPRoute, Some(&route_ns), &name);
    let source = dep.to_string();
    let backends = judge_backends(input, services, route, &dep, fold);
    if backends.reaches || backends.involved {
        fold.d.dependencies.insert(dep.clone());
    }
    if !backends.reaches {
        return;
    }
    let route_hosts: Vec<&str> = route
        .spec
        .hostnames
        .iter()
        .map(String::as_str)
        .filter(|h| !h.is_empty())
        .collect();
    let rewrite_source = format!("{source} (URLRewrite hostname)");
    let Some(listeners) = attached_listeners(input, route, &dep, fold) else {
        if route_hosts.is_empty() {
            let message = format!(
                "{source} has no hostnames and no known parent Gateway listener hostname, so it accepts any host; \
                 set spec.hostnames on the route (or add the hostnames clients use to spec.hosts)"
            );
            fold.catch_all(&dep, message);
        }
        for h in &route_hosts {
            add_host(fold, &source, h, None);
        }
        for h in &backends.rewritten {
            fold.hosts.add(h, &rewrite_source);
        }
        return;
    };
    let attached = !listeners.is_empty();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for listener in listeners {
        match (listener.hostname, route_hosts.is_empty()) {
            (None, true) => {
                let message = format!(
                    "{source}: neither the route nor its Gateway listener sets a hostname, so it accepts any host; set \
                     spec.hostnames on the route or hostname on the listener"
                );
                fold.catch_all(&dep, message);
            }
            (Some(l), true) => add_host(fold, &source, l, Some(listener)),
            (None, false) => {
                for h in &route_hosts {
                    kept.insert(h);
                    add_host(fold, &source, h, Some(listener));
                }
            }
            (Some(l), false) => {
                for h in &route_hosts {
                    if let Some(i) = intersect_hostnames(l, h) {
                        kept.insert(h);
                        add_host(fold, &source, &i, Some(listener));
                    }
                }
            }
        }
    }
    if attached {
        for h in &backends.rewritten {
            fold.hosts.add(h, &rewrite_source);
        }
        let dropped: Vec<&str> = route_hosts
            .iter()
            .copied()
            .filter(|h| !kept.contains(h))
            .collect();
        if !dropped.is_empty() {
            let message = format!(
                "{source}: hostnames outside every listener it is attached to were dropped: {}",
                dropped.join(", ")
            );
            fold.problem(&dep, message);
        }
    }
}

/// The Gateway API objects' stores: all `None` without the Gateway API; `reference_grants` also `None` when
/// ReferenceGrants (`v1beta1`) are not served.
#[derive(Default)]
pub struct RouteStores {
    pub routes: Option<Store<HTTPRoute>>,
    pub gateways: Option<Store<Gateway>>,
    pub reference_grants: Option<Store<ReferenceGrant>>,
    pub namespaces: Option<Store<Namespace>>,
}

/// Their watch streams.
#[derive(Default)]
pub struct Streams {
    pub routes: Option<Triggers<HTTPRoute>>,
    pub gateways: Option<Triggers<Gateway>>,
    pub reference_grants: Option<Triggers<ReferenceGrant>>,
    pub namespaces: Option<Triggers<Namespace>>,
}

/// HTTPRoutes and ReferenceGrants of the operator's scope, every Gateway, and Namespaces (their labels, for
/// listeners' `allowedRoutes.namespaces.selector`) — when the Gateway API is installed.
pub async fn watch(w: &Watch<'_>, gateway_api: bool) -> Result<(RouteStores, Streams), kube::Error> {
    if !gateway_api {
        return Ok(Default::default());
    }
    let (routes, route_stream) = w.namespaced::<HTTPRoute>();
    let (gateways, gateway_stream) = w.cluster::<Gateway>();
    let (namespaces, namespace_stream) = w.cluster::<Namespace>();
    let (grants, grant_stream) = if reference_grants_served(w.client).await? {
        let (g, s) = w.namespaced::<ReferenceGrant>();
        (Some(g), Some(s))
    } else {
        (None, None)
    };
    let stores = RouteStores {
        routes: Some(routes),
        gateways: Some(gateways),
        reference_grants: grants,
        namespaces: Some(namespaces),
    };
    let streams = Streams {
        routes: Some(route_stream),
        gateways: Some(gateway_stream),
        reference_grants: grant_stream,
        namespaces: Some(namespace_stream),
    };
    Ok((stores, streams))
}

/// HTTPRoute changed → the MCPServers of the Services it routes to now, those listing it in `spec.httpRoutes`,
/// and those it contributed to before.
pub fn map(stores: &Stores, index: &DependencyIndex, route: &HTTPRoute) -> Vec<ObjectRef<MCPServer>> {
    let ns = route.namespace().unwrap_or_default();
    let backends: Vec<(String, String)> = route_backend_services(route).into_iter().collect();
    let dep = Dependency::new(DepKind::HTTPRoute, Some(&ns), &route.name_any());
    map_routing(stores, index, dep, &backends, |s| s.http_routes.as_ref())
}

/// Gateway changed → the MCPServers whose routes referenced it.
pub fn map_gateway(index: &DependencyIndex, gw: &Gateway) -> Vec<ObjectRef<MCPServer>> {
    let ns = gw.namespace().unwrap_or_default();
    index.with_dependents(
        Dependency::new(DepKind::Gateway, Some(&ns), &gw.name_any()),
        Vec::new(),
    )
}

/// ReferenceGrant changed → the MCPServers of its namespace (routes elsewhere may now reach them, or not).
pub fn map_grant(stores: &Stores, grant: &ReferenceGrant) -> Vec<ObjectRef<MCPServer>> {
    servers_of_namespace(stores, &grant.namespace().unwrap_or_default())
}

/// Namespace relabelled → its MCPServers (a listener's namespace selector may now admit its routes).
pub fn map_namespace(stores: &Stores, ns: &Namespace) -> Vec<ObjectRef<MCPServer>> {
    servers_of_namespace(stores, &ns.name_any())
}

/// The routes a server's derivation reads: those of its namespace, and those elsewhere that name one of its
/// Services (a ReferenceGrant decides whether they count).
pub fn routes_for(routes: &Store<HTTPRoute>, ns: &str) -> Vec<std::sync::Arc<HTTPRoute>> {
    routes.state_filter(|r| {
        r.namespace().as_deref() == Some(ns)
            || route_backend_services(r).iter().any(|(svc_ns, _)| svc_ns == ns)
    })
}

/// Whether ReferenceGrants (`gateway.networking.k8s.io/v1beta1`) are served.
pub async fn reference_grants_served(client: &kube::Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("gateway.networking.k8s.io/v1beta1")
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "referencegrants")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the Gateway API (HTTPRoute and Gateway, `gateway.networking.k8s.io/v1`) is served.
pub async fn gateway_api_installed(client: &kube::Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("gateway.networking.k8s.io/v1")
        .await
    {
        Ok(list) => {
            let has = |n: &str| list.resources.iter().any(|r| r.name == n);
            Ok(has("httproutes") && has("gateways"))
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
