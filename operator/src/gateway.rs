//! Minimal typed views of the Gateway API objects the operator reads (`gateway.networking.k8s.io/v1`
//! `HTTPRoute` and `Gateway`). Only the fields the allowlist needs; unknown fields are ignored. These CRDs are
//! optional: the operator discovers them at start-up and works without them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API version read.
pub const GATEWAY_VERSION: &str = "v1";

/// `HTTPRoute.spec` (subset).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    status = "HTTPRouteStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HTTPRouteRule>,
}

/// A route's parent (normally a Gateway).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// `HTTPRoute.status` (subset): what each parent's controller says of the route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteStatus {
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// One parent's verdict on a route (`Accepted`, `ResolvedRefs`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    #[serde(default)]
    pub controller_name: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One rule of a route: its backends and filters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
}

/// A route filter; only `URLRewrite` (which can set the Host the backend sees) matters here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteFilter {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<HTTPURLRewriteFilter>,
}

/// `URLRewrite`: `hostname` replaces the Host header sent to the backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPURLRewriteFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl HTTPRouteFilter {
    /// The Host a `URLRewrite` filter sends to the backend.
    pub fn rewritten_host(&self) -> Option<&str> {
        (self.type_ == "URLRewrite")
            .then(|| self.url_rewrite.as_ref()?.hostname.as_deref())
            .flatten()
            .filter(|h| !h.is_empty())
    }
}

/// A route backend (normally a Service).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Filters for this backend only (the rule's apply too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
}

impl BackendRef {
    /// Whether this backend is a core `Service` (the default kind).
    pub fn is_service(&self) -> bool {
        matches!(self.group.as_deref(), None | Some("") | Some("core"))
            && matches!(self.kind.as_deref(), None | Some("Service"))
    }
}

impl ParentReference {
    /// Whether this parent is a Gateway (the default kind).
    pub fn is_gateway(&self) -> bool {
        matches!(self.group.as_deref(), None | Some(GATEWAY_GROUP))
            && matches!(self.kind.as_deref(), None | Some("Gateway"))
    }
}

/// `Gateway.spec` (subset).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// A Gateway listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// Which routes may attach to a listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Empty: the kinds the listener's protocol supports (HTTPRoute for HTTP and HTTPS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

/// `from`: `Same` (default), `All` or `Selector` (namespaces whose labels `selector` matches).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A route kind a listener allows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
}

/// Whether a listener lets an HTTPRoute in `route_ns` attach, given the namespace's labels (`None`: unknown).
/// `Err` says why not.
pub fn listener_admits(
    listener: &Listener,
    gateway_ns: &str,
    route_ns: &str,
    route_ns_labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(), String> {
    let allowed = listener.allowed_routes.as_ref();
    let kinds = allowed.map(|a| a.kinds.as_slice()).unwrap_or_default();
    if !kinds.is_empty()
        && !kinds
            .iter()
            .any(|k| k.kind == "HTTPRoute" && matches!(k.group.as_deref(), None | Some(GATEWAY_GROUP)))
    {
        let names: Vec<&str> = kinds.iter().map(|k| k.kind.as_str()).collect();
        return Err(format!(
            "allows only {} (allowedRoutes.kinds), not HTTPRoute",
            names.join(", ")
        ));
    }
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => Ok(()),
        "Same" if gateway_ns == route_ns => Ok(()),
        "Same" => Err(format!(
            "allows routes from its own namespace {gateway_ns} only (allowedRoutes.namespaces.from: Same)"
        )),
        "Selector" => {
            let selector = namespaces.and_then(|n| n.selector.as_ref());
            let everything = selector.is_some_and(|s| {
                s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
            });
            match (selector, route_ns_labels) {
                // An empty selector selects every namespace.
                (Some(_), _) if everything => Ok(()),
                (Some(sel), Some(labels)) if crate::selector::matches(sel, labels) => Ok(()),
                (Some(_), Some(_)) => Err(format!(
                    "allows routes from namespaces its allowedRoutes.namespaces.selector matches, which {route_ns} \
                     does not"
                )),
                _ => Err(format!(
                    "allows routes from namespaces selected by labels, and the labels of {route_ns} are unknown"
                )),
            }
        }
        other => Err(format!(
            "allowedRoutes.namespaces.from {other:?} is not one the operator knows"
        )),
    }
}

/// `ReferenceGrant.spec` (`gateway.networking.k8s.io/v1beta1`, served by every release since v0.6): which objects
/// in other namespaces may refer to objects in this one.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    plural = "referencegrants",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// Who may refer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// What may be referred to (`name` unset: every object of the kind).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Whether a ReferenceGrant (in the Service's namespace) lets an HTTPRoute in `route_ns` use Service `service`.
pub fn grants_route_to_service(grant: &ReferenceGrant, route_ns: &str, service: &str) -> bool {
    let from = grant
        .spec
        .from
        .iter()
        .any(|f| f.group == GATEWAY_GROUP && f.kind == "HTTPRoute" && f.namespace == route_ns);
    let to = grant.spec.to.iter().any(|t| {
        matches!(t.group.as_str(), "" | "core")
            && t.kind == "Service"
            && t.name.as_deref().is_none_or(|n| n == service)
    });
    from && to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_grants_name_the_route_namespace_and_the_service() {
        let grant = |from_ns: &str, kind: &str, name: Option<&str>| ReferenceGrant {
            metadata: Default::default(),
            spec: ReferenceGrantSpec {
                from: vec![ReferenceGrantFrom {
                    group: GATEWAY_GROUP.into(),
                    kind: kind.into(),
                    namespace: from_ns.into(),
                }],
                to: vec![ReferenceGrantTo {
                    group: String::new(),
                    kind: "Service".into(),
                    name: name.map(str::to_string),
                }],
            },
        };
        // (grant, route namespace, service, granted)
        let cases = [
            (grant("edge", "HTTPRoute", None), "edge", "weather", true),
            (
                grant("edge", "HTTPRoute", Some("weather")),
                "edge",
                "weather",
                true,
            ),
            (
                grant("edge", "HTTPRoute", Some("other")),
                "edge",
                "weather",
                false,
            ),
            (grant("edge", "GRPCRoute", None), "edge", "weather", false),
            (grant("elsewhere", "HTTPRoute", None), "edge", "weather", false),
        ];
        for (i, (g, route_ns, svc, want)) in cases.into_iter().enumerate() {
            assert_eq!(grants_route_to_service(&g, route_ns, svc), want, "case {i}");
        }
    }
}
