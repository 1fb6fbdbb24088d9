//! Access rules by token claims (issue #23), end to end with real OAuth clients and a real authorization server:
//! Ory Hydra issues the tokens (tests/hydra_common), the MCP SDKs' own OAuth clients (Python and TypeScript, as in
//! guard_oauth.rs) get them and call the Python SDK server (tools `echo`, `countdown`, `whoami`) through the guard,
//! whose rules allow calls by group, scope, subject and client id.
//!
//! Groups are real token claims, put there by Hydra's own mechanisms: for machine clients (client_credentials)
//! Hydra's token hook (`oauth2.token_hook`, tests/mcp/hydra_token_hook.py, the group directory) answers each
//! token request with the client's groups as session data; for a user (authorization code) the consent grants
//! them (`session.access_token`). `oauth2.allowed_top_level_claims: [groups]` makes Hydra write them as the
//! top-level `groups` claim the guard reads.
//!
//! Each test asserts what the SDK client saw (its `tools/list`, its call, the guard's `403` and JSON-RPC body)
//! and the guard's audit lines for it (stdout, `"logger":"mcp-guard.audit"`).

mod hydra_common;

use std::time::{Duration, Instant};

use hydra_common::{Hydra, OAuthClient, OAuthFlow, OAuthRun, TokenHook, run_oauth_client};
use serde_json::{Value, json};
use testkit::mcp::{Guard, GuardOptions, PyServer, Transport, assert_guard_error_body};

/// The scope every request needs.
const SCOPE: &str = "mcp";
/// The scope the `echo-scope` rule allows `echo` by.
const ECHO_SCOPE: &str = "tools:echo";
/// The user the `alice` rule allows `whoami` by subject.
const ALICE: &str = "alice@example.com";
const ALL_TOOLS: [&str; 3] = ["countdown", "echo", "whoami"];

/// The rules every lab's guard enforces; [`Lab::allow_client`] adds one by client id.
fn rules() -> Vec<Value> {
    vec![
        json!({ "name": "sre", "from": [{ "group": "sre" }], "to": [{ "method": "tools/call" }] }),
        json!({ "name": "echo-scope", "from": [{ "scope": ECHO_SCOPE }],
                "to": [{ "method": "tools/call", "names": ["echo"] }] }),
        json!({ "name": "alice", "from": [{ "subject": ALICE }],
                "to": [{ "method": "tools/call", "names": ["whoami"] }] }),
    ]
}

