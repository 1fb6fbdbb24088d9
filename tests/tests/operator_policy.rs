//! Cluster-scoped objects against the real control plane, in a binary of its own (its own API server): the
//! operators here watch every namespace (only such an operator writes policy statuses) and a test creates a
//! default IngressClass (which the API server's admission would stamp on every new Ingress of other tests).
//!
//! - MCPGuardPolicy status: `Valid` names each entry the guard would not load and the fix, `InUse` counts the
//!   MCPServers using the policy across namespaces.
//! - Ingress classes: an Ingress counts when an IngressClass serves its class (field, legacy annotation, or the
//!   default class), or, when the policy lists `ingressClasses`, when its class is listed; the status names those
//!   not counted and why; ingress-nginx's `upstream-vhost` is allowed.
//! - Cross-namespace HTTPRoutes (real Gateway API CRDs): a route in another namespace counts once a
//!   ReferenceGrant in the server's namespace lets it use the Service.

mod operator_common;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DeleteParams};
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use mcp_guard_operator::gateway::{HTTPRoute, ReferenceGrant};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_classes_decide_which_ingresses_count() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("classes").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    let nginx = format!("nginx-{ns}");
    let policy_name = format!("classes-{ns}");
    apply_cluster::<IngressClass>(&client, ingress_class(&nginx, false)).await;
    let policy = |classes: serde_json::Value| {
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
            "metadata": { "name": policy_name }, "spec": { "allowServiceDNSNames": false, "ingressClasses": classes }
        })
    };
    apply_cluster::<MCPGuardPolicy>(&client, policy(serde_json::Value::Null)).await;
    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 80, "targetPort": 8000 }])),
    )
    .await;
    // Created before any default IngressClass exists, so the API server leaves it without a class.
    apply::<Ingress>(
        &client,
        &ns,
        classed("unclassed", "unclassed.example.com", json!({}), json!({})),
    )
    .await;
    apply::<Ingress>(
        &client,
        &ns,
        classed(
            "served",
            "served.example.com",
            json!({ "ingressClassName": nginx }),
            json!({}),
        ),
    )
    .await;
    apply::<Ingress>(
        &client,
        &ns,
        classed(
            "legacy",
            "legacy.example.com",
            json!({}),
            json!({ "kubernetes.io/ingress.class": nginx }),
        ),
    )
    .await;
    let gone = format!("gone-{ns}");
    apply::<Ingress>(
        &client,
        &ns,
        classed(
            "orphan",
            "orphan.example.com",
            json!({ "ingressClassName": gone }),
            json!({}),
        ),
    )
    .await;
    apply::<Ingress>(
        &client,
        &ns,
        classed(
            "vhost",
            "public.example.com",
            json!({ "ingressClassName": nginx }),
            json!({ "nginx.ingress.kubernetes.io/upstream-vhost": "weather.internal" }),
        ),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver("weather", "weather", 8000, json!({ "policyRef": policy_name })),
    )
    .await;

    let hosts = |want: &'static [&'static str]| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            wait_config(&client, &ns, "weather", SETUP, &format!("hosts {want:?}"), |c| {
                c.allowed_hosts == want
            })
            .await
        }
    };
    hosts(&[
        "legacy.example.com",
        "public.example.com",
        "served.example.com",
        "unclassed.example.com",
        "weather.internal",
    ])
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
    hosts(&[
        "legacy.example.com",
        "orphan.example.com",
        "public.example.com",
        "served.example.com",
        "unclassed.example.com",
        "weather.internal",
    ])
    .await;

    // The policy counts only the nginx class; a default IngressClass now gives the unclassed Ingress a class.
    apply_cluster::<IngressClass>(&client, ingress_class(&format!("default-{ns}"), true)).await;
    apply_cluster::<MCPGuardPolicy>(&client, policy(json!([nginx]))).await;
    hosts(&[
        "legacy.example.com",
        "public.example.com",
        "served.example.com",
        "weather.internal",
    ])
    .await;
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
    for class in [gone, format!("default-{ns}"), nginx] {
        Api::<IngressClass>::all(client.clone())
            .delete(&class, &DeleteParams::default())
            .await
            .expect("delete IngressClass");
    }
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
