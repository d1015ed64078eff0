//! The identity service's own TLS: `Certify` carries a service-account token, which
//! must never cross the pod network in the clear, and a proxy must know it is talking
//! to the real CA before it sends one.
//!
//! The service needs no certificate from the operator: the CA signs one for itself,
//! naming the identity service's identity (by default
//! `mesh-identity.mesh-system.serviceaccount.identity.mesh.<trust-domain>`), which
//! proxies verify against the same trust anchors as every mesh certificate. Its key is
//! generated in memory and never written. The certificate is replaced at 70% of its
//! lifetime, at the first handshake after that point; a replacement that fails keeps
//! the current one and is tried again a minute later. The destination service's
//! certificate is made the same way, and so is the tap API's client certificate
//! (`mesh-tap.mesh-system`), which it presents to proxies' tap servers.
//!
//! The server is TLS 1.3 only, offers only `h2` and does not ask for client
//! certificates: a proxy has none until it is answered.

use super::Ca;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

/// The identity of a control-plane service account, as proxies verify it.
pub use mesh_api::control_plane::service_identity;
pub use mesh_api::control_plane::{DESTINATION_SERVICE_ACCOUNT, IDENTITY_SERVICE_ACCOUNT};

/// The fraction of a certificate's lifetime after which it is replaced.
const RENEW_AT: f64 = 0.7;

/// How long a failed replacement waits before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The identity the identity service presents by default: the `mesh-identity` service
/// account in the control plane's namespace.
pub fn default_server_name(control_plane_namespace: &str, trust_domain: &str) -> String {
    service_identity(
        IDENTITY_SERVICE_ACCOUNT,
        control_plane_namespace,
        trust_domain,
    )
}

/// The service's certificate, signed by its own CA and replaced before it expires.
pub struct SelfIssued {
    ca: Arc<Ca>,
    name: String,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    replace_at: SystemTime,
}

impl std::fmt::Debug for SelfIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfIssued")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SelfIssued {
    /// Issues the first certificate for `name` now: a server never starts without one.
    pub fn new(ca: Arc<Ca>, name: &str, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let now = SystemTime::now();
        let current = issue(&ca, name, &provider, now)?;
        Ok(Self {
            ca,
            name: name.to_string(),
            provider,
            current: Mutex::new(current),
        })
    }

    /// The identity the certificate names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate to present at `now`, replacing it first if it is due.
    pub fn current_at(&self, now: SystemTime) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if now >= current.replace_at {
            match issue(&self.ca, &self.name, &self.provider, now) {
                Ok(next) => {
                    tracing::info!(name = %self.name, "self-issued certificate replaced");
                    *current = next;
                }
                Err(error) => {
                    tracing::warn!(%error, name = %self.name, "cannot replace a self-issued certificate; keeping the current one");
                    current.replace_at = now + RETRY_AFTER;
                }
            }
        }
        current.key.clone()
    }
}

/// As a client (the tap API, opening proxies' tap servers), the same certificate.
impl rustls::client::ResolvesClientCert for SelfIssued {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current_at(SystemTime::now()))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for SelfIssued {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current_at(SystemTime::now()))
    }
}

/// A new key, and a certificate for it from `ca`.
fn issue(
    ca: &Ca,
    name: &str,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Current, String> {
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
        .map_err(|e| format!("cannot build a CSR: {e}"))?;
    let issued = ca
        .certify(name, csr.der(), now)
        .map_err(|e| format!("the CA refused {name}: {e}"))?;
    let chain = std::iter::once(issued.leaf)
        .chain(issued.chain)
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| e.to_string())?;
    let lifetime = issued.valid_until.duration_since(now).unwrap_or_default();
    Ok(Current {
        key: Arc::new(key),
        replace_at: now + lifetime.mul_f64(RENEW_AT),
    })
}

/// A TLS server configuration presenting a certificate for `name` that `ca` signs
/// (and re-signs when due).
pub fn self_issued_server(ca: Arc<Ca>, name: &str) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certificate = SelfIssued::new(ca, name, provider.clone())
        .map_err(|e| format!("cannot certify {name}: {e}"))?;
    server_config(Arc::new(certificate), provider)
        .map(Arc::new)
        .map_err(|e| format!("cannot configure TLS for {name}: {e}"))
}

/// The server configuration: TLS 1.3, `h2` only, no client certificates.
pub fn server_config(
    certificate: Arc<SelfIssued>,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::generate_anchor_and_issuer;

    fn ca(lifetime: Duration) -> Arc<Ca> {
        let (anchor, cert, key) =
            generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
        Arc::new(
            Ca::new(
                "cluster.local",
                lifetime,
                &cert,
                &key,
                &anchor,
                SystemTime::now(),
            )
            .unwrap(),
        )
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn leaf_name(key: &CertifiedKey) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        match &san.value.general_names[0] {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        }
    }

    #[test]
    fn the_default_name_is_the_mesh_identity_account() {
        assert_eq!(
            default_server_name("mesh-system", "cluster.local"),
            "mesh-identity.mesh-system.serviceaccount.identity.mesh.cluster.local"
        );
    }

    #[test]
    fn names_itself_and_is_replaced_when_due() {
        let name = default_server_name("mesh-system", "cluster.local");
        let lifetime = Duration::from_secs(600);
        let cert = SelfIssued::new(ca(lifetime), &name, provider()).unwrap();
        let now = SystemTime::now();
        let first = cert.current_at(now);
        assert_eq!(leaf_name(&first), name);
        assert_eq!(first.cert.len(), 2, "leaf and issuer");
        // Before 70% of the lifetime: the same certificate.
        let before = cert.current_at(now + lifetime.mul_f64(0.6));
        assert!(Arc::ptr_eq(&first, &before));
        // After: a new one, for the same name, with another key.
        let after = cert.current_at(now + lifetime.mul_f64(0.8));
        assert!(!Arc::ptr_eq(&first, &after));
        assert_ne!(first.cert[0], after.cert[0]);
        assert_eq!(leaf_name(&after), name);
    }

    #[test]
    fn a_name_outside_the_trust_domain_is_refused() {
        let err = SelfIssued::new(
            ca(Duration::from_secs(600)),
            "mesh-identity.mesh-system.serviceaccount.identity.mesh.example.org",
            provider(),
        )
        .unwrap_err();
        assert!(err.contains("the CA refused"), "{err}");
    }
}
