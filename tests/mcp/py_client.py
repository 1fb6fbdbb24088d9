"""A real MCP client built on the MCP Python SDK, used by mcp-guard's end-to-end tests.

Connects (initialize handshake), lists tools, calls `echo`, calls `countdown` and collects the
progress and log notifications streamed while it runs. Prints one JSON line on stdout:

    {"ok": true, "tools": [...], "echo": "...", "countdown": "...", "progress": [...], "logs": [...]}
    {"ok": false, "error": "...", "status": 421, "body": "..."}   (exit code 1)

    python py_client.py --transport streamable-http|sse --url URL [--header 'Name: value']...
        [--local-address 127.0.0.2]   (connect from another loopback address: another client to the guard)

With `--call TOOL --arguments JSON` it calls that tool instead of `echo` and `countdown` (for servers other than
the tests' own, such as the examples' weather server) and reports its text as "call".
"""

import argparse
import json
import sys
import time

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


REJECTION: dict = {}


def leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(leaf_errors(sub))
        return out
    chained = exc.__cause__ or exc.__context__
    return [exc] + (leaf_errors(chained) if chained is not None else [])


async def run(args: argparse.Namespace) -> dict:
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}

    async def record_rejection(response: httpx2.Response) -> None:
        # The SDK turns an HTTP error into a JSON-RPC error; keep what the peer actually answered.
        if response.status_code >= 400 and "status" not in REJECTION:
            await response.aread()
            REJECTION["status"] = response.status_code
            REJECTION["content_type"] = response.headers.get("content-type")
            REJECTION["body"] = response.text
            REJECTION["retry_after"] = response.headers.get("retry-after")

    def make_client(**kwargs) -> httpx2.AsyncClient:
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **headers}
        if args.local_address:
            kwargs["transport"] = httpx2.AsyncHTTPTransport(local_address=args.local_address)
        return httpx2.AsyncClient(event_hooks={"response": [record_rejection]}, **kwargs)

    if args.transport == "sse":
        transport = sse_client(
            args.url, timeout=10, sse_read_timeout=30, httpx_client_factory=make_client
        )
    else:
        http = make_client(timeout=httpx2.Timeout(10, read=30))
        transport = streamable_http_client(args.url, http_client=http)

    progress: list[dict] = []
    started = time.monotonic()
    logs: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        at_ms = round((time.monotonic() - started) * 1000)
        progress.append({"progress": value, "total": total, "message": message, "at_ms": at_ms})

    out: dict = {"ok": False}
    with anyio.fail_after(args.timeout):
        async with Client(transport, mode="legacy", logging_callback=on_log, read_timeout_seconds=30) as client:
            out["server"] = client.server_info.name if client.server_info else None
            out["protocol_version"] = client.protocol_version
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            if args.call:
                res = await client.call_tool(args.call, json.loads(args.arguments))
                out["call"] = "".join(c.text for c in res.content if isinstance(c, types.TextContent))
                out["ok"] = True
                return out
            res = await client.call_tool("echo", {"text": "hello through the guard"})
            out["echo"] = "".join(c.text for c in res.content if isinstance(c, types.TextContent))
            started = time.monotonic()
            res = await client.call_tool("countdown", {"n": 3}, progress_callback=on_progress)
            out["countdown_ms"] = round((time.monotonic() - started) * 1000)
            out["countdown"] = "".join(c.text for c in res.content if isinstance(c, types.TextContent))
            out["progress"] = progress
            out["logs"] = logs
            out["ok"] = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--call")
    parser.add_argument("--arguments", default="{}")
    parser.add_argument("--local-address", default=None)
    args = parser.parse_args()
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - report every failure as JSON
        out = {"ok": False, "error": repr(exc)[:2000], **REJECTION}
        out["errors"] = [repr(e)[:500] for e in leaf_errors(exc)][:10]
    print(json.dumps(out), flush=True)
    sys.exit(0 if out.get("ok") else 1)


if __name__ == "__main__":
    main()
