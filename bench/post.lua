-- wrk script: an MCP-shaped POST (JSON-RPC tools/call) with an allowed Host and Origin.
wrk.method = "POST"
-- MCP_GUARD_BENCH_BODY replaces the body (bench.py's list measure sends tools/list).
wrk.body = os.getenv("MCP_GUARD_BENCH_BODY")
  or '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'
wrk.headers["Host"] = "mcp.example.test"
wrk.headers["Origin"] = "https://app.example.test"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
-- A bearer token (bench.py makes one): every target gets it; only the guard with authentication on checks it.
local authorization = os.getenv("MCP_GUARD_BENCH_AUTHORIZATION")
if authorization then
  wrk.headers["Authorization"] = authorization
end
