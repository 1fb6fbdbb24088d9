//! The admission webhook, called by a real kube-apiserver over HTTPS (`clientConfig.url`, caBundle from a CA
//! generated here): Deployments yield pods (through the real controller-manager) that carry the guard and pass
//! Pod Security "restricted"; skipped pods are untouched; a bad or overlapping MCPServer is refused with the
//! webhook's message; kube-system is never sent to the webhook. Then an injected pod is run for real: the guard
//! binary started with exactly the stored container's args and env, in front of a real MCP Python SDK server at
//! its defaults, with a real MCP client. The pod IP does not exist here: `127.0.0.2` stands in for `$(POD_IP)`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mcp_guard_operator::crd::MCPServer;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

mod webhook_common;
use webhook_common::*;

/// `IfNeeded`: the API server re-invokes the webhook after its built-in plugins change the injected pod, which
/// exercises the "already injected" path on every pod here.
const REINVOCATION_POLICY: &str = "IfNeeded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_carry_the_guard_and_pass_restricted() {
    let env = env().await;
    let client = env.cluster.client();
    let ns = opted_in_namespace(
        env.cluster,
        "wh-deploy",
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await;
    let server = create_mcpserver(
        &client,
        &ns,
        "weather",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 8000 }),
    )
    .await
    .expect("create MCPServer");
    assert_eq!(server.name_any(), "weather");

    // Pod Security "restricted" is enforced in this namespace by the API server itself (it runs after the
    // mutating webhooks): a non-compliant pod is refused…
    let bad = pod_json(
        "root",
        &[("app", "other")],
        json!({ "containers": [{ "name": "c", "image": "x" }] }),
    );
    let err = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &bad)
        .await;
    assert!(
        matches!(&err, Err(kube::Error::Api(e)) if e.message.contains("violates PodSecurity")),
        "{err:?}"
    );

    // …and the injected pods are admitted: the guard container passes "restricted".
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &deployment_json("weather", "weather", 2, 8000),
        )
        .await
        .expect("create Deployment");
    let pods = wait_for_pods(&client, &ns, "weather", 2).await;
    for pod in &pods {
        let name = pod.name_any();
        let spec = pod.spec.as_ref().expect("spec");
        let guard = guard_container(pod).unwrap_or_else(|| panic!("{name}: no mcp-guard container"));
        // The pinned API server (1.34) runs native sidecars: an init container with restartPolicy Always.
        assert!(
            spec.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == "mcp-guard"),
            "{name}: not an init container"
        );
        assert_eq!(guard.restart_policy.as_deref(), Some("Always"), "{name}");
        assert_eq!(
            guard.image.as_deref(),
            Some(SIDECAR_IMAGE),
            "{name}: image from the MCPGuardPolicy"
        );
        let args = guard.args.clone().unwrap_or_default().join(" ");
        assert!(args.contains("--listen [$(POD_IPS)]:8000"), "{name}: {args}");
        assert!(
            args.contains("--upstream http://127.0.0.1:8000"),
            "{name}: {args}"
        );
        assert!(
            args.contains("--config /etc/mcp-guard/guard.json"),
            "{name}: {args}"
        );
        assert!(
            args.contains("--log-level debug"),
            "{name}: log level from the policy: {args}"
        );
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "mcp-guard-config")
            .expect("config volume");
        assert_eq!(
            vol.config_map.as_ref().map(|c| c.name.as_str()),
            Some("weather-mcp-guard")
        );
        assert!(
            guard.volume_mounts.iter().flatten().all(|m| m.sub_path.is_none()),
            "{name}: subPath never updates"
        );
        // The API server's ServiceAccount admission mounts the pod's token into every container that does not
        // mount that path already; the guard's empty volume there keeps the token out of the guard.
        let token_mounts: Vec<&str> = guard
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount")
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            token_mounts,
            ["mcp-guard-no-token"],
            "{name}: the guard must not get the token"
        );
        let app = spec.containers.iter().find(|c| c.name == "server").expect("app");
        assert!(
            app.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name.starts_with("kube-api-access-")),
            "{name}: the app keeps its token"
        );
        let ann = pod.annotations();
        assert_eq!(
            ann.get("kubectl.kubernetes.io/default-container")
                .map(String::as_str),
            Some("server")
        );
        let status: Value =
            serde_json::from_str(ann.get("mcpguard.dev/injected").expect("status annotation"))
                .expect("status annotation is JSON");
        assert_eq!(status["mcpServer"], "weather");
        assert_eq!(status["initContainers"], json!(["mcp-guard"]));
        // The app container is unchanged: same port, same probe.
        let app = spec
            .containers
            .iter()
            .find(|c| c.name == "server")
            .expect("app container");
        assert_eq!(app.ports.as_ref().map(|p| p[0].container_port), Some(8000));
        assert_eq!(
            spec.containers.len(),
            1,
            "{name}: native sidecar adds no ordinary container"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_pods_are_untouched_and_injection_is_idempotent() {
    let env = env().await;
    let client = env.cluster.client();
    let ns = opted_in_namespace(env.cluster, "wh-skip", &[]).await;
    create_mcpserver(
        &client,
        &ns,
        "weather",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 8000 }),
    )
    .await
    .expect("create MCPServer");
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pp = PostParams::default();

    let cases = [
        (
            "opted-out",
            pod_json(
                "opted-out",
                &[("app", "weather"), ("mcpguard.dev/inject", "false")],
                json!({}),
            ),
        ),
        (
            "host-network",
            pod_json(
                "host-network",
                &[("app", "weather")],
                json!({ "hostNetwork": true }),
            ),
        ),
        (
            "not-selected",
            pod_json("not-selected", &[("app", "redis")], json!({})),
        ),
    ];
    for (what, pod) in cases {
        let stored = pods
            .create(&pp, &pod)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(guard_container(&stored).is_none(), "{what}: injected");
        assert!(
            !stored.annotations().contains_key("mcpguard.dev/injected"),
            "{what}: annotated"
        );
        let spec = stored.spec.as_ref().expect("spec");
        assert!(spec.init_containers.is_none(), "{what}: init containers added");
        assert_eq!(spec.containers.len(), 1, "{what}");
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .all(|v| v.name != "mcp-guard-config"),
            "{what}: volume added"
        );
    }

    // A namespace that is not opted in: an MCPServer there does not inject.
    let plain = env.cluster.namespace("wh-plain").await;
    let created = create_mcpserver(
        &client,
        &plain,
        "weather",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 8000 }),
    )
    .await
    .expect("create MCPServer in a namespace without the label");
    assert_eq!(created.name_any(), "weather");
    let stored = Api::<Pod>::namespaced(client.clone(), &plain)
        .create(&pp, &pod_json("weather-0", &[("app", "weather")], json!({})))
        .await
        .expect("create pod");
    assert!(
        guard_container(&stored).is_none(),
        "not opted in: injected anyway"
    );

    // Idempotency through the API server: re-creating a pod from an injected pod's stored spec (what
    // `kubectl get pod -o yaml | kubectl create -f -` does) leaves exactly one guard and the same annotation.
    let first = pods
        .create(&pp, &pod_json("weather-0", &[("app", "weather")], json!({})))
        .await
        .expect("create");
    assert!(guard_container(&first).is_some(), "selected pod not injected");
    let mut copy = first.clone();
    copy.metadata = kube::api::ObjectMeta {
        name: Some("weather-1".into()),
        labels: first.metadata.labels.clone(),
        annotations: first.metadata.annotations.clone(),
        ..Default::default()
    };
    copy.status = None;
    let second = pods
        .create(&pp, &copy)
        .await
        .expect("re-create from the injected spec");
    assert_eq!(second.spec, first.spec, "re-injection changed the spec");
    assert_eq!(
        second.annotations(),
        first.annotations(),
        "re-injection changed the annotations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_overlapping_mcpservers_are_refused_with_the_webhooks_message() {
    let env = env().await;
    let client = env.cluster.client();
    let ns = opted_in_namespace(env.cluster, "wh-validate", &[]).await;

    let err = create_mcpserver(
        &client,
        &ns,
        "bad",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 8000,
                "hosts": ["mcp.example.com", "mcp.example.com:99999"] }),
    )
    .await
    .expect_err("a port out of range must be refused");
    let kube::Error::Api(e) = &err else {
        panic!("unexpected error {err:?}")
    };
    assert!(
        e.message.contains("validate.mcpserver.mcpguard.dev"),
        "not the webhook's denial: {}",
        e.message
    );
    assert!(
        e.message.contains("spec.hosts[1]"),
        "message must name the field: {}",
        e.message
    );
    assert!(e.message.contains("99999"), "message must say why: {}", e.message);

    // The CRD schema no longer answers Host syntax with a regex: the webhook explains, naming the entry.
    let err = create_mcpserver(
        &client,
        &ns,
        "bad-path",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 8000,
                "hosts": ["mcp.example.com/mcp"] }),
    )
    .await
    .expect_err("a host with a path must be refused");
    let kube::Error::Api(e) = &err else {
        panic!("unexpected error {err:?}")
    };
    assert!(
        e.message.contains("validate.mcpserver.mcpguard.dev")
            && e.message
                .contains("spec.hosts[0]: invalid host pattern \"mcp.example.com/mcp\"")
            && !e.message.contains("should match"),
        "not the webhook's explanation: {}",
        e.message
    );

    // kubectl shows the same message to a person.
    let out = env
        .cluster
        .kubectl()
        .args(["apply", "-n", &ns, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(stdin) = child.stdin.as_mut() {
                stdin.write_all(
                    b"apiVersion: mcpguard.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {app: w}}\n  port: 8000\n  origins: [\"https://mcp.example.com:99999\"]\n",
                )?;
            }
            child.wait_with_output()
        })
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("spec.origins[0]"),
        "kubectl: {stderr}"
    );

    // Overlap is refused, not silently merged: the same selector, and a selector that selects a pod another
    // MCPServer already selects.
    create_mcpserver(
        &client,
        &ns,
        "weather",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 8000 }),
    )
    .await
    .expect("first MCPServer");
    let err = create_mcpserver(
        &client,
        &ns,
        "weather-2",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 9000 }),
    )
    .await
    .expect_err("same selector");
    assert!(
        err.to_string().contains("same selector as MCPServer \"weather\""),
        "{err}"
    );
    // No pod yet: a selector within another's is refused from the selectors alone (before, only its pods were).
    let err = create_mcpserver(
        &client,
        &ns,
        "weather-mcp",
        json!({ "selector": { "matchLabels": { "app": "weather", "tier": "mcp" } }, "port": 9000 }),
    )
    .await
    .expect_err("a selector within another's");
    assert!(
        err.to_string()
            .contains("every pod it selects is also selected by MCPServer \"weather\""),
        "{err}"
    );

    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &pod_json("weather-0", &[("app", "weather"), ("tier", "mcp")], json!({})),
        )
        .await
        .expect("pod");
    let err = create_mcpserver(
        &client,
        &ns,
        "all-mcp",
        json!({ "selector": { "matchLabels": { "tier": "mcp" } }, "port": 8000 }),
    )
    .await
    .expect_err("overlapping selector");
    assert!(
        err.to_string().contains("pod \"weather-0\"") && err.to_string().contains("MCPServer \"weather\""),
        "{err}"
    );

    // Updating the first one does not overlap with itself; a valid change is admitted.
    let patch = json!({ "spec": { "hosts": ["mcp.example.com"] } });
    Api::<MCPServer>::namespaced(client.clone(), &ns)
        .patch("weather", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("update");

    // Overlap that appears after the fact (a pod relabelled) blocks spec changes of the overlapping MCPServer, but
    // never metadata changes or its deletion (finalizers included).
    let servers = Api::<MCPServer>::namespaced(client.clone(), &ns);
    create_mcpserver(
        &client,
        &ns,
        "cache",
        json!({ "selector": { "matchLabels": { "tier": "cache" } }, "port": 8000 }),
    )
    .await
    .expect("no pod selected yet");
    let relabel = json!({ "metadata": { "labels": { "tier": "cache" } } });
    Api::<Pod>::namespaced(client.clone(), &ns)
        .patch("weather-0", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel the pod");
    let err = servers
        .patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "port": 8001 } })),
        )
        .await
        .expect_err("a spec change while overlapping");
    assert!(err.to_string().contains("pod \"weather-0\""), "{err}");
    let finalizer = json!({ "metadata": { "finalizers": ["webhook-test/hold"], "labels": { "x": "y" } } });
    servers
        .patch("cache", &PatchParams::default(), &Patch::Merge(&finalizer))
        .await
        .expect("metadata change");
    servers
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete");
    let release = json!({ "metadata": { "finalizers": null } });
    servers
        .patch("cache", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("finalizer removal");
    assert!(servers.get_opt("cache").await.expect("get").is_none(), "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_selector_keeps_kube_system_away_from_the_webhook() {
    let env = env().await;
    let client = env.cluster.client();
    // A second, dead webhook (nothing listens on its port, failurePolicy Fail) with the same namespace exclusions,
    // limited to namespaces carrying a label only this test sets. Where it is called, pod creation fails.
    let dead_port = testkit::tools::free_port();
    let dead: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "mcp-guard-webhook-test-dead" },
        "webhooks": [{
            "name": "dead.mcpguard.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 2,
            "clientConfig": { "url": format!("https://127.0.0.1:{dead_port}/mutate-pods"), "caBundle": base64(&env.ca_pem) },
            "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"] }],
            "namespaceSelector": {
                "matchLabels": { "mcpguard.dev/injection": "enabled", "webhook-test/dead": "true" },
                "matchExpressions": [{ "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                       "values": ["kube-system", "kube-public", "kube-node-lease"] }]
            }
        }]
    }))
    .expect("config");
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    configs
        .patch(
            "mcp-guard-webhook-test-dead",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&dead),
        )
        .await
        .expect("apply");

    let labels = BTreeMap::from([
        ("mcpguard.dev/injection".to_string(), "enabled".to_string()),
        ("webhook-test/dead".to_string(), "true".to_string()),
    ]);
    let control = env.cluster.namespace("wh-dead").await;
    label_namespace(&client, &control, &labels).await;
    label_namespace(&client, "kube-system", &labels).await;
    create_mcpserver(
        &client,
        "kube-system",
        "system-mcp",
        json!({ "selector": { "matchLabels": { "app": "sys" } }, "port": 8000 }),
    )
    .await
    .expect("MCPServer in kube-system");

    // The dead webhook is active: the control namespace cannot create pods.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = Api::<Pod>::namespaced(client.clone(), &control)
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &pod_json("p", &[("app", "sys")], json!({})),
            )
            .await;
        if matches!(&r, Err(kube::Error::Api(e)) if e.message.contains("dead.mcpguard.dev")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead webhook never became active: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // kube-system, labelled exactly the same and with an MCPServer selecting the pod, is never sent to either.
    let sys = Api::<Pod>::namespaced(client.clone(), "kube-system");
    let stored = sys
        .create(
            &PostParams::default(),
            &pod_json("mcp-guard-webhook-test", &[("app", "sys")], json!({})),
        )
        .await;

    // Clean up before asserting, so that a failure leaves kube-system as it was.
    let _ = configs
        .delete("mcp-guard-webhook-test-dead", &DeleteParams::default())
        .await;
    let unlabel =
        json!({ "metadata": { "labels": { "mcpguard.dev/injection": null, "webhook-test/dead": null } } });
    let _ = Api::<Namespace>::all(client.clone())
        .patch("kube-system", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await;
    let _ = sys
        .delete("mcp-guard-webhook-test", &DeleteParams::default())
        .await;
    let _ = Api::<MCPServer>::namespaced(client.clone(), "kube-system")
        .delete("system-mcp", &DeleteParams::default())
        .await;

    let stored = stored
        .expect("a kube-system pod is created while a failing webhook selects every labelled namespace");
    assert!(guard_container(&stored).is_none(), "kube-system pod injected");
}

/// kubelet's `$(VAR)` expansion of args: defined variables are replaced, `$$` escapes, anything else stays.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &tail[end + 3..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn kubelet_style_expansion() {
    let env = BTreeMap::from([("POD_IP".to_string(), "10.0.0.5".to_string())]);
    assert_eq!(expand("$(POD_IP):8000", &env), "10.0.0.5:8000");
    assert_eq!(expand("$$(POD_IP)", &env), "$(POD_IP)");
    assert_eq!(expand("$(NOPE)x", &env), "$(NOPE)x");
}

