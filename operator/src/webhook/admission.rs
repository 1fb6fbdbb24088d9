//! AdmissionReview in, AdmissionReview out: the two handlers, and the pure MCPServer check.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Selector};

use super::inject::{self, InjectionInput, InjectionPlan, NAMESPACE_INJECTION_LABEL, SkipReason};
use super::{Read, WebhookState};
use crate::crd::MCPServer;
use crate::selector;
use crate::sources::sig_servers;

const MUTATE: &str = "mutate-pods";
const VALIDATE: &str = "validate-mcpserver";

/// Budget for answering one review, reads included: below the API server's default webhook timeout (10 s), so
/// that a slow API server gets this webhook's own message rather than a generic timeout.
pub const ANSWER_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);

/// Answers a pod admission review (the body the API server POSTs to `/mutate-pods`).
pub async fn mutate_pods(state: &WebhookState, body: &[u8]) -> AdmissionReview<DynamicObject> {
    let started = Instant::now();
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics().admission(MUTATE, "error");
            return AdmissionResponse::invalid(format!("cannot parse AdmissionReview: {e}")).into_review();
        }
    };
    let req: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            state.metrics().admission(MUTATE, "error");
            return AdmissionResponse::invalid("AdmissionReview has no request").into_review();
        }
    };
    let (response, result) = match tokio::time::timeout(ANSWER_BUDGET, mutate_request(state, &req)).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!(namespace = ?req.namespace, "pod admission timed out reading the cluster");
            let message = format!(
                "mcp-guard: could not read the namespace's MCPServers within {ANSWER_BUDGET:?}; retry shortly"
            );
            (AdmissionResponse::from(&req).deny(message), "error")
        }
    };
    state.metrics().admission(MUTATE, result);
    state.metrics().observe(MUTATE, started.elapsed().as_secs_f64());
    response.into_review()
}

async fn mutate_request(
    state: &WebhookState,
    req: &AdmissionRequest<Pod>,
) -> (AdmissionResponse, &'static str) {
    let mut resp = AdmissionResponse::from(req);
    let (Operation::Create, Some(pod)) = (&req.operation, req.object.as_ref()) else {
        return (resp, "skipped");
    };
    let ns = req
        .namespace
        .clone()
        .or_else(|| pod.namespace())
        .unwrap_or_else(|| "default".into());
    let pod_name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();

    let labels = match state.namespace_labels(&ns).await {
        Ok(l) => l,
        Err(e) => return (error_response(resp, &ns, &pod_name, "namespace", &e), "error"),
    };
    let mut plan = match plan_with(state, pod, &ns, &labels, Read::Cache).await {
        Ok(p) => p,
        Err(e) => return (error_response(resp, &ns, &pod_name, "MCPServers", &e), "error"),
    };
    // This process's cache may not have seen an MCPServer created a moment ago: confirm "no match" from the API
    // server's own cache rather than start an MCP server unguarded.
    if plan == InjectionPlan::Skip(SkipReason::NoMatchingServer) {
        plan = match plan_with(state, pod, &ns, &labels, Read::ApiServerCache).await {
            Ok(p) => p,
            Err(e) => return (error_response(resp, &ns, &pod_name, "MCPServers", &e), "error"),
        };
    }
    match plan {
        InjectionPlan::Skip(reason) => {
            state.metrics().skip(reason.as_str());
            tracing::debug!(namespace = %ns, pod = %pod_name, reason = reason.as_str(), "not injecting: {}", reason.explain());
            resp.audit_annotations
                .insert("injection".into(), format!("skipped: {}", reason.as_str()));
            (resp, "skipped")
        }
        InjectionPlan::Deny(message) => {
            tracing::warn!(namespace = %ns, pod = %pod_name, %message, "refusing pod");
            (resp.deny(format!("mcp-guard: {message}")), "denied")
        }
        InjectionPlan::Inject(injection) => {
            let before = serde_json::to_value(pod);
            let after = serde_json::to_value(&injection.pod);
            let (Ok(before), Ok(after)) = (before, after) else {
                return (resp.deny("mcp-guard: cannot encode the pod"), "error");
            };
            let patch = json_patch::diff(&before, &after);
            tracing::info!(namespace = %ns, pod = %pod_name, mcpserver = %injection.server, native = !injection.status.init_containers.is_empty(), "injecting the guard");
            resp.audit_annotations
                .insert("injection".into(), format!("injected: {}", injection.server));
            match resp.with_patch(patch) {
                Ok(r) => (r, "injected"),
                Err(e) => {
                    let r =
                        AdmissionResponse::from(req).deny(format!("mcp-guard: cannot encode the patch: {e}"));
                    (r, "error")
                }
            }
        }
    }
}

