//! Who may call which tool, on a real node (issue #23): the chart (`helm install --wait`, the images `make images`
//! built) guards a real MCP SDK server with four tools; its MCPServer trusts the cluster's service-account issuer
//! and has access rules: ServiceAccount `reader` may call `get_forecast` and `search`, `writer` may call
//! `delete_forecast`, nobody `admin_reset`; its audit log logs arguments with `ssn` redacted.
//!
//! Two client pods with their own ServiceAccounts and projected tokens call the server through its Service
//! (ClusterIP, with the Host of its DNS name), as in-cluster agents do. Each:
//! - sees only its tools in `tools/list`;
//! - calls its tools (answered by the server);
//! - is refused the other's tool with `403` and reason `tool_not_allowed`.
//!
//! Then the guard's audit lines, read back with `kubectl logs -c mcp-guard`, match every call field by field:
//! server, caller (service account, subject, address), HTTP method and path, JSON-RPC method, tool, id, decision,
//! reason, status, the trace context from `_meta`, the digest of the arguments as sent, and the arguments with
//! `ssn` redacted.

use std::time::Duration;

use crate::chart_common::{self, NAMESPACE, eventually_or, kubectl_or};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use kube::api::{Api, PostParams};
use mcp_guard_operator::crd::MCPServer;
use mcp_guard_operator::pod_contract::SIDECAR_NAME;
use serde_json::{Value, json};
use testkit::cluster::Cluster;

const NS: &str = "access-node";
const SERVER: &str = "weather";
const PORT: u16 = 8000;
const SERVER_IMAGE: &str = "ghcr.io/mcp-guard/example-server:0.2.0-dev";
const MANAGER: &str = "node-access";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A real MCP SDK server with four tools, on 127.0.0.1 (the guard is its only door).
const TOOLS_SERVER: &str = r#"
from mcp.server.mcpserver import MCPServer
server = MCPServer("weather")

@server.tool()
def get_forecast(city: str, ssn: str = "") -> str:
    return "sunny in " + city

@server.tool()
def search(city: str, ssn: str = "") -> str:
    return "found " + city

@server.tool()
def delete_forecast(city: str, ssn: str = "") -> str:
    return "deleted " + city

@server.tool()
def admin_reset(city: str = "", ssn: str = "") -> str:
    return "reset"

server.run("streamable-http", host="127.0.0.1", port=8000)
"#;

/// The client: an MCP session by hand with the projected token (initialize, initialized, tools/list, then each
/// tool named on the command line as `ID:NAME`), printing one `RESULT` line the test reads: the tools listed,
/// and per call its id, status, refusal reason, whether the server answered, and the SHA-256 of the arguments'
/// bytes as sent.
const CLIENT: &str = r#"
import hashlib, json, sys, time, urllib.request, urllib.error
url, host, traceparent = sys.argv[1], sys.argv[2], sys.argv[3]
calls = [(int(c.split(":")[0]), c.split(":")[1]) for c in sys.argv[4:]]
with open("/var/run/secrets/mcp/token") as f:
    bearer = f.read().strip()
def post(body, session=None):
    headers = {"Host": host, "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18", "Authorization": "Bearer " + bearer}
    if session: headers["Mcp-Session-Id"] = session
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    last = None
    for attempt in range(10):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()
        except OSError as e:
            last = repr(e)
            time.sleep(2)
    return 0, {}, last
def message(text):
    for line in text.splitlines():
        if line.startswith("data:"):
            return json.loads(line[5:])
    return json.loads(text) if text.strip() else {}
init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "agent", "version": "1"}}}
status, headers, text = post(init)
print("initialize", status, text, flush=True)
session = {k.lower(): v for k, v in headers.items()}.get("mcp-session-id")
if status != 200 or "serverInfo" not in text: sys.exit(20)
post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
status, headers, text = post({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}, session)
print("tools/list", status, text, flush=True)
if status != 200: sys.exit(20)
listed = sorted(t["name"] for t in message(text)["result"]["tools"])
results = []
for id_, name in calls:
    arguments = json.dumps({"city": "Paris", "ssn": "078-05-1120"})
    body = ('{"jsonrpc": "2.0", "id": %d, "method": "tools/call", "params": {"name": %s, "arguments": %s, '
            '"_meta": {"traceparent": %s}}}') % (id_, json.dumps(name), arguments, json.dumps(traceparent))
    status, headers, text = post(body.encode(), session)
    print("tools/call", name, status, text, flush=True)
    answer = message(text) if status in (200, 403) else {}
    results.append({
        "id": id_, "name": name, "status": status,
        "reason": ((answer.get("error") or {}).get("data") or {}).get("reason"),
        "answered": "result" in answer and not answer["result"].get("isError", False),
        "argumentsSha256": hashlib.sha256(arguments.encode()).hexdigest(),
    })
