#!/usr/bin/env bash
# static-binary.sh CRATE BIN PROFILE DEST_DIR: builds the static musl binary BIN of workspace crate CRATE with
# PROFILE (as the release workflow does) into a target directory in the cache, and copies it to DEST_DIR/BIN.
# The images (tools/images.sh) and the Debian package test (tests/tests/deb_package.rs) take their binaries from
# here, so a fresh clone (CI) reuses the optimised builds instead of compiling them again: seconds, not minutes.
# Environment: MCP_GUARD_CACHE (default ~/.cache/mcp-guard).
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 CRATE BIN PROFILE DEST_DIR" >&2; exit 2; }
crate=$1 bin=$2 profile=$3 dest=$4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCP_GUARD_CACHE:-$HOME/.cache/mcp-guard}
MUSL=x86_64-unknown-linux-musl
target=$CACHE/cargo-target-images
mkdir -p "$target" "$dest"

# Every checkout shares that directory: one build-and-copy at a time, so that none copies another's binary.
exec 9>"$target/.lock"
flock 9

# Cargo judges a workspace crate fresh by its files' mtimes, which in another checkout (a worktree made before the
# last build) can be older than that build: it would hand out the other checkout's binary. When another checkout
# with other sources built last, make these newer than its build.
sources=$(cd "$ROOT" && git ls-files -z -- Cargo.toml Cargo.lock guard-config memcpy sidecar operator |
  xargs -0 sha256sum | sha256sum | cut -c1-16)
last_sources='' last_root=''
{ read -r last_sources && read -r last_root; } 2>/dev/null <"$target/.built-$crate" || true
if [ -n "$last_root" ] && [ "$last_root" != "$ROOT" ] && [ "$last_sources" != "$sources" ]; then
  (cd "$ROOT" && git ls-files -z -- Cargo.toml Cargo.lock guard-config memcpy sidecar operator | xargs -0 touch)
fi
(cd "$ROOT" && CARGO_TARGET_DIR=$target nice cargo build -q --locked --target $MUSL --profile="$profile" \
  -p "$crate" --bin "$bin")
printf '%s\n%s\n' "$sources" "$ROOT" >"$target/.built-$crate"
cp "$target/$MUSL/$profile/$bin" "$dest/"
