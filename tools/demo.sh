#!/usr/bin/env bash
# mcp-guard in a few minutes, on this machine, with real components (`make demo` builds what it needs first):
#
#   1. starts a local Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager, and a real node
#      (containerd + runc + CNI bridge, kubelet, kube-scheduler, kube-proxy) whose pods live on a bridge of its
#      own (10.217.33.0/24) on this machine; the images are the ones `make images` built from the Dockerfiles,
#   2. `helm install`s the chart: the operator and its webhook run in-cluster, as a Deployment,
#   3. `kubectl apply -f examples/ingress/weather.yaml` (a FastMCP server behind an Ingress), waits until the
#      MCPServer is Ready, and shows where each allowed host comes from,
#   4. waits until the server's pods run with the guard injected by the webhook, 2/2 Ready,
#   5. shows a legitimate MCP client succeeding, through the pod IP and through the Service's ClusterIP,
#   6. shows the DNS-rebinding attack (forged Host, forged Origin) refused with the guard's structured 421 / 403,
#   7. adds a host to the MCPServer and shows the running guards pick it up (through the kubelet's ConfigMap
#      update) without a restart,
#   8. uninstalls and tears everything down, the node included (also on Ctrl-C or failure).
#
# Needs root (the node). Environment: MCP_GUARD_CACHE (default ~/.cache/mcp-guard), DEMO_KEEP=1 to keep the work
# directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCP_GUARD_CACHE:-$HOME/.cache/mcp-guard}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/debug
PY=$CACHE/venv/bin/python
RELEASE=mcp-guard
RELEASE_NS=mcp-guard-system
EXAMPLE=$ROOT/examples/ingress/weather.yaml
APP_NS=mcp-weather
APP=weather
PORT=8000
PUBLIC_HOST=weather.example.com  # the Ingress rule's host in the example
SVC_HOST=$APP.$APP_NS.svc.cluster.local
ATTACKER=attacker.test

if [ -t 1 ]; then
  B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'
else
  B='' G='' R='' D='' N=''
fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
info() { printf '    %s\n' "$*"; }
ok() { printf '    %s✔ %s%s\n' "$G" "$*" "$N"; }
bad() { printf '    %s✘ %s%s\n' "$R" "$*" "$N"; }
die() { printf '%s✘ %s%s\n' "$R" "$*" "$N" >&2; exit 1; }
indent() { sed 's/^/    /'; }

