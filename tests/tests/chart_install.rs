//! The chart end to end on the real control plane: `helm install`; the operator run with exactly the identity the
//! chart's ServiceAccount gets (a bound token, not an admin) and the flags the chart's Deployment gives it, its
//! webhook on a local port that the chart registers (`webhook.externalURL`) with the chart-generated certificate;
//! `kubectl apply -f examples/ingress/weather.yaml` is reconciled (ConfigMap + Ready) and its pods are injected;
//! no RBAC error in the operator log; `helm upgrade` with changed defaults updates the policy and the allowlists and
//! keeps the webhook certificate; `helm uninstall` leaves nothing but the CRDs.

#![allow(clippy::unwrap_used)]

mod chart_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chart_common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, PostParams};
use mcp_guard_operator::crd::{MCPGuardPolicy, MCPServer};
use serde_json::Value;
use testkit::cluster::{Cluster, config_from};
use testkit::process::{Proc, tail, wait_for_http};
use testkit::tools::{bin, cargo_bin, free_port, workspace_root};

const RELEASE_NS: &str = "mcp-guard-system";
const EXAMPLE: &str = "examples/ingress/weather.yaml";
const EXAMPLE_NS: &str = "mcp-weather";

/// The tests of this file share one control plane; they take turns, so that one release's install or uninstall
/// never overlaps the other's checks (and the 2-core machine is not asked to run both at once).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Helm<'a> {
    cluster: &'a Cluster,
    home: tempfile::TempDir,
}

impl Helm<'_> {
    fn run(&self, args: &[&str]) -> String {
        let mut cmd = helm(self.home.path());
        cmd.arg("--kubeconfig").arg(self.cluster.kubeconfig()).args(args);
        let out = run(cmd);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

/// The operator process, started as the chart's Deployment would start it, but on 127.0.0.1.
struct Operator {
    proc: Proc,
    admin: String,
}

impl Operator {
    fn assert_no_rbac_errors(&self) {
        let logs = self.proc.logs();
        let bad: Vec<&str> = logs
            .lines()
            .filter(|l| {
                // The authorizer's denial ("... is forbidden: User \"system:serviceaccount:...\" cannot list
                // resource ..."), the operator's start-up permission check, or a rejected token. A 403 for
                // another reason (e.g. a namespace being terminated) is not an RBAC error.
                let l = l.to_ascii_lowercase();
                l.contains("forbidden: user")
                    || l.contains("rbac denies")
                    || (l.contains(" cannot ") && l.contains(" resource "))
                    || l.contains("unauthorized")
            })
            .collect();
        assert!(
            bad.is_empty(),
            "RBAC errors in the operator log ({}):\n{}",
            self.proc.log_path().display(),
            bad.join("\n")
        );
    }
}

/// Starts `mcp-guard-operator` with the args and env of the chart's Deployment (from `helm get manifest`),
/// authenticated as the chart's ServiceAccount, with the listen addresses moved to 127.0.0.1 and the webhook
/// certificate read from the chart's Secret by that same identity.
async fn start_operator(cluster: &Cluster, helm: &Helm<'_>, webhook_port: u16, dir: &Path) -> Operator {
    let manifest = parse_docs(&helm.run(&["get", "manifest", RELEASE, "-n", RELEASE_NS]));
    let deploy = one(&manifest, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"].as_str().unwrap().to_string();
    let container = &pod["containers"][0];

    let kubeconfig = cluster
        .service_account_kubeconfig(RELEASE_NS, &sa)
        .await
        .expect("a ServiceAccount token");
    let sa_client = kube::Client::try_from(config_from(&kubeconfig).await.unwrap()).unwrap();

    // The webhook's certificate, fetched with the operator's own identity (the Role allows exactly this Secret).
    let secret_name = pod["volumes"][0]["secret"]["secretName"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = Api::<Secret>::namespaced(sa_client.clone(), RELEASE_NS)
        .get(&secret_name)
        .await
        .unwrap_or_else(|e| panic!("the chart's ServiceAccount cannot get its webhook Secret: {e}"));
    let data = secret.data.expect("Secret data");
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(tls.join(key), &data[key].0).unwrap();
    }
    // ...and nothing else: the identity cannot list Secrets or read another one.
    assert!(
        Api::<Secret>::namespaced(sa_client.clone(), RELEASE_NS)
            .list(&ListParams::default())
            .await
            .is_err()
    );
    assert!(
        Api::<Secret>::namespaced(sa_client, "kube-system")
            .list(&ListParams::default())
            .await
            .is_err()
    );

    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let args: Vec<String> = args_of(container)
        .into_iter()
        .map(|a| {
            a.replace("[$(POD_IP)]:8080", &admin)
                .replace("[$(POD_IP)]:9443", &format!("127.0.0.1:{webhook_port}"))
                .replace("/tls/", &format!("{}/", tls.display()))
        })
        .collect();
    assert!(
        args.iter().any(|a| a.contains(&admin)),
        "the chart's admin address moved: {args:?}"
    );

    let mut cmd = Command::new(cargo_bin("mcp-guard-operator"));
    cmd.args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "mcp-guard-operator-test-0")
        .env("POD_NAMESPACE", RELEASE_NS);
    for env in container["env"].as_array().unwrap() {
        if let Some(value) = env["value"].as_str() {
            cmd.env(env["name"].as_str().unwrap(), value);
        }
    }
    let mut proc = Proc::spawn("mcp-guard-operator", cmd).expect("start mcp-guard-operator");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Err(e) = proc.ensure_running() {
            panic!("the operator exited: {e}");
        }
        if wait_for_http(&format!("http://{admin}/readyz"), Duration::from_millis(500)).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "operator not ready after 60s ({}):\n{}",
            testkit::http::get(&format!("http://{admin}/readyz"))
                .map(|r| r.text())
                .unwrap_or_default(),
            tail(&proc.logs(), 40)
        );
    }
    Operator { proc, admin }
}

