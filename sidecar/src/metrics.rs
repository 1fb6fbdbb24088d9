//! Prometheus metrics. Counters for the hot path are created once and kept, so counting is one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
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
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// What the request was: forwarded because allowed, refused, or forwarded in audit mode despite a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Rejected,
    Audited,
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
    pub open_connections: Gauge,
    pub open_streams: Gauge,
    pub rate_limit_tracked_clients: Gauge,
    pub allowed_hosts: Gauge,
    pub allowed_origins: Gauge,
    pub config_last_reload_ok: Gauge,
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

        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
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
        Metrics {
            registry,
            allowed,
            rejected,
            audited,
            upstream_errors,
            reloads_ok,
            reloads_failed,
            open_connections,
            open_streams,
            rate_limit_tracked_clients,
            allowed_hosts,
            allowed_origins,
            config_last_reload_ok,
        }
    }

    pub fn request(&self, outcome: Outcome, reason: Option<Reason>) {
        let index = |r: Reason| Reason::ALL.iter().position(|x| *x == r).unwrap_or(0);
        match (outcome, reason) {
            (Outcome::Allowed, _) | (_, None) => self.allowed.inc(),
            (Outcome::Rejected, Some(r)) => self.rejected[index(r)].inc(),
            (Outcome::Audited, Some(r)) => self.audited[index(r)].inc(),
        };
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
