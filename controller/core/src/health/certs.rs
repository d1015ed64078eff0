//! Certificates as `mesh check` and the controller's health answer judge them: parsed from PEM, their validity at a
//! given time (no clock read here, so every rule is tested without waiting), whether
//! one is signed by one of a set of CAs, and the names they are for.

use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, prelude::FromDer, time::ASN1Time,
};

/// How long before expiry a certificate is worth a warning: Linkerd's 60 days.
pub const RENEW_WITHIN: Duration = Duration::from_secs(60 * 24 * 60 * 60);

/// The DER of every `CERTIFICATE` block in `pem`, or why there is none.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("invalid PEM: {e}"))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err("no CERTIFICATE block in the PEM".into());
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("not an X.509 certificate: {e}"))
}

/// The certificate's subject, for messages.
pub fn subject(der: &[u8]) -> String {
    parse(der)
        .map(|c| c.subject().to_string())
        .unwrap_or_else(|e| e)
}

/// How long the certificate stays valid after `now`, or why it is not valid at `now`.
pub fn remaining(der: &[u8], now: SystemTime) -> Result<Duration, String> {
    let cert = parse(der)?;
    let validity = cert.validity();
    let at = ASN1Time::from(OffsetDateTime::from(now));
    if at < validity.not_before {
        return Err(format!(
            "not valid before {} (is this machine's clock or the issuer's wrong?)",
            validity.not_before
        ));
    }
    if at > validity.not_after {
        return Err(format!("expired at {}", validity.not_after));
    }
    let end = SystemTime::from(validity.not_after.to_datetime());
    Ok(end.duration_since(now).unwrap_or_default())
}

/// The certificate's NotAfter, for messages.
pub fn not_after(der: &[u8]) -> String {
    parse(der)
        .map(|c| c.validity().not_after.to_string())
        .unwrap_or_else(|e| e)
}

/// A time inside the certificate's validity (its middle), for judging everything
/// about it but its validity.
pub fn within(der: &[u8]) -> Result<SystemTime, String> {
    let cert = parse(der)?;
    let from = SystemTime::from(cert.validity().not_before.to_datetime());
    let until = SystemTime::from(cert.validity().not_after.to_datetime());
    Ok(from + until.duration_since(from).unwrap_or_default() / 2)
}

/// Whether `cert` is signed by one of `cas` (its issuer name and signature).
pub fn signed_by(cert: &[u8], cas: &[Vec<u8>]) -> Result<bool, String> {
    let cert = parse(cert)?;
    for ca in cas {
        let ca = parse(ca)?;
        if ca.subject() == cert.issuer() && cert.verify_signature(Some(ca.public_key())).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The DNS names the certificate is for (its subjectAltName).
pub fn dns_names(der: &[u8]) -> Result<Vec<String>, String> {
    let cert = parse(der)?;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect())
}

/// A duration in days, for messages.
pub fn days(d: Duration) -> String {
    format!("{} days", d.as_secs() / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{generate_anchor_and_issuer_between, generate_serving_cert_between};

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn validity_signatures_and_names_are_judged_at_the_given_time() {
        let now = SystemTime::now();
        let (anchor, issuer, _) =
            generate_anchor_and_issuer_between("cluster.local", now - DAY, now + 10 * DAY);
        let anchor = pem_certificates(&anchor).unwrap();
        let issuer = pem_certificates(&issuer).unwrap().remove(0);
        let left = remaining(&issuer, now).unwrap();
        assert!(left > 9 * DAY && left <= 10 * DAY, "{left:?}");
        assert!(remaining(&issuer, now + 11 * DAY)
            .unwrap_err()
            .starts_with("expired at"));
        assert!(remaining(&issuer, now - 2 * DAY)
            .unwrap_err()
            .starts_with("not valid before"));
        assert!(signed_by(&issuer, &anchor).unwrap());
        let (other, _, _) =
            generate_anchor_and_issuer_between("cluster.local", now - DAY, now + DAY);
        assert!(!signed_by(&issuer, &pem_certificates(&other).unwrap()).unwrap());

        let name = "mesh-webhook.mesh-system.svc".to_string();
        let (ca, cert, _) = generate_serving_cert_between(
            "webhook-ca",
            std::slice::from_ref(&name),
            now - DAY,
            now + DAY,
        )
        .unwrap();
        let cert = pem_certificates(&cert).unwrap().remove(0);
        assert_eq!(dns_names(&cert).unwrap(), [name]);
        assert!(signed_by(&cert, &pem_certificates(&ca).unwrap()).unwrap());
        assert!(pem_certificates("junk").is_err());
    }
}
