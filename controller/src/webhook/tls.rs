//! The webhook's TLS server configuration, and a certificate resolver that follows the
//! PEM files on disk so a rotated certificate is served without a restart.
//!
//! Each handshake `stat`s the two files (two syscalls; the API server's calls are few
//! and its connections long-lived) and re-reads them only when one changed: inode,
//! size or modification time. The stamp is taken *before* reading, so a write that
//! lands during a read is seen by the next handshake. A pair that does not load (a
//! certificate written before its key, say) is logged and the last good pair stays in
//! force; the write that completes the pair changes the stamp again and is picked up.
//! Kubernetes updates a mounted Secret by swapping a symlink, which changes the inode
//! the paths resolve to.

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

/// Why a certificate and key pair does not load, naming the flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPair {
    #[error("cannot read --{flag} {path}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --{flag} {path}: {message}")]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// The aws-lc-rs provider, passed explicitly: a process default may not be installed,
/// and another crate installing a different one must not change this server.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a PEM certificate chain and its (PKCS#8, SEC1 or PKCS#1) key.
pub fn load(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, InvalidPair> {
    let read = |flag: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| InvalidPair::Read {
            flag,
            path: path.to_path_buf(),
            source,
        })
    };
    let invalid = |flag: &'static str, path: &Path, message: String| InvalidPair::Invalid {
        flag,
        path: path.to_path_buf(),
        message,
    };
    let cert_pem = read("webhook-cert", cert)?;
    let key_pem = read("webhook-key", key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("webhook-cert", cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("webhook-cert", cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid("webhook-key", key, format!("no private key: {e}")))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        invalid(
            "webhook-key",
            key,
            format!("{e} (is it the certificate's key?)"),
        )
    })
}

/// A TLS 1.2/1.3 server configuration offering HTTP/2 and HTTP/1.1 (the API server
/// uses either), its certificate from `resolver`.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadingCert>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the pair on disk, re-read when it changes.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The files as they were when last read, successfully or not.
    stamp: Option<Stamp>,
    current: Arc<CertifiedKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    cert: FileStamp,
    key: FileStamp,
}

/// What tells a file changed: its modification time, length and inode (a Secret or
/// ConfigMap volume swaps a symlink to a new file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

// === impl ReloadingCert ===

impl ReloadingCert {
    /// Loads the pair now: a server never starts without a certificate.
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, InvalidPair> {
        let stamp = Stamp::of(&cert, &key);
        let current = Arc::new(load(&cert, &key, &provider)?);
        Ok(Self {
            cert,
            key,
            provider,
            state: Mutex::new(State { stamp, current }),
        })
    }

    /// The pair to serve, re-read first if a file changed since the last look.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamp = Stamp::of(&self.cert, &self.key);
        // The lock only guards a small read; a panic while holding it leaves a
        // consistent state (the old pair), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A file that cannot be stat'ed right now (mid-swap) is looked at again next time.
        if stamp.is_some() && stamp != state.stamp {
            state.stamp = stamp;
            match load(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                    state.current = Arc::new(pair);
                }
                Err(error) => tracing::warn!(
                    %error,
                    "cannot reload the webhook certificate; serving the previous one"
                ),
            }
        }
        Arc::clone(&state.current)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Option<Self> {
        Some(Self {
            cert: FileStamp::of(cert)?,
            key: FileStamp::of(key)?,
        })
    }
}

impl FileStamp {
    pub(crate) fn of(path: &Path) -> Option<Self> {
        // `metadata` follows symlinks, so a Secret volume's swapped `..data` link shows.
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}
