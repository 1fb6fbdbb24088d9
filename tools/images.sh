#!/usr/bin/env bash
# Builds the project's three images (and the test node's pause image, tools/pause) from its own Dockerfiles with buildah (Debian's), offline: the guard
# (sidecar/Dockerfile), the operator (operator/Dockerfile) and the example MCP server (examples/server/Dockerfile).
# No registry is reachable here, so the base images are made on this machine and passed as build arguments; the
# same Dockerfiles build unchanged in a connected CI with their default arguments.
#
#   - guard, operator: BINARY_FROM=prebuilt (the static musl binaries cargo builds here, in a build context of
#     their own) and BASE_IMAGE=scratch (the binaries are static, the user is numeric);
#   - example server: BASE_IMAGE = a Debian bookworm minbase rootfs with python3 + python3-venv, made by
#     mmdebstrap from Debian's packages; pip installs the MCP SDK from PyPI during the build.
#
# Each image is written as an OCI archive to $CACHE/images/<name>-<key>.tar (key: the inputs), and linked as
# $CACHE/images/<name>.tar; `ctr -n k8s.io images import` takes them (the test node does). Prints nothing else.
# Environment: MCP_GUARD_CACHE (default ~/.cache/mcp-guard), MCP_GUARD_IMAGES (default $CACHE/images).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCP_GUARD_CACHE:-$HOME/.cache/mcp-guard}
IMAGES=${MCP_GUARD_IMAGES:-$CACHE/images}
TAG=$(awk '$1 == "appVersion:" { gsub(/"/, "", $2); print $2 }' "$ROOT/charts/mcp-guard/Chart.yaml")
MUSL=x86_64-unknown-linux-musl
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$IMAGES"

log() { echo "images: $*" >&2; }
key_of() { cat "$@" | sha256sum | cut -c1-12; }

# buildah with its own storage under the cache (vfs: works as root in any container, no overlay needed).
STORAGE=$IMAGES/buildah
bh() {
  buildah --root "$STORAGE/root" --runroot "$STORAGE/run" --storage-driver vfs "$@"
}

# The Debian rootfs the example server's image starts from, imported as localhost/mcp-guard/bookworm-python.
python_base() {
  local packages="python3,python3-venv,ca-certificates"
  local key
  key=$(key_of <(echo "bookworm $packages $DEBIAN_MIRROR"))
  local tar=$CACHE/rootfs-bookworm-python-$key.tar
  if [ ! -f "$tar" ]; then
    log "making a Debian bookworm rootfs with $packages (about 2 minutes; cached in $tar)"
    mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "${tar%.tar}.part.tar" "$DEBIAN_MIRROR"
    mv "${tar%.tar}.part.tar" "$tar"
  fi
  BASE=localhost/mcp-guard/bookworm-python:$key
  if ! bh inspect --type image "$BASE" >/dev/null 2>&1; then
    local ctr
    ctr=$(bh from scratch)
    bh add "$ctr" "$tar" / >/dev/null
    bh commit -q "$ctr" "$BASE" >/dev/null
    bh rm "$ctr" >/dev/null
  fi
}

# build NAME DOCKERFILE CONTEXT KEY_INPUT... -- BUILD_ARG... : builds and writes $IMAGES/NAME-<key>.tar.
build() {
  local name=$1 dockerfile=$2 context=$3; shift 3
  local inputs=()
  while [ "$1" != -- ]; do inputs+=("$1"); shift; done
  shift
  local key
  key=$(key_of "$dockerfile" "${inputs[@]}" <(echo "$TAG $*"))
  local out=$IMAGES/$name-$key.tar ref=ghcr.io/mcp-guard/$name:$TAG
  if [ ! -f "$out" ]; then
    log "building $ref from ${dockerfile#"$ROOT"/}"
    local args=() a
    for a in "$@"; do args+=(--build-arg "$a"); done
    bh bud --quiet --layers=false --network host -f "$dockerfile" "${args[@]}" -t "$ref" "$context" >/dev/null
    rm -f "$out.part"
    bh push --quiet "$ref" "oci-archive:$out.part:$ref"
    mv "$out.part" "$out"
  fi
  ln -sfn "$out" "$IMAGES/$name.tar"
}

# The guard and the operator from their static musl binaries, each in a build context that holds only it.
binary_image() {
  local name=$1 crate=$2 bin=$3 profile=$4 dockerfile=$5
  local ctx=$IMAGES/context-$name
  rm -rf "$ctx"
  # Built once per change in the cache's own target directory (tools/static-binary.sh): a fresh clone (CI)
  # reuses the optimised static builds, and the workspace's debug target directory stays as the tests left it.
  "$ROOT/tools/static-binary.sh" "$crate" "$bin" "$profile" "$ctx/target/$MUSL/$profile"
  build "$name" "$dockerfile" "$ctx" "$ctx/target/$MUSL/$profile/$bin" -- BINARY_FROM=prebuilt BASE_IMAGE=scratch
  rm -rf "$ctx"
}

# The node's pod sandbox image (containerd's sandbox_image), from tools/pause.
pause_image() {
  local ctx=$IMAGES/context-pause
  rm -rf "$ctx"
  mkdir -p "$ctx"
  musl-gcc -static -Os -s -o "$ctx/pause" "$ROOT/tools/pause/pause.c"
  build pause "$ROOT/tools/pause/Containerfile" "$ctx" "$ROOT/tools/pause/pause.c" --
  rm -rf "$ctx"
}

pause_image
python_base
binary_image mcp-guard mcp-guard mcp-guard dist "$ROOT/sidecar/Dockerfile"
binary_image mcp-guard-operator mcp-guard-operator mcp-guard-operator release "$ROOT/operator/Dockerfile"
# The example server, with the MCP SDK from a wheelhouse pip downloads on the host (the build's own TLS trust is
# Debian's, and nothing in the image should depend on this machine's network).
example_image() {
  local mcp wheels ctx
  mcp=$(awk -F'==' '$1 == "mcp" { print $2 }' "$ROOT/tests/mcp/requirements.txt")
  wheels=$CACHE/wheels-mcp-$mcp-$(key_of <(python3 --version; uname -m))
  if [ ! -f "$wheels/.complete" ]; then
    rm -rf "$wheels"
    "$CACHE/venv/bin/pip" download -q --disable-pip-version-check --dest "$wheels" "mcp==$mcp"
    touch "$wheels/.complete"
  fi
  ctx=$IMAGES/context-example-server
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp "$ROOT/examples/server/server.py" "$ctx/"
  cp -r "$wheels" "$ctx/wheels"
  build example-server "$ROOT/examples/server/Dockerfile" "$ctx" "$ROOT/examples/server/server.py" -- \
    "BASE_IMAGE=$BASE" "MCP_VERSION=$mcp" "PIP_INSTALL_ARGS=--no-index --find-links /build/wheels"
  rm -rf "$ctx"
}
example_image
log "ready: $(cd "$IMAGES" && ls ./*.tar | grep -v -- '-[0-9a-f]\{12\}\.tar$' | tr '\n' ' ')in $IMAGES"
