#!/usr/bin/env python3
"""Where the guard's time per request goes, against the byte relay (issue 24: measure before changing).

For the guard and for the relay (sidecar/examples/relay.rs: the floor of any proxy here), each under the same wrk
load as `make bench` (bench/post.lua, 64 connections) to the same nginx upstream:

  syscalls     strace -f -c on the proxy: system calls per request, by call
  allocations  heaptrack on the proxy: calls to the allocator per request (startup included, spread over the run)
  profile      perf record on the proxy (cpu-clock samples): where its CPU time goes, by function (self time)
  instructions callgrind on the proxy, and on the bare hyper proxy (sidecar/examples/hyper_proxy.rs): user-space
               instructions per request, which load does not change at all; what a change to the request path is
               judged by before `make bench` can show it

Allocations per request do not depend on how busy the machine is (the tracer slows the proxy; the ratio of calls
to requests stays), system calls only a little (epoll and wakeups batch differently under load), so this runs on a
shared machine; the perf shares are of the proxy's own samples. Needs strace,
heaptrack, perf and valgrind (Debian packages strace, heaptrack, linux-perf, valgrind) and the release build with
line tables:

  CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p mcp-guard --bin mcp-guard --example relay \
    --example hyper_proxy
  python3 bench/profile.py [--seconds 4]

Prints a Markdown section and writes it into docs/performance.md ("Profile of the request path", between its
markers; `make bench` keeps it) and to target/bench/profile.md.
"""

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same upstream, wrk load and guard flags as make bench)

RELEASE = bench.ROOT / "target" / "release"


def proxy_cmd(target: str, upstream: int) -> tuple[list[str], int]:
    port = bench.free_port()
    if target == "relay":
        return [str(RELEASE / "examples" / "relay"), f"127.0.0.1:{port}", f"127.0.0.1:{upstream}"], port
    if target == "hyper":
        # One worker, as the guard's below.
        return [str(RELEASE / "examples" / "hyper_proxy"), f"127.0.0.1:{port}", f"127.0.0.1:{upstream}", "1"], port
    cmd = [
        str(RELEASE / "mcp-guard"),
        "--listen", f"127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{upstream}",
        "--admin-listen", f"127.0.0.1:{bench.free_port()}",
        "--allow-host", bench.PUBLIC_HOST,
        "--allow-origin", bench.APP_ORIGIN,
        "--log-level", "warn",
        "--worker-threads", "1",
    ]  # fmt: skip
    return cmd, port


def traced_run(wrapper: list[str], target: str, upstream: int, seconds: int, workdir: Path) -> int:
    """Runs the proxy under `wrapper`, loads it with wrk, stops it with SIGINT; the number of requests served."""
    cmd, port = proxy_cmd(target, upstream)
    proc = bench.spawn([*wrapper, *cmd], workdir / f"{target}-{wrapper[0]}.log")
    bench.wait_port(port, timeout=60)
    res = bench.run_wrk(port, seconds, 64, 1)
    # SIGINT to the traced proxy (not to the tracer) so that the tracer writes its report.
    pids = [p for p in bench.process_tree(proc.pid) if p != proc.pid]
    name = "relay" if target == "relay" else "mcp-guard"
    for pid in pids:
        if Path(f"/proc/{pid}/comm").read_text().strip() == name:
            subprocess.run(["kill", "-INT", str(pid)], check=False)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        bench.stop(proc)
    if res["non_2xx"] or res["socket_errors"]:
        raise RuntimeError(f"{target}: non-2xx {res['non_2xx']}, socket errors {res['socket_errors']!r}")
    return res["requests"]


def syscalls(target: str, upstream: int, seconds: int, workdir: Path) -> tuple[int, dict[str, int]]:
    out = workdir / f"{target}.strace"
    requests = traced_run(["strace", "-f", "-c", "-o", str(out)], target, upstream, seconds, workdir)
    calls = {}
    for line in out.read_text().splitlines():
        # % time  seconds  usecs/call  calls  [errors]  syscall
        parts = line.split()
        if len(parts) >= 5 and re.fullmatch(r"[\d.]+", parts[0]) and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    return requests, calls


