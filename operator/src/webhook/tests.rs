//! Golden files (`golden/<case>.pod.yaml` → `golden/<case>.injected.yaml`, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p mcp-guard-operator webhook`) and unit tests of the pure core.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::admission::{McpServerContext, check_mcpserver};
use super::inject::*;
use super::*;
use crate::crd::{MCPServer, MCPServerSpec};

const TEST_IMAGE: &str = "ghcr.io/mcp-guard/mcp-guard:test";

fn server(name: &str, app: &str, port: u16) -> GuardedServer {
    GuardedServer {
        name: name.into(),
        selector: LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ..Default::default()
        },
        port,
        layout: Layout::SharedPort,
        native_sidecars: None,
        sidecar: SidecarSettings {
            image: TEST_IMAGE.into(),
            image_pull_policy: Some("IfNotPresent".into()),
            resources: None,
            log_level: Some("info".into()),
        },
    }
}

fn servers() -> Vec<GuardedServer> {
    vec![
        server("weather", "weather", 8000),
        server("files", "files", 80),
        GuardedServer {
            layout: Layout::GuardPort { guard_port: 15080 },
            ..server("unifi", "unifi", 8080)
        },
    ]
}

fn enabled() -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_INJECTION_LABEL.to_string(), "enabled".to_string())])
}

fn plan_for(pod: &Pod, native: bool) -> InjectionPlan {
    plan(&InjectionInput {
        pod,
        namespace: "team-a",
        namespace_labels: &enabled(),
        servers: &servers(),
        native_sidecars: native,
        excluded_namespaces: &[],
    })
}

