//! The connection: a client from the kubeconfig (as kubectl resolves it) and the namespace to look in.

use std::path::Path;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub struct Kube {
    pub client: Client,
    pub namespace: String,
}

impl Kube {
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        namespace: Option<String>,
    ) -> anyhow::Result<Kube> {
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let config = match kubeconfig {
            Some(path) => {
                let file =
                    Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
                Config::from_custom_kubeconfig(file, &options).await?
            }
            None if context.is_some() => Config::from_kubeconfig(&options).await?,
            None => Config::infer().await?,
        };
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        Ok(Kube {
            client: Client::try_from(config)?,
            namespace,
        })
    }
}
