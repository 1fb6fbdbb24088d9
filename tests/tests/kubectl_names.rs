//! The kind `MCPServer` exists in other groups too (`mcp.x-k8s.io`, `toolhive.stacklok.dev`, `kagent.dev`, the
//! last with the short name `mcps`). With such a CRD installed beside ours on a real API server, the names our
//! docs, examples, chart notes, demo and plugin hand to kubectl still reach mcp-guard's MCPServer; and none of
//! them uses a name that another group's kind could answer.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use mcp_guard_operator::crd::MCPServer;
use serde_json::json;
use testkit::cluster::Cluster;
use testkit::tools::workspace_root;

/// kagent's MCPServer, as far as kubectl's name resolution sees it: same kind, its short name `mcps`.
fn kagent_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "mcpservers.kagent.dev" },
        "spec": {
            "group": "kagent.dev",
            "scope": "Namespaced",
            "names": {
                "kind": "MCPServer", "plural": "mcpservers", "singular": "mcpserver",
                "listKind": "MCPServerList", "shortNames": ["mcps"]
            },
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true
                }}
            }]
        }
    }))
    .unwrap()
}

/// Every kubectl resource name the user-facing files write for an MCPServer (`kubectl VERB NAME ...` and
/// `NAME/object`), with where it was found.
fn mcpserver_names_in(file: &Path, text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.contains("kubectl") {
            continue;
        }
        // Resource names are lower case on kubectl's command line; prose writes the kind, `MCPServer`.
        for word in line.split(|c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '(' | ')' | ','))
        {
            let kind = word.split('/').next().unwrap_or_default();
            if kind == "mcps" || kind == "mcpgs" || kind.starts_with("mcpserver") {
                found.push((kind.to_string(), format!("{}:{}", file.display(), i + 1)));
            }
        }
    }
    found
}

fn user_facing_files() -> Vec<std::path::PathBuf> {
    let root = workspace_root();
    let mut files = vec![
        root.join("README.md"),
        root.join("charts/mcp-guard/templates/NOTES.txt"),
        root.join("charts/mcp-guard/templates/prometheusrule.yaml"),
        root.join("tools/demo.sh"),
        root.join("kubectl-plugin/src/explain.rs"),
        root.join("kubectl-plugin/src/check_inject.rs"),
    ];
    for dir in [
        "docs",
        "examples",
        "examples/ingress",
        "examples/httproute",
        "examples/audit",
        "examples/policy",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md" || e == "yaml") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn user_facing_kubectl_commands_name_our_mcpserver_unambiguously() {
    let mut names = Vec::new();
    for file in user_facing_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        names.extend(mcpserver_names_in(&file, &text));
    }
    assert!(
        names.len() >= 10,
        "the scan finds the docs' kubectl commands: {names:?}"
    );
    let ambiguous: Vec<_> = names
        .iter()
        .filter(|(kind, _)| !matches!(kind.as_str(), "mcpservers.mcpguard.dev" | "mcpgs"))
        .collect();
    assert!(
        ambiguous.is_empty(),
        "kubectl names another group's MCPServer could answer (write mcpservers.mcpguard.dev): {ambiguous:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_names_reach_our_mcpserver_beside_another_groups_kind() {
    let cluster = Cluster::shared().await;
    cluster.apply_crds().await.unwrap();
    cluster.apply_crd(&kagent_crd()).await.unwrap();
    let ns = cluster.namespace("kubectl-names").await;
    let client = cluster.client();

    let ours: MCPServer = serde_json::from_value(json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "name": "weather", "namespace": ns },
        "spec": { "selector": { "matchLabels": { "app": "weather" } }, "port": 8000 }
    }))
    .unwrap();
    Api::<MCPServer>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ours)
        .await
        .unwrap();
    let resource = ApiResource {
        group: "kagent.dev".into(),
        version: "v1alpha1".into(),
        api_version: "kagent.dev/v1alpha1".into(),
        kind: "MCPServer".into(),
        plural: "mcpservers".into(),
    };
    let theirs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kagent.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "name": "weather", "namespace": ns },
        "spec": { "deployment": { "image": "example/weather" } }
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client, &ns, &resource)
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let api_version_of = |name: &str| {
        let out = cluster
            .kubectl()
            .args(["get", name, "weather", "-n", &ns, "-o", "jsonpath={.apiVersion}"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl get {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The collision is real: kagent's short name answers with kagent's object.
    assert_eq!(api_version_of("mcps"), "kagent.dev/v1alpha1");
    // The names the docs write reach ours.
    for name in ["mcpservers.mcpguard.dev", "mcpgs"] {
        assert_eq!(api_version_of(name), "mcpguard.dev/v1alpha1", "{name}");
    }
    // `kubectl get mcpservers.mcpguard.dev` prints our columns.
    let out = cluster
        .kubectl()
        .args(["get", "mcpservers.mcpguard.dev", "-n", &ns])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("HOSTS") && table.contains("MODE") && table.contains("READY"),
        "{table}"
    );
    // The category lists ours only.
    let out = cluster
        .kubectl()
        .args(["get", "mcpguard", "-n", &ns, "-o", "name"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "mcpserver.mcpguard.dev/weather"
    );
}
