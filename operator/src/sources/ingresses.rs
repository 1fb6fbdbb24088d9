//! Ingresses (`networking.k8s.io/v1`, the server's namespace) and the IngressClasses that decide whether they
//! count.
//!
//! A rule contributes its `host` when one of its paths has a backend Service port that reaches the server.
//! Single-label wildcards stay `*.x` (same meaning in the guard). A rule without a host, or a `defaultBackend`
//! to the server, accepts any host: reported as `CatchAllIngressRule`, never turned into `*`. A backend naming a
//! server Service on a port that does not reach the server is `IngressBackendPortMismatch`. Hosts listed in
//! `spec.tls[].hosts` give `https://` origins, others `http://`. Only Ingresses whose class an IngressClass serves
//! count (or, with the policy's `ingressClasses`, whose class it lists); the rest are `IngressNotCounted`.
//! ingress-nginx's `upstream-vhost` is allowed too.

use std::collections::{BTreeSet, HashSet};

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressRule, IngressServiceBackend};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::Stores;
use super::services::{BackendVerdict, ServerServices, map_routing};
use super::{DepKind, Dependency, DependencyIndex, DeriveInput, Finding, Fold, referenced};
use crate::crd::MCPServer;
use crate::index::{Facet, Index, Lookup};
use crate::stores::{Triggers, Watch};

/// The Service names an Ingress routes to (rules and default backend).
pub fn ingress_backend_services(ingress: &Ingress) -> BTreeSet<String> {
    backend_service_names(ingress).map(str::to_string).collect()
}

/// The Service names of an Ingress's backends as they appear (repeats included), without allocating.
fn backend_service_names(ingress: &Ingress) -> impl Iterator<Item = &str> {
    let spec = ingress.spec.as_ref();
    let default = spec
        .and_then(|s| s.default_backend.as_ref())
        .and_then(|b| b.service.as_ref());
    let rules = spec
        .into_iter()
        .flat_map(|s| s.rules.iter().flatten())
        .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
        .filter_map(|p| p.backend.service.as_ref());
    default.into_iter().chain(rules).map(|svc| svc.name.as_str())
}

/// What an Ingress is looked up by: the Services it routes to.
pub fn facets(ingress: &Ingress) -> Vec<Facet> {
    backend_service_names(ingress)
        .map(|svc| Facet::Backend(svc.to_string()))
        .collect()
}

/// The Ingresses [`concerns`] may accept: the listed ones, else those routing to one of `services`.
pub fn lookup(listed: Option<&[String]>, services: &HashSet<String>) -> Lookup {
    match listed {
        Some(names) => Lookup::Named(names.to_vec()),
        None => Lookup::Any(services.iter().map(|s| Facet::Backend(s.clone())).collect()),
    }
}

/// Whether an Ingress can add to the derivation of a server whose `spec.ingresses` is `listed`, given the names of
/// the Services that route to the server: exactly the Ingresses [`contribute`] looks at and finds involved (the
/// listed ones, else those with a backend on one of those Services).
pub fn concerns(ingress: &Ingress, listed: Option<&[String]>, services: &HashSet<String>) -> bool {
    match listed {
        Some(names) => ingress.metadata.name.as_ref().is_some_and(|n| names.contains(n)),
        None => backend_service_names(ingress).any(|svc| services.contains(svc)),
    }
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

fn judge(services: &ServerServices<'_>, backend: &IngressServiceBackend) -> BackendVerdict {
    let port = backend.port.as_ref();
    services.judge(
        &backend.name,
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref()),
    )
}

/// The Ingresses that route to the server's Services: their rule hosts (and origins), catch-all rules, backends
/// on the wrong port, and those not counted.
pub fn contribute(input: &DeriveInput<'_>, services: &ServerServices<'_>, fold: &mut Fold) {
    let ns = input.namespace;
    let ingresses = referenced(
        &input.ingresses,
        input.spec.ingresses.as_deref(),
        (DepKind::Ingress, "spec.ingresses"),
        ns,
        &mut fold.d,
    );
    let only_classes = input.policy.and_then(|p| p.ingress_classes.as_deref());
    for ing in ingresses {
        let ingress = Dependency::new(DepKind::Ingress, Some(ns), &ing.name_any());
        let Some(ispec) = &ing.spec else { continue };
        let involved = match ingress_counts(ing, &input.ingress_classes, only_classes) {
            // Reported only for Ingresses that name one of the server's Services (an IngressClass change
            // reconciles every MCPServer).
            Err(why) => {
                let routes_here = ingress_backend_services(ing)
                    .iter()
                    .any(|svc| services.contains(svc));
                if routes_here {
                    fold.find(Finding::IngressNotCounted {
                        ingress: ingress.clone(),
                        why,
                    });
                }
                routes_here
            }
            Ok(()) => {
                let mut involved = default_backend(ispec.default_backend.as_ref(), &ingress, services, fold);
                for (i, rule) in ispec.rules.iter().flatten().enumerate() {
                    involved |= contribute_rule(ing, (i, rule), &ingress, services, fold);
                }
                involved
            }
        };
        if involved {
            fold.d.dependencies.insert(ingress);
        }
    }
}

