//! The certificate authority: checks a proxy's CSR and signs a short-lived leaf for
//! one identity with the issuer's key.
//!
//! It is pure: it reads no file and no clock (the caller passes PEM and `now`), so
//! every rule is tested without IO. It trusts its caller to have proven that the
//! requester owns the identity; what it checks itself is that the CSR asks for that
//! identity and nothing more, over a key it accepts.

use crate::health::certs::pem_certificates;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use x509_parser::{
    certificate::X509Certificate,
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION},
    prelude::FromDer,
    time::ASN1Time,
    x509::SubjectPublicKeyInfo,
};

use mesh_api::names::ServiceAccount;

/// How long an issued certificate lives by default.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Certificates start a little in the past and end a little late, so a peer whose
/// clock is slightly off still accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(20);

/// The smallest RSA modulus that is merely unsupported rather than weak.
const RSA_MIN_BITS: usize = 2048;

/// A CA that signs leaves for identities in one trust domain.
#[derive(Debug)]
pub struct Ca {
    trust_domain: String,
    lifetime: Duration,
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
    /// The trust anchors, DER: what the control plane verifies proxies against when
    /// it is their client (tap).
    anchors: Vec<Vec<u8>>,
}

/// A signed leaf and what a peer needs to verify it.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf certificate, DER.
    pub leaf: Vec<u8>,
    /// The certificates from the leaf's issuer up to (not including) the anchor, DER.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's NotAfter.
    pub valid_until: SystemTime,
}

/// Why a CSR was not signed. Each kind is a `result` label of the identity metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Reject {
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    #[error("CSR signature does not verify")]
    BadSignature,
    #[error("key too weak: {0}; use ECDSA P-256")]
    WeakKey(String),
    #[error("unsupported key: {0}; use ECDSA P-256")]
    UnsupportedKey(String),
    #[error("CSR names {found}, expected exactly DNS {requested}")]
    IdentityMismatch { requested: String, found: String },
    #[error("{0:?} is not an identity name in this trust domain")]
    InvalidIdentity(String),
    #[error("cannot sign: {0}")]
    Signing(String),
}

impl Reject {
    /// The metrics label of this rejection.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MalformedCsr(_) => "malformed_csr",
            Self::BadSignature => "bad_signature",
            Self::WeakKey(_) => "weak_key",
            Self::UnsupportedKey(_) => "unsupported_key",
            Self::IdentityMismatch { .. } => "identity_mismatch",
            Self::InvalidIdentity(_) => "invalid_identity",
            Self::Signing(_) => "internal",
        }
    }
}

/// Why the issuer credentials cannot make a CA. Each names the input at fault, so the
/// controller can name the flag.
#[derive(Debug, thiserror::Error)]
pub enum InvalidCa {
    #[error("trust anchors: {0}")]
    Anchors(String),
    #[error("issuer certificate: {0}")]
    IssuerCert(String),
    #[error("issuer key: {0}")]
    IssuerKey(String),
}

// === impl Ca ===

