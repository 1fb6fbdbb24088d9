//! mcp-guard: a streaming reverse proxy that enforces a Host/Origin allowlist in front of an MCP server.