print("RESULT " + json.dumps({"listed": listed, "calls": results}), flush=True)
"#;

fn diagnose(cluster: &Cluster) -> String {
    chart_common::kubectl_outputs(
        cluster,
        &[
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
            &["-n", NS, "get", "mcpservers.mcpguard.dev", "-o", "yaml"][..],
            &["-n", NS, "get", "configmap", "weather-mcp-guard", "-o", "yaml"][..],
            &["-n", NAMESPACE, "logs", "deploy/mcp-guard", "--tail=40"][..],
            &[
                "-n",
                NS,
                "logs",
                "deploy/weather",
                "-c",
                SIDECAR_NAME,
                "--tail=60",
            ][..],
        ],
    )
}

async fn eventually<T, F, Fut>(cluster: &Cluster, what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    eventually_or(what, timeout, || diagnose(cluster), f).await
}

async fn apply<K: chart_common::Namespaced>(client: &kube::Client, value: Value) -> K {
    chart_common::apply_in(client, NS, MANAGER, &value).await
}

/// A client pod of ServiceAccount `account` with a projected token for `audience`, running [`CLIENT`].
fn client_pod(account: &str, audience: &str, args: &[&str]) -> Value {
    chart_common::python_pod(
        account,
        account,
        SERVER_IMAGE,
        CLIENT,
        args,
        &[("token", audience)],
    )
}

/// The pod's exit code and IP, once it finished.
async fn finished(cluster: &Cluster, pods: &Api<Pod>, name: &str) -> (i32, String) {
    eventually(
        cluster,
        &format!("pod {name} finished"),
        Duration::from_secs(180),
        || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
            match (chart_common::exit_code(&p), ip) {
                (Some(code), Some(ip)) => Ok((code, ip)),
                _ => Err(format!("{:?}", p.status.map(|s| s.phase))),
            }
        },
    )
    .await
}

