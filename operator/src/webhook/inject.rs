//! The injection planner: a pure function from (pod, namespace labels, MCPServers, sidecar settings) to a
//! decision — skip with a reason, deny with a message, or the injected pod.
//!
//! Two traffic layouts (see `docs/webhook.md`), neither with iptables or NET_ADMIN:
//! - `SharedPort` (default): the MCP server keeps its SDK default `127.0.0.1:<port>`; the guard listens on
//!   `$(POD_IPS):<port>` (the pod's IPs from the downward API, both of a dual-stack pod) — the same port number on
//!   the pod's own addresses — and forwards to `http://127.0.0.1:<port>`. Services, Ingresses and Routes (numeric or named `targetPort`) and
//!   kubelet probes reach the pod IP, hence the guard. The app container is not changed.
//! - `GuardPort`, for servers bound to all interfaces: the guard listens on `$(POD_IPS):<guard port>` and takes
//!   over the *name* of the app's container port (the app's port is renamed [`UNGUARDED_PORT_NAME`]), so Services
//!   with a named `targetPort` reach the guard; httpGet probes on the app port are pointed at the guard's port.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, Pod, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use crate::pod_contract::{
    ADMIN_PORT, ADMIN_PORT_NAME, CONFIG_MOUNT_PATH, CONFIG_VOLUME_NAME, GUARD_PORT_NAME, INJECTED_ANNOTATION,
    InjectionStatus, NAMESPACE_INJECTION_LABEL, NO_TOKEN_VOLUME_NAME, NO_TOKEN_VOLUME_SIZE, POD_INJECT_LABEL,
    ProbeRewrite, RenamedPort, SERVICE_ACCOUNT_TOKEN_PATH, SIDECAR_NAME, STATUS_VERSION, UNGUARDED_PORT_NAME,
    guarded_by,
};
pub use crate::settings::SidecarSettings;

/// The annotation `kubectl logs/exec` use to pick a container.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
/// Pod annotation choosing a native sidecar (`"true"`) or an ordinary container (`"false"`) for this pod,
/// whatever the policy and the cluster's versions say.
pub const NATIVE_SIDECAR_ANNOTATION: &str = "mcpguard.dev/native-sidecar";

/// The pod's [`NATIVE_SIDECAR_ANNOTATION`], if it has one.
pub fn native_sidecar_annotation(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NATIVE_SIDECAR_ANNOTATION))
        .map(String::as_str)
}
/// Environment variable holding the pod IP (downward API `status.podIP`) in the guard container.
pub const POD_IP_ENV: &str = "POD_IP";
/// Environment variable holding every pod IP (downward API `status.podIPs`: `10.0.0.7,fd00::7` in a dual-stack
/// pod) in the guard container.
pub const POD_IPS_ENV: &str = "POD_IPS";
/// The uid/gid the guard runs as (distroless `nonroot`).
pub const GUARD_UID: i64 = 65532;
/// Namespaces never injected, whatever their labels say.
pub const PROTECTED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// An MCPServer as far as injection is concerned, with its policy's sidecar settings already resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardedServer {
    pub name: String,
    pub selector: LabelSelector,
    /// The port the server listens on (on 127.0.0.1 inside the pod in `SharedPort`, any address in `GuardPort`).
    pub port: u16,
    pub layout: Layout,
    /// The policy's `injection.nativeSidecars`: `None` = `Auto` (the cluster decides).
    pub native_sidecars: Option<bool>,
    pub sidecar: SidecarSettings,
}

/// Where the guard listens (the MCPServer's `traffic`, resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The guard on `$(POD_IP):<port>`, the server on `127.0.0.1:<port>`.
    SharedPort,
    /// The guard on `$(POD_IP):<guard_port>` with the name of the server's port; the server where it binds.
    GuardPort { guard_port: u16 },
}

impl GuardedServer {
    /// The port the guard listens on.
    pub fn listen_port(&self) -> u16 {
        match self.layout {
            Layout::SharedPort => self.port,
            Layout::GuardPort { guard_port } => guard_port,
        }
    }
}

