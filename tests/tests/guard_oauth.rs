//! The guard as the OAuth resource server of an MCP server (issue #22), end to end with real components: Ory Hydra
//! issues the tokens (tests/hydra_common), the MCP Python SDK server sits behind the guard, and the MCP SDKs'
//! own OAuth clients (tests/mcp/py_oauth_client.py, ts_oauth_client.cjs) start with no token, meet the guard's
//! 401, discover its RFC 9728 metadata and Hydra, get a token and call a tool.
//!
//! The guard runs with the standalone flags: `--auth-issuer` (Hydra, plain http: `--auth-allow-http-issuer`),
//! `--auth-resource http://127.0.0.1/mcp` (the host pattern `127.0.0.1` matches any port; the resource URI is the
//! request's own host in its place: `http://127.0.0.1:PORT/mcp`) and `--auth-required-scope mcp`.

mod hydra_common;

use std::time::{Duration, Instant};

use hydra_common::{Hydra, OAuthClient, OAuthFlow, audiences, jwt_header, run_oauth_client};
use serde_json::{Value, json};
use testkit::http::{self, Response};
use testkit::mcp::{Guard, GuardOptions, PyServer, Transport, assert_guard_error_body, initialize_request};

const SCOPE: &str = "mcp";

/// Hydra, the Python SDK server (with its `whoami` tool) and a guard in front of it doing OAuth.
struct Lab {
    hydra: Hydra,
    server: PyServer,
    guard: Guard,
}

impl Lab {
    fn start() -> Lab {
        let hydra = Hydra::start().expect("start Hydra");
        let server = PyServer::start_with(Transport::StreamableHttp, "127.0.0.1", &["--whoami"])
            .expect("start the MCP server");
        let mut opts = GuardOptions::hosts(&["127.0.0.1"]);
        opts.extra_args = [
            "--auth-issuer",
            &hydra.issuer(),
            "--auth-allow-http-issuer",
            "--auth-resource",
            "http://127.0.0.1/mcp",
            "--auth-required-scope",
            SCOPE,
        ]
        .map(str::to_owned)
        .to_vec();
        let guard = opts.start(&server.base_url()).expect("start the guard");
        Lab { hydra, server, guard }
    }

    /// The resource URI of the guarded server, as clients reach it.
    fn resource(&self) -> String {
        format!("{}/mcp", self.guard.base_url())
    }

    fn metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            self.guard.base_url()
        )
    }

    fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.hydra.issuer())
    }

    /// A client_credentials client that may ask for this resource, `also` (other resources of the same issuer)
    /// and the scope.
    fn machine_client(&self, also: &[&str]) -> OAuthClient {
        let resource = self.resource();
        let mut allowed = vec![resource.as_str()];
        allowed.extend_from_slice(also);
        self.hydra
            .client_credentials_client(&allowed, &[SCOPE])
            .expect("register a client_credentials client")
    }

    /// `initialize` to the guard, with `Authorization: Bearer token` when given.
    fn initialize(&self, token: Option<&str>) -> Response {
        let host = format!("127.0.0.1:{}", self.guard.addr.port());
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let extra: Vec<&str> = auth.iter().map(String::as_str).collect();
        http::raw(self.guard.addr, &initialize_request("/mcp", &host, &extra))
            .expect("initialize through the guard")
    }

    /// How many MCP POSTs reached the server (its access log).
    fn posts_at_server(&self) -> usize {
        self.server.proc.logs().matches("\"POST /mcp HTTP/1.1\"").count()
    }

    /// Waits until the server's access log shows `n` POSTs (the log line follows the answer).
    fn wait_posts_at_server(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.posts_at_server() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.posts_at_server()
    }
}

/// The `whoami` tool's answer: what the guard forwarded about the caller.
fn whoami(run: &hydra_common::OAuthRun) -> Value {
    serde_json::from_str(run.report["call"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("whoami answer is not JSON ({e}): {}", run.report))
}

/// Asserts the SDK's discovery went through the guard: its first request carried no token and met a 401 naming
/// the metadata URL; it then read that metadata from the guard, Hydra's metadata, and asked Hydra for a token for
/// the resource; and every MCP request after that carried the token and was answered.
fn assert_discovered_through_the_guard(lab: &Lab, run: &hydra_common::OAuthRun, what: &str) {
    let exchanges = run.exchanges();
    let first = &exchanges[0];
    assert_eq!(
        (
            first["method"].as_str(),
            first["url"].as_str(),
            first["bearer"].as_bool()
        ),
        (Some("POST"), Some(lab.resource().as_str()), Some(false)),
        "{what}: first exchange: {first}"
    );
    assert_eq!(first["status"], 401, "{what}: first exchange: {first}");
    let challenge = first["www_authenticate"].as_str().unwrap_or_default();
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}\"", lab.metadata_url())),
        "{what}: the 401 names the metadata URL: {challenge}"
    );
    assert!(
        exchanges
            .iter()
            .any(|e| e["method"] == "GET" && e["url"] == lab.metadata_url().as_str() && e["status"] == 200),
        "{what}: the SDK read the metadata from the guard: {exchanges:#?}"
    );
    let forms = run.token_requests(&lab.token_endpoint());
    assert_eq!(forms.len(), 1, "{what}: one token request: {exchanges:#?}");
    assert_eq!(
        forms[0]["resource"],
        lab.resource().as_str(),
        "{what}: RFC 8707 resource = the metadata's resource: {}",
        forms[0]
    );
    let after: Vec<&Value> = exchanges
        .iter()
        .skip_while(|e| e["url"] != lab.token_endpoint().as_str())
        .skip(1)
        .collect();
    assert!(
        !after.is_empty(),
        "{what}: MCP requests after the token: {exchanges:#?}"
    );
    for e in after {
        assert_eq!(e["bearer"], true, "{what}: with the token: {e}");
        assert!(
            e["status"].as_u64().is_some_and(|s| s < 300),
            "{what}: answered: {e}"
        );
    }
    let claims = &run.report["token_claims"];
    assert_eq!(
        audiences(claims),
        [lab.resource()],
        "{what}: the token is for the resource: {claims}"
    );
}