def allocations(target: str, upstream: int, seconds: int, workdir: Path) -> tuple[int, int]:
    out = workdir / f"{target}.heaptrack"
    requests = traced_run(["heaptrack", "-o", str(out)], target, upstream, seconds, workdir)
    data = next(workdir.glob(f"{target}.heaptrack*.zst"))
    text = subprocess.run(
        ["heaptrack_print", "-f", str(data), "--print-peaks", "0", "--print-allocators", "0",
         "--print-temporary", "0", "--print-leaks", "0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"calls to allocation functions: (\d+)", text)
    return requests, int(m.group(1)) if m else 0


def profile(target: str, upstream: int, seconds: int, workdir: Path) -> tuple[list, list]:
    """The proxy's functions, and its binaries and libraries (kernel, libc, itself), by share of its own cpu-clock
    samples (self time), top first."""
    cmd, port = proxy_cmd(target, upstream)
    proc = bench.spawn(cmd, workdir / f"{target}-perf.log")
    bench.wait_port(port)
    data = workdir / f"{target}.perf"
    rec = subprocess.Popen(
        ["perf", "record", "-F", "997", "-o", str(data), "-p", str(proc.pid), "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bench.run_wrk(port, seconds, 64, 1)
    rec.wait(timeout=seconds + 60)
    bench.stop(proc)
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "symbol", "--percent-limit", "1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    dsos = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso", "--percent-limit", "1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    by_dso = [(float(m.group(1)), m.group(2).strip()) for m in re.finditer(r"^\s+([\d.]+)%\s+(\S+)", dsos, re.M)]
    rows = []
    for line in report.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(.*)", line)
        if m:
            where = "kernel" if m.group(2) == "k" else "user"
            name = re.sub(r"\s+-\s+-\s*$", "", m.group(3)).strip()
            rows.append((float(m.group(1)), f"{name} ({where})"))
    return rows, by_dso


def instructions(target: str, upstream: int, seconds: int, workdir: Path) -> float:
    """User-space instructions per request under callgrind: counted from the first request of a measured load
    (connections and pools already warm) to its last."""
    cmd, port = proxy_cmd(target, upstream)
    out = workdir / f"{target}.callgrind"
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proc = bench.spawn([*vg, *cmd], workdir / f"{target}-callgrind.log")
    bench.wait_port(port, timeout=120)
    bench.run_wrk(port, 3, 8, 1)
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
    res = bench.run_wrk(port, seconds, 8, 1)
    subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    bench.stop(proc)
    total = 0
    for dump in workdir.glob(f"{target}.callgrind*"):
        text = subprocess.run(["callgrind_annotate", str(dump)], capture_output=True, text=True).stdout
        if m := re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text):
            total += int(m.group(1).replace(",", ""))
    if res["non_2xx"] or res["socket_errors"] or not res["requests"]:
        raise RuntimeError(f"{target} under callgrind: {res['requests']} requests, non-2xx {res['non_2xx']}")
    return total / res["requests"]


def group(calls: dict[str, int]) -> dict[str, int]:
    """Syscalls in the groups that explain a proxy's cost: socket I/O, readiness, wakeups, the rest."""
    kinds = {
        "read/recv": ("read", "recvfrom", "recvmsg", "readv"),
        "write/send": ("write", "sendto", "sendmsg", "writev"),
        "epoll": ("epoll_wait", "epoll_ctl", "epoll_pwait", "epoll_pwait2"),
        "futex (thread wakeups)": ("futex",),
    }
    out = collections.Counter()
    for name, n in calls.items():
        for kind, names in kinds.items():
            if name in names:
                out[kind] += n
                break
        else:
            out["other"] += n
    return dict(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=4)
    args = ap.parse_args()
    for tool in ("strace", "heaptrack", "heaptrack_print", "perf", "valgrind", "callgrind_control", "wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    for binary in (RELEASE / "mcp-guard", RELEASE / "examples" / "relay", RELEASE / "examples" / "hyper_proxy"):
        if not binary.exists():
            sys.exit(f"{binary} is missing: see the build command in this script's docstring")
    workdir = Path(tempfile.mkdtemp(prefix="mcp-guard-profile-"))
    up_port = bench.free_port()
    try:
        bench.start_nginx("upstream", workdir, 1, bench.upstream_body(up_port), up_port)
        results = {}
        for target in ("guard", "relay"):
            sys_requests, calls = syscalls(target, up_port, args.seconds, workdir)
            alloc_requests, allocs = allocations(target, up_port, args.seconds, workdir)
            results[target] = {
                "syscalls": {k: v / sys_requests for k, v in group(calls).items()},
                "by_call": {k: v / sys_requests for k, v in calls.items()},
                "syscalls_total": sum(calls.values()) / sys_requests,
                "allocations": allocs / alloc_requests,
                "profile": (prof := profile(target, up_port, args.seconds, workdir))[0],
                "dsos": prof[1],
                "requests": (sys_requests, alloc_requests),
            }
            bench.log(f"{target}: {results[target]['syscalls_total']:.1f} syscalls, "
                      f"{results[target]['allocations']:.1f} allocations per request")  # fmt: skip
        for target in ("guard", "hyper", "relay"):
            results.setdefault(target, {})["instructions"] = instructions(target, up_port, 2 * args.seconds, workdir)
            bench.log(f"{target}: {results[target]['instructions']:,.0f} instructions per request")
    finally:
        for child in bench.CHILDREN:
            bench.stop(child)
    text = render(results)
    out = bench.ROOT / "target" / "bench" / "profile.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    doc = bench.ROOT / "docs" / "performance.md"
    old = doc.read_text()
    a, e = old.find(bench.PROFILE_BEGIN), old.find(bench.PROFILE_END)
    block = f"{bench.PROFILE_BEGIN}\n## Profile of the request path\n\n{text}{bench.PROFILE_END}"
    doc.write_text(old[:a] + block + old[e + len(bench.PROFILE_END) :] if 0 <= a < e else old.rstrip("\n") + "\n\n" + block + "\n")
    print(text)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def render(r: dict) -> str:
    g, rl = r["guard"], r["relay"]
    lines = [
        f"Measured by `bench/profile.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: the release build "
        "with line tables (the guard and the bare hyper proxy with one worker thread), wrk -t1 -c64 with bench/post.lua, "
        "nginx upstream; counts per request are of the proxy's "
        "own process under strace / heaptrack (which slow it: allocations per request do not depend on that, system "
        "calls a little, as requests batch differently).",
        "",
        "| per request | guard | relay |",
        "|---|---:|---:|",
        f"| system calls | {g['syscalls_total']:.2f} | {rl['syscalls_total']:.2f} |",
    ]
    for kind in ("read/recv", "write/send", "epoll", "futex (thread wakeups)", "other"):
        lines.append(f"| — {kind} | {g['syscalls'].get(kind, 0):.2f} | {rl['syscalls'].get(kind, 0):.2f} |")
    calls = sorted(set(g["by_call"]) | set(rl["by_call"]), key=lambda c: -g["by_call"].get(c, 0))
    detail = ", ".join(
        f"`{c}` {g['by_call'].get(c, 0):.2f} / {rl['by_call'].get(c, 0):.2f}"
        for c in calls
        if max(g["by_call"].get(c, 0), rl["by_call"].get(c, 0)) >= 0.01
    )
    lines += [
        f"| allocator calls | {g['allocations']:.1f} | {rl['allocations']:.1f} |",
        "",
        "Instructions per request in user space (callgrind, wrk -c8, warm connections; exact, so the measure a "
        f"change to the request path is judged by): the guard **{g['instructions']:,.0f}**, the bare hyper proxy "
        f"{r['hyper']['instructions']:,.0f} (hyper and tokio on both sides, nothing else), the relay "
        f"{rl['instructions']:,.0f}.",
        "",
        f"System calls by name (guard / relay, per request, those ≥ 0.01): {detail}.",
        "",
        "Where each proxy's CPU time goes by binary (perf, self time): guard "
        + ", ".join(f"{name} {share:.0f} %" for share, name in g["dsos"])
        + "; relay "
        + ", ".join(f"{name} {share:.0f} %" for share, name in rl["dsos"])
        + ".",
        "",
        "The guard's functions (self time, over 1 % of its samples):",
        "",
        "| share | function |",
        "|---:|---|",
    ]
    lines += [f"| {share:.1f} % | `{name}` |" for share, name in g["profile"][:25]]
    lines += ["", "The relay, for comparison:", "", "| share | function |", "|---:|---|"]
    lines += [f"| {share:.1f} % | `{name}` |" for share, name in rl["profile"][:10]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
