"""A real MCP client that authorizes itself with OAuth, built on the MCP Python SDK's OAuth providers; used by
mcp-guard's OAuth tests (tests/tests/guard_oauth.rs) against Ory Hydra (tests/tests/hydra_common).

It starts with no token (or with --initial-token), lets the SDK meet the server's 401 (or 403
insufficient_scope), discover the protected resource metadata (RFC 9728) and the authorization server's metadata,
get a token, and retry; then it lists the tools and calls one. Every HTTP exchange of the MCP client (the MCP
requests and the SDK's discovery and token requests) is recorded, without tokens or secrets:

    {"ok": true, "server": "...", "tools": [...], "call": "<tool text>", "exchanges": [...],
     "token_header": {...}, "token_claims": {...}}
    {"ok": false, "error": "...", "exchanges": [...], ...what was learnt before the failure}   (exit code 1)

    python py_oauth_client.py --url URL --issuer ISSUER --client-id ID
        (--client-secret SECRET                           client_credentials: ClientCredentialsOAuthProvider
         | --redirect-uri URI --hydra-admin ADMIN_URL)    authorization code + PKCE: OAuthClientProvider, with
           [--subject S] [--groups G1,G2]                 this script playing the user at Hydra (its consent
                                                          grants the groups as the token's session data)
        [--scope S] [--initial-token T] [--call TOOL --arguments JSON]

Hydra does not implement RFC 8707 (resource indicators): it ignores `resource` and takes a token's audience from
`audience`. So the requests the SDK builds for Hydra carry the SDK's `resource` value as `audience` too; nothing
else of what the SDK sends is changed.
"""

import argparse
import base64
import json
import sys
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlparse, urlunparse

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# Form fields of the SDK's token requests reported by value; any other field is reported as "<redacted>".
REPORTED_FIELDS = {"grant_type", "resource", "audience", "scope", "client_id", "redirect_uri"}
# Parameters of the SDK's authorization request reported.
AUTHORIZE_FIELDS = ("response_type", "resource", "scope", "code_challenge_method")


class MemoryStorage:
    """The SDK's TokenStorage, in memory: a client of one run."""

    def __init__(self, tokens: OAuthToken | None, client_info: OAuthClientInformationFull | None) -> None:
        self.tokens = tokens
        self.client_info = client_info

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def with_audience(request: httpx2.Request) -> httpx2.Request:
    """The same token request with the RFC 8707 `resource` also sent as Hydra's `audience`."""
    form = dict(parse_qsl(request.content.decode()))
    if "resource" in form:
        form["audience"] = form["resource"]
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return httpx2.Request(request.method, request.url, data=form, headers=headers)


def url_with_audience(url: str) -> str:
    """The same authorization URL with its `resource` also sent as Hydra's `audience`."""
    parts = urlparse(url)
    query = parse_qsl(parts.query)
    resource = [v for k, v in query if k == "resource"]
    query += [("audience", v) for v in resource]
    return urlunparse(parts._replace(query=urlencode(query)))


class HydraClientCredentials(ClientCredentialsOAuthProvider):
    async def _exchange_token_client_credentials(self) -> httpx2.Request:
        return with_audience(await super()._exchange_token_client_credentials())


