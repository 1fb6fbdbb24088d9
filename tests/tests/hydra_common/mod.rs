//! A real OAuth authorization server for the guard's OAuth tests: Ory Hydra (built by `make setup` from its Go
//! module into `$CACHE/bin/hydra`), in memory on loopback ports, with JWT access tokens. Clients are made through
//! its admin API, tokens are got from its public token endpoint, and its signing key can be rotated.
//!
//! Hydra does not implement RFC 8707: it ignores `resource` and sets a token's `aud` from the `audience`
//! parameter (each value must be on the client's `audience` list). So a client that asks for a token for a
//! resource sends the resource URI as `audience` too (`tests/mcp/py_oauth_client.py` does).

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};
use testkit::http::{self, Response};
use testkit::process::{Proc, tail};
use testkit::tools;

/// The key set Hydra signs JWT access tokens with.
pub const ACCESS_TOKEN_KEY_SET: &str = "hydra.jwt.access-token";
/// Hydra's login and consent UI. Nothing serves it: the user agent of a test stops at a redirect there, reads
/// the challenge and accepts it through the admin API, as a login/consent app would.
pub const LOGIN_UI: &str = "http://login.invalid/login";
pub const CONSENT_UI: &str = "http://login.invalid/consent";

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Hydra (`hydra serve all --dev`, SQLite in memory), killed on drop.
pub struct Hydra {
    pub proc: Proc,
    pub public_port: u16,
    pub admin_port: u16,
    /// Holds Hydra's config file (Hydra watches it) while Hydra runs.
    _config_dir: tempfile::TempDir,
}

/// An OAuth client registered in Hydra.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub id: String,
    /// None for a public client (authorization code + PKCE).
    pub secret: Option<String>,
    /// What Hydra answered to `POST /admin/clients`.
    pub registration: Value,
}

impl Hydra {
    /// Starts Hydra on free loopback ports and waits until both its admin and public APIs answer. A port that
    /// `free_port` handed out twice makes Hydra exit: then again on other ports.
    pub fn start() -> anyhow::Result<Hydra> {
        Self::start_with_config(&json!({}))
    }

    /// Starts Hydra as [`Hydra::start`] does, with `config` as its config file (`hydra serve all --config`):
    /// settings that the environment cannot spell, such as lists (`oauth2.allowed_top_level_claims`).
    pub fn start_with_config(config: &Value) -> anyhow::Result<Hydra> {
        let mut attempt = 1;
        loop {
            match Self::start_once(config) {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => attempt += 1,
                other => return other,
            }
        }
    }

