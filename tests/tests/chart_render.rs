//! The Helm chart without a cluster: `helm lint --strict`, `helm template` with default and non-default values,
//! the values schema rejecting bad values, the chart's CRDs matching `crds/`, the examples and the Dockerfiles.
//! Uses the real `helm` from `make setup`.

#![allow(clippy::unwrap_used)]

mod chart_common;

use std::collections::BTreeSet;
use std::sync::Arc;

use chart_common::*;
use serde_json::{Value, json};
use testkit::tools::workspace_root;

#[test]
fn lint_strict_is_clean_with_default_and_non_default_values() {
    let home = tempfile::tempdir().unwrap();
    let values = home.path().join("values.yaml");
    std::fs::write(
        &values,
        "certManager:\n  enabled: true\nserviceMonitor:\n  enabled: true\npolicy:\n  defaultMode: audit\n  \
         allowedHosts: [mcp.example.com]\nwebhook:\n  mutating:\n    failurePolicy: Ignore\n",
    )
    .unwrap();
    for extra in [vec![], vec!["--values".to_string(), values.display().to_string()]] {
        let mut cmd = helm(home.path());
        cmd.args(["lint", "--strict"]).arg(chart_dir()).args(&extra);
        let out = run(cmd);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "helm lint --strict {extra:?} failed:\n{stdout}\n{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
        assert!(
            !stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"),
            "lint findings:\n{stdout}"
        );
    }
}

#[test]
fn default_render_has_every_part() {
    let docs = render_ok(&[]);
    let kinds: BTreeSet<String> = kinds(&docs).into_iter().collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "MCPGuardPolicy",
        "Job",
    ] {
        assert!(kinds.contains(kind), "no {kind} in the default render: {kinds:?}");
    }
    assert!(
        !kinds.contains("ServiceMonitor") && !kinds.contains("Certificate"),
        "{kinds:?}"
    );
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "ClusterRole"
                | "ClusterRoleBinding"
                | "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
                | "MCPGuardPolicy"
        );
        if cluster_scoped {
            assert!(
                doc["metadata"]["namespace"].is_null(),
                "{kind} is cluster-scoped: {doc}"
            );
        } else {
            assert_eq!(
                doc["metadata"]["namespace"], NAMESPACE,
                "{kind} {} namespace",
                doc["metadata"]["name"]
            );
        }
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/instance"], RELEASE,
            "{kind} labels"
        );
    }
}

#[test]
fn operator_deployment_is_highly_available_and_restricted() {
    let docs = render_ok(&[]);
    let deploy = one(&docs, "Deployment");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "mcp-guard");
    assert_eq!(
        spec["template"]["metadata"]["labels"]["mcpguard.dev/inject"],
        "false"
    );

    // Pod Security "restricted".
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let c = operator_container(&docs);
    let csc = &c["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["capabilities"]["drop"], json!(["ALL"]));
    assert!(csc["capabilities"]["add"].is_null());
    assert!(csc["privileged"].is_null() || csc["privileged"] == false);

    assert_eq!(c["image"], "ghcr.io/mcp-guard/mcp-guard-operator:0.2.0-dev");
    assert!(
        c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string()
    );

    // Leader election identity from the downward API.
    let env = c["env"].as_array().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(field("POD_NAME"), Some(json!("metadata.name")));
    assert_eq!(field("POD_NAMESPACE"), Some(json!("metadata.namespace")));
    // The listeners' address, whichever the pod's family (`0.0.0.0` is IPv4 only).
    assert_eq!(field("POD_IP"), Some(json!("status.podIP")));

    // Probes on the admin port.
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    let ports: Vec<(String, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![("admin".to_string(), 8080), ("webhook".to_string(), 9443)]
    );

    // The operator CLI contract.
    let args = args_of(c);
    for want in [
        "--admin-listen=[$(POD_IP)]:8080",
        "--webhook-listen=[$(POD_IP)]:9443",
        "--tls-cert-file=/tls/tls.crt",
        "--tls-key-file=/tls/tls.key",
        "--lease-name=mcp-guard-operator",
        "--cluster-domain=cluster.local",
        "--default-sidecar-image=ghcr.io/mcp-guard/mcp-guard:0.2.0-dev",
        "--log-format=json",
        "--log-level=info",
        "--shutdown-grace-seconds=20",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/tls");
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "mcp-guard-webhook-tls");

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
}