/// Everything the planner looks at.
#[derive(Clone, Copy, Debug)]
pub struct InjectionInput<'a> {
    pub pod: &'a Pod,
    /// The pod's namespace (the pod object of a CREATE may not carry it).
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// The MCPServers in the pod's namespace.
    pub servers: &'a [GuardedServer],
    /// The cluster runs native sidecars (API server and every kubelet ≥ 1.29): inject an init container with
    /// `restartPolicy: Always` instead of an ordinary container, unless the policy or the pod's
    /// [`NATIVE_SIDECAR_ANNOTATION`] says otherwise ([`native_sidecar_choice`]).
    pub native_sidecars: bool,
    /// Extra namespaces never injected (the operator's own).
    pub excluded_namespaces: &'a [String],
}

/// Why a pod was left alone. Checked in this order; each is counted (`reason` label) and logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// `spec.hostNetwork: true`: the guard would bind the node's address.
    HostNetwork,
    /// kube-system & co, or the operator's own namespace.
    ProtectedNamespace,
    /// Namespace label `mcpguard.dev/injection: disabled`.
    NamespaceOptedOut,
    /// Namespace without `mcpguard.dev/injection: enabled`.
    NamespaceNotOptedIn,
    /// Pod label `mcpguard.dev/inject: "false"`.
    PodOptedOut,
    /// The pod carries a valid `mcpguard.dev/injected` annotation and the containers it names.
    AlreadyInjected,
    /// No MCPServer in the namespace selects the pod.
    NoMatchingServer,
}

impl SkipReason {
    /// The `reason` label value (snake_case).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::HostNetwork => "host_network",
            SkipReason::ProtectedNamespace => "protected_namespace",
            SkipReason::NamespaceOptedOut => "namespace_opted_out",
            SkipReason::NamespaceNotOptedIn => "namespace_not_opted_in",
            SkipReason::PodOptedOut => "pod_opted_out",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::NoMatchingServer => "no_matching_mcpserver",
        }
    }

    /// A sentence for logs and audit annotations.
    pub fn explain(self) -> &'static str {
        match self {
            SkipReason::HostNetwork => {
                "pod uses hostNetwork; the guard cannot take the server's port on the node"
            }
            SkipReason::ProtectedNamespace => {
                "namespace is a system or operator namespace and is never injected"
            }
            SkipReason::NamespaceOptedOut => "namespace is labelled mcpguard.dev/injection=disabled",
            SkipReason::NamespaceNotOptedIn => "namespace is not labelled mcpguard.dev/injection=enabled",
            SkipReason::PodOptedOut => "pod is labelled mcpguard.dev/inject=false",
            SkipReason::AlreadyInjected => "pod already carries the guard (mcpguard.dev/injected)",
            SkipReason::NoMatchingServer => "no MCPServer in the namespace selects this pod",
        }
    }

    /// All reasons, in check order.
    pub const ALL: [SkipReason; 7] = [
        SkipReason::HostNetwork,
        SkipReason::ProtectedNamespace,
        SkipReason::NamespaceOptedOut,
        SkipReason::NamespaceNotOptedIn,
        SkipReason::PodOptedOut,
        SkipReason::AlreadyInjected,
        SkipReason::NoMatchingServer,
    ];
}

/// What to do with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum InjectionPlan {
    Skip(SkipReason),
    /// Refuse the pod: injecting would be wrong and leaving it unguarded would be worse.
    Deny(String),
    Inject(Box<Injection>),
}

/// The result of injecting: the pod after, and what was recorded in the status annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub server: String,
    pub pod: Pod,
    pub status: InjectionStatus,
}

