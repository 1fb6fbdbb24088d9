//! `scan`: the MCP servers in the namespace (or every namespace the user may list), whether mcp-guard guards
//! each, and, with `--probe`, whether each answers a request with a forged Host or a forged Origin.
//!
//! [`fetch`] reads the cluster (and skips quietly the kinds whose CRD is not installed); [`discover`] decides
//! from what was read, with the operator's own rules (`mcp_guard_operator::fleet`: what an MCP Service is and
//! which MCPServer selects it; `webhook::guarded_by`: whether a pod carries the guard); [`probe`] asks each port
//! through the API server's Service proxy; [`table`] and [`json`] print. docs/scan.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use mcp_guard_operator::crd::MCPServer;
use mcp_guard_operator::fleet::{self, KAGENT_PATH_ANNOTATION, McpPort};
use mcp_guard_operator::sources::sig_servers::{self, SigMCPServer};
use mcp_guard_operator::webhook::guarded_by;
use serde::Serialize;

use crate::cluster::Kube;

/// The label opting a namespace in to injection.
const INJECTION_LABEL: &str = "mcpguard.dev/injection=enabled";
/// The Host and Origin the probe forges: a name that no allowlist holds (`.invalid` is reserved, RFC 6761).
pub const FORGED_HOST: &str = "rebind.mcp-guard-scan.invalid";
pub const FORGED_ORIGIN: &str = "http://rebind.mcp-guard-scan.invalid";
/// The MCP endpoint's path when the Service does not name one (the SDKs' default).
const DEFAULT_PATH: &str = "/mcp";
/// A JSON-RPC `ping`: the one MCP request every server must answer and none may act on (unlike `initialize`,
/// which makes some servers open a session, start work or log a client in).
const PING: &str = r#"{"jsonrpc":"2.0","id":"mcp-guard-scan","method":"ping"}"#;

/// Another MCP operator's server kind, and the Service its controller creates for a server.
struct ForeignKind {
    group: &'static str,
    /// The Service name its controller gives a server's Service.
    service_name: fn(&str) -> String,
}

/// ToolHive's operator: a proxy Deployment and Service `mcp-<name>-proxy` in front of the server.
const TOOLHIVE: ForeignKind = ForeignKind {
    group: "toolhive.stacklok.dev",
    service_name: |name| format!("mcp-{name}-proxy"),
};
/// kmcp (kagent): a Deployment and a Service named after the server.
const KMCP: ForeignKind = ForeignKind {
    group: "kagent.dev",
    service_name: str::to_string,
};

/// A server another operator deployed: the object, and the Service names its controller gives it.
#[derive(Clone, Debug)]
pub struct Foreign {
    /// `MCPServer.mcp.x-k8s.io` and so on.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub service: String,
    /// Referenced by `spec.serverRef` (the SIG's kind): the MCPServer that guards it names it.
    pub referable: bool,
}

impl Foreign {
    fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// Whether `svc` is the Service its controller made for it (by owner, or by the name it gives).
    fn made(&self, svc: &Service) -> bool {
        svc.namespace().as_deref() == Some(self.namespace.as_str())
            && (svc.name_any() == self.service
                || svc
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == self.uid.as_ref()))
    }
}

/// What the scan decides from.
#[derive(Default)]
pub struct Cluster {
    pub services: Vec<Service>,
    pub pods: Vec<Pod>,
    pub ours: Vec<MCPServer>,
    pub foreign: Vec<Foreign>,
    /// Namespaces known not to be opted in to injection (`None`: unknown, e.g. not allowed to read them).
    pub not_opted_in: Option<Vec<String>>,
}

/// Whether the guard covers a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Guard {
    /// An MCPServer of ours selects its pods, and every one carries its guard.
    Guarded { mcp_server: String },
    /// An MCPServer of ours selects its pods, but these run without its guard.
    NotInjected { mcp_server: String, pods: Vec<String> },
    /// An MCPServer of ours selects it, and no pod runs.
    NoPods { mcp_server: String },
    /// No MCPServer of ours selects it.
    Unguarded,
}

impl Guard {
    /// Whether nothing of it runs without the guard (guarded, or no pod runs).
    pub fn is_guarded(&self) -> bool {
        matches!(self, Guard::Guarded { .. } | Guard::NoPods { .. })
    }
}

