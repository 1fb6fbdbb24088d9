//! What an MCPServer's allowlist is derived from, one module per kind of input. Each module owns, for its kind,
//! what it adds to the derivation (forwards), which MCPServers a change of one of its objects concerns (the
//! reverse mapper the controller's watch calls, backwards), and the tests of both:
//!
//! - [`policy`]: the MCPGuardPolicy (settings, always-allowed hosts and origins);
//! - [`sig_servers`]: the SIG's MCPServer that `spec.serverRef` names (its pods, port and handshake Host);
//! - [`pods`]: the pods the server selects (who would bypass the guard, what their ports are called);
//! - [`servers`]: the other MCPServers of the namespace (selectors that overlap);
//! - [`services`]: the Services that route to the pods (their DNS names, ports that bypass the guard);
//! - [`ingresses`]: Ingresses (and IngressClasses) routing to those Services;
//! - [`http_routes`]: HTTPRoutes (with their Gateways, ReferenceGrants and namespaces);
//! - [`explicit`]: the MCPServer's own `spec.hosts` and `spec.origins`.
//!
//! [`derive()`] folds them in that order: a pure function from plain objects, no client. The rules are
//! documented for users in `docs/operator.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use mcp_guard_config::{ConfigSource, GuardConfig, Limits};

pub use self::findings::{Blocker, Finding, FindingKind, Fix, UnguardedPod};
use crate::crd::{AllowlistEntry, GuardMode, MCPGuardPolicy, MCPGuardPolicySpec, MCPServer, MCPServerSpec};
use crate::field_error::{check_host_pattern, check_origin_pattern};
use crate::gateway::{Gateway, HTTPRoute, ReferenceGrant};
use crate::index::{Index, Lookup};
use crate::settings::Settings;

pub mod explicit;
pub mod findings;
pub mod http_routes;
pub mod ingresses;
pub mod pods;
pub mod policy;
pub mod servers;
pub mod services;
pub mod sig_servers;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

/// The reflector caches the reconciler and the reverse mappers read, one per kind (filled as [`crate::stores`]
/// says; each source says how its kind is watched).
#[derive(Clone)]
pub struct Stores {
    pub servers: Store<MCPServer>,
    pub services: Store<Service>,
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    pub policies: Store<MCPGuardPolicy>,
    pub config_maps: Store<ConfigMap>,
    /// The NetworkPolicies this operator wrote (by label).
    pub network_policies: Store<NetworkPolicy>,
    pub pods: Store<Pod>,
    /// `None` when the Gateway API is not installed.
    pub routes: Option<Store<HTTPRoute>>,
    pub gateways: Option<Store<Gateway>>,
    /// `None` when the Gateway API is not installed or serves no ReferenceGrants (`v1beta1`).
    pub reference_grants: Option<Store<ReferenceGrant>>,
    /// Namespaces (their labels, for listeners' `allowedRoutes.namespaces.selector`); with the Gateway API only.
    pub namespaces: Option<Store<Namespace>>,
    /// The SIG's MCPServers (`mcp.x-k8s.io`); `None` when their API is not served.
    pub sig_servers: Option<Store<sig_servers::SigMCPServer>>,
    /// `true` once every watch stream finished its initial list.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// The indexes kept beside the caches of the kinds a namespace can hold thousands of.
    pub indexes: Indexes,
}

/// The indexes beside the caches ([`crate::index`]), each with the facets its source looks its kind up by.
#[derive(Clone)]
pub struct Indexes {
    pub servers: Index<MCPServer>,
    pub services: Index<Service>,
    pub ingresses: Index<Ingress>,
    pub pods: Index<Pod>,
}

impl Default for Indexes {
    fn default() -> Self {
        Self {
            servers: Index::new(servers::facets),
            services: Index::new(services::facets),
            ingresses: Index::new(ingresses::facets),
            pods: Index::new(pods::facets),
        }
    }
}

impl Stores {
    /// Waits until every cache has seen its initial list.
    ///
    /// Tracked from the watch streams themselves (`InitDone`), not with `Store::wait_until_ready`: that future
    /// wakes only its most recent poller, so several tasks waiting on one store could wait forever.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Whether every cache has seen its initial list.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }
}