class User:
    """The person in front of the browser: follows Hydra's redirects with a browser's cookie jar, logs in and
    consents (through Hydra's admin API, as a login and consent app does: everything requested is granted), and
    hands the authorization code to the SDK's callback."""

    def __init__(self, admin_url: str, redirect_uri: str, subject: str, groups: list[str], log: list) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.redirect_uri = redirect_uri
        self.subject = subject
        self.groups = groups
        self.log = log
        self.result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        params = dict(parse_qsl(urlparse(authorization_url).query))
        self.log.append({"step": "authorize", "params": {k: params.get(k) for k in AUTHORIZE_FIELDS}})
        url = url_with_audience(authorization_url)
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10) as browser, httpx2.AsyncClient(
            timeout=10
        ) as admin:
            for _ in range(10):
                if url.startswith(self.redirect_uri):
                    query = parse_qs(urlparse(url).query)
                    if "error" in query:
                        raise RuntimeError(f"authorization refused: {query}")
                    self.result = AuthorizationCodeResult(
                        code=query["code"][0],
                        state=query.get("state", [None])[0],
                        iss=query.get("iss", [None])[0],
                    )
                    self.log.append({"step": "callback", "params": sorted(query)})
                    return
                query = parse_qs(urlparse(url).query)
                if "login_challenge" in query:
                    url = await self.accept(admin, "login", query["login_challenge"][0])
                    continue
                if "consent_challenge" in query:
                    url = await self.accept(admin, "consent", query["consent_challenge"][0])
                    continue
                response = await browser.get(url)
                self.log.append({"step": "browser", "url": strip_query(url), "status": response.status_code})
                if response.status_code not in (302, 303):
                    raise RuntimeError(f"GET {strip_query(url)}: {response.status_code} {response.text[:500]}")
                url = urljoin(str(response.url), response.headers["location"])
        raise RuntimeError("too many redirects")

    async def accept(self, admin: httpx2.AsyncClient, kind: str, challenge: str) -> str:
        base = f"{self.admin_url}/admin/oauth2/auth/requests/{kind}"
        query = {f"{kind}_challenge": challenge}
        if kind == "login":
            body = {"subject": self.subject, "remember": False}
        else:
            request = (await admin.get(base, params=query)).raise_for_status().json()
            body = {
                "grant_scope": request.get("requested_scope") or [],
                "grant_access_token_audience": request.get("requested_access_token_audience") or [],
                "remember": False,
            }
            if self.groups:
                # The user's groups, as a consent app reads them from its directory: session data of the access
                # token (a top-level claim where Hydra's oauth2.allowed_top_level_claims names it).
                body["session"] = {"access_token": {"groups": self.groups}}
        answer = (await admin.put(f"{base}/accept", params=query, json=body)).raise_for_status().json()
        self.log.append({"step": f"{kind} accepted", "granted": body})
        return answer["redirect_to"]

    async def callback_handler(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise RuntimeError("no authorization code")
        return self.result


def strip_query(url: str) -> str:
    return url.split("?", 1)[0]


def jwt_part(token: str, index: int) -> dict:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(leaf_errors(sub))
        return out
    chained = exc.__cause__ or exc.__context__
    return [exc] + (leaf_errors(chained) if chained is not None else [])


EXCHANGES: list[dict] = []
USER_STEPS: list[dict] = []
# The entry of each request in flight (MCP requests may overlap: the SDK's GET stream runs beside its POSTs).
IN_FLIGHT: dict[int, dict] = {}


async def record_request(request: httpx2.Request) -> None:
    entry: dict = {
        "method": request.method,
        "url": strip_query(str(request.url)),
        "bearer": request.headers.get("authorization", "").lower().startswith("bearer "),
    }
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        entry["form"] = {
            k: (v if k in REPORTED_FIELDS else "<redacted>") for k, v in parse_qsl(request.content.decode())
        }
    EXCHANGES.append(entry)
    IN_FLIGHT[id(request)] = entry


async def record_response(response: httpx2.Response) -> None:
    entry = IN_FLIGHT.pop(id(response.request), None)
    if entry is None:
        return
    entry["status"] = response.status_code
    entry["www_authenticate"] = response.headers.get("www-authenticate")
    if response.status_code >= 400:
        await response.aread()
        entry["body"] = response.text[:2000]


def provider_for(args: argparse.Namespace) -> tuple[OAuthClientProvider, MemoryStorage]:
    initial = OAuthToken(access_token=args.initial_token, token_type="Bearer") if args.initial_token else None
    if args.client_secret is not None:
        storage = MemoryStorage(initial, None)
        provider = HydraClientCredentials(
            server_url=args.url,
            storage=storage,
            client_id=args.client_id,
            client_secret=args.client_secret,
            scope=args.scope,
            issuer=args.issuer,
        )
        return provider, storage
    groups = [g for g in (args.groups or "").split(",") if g]
    user = User(args.hydra_admin, args.redirect_uri, args.subject, groups, USER_STEPS)
    # Registered beforehand through Hydra's admin API (a public client: no secret, PKCE).
    client_info = OAuthClientInformationFull(
        client_id=args.client_id,
        redirect_uris=[args.redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    storage = MemoryStorage(initial, client_info)
    metadata = OAuthClientMetadata(
        redirect_uris=[args.redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=args.scope,
    )
    provider = OAuthClientProvider(
        server_url=args.url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=user.redirect_handler,
        callback_handler=user.callback_handler,
    )
    return provider, storage


# What the run learnt, kept when a later step fails (a refused call still reports the tools listed).
REPORT: dict = {"ok": False}


async def run(args: argparse.Namespace) -> dict:
    provider, storage = provider_for(args)
    http = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(10, read=30),
        event_hooks={"request": [record_request], "response": [record_response]},
    )
    out = REPORT
    try:
        with anyio.fail_after(args.timeout):
            async with Client(streamable_http_client(args.url, http_client=http), mode="legacy") as client:
                out["server"] = client.server_info.name if client.server_info else None
                tools = await client.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                res = await client.call_tool(args.call, json.loads(args.arguments))
                out["call"] = "".join(c.text for c in res.content if isinstance(c, types.TextContent))
                out["call_is_error"] = bool(res.is_error)
    finally:
        if storage.tokens is not None:
            out["token_header"] = jwt_part(storage.tokens.access_token, 0)
            out["token_claims"] = jwt_part(storage.tokens.access_token, 1)
    out["ok"] = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret")
    parser.add_argument("--redirect-uri")
    parser.add_argument("--hydra-admin")
    parser.add_argument("--subject", default="alice@example.com")
    parser.add_argument("--groups", help="comma-separated groups the consent grants the access token")
    parser.add_argument("--scope")
    parser.add_argument("--initial-token")
    parser.add_argument("--call", default="echo")
    parser.add_argument("--arguments", default='{"text": "hello with a token"}')
    parser.add_argument("--timeout", type=float, default=45)
    args = parser.parse_args()
    if args.client_secret is None and (args.redirect_uri is None or args.hydra_admin is None):
        parser.error("either --client-secret, or --redirect-uri and --hydra-admin")
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - report every failure as JSON
        out = {
            **REPORT,
            "ok": False,
            "error": repr(exc)[:2000],
            "errors": [repr(e)[:500] for e in leaf_errors(exc)][:10],
        }
    out["exchanges"] = EXCHANGES
    out["user"] = USER_STEPS
    print(json.dumps(out), flush=True)
    sys.exit(0 if out.get("ok") else 1)


if __name__ == "__main__":
    main()
