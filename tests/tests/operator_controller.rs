//! The controller against the real control plane: MCPServer + Service + Ingress → ConfigMap and status;
//! edits and deletions propagate within about a second; deleting the MCPServer garbage-collects its ConfigMap;
//! conditions explain empty allowlists, catch-all rules, port mismatches and bypasses; policies; HTTPRoutes
//! (Gateway API CRDs installed while the operator runs); two replicas with a Lease, only the leader reconciling.

mod operator_common;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
use mcp_guard_config::Mode;
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use mcp_guard_operator::gateway::{Gateway, HTTPRoute};
use mcp_guard_operator::leader::LeaseSettings;
use operator_common::*;
use serde_json::json;
use testkit::cluster::Cluster;
use tokio::sync::OnceCell;

async fn cluster() -> &'static Cluster {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let cluster = Cluster::shared().await;
    CRDS.get_or_init(|| async { cluster.apply_crds().await.expect("apply crds/") })
        .await;
    cluster
}

async fn events(client: &kube::Client, ns: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// Service `weather` (80 → 8000), Ingress `web` for `host` (with TLS when `tls`), MCPServer `weather` on 8000.
async fn weather_behind_an_ingress(client: &kube::Client, ns: &str, host: &str, tls: bool) {
    let tls_hosts: &[&str] = if tls { &[host] } else { &[] };
    Scenario::new(client, ns)
        .service(service(
            "weather",
            "weather",
            json!([{ "name": "http", "port": 80, "targetPort": 8000 }]),
        ))
        .ingress(ingress(
            "web",
            json!([rule(Some(host), "weather", 80)]),
            tls_hosts,
        ))
        .server(mcpserver("weather", "weather", 8000, json!({})))
        .apply()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_and_its_service_become_the_configmap_and_the_status() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-ingress").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    weather_behind_an_ingress(&client, &ns, "mcp.example.com", true).await;

    let cfg = config_allowing(&client, &ns, "weather", "mcp.example.com", SETUP).await;
    assert_eq!(
        cfg.allowed_hosts,
        vec![
            "mcp.example.com".to_string(),
            "weather".into(),
            format!("weather.{ns}"),
            format!("weather.{ns}.svc"),
            format!("weather.{ns}.svc.cluster.local"),
        ]
    );
    assert_eq!(cfg.allowed_origins, vec!["https://mcp.example.com".to_string()]);
    assert_eq!(cfg.mode, Mode::Enforce);
    let source = cfg.source.expect("source");
    assert_eq!(
        (
            source.kind.as_str(),
            source.namespace.as_deref(),
            source.name.as_str()
        ),
        ("MCPServer", Some(ns.as_str()), "weather")
    );

    // Status: effective hosts with their sources, observedGeneration, Ready.
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "weather", "Ready=True", |s| {
        condition(s, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    let status = server.status.clone().expect("status");
    assert_eq!(status.observed_generation, server.metadata.generation);
    let sources_of = |host: &str| {
        status
            .allowed_hosts
            .iter()
            .find(|e| e.value == host)
            .unwrap_or_else(|| panic!("{host} in the status"))
            .sources
            .clone()
    };
    assert_eq!(sources_of("mcp.example.com"), vec![format!("Ingress {ns}/web")]);
    assert_eq!(sources_of("weather"), vec![format!("Service {ns}/weather")]);
    assert_eq!(condition(&server, "EmptyAllowlist").map(|c| c.0), Some("False"));
    assert_eq!(condition(&server, "GuardBypass").map(|c| c.0), Some("False"));

    let updated = eventually("an AllowlistUpdated Event", SETUP, || async {
        let evs = events(&client, &ns, "AllowlistUpdated").await;
        (!evs.is_empty()).then_some(evs)
    })
    .await;
    assert!(
        updated
            .iter()
            .any(|e| e.note.as_deref().unwrap_or("").contains("mcp.example.com")),
        "{updated:?}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_waits_for_ready_and_prints_hosts_mode_and_readiness() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-kubectl").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    weather_behind_an_ingress(&client, &ns, "mcp.example.com", true).await;

    let out = cluster
        .kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "mcpservers.mcpguard.dev/weather",
            "-n",
            &ns,
            "--timeout=20s",
        ])
        .output()
        .expect("run kubectl wait");
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster
        .kubectl()
        .args(["get", "mcpgs", "-n", &ns])
        .output()
        .expect("run kubectl get");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("HOSTS") && table.contains("MODE") && table.contains("READY") && table.contains("AGE"),
        "{table}"
    );
    assert!(
        table.contains("mcp.example.com") && table.contains("enforce") && table.contains("True"),
        "{table}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_edits_and_deletion_reach_the_configmap() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-ingress-edit").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    weather_behind_an_ingress(&client, &ns, "mcp.example.com", true).await;
    config_allowing(&client, &ns, "weather", "mcp.example.com", SETUP).await;

    // Edit the Ingress host: the ConfigMap follows within about a second.
    let started = Instant::now();
    apply::<Ingress>(
        &client,
        &ns,
        ingress("web", json!([rule(Some("new.example.com"), "weather", 80)]), &[]),
    )
    .await;
    let cfg = config_allowing(&client, &ns, "weather", "new.example.com", PROPAGATION).await;
    println!("Ingress host edit → ConfigMap update: {:?}", started.elapsed());
    // The Event says what this edit changed, not what the first allowlist was (the recorder would keep the
    // first note of a series).
    eventually(
        "an AllowlistUpdated Event naming the edit",
        PROPAGATION,
        || async {
            let evs = events(&client, &ns, "AllowlistUpdated").await;
            evs.iter()
                .any(|e| {
                    let note = e.note.as_deref().unwrap_or("");
                    note.contains("hosts added: new.example.com")
                        && note.contains("hosts removed: mcp.example.com")
                })
                .then_some(())
        },
    )
    .await;
    assert!(
        !cfg.allowed_hosts.iter().any(|h| h == "mcp.example.com"),
        "old host removed: {cfg:?}"
    );
    assert_eq!(
        cfg.allowed_origins,
        vec!["http://new.example.com".to_string()],
        "no TLS any more"
    );

    // Delete the Ingress: its host goes, the Service's stay.
    Api::<Ingress>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let cfg = config_without(&client, &ns, "weather", "new.example.com", PROPAGATION).await;
    assert!(cfg.allowed_hosts.contains(&"weather".to_string()), "{cfg:?}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hosts_left_warns_and_the_mcpserver_owns_its_configmap() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-cleanup").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    weather_behind_an_ingress(&client, &ns, "mcp.example.com", true).await;
    config_allowing(&client, &ns, "weather", "mcp.example.com", SETUP).await;

    // Owned by the MCPServer (controller reference), so that deleting the MCPServer removes it.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("weather-mcp-guard")
        .await
        .expect("ConfigMap");
    let owner = cm
        .metadata
        .owner_references
        .expect("owner references")
        .pop()
        .expect("one owner");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("MCPServer", "weather", Some(true))
    );

    // Delete the Ingress and the Service: no host left → EmptyAllowlist, Ready=False, a Warning Event.
    Api::<Ingress>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    Api::<Service>::namespaced(client.clone(), &ns)
        .delete("weather", &DeleteParams::default())
        .await
        .expect("delete");
    wait_config(&client, &ns, "weather", PROPAGATION, "an empty allowlist", |c| {
        c.allowed_hosts.is_empty()
    })
    .await;
    // First within the grace period (no Warning yet), then for good.
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "weather", "EmptyAllowlist=True", |s| {
        condition(s, "EmptyAllowlist").is_some_and(|c| c.0 == "True")
    })
    .await;
    if let Some((_, "NoHostsYet", _)) = condition(&server, "EmptyAllowlist") {
        assert_eq!(condition(&server, "Ready").map(|c| c.1), Some("WaitingForHosts"));
    }
    let server = server_with(&servers, "weather", "EmptyAllowlist=True/NoHostsFound", |s| {
        condition(s, "EmptyAllowlist").is_some_and(|c| c.1 == "NoHostsFound")
    })
    .await;
    let (ready, reason, _) = condition(&server, "Ready").expect("Ready");
    assert_eq!((ready, reason), ("False", "EmptyAllowlist"));
    let (_, _, message) = condition(&server, "EmptyAllowlist").expect("EmptyAllowlist");
    assert!(
        message.contains("spec.hosts"),
        "the message says what to add: {message}"
    );
    eventually("an EmptyAllowlist Event", SETUP, || async {
        let evs = events(&client, &ns, "EmptyAllowlist").await;
        evs.iter()
            .any(|e| e.type_.as_deref() == Some("Warning"))
            .then_some(())
    })
    .await;

    // Delete the MCPServer: the garbage collector removes the ConfigMap it owns.
    servers
        .delete("weather", &DeleteParams::default())
        .await
        .expect("delete MCPServer");
    eventually(
        "the owned ConfigMap to be garbage-collected",
        Duration::from_secs(60),
        || async {
            guard_config(&client, &ns, "weather")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(op.reconciles() > 0);
    op.stop().await;
}

/// Events about one MCPServer, of one reason.
async fn events_about(client: &kube::Client, ns: &str, server: &str, reason: &str) -> Vec<Event> {
    events(client, ns, reason)
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(server))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_applied_together_raise_no_empty_allowlist_warning() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-together").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);

    // As `kubectl apply -f` a file with the MCPServer first: the operator sees the MCPServer alone for a moment.
    apply::<MCPServer>(&client, &ns, mcpserver("weather", "weather", 8000, json!({}))).await;
    apply::<MCPServer>(&client, &ns, mcpserver("lonely", "lonely", 8000, json!({}))).await;
    let pending = server_with(&servers, "weather", "a status for the lone MCPServer", |s| {
        condition(s, "EmptyAllowlist").is_some()
    })
    .await;
    assert_eq!(
        condition(&pending, "EmptyAllowlist").map(|c| (c.0, c.1)),
        Some(("True", "NoHostsYet")),
        "{:?}",
        pending.status
    );
    assert_eq!(condition(&pending, "Ready").map(|c| c.1), Some("WaitingForHosts"));
    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 80, "targetPort": 8000 }])),
    )
    .await;
    apply::<Ingress>(
        &client,
        &ns,
        ingress("web", json!([rule(Some("mcp.example.com"), "weather", 80)]), &[]),
    )
    .await;
    wait_config(&client, &ns, "weather", SETUP, "the Ingress host", |c| {
        c.allowed_hosts.iter().any(|h| h == "mcp.example.com")
    })
    .await;

    // The lone one is warned about once the grace period is over; the other never.
    let lonely = server_with(&servers, "lonely", "lonely: NoHostsFound", |s| {
        condition(s, "EmptyAllowlist").is_some_and(|c| c.1 == "NoHostsFound")
    })
    .await;
    assert_eq!(condition(&lonely, "Ready").map(|c| c.1), Some("EmptyAllowlist"));
    eventually("the Warning about the lone MCPServer", PROPAGATION, || async {
        let evs = events_about(&client, &ns, "lonely", "EmptyAllowlist").await;
        evs.iter()
            .any(|e| e.type_.as_deref() == Some("Warning"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(EMPTY_GRACE + Duration::from_secs(1)).await;
    let false_alarms = events_about(&client, &ns, "weather", "EmptyAllowlist").await;
    assert!(
        false_alarms.is_empty(),
        "false EmptyAllowlist warnings: {false_alarms:?}"
    );
    let weather = servers.get("weather").await.expect("get");
    assert_eq!(condition(&weather, "Ready").map(|c| c.0), Some("True"));
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_selectors_are_reported_without_pods() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-overlap").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    // No webhook here (as when it was down): the controller still says so, on both MCPServers.
    apply::<MCPServer>(&client, &ns, mcpserver("weather", "weather", 8000, json!({}))).await;
    server_with(&servers, "weather", "weather: NoOverlap", |s| {
        condition(s, "SelectorOverlap").is_some_and(|c| c.0 == "False")
    })
    .await;
    let mut narrow = mcpserver("weather-mcp", "weather", 9000, json!({}));
    narrow["spec"]["selector"]["matchLabels"]["tier"] = json!("mcp");
    apply::<MCPServer>(&client, &ns, narrow).await;
    let s = server_with(&servers, "weather-mcp", "weather-mcp: SelectorOverlap", |s| {
        condition(s, "SelectorOverlap").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition(&s, "SelectorOverlap").expect("condition");
    assert_eq!(reason, "SelectorsOverlap");
    assert!(
        message.contains("every pod spec.selector selects is also selected by MCPServer \"weather\""),
        "{message}"
    );
    let s = server_with(&servers, "weather", "weather: SelectorOverlap too", |s| {
        condition(s, "SelectorOverlap").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert!(
        condition(&s, "SelectorOverlap")
            .is_some_and(|c| c.2.contains("selects every pod of MCPServer \"weather-mcp\"")),
        "{:?}",
        s.status
    );
    // The narrower one goes: the other is told the overlap is over.
    servers
        .delete("weather-mcp", &DeleteParams::default())
        .await
        .expect("delete");
    server_with(&servers, "weather", "weather: NoOverlap again", |s| {
        condition(s, "SelectorOverlap").is_some_and(|c| c.0 == "False")
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_explain_a_catch_all_rule_a_port_mismatch_and_a_service_bypass() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-conds").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    Scenario::new(&client, &ns)
        .service(service(
            "weather",
            "weather",
            json!([
                { "name": "http", "port": 80, "targetPort": 8000 },
                { "name": "direct", "port": 9000, "targetPort": 9000 }
            ]),
        ))
        .ingress(ingress(
            "web",
            json!([
                rule(None, "weather", 80),
                rule(Some("wrong-port.example.com"), "weather", 9000)
            ]),
            &[],
        ))
        .server(mcpserver(
            "weather",
            "weather",
            8000,
            json!({ "hosts": ["extra.example.com:8443"] }),
        ))
        .apply()
        .await;

    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "weather", "all conditions", |s| {
        condition(s, "CatchAllIngressRule").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (status, _, message) = condition(&server, "CatchAllIngressRule").expect("condition");
    assert_eq!(status, "True");
    assert!(
        message.contains(&format!("Ingress {ns}/web")) && message.contains("no host"),
        "{message}"
    );
    let (status, _, message) = condition(&server, "IngressBackendPortMismatch").expect("condition");
    assert_eq!(status, "True");
    assert!(message.contains("9000") && message.contains("8000"), "{message}");
    let (status, _, message) = condition(&server, "GuardBypass").expect("condition");
    assert_eq!(status, "True");
    assert!(message.contains(&format!("Service {ns}/weather")), "{message}");
    assert_eq!(condition(&server, "Ready").map(|c| c.0), Some("True"));

    let cfg = guard_config(&client, &ns, "weather").await.expect("ConfigMap");
    assert!(
        !cfg.allowed_hosts
            .iter()
            .any(|h| h == "*" || h == "wrong-port.example.com"),
        "{cfg:?}"
    );
    assert!(cfg.allowed_hosts.contains(&"extra.example.com:8443".to_string()));
    let entry = server.status.as_ref().and_then(|s| {
        s.allowed_hosts
            .iter()
            .find(|e| e.value == "extra.example.com:8443")
    });
    assert_eq!(
        entry.map(|e| e.sources.clone()),
        Some(vec!["MCPServer spec.hosts".to_string()])
    );

    // Fix the Ingress and the Service: the conditions clear.
    Scenario::new(&client, &ns)
        .service(service(
            "weather",
            "weather",
            json!([{ "name": "http", "port": 80, "targetPort": 8000 }]),
        ))
        .ingress(ingress(
            "web",
            json!([rule(Some("mcp.example.com"), "weather", 80)]),
            &[],
        ))
        .apply()
        .await;
    let server = server_with(&servers, "weather", "conditions to clear", |s| {
        ["CatchAllIngressRule", "IngressBackendPortMismatch", "GuardBypass"]
            .iter()
            .all(|t| condition(s, t).is_some_and(|c| c.0 == "False"))
    })
    .await;
    assert!(
        server
            .status
            .expect("status")
            .allowed_hosts
            .iter()
            .any(|e| e.value == "mcp.example.com")
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unguarded_pod_is_a_guard_bypass_and_sets_the_gauge() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-bypass").await;
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    weather_behind_an_ingress(&client, &ns, "mcp.example.com", false).await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    server_with(&servers, "weather", "GuardBypass=False before the pod", |s| {
        condition(s, "GuardBypass").is_some_and(|c| c.0 == "False")
    })
    .await;

    // A pod the MCPServer selects that carries no guard (no webhook here): GuardBypass names it.
    apply::<Pod>(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "weather-unguarded", "labels": { "app": "weather" } },
            "spec": { "containers": [{ "name": "server", "image": "example.invalid/weather:1",
                                       "ports": [{ "name": "http", "containerPort": 8000 }] }] }
        }),
    )
    .await;
    let server = server_with(&servers, "weather", "GuardBypass for the unguarded pod", |s| {
        condition(s, "GuardBypass").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition(&server, "GuardBypass").expect("GuardBypass");
    assert_eq!(reason, "GuardBypassed");
    assert!(
        message.contains("weather-unguarded") && message.contains("restart"),
        "{message}"
    );
    // The gauge the MCPGuardMissingFromPods alert reads follows the condition.
    let bypass_labels = mcp_guard_operator::metrics::ServerLabels {
        namespace: ns.clone(),
        name: "weather".into(),
    };
    let bypassed = || op.metrics.guard_bypassed.get_or_create(&bypass_labels).get();
    eventually("guard_bypassed 1", SETUP, || async {
        (bypassed() == 1).then_some(())
    })
    .await;
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(
            "weather-unguarded",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("delete pod");
    server_with(&servers, "weather", "GuardBypass to clear", |s| {
        condition(s, "GuardBypass").is_some_and(|c| c.0 == "False")
    })
    .await;
    eventually("guard_bypassed 0", SETUP, || async {
        (bypassed() == 0).then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_update_allowlists() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-policy").await;
    let policy_name = format!("{ns}-policy");
    let op = Operator::start(client.clone(), &ns, None, Some(false));

    apply_cluster::<MCPGuardPolicy>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
            "metadata": { "name": policy_name },
            "spec": { "allowedHosts": ["policy.example.com"], "allowedOrigins": ["https://portal.example.com"],
                      "allowServiceDNSNames": false, "limits": { "maxRequestBodyBytes": 65536 },
                      "rateLimits": { "perClient": { "requestsPerMinute": 600 }, "maxStreamsPerClient": 8 },
                      "trustedProxies": ["10.0.5.0/24"] }
        }),
    )
    .await;
    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 8000 }])),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver(
            "weather",
            "weather",
            8000,
            json!({ "policyRef": policy_name, "trustedProxies": ["192.0.2.7"],
                    "rateLimits": { "perTool": { "render": { "requestsPerMinute": 6, "burst": 2 } },
                                    "maxStreamsPerClient": 2 } }),
        ),
    )
    .await;

    let cfg = wait_config(&client, &ns, "weather", SETUP, "the policy's hosts", |c| {
        c.allowed_hosts == vec!["policy.example.com".to_string()]
    })
    .await;
    assert_eq!(
        cfg.allowed_origins,
        vec!["https://portal.example.com".to_string()]
    );
    assert_eq!(cfg.limits.max_request_body_bytes, Some(65536));
    // Rate limits: the server's settings over the policy's, per setting; trusted proxies add up.
    let limits = &cfg.limits;
    assert_eq!(
        limits.per_client.map(|r| r.requests_per_minute),
        Some(600),
        "{cfg:?}"
    );
    assert_eq!(limits.per_tool["render"].burst(), 2, "{cfg:?}");
    assert_eq!(limits.max_streams_per_client, Some(2), "{cfg:?}");
    assert_eq!(cfg.trusted_proxies, ["10.0.5.0/24", "192.0.2.7"]);

    // Edit the policy: hosts, mode and Service DNS names follow.
    let started = Instant::now();
    apply_cluster::<MCPGuardPolicy>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
            "metadata": { "name": policy_name },
            "spec": { "allowedHosts": ["other.example.com"], "defaultMode": "audit", "allowServiceDNSNames": true }
        }),
    )
    .await;
    let cfg = wait_config(&client, &ns, "weather", PROPAGATION, "the edited policy", |c| {
        c.allowed_hosts.contains(&"other.example.com".to_string())
    })
    .await;
    println!("policy edit → ConfigMap update: {:?}", started.elapsed());
    assert_eq!(cfg.mode, Mode::Audit);
    assert!(!cfg.allowed_hosts.contains(&"policy.example.com".to_string()));
    assert!(
        cfg.allowed_hosts.contains(&format!("weather.{ns}.svc")),
        "{cfg:?}"
    );

    // Delete the referenced policy: not Ready, with the reason.
    Api::<MCPGuardPolicy>::all(client.clone())
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("delete");
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    server_with(&servers, "weather", "Ready=False/PolicyNotFound", |s| {
        condition(s, "Ready").is_some_and(|c| c.1 == "PolicyNotFound")
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_per_mcpserver_follows_the_layout_and_the_policy() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-netpol").await;
    let policy_name = format!("{ns}-policy");
    let op = Operator::start(client.clone(), &ns, None, Some(false));
    let policy = |enabled: bool| {
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
            "metadata": { "name": policy_name },
            "spec": { "networkPolicy": { "enabled": enabled,
                      "adminIngressFrom": [{ "namespaceSelector": { "matchLabels": { "team": "monitoring" } } }] } }
        })
    };
    apply_cluster::<MCPGuardPolicy>(&client, policy(true)).await;
    // A Service whose numeric targetPort is still the app's own port: unguarded in the GuardPort layout.
    apply::<Service>(
        &client,
        &ns,
        service("unifi", "unifi", json!([{ "port": 80, "targetPort": 8080 }])),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver(
            "unifi",
            "unifi",
            8080,
            json!({ "policyRef": policy_name, "hosts": ["unifi.example.com"],
                    "traffic": { "layout": "GuardPort" },
                    "network": { "ingressFrom": [{ "podSelector": { "matchLabels": { "role": "client" } } }],
                                 "additionalPorts": [{ "port": 9090, "protocol": "TCP" }] } }),
        ),
    )
    .await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "unifi", "NetworkPolicy=True", |s| {
        condition(s, "NetworkPolicy").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition(&server, "NetworkPolicy").expect("condition");
    assert_eq!(reason, "Written");
    assert!(
        message.contains("own port 8080 is closed to other pods"),
        "{message}"
    );
    assert!(
        message.contains("network plugin enforces NetworkPolicies"),
        "{message}"
    );
    assert_eq!(
        server.status.as_ref().and_then(|s| s.network_policy.as_deref()),
        Some("unifi-mcp-guard")
    );
    let (status, _, bypass) = condition(&server, "GuardBypass").expect("GuardBypass");
    assert_eq!(status, "True");
    assert!(bypass.contains("set its targetPort to 15080"), "{bypass}");

    let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let np = nps.get("unifi-mcp-guard").await.expect("NetworkPolicy");
    assert_eq!(rule_ports(&np), vec![vec!["15080"], vec!["15081"], vec!["9090"]]);
    let owner = np.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.first().map(|o| o.uid.clone()), server.metadata.uid.clone());
    let spec = np.spec.clone().expect("spec");
    assert_eq!(spec.pod_selector, Some(server.spec.selector.clone()));
    let rules = spec.ingress.clone().unwrap_or_default();
    let peer = |i: usize| serde_json::to_value(&rules[i].from).expect("json");
    assert_eq!(
        peer(0),
        json!([{ "podSelector": { "matchLabels": { "role": "client" } } }])
    );
    assert_eq!(
        peer(1),
        json!([{ "namespaceSelector": { "matchLabels": { "team": "monitoring" } } }])
    );
    assert_eq!(peer(2), json!(null));

    // Deleted by hand: written again (the operator owns it).
    nps.delete("unifi-mcp-guard", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the NetworkPolicy written again", PROPAGATION, || async {
        nps.get_opt("unifi-mcp-guard")
            .await
            .expect("get")
            .filter(|np| np.metadata.deletion_timestamp.is_none())
    })
    .await;

    // Switched off in the policy: removed, and the status says so.
    apply_cluster::<MCPGuardPolicy>(&client, policy(false)).await;
    let server = server_with(&servers, "unifi", "NetworkPolicy=False/Disabled", |s| {
        condition(s, "NetworkPolicy").is_some_and(|c| c.1 == "Disabled")
    })
    .await;
    assert_eq!(
        server.status.as_ref().and_then(|s| s.network_policy.clone()),
        None
    );
    eventually("the NetworkPolicy removed", PROPAGATION, || async {
        nps.get_opt("unifi-mcp-guard")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    Api::<MCPGuardPolicy>::all(client.clone())
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("delete policy");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_count_once_the_gateway_api_appears() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-gateway").await;
    // Discovery (every second in tests): started before the Gateway API CRDs exist. The only test of this
    // binary that installs them, so that this stays true whatever order the tests run in.
    let op = Operator::start(client.clone(), &ns, None, None);
    Scenario::new(&client, &ns)
        .service(service(
            "weather",
            "weather",
            json!([{ "port": 80, "targetPort": 8000 }]),
        ))
        .server(mcpserver("weather", "weather", 8000, json!({})))
        .apply()
        .await;
    wait_config(&client, &ns, "weather", SETUP, "the first ConfigMap", |c| {
        !c.allowed_hosts.is_empty()
    })
    .await;

    // The real CRDs of the pinned Gateway API release (their schemas and CEL rules apply to what follows).
    if let Err(e) = cluster.apply_gateway_api_crds().await {
        panic!("install the Gateway API CRDs: {e:#}");
    }
    apply::<Gateway>(
        &client,
        &ns,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": { "name": "gw" },
            "spec": { "gatewayClassName": "test", "listeners": [
                { "name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.gw.example.com",
                  "tls": { "certificateRefs": [{ "name": "gw-cert" }] } }
            ] }
        }),
    )
    .await;
    apply::<HTTPRoute>(
        &client,
        &ns,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "mcp" },
            "spec": {
                "parentRefs": [{ "name": "gw" }],
                "hostnames": ["mcp.gw.example.com", "*.apps.gw.example.com", "elsewhere.example.org"],
                "rules": [{
                    "backendRefs": [{ "name": "weather", "port": 80 }],
                    "filters": [{ "type": "URLRewrite", "urlRewrite": { "hostname": "weather.internal" } }]
                }]
            }
        }),
    )
    .await;
    let cfg = config_allowing(&client, &ns, "weather", "mcp.gw.example.com", SETUP).await;
    assert!(
        cfg.allowed_hosts.contains(&"**.apps.gw.example.com".to_string()),
        "{cfg:?}"
    );
    assert!(
        !cfg.allowed_hosts.contains(&"elsewhere.example.org".to_string()),
        "outside the listener: {cfg:?}"
    );
    assert!(
        cfg.allowed_origins
            .contains(&"https://mcp.gw.example.com".to_string()),
        "{cfg:?}"
    );
    assert!(
        cfg.allowed_hosts.contains(&"weather.internal".to_string()),
        "the URLRewrite hostname is the Host the server sees: {cfg:?}"
    );
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "weather", "the dropped hostname reported", |s| {
        condition(s, "Degraded").is_some_and(|c| c.2.contains("were dropped: elsewhere.example.org"))
    })
    .await;
    assert_eq!(condition(&server, "Degraded").map(|c| c.0), Some("True"));
    op.stop().await;
}

