"""A small MCP client (MCP Python SDK 2.x) for the example server: connects, lists the tools, asks for a forecast.

    python client.py --url http://127.0.0.1:8000/mcp [--header 'Host: weather.example.com'] [--header 'Origin: ...']

Prints one JSON line: {"ok": true, "server": ..., "tools": [...], "forecast": "..."} or, when the server (or the
guard in front of it) refuses, {"ok": false, "status": 421, "body": "...", "error": "..."} with exit code 1.
"""

import argparse
import json
import sys

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

REJECTION: dict = {}


async def run(args: argparse.Namespace) -> dict:
    headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in args.header)}

    async def record_rejection(response: httpx2.Response) -> None:
        if response.status_code >= 400 and "status" not in REJECTION:
            await response.aread()
            REJECTION.update(status=response.status_code, body=response.text)

    http = httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(10, read=30), event_hooks={"response": [record_rejection]}
    )
    out: dict = {"ok": False}
    with anyio.fail_after(args.timeout):
        async with Client(streamable_http_client(args.url, http_client=http), mode="legacy") as client:
            out["server"] = client.server_info.name if client.server_info else None
            out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            res = await client.call_tool("forecast", {"city": args.city})
            out["forecast"] = "".join(c.text for c in res.content if isinstance(c, types.TextContent))
            out["ok"] = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--city", default="Lisbon")
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - report every failure as JSON
        out = {"ok": False, "error": repr(exc)[:500], **REJECTION}
    print(json.dumps(out), flush=True)
    sys.exit(0 if out.get("ok") else 1)


if __name__ == "__main__":
    main()
