//! Starts the test control plane (etcd, kube-apiserver, kube-controller-manager) on 127.0.0.1 for humans and
//! scripts: `local-cluster [--kubeconfig-out PATH]`. It prints `ready <kubeconfig>` once the API server is ready
//! and runs until interrupted (SIGINT/SIGTERM), then stops everything it started.

use anyhow::Context;
use testkit::cluster::Cluster;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kubeconfig-out" => out = Some(args.next().context("--kubeconfig-out needs a path")?),
            "-h" | "--help" => {
                println!("usage: local-cluster [--kubeconfig-out PATH]");
                return Ok(());
            }
            other => {
                anyhow::bail!("unknown argument {other:?}; usage: local-cluster [--kubeconfig-out PATH]")
            }
        }
    }
    let cluster = Cluster::start().await?;
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
    drop(cluster);
    Ok(())
}
