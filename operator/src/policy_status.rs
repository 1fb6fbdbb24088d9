//! The MCPGuardPolicies' statuses: whether each is valid, and which MCPServers use it — written from the caches
//! whenever a policy changes or an MCPServer is reconciled or deleted (only by an operator that watches every
//! namespace: it alone can count every user).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use crate::children::FIELD_MANAGER;
use crate::crd::MCPGuardPolicy;
use crate::sources::Stores;
use crate::status::{PolicyStatusInput, build_policy_status};
use crate::validate::validate_policy;

/// Writes the status of every MCPGuardPolicy whose validity or users changed (from the caches; no reads).
async fn write_policy_statuses(client: &Client, stores: &Stores) {
    let servers = stores.servers.state();
    for policy in stores.policies.state() {
        let name = policy.name_any();
        let mut users: Vec<String> = servers
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none() && s.spec.policy_name() == name)
            .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        users.sort();
        let errors = validate_policy(&policy.spec);
        let status = build_policy_status(&PolicyStatusInput {
            name: &name,
            generation: policy.metadata.generation,
            previous: policy.status.as_ref(),
            now: Time(k8s_openapi::jiff::Timestamp::now()),
            errors: &errors,
            users: &users,
        });
        if policy.status.as_ref() == Some(&status) {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": MCPGuardPolicy::api_version(&()),
            "kind": MCPGuardPolicy::kind(&()),
            "status": status,
        });
        if let Err(e) = Api::<MCPGuardPolicy>::all(client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            warn!(policy = %name, error = %e, "writing MCPGuardPolicy status failed");
        }
    }
}

/// Keeps MCPGuardPolicy statuses current: after the caches synced, and on every wake-up (a policy changed, an
/// MCPServer was reconciled or deleted), coalescing bursts.
pub async fn run(client: Client, stores: Stores, trigger: Arc<tokio::sync::Notify>) {
    stores.wait_synced().await;
    loop {
        write_policy_statuses(&client, &stores).await;
        trigger.notified().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
