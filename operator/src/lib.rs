//! mcp-guard-operator: derives each MCPServer's Host/Origin allowlist from the cluster and injects the guard.