#[test]
fn python_sdk_client_credentials_discovers_hydra_through_the_guard_and_calls_a_tool() {
    let lab = Lab::start();
    let client = lab.machine_client(&[]);
    let run = run_oauth_client(
        &lab.hydra,
        &OAuthFlow::PythonClientCredentials { client: &client },
        &lab.resource(),
        "whoami",
        &json!({}),
        None,
    )
    .expect("run the client");
    run.assert_ok("client_credentials");
    assert_discovered_through_the_guard(&lab, &run, "client_credentials");
    // The SDK asked for the scope the 401 named.
    assert_eq!(run.token_requests(&lab.token_endpoint())[0]["scope"], SCOPE);
    let me = whoami(&run);
    assert_eq!(me["authorization"], false, "the token is stripped: {me}");
    assert_eq!(me["identity"]["mcp-guard-client-id"], client.id.as_str(), "{me}");
    assert_eq!(me["identity"]["mcp-guard-subject"], client.id.as_str(), "{me}");
    assert_eq!(
        me["identity"]["mcp-guard-issuer"],
        lab.hydra.issuer().as_str(),
        "{me}"
    );
    assert_eq!(me["identity"]["mcp-guard-scopes"], SCOPE, "{me}");
}

#[test]
fn typescript_sdk_client_credentials_discovers_hydra_through_the_guard_and_calls_a_tool() {
    let lab = Lab::start();
    let client = lab.machine_client(&[]);
    let run = run_oauth_client(
        &lab.hydra,
        &OAuthFlow::TypeScriptClientCredentials {
            client: &client,
            scope: SCOPE,
        },
        &lab.resource(),
        "echo",
        &json!({ "text": "hello with a token" }),
        None,
    )
    .expect("run the client");
    run.assert_ok("TypeScript client_credentials");
    assert_discovered_through_the_guard(&lab, &run, "TypeScript client_credentials");
    assert_eq!(run.report["call"], "echo: hello with a token");
}

#[test]
fn python_sdk_authorization_code_with_pkce_through_the_guard() {
    let lab = Lab::start();
    let redirect_uri = "http://127.0.0.1:9/callback";
    let resource = lab.resource();
    let client = lab
        .hydra
        .pkce_client(redirect_uri, &[&resource], &[SCOPE])
        .expect("register a PKCE client");
    let run = run_oauth_client(
        &lab.hydra,
        &OAuthFlow::PythonAuthorizationCode {
            client: &client,
            redirect_uri,
            subject: "alice@example.com",
            groups: &[],
        },
        &resource,
        "whoami",
        &json!({}),
        None,
    )
    .expect("run the client");
    run.assert_ok("authorization code");
    assert_discovered_through_the_guard(&lab, &run, "authorization code");
    let authorize = &run.report["user"][0];
    assert_eq!(authorize["step"], "authorize", "{}", run.report["user"]);
    assert_eq!(authorize["params"]["resource"], resource.as_str(), "{authorize}");
    assert_eq!(
        authorize["params"]["code_challenge_method"], "S256",
        "{authorize}"
    );
    let me = whoami(&run);
    assert_eq!(me["identity"]["mcp-guard-subject"], "alice@example.com", "{me}");
    assert_eq!(me["identity"]["mcp-guard-client-id"], client.id.as_str(), "{me}");
    assert_eq!(me["authorization"], false, "the token is stripped: {me}");
}