    fn start_once(config: &Value) -> anyhow::Result<Hydra> {
        let config_dir = tempfile::Builder::new().prefix("mcp-guard-hydra-").tempdir()?;
        // JSON is YAML, which Hydra reads by the file's extension.
        let config_file = config_dir.path().join("hydra.yaml");
        std::fs::write(&config_file, config.to_string())?;
        let public_port = tools::free_port();
        let admin_port = tools::free_port();
        let issuer = format!("http://127.0.0.1:{public_port}");
        let mut cmd = Command::new(tools::bin("hydra"));
        cmd.args(["serve", "all", "--dev", "--sqa-opt-out", "--config"])
            .arg(&config_file)
            .env("DSN", "memory")
            .env("SECRETS_SYSTEM", "mcp-guard-tests-system-secret-0123456789")
            .env("URLS_SELF_ISSUER", &issuer)
            .env("URLS_LOGIN", LOGIN_UI)
            .env("URLS_CONSENT", CONSENT_UI)
            .env("STRATEGIES_ACCESS_TOKEN", "jwt")
            .env("SERVE_PUBLIC_HOST", "127.0.0.1")
            .env("SERVE_PUBLIC_PORT", public_port.to_string())
            .env("SERVE_ADMIN_HOST", "127.0.0.1")
            .env("SERVE_ADMIN_PORT", admin_port.to_string())
            .env("LOG_LEVEL", "info");
        let mut proc = Proc::spawn("hydra", cmd)?;
        let hydra_urls = [
            format!("http://127.0.0.1:{admin_port}/health/ready"),
            format!("{issuer}/.well-known/openid-configuration"),
        ];
        let deadline = Instant::now() + START_TIMEOUT;
        for url in &hydra_urls {
            loop {
                proc.ensure_running()?;
                if matches!(http::get(url), Ok(r) if r.status == 200) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{url} not 200 after {START_TIMEOUT:?}; Hydra's log:\n{}",
                        tail(&proc.logs(), 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(Hydra {
            proc,
            public_port,
            admin_port,
            _config_dir: config_dir,
        })
    }

    /// The issuer, exactly as Hydra writes it into `iss` and its discovery document.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.public_port)
    }

    /// `http://127.0.0.1:ADMIN`: the admin API (clients, keys, login and consent).
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The OpenID Connect discovery document.
    pub fn discovery(&self) -> anyhow::Result<Value> {
        expect_json(
            http::get(&format!("{}/.well-known/openid-configuration", self.issuer()))?,
            200,
            "discovery",
        )
    }

    /// The public JWKS (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> anyhow::Result<Value> {
        expect_json(
            http::get(&format!("{}/.well-known/jwks.json", self.issuer()))?,
            200,
            "jwks",
        )
    }

    /// Registers a client through `POST /admin/clients` with `spec` (Hydra's client JSON).
    pub fn create_client(&self, spec: &Value) -> anyhow::Result<OAuthClient> {
        let body = spec.to_string();
        let resp = http::request(
            "POST",
            &format!("{}/admin/clients", self.admin_url()),
            &["Content-Type: application/json"],
            body.as_bytes(),
        )?;
        let registration = expect_json(resp, 201, "POST /admin/clients")?;
        Ok(OAuthClient {
            id: string_field(&registration, "client_id")?,
            secret: registration["client_secret"].as_str().map(str::to_owned),
            registration,
        })
    }

    /// A confidential client for `client_credentials` (`client_secret_basic`) that may ask for `audiences` and
    /// `scopes`.
    pub fn client_credentials_client(
        &self,
        audiences: &[&str],
        scopes: &[&str],
    ) -> anyhow::Result<OAuthClient> {
        self.create_client(&json!({
            "client_name": "mcp-guard-tests machine client",
            "grant_types": ["client_credentials"],
            "response_types": ["token"],
            "token_endpoint_auth_method": "client_secret_basic",
            "audience": audiences,
            "scope": scopes.join(" "),
        }))
    }

    /// A public client for authorization code + PKCE (no secret) redirecting to `redirect_uri`. It may also ask
    /// for `offline_access` (a refresh token), which the MCP SDKs add whenever Hydra offers it.
    pub fn pkce_client(
        &self,
        redirect_uri: &str,
        audiences: &[&str],
        scopes: &[&str],
    ) -> anyhow::Result<OAuthClient> {
        let mut scopes = scopes.to_vec();
        scopes.push("offline_access");
        self.create_client(&json!({
            "client_name": "mcp-guard-tests interactive client",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "redirect_uris": [redirect_uri],
            "audience": audiences,
            "scope": scopes.join(" "),
        }))
    }

    /// An access token by `client_credentials` for `audiences` with `scopes` (either may be empty).
    pub fn token(&self, client: &OAuthClient, audiences: &[&str], scopes: &[&str]) -> anyhow::Result<String> {
        let secret = client
            .secret
            .as_deref()
            .ok_or_else(|| anyhow!("client {} has no secret", client.id))?;
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if !audiences.is_empty() {
            form.push(("audience", audiences.join(" ")));
        }
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&client.id),
            form_encode(secret)
        ));
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = http::request(
            "POST",
            &format!("{}/oauth2/token", self.issuer()),
            &[
                "Content-Type: application/x-www-form-urlencoded",
                &format!("Authorization: Basic {basic}"),
            ],
            body.as_bytes(),
        )?;
        let answer = expect_json(resp, 200, "POST /oauth2/token")?;
        string_field(&answer, "access_token")
    }

    /// The key IDs of the access-token signing keys, newest first.
    pub fn signing_key_ids(&self) -> anyhow::Result<Vec<String>> {
        let set = expect_json(
            http::get(&format!("{}/admin/keys/{ACCESS_TOKEN_KEY_SET}", self.admin_url()))?,
            200,
            "GET the access-token key set",
        )?;
        set["keys"]
            .as_array()
            .ok_or_else(|| anyhow!("no keys in {set}"))?
            .iter()
            .map(|k| string_field(k, "kid"))
            .collect()
    }

    /// Rotates the access-token signing key: a new RS256 key `kid` is made (`POST /admin/keys/SET`) and the
    /// previous ones are deleted. Hydra signs with the newest key of the set (by creation time); deleting the
    /// old ones makes the new key the only one, whatever the resolution of that time.
    pub fn rotate_signing_key(&self, kid: &str) -> anyhow::Result<()> {
        let old = self.signing_key_ids()?;
        let body = json!({ "alg": "RS256", "use": "sig", "kid": kid }).to_string();
        let resp = http::request(
            "POST",
            &format!("{}/admin/keys/{ACCESS_TOKEN_KEY_SET}", self.admin_url()),
            &["Content-Type: application/json"],
            body.as_bytes(),
        )?;
        expect_json(resp, 201, "POST a new access-token key")?;
        for old_kid in old.iter().filter(|k| *k != kid) {
            let resp = http::request(
                "DELETE",
                &format!("{}/admin/keys/{ACCESS_TOKEN_KEY_SET}/{old_kid}", self.admin_url()),
                &[],
                b"",
            )?;
            ensure!(
                resp.status == 204,
                "DELETE key {old_kid}: {} {}",
                resp.status,
                resp.text()
            );
        }
        Ok(())
    }
}