/// What a probe request got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "answer", rename_all = "camelCase")]
pub enum Answer {
    /// The server answered it as it answers a request to its own name: a DNS-rebinding page can drive it.
    Answered { status: u16 },
    /// The server refused it (421 Host, 403 Origin, 401 a token is needed).
    Refused { status: u16 },
    /// The probe could not tell.
    Unknown { why: String },
}

impl Answer {
    fn cell(&self) -> String {
        match self {
            Answer::Answered { status } if (200..300).contains(status) => "yes".into(),
            Answer::Answered { status } => format!("yes ({status}, as to its own name)"),
            Answer::Refused { status } => format!("no ({status})"),
            Answer::Unknown { why } => format!("unknown ({why})"),
        }
    }
}

/// A probed port's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub forged_host: Answer,
    pub forged_origin: Answer,
}

/// A port of a found server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoundPort {
    pub port: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why it is taken for MCP (`appProtocol mcp`, `port name mcp`, `MCPServer.mcp.x-k8s.io/x`…).
    pub why: String,
    /// The path probed.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
}

/// What would guard a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fix {
    /// A short form for the table.
    pub summary: String,
    /// The MCPServer to apply, if one is needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
    /// The commands, in order.
    pub commands: Vec<String>,
}

/// One MCP server: a Service (or a server object with no Service yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    pub namespace: String,
    /// `service/NAME`, or the server object's `KIND/NAME` when it has no Service.
    pub server: String,
    /// The other operator's object that deployed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed_by: Option<String>,
    pub guard: Guard,
    pub ports: Vec<FoundPort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

impl Found {
    fn service_name(&self) -> Option<&str> {
        self.server.strip_prefix("service/")
    }
}

/// The MCP servers in `cluster`, sorted by namespace and name.
pub fn discover(cluster: &Cluster) -> Vec<Found> {
    let ours: Vec<&MCPServer> = cluster.ours.iter().collect();
    let mut found: Vec<Found> = cluster
        .services
        .iter()
        .filter_map(|svc| service_server(cluster, &ours, svc))
        .collect();
    for f in &cluster.foreign {
        if !cluster.services.iter().any(|s| f.made(s)) {
            found.push(Found {
                namespace: f.namespace.clone(),
                server: f.label(),
                deployed_by: Some(f.label()),
                guard: Guard::Unguarded,
                ports: Vec::new(),
                fix: Some(Fix {
                    summary: "none yet: its Service does not exist".into(),
                    object: None,
                    commands: Vec::new(),
                }),
            });
        }
    }
    found.sort_by(|a, b| (&a.namespace, &a.server).cmp(&(&b.namespace, &b.server)));
    found
}

/// The server behind `svc`, if it is one: ports its fields mark as MCP, or every port of a Service another
/// operator made for its server or that an MCPServer of ours selects.
fn service_server(cluster: &Cluster, ours: &[&MCPServer], svc: &Service) -> Option<Found> {
    let ns = svc.namespace().unwrap_or_default();
    let foreign = cluster.foreign.iter().find(|f| f.made(svc));
    let selecting = fleet::selected_by(svc, ours);
    let mut ports = fleet::marked_ports(svc);
    if ports.is_empty() {
        if let Some(f) = foreign {
            ports = fleet::all_ports(svc, &f.label());
        } else if let Some(s) = selecting {
            ports = fleet::all_ports(svc, &format!("selected by MCPServer {}", s.name_any()));
        }
    }
    if ports.is_empty() {
        return None;
    }
    let pods = selected_pods(cluster, svc);
    let guard = match selecting {
        None => Guard::Unguarded,
        Some(s) if pods.is_empty() => Guard::NoPods {
            mcp_server: s.name_any(),
        },
        Some(s) => {
            let name = s.name_any();
            let without: Vec<String> = pods
                .iter()
                .filter(|p| guarded_by(p).as_deref() != Some(name.as_str()))
                .map(|p| p.name_any())
                .collect();
            if without.is_empty() {
                Guard::Guarded { mcp_server: name }
            } else {
                Guard::NotInjected {
                    mcp_server: name,
                    pods: without,
                }
            }
        }
    };
    let path = svc
        .annotations()
        .get(KAGENT_PATH_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let fix = fix(cluster, svc, &ns, &guard, &ports, &pods, foreign);
    Some(Found {
        namespace: ns,
        server: format!("service/{}", svc.name_any()),
        deployed_by: foreign.map(Foreign::label),
        guard,
        ports: ports
            .iter()
            .map(|p| FoundPort {
                port: p.port.port,
                name: p.port.name.clone(),
                why: p.why.clone(),
                path: path.clone(),
                probe: None,
            })
            .collect(),
        fix,
    })
}

/// The running pods a Service sends traffic to.
fn selected_pods<'a>(cluster: &'a Cluster, svc: &Service) -> Vec<&'a Pod> {
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    let ns = svc.namespace();
    cluster
        .pods
        .iter()
        .filter(|p| p.namespace() == ns)
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed")) && p.metadata.deletion_timestamp.is_none()
        })
        .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .collect()
}

