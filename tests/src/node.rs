//! A real node next to the test control plane: containerd + runc + the bridge/host-local/loopback CNI plugins
//! (Debian packages), and kubelet, kube-scheduler and kube-proxy (iptables mode) built by `make setup` from the
//! same pinned `k8s.io/kubernetes` module as the control plane. Pods get addresses on a bridge of the harness's
//! own ([`POD_SUBNET`]), reachable from this machine only; kube-proxy serves ClusterIPs to the host.
//!
//! Teardown leaves nothing behind: one script ([`TEARDOWN`], written into the node's directory) stops the pods'
//! containers and shims, unmounts what the node mounted, deletes the pods' network namespaces (and so their veths),
//! the bridge, the iptables chains kube-proxy and the CNI plugins added, the kubelet's cgroups, and restores the
//! sysctls they changed. `Drop` runs it, and a watchdog runs it when the test process dies however it ended.
//! When the node cannot start (a missing package or kernel feature), [`Node::start`] fails loudly.
//!
//! On request ([`NodeOptions::dual_stack`]) the node is dual-stack: the bridge also carries [`POD_SUBNET_V6`], a
//! unique local /64 of the harness's own, so every pod gets an IPv6 address beside its IPv4 one (IPv4 stays the
//! pods' primary `status.podIP`), and kube-proxy serves the IPv6 ClusterIPs of a cluster started with
//! [`Cluster::start_dual_stack_at`] too (ip6tables).
//!
//! On request ([`NodeOptions::network_policies`]) the node also runs a NetworkPolicy enforcer: kube-router's
//! network-policy controller alone (`--run-firewall`, no routing, no service proxy; built by `make setup`), which
//! writes iptables chains and ipsets from the cluster's NetworkPolicies. kube-network-policies (SIG Network's,
//! nftables + nfqueue) was the first choice, but this kernel has no nftables `queue` expression. kube-router is
//! served here only at v2.1.0, for which security flaws are reported; it runs only in this test, against a
//! throw-away cluster. Its chains and ipsets go with the teardown.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;
use nix::fcntl::{Flock, FlockArg};

use crate::cluster::{Cluster, SERVICE_CIDR, SERVICE_CIDR_V6};
use crate::process::{Proc, wait_for_tcp};
use crate::tools::{bin, cache_dir, free_port, images_dir};

/// The pods' subnet: an unusual private /24 on a bridge this harness creates, with [`NODE_IP`] as its gateway.
pub const POD_SUBNET: &str = "10.217.33.0/24";
/// The node's address (the bridge's): the kubelet refuses a loopback node IP.
pub const NODE_IP: &str = "10.217.33.1";
/// The pods' IPv6 subnet on a dual-stack node: a unique local /64 of the harness's own (this machine's own IPv6
/// network is `fd00::/64`), with [`NODE_IP_V6`] as its gateway.
pub const POD_SUBNET_V6: &str = "fd00:10:217:33::/64";
/// The node's IPv6 address on a dual-stack node (the bridge's).
pub const NODE_IP_V6: &str = "fd00:10:217:33::1";
/// The bridge the pods' veths join.
pub const BRIDGE: &str = "mcpg0";
/// The node's name.
pub const NODE_NAME: &str = "mcp-guard-node";
/// The pod sandbox image, built by `make images` (tools/pause).
pub const PAUSE_IMAGE: &str = "ghcr.io/mcp-guard/pause:0.2.0-dev";
/// The teardown script's name in the node's directory.
pub const TEARDOWN: &str = "teardown.sh";

/// Sysctls the kubelet, kube-proxy and the bridge plugin may change; recorded at start, restored at teardown.
const SYSCTLS: &[&str] = &[
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-ip6tables",
];

/// Held for a node's lifetime: the bridge, the subnet and the iptables chains are the machine's, so one node runs
/// at a time on it, whichever test binary or checkout starts it.
const MACHINE_LOCK: &str = "/run/mcp-guard-node.lock";

