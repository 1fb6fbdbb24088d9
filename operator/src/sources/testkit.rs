//! The sources' tests' kit: the objects of a derivation's table rows ([`World`], derived with [`World::derive`]),
//! and the controller's [`Stores`] filled with objects for the reverse mappers ([`Cache`]: no API server, the same
//! reflector stores the controller reads, written through their writers).

pub use std::collections::BTreeMap;

pub use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
pub use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
pub use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;

use super::{Indexes, Stores};
pub use crate::crd::{AllowlistEntry, GuardMode, MCPGuardPolicySpec, MCPServer, MCPServerSpec, PolicyLimits};
pub use crate::gateway::{
    AllowedRoutes, BackendRef, Gateway, GatewaySpec, HTTPRoute, HTTPRouteFilter, HTTPRouteRule,
    HTTPRouteSpec, HTTPRouteStatus, HTTPURLRewriteFilter, Listener, ParentReference, ReferenceGrantSpec,
    RouteGroupKind, RouteNamespaces, RouteParentStatus,
};
use crate::index::Index;
pub use crate::sources::ingresses::{DEFAULT_CLASS_ANNOTATION, INGRESS_CLASS_ANNOTATION};
pub use crate::sources::{Derivation, DeriveInput, FindingKind, derive};

/// Labels in a table row.
pub type Pairs = &'static [(&'static str, &'static str)];
/// The servers a row expects reconciled, as `namespace/name`.
pub type Want = &'static [&'static str];

/// The objects in the caches.
#[derive(Default)]
pub struct Cache {
    pub servers: Vec<MCPServer>,
    pub services: Vec<Service>,
    pub ingresses: Vec<Ingress>,
    pub pods: Vec<Pod>,
    pub routes: Vec<HTTPRoute>,
    pub sig_servers: Vec<crate::sources::sig_servers::SigMCPServer>,
}

fn store<K>(objects: &[K]) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
    }
    reader
}

/// A store of these objects, and the objects in its index.
fn indexed<K>(objects: &[K], index: &Index<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    for o in objects {
        index.apply(o);
    }
    store(objects)
}

impl Cache {
    pub fn stores(&self) -> Stores {
        let indexes = Indexes::default();
        Stores {
            servers: indexed(&self.servers, &indexes.servers),
            services: indexed(&self.services, &indexes.services),
            ingresses: indexed(&self.ingresses, &indexes.ingresses),
            ingress_classes: store(&[]),
            policies: store(&[]),
            config_maps: store(&[]),
            network_policies: store(&[]),
            pods: indexed(&self.pods, &indexes.pods),
            routes: Some(store(&self.routes)),
            gateways: Some(store(&[])),
            reference_grants: Some(store(&[])),
            namespaces: Some(store(&[])),
            sig_servers: Some(store(&self.sig_servers)),
            synced: tokio::sync::watch::channel(true).1,
            indexes,
        }
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn meta_in(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

/// An MCPServer selecting these labels, on port 8000.
pub fn server(ns: &str, name: &str, selector: &[(&str, &str)]) -> MCPServer {
    let mut s = MCPServer::new(
        name,
        MCPServerSpec {
            selector: LabelSelector {
                match_labels: Some(labels(selector)),
                ..Default::default()
            },
            port: 8000,
            ..Default::default()
        },
    );
    s.metadata.namespace = Some(ns.into());
    s
}

pub fn labelled_pod(ns: &str, name: &str, pod_labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            labels: Some(labels(pod_labels)),
            ..meta_in(ns, name)
        },
        ..Default::default()
    }
}

/// A Service selecting these labels (no ports: the mappers read selectors only).
pub fn selecting_service(ns: &str, name: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        metadata: meta_in(ns, name),
        spec: Some(ServiceSpec {
            selector: Some(labels(selector)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `namespace/name` of each server, sorted.
pub fn names(refs: Vec<ObjectRef<MCPServer>>) -> Vec<String> {
    let mut names: Vec<String> = refs
        .iter()
        .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
        .collect();
    names.sort();
    names
}

pub const NS: &str = "team-a";

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..Default::default()
    }
}

pub fn spec(pairs: &[(&str, &str)]) -> MCPServerSpec {
    MCPServerSpec {
        selector: LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        },
        port: 8000,
        ..Default::default()
    }
}

/// A Service port: `(port, targetPort, name)`.
pub fn sport(port: i32, target: Option<IntOrString>, name: Option<&str>) -> ServicePort {
    ServicePort {
        port,
        target_port: target,
        name: name.map(str::to_string),
        ..Default::default()
    }
}

pub fn service(name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            selector: (!selector.is_empty()).then(|| labels(selector)),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn web_service() -> Service {
    service(
        "weather",
        &[("app", "weather")],
        vec![sport(80, Some(IntOrString::Int(8000)), Some("http"))],
    )
}

pub fn backend(svc: &str, port: ServiceBackendPort) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: svc.into(),
            port: Some(port),
        }),
        resource: None,
    }
}

