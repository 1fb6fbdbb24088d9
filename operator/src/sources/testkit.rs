//! Objects for the sources' tests, and the controller's [`Stores`] filled with them (no API server: the same
//! reflector stores the controller reads, written through their writers).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service, ServiceSpec};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use crate::crd::{MCPServer, MCPServerSpec};
use crate::gateway::HTTPRoute;
use crate::stores::Stores;

/// Labels in a table row.
pub type Pairs = &'static [(&'static str, &'static str)];
/// The servers a row expects reconciled, as `namespace/name`.
pub type Want = &'static [&'static str];

/// The objects in the caches.
#[derive(Default)]
pub struct World {
    pub servers: Vec<MCPServer>,
    pub services: Vec<Service>,
    pub ingresses: Vec<Ingress>,
    pub routes: Vec<HTTPRoute>,
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

impl World {
    pub fn stores(&self) -> Stores {
        Stores {
            servers: store(&self.servers),
            services: store(&self.services),
            ingresses: store(&self.ingresses),
            ingress_classes: store(&[]),
            policies: store(&[]),
            config_maps: store(&[]),
            network_policies: store(&[]),
            pods: store(&[]),
            routes: Some(store(&self.routes)),
            gateways: Some(store(&[])),
            reference_grants: Some(store(&[])),
            namespaces: Some(store(&[])),
            synced: tokio::sync::watch::channel(true).1,
        }
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn meta(ns: &str, name: &str) -> ObjectMeta {
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

pub fn pod(ns: &str, name: &str, pod_labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            labels: Some(labels(pod_labels)),
            ..meta(ns, name)
        },
        ..Default::default()
    }
}

/// A Service selecting these labels (no ports: the mappers read selectors only).
pub fn service(ns: &str, name: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        metadata: meta(ns, name),
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