/// What a client pod reported (its `RESULT` line).
fn result_of(log: &str) -> Value {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{log}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_account_sees_and_calls_only_its_tools_and_the_audit_log_says_so() {
    let (cluster, _turn) = crate::site::shared().await;
    let client = cluster.client();
    chart_common::opted_in_namespace(&client, NS).await;
    for account in ["reader", "writer"] {
        apply::<ServiceAccount>(
            &client,
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": account } }),
        )
        .await;
    }

    // The MCPServer first (the webhook injects pods as they are created), then the Service and the server.
    apply::<MCPServer>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPServer",
            "metadata": { "name": SERVER },
            "spec": {
                "selector": { "matchLabels": { "app": SERVER } }, "port": PORT,
                "auth": { "kubernetes": true },
                "access": { "rules": [
                    { "name": "readers", "from": [{ "serviceAccount": format!("{NS}/reader") }],
                      "to": [{ "method": "tools/call", "names": ["get_forecast", "search"] }] },
                    { "name": "writers", "from": [{ "serviceAccount": format!("{NS}/writer") }],
                      "to": [{ "method": "tools/call", "names": ["delete_*"] }] }
                ]},
                "audit": { "arguments": true, "redact": ["ssn"] }
            }
        }),
    )
    .await;
    let (service, deployment) = chart_common::python_server(SERVER, PORT, SERVER_IMAGE, TOOLS_SERVER);
    let service = apply::<Service>(&client, service).await;
    apply::<Deployment>(&client, deployment).await;

    // The status lists the rules, and the resource URI an agent asks its token for.
    let fqdn = format!("{SERVER}.{NS}.svc.cluster.local:{PORT}");
    let resource = format!("http://{fqdn}/mcp");
    let servers = Api::<MCPServer>::namespaced(client.clone(), NS);
    eventually(
        cluster,
        "Authentication=True, the Service's resource URI and the rules in status",
        Duration::from_secs(120),
        || async {
            let s = servers.get(SERVER).await.map_err(|e| e.to_string())?;
            let status = s.status.clone().unwrap_or_default();
            let enabled = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Authentication" && c.status == "True");
            let listed = status
                .auth
                .as_ref()
                .is_some_and(|a| a.resource_uris.contains(&resource));
            let rules = status
                .access
                .as_ref()
                .is_some_and(|a| a.summary == "readers,writers");
            if enabled && listed && rules {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;

    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let server_pods = format!("app={SERVER}");
    eventually(
        cluster,
        "the server's pod Ready",
        Duration::from_secs(240),
        || chart_common::one_pod_ready(&pods, &server_pods),
    )
    .await;

    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    let url = format!("http://{cluster_ip}:{PORT}/mcp");
    // Each calls its own tools and the other's; ids are unique across both, so each audit line is found by id.
    let plans: [(&str, &[&str]); 2] = [
        ("reader", &["10:get_forecast", "11:search", "12:delete_forecast"]),
        ("writer", &["20:delete_forecast", "21:get_forecast"]),
    ];
    for (account, calls) in plans {
        let mut args = vec![url.as_str(), fqdn.as_str(), TRACEPARENT];
        args.extend(calls.iter().copied());
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(client_pod(account, &resource, &args)).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("create the {account} pod: {e}"));
    }

    let mut reports = Vec::new();
    for (account, _) in plans {
        let (code, ip) = finished(cluster, &pods, account).await;
        let log = kubectl_or(cluster, &["-n", NS, "logs", account], || diagnose(cluster));
        assert_eq!(code, 0, "{account}: the session failed:\n{log}");
        reports.push((account, ip, result_of(&log), log));
    }

    // What each saw: only its tools listed; its calls answered; the other's refused with the documented reason.
    let allowed = |account: &str, tool: &str| match account {
        "reader" => ["get_forecast", "search"].contains(&tool),
        _ => tool == "delete_forecast",
    };
    for (account, _, report, log) in &reports {
        let want: Vec<&str> = match *account {
            "reader" => vec!["get_forecast", "search"],
            _ => vec!["delete_forecast"],
        };
        assert_eq!(report["listed"], json!(want), "{account}'s tools/list:\n{log}");
        for call in report["calls"].as_array().unwrap() {
            let tool = call["name"].as_str().unwrap();
            if allowed(account, tool) {
                assert_eq!(call["status"], 200, "{account} calls {tool}:\n{log}");
                assert_eq!(call["answered"], true, "{account} calls {tool}:\n{log}");
            } else {
                assert_eq!(call["status"], 403, "{account} calls {tool}:\n{log}");
                assert_eq!(
                    call["reason"], "tool_not_allowed",
                    "{account} calls {tool}:\n{log}"
                );
                assert_eq!(call["answered"], false, "{account} calls {tool}:\n{log}");
            }
        }
    }

    // The guard's audit lines, read back as a log collector would: one per call, field by field.
    let want_lines: usize = reports
        .iter()
        .map(|r| r.2["calls"].as_array().unwrap().len())
        .sum();
    let lines = eventually(
        cluster,
        "an audit line for every call",
        Duration::from_secs(60),
        || async {
            let logs = kubectl_or(
                cluster,
                &["-n", NS, "logs", &format!("deploy/{SERVER}"), "-c", SIDECAR_NAME],
                || diagnose(cluster),
            );
            let lines: Vec<Value> = logs
                .lines()
                .filter(|l| l.starts_with(r#"{"logger":"mcp-guard.audit","#))
                .map(|l| serde_json::from_str(l).unwrap())
                .filter(|l: &Value| l["method"] == "tools/call")
                .collect();
            if lines.len() >= want_lines {
                Ok(lines)
            } else {
                Err(format!("{} of {want_lines} lines:\n{logs}", lines.len()))
            }
        },
    )
    .await;
    assert_eq!(lines.len(), want_lines, "{lines:#?}");
    for (account, ip, report, _) in &reports {
        for call in report["calls"].as_array().unwrap() {
            let line = lines
                .iter()
                .find(|l| l["id"] == call["id"])
                .unwrap_or_else(|| panic!("no audit line for {call}: {lines:#?}"));
            let tool = call["name"].as_str().unwrap();
            let ok = allowed(account, tool);
            let expect = [
                ("event", json!("decision")),
                ("server", json!(format!("{NS}/{SERVER}"))),
                ("httpMethod", json!("POST")),
                ("path", json!("/mcp")),
                ("method", json!("tools/call")),
                ("name", json!(tool)),
                ("decision", json!(if ok { "allowed" } else { "denied" })),
                (
                    "reason",
                    if ok {
                        Value::Null
                    } else {
                        json!("tool_not_allowed")
                    },
                ),
                ("status", json!(if ok { 200 } else { 403 })),
                ("traceparent", json!(TRACEPARENT)),
                ("argumentsSha256", call["argumentsSha256"].clone()),
                ("truncated", json!(false)),
                ("arguments", json!({ "city": "Paris", "ssn": "[redacted]" })),
            ];
            for (field, want) in expect {
                assert_eq!(line[field], want, "{account} {tool}: audit field {field}: {line}");
            }
            let caller = &line["caller"];
            assert_eq!(caller["serviceAccount"], format!("{NS}/{account}"), "{line}");
            assert_eq!(
                caller["subject"],
                format!("system:serviceaccount:{NS}:{account}"),
                "{line}"
            );
            assert!(
                caller["issuer"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("https://")),
                "{line}"
            );
            let address = caller["address"].as_str().unwrap_or_default();
            assert!(
                address.parse::<std::net::IpAddr>().is_ok(),
                "{account} ({ip}): caller.address {address:?}: {line}"
            );
            assert!(line["durationMs"].as_f64().is_some_and(|d| d >= 0.0), "{line}");
        }
    }
}
