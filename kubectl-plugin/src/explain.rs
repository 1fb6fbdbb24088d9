//! `explain`: the guard's own check (mcp-guard-config's `Allowlist::check`) on the config the operator wrote for
//! the MCPServer, then what would allow a refused value, from the Services, Ingresses and HTTPRoutes around it.
//! [`fetch`] reads the cluster; [`report`] is pure.

use std::fmt::Write as _;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use mcp_guard_config::{
    Authority, CONFIG_KEY, GuardConfig, HeaderSeen, HostPattern, Mode, Reason, RequestFacts, Verdict,
};
use mcp_guard_operator::crd::MCPGuardPolicy;
use mcp_guard_operator::crd::{MCPServer, config_map_name};
use mcp_guard_operator::gateway::HTTPRoute;
use mcp_guard_operator::gateway::{Gateway, ReferenceGrant};
use mcp_guard_operator::sources::{
    DepKind, Dependency, DeriveInput, Finding,
    http_routes::{gateway_host, route_backend_services},
    ingresses::ingress_backend_services,
    services::service_is_candidate,
    sig_servers,
};

use crate::cluster::Kube;

/// What the report is computed from.
pub struct Facts {
    pub namespace: String,
    pub server: MCPServer,
    /// The guard config the operator wrote (`Err`: why there is none to check against).
    pub config: Result<GuardConfig, String>,
    /// The Services that send traffic to the server's pods (what an Ingress or route must name).
    pub services: Vec<String>,
    pub ingresses: Vec<Ingress>,
    /// `None`: the Gateway API is not installed.
    pub routes: Option<Vec<HTTPRoute>>,
    /// What the operator's derivation finds, run here over the same objects (typed: read, never parsed).
    pub findings: Vec<Finding>,
}

/// The request to explain, as the guard would see it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The Host header (the URL's authority for a URL).
    pub host: String,
    pub origin: Option<String>,
}

impl Request {
    /// A Host value, or a URL whose authority is the Host a client sends.
    pub fn parse(target: &str, origin: Option<&str>) -> anyhow::Result<Request> {
        let host = if target.contains("://") {
            let uri: http::Uri = target
                .parse()
                .with_context(|| format!("{target:?} is not a URL"))?;
            uri.authority()
                .with_context(|| format!("the URL {target:?} has no host"))?
                .as_str()
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .to_string()
        } else {
            target.to_string()
        };
        Ok(Request {
            host,
            origin: origin.map(str::to_string),
        })
    }
}

pub struct Report {
    pub allowed: bool,
    pub text: String,
}

pub async fn fetch(kube: &Kube, name: &str) -> anyhow::Result<Facts> {
    let ns = &kube.namespace;
    let client = &kube.client;
    let server = match Api::<MCPServer>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    {
        Some(s) => s,
        None => {
            let names: Vec<String> = Api::<MCPServer>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(|s| s.name_any())
                .collect();
            anyhow::bail!(
                "no MCPServer {ns}/{name}; MCPServers in {ns}: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    };
    let cm_name = config_map_name(name);
    let config = match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&cm_name)
        .await?
    {
        None => Err(format!(
            "the operator has not written ConfigMap {ns}/{cm_name} yet (is it running?); until it does the guard \
             does not start"
        )),
        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)) {
            None => Err(format!("ConfigMap {ns}/{cm_name} has no key {CONFIG_KEY}")),
            Some(json) => {
                GuardConfig::from_json(json.as_bytes()).map_err(|e| format!("ConfigMap {ns}/{cm_name}: {e}"))
            }
        },
    };
    let all_services = Api::<Service>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    // A `spec.serverRef` selects the referenced server's pods.
    let selecting = sig_servers::with_selector(&server);
    let services = all_services
        .iter()
        .filter(|s| service_is_candidate(s, &selecting.spec))
        .map(|s| s.name_any())
        .collect();
    let ingresses = Api::<Ingress>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    // Routes in any namespace may name the server's Services (with a ReferenceGrant); without the CRD, none.
    let routes = match Api::<HTTPRoute>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => Some(list.items),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e.into()),
    };
    let findings = derive_findings(kube, &server, &all_services, &ingresses, routes.as_deref()).await?;
    Ok(Facts {
        namespace: ns.clone(),
        server,
        config,
        services,
        ingresses,
        routes,
        findings,
    })
}

