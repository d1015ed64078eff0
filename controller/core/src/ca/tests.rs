use super::*;
use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};
use rustls_pki_types::{ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

const TD: &str = "cluster.local";
const ID: &str = "web.default.serviceaccount.identity.mesh.cluster.local";
const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// CSRs made by `openssl req` for [`ID`], over keys rcgen (with ring) cannot create.
const RSA_2048: &[u8] = include_bytes!("testdata/rsa2048.csr.der");
const RSA_1024: &[u8] = include_bytes!("testdata/rsa1024.csr.der");
const EC_P192: &[u8] = include_bytes!("testdata/p192.csr.der");

fn ca() -> (Ca, String) {
    let (anchor, cert, key) = generate_anchor_and_issuer(TD, YEAR);
    let ca = Ca::new(
        TD,
        DEFAULT_LIFETIME,
        &cert,
        &key,
        &anchor,
        SystemTime::now(),
    )
    .expect("valid CA");
    (ca, anchor)
}

fn csr_with(alg: &'static SignatureAlgorithm, cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.subject_alt_names = sans;
    params.serialize_request(&key).expect("csr").der().to_vec()
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.to_string().try_into().expect("ia5"))
}

fn csr(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
    csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, cn, sans)
}

/// Verifies `leaf` up to `anchor_pem` with webpki, for both TLS roles, at `at`.
fn verify(
    leaf: &[u8],
    chain: &[Vec<u8>],
    anchor_pem: &str,
    at: SystemTime,
) -> Result<(), webpki::Error> {
    let anchor_der = pem_certificates(anchor_pem).expect("pem").remove(0);
    let anchor_der = CertificateDer::from(anchor_der);
    let anchors = [webpki::anchor_from_trusted_cert(&anchor_der).expect("anchor")];
    let leaf = CertificateDer::from(leaf);
    let intermediates: Vec<_> = chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf)?;
    let time = UnixTime::since_unix_epoch(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch"),
    );
    let algs = [webpki::ring::ECDSA_P256_SHA256];
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(&algs, &anchors, &intermediates, time, usage, None, None)?;
    }
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(ID).expect("dns name"))
}

#[test]
fn issues_a_leaf_that_verifies() {
    let (ca, anchor) = ca();
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("epoch")
                .as_secs(),
        )
        + Duration::from_millis(400);
    let issued = ca
        .certify(ID, &csr(Some(ID), vec![dns(ID)]), now)
        .expect("issued");

    assert_eq!(issued.chain.len(), 1);
    verify(&issued.leaf, &issued.chain, &anchor, now).expect("chain verifies");
    // Without the issuer the leaf does not chain to the anchor.
    assert!(verify(&issued.leaf, &[], &anchor, now).is_err());
    // It is not valid once expired.
    let expired = now + DEFAULT_LIFETIME + Duration::from_secs(60);
    assert!(verify(&issued.leaf, &issued.chain, &anchor, expired).is_err());
    // Another root does not vouch for it.
    let (other_anchor, _, _) = generate_anchor_and_issuer(TD, YEAR);
    assert!(verify(&issued.leaf, &issued.chain, &other_anchor, now).is_err());

    let (_, leaf) = X509Certificate::from_der(&issued.leaf).expect("leaf parses");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .expect("valid extension")
        .expect("has SANs")
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("other:{other}"),
        })
        .collect();
    assert_eq!(
        sans,
        [
            format!("DNS:{ID}"),
            "URI:spiffe://cluster.local/ns/default/sa/web".to_string()
        ]
    );
    let eku = leaf
        .extended_key_usage()
        .expect("valid")
        .expect("has EKU")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing && eku.other.is_empty());
    assert!(!leaf.is_ca());
    let base = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("epoch")
        .as_secs() as i64;
    assert_eq!(leaf.validity().not_before.timestamp(), base - 20);
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        base + DEFAULT_LIFETIME.as_secs() as i64 + 20
    );
    assert_eq!(
        issued.valid_until,
        SystemTime::UNIX_EPOCH + Duration::from_secs(leaf.validity().not_after.timestamp() as u64)
    );
    // A CSR without a common name is fine too.
    let issued = ca
        .certify(ID, &csr(None, vec![dns(ID)]), now)
        .expect("issued");
    verify(&issued.leaf, &issued.chain, &anchor, now).expect("chain verifies");
}

