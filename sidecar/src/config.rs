//! Where the live allowlist comes from: flags merged with the `--config` file, reloaded when the file changes.
//!
//! Merge rules: allowed hosts, origins and trusted proxies are the union of the flags and the file; `--mode` and
//! each limit flag (`--max-request-body-bytes`, the rate limits), when given, override the file's setting (a
//! `--rate-limit-method` flag overrides that method's entry only); `source` comes from the file. The `--auth-*`
//! flags add their resources, issuers and required scopes to the file's `auth` section (or make one).
//!
//! Reload: the file's content is read every poll interval through its path (so kubelet's ConfigMap update, an
//! atomic swap of the `..data` symlink, is seen like any edit). A changed content is parsed and compiled; a
//! valid one replaces the live allowlist in a `watch` channel, an invalid one is logged and counted and the last
//! good allowlist stays. Open connections are not touched: each request reads the live allowlist.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_guard_config::{Allowlist, AuthConfig, ConfigError, GuardConfig, IssuerConfig, Limits, Mode};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::metrics::Metrics;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error("{0}")]
    Flags(#[source] ConfigError),
    #[error("{0}")]
    AuthFlags(String),
}

/// The config given on the command line, and the file to merge it with.
#[derive(Clone, Debug, Default)]
pub struct ConfigSources {
    pub allow_hosts: Vec<String>,
    pub allow_origins: Vec<String>,
    pub mode: Option<Mode>,
    /// Limits given by flags (`--max-request-body-bytes`, the rate limits): each set one overrides the file's.
    pub limits: Limits,
    pub trusted_proxies: Vec<String>,
    /// `--cors`: answers CORS whatever the file says.
    pub cors: bool,
    /// The `--auth-*` flags, as an `auth` section (merged with the file's, see [`ConfigSources::merge`]).
    pub auth: Option<AuthConfig>,
    pub file: Option<PathBuf>,
}

impl ConfigSources {
    /// Merges the flags into a config read from the file (or an empty one).
    pub fn merge(&self, file: Option<GuardConfig>) -> GuardConfig {
        let mut config = file.unwrap_or_default();
        for h in &self.allow_hosts {
            if !config.allowed_hosts.contains(h) {
                config.allowed_hosts.push(h.clone());
            }
        }
        for o in &self.allow_origins {
            if !config.allowed_origins.contains(o) {
                config.allowed_origins.push(o.clone());
            }
        }
        if let Some(mode) = self.mode {
            config.mode = mode;
        }
        config.limits = self.limits.clone().or(&config.limits);
        config.cors |= self.cors;
        if let Some(flags) = &self.auth {
            config.auth = Some(merge_auth(config.auth.take(), flags));
        }
        for p in &self.trusted_proxies {
            if !config.trusted_proxies.contains(p) {
                config.trusted_proxies.push(p.clone());
            }
        }
        config
    }

    /// Reads the file (if any) and returns its raw content.
    pub fn read_file(&self) -> Result<Option<Vec<u8>>, LoadError> {
        match &self.file {
            None => Ok(None),
            Some(path) => std::fs::read(path).map(Some).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            }),
        }
    }

    /// Compiles the flags merged with the given file content.
    pub fn compile(&self, content: Option<&[u8]>) -> Result<Allowlist, LoadError> {
        let invalid = |source| match &self.file {
            Some(path) => LoadError::Invalid {
                path: path.clone(),
                source,
            },
            None => LoadError::Flags(source),
        };
        let file = content.map(GuardConfig::from_json).transpose().map_err(invalid)?;
        Allowlist::compile(&self.merge(file)).map_err(invalid)
    }

    /// Loads the config at start-up: any error here is fatal (never fail open).
    pub fn load(&self) -> Result<(Allowlist, Option<Vec<u8>>), LoadError> {
        let content = self.read_file()?;
        let allowlist = self.compile(content.as_deref())?;
        Ok((allowlist, content))
    }
}

/// The `--auth-*` flags over the file's `auth` section: resources, issuers (by `issuer`) and required scopes are
/// the union of both; `--auth-pass-token` turns passing the token on.
fn merge_auth(file: Option<AuthConfig>, flags: &AuthConfig) -> AuthConfig {
    let Some(mut auth) = file else {
        return flags.clone();
    };
    for r in &flags.resources {
        if !auth.resources.contains(r) {
            auth.resources.push(r.clone());
        }
    }
    for i in &flags.issuers {
        if !auth.issuers.iter().any(|f| f.issuer == i.issuer) {
            auth.issuers.push(i.clone());
        }
    }
    for s in &flags.required_scopes {
        if !auth.required_scopes.contains(s) {
            auth.required_scopes.push(s.clone());
        }
    }
    auth.pass_token |= flags.pass_token;
    auth
}

