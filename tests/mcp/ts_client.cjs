// A real MCP client built on the MCP TypeScript SDK (@modelcontextprotocol/sdk), used by mcp-guard's
// end-to-end tests. Same contract as py_client.py: connect (initialize), list tools, call `echo`, call
// `countdown` while collecting streamed progress and log notifications; print one JSON line.
//
//   NODE_PATH=<node_modules> node ts_client.cjs --transport streamable-http|sse --url URL [--header 'Name: value']...
//
// With `--call TOOL --arguments JSON` it calls that tool instead of `echo` and `countdown` (for servers other than
// the tests' own, such as the examples' weather server) and reports its text as "call".
"use strict";

const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { SSEClientTransport } = require("@modelcontextprotocol/sdk/client/sse.js");
const { LoggingMessageNotificationSchema } = require("@modelcontextprotocol/sdk/types.js");

function parseArgs(argv) {
  const args = { transport: "streamable-http", url: null, headers: {}, timeoutMs: 30000, call: null, arguments: "{}" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--transport") args.transport = argv[++i];
    else if (a === "--url") args.url = argv[++i];
    else if (a === "--timeout") args.timeoutMs = Number(argv[++i]) * 1000;
    else if (a === "--call") args.call = argv[++i];
    else if (a === "--arguments") args.arguments = argv[++i];
    else if (a === "--header") {
      const h = argv[++i];
      const idx = h.indexOf(":");
      args.headers[h.slice(0, idx).trim()] = h.slice(idx + 1).trim();
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!args.url) throw new Error("--url is required");
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const rejection = {};
  // Node's fetch drops a Host header set by hand. To forge Host the way a DNS-rebinding attacker does, ask
  // for the URL under the forged authority and connect the socket to the real address instead.
  let url = new URL(args.url);
  let doFetch = fetch;
  const forgedHost = Object.entries(args.headers).find(([k]) => k.toLowerCase() === "host");
  if (forgedHost) {
    const undici = require("undici");
    const net = require("node:net");
    const real = { host: url.hostname, port: Number(url.port || 80) };
    const forged = new URL(`http://${forgedHost[1]}`);
    url = new URL(args.url);
    url.hostname = forged.hostname;
    url.port = forged.port;
    const dispatcher = new undici.Agent({
      connect: (_opts, cb) => {
        const socket = net.connect(real);
        socket.once("connect", () => cb(null, socket));
        socket.once("error", (err) => cb(err, null));
      },
    });
    doFetch = (u, init) => undici.fetch(u, { ...init, dispatcher });
    delete args.headers[forgedHost[0]];
  }
  // Every request (POSTs, the GET stream, DELETE) goes through this fetch: it adds the forged headers and
  // records the first HTTP error the peer answered, since the SDK reduces it to an error message.
  const fetchWithHeaders = async (url, init = {}) => {
    const headers = new Headers(init.headers || {});
    for (const [k, v] of Object.entries(args.headers)) headers.set(k, v);
    const res = await doFetch(url, { ...init, headers });
    if (res.status >= 400 && rejection.status === undefined) {
      rejection.status = res.status;
      rejection.content_type = res.headers.get("content-type");
      rejection.body = await res.clone().text();
      rejection.retry_after = res.headers.get("retry-after");
    }
    return res;
  };
  const transport =
    args.transport === "sse"
      ? new SSEClientTransport(url, { fetch: fetchWithHeaders, eventSourceInit: { fetch: fetchWithHeaders } })
      : new StreamableHTTPClientTransport(url, { fetch: fetchWithHeaders });

  const client = new Client({ name: "mcp-guard-e2e-ts", version: "1.0.0" });
  const logs = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    logs.push(String(n.params.data));
  });

  const out = { ok: false };
  const timer = setTimeout(() => {
    console.log(JSON.stringify({ ...out, ok: false, error: "timeout", ...rejection }));
    process.exit(1);
  }, args.timeoutMs);
  try {
    await client.connect(transport);
    out.server = client.getServerVersion()?.name ?? null;
    out.protocol_version = transport.protocolVersion ?? null;
    const tools = await client.listTools();
    out.tools = tools.tools.map((t) => t.name).sort();
    if (args.call) {
      const res = await client.callTool({ name: args.call, arguments: JSON.parse(args.arguments) });
      out.call = res.content.filter((c) => c.type === "text").map((c) => c.text).join("");
      out.ok = true;
      await client.close();
      clearTimeout(timer);
      console.log(JSON.stringify(out));
      process.exit(0);
    }
    const echo = await client.callTool({ name: "echo", arguments: { text: "hello through the guard" } });
    out.echo = echo.content.filter((c) => c.type === "text").map((c) => c.text).join("");
    const progress = [];
    const started = Date.now();
    const cd = await client.callTool({ name: "countdown", arguments: { n: 3 } }, undefined, {
      onprogress: (p) =>
        progress.push({
          progress: p.progress,
          total: p.total ?? null,
          message: p.message ?? null,
          at_ms: Date.now() - started,
        }),
    });
    out.countdown_ms = Date.now() - started;
    out.countdown = cd.content.filter((c) => c.type === "text").map((c) => c.text).join("");
    out.progress = progress;
    out.logs = logs;
    out.ok = true;
    await client.close();
  } catch (err) {
    Object.assign(out, { ok: false, error: String(err && err.stack ? err.stack : err).slice(0, 2000) }, rejection);
  }
  clearTimeout(timer);
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}

main().catch((err) => {
  console.log(JSON.stringify({ ok: false, error: String(err) }));
  process.exit(1);
});
