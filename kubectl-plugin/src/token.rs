//! `explain --token-file FILE`: whether the guard would accept a bearer token, by the guard's own check
//! (mcp-guard-config's `AuthPolicy::authenticate` and `authorize`) on the `auth` section the operator wrote, with
//! the keys in that section (the cluster's service-account issuer) or given with `--jwks`. When it refuses, the
//! token's claims (read, not trusted) are set beside what the guard expects. The token itself is never printed.

use std::fmt::Write as _;
use std::sync::Arc;

use mcp_guard_config::auth::{Credentials, Jwt, KeySet, KeySource, canonical_audience};
use mcp_guard_config::{AuthConfig, Authority};

/// Keys given on the command line (`--jwks FILE`), for every issuer that has none inline.
pub struct GivenKeys(pub Option<Arc<KeySet>>);

impl KeySource for GivenKeys {
    fn keys(&self, _: &str) -> Option<Arc<KeySet>> {
        self.0.clone()
    }
}

/// The token from a file (`-`: stdin), without surrounding whitespace or a `Bearer ` prefix.
pub fn read_token(path: &str) -> anyhow::Result<String> {
    let text = match path {
        "-" => std::io::read_to_string(std::io::stdin())?,
        p => std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading the token from {p}: {e}"))?,
    };
    let token = text.trim();
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token);
    anyhow::ensure!(!token.is_empty(), "the token file {path} is empty");
    Ok(token.to_string())
}

/// The guard's decision on `token` sent to `host` (with the calls a request makes, for scopes: `(method,
/// tool)`), written for people. `true`: accepted.
pub fn explain(
    auth: Option<&AuthConfig>,
    host: &str,
    token: &str,
    keys: &GivenKeys,
    calls: &[(Option<&str>, Option<&str>)],
    now: u64,
) -> (bool, String, Option<mcp_guard_config::auth::Identity>) {
    let mut out = String::from("\nAuthentication:\n");
    let Some(auth) = auth else {
        out.push_str("  off: the guard checks no tokens (set spec.auth on the MCPServer or enabled: true in its policy)\n");
        return (true, out, None);
    };
    let policy = match auth.compile() {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(
                out,
                "  cannot tell: the auth section is invalid ({e}); the guard keeps its last config"
            );
            return (false, out, None);
        }
    };
    let resource = Authority::parse(host).ok().and_then(|a| policy.resource_for(&a));
    let Some(resource) = resource else {
        let _ = writeln!(
            out,
            "  Verdict: refused (no_resource_for_host): {host:?} is none of the server's resource URIs: {}",
            auth.resources.join(", ")
        );
        return (false, out, None);
    };
    let _ = writeln!(out, "  Resource URI of this host: {}", resource.uri);
    let header = format!("Bearer {token}");
    let credentials = Credentials {
        authorization: &[header.as_bytes()],
        query: None,
    };
    let verdict = policy
        .authenticate(credentials, &resource, keys, now)
        .and_then(|identity| {
            let calls = calls.iter().copied();
            policy.authorize(&identity, calls).map(|()| identity)
        });
    match verdict {
        Ok(identity) => {
            let _ = writeln!(out, "  Verdict: accepted");
            let _ = writeln!(out, "  issuer:  {}", identity.issuer);
            if let Some(sa) = &identity.service_account {
                let _ = writeln!(out, "  service account: {sa} (header mcp-guard-service-account)");
            }
            for (what, v) in [("subject", &identity.subject), ("client id", &identity.client_id)] {
                if let Some(v) = v {
                    let _ = writeln!(out, "  {what}: {v}");
                }
            }
            if !identity.scopes.is_empty() {
                let _ = writeln!(out, "  scopes:  {}", identity.scopes.join(" "));
            }
            (true, out, Some(identity))
        }
        Err(denial) => {
            let d = denial.denial();
            let _ = writeln!(
                out,
                "  Verdict: refused with {} {}: {}",
                d.status(),
                d.reason.as_str(),
                denial.received
            );
            if let Some(detail) = &denial.detail {
                let _ = writeln!(out, "    {detail}");
            }
            if let Some(scope) = &denial.scope {
                let _ = writeln!(out, "    the request needs the scopes: {scope}");
            }
            if denial.error == mcp_guard_config::auth::AuthError::KeysUnavailable {
                let _ = writeln!(
                    out,
                    "    the guard fetches this issuer's keys itself; to check the signature here, pass \
                     --jwks FILE with its JWKS (curl its jwks_uri)"
                );
            }
            claims(&mut out, auth, token, &resource.uri, now);
            (false, out, None)
        }
    }
}