/// The `auth` section the `--auth-*` flags make, if they make one. The settings of issuers given by flags
/// (`--auth-audience`, `--auth-allow-http-issuer`, `--auth-ca-file`) without `--auth-issuer` are an error: they would
/// silently apply to nothing.
pub fn auth_from_flags(args: &crate::cli::Args) -> Result<Option<AuthConfig>, LoadError> {
    let list = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let issuers = list(&args.auth_issuers);
    let resources = list(&args.auth_resources);
    let audiences = list(&args.auth_audiences);
    let required_scopes = list(&args.auth_required_scopes);
    if issuers.is_empty() {
        let per_issuer = [
            (!audiences.is_empty(), "--auth-audience"),
            (args.auth_allow_http_issuer, "--auth-allow-http-issuer"),
            (args.auth_ca_file.is_some(), "--auth-ca-file"),
        ];
        if let Some((_, flag)) = per_issuer.iter().find(|(set, _)| *set) {
            return Err(LoadError::AuthFlags(format!(
                "{flag} applies to the issuers of --auth-issuer, and none is given: add --auth-issuer URL \
                 (issuers in the --config file set audiences, allowHttp and caFile themselves)"
            )));
        }
        if resources.is_empty() && required_scopes.is_empty() && !args.auth_pass_token {
            return Ok(None);
        }
        if args.config.is_none() {
            return Err(LoadError::AuthFlags(
                "--auth-resource, --auth-required-scope and --auth-pass-token need a token issuer: add \
                 --auth-issuer URL"
                    .into(),
            ));
        }
    }
    let issuers = issuers
        .into_iter()
        .map(|issuer| IssuerConfig {
            issuer,
            audiences: audiences.clone(),
            allow_http: args.auth_allow_http_issuer,
            ca_file: args.auth_ca_file.clone(),
            ..Default::default()
        })
        .collect();
    Ok(Some(AuthConfig {
        resources,
        issuers,
        required_scopes,
        pass_token: args.auth_pass_token,
        ..Default::default()
    }))
}

/// The live allowlist, shared by all connections; readers borrow it per request.
pub type LiveAllowlist = watch::Receiver<Arc<Allowlist>>;

/// Publishes gauges that describe the live allowlist.
pub fn describe(metrics: &Metrics, allowlist: &Allowlist) {
    metrics.allowed_hosts.set(allowlist.hosts().len() as i64);
    metrics.allowed_origins.set(allowlist.origins().len() as i64);
}

/// Polls the config file and publishes each new valid allowlist. Returns when every receiver is gone.
pub async fn watch_file(
    sources: ConfigSources,
    mut last: Option<Vec<u8>>,
    interval: Duration,
    tx: watch::Sender<Arc<Allowlist>>,
    metrics: Arc<Metrics>,
) {
    let Some(path) = sources.file.clone() else { return };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read_failing = false;
    // Whether `last` compiled: the start-up content did, or the guard would not have started.
    let mut last_valid = true;
    loop {
        ticker.tick().await;
        if tx.is_closed() {
            return;
        }
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(path)).await
        };
        let content = match read {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if !read_failing {
                    warn!(path = %path.display(), error = %e, "cannot read config file; keeping the last good config");
                    metrics.reload(false);
                    read_failing = true;
                }
                continue;
            }
            Err(_) => continue,
        };
        let recovered = std::mem::take(&mut read_failing);
        if last.as_deref() == Some(content.as_slice()) {
            if recovered {
                // The file is back as it was: the live config is again the one it holds (or, if that one was
                // invalid, still the last good one).
                info!(path = %path.display(), valid = last_valid, "config file readable again, unchanged");
                metrics.config_last_reload_ok.set(i64::from(last_valid));
            }
            continue;
        }
        match sources.compile(Some(&content)) {
            Ok(allowlist) => {
                info!(
                    path = %path.display(),
                    hosts = allowlist.hosts().len(),
                    origins = allowlist.origins().len(),
                    mode = ?allowlist.mode,
                    "config reloaded"
                );
                describe(&metrics, &allowlist);
                metrics.reload(true);
                tx.send_replace(Arc::new(allowlist));
                last_valid = true;
            }
            Err(e) => {
                error!(path = %path.display(), error = %e, "new config is invalid; keeping the last good config");
                metrics.reload(false);
                last_valid = false;
            }
        }
        last = Some(content);
    }
}

impl ConfigSources {
    /// The sources the command line names.
    pub fn from_args(args: &crate::cli::Args) -> Result<Self, LoadError> {
        Ok(ConfigSources {
            allow_hosts: args
                .allow_hosts
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            allow_origins: args
                .allow_origins
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            mode: args.mode.map(Into::into),
            limits: mcp_guard_config::Limits {
                max_request_body_bytes: args.max_request_body_bytes,
                per_client: args.rate_limit_per_client,
                per_method: args.rate_limit_methods.iter().cloned().collect(),
                per_tool: args.rate_limit_tools.iter().cloned().collect(),
                max_concurrent_requests_per_client: args.max_concurrent_requests_per_client,
                max_streams_per_client: args.max_streams_per_client,
                max_tracked_clients: args.max_tracked_clients,
            },
            trusted_proxies: args.trusted_proxies.clone(),
            cors: args.cors,
            auth: auth_from_flags(args)?,
            file: args.config.clone(),
        })
    }
}
