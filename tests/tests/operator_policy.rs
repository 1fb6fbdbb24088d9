//! Cluster-scoped objects against the real control plane, in a binary of its own (its own API server): the
//! operators here watch every namespace (only such an operator writes policy statuses) and a test creates a
//! default IngressClass (which the API server's admission would stamp on every new Ingress of other tests).
//!
//! - MCPGuardPolicy status: `Valid` names each entry the guard would not load and the fix, `InUse` counts the
//!   MCPServers using the policy across namespaces.
//! - Ingress classes: an Ingress counts when an IngressClass serves its class (field, legacy annotation, or the
//!   default class), or, when the policy lists `ingressClasses`, when its class is listed; the status names those
//!   not counted and why; ingress-nginx's `upstream-vhost` is allowed.
//! - HTTPRoutes (real Gateway API CRDs, installed by the tests of this binary; `operator_controller` has the
//!   test of an operator started before they exist): a route in another namespace counts once a ReferenceGrant in
//!   the server's namespace lets it use the Service; a Gateway listener change reaches the MCPServer through the
//!   route; a route its Gateway refuses loses its hosts until accepted again, and deleting it removes them.

mod operator_common;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use mcp_guard_operator::gateway::{Gateway, HTTPRoute, ReferenceGrant};
use operator_common::*;
use serde_json::json;
use testkit::cluster::Cluster;

async fn cluster() -> &'static Cluster {
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = Cluster::shared().await;
    CRDS.get_or_init(|| async { cluster.apply_crds().await.expect("apply crds/") })
        .await;
    cluster
}

async fn policy_with(
    api: &Api<MCPGuardPolicy>,
    name: &str,
    what: &str,
    pred: impl Fn(&MCPGuardPolicy) -> bool,
) -> MCPGuardPolicy {
    eventually(what, SETUP, || async {
        api.get_opt(name).await.expect("get policy").filter(|p| pred(p))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_status_says_whether_it_is_valid_and_who_uses_it() {
    let cluster = cluster().await;
    let client = cluster.client();
    let op = Operator::start_in(client.clone(), None, None, Some(false));
    let policies = Api::<MCPGuardPolicy>::all(client.clone());
    let policy = |hosts: serde_json::Value| {
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
            "metadata": { "name": "strict" },
            "spec": { "allowedHosts": hosts, "allowedOrigins": ["https://ok.example.com"] }
        })
    };
    // The schema lets a port out of range through (the guard's parser knows ranges); the status explains.
    apply_cluster::<MCPGuardPolicy>(
        &client,
        policy(json!(["gateway.internal", "a.example.com:99999"])),
    )
    .await;
    let p = policy_with(&policies, "strict", "Valid=False", |p| {
        policy_condition(p, "Valid").is_some_and(|c| c.0 == "False")
    })
    .await;
    let (_, reason, message) = policy_condition(&p, "Valid").expect("Valid");
    assert_eq!(reason, "InvalidEntries");
    assert!(
        message.contains("spec.allowedHosts[1]: invalid host pattern \"a.example.com:99999\""),
        "{message}"
    );
    assert_eq!(
        policy_condition(&p, "InUse").map(|c| (c.0, c.1)),
        Some(("False", "Unused"))
    );
    assert_eq!(p.status.as_ref().and_then(|s| s.mcp_servers), Some(0));

    // Two MCPServers in two namespaces use it.
    let a = cluster.namespace("pol-a").await;
    let b = cluster.namespace("pol-b").await;
    for ns in [&a, &b] {
        apply::<MCPServer>(
            &client,
            ns,
            mcpserver(
                "weather",
                "weather",
                8000,
                json!({ "policyRef": "strict", "hosts": ["w.example.com"] }),
            ),
        )
        .await;
    }
    let p = policy_with(&policies, "strict", "two users", |p| {
        p.status.as_ref().and_then(|s| s.mcp_servers) == Some(2)
    })
    .await;
    let (status, reason, message) = policy_condition(&p, "InUse").expect("InUse");
    assert_eq!((status, reason), ("True", "UsedByMCPServers"));
    assert_eq!(message, format!("Used by 2 MCPServers: {a}/weather, {b}/weather"));

    // Fixing the entry makes it valid; deleting a user lowers the count.
    apply_cluster::<MCPGuardPolicy>(&client, policy(json!(["gateway.internal"]))).await;
    Api::<MCPServer>::namespaced(client.clone(), &b)
        .delete("weather", &DeleteParams::default())
        .await
        .expect("delete");
    let p = policy_with(&policies, "strict", "valid, one user", |p| {
        policy_condition(p, "Valid").is_some_and(|c| c.0 == "True")
            && p.status.as_ref().and_then(|s| s.mcp_servers) == Some(1)
    })
    .await;
    assert_eq!(
        p.status.as_ref().and_then(|s| s.observed_generation),
        p.metadata.generation
    );

    // kubectl get shows it.
    let out = cluster
        .kubectl()
        .args(["get", "mcpgp", "strict"])
        .output()
        .expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("VALID") && table.contains("MCPSERVERS"), "{table}");
    op.stop().await;
}