/// Everything a derivation reads. Lists hold the objects of the MCPServer's namespace (Gateways: any).
#[derive(Clone, Debug)]
pub struct DeriveInput<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a MCPServerSpec,
    /// The server's settings resolved over its policy ([`crate::settings::resolve`]).
    pub settings: &'a Settings,
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
    /// The SIG MCPServer `spec.serverRef` names, when it exists (`spec` is already [`sig_servers::effective`]).
    pub sig_server: Option<&'a sig_servers::SigMCPServer>,
    /// The cluster's service-account issuer as the operator knows it (for `auth.kubernetes`).
    pub cluster_issuer: &'a crate::auth::IssuerState,
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
    /// The SIG's MCPServer (`mcp.x-k8s.io`) that `spec.serverRef` names.
    SigMCPServer,
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
    /// Whether the guard answers CORS (the settings' `cors`).
    pub cors: bool,
    /// Where clients reach the server, `scheme://HOST[:port]`, with where each came from (the resource URIs
    /// are these plus the resource path: [`crate::auth`]).
    pub endpoints: Vec<AllowlistEntry>,
    /// Authentication, when on.
    pub auth: Option<crate::auth::DerivedAuth>,
    /// Access rules, when there are any (the server's, then its policy's: [`crate::access`]).
    pub access: Option<crate::access::DerivedAccess>,
    /// The audit section, when the server or its policy sets one (else the guard's default).
    pub audit: Option<mcp_guard_config::AuditConfig>,
    /// Names of the Services that route to the server.
    pub services: Vec<String>,
    /// What the sources found, in the order they found it.
    pub findings: Vec<Finding>,
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
            cors: self.cors,
            auth: self.auth.as_ref().map(|a| a.config.clone()),
            access: self.access.as_ref().map(|a| a.config.clone()),
            audit: self.audit.clone(),
        }
    }

    /// The messages of the findings of one kind.
    pub fn messages(&self, kind: FindingKind) -> Vec<String> {
        self.of_kind(kind).map(Finding::message).collect()
    }

    /// The findings of one kind.
    pub fn of_kind(&self, kind: FindingKind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind() == kind)
    }

    /// The selected pods that run without any guard (part of `GuardBypass`).
    pub fn unguarded_pods(&self) -> &[UnguardedPod] {
        self.findings
            .iter()
            .find_map(|f| match f {
                Finding::Unguarded(pods) => Some(pods.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Whether there is a finding of this kind.
    pub fn has(&self, kind: FindingKind) -> bool {
        self.of_kind(kind).next().is_some()
    }

    fn depend(&mut self, kind: DepKind, namespace: Option<&str>, name: &str) {
        self.dependencies.insert(Dependency::new(kind, namespace, name));
    }
}

/// Values keyed by pattern, each with its sorted sources.
#[derive(Default)]
pub(crate) struct Collected(BTreeMap<String, BTreeSet<String>>);

impl Collected {
    pub(crate) fn add(&mut self, value: &str, source: &str) {
        let value = value.to_ascii_lowercase();
        self.0.entry(value).or_default().insert(source.to_string());
    }

    /// The entries the guard will load; each one it would not is a problem naming where it came from.
    fn into_entries(
        self,
        what: &str,
        check: fn(&str) -> Result<(), String>,
        findings: &mut Vec<Finding>,
    ) -> Vec<AllowlistEntry> {
        let mut entries = Vec::new();
        for (value, sources) in self.0 {
            let sources: Vec<String> = sources.into_iter().collect();
            match check(&value) {
                Ok(()) => entries.push(AllowlistEntry { value, sources }),
                Err(err) => findings.push(Finding::problem(format!(
                    "skipped {what} {value:?} from {}: {err}",
                    sources.join(", ")
                ))),
            }
        }
        entries
    }
}

/// A derivation being built: what the sources found so far, and the hosts and origins they added.
#[derive(Default)]
pub struct Fold {
    pub(crate) d: Derivation,
    pub(crate) hosts: Collected,
    pub(crate) origins: Collected,
    /// `scheme://HOST[:port]` where the sources found the server reachable.
    pub(crate) endpoints: Collected,
    /// Hosts a person listed (`spec.hosts`, the policy's `allowedHosts`) with their source: their scheme is
    /// decided once every source has added its origins ([`crate::auth::listed_host_scheme`]).
    pub(crate) listed_hosts: Vec<(String, String)>,
}

impl Fold {
    pub(crate) fn find(&mut self, finding: Finding) {
        self.d.findings.push(finding);
    }

    pub(crate) fn problem(&mut self, about: &Dependency, message: String) {
        self.find(Finding::Problem {
            about: Some(about.clone()),
            message,
        });
    }

    pub(crate) fn catch_all(&mut self, route: &Dependency, message: String) {
        self.find(Finding::CatchAll {
            route: route.clone(),
            message,
        });
    }

    /// A host a person listed: allowed, and an endpoint whose scheme is decided at the end.
    pub(crate) fn listed_host(&mut self, host: &str, source: &str) {
        self.hosts.add(host, source);
        self.listed_hosts
            .push((host.to_ascii_lowercase(), source.to_string()));
    }

    /// An endpoint `scheme://HOST[:port]` (the port left out when it is the scheme's default).
    pub(crate) fn endpoint(&mut self, scheme: &str, host: &str, port: Option<i32>, source: &str) {
        let default = if scheme == "https" { 443 } else { 80 };
        match port.filter(|p| *p != default) {
            Some(p) => self.endpoints.add(&format!("{scheme}://{host}:{p}"), source),
            None => self.endpoints.add(&format!("{scheme}://{host}"), source),
        }
    }

    pub(crate) fn port_mismatch(&mut self, route: &Dependency, message: String) {
        self.find(Finding::PortMismatch {
            route: route.clone(),
            message,
        });
    }
}

/// Derives the allowlist and everything status reports about it: each source in turn.
pub fn derive(input: &DeriveInput<'_>) -> Derivation {
    let mut fold = Fold::default();
    policy::settle(input, &mut fold);
    sig_servers::contribute(input, &mut fold);
    let pods = pods::contribute(input, &mut fold);
    servers::contribute(input, &mut fold);
    let services = services::contribute(input, &pods, &mut fold);
    ingresses::contribute(input, &services, &mut fold);
    http_routes::contribute(input, &services, &mut fold);
    explicit::contribute(input, &mut fold);
    policy::contribute(input, &mut fold);
    // Keep only what the guard will load; say what was dropped.
    let Fold {
        mut d,
        hosts,
        origins,
        mut endpoints,
        listed_hosts,
    } = fold;
    // A listed host the sources did not find reachable: the scheme its origins (or its form) say.
    for (host, source) in listed_hosts {
        let known = |scheme: &str| endpoints.0.contains_key(&format!("{scheme}://{host}"));
        if !known("http") && !known("https") {
            let scheme = crate::auth::listed_host_scheme(&host, |o| origins.0.contains_key(o));
            endpoints.add(&format!("{scheme}://{host}"), &source);
        }
    }
    d.hosts = hosts.into_entries("host", check_host_pattern, &mut d.findings);
    d.origins = origins.into_entries("origin", check_origin_pattern, &mut d.findings);
    // Endpoints of skipped hosts are skipped with them (already reported).
    d.endpoints = endpoints.into_entries("endpoint", crate::auth::check_endpoint, &mut Vec::new());
    d.auth = input
        .settings
        .auth
        .as_ref()
        .map(|a| crate::auth::derive(a, &d.endpoints, input.cluster_issuer));
    let policy_name = input.spec.policy_name();
    d.access = crate::access::derive(
        input.spec.access.as_ref(),
        input
            .policy
            .and_then(|p| p.access.as_ref())
            .map(|a| (policy_name, a)),
        d.auth.is_some(),
    );
    d.audit = crate::access::audit(
        input.spec.audit.as_ref(),
        input.policy.and_then(|p| p.audit.as_ref()),
    );
    d
}

/// Which objects of its namespace a server's derivation reads, each decided with the test its source applies
/// itself: the reconcile hands [`derive`] only these, looked up in the indexes ([`Relevant::read`]), so that a
/// reconcile costs what the server's own objects cost rather than what its namespace holds (10,000 servers in
/// one namespace would otherwise make a cold start quadratic). `tests::narrowing_derives_the_same` holds the
/// tests to [`derive`] over whole namespaces, and `tests::narrowing::lookups` the lookups (and the reverse
/// mappers' lookups) to a scan.
pub struct Relevant<'a> {
    spec: &'a MCPServerSpec,
}

/// The objects of one server's namespace that its derivation reads, sorted by name.
pub struct RelevantObjects {
    pub services: Vec<std::sync::Arc<Service>>,
    pub ingresses: Vec<std::sync::Arc<Ingress>>,
    pub pods: Vec<std::sync::Arc<Pod>>,
    /// The other MCPServers whose selector may overlap (a `serverRef` not yet resolved), the server itself too.
    pub servers: Vec<std::sync::Arc<MCPServer>>,
}

impl<'a> Relevant<'a> {
    /// For the spec as [`derive`] reads it (a `serverRef` already resolved).
    pub fn to(spec: &'a MCPServerSpec) -> Self {
        Self { spec }
    }

    /// The objects of `ns` the derivation reads, from the caches through their indexes.
    pub fn read(&self, stores: &Stores, ns: &str) -> RelevantObjects {
        let ix = &stores.indexes;
        let services = ix
            .services
            .select(&stores.services, ns, &services::lookup(self.spec), |s| {
                self.service(s)
            });
        let names: HashSet<String> = services.iter().map(|s| s.name_any()).collect();
        let listed = self.spec.ingresses.as_deref();
        let ingresses = ix
            .ingresses
            .select(&stores.ingresses, ns, &ingresses::lookup(listed, &names), |i| {
                self.ingress(i, &names)
            });
        let pods = ix
            .pods
            .select(&stores.pods, ns, &pods::lookup(&self.spec.selector), |p| {
                self.pod(p)
            });
        let servers = ix.servers.select(
            &stores.servers,
            ns,
            &servers::overlap_lookup(&self.spec.selector),
            |o| o.spec.server_ref.is_some() || self.other_selector(&o.spec.selector),
        );
        RelevantObjects {
            services,
            ingresses,
            pods,
            servers,
        }
    }

    /// The Services that route to the server (listed in `spec.services`, else selecting its pods).
    pub fn service(&self, service: &Service) -> bool {
        services::service_is_candidate(service, self.spec)
    }

    /// The Ingresses listed in `spec.ingresses`, else those with a backend on one of `services` (the names of
    /// the Services [`Relevant::service`] picked).
    pub fn ingress(&self, ingress: &Ingress, services: &HashSet<String>) -> bool {
        ingresses::concerns(ingress, self.spec.ingresses.as_deref(), services)
    }

    /// The pods the server selects.
    pub fn pod(&self, pod: &Pod) -> bool {
        pods::counts(pod, &self.spec.selector)
    }

    /// The other MCPServers whose selector (as resolved) is not plainly disjoint from the server's: the first
    /// test of [`crate::selector::overlap`], without allocating.
    pub fn other_selector(&self, theirs: &LabelSelector) -> bool {
        !crate::selector::labels_conflict(&self.spec.selector, theirs)
    }
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
        d.depend(kind, Some(ns), n);
        if !all.iter().any(|o| o.name_any() == *n) {
            d.findings.push(Finding::Problem {
                about: Some(Dependency::new(kind, Some(ns), n)),
                message: format!("{} {ns}/{n} (listed in {field}) does not exist", K::kind(&())),
            });
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

/// Which MCPServers each dependency was consulted by (reverse index of the last derivations).
#[derive(Default, Debug)]
pub struct DependencyIndex {
    by_dep: HashMap<Dependency, HashSet<ObjectRef<MCPServer>>>,
    by_server: HashMap<ObjectRef<MCPServer>, BTreeSet<Dependency>>,
}

impl DependencyIndex {
    /// Records a server's dependencies, replacing the previous set.
    pub fn record(&mut self, server: &ObjectRef<MCPServer>, deps: &BTreeSet<Dependency>) {
        self.forget(server);
        for d in deps {
            self.by_dep.entry(d.clone()).or_default().insert(server.clone());
        }
        self.by_server.insert(server.clone(), deps.clone());
    }

    /// Drops a server from the index.
    pub fn forget(&mut self, server: &ObjectRef<MCPServer>) {
        if let Some(old) = self.by_server.remove(server) {
            for d in old {
                if let Some(set) = self.by_dep.get_mut(&d) {
                    set.remove(server);
                    if set.is_empty() {
                        self.by_dep.remove(&d);
                    }
                }
            }
        }
    }

    /// Servers whose last derivation consulted this object.
    pub fn dependents(&self, dep: &Dependency) -> Vec<ObjectRef<MCPServer>> {
        self.by_dep
            .get(dep)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `now` (the servers an object concerns as it is) and the servers whose last derivation consulted it (as it
    /// was: edits and deletions reach them too), sorted, each once.
    pub fn with_dependents(
        &self,
        dep: Dependency,
        mut now: Vec<ObjectRef<MCPServer>>,
    ) -> Vec<ObjectRef<MCPServer>> {
        now.extend(self.dependents(&dep));
        now.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        now.dedup();
        now
    }
}

/// The MCPServers of a namespace that satisfy `keep` (each as it resolves: a `spec.serverRef` read as the
/// selector and port it stands for), as references.
fn servers_where(
    stores: &Stores,
    ns: &str,
    lookup: &Lookup,
    keep: impl Fn(&MCPServer) -> bool,
) -> Vec<ObjectRef<MCPServer>> {
    let servers = &stores.indexes.servers;
    servers
        .select(&stores.servers, ns, lookup, |s| {
            keep(&sig_servers::resolved(s, stores))
        })
        .into_iter()
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

/// Every MCPServer of a namespace (a ReferenceGrant or the namespace's labels changed: routes from elsewhere may
/// now reach them, or not).
pub fn servers_of_namespace(stores: &Stores, ns: &str) -> Vec<ObjectRef<MCPServer>> {
    servers_where(stores, ns, &Lookup::Namespace, |_| true)
}

/// Every MCPServer (an IngressClass changed: which Ingresses count may change anywhere, and IngressClasses change
/// rarely).
pub fn all_servers(stores: &Stores) -> Vec<ObjectRef<MCPServer>> {
    stores
        .servers
        .state()
        .iter()
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}
