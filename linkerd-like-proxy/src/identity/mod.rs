//! The proxy's identity client: obtains and renews the certificate that names this
//! proxy's workload, for the TLS layer to present to its peers.
//!
//! - **The key stays here.** An ECDSA P-256 key is generated in memory when the proxy
//!   starts and kept for the life of the process; only a CSR over it is sent (whose
//!   only SAN is the identity name). It is never written anywhere.
//! - **Nothing is taken on trust.** A returned certificate is used only if it chains
//!   to the configured trust anchors, is valid for our name for both client and
//!   server authentication, and certifies our key; anything else is a failure.
//! - **Renewal** happens at 70% of the remaining lifetime, clamped to
//!   `[MESH_PROXY_IDENTITY_MIN_REFRESH, MESH_PROXY_IDENTITY_MAX_REFRESH]`. A failure
//!   keeps the current certificate in use and retries with exponential backoff and
//!   jitter, within the same bounds.
//! - **Readiness**: the proxy is not ready until it holds its first certificate.
//!
//! The current [`Credentials`] are published through a `watch` channel: readers take
//! an `Arc` of the whole set (leaf, chain and key always match), and a renewal swaps
//! it without disturbing connections that hold the previous one.

use crate::{config::IdentityConfig, metrics::Metrics};
use mesh_api::identity::{identity_client::IdentityClient, CertifyRequest, CertifyResponse};
use rand::Rng;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, TrustAnchor, UnixTime};
use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::{sync::watch, task::AbortHandle};
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How long one certificate request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The fraction of the remaining lifetime after which a certificate is renewed.
const RENEW_AT: f64 = 0.7;

/// A certificate for this proxy's identity, with its chain and key.
pub struct Credentials {
    /// The identity name the certificate is for.
    pub name: Arc<str>,
    /// The leaf certificate, DER.
    pub leaf: CertificateDer<'static>,
    /// The certificates between the leaf and the trust anchors, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key, PKCS#8 DER.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The leaf's NotAfter.
    pub not_after: SystemTime,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The identity client: a task that keeps a current certificate, and its output.
pub struct Identity {
    name: Arc<str>,
    current: watch::Receiver<Option<Arc<Credentials>>>,
    task: AbortHandle,
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Identity {
    /// Starts the identity client if `MESH_PROXY_IDENTITY_ADDR` is set. It asks for a
    /// certificate at once; the channel connects lazily. Must be called within the
    /// runtime.
    pub(crate) fn new(
        config: Option<&IdentityConfig>,
        connect_timeout: Duration,
        metrics: Metrics,
    ) -> Option<Self> {
        let config = config?.clone();
        let endpoint = tonic::transport::Endpoint::from(config.addr.clone())
            .connect_timeout(connect_timeout)
            .timeout(REQUEST_TIMEOUT);
        let channel = match control_plane_tls(&config, &config.server_name) {
            Ok((tls, server)) => mesh_api::tls::connect_lazy(&endpoint, tls, server),
            Err(error) => {
                // The configuration was validated; this is not expected, and the
                // token is never sent in the clear instead.
                tracing::error!(%error, "identity off: cannot configure TLS to the identity service");
                return None;
            }
        };
        metrics.identity().enable();
        tracing::info!(identity = %config.name, service = %config.addr, service_name = %config.server_name, "identity on");
        let name: Arc<str> = config.name.as_str().into();
        let (tx, current) = watch::channel(None);
        let task = tokio::spawn(refresh(
            IdentityClient::new(channel),
            config,
            name.clone(),
            tx,
            metrics,
        ))
        .abort_handle();
        Some(Self {
            name,
            current,
            task,
        })
    }

    /// This proxy's identity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current certificate, once the first one was obtained.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.current.borrow().clone()
    }