async fn lease_holder(client: &kube::Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt("mcp-guard-operator")
        .await
        .expect("get Lease")?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_reconciles() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-leader").await;
    let lease = |identity: &str| LeaseSettings {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(500),
        ..LeaseSettings::new(&ns, "mcp-guard-operator", identity)
    };
    let a = Operator::start(client.clone(), &ns, Some(lease("replica-a")), Some(false));
    let first = eventually("a Lease holder", SETUP, || lease_holder(&client, &ns)).await;
    let b = Operator::start(client.clone(), &ns, Some(lease("replica-b")), Some(false));
    assert_eq!(first, "replica-a");

    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 8000 }])),
    )
    .await;
    apply::<MCPServer>(&client, &ns, mcpserver("weather", "weather", 8000, json!({}))).await;
    wait_config(&client, &ns, "weather", SETUP, "the leader's ConfigMap", |c| {
        !c.allowed_hosts.is_empty()
    })
    .await;
    // Give the standby every chance to (wrongly) reconcile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.reconciles() > 0, "the leader reconciles");
    assert_eq!(b.reconciles(), 0, "the standby does not reconcile");
    assert_eq!(a.metrics.leader.get(), 1);
    assert_eq!(b.metrics.leader.get(), 0);
    assert!(b.readiness.is_ready(), "a standby replica is ready");
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("replica-a"));

    // The leader goes away (graceful: it releases the Lease); the standby takes over and reconciles changes.
    let stopped = Instant::now();
    a.stop().await;
    eventually("replica-b to take the Lease", SETUP, || async {
        (lease_holder(&client, &ns).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    println!("failover after graceful stop: {:?}", stopped.elapsed());
    apply::<Ingress>(
        &client,
        &ns,
        ingress(
            "web",
            json!([rule(Some("failover.example.com"), "weather", 8000)]),
            &[],
        ),
    )
    .await;
    wait_config(&client, &ns, "weather", SETUP, "the new leader's update", |c| {
        c.allowed_hosts.contains(&"failover.example.com".to_string())
    })
    .await;
    // The ConfigMap is written before the reconcile finishes (status, Events, then metrics).
    eventually("the new leader's reconciles counted", SETUP, || async {
        (b.reconciles() > 0).then_some(())
    })
    .await;
    assert_eq!(b.metrics.leader.get(), 1);
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("mcp-guard-operator")
        .await
        .expect("Lease");
    assert!(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_schema_rejects_invalid_specs() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("op-schema").await;
    // Untyped, so that values the Rust types would refuse reach the API server.
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ApiResource::erase::<MCPServer>(&()));
    // (spec, text expected in the API server's error)
    let cases = [
        (
            json!({ "selector": {}, "port": 8000 }),
            "an empty selector selects every pod",
        ),
        (
            json!({ "selector": { "matchLabels": {} }, "port": 8000 }),
            "an empty selector selects every pod",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 0 }),
            "spec.port",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 70000 }),
            "spec.port",
        ),
        // The schema refuses what is certainly wrong, saying the fix; the rest of the Host/Origin syntax is the
        // validating webhook's (the guard's parser), so no regex ever reaches the user.
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80, "hosts": ["ok.example.com", "*"] }),
            "spec.hosts[1]: Invalid value: \"string\": a bare * would allow every host",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80, "hosts": ["https://a.example.com"] }),
            "spec.hosts[0]: Invalid value: \"string\": a host has no scheme: write mcp.example.com",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80, "origins": ["example.com"] }),
            "spec.origins[0]: Invalid value: \"string\": an origin needs a scheme",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80, "mode": "block" }),
            "spec.mode: Invalid value: \"string\": must be enforce (refuse requests whose Host or Origin is not \
             allowed) or audit (forward them and log); got block",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80, "ingresses": ["Bad_Name"] }),
            "spec.ingresses[0]",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80,
                    "rateLimits": { "perTool": { "render": { "requestsPerMinute": 0 } } } }),
            "spec.rateLimits.perTool[render].requestsPerMinute: Invalid value: \"integer\": requestsPerMinute must be at least 1",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80,
                    "rateLimits": { "maxStreamsPerClient": 0 } }),
            "maxStreamsPerClient must be at least 1",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80,
                    "rateLimits": { "perMethod": { "": { "requestsPerMinute": 1 } } } }),
            "a method or tool name must be 1-256 characters",
        ),
        (
            json!({ "selector": { "matchLabels": { "app": "x" } }, "port": 80, "trustedProxies": ["proxy.internal"] }),
            "spec.trustedProxies[0]: Invalid value: \"string\": must be a CIDR such as 10.0.0.0/8",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": format!("bad-{i}") }, "spec": spec
        }))
        .expect("object");
        let err = api
            .create(&Default::default(), &obj)
            .await
            .expect_err(&format!("case {i} must be rejected"));
        let err = err.to_string();
        assert!(err.contains(want), "case {i}: {want:?} not in {err}");
        // Object names keep the API's own DNS-name pattern, as Kubernetes' own fields do.
        if !want.starts_with("spec.ingresses") {
            for noise in [
                "should match",
                "supported values",
                "some validation rules were not checked",
            ] {
                assert!(!err.contains(noise), "case {i}: {noise:?} in {err}");
            }
        }
    }
    let ok: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer", "metadata": { "name": "good" },
        "spec": { "selector": { "matchExpressions": [{ "key": "app", "operator": "In", "values": ["x"] }] },
                  "port": 65535, "hosts": ["*.a.example.com", "**.b.example.com:*", "[::1]:8080", "10.0.0.1"],
                  "origins": ["https://a.example.com", "null", "chrome-extension://*"], "mode": "audit",
                  "policyRef": "strict", "trustedProxies": ["10.0.0.0/8", "192.0.2.7", "fd00::/8"],
                  "rateLimits": { "perClient": { "requestsPerMinute": 600, "burst": 100 },
                                  "perMethod": { "tools/call": { "requestsPerMinute": 60 } },
                                  "perTool": { "render": { "requestsPerMinute": 6, "burst": 2 } },
                                  "maxConcurrentRequestsPerClient": 16, "maxStreamsPerClient": 4 } }
    }))
    .expect("object");
    api.create(&Default::default(), &ok)
        .await
        .expect("a valid MCPServer is accepted");
}
