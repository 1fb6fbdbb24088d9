"""A real MCP server built on the MCP Python SDK (PyPI `mcp`, 2.x), used by mcp-guard's end-to-end tests.

It keeps the SDK's defaults unless told otherwise: bound to 127.0.0.1 the SDK switches on its own
localhost-only Host/Origin protection, which is exactly the configuration that must keep working
behind the guard. Bound to 0.0.0.0 it accepts any Host and Origin (the unprotected case).

    python py_server.py --transport streamable-http|sse --port N [--host 127.0.0.1] [--whoami]
"""

import argparse
import json

import anyio

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("mcp-guard-e2e")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return f"echo: {text}"


@server.tool()
async def countdown(n: int, ctx: Context, delay_ms: int = 150) -> str:
    """Emit n progress notifications and n log messages, delay_ms apart, then return.

    The pauses make the notifications leave the server as separate SSE events over time, so a proxy
    that buffered the response would be visible to the client (everything arriving at once)."""
    for i in range(1, n + 1):
        await ctx.report_progress(i, n, f"step {i} of {n}")
        await ctx.info(f"tick {i}")
        await anyio.sleep(delay_ms / 1000)
    return f"countdown {n} done"


def whoami(ctx: Context) -> str:
    """The identity the guard forwarded with this request (its mcp-guard-* headers) and whether an
    Authorization header reached the server, as JSON."""
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    identity = {k: v for k, v in headers.items() if k.startswith("mcp-guard-")}
    return json.dumps({"identity": identity, "authorization": "authorization" in headers}, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--sse-ping-interval",
        type=float,
        help="seconds between the SSE keep-alive comments of a 2026-07-28 response stream (the SDK's default: 15)",
    )
    parser.add_argument(
        "--whoami",
        action="store_true",
        help="also offer the tool `whoami` (the OAuth tests: what the guard forwarded about the caller)",
    )
    args = parser.parse_args()
    if args.whoami:
        server.tool()(whoami)
    if args.sse_ping_interval is not None:
        # The SDK reads this module constant each time it waits, so a shorter period applies to every stream.
        import mcp.server._streamable_http_modern as modern

        modern._SSE_PING_INTERVAL = args.sse_ping_interval
    # Only host and port are passed: everything else (including transport_security) stays at the SDK default.
    server.run(args.transport, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