/// The webhook's answer as a pod: injected, or unchanged when skipped.
fn admit(pod: &Pod, native: bool) -> Pod {
    match plan_for(pod, native) {
        InjectionPlan::Inject(i) => i.pod,
        InjectionPlan::Skip(_) => pod.clone(),
        InjectionPlan::Deny(m) => panic!("denied: {m}"),
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/webhook/golden")
}

/// (case, native sidecars, expected skip reason)
const CASES: &[(&str, bool, Option<SkipReason>)] = &[
    ("fastmcp-deployment", true, None),
    ("named-ports", true, None),
    ("probes", true, None),
    ("init-containers", true, None),
    ("legacy-sidecar", false, None),
    ("privileged-port", true, None),
    ("guard-port", true, None),
    ("guard-port-unnamed", true, None),
    ("opted-out", true, Some(SkipReason::PodOptedOut)),
    ("host-network", true, Some(SkipReason::HostNetwork)),
    ("not-selected", true, Some(SkipReason::NoMatchingServer)),
];

#[test]
fn golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for &(case, native, skip) in CASES {
        let input_path = golden_dir().join(format!("{case}.pod.yaml"));
        let input =
            std::fs::read_to_string(&input_path).unwrap_or_else(|e| panic!("{}: {e}", input_path.display()));
        let pod: Pod = serde_yaml::from_str(&input).unwrap_or_else(|e| panic!("{case}: {e}"));

        let plan = plan_for(&pod, native);
        match (skip, &plan) {
            (Some(want), InjectionPlan::Skip(got)) => assert_eq!(want, *got, "{case}"),
            (None, InjectionPlan::Inject(_)) => {}
            (_, other) => panic!("{case}: expected {skip:?}, got {other:?}"),
        }
        let out = admit(&pod, native);
        let rendered = serde_yaml::to_string(&out).expect("yaml");
        let out_path = golden_dir().join(format!("{case}.injected.yaml"));
        if update {
            std::fs::write(&out_path, &rendered).expect("write golden");
        } else {
            let want = std::fs::read_to_string(&out_path).unwrap_or_default();
            if want != rendered {
                failures.push(format!(
                    "{case}: output differs from {} (UPDATE_GOLDEN=1 to accept)",
                    out_path.display()
                ));
            }
        }

        // Injected twice = same, through the webhook path (skip: already injected) …
        assert_eq!(
            admit(&out, native),
            out,
            "{case}: second admission changed the pod"
        );
        if skip.is_none() {
            assert_eq!(
                plan_for(&out, native),
                InjectionPlan::Skip(SkipReason::AlreadyInjected),
                "{case}"
            );
            // … and through a forced re-injection, which strips what the annotation records first.
            let server = servers()
                .into_iter()
                .find(|s| Some(&s.name) == inject_status(&out).as_ref().map(|s| &s.mcp_server));
            // As the planner chose: the pod's native-sidecar annotation may override the cluster.
            let effective =
                native_sidecar_choice(native_sidecar_annotation(&pod), None, native).expect("annotation");
            let again = inject(&out, &server.expect("server"), effective)
                .expect("re-inject")
                .pod;
            assert_eq!(again, out, "{case}: re-injection is not idempotent");
            let expected = match case {
                "privileged-port" => "files",
                "guard-port" | "guard-port-unnamed" => "unifi",
                _ => "weather",
            };
            assert_eq!(guarded_by(&out).as_deref(), Some(expected), "{case}");
            assert_eq!(guarded_by(&pod), None, "{case}");
            // Stripping gives back the original.
            assert_eq!(strip(&out), pod, "{case}: strip(inject(pod)) != pod");
            check_restricted(&out, case);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn inject_status(pod: &Pod) -> Option<InjectionStatus> {
    InjectionStatus::of(pod).and_then(Result::ok)
}

/// The Pod Security "restricted" rules that concern an injected container (the integration test also runs the
/// API server's own PodSecurity admission on an injected pod).
fn check_restricted(pod: &Pod, case: &str) {
    let spec = pod.spec.as_ref().expect("spec");
    let guard: &Container = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == SIDECAR_NAME)
        .expect("guard container");
    let sc = guard.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_non_root, Some(true), "{case}");
    assert!(sc.run_as_user.is_some_and(|u| u != 0), "{case}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{case}");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{case}");
    assert_ne!(sc.privileged, Some(true), "{case}");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{case}");
    assert!(
        caps.add.iter().flatten().all(|c| c == "NET_BIND_SERVICE"),
        "{case}"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{case}"
    );
    assert!(
        guard.ports.iter().flatten().all(|p| p.host_port.is_none()),
        "{case}"
    );
    // No subPath: kubelet's ConfigMap updates must reach the guard.
    assert!(
        guard.volume_mounts.iter().flatten().all(|m| m.sub_path.is_none()),
        "{case}"
    );
}

#[test]
fn native_sidecar_shape() {
    let pod: Pod = serde_yaml::from_str(include_str!("golden/fastmcp-deployment.pod.yaml")).expect("pod");
    let InjectionPlan::Inject(i) = plan_for(&pod, true) else {
        panic!("not injected")
    };
    let spec = i.pod.spec.as_ref().expect("spec");
    let guard = spec
        .init_containers
        .as_ref()
        .and_then(|c| c.last())
        .expect("init container");
    assert_eq!(guard.name, SIDECAR_NAME);
    assert_eq!(guard.restart_policy.as_deref(), Some("Always"));
    let args = guard.args.clone().unwrap_or_default();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(arg("--listen").as_deref(), Some("[$(POD_IPS)]:8000"));
    assert_eq!(arg("--upstream").as_deref(), Some("http://127.0.0.1:8000"));
    assert_eq!(arg("--config").as_deref(), Some("/etc/mcp-guard/guard.json"));
    // On the pod IP, whichever its family (kubelet probes the pod IP; `0.0.0.0` would be IPv4 only).
    assert_eq!(arg("--admin-listen").as_deref(), Some("[$(POD_IP)]:15081"));
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == CONFIG_VOLUME_NAME)
        .expect("volume");
    assert_eq!(
        vol.config_map.as_ref().map(|c| c.name.as_str()),
        Some("weather-mcp-guard")
    );
    let ann = i.pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(
        ann.get(DEFAULT_CONTAINER_ANNOTATION).map(String::as_str),
        Some("server")
    );
    assert_eq!(i.status.init_containers, vec![SIDECAR_NAME.to_string()]);
}