/// Decides what to do with a pod. Pure: same input, same answer.
pub fn plan(input: &InjectionInput<'_>) -> InjectionPlan {
    let pod = input.pod;
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return InjectionPlan::Skip(SkipReason::HostNetwork);
    }
    if PROTECTED_NAMESPACES.contains(&input.namespace)
        || input.excluded_namespaces.iter().any(|n| n == input.namespace)
    {
        return InjectionPlan::Skip(SkipReason::ProtectedNamespace);
    }
    match input
        .namespace_labels
        .get(NAMESPACE_INJECTION_LABEL)
        .map(String::as_str)
    {
        Some("enabled") => {}
        Some("disabled") => return InjectionPlan::Skip(SkipReason::NamespaceOptedOut),
        _ => return InjectionPlan::Skip(SkipReason::NamespaceNotOptedIn),
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if labels.get(POD_INJECT_LABEL).map(String::as_str) == Some("false") {
        return InjectionPlan::Skip(SkipReason::PodOptedOut);
    }
    if let Some(Ok(status)) = InjectionStatus::of(pod)
        && status.is_present_in(pod)
    {
        return InjectionPlan::Skip(SkipReason::AlreadyInjected);
    }
    let mut matching: Vec<&GuardedServer> = input
        .servers
        .iter()
        .filter(|s| crate::selector::matches(&s.selector, &labels))
        .collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    match matching.as_slice() {
        [] => InjectionPlan::Skip(SkipReason::NoMatchingServer),
        [server] => {
            let native = match native_sidecar_choice(
                native_sidecar_annotation(pod),
                server.native_sidecars,
                input.native_sidecars,
            ) {
                Ok(n) => n,
                Err(message) => return InjectionPlan::Deny(message),
            };
            match inject(pod, server, native) {
                Ok(injection) => InjectionPlan::Inject(Box::new(injection)),
                Err(message) => InjectionPlan::Deny(message),
            }
        }
        several => {
            let names: Vec<String> = several.iter().map(|s| format!("{:?}", s.name)).collect();
            InjectionPlan::Deny(format!(
                "pod is selected by several MCPServers ({}); each pod can be guarded by exactly one: make their \
                 spec.selector disjoint",
                names.join(", ")
            ))
        }
    }
}

/// Native sidecar or ordinary container: the pod's annotation, else the policy's `injection.nativeSidecars`,
/// else what the cluster supports. An annotation other than `"true"`/`"false"` is an error (a denial message):
/// guessing could keep the pod in `Init` on an old kubelet.
pub fn native_sidecar_choice(
    annotation: Option<&str>,
    policy: Option<bool>,
    cluster: bool,
) -> Result<bool, String> {
    match annotation {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "annotation {NATIVE_SIDECAR_ANNOTATION}: {other:?} must be \"true\" (native sidecar) or \"false\" \
             (ordinary container); remove it to let the policy and the cluster decide"
        )),
        None => Ok(policy.unwrap_or(cluster)),
    }
}

/// Removes whatever a previous injection recorded in the status annotation (and the annotation itself).
pub fn strip(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    let Some(Ok(status)) = InjectionStatus::of(&pod) else {
        if let Some(a) = pod.metadata.annotations.as_mut() {
            a.remove(INJECTED_ANNOTATION);
        }
        return pod;
    };
    if let Some(spec) = pod.spec.as_mut() {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            if let Some(r) = status.renamed_port.as_ref().filter(|r| r.container == c.name)
                && let Some(p) = c
                    .ports
                    .iter_mut()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(UNGUARDED_PORT_NAME))
            {
                p.name = Some(r.name.clone());
            }
            let name = c.name.clone();
            for rw in status.probes.iter().filter(|rw| rw.container == name) {
                if let Some(probe) = probe_mut(c, &rw.probe) {
                    set_probe_port(probe, rw.port.clone());
                }
            }
        }
        if let Some(init) = spec.init_containers.as_mut() {
            init.retain(|c| !status.init_containers.contains(&c.name));
            if init.is_empty() {
                spec.init_containers = None;
            }
        }
        spec.containers.retain(|c| !status.containers.contains(&c.name));
        if let Some(vols) = spec.volumes.as_mut() {
            vols.retain(|v| !status.volumes.contains(&v.name));
            if vols.is_empty() {
                spec.volumes = None;
            }
        }
    }
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(INJECTED_ANNOTATION);
        if let Some(dc) = &status.default_container
            && a.get(DEFAULT_CONTAINER_ANNOTATION) == Some(dc)
        {
            a.remove(DEFAULT_CONTAINER_ANNOTATION);
        }
        if a.is_empty() {
            pod.metadata.annotations = None;
        }
    }
    pod
}

