//! The test control plane is real: a kube-rs client talks to it over TLS, CRDs from `crds/` install, custom
//! objects round-trip, RBAC is enforced, and the controller-manager turns a Deployment into a ReplicaSet.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::json;
use testkit::cluster::{Cluster, config_from};

#[tokio::test]
async fn control_plane_serves_crds_objects_and_controllers() {
    let cluster = Cluster::shared().await;
    let client = cluster.client();

    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(
        version.git_version, "v1.34.4",
        "the API server reports the pinned release"
    );

    let ns = cluster.namespace("smoke").await;

    // A CRD from crds/ installs, and an object of it round-trips.
    cluster.apply_crds().await.expect("apply crds/");
    let gvk = GroupVersionKind::gvk("mcpguard.dev", "v1alpha1", "MCPGuardPolicy");
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mcpguard.dev/v1alpha1",
        "kind": "MCPGuardPolicy",
        "metadata": { "name": format!("{ns}-policy") },
        "spec": { "allowedHosts": ["mcp.example.com"] }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create an MCPGuardPolicy");
    let read = policies.get(&format!("{ns}-policy")).await.expect("read it back");
    assert_eq!(read.data["spec"]["allowedHosts"], json!(["mcp.example.com"]));

    // The controller-manager is running: a Deployment gets its ReplicaSet.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "example.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create a Deployment");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = replica_sets
            .list(&ListParams::default())
            .await
            .expect("list ReplicaSets");
        if list.items.iter().any(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Deployment" && o.name == "web")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ReplicaSet for the Deployment after 30s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn rbac_is_enforced_for_service_accounts() {
    let cluster = Cluster::shared().await;
    let ns = cluster.namespace("rbac").await;
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "reader" } })).unwrap();
    Api::<ServiceAccount>::namespaced(cluster.client(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create a ServiceAccount");

    let kubeconfig = cluster
        .service_account_kubeconfig(&ns, "reader")
        .await
        .expect("token kubeconfig");
    let config = config_from(&kubeconfig)
        .await
        .expect("load the ServiceAccount kubeconfig");
    let as_reader = kube::Client::try_from(config).unwrap();
    let err = Api::<ConfigMap>::namespaced(as_reader, &ns)
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without RBAC grants cannot list ConfigMaps");
    let text = err.to_string();
    assert!(
        text.contains("forbidden"),
        "expected a 403 Forbidden, got: {text}"
    );
    assert!(
        text.contains(&format!("system:serviceaccount:{ns}:reader")),
        "the API server authenticated the token as the ServiceAccount: {text}"
    );
}