/// Hydra's token hook (`tests/mcp/hydra_token_hook.py`): the group directory of machine clients. Hydra, started
/// with [`TokenHook::hydra_config`], asks it at every token request; it gives a client_credentials token of a
/// client it lists that client's groups, as the top-level claim `groups`. Killed on drop.
pub struct TokenHook {
    pub proc: Proc,
    pub port: u16,
    directory: tempfile::NamedTempFile,
}

impl TokenHook {
    pub fn start() -> anyhow::Result<TokenHook> {
        let directory = tempfile::NamedTempFile::new()?;
        std::fs::write(directory.path(), "{}")?;
        let port = tools::free_port();
        let mut cmd = Command::new(tools::python());
        cmd.arg(testkit::mcp::scripts_dir().join("hydra_token_hook.py"))
            .arg(format!("--port={port}"))
            .arg("--directory")
            .arg(directory.path());
        let mut proc = Proc::spawn("hydra-token-hook", cmd)?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        while testkit::process::wait_for_tcp(addr, Duration::from_millis(250)).is_err() {
            proc.ensure_running()?;
            ensure!(
                Instant::now() < deadline,
                "the token hook does not listen on {addr}:\n{}",
                tail(&proc.logs(), 20)
            );
        }
        Ok(TokenHook {
            proc,
            port,
            directory,
        })
    }

    /// Hydra's config for this hook: it is called for every grant, and `groups` is a top-level claim of access
    /// tokens (Hydra keeps custom claims under `ext` unless `oauth2.allowed_top_level_claims` names them; with
    /// `mirror_top_level_claims` off they are not copied into `ext` as well).
    pub fn hydra_config(&self) -> Value {
        json!({
            "oauth2": {
                "allowed_top_level_claims": ["groups"],
                "mirror_top_level_claims": false,
                "token_hook": { "url": format!("http://127.0.0.1:{}/token-hook", self.port) },
            }
        })
    }

    /// Lists clients in the directory (replacing it): their client_credentials tokens carry these groups.
    pub fn set_groups(&self, groups: &[(&OAuthClient, &[&str])]) -> anyhow::Result<()> {
        let directory: serde_json::Map<String, Value> = groups
            .iter()
            .map(|(client, groups)| (client.id.clone(), json!(groups)))
            .collect();
        std::fs::write(self.directory.path(), Value::Object(directory).to_string())?;
        Ok(())
    }
}

/// The JOSE header of a JWT (not verified).
pub fn jwt_header(token: &str) -> anyhow::Result<Value> {
    jwt_part(token, 0)
}

/// The claims of a JWT (not verified).
pub fn jwt_claims(token: &str) -> anyhow::Result<Value> {
    jwt_part(token, 1)
}

fn jwt_part(token: &str, index: usize) -> anyhow::Result<Value> {
    let part = token
        .split('.')
        .nth(index)
        .ok_or_else(|| anyhow!("not a JWT: {} parts", token.split('.').count()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .context("JWT part is not base64url")?;
    serde_json::from_slice(&bytes).context("JWT part is not JSON")
}

/// `aud` as a list (a string or an array).
pub fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// `application/x-www-form-urlencoded` escaping of one value (RFC 3986 unreserved characters kept).
pub fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn expect_json(resp: Response, status: u16, what: &str) -> anyhow::Result<Value> {
    ensure!(
        resp.status == status,
        "{what}: status {} (expected {status}): {}",
        resp.status,
        resp.text()
    );
    resp.json().with_context(|| what.to_owned())
}

fn string_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no string {name:?} in {v}"))
}

/// What one run of `tests/mcp/py_oauth_client.py` or `ts_oauth_client.cjs` reported.
#[derive(Debug, Clone)]
pub struct OAuthRun {
    pub exit_code: Option<i32>,
    /// The JSON line the script printed: `ok`, `call`, `exchanges` (every HTTP exchange of the MCP client:
    /// `method`, `url` without query, `bearer`, `status`, `www_authenticate`, `form` of a token request),
    /// `token_header`, `token_claims`, and for authorization code `user` (the user's steps at Hydra).
    pub report: Value,
    pub output: String,
}

impl OAuthRun {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && self.report["ok"] == Value::Bool(true)
    }

    /// Panics with the report and output unless the run succeeded.
    pub fn assert_ok(&self, what: &str) {
        assert!(
            self.ok(),
            "{what}: client failed: {}\n{}",
            serde_json::to_string_pretty(&self.report).unwrap_or_default(),
            tail(&self.output, 30)
        );
    }

    pub fn exchanges(&self) -> Vec<Value> {
        self.report["exchanges"].as_array().cloned().unwrap_or_default()
    }

    /// The token requests the SDK sent to `token_endpoint` (their forms).
    pub fn token_requests(&self, token_endpoint: &str) -> Vec<Value> {
        self.exchanges()
            .into_iter()
            .filter(|e| e["method"] == "POST" && e["url"] == token_endpoint)
            .map(|e| e["form"].clone())
            .collect()
    }
}

