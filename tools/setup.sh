#!/usr/bin/env bash
# Installs everything the demo and the tests need, idempotently. Heavy outputs (Go-built binaries, the Python
# venv, npm packages) are cached outside the repo in $MCP_GUARD_CACHE (default ~/.cache/mcp-guard), keyed by
# the pinned versions, so a warm run rebuilds nothing. Stable paths for the tests:
#   $CACHE/bin/{kube-apiserver,kube-controller-manager,kubectl,kubelet,kube-scheduler,kube-proxy,etcd,helm},
#   $CACHE/venv, $CACHE/node
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCP_GUARD_CACHE:-$HOME/.cache/mcp-guard}
mkdir -p "$CACHE/bin"

# Debian packages the tests drive: nginx (reverse proxy in front of the guard), chromium (DNS-rebinding attack
# from a real browser), wrk (benchmarks); and for the real node: containerd + runc (the container runtime), the
# bridge/host-local/loopback CNI plugins, iptables and conntrack (kube-proxy), ipset (kube-router, the node's
# NetworkPolicy enforcer), buildah (builds the images from the
# project's Dockerfiles), mmdebstrap (the offline base images), musl-tools (static Rust binaries for the images);
# systemd for `systemd-analyze verify` of the guard's unit (nothing starts it: the machine's init stays as it is).
APT_PACKAGES="nginx chromium wrk ca-certificates containerd runc containernetworking-plugins iptables conntrack
  ipset buildah mmdebstrap musl-tools systemd"

log() { echo "setup: $*" >&2; }

# A short key for a set of inputs, so a change to any of them builds a new cache entry.
key_of() { cat "$@" | sha256sum | cut -c1-12; }

# Points the stable name $CACHE/$2 at $1 (replacing a plain directory left by a hand install).
link() {
  local target=$1 name=$CACHE/$2
  if [ -e "$name" ] && [ ! -L "$name" ]; then rm -rf "$name"; fi
  ln -sfn "$target" "$name"
}

# The static (musl) target the images' binaries are built for.
install_rust_target() {
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl && return
  log "adding the Rust target x86_64-unknown-linux-musl"
  rustup target add x86_64-unknown-linux-musl
}

