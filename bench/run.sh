#!/usr/bin/env bash
# mcp-guard benchmark (`make bench`): builds the guard as shipped (`--profile dist`: release with LTO, static musl), then runs bench/bench.py, which
# measures direct vs mcp-guard (also with authentication, and with access rules and the audit log) vs nginx,
# HAProxy and Envoy doing the same check, and a byte relay, in one run, then filtering a large tools/list, and
# writes docs/performance.md. Not part of `make test`. Needs nginx and wrk (`make setup`); installs HAProxy and
# Envoy for the bench only (bench/setup-peers.sh). On 2 cores: about eight minutes, plus 5-8 for a cold build.
#   BENCH_SECONDS=4    seconds of load per target and round
#   BENCH_ROUNDS=5     rounds (targets interleaved; medians reported)
#   BENCH_STREAMS=9900 concurrent SSE streams for the per-stream memory measure
set -euo pipefail
cd "$(dirname "$0")/.."
bench/setup-peers.sh
# As the image and the Debian package ship it: the static musl build (with its allocator), the measuring examples
# built the same way.
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --profile dist --target x86_64-unknown-linux-musl \
  -p mcp-guard --bin mcp-guard --example relay --example hyper_proxy
python3 bench/bench.py "$@"
# The profile of the request path (docs/performance.md keeps its section): a release build with line tables.
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release -p mcp-guard --bin mcp-guard --example relay --example hyper_proxy
exec python3 bench/profile.py