#[test]
fn honours_the_lifetime() {
    let (anchor, cert, key) = generate_anchor_and_issuer(TD, YEAR);
    let now = SystemTime::now();
    let ca = Ca::new(TD, Duration::from_secs(3600), &cert, &key, &anchor, now).expect("valid CA");
    let issued = ca
        .certify(ID, &csr(None, vec![dns(ID)]), now)
        .expect("issued");
    let left = issued
        .valid_until
        .duration_since(now)
        .expect("in the future");
    assert!(
        left <= Duration::from_secs(3620) && left > Duration::from_secs(3618),
        "{left:?}"
    );
}

#[test]
fn rejects_csrs_that_name_something_else() {
    let (ca, _) = ca();
    let now = SystemTime::now();
    let uri = SanType::URI(
        "spiffe://cluster.local/ns/default/sa/web"
            .try_into()
            .expect("ia5"),
    );
    let other = "api.default.serviceaccount.identity.mesh.cluster.local";
    for (what, csr, found) in [
        ("other DNS SAN", csr(None, vec![dns(other)]), other),
        ("extra URI SAN", csr(None, vec![dns(ID), uri]), "URI:spiffe"),
        ("extra DNS SAN", csr(None, vec![dns(ID), dns(other)]), other),
        ("duplicate DNS SAN", csr(None, vec![dns(ID), dns(ID)]), ID),
        ("CN only", csr(Some(ID), vec![]), "CN:web."),
        ("other CN", csr(Some(other), vec![dns(ID)]), "CN:api."),
        ("nothing", csr(None, vec![]), "nothing"),
    ] {
        match ca.certify(ID, &csr, now) {
            Err(Reject::IdentityMismatch {
                requested,
                found: f,
            }) => {
                assert_eq!(requested, ID, "{what}");
                assert!(f.contains(found), "{what}: {f}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn rejects_other_keys() {
    let (ca, _) = ca();
    let now = SystemTime::now();
    let p384 = csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, None, vec![dns(ID)]);
    let ed25519 = csr_with(&rcgen::PKCS_ED25519, None, vec![dns(ID)]);
    assert!(
        matches!(ca.certify(ID, &p384, now), Err(Reject::UnsupportedKey(k)) if k.contains("1.3.132.0.34"))
    );
    assert!(matches!(
        ca.certify(ID, &ed25519, now),
        Err(Reject::UnsupportedKey(_))
    ));
    assert!(
        matches!(ca.certify(ID, RSA_2048, now), Err(Reject::UnsupportedKey(k)) if k.contains("2048-bit RSA"))
    );
    assert!(
        matches!(ca.certify(ID, RSA_1024, now), Err(Reject::WeakKey(k)) if k.contains("1024-bit RSA"))
    );
    assert!(
        matches!(ca.certify(ID, EC_P192, now), Err(Reject::WeakKey(k)) if k.contains("192-bit EC"))
    );
}

#[test]
fn rejects_malformed_csrs() {
    let (ca, _) = ca();
    let now = SystemTime::now();
    let good = csr(None, vec![dns(ID)]);

    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    assert_eq!(
        ca.certify(ID, &bad_sig, now).map(|_| ()),
        Err(Reject::BadSignature)
    );

    let mut trailing = good.clone();
    trailing.push(0);
    assert!(
        matches!(ca.certify(ID, &trailing, now), Err(Reject::MalformedCsr(m)) if m.contains("trailing"))
    );
    for garbage in [&b""[..], b"not a csr", &good[..good.len() / 2]] {
        assert!(
            matches!(ca.certify(ID, garbage, now), Err(Reject::MalformedCsr(_))),
            "{garbage:?}"
        );
    }
    // The good one still passes: the failures above are the damage, not the CSR.
    assert!(ca.certify(ID, &good, now).is_ok());
}

#[test]
fn rejects_identities_outside_the_trust_domain() {
    let (ca, _) = ca();
    let id = "web.default.serviceaccount.identity.mesh.example.org";
    let csr = csr(None, vec![dns(id)]);
    assert_eq!(
        ca.certify(id, &csr, SystemTime::now()).map(|_| ()),
        Err(Reject::InvalidIdentity(id.to_string()))
    );
}

fn ca_error(cert: &str, key: &str, anchors: &str, now: SystemTime) -> InvalidCa {
    Ca::new(TD, DEFAULT_LIFETIME, cert, key, anchors, now).expect_err("must be refused")
}

#[test]
fn refuses_bad_issuers() {
    let now = SystemTime::now();
    let (anchor, cert, key) = generate_anchor_and_issuer(TD, YEAR);

    // Expired, and not yet valid.
    let (old_anchor, old_cert, old_key) =
        generate_anchor_and_issuer_between(TD, now - 2 * YEAR, now - YEAR);
    let e = ca_error(&old_cert, &old_key, &old_anchor, now);
    assert!(
        matches!(&e, InvalidCa::IssuerCert(m) if m.contains("not valid now")),
        "{e}"
    );
    let e = ca_error(&cert, &key, &anchor, now + 2 * YEAR);
    assert!(
        matches!(&e, InvalidCa::IssuerCert(m) if m.contains("not valid now")),
        "{e}"
    );

    // Signed by another root.
    let (other_anchor, other_cert, other_key) = generate_anchor_and_issuer(TD, YEAR);
    let e = ca_error(&cert, &key, &other_anchor, now);
    assert!(
        matches!(&e, InvalidCa::IssuerCert(m) if m.contains("not signed by any")),
        "{e}"
    );
    // ... unless that root is among the anchors.
    let both = format!("{other_anchor}{anchor}");
    assert!(Ca::new(TD, DEFAULT_LIFETIME, &cert, &key, &both, now).is_ok());

    // Someone else's key.
    let e = ca_error(&cert, &other_key, &anchor, now);
    assert!(
        matches!(&e, InvalidCa::IssuerKey(m) if m.contains("does not match")),
        "{e}"
    );
    let e = ca_error(&cert, "garbage", &anchor, now);
    assert!(matches!(&e, InvalidCa::IssuerKey(_)), "{e}");

    // Two certificates where one is expected; none at all.
    let e = ca_error(&format!("{cert}{other_cert}"), &key, &anchor, now);
    assert!(
        matches!(&e, InvalidCa::IssuerCert(m) if m.contains("found 2")),
        "{e}"
    );
    let e = ca_error(&cert, &key, "", now);
    assert!(
        matches!(&e, InvalidCa::Anchors(m) if m.contains("no CERTIFICATE")),
        "{e}"
    );

    // Not a CA, and not P-256: self-signed, so the signature check alone would pass.
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = CertificateParams::new(vec![ID.to_string()])
        .expect("params")
        .self_signed(&leaf_key)
        .expect("cert");
    let e = ca_error(&leaf.pem(), &leaf_key.serialize_pem(), &leaf.pem(), now);
    assert!(
        matches!(&e, InvalidCa::IssuerCert(m) if m.contains("not a CA")),
        "{e}"
    );

    let p384_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let p384 = params.self_signed(&p384_key).expect("cert");
    let e = ca_error(&p384.pem(), &p384_key.serialize_pem(), &p384.pem(), now);
    assert!(
        matches!(&e, InvalidCa::IssuerCert(m) if m.contains("not ECDSA P-256")),
        "{e}"
    );
}

#[test]
fn generated_names() {
    let (anchor, cert, _) = generate_anchor_and_issuer("example.org", YEAR);
    let der = pem_certificates(&anchor).expect("pem").remove(0);
    let (_, anchor) = X509Certificate::from_der(&der).expect("anchor");
    assert_eq!(anchor.subject().to_string(), "CN=root.mesh.example.org");
    assert!(anchor.is_ca());
    let der = pem_certificates(&cert).expect("pem").remove(0);
    let (_, issuer) = X509Certificate::from_der(&der).expect("issuer");
    assert_eq!(issuer.subject().to_string(), "CN=identity.mesh.example.org");
    assert_eq!(issuer.issuer().to_string(), "CN=root.mesh.example.org");
}