/// Which OAuth client to run.
#[derive(Debug, Clone)]
pub enum OAuthFlow<'a> {
    /// The Python SDK's `ClientCredentialsOAuthProvider` (it asks for the scope the 401 names).
    PythonClientCredentials { client: &'a OAuthClient },
    /// The TypeScript SDK's `ClientCredentialsProvider`; it asks for the scope it is configured with (1.32.2 does
    /// not take the scope from the 401 or the resource metadata for client credentials).
    TypeScriptClientCredentials { client: &'a OAuthClient, scope: &'a str },
    /// The Python SDK's `OAuthClientProvider` (authorization code + PKCE), the script playing `subject` at
    /// Hydra; its consent grants the access token the session claim `groups` when given (a top-level claim where
    /// Hydra's `oauth2.allowed_top_level_claims` names it).
    PythonAuthorizationCode {
        client: &'a OAuthClient,
        redirect_uri: &'a str,
        subject: &'a str,
        groups: &'a [&'a str],
    },
}

/// Runs an OAuth MCP client against `url` (the guard's `/mcp`) with tokens from `hydra`, calling `tool` with
/// `arguments`; `initial_token` (Python only) is a token the client starts with.
pub fn run_oauth_client(
    hydra: &Hydra,
    flow: &OAuthFlow,
    url: &str,
    tool: &str,
    arguments: &Value,
    initial_token: Option<&str>,
) -> anyhow::Result<OAuthRun> {
    let scripts = testkit::mcp::scripts_dir();
    let (mut cmd, client) = match flow {
        OAuthFlow::PythonClientCredentials { client } | OAuthFlow::PythonAuthorizationCode { client, .. } => {
            let mut c = Command::new(tools::python());
            c.arg(scripts.join("py_oauth_client.py"));
            (c, *client)
        }
        OAuthFlow::TypeScriptClientCredentials { client, scope } => {
            let mut c = Command::new("node");
            c.arg(scripts.join("ts_oauth_client.cjs"))
                .env("NODE_PATH", tools::node_modules())
                .arg(format!("--scope={scope}"));
            (c, *client)
        }
    };
    cmd.arg(format!("--url={url}"))
        .arg(format!("--issuer={}", hydra.issuer()))
        .arg(format!("--client-id={}", client.id))
        .arg(format!("--call={tool}"))
        .arg(format!("--arguments={arguments}"));
    match flow {
        OAuthFlow::PythonAuthorizationCode {
            redirect_uri,
            subject,
            groups,
            ..
        } => {
            cmd.arg(format!("--redirect-uri={redirect_uri}"))
                .arg(format!("--hydra-admin={}", hydra.admin_url()))
                .arg(format!("--subject={subject}"));
            if !groups.is_empty() {
                cmd.arg(format!("--groups={}", groups.join(",")));
            }
        }
        _ => {
            let secret = client
                .secret
                .as_deref()
                .ok_or_else(|| anyhow!("client {} has no secret", client.id))?;
            // `=`: a generated secret may start with `-`.
            cmd.arg(format!("--client-secret={secret}"));
        }
    }
    if let Some(token) = initial_token {
        ensure!(
            !matches!(flow, OAuthFlow::TypeScriptClientCredentials { .. }),
            "only the Python client takes an initial token"
        );
        cmd.arg(format!("--initial-token={token}"));
    }
    let (exit_code, output) = testkit::mcp::run_bounded("oauth-client", cmd, testkit::mcp::CLIENT_TIMEOUT)?;
    let report = output
        .lines()
        .rev()
        .filter(|l| l.starts_with('{'))
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("ok").is_some())
        })
        .ok_or_else(|| {
            anyhow!(
                "the OAuth client printed no report (exit {exit_code:?}):\n{}",
                tail(&output, 40)
            )
        })?;
    Ok(OAuthRun {
        exit_code,
        report,
        output,
    })
}
