//! Prometheus metrics. Counters for the hot path are created once and kept, so counting is one atomic add; the
//! latency histogram is fixed buckets of atomics (prometheus-client's own takes a lock per observation).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use mcp_guard_config::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verdict: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// An issuer of the `auth` section, as configured (never anything from a token).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerResultLabels {
    issuer: String,
    result: &'static str,
}

/// A tool (bounded: see [`crate::audit`]) and what the guard decided about a call of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// What the request was: forwarded because allowed, refused, or forwarded in audit mode despite a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Rejected,
    Audited,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Rejected, Outcome::Audited];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Rejected => "rejected",
            Outcome::Audited => "audited",
        }
    }
}

/// Upper bounds of the latency buckets in seconds: from the guard's own refusals (well under a millisecond) to a
/// slow upstream. A forwarded request is timed to the upstream's response head, so a long SSE stream counts as
/// fast to start, not as slow.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A classic histogram of fixed buckets, each an atomic count; the sum is kept in nanoseconds.
#[derive(Debug)]
struct Latency {
    bounds_nanos: [u64; LATENCY_BUCKETS.len()],
    /// Per bucket (not cumulative), the last one for values above every bound (`+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    fn new() -> Self {
        Latency {
            bounds_nanos: LATENCY_BUCKETS.map(|s| (s * 1e9) as u64),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds_nanos.partition_point(|b| *b < nanos);
        // Relaxed: a scrape may see a bucket and the sum of slightly different instants, as with any histogram.
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
    }
}

/// Request latency by verdict, encoded as one histogram family with a `verdict` label.
#[derive(Clone, Debug)]
struct RequestDurations(Arc<[Latency; 3]>);

impl EncodeMetric for RequestDurations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (outcome, latency) in Outcome::ALL.iter().zip(self.0.iter()) {
            let labels = VerdictLabels {
                verdict: outcome.as_str(),
            };
            latency.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Kinds of upstream failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    Connect,
    Timeout,
    Request,
}