fn guard_json(cm: &ConfigMap) -> Value {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(mcp_guard_config::CONFIG_KEY))
        .expect("guard.json in the ConfigMap");
    serde_json::from_str(text).expect("guard.json is JSON")
}

fn ready(server: &MCPServer) -> Result<(), String> {
    let status = server.status.as_ref().ok_or("no status yet")?;
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .ok_or("no Ready condition")?;
    if cond.status == "True" && status.observed_generation == server.metadata.generation {
        Ok(())
    } else {
        Err(format!(
            "Ready={} ({}: {})",
            cond.status, cond.reason, cond.message
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_reconcile_upgrade_uninstall() {
    let _turn = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    let client = cluster.client();
    let dir = tempfile::tempdir().unwrap();
    let helm = Helm {
        cluster,
        home: tempfile::tempdir().unwrap(),
    };
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let webhook_port = free_port();
    let webhook_url = format!("webhook.externalURL=https://127.0.0.1:{webhook_port}");

    // --- install -------------------------------------------------------------------------------------------
    // The release namespace enforces Pod Security "restricted": the operator's pods must pass it.
    kubectl(cluster, &["create", "namespace", RELEASE_NS]);
    kubectl(
        cluster,
        &[
            "label",
            "namespace",
            RELEASE_NS,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
    );
    let out = helm.run(&[
        "install",
        RELEASE,
        chart,
        "-n",
        RELEASE_NS,
        "--set",
        &webhook_url,
        "--set",
        "webhook.certificate.extraIPAddresses={127.0.0.1}",
        // The hook Job needs a node to run on (the node test's e2e scenario runs it); the command it runs is checked below.
        "--set",
        "webhook.check.enabled=false",
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("mcpguard.dev/injection=enabled"),
        "NOTES tell what to do next:\n{out}"
    );
    for crd in ["mcpservers.mcpguard.dev", "mcpguardpolicies.mcpguard.dev"] {
        kubectl(
            cluster,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=30s",
            ],
        );
    }
    // The ReplicaSet controller creates the operator's two pods (nothing runs them here): admitted under
    // "restricted", or the ReplicaSet would report FailedCreate.
    let operator_pods = Api::<Pod>::namespaced(client.clone(), RELEASE_NS);
    eventually(
        "the operator's 2 pods admitted under Pod Security restricted",
        Duration::from_secs(60),
        || async {
            let pods = operator_pods
                .list(
                    &ListParams::default()
                        .labels("app.kubernetes.io/name=mcp-guard,app.kubernetes.io/component=operator"),
                )
                .await
                .map_err(|e| e.to_string())?;
            if pods.items.len() == 2 {
                Ok(())
            } else {
                let events = Command::new(bin("kubectl"))
                    .arg("--kubeconfig")
                    .arg(cluster.kubeconfig())
                    .args(["-n", RELEASE_NS, "get", "events"])
                    .output()
                    .map(|o| text(&o.stdout))
                    .unwrap_or_default();
                Err(format!("{} pods; events:\n{events}", pods.items.len()))
            }
        },
    )
    .await;
    let policies = Api::<MCPGuardPolicy>::all(client.clone());
    let policy = policies
        .get("default")
        .await
        .expect("the chart creates MCPGuardPolicy default");
    assert!(policy.spec.allowed_hosts.is_empty());
    let ca_before = Api::<Secret>::namespaced(client.clone(), RELEASE_NS)
        .get("mcp-guard-webhook-tls")
        .await
        .unwrap()
        .data
        .unwrap()["ca.crt"]
        .clone();

    // --- the operator, as the chart's ServiceAccount -------------------------------------------------------------
    // The real Gateway API CRDs (as a Gateway implementation would install them), so that the operator watches
    // HTTPRoutes, Gateways and ReferenceGrants with the chart's RBAC and the HTTPRoute example can be applied.
    cluster.apply_gateway_api_crds().await.unwrap();
    // The IngressClass the example's Ingress names, as ingress-nginx installs it: an Ingress of a class that no
    // IngressClass serves does not count.
    let nginx_class: k8s_openapi::api::networking::v1::IngressClass =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": { "name": "nginx" }, "spec": { "controller": "k8s.io/ingress-nginx" }
        }))
        .unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &nginx_class)
        .await
        .unwrap();

    // The hook's command, before the webhook serves: the API server cannot call it, and the command says so.
    let check = |timeout: &str| {
        let out = Command::new(cargo_bin("mcp-guard-operator"))
            .args(["check-webhooks", "--namespace", RELEASE_NS])
            .args(["--timeout-seconds", timeout, "--interval-seconds", "1"])
            .env("KUBECONFIG", cluster.kubeconfig())
            .output()
            .unwrap();
        (out.status.success(), text(&out.stderr))
    };
    let (ok, log) = check("3");
    assert!(!ok, "answered with no webhook serving:\n{log}");
    assert!(
        log.contains("did not answer") && log.contains("failed calling webhook"),
        "the reason is shown:\n{log}"
    );

    let operator = start_operator(cluster, &helm, webhook_port, dir.path()).await;
    let (ok, log) = check("60");
    assert!(ok, "the webhook serves, yet the check failed:\n{log}");
    assert!(log.contains("answered"), "{log}");

    // --- an example, applied as a user would ---------------------------------------------------------------------
    let example = workspace_root().join(EXAMPLE);
    kubectl(cluster, &["apply", "-f", example.to_str().unwrap()]);
    let servers = Api::<MCPServer>::namespaced(client.clone(), EXAMPLE_NS);
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), EXAMPLE_NS);
    eventually("MCPServer weather Ready", Duration::from_secs(60), || async {
        ready(&servers.get("weather").await.map_err(|e| e.to_string())?)
    })
    .await;
    // The MCPServer is applied before its Service and Ingress: the allowlist follows as they appear.
    let config = eventually(
        "the Ingress host in ConfigMap weather-mcp-guard",
        Duration::from_secs(30),
        || async {
            let cfg = configmaps
                .get("weather-mcp-guard")
                .await
                .map(|cm| guard_json(&cm))
                .map_err(|e| e.to_string())?;
            if strings(&cfg["allowedHosts"]).contains(&"weather.example.com".to_string()) {
                Ok(cfg)
            } else {
                Err(format!("guard.json is {cfg}"))
            }
        },
    )
    .await;
    let hosts = strings(&config["allowedHosts"]);
    assert!(
        hosts.contains(&"weather.example.com".to_string()),
        "the Ingress host is allowed: {config}"
    );
    assert!(
        hosts.iter().any(|h| h.starts_with("weather.mcp-weather.svc")),
        "the Service DNS names are allowed: {config}"
    );
    assert_eq!(config["mode"], "enforce");
    assert!(
        strings(&config["allowedOrigins"]).contains(&"https://chat.example.com".to_string()),
        "{config}"
    );

    // The example's pods (created by the ReplicaSet controller) pass the webhook the chart registered, and the
    // namespace's Pod Security "restricted" admission with the guard injected.
    let pods = Api::<Pod>::namespaced(client.clone(), EXAMPLE_NS);
    let pod = eventually("an injected weather pod", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("app=weather"))
            .await
            .map_err(|e| e.to_string())?;
        list.items.into_iter().next().ok_or_else(|| {
            let events = Command::new(bin("kubectl"))
                .arg("--kubeconfig")
                .arg(cluster.kubeconfig())
                .args(["-n", EXAMPLE_NS, "get", "events"])
                .output()
                .map(|o| text(&o.stdout))
                .unwrap_or_default();
            format!("no pod yet; events:\n{events}")
        })
    })
    .await;
    let spec = pod.spec.clone().unwrap();
    let guard = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == "mcp-guard")
        .unwrap_or_else(|| panic!("no mcp-guard container in the pod: {:?}", pod.spec));
    assert_eq!(
        guard.image.as_deref(),
        Some("ghcr.io/mcp-guard/mcp-guard:0.2.0-dev"),
        "the sidecar image comes from values"
    );
    assert!(
        pod.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("mcpguard.dev/injected")
    );

    // The audit example and the cluster policy example (the HTTPRoute one needs the Gateway API CRDs).
    let audit = workspace_root().join("examples/audit/sandbox.yaml");
    let strict = workspace_root().join("examples/policy/strict.yaml");
    kubectl(
        cluster,
        &[
            "apply",
            "-f",
            audit.to_str().unwrap(),
            "-f",
            strict.to_str().unwrap(),
        ],
    );
    let sandbox_servers = Api::<MCPServer>::namespaced(client.clone(), "mcp-sandbox");
    let sandbox_cms = Api::<ConfigMap>::namespaced(client.clone(), "mcp-sandbox");
    eventually(
        "the audit example reconciled",
        Duration::from_secs(60),
        || async {
            let s = sandbox_servers.get("sandbox").await.map_err(|e| e.to_string())?;
            ready(&s)?;
            let cfg = sandbox_cms
                .get("sandbox-mcp-guard")
                .await
                .map(|cm| guard_json(&cm))
                .map_err(|e| e.to_string())?;
            let hosts = strings(&cfg["allowedHosts"]);
            if cfg["mode"] == "audit"
                && hosts.contains(&"sandbox.internal.example.com".to_string())
                && hosts.contains(&"sandbox.mcp-sandbox.svc.cluster.local".to_string())
            {
                Ok(())
            } else {
                Err(format!("guard.json is {cfg}"))
            }
        },
    )
    .await;
    assert!(
        policies.get("strict").await.is_ok(),
        "examples/policy/strict.yaml is accepted"
    );

    // The HTTPRoute example: Gateway API wildcards become the guard's multi-label `**.`.
    let route = workspace_root().join("examples/httproute/notes.yaml");
    kubectl(cluster, &["apply", "-f", route.to_str().unwrap()]);
    let notes_cms = Api::<ConfigMap>::namespaced(client.clone(), "mcp-notes");
    eventually(
        "the HTTPRoute example reconciled",
        Duration::from_secs(60),
        || async {
            let cfg = notes_cms
                .get("notes-mcp-guard")
                .await
                .map(|cm| guard_json(&cm))
                .map_err(|e| e.to_string())?;
            let hosts = strings(&cfg["allowedHosts"]);
            if hosts.contains(&"notes.example.com".to_string())
                && hosts.contains(&"**.notes.example.com".to_string())
            {
                Ok(())
            } else {
                Err(format!("guard.json is {cfg}"))
            }
        },
    )
    .await;

    // The validating webhook the chart registers rejects what the CRD schema alone cannot (a port out of range).
    let bad = dir.path().join("bad-mcpserver.yaml");
    std::fs::write(
        &bad,
        format!(
            "apiVersion: mcpguard.dev/v1alpha1\nkind: MCPServer\nmetadata:\n  name: bad\n  namespace: {EXAMPLE_NS}\n\
             spec:\n  selector:\n    matchLabels:\n      app: other\n  port: 8000\n  hosts: [\"mcp.example.com:99999\"]\n"
        ),
    )
    .unwrap();
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "-f"]).arg(&bad);
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("admission webhook") && stderr.contains("denied"),
        "an invalid MCPServer must be denied by the validating webhook: {stderr}"
    );

    operator.assert_no_rbac_errors();

    // --- upgrade with changed defaults -----------------------------------------------------------------------------
    let out = helm.run(&[
        "upgrade",
        RELEASE,
        chart,
        "-n",
        RELEASE_NS,
        "--reuse-values",
        "--set",
        "policy.defaultMode=audit",
        "--set",
        "policy.allowedHosts={mcp-gateway.corp.example.com}",
        "--set",
        "policy.allowedOrigins={https://assistant.corp.example.com}",
        "--set",
        "policy.sidecar.logLevel=debug",
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    let policy = policies.get("default").await.unwrap();
    assert_eq!(
        policy.spec.allowed_hosts,
        vec!["mcp-gateway.corp.example.com".to_string()]
    );
    assert_eq!(
        policy.spec.default_mode.map(|m| m.to_string()).as_deref(),
        Some("audit")
    );
    let config = eventually(
        "the allowlist follows the policy",
        Duration::from_secs(60),
        || async {
            let cfg = configmaps
                .get("weather-mcp-guard")
                .await
                .map(|cm| guard_json(&cm))
                .map_err(|e| e.to_string())?;
            let hosts = strings(&cfg["allowedHosts"]);
            if cfg["mode"] == "audit" && hosts.contains(&"mcp-gateway.corp.example.com".to_string()) {
                Ok(cfg)
            } else {
                Err(format!("guard.json still {cfg}"))
            }
        },
    )
    .await;
    assert!(strings(&config["allowedOrigins"]).contains(&"https://assistant.corp.example.com".to_string()));
    assert!(
        strings(&config["allowedHosts"]).contains(&"weather.example.com".to_string()),
        "{config}"
    );
    eventually("MCPServer status follows", Duration::from_secs(30), || async {
        let s = servers.get("weather").await.map_err(|e| e.to_string())?;
        ready(&s)?;
        match s.status.and_then(|st| st.mode) {
            Some(m) if m.to_string() == "audit" => Ok(()),
            other => Err(format!("status.mode {other:?}")),
        }
    })
    .await;
    // The webhook certificate is kept across upgrades, so the caBundle stays valid for running replicas.
    let secret = Api::<Secret>::namespaced(client.clone(), RELEASE_NS)
        .get("mcp-guard-webhook-tls")
        .await
        .unwrap();
    assert_eq!(
        secret.data.unwrap()["ca.crt"],
        ca_before,
        "helm upgrade regenerated the webhook CA"
    );
    let mwc = kubectl(
        cluster,
        &["get", "mutatingwebhookconfiguration", "mcp-guard", "-o", "json"],
    );
    let mwc: Value = serde_json::from_str(&mwc).unwrap();
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca_before.0);
    assert_eq!(mwc["webhooks"][0]["clientConfig"]["caBundle"], bundle.as_str());

    operator.assert_no_rbac_errors();

    // --- clean up the example, stop the operator, uninstall ----------------------------------------------------------
    kubectl(
        cluster,
        &[
            "delete",
            "-f",
            example.to_str().unwrap(),
            "-f",
            audit.to_str().unwrap(),
            "-f",
            strict.to_str().unwrap(),
            "-f",
            route.to_str().unwrap(),
            "--wait=false",
        ],
    );
    eventually("the MCPServer is deleted", Duration::from_secs(60), || async {
        match servers.get_opt("weather").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    operator.assert_no_rbac_errors();
    // The API server called the webhook the chart registered (the pod above was injected through it).
    let metrics = testkit::http::get(&format!("http://{}/metrics", operator.admin))
        .unwrap()
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mcp_guard_webhook_admissions_total{")
                && l.contains("mutate-pods")
                && l.contains("injected")
                && !l.ends_with(" 0")),
        "no injection counted by the operator's webhook:\n{metrics}"
    );
    drop(operator);

    let out = helm.run(&["uninstall", RELEASE, "-n", RELEASE_NS, "--wait"]);
    assert!(out.contains("uninstalled"), "{out}");
    assert_nothing_left(cluster, RELEASE, RELEASE_NS).await;
}

/// After `helm uninstall`: no object of the release in its namespace or cluster-wide; the CRDs stay (Helm never
/// deletes CRDs from a chart's crds/ directory).
async fn assert_nothing_left(cluster: &Cluster, release: &str, namespace: &str) {
    let resources = kubectl(
        cluster,
        &["api-resources", "--verbs=list", "--namespaced", "-o", "name"],
    );
    let resources: Vec<&str> = resources.lines().filter(|r| !r.starts_with("events")).collect();
    let leftovers = |cluster: &Cluster| -> Vec<String> {
        let mut out: Vec<String> = kubectl(
            cluster,
            &[
                "get",
                &resources.join(","),
                "-n",
                namespace,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        )
        .lines()
        .map(str::to_string)
        .filter(|n| n != "configmap/kube-root-ca.crt" && n != "serviceaccount/default")
        .collect();
        out.extend(
            kubectl(
                cluster,
                &[
                    "get",
                    "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations,mcpguardpolicies",
                    "-l",
                    &format!("app.kubernetes.io/instance={release}"),
                    "-o",
                    "name",
                ],
            )
            .lines()
            .map(str::to_string),
        );
        out
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = leftovers(cluster);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after helm uninstall: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if release == RELEASE {
        let policy = kubectl(cluster, &["get", "mcpguardpolicies", "-o", "name"]);
        assert!(
            !policy.contains("mcpguardpolicy.mcpguard.dev/default"),
            "{policy}"
        );
    }
    // CRDs are what Helm documents it leaves.
    kubectl(
        cluster,
        &[
            "get",
            "crd",
            "mcpservers.mcpguard.dev",
            "mcpguardpolicies.mcpguard.dev",
        ],
    );
}

/// SelfSubjectAccessReviews as the chart's ServiceAccount: what the operator needs is allowed, the rest is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_gets_exactly_what_the_operator_needs() {
    let _turn = SERIAL.lock().await;
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let cluster = Cluster::shared().await;
    let release = "rbac-check";
    let ns = cluster.namespace("chart-rbac").await;
    let helm = Helm {
        cluster,
        home: tempfile::tempdir().unwrap(),
    };
    let chart = chart_dir();
    // Another release beside install_reconcile_upgrade_uninstall's: no second "default" policy, no webhooks.
    helm.run(&[
        "install",
        release,
        chart.to_str().unwrap(),
        "-n",
        &ns,
        "--set",
        "policy.create=false",
        "--set",
        "webhook.enabled=false",
    ]);
    let sa = format!("{release}-mcp-guard");
    let kubeconfig = cluster.service_account_kubeconfig(&ns, &sa).await.unwrap();
    let reviews = Api::<SelfSubjectAccessReview>::all(
        kube::Client::try_from(config_from(&kubeconfig).await.unwrap()).unwrap(),
    );
    // (verb, "resource[.group][/subresource]", namespace ("" = all / cluster-scoped), name)
    let can = async |verb: &str, resource: &str, namespace: &str, name: &str| -> bool {
        let (resource, subresource) = resource
            .split_once('/')
            .map_or((resource, None), |(r, s)| (r, Some(s)));
        let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    subresource: subresource.map(str::to_string),
                    namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                    name: (!name.is_empty()).then(|| name.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews
            .create(&Default::default(), &review)
            .await
            .expect("a SelfSubjectAccessReview");
        answer.status.map(|s| s.allowed).unwrap_or(false)
    };
    let other = "some-team";
    let ns = ns.as_str();
    let lease = "mcp-guard-operator";
    let allowed: Vec<(&str, &str, &str, &str)> = vec![
        ("list", "mcpservers.mcpguard.dev", "", ""),
        ("watch", "mcpservers.mcpguard.dev", "", ""),
        ("get", "mcpguardpolicies.mcpguard.dev", "", "default"),
        ("watch", "mcpguardpolicies.mcpguard.dev", "", ""),
        ("patch", "mcpservers.mcpguard.dev/status", other, "weather"),
        ("list", "services", "", ""),
        ("watch", "pods", "", ""),
        ("get", "namespaces", "", other),
        ("list", "ingresses.networking.k8s.io", "", ""),
        ("watch", "httproutes.gateway.networking.k8s.io", "", ""),
        ("list", "gateways.gateway.networking.k8s.io", "", ""),
        ("create", "configmaps", other, ""),
        ("patch", "configmaps", other, "weather-mcp-guard"),
        ("watch", "configmaps", "", ""),
        ("create", "events.events.k8s.io", other, ""),
        ("create", "events", other, ""),
        ("create", "leases.coordination.k8s.io", ns, ""),
        ("get", "leases.coordination.k8s.io", ns, lease),
        ("update", "leases.coordination.k8s.io", ns, lease),
    ];
    for (verb, resource, namespace, name) in allowed {
        assert!(
            can(verb, resource, namespace, name).await,
            "the chart's ServiceAccount cannot {verb} {resource} {namespace}/{name}"
        );
    }
    let denied: Vec<(&str, &str, &str, &str)> = vec![
        ("get", "secrets", ns, "anything"),
        ("list", "secrets", "", ""),
        ("get", "secrets", "kube-system", "anything"),
        ("create", "pods", other, ""),
        ("delete", "pods", other, "p"),
        ("patch", "services", other, "s"),
        ("update", "ingresses.networking.k8s.io", other, "i"),
        ("patch", "httproutes.gateway.networking.k8s.io", other, "r"),
        ("delete", "configmaps", other, "c"),
        ("update", "mcpservers.mcpguard.dev", other, "weather"),
        ("patch", "mcpguardpolicies.mcpguard.dev", "", "default"),
        ("create", "leases.coordination.k8s.io", other, ""),
        ("patch", "leases.coordination.k8s.io", ns, lease),
        ("delete", "leases.coordination.k8s.io", ns, lease),
        (
            "get",
            "leases.coordination.k8s.io",
            ns,
            "another-controllers-lease",
        ),
        (
            "update",
            "leases.coordination.k8s.io",
            ns,
            "another-controllers-lease",
        ),
        (
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
            "",
            "mcp-guard",
        ),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", ""),
        ("get", "nodes", "", "n"),
        ("create", "serviceaccounts/token", ns, sa.as_str()),
    ];
    for (verb, resource, namespace, name) in denied {
        assert!(
            !can(verb, resource, namespace, name).await,
            "the chart's ServiceAccount may {verb} {resource} {namespace}/{name}, which the operator does not need"
        );
    }
    helm.run(&["uninstall", release, "-n", ns, "--wait"]);
    assert_nothing_left(cluster, release, ns).await;
}

/// A schema-less stand-in CRD for an optional integration (cert-manager, Prometheus Operator).
fn stand_in_crd(group: &str, plural: &str, kind: &str) -> CustomResourceDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.{group}") },
        "spec": {
            "group": group,
            "names": { "plural": plural, "kind": kind, "singular": kind.to_lowercase() },
            "scope": "Namespaced",
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
        }
    }))
    .expect("a CRD")
}