#[test]
fn skip_reasons_are_checked_in_order() {
    let mut pod: Pod = serde_yaml::from_str(include_str!("golden/fastmcp-deployment.pod.yaml")).expect("pod");
    pod.spec.as_mut().expect("spec").host_network = Some(true);
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_INJECT_LABEL.into(), "false".into());
    let disabled = BTreeMap::from([(NAMESPACE_INJECTION_LABEL.to_string(), "disabled".to_string())]);
    let none = BTreeMap::new();
    let run = |pod: &Pod, ns: &str, labels: &BTreeMap<String, String>| {
        plan(&InjectionInput {
            pod,
            namespace: ns,
            namespace_labels: labels,
            servers: &servers(),
            native_sidecars: true,
            excluded_namespaces: &["mcp-guard-system".to_string()],
        })
    };
    assert_eq!(
        run(&pod, "team-a", &disabled),
        InjectionPlan::Skip(SkipReason::HostNetwork)
    );
    pod.spec.as_mut().expect("spec").host_network = None;
    assert_eq!(
        run(&pod, "kube-system", &enabled()),
        InjectionPlan::Skip(SkipReason::ProtectedNamespace)
    );
    assert_eq!(
        run(&pod, "mcp-guard-system", &enabled()),
        InjectionPlan::Skip(SkipReason::ProtectedNamespace)
    );
    assert_eq!(
        run(&pod, "team-a", &disabled),
        InjectionPlan::Skip(SkipReason::NamespaceOptedOut)
    );
    assert_eq!(
        run(&pod, "team-a", &none),
        InjectionPlan::Skip(SkipReason::NamespaceNotOptedIn)
    );
    assert_eq!(
        run(&pod, "team-a", &enabled()),
        InjectionPlan::Skip(SkipReason::PodOptedOut)
    );
}

#[test]
fn overlapping_servers_deny_the_pod() {
    let pod: Pod = serde_yaml::from_str(include_str!("golden/fastmcp-deployment.pod.yaml")).expect("pod");
    let mut both = servers();
    both.push(GuardedServer {
        name: "weather-2".into(),
        ..server("x", "weather", 9000)
    });
    let p = plan(&InjectionInput {
        pod: &pod,
        namespace: "team-a",
        namespace_labels: &enabled(),
        servers: &both,
        native_sidecars: true,
        excluded_namespaces: &[],
    });
    let InjectionPlan::Deny(msg) = p else {
        panic!("expected a denial, got {p:?}")
    };
    assert!(
        msg.contains("\"weather\"") && msg.contains("\"weather-2\""),
        "{msg}"
    );
}

#[test]
fn stale_annotation_is_stripped_and_reinjected() {
    let pod: Pod = serde_yaml::from_str(include_str!("golden/fastmcp-deployment.pod.yaml")).expect("pod");
    let injected = admit(&pod, true);
    // A copy of the pod whose guard container was removed by hand but whose annotation survived.
    let mut broken = injected.clone();
    broken.spec.as_mut().expect("spec").init_containers = None;
    assert_eq!(admit(&broken, true), injected);
}

#[test]
fn hand_made_container_named_mcp_guard_is_refused() {
    let mut pod: Pod = serde_yaml::from_str(include_str!("golden/fastmcp-deployment.pod.yaml")).expect("pod");
    pod.spec.as_mut().expect("spec").containers.push(Container {
        name: SIDECAR_NAME.into(),
        ..Default::default()
    });
    assert!(matches!(plan_for(&pod, true), InjectionPlan::Deny(m) if m.contains("mcp-guard")));
}

#[test]
fn native_sidecar_versions() {
    assert!(supports_native_sidecars("1", "29"));
    assert!(supports_native_sidecars("1", "34+"));
    assert!(!supports_native_sidecars("1", "28"));
    assert!(!supports_native_sidecars("", ""));
}