fn rules(doc: &Value) -> Vec<Value> {
    doc["rules"].as_array().cloned().unwrap_or_default()
}

/// (apiGroup, resource) -> verbs granted, merged over all rules; resourceNames-restricted rules are keyed with
/// the names appended.
fn grants(doc: &Value) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    let mut out = vec![];
    for rule in rules(doc) {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.push((
                    group.clone(),
                    resource,
                    strings(&rule["verbs"]),
                    strings(&rule["resourceNames"]),
                ));
            }
        }
    }
    out
}

#[test]
fn rbac_is_least_privilege() {
    let docs = render_ok(&[]);
    let cluster = grants(one(&docs, "ClusterRole"));
    let role = grants(named(&docs, "Role", "mcp-guard"));
    for (group, resource, verbs, _) in cluster.iter().chain(role.iter()) {
        assert!(
            group != "*" && resource != "*" && !verbs.iter().any(|v| v == "*"),
            "wildcard grant {resource}"
        );
        // The one deletion: the operator's own NetworkPolicies, when a policy switches them off.
        let may_delete = group == "networking.k8s.io" && resource == "networkpolicies";
        assert!(
            !verbs.iter().any(|v| (v == "delete" && !may_delete)
                || v == "deletecollection"
                || v == "escalate"
                || v == "bind"),
            "{group}/{resource}: {verbs:?}"
        );
    }
    let find =
        |set: &[(String, String, Vec<String>, Vec<String>)], group: &str, resource: &str| -> Vec<String> {
            let mut v: Vec<String> = set
                .iter()
                .filter(|(g, r, _, _)| g == group && r == resource)
                .flat_map(|(_, _, verbs, _)| verbs.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
    let read = vec!["get", "list", "watch"];
    assert_eq!(find(&cluster, "mcpguard.dev", "mcpservers"), read);
    assert_eq!(find(&cluster, "mcpguard.dev", "mcpguardpolicies"), read);
    assert_eq!(
        find(&cluster, "mcpguard.dev", "mcpservers/status"),
        vec!["get", "patch"]
    );
    for (g, r) in [
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("networking.k8s.io", "ingresses"),
        ("gateway.networking.k8s.io", "httproutes"),
        ("gateway.networking.k8s.io", "gateways"),
        ("mcp.x-k8s.io", "mcpservers"),
    ] {
        assert_eq!(find(&cluster, g, r), read, "{g}/{r}");
    }
    assert_eq!(
        find(&cluster, "", "configmaps"),
        vec!["create", "get", "list", "patch", "watch"]
    );
    assert_eq!(
        find(&cluster, "networking.k8s.io", "networkpolicies"),
        vec!["create", "delete", "get", "list", "patch", "watch"]
    );
    // The nodes' kubelet versions decide native sidecars: read only.
    assert_eq!(find(&cluster, "", "nodes"), vec!["list", "watch"]);
    assert_eq!(find(&cluster, "events.k8s.io", "events"), vec!["create", "patch"]);
    assert_eq!(find(&cluster, "", "events"), vec!["create", "patch"]);
    // The cluster's service-account issuer: get on its two documents, nothing else outside the API.
    let urls: Vec<(Vec<String>, Vec<String>)> = rules(one(&docs, "ClusterRole"))
        .iter()
        .filter(|r| !r["nonResourceURLs"].is_null())
        .map(|r| (strings(&r["nonResourceURLs"]), strings(&r["verbs"])))
        .collect();
    assert_eq!(
        urls,
        vec![(
            vec![
                "/.well-known/openid-configuration".to_string(),
                "/openid/v1/jwks".to_string()
            ],
            vec!["get".to_string()]
        )]
    );
    // No Secrets, Leases or webhook configurations cluster-wide.
    for (g, r) in [
        ("", "secrets"),
        ("coordination.k8s.io", "leases"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ] {
        assert!(find(&cluster, g, r).is_empty(), "cluster-wide {g}/{r}");
    }
    // In its namespace: its Lease, and get on its own Secret only.
    let secrets: Vec<_> = role
        .iter()
        .filter(|(g, r, _, _)| g.is_empty() && r == "secrets")
        .collect();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].2, vec!["get"]);
    assert_eq!(secrets[0].3, vec!["mcp-guard-webhook-tls"]);
    // Its own Lease by name; create cannot be limited to a name.
    let leases: Vec<_> = role
        .iter()
        .filter(|(g, r, _, _)| g == "coordination.k8s.io" && r == "leases")
        .map(|(_, _, verbs, names)| (verbs.clone(), names.clone()))
        .collect();
    assert_eq!(
        leases,
        vec![
            (
                vec!["get".to_string(), "update".to_string()],
                vec!["mcp-guard-operator".to_string()]
            ),
            (vec!["create".to_string()], vec![]),
        ]
    );
    assert!(find(&cluster, "mcpguard.dev", "mcpservers/finalizers").is_empty());
    let binding = named(&docs, "RoleBinding", "mcp-guard");
    assert_eq!(binding["subjects"][0]["name"], "mcp-guard");
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
}

/// The post-install/post-upgrade hook that makes `helm install` wait until the webhooks answer through the API
/// server (issue: a Ready operator pod is not yet reachable through its Service).
#[test]
fn the_install_waits_until_the_webhooks_answer() {
    let docs = render_ok(&[]);
    let hook = |doc: &Value| {
        (
            doc["metadata"]["annotations"]["helm.sh/hook"].clone(),
            doc["metadata"]["annotations"]["helm.sh/hook-weight"]
                .as_str()
                .and_then(|w| w.parse::<i32>().ok()),
        )
    };
    let job = named(&docs, "Job", "mcp-guard-webhook-check");
    let (when, job_weight) = hook(job);
    assert_eq!(when, "post-install,post-upgrade");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded",
        "kept after a failure so that its log tells why"
    );
    // Its RBAC exists before it runs (Helm runs hooks in weight order) and grants one thing.
    for kind in ["ServiceAccount", "Role", "RoleBinding"] {
        let (when, weight) = hook(named(&docs, kind, "mcp-guard-webhook-check"));
        assert_eq!(when, "post-install,post-upgrade", "{kind}");
        assert!(
            weight < job_weight,
            "{kind} weight {weight:?} vs the Job's {job_weight:?}"
        );
    }
    assert_eq!(
        grants(named(&docs, "Role", "mcp-guard-webhook-check")),
        vec![(
            "mcpguard.dev".to_string(),
            "mcpservers".to_string(),
            vec!["create".to_string()],
            vec![]
        )]
    );
    let pod = &job["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["mcpguard.dev/inject"], "false");
    // Not one of the operator's pods: the webhook Service must never route to it.
    assert_ne!(
        pod["metadata"]["labels"]["app.kubernetes.io/component"],
        one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
    );
    let pod = &pod["spec"];
    assert_eq!(pod["serviceAccountName"], "mcp-guard-webhook-check");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/mcp-guard/mcp-guard-operator:0.2.0-dev");
    assert_eq!(
        args_of(c),
        vec![
            "check-webhooks",
            "--namespace=mcp-guard-system",
            "--timeout-seconds=180"
        ]
    );
    let csc = &c["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["capabilities"]["drop"], json!(["ALL"]));

    // Off with the webhook, or when asked; without rbac.create it runs as the operator's ServiceAccount.
    for off in ["webhook.enabled=false", "webhook.check.enabled=false"] {
        assert!(all(&render_ok(&["--set", off]), "Job").is_empty(), "{off}");
    }
    let docs = render_ok(&["--set", "rbac.create=false"]);
    assert!(all(&docs, "Role").is_empty(), "{:?}", kinds(&docs));
    assert_eq!(
        one(&docs, "Job")["spec"]["template"]["spec"]["serviceAccountName"],
        "mcp-guard"
    );
}

/// Checks that `cert_pem` is signed by `ca_pem` and valid for `name`, the way the API server will.
fn verify_cert(ca_pem: &str, cert_pem: &str, name: &str) -> Result<(), String> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64");
    String::from_utf8(bytes).expect("PEM is text")
}

#[test]
fn webhooks_match_the_contract_and_their_certificate_verifies() {
    let docs = render_ok(&[]);
    let mutating = one(&docs, "MutatingWebhookConfiguration");
    let hooks = mutating["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    let m = &hooks[0];
    assert_eq!(m["clientConfig"]["service"]["path"], "/mutate-pods");
    assert_eq!(m["clientConfig"]["service"]["name"], "mcp-guard-webhook");
    assert_eq!(m["clientConfig"]["service"]["namespace"], NAMESPACE);
    assert_eq!(m["failurePolicy"], "Fail");
    assert_eq!(m["sideEffects"], "None");
    assert!(m["timeoutSeconds"].as_i64().unwrap() <= 30);
    assert_eq!(
        m["rules"],
        json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
        "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        m["namespaceSelector"]["matchLabels"],
        json!({"mcpguard.dev/injection": "enabled"})
    );
    let excluded = &m["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
    assert_eq!(excluded["operator"], "NotIn");
    let excluded = strings(&excluded["values"]);
    assert!(
        excluded.contains(&"kube-system".to_string()) && excluded.contains(&NAMESPACE.to_string()),
        "{excluded:?}"
    );
    assert_eq!(
        m["objectSelector"],
        json!({"matchExpressions": [{"key": "mcpguard.dev/inject", "operator": "NotIn", "values": ["false"]}]})
    );

    let validating = one(&docs, "ValidatingWebhookConfiguration");
    let v = &validating["webhooks"][0];
    assert_eq!(v["clientConfig"]["service"]["path"], "/validate-mcpserver");
    assert_eq!(v["rules"][0]["resources"], json!(["mcpservers"]));
    assert_eq!(v["rules"][0]["apiGroups"], json!(["mcpguard.dev"]));

    // The generated certificate: the webhook Service's names, signed by the CA in both caBundles.
    let secret = one(&docs, "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], "mcp-guard-webhook-tls");
    assert_eq!(m["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    assert_eq!(v["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    let ca = b64(&secret["data"]["ca.crt"]);
    let cert = b64(&secret["data"]["tls.crt"]);
    assert!(b64(&secret["data"]["tls.key"]).contains("PRIVATE KEY"));
    for name in [
        "mcp-guard-webhook.mcp-guard-system.svc",
        "mcp-guard-webhook.mcp-guard-system.svc.cluster.local",
    ] {
        verify_cert(&ca, &cert, name).unwrap_or_else(|e| panic!("certificate not valid for {name}: {e}"));
    }
    assert!(verify_cert(&ca, &cert, "evil.example.com").is_err());
}

#[test]
fn default_policy_is_built_from_values() {
    let docs = render_ok(&[]);
    let policy = one(&docs, "MCPGuardPolicy");
    assert_eq!(policy["metadata"]["name"], "default");
    assert_eq!(policy["apiVersion"], "mcpguard.dev/v1alpha1");
    let spec = &policy["spec"];
    assert_eq!(spec["defaultMode"], "enforce");
    assert_eq!(spec["allowedHosts"], json!([]));
    assert_eq!(spec["allowServiceDNSNames"], true);
    assert_eq!(spec["sidecar"]["image"], "ghcr.io/mcp-guard/mcp-guard:0.2.0-dev");
    // failurePolicy is the MutatingWebhookConfiguration's, not a policy field.
    assert_eq!(spec["injection"], json!({"nativeSidecars": "Auto"}));
    assert_eq!(spec["traffic"]["defaultLayout"], "SharedPort");
    assert_eq!(spec["networkPolicy"], json!({"enabled": true}));
    assert_eq!(spec["limits"]["maxRequestBodyBytes"], 4194304);
    assert_eq!(spec.get("rateLimits"), None, "no rate limits unless set");
    assert_eq!(spec.get("trustedProxies"), None, "no trusted proxies unless set");
    assert_eq!(
        spec["cors"],
        json!({"enabled": false}),
        "CORS off unless asked for"
    );
    // It is what the operator's types accept.
    let _: mcp_guard_operator::crd::MCPGuardPolicy =
        serde_json::from_value(policy.clone()).expect("the rendered policy deserialises as MCPGuardPolicy");

    let docs = render_ok(&[
        "--set",
        "policy.defaultMode=audit",
        "--set",
        "policy.allowedHosts={mcp.example.com,*.apps.example.com}",
        "--set",
        "policy.allowedOrigins={https://claude.ai}",
        "--set",
        "policy.allowServiceDNSNames=false",
        "--set",
        "policy.ingressClasses={nginx}",
        "--set",
        "policy.sidecar.image.repository=registry.example.com/guard",
        "--set",
        "policy.sidecar.image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--set",
        "policy.sidecar.logLevel=debug",
        "--set",
        "policy.sidecar.imagePullPolicy=Always",
        "--set",
        "policy.injection.failurePolicy=Ignore",
        "--set",
        "policy.limits.maxRequestBodyBytes=1048576",
        "--set",
        "policy.rateLimits.perClient.requestsPerMinute=120",
        "--set",
        "policy.rateLimits.maxStreamsPerClient=4",
        "--set",
        "policy.trustedProxies={10.0.0.0/8}",
        "--set",
        "policy.cors.enabled=true",
    ]);
    let policy = one(&docs, "MCPGuardPolicy");
    let spec = &policy["spec"];
    assert_eq!(spec["cors"], json!({"enabled": true}));
    assert_eq!(spec["defaultMode"], "audit");
    assert_eq!(
        spec["allowedHosts"],
        json!(["mcp.example.com", "*.apps.example.com"])
    );
    assert_eq!(spec["allowedOrigins"], json!(["https://claude.ai"]));
    assert_eq!(spec["allowServiceDNSNames"], false);
    assert_eq!(spec["ingressClasses"], json!(["nginx"]));
    let image =
        "registry.example.com/guard@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(spec["sidecar"]["image"], image);
    assert_eq!(spec["sidecar"]["logLevel"], "debug");
    assert_eq!(spec["sidecar"]["imagePullPolicy"], "Always");
    assert_eq!(spec["injection"].get("failurePolicy"), None);
    assert_eq!(spec["limits"]["maxRequestBodyBytes"], 1048576);
    assert_eq!(
        spec["rateLimits"],
        json!({"perClient": {"requestsPerMinute": 120}, "maxStreamsPerClient": 4})
    );
    assert_eq!(spec["trustedProxies"], json!(["10.0.0.0/8"]));
    let parsed: mcp_guard_operator::crd::MCPGuardPolicy = serde_json::from_value(policy.clone()).unwrap();
    assert!(
        parsed.spec.rate_limits.is_some(),
        "the rate limits reach the policy's type"
    );
    // The operator's default sidecar image and the webhook's failure policy follow.
    assert!(args_of(operator_container(&docs)).contains(&format!("--default-sidecar-image={image}")));
    assert_eq!(
        one(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["failurePolicy"],
        "Ignore"
    );

    let docs = render_ok(&["--set", "policy.create=false"]);
    assert!(all(&docs, "MCPGuardPolicy").is_empty());
}

#[test]
fn non_default_values_render() {
    // Webhook off: no webhook objects, no certificate, no Secret access, the operator told so.
    let docs = render_ok(&["--set", "webhook.enabled=false"]);
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Secret",
    ] {
        assert!(
            all(&docs, kind).is_empty(),
            "{kind} rendered with webhook.enabled=false"
        );
    }
    assert_eq!(all(&docs, "Service").len(), 1, "only the admin Service");
    let args = args_of(operator_container(&docs));
    assert!(
        args.contains(&"--no-webhook".to_string()) && !args.iter().any(|a| a.starts_with("--webhook-listen"))
    );
    assert!(
        !grants(named(&docs, "Role", "mcp-guard"))
            .iter()
            .any(|(_, r, _, _)| r == "secrets")
    );

    // cert-manager: Certificate + Issuers, CA injected by annotation, no chart-generated Secret.
    let docs = render_ok(&["--set", "certManager.enabled=true"]);
    assert!(all(&docs, "Secret").is_empty());
    assert_eq!(all(&docs, "Issuer").len(), 2);
    let cert = named(&docs, "Certificate", "mcp-guard-webhook");
    assert_eq!(cert["spec"]["secretName"], "mcp-guard-webhook-tls");
    assert!(
        strings(&cert["spec"]["dnsNames"]).contains(&"mcp-guard-webhook.mcp-guard-system.svc".to_string())
    );
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
        let doc = one(&docs, kind);
        assert_eq!(
            doc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "mcp-guard-system/mcp-guard-webhook"
        );
        assert!(doc["webhooks"][0]["clientConfig"]["caBundle"].is_null());
    }
    let docs = render_ok(&[
        "--set",
        "certManager.enabled=true",
        "--set",
        "certManager.issuerRef.name=corp-ca",
        "--set",
        "certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(all(&docs, "Issuer").is_empty());
    assert_eq!(
        one(&docs, "Certificate")["spec"]["issuerRef"]["kind"],
        "ClusterIssuer"
    );

    // ServiceMonitor, image by digest, replicas, PDB, webhook knobs, an out-of-cluster webhook URL.
    let docs = render_ok(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=prom",
        "--set",
        "image.digest=sha256:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd",
        "--set",
        "replicaCount=3",
        "--set",
        "podDisruptionBudget.maxUnavailable=1",
        "--set",
        "webhook.timeoutSeconds=5",
        "--set",
        "webhook.mutating.failurePolicy=Ignore",
        "--set",
        "webhook.mutating.reinvocationPolicy=IfNeeded",
        "--set",
        "webhook.externalURL=https://127.0.0.1:9443",
        "--set",
        "webhook.certificate.extraIPAddresses={127.0.0.1}",
        "--namespace",
        "guard",
    ]);
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        operator_container(&docs)["image"],
        "ghcr.io/mcp-guard/mcp-guard-operator@sha256:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd"
    );
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"]["minAvailable"].is_null());
    let m = &one(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(m["timeoutSeconds"], 5);
    assert_eq!(m["failurePolicy"], "Ignore");
    assert_eq!(m["reinvocationPolicy"], "IfNeeded");
    assert_eq!(m["clientConfig"]["url"], "https://127.0.0.1:9443/mutate-pods");
    assert!(m["clientConfig"]["service"].is_null());
    assert!(strings(&m["namespaceSelector"]["matchExpressions"][0]["values"]).contains(&"guard".to_string()));
    let v = &one(&docs, "ValidatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        v["clientConfig"]["url"],
        "https://127.0.0.1:9443/validate-mcpserver"
    );
    let secret = one(&docs, "Secret");
    assert_eq!(secret["metadata"]["namespace"], "guard");
    verify_cert(
        &b64(&secret["data"]["ca.crt"]),
        &b64(&secret["data"]["tls.crt"]),
        "127.0.0.1",
    )
    .expect("the certificate covers webhook.certificate.extraIPAddresses");

    // Names follow the release; a long release name still yields valid names.
    let docs = render(&["--set", "fullnameOverride=guard"]).unwrap();
    assert_eq!(one(&docs, "Deployment")["metadata"]["name"], "guard");
    assert_eq!(one(&docs, "Secret")["metadata"]["name"], "guard-webhook-tls");
}

#[test]
fn schema_rejects_bad_values_with_clear_messages() {
    // (--set argument, a fragment the error must contain so the user finds the bad value)
    let cases: &[(&str, &str)] = &[
        ("policy.defaultMode=block", "defaultMode"),
        (
            "policy.allowedHosts={*}",
            "exactly what a DNS-rebinding attack needs",
        ),
        ("policy.allowedOrigins={*}", "policy.allowedOrigins"),
        ("policy.allowedHosts={https://mcp.example.com}", "allowedHosts"),
        ("policy.allowedOrigins={mcp.example.com}", "allowedOrigins"),
        ("policy.sidecar.logLevel=verbose", "logLevel"),
        ("policy.injection.failurePolicy=Maybe", "failurePolicy"),
        ("policy.limits.maxRequestBodyBytes=0", "maxRequestBodyBytes"),
        ("policy.defaultmode=audit", "defaultmode"),
        ("policy.sidecar.image.digest=latest", "digest"),
        ("webhook.timeoutSeconds=60", "timeoutSeconds"),
        ("webhook.mutating.failurePolicy=fail", "failurePolicy"),
        ("webhook.externalURL=http://127.0.0.1:9443", "externalURL"),
        ("webhook.port=70000", "port"),
        ("replicaCount=-1", "replicaCount"),
        ("logFormat=xml", "logFormat"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("extraArgs={-v}", "extraArgs"),
        ("certManager.issuerRef.kind=Vault", "kind"),
    ];
    for (set, fragment) in cases {
        match render(&["--set", set]) {
            Ok(_) => panic!("--set {set} was accepted"),
            Err(stderr) => {
                assert!(
                    stderr.contains("values don't meet the specifications of the schema")
                        || stderr.contains("execution error at (mcp-guard/templates/validate.yaml"),
                    "--set {set}: {stderr}"
                );
                assert!(
                    stderr.contains(fragment),
                    "--set {set}: the message does not name {fragment}:\n{stderr}"
                );
            }
        }
    }
    // An out-of-cluster webhook URL the generated certificate would not cover.
    let err = render(&["--set", "webhook.externalURL=https://127.0.0.1:9443"]).unwrap_err();
    assert!(err.contains("webhook.certificate.extraIPAddresses"), "{err}");
    // A values file with a wrong type.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "policy:\n  allowServiceDNSNames: \"yes\"\n").unwrap();
    let err = render(&["--values", file.to_str().unwrap()]).unwrap_err();
    assert!(err.contains("allowServiceDNSNames"), "{err}");
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let root = workspace_root();
    let list = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("read {dir}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        names
    };
    let generated = list("crds");
    assert!(
        !generated.is_empty(),
        "crds/ is empty: run `cargo run -p mcp-guard-operator --bin crdgen`"
    );
    assert_eq!(
        list("charts/mcp-guard/crds"),
        generated,
        "charts/mcp-guard/crds/ must hold exactly crds/*.yaml"
    );
    for name in &generated {
        let a = std::fs::read_to_string(root.join("crds").join(name)).unwrap();
        let b = std::fs::read_to_string(root.join("charts/mcp-guard/crds").join(name)).unwrap();
        assert!(
            a == b,
            "charts/mcp-guard/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/mcp-guard/crds/"
        );
    }
}

fn example_files() -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut stack = vec![workspace_root().join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn examples_are_valid() {
    let server_py = std::fs::read_to_string(workspace_root().join("examples/server/server.py")).unwrap();
    let mut servers = 0;
    let mut policies = 0;
    for path in example_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        if path.ends_with("values-production.yaml") {
            // Chart values: they must pass the schema and render.
            render_ok(&["--values", path.to_str().unwrap()]);
            continue;
        }
        for doc in parse_docs(&text) {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a document without kind", path.display()));
            match kind {
                "MCPServer" => {
                    let server: mcp_guard_operator::crd::MCPServer = serde_json::from_value(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: not an MCPServer: {e}", path.display()));
                    let errors = mcp_guard_operator::validate::validate_spec(&server.spec);
                    assert!(errors.is_empty(), "{}: {errors:?}", path.display());
                    servers += 1;
                }
                "MCPGuardPolicy" => {
                    let _: mcp_guard_operator::crd::MCPGuardPolicy = serde_json::from_value(doc.clone())
                        .unwrap_or_else(|e| panic!("{}: not an MCPGuardPolicy: {e}", path.display()));
                    policies += 1;
                }
                "ConfigMap" if doc["data"]["server.py"].is_string() => {
                    assert_eq!(
                        doc["data"]["server.py"].as_str().unwrap(),
                        server_py,
                        "{}: the inlined server.py differs from examples/server/server.py",
                        path.display()
                    );
                }
                "Namespace" => {
                    assert_eq!(doc["metadata"]["labels"]["mcpguard.dev/injection"], "enabled");
                }
                _ => {}
            }
        }
    }
    assert!(
        servers >= 3,
        "expected the Ingress, HTTPRoute and audit examples, found {servers} MCPServers"
    );
    assert!(policies >= 1, "expected a cluster policy example");
}

#[test]
fn dockerfiles_build_static_non_root_images() {
    // The guard ships as the `dist` profile (release with LTO), the operator as a plain release build.
    for (file, package, binary, profile) in [
        ("sidecar/Dockerfile", "mcp-guard", "mcp-guard", "--profile dist"),
        (
            "operator/Dockerfile",
            "mcp-guard-operator",
            "mcp-guard-operator",
            "--release",
        ),
    ] {
        let text = std::fs::read_to_string(workspace_root().join(file)).unwrap();
        // A build stage from source, a `prebuilt` stage for the offline build (the host's static musl binary),
        // the stage the BINARY_FROM argument picks, and the runtime stage on BASE_IMAGE (distroless/static unless
        // the offline build passes `scratch`).
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(
            froms,
            [
                "FROM ${RUST_IMAGE} AS build",
                "FROM scratch AS prebuilt",
                "FROM ${BINARY_FROM} AS binary",
                "FROM ${BASE_IMAGE}",
            ],
            "{file}: build, prebuilt, the chosen binary, runtime"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("ARG BASE_IMAGE=") && l.contains("distroless/static")),
            "{file}: runtime base must default to distroless/static"
        );
        assert!(
            text.contains("ARG BINARY_FROM=build"),
            "{file}: builds from source by default"
        );
        assert!(
            text.contains("COPY --from=binary"),
            "{file}: the runtime stage takes the chosen binary"
        );
        assert!(
            text.contains(&format!("-p {package} --bin {binary}")),
            "{file}: builds {binary}"
        );
        assert!(
            text.contains("--locked") && text.contains(profile),
            "{file}: {profile}"
        );
        assert!(
            text.lines().any(|l| l.trim() == "USER 65532:65532"),
            "{file}: numeric non-root user"
        );
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"]")),
            "{file}"
        );
    }
    let ignore = std::fs::read_to_string(workspace_root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "**/target/"),
        ".dockerignore keeps target/ out of the context"
    );
    // Every workspace member's manifest is in the build context (cargo needs them all to load the workspace): each
    // member of the root manifest, kept whole or by its manifest.
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = ["))
        .expect("the workspace's members, on one line");
    let members: Vec<&str> = members
        .trim_end_matches(']')
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.contains(&"sidecar"), "{members:?}");
    for member in members {
        assert!(
            ignore.lines().any(|l| {
                let l = l.trim();
                l == format!("!{member}/") || l == format!("!{member}/Cargo.toml")
            }),
            ".dockerignore must keep {member}"
        );
    }
}

#[test]
fn demo_script_is_valid_bash() {
    let script = workspace_root().join("tools/demo.sh");
    let out = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash -n tools/demo.sh:\n{}",
        text(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains("set -euo pipefail") && text.contains("trap cleanup EXIT"),
        "strict mode and cleanup"
    );
}