    /// Whether a certificate is held.
    pub fn has_credentials(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// A receiver that sees every new certificate.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.current.clone()
    }
}

/// TLS to a control-plane service (identity, destination): TLS 1.3, verified against
/// the trust anchors for the service's identity `name`, no client certificate (there
/// is none yet the first time).
pub(crate) fn control_plane_tls(
    config: &IdentityConfig,
    name: &str,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for anchor in &config.trust_anchors {
        roots.add(anchor.clone()).map_err(|e| e.to_string())?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider().into())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let server = ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?}: {e}"))?;
    Ok((Arc::new(tls), server))
}

/// Why a certificate request failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot read the token file: {0}")]
    Token(std::io::Error),
    #[error("the token file is empty")]
    EmptyToken,
    #[error("identity service: {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("unusable certificate: {0}")]
    Invalid(String),
}

/// The key and the CSR over it, made once per process.
struct Key {
    pair: KeyPair,
    csr: Vec<u8>,
}

impl Key {
    fn generate(name: &str) -> Result<Self, String> {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::DnsName(
            name.to_string()
                .try_into()
                .map_err(|e| format!("{name:?} is not a DNS name: {e}"))?,
        )];
        let csr = params
            .serialize_request(&pair)
            .map_err(|e| format!("cannot build the CSR: {e}"))?
            .der()
            .to_vec();
        Ok(Self { pair, csr })
    }
}

/// Credentials for `name` signed by `ca` at `now`, for tests of the TLS layer.
#[cfg(test)]
pub(crate) fn test_credentials(
    ca: &mesh_controller::identity::Ca,
    name: &str,
    now: SystemTime,
) -> Credentials {
    let key = Key::generate(name).expect("a test key");
    let issued = ca.certify(name, &key.csr, now).expect("the CA signs");
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.leaf).expect("a certificate");
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(leaf.validity().not_after.timestamp().max(0) as u64);
    Credentials {
        name: name.into(),
        leaf: CertificateDer::from(issued.leaf),
        chain: issued.chain.into_iter().map(CertificateDer::from).collect(),
        key: PrivatePkcs8KeyDer::from(key.pair.serialize_der()),
        not_after,
    }
}

async fn refresh(
    client: IdentityClient<Channel>,
    config: IdentityConfig,
    name: Arc<str>,
    tx: watch::Sender<Option<Arc<Credentials>>>,
    metrics: Metrics,
) {
    let key = match Key::generate(&name) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            // Cannot happen with a validated name and a working RNG; stay unready
            // and say why rather than panic.
            tracing::error!(error = %e, "identity disabled");
            metrics.identity().failed();
            return;
        }
    };
    let anchors: Arc<[TrustAnchor<'static>]> = config
        .trust_anchors
        .iter()
        .filter_map(|a| {
            webpki::anchor_from_trusted_cert(a)
                .ok()
                .map(|t| t.to_owned())
        })
        .collect();
    let bounds = (config.min_refresh, config.max_refresh);
    let config = Arc::new(config);
    let request = {
        let name = name.clone();
        move || {
            let (mut client, config, name, key, anchors) = (
                client.clone(),
                config.clone(),
                name.clone(),
                key.clone(),
                anchors.clone(),
            );
            async move { certify(&mut client, &config, &name, &key, &anchors).await }
        }
    };
    refresh_loop(request, bounds, &name, &tx, &metrics).await;
}

