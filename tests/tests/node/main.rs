//! The product on a real node, one scenario per module, all on one site ([`site`]): one control plane, one node
//! (with its NetworkPolicy enforcer) and one `helm install --wait` of the chart, started by the first scenario
//! and shared by the rest. A node takes 20 s to start and the install as long again, so a binary per scenario
//! spent most of its time on them.
//!
//! Each scenario is a `#[tokio::test]` that takes the site with `site::shared().await`, works in a namespace of
//! its own, and leaves cluster-wide objects as the others expect them (the chart's release, the `default`
//! MCPGuardPolicy). At most [`site::AT_ONCE`] scenarios run on the node at a time. Tests that need a node of their
//! own (teardown checks, another node set-up) stay binaries of their own: `node_smoke`, `node_network_policy`.
//! Run one scenario with `cargo test -p mcp-guard-tests --test node -- e2e::`.
#![allow(clippy::unwrap_used)]

#[path = "../chart_common/mod.rs"]
mod chart_common;
mod site;

mod access;
mod auth;
mod e2e;
mod scan;
mod sig_server;