/// What a node runs besides the kubelet, the scheduler and kube-proxy.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeOptions {
    /// Enforce NetworkPolicies (kube-router's firewall).
    pub network_policies: bool,
    /// Give pods an IPv6 address too ([`POD_SUBNET_V6`]) and serve IPv6 ClusterIPs; pair it with a cluster
    /// started by [`Cluster::start_dual_stack_at`] (as [`NodeCluster::start_with`] does).
    pub dual_stack: bool,
}

/// A running node. Dropping it tears everything down.
pub struct Node {
    dir: PathBuf,
    socket: PathBuf,
    _enforcer: Option<Proc>,
    _kube_proxy: Proc,
    _kubelet: Proc,
    _scheduler: Proc,
    _containerd: Proc,
    stopped: bool,
    // Declared last: released only after the fields above have stopped their processes and teardown has run.
    machine: Option<MachineLock>,
}

/// The machine's node lock ([`MACHINE_LOCK`]). A test that compares the machine's state before and after a node
/// holds it around both, so that no other node (another test binary, another checkout) runs in between.
pub struct MachineLock(Flock<std::fs::File>);

impl MachineLock {
    /// Waits for (and takes) the lock; the kernel releases it when the holder exits, however it ends.
    pub fn acquire() -> anyhow::Result<MachineLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(MACHINE_LOCK)
            .with_context(|| format!("opening {MACHINE_LOCK}"))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(MachineLock)
            .map_err(|(_, e)| anyhow::anyhow!("flock {MACHINE_LOCK}: {e}"))
    }
}

impl Node {
    /// Starts containerd, the kubelet, kube-scheduler and kube-proxy against `cluster`, imports the images that
    /// `make images` built, and waits until the node is Ready.
    pub async fn start(cluster: &Cluster) -> anyhow::Result<Node> {
        Node::start_with(cluster, NodeOptions::default()).await
    }

    /// As [`Node::start`], with what `options` adds.
    pub async fn start_with(cluster: &Cluster, options: NodeOptions) -> anyhow::Result<Node> {
        Node::start_holding(cluster, MachineLock::acquire()?, options).await
    }

    /// As [`Node::start_with`], with the machine's lock already taken by the caller.
    pub async fn start_holding(
        cluster: &Cluster,
        machine: MachineLock,
        options: NodeOptions,
    ) -> anyhow::Result<Node> {
        create_bridge(options)?;
        Node::start_locked(cluster, machine, options).await
    }

    /// Tears the node down as dropping it does, and hands back the machine's lock, still held.
    pub fn stop(mut self) -> MachineLock {
        self.shut_down();
        self.machine
            .take()
            .expect("a running node holds the machine lock")
    }

    fn shut_down(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        // The node's agents first (so none re-adds what the script removes); containerd stays up until the
        // script has stopped the containers through it.
        self._kubelet.kill();
        self._kube_proxy.kill();
        self._scheduler.kill();
        if let Some(enforcer) = self._enforcer.as_mut() {
            enforcer.kill();
        }
        let teardown = self.dir.join(TEARDOWN);
        let status = Command::new("sh").arg(&teardown).status();
        if matches!(status, Ok(s) if s.success()) {
            let _ = std::fs::remove_file(&teardown);
        } else {
            eprintln!("node teardown failed ({status:?}); see {}", self.dir.display());
        }
        self._containerd.kill();
    }

    async fn start_locked(
        cluster: &Cluster,
        machine: MachineLock,
        options: NodeOptions,
    ) -> anyhow::Result<Node> {
        let started = Instant::now();
        let dir = cluster.dir().join("node");
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("containerd.sock");
        write_teardown(&dir, &socket)?;
        watch_parent_and_teardown(&dir, &machine)?;

        let containerd = start_containerd(&dir, &socket, options)?;
        import_images(&socket)?;
        let kubelet = start_kubelet(&dir, &socket, cluster, options)?;
        let scheduler = start_scheduler(cluster)?;
        let kube_proxy = start_kube_proxy(&dir, cluster, options)?;
        let enforcer = if options.network_policies {
            Some(start_enforcer(cluster)?)
        } else {
            None
        };
        let mut node = Node {
            dir,
            socket,
            _enforcer: enforcer,
            _kube_proxy: kube_proxy,
            _kubelet: kubelet,
            _scheduler: scheduler,
            _containerd: containerd,
            stopped: false,
            machine: Some(machine),
        };
        node.wait_ready(cluster, Duration::from_secs(120)).await?;
        eprintln!(
            "test node {NODE_NAME} Ready in {:.1}s (pods on {}, bridge {BRIDGE})",
            started.elapsed().as_secs_f64(),
            pod_subnets(options)
        );
        Ok(node)
    }