/// Injects the guard for `server`, removing any earlier injection first, so `inject(inject(p)) == inject(p)`.
/// Errors are messages for a denial (a name clash the webhook cannot resolve).
pub fn inject(pod: &Pod, server: &GuardedServer, native_sidecars: bool) -> Result<Injection, String> {
    let mut pod = strip(pod);
    let Some(spec) = pod.spec.as_mut() else {
        return Err("pod has no spec".into());
    };
    refuse_clashes(spec, server)?;

    // The app container: the one declaring the server's port, else the first.
    let app = spec
        .containers
        .iter()
        .find(|c| {
            c.ports
                .iter()
                .flatten()
                .any(|p| p.container_port == i32::from(server.port))
        })
        .or(spec.containers.first())
        .map(|c| c.name.clone())
        .ok_or("pod has no containers")?;

    let mut guard = guard_container(server);
    let mut status = InjectionStatus {
        version: STATUS_VERSION,
        mcp_server: server.name.clone(),
        image: server.sidecar.image.clone(),
        init_containers: Vec::new(),
        containers: Vec::new(),
        volumes: vec![CONFIG_VOLUME_NAME.to_string(), NO_TOKEN_VOLUME_NAME.to_string()],
        default_container: None,
        renamed_port: None,
        probes: Vec::new(),
    };
    if let Layout::GuardPort { guard_port } = server.layout {
        let guard_port_name = take_over_port(spec, &app, server.port, guard_port, &mut status)?;
        guard.ports.get_or_insert_with(Vec::new).insert(
            0,
            ContainerPort {
                name: Some(guard_port_name),
                container_port: i32::from(guard_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        );
    }
    if native_sidecars {
        // Last among the init containers: regular init containers finish first, then the guard starts and (its
        // startupProbe passing) binds the port before any app container starts.
        guard.restart_policy = Some("Always".into());
        spec.init_containers.get_or_insert_with(Vec::new).push(guard);
        status.init_containers.push(SIDECAR_NAME.into());
    } else {
        // First among the containers: kubelet starts containers in order, giving the guard a head start on
        // binding the port (there is no ordering guarantee without native sidecars; see docs/webhook.md).
        spec.containers.insert(0, guard);
        status.containers.push(SIDECAR_NAME.into());
    }
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(guard_volumes(&server.name));

    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if !annotations.contains_key(DEFAULT_CONTAINER_ANNOTATION) {
        annotations.insert(DEFAULT_CONTAINER_ANNOTATION.into(), app.clone());
        status.default_container = Some(app);
    }
    let json = serde_json::to_string(&status).map_err(|e| format!("cannot encode injection status: {e}"))?;
    annotations.insert(INJECTED_ANNOTATION.into(), json);
    Ok(Injection {
        server: server.name.clone(),
        pod,
        status,
    })
}

/// Refuses a pod that already has what the injection would add: a container or volume of the guard's names, or
/// the guard's admin port.
fn refuse_clashes(spec: &k8s_openapi::api::core::v1::PodSpec, server: &GuardedServer) -> Result<(), String> {
    let clash = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR_NAME);
    if clash {
        return Err(format!(
            "pod already has a container named {SIDECAR_NAME:?} that the webhook did not inject; rename it, or label \
             the pod {POD_INJECT_LABEL}=false"
        ));
    }
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == CONFIG_VOLUME_NAME || v.name == NO_TOKEN_VOLUME_NAME)
    {
        return Err(format!(
            "pod already has a volume named {:?}; rename it, or label the pod {POD_INJECT_LABEL}=false",
            v.name
        ));
    }
    let port_taken = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| p.container_port == i32::from(ADMIN_PORT) || p.name.as_deref() == Some(ADMIN_PORT_NAME));
    if port_taken || server.port == ADMIN_PORT || server.listen_port() == ADMIN_PORT {
        return Err(format!(
            "port {ADMIN_PORT} (the guard's admin port) is already used in the pod; label the pod \
             {POD_INJECT_LABEL}=false or move the app off that port"
        ));
    }
    Ok(())
}

