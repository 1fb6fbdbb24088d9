//! Workload identity on a real node (issue #22): the chart (`helm install --wait`, the images `make images`
//! built) guards a server whose MCPServer trusts the cluster's own service-account issuer
//! (`auth.kubernetes: true`, `serviceAccounts: [<ns>/agent]`). The operator reads the API server's issuer and keys
//! and writes them into the guard config; the guard fetches nothing and holds no token.
//!
//! Client pods call the guarded server through its Service (ClusterIP, with the Host of its DNS name) using
//! projected ServiceAccount tokens, as an in-cluster agent does:
//! - ServiceAccount `agent`, token audience = the server's resource URI from its status: a whole MCP session, and
//!   the server's `whoami` tool sees `mcp-guard-service-account: <ns>/agent` and no `Authorization` header;
//! - the same pod's token for another audience: `401 token_audience_mismatch`; no token: `401` with
//!   `WWW-Authenticate: Bearer resource_metadata=…`;
//! - ServiceAccount `stranger`, audience right: `403 identity_not_allowed`.

use std::time::Duration;

use crate::chart_common::{self, NAMESPACE, eventually_or, kubectl_or};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use kube::api::{Api, PostParams};
use mcp_guard_operator::crd::MCPServer;
use mcp_guard_operator::pod_contract::SIDECAR_NAME;
use serde_json::{Value, json};
use testkit::cluster::Cluster;

const NS: &str = "auth-node";
const SERVER: &str = "weather";
const PORT: u16 = 8000;
const SERVER_IMAGE: &str = "ghcr.io/mcp-guard/example-server:0.2.0-dev";
const MANAGER: &str = "node-auth";
/// The client pod's exit codes (its log shows every answer).
const OK: i32 = 0;
const SESSION_FAILED: i32 = 20;
const NO_IDENTITY: i32 = 21;
const OTHER_AUDIENCE_NOT_REFUSED: i32 = 22;
const NO_TOKEN_NOT_CHALLENGED: i32 = 23;
const STRANGER_NOT_REFUSED: i32 = 24;

/// A server that reports what the guard forwarded about the caller (as `tests/mcp/py_server.py --whoami`),
/// on 127.0.0.1 (the SDK's default; the guard is its only door).
const WHOAMI_SERVER: &str = r#"
import json
from mcp.server.mcpserver import Context, MCPServer
server = MCPServer("weather")

@server.tool()
def whoami(ctx: Context) -> str:
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    identity = {k: v for k, v in headers.items() if k.startswith("mcp-guard-")}
    return json.dumps({"identity": identity, "authorization": "authorization" in headers}, sort_keys=True)

server.run("streamable-http", host="127.0.0.1", port=8000)
"#;

/// The client: an MCP session by hand (initialize, initialized, tools/call whoami) with the projected token, then
/// the refusals. `mode` is `agent` (the allowed account) or `stranger`.
const CLIENT: &str = r#"
import json, sys, time, urllib.request, urllib.error
url, host, mode = sys.argv[1], sys.argv[2], sys.argv[3]
def token(name):
    with open(f"/var/run/secrets/mcp/{name}") as f:
        return f.read().strip()
def post(body, bearer=None, session=None):
    headers = {"Host": host, "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    if bearer: headers["Authorization"] = "Bearer " + bearer
    if session: headers["Mcp-Session-Id"] = session
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
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
def result(text):
    for line in text.splitlines():
        if line.startswith("data:"):
            return json.loads(line[5:])
    return json.loads(text)
init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "agent", "version": "1"}}}
mine = token("token")
if mode == "stranger":
    status, headers, text = post(init, mine)
    print("stranger", status, text, flush=True)
    sys.exit(0 if status == 403 and "identity_not_allowed" in text else 24)
