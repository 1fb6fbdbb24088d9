use k8s_openapi::api::core::v1::{Pod, Service};
use mcp_guard_operator::crd::MCPServer;
use serde_json::json;

use super::*;

const NS: &str = "team";

fn svc(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({ "metadata": { "name": name, "namespace": NS }, "spec": spec }))
        .expect("Service")
}

/// A Service selecting `app: <app>`, port 80 → `targetPort`, with this port name and appProtocol.
fn app_svc(
    name: &str,
    app: &str,
    port_name: Option<&str>,
    proto: Option<&str>,
    target: serde_json::Value,
) -> Service {
    svc(
        name,
        json!({ "selector": { "app": app },
                "ports": [{ "port": 80, "targetPort": target, "name": port_name, "appProtocol": proto }] }),
    )
}

/// A pod of Deployment `app` (through its ReplicaSet), declaring container port `mcp` 8000, with the guard of
/// `guarded_by` when given.
fn pod(name: &str, app: &str, guarded_by: Option<&str>) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": NS,
            "labels": { "app": app, "pod-template-hash": "5d9c7b" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-5d9c7b"),
                                  "uid": "rs-uid", "controller": true }]
        },
        "spec": { "containers": [{ "name": "server", "image": "example.invalid/server:1",
                                   "ports": [{ "name": "mcp", "containerPort": 8000 }] }] }
    }))
    .expect("Pod");
    if let Some(server) = guarded_by {
        let spec = p.spec.as_mut().expect("spec");
        spec.init_containers = Some(vec![
            serde_json::from_value(
                json!({ "name": "mcp-guard", "image": "example.invalid/guard:1", "restartPolicy": "Always" }),
            )
            .expect("container"),
        ]);
        spec.volumes = Some(vec![
            serde_json::from_value(
                json!({ "name": "mcp-guard-config", "configMap": { "name": format!("{server}-mcp-guard") } }),
            )
            .expect("volume"),
        ]);
        p.metadata.annotations = Some(
            [(
                "mcpguard.dev/injected".to_string(),
                json!({ "version": 1, "mcpServer": server, "image": "example.invalid/guard:1",
                        "initContainers": ["mcp-guard"], "containers": [], "volumes": ["mcp-guard-config"] })
                .to_string(),
            )]
            .into(),
        );
    }
    p
}

fn ours(name: &str, app: &str) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "name": name, "namespace": NS },
        "spec": { "selector": { "matchLabels": { "app": app } }, "port": 8000 }
    }))
    .expect("MCPServer")
}

fn foreign(kind: &str, name: &str, service: &str, referable: bool) -> Foreign {
    Foreign {
        kind: kind.into(),
        namespace: NS.into(),
        name: name.into(),
        uid: Some(format!("{name}-uid")),
        service: service.into(),
        referable,
    }
}

/// The fleet of the node test, plus the other operators' servers.
fn fleet() -> Cluster {
    Cluster {
        services: vec![
            app_svc("guarded", "guarded", Some("mcp"), None, json!("mcp")),
            app_svc("open", "open", None, Some("mcp"), json!(8000)),
            app_svc("restarted", "restarted", Some("mcp-http"), None, json!("mcp")),
            app_svc("web", "web", Some("http"), Some("http"), json!(8080)),
            svc(
                "their",
                json!({ "selector": { "mcp-server": "their" }, "ports": [{ "port": 8080, "name": "http" }] }),
            ),
            svc(
                "mcp-hive-proxy",
                json!({ "selector": { "app": "hive" }, "ports": [{ "port": 8080, "name": "http" }] }),
            ),
            svc("owned", json!({ "ports": [{ "port": 3000, "name": "http" }] })),
        ],
        pods: vec![
            pod("guarded-1", "guarded", Some("guarded")),
            pod("open-1", "open", None),
            pod("restarted-1", "restarted", Some("restarted")),
            pod("restarted-2", "restarted", None),
            pod("web-1", "web", None),
        ],
        ours: vec![ours("guarded", "guarded"), ours("restarted", "restarted")],
        foreign: vec![
            foreign("MCPServer.mcp.x-k8s.io", "their", "their", true),
            foreign("MCPServer.toolhive.stacklok.dev", "hive", "mcp-hive-proxy", false),
            Foreign {
                uid: Some("owner-uid".into()),
                ..foreign("MCPServer.kagent.dev", "kmcp", "kmcp", false)
            },
            foreign("MCPServer.kagent.dev", "pending", "pending", false),
        ],
        not_opted_in: Some(vec![NS.into()]),
    }
}