/// The guard's volumes: the server's ConfigMap, and the empty volume masking the ServiceAccount token.
fn guard_volumes(server: &str) -> [Volume; 2] {
    [
        Volume {
            name: CONFIG_VOLUME_NAME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: crate::crd::config_map_name(server),
                ..Default::default()
            }),
            ..Default::default()
        },
        // Memory-backed: an empty tmpfs counts 0 bytes where an empty directory on ext4 counts its 4 KiB block, so
        // no node filesystem makes the kubelet's eviction manager see it over its limit; the tmpfs itself is capped
        // at the limit, and the guard mounts it read-only (see docs/webhook.md).
        Volume {
            name: NO_TOKEN_VOLUME_NAME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity(NO_TOKEN_VOLUME_SIZE.into())),
            }),
            ..Default::default()
        },
    ]
}

/// `GuardPort` layout: renames the app's port (the guard takes over its name, returned) and points the probes
/// on the app's port at the guard's, recording both in `status` so that [`strip`] restores them.
fn take_over_port(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    app: &str,
    app_port: u16,
    guard_port: u16,
    status: &mut InjectionStatus,
) -> Result<String, String> {
    let all_ports = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
    };
    if guard_port == app_port {
        return Err(format!(
            "spec.traffic.guardPort {guard_port} is the server's own port; the GuardPort layout needs another port"
        ));
    }
    if all_ports().any(|p| p.container_port == i32::from(guard_port)) {
        return Err(format!(
            "port {guard_port} (the guard's port, spec.traffic.guardPort) is already used in the pod; choose another \
             spec.traffic.guardPort"
        ));
    }
    if let Some(p) =
        all_ports().find(|p| matches!(p.name.as_deref(), Some(UNGUARDED_PORT_NAME | GUARD_PORT_NAME)))
    {
        return Err(format!(
            "the pod already has a port named {:?}, which the GuardPort layout uses; rename it",
            p.name.as_deref().unwrap_or_default()
        ));
    }
    let app_port = i32::from(app_port);
    let mut old_name = None;
    if let Some(p) = spec
        .containers
        .iter_mut()
        .filter(|c| c.name == app)
        .flat_map(|c| c.ports.iter_mut().flatten())
        .find(|p| p.container_port == app_port && p.name.is_some())
    {
        old_name = p.name.replace(UNGUARDED_PORT_NAME.into());
        status.renamed_port = old_name.clone().map(|name| RenamedPort {
            container: app.to_string(),
            name,
        });
    }
    // Probes of every container on the app's port: they share the pod's network, and kubelet resolves a named
    // probe port in the probe's own container, where the renamed name no longer exists.
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let name = c.name.clone();
            let Some(probe) = probe_mut(c, kind) else { continue };
            let Some(port) = probe_port(probe) else { continue };
            let on_app = match &port {
                IntOrString::Int(n) => *n == app_port,
                IntOrString::String(s) => Some(s) == old_name.as_ref() && name == app,
            };
            if !on_app {
                continue;
            }
            // httpGet goes through the guard (the pod IP is an allowed Host); a TCP or gRPC probe keeps checking
            // the app itself, by number.
            let new = if probe.http_get.is_some() {
                IntOrString::Int(i32::from(guard_port))
            } else {
                IntOrString::Int(app_port)
            };
            if new == port {
                continue;
            }
            set_probe_port(probe, new);
            status.probes.push(ProbeRewrite {
                container: name,
                probe: kind.into(),
                port,
            });
        }
    }
    Ok(old_name.unwrap_or_else(|| GUARD_PORT_NAME.into()))
}