install_apt() {
  local missing=() pkg
  for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# go_build MODULE_DIR NAME LDFLAGS PACKAGE... — builds the packages of a pinned tools module into
# $CACHE/NAME-<key>/ and links each binary into $CACHE/bin/. GO_TAGS (optional) are build tags, part of the key.
go_build() {
  local module=$ROOT/tools/$1 name=$2 ldflags=$3; shift 3
  local tags=${GO_TAGS:-}
  # Without tags the key is the one it always was (no rebuild of the tools cached before tags existed).
  local out=$CACHE/$name-$(key_of "$module/go.mod" "$module/go.sum" <(go version; echo "$ldflags"; [ -z "$tags" ] || echo "tags $tags"))
  local pkg bin
  if [ ! -f "$out/.complete" ]; then
    log "building $name (cold builds take a while on 2 cores; cached in $out)"
    rm -rf "$out"
    (cd "$module" && GOFLAGS=-mod=readonly go build -tags "$tags" -ldflags "$ldflags" -o "$out/" "$@")
    # go names a binary after its package's last path element, skipping a major-version suffix.
    [ -x "$out/server" ] && mv "$out/server" "$out/etcd"
    touch "$out/.complete"
  fi
  for pkg in "$@"; do
    bin=${pkg##*/}
    if [[ $bin =~ ^v[0-9]+$ ]]; then bin=${pkg%/*} && bin=${bin##*/}; fi
    [ "$pkg" = go.etcd.io/etcd/server/v3 ] && bin=etcd
    [ -x "$out/$bin" ] || { log "expected $out/$bin after building $pkg"; exit 1; }
    ln -sfn "$out/$bin" "$CACHE/bin/$bin"
  done
}

# The version a tools module pins for a dependency, from its go.mod.
pinned() {
  awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$ROOT/tools/$1/go.mod"
}

install_go_tools() {
  local k8s etcd helm minor
  k8s=$(pinned k8s k8s.io/kubernetes)
  minor=$(echo "$k8s" | cut -d. -f2)
  # Stamp the real release so /version reports it, as the official build does.
  go_build k8s kubernetes-"$k8s" "-s -w \
    -X k8s.io/component-base/version.gitVersion=$k8s \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=$k8s \
    -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
  etcd=$(pinned etcd go.etcd.io/etcd/server/v3)
  go_build etcd etcd-"$etcd" "-s -w" go.etcd.io/etcd/server/v3
  # The test node's NetworkPolicy enforcer: kube-router's firewall only (iptables + ipset; tests/src/node.rs
  # starts it on request).
  local kr
  kr=$(pinned kube-router github.com/cloudnativelabs/kube-router/v2)
  go_build kube-router kube-router-"$kr" "-s -w" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  helm=$(pinned helm helm.sh/helm/v3)
  # As helm's own Makefile does: the Kubernetes version `helm template` and `helm lint` assume is the one of
  # the client-go it was built with (otherwise v1.20, and charts with a kubeVersion constraint fail).
  minor=$(cd "$ROOT/tools/helm" && GOFLAGS=-mod=readonly go list -f '{{.Version}}' -m k8s.io/client-go | cut -d. -f2)
  go_build helm helm-"$helm" "-s -w -X helm.sh/helm/v3/internal/version.version=$helm \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    helm.sh/helm/v3/cmd/helm
  # actionlint checks .github/workflows (the release workflow cannot run here; the test holds it to this).
  local actionlint
  actionlint=$(pinned actionlint github.com/rhysd/actionlint)
  go_build actionlint actionlint-"$actionlint" "-s -w -X github.com/rhysd/actionlint.version=$actionlint" \
    github.com/rhysd/actionlint/cmd/actionlint
  # promtool checks and unit-tests the chart's alerting rules. Only cmd/promtool of the big Prometheus module,
  # and without the service-discovery plugins it registers for `check config` (remove_all_sd): a cold build
  # took about 5 minutes on 2 cores shared with other builds (actionlint: seconds).
  local prometheus
  prometheus=$(pinned promtool github.com/prometheus/prometheus)
  GO_TAGS=remove_all_sd go_build promtool promtool-"$prometheus" "-s -w" github.com/prometheus/prometheus/cmd/promtool
  # Ory Hydra, the real OAuth authorization server of the guard's OAuth tests (tests/tests/hydra_common). Its
  # go.mod has replace directives, so it cannot be `go install`ed: tools/hydra repeats its replace for pop. The
  # sqlite tags make `DSN=memory` work (cgo); a cold build takes 1 to 4 minutes on 2 cores, by how busy they are.
  local hydra
  hydra=$(pinned hydra github.com/ory/hydra/v2)
  CGO_ENABLED=1 GO_TAGS=sqlite,sqlite_omit_load_extension go_build hydra hydra-"$hydra" \
    "-s -w -X github.com/ory/hydra/v2/driver/config.Version=$hydra" github.com/ory/hydra/v2
}

# cargo-deb (crates.io) builds the standalone guard's Debian package; installed into its own versioned root.
CARGO_DEB_VERSION=3.8.0
install_cargo_deb() {
  local out=$CACHE/cargo-deb-$CARGO_DEB_VERSION
  if [ ! -f "$out/.complete" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION (cached in $out)"
    rm -rf "$out"
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" --root "$out"
    touch "$out/.complete"
  fi
  ln -sfn "$out/bin/cargo-deb" "$CACHE/bin/cargo-deb"
}

# The real Gateway API CRDs (standard channel) of the pinned release, for the tests: the module carries them
# under config/crd/. Nothing is built; the YAML is copied into $CACHE/gateway-api-crds-<version>.
install_gateway_api_crds() {
  local version out dir
  version=$(pinned gateway-api sigs.k8s.io/gateway-api)
  out=$CACHE/gateway-api-crds-$version
  if [ ! -f "$out/.complete" ]; then
    log "fetching the Gateway API $version CRDs"
    dir=$(cd "$ROOT/tools/gateway-api" && GOFLAGS=-mod=readonly go mod download -json sigs.k8s.io/gateway-api |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$dir/config/crd/standard" ] || { log "no config/crd/standard in $dir"; exit 1; }
    rm -rf "$out"
    mkdir -p "$out"
    cp "$dir"/config/crd/standard/gateway.networking.k8s.io_{gatewayclasses,gateways,httproutes,referencegrants}.yaml "$out/"
    touch "$out/.complete"
  fi
  link "$out" gateway-api-crds
}

install_python() {
  local req=$ROOT/tests/mcp/requirements.txt
  [ -f "$req" ] || { log "no $req yet: skipping the Python venv"; return; }
  local venv=$CACHE/venv-$(key_of "$req" <(python3 --version))
  if [ ! -f "$venv/.complete" ]; then
    log "creating the Python venv $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    touch "$venv/.complete"
  fi
  link "$venv" venv
}

install_node() {
  local pkg=$ROOT/tests/mcp/package.json lock=$ROOT/tests/mcp/package-lock.json
  [ -f "$pkg" ] || { log "no $pkg yet: skipping npm packages"; return; }
  local inputs=("$pkg")
  [ -f "$lock" ] && inputs+=("$lock")
  local dir=$CACHE/node-$(key_of "${inputs[@]}" <(node --version))
  if [ ! -f "$dir/.complete" ]; then
    log "installing npm packages into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "${inputs[@]}" "$dir/"
    if [ -f "$lock" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
    touch "$dir/.complete"
  fi
  link "$dir" node
}

install_apt
install_rust_target
install_go_tools
install_cargo_deb
install_gateway_api_crds
install_python
install_node
log "ready: tools in $CACHE/bin"