/// Requests a certificate, publishes it, and sleeps until the next renewal or retry,
/// forever. `request` is one certificate request with its checks.
async fn refresh_loop<F, Fut>(
    mut request: F,
    (min, max): (Duration, Duration),
    name: &str,
    tx: &watch::Sender<Option<Arc<Credentials>>>,
    metrics: &Metrics,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Credentials, Error>>,
{
    let mut failures = 0u32;
    loop {
        let wait = match request().await {
            Ok(creds) => {
                failures = 0;
                let remaining = creds
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let wait = refresh_in(remaining, min, max);
                metrics.identity().refreshed(unix_secs(creds.not_after));
                tracing::info!(
                    identity = %name,
                    valid_for_s = remaining.as_secs(),
                    renew_in_ms = wait.as_millis() as u64,
                    "certificate obtained"
                );
                tx.send_replace(Some(Arc::new(creds)));
                wait
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics.identity().failed();
                let wait = backoff(failures, min, max, rand::thread_rng().gen());
                let held = tx.borrow().is_some();
                tracing::warn!(
                    identity = %name,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    keeping_current = held,
                    "certificate request failed"
                );
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One certificate request, and the checks of its answer.
async fn certify(
    client: &mut IdentityClient<Channel>,
    config: &IdentityConfig,
    name: &Arc<str>,
    key: &Key,
    anchors: &[TrustAnchor<'_>],
) -> Result<Credentials, Error> {
    let token = tokio::fs::read(&config.token_file)
        .await
        .map_err(Error::Token)?;
    let token = token.trim_ascii();
    if token.is_empty() {
        return Err(Error::EmptyToken);
    }
    let rsp = client
        .certify(CertifyRequest {
            identity: name.to_string(),
            token: token.to_vec(),
            certificate_signing_request: key.csr.clone(),
        })
        .await?
        .into_inner();
    let not_after =
        verify(&rsp, anchors, name, &key.pair, UnixTime::now()).map_err(Error::Invalid)?;
    Ok(Credentials {
        name: name.clone(),
        leaf: CertificateDer::from(rsp.leaf_certificate),
        chain: rsp
            .intermediate_certificates
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        key: PrivatePkcs8KeyDer::from(key.pair.serialize_der()),
        not_after,
    })
}

/// Checks that the response's leaf chains to `anchors` at `now`, is valid for `name`
/// as both a client and a server, and certifies `key`. Returns its NotAfter.
fn verify(
    rsp: &CertifyResponse,
    anchors: &[TrustAnchor<'_>],
    name: &str,
    key: &KeyPair,
    now: UnixTime,
) -> Result<SystemTime, String> {
    let leaf = CertificateDer::from(rsp.leaf_certificate.as_slice());
    let intermediates: Vec<_> = rsp
        .intermediate_certificates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("leaf: {e}"))?;
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            anchors,
            &intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| format!("does not chain to the trust anchors: {e}"))?;
    }
    let server_name = ServerName::try_from(name).map_err(|e| format!("{name:?}: {e}"))?;
    ee.verify_is_valid_for_subject_name(&server_name)
        .map_err(|e| format!("not for {name}: {e}"))?;
    let (_, cert) =
        X509Certificate::from_der(&rsp.leaf_certificate).map_err(|e| format!("leaf: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("the leaf certifies another key".into());
    }
    let not_after = cert.validity().not_after.timestamp();
    let not_after = u64::try_from(not_after)
        .ok()
        .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .ok_or_else(|| format!("NotAfter {not_after} is out of range"))?;
    Ok(not_after)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// When to renew a certificate with `remaining` lifetime: at 70% of it, clamped to
/// `[min, max]`.
pub fn refresh_in(remaining: Duration, min: Duration, max: Duration) -> Duration {
    remaining.mul_f64(RENEW_AT).clamp(min, max.max(min))
}

/// How long to wait before retry number `failures` (from 1): `min` doubled for each
/// failure after the first, plus up to half again of jitter (`jitter` in `[0, 1)`),
/// clamped to `[min, max]`.
pub fn backoff(failures: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let max = max.max(min);
    let exp = failures.saturating_sub(1).min(31);
    let base = min.saturating_mul(1u32 << exp).min(max);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base.mul_f64(1.0 + jitter / 2.0).clamp(min, max)
}

#[cfg(test)]
mod tests;

/// The crypto of every TLS connection the proxy makes or takes (mesh TLS, the
/// identity and destination clients): aws-lc-rs, TLS 1.3 suites only (AES-128-GCM first: fastest with AES-NI), and
/// X25519MLKEM768 preferred for key exchange.
pub(crate) fn provider() -> CryptoProvider {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
        aws_lc_rs::kx_group::SECP256R1,
    ];
    p.cipher_suites = vec![
        aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    p
}
