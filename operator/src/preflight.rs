//! Start-up checks with clear errors: the CRDs are installed and RBAC grants what the controller does.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use crate::crd::{MCPGuardPolicy, MCPServer};

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "CustomResourceDefinition(s) not installed: {}. Install them with `kubectl apply -f crds/` (from the \
         mcp-guard repository) or install the mcp-guard Helm chart, which ships them",
        .0.join(", ")
    )]
    MissingCrds(Vec<String>),
    #[error(
        "RBAC denies permissions the operator needs: {}. Grant them to the operator's ServiceAccount (the \
         mcp-guard Helm chart's ClusterRole and Role do; see docs/operator.md \"Permissions\")",
        .0.join("; ")
    )]
    Forbidden(Vec<String>),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// One permission: verb on group/resource[/subresource], on one object (`name`) or all, cluster-wide or in a
/// namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core".to_string()
        } else {
            self.group.to_string()
        };
        write!(f, "cannot {} {}/{}", self.verb, group, self.resource)?;
        if let Some(s) = self.subresource {
            write!(f, "/{s}")?;
        }
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

fn p(verb: &'static str, group: &'static str, resource: &'static str) -> Permission {
    Permission {
        verb,
        group,
        resource,
        subresource: None,
        name: None,
        namespace: None,
    }
}

/// What the controller does (`watch_namespace`: the namespace it is limited to, if any; `lease`: the namespace
/// and name of the Lease it campaigns for; `gateway_api`: whether it watches routes).
pub fn controller_permissions(
    watch_namespace: Option<&str>,
    lease: Option<(&str, &str)>,
    gateway_api: bool,
) -> Vec<Permission> {
    let scoped = |verb, group, resource| Permission {
        namespace: watch_namespace.map(str::to_string),
        ..p(verb, group, resource)
    };
    let mut perms = Vec::new();
    for verb in ["list", "watch"] {
        perms.push(scoped(verb, "mcpguard.dev", "mcpservers"));
        perms.push(p(verb, "mcpguard.dev", "mcpguardpolicies"));
        perms.push(scoped(verb, "", "services"));
        perms.push(scoped(verb, "", "pods"));
        perms.push(scoped(verb, "", "configmaps"));
        perms.push(scoped(verb, "networking.k8s.io", "networkpolicies"));
        perms.push(scoped(verb, "networking.k8s.io", "ingresses"));
        perms.push(p(verb, "networking.k8s.io", "ingressclasses"));
        if gateway_api {
            perms.push(scoped(verb, "gateway.networking.k8s.io", "httproutes"));
            perms.push(p(verb, "gateway.networking.k8s.io", "gateways"));
            perms.push(p(verb, "", "namespaces"));
            perms.push(scoped(verb, "gateway.networking.k8s.io", "referencegrants"));
        }
    }
    perms.push(scoped("create", "", "configmaps"));
    perms.push(scoped("patch", "", "configmaps"));
    for verb in ["create", "patch", "delete"] {
        perms.push(scoped(verb, "networking.k8s.io", "networkpolicies"));
    }
    perms.push(Permission {
        subresource: Some("status"),
        ..scoped("patch", "mcpguard.dev", "mcpservers")
    });
    if watch_namespace.is_none() {
        // MCPGuardPolicy status (Valid, InUse): written only by an operator that sees every MCPServer.
        perms.push(Permission {
            subresource: Some("status"),
            ..p("patch", "mcpguard.dev", "mcpguardpolicies")
        });
    }
    perms.push(scoped("create", "events.k8s.io", "events"));
    perms.push(scoped("patch", "events.k8s.io", "events"));
    if let Some((ns, name)) = lease {
        // get and update on its own Lease only (RBAC can name it); create cannot be limited to a name.
        for (verb, name) in [("get", Some(name)), ("update", Some(name)), ("create", None)] {
            perms.push(Permission {
                namespace: Some(ns.to_string()),
                name: name.map(str::to_string),
                ..p(verb, "coordination.k8s.io", "leases")
            });
        }
    }
    perms
}

/// The permissions (of `wanted`) that the API server denies to the current user.
pub async fn missing_permissions(
    client: &Client,
    wanted: &[Permission],
) -> Result<Vec<Permission>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for perm in wanted {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(perm.verb.into()),
                    group: Some(perm.group.into()),
                    resource: Some(perm.resource.into()),
                    subresource: perm.subresource.map(Into::into),
                    name: perm.name.clone(),
                    namespace: perm.namespace.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(perm.clone());
        }
    }
    Ok(missing)
}

async fn crd_installed<K>(api: Api<K>) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        // Forbidden and the like are reported by the permission check.
        Err(kube::Error::Api(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Checks the CRDs, then RBAC; `Ok` when the controller can run.
pub async fn check_controller(
    client: &Client,
    watch_namespace: Option<&str>,
    lease: Option<(&str, &str)>,
    gateway_api: bool,
) -> Result<(), StartupError> {
    let mut missing_crds = Vec::new();
    if !crd_installed(Api::<MCPServer>::all(client.clone())).await? {
        missing_crds.push("mcpservers.mcpguard.dev".to_string());
    }
    if !crd_installed(Api::<MCPGuardPolicy>::all(client.clone())).await? {
        missing_crds.push("mcpguardpolicies.mcpguard.dev".to_string());
    }
    if !missing_crds.is_empty() {
        return Err(StartupError::MissingCrds(missing_crds));
    }
    let wanted = controller_permissions(watch_namespace, lease, gateway_api);
    let missing = missing_permissions(client, &wanted).await?;
    if !missing.is_empty() {
        return Err(StartupError::Forbidden(
            missing.iter().map(ToString::to_string).collect(),
        ));
    }
    Ok(())
}
