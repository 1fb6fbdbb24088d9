//! mcp-guard-operator: derives each MCPServer's Host/Origin allowlist from the cluster and injects the guard.
//!
//! Pure core, thin IO shell: [`allowlist`] derives an allowlist from plain objects, [`validate`] checks a spec;
//! [`controller`] fetches (from reflector caches), calls them and writes the ConfigMap, status and Events.

pub mod crd;
pub mod validate;
pub mod webhook;