fn ingress_class(name: &str, default: bool) -> serde_json::Value {
    let mut meta = json!({ "name": name });
    if default {
        meta["annotations"] = json!({ "ingressclass.kubernetes.io/is-default-class": "true" });
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta,
        "spec": { "controller": "example.com/ingress" }
    })
}

/// An Ingress for `host` → weather:80, with `spec` fields and annotations merged in.
fn classed(
    name: &str,
    host: &str,
    spec: serde_json::Value,
    annotations: serde_json::Value,
) -> serde_json::Value {
    let mut ing = ingress(name, json!([rule(Some(host), "weather", 80)]), &[]);
    if let Some(extra) = spec.as_object() {
        for (k, v) in extra {
            ing["spec"][k] = v.clone();
        }
    }
    ing["metadata"]["annotations"] = annotations;
    ing
}

/// IngressClass `nginx-<ns>`, policy `classes-<ns>` counting `classes`, Service and MCPServer weather, and
/// Ingresses to weather whose class comes from the field (`served`, `vhost` with ingress-nginx's
/// `upstream-vhost`), the legacy annotation (`legacy`), or is `orphan_class` (`orphan`). Returns the names of
/// the nginx class and of the policy.
async fn weather_behind_classed_ingresses(
    client: &kube::Client,
    ns: &str,
    orphan_class: &str,
    unclassed: bool,
) -> (String, String) {
    let nginx = format!("nginx-{ns}");
    let policy_name = format!("classes-{ns}");
    apply_cluster::<IngressClass>(client, ingress_class(&nginx, false)).await;
    apply_cluster::<MCPGuardPolicy>(client, class_policy(&policy_name, serde_json::Value::Null)).await;
    let mut scenario = Scenario::new(client, ns)
        .service(service(
            "weather",
            "weather",
            json!([{ "port": 80, "targetPort": 8000 }]),
        ))
        .ingress(classed(
            "served",
            "served.example.com",
            json!({ "ingressClassName": nginx }),
            json!({}),
        ))
        .ingress(classed(
            "legacy",
            "legacy.example.com",
            json!({}),
            json!({ "kubernetes.io/ingress.class": nginx }),
        ))
        .ingress(classed(
            "orphan",
            "orphan.example.com",
            json!({ "ingressClassName": orphan_class }),
            json!({}),
        ))
        .ingress(classed(
            "vhost",
            "public.example.com",
            json!({ "ingressClassName": nginx }),
            json!({ "nginx.ingress.kubernetes.io/upstream-vhost": "weather.internal" }),
        ));
    if unclassed {
        // Created before any default IngressClass exists (only the test that asks for it creates one), so the
        // API server leaves it without a class.
        scenario = scenario.ingress(classed(
            "unclassed",
            "unclassed.example.com",
            json!({}),
            json!({}),
        ));
    }
    scenario
        .server(mcpserver(
            "weather",
            "weather",
            8000,
            json!({ "policyRef": policy_name }),
        ))
        .apply()
        .await;
    (nginx, policy_name)
}

fn class_policy(name: &str, classes: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
        "metadata": { "name": name }, "spec": { "allowServiceDNSNames": false, "ingressClasses": classes }
    })
}

/// Waits until weather's ConfigMap allows exactly `want`.
async fn hosts(client: &kube::Client, ns: &str, want: &[&str]) {
    wait_config(client, ns, "weather", SETUP, &format!("hosts {want:?}"), |c| {
        c.allowed_hosts == want
    })
    .await;
}

