//! Controller metrics (Prometheus text format on the admin port's `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub reason: String,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~4 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// The controller's metrics; register them once with [`ControllerMetrics::register`].
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// Reconciles by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile duration in seconds.
    pub reconcile_duration: Histogram,
    /// Allowed hosts per MCPServer.
    pub allowlist_hosts: Family<ServerLabels, Gauge>,
    /// Allowed origins per MCPServer.
    pub allowlist_origins: Family<ServerLabels, Gauge>,
    /// MCPServers whose allowlist is empty.
    pub empty_allowlists: Gauge,
    /// 1 per MCPServer whose GuardBypass condition is True (the alert MCPGuardMissingFromPods reads it).
    pub guard_bypassed: Family<ServerLabels, Gauge>,
    /// Selected pods per MCPServer that run without the guard (the alert MCPGuardUnguardedPods reads it).
    pub unguarded_pods: Family<ServerLabels, Gauge>,
    /// MCP Services per namespace that no MCPServer selects (`fleet`; the alert MCPGuardUnguardedServers).
    pub unguarded_servers: Family<NamespaceLabels, Gauge>,
    /// Events published, by reason.
    pub events: Family<EventLabels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Leader elections won by this replica.
    pub leader_transitions: Counter,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_duration: duration_histogram(),
            allowlist_hosts: Family::default(),
            allowlist_origins: Family::default(),
            empty_allowlists: Gauge::default(),
            guard_bypassed: Family::default(),
            unguarded_pods: Family::default(),
            unguarded_servers: Family::default(),
            events: Family::default(),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
        }
    }
}

impl ControllerMetrics {
    /// Registers every metric under the `mcp_guard_operator_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mcp_guard_operator");
        r.register(
            "reconciles",
            "MCPServer reconciles by result",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time to reconcile one MCPServer",
            self.reconcile_duration.clone(),
        );
        r.register(
            "allowlist_hosts",
            "Allowed host patterns per MCPServer",
            self.allowlist_hosts.clone(),
        );
        r.register(
            "allowlist_origins",
            "Allowed origin patterns per MCPServer",
            self.allowlist_origins.clone(),
        );
        r.register(
            "empty_allowlists",
            "MCPServers with an empty allowlist",
            self.empty_allowlists.clone(),
        );
        r.register(
            "guard_bypassed",
            "1 while the MCPServer's GuardBypass condition is True: traffic can reach selected pods without its guard",
            self.guard_bypassed.clone(),
        );
        r.register(
            "unguarded_pods",
            "Pods the MCPServer selects that run without the guard (status.unguardedPods says how to inject it)",
            self.unguarded_pods.clone(),
        );
        r.register(
            "unguarded_servers",
            "MCP Services (appProtocol mcp, a port named mcp, another operator's MCP server) that no MCPServer selects, per namespace",
            self.unguarded_servers.clone(),
        );
        r.register(
            "events",
            "Kubernetes Events published, by reason",
            self.events.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
        r.register(
            "leader_acquisitions",
            "Times this replica became leader",
            self.leader_transitions.clone(),
        );
    }

    pub fn result(&self, ok: bool) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    /// Reconciles counted so far with this result (`ok`/`error`).
    pub fn reconcile_count(&self, result: &str) -> u64 {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .get()
    }
}
