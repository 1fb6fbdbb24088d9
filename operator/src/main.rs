//! mcp-guard-operator: the controller (allowlists from Ingress/HTTPRoute/Service), the admission webhook
//! and the admin listener, in one process. See docs/operator.md.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mcp_guard_operator::admin::{self, AdminState};
use mcp_guard_operator::cli::{Cli, Command, init_logging, shutdown_signal};
use mcp_guard_operator::controller::ControllerReadiness;
use mcp_guard_operator::metrics::ControllerMetrics;
use mcp_guard_operator::run::{ControllerOptions, run_controller, wait_true};
use mcp_guard_operator::{webhook, webhook_check};
use tokio::sync::watch;
use tracing::{error, info};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (set KUBECONFIG or run in a pod)")?;
    if let Some(Command::CheckWebhooks(args)) = &cli.command {
        let namespace = args
            .namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string());
        webhook_check::wait_for_webhooks(
            client,
            &namespace,
            Duration::from_secs(args.timeout_seconds),
            Duration::from_secs(args.interval_seconds.max(1)),
        )
        .await?;
        return Ok(());
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut registry = prometheus_client::registry::Registry::default();
    let mut readiness: Vec<admin::ReadinessCheck> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();

    if !cli.no_controller {
        let metrics = ControllerMetrics::default();
        metrics.register(&mut registry);
        let ready = ControllerReadiness::default();
        readiness.push((
            "controller".into(),
            Arc::new({
                let ready = ready.clone();
                move || ready.is_ready()
            }),
        ));
        let options = ControllerOptions {
            settings: cli.controller_settings(),
            lease: cli.lease_settings(client.default_namespace()),
        };
        let (client, shutdown) = (client.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            run_controller(client, options, metrics, ready, shutdown)
                .await
                .context("controller")
        });
    }

    // The admission webhook (operator/src/webhook.rs, docs/webhook.md): served by every replica. A bad
    // certificate pair or a busy port stops start-up here with the reason.
    if !cli.no_webhook {
        let metrics = webhook::WebhookMetrics::default();
        metrics.register(&mut registry);
        let settings = webhook::WebhookSettings {
            default_sidecar_image: cli.default_sidecar_image.clone(),
            native_sidecars: None,
            // The operator's own namespace is never injected.
            excluded_namespaces: std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
                .into_iter()
                .collect(),
        };
        let state = webhook::WebhookState::start(client.clone(), settings, metrics).await;
        let server = webhook::WebhookServer::bind(
            cli.webhook_listen,
            &cli.tls_cert_file,
            &cli.tls_key_file,
            state.clone(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot serve the admission webhook on --webhook-listen {}",
                cli.webhook_listen
            )
        })?;
        readiness.push(("webhook".into(), Arc::new(move || state.is_synced())));
        let shutdown = wait_true(shutdown_rx.clone());
        tasks.spawn(async move {
            server.run(shutdown).await;
            Ok(())
        });
    }

    let listener = admin::bind(cli.admin_listen)
        .await
        .with_context(|| format!("cannot listen on --admin-listen {}", cli.admin_listen))?;
    let admin_state = Arc::new(AdminState { registry, readiness });
    tokio::spawn(admin::serve(
        listener,
        admin_state,
        wait_true(shutdown_rx.clone()),
    ));

    info!(identity = %cli.identity(), "mcp-guard-operator started");
    let webhook_delay = match cli.no_webhook {
        true => Duration::ZERO,
        false => Duration::from_secs(cli.shutdown_delay_seconds),
    };
    let result = tokio::select! {
        () = stop_requested(webhook_delay) => Ok(()),
        Some(res) = tasks.join_next() => match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("task panicked: {e}")),
        },
    };
    let _ = shutdown_tx.send(true);
    let grace = Duration::from_secs(cli.shutdown_grace_seconds);
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        error!("graceful shutdown took longer than {grace:?}; exiting");
    }
    result
}

/// The first SIGTERM (or SIGINT), and then `webhook_delay` more of serving as before: a stopping pod leaves its
/// Service's endpoints at once, but kube-proxy and the API server learn so a moment later and may still send it
/// admission reviews, which must not fail. A second signal still exits at once.
async fn stop_requested(webhook_delay: Duration) {
    shutdown_signal().await;
    if !webhook_delay.is_zero() {
        info!(
            ?webhook_delay,
            "serving the webhook a while longer, until the endpoints no longer send reviews here"
        );
        tokio::time::sleep(webhook_delay).await;
    }
}
