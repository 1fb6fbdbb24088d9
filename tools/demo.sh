#!/usr/bin/env bash
# mcp-guard in two minutes, on this machine, with real components (`make demo`; run `make setup` first):
#
#   1. starts a local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager on 127.0.0.1),
#   2. installs the Helm chart (CRDs, RBAC, webhooks, the "default" MCPGuardPolicy),
#   3. runs the operator as the chart's ServiceAccount, its webhook registered by the chart on a local port,
#   4. applies examples/ingress/weather.yaml (a FastMCP server behind an Ingress) and waits until it is Ready,
#   5. reads the pod the webhook injected and the guard config the operator derived,
#   6. starts the real MCP server (MCP Python SDK) and the guard exactly as that pod spec says
#      (the pod IP is 127.0.0.2 here),
#   7. shows a legitimate MCP client succeeding and DNS-rebinding requests (forged Host / Origin) refused with
#      the guard's structured 421 / 403,
#   8. adds a host to the MCPServer and shows the guard picking the new allowlist up without a restart,
#   9. uninstalls, and cleans everything up (also on Ctrl-C or failure).
#
# Parts whose component is not built yet are reported as "not yet" and skipped; the script still runs.
# Environment: MCP_GUARD_CACHE (default ~/.cache/mcp-guard), DEMO_KEEP=1 to keep the work directory.
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
POD_IP=127.0.0.2                 # the guard's "pod IP": a second loopback address, so the server keeps 127.0.0.1
PUBLIC_HOST=weather.example.com  # the Ingress rule's host in the example
ATTACKER=attacker.test

