//! The product on a real node, one scenario per module, all on one site ([`site`]): one control plane, one node
//! and one `helm install --wait` of the chart, started by the first scenario and shared by the rest. A node and
//! an install take about 40 s, which a binary per scenario paid each time.
//!
//! Each scenario is a `#[tokio::test]` that takes the site with `site::shared().await`, works in a namespace of
//! its own, and leaves cluster-wide objects as the others expect them (the chart's release, the `default`
//! MCPGuardPolicy). At most [`site::AT_ONCE`] scenarios run on the node at a time. Tests that need a node of their
//! own stay binaries of their own: teardown checks (`node_smoke`, `node_network_policy`) and the NetworkPolicy
//! enforcer (`node_network_policy`, `node_sig_server`): kube-router 2.1.0 refuses connections to the pods it
//! polices for a moment while it re-syncs after any pod change (seen here: kubelet probes and ClusterIP requests
//! refused right after another scenario's pod ended), which scenarios running beside each other cannot share.
//! Run one scenario with `cargo test -p mcp-guard-tests --test node -- e2e::`.
#![allow(clippy::unwrap_used)]

#[path = "../chart_common/mod.rs"]
mod chart_common;
mod site;

mod access;
mod auth;
mod dual_stack;
mod e2e;
mod scan;
