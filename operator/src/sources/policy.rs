//! The MCPGuardPolicy an MCPServer uses: its settings (resolved in [`crate::settings`]) and the hosts and origins
//! it always allows. A missing policy means the built-in defaults (an error only when `spec.policyRef` names it).

use std::collections::HashMap;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::Stores;
use super::{DepKind, DeriveInput, Finding, Fold};
use crate::crd::{MCPGuardPolicy, MCPServer};

/// The settings the policy gives (mode, limits, trusted proxies, CORS) and the dependency on it, first.
pub fn settle(input: &DeriveInput<'_>, fold: &mut Fold) {
    let d = &mut fold.d;
    d.depend(DepKind::MCPGuardPolicy, None, input.spec.policy_name());
    d.policy_missing = input.policy.is_none();
    let settings = input.settings;
    d.mode = settings.mode;
    d.limits = settings.limits.clone();
    d.trusted_proxies = settings.trusted_proxies.clone();
    d.cors = settings.cors;
    d.findings
        .extend(settings.rejected_proxies.iter().cloned().map(Finding::problem));
}

/// The policy's `allowedHosts` and `allowedOrigins`, added as written.
pub fn contribute(input: &DeriveInput<'_>, fold: &mut Fold) {
    let Some(policy) = input.policy else { return };
    let source = format!("MCPGuardPolicy {}", input.spec.policy_name());
    for h in &policy.allowed_hosts {
        fold.listed_host(h, &source);
    }
    for o in &policy.allowed_origins {
        fold.origins.add(o, &source);
    }
}

/// Policy changed → the MCPServers that use it.
pub fn map(stores: &Stores, policy: &MCPGuardPolicy) -> Vec<ObjectRef<MCPServer>> {
    let name = policy.name_any();
    stores
        .servers
        .state_filter(|s| s.spec.policy_name() == name)
        .into_iter()
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

/// The last generation seen of each policy, to tell spec changes from status-only updates.
#[derive(Default)]
pub struct PolicyGenerations(HashMap<String, (Option<String>, Option<i64>)>);

impl PolicyGenerations {
    /// Whether this watch event of a policy may matter to MCPServers: a new policy, a new generation, a deletion
    /// (`exists` false). A status-only update of a known policy does not.
    pub fn spec_changed(&mut self, policy: &MCPGuardPolicy, exists: bool) -> bool {
        let name = policy.name_any();
        if !exists {
            self.0.remove(&name);
            return true;
        }
        let seen = (policy.metadata.uid.clone(), policy.metadata.generation);
        self.0.insert(name, seen.clone()) != Some(seen)
    }
}

#[cfg(test)]
mod tests;