/// The command that recreates a pod: its workload's rollout restart, or deleting a bare pod (whatever
/// recreates it then carries the guard).
fn restart_command(pod: &Pod) -> String {
    let ns = pod.namespace().unwrap_or_default();
    let owner = pod.owner_references().iter().find(|o| o.controller == Some(true));
    match owner.map(|o| (o.kind.as_str(), o.name.as_str())) {
        Some(("ReplicaSet", rs)) => {
            let hash = pod.labels().get("pod-template-hash");
            match hash.and_then(|h| rs.strip_suffix(&format!("-{h}"))) {
                Some(deploy) => format!("kubectl rollout restart deployment/{deploy} -n {ns}"),
                None => format!("kubectl delete pod {} -n {ns}", pod.name_any()),
            }
        }
        Some((kind @ ("StatefulSet" | "DaemonSet"), name)) => {
            format!(
                "kubectl rollout restart {}/{name} -n {ns}",
                kind.to_ascii_lowercase()
            )
        }
        _ => format!("kubectl delete pod {} -n {ns}", pod.name_any()),
    }
}

/// The restart commands for `pods`, one per workload.
fn restarts(pods: &[&Pod]) -> Vec<String> {
    let mut commands: Vec<String> = pods.iter().map(|p| restart_command(p)).collect();
    commands.sort();
    commands.dedup();
    commands
}

