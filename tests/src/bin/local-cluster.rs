//! Starts the test control plane (etcd, kube-apiserver, kube-controller-manager) on 127.0.0.1 for humans and
//! scripts: `local-cluster [--node] [--kubeconfig-out PATH]`. With `--node` (root; `make images` first), the real
//! node too (containerd, kubelet, kube-scheduler, kube-proxy; pods on the harness's bridge) and the API server on
//! the node's address, so that pods reach it. It prints `ready <kubeconfig>` once everything is ready and runs
//! until interrupted (SIGINT/SIGTERM), then stops everything it started and tears the node down.

use anyhow::Context;
use testkit::cluster::Cluster;
use testkit::node::NodeCluster;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let mut with_node = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kubeconfig-out" => out = Some(args.next().context("--kubeconfig-out needs a path")?),
            "--node" => with_node = true,
            "-h" | "--help" => {
                println!("usage: local-cluster [--node] [--kubeconfig-out PATH]");
                return Ok(());
            }
            other => {
                anyhow::bail!(
                    "unknown argument {other:?}; usage: local-cluster [--node] [--kubeconfig-out PATH]"
                )
            }
        }
    }
    let (node, cluster) = if with_node {
        let NodeCluster { node, cluster } = NodeCluster::start().await?;
        (Some(node), cluster)
    } else {
        (None, Cluster::start().await?)
    };
    let kubeconfig = match out {
        Some(path) => {
            std::fs::copy(cluster.kubeconfig(), &path).with_context(|| format!("write {path}"))?;
            path
        }
        None => cluster.kubeconfig().display().to_string(),
    };
    println!("ready {kubeconfig}");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(node);
    drop(cluster);
    Ok(())
}