impl Ca {
    /// Builds a CA from PEM: the issuer's certificate and PKCS#8 key, and the trust
    /// anchors it must chain to. The issuer must be an ECDSA P-256 CA certificate
    /// signed by one of the anchors and valid at `now`, and the key must be its own.
    pub fn new(
        trust_domain: &str,
        lifetime: Duration,
        issuer_cert_pem: &str,
        issuer_key_pem: &str,
        anchors_pem: &str,
        now: SystemTime,
    ) -> Result<Self, InvalidCa> {
        let anchors = pem_certificates(anchors_pem).map_err(InvalidCa::Anchors)?;
        let issuer_der = match pem_certificates(issuer_cert_pem).map_err(InvalidCa::IssuerCert)? {
            mut certs if certs.len() == 1 => certs.remove(0),
            certs => {
                return Err(InvalidCa::IssuerCert(format!(
                    "expected one CERTIFICATE in PEM, found {}",
                    certs.len()
                )))
            }
        };
        let (_, issuer) = X509Certificate::from_der(&issuer_der)
            .map_err(|e| InvalidCa::IssuerCert(format!("cannot parse: {e}")))?;
        if !issuer.is_ca() {
            return Err(InvalidCa::IssuerCert("not a CA certificate".into()));
        }
        if !is_p256(issuer.public_key()) {
            return Err(InvalidCa::IssuerCert("key is not ECDSA P-256".into()));
        }
        let at = ASN1Time::from(OffsetDateTime::from(now));
        if !issuer.validity().is_valid_at(at) {
            return Err(InvalidCa::IssuerCert(format!(
                "not valid now (valid from {} until {})",
                issuer.validity().not_before,
                issuer.validity().not_after
            )));
        }
        let mut signed = false;
        for der in &anchors {
            let (_, anchor) = X509Certificate::from_der(der)
                .map_err(|e| InvalidCa::Anchors(format!("cannot parse: {e}")))?;
            if anchor.subject() == issuer.issuer()
                && issuer.verify_signature(Some(anchor.public_key())).is_ok()
            {
                signed = true;
                break;
            }
        }
        if !signed {
            return Err(InvalidCa::IssuerCert(format!(
                "not signed by any of the {} trust anchors (issuer {})",
                anchors.len(),
                issuer.issuer()
            )));
        }

        let key = KeyPair::from_pem(issuer_key_pem)
            .map_err(|e| InvalidCa::IssuerKey(format!("cannot parse: {e}")))?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(InvalidCa::IssuerKey("not an ECDSA P-256 key".into()));
        }
        if key.public_key_raw() != &*issuer.public_key().subject_public_key.data {
            return Err(InvalidCa::IssuerKey(
                "does not match the issuer certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(issuer_der.as_slice()), key)
            .map_err(|e| InvalidCa::IssuerCert(format!("cannot use: {e}")))?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            lifetime,
            issuer,
            issuer_der,
            anchors,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The issuer's certificate, DER.
    pub fn issuer(&self) -> &[u8] {
        &self.issuer_der
    }

    /// The trust anchors the issuer chains to, DER.
    pub fn anchors(&self) -> &[Vec<u8>] {
        &self.anchors
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Signs a leaf for `identity` over the key in `csr_der`, valid from `now`.
    pub fn certify(
        &self,
        identity: &str,
        csr_der: &[u8],
        now: SystemTime,
    ) -> Result<Issued, Reject> {
        let account = ServiceAccount::from_identity(identity, &self.trust_domain)
            .ok_or_else(|| Reject::InvalidIdentity(identity.to_string()))?;
        let csr = match X509CertificationRequest::from_der(csr_der) {
            Ok((rest, _)) if !rest.is_empty() => {
                return Err(Reject::MalformedCsr(format!(
                    "{} trailing bytes",
                    rest.len()
                )))
            }
            Ok((_, csr)) => csr,
            Err(e) => return Err(Reject::MalformedCsr(e.to_string())),
        };
        let spki = &csr.certification_request_info.subject_pki;
        check_key(spki)?;
        csr.verify_signature().map_err(|_| Reject::BadSignature)?;
        check_names(&csr, identity)?;

        let not_before = OffsetDateTime::from(now - CLOCK_SKEW);
        let not_after = OffsetDateTime::from(now + self.lifetime + CLOCK_SKEW)
            .replace_nanosecond(0)
            .map_err(|e| Reject::Signing(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        params.subject_alt_names = vec![
            SanType::DnsName(
                identity
                    .to_string()
                    .try_into()
                    .map_err(|e| Reject::InvalidIdentity(format!("{identity}: {e}")))?,
            ),
            SanType::URI(
                account
                    .spiffe_id(&self.trust_domain)
                    .try_into()
                    .map_err(|e| Reject::InvalidIdentity(format!("{identity}: {e}")))?,
            ),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
            .map_err(|e| Reject::UnsupportedKey(e.to_string()))?;
        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| Reject::Signing(e.to_string()))?;
        Ok(Issued {
            leaf: leaf.der().to_vec(),
            chain: vec![self.issuer_der.clone()],
            valid_until: not_after.into(),
        })
    }
}

/// Accepts ECDSA P-256 only, telling a key that is too weak from one of another kind.
fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), Reject> {
    if is_p256(spki) {
        return Ok(());
    }
    let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map_or_else(|| "unknown".to_string(), |c| c.to_id_string());
        if bits < 256 {
            return Err(Reject::WeakKey(format!(
                "{bits}-bit EC key (curve {curve})"
            )));
        }
        return Err(Reject::UnsupportedKey(format!("EC curve {curve}")));
    }
    if *oid == OID_PKCS1_RSAENCRYPTION {
        if bits < RSA_MIN_BITS {
            return Err(Reject::WeakKey(format!("{bits}-bit RSA key")));
        }
        return Err(Reject::UnsupportedKey(format!("{bits}-bit RSA key")));
    }
    Err(Reject::UnsupportedKey(format!("key algorithm {oid}")))
}

fn is_p256(spki: &SubjectPublicKeyInfo<'_>) -> bool {
    spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == OID_EC_P256)
}

/// The CSR must name exactly `identity`: one DNS SAN equal to it, no other SAN, and a
/// common name that is absent or equal to it.
fn check_names(csr: &X509CertificationRequest<'_>, identity: &str) -> Result<(), Reject> {
    let mut found = Vec::new();
    let mut exact = true;
    let mut dns_matches = 0;
    for cn in csr.certification_request_info.subject.iter_common_name() {
        let cn = cn.as_str().unwrap_or("<not a string>");
        if cn != identity {
            exact = false;
        }
        found.push(format!("CN:{cn}"));
    }
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) if *dns == identity => {
                        dns_matches += 1;
                        found.push(format!("DNS:{dns}"));
                    }
                    GeneralName::DNSName(dns) => {
                        exact = false;
                        found.push(format!("DNS:{dns}"));
                    }
                    GeneralName::URI(uri) => {
                        exact = false;
                        found.push(format!("URI:{uri}"));
                    }
                    other => {
                        exact = false;
                        found.push(other.to_string());
                    }
                }
            }
        }
    }
    if exact && dns_matches == 1 {
        return Ok(());
    }
    Err(Reject::IdentityMismatch {
        requested: identity.to_string(),
        found: if found.is_empty() {
            "nothing".to_string()
        } else {
            found.join(", ")
        },
    })
}

