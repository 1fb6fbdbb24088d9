//! Test harness: starts real components (a Kubernetes control plane, MCP servers, proxies) on 127.0.0.1.
