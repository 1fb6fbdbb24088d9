//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager, built from the
//! official Go modules by `make setup`, started on 127.0.0.1 with their own CA, client-certificate
//! authentication and RBAC on. No scheduler and no kubelet: pods are created and stored, never run, unless a
//! test starts the real node next to it (`crate::node`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::sync::OnceCell;

use crate::process::{Proc, wait_for_tcp};
use crate::tools::{bin, free_port, workspace_root};

const FIELD_MANAGER: &str = "mcp-guard-tests";

/// The Services' ClusterIP range: an unusual one, so that nothing in the product may assume a default such as
/// 10.96.0.0/12; routed to the node from the pods (and only this range leaves the pods' subnet).
pub const SERVICE_CIDR: &str = "10.217.128.0/20";
/// The IPv6 ClusterIP range of a dual-stack cluster ([`Cluster::start_dual_stack_at`]): a unique local /112 of the
/// harness's own (this machine's own IPv6 network is `fd00::/64`), the second family after [`SERVICE_CIDR`].
pub const SERVICE_CIDR_V6: &str = "fd00:10:217:128::/112";
/// The `kubernetes` Service's ClusterIP: the range's first address.
const KUBERNETES_SERVICE_IP: &str = "10.217.128.1";

/// A running control plane. Dropping it stops the processes and removes its files.
pub struct Cluster {
    server_url: String,
    ca_pem: String,
    ca_key_pem: String,
    kubeconfig: PathBuf,
    config: Config,
    dir: tempfile::TempDir,
    // Field order is drop order: the controller-manager and API server stop before etcd.
    _controller_manager: Proc,
    _apiserver: Proc,
    _etcd: Proc,
}