declare -A RESULT=()
declare -a ORDER=()
result() { ORDER+=("$1"); RESULT[$1]=$2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcp-guard-demo.XXXXXX")
CLUSTER_PID=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$CLUSTER_PID" ]; then
    # local-cluster stops the node's pods and agents, tears the node down and stops the control plane.
    kill -TERM "$CLUSTER_PID" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$CLUSTER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$CLUSTER_PID" 2>/dev/null || true
  fi
  if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until "$@" succeeds (up to $TIMEOUT seconds, default 60).
wait_for() {
  local deadline=$((SECONDS + ${TIMEOUT:-60}))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}
http_code() { curl -s -o "$2" -w '%{http_code}' "${@:3}" "$1" || true; }
INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'
mcp_post() { # URL OUT HEADER... : an MCP initialize POST; prints the HTTP status
  local url=$1 out=$2; shift 2
  http_code "$url" "$out" -X POST -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' "$@" --data "$INIT"
}

# ---------------------------------------------------------------------------------------------------------------
step "Checking tools (make setup), images (make images) and the workspace binaries"
[ "$(id -u)" = 0 ] || die "the demo runs a real node (containerd, kubelet, iptables): run it as root"
for tool in helm kubectl kube-apiserver kubelet etcd; do
  [ -x "$CACHE/bin/$tool" ] || die "$CACHE/bin/$tool is missing: run \`make setup\` first"
done
for image in pause mcp-guard mcp-guard-operator example-server; do
  [ -f "${MCP_GUARD_IMAGES:-$CACHE/images}/$image.tar" ] || die "the $image image is missing: run \`make images\` first"
done
[ -x "$PY" ] || die "$PY is missing: run \`make setup\` first"
command -v curl >/dev/null || die "curl is needed"
export PATH=$CACHE/bin:$PATH
export HELM_CONFIG_HOME=$WORK/helm/config HELM_CACHE_HOME=$WORK/helm/cache HELM_DATA_HOME=$WORK/helm/data
(cd "$ROOT" && cargo build -q -p mcp-guard-tests --bin local-cluster)
ok "helm $(helm version --short 2>/dev/null), kubectl, kubelet, kube-apiserver, etcd; images from make images"

# ---------------------------------------------------------------------------------------------------------------
step "1. Starting a local cluster with a real node"
export KUBECONFIG=$WORK/admin.kubeconfig
"$TARGET/local-cluster" --node --kubeconfig-out "$KUBECONFIG" >"$WORK/cluster.log" 2>&1 &
CLUSTER_PID=$!
TIMEOUT=300 wait_for grep -q '^ready ' "$WORK/cluster.log" || {
  tail -20 "$WORK/cluster.log" >&2
  die "the cluster did not start (log above)"
}
kubectl get nodes -o wide | indent
result "cluster with a real node" ok

# ---------------------------------------------------------------------------------------------------------------
step "2. helm install $RELEASE charts/mcp-guard (the operator and its webhook in-cluster)"
# One replica: one node with two cores. Everything else is the chart's defaults. Helm returns once the webhooks
# answer through the API server (the chart's webhook-check hook Job), so the `kubectl apply` below needs no retry.
if helm install "$RELEASE" "$ROOT/charts/mcp-guard" --namespace "$RELEASE_NS" --create-namespace \
  --set replicaCount=1 --wait --timeout 5m >"$WORK/helm-install.log" 2>&1; then
  ok "$(grep -m1 '^STATUS' "$WORK/helm-install.log")"
  kubectl -n "$RELEASE_NS" get pods -o wide | indent
  result "helm install (operator Running, webhooks answering)" ok
else
  cat "$WORK/helm-install.log" >&2
  kubectl -n "$RELEASE_NS" get pods,events >&2 || true
  die "helm install failed"
fi

# ---------------------------------------------------------------------------------------------------------------
step "3. kubectl apply -f examples/ingress/weather.yaml"
# The class an ingress controller (here: ingress-nginx, not installed) would bring; the operator counts the
# Ingresses of classes that exist.
kubectl apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
EOF
kubectl apply -f "$EXAMPLE" | indent
ingress_host_allowed() {
  kubectl -n "$APP_NS" get configmap "$APP-mcp-guard" -o jsonpath='{.data.guard\.json}' | grep -q "\"$PUBLIC_HOST\""
}
if kubectl -n "$APP_NS" wait "mcpservers.mcpguard.dev/$APP" --for=condition=Ready --timeout=120s >/dev/null &&
  TIMEOUT=60 wait_for ingress_host_allowed; then
  kubectl -n "$APP_NS" get mcpservers.mcpguard.dev | indent
  info "where each allowed host comes from:"
  kubectl -n "$APP_NS" get mcpservers.mcpguard.dev "$APP" -o json | "$PY" -c '
import json, sys
for e in json.load(sys.stdin)["status"].get("allowedHosts", []):
    print("      %-48s <- %s" % (e["value"], ", ".join(e.get("sources", []))))'
  result "MCPServer reconciled (allowlist from the Ingress and Service)" ok
else
  kubectl -n "$APP_NS" get mcpservers.mcpguard.dev "$APP" -o yaml | indent
  die "MCPServer $APP_NS/$APP did not become Ready"
fi

# ---------------------------------------------------------------------------------------------------------------
step "4. The server's pods, with the guard injected"
both_ready() {
  [ "$(kubectl -n "$APP_NS" get pods -l "app=$APP" --no-headers 2>/dev/null | grep -c ' 2/2 *Running ')" = 2 ]
}
if TIMEOUT=240 wait_for both_ready; then
  kubectl -n "$APP_NS" get pods -l "app=$APP" -o wide | indent
  POD=$(kubectl -n "$APP_NS" get pods -l "app=$APP" -o jsonpath='{.items[0].metadata.name}')
  POD_IP=$(kubectl -n "$APP_NS" get pod "$POD" -o jsonpath='{.status.podIP}')
  info "$POD: $(kubectl -n "$APP_NS" get pod "$POD" -o jsonpath='{range .spec.initContainers[*]}{.name} (init, restartPolicy {.restartPolicy}: a native sidecar) {.image}{end}')"
  info "${D}mcp-guard $(kubectl -n "$APP_NS" get pod "$POD" -o jsonpath='{.spec.initContainers[0].args}')$N"
  result "webhook injected the guard, pods 2/2 Ready" ok
else
  kubectl -n "$APP_NS" get pods,events | indent
  die "the pods did not become 2/2 Ready"
fi
CLUSTER_IP=$(kubectl -n "$APP_NS" get svc "$APP" -o jsonpath='{.spec.clusterIP}')

# ---------------------------------------------------------------------------------------------------------------
step "5. A legitimate MCP client"
client() { "$PY" "$ROOT/examples/server/client.py" "$@"; }
info "MCP client (MCP Python SDK) -> http://$POD_IP:$PORT/mcp with Host: $PUBLIC_HOST (as through the Ingress)"
if OUT=$(client --url "http://$POD_IP:$PORT/mcp" --header "Host: $PUBLIC_HOST"); then
  ok "$OUT"
  result "legitimate MCP client (pod IP, Ingress host)" ok
else
  bad "$OUT"
  result "legitimate MCP client (pod IP, Ingress host)" FAILED
fi
info "MCP client -> http://$CLUSTER_IP/mcp (the Service's ClusterIP) with Host: $SVC_HOST (an in-cluster client)"
if OUT=$(client --url "http://$CLUSTER_IP/mcp" --header "Host: $SVC_HOST"); then
  ok "$OUT"
  result "legitimate MCP client (ClusterIP, Service DNS name)" ok
else
  bad "$OUT"
  result "legitimate MCP client (ClusterIP, Service DNS name)" FAILED
fi

# ---------------------------------------------------------------------------------------------------------------
step "6. A DNS-rebinding attack"
URL=http://$CLUSTER_IP/mcp
# expect_refusal NAME STATUS REASON TITLE CURL_ARGS...: an attack request, its JSON answer, and the verdict.
expect_refusal() {
  local name=$1 status=$2 reason=$3 title=$4 code; shift 4
  code=$(mcp_post "$URL" "$WORK/$name.json" "$@")
  "$PY" -m json.tool "$WORK/$name.json" 2>/dev/null | sed 's/^/      /' || sed 's/^/      /' "$WORK/$name.json"
  if [ "$code" = "$status" ] && grep -q "$reason" "$WORK/$name.json"; then
    ok "HTTP $code $reason"
    result "$title" ok
  else
    bad "HTTP $code"
    result "$title" FAILED
  fi
}
info "A page on http://$ATTACKER rebinds its name to the server and POSTs (forged Host and Origin):"
expect_refusal rebind-host 421 host_not_allowed "DNS rebinding (forged Host) blocked: 421" \
  -H "Host: $ATTACKER" -H "Origin: http://$ATTACKER"
info "The same page with the right Host but its own Origin (e.g. through a proxy that rewrites Host):"
expect_refusal rebind-origin 403 origin_not_allowed "DNS rebinding (forged Origin) blocked: 403" \
  -H "Host: $PUBLIC_HOST" -H "Origin: http://$ATTACKER"
info "the guards counted them (admin port 15081 of each pod, /metrics):"
for ip in $(kubectl -n "$APP_NS" get pods -l "app=$APP" -o jsonpath='{.items[*].status.podIP}'); do
  curl -s "http://$ip:15081/metrics" | grep -E '^mcp_guard_requests_total\{' | grep -v ' 0$' | sed "s/^/      $ip /" || true
done

# ---------------------------------------------------------------------------------------------------------------
step "7. A new allowed host, without touching the pods"
NEW_HOST=mcp.internal.example.com
info "kubectl patch mcpservers.mcpguard.dev $APP: spec.hosts += $NEW_HOST"
kubectl -n "$APP_NS" patch mcpservers.mcpguard.dev "$APP" --type merge -p "{\"spec\":{\"hosts\":[\"$NEW_HOST\"]}}" >/dev/null
allowed_now() { [ "$(mcp_post "http://$POD_IP:$PORT/mcp" /dev/null -H "Host: $NEW_HOST")" = 200 ]; }
info "the operator rewrites the ConfigMap; the kubelet updates the pods' volume; the guard reloads it"
if TIMEOUT=120 wait_for allowed_now; then
  RESTARTS=$(kubectl -n "$APP_NS" get pod "$POD" -o jsonpath='{.status.initContainerStatuses[0].restartCount}')
  ok "Host: $NEW_HOST -> HTTP 200 on the same pod $POD (guard restarts: $RESTARTS)"
  result "allowlist change reached the running guard" ok
else
  bad "Host: $NEW_HOST still refused"
  result "allowlist change reached the running guard" FAILED
fi

# ---------------------------------------------------------------------------------------------------------------
step "8. Cleaning up: kubectl delete the example, helm uninstall, the node and the control plane"
kubectl delete -f "$EXAMPLE" --wait=false >/dev/null 2>&1 || true
TIMEOUT=60 wait_for sh -c "! kubectl get namespace $APP_NS" || true
if helm uninstall "$RELEASE" -n "$RELEASE_NS" --wait >/dev/null; then
  ok "helm uninstall: $(kubectl get crd -o name | grep -c mcpguard.dev) CRDs remain, as Helm documents"
fi

step "Summary"
FAILED=0
for name in "${ORDER[@]}"; do
  case ${RESULT[$name]} in
    ok) printf '  %s✔%s %s\n' "$G" "$N" "$name" ;;
    *) printf '  %s✘%s %s\n' "$R" "$N" "$name"; FAILED=1 ;;
  esac
done
echo
if [ $FAILED = 0 ]; then
  echo "${B}Done.${N} Next: docs/install.md to install in a real cluster, examples/ for more, docs/reverse-proxy.md when"
  echo "you put the server behind nginx, ingress-nginx or a Gateway."
else
  echo "${R}Some steps failed; logs are in $WORK (kept).${N}"
  DEMO_KEEP=1
  exit 1
fi
