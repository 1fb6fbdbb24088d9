//! Authentication against the real control plane (issue #22, the operator's side):
//!
//! - `spec.auth` turns into the guard config's `auth` section: resource URIs derived from the Ingress (https where
//!   its `tls` covers the host) and the Service's DNS names on its port, the server's issuers, and the cluster's
//!   own service-account issuer with the keys the operator read from the API server (`/openid/v1/jwks`), so
//!   that the guard needs no API token. The status shows the mode and the resource URIs.
//! - The keys are the API server's real ones: a token the API server issues (TokenRequest) for a service
//!   account, with the server's resource URI as its audience, passes the guard's own check with the config the
//!   operator wrote; a token of another service account, or for another audience, does not.
//! - The policy's `auth` is a default: on for every server with `enabled: true`.
//! - The CRD's CEL rules refuse an `http://` issuer unless `allowHttp` is set.

mod operator_common;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use mcp_guard_config::auth::{AuthError, Credentials, KeySet, KeySource};
use mcp_guard_config::{AuthConfig, Authority};
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

/// No keys but the config's own (the kubernetes issuer's are inline; the guard fetches nothing for it).
struct InlineOnly;

impl KeySource for InlineOnly {
    fn keys(&self, _: &str) -> Option<std::sync::Arc<KeySet>> {
        None
    }
}