/// The objects of a kind, or none when the kind is not served or the user may not list it (the derivation then
/// goes without them, as the operator does without an optional API).
async fn list_or_none<K>(api: Api<K>) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The operator's findings for the server: its derivation run over the objects it reads.
async fn derive_findings(
    kube: &Kube,
    server: &MCPServer,
    services: &[Service],
    ingresses: &[Ingress],
    routes: Option<&[HTTPRoute]>,
) -> anyhow::Result<Vec<Finding>> {
    let (ns, client) = (&kube.namespace, &kube.client);
    let policy = Api::<MCPGuardPolicy>::all(client.clone())
        .get_opt(server.spec.policy_name())
        .await
        .ok()
        .flatten();
    let policy = policy.as_ref().map(|p| &p.spec);
    let classes = list_or_none(Api::<IngressClass>::all(client.clone())).await?;
    let pods = list_or_none(Api::<Pod>::namespaced(client.clone(), ns)).await?;
    let others = list_or_none(Api::<MCPServer>::namespaced(client.clone(), ns)).await?;
    let gateways = list_or_none(Api::<Gateway>::all(client.clone())).await?;
    let grants = list_or_none(Api::<ReferenceGrant>::namespaced(client.clone(), ns)).await?;
    let namespace = Api::<Namespace>::all(client.clone())
        .get_opt(ns)
        .await
        .ok()
        .flatten();
    let name = server.name_any();
    // A `spec.serverRef` stands for the referenced server's selector and port, as in the operator.
    let sig_server = sig_servers::fetch(client, server).await.ok().flatten();
    let server = &*sig_servers::with_spec(server, sig_servers::effective(&server.spec, sig_server.as_ref()));
    let others: Vec<_> = others.iter().map(sig_servers::with_selector).collect();
    let settings = mcp_guard_operator::settings::resolve(
        &server.spec,
        policy,
        mcp_guard_operator::settings::DEFAULT_SIDECAR_IMAGE,
    );
    let d = mcp_guard_operator::sources::derive(&DeriveInput {
        namespace: ns,
        name: &name,
        spec: &server.spec,
        settings: &settings,
        policy,
        services: services.iter().collect(),
        ingresses: ingresses.iter().collect(),
        ingress_classes: classes.iter().collect(),
        http_routes: routes
            .into_iter()
            .flatten()
            .filter(|r| {
                r.namespace().as_deref() == Some(ns.as_str())
                    || route_backend_services(r).iter().any(|(svc_ns, _)| svc_ns == ns)
            })
            .collect(),
        reference_grants: grants.iter().collect(),
        gateways: gateways.iter().collect(),
        other_servers: others
            .iter()
            .filter(|o| o.name_any() != name && o.metadata.deletion_timestamp.is_none())
            .map(|o| (o.metadata.name.as_deref().unwrap_or_default(), &o.spec.selector))
            .collect(),
        namespace_labels: namespace.as_ref().map(|n| n.labels()),
        pods: pods.iter().collect(),
        // Only the Service DNS names depend on it, and they are not what explain looks at.
        cluster_domain: "cluster.local",
        sig_server: sig_server.as_ref(),
        // Authentication is read from the guard config the operator wrote, not derived here.
        cluster_issuer: &Default::default(),
    });
    Ok(d.findings)
}