pub fn num(n: i32) -> ServiceBackendPort {
    ServiceBackendPort {
        number: Some(n),
        name: None,
    }
}

pub fn named(n: &str) -> ServiceBackendPort {
    ServiceBackendPort {
        number: None,
        name: Some(n.into()),
    }
}

pub fn rule(host: Option<&str>, backends: Vec<IngressBackend>) -> IngressRule {
    IngressRule {
        host: host.map(str::to_string),
        http: Some(HTTPIngressRuleValue {
            paths: backends
                .into_iter()
                .map(|b| HTTPIngressPath {
                    backend: b,
                    path: Some("/".into()),
                    path_type: "Prefix".into(),
                })
                .collect(),
        }),
    }
}

pub fn ingress(name: &str, rules: Vec<IngressRule>, tls: &[&str]) -> Ingress {
    Ingress {
        metadata: meta(name),
        spec: Some(IngressSpec {
            rules: Some(rules),
            tls: (!tls.is_empty()).then(|| {
                vec![IngressTLS {
                    hosts: Some(tls.iter().map(|s| s.to_string()).collect()),
                    secret_name: None,
                }]
            }),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn route(
    name: &str,
    hostnames: &[&str],
    parents: Vec<ParentReference>,
    backends: Vec<BackendRef>,
) -> HTTPRoute {
    let mut r = HTTPRoute::new(
        name,
        HTTPRouteSpec {
            parent_refs: parents,
            hostnames: hostnames.iter().map(|s| s.to_string()).collect(),
            rules: vec![HTTPRouteRule {
                backend_refs: backends,
                filters: Vec::new(),
            }],
        },
    );
    r.metadata.namespace = Some(NS.into());
    r
}

pub fn svc_ref(name: &str, port: Option<i32>) -> BackendRef {
    BackendRef {
        name: name.into(),
        port,
        ..Default::default()
    }
}

pub fn parent(name: &str, ns: Option<&str>, section: Option<&str>) -> ParentReference {
    ParentReference {
        name: name.into(),
        namespace: ns.map(str::to_string),
        section_name: section.map(str::to_string),
        ..Default::default()
    }
}

pub fn gateway(ns: &str, name: &str, listeners: &[(&str, Option<&str>, &str)]) -> Gateway {
    let mut g = Gateway::new(
        name,
        GatewaySpec {
            gateway_class_name: "test".into(),
            listeners: listeners
                .iter()
                .map(|(n, h, proto)| Listener {
                    name: n.to_string(),
                    hostname: h.map(str::to_string),
                    port: if *proto == "HTTPS" { 443 } else { 80 },
                    protocol: proto.to_string(),
                    // Most rows put the Gateway elsewhere; allowedRoutes has rows of its own.
                    allowed_routes: Some(AllowedRoutes {
                        namespaces: Some(RouteNamespaces {
                            from: Some("All".into()),
                            selector: None,
                        }),
                        kinds: Vec::new(),
                    }),
                })
                .collect(),
        },
    );
    g.metadata.namespace = Some(ns.into());
    g
}

/// The objects of one table row.
#[derive(Default, Debug)]
pub struct World {
    pub services: Vec<Service>,
    pub ingresses: Vec<Ingress>,
    pub ingress_classes: Vec<IngressClass>,
    pub routes: Vec<HTTPRoute>,
    pub gateways: Vec<Gateway>,
    pub pods: Vec<Pod>,
    pub policy: Option<MCPGuardPolicySpec>,
    pub namespace_labels: Option<BTreeMap<String, String>>,
    pub grants: Vec<crate::gateway::ReferenceGrant>,
    pub others: Vec<(String, LabelSelector)>,
    /// The SIG MCPServer a `spec.serverRef` names.
    pub sig_server: Option<crate::sources::sig_servers::SigMCPServer>,
    /// The cluster's service-account issuer.
    pub cluster_issuer: crate::auth::IssuerState,
}

impl World {
    /// The derivation of `spec` as the controller gathers it (a `serverRef` resolved first).
    pub fn derive(&self, spec: &MCPServerSpec) -> Derivation {
        let spec = &*crate::sources::sig_servers::effective(spec, self.sig_server.as_ref());
        derive(&DeriveInput {
            namespace: NS,
            name: "weather",
            spec,
            settings: &crate::settings::resolve(spec, self.policy.as_ref(), "img"),
            policy: self.policy.as_ref(),
            services: self.services.iter().collect(),
            ingresses: self.ingresses.iter().collect(),
            ingress_classes: self.ingress_classes.iter().collect(),
            http_routes: self.routes.iter().collect(),
            reference_grants: self.grants.iter().collect(),
            gateways: self.gateways.iter().collect(),
            pods: self.pods.iter().collect(),
            namespace_labels: self.namespace_labels.as_ref(),
            other_servers: self.others.iter().map(|(n, s)| (n.as_str(), s)).collect(),
            cluster_domain: "cluster.local",
            sig_server: self.sig_server.as_ref(),
            cluster_issuer: &self.cluster_issuer,
        })
    }
}

pub fn no_dns() -> Option<MCPGuardPolicySpec> {
    Some(MCPGuardPolicySpec {
        allow_service_dns_names: false,
        ..Default::default()
    })
}

/// Asserts whether a table row's derivation found anything of `kind`, naming the row and what was found.
#[track_caller]
pub fn assert_finds(d: &Derivation, kind: FindingKind, want: bool, case: usize) {
    let found = d.messages(kind);
    assert_eq!(!found.is_empty(), want, "case {case}: {kind:?}: {found:?}");
}

pub fn values(entries: &[AllowlistEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.value.as_str()).collect()
}

pub fn sources_of<'a>(entries: &'a [AllowlistEntry], value: &str) -> Vec<&'a str> {
    entries
        .iter()
        .find(|e| e.value == value)
        .map(|e| e.sources.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

pub fn pod(name: &str, labels_: &[(&str, &str)], guarded_for: Option<&str>, ports: &[(&str, i32)]) -> Pod {
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": NS, "labels": labels(labels_) },
        "spec": { "containers": [{
            "name": "server", "image": "example.invalid/server:1",
            "ports": ports.iter().map(|(n, p)| serde_json::json!({ "name": n, "containerPort": p })).collect::<Vec<_>>()
        }] }
    }))
    .expect("pod");
    if let Some(server) = guarded_for {
        let spec = p.spec.as_mut().expect("spec");
        spec.init_containers = Some(vec![
            serde_json::from_value(serde_json::json!({
                "name": "mcp-guard", "image": "example.invalid/guard:1", "restartPolicy": "Always",
                "ports": [{ "name": "mcp-guard-admin", "containerPort": 15081 }]
            }))
            .expect("container"),
        ]);
        spec.volumes = Some(vec![
            serde_json::from_value(serde_json::json!({
                "name": "mcp-guard-config", "configMap": { "name": format!("{server}-mcp-guard") }
            }))
            .expect("volume"),
        ]);
        p.metadata.annotations = Some(BTreeMap::from([(
            "mcpguard.dev/injected".to_string(),
            serde_json::json!({
                "version": 1, "mcpServer": server, "image": "example.invalid/guard:1",
                "initContainers": ["mcp-guard"], "containers": [], "volumes": ["mcp-guard-config"]
            })
            .to_string(),
        )]));
    }
    p
}

pub fn ingress_class(name: &str, default: bool, created: i64) -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: default
                .then(|| BTreeMap::from([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())])),
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(created).expect("ts"),
            )),
            ..Default::default()
        },
        spec: None,
    }
}

/// An Ingress to `weather:80` for `host`, with a class by field and/or annotation.
pub fn classed_ingress(name: &str, host: &str, field: Option<&str>, annotation: Option<&str>) -> Ingress {
    let mut ing = ingress(
        name,
        vec![rule(Some(host), vec![backend("weather", num(80))])],
        &[],
    );
    if let Some(spec) = ing.spec.as_mut() {
        spec.ingress_class_name = field.map(str::to_string);
    }
    if let Some(a) = annotation {
        ing.metadata.annotations = Some(BTreeMap::from([(
            INGRESS_CLASS_ANNOTATION.to_string(),
            a.to_string(),
        )]));
    }
    ing
}