fn with_owner(mut s: Service, uid: &str) -> Service {
    s.metadata.owner_references = Some(vec![
        serde_json::from_value(
            json!({ "apiVersion": "kagent.dev/v1alpha1", "kind": "MCPServer", "name": "kmcp", "uid": uid }),
        )
        .expect("owner"),
    ]);
    s
}

fn by_server<'a>(found: &'a [Found], server: &str) -> &'a Found {
    found.iter().find(|f| f.server == server).unwrap_or_else(|| {
        panic!(
            "{server} not found in {:?}",
            found.iter().map(|f| &f.server).collect::<Vec<_>>()
        )
    })
}

#[test]
fn finds_mcp_services_and_other_operators_servers_but_not_web_services() {
    let mut cluster = fleet();
    cluster.services[6] = with_owner(cluster.services[6].clone(), "owner-uid");
    let found = discover(&cluster);
    let servers: Vec<&str> = found.iter().map(|f| f.server.as_str()).collect();
    assert_eq!(
        servers,
        [
            "MCPServer.kagent.dev/pending",
            "service/guarded",
            "service/mcp-hive-proxy",
            "service/open",
            "service/owned",
            "service/restarted",
            "service/their",
        ]
    );
    let why = |s: &str| {
        by_server(&found, s)
            .ports
            .iter()
            .map(|p| p.why.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(why("service/open"), ["appProtocol mcp"]);
    assert_eq!(why("service/restarted"), ["port name mcp-http"]);
    assert_eq!(why("service/their"), ["MCPServer.mcp.x-k8s.io/their"]);
    assert_eq!(
        why("service/mcp-hive-proxy"),
        ["MCPServer.toolhive.stacklok.dev/hive"]
    );
    assert_eq!(
        why("service/owned"),
        ["MCPServer.kagent.dev/kmcp"],
        "found by its owner reference"
    );
    assert_eq!(
        by_server(&found, "service/owned").deployed_by.as_deref(),
        Some("MCPServer.kagent.dev/kmcp")
    );
}

#[test]
fn a_service_an_mcpserver_selects_is_found_whatever_its_port_is_called() {
    let mut cluster = fleet();
    cluster.ours.push(ours("web", "web"));
    let found = discover(&cluster);
    let web = by_server(&found, "service/web");
    assert_eq!(web.ports[0].why, "selected by MCPServer web");
    assert_eq!(
        web.guard,
        Guard::NotInjected {
            mcp_server: "web".into(),
            pods: vec!["web-1".into()]
        }
    );
}

#[test]
fn guarded_only_when_every_selected_pod_carries_that_servers_guard() {
    let found = discover(&fleet());
    assert_eq!(
        by_server(&found, "service/guarded").guard,
        Guard::Guarded {
            mcp_server: "guarded".into()
        }
    );
    assert_eq!(by_server(&found, "service/guarded").fix, None);
    let restarted = by_server(&found, "service/restarted");
    assert_eq!(
        restarted.guard,
        Guard::NotInjected {
            mcp_server: "restarted".into(),
            pods: vec!["restarted-2".into()]
        }
    );
    assert_eq!(
        restarted.fix.as_ref().map(|f| f.commands.clone()),
        Some(vec![
            "kubectl label namespace team mcpguard.dev/injection=enabled".to_string(),
            "kubectl rollout restart deployment/restarted -n team".to_string(),
        ])
    );
    // Another MCPServer's guard is not this one's.
    let mut cluster = fleet();
    cluster.pods[0] = pod("guarded-1", "guarded", Some("someone-else"));
    assert!(
        !by_server(&discover(&cluster), "service/guarded")
            .guard
            .is_guarded()
    );
    // No pod: nothing runs unguarded.
    cluster.pods.clear();
    let found = discover(&cluster);
    let guard = &by_server(&found, "service/guarded").guard;
    assert!(guard.is_guarded(), "{guard:?}");
}

#[test]
fn the_fix_for_an_unguarded_server_is_an_mcpserver_in_the_guard_port_layout() {
    let mut cluster = fleet();
    cluster.not_opted_in = Some(Vec::new());
    let found = discover(&cluster);
    let open = by_server(&found, "service/open").fix.clone().expect("a fix");
    assert_eq!(
        open.object,
        Some(json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": "open", "namespace": NS },
            "spec": { "selector": { "matchLabels": { "app": "open" } }, "port": 8000,
                      "traffic": { "layout": "GuardPort" } }
        }))
    );
    assert_eq!(
        open.commands,
        [
            "kubectl apply -f - <<'EOF' (the MCPServer below)",
            "kubectl rollout restart deployment/open -n team"
        ],
        "the namespace is opted in already"
    );
    // A named targetPort resolves through the pods' container ports.
    let restarted_like = app_svc("named", "open", None, Some("mcp"), json!("mcp"));
    cluster.services.push(restarted_like);
    let named = by_server(&discover(&cluster), "service/named")
        .fix
        .clone()
        .expect("a fix");
    assert_eq!(named.object.expect("object")["spec"]["port"], json!(8000));
    // The SIG's server is referenced, not re-selected.
    let their = by_server(&found, "service/their").fix.clone().expect("a fix");
    assert_eq!(
        their.object.expect("object")["spec"],
        json!({ "serverRef": { "apiGroup": "mcp.x-k8s.io", "kind": "MCPServer", "name": "their" } })
    );
}

