//! mcp-guard-operator: derives each MCPServer's Host/Origin allowlist from the cluster and injects the guard.
//!
//! Pure core, thin IO shell: [`allowlist`] derives an allowlist from plain objects, [`validate`] checks a spec;
//! [`controller`] fetches (from reflector caches), calls them and writes the ConfigMap, status and Events.

pub mod admin;
pub mod allowlist;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod crd_reference;
pub mod events;
pub mod gateway;
pub mod leader;
pub mod metrics;
pub mod netpol;
pub mod preflight;
pub mod run;
pub mod selector;
pub mod status;
pub mod validate;
pub mod webhook;
pub mod webhook_check;