status, headers, text = post(init, mine)
print("initialize", status, text, flush=True)
session = {k.lower(): v for k, v in headers.items()}.get("mcp-session-id")
if status != 200 or "serverInfo" not in text: sys.exit(20)
post({"jsonrpc": "2.0", "method": "notifications/initialized"}, mine, session)
status, headers, text = post({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                              "params": {"name": "whoami", "arguments": {}}}, mine, session)
print("whoami", status, text, flush=True)
if status != 200: sys.exit(20)
seen = json.loads(result(text)["result"]["content"][0]["text"])
ns = sys.argv[4]
if seen["identity"].get("mcp-guard-service-account") != ns + "/agent" or seen["authorization"]: sys.exit(21)
status, headers, text = post(init, token("other-audience"))
print("other audience", status, text, flush=True)
if status != 401 or "token_audience_mismatch" not in text: sys.exit(22)
status, headers, text = post(init)
challenge = {k.lower(): v for k, v in headers.items()}.get("www-authenticate", "")
print("no token", status, challenge, text, flush=True)
if status != 401 or "resource_metadata=" not in challenge: sys.exit(23)
sys.exit(0)
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
                "--tail=40",
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

/// A client pod of ServiceAccount `account` with projected tokens for `audience` (`token`) and for another
/// audience (`other-audience`), running [`CLIENT`].
fn client_pod(name: &str, account: &str, audience: &str, args: &[&str]) -> Value {
    let tokens = [
        ("token", audience),
        ("other-audience", "https://other.example.com/mcp"),
    ];
    chart_common::python_pod(name, account, SERVER_IMAGE, CLIENT, args, &tokens)
}

async fn exit_code(cluster: &Cluster, pods: &Api<Pod>, name: &str) -> i32 {
    eventually(
        cluster,
        &format!("pod {name} finished"),
        Duration::from_secs(180),
        || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            chart_common::exit_code(&p).ok_or_else(|| format!("{:?}", p.status.map(|s| s.phase)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_call_a_guarded_server_with_their_service_account_tokens() {
    let (cluster, _turn) = crate::site::shared().await;
    let client = cluster.client();
    chart_common::opted_in_namespace(&client, NS).await;
    for account in ["agent", "stranger"] {
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
            "spec": { "selector": { "matchLabels": { "app": SERVER } }, "port": PORT,
                      "auth": { "kubernetes": true, "serviceAccounts": [format!("{NS}/agent")] } }
        }),
    )
    .await;
    let (service, deployment) = chart_common::python_server(SERVER, PORT, SERVER_IMAGE, WHOAMI_SERVER);
    let service = apply::<Service>(&client, service).await;
    apply::<Deployment>(&client, deployment).await;

    // The status names the resource URI an agent asks its token for.
    let fqdn = format!("{SERVER}.{NS}.svc.cluster.local:{PORT}");
    let resource = format!("http://{fqdn}/mcp");
    let servers = Api::<MCPServer>::namespaced(client.clone(), NS);
    eventually(
        cluster,
        "Authentication=True with the Service's resource URI",
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
                .is_some_and(|a| a.mode == "kubernetes" && a.resource_uris.contains(&resource));
            if enabled && listed {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;

    // The server's pod, injected and Ready (the guard has its keys from the config: nothing to fetch).
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
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(client_pod(
            "agent",
            "agent",
            &resource,
            &[&url, &fqdn, "agent", NS],
        ))
        .unwrap(),
    )
    .await
    .expect("create the agent pod");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(client_pod(
            "stranger",
            "stranger",
            &resource,
            &[&url, &fqdn, "stranger", NS],
        ))
        .unwrap(),
    )
    .await
    .expect("create the stranger pod");
    let agent = exit_code(cluster, &pods, "agent").await;
    let log = kubectl_or(cluster, &["-n", NS, "logs", "agent"], || diagnose(cluster));
    assert_eq!(
        agent, OK,
        "{SESSION_FAILED}: the session failed; {NO_IDENTITY}: the server did not see the service account (or saw \
         the token); {OTHER_AUDIENCE_NOT_REFUSED}: a token for another audience was let through; \
         {NO_TOKEN_NOT_CHALLENGED}: no 401 challenge without a token:\n{log}"
    );
    let stranger = exit_code(cluster, &pods, "stranger").await;
    let log = kubectl_or(cluster, &["-n", NS, "logs", "stranger"], || diagnose(cluster));
    assert_eq!(
        stranger, OK,
        "{STRANGER_NOT_REFUSED}: another service account was let through:\n{log}"
    );
}