#[test]
fn a_selectorless_service_cannot_be_guarded_by_its_selector() {
    let mut cluster = fleet();
    cluster.services.push(svc(
        "external",
        json!({ "ports": [{ "port": 80, "name": "mcp" }] }),
    ));
    let fix = by_server(&discover(&cluster), "service/external")
        .fix
        .clone()
        .expect("a fix");
    assert_eq!(fix.object, None);
    assert!(
        fix.summary.starts_with("none: the Service has no selector"),
        "{}",
        fix.summary
    );
}

#[test]
fn a_server_object_without_its_service_is_reported_without_ports() {
    let found = discover(&fleet());
    let pending = by_server(&found, "MCPServer.kagent.dev/pending");
    assert!(pending.ports.is_empty());
    assert_eq!(pending.guard, Guard::Unguarded);
}

#[test]
fn classify_reads_refusals_answers_and_what_it_cannot_tell() {
    let cases: &[(u16, Option<u16>, Answer)] = &[
        (200, None, Answer::Answered { status: 200 }),
        (202, None, Answer::Answered { status: 202 }),
        (421, None, Answer::Refused { status: 421 }),
        (403, None, Answer::Refused { status: 403 }),
        (401, None, Answer::Refused { status: 401 }),
        // "missing session" to the forged Host and to the Service's own name alike: the Host changed nothing.
        (400, Some(400), Answer::Answered { status: 400 }),
        (
            400,
            Some(200),
            Answer::Unknown {
                why: "HTTP 400".into(),
            },
        ),
        (
            400,
            None,
            Answer::Unknown {
                why: "HTTP 400".into(),
            },
        ),
        (
            404,
            Some(404),
            Answer::Unknown {
                why: "HTTP 404: is the MCP endpoint at this path?".into(),
            },
        ),
        (
            503,
            None,
            Answer::Unknown {
                why: "HTTP 503: no ready endpoint, or the API server cannot reach the pod".into(),
            },
        ),
        (
            307,
            None,
            Answer::Unknown {
                why: "HTTP 307: a redirect".into(),
            },
        ),
    ];
    for (status, baseline, want) in cases {
        assert_eq!(&classify(*status, *baseline), want, "{status} {baseline:?}");
    }
}

fn probed(mut found: Vec<Found>) -> Vec<Found> {
    for f in &mut found {
        for p in &mut f.ports {
            p.probe = Some(match f.server.as_str() {
                "service/guarded" => Probe {
                    forged_host: Answer::Refused { status: 421 },
                    forged_origin: Answer::Refused { status: 403 },
                },
                "service/open" => Probe {
                    forged_host: Answer::Answered { status: 200 },
                    forged_origin: Answer::Answered { status: 200 },
                },
                _ => Probe {
                    forged_host: Answer::Unknown {
                        why: "no answer within 5s".into(),
                    },
                    forged_origin: Answer::Answered { status: 400 },
                },
            });
        }
    }
    found
}

