use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use proptest::prelude::*;

use super::*;

fn svc(ns: &str, name: &str, json: serde_json::Value) -> Service {
    let mut s: Service = serde_json::from_value(json).expect("service");
    s.metadata.namespace = Some(ns.into());
    s.metadata.name = Some(name.into());
    s
}

/// A Service selecting `app: <app>` with one port `(name, appProtocol)`.
fn app_svc(ns: &str, name: &str, app: &str, port_name: Option<&str>, proto: Option<&str>) -> Service {
    svc(
        ns,
        name,
        serde_json::json!({ "spec": {
            "selector": { "app": app },
            "ports": [{ "port": 80, "targetPort": 8000, "name": port_name, "appProtocol": proto }]
        }}),
    )
}

fn ours(ns: &str, name: &str, app: &str) -> MCPServer {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "selector": { "matchLabels": { "app": app } }, "port": 8000 }
    }))
    .expect("MCPServer")
}

#[test]
fn app_protocols_that_say_mcp() {
    for yes in [
        "mcp",
        "MCP",
        "kubernetes.io/mcp",
        "kgateway.dev/mcp",
        "agentgateway.dev/mcp",
    ] {
        assert!(is_mcp_app_protocol(yes), "{yes}");
    }
    for no in [
        "",
        "http",
        "mcps",
        "mcp-http",
        "/mcp",
        "kubernetes.io/h2c",
        "mcp/http",
        "x/mcp/y",
    ] {
        assert!(!is_mcp_app_protocol(no), "{no}");
    }
}

#[test]
fn port_names_that_say_mcp() {
    for yes in ["mcp", "mcp-http", "mcp-sse"] {
        assert!(is_mcp_port_name(yes), "{yes}");
    }
    for no in ["", "http", "mcp-", "mcpx", "my-mcp", "MCP-http"] {
        assert!(!is_mcp_port_name(no), "{no}");
    }
}

#[test]
fn marked_ports_say_why() {
    let s = svc(
        "a",
        "s",
        serde_json::json!({ "spec": { "ports": [
            { "port": 80, "name": "http" },
            { "port": 81, "name": "mcp" },
            { "port": 82, "name": "web", "appProtocol": "kgateway.dev/mcp" },
            { "port": 83, "name": "mcp-x", "appProtocol": "mcp" },
        ]}}),
    );
    let got: Vec<(i32, String)> = marked_ports(&s)
        .iter()
        .map(|p| (p.port.port, p.why.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (81, "port name mcp".to_string()),
            (82, "appProtocol kgateway.dev/mcp".to_string()),
            (83, "appProtocol mcp".to_string()),
        ]
    );
}

#[test]
fn kagent_label_marks_the_annotated_port_or_all() {
    let mut s = svc(
        "a",
        "s",
        serde_json::json!({
            "metadata": { "labels": { "kagent.dev/mcp-service": "true" } },
            "spec": { "ports": [{ "port": 80, "name": "http" }, { "port": 9090, "name": "metrics" }] }
        }),
    );
    assert_eq!(marked_ports(&s).len(), 2);
    s.metadata.annotations = Some([(KAGENT_PORT_ANNOTATION.to_string(), "80".to_string())].into());
    assert_eq!(
        marked_ports(&s).iter().map(|p| p.port.port).collect::<Vec<_>>(),
        [80]
    );
    s.metadata.annotations = Some([(KAGENT_PORT_ANNOTATION.to_string(), "metrics".to_string())].into());
    assert_eq!(
        marked_ports(&s).iter().map(|p| p.port.port).collect::<Vec<_>>(),
        [9090]
    );
    s.metadata.labels = Some([(KAGENT_SERVICE_LABEL.to_string(), "false".to_string())].into());
    assert!(marked_ports(&s).is_empty());
}

#[test]
fn selected_only_by_a_server_of_its_namespace() {
    let s = app_svc("a", "weather", "weather", Some("mcp"), None);
    let here = ours("a", "w", "weather");
    let there = ours("b", "w", "weather");
    let other = ours("a", "x", "other");
    assert_eq!(selected_by(&s, &[&there, &other]), None);
    assert_eq!(
        selected_by(&s, &[&there, &here]).map(|s| s.name_any()),
        Some("w".into())
    );
}

#[test]
fn a_server_ref_selects_the_sig_servers_pods() {
    let s = svc(
        "a",
        "their",
        serde_json::json!({ "spec": { "selector": { "mcp-server": "their" }, "ports": [{ "port": 8080 }] } }),
    );
    let by_ref: MCPServer = serde_json::from_value(serde_json::json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "name": "guard-theirs", "namespace": "a" },
        "spec": { "serverRef": { "apiGroup": "mcp.x-k8s.io", "kind": "MCPServer", "name": "their" } }
    }))
    .expect("MCPServer");
    assert_eq!(
        selected_by(&s, &[&by_ref]).map(|s| s.name_any()),
        Some("guard-theirs".into())
    );
}

#[test]
fn unguarded_counts_mcp_services_no_server_selects() {
    let services: Vec<Arc<Service>> = [
        app_svc("a", "guarded", "g", Some("mcp"), None),
        app_svc("a", "open", "o", None, Some("mcp")),
        app_svc("a", "web", "web", Some("http"), None),
        app_svc("b", "open", "o", Some("mcp-http"), None),
        app_svc("b", "theirs", "t", Some("http"), None),
        app_svc("c", "web", "web", Some("http"), None),
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    let servers = [Arc::new(ours("a", "g", "g"))];
    let inventory = Inventory {
        services: &services,
        servers: &servers,
        theirs: BTreeSet::from([("b".to_string(), "theirs".to_string())]),
    };
    assert_eq!(
        inventory.unguarded_by_namespace(),
        BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)])
    );
}

#[test]
fn the_gauge_follows_the_caches_and_drops_namespaces_that_have_none_left() {
    use crate::sources::testkit::Cache;
    let metrics = ControllerMetrics::default();
    let mut previous = BTreeSet::new();
    let gauge = |m: &ControllerMetrics| {
        m.unguarded_servers
            .get(&NamespaceLabels {
                namespace: "a".into(),
            })
            .map(|g| g.get())
    };
    let mut cache = Cache {
        services: vec![app_svc("a", "open", "o", Some("mcp"), None)],
        ..Cache::default()
    };
    record(&cache.stores(), &metrics, &mut previous);
    assert_eq!(gauge(&metrics), Some(1));
    cache.servers.push(ours("a", "o", "o"));
    record(&cache.stores(), &metrics, &mut previous);
    assert_eq!(
        gauge(&metrics),
        None,
        "the series goes away once a server selects it"
    );
}

proptest! {
    /// Only `mcp` as the whole value or as the part after one `/` says MCP, whatever surrounds it.
    #[test]
    fn app_protocol_is_mcp_only_as_its_last_segment(prefix in "[a-z./-]{0,12}", suffix in "[a-z./-]{0,6}") {
        let value = format!("{prefix}mcp{suffix}");
        let segments: Vec<&str> = value.split('/').collect();
        let want = match segments.as_slice() {
            ["mcp"] => true,
            [domain, "mcp"] => !domain.is_empty(),
            _ => false,
        };
        prop_assert_eq!(is_mcp_app_protocol(&value), want, "{}", value);
    }
}
