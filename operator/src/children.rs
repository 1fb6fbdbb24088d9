//! The objects the operator writes for each MCPServer (its ConfigMap here, its NetworkPolicy in
//! `netpol.rs`): their labels, their owner, and whether one already says what it should.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use mcp_guard_config::CONFIG_KEY;

use crate::crd::{MCPServer, config_map_name};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "mcp-guard-operator";
/// Label on every ConfigMap the operator writes (its ConfigMap watch is restricted to it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "mcp-guard-operator";
/// Label naming the MCPServer a ConfigMap belongs to.
pub const SERVER_LABEL: &str = "mcpguard.dev/mcpserver";

/// The ConfigMap for a server (server-side apply body); `None` for a server without a uid (not yet stored).
pub fn desired_config_map(server: &MCPServer, ns: &str, json: String) -> Option<ConfigMap> {
    let name = server.name_any();
    let owner = server.controller_owner_ref(&())?;
    Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&name)),
            namespace: Some(ns.to_string()),
            owner_references: Some(vec![owner]),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                    (SERVER_LABEL.to_string(), name),
                ]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([(CONFIG_KEY.to_string(), json)].into()),
        ..Default::default()
    })
}

/// Whether the existing ConfigMap already holds this config, owner and labels (no write needed).
pub fn config_map_current(existing: Option<&ConfigMap>, desired: &ConfigMap) -> bool {
    let Some(existing) = existing else { return false };
    existing.data == desired.data && metadata_current(&existing.metadata, &desired.metadata)
}

/// Whether an object the operator writes still has the owners and (at least) the labels it would write.
pub(crate) fn metadata_current(existing: &ObjectMeta, desired: &ObjectMeta) -> bool {
    existing.owner_references == desired.owner_references
        && desired
            .labels
            .iter()
            .flatten()
            .all(|(k, v)| existing.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
}