/// The answer: the guard's verdict, the current entries and their sources, and what would allow a refusal.
pub fn report(facts: &Facts, req: &Request) -> Report {
    let mut out = String::new();
    let ns = &facts.namespace;
    let name = facts.server.name_any();
    let _ = writeln!(
        out,
        "MCPServer {ns}/{name} (policy {})",
        facts.server.spec.policy_name()
    );
    let _ = write!(out, "Request: Host {:?}", req.host);
    if let Some(o) = &req.origin {
        let _ = write!(out, ", Origin {o:?}");
    }
    out.push('\n');

    let mut allowed = false;
    let mut denial = None;
    match facts.config.as_ref().map(|c| (c, c.compile())) {
        Err(why) => {
            let _ = writeln!(out, "Verdict: cannot tell: {why}");
        }
        Ok((_, Err(e))) => {
            let _ = writeln!(
                out,
                "Verdict: cannot tell: the guard config is invalid ({e}); the guard keeps its last good one"
            );
        }
        Ok((config, Ok(allowlist))) => {
            let facts = RequestFacts {
                host: HeaderSeen {
                    first: Some(req.host.as_bytes()),
                    count: 1,
                },
                origin: HeaderSeen {
                    first: req.origin.as_deref().map(str::as_bytes),
                    count: usize::from(req.origin.is_some()),
                },
                ..RequestFacts::default()
            };
            match allowlist.check(&facts) {
                Verdict::Allow => {
                    allowed = true;
                    let _ = writeln!(out, "Verdict: allowed");
                }
                Verdict::Deny(d) => {
                    let audit = config.mode == Mode::Audit;
                    let _ = writeln!(
                        out,
                        "Verdict: {} {} {}: {:?}",
                        if audit {
                            "would refuse (audit mode: forwarded, logged and counted)"
                        } else {
                            "refused with"
                        },
                        d.status(),
                        d.reason.as_str(),
                        d.received,
                    );
                    let _ = writeln!(out, "  the guard's hint: {}", allowlist.hint(&d));
                    // In audit mode the request goes through: "allowed" for the exit status.
                    allowed = audit;
                    denial = Some(d);
                }
            }
        }
    }

    let status = facts.server.status.clone().unwrap_or_default();
    let _ = writeln!(out, "\nAllowed hosts (and where each comes from):");
    if status.allowed_hosts.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &status.allowed_hosts {
        let _ = writeln!(out, "  {:<40} {}", e.value, e.sources.join(", "));
    }
    let _ = writeln!(out, "Allowed origins (besides the origins of the allowed hosts):");
    if status.allowed_origins.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &status.allowed_origins {
        let _ = writeln!(out, "  {:<40} {}", e.value, e.sources.join(", "));
    }

    if let Some(d) = &denial {
        let _ = writeln!(out, "\nWhat would allow it:");
        match d.reason {
            Reason::HostNotAllowed => host_remedies(&mut out, facts, &req.host),
            Reason::OriginNotAllowed => {
                origin_remedies(&mut out, facts, req.origin.as_deref().unwrap_or_default())
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  nothing in the cluster: the request itself is malformed ({})",
                    d.reason.message()
                );
            }
        }
    }

    let notes: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| (c.type_ != "Ready" && c.status == "True") || (c.type_ == "Ready" && c.status != "True"))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nConditions of the MCPServer that bear on it:");
        for c in notes {
            let _ = writeln!(out, "  {}={} ({}): {}", c.type_, c.status, c.reason, c.message);
        }
    }
    Report { allowed, text: out }
}