async fn delete_ingress_classes(client: &kube::Client, classes: impl IntoIterator<Item = String>) {
    for class in classes {
        Api::<IngressClass>::all(client.clone())
            .delete(&class, &DeleteParams::default())
            .await
            .expect("delete IngressClass");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_counts_once_an_ingress_class_serves_its_class() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("classes").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    let gone = format!("gone-{ns}");
    let (nginx, _) = weather_behind_classed_ingresses(&client, &ns, &gone, false).await;
    hosts(
        &client,
        &ns,
        &[
            "legacy.example.com",
            "public.example.com",
            "served.example.com",
            "weather.internal",
        ],
    )
    .await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let s = server_with(&servers, "weather", "IngressNotCounted=True", |s| {
        condition(s, "IngressNotCounted").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, _, message) = condition(&s, "IngressNotCounted").expect("condition");
    assert!(
        message.contains(&format!(
            "Ingress {ns}/orphan is not counted: its class \"{gone}\" (spec.ingressClassName) is served by no IngressClass"
        )),
        "{message}"
    );

    // The IngressClass appears: the orphan counts.
    apply_cluster::<IngressClass>(&client, ingress_class(&gone, false)).await;
    hosts(
        &client,
        &ns,
        &[
            "legacy.example.com",
            "orphan.example.com",
            "public.example.com",
            "served.example.com",
            "weather.internal",
        ],
    )
    .await;
    delete_ingress_classes(&client, [gone, nginx]).await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policys_ingress_classes_and_the_default_class_decide_which_ingresses_count() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("classes-policy").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    let other = format!("other-{ns}");
    apply_cluster::<IngressClass>(&client, ingress_class(&other, false)).await;
    let (nginx, policy_name) = weather_behind_classed_ingresses(&client, &ns, &other, true).await;
    // No policy list and no default class: every served class counts, and so does the unclassed Ingress.
    hosts(
        &client,
        &ns,
        &[
            "legacy.example.com",
            "orphan.example.com",
            "public.example.com",
            "served.example.com",
            "unclassed.example.com",
            "weather.internal",
        ],
    )
    .await;

    // The policy counts only the nginx class; a default IngressClass now gives the unclassed Ingress a class.
    apply_cluster::<IngressClass>(&client, ingress_class(&format!("default-{ns}"), true)).await;
    apply_cluster::<MCPGuardPolicy>(&client, class_policy(&policy_name, json!([nginx]))).await;
    hosts(
        &client,
        &ns,
        &[
            "legacy.example.com",
            "public.example.com",
            "served.example.com",
            "weather.internal",
        ],
    )
    .await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let s = server_with(&servers, "weather", "both named in IngressNotCounted", |s| {
        condition(s, "IngressNotCounted")
            .is_some_and(|c| c.2.contains("/orphan") && c.2.contains("/unclassed"))
    })
    .await;
    let (_, _, message) = condition(&s, "IngressNotCounted").expect("condition");
    assert!(
        message.contains(&format!(
            "its class \"default-{ns}\" (the default IngressClass) is not one the policy counts"
        )),
        "{message}"
    );
    delete_ingress_classes(&client, [other, format!("default-{ns}"), nginx]).await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_in_another_namespace_counts_with_a_reference_grant() {
    let cluster = cluster().await;
    cluster
        .apply_gateway_api_crds()
        .await
        .expect("install the Gateway API CRDs");
    let client = cluster.client();
    let op = Operator::start_in(client.clone(), None, None, Some(true));
    let ns = cluster.namespace("grant-app").await;
    let edge = cluster.namespace("grant-edge").await;
    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 80, "targetPort": 8000 }])),
    )
    .await;
    apply::<MCPServer>(&client, &ns, mcpserver("weather", "weather", 8000, json!({}))).await;
    apply::<HTTPRoute>(
        &client,
        &edge,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "edge" },
            "spec": {
                "hostnames": ["edge.example.com"],
                "rules": [{ "backendRefs": [{ "name": "weather", "namespace": ns, "port": 80 }] }]
            }
        }),
    )
    .await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let s = server_with(&servers, "weather", "the missing ReferenceGrant reported", |s| {
        condition(s, "Degraded").is_some_and(|c| c.2.contains("no ReferenceGrant"))
    })
    .await;
    let cfg = guard_config(&client, &ns, "weather").await.expect("config");
    assert!(
        !cfg.allowed_hosts.contains(&"edge.example.com".to_string()),
        "{cfg:?} {:?}",
        s.status
    );

    apply::<ReferenceGrant>(
        &client,
        &ns,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": { "name": "edge-routes" },
            "spec": {
                "from": [{ "group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": edge }],
                "to": [{ "group": "", "kind": "Service", "name": "weather" }]
            }
        }),
    )
    .await;
    wait_config(
        &client,
        &ns,
        "weather",
        SETUP,
        "the granted route's hostname",
        |c| c.allowed_hosts.contains(&"edge.example.com".to_string()),
    )
    .await;
    op.stop().await;
}

