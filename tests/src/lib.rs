//! Test harness: starts real components (a Kubernetes control plane, MCP servers, proxies) on 127.0.0.1.
//! See `docs/testing.md`.

pub mod browser;
pub mod cluster;
pub mod http;
pub mod mcp;
pub mod nginx;
pub mod node;
pub mod process;
pub mod tools;