/// The guard's command line as kubelet would run it: args with `$(VAR)` expanded from the container's env
/// (downward-API `status.podIP` and `status.podIPs`, of a single-stack pod, → [`POD_IP`]), volume mount paths mapped to local directories.
fn guard_command(
    container: &Container,
    mounts: &BTreeMap<String, PathBuf>,
    pod_ip: &str,
) -> (Vec<String>, BTreeMap<String, String>) {
    let mut env = BTreeMap::new();
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("status.podIP" | "status.podIPs") => pod_ip.to_string(),
                other => panic!("env {} from {other:?}: not mapped in this test", e.name),
            },
            (None, None) => String::new(),
        };
        env.insert(e.name.clone(), value);
    }
    let mut args: Vec<String> = container.args.iter().flatten().map(|a| expand(a, &env)).collect();
    // Mounts the guard reads (the ConfigMap) must be mapped; others (the ServiceAccount token the API server's
    // ServiceAccount plugin adds when it is re-run after the webhook) play no part in a local run.
    for mount in container.volume_mounts.iter().flatten() {
        let referenced = args.iter().any(|a| a.starts_with(&mount.mount_path));
        let Some(local) = mounts.get(&mount.name) else {
            assert!(
                !referenced,
                "volume {} is used by the args but not mapped",
                mount.name
            );
            continue;
        };
        for a in &mut args {
            if let Some(rest) = a.strip_prefix(&mount.mount_path) {
                *a = format!("{}{rest}", local.display());
            }
        }
    }
    (args, env)
}

