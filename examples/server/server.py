"""A small MCP server (MCP Python SDK 2.x, the API formerly called FastMCP) used by the mcp-guard examples.

It keeps the SDK's defaults: it listens on 127.0.0.1 only, with the SDK's own localhost-only Host/Origin check
on. That is exactly the configuration mcp-guard is for: the injected guard listens on the pod's IP at the same
port and is the server's only door.

    PORT=8000 python server.py
"""

import os
from datetime import datetime, timezone

from mcp.server.mcpserver import MCPServer

server = MCPServer("weather")

FORECASTS = {
    "amsterdam": "light rain, 12 C",
    "lisbon": "sunny, 21 C",
    "oslo": "snow showers, -2 C",
}


@server.tool()
def forecast(city: str) -> str:
    """Tomorrow's forecast for a city."""
    return f"{city}: {FORECASTS.get(city.lower(), 'cloudy, 15 C')}"


@server.tool()
def now() -> str:
    """The server's current time (UTC, ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


if __name__ == "__main__":
    # Only the port is configurable: the host stays 127.0.0.1, the SDK default.
    server.run("streamable-http", host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