if [ -t 1 ]; then
  B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' Y=$'\e[33m' D=$'\e[2m' N=$'\e[0m'
else
  B='' G='' R='' Y='' D='' N=''
fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
info() { printf '    %s\n' "$*"; }
ok() { printf '    %s✔ %s%s\n' "$G" "$*" "$N"; }
notyet() { printf '    %s… not yet: %s%s\n' "$Y" "$*" "$N"; }
die() { printf '%s✘ %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

declare -A RESULT=()
declare -a ORDER=()
result() { ORDER+=("$1"); RESULT[$1]=$2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcp-guard-demo.XXXXXX")
PIDS=()
cleanup() {
  local status=$? pid i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[$i]}
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a background process with its output in $WORK/<name>.log and remembers it for cleanup.
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}

# Waits until "$@" succeeds (up to $TIMEOUT seconds, default 60).
wait_for() {
  local deadline=$((SECONDS + ${TIMEOUT:-60}))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# A workspace binary counts as built when it runs (the skeletons print "not yet implemented" and exit 2).
implemented() {
  [ -x "$TARGET/$1" ] || return 1
  local out
  out=$("$TARGET/$1" --help 2>&1 || true)
  ! grep -q "not yet implemented" <<<"$out"
}
http_code() { curl -s -o "$2" -w '%{http_code}' "${@:3}" "$1" || true; }

INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'

# ---------------------------------------------------------------------------------------------------------------
step "Checking tools (make setup) and building the workspace binaries"
for tool in helm kubectl kube-apiserver etcd; do
  [ -x "$CACHE/bin/$tool" ] || die "$CACHE/bin/$tool is missing: run \`make setup\` first"
done
[ -x "$PY" ] || die "$PY is missing: run \`make setup\` first"
command -v curl >/dev/null || die "curl is needed"
export PATH=$CACHE/bin:$PATH
export HELM_CONFIG_HOME=$WORK/helm/config HELM_CACHE_HOME=$WORK/helm/cache HELM_DATA_HOME=$WORK/helm/data
(cd "$ROOT" && cargo build -q -p mcp-guard -p mcp-guard-operator -p mcp-guard-tests --bins)
HAVE_OPERATOR=0 HAVE_GUARD=0
implemented mcp-guard-operator && HAVE_OPERATOR=1
implemented mcp-guard && HAVE_GUARD=1
[ -x "$TARGET/local-cluster" ] || die "no local-cluster binary in $TARGET (tests/src/bin/local-cluster.rs)"
ok "helm $(helm version --short 2>/dev/null), kubectl, kube-apiserver, etcd from $CACHE/bin"
if [ $HAVE_OPERATOR = 1 ]; then ok "mcp-guard-operator built"; else notyet "mcp-guard-operator is not implemented"; fi
if [ $HAVE_GUARD = 1 ]; then ok "mcp-guard built"; else notyet "mcp-guard is not implemented"; fi
for addr in 127.0.0.1 $POD_IP; do
  port_free "$addr" 8000 || die "$addr:8000 is in use; the example server listens there (stop whatever holds it)"
done
port_free $POD_IP 15081 || die "$POD_IP:15081 is in use (the guard's admin port)"

# ---------------------------------------------------------------------------------------------------------------
step "1. Starting a local Kubernetes control plane"
export KUBECONFIG=$WORK/admin.kubeconfig
start cluster "$TARGET/local-cluster" --kubeconfig-out "$KUBECONFIG"
CLUSTER_PID=$LAST_PID
TIMEOUT=120 wait_for grep -q '^ready ' "$WORK/cluster.log" || {
  tail -20 "$WORK/cluster.log" >&2
  die "the control plane did not start (log above)"
}
kill -0 "$CLUSTER_PID" || die "the control plane exited"
ok "kube-apiserver $(kubectl version -o json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at $(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"
info "${D}KUBECONFIG=$KUBECONFIG (no scheduler and no kubelet: pods are admitted and stored, not run)$N"
result "control plane" ok

# ---------------------------------------------------------------------------------------------------------------
step "2. helm install $RELEASE charts/mcp-guard"
HAVE_CRDS=0
compgen -G "$ROOT/charts/mcp-guard/crds/*.yaml" >/dev/null && HAVE_CRDS=1
WEBHOOK_PORT=$(free_port)
HELM_ARGS=(--namespace "$RELEASE_NS" --create-namespace)
if [ $HAVE_OPERATOR = 1 ]; then
  # The API server calls the operator's webhook on this machine instead of an in-cluster Service.
  HELM_ARGS+=(--set "webhook.externalURL=https://127.0.0.1:$WEBHOOK_PORT"
    --set "webhook.certificate.extraIPAddresses={127.0.0.1}")
else
  HELM_ARGS+=(--set webhook.enabled=false)
fi
[ $HAVE_CRDS = 1 ] || HELM_ARGS+=(--set policy.create=false)
if helm install "$RELEASE" "$ROOT/charts/mcp-guard" "${HELM_ARGS[@]}" >"$WORK/helm-install.log" 2>&1; then
  ok "$(grep -m1 '^STATUS' "$WORK/helm-install.log")"
  kubectl -n "$RELEASE_NS" get deploy,sa,svc,secret,lease -o name | sed 's/^/    /'
  [ $HAVE_CRDS = 1 ] && info "$(kubectl get mcpguardpolicy default -o jsonpath='MCPGuardPolicy default: defaultMode={.spec.defaultMode}, sidecar image {.spec.sidecar.image}')"
  result "helm install" ok
else
  cat "$WORK/helm-install.log" >&2
  die "helm install failed"
fi
[ $HAVE_CRDS = 1 ] || notyet "crds/ is empty: no MCPServer can be created"

# ---------------------------------------------------------------------------------------------------------------
step "3. Running the operator as the chart's ServiceAccount"
OPERATOR_UP=0
if [ $HAVE_OPERATOR = 1 ] && [ $HAVE_CRDS = 1 ]; then
  SA=$(kubectl -n "$RELEASE_NS" get deploy "$RELEASE" -o jsonpath='{.spec.template.spec.serviceAccountName}')
  TOKEN=$(kubectl -n "$RELEASE_NS" create token "$SA" --duration=1h)
  SERVER=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
  CA=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  OP_KUBECONFIG=$WORK/operator.kubeconfig
  cat >"$OP_KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "$SERVER", certificate-authority-data: "$CA"}}]
users: [{name: $SA, user: {token: "$TOKEN"}}]
contexts: [{name: demo, context: {cluster: demo, user: $SA}}]
current-context: demo
EOF
  chmod 600 "$OP_KUBECONFIG"
  info "identity: $(kubectl --kubeconfig "$OP_KUBECONFIG" auth whoami -o jsonpath='{.status.userInfo.username}')"
  # The webhook certificate, read with the operator's own identity (its Role allows exactly this Secret).
  SECRET=$(kubectl -n "$RELEASE_NS" get deploy "$RELEASE" -o jsonpath='{.spec.template.spec.volumes[0].secret.secretName}')
  mkdir -p "$WORK/tls"
  for key in tls.crt tls.key; do
    kubectl --kubeconfig "$OP_KUBECONFIG" -n "$RELEASE_NS" get secret "$SECRET" \
      -o jsonpath="{.data.${key//./\\.}}" | base64 -d >"$WORK/tls/$key"
  done
  # The flags and environment of the chart's Deployment, with the listen addresses moved to this machine.
  ADMIN_PORT=$(free_port)
  kubectl -n "$RELEASE_NS" get deploy "$RELEASE" -o json | "$PY" -c '
import json, sys
c = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
work, admin, webhook = sys.argv[1:4]
for a in c.get("args", []):
    a = a.replace("0.0.0.0:8080", "127.0.0.1:" + admin).replace("0.0.0.0:9443", "127.0.0.1:" + webhook)
    print("ARG\t" + a.replace("/tls/", work + "/tls/"))
for e in c.get("env", []):
    if "value" in e:
        print("ENV\t%s=%s" % (e["name"], e["value"]))
' "$WORK" "$ADMIN_PORT" "$WEBHOOK_PORT" >"$WORK/operator.spec"
  mapfile -t OP_ARGS < <(sed -n 's/^ARG\t//p' "$WORK/operator.spec")
  mapfile -t OP_ENV < <(sed -n 's/^ENV\t//p' "$WORK/operator.spec")
  info "${D}mcp-guard-operator ${OP_ARGS[*]}$N"
  start operator env "${OP_ENV[@]}" KUBECONFIG="$OP_KUBECONFIG" POD_NAME=mcp-guard-operator-demo-0 \
    POD_NAMESPACE="$RELEASE_NS" "$TARGET/mcp-guard-operator" "${OP_ARGS[@]}"
  if TIMEOUT=60 wait_for curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"; then
    OPERATOR_UP=1
    ok "operator ready (admin http://127.0.0.1:$ADMIN_PORT, webhook https://127.0.0.1:$WEBHOOK_PORT)"
    result "operator as the chart's ServiceAccount" ok
  else
    tail -20 "$WORK/operator.log" | sed 's/^/    /'
    die "the operator did not become ready (log: $WORK/operator.log)"
  fi
else
  notyet "the operator (or the CRDs) has not landed"
  result "operator as the chart's ServiceAccount" "not yet"
fi

# ---------------------------------------------------------------------------------------------------------------
step "4. kubectl apply -f examples/ingress/weather.yaml"
RECONCILED=0
if [ $OPERATOR_UP = 1 ]; then
  kubectl apply -f "$EXAMPLE" | sed 's/^/    /'
  # The MCPServer is applied before its Service and Ingress; wait until the allowlist has caught up with them.
  ingress_host_allowed() {
    kubectl -n "$APP_NS" get configmap "$APP-mcp-guard" -o jsonpath='{.data.guard\.json}' | grep -q "\"$PUBLIC_HOST\""
  }
  if kubectl -n "$APP_NS" wait "mcpserver/$APP" --for=condition=Ready --timeout=60s >/dev/null &&
    TIMEOUT=30 wait_for ingress_host_allowed; then
    RECONCILED=1
    kubectl -n "$APP_NS" get mcps | sed 's/^/    /'
    info "where each allowed host comes from:"
    kubectl -n "$APP_NS" get mcpserver "$APP" -o json | "$PY" -c '
import json, sys
for e in json.load(sys.stdin)["status"].get("allowedHosts", []):
    print("      %-48s <- %s" % (e["value"], ", ".join(e.get("sources", []))))'
    result "MCPServer reconciled (ConfigMap + Ready)" ok
  else
    kubectl -n "$APP_NS" get mcpserver "$APP" -o yaml | sed 's/^/    /'
    die "MCPServer $APP_NS/$APP did not become Ready"
  fi
else
  notyet "needs the operator"
  result "MCPServer reconciled (ConfigMap + Ready)" "not yet"
fi

# ---------------------------------------------------------------------------------------------------------------
step "5. Reading the injected pod spec and the guard config"
INJECTED=0
mkdir -p "$WORK/etc/mcp-guard" "$WORK/app"
if [ $RECONCILED = 1 ]; then
  if TIMEOUT=60 wait_for sh -c "kubectl -n $APP_NS get pods -l app=$APP -o name | grep -q ."; then
    POD=$(kubectl -n "$APP_NS" get pods -l "app=$APP" -o jsonpath='{.items[0].metadata.name}')
    kubectl -n "$APP_NS" get pod "$POD" -o json >"$WORK/pod.json"
    "$PY" - "$WORK/pod.json" >"$WORK/guard.spec" <<'EOF'
import json, sys
pod = json.load(open(sys.argv[1]))
spec = pod["spec"]
guards = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "mcp-guard"]
if not guards:
    sys.exit(0)
g = guards[0]
kind = "native sidecar (init container, restartPolicy Always)" if g.get("restartPolicy") == "Always" else "container"
print("KIND\t" + kind)
print("IMAGE\t" + g.get("image", ""))
for a in g.get("args", []):
    print("ARG\t" + a)
app = [c for c in spec["containers"] if c["name"] != "mcp-guard"][0]
for e in app.get("env", []):
    if e["name"] == "PORT":
        print("PORT\t" + e["value"])
EOF
    if grep -q '^ARG' "$WORK/guard.spec"; then
      INJECTED=1
      ok "pod $POD has the guard as a $(sed -n 's/^KIND\t//p' "$WORK/guard.spec"): $(sed -n 's/^IMAGE\t//p' "$WORK/guard.spec")"
      info "${D}mcp-guard $(sed -n 's/^ARG\t//p' "$WORK/guard.spec" | tr '\n' ' ')$N"
      result "webhook injected the guard" ok
    else
      notyet "pod $POD has no mcp-guard container (the webhook did not inject it)"
      result "webhook injected the guard" "not yet"
    fi
  else
    notyet "no pod was created for deployment/$APP"
    result "webhook injected the guard" "not yet"
  fi
  kubectl -n "$APP_NS" get configmap "$APP-mcp-guard" -o jsonpath='{.data.guard\.json}' >"$WORK/etc/mcp-guard/guard.json"
  info "ConfigMap $APP-mcp-guard, guard.json:"
  "$PY" -m json.tool "$WORK/etc/mcp-guard/guard.json" | sed 's/^/      /'
  kubectl -n "$APP_NS" get configmap "$APP-server" -o jsonpath='{.data.server\.py}' >"$WORK/app/server.py"
else
  notyet "needs a reconciled MCPServer; using the example's files and the guard's own flags instead"
  result "webhook injected the guard" "not yet"
  cp "$ROOT/examples/server/server.py" "$WORK/app/server.py"
fi

# ---------------------------------------------------------------------------------------------------------------
step "6. Starting the MCP server and its guard as the pod spec says"
APP_PORT=$(sed -n 's/^PORT\t//p' "$WORK/guard.spec" 2>/dev/null || true)
APP_PORT=${APP_PORT:-8000}
start server env PORT="$APP_PORT" PYTHONUNBUFFERED=1 "$PY" "$WORK/app/server.py"
SERVER_PID=$LAST_PID
TIMEOUT=30 wait_for bash -c "exec 3<>/dev/tcp/127.0.0.1/$APP_PORT" || { cat "$WORK/server.log" >&2; die "the MCP server did not start"; }
ok "MCP server (MCP Python SDK, SDK defaults) on 127.0.0.1:$APP_PORT, pid $SERVER_PID"
GUARD_UP=0
if [ $HAVE_GUARD = 1 ]; then
  if [ $INJECTED = 1 ]; then
    # Kubernetes expands $(POD_IP) from the downward API; here the pod IP is $POD_IP, and the ConfigMap volume
    # mounted at /etc/mcp-guard is $WORK/etc/mcp-guard.
    mapfile -t GUARD_ARGS < <(sed -n 's/^ARG\t//p' "$WORK/guard.spec" |
      sed -e "s/\$(POD_IP)/$POD_IP/g" -e "s#/etc/mcp-guard/#$WORK/etc/mcp-guard/#g" -e "s/0\.0\.0\.0:/$POD_IP:/g")
  else
    GUARD_ARGS=(--listen "$POD_IP:$APP_PORT" --upstream "http://127.0.0.1:$APP_PORT" --allow-host "$PUBLIC_HOST"
      --allow-host "$APP.$APP_NS.svc.cluster.local" --allow-host "$POD_IP" --allow-origin https://chat.example.com
      --admin-listen "$POD_IP:15081")
  fi
  info "${D}mcp-guard ${GUARD_ARGS[*]}$N"
  start guard "$TARGET/mcp-guard" "${GUARD_ARGS[@]}"
  if TIMEOUT=30 wait_for curl -sf "http://$POD_IP:15081/readyz"; then
    GUARD_UP=1
    ok "guard on $POD_IP:$APP_PORT -> 127.0.0.1:$APP_PORT (admin $POD_IP:15081)"
  else
    tail -20 "$WORK/guard.log" | sed 's/^/    /'
    die "the guard did not become ready (log: $WORK/guard.log)"
  fi
else
  notyet "the guard (mcp-guard) has not landed"
fi

# ---------------------------------------------------------------------------------------------------------------
step "7. A legitimate MCP client, then a DNS-rebinding attack"
GUARD_URL=http://$POD_IP:$APP_PORT/mcp
if [ $GUARD_UP = 1 ]; then
  info "MCP client (MCP Python SDK) -> $GUARD_URL with Host: $PUBLIC_HOST (as through the Ingress)"
  if OUT=$("$PY" "$ROOT/examples/server/client.py" --url "$GUARD_URL" --header "Host: $PUBLIC_HOST"); then
    ok "$OUT"
    result "legitimate MCP client through the guard" ok
  else
    printf '    %s✘ %s%s\n' "$R" "$OUT" "$N"
    result "legitimate MCP client through the guard" FAILED
  fi
  SVC_HOST=$APP.$APP_NS.svc.cluster.local
  info "MCP client -> $GUARD_URL with Host: $SVC_HOST (an in-cluster client using the Service)"
  if OUT=$("$PY" "$ROOT/examples/server/client.py" --url "$GUARD_URL" --header "Host: $SVC_HOST"); then
    ok "$OUT"
  else
    printf '    %s✘ %s%s\n' "$R" "$OUT" "$N"
  fi

  info "A page on http://$ATTACKER rebinds its name to the server and POSTs (forged Host and Origin):"
  CODE=$(http_code "$GUARD_URL" "$WORK/rebind-host.json" -X POST -H "Host: $ATTACKER:$APP_PORT" \
    -H "Origin: http://$ATTACKER:$APP_PORT" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' --data "$INIT")
  "$PY" -m json.tool "$WORK/rebind-host.json" 2>/dev/null | sed 's/^/      /' || sed 's/^/      /' "$WORK/rebind-host.json"
  if [ "$CODE" = 421 ] && grep -q host_not_allowed "$WORK/rebind-host.json"; then
    ok "HTTP $CODE host_not_allowed"
    result "DNS rebinding (forged Host) blocked: 421" ok
  else
    printf '    %s✘ HTTP %s%s\n' "$R" "$CODE" "$N"
    result "DNS rebinding (forged Host) blocked: 421" FAILED
  fi

  info "The same page with the right Host but its own Origin (e.g. through a proxy that rewrites Host):"
  CODE=$(http_code "$GUARD_URL" "$WORK/rebind-origin.json" -X POST -H "Host: $PUBLIC_HOST" \
    -H "Origin: http://$ATTACKER" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' --data "$INIT")
  "$PY" -m json.tool "$WORK/rebind-origin.json" 2>/dev/null | sed 's/^/      /' || sed 's/^/      /' "$WORK/rebind-origin.json"
  if [ "$CODE" = 403 ] && grep -q origin_not_allowed "$WORK/rebind-origin.json"; then
    ok "HTTP $CODE origin_not_allowed"
    result "DNS rebinding (forged Origin) blocked: 403" ok
  else
    printf '    %s✘ HTTP %s%s\n' "$R" "$CODE" "$N"
    result "DNS rebinding (forged Origin) blocked: 403" FAILED
  fi
  info "the guard counted them (http://$POD_IP:15081/metrics):"
  curl -s "http://$POD_IP:15081/metrics" | grep -E '^mcp_guard_requests_total\{' | grep -v ' 0$' | sed 's/^/      /' || true
else
  notyet "needs the guard; without it the server is reached directly:"
  CODE=$(http_code "http://127.0.0.1:$APP_PORT/mcp" "$WORK/direct.txt" -X POST -H "Host: $ATTACKER" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' --data "$INIT")
  info "SDK's own check: HTTP $CODE $(cat "$WORK/direct.txt") (plain text, no reason, no hint)"
  for r in "legitimate MCP client through the guard" "DNS rebinding (forged Host) blocked: 421" \
    "DNS rebinding (forged Origin) blocked: 403"; do
    result "$r" "not yet"
  done
fi

# ---------------------------------------------------------------------------------------------------------------
if [ $GUARD_UP = 1 ] && [ $INJECTED = 1 ]; then
  step "8. A new allowed host, without touching the guard"
  NEW_HOST=mcp.internal.example.com
  info "kubectl patch mcpserver $APP: spec.hosts += $NEW_HOST"
  kubectl -n "$APP_NS" patch mcpserver "$APP" --type merge -p "{\"spec\":{\"hosts\":[\"$NEW_HOST\"]}}" >/dev/null
  cm_has_host() {
    kubectl -n "$APP_NS" get configmap "$APP-mcp-guard" -o jsonpath='{.data.guard\.json}' | grep -q "\"$NEW_HOST\""
  }
  if TIMEOUT=30 wait_for cm_has_host; then
    # What kubelet does to a ConfigMap volume: write the new file aside, then swap it in atomically.
    kubectl -n "$APP_NS" get configmap "$APP-mcp-guard" -o jsonpath='{.data.guard\.json}' >"$WORK/etc/guard.json.new"
    mv "$WORK/etc/guard.json.new" "$WORK/etc/mcp-guard/guard.json"
    allowed_now() {
      [ "$(http_code "$GUARD_URL" /dev/null -X POST -H "Host: $NEW_HOST" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' --data "$INIT")" = 200 ]
    }
    if TIMEOUT=20 wait_for allowed_now; then
      ok "the operator rewrote the ConfigMap, the guard reloaded it: Host: $NEW_HOST -> HTTP 200"
      result "allowlist change picked up without a restart" ok
    else
      printf '    %s✘ Host: %s still refused after the reload%s\n' "$R" "$NEW_HOST" "$N"
      result "allowlist change picked up without a restart" FAILED
    fi
  else
    printf '    %s✘ the ConfigMap did not gain %s%s\n' "$R" "$NEW_HOST" "$N"
    result "allowlist change picked up without a restart" FAILED
  fi
fi

# ---------------------------------------------------------------------------------------------------------------
if [ $OPERATOR_UP = 1 ]; then
  step "9. Cleaning up: kubectl delete the example, helm uninstall"
  kubectl delete -f "$EXAMPLE" --wait=false >/dev/null 2>&1 || true
  TIMEOUT=30 wait_for sh -c "! kubectl -n $APP_NS get mcpserver $APP" || true
  if helm uninstall "$RELEASE" -n "$RELEASE_NS" >/dev/null; then
    ok "helm uninstall: $(kubectl get crd -o name | grep -c mcpguard.dev) CRDs remain, as Helm documents"
  fi
fi

step "Summary"
FAILED=0
for name in "${ORDER[@]}"; do
  case ${RESULT[$name]} in
    ok) printf '  %s✔%s %s\n' "$G" "$N" "$name" ;;
    "not yet") printf '  %s…%s %s %s(not yet)%s\n' "$Y" "$N" "$name" "$Y" "$N" ;;
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
