//! An MCPServer of ours guarding a server of the Kubernetes SIG's mcp-lifecycle-operator (`mcp.x-k8s.io`
//! MCPServer) by `spec.serverRef`, against the real control plane: their CRD (a fixture of the fields we read),
//! their MCPServer and the Deployment, Service and NetworkPolicy their controller creates → our ConfigMap (their
//! Service names and handshake Host), status and NetworkPolicy; the API server's rules for the two forms.

mod operator_common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use mcp_guard_operator::crd::MCPServer;
use mcp_guard_operator::sources::sig_servers::SigMCPServer;
use operator_common::*;
use serde_json::json;
use testkit::cluster::Cluster;
use testkit::tools::workspace_root;
use tokio::sync::OnceCell;

/// Propagation deadline used in assertions: generous for a loaded CI machine.
const PROPAGATION: Duration = Duration::from_secs(5);

/// The shared control plane with our CRDs and the fixture of theirs installed.
async fn cluster() -> &'static Cluster {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let cluster = Cluster::shared().await;
    CRDS.get_or_init(|| async {
        cluster.apply_crds().await.expect("apply crds/");
        cluster
            .apply_crd_files(&workspace_root().join("tests/fixtures/sig-mcp-lifecycle"))
            .await
            .expect("apply the mcp.x-k8s.io fixture CRD");
    })
    .await;
    cluster
}

/// Their MCPServer `name` listening on `port`, with the status their controller writes.
async fn their_server(client: &kube::Client, ns: &str, name: &str, port: i32) {
    let api = Api::<SigMCPServer>::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": "mcp.x-k8s.io/v1beta1", "kind": "MCPServer",
        "metadata": { "name": name },
        "spec": { "source": { "type": "ContainerImage", "containerImage": { "ref": "ghcr.io/example/fetch:1.0" } },
                  "config": { "port": port, "path": "/mcp" } }
    });
    let pp = PatchParams::apply(MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(&body))
        .await
        .expect("apply their MCPServer");
    let status = json!({
        "apiVersion": "mcp.x-k8s.io/v1beta1", "kind": "MCPServer",
        "status": { "serviceName": name, "deploymentName": name,
                    "address": { "url": format!("http://{name}.{ns}.svc.cluster.local:{port}/mcp") } }
    });
    api.patch_status(name, &pp, &Patch::Apply(&status))
        .await
        .expect("their status");
}

/// The Deployment (with `replicas` pods: their `spec.runtime.replicas`), Service and NetworkPolicy their
/// controller creates for server `name`. (No webhook runs here: the pods the controller-manager creates do not
/// get the guard.)
async fn their_children(client: &kube::Client, ns: &str, name: &str, port: i32, replicas: i32) {
    let labels = json!({ "app": "mcp-server", "mcp-server": name });
    apply::<Deployment>(
        client,
        ns,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": name, "labels": labels },
            "spec": { "replicas": replicas, "selector": { "matchLabels": labels },
                      "template": { "metadata": { "labels": labels },
                                    "spec": { "containers": [{ "name": "mcp-server", "image": "ghcr.io/example/fetch:1.0",
                                                               "ports": [{ "name": "mcp", "containerPort": port, "protocol": "TCP" }] }] } } }
        }),
    )
    .await;
    apply::<Service>(
        client,
        ns,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "labels": labels },
            "spec": { "type": "ClusterIP", "selector": { "mcp-server": name },
                      "ports": [{ "name": "mcp", "port": port, "targetPort": "mcp", "protocol": "TCP" }] }
        }),
    )
    .await;
    apply::<NetworkPolicy>(
        client,
        ns,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": name, "labels": labels },
            "spec": { "podSelector": { "matchLabels": { "mcp-server": name } }, "policyTypes": ["Ingress"],
                      "ingress": [{ "ports": [{ "port": port, "protocol": "TCP" }] }] }
        }),
    )
    .await;
}

