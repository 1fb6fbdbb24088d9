#!/usr/bin/env bash
# Where does the guard's memory per open SSE stream go? Runs the release guard under heaptrack (Debian package
# `heaptrack`) with N open SSE streams (default 2000) and prints the largest peak allocation sites.
# heaptrack sees malloc only: with a custom #[global_allocator] (jemalloc, mimalloc) build the guard with the
# system allocator for this.
#   bench/heap-profile.sh [N]            (GUARD_BIN=path: profile that binary instead of building one;
#                                         GUARD_ARGS: extra arguments for it)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
command -v heaptrack >/dev/null || { echo "heaptrack not installed: apt-get install heaptrack" >&2; exit 2; }
guard_bin=${GUARD_BIN:-}
if [ -z "$guard_bin" ]; then
  CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -p mcp-guard --bin mcp-guard
  guard_bin=target/release/mcp-guard
fi
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
up=$(free_port)
port=$(free_port)
python3 bench/sse_upstream.py "$up" >"$work/upstream.log" 2>&1 &
up_pid=$!
# shellcheck disable=SC2086 # GUARD_ARGS is a list of arguments
heaptrack -o "$work/guard" "$guard_bin" ${GUARD_ARGS:-} --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$up" \
  --allow-host mcp.example.test --log-level warn --max-connections 20000 >"$work/guard.log" 2>&1 &
ht_pid=$!
trap 'kill $up_pid 2>/dev/null || true; kill $ht_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  guard_pid=$(pgrep -P "$ht_pid" -f "$guard_bin" || true)
  [ -n "$guard_pid" ] && python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
{
  echo "open $n"
  sleep $((5 + n / 1000))
  echo "guard RSS with $n streams: $(grep VmRSS "/proc/$guard_pid/status")" >&2
  kill -INT "$guard_pid"
  sleep 1
  echo quit
} | python3 bench/sse_hold.py "127.0.0.1:$port" mcp.example.test
wait "$ht_pid" || true
heaptrack_print -f "$work/guard.zst" --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
  --peak-limit 12 --sub-peak-limit 0 2>/dev/null | grep -A1 "peak memory consumed\|peak heap memory" | grep -v '^--'
echo "full data: heaptrack --analyze $work/guard.zst"