/// What would guard the server (`None` when it is guarded, or has no pods to guard).
fn fix(
    cluster: &Cluster,
    svc: &Service,
    ns: &str,
    guard: &Guard,
    ports: &[McpPort<'_>],
    pods: &[&Pod],
    foreign: Option<&Foreign>,
) -> Option<Fix> {
    match guard {
        Guard::Guarded { .. } | Guard::NoPods { .. } => None,
        Guard::NotInjected { pods: names, .. } => {
            let without: Vec<&Pod> = pods
                .iter()
                .copied()
                .filter(|p| names.contains(&p.name_any()))
                .collect();
            let mut commands = opt_in(cluster, ns);
            commands.extend(restarts(&without));
            Some(Fix {
                summary: commands.join("; "),
                object: None,
                commands,
            })
        }
        Guard::Unguarded => {
            let selector = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            if selector.is_empty() && foreign.is_none_or(|f| !f.referable) {
                return Some(Fix {
                    summary:
                        "none: the Service has no selector (its endpoints are managed elsewhere); guard the \
                              pods it reaches"
                            .into(),
                    object: None,
                    commands: Vec::new(),
                });
            }
            let object = mcp_server_object(svc, ns, &selector, ports, pods, foreign);
            let mut commands = opt_in(cluster, ns);
            commands.push("kubectl apply -f - <<'EOF' (the MCPServer below)".into());
            commands.extend(restarts(pods));
            Some(Fix {
                summary: format!(
                    "MCPServer {}",
                    object["metadata"]["name"].as_str().unwrap_or_default()
                ),
                object: Some(object),
                commands,
            })
        }
    }
}

/// `kubectl label namespace` when the namespace is not (or not known to be) opted in.
fn opt_in(cluster: &Cluster, ns: &str) -> Vec<String> {
    let needed = cluster
        .not_opted_in
        .as_ref()
        .is_none_or(|list| list.iter().any(|n| n == ns));
    if needed {
        vec![format!("kubectl label namespace {ns} {INJECTION_LABEL}")]
    } else {
        Vec::new()
    }
}

/// The MCPServer that would guard the server behind `svc`. A server reached through a Service listens on the pod
/// IP, so it is guarded unchanged in the `GuardPort` layout (the guard takes over the port name the Service
/// targets); a SIG server is referenced by `spec.serverRef`.
fn mcp_server_object(
    svc: &Service,
    ns: &str,
    selector: &BTreeMap<String, String>,
    ports: &[McpPort<'_>],
    pods: &[&Pod],
    foreign: Option<&Foreign>,
) -> serde_json::Value {
    let name = svc.name_any();
    let spec = match foreign.filter(|f| f.referable) {
        Some(f) => serde_json::json!({
            "serverRef": { "apiGroup": sig_servers::GROUP, "kind": "MCPServer", "name": f.name },
        }),
        None => {
            let port = ports.first().and_then(|p| server_port(p.port, pods));
            serde_json::json!({
                "selector": { "matchLabels": selector },
                "port": port,
                "traffic": { "layout": "GuardPort" },
            })
        }
    };
    serde_json::json!({
        "apiVersion": "mcpguard.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    })
}

/// The container port a Service port reaches (a named `targetPort` resolved through the pods).
fn server_port(port: &ServicePort, pods: &[&Pod]) -> Option<i32> {
    if let Some(n) = fleet::target_number(port) {
        return Some(n);
    }
    let Some(IntOrString::String(name)) = &port.target_port else {
        return None;
    };
    pods.iter()
        .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name.as_str()))
        .map(|p| p.container_port)
}

/// The probe's verdict on one response: `status` to the forged request, `baseline` to the same request with
/// the Service's own name (asked only when needed).
pub fn classify(status: u16, baseline: Option<u16>) -> Answer {
    match status {
        200..=299 => Answer::Answered { status },
        401 | 403 | 421 => Answer::Refused { status },
        // A 400 (say, "no session") that the Service's own name also gets: the forged header changed nothing.
        400..=499 if baseline == Some(status) && !matches!(status, 404 | 405) => Answer::Answered { status },
        300..=399 => Answer::Unknown {
            why: format!("HTTP {status}: a redirect"),
        },
        404 | 405 => Answer::Unknown {
            why: format!("HTTP {status}: is the MCP endpoint at this path?"),
        },
        502..=504 => Answer::Unknown {
            why: format!("HTTP {status}: no ready endpoint, or the API server cannot reach the pod"),
        },
        _ => Answer::Unknown {
            why: format!("HTTP {status}"),
        },
    }
}

/// The table a person reads, with the MCPServers to apply below it.
pub fn table(found: &[Found], probed: bool) -> String {
    if found.is_empty() {
        return "No MCP servers found.\n".into();
    }
    let mut rows = vec![[
        "SERVER".to_string(),
        "NAMESPACE".into(),
        "GUARDED BY".into(),
        "FORGED HOST".into(),
        "FORGED ORIGIN".into(),
        "TO GUARD IT".into(),
    ]];
    let mut notes = Vec::new();
    for f in found {
        let guarded_by = match &f.guard {
            Guard::Guarded { mcp_server } => format!("MCPServer {mcp_server}"),
            Guard::NotInjected { mcp_server, pods } => {
                format!(
                    "none ({} pod(s) without MCPServer {mcp_server}'s guard)",
                    pods.len()
                )
            }
            Guard::NoPods { mcp_server } => format!("MCPServer {mcp_server} (no pods)"),
            Guard::Unguarded => "none".into(),
        };
        let fix = match &f.fix {
            None => "-".into(),
            Some(fix) if fix.object.is_some() => {
                notes.push(f);
                format!("{} [{}]", fix.summary, notes.len())
            }
            Some(fix) => fix.summary.clone(),
        };
        for (i, port) in ports_or_none(f).into_iter().enumerate() {
            let server = match port {
                Some(p) => format!(
                    "{}:{}",
                    f.server,
                    p.name.clone().unwrap_or_else(|| p.port.to_string())
                ),
                None => f.server.clone(),
            };
            let (host, origin) = match port.and_then(|p| p.probe.as_ref()) {
                Some(probe) => (probe.forged_host.cell(), probe.forged_origin.cell()),
                None if probed => ("not probed".into(), "not probed".into()),
                None => ("-".into(), "-".into()),
            };
            let first = i == 0;
            rows.push([
                server,
                f.namespace.clone(),
                if first { guarded_by.clone() } else { "\"".into() },
                host,
                origin,
                if first { fix.clone() } else { "\"".into() },
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if !probed {
        let _ = writeln!(
            out,
            "\n(--probe asks each port whether it answers a forged Host and a forged Origin)"
        );
    }
    for (i, f) in notes.iter().enumerate() {
        let Some(fix) = &f.fix else { continue };
        let _ = writeln!(out, "\n[{}] To guard {}/{}:", i + 1, f.namespace, f.server);
        for command in &fix.commands {
            let _ = writeln!(out, "  {command}");
        }
        if let Some(object) = &fix.object {
            let yaml = serde_yaml::to_string(object).unwrap_or_default();
            for line in yaml.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

fn ports_or_none(f: &Found) -> Vec<Option<&FoundPort>> {
    if f.ports.is_empty() {
        vec![None]
    } else {
        f.ports.iter().map(Some).collect()
    }
}

/// The machine-readable report.
pub fn json(found: &[Found]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "servers": found })).unwrap_or_default() + "\n"
}

/// Reads what [`discover`] needs in `namespace` (`None`: every namespace), skipping other operators' kinds
/// whose CRD is not installed.
pub async fn fetch(kube: &Kube, namespace: Option<&str>) -> anyhow::Result<Cluster> {
    let client = &kube.client;
    let scope = namespace.map_or("every namespace".to_string(), |ns| format!("namespace {ns}"));
    let services = list::<Service>(client, namespace)
        .await
        .with_context(|| format!("listing Services in {scope}"))?;
    let pods = list::<Pod>(client, namespace)
        .await
        .with_context(|| format!("listing Pods in {scope}"))?;
    let ours = match list::<MCPServer>(client, namespace).await {
        Ok(list) => list,
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(e).context("listing MCPServers.mcpguard.dev"),
    };
    let mut foreign = Vec::new();
    if sig_servers::served(client).await.unwrap_or(false) {
        for s in optional(
            list::<SigMCPServer>(client, namespace).await,
            "MCPServers.mcp.x-k8s.io",
        )? {
            foreign.push(Foreign {
                kind: format!("MCPServer.{}", sig_servers::GROUP),
                namespace: s.namespace().unwrap_or_default(),
                name: s.name_any(),
                uid: s.uid(),
                service: s.service_name(),
                referable: true,
            });
        }
    }
    for kind in [TOOLHIVE, KMCP] {
        foreign.extend(foreign_servers(client, namespace, &kind).await?);
    }
    Ok(Cluster {
        services,
        pods,
        ours,
        foreign,
        not_opted_in: not_opted_in(client).await,
    })
}

async fn list<K>(client: &Client, namespace: Option<&str>) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api = match namespace {
        Some(ns) => Api::<K>::namespaced(client.clone(), ns),
        None => Api::<K>::all(client.clone()),
    };
    Ok(api.list(&ListParams::default()).await?.items)
}

/// An optional kind's objects: none when it is not served; a warning (and none) when the user may not list it.
fn optional<K>(listed: Result<Vec<K>, kube::Error>, what: &str) -> anyhow::Result<Vec<K>> {
    match listed {
        Ok(items) => Ok(items),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            eprintln!(
                "Warning: not allowed to list {what} ({}); their servers are found by their Services only",
                e.message
            );
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("listing {what}")),
    }
}

/// The MCPServers of ToolHive or kmcp, when their CRD is installed.
async fn foreign_servers(
    client: &Client,
    namespace: Option<&str>,
    kind: &ForeignKind,
) -> anyhow::Result<Vec<Foreign>> {
    let group = match kube::discovery::group(client, kind.group).await {
        Ok(g) => g,
        Err(_) => return Ok(Vec::new()),
    };
    let Some((resource, _)) = group.recommended_kind("MCPServer") else {
        return Ok(Vec::new());
    };
    let ar: ApiResource = resource;
    let api = match namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
        None => Api::<DynamicObject>::all_with(client.clone(), &ar),
    };
    let what = format!("MCPServers.{}", kind.group);
    let items = optional(api.list(&ListParams::default()).await.map(|l| l.items), &what)?;
    Ok(items
        .iter()
        .map(|o| Foreign {
            kind: format!("MCPServer.{}", kind.group),
            namespace: o.namespace().unwrap_or_default(),
            name: o.name_any(),
            uid: o.uid(),
            service: (kind.service_name)(&o.name_any()),
            referable: false,
        })
        .collect())
}

/// The namespaces not opted in to injection (`None` when the user may not read Namespaces).
async fn not_opted_in(client: &Client) -> Option<Vec<String>> {
    let list = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let (key, value) = INJECTION_LABEL.split_once('=')?;
    Some(
        list.items
            .iter()
            .filter(|n| n.labels().get(key).map(String::as_str) != Some(value))
            .map(|n| n.name_any())
            .collect(),
    )
}

/// Probes every port of every found Service: at most three requests each (forged Host; forged Origin; the
/// Service's own name when an answer needs comparing), one at a time, each bounded by `timeout`.
pub async fn probe(client: &Client, found: &mut [Found], timeout: Duration) {
    let mut allowed: BTreeMap<String, bool> = BTreeMap::new();
    for f in found.iter_mut() {
        let Some(svc) = f.service_name().map(str::to_string) else {
            continue;
        };
        let ns = f.namespace.clone();
        if !allowed.contains_key(&ns) {
            allowed.insert(ns.clone(), may_proxy(client, &ns).await);
        }
        for port in &mut f.ports {
            if !allowed[&ns] {
                // The API server's own 403 would read as the server refusing: say why instead.
                let why = format!("not allowed to create services/proxy in {ns}");
                port.probe = Some(Probe {
                    forged_host: Answer::Unknown { why: why.clone() },
                    forged_origin: Answer::Unknown { why },
                });
                continue;
            }
            let target = Target {
                namespace: &ns,
                service: &svc,
                port: port.name.clone().unwrap_or_else(|| port.port.to_string()),
                number: port.port,
                path: &port.path,
            };
            port.probe = Some(probe_port(client, &target, timeout).await);
        }
    }
}

/// Whether the user may send requests through the Service proxy in `ns` (`create services/proxy`).
async fn may_proxy(client: &Client, ns: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                verb: Some("create".into()),
                resource: Some("services".into()),
                subresource: Some("proxy".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&Default::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

/// Where a probe goes.
struct Target<'a> {
    namespace: &'a str,
    service: &'a str,
    /// The Service port's name, or its number.
    port: String,
    number: i32,
    path: &'a str,
}

impl Target<'_> {
    /// The Service's own name, as in-cluster clients send it.
    fn own_host(&self) -> String {
        format!("{}.{}.svc:{}", self.service, self.namespace, self.number)
    }

    /// The API server's Service proxy path, which forwards the request's Host unchanged.
    fn proxy_path(&self) -> String {
        let path = if self.path.starts_with('/') {
            self.path.to_string()
        } else {
            format!("/{}", self.path)
        };
        format!(
            "/api/v1/namespaces/{}/services/{}:{}/proxy{path}",
            self.namespace, self.service, self.port
        )
    }
}

async fn probe_port(client: &Client, target: &Target<'_>, timeout: Duration) -> Probe {
    let own = target.own_host();
    let mut baseline: Option<Result<u16, String>> = None;
    let mut answer = async |host: &str, origin: Option<&str>| -> Answer {
        let status = match ping(client, target, host, origin, timeout).await {
            Ok(s) => s,
            Err(why) => return Answer::Unknown { why },
        };
        let first = classify(status, None);
        if !matches!(first, Answer::Unknown { .. }) || !(400..500).contains(&status) {
            return first;
        }
        if baseline.is_none() {
            baseline = Some(ping(client, target, &own, None, timeout).await);
        }
        classify(status, baseline.clone().and_then(Result::ok))
    };
    let forged_host = answer(FORGED_HOST, None).await;
    let forged_origin = answer(&own, Some(FORGED_ORIGIN)).await;
    Probe {
        forged_host,
        forged_origin,
    }
}

/// One `ping` through the Service proxy with this Host (and Origin): the response's status.
async fn ping(
    client: &Client,
    target: &Target<'_>,
    host: &str,
    origin: Option<&str>,
    timeout: Duration,
) -> Result<u16, String> {
    let mut request = http::Request::post(target.proxy_path())
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-method", "ping");
    if let Some(origin) = origin {
        request = request.header(http::header::ORIGIN, origin);
    }
    let request = request
        .body(PING.as_bytes().to_vec())
        .map_err(|e| format!("building the request: {e}"))?;
    match tokio::time::timeout(timeout, client.send(request.map(Into::into))).await {
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
        // The body is not read: the status says it all, and an SSE answer may stay open.
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        Ok(Err(kube::Error::Api(e))) => Ok(e.code),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