/// The token's claims (unverified) beside what the guard expects of them.
fn claims(out: &mut String, auth: &AuthConfig, token: &str, resource: &str, now: u64) {
    let Ok(jwt) = Jwt::decode(token) else {
        let _ = writeln!(out, "  The token is not a JWT the guard can read.");
        return;
    };
    let _ = writeln!(out, "  The token says (not verified):");
    let iss = jwt.string("iss").unwrap_or("(none)");
    let trusted: Vec<&str> = auth.issuers.iter().map(|i| i.issuer.as_str()).collect();
    let mark = |ok: bool| if ok { "ok" } else { "MISMATCH" };
    let issuer = auth.issuers.iter().find(|i| i.issuer == iss);
    let _ = writeln!(
        out,
        "    iss {iss:?} [{}]  trusted: {}",
        mark(issuer.is_some()),
        trusted.join(", ")
    );
    let algs_ok =
        issuer.is_none_or(|i| i.algorithms.is_empty() || i.algorithms.iter().any(|a| a == jwt.alg.as_str()));
    let _ = writeln!(out, "    alg {} [{}]", jwt.alg, mark(algs_ok));
    let audiences = jwt.audiences().unwrap_or_default();
    let extra: Vec<String> = issuer
        .map(|i| i.audiences.iter().map(|a| canonical_audience(a)).collect())
        .unwrap_or_default();
    let aud_ok = audiences.iter().any(|a| {
        let a = canonical_audience(a);
        a == resource || extra.contains(&a)
    });
    let _ = writeln!(
        out,
        "    aud {:?} [{}]  expected: {resource}{}",
        audiences,
        mark(aud_ok),
        if extra.is_empty() {
            String::new()
        } else {
            format!(" or {}", extra.join(", "))
        }
    );
    match jwt.time("exp") {
        Ok(Some(exp)) if exp < now => {
            let _ = writeln!(out, "    exp {}s ago [MISMATCH]", now - exp);
        }
        Ok(Some(exp)) => {
            let _ = writeln!(out, "    exp in {}s [ok]", exp - now);
        }
        _ => {
            let _ = writeln!(out, "    exp missing [MISMATCH]");
        }
    }
    if let Ok(Some(nbf)) = jwt.time("nbf")
        && nbf > now
    {
        let _ = writeln!(out, "    nbf in {}s [MISMATCH]", nbf - now);
    }
    let scopes = jwt.scopes();
    if !scopes.is_empty() {
        let _ = writeln!(out, "    scope {:?}", scopes.join(" "));
    }
    let sa = jwt.claims.get("kubernetes.io").and_then(|k| {
        Some(format!(
            "{}/{}",
            k.get("namespace")?.as_str()?,
            k.get("serviceaccount")?.get("name")?.as_str()?
        ))
    });
    if let Some(sa) = sa {
        let _ = writeln!(
            out,
            "    service account {sa}  allowed: {}",
            if auth.service_accounts.is_empty() {
                "every one".to_string()
            } else {
                auth.service_accounts.join(", ")
            }
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mcp_guard_config::IssuerConfig;
    use mcp_guard_config::auth::testing::{TestKey, jwks};
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn auth(key: &TestKey) -> AuthConfig {
        AuthConfig {
            resources: vec!["https://mcp.example.com/mcp".into()],
            issuers: vec![
                IssuerConfig {
                    issuer: "https://idp.example.com".into(),
                    ..Default::default()
                },
                IssuerConfig {
                    issuer: "https://kubernetes.default.svc.cluster.local".into(),
                    jwks: Some(jwks(&[key])),
                    kubernetes: true,
                    ..Default::default()
                },
            ],
            service_accounts: vec!["team-a/agent".into()],
            tool_scopes: [("deploy".to_string(), vec!["deploy:write".to_string()])].into(),
            ..Default::default()
        }
    }

    fn sa_token(key: &TestKey, sa: &str, aud: &str, exp: u64) -> String {
        key.sign(&json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "aud": [aud], "exp": exp, "sub": format!("system:serviceaccount:team-a:{sa}"),
            "kubernetes.io": { "namespace": "team-a", "serviceaccount": { "name": sa } }
        }))
    }

    #[test]
    fn a_token_is_judged_by_the_guards_check_and_never_printed() {
        let key = TestKey::rs256("k1");
        let auth = auth(&key);
        let none = GivenKeys(None);
        let good = sa_token(&key, "agent", "https://mcp.example.com/mcp", NOW + 60);
        let (ok, text, _) = explain(Some(&auth), "mcp.example.com", &good, &none, &[], NOW);
        assert!(ok, "{text}");
        assert!(text.contains("service account: team-a/agent"), "{text}");

        let cases = [
            (
                sa_token(&key, "other", "https://mcp.example.com/mcp", NOW + 60),
                "identity_not_allowed",
                "allowed: team-a/agent",
            ),
            (
                sa_token(&key, "agent", "https://elsewhere.example.com/mcp", NOW + 60),
                "token_audience_mismatch",
                "expected: https://mcp.example.com/mcp",
            ),
            (
                sa_token(&key, "agent", "https://mcp.example.com/mcp", NOW - 3600),
                "token_expired",
                "exp 3600s ago [MISMATCH]",
            ),
            (
                sa_token(
                    &TestKey::es256("k1"),
                    "agent",
                    "https://mcp.example.com/mcp",
                    NOW + 60,
                ),
                "invalid_token",
                "iss \"https://kubernetes.default.svc.cluster.local\" [ok]",
            ),
        ];
        for (token, reason, why) in cases {
            let (ok, text, _) = explain(Some(&auth), "mcp.example.com", &token, &none, &[], NOW);
            assert!(!ok, "{text}");
            assert!(text.contains(reason), "{reason}: {text}");
            assert!(text.contains(why), "{why}: {text}");
            assert!(!text.contains(&token), "the token is never printed");
        }
        // An issuer the guard fetches keys for: checked with --jwks, told how without.
        let idp = TestKey::es256("i1");
        let oauth = idp.sign(&json!({
            "iss": "https://idp.example.com", "aud": "https://mcp.example.com/mcp", "exp": NOW + 60,
            "client_id": "agent", "scope": "mcp"
        }));
        let (ok, text, _) = explain(Some(&auth), "mcp.example.com", &oauth, &none, &[], NOW);
        assert!(!ok && text.contains("--jwks"), "{text}");
        let given = GivenKeys(Some(Arc::new(
            KeySet::from_jwks_json(jwks(&[&idp]).to_string().as_bytes()).unwrap(),
        )));
        let (ok, text, _) = explain(Some(&auth), "mcp.example.com", &oauth, &given, &[], NOW);
        assert!(ok && text.contains("client id: agent"), "{text}");
        // Scopes of the call: step-up.
        let deploy = [(Some("tools/call"), Some("deploy"))];
        let (ok, text, _) = explain(Some(&auth), "mcp.example.com", &oauth, &given, &deploy, NOW);
        assert!(
            !ok && text.contains("insufficient_scope") && text.contains("deploy:write"),
            "{text}"
        );
        // A host that is no resource of the server.
        let (ok, text, _) = explain(Some(&auth), "other.example.com", &good, &none, &[], NOW);
        assert!(!ok && text.contains("no_resource_for_host"), "{text}");
        // Authentication off.
        assert!(explain(None, "mcp.example.com", &good, &none, &[], NOW).0);
    }
}
