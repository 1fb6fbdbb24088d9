"""Ory Hydra's token hook (`oauth2.token_hook`) for mcp-guard's access tests (tests/tests/guard_oauth_access.rs):
the group directory of the machine clients. Hydra POSTs every token request to it; for a client_credentials
request of a client the directory lists, it answers with the client's groups as session data of the access
token (Hydra puts them in the JWT as a top-level `groups` claim when `oauth2.allowed_top_level_claims` names
it); for any other request, `204`: Hydra keeps the session it has (for authorization code, what the consent
app granted).

    python hydra_token_hook.py --port PORT --directory FILE

FILE is JSON, `{"<client id>": ["group", ...]}`, read at every request (the test registers the clients after
the hook is up). Every request is printed as one JSON line (client id, grant types, the answer).
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TokenHook(BaseHTTPRequestHandler):
    directory_path = ""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("content-length") or 0)
        request = json.loads(self.rfile.read(length))["request"]
        with open(self.directory_path, encoding="utf-8") as f:
            groups = json.load(f).get(request["client_id"])
        answer = None
        if groups is not None and "client_credentials" in request["grant_types"]:
            answer = {"session": {"access_token": {"groups": groups}}}
        print(
            json.dumps({"client_id": request["client_id"], "grant_types": request["grant_types"], "answer": answer}),
            flush=True,
        )
        if answer is None:
            self.send_response(204)
            self.end_headers()
            return
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        print(format % args, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", required=True)
    args = parser.parse_args()
    TokenHook.directory_path = args.directory
    server = ThreadingHTTPServer(("127.0.0.1", args.port), TokenHook)
    print(f"token hook listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