/// An opted-in namespace with MCPServer `weather` on `port` and its Deployment's one pod, as stored (injected).
async fn injected_weather_pod(cluster: &testkit::cluster::Cluster, prefix: &str, port: u16) -> (String, Pod) {
    let client = cluster.client();
    let ns = opted_in_namespace(cluster, prefix, &[]).await;
    create_mcpserver(
        &client,
        &ns,
        "weather",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": port }),
    )
    .await
    .expect("create MCPServer");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &deployment_json("weather", "weather", 1, port),
        )
        .await
        .expect("create Deployment");
    let pod = wait_for_pods(&client, &ns, "weather", 1).await.remove(0);
    (ns, pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pod_runs_for_real_in_front_of_the_python_sdk() {
    use testkit::mcp::{ClientKind, PyServer, Transport, run_client};
    let env = env().await;
    let client = env.cluster.client();

    // The MCP server at its SDK defaults: 127.0.0.1, the SDK's own localhost-only check on.
    let server = PyServer::start(Transport::StreamableHttp).expect("start the MCP Python SDK server");
    let port = server.port;

    let (ns, pod) = injected_weather_pod(env.cluster, "wh-run", port).await;
    let (mut proc, args, _config_dir) = start_injected_guard(&pod, &ns, "weather");
    assert!(
        args.iter().any(|a| a == &format!("[{POD_IP}]:{port}")),
        "listen on the pod IP at the server's port: {args:?}"
    );

    // Same port, two addresses: the guard holds <pod IP>:PORT, the server 127.0.0.1:PORT.
    let pod_url = format!("http://{POD_IP}:{port}/mcp");
    let svc_host = format!("Host: weather.{ns}.svc.cluster.local:{port}");

    // A real MCP client through the Service name succeeds (full session, streamed notifications).
    let run = run_client(
        ClientKind::Python,
        Transport::StreamableHttp,
        &pod_url,
        &[&svc_host],
    )
    .expect("client");
    run.assert_full_session("MCP client via the Service DNS name");

    // kubelet's probes carry Host <pod IP>:PORT: allowed (--allow-host [$(POD_IP)]) and answered by the server.
    let probe = testkit::http::raw(
        format!("{POD_IP}:{port}").parse().expect("addr"),
        &testkit::mcp::initialize_request("/mcp", &format!("{POD_IP}:{port}"), &[]),
    )
    .expect("probe-like request");
    assert_eq!(
        probe.status,
        200,
        "a request with Host <pod IP>:PORT (as kubelet sends) must pass: {}",
        probe.text()
    );

    // DNS rebinding: a forged Host is refused by the guard, and so is a foreign Origin.
    let run = run_client(
        ClientKind::Python,
        Transport::StreamableHttp,
        &pod_url,
        &["Host: attacker.test"],
    )
    .expect("client");
    run.assert_rejected("forged Host", 421, "host_not_allowed");
    let run = run_client(
        ClientKind::Python,
        Transport::StreamableHttp,
        &pod_url,
        &[&svc_host, "Origin: http://attacker.test"],
    )
    .expect("client");
    run.assert_rejected("forged Origin", 403, "origin_not_allowed");

    // A server that binds all interfaces cannot slip past the guard: with the guard holding <pod IP>:PORT (and the
    // SDK server stopped, so that only the guard holds the port), a 0.0.0.0:PORT bind fails (address already in
    // use) instead of silently opening a second door.
    drop(server);
    let mut bypass = Command::new(testkit::tools::python());
    bypass
        .arg(testkit::mcp::scripts_dir().join("py_server.py"))
        .args([
            "--transport",
            "streamable-http",
            "--host",
            "0.0.0.0",
            "--port",
            &port.to_string(),
        ])
        .env("PYTHONUNBUFFERED", "1");
    let (code, output) =
        testkit::mcp::run_bounded("py-server-all-interfaces", bypass, Duration::from_secs(30)).expect("run");
    assert_ne!(
        code,
        Some(0),
        "a 0.0.0.0 bind must fail while the guard holds the port: {output}"
    );
    assert!(
        output.to_lowercase().contains("address already in use"),
        "{output}"
    );

    proc.kill();

    // The legacy HTTP+SSE transport, through its own injected pod: the SSE stream and the POSTed messages pass
    // the guard on the same port split; a forged Host is refused on the stream itself.
    let sse = PyServer::start(Transport::Sse).expect("start the MCP Python SDK server (SSE)");
    create_mcpserver(
        &client,
        &ns,
        "weather-sse",
        json!({ "selector": { "matchLabels": { "app": "weather-sse" } }, "port": sse.port }),
    )
    .await
    .expect("create MCPServer");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &deployment_json("weather-sse", "weather-sse", 1, sse.port),
        )
        .await
        .expect("create Deployment");
    let pod = wait_for_pods(&client, &ns, "weather-sse", 1).await.remove(0);
    let (mut proc, _, _config_dir) = start_injected_guard(&pod, &ns, "weather-sse");
    let sse_url = format!("http://{POD_IP}:{}/sse", sse.port);
    let sse_host = format!("Host: weather-sse.{ns}.svc:{}", sse.port);
    run_client(ClientKind::Python, Transport::Sse, &sse_url, &[&sse_host])
        .expect("client")
        .assert_full_session("SSE client via the Service DNS name");
    run_client(
        ClientKind::Python,
        Transport::Sse,
        &sse_url,
        &["Host: attacker.test"],
    )
    .expect("client")
    .assert_rejected("forged Host on the SSE stream", 421, "host_not_allowed");
    proc.kill();
}