fn guarding(name: &str, theirs: &str) -> serde_json::Value {
    json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "name": name },
        "spec": { "serverRef": { "apiGroup": "mcp.x-k8s.io", "kind": "MCPServer", "name": theirs } }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_guards_their_server_with_their_handshake_host() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-sig").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));

    // Ours first: theirs does not exist yet, and the status says so.
    apply::<MCPServer>(&client, &ns, guarding("guard-fetch", "fetch")).await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "guard-fetch", "Degraded=True", |s| {
        condition(s, "Degraded").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, _, message) = condition(&server, "Degraded").expect("Degraded");
    assert!(
        message.contains(&format!(
            "MCPServer.mcp.x-k8s.io {ns}/fetch (spec.serverRef) does not exist"
        )),
        "{message}"
    );

    // Their controller's objects appear: the reference resolves (their watch and their Service's reach ours).
    their_server(&client, &ns, "fetch", 8080).await;
    their_children(&client, &ns, "fetch", 8080, 0).await;
    let handshake = format!("fetch.{ns}.svc.cluster.local:8080");
    let want = vec![
        "fetch".to_string(),
        format!("fetch.{ns}"),
        format!("fetch.{ns}.svc"),
        format!("fetch.{ns}.svc.cluster.local"),
        handshake.clone(),
    ];
    wait_config(
        &client,
        &ns,
        "guard-fetch",
        SETUP,
        "their Service's names and handshake Host",
        |c| c.allowed_hosts == want,
    )
    .await;
    let server = server_with(&servers, "guard-fetch", "Ready=True, no longer Degraded", |s| {
        condition(s, "Ready").is_some_and(|c| c.0 == "True")
            && condition(s, "Degraded").is_none_or(|c| c.0 == "False")
    })
    .await;
    let status = server.status.clone().expect("status");
    let sources: Vec<&str> = status
        .allowed_hosts
        .iter()
        .find(|e| e.value == handshake)
        .map(|e| e.sources.iter().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        sources,
        vec![format!(
            "MCPServer.mcp.x-k8s.io {ns}/fetch (its controller's handshake)"
        )]
    );
    // Their Service targets the name `mcp`, which the guard takes over: no bypass.
    assert!(
        condition(&server, "GuardBypass").is_none_or(|c| c.0 == "False"),
        "{:?}",
        condition(&server, "GuardBypass")
    );

    let (_, _, admits) = condition(&server, "NetworkPolicy").expect("NetworkPolicy condition");
    assert!(
        admits.contains(&format!("own port 8080 is closed to other pods by this NetworkPolicy (the NetworkPolicy the lifecycle operator keeps for MCPServer.mcp.x-k8s.io {ns}/fetch still admits it)")),
        "{admits}"
    );

    // Our NetworkPolicy: their pods, the guard's port and admin port (theirs stays as their controller wrote it).
    let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let np = eventually("our NetworkPolicy", SETUP, || async {
        nps.get_opt("guard-fetch-mcp-guard").await.expect("get")
    })
    .await;
    let spec = np.spec.clone().expect("spec");
    assert_eq!(
        serde_json::to_value(&spec.pod_selector).expect("json"),
        json!({ "matchLabels": { "mcp-server": "fetch" } })
    );
    assert_eq!(rule_ports(&np), vec![vec!["15080"], vec!["15081"]]);
    let theirs = nps.get("fetch").await.expect("their NetworkPolicy");
    assert_eq!(rule_ports(&theirs), vec![vec!["8080"]]);

    // A pod of theirs without the guard (no webhook here): reported, since their Service reaches the server
    // directly.
    their_children(&client, &ns, "fetch", 8080, 1).await;
    let server = server_with(&servers, "guard-fetch", "GuardBypass=True", |s| {
        condition(s, "GuardBypass").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, _, bypass) = condition(&server, "GuardBypass").expect("GuardBypass");
    assert!(bypass.contains("without the guard"), "{bypass}");
    their_children(&client, &ns, "fetch", 8080, 0).await;
    server_with(&servers, "guard-fetch", "GuardBypass gone with the pod", |s| {
        condition(s, "GuardBypass").is_none_or(|c| c.0 == "False")
    })
    .await;

    // Their port changes: the handshake Host follows.
    their_server(&client, &ns, "fetch", 9090).await;
    let moved = format!("fetch.{ns}.svc.cluster.local:9090");
    let cfg = wait_config(&client, &ns, "guard-fetch", PROPAGATION, "the new port", |c| {
        c.allowed_hosts.contains(&moved)
    })
    .await;
    assert!(!cfg.allowed_hosts.contains(&handshake), "{:?}", cfg.allowed_hosts);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_takes_exactly_one_form() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-sig-forms").await;
    let api = Api::<MCPServer>::namespaced(client.clone(), &ns);
    // (spec, words of the refusal)
    let cases = [
        (json!({}), "set spec.selector and spec.port"),
        (json!({ "port": 8000 }), "or spec.serverRef"),
        (
            json!({ "selector": { "matchLabels": { "app": "a" } }, "port": 8000,
                    "serverRef": { "apiGroup": "mcp.x-k8s.io", "kind": "MCPServer", "name": "fetch" } }),
            "remove spec.selector and spec.port, or remove spec.serverRef",
        ),
        (
            json!({ "serverRef": { "apiGroup": "mcp.x-k8s.io", "kind": "MCPServer", "name": "fetch" },
                    "traffic": { "layout": "SharedPort" } }),
            "only the GuardPort layout fits",
        ),
        (
            json!({ "serverRef": { "apiGroup": "toolhive.stacklok.dev", "kind": "MCPServer", "name": "fetch" } }),
            "serverRef.apiGroup must be mcp.x-k8s.io",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let obj: MCPServer = serde_json::from_value(json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": format!("case-{i}") }, "spec": spec
        }))
        .expect("object");
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(&format!("case {i} must be refused"));
        assert!(err.to_string().contains(want), "case {i}: {err}");
    }
    // The reference alone is accepted.
    let ok: MCPServer = serde_json::from_value(guarding("ok", "fetch")).expect("object");
    api.create(&PostParams::default(), &ok)
        .await
        .expect("serverRef alone");
}
