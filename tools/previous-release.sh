#!/usr/bin/env bash
# previous-release.sh: materialises the previous release named in tools/previous-release (VERSION COMMIT) from
# this repository's own history, for the upgrade test (tests/tests/node_upgrade.rs), and prints its directory:
#
#   $CACHE/release-<version>-<short commit>/
#     src/                                a checkout of the commit: its chart (charts/mcp-guard, CRDs included)
#     images/mcp-guard.tar                its guard image, ghcr.io/mcp-guard/mcp-guard:<version>
#     images/mcp-guard-operator.tar       its operator image, ghcr.io/mcp-guard/mcp-guard-operator:<version>
#
# The images are built by that commit's own tools/images.sh (and so its static-binary.sh and Dockerfiles), with a
# cache directory of their own under the release's directory (its image links never replace the current ones in
# $CACHE/images). Shared with the current cache: the inputs keyed by their content (the Python venv, the Debian
# rootfs, the MCP wheels) and the cargo target of the static binaries, whose dependencies both versions share.
# Once built, the release's directory is complete and nothing is rebuilt; the build's intermediate state (buildah
# storage) is removed. The commit must be in this repository: a shallow clone lacks it.
# Environment: MCP_GUARD_CACHE (default ~/.cache/mcp-guard).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCP_GUARD_CACHE:-$HOME/.cache/mcp-guard}
log() { echo "previous-release: $*" >&2; }

read -r version commit < <(grep -v '^#' "$ROOT/tools/previous-release" | grep .)
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ && $commit =~ ^[0-9a-f]{40}$ ]] || {
  log "tools/previous-release must hold 'VERSION COMMIT' (a release version and a full commit hash)"
  exit 2
}
dir=$CACHE/release-$version-${commit:0:12}
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

if ! git -C "$ROOT" cat-file -e "$commit^{commit}" 2>/dev/null; then
  log "commit $commit (release $version) is not in this repository (a shallow clone?)."
  log "fetch it: git fetch --unshallow origin   (or: git fetch origin tag v$version)"
  exit 1
fi

mkdir -p "$dir"
# Two checkouts building the same release at once would share its directory: one at a time.
exec 9>"$dir/.lock"
flock 9
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi
started=$(date +%s)

# The release's tree: a local clone (objects hard-linked, independent of this checkout) at the commit.
rm -rf "$dir/src" "$dir/images"
git clone -q --no-checkout "$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir)" "$dir/src"
git -C "$dir/src" -c advice.detachedHead=false checkout -q "$commit"

# The inputs that are the same for every version (each keyed by its content), from the current cache: linked,
# but the wheels copied (images.sh copies them into a build context, where a link would dangle).
build=$dir/build
mkdir -p "$build/cache"
for shared in "$CACHE"/venv "$CACHE"/venv-* "$CACHE"/rootfs-*.tar; do
  if [ -e "$shared" ]; then ln -sfn "$shared" "$build/cache/"; fi
done
for wheels in "$CACHE"/wheels-*; do
  if [ -e "$wheels" ] && [ ! -e "$build/cache/${wheels##*/}" ]; then cp -rL "$wheels" "$build/cache/"; fi
done
# The cargo target of the static binaries is the current one's too: the dependencies the two versions share (most
# of the build) are compiled once, and the release's static-binary.sh takes the same lock and rebuilds only the
# workspace's crates (marking whose sources built last, so neither checkout is handed the other's binary). This
# is paid once per release: a cold machine builds the dependencies once, not twice.
mkdir -p "$CACHE/cargo-target-images"
ln -sfn "$CACHE/cargo-target-images" "$build/cache/cargo-target-images"

log "building release $version (${commit:0:12}) with its own tools/images.sh: a one-time cost, cached in $dir"
MCP_GUARD_CACHE=$build/cache MCP_GUARD_IMAGES=$build/images "$dir/src/tools/images.sh"

mkdir -p "$dir/images.part"
for image in mcp-guard mcp-guard-operator; do
  cp "$(readlink -f "$build/images/$image.tar")" "$dir/images.part/$image.tar"
done
mv "$dir/images.part" "$dir/images"
rm -rf "$build"
touch "$dir/.complete"
log "release $version ready in $dir ($(($(date +%s) - started)) s)"
echo "$dir"