    /// The node's directory (kubelet root, containerd state, configs, the teardown script).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ctr -n k8s.io --address <socket>`; add arguments and run.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(["-n", "k8s.io"]);
        cmd
    }

    async fn wait_ready(&mut self, cluster: &Cluster, timeout: Duration) -> anyhow::Result<()> {
        let api = Api::<NodeObject>::all(cluster.client());
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not registered");
        while Instant::now() < deadline {
            for proc in [
                &mut self._containerd,
                &mut self._kubelet,
                &mut self._scheduler,
                &mut self._kube_proxy,
            ] {
                proc.ensure_running()?;
            }
            if let Some(node) = api.get_opt(NODE_NAME).await? {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready");
                match ready {
                    Some(c) if c.status == "True" => return Ok(()),
                    Some(c) => last = format!("Ready={}: {}", c.status, c.message.unwrap_or_default()),
                    None => last = "no Ready condition".into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!(
            "node {NODE_NAME} not Ready after {timeout:?}: {last}; kubelet log: {}",
            self._kubelet.log_path().display()
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A control plane whose API server listens on the node's address, so that pods reach it (in-cluster clients
/// such as the operator's Deployment), and the node. Field order is drop order: the node goes first.
pub struct NodeCluster {
    pub node: Node,
    pub cluster: Cluster,
}

impl NodeCluster {
    pub async fn start() -> anyhow::Result<NodeCluster> {
        NodeCluster::start_with(NodeOptions::default()).await
    }

    /// As [`NodeCluster::start`], with what `options` adds to the node (and, dual-stack, to the control plane).
    pub async fn start_with(options: NodeOptions) -> anyhow::Result<NodeCluster> {
        let machine = MachineLock::acquire()?;
        create_bridge(options)?;
        let cluster = if options.dual_stack {
            Cluster::start_dual_stack_at(NODE_IP).await
        } else {
            Cluster::start_at(NODE_IP).await
        };
        let cluster = match cluster {
            Ok(cluster) => cluster,
            Err(e) => {
                let _ = Command::new("ip").args(["link", "delete", BRIDGE]).output();
                return Err(e);
            }
        };
        let node = Node::start_locked(&cluster, machine, options).await?;
        Ok(NodeCluster { node, cluster })
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The teardown script: idempotent, run by `Drop` and by the watchdog. It records the state before the node
/// starts (sysctls, iptables chains, network namespaces) and undoes everything after.
fn write_teardown(dir: &Path, socket: &Path) -> anyhow::Result<()> {
    let mut sysctls = String::new();
    for key in SYSCTLS {
        if let Ok(out) = run(Command::new("sysctl").args(["-n", key])) {
            sysctls.push_str(&format!("sysctl -qw {key}={} || true\n", out.trim()));
        }
    }
    for iptables in ["iptables", "ip6tables"] {
        let chains =
            run(Command::new("sh").args(["-c", &format!("{iptables}-save | grep '^:' | cut -d' ' -f1")]))?;
        std::fs::write(dir.join(format!("chains.{iptables}.before")), chains)?;
    }
    let netns_before = run(Command::new("sh").args(["-c", "ls /run/netns 2>/dev/null || true"]))?;
    // ipsets (the enforcer's); empty where ipset is not installed.
    let ipsets_before = run(Command::new("sh").args(["-c", IPSETS]))?;
    std::fs::write(dir.join("ipsets.before"), ipsets_before)?;
    std::fs::write(dir.join("netns.before"), netns_before)?;
    let dir_s = dir.display();
    let sock = socket.display();
    let script = format!(
        r#"#!/bin/sh
# Tears down the test node in {dir_s}; safe to run more than once.
D={dir_s}
SOCK={sock}
exec >>"$D/teardown.log" 2>&1
# 1. Every container and sandbox, then the shims (found by the socket address only this node uses).
if [ -S "$SOCK" ]; then
  for t in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$t" 2>/dev/null
  done
  sleep 1
  for t in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$SOCK" -n k8s.io tasks rm -f "$t" 2>/dev/null
  done
fi
for p in $(pgrep -f "containerd-shim.*-address $SOCK" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
for p in $(pgrep -f "^containerd --config $D/containerd.toml" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
# 2. kube-proxy's rules (its own cleanup first, then the chains it leaves), and the CNI plugins', both families.
if [ -x "{kube_proxy}" ]; then "{kube_proxy}" --cleanup >/dev/null 2>&1; fi
for ipt in iptables ip6tables; do
  before="$D/chains.$ipt.before"
  for table in filter nat mangle; do
    chains=$($ipt-save -t $table 2>/dev/null | grep '^:' | cut -d' ' -f1 | tr -d ':' | grep -E '^(KUBE-|CNI-)')
    for c in $chains; do
      grep -qx ":$c" "$before" && continue
      $ipt-save -t $table | grep -E "^-A [A-Z0-9_-]+ .*-j $c( |$)" | sed 's/^-A/-D/' | while read -r rule; do
        eval $ipt -t $table $rule
      done
    done
    for c in $chains; do grep -qx ":$c" "$before" || $ipt -t $table -F "$c" 2>/dev/null; done
    for c in $chains; do grep -qx ":$c" "$before" || $ipt -t $table -X "$c" 2>/dev/null; done
  done
done
# 2b. ipsets that appeared while the node ran (the NetworkPolicy enforcer's), now that no rule uses them.
for s in $({ipsets}); do grep -qx "$s" "$D/ipsets.before" || ipset destroy "$s" 2>/dev/null; done
# 3. Mounts under the node's directory (pod volumes, rootfs, shm), deepest first, and the pods' netns.
for m in $(awk -v d="$D" 'index($5, d) == 1 {{ print $5 }}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null; done
for ns in $(ls /run/netns 2>/dev/null); do
  grep -qx "$ns" "$D/netns.before" || ip netns delete "$ns" 2>/dev/null
done
ip link delete {BRIDGE} 2>/dev/null
# 4. The kubelet's cgroups (deepest first).
for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {{}} \; 2>/dev/null
done
# 5. The sysctls, as they were.
{sysctls}exit 0
"#,
        kube_proxy = cache_dir().join("bin/kube-proxy").display(),
        ipsets = IPSETS,
    );
    std::fs::write(dir.join(TEARDOWN), script)?;
    Ok(())
}

/// Lists the ipsets by name (nothing when ipset is missing).
pub const IPSETS: &str = "ipset list -n 2>/dev/null || true";

/// Runs the teardown script once this test process is gone, however it ended (the processes themselves are
/// killed by their own watchdogs, see `process.rs`) and Drop has not run it. The watchdog inherits the machine
/// lock, so the next node starts only once this one's teardown is over, however the test process ended.
fn watch_parent_and_teardown(dir: &Path, machine: &MachineLock) -> anyhow::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let parent = std::process::id();
    let teardown = dir.join(TEARDOWN);
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; if [ -f {t} ]; then sh {t}; fi; rm -rf {d}",
        t = teardown.display(),
        d = dir.display()
    );
    // Only this spawn inherits the lock's descriptor: close-on-exec is off just around it.
    fcntl(&*machine.0, FcntlArg::F_SETFD(FdFlag::empty()))?;
    crate::process::spawn_watchdog(&script);
    fcntl(&*machine.0, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// The pods' bridge, made before the kubelet starts so that the node IPs exist (the bridge plugin reuses them).
fn create_bridge(options: NodeOptions) -> anyhow::Result<()> {
    let _ = Command::new("ip").args(["link", "delete", BRIDGE]).output();
    run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    run(Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE]))?;
    if options.dual_stack {
        // nodad: usable at once (the kubelet checks its node IPs exist); the address is this bridge's alone.
        run(Command::new("ip").args([
            "-6",
            "addr",
            "add",
            &format!("{NODE_IP_V6}/64"),
            "dev",
            BRIDGE,
            "nodad",
        ]))?;
    }
    run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    // ClusterIPs onto the bridge: until kube-proxy has the rules of a new Service, a connection to its ClusterIP
    // fails here (no neighbour answers) instead of leaving by the default route, where this machine's egress
    // gateway answers any HTTP request with an empty 404 that a test would take for the Service's answer.
    run(Command::new("ip").args(["route", "add", SERVICE_CIDR, "dev", BRIDGE]))?;
    if options.dual_stack {
        run(Command::new("ip").args(["-6", "route", "add", SERVICE_CIDR_V6, "dev", BRIDGE]))?;
    }
    Ok(())
}

/// The node's pod subnets, IPv4 first: kube-proxy's `clusterCIDR` and the log line.
fn pod_subnets(options: NodeOptions) -> String {
    if options.dual_stack {
        format!("{POD_SUBNET},{POD_SUBNET_V6}")
    } else {
        POD_SUBNET.to_string()
    }
}

fn start_containerd(dir: &Path, socket: &Path, options: NodeOptions) -> anyhow::Result<Proc> {
    let cni_conf = dir.join("cni");
    std::fs::create_dir_all(&cni_conf)?;
    // One host-local range per family, IPv4 first (the pods' primary address); each family routes only its
    // ClusterIPs through the node.
    let mut ranges = vec![serde_json::json!([{ "subnet": POD_SUBNET, "gateway": NODE_IP }])];
    let mut routes = vec![serde_json::json!({ "dst": SERVICE_CIDR })];
    if options.dual_stack {
        ranges.push(serde_json::json!([{ "subnet": POD_SUBNET_V6, "gateway": NODE_IP_V6 }]));
        routes.push(serde_json::json!({ "dst": SERVICE_CIDR_V6 }));
    }
    std::fs::write(
        cni_conf.join("10-mcp-guard.conflist"),
        serde_json::to_string_pretty(&serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "mcp-guard-test",
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": ranges,
                    // ClusterIPs through the node (kube-proxy's DNAT); no default route: pods reach the node,
                    // each other and Services, nothing beyond this machine.
                    "routes": routes,
                    "dataDir": dir.join("cni-ipam"),
                },
            }],
        }))?,
    )?;
    let config = dir.join("containerd.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: without this runc fails every sandbox ("can't get final child's PID").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"#,
            root = dir.join("containerd/root").display(),
            state = dir.join("containerd/state").display(),
            socket = socket.display(),
            cni = cni_conf.display(),
        ),
    )?;
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(&config);
    let mut proc = Proc::spawn("containerd", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        proc.ensure_running()?;
        if Instant::now() > deadline {
            bail!(
                "containerd made no socket in 30s; log: {}",
                proc.log_path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(proc)
}

/// The OCI archives `make images` wrote into the cache (`images/*.tar`), imported into the node's containerd.
fn import_images(socket: &Path) -> anyhow::Result<()> {
    let images = images_dir();
    for name in ["pause", "mcp-guard", "mcp-guard-operator", "example-server"] {
        let tar = images.join(format!("{name}.tar"));
        if !tar.exists() {
            bail!(
                "{} is missing: run `make images` (tools/images.sh) first",
                tar.display()
            );
        }
        run(Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", "k8s.io", "images", "import", "--no-unpack"])
            .arg(&tar))?;
    }
    Ok(())
}

fn start_kubelet(dir: &Path, socket: &Path, cluster: &Cluster, options: NodeOptions) -> anyhow::Result<Proc> {
    let config = dir.join("kubelet.yaml");
    let doc = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failSwapOn": false,
        "address": NODE_IP,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "authentication": { "anonymous": { "enabled": true }, "webhook": { "enabled": false } },
        "authorization": { "mode": "AlwaysAllow" },
        "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "podCIDR": POD_SUBNET,
        "maxPods": 30,
        // This machine's disk may be fuller than the defaults allow (nodefs.available<10%); the node must not
        // be under disk pressure because of its host. Per-volume limits (emptyDir sizeLimit) still apply.
        "evictionHard": { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%" },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        // ConfigMap volumes are rewritten on the pod's periodic sync (default 1m): the same path, sooner.
        "syncFrequency": "10s",
    });
    std::fs::write(&config, serde_yaml::to_string(&doc)?)?;
    let mut cmd = Command::new(bin("kubelet"));
    cmd.arg(format!("--config={}", config.display()))
        .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
        .arg(format!("--root-dir={}", dir.join("kubelet").display()))
        .arg(format!("--cert-dir={}", dir.join("kubelet-pki").display()))
        .arg(format!("--hostname-override={NODE_NAME}"))
        // Dual-stack, the node has an InternalIP per family; IPv4 first keeps it the pods' primary family.
        .arg(if options.dual_stack {
            format!("--node-ip={NODE_IP},{NODE_IP_V6}")
        } else {
            format!("--node-ip={NODE_IP}")
        })
        .arg("--v=1");
    Proc::spawn("kubelet", cmd)
}

fn start_scheduler(cluster: &Cluster) -> anyhow::Result<Proc> {
    let kc = cluster.kubeconfig().display().to_string();
    let mut cmd = Command::new(bin("kube-scheduler"));
    cmd.args([
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--secure-port={}", free_port()),
        "--leader-elect=false".to_string(),
    ]);
    Proc::spawn("kube-scheduler", cmd)
}

fn start_kube_proxy(dir: &Path, cluster: &Cluster, options: NodeOptions) -> anyhow::Result<Proc> {
    let config = dir.join("kube-proxy.yaml");
    let healthz = free_port();
    let doc = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": { "kubeconfig": cluster.kubeconfig() },
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        // Both families' subnets when dual-stack: kube-proxy then programs ip6tables too.
        "clusterCIDR": pod_subnets(options),
        "healthzBindAddress": format!("127.0.0.1:{healthz}"),
        "metricsBindAddress": format!("127.0.0.1:{}", free_port()),
        // Leave the machine's conntrack table size alone, and no NodePorts on 127.0.0.1 (route_localnet).
        "conntrack": { "maxPerCore": 0 },
        "iptables": { "localhostNodePorts": false },
        "nodePortAddresses": [format!("{NODE_IP}/32")],
    });
    std::fs::write(&config, serde_yaml::to_string(&doc)?)?;
    let mut cmd = Command::new(bin("kube-proxy"));
    cmd.arg(format!("--config={}", config.display()));
    let mut proc = Proc::spawn("kube-proxy", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while wait_for_tcp(([127, 0, 0, 1], healthz).into(), Duration::from_millis(250)).is_err() {
        proc.ensure_running()?;
        if Instant::now() > deadline {
            bail!(
                "kube-proxy not healthy after 60s; log: {}",
                proc.log_path().display()
            );
        }
    }
    Ok(proc)
}

/// Starts kube-router's network-policy controller for this node (with the admin kubeconfig, as a node agent's
/// DaemonSet would with its ServiceAccount) and waits until it has hooked its chain into FORWARD.
fn start_enforcer(cluster: &Cluster) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin("kube-router"));
    cmd.arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .args([
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            "--enable-cni=false",
            "--enable-ipv6=false",
            "--metrics-port=0",
        ])
        .arg(format!("--health-port={}", free_port()))
        .arg("--v=1");
    let mut proc = Proc::spawn("kube-router", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run(Command::new("iptables-save").args(["-t", "filter"]))?.contains("-j KUBE-ROUTER-FORWARD") {
        proc.ensure_running()?;
        if Instant::now() > deadline {
            bail!(
                "kube-router hooked no KUBE-ROUTER-FORWARD chain in 60s; log: {}",
                proc.log_path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(proc)
}