fn host_remedies(out: &mut String, facts: &Facts, host: &str) {
    let ns = &facts.namespace;
    let name = facts.server.name_any();
    let bare = host_without_port(host);
    let _ = writeln!(
        out,
        "  - spec.hosts of MCPServer {ns}/{name}: add {bare:?}\n      kubectl patch mcpservers.mcpguard.dev -n {ns} {name} --type=json -p \
         '[{{\"op\":\"add\",\"path\":\"/spec/hosts/-\",\"value\":\"{bare}\"}}]'"
    );
    if facts.services.is_empty() {
        let _ = writeln!(
            out,
            "  - an Ingress or HTTPRoute: none can, no Service in {ns} selects the server's pods (create one first)"
        );
    } else {
        let services = facts.services.join(", ");
        let _ = writeln!(
            out,
            "  - an Ingress rule with host {bare:?} whose backend is Service {services} (in {ns})"
        );
        if facts.routes.is_some() {
            let _ = writeln!(
                out,
                "  - an HTTPRoute with hostname {bare:?} and a backendRef to Service {services}"
            );
        }
    }
    let _ = writeln!(
        out,
        "  - spec.allowedHosts of MCPGuardPolicy {} (for every MCPServer that uses it)",
        facts.server.spec.policy_name()
    );

    // Objects that already name this host: why they do not count.
    let Ok(authority) = Authority::parse(host) else {
        return;
    };
    let mut seen = Vec::new();
    for ing in &facts.ingresses {
        let rules = ing
            .spec
            .as_ref()
            .and_then(|s| s.rules.as_ref())
            .into_iter()
            .flatten();
        for rule in rules {
            let Some(h) = rule.host.as_deref() else { continue };
            if !HostPattern::parse(h).is_ok_and(|p| p.matches(&authority, Some(80))) {
                continue;
            }
            let backends: Vec<String> = ingress_backend_services(ing).into_iter().collect();
            let ingress = Dependency::new(DepKind::Ingress, Some(ns), &ing.name_any());
            let listed = facts.server.spec.ingresses.as_ref();
            seen.push(why_not_counted(
                &format!("{ingress} has a rule for {h:?}"),
                (&ingress, listed),
                &backends,
                facts,
            ));
        }
    }
    for route in facts.routes.iter().flatten() {
        for h in &route.spec.hostnames {
            if !HostPattern::parse(&gateway_host(h)).is_ok_and(|p| p.matches(&authority, Some(80))) {
                continue;
            }
            let rns = route.namespace().unwrap_or_default();
            let backends: Vec<String> = route_backend_services(route)
                .into_iter()
                .map(|(bns, b)| if bns == *ns { b } else { format!("{bns}/{b}") })
                .collect();
            let route_ref = Dependency::new(DepKind::HTTPRoute, Some(&rns), &route.name_any());
            let listed = facts.server.spec.http_routes.as_ref();
            seen.push(why_not_counted(
                &format!("{route_ref} has hostname {h:?}"),
                (&route_ref, listed),
                &backends,
                facts,
            ));
        }
    }
    if !seen.is_empty() {
        let _ = writeln!(out, "Already naming this host:");
        for s in seen {
            let _ = writeln!(out, "  - {s}");
        }
    }
}

/// Why an Ingress or route for the host did not make it into the allowlist: what the operator's derivation
/// found about it, else whether a spec list leaves it out, else where it routes instead.
fn why_not_counted(
    what: &str,
    (object, listed): (&Dependency, Option<&Vec<String>>),
    backends: &[String],
    facts: &Facts,
) -> String {
    let found: Vec<String> = facts
        .findings
        .iter()
        .filter(|f| f.about() == Some(object))
        .map(Finding::message)
        .collect();
    if !found.is_empty() {
        return format!("{what}, and the operator finds: {}", found.join("; "));
    }
    if listed.is_some_and(|names| !names.contains(&object.name)) {
        let field = match object.kind {
            DepKind::Ingress => "spec.ingresses",
            _ => "spec.httpRoutes",
        };
        return format!("{what}, but the MCPServer's {field} does not list it, so only those it lists count");
    }
    if backends.iter().any(|b| facts.services.contains(b)) {
        format!(
            "{what} and routes to the server's Service; the operator counts it, and has not written it into the \
             guard config yet (is it running?)"
        )
    } else {
        format!(
            "{what} but routes to Service {}, which does not send traffic to this server's pods",
            if backends.is_empty() {
                "(none)".to_string()
            } else {
                backends.join(", ")
            }
        )
    }
}