/// cert-manager mode and the ServiceMonitor install and uninstall cleanly (their CRDs stood in for: this checks
/// what the chart creates and that the webhook configurations ask cert-manager for their CA, not cert-manager).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_and_service_monitor_install_and_uninstall() {
    let _turn = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    for (group, plural, kind) in [
        ("cert-manager.io", "certificates", "Certificate"),
        ("cert-manager.io", "issuers", "Issuer"),
        ("monitoring.coreos.com", "servicemonitors", "ServiceMonitor"),
    ] {
        cluster
            .apply_crd(&stand_in_crd(group, plural, kind))
            .await
            .unwrap();
    }
    let release = "integrations";
    let ns = cluster.namespace("chart-integrations").await;
    let helm = Helm {
        cluster,
        home: tempfile::tempdir().unwrap(),
    };
    let chart = chart_dir();
    helm.run(&[
        "install",
        release,
        chart.to_str().unwrap(),
        "-n",
        &ns,
        "--set",
        "policy.create=false",
        "--set",
        "certManager.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
        // Nothing serves this release's webhooks: keep them away from the other tests' objects.
        "--set",
        "webhook.mutating.namespaceSelector.matchLabels.chart-integrations-test=never",
        "--set",
        "webhook.validating.failurePolicy=Ignore",
        "--set",
        "webhook.check.enabled=false",
    ]);
    let fullname = format!("{release}-mcp-guard");
    for (kind, name) in [
        ("certificates.cert-manager.io", format!("{fullname}-webhook")),
        ("certificates.cert-manager.io", format!("{fullname}-webhook-ca")),
        ("issuers.cert-manager.io", format!("{fullname}-selfsigned")),
        ("issuers.cert-manager.io", format!("{fullname}-webhook-ca")),
        ("servicemonitors.monitoring.coreos.com", fullname.clone()),
    ] {
        kubectl(cluster, &["-n", &ns, "get", kind, &name]);
    }
    // No chart-generated certificate: cert-manager writes the Secret and injects the CA.
    let secrets = kubectl(cluster, &["-n", &ns, "get", "secrets", "-o", "name"]);
    assert!(!secrets.contains("webhook-tls"), "{secrets}");
    let mwc: Value = serde_json::from_str(&kubectl(
        cluster,
        &["get", "mutatingwebhookconfiguration", &fullname, "-o", "json"],
    ))
    .unwrap();
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{ns}/{fullname}-webhook").as_str()
    );
    helm.run(&["uninstall", release, "-n", &ns, "--wait"]);
    let left = kubectl(
        cluster,
        &[
            "-n",
            &ns,
            "get",
            "certificates.cert-manager.io,issuers.cert-manager.io,servicemonitors.monitoring.coreos.com",
            "-o",
            "name",
        ],
    );
    assert!(left.trim().is_empty(), "left behind: {left}");
    assert_nothing_left(cluster, release, &ns).await;
}
