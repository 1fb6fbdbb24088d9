//! The webhook's TLS: certificate and key from files (a mounted Secret), validated at start-up and reloaded when
//! the files change (kubelet swaps the Secret volume's `..data` symlink), without a restart and without ever
//! dropping the last good pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::metrics::WebhookMetrics;

/// How often the certificate files are re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: invalid PEM certificate: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path}: no usable PEM private key: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("certificate {cert} and key {key} do not belong together: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The ring provider, explicitly: never depends on (or clashes with) a process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its private key (PEM).
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        path: cert_path.to_path_buf(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::Read {
        path: key_path.to_path_buf(),
        source,
    })?;
    certified_key_from_pem(&cert_pem, &key_pem, cert_path, key_path)
}

fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Serves the current certificate; [`CertStore::reload_if_changed`] swaps it.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Vec<u8>)>,
}

impl CertStore {
    /// Loads and validates the pair; an error here should stop start-up.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(cert_path, key_path)?;
        let fingerprint = read_both(cert_path, key_path).unwrap_or_default();
        Ok(Arc::new(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((Arc::new(key), fingerprint)),
        }))
    }

    /// The certificate now being served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Re-reads the files; swaps in the new pair when they changed and are valid. `Ok(true)` = swapped.
    /// An invalid new pair is an error and the old one stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let bytes = read_both(&self.cert_path, &self.key_path)?;
        let unchanged = match self.current.read() {
            Ok(g) => g.1 == bytes,
            Err(p) => p.into_inner().1 == bytes,
        };
        if unchanged {
            return Ok(false);
        }
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        // Re-read: only record what was actually parsed (the files may be mid-swap).
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = (Arc::new(key), bytes);
        Ok(true)
    }

    /// Polls the files every `interval` until the process ends.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        metrics: WebhookMetrics,
    ) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = Arc::clone(&store);
                match tokio::task::spawn_blocking(move || s.reload_if_changed()).await {
                    Ok(Ok(true)) => {
                        metrics.tls_reload(true);
                        tracing::info!(cert = %store.cert_path.display(), "webhook certificate reloaded");
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        metrics.tls_reload(false);
                        tracing::warn!(error = %e, "webhook certificate changed but is not usable; keeping the old one");
                    }
                    Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
                }
            }
        })
    }

    /// A rustls server config that asks this store for the certificate on every handshake, with ALPN
    /// `h2`, `http/1.1`.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn read_both(cert: &Path, key: &Path) -> Result<Vec<u8>, TlsError> {
    let mut bytes = std::fs::read(cert).map_err(|source| TlsError::Read {
        path: cert.to_path_buf(),
        source,
    })?;
    bytes.extend(std::fs::read(key).map_err(|source| TlsError::Read {
        path: key.to_path_buf(),
        source,
    })?);
    Ok(bytes)
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}