fn mcps(name: &str, labels: &[(&str, &str)], port: i32) -> MCPServer {
    let mut s = MCPServer::new(
        name,
        MCPServerSpec {
            selector: LabelSelector {
                match_labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            port,
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("team-a".into());
    s
}

#[test]
fn mcpserver_check_names_the_field() {
    let mut bad = mcps("weather", &[("app", "weather")], 8000);
    bad.spec.hosts = vec!["mcp.example.com:99999".into()];
    let v = check_mcpserver(&bad, &McpServerContext::default());
    assert!(v.errors.iter().any(|e| e.starts_with("spec.hosts[0]")), "{v:?}");
}

#[test]
fn mcpserver_overlap_is_an_error() {
    let a = mcps("a", &[("app", "weather")], 8000);
    let same = mcps("b", &[("app", "weather")], 8000);
    let v = check_mcpserver(
        &same,
        &McpServerContext {
            others: std::slice::from_ref(&a),
            ..Default::default()
        },
    );
    assert!(
        v.errors
            .iter()
            .any(|e| e.contains("same selector as MCPServer \"a\"")),
        "{v:?}"
    );

    let wider = mcps("c", &[("tier", "mcp")], 8000);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "weather-1", "labels": {"app": "weather", "tier": "mcp"}},
        "spec": {"containers": [{"name": "server"}]}
    }))
    .expect("pod");
    let v = check_mcpserver(
        &wider,
        &McpServerContext {
            others: std::slice::from_ref(&a),
            selected_pods: std::slice::from_ref(&pod),
            ..Default::default()
        },
    );
    assert!(
        v.errors
            .iter()
            .any(|e| e.contains("pod \"weather-1\"") && e.contains("\"a\"")),
        "{v:?}"
    );

    // Updating an MCPServer does not overlap with itself.
    let v = check_mcpserver(
        &a,
        &McpServerContext {
            others: std::slice::from_ref(&a),
            ..Default::default()
        },
    );
    assert!(v.errors.is_empty(), "{v:?}");
}

#[test]
fn mcpserver_warnings() {
    let a = mcps("a", &[("app", "weather")], 8000);
    let labels = BTreeMap::new();
    let v = check_mcpserver(
        &a,
        &McpServerContext {
            policy_exists: Some(false),
            namespace_labels: Some(&labels),
            ..Default::default()
        },
    );
    assert!(v.errors.is_empty());
    assert_eq!(v.warnings.len(), 2, "{v:?}");
}

mod tls_files {
    use super::super::tls::CertStore;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![cn.to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn validates_and_reloads() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c1, k1) = pair("one.test");
        let (c2, k2) = pair("two.test");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");

        // A certificate with somebody else's key is refused at start-up.
        std::fs::write(&cert, &c1).expect("w");
        std::fs::write(&key, &k2).expect("w");
        let err = CertStore::load(&cert, &key).expect_err("mismatch must fail");
        assert!(err.to_string().contains("do not belong together"), "{err}");
        std::fs::write(&key, "not a key").expect("w");
        assert!(CertStore::load(&cert, &key).is_err());

        std::fs::write(&key, &k1).expect("w");
        let store = CertStore::load(&cert, &key).expect("load");
        let first = store.current();
        assert!(!store.reload_if_changed().expect("unchanged"));

        // Half-written rotation (new cert, old key): keep serving the old pair.
        std::fs::write(&cert, &c2).expect("w");
        assert!(store.reload_if_changed().is_err());
        assert!(std::sync::Arc::ptr_eq(&first, &store.current()));