pub struct Metrics {
    registry: Registry,
    allowed: Counter,
    rejected: Vec<Counter>,
    audited: Vec<Counter>,
    upstream_errors: [Counter; 3],
    reloads_ok: Counter,
    reloads_failed: Counter,
    durations: RequestDurations,
    pub open_connections: Gauge,
    /// CORS preflights the guard answered itself.
    pub cors_preflights: Counter,
    pub open_streams: Gauge,
    pub rate_limit_tracked_clients: Gauge,
    pub allowed_hosts: Gauge,
    pub allowed_origins: Gauge,
    pub config_last_reload_ok: Gauge,
    auth_key_fetches: Family<IssuerResultLabels, Counter>,
    auth_keys: Family<IssuerLabels, Gauge>,
    auth_keys_fetched: Family<IssuerLabels, Gauge>,
    tool_calls: Family<ToolLabels, Counter>,
    /// Audit lines dropped because the writer's queue was full.
    pub audit_lines_dropped: Counter,
    responses_cut: Family<ReasonLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_guard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests checked by the guard, by verdict (allowed, rejected, audited) and reason",
            requests.clone(),
        );
        let allowed = requests
            .get_or_create(&RequestLabels {
                verdict: "allowed",
                reason: "none",
            })
            .clone();
        let per_reason = |verdict| {
            Reason::ALL
                .iter()
                .map(|r| {
                    requests
                        .get_or_create(&RequestLabels {
                            verdict,
                            reason: r.as_str(),
                        })
                        .clone()
                })
                .collect::<Vec<_>>()
        };
        let rejected = per_reason("rejected");
        let audited = per_reason("audited");

        let upstream = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failures talking to the upstream MCP server, by kind",
            upstream.clone(),
        );
        let upstream_errors = ["connect", "timeout", "request"]
            .map(|kind| upstream.get_or_create(&KindLabels { kind }).clone());

        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config file reloads, by result (ok, failed)",
            reloads.clone(),
        );
        let reloads_ok = reloads.get_or_create(&ResultLabels { result: "ok" }).clone();
        let reloads_failed = reloads.get_or_create(&ResultLabels { result: "failed" }).clone();

        let durations = RequestDurations(Arc::new(std::array::from_fn(|_| Latency::new())));
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to the guard's answer: its refusal, or the upstream's response head; by verdict",
            durations.clone(),
        );

        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let cors_preflights = Counter::default();
        registry.register(
            "cors_preflights",
            "CORS preflights from allowed origins that the guard answered itself (--cors)",
            cors_preflights.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "open_streams",
            "Responses currently streaming from the upstream to clients (SSE streams included)",
            open_streams.clone(),
        );
        let rate_limit_tracked_clients = Gauge::default();
        registry.register(
            "rate_limit_tracked_clients",
            "Clients whose rate-limit buckets and counters the guard keeps (bounded by maxTrackedClients)",
            rate_limit_tracked_clients.clone(),
        );
        let allowed_hosts = Gauge::default();
        registry.register(
            "allowed_hosts",
            "Host patterns in the live allowlist",
            allowed_hosts.clone(),
        );
        let allowed_origins = Gauge::default();
        registry.register(
            "allowed_origins",
            "Origin patterns in the live allowlist",
            allowed_origins.clone(),
        );
        let config_last_reload_ok = Gauge::default();
        registry.register(
            "config_last_reload_ok",
            "1 if the last attempt to load the config file succeeded, 0 if the guard runs on an older config",
            config_last_reload_ok.clone(),
        );
        config_last_reload_ok.set(1);
        let auth_key_fetches = Family::<IssuerResultLabels, Counter>::default();
        registry.register(
            "auth_key_fetches",
            "Fetches of a token issuer's keys (discovery and JWKS), by issuer and result (ok, failed)",
            auth_key_fetches.clone(),
        );
        let auth_keys = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "auth_keys",
            "Usable signature keys the guard holds of each token issuer it fetches keys from",
            auth_keys.clone(),
        );
        let auth_keys_fetched = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "auth_keys_fetched_timestamp_seconds",
            "When the keys of each token issuer were last fetched successfully (Unix time; age = time() - this)",
            auth_keys_fetched.clone(),
        );
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "tools/call calls in the audit log, by tool (the config's and the first 64 allowed; the rest as other) and decision (allowed, denied, audited)",
            tool_calls.clone(),
        );
        let audit_lines_dropped = Counter::default();
        registry.register(
            "audit_lines_dropped",
            "Audit log lines dropped because the queue to the writer was full (stdout not read fast enough)",
            audit_lines_dropped.clone(),
        );
        let responses_cut = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "responses_cut",
            "Responses cut after their head was sent (counted in requests as they began), by reason: upstream_unavailable (the upstream failed mid-body), list_not_filtered (an event the guard cannot filter, with access rules)",
            responses_cut.clone(),
        );
        // Both series from the start, so that a rate over them is defined before the first cut.
        for reason in [Reason::UpstreamUnavailable, Reason::ListNotFiltered] {
            let _ = responses_cut.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        Metrics {
            responses_cut,
            registry,
            tool_calls,
            audit_lines_dropped,
            allowed,
            rejected,
            audited,
            upstream_errors,
            reloads_ok,
            reloads_failed,
            durations,
            cors_preflights,
            open_connections,
            open_streams,
            rate_limit_tracked_clients,
            allowed_hosts,
            allowed_origins,
            config_last_reload_ok,
            auth_key_fetches,
            auth_keys,
            auth_keys_fetched,
        }
    }

    /// Counts a `tools/call` call the audit log records; `tool` is already bounded.
    pub fn tool_call(&self, tool: &str, decision: &'static str) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.to_owned(),
                decision,
            })
            .inc();
    }

    /// Counts a fetch of an issuer's keys; a good one also sets how many keys it holds and when.
    pub fn auth_key_fetch(&self, issuer: &str, ok: bool, keys: Option<&mcp_guard_config::auth::KeySet>) {
        let result = if ok { "ok" } else { "failed" };
        self.auth_key_fetches
            .get_or_create(&IssuerResultLabels {
                issuer: issuer.to_owned(),
                result,
            })
            .inc();
        let labels = IssuerLabels {
            issuer: issuer.to_owned(),
        };
        if let Some(keys) = keys {
            self.auth_keys.get_or_create(&labels).set(keys.len() as i64);
            let now = crate::keys::unix_now();
            self.auth_keys_fetched
                .get_or_create(&labels)
                .set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }

    /// Drops the gauges of an issuer the config no longer names.
    pub fn auth_issuer_gone(&self, issuer: &str) {
        let labels = IssuerLabels {
            issuer: issuer.to_owned(),
        };
        self.auth_keys.remove(&labels);
        self.auth_keys_fetched.remove(&labels);
    }

    pub fn request(&self, outcome: Outcome, reason: Option<Reason>) {
        let index = |r: Reason| Reason::ALL.iter().position(|x| *x == r).unwrap_or(0);
        match (outcome, reason) {
            (Outcome::Allowed, _) | (_, None) => self.allowed.inc(),
            (Outcome::Rejected, Some(r)) => self.rejected[index(r)].inc(),
            (Outcome::Audited, Some(r)) => self.audited[index(r)].inc(),
        };
    }

    /// Counts a response cut after its head was sent.
    pub fn response_cut(&self, reason: Reason) {
        self.responses_cut
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Times a request from `started` (when its head was read) to now, under its verdict.
    pub fn request_duration(&self, outcome: Outcome, started: Instant) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.durations.0[i].observe(started.elapsed());
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].inc();
    }

    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.inc();
            self.config_last_reload_ok.set(1);
        } else {
            self.reloads_failed.inc();
            self.config_last_reload_ok.set(0);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The value of one sample line of the exposition, e.g. `mcp_guard_request_duration_seconds_count{verdict="allowed"}`.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn latency_lands_in_the_first_bucket_at_or_above_it() {
        let latency = Latency::new();
        latency.observe(Duration::from_micros(500)); // exactly a bound: le is inclusive
        latency.observe(Duration::from_micros(501));
        latency.observe(Duration::from_millis(30));
        latency.observe(Duration::from_secs(60)); // above every bound
        let counts: Vec<u64> = latency
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 1, "{counts:?}");
        assert_eq!(counts[1], 1, "{counts:?}");
        assert_eq!(counts[6], 1, "0.05 bucket: {counts:?}");
        assert_eq!(counts[LATENCY_BUCKETS.len()], 1, "+Inf: {counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), 4);
    }

    #[test]
    fn durations_are_exposed_per_verdict_as_cumulative_buckets() {
        let metrics = Metrics::new();
        let long_ago = Instant::now() - Duration::from_millis(20);
        metrics.request_duration(Outcome::Rejected, long_ago);
        metrics.request_duration(Outcome::Rejected, Instant::now());
        metrics.request_duration(Outcome::Allowed, long_ago);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE mcp_guard_request_duration_seconds histogram"),
            "{text}"
        );
        let name = "mcp_guard_request_duration_seconds";
        assert_eq!(
            sample(&text, &format!("{name}_count{{verdict=\"rejected\"}}")),
            2.0
        );
        assert_eq!(
            sample(&text, &format!("{name}_count{{verdict=\"allowed\"}}")),
            1.0
        );
        assert_eq!(
            sample(&text, &format!("{name}_count{{verdict=\"audited\"}}")),
            0.0
        );
        // Cumulative: the 20 ms one is above le=0.01 and at or below le=0.025 (a loaded machine may add more
        // than 5 ms, so only +Inf and the sum's lower bound are exact).
        let rejected_sum = sample(&text, &format!("{name}_sum{{verdict=\"rejected\"}}"));
        assert!(rejected_sum >= 0.02, "{rejected_sum}");
        assert_eq!(
            sample(
                &text,
                &format!("{name}_bucket{{le=\"0.01\",verdict=\"allowed\"}}")
            ),
            0.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("{name}_bucket{{le=\"+Inf\",verdict=\"rejected\"}}")
            ),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("{name}_bucket{{le=\"+Inf\",verdict=\"allowed\"}}")
            ),
            1.0
        );
    }
}