/// Hydra with its token hook, the Python SDK server and a guard with OAuth and access rules (a config file).
struct Lab {
    hook: TokenHook,
    hydra: Hydra,
    server: PyServer,
    guard: Guard,
    config: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        Lab::start_with(|hook| hook.hydra_config())
    }

    /// A lab whose Hydra runs with the config `hydra_config` makes for the hook.
    fn start_with(hydra_config: impl FnOnce(&TokenHook) -> Value) -> Lab {
        let hook = TokenHook::start().expect("start Hydra's token hook");
        let hydra = Hydra::start_with_config(&hydra_config(&hook)).expect("start Hydra");
        let server = PyServer::start_with(Transport::StreamableHttp, "127.0.0.1", &["--whoami"])
            .expect("start the MCP server");
        let config = tempfile::tempdir().expect("config dir");
        write_config(&config, &guard_config(&hydra, rules()));
        let mut opts = GuardOptions::hosts(&["127.0.0.1"]);
        opts.extra_args = vec![
            "--config".into(),
            config.path().join("guard.json").display().to_string(),
        ];
        let guard = opts.start(&server.base_url()).expect("start the guard");
        Lab {
            hook,
            hydra,
            server,
            guard,
            config,
        }
    }

    /// The resource URI of the guarded server, as clients reach it.
    fn resource(&self) -> String {
        format!("{}/mcp", self.guard.base_url())
    }

    /// A client_credentials client for this resource that may ask for `scopes` (its groups: `self.hook`).
    fn machine_client(&self, scopes: &[&str]) -> OAuthClient {
        self.hydra
            .client_credentials_client(&[&self.resource()], scopes)
            .expect("register a client_credentials client")
    }

    /// Adds the rule `console`: `client` may call `countdown`. Client ids are Hydra's to choose, and a client
    /// is registered for the guard's resource URI, so this rule is written after the guard started: the guard
    /// reloads its config file, and this waits until it has.
    fn allow_client(&self, client: &OAuthClient) {
        let reloads = || reloads_ok(&self.guard);
        let before = reloads();
        let mut rules = rules();
        rules.push(json!({ "name": "console", "from": [{ "clientId": client.id }],
                           "to": [{ "method": "tools/call", "names": ["countdown"] }] }));
        write_config(&self.config, &guard_config(&self.hydra, rules));
        let deadline = Instant::now() + Duration::from_secs(30);
        while reloads() == before {
            assert!(
                Instant::now() < deadline,
                "the guard did not reload its config: {}",
                testkit::process::tail(&self.guard.proc.logs(), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs an SDK client calling `tool`; `initial_token`: a token the (Python) client starts with.
    fn run(&self, flow: &OAuthFlow, tool: &str, arguments: Value, initial_token: Option<&str>) -> OAuthRun {
        run_oauth_client(
            &self.hydra,
            flow,
            &self.resource(),
            tool,
            &arguments,
            initial_token,
        )
        .expect("run the client")
    }

    /// How many MCP POSTs the server answered in its last session (its access log), once it shows `n` (the log
    /// line follows the answer).
    fn posts_in_the_servers_last_session(&self, n: usize) -> usize {
        let count = || {
            let logs = self.server.proc.logs();
            let session = logs.rsplit("Created new transport").next().unwrap_or_default();
            session.matches("\"POST /mcp HTTP/1.1\"").count()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        count()
    }

    /// The guard's audit lines so far.
    fn audit_lines(&self) -> Vec<Value> {
        self.guard
            .proc
            .logs()
            .lines()
            .filter(|l| l.starts_with(r#"{"logger":"mcp-guard.audit""#))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
            .collect()
    }

    /// The audit line of the `tools/call` of `tool` by `subject`, waiting for it (the guard writes it after the
    /// answer, from its own queue).
    fn audit_line_of_call(&self, subject: &str, tool: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = self.audit_lines().into_iter().find(|l| {
                l["method"] == "tools/call" && l["name"] == tool && l["caller"]["subject"] == subject
            });
            if let Some(line) = line {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no audit line for {subject} calling {tool}: {:#?}",
                self.audit_lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The guard config: OAuth with Hydra for the resource `http://127.0.0.1/mcp` (any port: the request's own), every
/// request needing the scope `mcp` (as in guard_oauth.rs: the SDKs ask for the scope the metadata names), and
/// `rules`.
fn guard_config(hydra: &Hydra, rules: Vec<Value>) -> Value {
    json!({
        "auth": {
            "resources": ["http://127.0.0.1/mcp"],
            "issuers": [{ "issuer": hydra.issuer(), "allowHttp": true }],
            "requiredScopes": [SCOPE],
        },
        "access": { "rules": rules },
    })
}

/// Writes the guard's config file whole (a rename), so the guard never reads half of it.
fn write_config(dir: &tempfile::TempDir, config: &Value) {
    let next = dir.path().join("guard.json.next");
    std::fs::write(&next, config.to_string()).expect("write the guard config");
    std::fs::rename(&next, dir.path().join("guard.json")).expect("replace the guard config");
}

/// `mcp_guard_config_reloads_total{result="ok"}`.
fn reloads_ok(guard: &Guard) -> u64 {
    let metrics = guard.metrics().expect("guard metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"mcp_guard_config_reloads_total{result="ok"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ok reload count in the metrics:\n{metrics}"))
}

fn tools_listed(run: &OAuthRun) -> Vec<String> {
    serde_json::from_value(run.report["tools"].clone())
        .unwrap_or_else(|e| panic!("no tools listed ({e}): {}", run.report))
}

/// Asserts the run listed tools and its call of a tool was refused by the guard with `403 tool_not_allowed` and
/// the JSON-RPC error body naming the call and the caller; the SDK reports the call failed.
fn assert_call_refused(run: &OAuthRun, resource: &str, tool: &str, client: &OAuthClient, what: &str) {
    assert!(!run.ok(), "{what}: the call should fail: {}", run.report);
    let refused: Vec<Value> = run
        .exchanges()
        .into_iter()
        .filter(|e| e["method"] == "POST" && e["url"] == resource && e["status"] == 403)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "{what}: one refused request: {:#?}",
        run.exchanges()
    );
    let body: Value = serde_json::from_str(refused[0]["body"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what}: the 403 body is not JSON ({e}): {}", refused[0]));
    assert_guard_error_body(&body, "tool_not_allowed", what);
    assert_eq!(body["error"]["code"], -32012, "{what}: {body}");
    assert_eq!(
        body["error"]["data"]["received"],
        format!("tools/call {tool}"),
        "{what}: {body}"
    );
    let detail = body["error"]["data"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&client.id),
        "{what}: the denial names the caller: {body}"
    );
}

/// Asserts an audit line: the caller by subject and client id, the call, the decision and the status.
fn assert_audit(line: &Value, subject: &str, client: &OAuthClient, tool: &str, decision: &str, status: u16) {
    let what = format!("audit line of {subject} calling {tool}: {line}");
    assert_eq!(line["event"], "decision", "{what}");
    assert_eq!(line["caller"]["subject"], subject, "{what}");
    assert_eq!(line["caller"]["clientId"], client.id.as_str(), "{what}");
    assert_eq!(line["method"], "tools/call", "{what}");
    assert_eq!(line["name"], tool, "{what}");
    assert_eq!(line["decision"], decision, "{what}");
    assert_eq!(line["status"], status, "{what}");
    let reason = if decision == "denied" {
        json!("tool_not_allowed")
    } else {
        Value::Null
    };
    assert_eq!(line["reason"], reason, "{what}");
}

#[test]
fn a_group_from_hydras_token_hook_allows_every_tool_and_without_it_the_list_is_filtered_and_the_call_refused()
{
    let lab = Lab::start();
    let sre = lab.machine_client(&[SCOPE]);
    let intern = lab.machine_client(&[SCOPE]);
    lab.hook
        .set_groups(&[(&sre, &["sre"]), (&intern, &["interns"])])
        .expect("write the group directory");

    let run = lab.run(
        &OAuthFlow::PythonClientCredentials { client: &sre },
        "whoami",
        json!({}),
        None,
    );
    run.assert_ok("sre");
    assert_eq!(
        run.report["token_claims"]["groups"],
        json!(["sre"]),
        "Hydra's token carries the hook's groups as a top-level claim: {}",
        run.report["token_claims"]
    );
    assert_eq!(tools_listed(&run), ALL_TOOLS, "sre sees every tool");
    let me: Value =
        serde_json::from_str(run.report["call"].as_str().unwrap_or_default()).expect("whoami JSON");
    assert_eq!(me["identity"]["mcp-guard-client-id"], sre.id.as_str(), "{me}");

    let run = lab.run(
        &OAuthFlow::TypeScriptClientCredentials {
            client: &intern,
            scope: SCOPE,
        },
        "whoami",
        json!({}),
        None,
    );
    assert_eq!(
        tools_listed(&run),
        Vec::<String>::new(),
        "interns are allowed no tool, and see none: {}",
        run.report
    );
    assert_call_refused(&run, &lab.resource(), "whoami", &intern, "interns calling whoami");

    // The audit log names each caller (subject and client id: the client's own for client_credentials).
    assert_audit(
        &lab.audit_line_of_call(&sre.id, "whoami"),
        &sre.id,
        &sre,
        "whoami",
        "allowed",
        200,
    );
    assert_audit(
        &lab.audit_line_of_call(&intern.id, "whoami"),
        &intern.id,
        &intern,
        "whoami",
        "denied",
        403,
    );
    // Every POST of the interns' session the guard let through reached the server, the refused call did not.
    let passed = run
        .exchanges()
        .iter()
        .filter(|e| {
            e["method"] == "POST" && e["url"] == lab.resource().as_str() && e["status"].as_u64() < Some(300)
        })
        .count();
    assert_eq!(
        lab.posts_in_the_servers_last_session(passed),
        passed,
        "{:#?}",
        run.exchanges()
    );
}

#[test]
fn a_scope_allows_its_tool_only_for_both_sdks() {
    let lab = Lab::start();
    let client = lab.machine_client(&[SCOPE, ECHO_SCOPE]);
    let scopes = format!("{SCOPE} {ECHO_SCOPE}");

    let run = lab.run(
        &OAuthFlow::TypeScriptClientCredentials {
            client: &client,
            scope: &scopes,
        },
        "echo",
        json!({ "text": "scoped" }),
        None,
    );
    run.assert_ok("echo with the scope");
    assert_eq!(run.report["token_claims"]["scp"], json!([SCOPE, ECHO_SCOPE]));
    assert_eq!(tools_listed(&run), ["echo"], "the scope shows its tool only");
    assert_eq!(run.report["call"], "echo: scoped");

    // The Python SDK asks for the scope the 401 names (`mcp`) whatever it is told: it starts with a token
    // carrying both.
    let token = lab
        .hydra
        .token(&client, &[&lab.resource()], &[SCOPE, ECHO_SCOPE])
        .expect("token with the echo scope");
    let run = lab.run(
        &OAuthFlow::PythonClientCredentials { client: &client },
        "countdown",
        json!({ "n": 1, "delay_ms": 0 }),
        Some(&token),
    );
    assert_eq!(tools_listed(&run), ["echo"], "{}", run.report);
    assert_call_refused(
        &run,
        &lab.resource(),
        "countdown",
        &client,
        "the echo scope calling countdown",
    );

    assert_audit(
        &lab.audit_line_of_call(&client.id, "echo"),
        &client.id,
        &client,
        "echo",
        "allowed",
        200,
    );
    assert_audit(
        &lab.audit_line_of_call(&client.id, "countdown"),
        &client.id,
        &client,
        "countdown",
        "denied",
        403,
    );
}

#[test]
fn rules_by_subject_by_client_id_and_by_a_group_granted_at_consent() {
    let lab = Lab::start();
    let redirect_uri = "http://127.0.0.1:9/callback";
    let resource = lab.resource();
    let app = lab
        .hydra
        .pkce_client(redirect_uri, &[&resource], &[SCOPE])
        .expect("register a PKCE client");
    let user = |subject, groups| OAuthFlow::PythonAuthorizationCode {
        client: &app,
        redirect_uri,
        subject,
        groups,
    };

    // alice: by subject, whoami only.
    let run = lab.run(&user(ALICE, &[]), "whoami", json!({}), None);
    run.assert_ok("alice");
    assert_eq!(tools_listed(&run), ["whoami"]);
    assert_eq!(
        run.report["token_claims"].get("groups"),
        None,
        "{}",
        run.report["token_claims"]
    );
    assert_audit(
        &lab.audit_line_of_call(ALICE, "whoami"),
        ALICE,
        &app,
        "whoami",
        "allowed",
        200,
    );
    let run = lab.run(&user(ALICE, &[]), "echo", json!({ "text": "not alice's" }), None);
    assert_call_refused(&run, &resource, "echo", &app, "alice calling echo");
    assert_audit(
        &lab.audit_line_of_call(ALICE, "echo"),
        ALICE,
        &app,
        "echo",
        "denied",
        403,
    );

    // bob: in the group sre, granted at consent (the token hook leaves an authorization code's session alone).
    let bob = "bob@example.com";
    let run = lab.run(&user(bob, &["sre"]), "echo", json!({ "text": "from bob" }), None);
    run.assert_ok("bob");
    assert_eq!(
        run.report["token_claims"]["groups"],
        json!(["sre"]),
        "{}",
        run.report["token_claims"]
    );
    assert_eq!(tools_listed(&run), ALL_TOOLS);
    assert_audit(
        &lab.audit_line_of_call(bob, "echo"),
        bob,
        &app,
        "echo",
        "allowed",
        200,
    );

    // A machine client by its client id: countdown only.
    let console = lab.machine_client(&[SCOPE]);
    lab.allow_client(&console);
    let run = lab.run(
        &OAuthFlow::TypeScriptClientCredentials {
            client: &console,
            scope: SCOPE,
        },
        "countdown",
        json!({ "n": 1, "delay_ms": 0 }),
        None,
    );
    run.assert_ok("console");
    assert_eq!(tools_listed(&run), ["countdown"]);
    assert_audit(
        &lab.audit_line_of_call(&console.id, "countdown"),
        &console.id,
        &console,
        "countdown",
        "allowed",
        200,
    );
}

#[test]
fn groups_that_hydra_keeps_under_ext_grant_nothing() {
    // Hydra's default: custom claims only under `ext` (not named in allowed_top_level_claims). The guard reads
    // the top-level `groups` claim only, so the directory's group does not reach the rules.
    let lab = Lab::start_with(|hook| {
        let mut config = hook.hydra_config();
        config["oauth2"]
            .as_object_mut()
            .expect("oauth2 section")
            .retain(|key, _| key == "token_hook");
        config
    });
    let client = lab.machine_client(&[SCOPE]);
    lab.hook
        .set_groups(&[(&client, &["sre"])])
        .expect("write the group directory");

    let run = lab.run(
        &OAuthFlow::PythonClientCredentials { client: &client },
        "whoami",
        json!({}),
        None,
    );
    let claims = &run.report["token_claims"];
    assert_eq!(
        claims["ext"]["groups"],
        json!(["sre"]),
        "the hook's groups are in the token: {claims}"
    );
    assert_eq!(claims.get("groups"), None, "not as a top-level claim: {claims}");
    assert_eq!(tools_listed(&run), Vec::<String>::new(), "{}", run.report);
    assert_call_refused(&run, &lab.resource(), "whoami", &client, "groups under ext");
    assert_audit(
        &lab.audit_line_of_call(&client.id, "whoami"),
        &client.id,
        &client,
        "whoami",
        "denied",
        403,
    );
}
