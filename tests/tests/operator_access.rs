//! Access rules and the audit log against the real control plane (issue #23, the operator's side):
//!
//! - `spec.access` and the policy's `access` turn into the guard config's `access` section, the server's rules
//!   first and then the policy's, every rule named; `spec.audit` over the policy's `audit` into its `audit`
//!   section. The guard loads the config, and its decision for a real service-account token of the API server
//!   follows the rules. The status lists the rules with their sources.
//! - A server without authentication gets none of the policy's rules.
//! - The CRD's CEL rules refuse a source that sets nothing, `names` on a method that names nothing, a bad
//!   service account, and two rules of one name.

mod operator_common;

use kube::api::{Api, PostParams};
use mcp_guard_config::Reason;
use mcp_guard_config::access::Allowed;
use mcp_guard_config::auth::Identity;
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
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

/// A caller as the guard sees a verified service-account token.
fn service_account(name: &str) -> Identity {
    Identity {
        issuer: "https://kubernetes.default.svc.cluster.local".into(),
        subject: Some(format!("system:serviceaccount:{}", name.replace('/', ":"))),
        client_id: None,
        scopes: Vec::new(),
        groups: Vec::new(),
        service_account: Some(name.into()),
        expires_at: u64::MAX,
    }
}

/// MCPGuardPolicy `<ns>-platform` with two access rules and an audit section; MCPServer `weather` (with
/// authentication) referencing it with rules and audit settings of its own; MCPServer `open` (without
/// authentication) referencing it too. Returns the policy's name and the operator.
async fn weather_with_access_rules(client: &kube::Client, ns: &str) -> (String, Operator) {
    let policy = format!("{ns}-platform");
    apply_cluster::<MCPGuardPolicy>(
        client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
            "metadata": { "name": policy },
            "spec": {
                "access": { "rules": [
                    { "name": "sre", "from": [{ "group": "sre" }], "to": [{ "method": "tools/call" }] },
                    { "from": [{ "serviceAccount": "monitoring/prober" }],
                      "to": [{ "method": "tools/call", "names": ["health"] }] }
                ]},
                "audit": { "arguments": true, "maxArgumentBytes": 4096, "redact": ["ssn"] }
            }
        }),
    )
    .await;
    let op = Operator::start(client.clone(), ns, None, Some(false));
    Scenario::new(client, ns)
        .service(service(
            "weather",
            "weather",
            json!([{ "port": 80, "targetPort": 8000 }]),
        ))
        .server(mcpserver(
            "weather",
            "weather",
            8000,
            json!({
                "policyRef": policy,
                "auth": { "kubernetes": true },
                "access": { "rules": [
                    { "name": "readers", "from": [{ "serviceAccount": format!("{ns}/reader") }],
                      "to": [{ "method": "tools/call", "names": ["get_*", "search"] },
                             { "method": "resources/read" }] },
                    { "from": [{ "serviceAccount": format!("{ns}/*") }, { "scope": "tools:write" }],
                      "to": [{ "method": "tools/call", "names": ["write"] }] }
                ]},
                "audit": { "maxArgumentBytes": 256, "redact": ["iban"] }
            }),
        ))
        // No authentication: the policy's rules do not apply (they could not be enforced).
        .server(mcpserver("open", "open", 8000, json!({ "policyRef": policy })))
        .apply()
        .await;
    (policy, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_config_carries_the_servers_and_the_policys_rules_and_the_audit_section() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("access").await;
    let (policy, _op) = weather_with_access_rules(&client, &ns).await;

    let config = wait_config(&client, &ns, "weather", SETUP, "an access section", |c| {
        c.access.is_some()
    })
    .await;
    let access = config.access.clone().expect("access");
    let names: Vec<_> = access
        .rules
        .iter()
        .map(|r| r.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["readers", "rules[1]", "sre", &format!("policy/{policy}.rules[1]")],
        "the server's rules first, then the policy's, every one named"
    );
    assert_eq!(
        access.rules[0].from[0].service_account,
        Some(format!("{ns}/reader"))
    );
    assert_eq!(access.rules[0].to[0].names, ["get_*", "search"]);
    assert_eq!(access.rules[1].from[1].scope.as_deref(), Some("tools:write"));
    let audit = config.audit.clone().expect("audit");
    assert!(audit.enabled && audit.arguments, "{audit:?}");
    assert_eq!(audit.max_argument_bytes, Some(256));
    assert_eq!(audit.redact, ["ssn", "iban"]);
    // The guard loads what the operator wrote, and decides by it.
    config.compile().expect("the guard loads the config");
    let decide = access.compile().expect("rules");
    let call = |who: &str, tool: &str| {
        decide
            .decide(Some(&service_account(who)), Some("tools/call"), Some(tool))
            .map(|a| match a {
                Allowed::Rule(name) => name.to_string(),
                Allowed::Plumbing => "plumbing".into(),
            })
            .map_err(|d| d.reason)
    };
    assert_eq!(
        call(&format!("{ns}/reader"), "get_forecast"),
        Ok("readers".into())
    );
    assert_eq!(call(&format!("{ns}/reader"), "write"), Ok("rules[1]".into()));
    assert_eq!(call("elsewhere/reader", "write"), Err(Reason::ToolNotAllowed));
    assert_eq!(
        call("monitoring/prober", "health"),
        Ok(format!("policy/{policy}.rules[1]"))
    );
    assert_eq!(
        call("monitoring/prober", "get_forecast"),
        Err(Reason::ToolNotAllowed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_lists_the_rules_with_their_sources_and_a_server_without_authentication_gets_none() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("access-status").await;
    let (policy, _op) = weather_with_access_rules(&client, &ns).await;

    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "weather", "status.access", |s| {
        s.status.as_ref().is_some_and(|st| st.access.is_some())
    })
    .await;
    let status = server.status.and_then(|s| s.access).expect("status.access");
    assert_eq!(status.summary, "readers,rules[1],sre (+1 more)");
    let rows: Vec<_> = status
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.source.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("readers", "MCPServer"),
            ("rules[1]", "MCPServer"),
            ("sre", format!("MCPGuardPolicy/{policy}").as_str()),
            (
                format!("policy/{policy}.rules[1]").as_str(),
                format!("MCPGuardPolicy/{policy}").as_str()
            ),
        ]
    );
    assert_eq!(status.rules[0].to, ["tools/call get_*,search", "resources/read"]);
    assert_eq!(
        status.rules[1].from,
        [format!("serviceAccount {ns}/*"), "scope tools:write".into()]
    );

    let open = wait_config(&client, &ns, "open", SETUP, "a config", |_| true).await;
    assert_eq!(open.access, None, "no authentication: none of the policy's rules");
    assert!(
        open.audit.is_some(),
        "the policy's audit section applies to every server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_rules_that_cannot_mean_anything() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("access-cel").await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = |rules: serde_json::Value| {
        let value = mcpserver(
            "lab",
            "lab",
            8000,
            json!({ "auth": { "kubernetes": true }, "access": { "rules": rules } }),
        );
        serde_json::from_value::<MCPServer>(value).expect("MCPServer")
    };
    for (rules, says) in [
        (
            json!([{ "from": [{}], "to": [{ "method": "tools/call" }] }]),
            "a source sets nothing",
        ),
        (
            json!([{ "from": [{ "authenticated": false }], "to": [{ "method": "tools/call" }] }]),
            "a source sets nothing",
        ),
        (
            json!([{ "from": [{ "group": "g" }], "to": [{ "method": "ping", "names": ["x"] }] }]),
            "names apply only to tools/call",
        ),
        (
            json!([{ "from": [{ "serviceAccount": "agent" }], "to": [{ "method": "tools/call" }] }]),
            "write namespace/name or namespace/*",
        ),
        (
            json!([
                { "name": "a", "from": [{ "group": "g" }], "to": [{ "method": "tools/call" }] },
                { "name": "a", "from": [{ "group": "h" }], "to": [{ "method": "tools/call" }] }
            ]),
            "rule names must be unique",
        ),
        (
            json!([{ "from": [], "to": [{ "method": "tools/call" }] }]),
            "from",
        ),
    ] {
        let err = servers
            .create(&PostParams::default(), &server(rules.clone()))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(says), "{rules}: {err}");
    }
    servers
        .create(
            &PostParams::default(),
            &server(json!([
                { "name": "a", "from": [{ "authenticated": true }], "to": [{ "method": "tools/call", "names": ["*"] }] },
                { "from": [{ "serviceAccount": "team-a/*" }], "to": [{ "method": "resources/read" }] }
            ])),
        )
        .await
        .expect("valid rules are accepted");
}
