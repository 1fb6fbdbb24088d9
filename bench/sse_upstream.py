"""A minimal SSE upstream for the stream-memory benchmark: answers every request with an open
`text/event-stream` (an `endpoint` event, like the MCP SSE transport, then a comment every 10 s) and holds
it until the client goes away. Python stdlib only.

    python3 sse_upstream.py PORT
"""

import asyncio
import sys

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HEAD + chunk(b"event: endpoint\ndata: /messages/?session_id=bench\n\n"))
        await writer.drain()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout=10)
                if not data:
                    break
            except asyncio.TimeoutError:
                writer.write(chunk(b": ping\n\n"))
                await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    port = int(sys.argv[1])
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
