#!/usr/bin/env bash
# Sets the one version of mcp-guard everywhere it is written, and turns CHANGELOG.md's Unreleased section into the
# release's entry (with a fresh, empty Unreleased above it):
#
#   tools/bump-version.sh 0.2.0 [YYYY-MM-DD]     # the date defaults to today (UTC)
#   tools/bump-version.sh 0.3.0-dev              # after a release: main's next version; the changelog stays as it is
#
# Written in: Cargo.toml (workspace.package.version, which every crate inherits) and Cargo.lock's entries of
# the workspace's crates; charts/mcp-guard/Chart.yaml (version and appVersion: the images' tag); every
# "ghcr.io/mcp-guard/<image>:<old>" in tracked files (the operator's default sidecar image, examples, docs,
# tests); the image tags of examples/policy/values-production.yaml; the chart version and .deb name in the
# docs' install commands. tests/tests/release.rs holds them together.
# Then commit, tag vX.Y.Z and push the tag: .github/workflows/release.yml does the rest (docs/releasing.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NEW=${1:?usage: tools/bump-version.sh X.Y.Z [YYYY-MM-DD]}
DATE=${2:-$(date -u +%F)}
cd "$ROOT"

[[ $NEW =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "not a semantic version: $NEW" >&2; exit 1; }
OLD=$(awk '/^\[workspace.package\]/ { p = 1; next } /^\[/ { p = 0 } p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
[ -n "$OLD" ] || { echo "no workspace.package.version in Cargo.toml" >&2; exit 1; }
grep -q '^## \[Unreleased\]' CHANGELOG.md || { echo "CHANGELOG.md has no '## [Unreleased]' section" >&2; exit 1; }
grep -q "^## \[$NEW\]" CHANGELOG.md && { echo "CHANGELOG.md already has an entry for $NEW" >&2; exit 1; }
# X.Y.Z-dev is not a release: it only opens the next one on main, so its images never share a tag with the
# release before it (the upgrade test runs both on one node).
DEV=false; [[ $NEW == *-dev ]] && DEV=true
old_re=${OLD//./\\.}

# Cargo.toml: the workspace version only (dependency versions are left alone).
awk -v new="$NEW" '/^\[workspace.package\]/ { p = 1 } /^\[/ && !/^\[workspace.package\]/ { p = 0 }
  p && $1 == "version" { $0 = "version = \"" new "\"" } { print }' Cargo.toml >Cargo.toml.new
mv Cargo.toml.new Cargo.toml

# Cargo.lock: the entries of the workspace's own crates (what `cargo update --workspace` would write, offline).
members=$(for dir in $(sed -n 's/^members = \[\(.*\)\]$/\1/p' Cargo.toml | tr -d '",'); do
  sed -n 's/^name = "\(.*\)"$/\1/p' "$dir/Cargo.toml" | head -1
done | tr '\n' ' ')
awk -v new="$NEW" -v members=" $members " '
  /^name = / { n = $3; gsub(/"/, "", n); mine = index(members, " " n " ") > 0 }
  mine && /^version = / { $0 = "version = \"" new "\""; mine = 0 }
  { print }' Cargo.lock >Cargo.lock.new
mv Cargo.lock.new Cargo.lock

sed -i -e "s/^version: .*/version: $NEW/" -e "s/^appVersion: .*/appVersion: \"$NEW\"/" charts/mcp-guard/Chart.yaml

# Image references with the old tag, wherever they are written (never the changelog: it is history).
git ls-files -z | xargs -0 grep -lZ -E "ghcr\.io/mcp-guard/[a-z0-9-]+:$old_re\b" -- 2>/dev/null |
  grep -zv '^CHANGELOG.md$' | xargs -0 -r sed -i -E "s#(ghcr\.io/mcp-guard/[a-z0-9-]+):$old_re\b#\1:$NEW#g"
sed -i -E "s/^(  +tag: )\"$old_re\"/\1\"$NEW\"/" examples/policy/values-production.yaml
# The install commands of the docs: the chart's --version and the .deb's file name.
sed -i -E -e "s/(oci:\/\/ghcr\.io\/mcp-guard\/charts\/mcp-guard --version )$old_re\b/\1$NEW/g" \
  -e "s/mcp-guard_$old_re-1_/mcp-guard_$NEW-1_/g" README.md docs/*.md

if $DEV; then
  echo "version $OLD -> $NEW (development; CHANGELOG.md unchanged): git commit -am 'open $NEW'" >&2
  exit 0
fi

# CHANGELOG.md: "## [Unreleased]" becomes "## [NEW] - DATE" under a new empty Unreleased; the link references
# at the bottom follow (compare views between tags).
awk -v new="$NEW" -v date="$DATE" '
  /^## \[Unreleased\]/ && !done { print; print ""; print "## [" new "] - " date; done = 1; next }
  { print }' CHANGELOG.md >CHANGELOG.md.new
mv CHANGELOG.md.new CHANGELOG.md
repo=https://github.com/mcp-guard/mcp-guard
if grep -q "^\[$OLD\]: " CHANGELOG.md; then new_ref="[$NEW]: $repo/compare/v$OLD...v$NEW"; else new_ref="[$NEW]: $repo/releases/tag/v$NEW"; fi
# The link references stay together at the end, newest first: Unreleased, the new release, then the older ones.
awk -v unreleased="[Unreleased]: $repo/compare/v$NEW...HEAD" -v new_ref="$new_ref" '
  /^\[Unreleased\]: / { next }
  /^\[[^]]+\]: / { refs[++n] = $0; next }
  { print }
  END { print unreleased; print new_ref; for (i = 1; i <= n; i++) print refs[i] }' CHANGELOG.md >CHANGELOG.md.new
mv CHANGELOG.md.new CHANGELOG.md

echo "version $OLD -> $NEW; review with git diff, then: git commit -am 'release $NEW' && git tag v$NEW" >&2
