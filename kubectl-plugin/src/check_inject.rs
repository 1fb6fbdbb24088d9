//! `check-inject`: the webhook's own decision (`webhook::inject::plan`, the pure function the webhook calls) on a
//! pod, or on a Deployment's pod template and its current pods, with the inputs the webhook would read: the
//! namespace's labels, the MCPServers there with their policies' sidecar settings, the cluster's native-sidecar
//! support and the namespaces the registered webhook excludes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::Selector;
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use mcp_guard_operator::sources::sig_servers;
use mcp_guard_operator::webhook::inject::{InjectionInput, InjectionPlan, SkipReason, plan};
use mcp_guard_operator::webhook::{
    DEFAULT_SIDECAR_IMAGE, GuardedServer, MUTATE_PODS_PATH, guarded_by, guarded_server,
    supports_native_sidecars,
};

use crate::cluster::Kube;

pub struct Report {
    pub injected: bool,
    pub text: String,
}

/// What the webhook would read, fetched once.
struct Context {
    namespace: String,
    namespace_labels: BTreeMap<String, String>,
    servers: Vec<MCPServer>,
    guarded: Vec<GuardedServer>,
    native_sidecars: bool,
    /// The namespaces the registered webhook excludes (`Err`: why they are unknown, with a warning to print).
    webhook: Result<Vec<String>, String>,
    /// No MutatingWebhookConfiguration calls the webhook: new pods are not injected.
    webhook_missing: bool,
}

impl Context {
    fn plan(&self, pod: &Pod) -> InjectionPlan {
        let excluded = self.webhook.as_ref().cloned().unwrap_or_default();
        plan(&InjectionInput {
            pod,
            namespace: &self.namespace,
            namespace_labels: &self.namespace_labels,
            servers: &self.guarded,
            native_sidecars: self.native_sidecars,
            excluded_namespaces: &excluded,
        })
    }
}

pub async fn run(kube: &Kube, target: &str) -> anyhow::Result<Report> {
    let ctx = context(kube).await?;
    let ns = &ctx.namespace;
    let mut out = String::new();
    if let Err(why) = &ctx.webhook {
        let _ = writeln!(out, "Warning: {why}");
    }
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    let injected = match kind {
        "pod" | "pods" | "po" => {
            let pod = Api::<Pod>::namespaced(kube.client.clone(), ns).get(name).await?;
            explain_pod(&mut out, &ctx, &pod, &format!("pod {ns}/{name}"))
        }
        "deployment" | "deployments" | "deploy" | "deployment.apps" => {
            let deploy = Api::<Deployment>::namespaced(kube.client.clone(), ns)
                .get(name)
                .await?;
            let spec = deploy.spec.clone().unwrap_or_default();
            let mut template = Pod {
                metadata: spec.template.metadata.clone().unwrap_or_default(),
                spec: spec.template.spec.clone(),
                ..Pod::default()
            };
            template.metadata.namespace = Some(ns.clone());
            let new_pods = match ctx.plan(&template) {
                InjectionPlan::Inject(i) => {
                    let _ = writeln!(
                        out,
                        "New pods of deployment {ns}/{name}: injected with the guard of MCPServer {:?}",
                        i.server
                    );
                    true
                }
                other => {
                    let _ = write!(out, "New pods of deployment {ns}/{name}: ");
                    explain_not_injected(&mut out, &ctx, &template, &other);
                    false
                }
            };
            let selector = Selector::try_from(spec.selector.clone())?;
            let pods = Api::<Pod>::namespaced(kube.client.clone(), ns)
                .list(&ListParams::default().labels_from(&selector))
                .await?
                .items;
            let mut all = new_pods;
            if pods.is_empty() {
                let _ = writeln!(out, "Its pods: none yet");
            }
            for pod in &pods {
                let _ = write!(out, "  ");
                all &= explain_pod(&mut out, &ctx, pod, &format!("pod {ns}/{}", pod.name_any()));
            }
            all && !ctx.webhook_missing
        }
        other => anyhow::bail!("{other:?} is not a pod or a deployment (try pod/NAME or deployment/NAME)"),
    };
    Ok(Report { injected, text: out })
}