fn random_serial() -> SerialNumber {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    // A positive, non-zero integer of at most 20 octets, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Creates a self-signed trust anchor (`root.mesh.<td>`) and an issuer
/// (`identity.mesh.<td>`) it signs, both ECDSA P-256 and valid for `validity` from
/// now, as PEM: `(anchor, issuer certificate, issuer PKCS#8 key)`. For tests,
/// `mesh demo` and `mesh install`.
pub fn generate_anchor_and_issuer(
    trust_domain: &str,
    validity: Duration,
) -> (String, String, String) {
    let now = SystemTime::now();
    generate_anchor_and_issuer_between(trust_domain, now - CLOCK_SKEW, now + validity)
}

/// [`generate_anchor_and_issuer`] with explicit validity bounds.
pub fn generate_anchor_and_issuer_between(
    trust_domain: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> (String, String, String) {
    let ca_params = |cn: String, constraints| {
        let mut params = CertificateParams::default();
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial());
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(constraints);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    };
    let anchor_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ring generates P-256 keys");
    let anchor_params = ca_params(
        format!("root.mesh.{trust_domain}"),
        BasicConstraints::Unconstrained,
    );
    let anchor = anchor_params
        .self_signed(&anchor_key)
        .expect("a P-256 CA certificate can be self-signed");
    let issuer_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ring generates P-256 keys");
    let mut issuer_params = ca_params(
        format!("identity.mesh.{trust_domain}"),
        BasicConstraints::Constrained(0),
    );
    issuer_params.use_authority_key_identifier_extension = true;
    let issuer = issuer_params
        .signed_by(&issuer_key, &Issuer::new(anchor_params, anchor_key))
        .expect("a P-256 CA certificate can be signed by a P-256 CA");
    (anchor.pem(), issuer.pem(), issuer_key.serialize_pem())
}

/// Creates a CA and a TLS serving certificate it signs for `dns_names` (the admission
/// webhooks' Service names), both ECDSA P-256 and valid between the bounds, as PEM:
/// `(ca, certificate, PKCS#8 key)`. The API server verifies the webhook against the
/// CA, which the webhook configurations carry as their `caBundle`.
pub fn generate_serving_cert_between(
    ca_name: &str,
    dns_names: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(String, String, String), String> {
    let bounds = |params: &mut CertificateParams| {
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial());
    };
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a P-256 key: {e}"))?;
    let mut ca_params = CertificateParams::default();
    bounds(&mut ca_params);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name.to_string());
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| format!("cannot sign the webhook CA: {e}"))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a P-256 key: {e}"))?;
    let mut params = CertificateParams::new(dns_names.to_vec())
        .map_err(|e| format!("invalid webhook name: {e}"))?;
    bounds(&mut params);
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = dns_names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.clone());
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &Issuer::new(ca_params, ca_key))
        .map_err(|e| format!("cannot sign the webhook certificate: {e}"))?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests;
