//! The pod contract: what the webhook writes into a pod and the operator reads back from it — the guard
//! container's name, its ports and mount paths, and the status annotation that says which MCPServer's guard a
//! pod carries. It sits below both the injection planner (`webhook::inject`) and the derivation (`sources`),
//! and imports neither.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// Namespace label that opts a namespace in (`enabled`) or out (`disabled`).
pub const NAMESPACE_INJECTION_LABEL: &str = "mcpguard.dev/injection";
/// Pod label that opts a pod out (`"false"`).
pub const POD_INJECT_LABEL: &str = "mcpguard.dev/inject";
/// Pod annotation recording what was injected ([`InjectionStatus`] as JSON).
pub const INJECTED_ANNOTATION: &str = "mcpguard.dev/injected";
/// Name of the injected guard container.
pub const SIDECAR_NAME: &str = "mcp-guard";
/// Name of the injected ConfigMap volume.
pub const CONFIG_VOLUME_NAME: &str = "mcp-guard-config";
/// An empty volume mounted over the ServiceAccount token path in the guard container, so that the API server's
/// ServiceAccount admission (which skips containers that already mount that path) never hands the guard the
/// pod's token: the guard talks to no API.
pub const NO_TOKEN_VOLUME_NAME: &str = "mcp-guard-no-token";
/// The size of the memory-backed token-masking volume: one page, the least a tmpfs holds.
pub const NO_TOKEN_VOLUME_SIZE: &str = "4Ki";
/// Where kubelet mounts the ServiceAccount token.
pub const SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Where the ConfigMap is mounted (a directory: no `subPath`, so kubelet's symlink swap reaches the guard).
pub const CONFIG_MOUNT_PATH: &str = "/etc/mcp-guard";
/// The guard's admin port (`/livez`, `/readyz`, `/metrics`) inside the pod.
pub const ADMIN_PORT: u16 = 15081;
/// Name of the admin port (at most 15 characters, unique in the pod).
pub const ADMIN_PORT_NAME: &str = "mcp-guard-admin";
/// The new name of the app's container port in the `GuardPort` layout (the guard takes over the old one).
pub const UNGUARDED_PORT_NAME: &str = "mcp-unguarded";
/// Name of the guard's port in the `GuardPort` layout when the app's port had no name to take over.
pub const GUARD_PORT_NAME: &str = "mcp-guard";
/// Version of the [`InjectionStatus`] format.
pub const STATUS_VERSION: u32 = 1;

/// The `mcpguard.dev/injected` annotation: exactly what was added, so that re-injection removes it first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    pub version: u32,
    /// The MCPServer whose ConfigMap the guard reads.
    pub mcp_server: String,
    pub image: String,
    /// Names added to `spec.initContainers` (native sidecar).
    #[serde(default)]
    pub init_containers: Vec<String>,
    /// Names added to `spec.containers` (clusters without native sidecars).
    #[serde(default)]
    pub containers: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Set when the webhook added `kubectl.kubernetes.io/default-container` (value = this container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_container: Option<String>,
    /// `GuardPort` layout: the app's container port the webhook renamed to [`UNGUARDED_PORT_NAME`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_port: Option<RenamedPort>,
    /// `GuardPort` layout: probes the webhook pointed elsewhere, with their original port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeRewrite>,
}

/// A container port renamed by the injection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenamedPort {
    pub container: String,
    /// Its name before (now the guard's port's name).
    pub name: String,
}

/// A probe whose port the injection changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRewrite {
    pub container: String,
    /// `startupProbe`, `livenessProbe` or `readinessProbe`.
    pub probe: String,
    /// Its port before.
    pub port: IntOrString,
}

impl InjectionStatus {
    /// Parses the annotation of a pod, if present and well-formed.
    pub fn of(pod: &Pod) -> Option<Result<InjectionStatus, serde_json::Error>> {
        let raw = pod.metadata.annotations.as_ref()?.get(INJECTED_ANNOTATION)?;
        Some(serde_json::from_str(raw))
    }

    /// Whether everything this status says was injected is in the pod.
    pub fn is_present_in(&self, pod: &Pod) -> bool {
        let Some(spec) = pod.spec.as_ref() else {
            return false;
        };
        let has = |list: Option<&Vec<Container>>, name: &str| {
            list.is_some_and(|l| l.iter().any(|c| c.name == name))
        };
        !(self.init_containers.is_empty() && self.containers.is_empty())
            && self
                .init_containers
                .iter()
                .all(|n| has(spec.init_containers.as_ref(), n))
            && self.containers.iter().all(|n| has(Some(&spec.containers), n))
            && self
                .volumes
                .iter()
                .all(|n| spec.volumes.iter().flatten().any(|v| &v.name == n))
    }
}

/// The MCPServer whose guard a pod carries: the status annotation is valid and the containers it names are in
/// the pod. `None` for a pod without the guard — what the operator's `GuardBypass` condition looks for among
/// the pods an MCPServer selects (docs/webhook.md).
pub fn guarded_by(pod: &Pod) -> Option<String> {
    match InjectionStatus::of(pod) {
        Some(Ok(status)) if status.is_present_in(pod) => Some(status.mcp_server),
        _ => None,
    }
}
