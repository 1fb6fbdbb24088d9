//! `mcp-guard-operator check-webhooks`: waits until the admission webhooks answer through the API server.
//!
//! A Deployment is Ready before its Service routes to it (the EndpointSlice, then kube-proxy on every node), so
//! `helm install --wait` alone returns while `kubectl apply` of an MCPServer still fails with "failed calling
//! webhook … connection refused". The chart runs this command as a post-install/post-upgrade hook Job (as
//! cert-manager's `startupapicheck` does), so Helm returns only once the webhooks answer.
//!
//! The probe is a dry-run create of an MCPServer that the CRD schema accepts and the validating webhook refuses
//! (a host with userinfo): only the webhook's own refusal proves it answered, whatever its `failurePolicy`
//! (`Ignore` would let an unanswered call pass as a success). Dry-run: nothing is stored. Pods go through the
//! same Service and the same process, so one answer covers both webhooks.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::info;

use crate::crd::{MCPServer, MCPServerSpec};

/// The validating webhook's name as registered by the chart; the API server names it in a refusal.
pub const VALIDATING_WEBHOOK: &str = "validate.mcpserver.mcpguard.dev";

/// The host the probe carries: userinfo, which no allowlist may hold (`spec.hosts` is refused by the webhook,
/// never by the schema).
pub const PROBE_HOST: &str = "startup-check@mcp-guard.invalid";

/// What one probe showed.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// The validating webhook refused the probe: it answers through the API server.
    Answered,
    /// The API server could not reach the webhook (no endpoint yet, connection refused, TLS).
    Unreachable(String),
    /// The probe was admitted: the webhook is not registered yet, or `failurePolicy: Ignore` hid a failed call.
    NotCalled,
    /// Anything else (the CRD not served yet, RBAC): shown as it is.
    Failed(String),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Answered => write!(f, "the webhook {VALIDATING_WEBHOOK} answered"),
            Probe::Unreachable(m) => write!(f, "the API server cannot reach the webhook yet: {m}"),
            Probe::NotCalled => write!(
                f,
                "the API server admitted the probe without the webhook {VALIDATING_WEBHOOK} refusing it \
                 (not registered yet, or failurePolicy Ignore hid a failed call)"
            ),
            Probe::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// The MCPServer the probe sends: valid to the schema, refused by the webhook for [`PROBE_HOST`].
pub fn probe_object(namespace: &str) -> MCPServer {
    MCPServer {
        metadata: ObjectMeta {
            name: Some("mcp-guard-webhook-check".into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: MCPServerSpec {
            selector: LabelSelector {
                match_labels: Some([("mcpguard.dev/webhook-check".into(), "true".into())].into()),
                ..LabelSelector::default()
            },
            port: 8080,
            hosts: vec![PROBE_HOST.into()],
            ..MCPServerSpec::default()
        },
        status: None,
    }
}

/// Reads what the API server answered to the dry-run create.
pub fn classify<T>(answer: &Result<T, kube::Error>) -> Probe {
    match answer {
        Ok(_) => Probe::NotCalled,
        Err(kube::Error::Api(status)) => {
            let m = &status.message;
            if m.contains(&format!(
                "admission webhook \"{VALIDATING_WEBHOOK}\" denied the request"
            )) {
                Probe::Answered
            } else if m.contains("failed calling webhook") {
                Probe::Unreachable(m.clone())
            } else {
                Probe::Failed(format!("{} ({})", m, status.code))
            }
        }
        Err(e) => Probe::Failed(e.to_string()),
    }
}

/// The last reason, when the webhooks did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("the admission webhooks did not answer within {waited:?}; last: {last}")]
pub struct NotAnswering {
    pub waited: Duration,
    pub last: String,
}

/// Probes every `interval` until the webhook answers or `timeout` passes.
pub async fn wait_for_webhooks(
    client: kube::Client,
    namespace: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<(), NotAnswering> {
    let api = Api::<MCPServer>::namespaced(client, namespace);
    let probe = probe_object(namespace);
    let params = PostParams {
        dry_run: true,
        field_manager: Some("mcp-guard-webhook-check".into()),
    };
    let start = tokio::time::Instant::now();
    let mut last = String::new();
    loop {
        let outcome = classify(&api.create(&params, &probe).await);
        if outcome == Probe::Answered {
            info!(after = ?start.elapsed(), "{outcome}");
            return Ok(());
        }
        let text = outcome.to_string();
        if text != last {
            info!("not yet: {text}");
            last = text;
        }
        if start.elapsed() + interval > timeout {
            return Err(NotAnswering {
                waited: start.elapsed(),
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, message: &str) -> Result<(), kube::Error> {
        Err(kube::Error::Api(
            Status::failure(message, "").with_code(code).boxed(),
        ))
    }

    #[test]
    fn only_the_webhooks_own_refusal_counts_as_an_answer() {
        // The texts the API server writes (k8s.io/apiserver/pkg/admission/plugin/webhook/errors).
        let denied = "admission webhook \"validate.mcpserver.mcpguard.dev\" denied the request: \
                      spec.hosts[0]: userinfo is not allowed";
        assert_eq!(classify(&api_error(400, denied)), Probe::Answered);
        let refused = "Internal error occurred: failed calling webhook \"validate.mcpserver.mcpguard.dev\": \
                       failed to call webhook: Post \"https://mcp-guard-webhook.mcp-guard.svc:443/validate-mcpserver\": \
                       dial tcp 10.217.130.59:443: connect: connection refused";
        assert!(matches!(
            classify(&api_error(500, refused)),
            Probe::Unreachable(_)
        ));
        // Another webhook's refusal says nothing about ours.
        let other = "admission webhook \"policy.example.com\" denied the request: no";
        assert!(matches!(classify(&api_error(400, other)), Probe::Failed(_)));
        assert!(matches!(
            classify(&api_error(
                404,
                "the server could not find the requested resource"
            )),
            Probe::Failed(_)
        ));
        assert_eq!(classify::<()>(&Ok(())), Probe::NotCalled);
    }

    #[test]
    fn the_probe_is_refused_by_the_webhooks_checks() {
        let probe = probe_object("mcp-guard");
        let errors = crate::validate::validate_spec(&probe.spec);
        assert!(
            errors.iter().any(|e| e.field == "spec.hosts[0]"),
            "the webhook must refuse the probe for its host: {errors:?}"
        );
        // Nothing else in it is wrong: a refusal for another reason would still count, but would hide a change.
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