/// A `defaultBackend` to the server accepts any host. Whether it names one of the server's Services.
fn default_backend(
    backend: Option<&k8s_openapi::api::networking::v1::IngressBackend>,
    ingress: &Dependency,
    services: &ServerServices<'_>,
    fold: &mut Fold,
) -> bool {
    let Some(b) = backend.and_then(|b| b.service.as_ref()) else {
        return false;
    };
    match judge(services, b) {
        BackendVerdict::Unrelated => false,
        BackendVerdict::Server => {
            let message = format!(
                "{ingress}: defaultBackend sends requests for any host to Service {}; list the hostnames clients \
                 use in Ingress rules or in spec.hosts",
                b.name
            );
            fold.catch_all(ingress, message);
            true
        }
        BackendVerdict::Mismatch(m) => {
            fold.port_mismatch(ingress, format!("{ingress} defaultBackend: {m}"));
            true
        }
    }
}

/// One rule: its host when a path routes to the server. Whether the rule involves the server's Services.
fn contribute_rule(
    ing: &Ingress,
    (i, rule): (usize, &IngressRule),
    ingress: &Dependency,
    services: &ServerServices<'_>,
    fold: &mut Fold,
) -> bool {
    let mut routes = false;
    let mut involved = false;
    for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
        let Some(b) = &path.backend.service else { continue };
        match judge(services, b) {
            BackendVerdict::Unrelated => {}
            BackendVerdict::Server => routes = true,
            BackendVerdict::Mismatch(m) => {
                involved = true;
                let host = rule.host.as_deref().unwrap_or("*");
                let path = path.path.as_deref().unwrap_or("/");
                fold.port_mismatch(ingress, format!("{ingress} rule {host} path {path}: {m}"));
            }
        }
    }
    if !routes {
        return involved;
    }
    let source = &ingress.to_string();
    // ingress-nginx sends this Host upstream for every rule: that is what the guard sees. Added beside the rule
    // hosts (other controllers ignore the annotation).
    let vhost = ing
        .annotations()
        .get(UPSTREAM_VHOST_ANNOTATION)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    if let Some(vhost) = vhost {
        fold.hosts
            .add(vhost, &format!("{source} ({UPSTREAM_VHOST_ANNOTATION})"));
    }
    match rule.host.as_deref().filter(|h| !h.is_empty()) {
        Some(host) => {
            fold.hosts.add(host, source);
            let tls = ing.spec.iter().flat_map(|s| s.tls.iter().flatten());
            let https = tls
                .flat_map(|t| t.hosts.iter().flatten())
                .any(|t| tls_covers(t, host));
            let scheme = if https { "https" } else { "http" };
            fold.origins.add(&format!("{scheme}://{host}"), source);
            fold.endpoint(scheme, host, None, source);
        }
        None => {
            let message = format!(
                "{source}: rule {i} has no host, so it routes requests for any host to the server; set `host` on the \
                 rule (or add the hostnames clients use to spec.hosts)"
            );
            fold.catch_all(ingress, message);
        }
    }
    true
}

/// Ingresses of the operator's scope, and the cluster's IngressClasses (a class change reconciles every
/// MCPServer: see [`super::all_servers`]).
pub fn watch(
    w: &Watch<'_>,
    index: &Index<Ingress>,
) -> (
    Store<Ingress>,
    Triggers<Ingress>,
    Store<IngressClass>,
    Triggers<IngressClass>,
) {
    let (ingresses, ingress_stream) = w.indexed(index);
    let (classes, class_stream) = w.cluster();
    (ingresses, ingress_stream, classes, class_stream)
}

/// Ingress changed → the MCPServers of the Services it routes to now, those listing it in `spec.ingresses`, and
/// those it contributed to before.
pub fn map(stores: &Stores, index: &DependencyIndex, ing: &Ingress) -> Vec<ObjectRef<MCPServer>> {
    let ns = ing.namespace().unwrap_or_default();
    let backends: Vec<(String, String)> = ingress_backend_services(ing)
        .into_iter()
        .map(|svc| (ns.clone(), svc))
        .collect();
    let dep = Dependency::new(DepKind::Ingress, Some(&ns), &ing.name_any());
    map_routing(stores, index, dep, &backends, |s| s.ingresses.as_ref())
}

#[cfg(test)]
mod tests;