async fn plan_with(
    state: &WebhookState,
    pod: &Pod,
    ns: &str,
    labels: &std::collections::BTreeMap<String, String>,
    read: Read,
) -> Result<InjectionPlan, kube::Error> {
    // Cheap checks first: a skipped pod costs no MCPServer lookup.
    let cheap = inject::plan(&InjectionInput {
        pod,
        namespace: ns,
        namespace_labels: labels,
        servers: &[],
        native_sidecars: state.native_sidecars(),
        excluded_namespaces: &state.settings().excluded_namespaces,
    });
    if cheap != InjectionPlan::Skip(SkipReason::NoMatchingServer) {
        return Ok(cheap);
    }
    let no_labels = std::collections::BTreeMap::new();
    let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
    let servers = state.servers_selecting(ns, pod_labels, read).await?;
    let guarded = state.guarded_servers(&servers).await?;
    Ok(inject::plan(&InjectionInput {
        pod,
        namespace: ns,
        namespace_labels: labels,
        servers: &guarded,
        native_sidecars: state.native_sidecars(),
        excluded_namespaces: &state.settings().excluded_namespaces,
    }))
}

/// The webhook could not read what it needs: refuse (the API server applies `failurePolicy` only when the
/// webhook is unreachable; a pod in an opted-in namespace must not start unguarded because of a read error).
fn error_response(
    resp: AdmissionResponse,
    ns: &str,
    pod: &str,
    what: &str,
    e: &kube::Error,
) -> AdmissionResponse {
    tracing::warn!(namespace = %ns, pod = %pod, error = %e, "cannot read {what}");
    resp.deny(format!(
        "mcp-guard: cannot read {what} for namespace {ns:?}: {e}; retry shortly"
    ))
}

/// The verdict on an MCPServer: errors deny, warnings are returned to the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpServerVerdict {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// What [`check_mcpserver`] looks at besides the object.
#[derive(Clone, Debug, Default)]
pub struct McpServerContext<'a> {
    /// The other MCPServers of the namespace (the object itself is ignored by name).
    pub others: &'a [MCPServer],
    /// Pods of the namespace that the new selector selects.
    pub selected_pods: &'a [Pod],
    /// Whether the referenced policy exists (`None`: unknown).
    pub policy_exists: Option<bool>,
    /// The namespace's labels (`None`: unknown).
    pub namespace_labels: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// Checks an MCPServer: the spec (the operator's [`crate::validate::validate_spec`]) and overlap with the other
/// MCPServers of its namespace. Overlap is an error, not a warning: a pod selected by two MCPServers would need
/// two guards on one port, and the pod webhook refuses such pods — better to refuse the second MCPServer.
pub fn check_mcpserver(server: &MCPServer, ctx: &McpServerContext<'_>) -> McpServerVerdict {
    let mut v = McpServerVerdict::default();
    v.errors.extend(
        crate::validate::validate_spec(&server.spec)
            .iter()
            .map(ToString::to_string),
    );
    // A `spec.serverRef` selects the referenced server's pods.
    let resolved = sig_servers::with_selector(server);
    let server = &*resolved;
    let others: Vec<_> = ctx.others.iter().map(sig_servers::with_selector).collect();
    let name = server.name_any();
    let mine = normalized(&server.spec.selector);
    for other in others.iter().filter(|o| o.name_any() != name) {
        if mine.is_some() && normalized(&other.spec.selector) == mine {
            v.errors.push(format!(
                "spec.selector: the same selector as MCPServer {:?}; each pod can be guarded by exactly one MCPServer",
                other.name_any()
            ));
            continue;
        }
        if let Some(pod) = ctx
            .selected_pods
            .iter()
            .find(|p| selector::matches(&other.spec.selector, p.labels()))
        {
            v.errors.push(format!(
                "spec.selector: selects pod {:?}, which MCPServer {:?} already selects; each pod can be guarded by \
                 exactly one MCPServer",
                pod.name_any(),
                other.name_any()
            ));
            continue;
        }
        // No such pod yet: judge the selectors themselves.
        let (other_name, theirs) = (other.name_any(), &other.spec.selector);
        match (
            selector::overlap(&server.spec.selector, theirs),
            selector::overlap(theirs, &server.spec.selector),
        ) {
            (selector::Overlap::Disjoint, _) => {}
            (selector::Overlap::Within, _) => v.errors.push(format!(
                "spec.selector: every pod it selects is also selected by MCPServer {other_name:?}, so the pod \
                 webhook would refuse each of them (each pod can be guarded by exactly one MCPServer); make the \
                 selectors disjoint, e.g. with a label that only one of them requires"
            )),
            (_, selector::Overlap::Within) => v.errors.push(format!(
                "spec.selector: selects every pod of MCPServer {other_name:?}, so the pod webhook would refuse its \
                 pods from now on (each pod can be guarded by exactly one MCPServer); make the selectors disjoint, \
                 e.g. with a label that only one of them requires"
            )),
            (selector::Overlap::Possible(labels), _) => v.warnings.push(format!(
                "spec.selector: a pod labelled {} would be selected by this MCPServer and by MCPServer \
                 {other_name:?}, and the pod webhook would refuse it; keep their pods' labels apart",
                selector::describe(&labels)
            )),
        }
    }
    if ctx.policy_exists == Some(false) {
        v.warnings.push(format!(
            "spec.policyRef: MCPGuardPolicy {:?} does not exist (yet); built-in defaults apply until it does",
            server.spec.policy_name()
        ));
    }
    if let Some(labels) = ctx.namespace_labels
        && labels.get(NAMESPACE_INJECTION_LABEL).map(String::as_str) != Some("enabled")
    {
        v.warnings.push(format!(
            "namespace {:?} is not labelled {NAMESPACE_INJECTION_LABEL}=enabled: its pods will not get the guard",
            server.namespace().unwrap_or_default()
        ));
    }
    v
}