impl Cluster {
    /// One control plane per test binary, started on first use and shared by its tests (give each test its own
    /// namespace). Its processes are killed when the test process exits.
    pub async fn shared() -> &'static Cluster {
        static SHARED: OnceCell<Cluster> = OnceCell::const_new();
        SHARED
            .get_or_try_init(Cluster::start)
            .await
            .expect("start the shared test control plane")
    }

    /// A dedicated control plane, torn down when dropped.
    pub async fn start() -> anyhow::Result<Cluster> {
        Cluster::start_at("127.0.0.1").await
    }

    /// A dedicated control plane whose API server listens on (and advertises) `address`, which must be an
    /// address of this machine: pods reach the `kubernetes` Service there (the real node's bridge address).
    pub async fn start_at(address: &str) -> anyhow::Result<Cluster> {
        Cluster::start_with(address, false).await
    }

    /// As [`Cluster::start_at`], with Services of both families: ClusterIPs from [`SERVICE_CIDR`] and
    /// [`SERVICE_CIDR_V6`] (IPv4 first, so a Service that asks for no family stays IPv4 as before).
    pub async fn start_dual_stack_at(address: &str) -> anyhow::Result<Cluster> {
        Cluster::start_with(address, true).await
    }

    async fn start_with(address: &str, dual_stack: bool) -> anyhow::Result<Cluster> {
        let service_cidrs = if dual_stack {
            format!("{SERVICE_CIDR},{SERVICE_CIDR_V6}")
        } else {
            SERVICE_CIDR.to_string()
        };
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("mcp-guard-cluster-").tempdir()?;
        let pki = Pki::generate(address)?;
        let files = pki.write(dir.path())?;

        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let mut etcd_cmd = Command::new(bin("etcd"));
        etcd_cmd.args([
            "--name=test".to_string(),
            format!("--data-dir={}", dir.path().join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-cluster=test=http://127.0.0.1:{etcd_peer_port}"),
            "--log-level=warn".to_string(),
            // Tests need no durability; fsync dominates etcd's latency on shared disks.
            "--unsafe-no-fsync=true".to_string(),
        ]);
        let mut etcd = Proc::spawn("etcd", etcd_cmd)?;
        wait_until_listening(&mut etcd, etcd_port, Duration::from_secs(30))?;

        let api_port = free_port();
        let mut api_cmd = Command::new(bin("kube-apiserver"));
        api_cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--bind-address={address}"),
            format!("--advertise-address={address}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.path().join("apiserver").display()),
            format!("--tls-cert-file={}", files.serving_cert.display()),
            format!("--tls-private-key-file={}", files.serving_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            "--authorization-mode=RBAC".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!("--service-account-key-file={}", files.sa_pub.display()),
            format!("--service-account-signing-key-file={}", files.sa_key.display()),
            format!("--service-cluster-ip-range={service_cidrs}"),
            "--allow-privileged=true".to_string(),
            // The test node registers its bridge address as InternalIP (kubectl logs and exec reach it there;
            // the default order would look its name up in DNS first).
            "--kubelet-preferred-address-types=InternalIP".to_string(),
            "--profiling=false".to_string(),
            "--v=0".to_string(),
        ]);
        let mut apiserver = Proc::spawn("kube-apiserver", api_cmd)?;
        let server_url = format!("https://{address}:{api_port}");

        let kubeconfig = dir.path().join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &server_url,
                &pki.ca_pem,
                &User::Cert {
                    cert: &pki.admin_cert,
                    key: &pki.admin_key,
                },
            ),
        )?;
        let config = config_from(&kubeconfig).await?;
        wait_until_ready(&mut apiserver, &config, Duration::from_secs(90)).await?;

        let mut cm_cmd = Command::new(bin("kube-controller-manager"));
        cm_cmd.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", free_port()),
            format!("--cert-dir={}", dir.path().join("controller-manager").display()),
            "--leader-elect=false".to_string(),
            "--use-service-account-credentials=false".to_string(),
            format!("--service-account-private-key-file={}", files.sa_key.display()),
            format!("--root-ca-file={}", files.ca_cert.display()),
            format!("--cluster-signing-cert-file={}", files.ca_cert.display()),
            format!("--cluster-signing-key-file={}", files.ca_key.display()),
            "--cluster-name=mcp-guard-test".to_string(),
            "--v=0".to_string(),
        ]);
        let controller_manager = Proc::spawn("kube-controller-manager", cm_cmd)?;
        remove_when_parent_exits(dir.path());

        let cluster = Cluster {
            server_url,
            ca_pem: pki.ca_pem.clone(),
            ca_key_pem: pki.ca_key_pem.clone(),
            kubeconfig,
            config,
            dir,
            _controller_manager: controller_manager,
            _apiserver: apiserver,
            _etcd: etcd,
        };
        eprintln!(
            "test control plane up at {} in {:.1}s (kubeconfig {})",
            cluster.server_url,
            started.elapsed().as_secs_f64(),
            cluster.kubeconfig.display()
        );
        Ok(cluster)
    }

    /// An admin client (group `system:masters`). Each call builds a new client, so that it belongs to the
    /// calling test's runtime.
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("build a kube client from the test kubeconfig")
    }

    /// The admin client's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Path of an admin kubeconfig, usable by kubectl, helm and the operator.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://<address>:<port>` (127.0.0.1 unless started with [`Cluster::start_at`]).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The cluster CA certificate (PEM); it signs the API server's serving certificate and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A directory that lives as long as the cluster, for test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kubectl --kubeconfig <admin>`; add arguments and run.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(bin("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Creates a namespace named `<prefix>-<n>` (unique within this test process) and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id() % 10_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }
        }))
        .expect("a valid namespace");
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// Applies every CRD in the repository's `crds/` and waits until each is established.
    pub async fn apply_crds(&self) -> anyhow::Result<()> {
        self.apply_crd_files(&workspace_root().join("crds")).await
    }

    /// Applies the real Gateway API CRDs (standard channel, the release `tools/gateway-api/go.mod` pins) that
    /// `make setup` copied into the cache.
    pub async fn apply_gateway_api_crds(&self) -> anyhow::Result<()> {
        let dir = crate::tools::cache_dir().join("gateway-api-crds");
        if !dir.exists() {
            bail!(
                "no Gateway API CRDs at {}: run `make setup` (tools/setup.sh) first",
                dir.display()
            );
        }
        self.apply_crd_files(&dir).await
    }

    /// Applies every CRD in the YAML files of `dir` and waits until each is established.
    pub async fn apply_crd_files(&self, dir: &Path) -> anyhow::Result<()> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            bail!("no CRDs in {}", dir.display());
        }
        for path in paths {
            let text = std::fs::read_to_string(&path)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_json::Value::deserialize(doc)?;
                if value.is_null() {
                    continue;
                }
                let crd: CustomResourceDefinition = serde_json::from_value(value)
                    .with_context(|| format!("{} holds a CustomResourceDefinition", path.display()))?;
                self.apply_crd(&crd).await?;
            }
        }
        Ok(())
    }

    /// Applies one CRD (server-side apply) and waits until it is established.
    pub async fn apply_crd(&self, crd: &CustomResourceDefinition) -> anyhow::Result<()> {
        let api = Api::<CustomResourceDefinition>::all(self.client());
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("apply CRD {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let current = api.get(&name).await?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not established after 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` (which must exist) with a bound
    /// token from the TokenRequest API: what a pod running as that ServiceAccount gets.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> anyhow::Result<PathBuf> {
        let api = Api::<ServiceAccount>::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("request a token for ServiceAccount {namespace}/{name}"))?
            .status
            .context("TokenRequest without status")?
            .token;
        let path = self.dir().join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.server_url, &self.ca_pem, &User::Token(&token)),
        )?;
        Ok(path)
    }

    /// A kubeconfig for a user with a client certificate for `user` in `groups`, signed by the cluster CA.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let (cert, key) = client_cert(&issuer, user, groups)?;
        let path = self.dir().join(format!("user-{user}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_yaml(
                &self.server_url,
                &self.ca_pem,
                &User::Cert {
                    cert: &cert,
                    key: &key,
                },
            ),
        )?;
        Ok(path)
    }
}