/// Starts the `mcp-guard` binary exactly as the stored pod's guard container says: its args and env expanded the
/// way kubelet does ([`POD_IP`] for the pod IP), its ConfigMap volume mapped to a directory holding the
/// operator-style `guard.json` for MCPServer `name` (its Service DNS names plus an Ingress host). Waits for
/// `/readyz`.
fn start_injected_guard(
    pod: &Pod,
    ns: &str,
    name: &str,
) -> (testkit::process::Proc, Vec<String>, tempfile::TempDir) {
    start_injected_guard_at(pod, ns, name, POD_IP)
}

/// As [`start_injected_guard`], with `pod_ip` standing in for the pod IP (tests running at once each take their
/// own, as the admin port is the same in every pod).
fn start_injected_guard_at(
    pod: &Pod,
    ns: &str,
    name: &str,
    pod_ip: &str,
) -> (testkit::process::Proc, Vec<String>, tempfile::TempDir) {
    let guard = guard_container(pod)
        .expect("the stored pod carries the guard")
        .clone();
    // The ConfigMap volume, as kubelet would mount it: a directory holding guard.json written the way the operator
    // writes it for this MCPServer (its Service DNS names plus an Ingress host).
    let spec = pod.spec.as_ref().expect("spec");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "mcp-guard-config")
        .expect("volume");
    assert_eq!(
        volume.config_map.as_ref().map(|c| c.name.clone()),
        Some(format!("{name}-mcp-guard"))
    );
    let dir = tempfile::tempdir().expect("tmp");
    let config = mcp_guard_config::GuardConfig {
        mode: mcp_guard_config::Mode::Enforce,
        allowed_hosts: vec![
            name.into(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
            "mcp.example.com".into(),
        ],
        allowed_origins: vec!["https://mcp.example.com".into()],
        source: Some(mcp_guard_config::ConfigSource {
            kind: "MCPServer".into(),
            namespace: Some(ns.to_string()),
            name: name.into(),
        }),
        limits: Default::default(),
        trusted_proxies: Vec::new(),
        cors: false,
        auth: None,
        access: None,
        audit: None,
    };
    std::fs::write(
        dir.path().join(mcp_guard_config::CONFIG_KEY),
        serde_json::to_vec_pretty(&config).expect("config json"),
    )
    .expect("write guard.json");
    let mounts = BTreeMap::from([("mcp-guard-config".to_string(), dir.path().to_path_buf())]);
    let (args, container_env) = guard_command(&guard, &mounts, pod_ip);

    let mut cmd = Command::new(testkit::tools::cargo_bin("mcp-guard"));
    cmd.args(&args).envs(&container_env).env("RUST_BACKTRACE", "1");
    let mut proc = testkit::process::Proc::spawn("mcp-guard-injected", cmd).expect("start the guard");
    // The admin listener is on the pod IP too (kubelet probes the pod IP, whichever its family).
    let admin_port = admin_port(&args);
    assert!(
        args.iter().any(|a| a == &format!("[{pod_ip}]:{admin_port}")),
        "admin listener on the pod IP: {args:?}"
    );
    let host = if pod_ip.contains(':') {
        format!("[{pod_ip}]")
    } else {
        pod_ip.to_string()
    };
    let readyz = format!("http://{host}:{admin_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(testkit::http::get(&readyz), Ok(r) if r.status == 200) {
        proc.ensure_running().expect("guard running");
        assert!(Instant::now() < deadline, "guard not ready: {}", proc.logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    (proc, args, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_port_layout_guards_a_server_bound_to_all_interfaces() {
    use testkit::mcp::{ClientKind, PyServer, Transport, run_client};
    // This test's stand-in pod IP (another test's injected guard may hold 127.0.0.2:15081 at the same time).
    const IP: &str = "127.0.0.3";
    let env = env().await;
    let client = env.cluster.client();

    // A server bound to all interfaces: its SDK's own Host/Origin check is off, and it holds 0.0.0.0:PORT.
    let server =
        PyServer::start_on(Transport::StreamableHttp, "0.0.0.0").expect("start the server on 0.0.0.0");
    let port = server.port;
    let guard_port = testkit::tools::free_port();

    let ns = opted_in_namespace(env.cluster, "wh-guardport", &[]).await;
    create_mcpserver(
        &client,
        &ns,
        "unifi",
        json!({ "selector": { "matchLabels": { "app": "unifi" } }, "port": port,
                "traffic": { "layout": "GuardPort", "guardPort": guard_port } }),
    )
    .await
    .expect("create MCPServer");
    // The API server's own schema refuses a guardPort without the layout, naming both fields.
    let err = create_mcpserver(
        &client,
        &ns,
        "bad",
        json!({ "selector": { "matchLabels": { "app": "bad" } }, "port": port,
                "traffic": { "guardPort": guard_port } }),
    )
    .await
    .expect_err("guardPort without GuardPort");
    assert!(
        err.to_string()
            .contains("traffic.guardPort applies to the GuardPort layout only"),
        "{err}"
    );

    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &deployment_json("unifi", "unifi", 1, port),
        )
        .await
        .expect("create Deployment");
    let pod = wait_for_pods(&client, &ns, "unifi", 1).await.remove(0);
    let spec = pod.spec.as_ref().expect("spec");
    let guard = guard_container(&pod).expect("guard");
    // The guard took over the port name the Service targets; the app's port is renamed, and its probe (on the
    // port's name) now goes to the guard's port.
    let guard_ports: Vec<(Option<String>, i32)> = guard
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert!(
        guard_ports.contains(&(Some("mcp".into()), i32::from(guard_port))),
        "{guard_ports:?}"
    );
    let app = spec.containers.iter().find(|c| c.name == "server").expect("app");
    let app_ports: Vec<(Option<String>, i32)> = app
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert_eq!(app_ports, vec![(Some("mcp-unguarded".into()), i32::from(port))]);
    let probe_port = app
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|h| h.port.clone());
    assert_eq!(
        probe_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
            i32::from(guard_port)
        ))
    );

    let (mut proc, args, _config_dir) = start_injected_guard_at(&pod, &ns, "unifi", IP);
    assert!(
        args.iter().any(|a| a == &format!("[{IP}]:{guard_port}")),
        "listen on the pod IP at the guard's own port: {args:?}"
    );
    assert!(
        args.iter().any(|a| a == &format!("http://127.0.0.1:{port}")),
        "upstream over loopback to the app's port: {args:?}"
    );
    let url = format!("http://{IP}:{guard_port}/mcp");
    let svc_host = format!("Host: unifi.{ns}.svc.cluster.local:{guard_port}");
    run_client(ClientKind::Python, Transport::StreamableHttp, &url, &[&svc_host])
        .expect("client")
        .assert_full_session("MCP client through the guard's port");
    // kubelet's httpGet probe, now on the guard's port: Host <pod IP>:<guard port> passes to the server.
    let probe = testkit::http::raw(
        format!("{IP}:{guard_port}").parse().expect("addr"),
        &testkit::mcp::initialize_request("/mcp", &format!("{IP}:{guard_port}"), &[]),
    )
    .expect("probe-like request");
    assert_eq!(probe.status, 200, "{}", probe.text());
    run_client(
        ClientKind::Python,
        Transport::StreamableHttp,
        &url,
        &["Host: attacker.test"],
    )
    .expect("client")
    .assert_rejected("forged Host", 421, "host_not_allowed");
    proc.kill();

    // The pod's annotation chooses an ordinary container although the API server runs native sidecars.
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "legacy", "labels": { "app": "unifi" },
                              "annotations": { "mcpguard.dev/native-sidecar": "false" } },
                "spec": { "containers": [restricted_container("server", port)] }
            }))
            .expect("pod json"),
        )
        .await
        .expect("create pod");
    let spec = pod.spec.as_ref().expect("spec");
    assert!(
        spec.init_containers
            .iter()
            .flatten()
            .all(|c| c.name != "mcp-guard")
    );
    assert_eq!(
        spec.containers.first().map(|c| c.name.as_str()),
        Some("mcp-guard")
    );
    drop(server);
}

