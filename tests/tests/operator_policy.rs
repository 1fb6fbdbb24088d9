//! MCPGuardPolicy status against the real control plane: `Valid` names each entry the guard would not load and
//! the fix, `InUse` counts the MCPServers using the policy across namespaces. A binary of its own: the operator
//! here watches every namespace (only such an operator writes policy statuses).

mod operator_common;

use std::time::Duration;

use kube::api::{Api, DeleteParams};
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use operator_common::*;
use serde_json::json;
use testkit::cluster::Cluster;

const SETUP: Duration = Duration::from_secs(30);

fn condition<'a>(p: &'a MCPGuardPolicy, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

async fn policy_with(
    api: &Api<MCPGuardPolicy>,
    name: &str,
    what: &str,
    pred: impl Fn(&MCPGuardPolicy) -> bool,
) -> MCPGuardPolicy {
    eventually(SETUP, what, || async {
        api.get_opt(name).await.expect("get policy").filter(|p| pred(p))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_status_says_whether_it_is_valid_and_who_uses_it() {
    let cluster = Cluster::shared().await;
    cluster.apply_crds().await.expect("apply crds/");
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
        condition(p, "Valid").is_some_and(|c| c.0 == "False")
    })
    .await;
    let (_, reason, message) = condition(&p, "Valid").expect("Valid");
    assert_eq!(reason, "InvalidEntries");
    assert!(
        message.contains("spec.allowedHosts[1]: invalid host pattern \"a.example.com:99999\""),
        "{message}"
    );
    assert_eq!(
        condition(&p, "InUse").map(|c| (c.0, c.1)),
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
    let (status, reason, message) = condition(&p, "InUse").expect("InUse");
    assert_eq!((status, reason), ("True", "UsedByMCPServers"));
    assert_eq!(message, format!("Used by 2 MCPServers: {a}/weather, {b}/weather"));

    // Fixing the entry makes it valid; deleting a user lowers the count.
    apply_cluster::<MCPGuardPolicy>(&client, policy(json!(["gateway.internal"]))).await;
    Api::<MCPServer>::namespaced(client.clone(), &b)
        .delete("weather", &DeleteParams::default())
        .await
        .expect("delete");
    let p = policy_with(&policies, "strict", "valid, one user", |p| {
        condition(p, "Valid").is_some_and(|c| c.0 == "True")
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