        std::fs::write(&key, &k2).expect("w");
        assert!(store.reload_if_changed().expect("reload"));
        assert!(!std::sync::Arc::ptr_eq(&first, &store.current()));
    }

    /// Served certificate over a real handshake, ALPN h2, and a kubelet-style Secret rotation (the `..data`
    /// symlink is swapped to a new directory) picked up without restarting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handshake_serves_the_current_pair_with_alpn_h2() {
        use std::sync::Arc;

        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName};

        let dir = tempfile::tempdir().expect("tmp");
        let secret = dir.path();
        let write_version = |name: &str, cert: &str, key: &str| {
            let v = secret.join(name);
            std::fs::create_dir(&v).expect("mkdir");
            std::fs::write(v.join("tls.crt"), cert).expect("w");
            std::fs::write(v.join("tls.key"), key).expect("w");
            let tmp = secret.join("..data_tmp");
            std::os::unix::fs::symlink(name, &tmp).expect("symlink");
            std::fs::rename(&tmp, secret.join("..data")).expect("swap");
        };
        let (c1, k1) = pair("localhost");
        let (c2, k2) = pair("localhost");
        write_version("..v1", &c1, &k1);
        std::os::unix::fs::symlink("..data/tls.crt", secret.join("tls.crt")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.key", secret.join("tls.key")).expect("symlink");

        let store = CertStore::load(&secret.join("tls.crt"), &secret.join("tls.key")).expect("load");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(store.server_config().expect("config")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });

        let handshake = |trust: String| async move {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(trust.as_bytes()).expect("pem"))
                .expect("root");
            let mut config = rustls::ClientConfig::builder_with_provider(super::super::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("localhost").expect("name");
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        };

        assert_eq!(
            handshake(c1.clone()).await.expect("v1 handshake"),
            Some(b"h2".to_vec())
        );
        assert!(handshake(c2.clone()).await.is_err(), "v2 is not served yet");

        write_version("..v2", &c2, &k2);
        assert!(
            store.reload_if_changed().expect("reload"),
            "the symlink swap is seen"
        );
        assert_eq!(handshake(c2).await.expect("v2 handshake"), Some(b"h2".to_vec()));
        assert!(handshake(c1).await.is_err(), "v1 is no longer served");
    }
}

fn guard_args(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref().expect("spec");
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == SIDECAR_NAME)
        .and_then(|c| c.args.clone())
        .expect("guard args")
}

fn arg_of(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[test]
fn guard_port_layout_takes_over_the_port_name() {
    let pod: Pod = serde_yaml::from_str(include_str!("golden/guard-port.pod.yaml")).expect("pod");
    let out = admit(&pod, true);
    let args = guard_args(&out);
    assert_eq!(arg_of(&args, "--listen").as_deref(), Some("[$(POD_IPS)]:15080"));
    // Loopback inside the pod's network namespace: the app bound 0.0.0.0:8080 answers there too.
    assert_eq!(
        arg_of(&args, "--upstream").as_deref(),
        Some("http://127.0.0.1:8080")
    );
    let spec = out.spec.as_ref().expect("spec");
    let guard = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == SIDECAR_NAME)
        .expect("guard");
    let guard_ports: Vec<(Option<&str>, i32)> = guard
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(
        guard_ports,
        vec![(Some("http"), 15080), (Some(ADMIN_PORT_NAME), 15081)]
    );
    let app = &spec.containers[0];
    let app_ports: Vec<(Option<&str>, i32)> = app
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(
        app_ports,
        vec![(Some(UNGUARDED_PORT_NAME), 8080), (Some("metrics"), 9090)]
    );
    let http_port = |p: &Option<Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| h.port.clone())
    };
    assert_eq!(http_port(&app.readiness_probe), Some(IntOrString::Int(15080)));
    assert_eq!(http_port(&app.startup_probe), Some(IntOrString::Int(15080)));
    let tcp = app
        .liveness_probe
        .as_ref()
        .and_then(|p| p.tcp_socket.as_ref())
        .map(|t| t.port.clone());
    assert_eq!(
        tcp,
        Some(IntOrString::Int(8080)),
        "a named TCP probe must keep resolving after the rename"
    );
    // Another container's probe on another port is left alone.
    assert_eq!(
        http_port(&spec.containers[1].readiness_probe),
        Some(IntOrString::Int(9090))
    );
}