fn origin_remedies(out: &mut String, facts: &Facts, origin: &str) {
    let ns = &facts.namespace;
    let name = facts.server.name_any();
    let _ = writeln!(
        out,
        "  - spec.origins of MCPServer {ns}/{name}: add {origin:?}\n      kubectl patch mcpservers.mcpguard.dev -n {ns} {name} --type=json -p \
         '[{{\"op\":\"add\",\"path\":\"/spec/origins/-\",\"value\":\"{origin}\"}}]'"
    );
    if let Some(host) = origin.split_once("://").map(|(_, h)| h) {
        let _ = writeln!(
            out,
            "  - or allow the host {host:?} (spec.hosts, an Ingress or HTTPRoute): pages it serves are same-origin"
        );
    }
    let _ = writeln!(
        out,
        "  - spec.allowedOrigins of MCPGuardPolicy {} (for every MCPServer that uses it)",
        facts.server.spec.policy_name()
    );
}

/// `host:port` without the port (a bracketed IPv6 literal keeps its brackets).
fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port))
            if port.chars().all(|c| c.is_ascii_digit())
                && !h.ends_with(':')
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_url_gives_its_authority_as_the_host() {
        let r = Request::parse(
            "https://user@mcp.example.com:8443/mcp?x=1",
            Some("https://app.example.com"),
        )
        .unwrap();
        assert_eq!(r.host, "mcp.example.com:8443");
        assert_eq!(r.origin.as_deref(), Some("https://app.example.com"));
        assert_eq!(
            Request::parse("mcp.example.com", None).unwrap().host,
            "mcp.example.com"
        );
    }

    #[test]
    fn the_suggested_host_has_no_port() {
        assert_eq!(host_without_port("mcp.example.com:8443"), "mcp.example.com");
        assert_eq!(host_without_port("mcp.example.com"), "mcp.example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    fn ingress(name: &str, host: &str, backend: &str) -> Ingress {
        use k8s_openapi::api::networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, IngressBackend, IngressRule, IngressServiceBackend,
            IngressSpec,
        };
        Ingress {
            metadata: kube::core::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(IngressSpec {
                rules: Some(vec![IngressRule {
                    host: Some(host.into()),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some("/".into()),
                            path_type: "Prefix".into(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: backend.into(),
                                    port: None,
                                }),
                                resource: None,
                            },
                        }],
                    }),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_ingress_naming_the_host_is_explained_by_the_operators_findings() {
        let server = MCPServer::new("weather", Default::default());
        let not_counted = Dependency::new(DepKind::Ingress, Some("ns"), "classless");
        let facts = Facts {
            namespace: "ns".into(),
            server,
            config: Ok(GuardConfig {
                allowed_hosts: vec!["mcp.example.com".into()],
                ..Default::default()
            }),
            services: vec!["weather".into()],
            ingresses: vec![
                ingress("classless", "other.example.com", "weather"),
                ingress("elsewhere", "other.example.com", "billing"),
            ],
            routes: None,
            findings: vec![Finding::IngressNotCounted {
                ingress: not_counted,
                why: "its class \"gone\" is served by no IngressClass".into(),
            }],
        };
        let report = report(&facts, &Request::parse("other.example.com", None).unwrap());
        assert!(!report.allowed, "{}", report.text);
        assert!(
            report.text.contains(
                "Ingress ns/classless has a rule for \"other.example.com\", and the operator finds: Ingress \
                 ns/classless is not counted: its class \"gone\" is served by no IngressClass"
            ),
            "{}",
            report.text
        );
        assert!(
            report.text.contains(
                "Ingress ns/elsewhere has a rule for \"other.example.com\" but routes to Service billing"
            ),
            "{}",
            report.text
        );
    }
}