/// An IPv6 pod, as far as this machine can stand one in: the guard of an injected pod started with `::1` as its
/// pod IP (the node harness is IPv4 only). Its listeners follow the pod's family — `[$(POD_IP)]` for the guarded
/// port and the admin port alike (an admin listener on `0.0.0.0` would never answer kubelet's probes of an IPv6
/// pod IP) — and a probe-like request with `Host: [::1]:PORT` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_guard_follows_an_ipv6_pod_ip() {
    use testkit::mcp::{ClientKind, PyServer, Transport, run_client};
    let env = env().await;
    let server = PyServer::start(Transport::StreamableHttp).expect("start the MCP Python SDK server");
    let port = server.port;
    let (ns, pod) = injected_weather_pod(env.cluster, "wh-ipv6", port).await;
    // start_injected_guard_at waits for /readyz on [::1]:15081 and checks the admin address is the pod IP's.
    let (mut proc, args, _config_dir) = start_injected_guard_at(&pod, &ns, "weather", "::1");
    assert!(args.iter().any(|a| a == &format!("[::1]:{port}")), "{args:?}");
    let url = format!("http://[::1]:{port}/mcp");
    run_client(
        ClientKind::Python,
        Transport::StreamableHttp,
        &url,
        &[&format!("Host: weather.{ns}.svc:{port}")],
    )
    .expect("client")
    .assert_full_session("MCP client to an IPv6 pod IP");
    let probe = testkit::http::raw(
        format!("[::1]:{port}").parse().expect("addr"),
        &testkit::mcp::initialize_request("/mcp", &format!("[::1]:{port}"), &[]),
    )
    .expect("probe-like request");
    assert_eq!(
        probe.status,
        200,
        "Host [pod IP]:PORT must pass: {}",
        probe.text()
    );
    proc.kill();
    drop(server);
}