fn normalized(sel: &LabelSelector) -> Option<String> {
    let s = Selector::try_from(sel.clone()).ok()?;
    let mut parts: Vec<String> = s.into_iter().map(|e| e.to_string()).collect();
    parts.sort();
    parts.dedup();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Answers an MCPServer admission review (`/validate-mcpserver`).
pub async fn validate_mcpserver(state: &WebhookState, body: &[u8]) -> AdmissionReview<DynamicObject> {
    let started = Instant::now();
    let review: AdmissionReview<MCPServer> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics().admission(VALIDATE, "error");
            return AdmissionResponse::invalid(format!("cannot parse MCPServer AdmissionReview: {e}"))
                .into_review();
        }
    };
    let req: AdmissionRequest<MCPServer> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            state.metrics().admission(VALIDATE, "error");
            return AdmissionResponse::invalid("AdmissionReview has no request").into_review();
        }
    };
    let mut resp = AdmissionResponse::from(&req);
    let result;
    match (&req.operation, req.object.as_ref()) {
        // Metadata-only changes (finalizers, labels, the controller's own writes) and objects being deleted are
        // never refused: an MCPServer that became overlapping later must still be deletable.
        (Operation::Update, Some(server))
            if server.metadata.deletion_timestamp.is_some()
                || req.old_object.as_ref().is_some_and(|old| old.spec == server.spec) =>
        {
            result = "allowed";
        }
        (Operation::Create | Operation::Update, Some(server)) => {
            let ns = req
                .namespace
                .clone()
                .or_else(|| server.namespace())
                .unwrap_or_default();
            let ctx_data = match tokio::time::timeout(ANSWER_BUDGET, gather(state, server, &ns)).await {
                Ok(g) => g,
                Err(_) => Gathered {
                    read_errors: vec![format!(
                        "could not check for overlapping MCPServers within {ANSWER_BUDGET:?}"
                    )],
                    ..Gathered::default()
                },
            };
            let verdict = check_mcpserver(
                server,
                &McpServerContext {
                    others: &ctx_data.others,
                    selected_pods: &ctx_data.pods,
                    policy_exists: ctx_data.policy_exists,
                    namespace_labels: ctx_data.labels.as_ref(),
                },
            );
            let mut warnings = verdict.warnings;
            warnings.extend(ctx_data.read_errors);
            if !warnings.is_empty() {
                resp.warnings = Some(warnings);
            }
            if verdict.errors.is_empty() {
                result = "allowed";
            } else {
                result = "denied";
                let message = format!(
                    "MCPServer {ns}/{} is invalid: {}",
                    server.name_any(),
                    verdict.errors.join("; ")
                );
                tracing::info!(namespace = %ns, name = %server.name_any(), %message, "refusing MCPServer");
                resp = resp.deny(message);
            }
        }
        _ => result = "allowed",
    }
    state.metrics().admission(VALIDATE, result);
    state.metrics().observe(VALIDATE, started.elapsed().as_secs_f64());
    resp.into_review()
}

#[derive(Default)]
struct Gathered {
    others: Vec<MCPServer>,
    pods: Vec<Pod>,
    policy_exists: Option<bool>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    read_errors: Vec<String>,
}

/// Reads what the overlap check needs. A read error becomes a warning, not a denial: the spec check is what
/// matters, and the pod webhook refuses overlapping pods anyway.
async fn gather(state: &WebhookState, server: &MCPServer, ns: &str) -> Gathered {
    let mut g = Gathered {
        others: Vec::new(),
        pods: Vec::new(),
        policy_exists: None,
        labels: None,
        read_errors: vec![],
    };
    match state.servers_in(ns, Read::Consistent).await {
        Ok(s) => g.others = s,
        Err(e) => g
            .read_errors
            .push(format!("could not check for overlapping MCPServers: {e}")),
    }
    let has_others = g.others.iter().any(|o| o.name_any() != server.name_any());
    if has_others
        && let Some(sel) = Selector::try_from(sig_servers::with_selector(server).spec.selector.clone())
            .ok()
            .filter(|s| !s.selects_all())
    {
        match state.pods_matching(ns, &sel.to_string()).await {
            Ok(p) => g.pods = p,
            Err(e) => g
                .read_errors
                .push(format!("could not list the selected pods: {e}")),
        }
    }
    match state.policy(server.spec.policy_name()).await {
        Ok(p) => g.policy_exists = Some(p.is_some()),
        Err(e) => g
            .read_errors
            .push(format!("could not read the MCPGuardPolicy: {e}")),
    }
    match state.namespace_labels(ns).await {
        Ok(l) => g.labels = Some(l),
        Err(e) => g.read_errors.push(format!("could not read the namespace: {e}")),
    }
    g
}
