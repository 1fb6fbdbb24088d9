"""Opens and holds many SSE streams (GET with Accept: text/event-stream) against ADDR, for measuring a proxy's
memory per open stream. Driven over stdin: `open N` grows the number of open streams to N (each counted once
its first event arrived) and answers `READY <open> <failed>` on stdout; `quit` (or EOF) closes everything.
Python stdlib only.

    python3 sse_hold.py 127.0.0.1:PORT HOST_HEADER
"""

import asyncio
import sys

streams: list[asyncio.StreamWriter] = []
failed = 0


async def open_stream(host: str, port: int, host_header: str) -> None:
    global failed
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=20)
        writer.write(
            f"GET /sse HTTP/1.1\r\nHost: {host_header}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        buf = b""
        while b"event: endpoint" not in buf:
            data = await asyncio.wait_for(reader.read(4096), timeout=20)
            if not data:
                raise ConnectionError("closed")
            buf += data
        if b" 200 " not in buf.split(b"\r\n", 1)[0]:
            raise ConnectionError(buf[:100])
        streams.append(writer)
    except (OSError, asyncio.TimeoutError, ConnectionError):
        failed += 1


async def grow(target: int, host: str, port: int, host_header: str) -> None:
    batch = 250
    while len(streams) < target:
        before = len(streams) + failed
        n = min(batch, target - len(streams))
        await asyncio.gather(*(open_stream(host, port, host_header) for _ in range(n)))
        if failed > 50 or len(streams) + failed == before:
            break


async def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    host_header = sys.argv[2]
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "open":
            await grow(int(cmd[1]), host, int(port), host_header)
            await asyncio.sleep(1)
            print(f"READY {len(streams)} {failed}", flush=True)
    for w in streams:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
