#!/usr/bin/env python3
"""An MCP server's large `tools/list` answer, for the bench's list-filtering measure (bench.py): every POST is
answered with the same list of N tools (`tool_0000` ...), as one JSON-RPC response with the request's id, in
`application/json` or as one `text/event-stream` event. HTTP/1.1 keep-alive; the answer's bytes are made once.

    python3 list_upstream.py PORT N json|sse
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def tools(n: int) -> list[dict]:
    return [
        {
            "name": f"tool_{i:04d}",
            "description": f"Tool number {i}: does one thing for the bench and answers with a short text.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        }
        for i in range(n)
    ]


def main() -> None:
    port, n, fmt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    result = json.dumps({"tools": tools(n)}, separators=(",", ":"))
    content_type = "application/json" if fmt == "json" else "text/event-stream"
    answers: dict[bytes, bytes] = {}

    def answer(request_id: object) -> bytes:
        key = json.dumps(request_id).encode()
        if key not in answers:
            message = f'{{"jsonrpc":"2.0","id":{key.decode()},"result":{result}}}'
            answers[key] = (message if fmt == "json" else f"event: message\ndata: {message}\n\n").encode()
        return answers[key]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            data = answer(json.loads(body).get("id"))
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