async fn token(client: &kube::Client, ns: &str, sa: &str, audience: &str) -> String {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    if api.get_opt(sa).await.expect("get ServiceAccount").is_none() {
        let account: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": sa } })).expect("ServiceAccount");
        api.create(&PostParams::default(), &account)
            .await
            .expect("create ServiceAccount");
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_string()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token")
        .token
}

/// What the guard decides for `token` sent to `host` with the auth section the operator wrote.
fn judge(auth: &AuthConfig, host: &str, token: &str) -> Result<String, AuthError> {
    let policy = auth.compile().expect("the operator writes what the guard loads");
    let resource = policy
        .resource_for(&Authority::parse(host).expect("authority"))
        .expect("a resource for the host");
    let header = format!("Bearer {token}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    policy
        .authenticate(
            Credentials {
                authorization: &[header.as_bytes()],
                query: None,
            },
            &resource,
            &InlineOnly,
            now,
        )
        .map(|identity| identity.service_account.unwrap_or_default())
        .map_err(|denial| denial.error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_config_carries_derived_resource_uris_and_the_clusters_own_keys() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("auth").await;
    let _op = Operator::start(client.clone(), &ns, None, Some(false));
    apply::<Service>(
        &client,
        &ns,
        service(
            "weather",
            "weather",
            json!([{ "name": "http", "port": 8080, "targetPort": 8000 }]),
        ),
    )
    .await;
    apply::<Ingress>(
        &client,
        &ns,
        ingress(
            "web",
            json!([
                rule(Some("mcp.example.com"), "weather", 8080),
                rule(Some("plain.example.com"), "weather", 8080)
            ]),
            &["mcp.example.com"],
        ),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver(
            "weather",
            "weather",
            8000,
            json!({ "auth": {
                "kubernetes": true,
                "issuers": [{ "issuer": "https://idp.example.com", "audiences": ["api://weather"] }],
                "serviceAccounts": [format!("{ns}/agent")],
                "toolScopes": { "deploy": ["deploy:write"] }
            }}),
        ),
    )
    .await;

    let svc_uri = format!("http://weather.{ns}.svc:8080/mcp");
    let config = wait_config(&client, &ns, "weather", SETUP, "an auth section with keys", |c| {
        c.auth
            .as_ref()
            .is_some_and(|a| a.issuers.iter().any(|i| i.kubernetes && i.jwks.is_some()))
    })
    .await;
    let auth = config.auth.clone().expect("auth");
    for want in [
        "https://mcp.example.com/mcp",
        "http://plain.example.com/mcp",
        svc_uri.as_str(),
    ] {
        assert!(
            auth.resources.iter().any(|r| r == want),
            "{want} in {:?}",
            auth.resources
        );
    }
    assert_eq!(auth.issuers[0].issuer, "https://idp.example.com");
    assert_eq!(auth.issuers[0].audiences, vec!["api://weather"]);
    assert_eq!(auth.tool_scopes["deploy"], vec!["deploy:write"]);
    // The cluster's issuer, with exactly the keys the API server serves.
    let k8s = &auth.issuers[1];
    assert_eq!(k8s.issuer, "https://kubernetes.default.svc.cluster.local");
    assert!(k8s.kubernetes && k8s.jwks_uri.is_none());
    let served = client
        .request_text(
            http::Request::get("/openid/v1/jwks")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("GET /openid/v1/jwks");
    let served: serde_json::Value = serde_json::from_str(&served).expect("JWKS");
    assert_eq!(k8s.jwks.as_ref(), Some(&served));
    assert!(config.compile().is_ok(), "{:?}", config.compile().err());

    // The status says the same.
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = server_with(&servers, "weather", "status.auth", |s| {
        s.status.as_ref().is_some_and(|st| st.auth.is_some())
    })
    .await;
    let status = server
        .status
        .as_ref()
        .and_then(|s| s.auth.clone())
        .expect("auth status");
    assert_eq!(status.mode, "oauth+kubernetes");
    assert_eq!(status.resource_uris, auth.resources);
    let (state, reason, message) = condition(&server, "Authentication").expect("Authentication");
    assert_eq!((state, reason), ("True", "Enabled"), "{message}");
    assert!(message.contains("https://mcp.example.com/mcp"), "{message}");

    // Real service-account tokens: the allowed account for this resource passes the guard's check; another
    // account, or another audience, does not.
    let host = format!("weather.{ns}.svc:8080");
    let good = token(&client, &ns, "agent", &svc_uri).await;
    assert_eq!(judge(&auth, &host, &good), Ok(format!("{ns}/agent")));
    let stranger = token(&client, &ns, "stranger", &svc_uri).await;
    assert_eq!(judge(&auth, &host, &stranger), Err(AuthError::NotAllowed));
    let elsewhere = token(&client, &ns, "agent", "https://other.example.com/mcp").await;
    assert_eq!(judge(&auth, &host, &elsewhere), Err(AuthError::AudienceMismatch));
    // The same token at the public host is for another resource.
    assert_eq!(
        judge(&auth, "mcp.example.com", &good),
        Err(AuthError::AudienceMismatch)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_auth_enabled_guards_every_server_using_it() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("auth-policy").await;
    let policy = format!("{ns}-idp");
    apply_cluster::<MCPGuardPolicy>(
        &client,
        json!({
            "apiVersion": "mcpguard.dev/v1alpha1", "kind": "MCPGuardPolicy",
            "metadata": { "name": policy },
            "spec": { "auth": {
                "enabled": true,
                "issuers": [{ "issuer": "https://idp.example.com" }],
                "requiredScopes": ["mcp"],
                "resourcePath": "/v1/mcp"
            }}
        }),
    )
    .await;
    let _op = Operator::start(client.clone(), &ns, None, Some(false));
    apply::<Service>(
        &client,
        &ns,
        service("weather", "weather", json!([{ "port": 80, "targetPort": 8000 }])),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver("weather", "weather", 8000, json!({ "policyRef": policy })),
    )
    .await;
    apply::<MCPServer>(
        &client,
        &ns,
        mcpserver(
            "opted-out",
            "other",
            8000,
            json!({ "policyRef": policy, "auth": { "enabled": false } }),
        ),
    )
    .await;
    let config = wait_config(&client, &ns, "weather", SETUP, "the policy's auth", |c| {
        c.auth.is_some()
    })
    .await;
    let auth = config.auth.expect("auth");
    assert_eq!(auth.required_scopes, vec!["mcp"]);
    assert!(
        auth.resources
            .contains(&format!("http://weather.{ns}.svc/v1/mcp")),
        "{:?}",
        auth.resources
    );
    let other = wait_config(&client, &ns, "opted-out", SETUP, "a config", |_| true).await;
    assert_eq!(other.auth, None);
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let off = server_with(&servers, "opted-out", "Authentication=False", |s| {
        condition(s, "Authentication").is_some_and(|c| c.0 == "False")
    })
    .await;
    assert_eq!(condition(&off, "Authentication").map(|c| c.1), Some("Disabled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_an_http_issuer_without_allow_http() {
    let cluster = cluster().await;
    let client = cluster.client();
    let ns = cluster.namespace("auth-cel").await;
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    let server = |issuer: serde_json::Value| {
        let value = mcpserver("lab", "lab", 8000, json!({ "auth": { "issuers": [issuer] } }));
        serde_json::from_value::<MCPServer>(value).expect("MCPServer")
    };
    let err = servers
        .create(
            &PostParams::default(),
            &server(json!({ "issuer": "http://idp.lab" })),
        )
        .await
        .expect_err("an http issuer is refused");
    let message = err.to_string();
    assert!(message.contains("allowHttp: true only for a lab"), "{message}");
    let err = servers
        .create(
            &PostParams::default(),
            &server(json!({ "issuer": "https://idp.lab", "algorithms": ["HS256"] })),
        )
        .await
        .expect_err("HS256 is refused");
    assert!(err.to_string().contains("never none or HS*"), "{err}");
    servers
        .create(
            &PostParams::default(),
            &server(json!({ "issuer": "http://idp.lab", "allowHttp": true })),
        )
        .await
        .expect("a lab issuer with allowHttp");
}