#[test]
fn guard_port_layout_without_a_port_name_and_with_clashes() {
    let pod: Pod = serde_yaml::from_str(include_str!("golden/guard-port-unnamed.pod.yaml")).expect("pod");
    let out = admit(&pod, true);
    let spec = out.spec.as_ref().expect("spec");
    // The annotation chose an ordinary container although the cluster runs native sidecars.
    assert!(spec.init_containers.is_none());
    let guard = spec
        .containers
        .iter()
        .find(|c| c.name == SIDECAR_NAME)
        .expect("guard");
    assert_eq!(
        guard
            .ports
            .iter()
            .flatten()
            .next()
            .map(|p| (p.name.as_deref(), p.container_port)),
        Some((Some(GUARD_PORT_NAME), 15080))
    );

    // The guard's port already taken, or equal to the app's: denied with the field to change.
    let mut taken = pod.clone();
    taken.spec.as_mut().expect("spec").containers[0].ports = Some(vec![ContainerPort {
        container_port: 15080,
        ..Default::default()
    }]);
    assert!(matches!(plan_for(&taken, true), InjectionPlan::Deny(m) if m.contains("spec.traffic.guardPort")));
    let same = [GuardedServer {
        layout: Layout::GuardPort { guard_port: 8080 },
        ..server("unifi", "unifi", 8080)
    }];
    let p = plan(&InjectionInput {
        pod: &pod,
        namespace: "team-a",
        namespace_labels: &enabled(),
        servers: &same,
        native_sidecars: true,
        excluded_namespaces: &[],
    });
    assert!(matches!(p, InjectionPlan::Deny(m) if m.contains("server's own port")));
}

#[test]
fn native_sidecar_choice_annotation_then_policy_then_cluster() {
    // (annotation, policy, cluster) -> native
    let table: &[(Option<&str>, Option<bool>, bool, bool)] = &[
        (None, None, true, true),
        (None, None, false, false),
        (None, Some(false), true, false),
        (None, Some(true), false, true),
        (Some("false"), Some(true), true, false),
        (Some("true"), Some(false), false, true),
    ];
    for &(annotation, policy, cluster, want) in table {
        assert_eq!(
            native_sidecar_choice(annotation, policy, cluster),
            Ok(want),
            "{annotation:?} {policy:?} {cluster}"
        );
    }
    let err = native_sidecar_choice(Some("yes"), None, true).expect_err("bad value");
    assert!(
        err.contains(NATIVE_SIDECAR_ANNOTATION) && err.contains("\"false\""),
        "{err}"
    );

    // Through the planner: a policy's Never wins over the cluster, and a bad annotation denies the pod.
    let mut pod: Pod = serde_yaml::from_str(include_str!("golden/fastmcp-deployment.pod.yaml")).expect("pod");
    let never = [GuardedServer {
        native_sidecars: Some(false),
        ..server("weather", "weather", 8000)
    }];
    let run = |pod: &Pod| {
        plan(&InjectionInput {
            pod,
            namespace: "team-a",
            namespace_labels: &enabled(),
            servers: &never,
            native_sidecars: true,
            excluded_namespaces: &[],
        })
    };
    let InjectionPlan::Inject(i) = run(&pod) else {
        panic!("not injected")
    };
    assert_eq!(i.status.containers, vec![SIDECAR_NAME.to_string()]);
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(NATIVE_SIDECAR_ANNOTATION.into(), "maybe".into());
    assert!(matches!(run(&pod), InjectionPlan::Deny(m) if m.contains(NATIVE_SIDECAR_ANNOTATION)));
}

#[test]
fn kubelet_versions_decide_native_sidecars() {
    assert!(kubelets_support_native_sidecars(["v1.34.4", "v1.29.0-eks-1"]));
    assert!(kubelets_support_native_sidecars(std::iter::empty::<&str>()));
    // One node still on 1.28 during an upgrade: ordinary containers for every pod.
    assert!(!kubelets_support_native_sidecars(["v1.34.4", "v1.28.9"]));
    // Unreadable counts as too old.
    assert!(!kubelets_support_native_sidecars(["v1.34.4", ""]));
    assert!(!kubelets_support_native_sidecars(["garbage"]));
}