#[test]
fn the_table_has_a_row_per_port_and_the_objects_to_apply_below() {
    let mut cluster = fleet();
    cluster.foreign.truncate(2);
    cluster.services.truncate(5);
    let text = table(&probed(discover(&cluster)), true);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[0];
    for column in [
        "SERVER",
        "NAMESPACE",
        "GUARDED BY",
        "FORGED HOST",
        "FORGED ORIGIN",
        "TO GUARD IT",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = |server: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("no row {server} in\n{text}"))
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("service/guarded:mcp"),
        [
            "service/guarded:mcp",
            "team",
            "MCPServer guarded",
            "no (421)",
            "no (403)",
            "-"
        ]
    );
    assert_eq!(
        row("service/open:80"),
        [
            "service/open:80",
            "team",
            "none",
            "yes",
            "yes",
            "MCPServer open [1]"
        ]
    );
    assert_eq!(
        row("service/restarted:mcp-http"),
        [
            "service/restarted:mcp-http",
            "team",
            "none (1 pod(s) without MCPServer restarted's guard)",
            "unknown (no answer within 5s)",
            "yes (400, as to its own name)",
            "kubectl label namespace team mcpguard.dev/injection=enabled; kubectl rollout restart deployment/restarted -n team"
        ]
    );
    assert!(!text.contains("service/web"), "{text}");
    assert!(text.contains("[1] To guard team/service/open:"), "{text}");
    assert!(text.contains("[2] To guard team/service/their:"), "{text}");
    assert!(
        text.contains("      serverRef:"),
        "the object is printed as YAML:\n{text}"
    );
    // Every row has as many columns as the header starts: the columns line up.
    let starts = |l: &str| l.find("team");
    assert!(
        lines[1..6].iter().all(|l| starts(l) == header.find("NAMESPACE")),
        "{text}"
    );
}

#[test]
fn without_probe_the_table_says_how_to_probe() {
    let text = table(&discover(&fleet()), false);
    assert!(text.contains("(--probe asks each port"), "{text}");
    assert_eq!(table(&[], false), "No MCP servers found.\n");
}

#[test]
fn json_carries_every_finding() {
    let found = probed(discover(&fleet()));
    let value: serde_json::Value = serde_json::from_str(&json(&found)).expect("valid JSON");
    let servers = value["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), found.len());
    let open = servers
        .iter()
        .find(|s| s["server"] == "service/open")
        .expect("open");
    assert_eq!(open["guard"], json!({ "state": "unguarded" }));
    assert_eq!(
        open["ports"][0]["probe"]["forgedHost"],
        json!({ "answer": "answered", "status": 200 })
    );
    assert_eq!(open["ports"][0]["path"], "/mcp");
    assert_eq!(open["fix"]["object"]["kind"], "MCPServer");
    let guarded = servers
        .iter()
        .find(|s| s["server"] == "service/guarded")
        .expect("guarded");
    assert_eq!(
        guarded["guard"],
        json!({ "state": "guarded", "mcpServer": "guarded" })
    );
    assert_eq!(
        guarded["ports"][0]["probe"]["forgedOrigin"],
        json!({ "answer": "refused", "status": 403 })
    );
    assert!(guarded.get("fix").is_none());
}

#[test]
fn the_probe_goes_through_the_service_proxy_with_the_services_own_name_as_baseline() {
    let t = Target {
        namespace: "team",
        service: "open",
        port: "mcp".into(),
        number: 80,
        path: "/mcp",
    };
    assert_eq!(
        t.proxy_path(),
        "/api/v1/namespaces/team/services/open:mcp/proxy/mcp"
    );
    assert_eq!(t.own_host(), "open.team.svc:80");
    assert_eq!(
        Target { path: "sse", ..t }.proxy_path(),
        "/api/v1/namespaces/team/services/open:mcp/proxy/sse"
    );
}
