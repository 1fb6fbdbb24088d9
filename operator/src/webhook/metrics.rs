//! Webhook metrics (Prometheus): admissions by webhook and result, injection skips by reason, latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `mutate-pods` or `validate-mcpserver`.
    pub webhook: String,
    /// `injected`, `skipped`, `allowed`, `denied`, `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

type HistogramCtor = fn() -> Histogram;

/// The webhook's metrics; register them once with [`WebhookMetrics::register`].
#[derive(Clone, Debug)]
pub struct WebhookMetrics {
    pub admissions: Family<AdmissionLabels, Counter>,
    pub skips: Family<SkipLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram, HistogramCtor>,
    pub tls_reloads: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms .. ~0.8 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 14))
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self {
            admissions: Family::default(),
            skips: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as HistogramCtor),
            tls_reloads: Family::default(),
        }
    }
}

impl WebhookMetrics {
    /// Registers under `mcp_guard_webhook_*`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("mcp_guard_webhook");
        sub.register(
            "admissions",
            "Admission reviews answered, by webhook and result",
            self.admissions.clone(),
        );
        sub.register(
            "injection_skips",
            "Pods not injected, by reason",
            self.skips.clone(),
        );
        sub.register(
            "admission_duration_seconds",
            "Time to answer an admission review",
            self.duration.clone(),
        );
        sub.register(
            "tls_reloads",
            "Webhook certificate reloads, by result",
            self.tls_reloads.clone(),
        );
    }

    pub(crate) fn admission(&self, webhook: &str, result: &str) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                webhook: webhook.into(),
                result: result.into(),
            })
            .inc();
    }

    pub(crate) fn skip(&self, reason: &str) {
        self.skips
            .get_or_create(&SkipLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub(crate) fn observe(&self, webhook: &str, seconds: f64) {
        self.duration
            .get_or_create(&WebhookLabels {
                webhook: webhook.into(),
            })
            .observe(seconds);
    }

    pub(crate) fn tls_reload(&self, ok: bool) {
        self.tls_reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }
}