fn probe_mut<'a>(c: &'a mut Container, kind: &str) -> Option<&'a mut Probe> {
    match kind {
        "startupProbe" => c.startup_probe.as_mut(),
        "livenessProbe" => c.liveness_probe.as_mut(),
        "readinessProbe" => c.readiness_probe.as_mut(),
        _ => None,
    }
}

fn probe_port(p: &Probe) -> Option<IntOrString> {
    if let Some(h) = &p.http_get {
        return Some(h.port.clone());
    }
    p.tcp_socket.as_ref().map(|t| t.port.clone())
}

fn set_probe_port(p: &mut Probe, port: IntOrString) {
    if let Some(h) = p.http_get.as_mut() {
        h.port = port;
    } else if let Some(t) = p.tcp_socket.as_mut() {
        t.port = port;
    }
}

/// Requests/limits when the policy sets none: small, with a memory limit so a leak cannot starve the app.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("10m".into())),
            ("memory".to_string(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
        ..Default::default()
    }
}

/// The guard's securityContext: passes Pod Security "restricted" on its own, whatever the pod sets.
pub fn guard_security_context(port: u16) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(GUARD_UID),
        run_as_group: Some(GUARD_UID),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            // The only capability "restricted" lets a container add back; needed for ports below 1024 where
            // the runtime does not open unprivileged ports.
            add: (port < 1024).then(|| vec!["NET_BIND_SERVICE".into()]),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn admin_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

/// An environment variable from one of the pod's fields (downward API).
fn downward_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The guard container for a server (without `restartPolicy`; [`inject`] sets it for native sidecars).
pub fn guard_container(server: &GuardedServer) -> Container {
    let listen_port = server.listen_port();
    let mut args = vec![
        // The pod's IPs in brackets, as IPv6 addresses are written; the guard takes bracketed IPv4 addresses and a
        // list as well, so that one spelling serves IPv4, IPv6 and dual-stack pods (a Service's ClusterIP of
        // either family reaches the pod's address of that family).
        "--listen".to_string(),
        format!("[$({POD_IPS_ENV})]:{listen_port}"),
        "--upstream".into(),
        format!("http://127.0.0.1:{}", server.port),
        "--config".into(),
        format!("{CONFIG_MOUNT_PATH}/{}", mcp_guard_config::CONFIG_KEY),
        // On the pod IP as well, so that kubelet's probes (which dial the pod IP) reach it on IPv4 and IPv6 pods
        // alike; `0.0.0.0` is IPv4 only.
        "--admin-listen".into(),
        format!("[$({POD_IP_ENV})]:{ADMIN_PORT}"),
        // kubelet's HTTP probes on the server port carry `Host: <pod IP>:<port>`; an IP literal cannot be
        // forged by DNS rebinding (the browser sends the attacker's name), so allowing it is safe.
        "--allow-host".into(),
        format!("[$({POD_IP_ENV})]"),
        "--log-format".into(),
        "json".into(),
    ];
    if let Some(level) = &server.sidecar.log_level {
        args.push("--log-level".into());
        args.push(level.clone());
    }
    Container {
        name: SIDECAR_NAME.into(),
        image: Some(server.sidecar.image.clone()),
        image_pull_policy: server.sidecar.image_pull_policy.clone(),
        args: Some(args),
        env: Some(vec![
            downward_env(POD_IP_ENV, "status.podIP"),
            downward_env(POD_IPS_ENV, "status.podIPs"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.into()),
            container_port: i32::from(ADMIN_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        startup_probe: Some(admin_probe("/livez", 1, 30)),
        liveness_probe: Some(admin_probe("/livez", 10, 3)),
        readiness_probe: Some(admin_probe("/readyz", 5, 2)),
        resources: Some(server.sidecar.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(guard_security_context(listen_port)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: CONFIG_VOLUME_NAME.into(),
                mount_path: CONFIG_MOUNT_PATH.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: NO_TOKEN_VOLUME_NAME.into(),
                mount_path: SERVICE_ACCOUNT_TOKEN_PATH.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}
