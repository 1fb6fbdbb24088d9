// A real MCP client that authorizes itself with OAuth client credentials, built on the MCP TypeScript SDK's
// ClientCredentialsProvider; used by mcp-guard's OAuth tests (tests/tests/guard_oauth.rs) against Ory Hydra. Same
// contract as py_oauth_client.py's client_credentials flow: start with no token, let the SDK meet the 401, discover
// the protected resource metadata and the authorization server, get a token, retry, list the tools and call one;
// print one JSON line with every HTTP exchange (no tokens or secrets).
//
//   NODE_PATH=<node_modules> node ts_oauth_client.cjs --url URL --issuer ISSUER --client-id ID --client-secret=S
//       [--scope S] [--call TOOL --arguments JSON]
//
// Hydra does not implement RFC 8707: it ignores `resource` and takes a token's audience from `audience`. So the
// token request carries the SDK's `resource` value as `audience` too (in addClientAuthentication, the SDK's hook
// that sees the token request's parameters, resource included, just before sending).
"use strict";

const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { ClientCredentialsProvider } = require("@modelcontextprotocol/sdk/client/auth-extensions.js");

const REPORTED_FIELDS = new Set(["grant_type", "resource", "audience", "scope", "client_id"]);

function parseArgs(argv) {
  const args = { timeoutMs: 45000, call: "echo", arguments: '{"text": "hello with a token"}' };
  for (let i = 0; i < argv.length; i++) {
    let [name, value] = argv[i].split(/=(.*)/s);
    const next = () => (value !== undefined ? value : argv[++i]);
    if (name === "--url") args.url = next();
    else if (name === "--issuer") args.issuer = next();
    else if (name === "--client-id") args.clientId = next();
    else if (name === "--client-secret") args.clientSecret = next();
    else if (name === "--scope") args.scope = next();
    else if (name === "--call") args.call = next();
    else if (name === "--arguments") args.arguments = next();
    else if (name === "--timeout") args.timeoutMs = Number(next()) * 1000;
    else throw new Error(`unknown argument ${name}`);
  }
  for (const required of ["url", "issuer", "clientId", "clientSecret"]) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  return args;
}

class HydraClientCredentials extends ClientCredentialsProvider {
  constructor(options) {
    super(options);
    const { clientId, clientSecret } = options;
    // The SDK calls this unbound, with the token request's headers and parameters: client_secret_basic as the SDK
    // would do it (RFC 6749 section 2.3.1), plus the resource as Hydra's audience.
    this.addClientAuthentication = (headers, params) => {
      const credentials = `${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`;
      headers.set("Authorization", `Basic ${Buffer.from(credentials).toString("base64")}`);
      if (params.has("resource")) params.set("audience", params.get("resource"));
    };
  }
}

function stripQuery(url) {
  return String(url).split("?")[0];
}

function jwtPart(token, index) {
  return JSON.parse(Buffer.from(token.split(".")[index], "base64url").toString());
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const exchanges = [];
  const recordingFetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    const entry = {
      method: init.method || "GET",
      url: stripQuery(url),
      bearer: (headers.get("authorization") || "").toLowerCase().startsWith("bearer "),
    };
    if (init.body instanceof URLSearchParams) {
      entry.form = Object.fromEntries(
        [...init.body].map(([k, v]) => [k, REPORTED_FIELDS.has(k) ? v : "<redacted>"]),
      );
    }
    exchanges.push(entry);
    const response = await fetch(url, init);
    entry.status = response.status;
    entry.www_authenticate = response.headers.get("www-authenticate");
    if (response.status >= 400) entry.body = (await response.clone().text()).slice(0, 2000);
    return response;
  };
  const provider = new HydraClientCredentials({
    clientId: args.clientId,
    clientSecret: args.clientSecret,
    scope: args.scope,
    expectedIssuer: args.issuer,
  });
  const out = { ok: false };
  const timer = setTimeout(() => {
    console.log(JSON.stringify({ ...out, ok: false, error: "timeout", exchanges }));
    process.exit(1);
  }, args.timeoutMs);
  try {
    const transport = new StreamableHTTPClientTransport(new URL(args.url), {
      authProvider: provider,
      fetch: recordingFetch,
    });
    const client = new Client({ name: "mcp-guard-e2e-ts-oauth", version: "1.0.0" });
    await client.connect(transport);
    out.server = client.getServerVersion()?.name ?? null;
    const tools = await client.listTools();
    out.tools = tools.tools.map((t) => t.name).sort();
    const res = await client.callTool({ name: args.call, arguments: JSON.parse(args.arguments) });
    out.call = res.content.filter((c) => c.type === "text").map((c) => c.text).join("");
    out.call_is_error = Boolean(res.isError);
    await client.close();
    const tokens = provider.tokens();
    if (tokens?.access_token) {
      out.token_header = jwtPart(tokens.access_token, 0);
      out.token_claims = jwtPart(tokens.access_token, 1);
    }
    out.ok = true;
  } catch (err) {
    out.error = String(err && err.stack ? err.stack : err).slice(0, 2000);
  }
  clearTimeout(timer);
  console.log(JSON.stringify({ ...out, exchanges }));
  process.exit(out.ok ? 0 : 1);
}

main();