/// Gateway `gw` with one listener.
fn gateway(listener: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "gw" },
        "spec": { "gatewayClassName": "test", "listeners": [listener] }
    })
}

/// The Gateway API CRDs, an operator that assumes them, and weather (Service, MCPServer) reached through
/// HTTPRoute `mcp` on Gateway `gw`'s `listener`. Returns the operator.
async fn weather_behind_a_route(client: &kube::Client, ns: &str, listener: serde_json::Value) -> Operator {
    cluster()
        .await
        .apply_gateway_api_crds()
        .await
        .expect("install the Gateway API CRDs");
    let op = Operator::start(client.clone(), ns, None, Some(true));
    Scenario::new(client, ns)
        .service(service(
            "weather",
            "weather",
            json!([{ "port": 80, "targetPort": 8000 }]),
        ))
        .server(mcpserver("weather", "weather", 8000, json!({})))
        .apply()
        .await;
    apply::<Gateway>(client, ns, gateway(listener)).await;
    apply::<HTTPRoute>(
        client,
        ns,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "mcp" },
            "spec": {
                "parentRefs": [{ "name": "gw" }],
                "hostnames": ["mcp.gw.example.com", "*.apps.gw.example.com", "elsewhere.example.org"],
                "rules": [{ "backendRefs": [{ "name": "weather", "port": 80 }] }]
            }
        }),
    )
    .await;
    op
}

fn https_listener() -> serde_json::Value {
    json!({ "name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.gw.example.com",
            "tls": { "certificateRefs": [{ "name": "gw-cert" }] } })
}

fn http_listener() -> serde_json::Value {
    json!({ "name": "http", "port": 80, "protocol": "HTTP", "hostname": "elsewhere.example.org" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_listener_change_reaches_the_mcpserver_through_its_route() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("gw-listener").await;
    let op = weather_behind_a_route(&client, &ns, https_listener()).await;
    config_allowing(&client, &ns, "weather", "mcp.gw.example.com", SETUP).await;

    apply::<Gateway>(&client, &ns, gateway(http_listener())).await;
    let cfg = config_allowing(&client, &ns, "weather", "elsewhere.example.org", PROPAGATION).await;
    assert!(
        !cfg.allowed_hosts.contains(&"mcp.gw.example.com".to_string()),
        "{cfg:?}"
    );
    assert!(
        cfg.allowed_origins
            .contains(&"http://elsewhere.example.org".to_string()),
        "{cfg:?}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_the_gateway_refuses_loses_its_hosts_until_accepted_and_deletion_removes_them() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("gw-accept").await;
    let op = weather_behind_a_route(&client, &ns, http_listener()).await;
    config_allowing(&client, &ns, "weather", "elsewhere.example.org", SETUP).await;

    // The Gateway's controller refuses the route (its status says so): its hosts go; accepted again, they return.
    let routes = Api::<HTTPRoute>::namespaced(client.clone(), &ns);
    let accepted = |status: &str| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "status": { "parents": [{
                "parentRef": { "name": "gw" },
                "controllerName": "example.com/gateway-controller",
                "conditions": [{
                    "type": "Accepted", "status": status, "reason": if status == "True" { "Accepted" } else { "NotAllowedByListeners" },
                    "message": "decided by the test", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
                }]
            }] }
        })
    };
    let set_accepted = |status: &'static str| {
        let (routes, value) = (routes.clone(), accepted(status));
        async move {
            routes
                .patch_status("mcp", &PatchParams::apply(MANAGER).force(), &Patch::Apply(&value))
                .await
                .expect("route status");
        }
    };
    set_accepted("False").await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "weather", "the refusal reported", |s| {
        condition(s, "Degraded").is_some_and(|c| c.2.contains("is not accepted by Gateway"))
    })
    .await;
    let cfg = guard_config(&client, &ns, "weather").await.expect("config");
    assert!(
        !cfg.allowed_hosts.contains(&"elsewhere.example.org".to_string()),
        "{cfg:?} / {:?}",
        server.status
    );
    set_accepted("True").await;
    config_allowing(&client, &ns, "weather", "elsewhere.example.org", PROPAGATION).await;

    // Deleting the route removes its hosts.
    routes
        .delete("mcp", &DeleteParams::default())
        .await
        .expect("delete");
    config_without(&client, &ns, "weather", "elsewhere.example.org", PROPAGATION).await;
    op.stop().await;
}