/// One pod: injected already, or what the webhook would do with it now. `true` when it carries the guard.
fn explain_pod(out: &mut String, ctx: &Context, pod: &Pod, what: &str) -> bool {
    if let Some(server) = guarded_by(pod) {
        let _ = writeln!(out, "{what}: injected with the guard of MCPServer {server:?}");
        return true;
    }
    match ctx.plan(pod) {
        InjectionPlan::Inject(i) => {
            let _ = writeln!(
                out,
                "{what}: not injected, but would be if created now (MCPServer {:?} selects it): it was created before \
                 the MCPServer or the webhook, or admitted while the webhook was down; restart it",
                i.server
            );
        }
        other => {
            let _ = write!(out, "{what}: ");
            explain_not_injected(out, ctx, pod, &other);
        }
    }
    false
}

fn explain_not_injected(out: &mut String, ctx: &Context, pod: &Pod, plan: &InjectionPlan) {
    match plan {
        InjectionPlan::Skip(reason) => {
            let _ = writeln!(out, "not injected: {} ({})", reason.explain(), reason.as_str());
            match reason {
                SkipReason::NamespaceNotOptedIn => {
                    let _ = writeln!(
                        out,
                        "  fix: kubectl label namespace {} mcpguard.dev/injection=enabled",
                        ctx.namespace
                    );
                }
                SkipReason::NoMatchingServer => {
                    let labels = pod.metadata.labels.clone().unwrap_or_default();
                    let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(
                        out,
                        "  the pod's labels: {}",
                        if shown.is_empty() {
                            "none".into()
                        } else {
                            shown.join(",")
                        }
                    );
                    if ctx.servers.is_empty() {
                        let _ = writeln!(out, "  there is no MCPServer in {}", ctx.namespace);
                    }
                    for s in &ctx.servers {
                        let sel = Selector::try_from(s.spec.selector.clone())
                            .map(|s| s.to_string())
                            .unwrap_or_default();
                        let _ = writeln!(out, "  MCPServer {:?} selects {sel}", s.name_any());
                    }
                }
                _ => {}
            }
        }
        InjectionPlan::Deny(message) => {
            let _ = writeln!(out, "refused at admission (the pod is not created): {message}");
        }
        InjectionPlan::Inject(_) => {}
    }
}

async fn context(kube: &Kube) -> anyhow::Result<Context> {
    let ns = kube.namespace.clone();
    let client = &kube.client;
    let namespace_labels = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await?
        .labels()
        .clone();
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let policies = Api::<MCPGuardPolicy>::all(client.clone());
    let mut guarded = Vec::new();
    for s in &servers {
        let policy = policies
            .get_opt(s.spec.policy_name())
            .await?
            .map(|p| p.spec)
            .unwrap_or_default();
        // A `spec.serverRef` stands for the referenced server's selector and port, as in the webhook.
        let theirs = sig_servers::fetch(client, s).await?;
        let s = &*sig_servers::with_spec(s, sig_servers::effective(&s.spec, theirs.as_ref()));
        if let Some(g) = guarded_server(s, &policy, DEFAULT_SIDECAR_IMAGE) {
            guarded.push(g);
        }
    }
    let version = client.apiserver_version().await?;
    let native_sidecars = supports_native_sidecars(&version.major, &version.minor);
    let (webhook, webhook_missing) = match registered_webhook(client).await {
        Ok(Some(excluded)) => (Ok(excluded), false),
        Ok(None) => (
            Err(format!(
                "no mutating webhook calls {MUTATE_PODS_PATH}: nothing injects pods (is the chart installed with \
                 webhook.enabled?); the answers below are what the webhook would do"
            )),
            true,
        ),
        Err(why) => (Err(why), false),
    };
    Ok(Context {
        namespace: ns,
        namespace_labels,
        servers,
        guarded,
        native_sidecars,
        webhook,
        webhook_missing,
    })
}

/// The namespaces the registered pod-injecting webhook excludes (`kubernetes.io/metadata.name NotIn [...]`);
/// `None`: no webhook calls `/mutate-pods`; `Err`: the configurations cannot be read.
async fn registered_webhook(client: &kube::Client) -> Result<Option<Vec<String>>, String> {
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            format!("cannot read MutatingWebhookConfigurations ({e}); assuming the webhook is registered")
        })?;
    let hook = configs
        .items
        .iter()
        .flat_map(|c| c.webhooks.iter().flatten())
        .find(|w| {
            let cc = &w.client_config;
            cc.service.as_ref().and_then(|s| s.path.as_deref()) == Some(MUTATE_PODS_PATH)
                || cc.url.as_deref().is_some_and(|u| u.ends_with(MUTATE_PODS_PATH))
        });
    let Some(hook) = hook else {
        return Ok(None);
    };
    Ok(hook
        .namespace_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
        .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .flat_map(|e| e.values.clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .into())
}