#[test]
fn no_token_is_401_naming_the_metadata_whose_resource_is_the_servers() {
    let lab = Lab::start();
    let before = lab.posts_at_server();
    let r = lab.initialize(None);
    assert_eq!(r.status, 401, "{}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default().to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}\"", lab.metadata_url())),
        "{challenge}"
    );
    assert!(challenge.contains(&format!("scope=\"{SCOPE}\"")), "{challenge}");
    assert!(
        !challenge.contains("error="),
        "no token, no error code (RFC 6750 3.1): {challenge}"
    );
    assert_guard_error_body(&r.json().expect("JSON body"), "unauthenticated", "no token");

    for url in [
        lab.metadata_url(),
        format!("{}/.well-known/oauth-protected-resource", lab.guard.base_url()),
    ] {
        let r = http::get(&url).expect("GET the metadata");
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let metadata = r.json().expect("metadata JSON");
        assert_eq!(metadata["resource"], lab.resource().as_str(), "{url}: {metadata}");
        assert_eq!(
            metadata["authorization_servers"],
            json!([lab.hydra.issuer()]),
            "{metadata}"
        );
        assert_eq!(metadata["scopes_supported"], json!([SCOPE]), "{metadata}");
        assert_eq!(
            metadata["bearer_methods_supported"],
            json!(["header"]),
            "{metadata}"
        );
    }
    // Neither the refused request nor the metadata reached the server.
    assert_eq!(lab.posts_at_server(), before);
    assert!(
        !lab.server.proc.logs().contains("oauth-protected-resource"),
        "the guard answers the metadata itself"
    );
}

#[test]
fn a_token_for_another_resource_of_the_same_issuer_is_refused_before_the_server() {
    let lab = Lab::start();
    let other = "http://127.0.0.1:9/mcp";
    let client = lab.machine_client(&[other]);
    let before = lab.posts_at_server();

    let foreign = lab
        .hydra
        .token(&client, &[other], &[SCOPE])
        .expect("token for another resource");
    let r = lab.initialize(Some(&foreign));
    assert_eq!(r.status, 401, "{}", r.text());
    let json = r.json().expect("JSON body");
    assert_guard_error_body(&json, "token_audience_mismatch", "token for another resource");
    assert!(
        !r.text().contains(&foreign),
        "the token is never echoed: {}",
        r.text()
    );
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}\"", lab.metadata_url())),
        "{challenge}"
    );

    // The same client's token for this resource goes through; had the refused request reached the server, its
    // log line would be there before this one's.
    let own = lab
        .hydra
        .token(&client, &[&lab.resource()], &[SCOPE])
        .expect("token for this resource");
    let r = lab.initialize(Some(&own));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        lab.wait_posts_at_server(before + 1),
        before + 1,
        "only the accepted request reached the server"
    );
}

#[test]
fn after_the_issuer_rotates_its_key_a_new_token_still_works() {
    let lab = Lab::start();
    let client = lab.machine_client(&[]);
    let resource = lab.resource();
    let old = lab.hydra.token(&client, &[&resource], &[SCOPE]).expect("token");
    assert_eq!(
        lab.initialize(Some(&old)).status,
        200,
        "a token signed with the first key"
    );

    lab.hydra
        .rotate_signing_key("rotated-by-test")
        .expect("rotate Hydra's key");
    let new = lab
        .hydra
        .token(&client, &[&resource], &[SCOPE])
        .expect("token after rotation");
    assert_eq!(jwt_header(&new).expect("header")["kid"], "rotated-by-test");
    // The guard refetches the keys on an unknown kid, at most once per 30 s per issuer: until it may, the
    // token is refused as invalid_token, never let through.
    let deadline = Instant::now() + Duration::from_secs(90);
    let r = loop {
        let r = lab.initialize(Some(&new));
        if r.status != 401 || Instant::now() > deadline {
            break r;
        }
        assert_guard_error_body(
            &r.json().expect("JSON body"),
            "invalid_token",
            "new kid before a refetch",
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(r.status, 200, "a token signed with the new key: {}", r.text());
}

#[test]
fn a_token_without_the_required_scope_is_403_insufficient_scope_and_the_sdk_steps_up() {
    let lab = Lab::start();
    let client = lab.machine_client(&[]);
    let unscoped = lab
        .hydra
        .token(&client, &[&lab.resource()], &[])
        .expect("token without scopes");
    let before = lab.posts_at_server();

    let r = lab.initialize(Some(&unscoped));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_guard_error_body(&r.json().expect("JSON body"), "insufficient_scope", "no scope");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains(&format!("scope=\"{SCOPE}\"")), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}\"", lab.metadata_url())),
        "{challenge}"
    );
    assert_eq!(
        lab.posts_at_server(),
        before,
        "the refused request did not reach the server"
    );

    // The SDK, holding that token, meets the 403, asks Hydra for the challenged scope and carries on.
    let run = run_oauth_client(
        &lab.hydra,
        &OAuthFlow::PythonClientCredentials { client: &client },
        &lab.resource(),
        "echo",
        &json!({ "text": "stepped up" }),
        Some(&unscoped),
    )
    .expect("run the client");
    run.assert_ok("step-up");
    let first = &run.exchanges()[0];
    assert_eq!(
        (first["bearer"].as_bool(), first["status"].as_u64()),
        (Some(true), Some(403)),
        "{first}"
    );
    let forms = run.token_requests(&lab.token_endpoint());
    assert_eq!(forms.len(), 1, "{:#?}", run.exchanges());
    assert_eq!(forms[0]["scope"], SCOPE, "{}", forms[0]);
    assert_eq!(run.report["call"], "echo: stepped up");
    assert_eq!(run.report["token_claims"]["scp"], json!([SCOPE]));
}