fn admin_port(args: &[String]) -> u16 {
    let i = args
        .iter()
        .position(|a| a == "--admin-listen")
        .expect("--admin-listen");
    args[i + 1]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("admin port")
}

/// Writes a certificate pair the way kubelet projects a `kubernetes.io/tls` Secret: files in a versioned
/// directory, reached through the `..data` symlink, which a rotation swaps atomically.
fn write_secret_version(dir: &std::path::Path, version: &str, cert: &str, key: &str) {
    let v = dir.join(version);
    std::fs::create_dir(&v).expect("mkdir");
    std::fs::write(v.join("tls.crt"), cert).expect("write");
    std::fs::write(v.join("tls.key"), key).expect("write");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for f in ["tls.crt", "tls.key"] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).expect("symlink");
        }
    }
}

/// The binary's `--shutdown-delay-seconds` in the test below.
const SHUTDOWN_DELAY_SECONDS: u64 = 30;

/// The `mcp-guard-operator` binary itself (`--no-controller`) serves the webhook the API server calls: flags,
/// TLS files, caches, readiness and metrics on its admin listener, as `main` wires them. Then its Secret is
/// rotated to a certificate from a new CA and the caBundle switched to that CA alone: injection goes on working
/// once the binary has reloaded the files, without a restart. Told to stop (SIGTERM), it still admits pods for
/// `--shutdown-delay-seconds`, then exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_serves_the_webhook_and_reloads_its_certificate() {
    let env = env().await;
    let client = env.cluster.client();
    let secret = tempfile::tempdir().expect("tmp");
    let (ca1, cert1, key1) = webhook_certificates().expect("certificates");
    write_secret_version(secret.path(), "..v1", &cert1, &key1);

    let webhook_port = testkit::tools::free_port();
    let admin_port = testkit::tools::free_port();
    let mut cmd = Command::new(testkit::tools::cargo_bin("mcp-guard-operator"));
    cmd.args(["--no-controller", "--webhook-listen"])
        .arg(format!("127.0.0.1:{webhook_port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin_port}"))
        .arg("--tls-cert-file")
        .arg(secret.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(secret.path().join("tls.key"))
        // Long enough that a pod created after SIGTERM is admitted within it however busy the machine is.
        .arg(format!("--shutdown-delay-seconds={SHUTDOWN_DELAY_SECONDS}"))
        .env("KUBECONFIG", env.cluster.kubeconfig())
        .env_remove("POD_NAMESPACE")
        .env("RUST_BACKTRACE", "1");
    let mut operator = testkit::process::Proc::spawn("mcp-guard-operator", cmd).expect("start the operator");
    let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(testkit::http::get(&readyz), Ok(r) if r.status == 200) {
        operator.ensure_running().expect("operator running");
        assert!(
            Instant::now() < deadline,
            "operator not ready: {}",
            operator.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let apply_config = |ca: String| {
        let configs = configs.clone();
        async move {
            let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": { "name": "mcp-guard-webhook-test-binary" },
                "webhooks": [{
                    "name": "inject.mcpguard.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                    "failurePolicy": "Fail", "timeoutSeconds": 10,
                    "clientConfig": { "url": format!("https://127.0.0.1:{webhook_port}/mutate-pods"),
                                      "caBundle": base64(&ca) },
                    "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                "resources": ["pods"] }],
                    "namespaceSelector": { "matchLabels": { "mcpguard.dev/injection": "enabled", BINARY_LABEL: "true" } }
                }]
            }))
            .expect("config");
            configs
                .patch(
                    "mcp-guard-webhook-test-binary",
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&config),
                )
                .await
                .expect("apply the webhook configuration");
        }
    };
    apply_config(ca1).await;
    let ns = opted_in_namespace(env.cluster, "wh-binary", &[(BINARY_LABEL, "true")]).await;
    create_mcpserver(
        &client,
        &ns,
        "weather",
        json!({ "selector": { "matchLabels": { "app": "weather" } }, "port": 8000 }),
    )
    .await
    .expect("MCPServer");

    // Creates pods until one comes back injected (the API server picks configuration changes up asynchronously,
    // and refuses pods while it cannot verify the webhook's certificate).
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let mut seq = 0;
    let mut injected_pod = |what: &'static str| {
        let pods = pods.clone();
        seq += 1;
        let name = format!("weather-{seq}");
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let pod = pod_json(&format!("{name}-{attempt}"), &[("app", "weather")], json!({}));
                let last = match pods.create(&PostParams::default(), &pod).await {
                    Ok(p) if guard_container(&p).is_some() => return p,
                    Ok(_) => "created without the guard".to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(Instant::now() < deadline, "{what}: never injected; last: {last}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let pod = injected_pod("first certificate").await;
    assert_eq!(
        guard_container(&pod).and_then(|c| c.image.clone()).as_deref(),
        Some(SIDECAR_IMAGE)
    );

    // Rotate, in the order that proves the reload: first the caBundle names only a new CA, so the API server
    // refuses the certificate still being served (pods cannot be created: failurePolicy Fail)…
    let (ca2, cert2, key2) = webhook_certificates().expect("certificates");
    apply_config(ca2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = pod_json("tls-probe", &[("app", "weather")], json!({}));
        match pods
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &probe,
            )
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("failed calling webhook") => break,
            other => assert!(
                Instant::now() < deadline,
                "the new caBundle never took effect: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // …then the Secret is rotated the way kubelet updates it, and the running binary picks the new pair up.
    write_secret_version(secret.path(), "..v2", &cert2, &key2);
    injected_pod("rotated certificate").await;
    operator.ensure_running().expect("the operator was not restarted");

    let metrics = testkit::http::get(&format!("http://127.0.0.1:{admin_port}/metrics"))
        .expect("metrics")
        .text();

    // Told to stop, it goes on admitting for --shutdown-delay-seconds (an API server still sends reviews to a
    // stopping pod until it learns that the pod left the endpoints), then drains and exits cleanly.
    operator.signal(Signal::SIGTERM);
    injected_pod("after SIGTERM, within the shutdown delay").await;
    let code = operator
        .wait_exit(Duration::from_secs(SHUTDOWN_DELAY_SECONDS + 60))
        .expect("exits after the delay and the drain");
    assert_eq!(code, Some(0), "a clean exit:\n{}", operator.logs());
    let _ = configs
        .delete("mcp-guard-webhook-test-binary", &DeleteParams::default())
        .await;
    let has = |name: &str, labels: &[&str]| {
        metrics
            .lines()
            .any(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)) && !l.ends_with(" 0"))
    };
    assert!(
        has(
            "mcp_guard_webhook_admissions_total",
            &["webhook=\"mutate-pods\"", "result=\"injected\""]
        ),
        "no injection counted:\n{metrics}"
    );
    assert!(
        has("mcp_guard_webhook_tls_reloads_total", &["result=\"ok\""]),
        "no reload counted:\n{metrics}"
    );
}