use serde::Deserialize as _;

/// Builds a kube client configuration from a kubeconfig file.
pub async fn config_from(kubeconfig: &Path) -> anyhow::Result<Config> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    Ok(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

fn wait_until_listening(proc: &mut Proc, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        proc.ensure_running()?;
        if wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_millis(250)).is_ok() {
            return Ok(());
        }
    }
    bail!(
        "{} does not listen on port {port} after {timeout:?}; log: {}",
        proc.name(),
        proc.log_path().display()
    )
}

async fn wait_until_ready(apiserver: &mut Proc, config: &Config, timeout: Duration) -> anyhow::Result<()> {
    let client = Client::try_from(config.clone())?;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        apiserver.ensure_running()?;
        let req = http::Request::get("/readyz").body(Vec::new())?;
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "kube-apiserver not ready after {timeout:?}: {last}; log: {}",
        apiserver.log_path().display()
    )
}

enum User<'a> {
    Cert { cert: &'a str, key: &'a str },
    Token(&'a str),
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &User) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match user {
        User::Cert { cert, key } => serde_json::json!({
            "client-certificate-data": b64(cert), "client-key-data": b64(key)
        }),
        User::Token(token) => serde_json::json!({ "token": token }),
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": { "server": server, "certificate-authority-data": b64(ca_pem) } }],
        "users": [{ "name": "test", "user": user }],
        "contexts": [{ "name": "test", "context": { "cluster": "test", "user": "test" } }],
        "current-context": "test",
    });
    serde_yaml::to_string(&doc).expect("a kubeconfig serialises")
}

/// The control plane's certificates and keys.
struct Pki {
    ca_pem: String,
    ca_key_pem: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    sa_key: String,
    sa_pub: String,
}

struct PkiFiles {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "mcp-guard test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn client_cert(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params.distinguished_name.push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A shared cluster lives in a static and is never dropped, so its directory (etcd's data, ~100 MiB) would stay
/// behind: a watchdog removes it once the test process is gone, after a node's teardown (its script lives there).
fn remove_when_parent_exits(dir: &Path) {
    let parent = std::process::id();
    let teardown = dir.join("node").join(crate::node::TEARDOWN);
    crate::process::spawn_watchdog(&format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
         while [ -f {t} ]; do sleep 1; done; rm -rf {d}",
        t = teardown.display(),
        d = dir.display()
    ));
}

impl Pki {
    fn generate(address: &str) -> anyhow::Result<Pki> {
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params().self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params(), ca_key);

        let mut serving = CertificateParams::new(vec![
            address.to_string(),
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
            KUBERNETES_SERVICE_IP.to_string(),
        ])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let (admin_cert, admin_key) = client_cert(&issuer, "mcp-guard-test-admin", &["system:masters"])?;
        let sa_key = KeyPair::generate()?;
        Ok(Pki {
            ca_pem: ca_cert.pem(),
            ca_key_pem,
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert,
            admin_key,
            sa_key: sa_key.serialize_pem(),
            sa_pub: sa_key.public_key_pem(),
        })
    }

    fn write(&self, dir: &Path) -> anyhow::Result<PkiFiles> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        let write = |name: &str, content: &str| -> anyhow::Result<PathBuf> {
            let path = pki.join(name);
            std::fs::write(&path, content)?;
            Ok(path)
        };
        Ok(PkiFiles {
            ca_cert: write("ca.crt", &self.ca_pem)?,
            ca_key: write("ca.key", &self.ca_key_pem)?,
            serving_cert: write("apiserver.crt", &self.serving_cert)?,
            serving_key: write("apiserver.key", &self.serving_key)?,
            sa_key: write("sa.key", &self.sa_key)?,
            sa_pub: write("sa.pub", &self.sa_pub)?,
        })
    }
}
