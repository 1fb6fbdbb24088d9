//! The cluster's own service-account issuer: the operator reads the API server's OIDC discovery
//! (`/.well-known/openid-configuration`) and keys (`/openid/v1/jwks`) through its kube client, with its own
//! credentials, and the derivation writes them inline into the guard config of every MCPServer with
//! `auth.kubernetes: true`. So the guard needs neither egress to the API server nor an API token (the injected
//! pod's token stays as the pod has it), and a key rotation reaches every guard through the ConfigMap.
//!
//! The keys are refreshed every [`REFRESH`]; a failed fetch is retried sooner ([`RETRY`]) and keeps the last
//! keys. Each change wakes the MCPServers, whose status says when the issuer cannot be discovered.

use std::time::Duration;

use kube::Client;
use mcp_guard_config::auth::KeySet;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::auth::{ClusterIssuer, IssuerState};

/// How often the keys are fetched again after a success.
pub const REFRESH: Duration = Duration::from_secs(300);
/// How soon a failed fetch is retried.
pub const RETRY: Duration = Duration::from_secs(15);
/// How long one fetch may take (a reconcile waits for the first).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server's OIDC discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The API server's service-account keys (served at this path whatever `--service-account-jwks-uri` says).
pub const JWKS_PATH: &str = "/openid/v1/jwks";

/// Why the cluster's issuer could not be discovered.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("GET {path}: {source}")]
    Fetch {
        path: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("GET {path}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout { path: &'static str },
    #[error("{path} is not what the API server serves there: {why}")]
    Invalid { path: &'static str, why: String },
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
}

/// Reads the cluster's issuer and keys from the API server.
pub async fn discover(client: &Client) -> Result<ClusterIssuer, DiscoveryError> {
    let get = |path: &'static str| async move {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| DiscoveryError::Invalid {
                path,
                why: e.to_string(),
            })?;
        tokio::time::timeout(FETCH_TIMEOUT, client.request_text(request))
            .await
            .map_err(|_| DiscoveryError::Timeout { path })?
            .map_err(|source| DiscoveryError::Fetch { path, source })
    };
    let discovery = get(DISCOVERY_PATH).await?;
    let jwks = get(JWKS_PATH).await?;
    parse(&discovery, &jwks)
}

/// The issuer from a discovery document and its keys from a JWKS document, checked as the guard will read them.
pub fn parse(discovery: &str, jwks: &str) -> Result<ClusterIssuer, DiscoveryError> {
    let d: Discovery = serde_json::from_str(discovery).map_err(|e| DiscoveryError::Invalid {
        path: DISCOVERY_PATH,
        why: e.to_string(),
    })?;
    KeySet::from_jwks_json(jwks.as_bytes()).map_err(|e| DiscoveryError::Invalid {
        path: JWKS_PATH,
        why: e.to_string(),
    })?;
    let jwks = serde_json::from_str(jwks).map_err(|e| DiscoveryError::Invalid {
        path: JWKS_PATH,
        why: e.to_string(),
    })?;
    Ok(ClusterIssuer {
        issuer: d.issuer,
        jwks,
    })
}

/// The kubernetes issuer of a guard config the operator wrote before (its keys survive an operator restart
/// while the API server cannot be reached).
pub fn from_guard_config(json: &str) -> Option<ClusterIssuer> {
    let config = mcp_guard_config::GuardConfig::from_json(json.as_bytes()).ok()?;
    config
        .auth?
        .issuers
        .into_iter()
        .find(|i| i.kubernetes)
        .and_then(|i| {
            Some(ClusterIssuer {
                issuer: i.issuer,
                jwks: i.jwks?,
            })
        })
}

/// Fetches the issuer now and then, publishing each change of what is known (new keys, a failure, a recovery).
pub async fn refresh(client: Client, state: watch::Sender<IssuerState>) {
    loop {
        let result = discover(&client).await;
        let wait = match &result {
            Ok(_) => REFRESH,
            Err(_) => RETRY,
        };
        state.send_if_modified(|s| {
            let before = s.clone();
            s.attempted = true;
            match result {
                Ok(issuer) => {
                    if s.current.as_ref() != Some(&issuer) {
                        info!(issuer = %issuer.issuer, "fetched the cluster's service-account issuer keys");
                    }
                    s.current = Some(issuer);
                    s.error = None;
                }
                Err(e) => {
                    if s.error.is_none() {
                        warn!(error = %e, "cannot discover the cluster's service-account issuer; retrying");
                    }
                    s.error = Some(e.to_string());
                }
            }
            *s != before
        });
        tokio::time::sleep(wait).await;
    }
}

/// A JWKS document for tests (one RSA key).
#[cfg(test)]
pub(crate) const TEST_JWKS: &str = r#"{"keys":[{"use":"sig","kty":"RSA","kid":"k1","alg":"RS256","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}]}"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const JWKS: &str = TEST_JWKS;

    #[test]
    fn discovery_and_keys_are_read_as_the_guard_reads_them() {
        let issuer = parse(
            r#"{"issuer":"https://kubernetes.default.svc.cluster.local","jwks_uri":"https://x/openid/v1/jwks"}"#,
            JWKS,
        )
        .unwrap();
        assert_eq!(issuer.issuer, "https://kubernetes.default.svc.cluster.local");
        assert_eq!(issuer.jwks["keys"][0]["kid"], "k1");
        let no_keys = parse(r#"{"issuer":"https://k"}"#, r#"{"keys":[]}"#).unwrap_err();
        assert!(no_keys.to_string().contains("/openid/v1/jwks"), "{no_keys}");
        let not_discovery = parse("<html>", JWKS).unwrap_err();
        assert!(
            not_discovery
                .to_string()
                .contains("/.well-known/openid-configuration"),
            "{not_discovery}"
        );
    }

    #[test]
    fn keys_written_before_are_found_in_the_guard_config() {
        let json = format!(
            r#"{{"allowedHosts":["a"],"auth":{{"resources":["http://a/mcp"],"issuers":[
                {{"issuer":"https://idp"}},
                {{"issuer":"https://k8s","jwks":{JWKS},"kubernetes":true}}]}}}}"#
        );
        let found = from_guard_config(&json).unwrap();
        assert_eq!(found.issuer, "https://k8s");
        assert_eq!(from_guard_config(r#"{"allowedHosts":["a"]}"#), None);
        assert_eq!(from_guard_config("not json"), None);
    }
}
