//! Names the proxy, the controller and the CLI must agree on: a workload's identity,
//! in its DNS and SPIFFE forms, and the DNS labels and names Kubernetes objects and
//! trust domains are made of.
//!
//! An identity names a service account in a trust domain twice:
//! `<sa>.<ns>.serviceaccount.identity.mesh.<trust-domain>` (a DNS name: the TLS server
//! name proxies ask for and the certificate's DNS SAN) and
//! `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` (the certificate's URI SAN).
//!
//! ```
//! use mesh_api::names::ServiceAccount;
//!
//! let web = ServiceAccount::new("emojivoto", "web");
//! let id = web.identity("cluster.local");
//! assert_eq!(id, "web.emojivoto.serviceaccount.identity.mesh.cluster.local");
//! assert_eq!(ServiceAccount::from_identity(&id, "cluster.local"), Some(web));
//! ```

use std::fmt;

/// What an identity has between its service account and its trust domain.
pub const IDENTITY_INFIX: &str = "serviceaccount.identity.mesh";

/// A Kubernetes service account, which is what an identity names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The DNS form: `<sa>.<ns>.serviceaccount.identity.mesh.<trust-domain>`.
    pub fn identity(&self, trust_domain: &str) -> String {
        format!(
            "{}.{}.{IDENTITY_INFIX}.{trust_domain}",
            self.name, self.namespace
        )
    }

    /// The SPIFFE form: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.name
        )
    }

    /// The account a DNS-form identity in `trust_domain` names, if it is one (both
    /// names DNS labels, exactly this trust domain, lowercase as Kubernetes names are).
    pub fn from_identity(identity: &str, trust_domain: &str) -> Option<Self> {
        let rest = identity
            .strip_suffix(trust_domain)?
            .strip_suffix('.')?
            .strip_suffix(IDENTITY_INFIX)?
            .strip_suffix('.')?;
        let (name, namespace) = rest.split_once('.')?;
        (is_dns_label(name) && is_dns_label(namespace)).then(|| Self::new(namespace, name))
    }

    /// The account a SPIFFE ID in `trust_domain` names, if it is one.
    pub fn from_spiffe_id(id: &str, trust_domain: &str) -> Option<Self> {
        let path = id
            .strip_prefix("spiffe://")?
            .strip_prefix(trust_domain)?
            .strip_prefix("/ns/")?;
        let (namespace, name) = path.split_once("/sa/")?;
        (is_dns_label(name) && is_dns_label(namespace)).then(|| Self::new(namespace, name))
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether `name` is a DNS-form identity in some trust domain: a valid DNS name whose
/// third to fifth labels are `serviceaccount.identity.mesh` (case aside, as DNS).
pub fn is_identity(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 7
        && labels[2..5]
            .iter()
            .zip(IDENTITY_INFIX.split('.'))
            .all(|(l, want)| l.eq_ignore_ascii_case(want))
        && is_dns_name(name)
}

/// The trust domain of a DNS-form identity: what follows `serviceaccount.identity.mesh.`.
pub fn trust_domain_of(identity: &str) -> Option<&str> {
    identity
        .splitn(6, '.')
        .nth(5)
        .filter(|_| is_identity(identity))
}

/// The suffix every identity of `trust_domain` ends with:
/// `.serviceaccount.identity.mesh.<trust-domain>`.
pub fn identity_suffix(trust_domain: &str) -> String {
    format!(".{IDENTITY_INFIX}.{trust_domain}")
}

/// Whether `s` is a DNS label as Kubernetes names namespaces and services (RFC 1123):
/// 1 to 63 lowercase letters, digits and `-`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS name of lowercase labels (a trust domain, a cluster domain): at
/// most 253 characters of [`is_dns_label`] labels.
pub fn is_dns_domain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Whether `s` is a DNS name a TLS client can ask for (any case; labels of letters,
/// digits, `-` and `_`).
pub fn is_dns_name(s: &str) -> bool {
    rustls_pki_types::DnsName::try_from(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_in_both_forms() {
        let sa = ServiceAccount::new("default", "web");
        let id = sa.identity("cluster.local");
        assert_eq!(id, "web.default.serviceaccount.identity.mesh.cluster.local");
        assert_eq!(
            sa.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/default/sa/web"
        );
        assert_eq!(
            ServiceAccount::from_identity(&id, "cluster.local"),
            Some(sa.clone())
        );
        assert_eq!(
            ServiceAccount::from_spiffe_id(&sa.spiffe_id("cluster.local"), "cluster.local"),
            Some(sa.clone())
        );
        assert_eq!(ServiceAccount::from_identity(&id, "example.org"), None);
        assert_eq!(sa.to_string(), "default/web");
        for bad in [
            "web.serviceaccount.identity.mesh.cluster.local",
            "a.b.c.serviceaccount.identity.mesh.cluster.local",
            "web.default.serviceaccount.identity.mesh.xcluster.local",
            "Web.default.serviceaccount.identity.mesh.cluster.local",
            "web.default.identity.mesh.cluster.local",
        ] {
            assert_eq!(
                ServiceAccount::from_identity(bad, "cluster.local"),
                None,
                "{bad}"
            );
        }
        for bad in [
            "spiffe://cluster.local/ns/default",
            "spiffe://other.org/ns/default/sa/web",
            "spiffe://cluster.local/ns/Default/sa/web",
            "https://cluster.local/ns/default/sa/web",
        ] {
            assert_eq!(
                ServiceAccount::from_spiffe_id(bad, "cluster.local"),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn identities_of_any_trust_domain() {
        let id = "web.default.serviceaccount.identity.mesh.cluster.local";
        assert!(is_identity(id));
        assert!(is_identity(
            "CA.Ops.ServiceAccount.identity.mesh.example.org"
        ));
        assert_eq!(trust_domain_of(id), Some("cluster.local"));
        assert!(!is_identity("web.default.serviceaccount.identity.mesh"));
        assert!(!is_identity("web.default.svc.cluster.local"));
        assert!(!is_identity(
            "web default.serviceaccount.identity.mesh.cluster.local"
        ));
        assert_eq!(
            identity_suffix("cluster.local"),
            ".serviceaccount.identity.mesh.cluster.local"
        );
    }

    #[test]
    fn labels_and_domains() {
        for good in ["a", "web", "web-1", "0", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "Web", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_domain("cluster.local"));
        assert!(!is_dns_domain("cluster..local"));
        assert!(!is_dns_domain(""));
        assert!(is_dns_name("Web_1.example"));
        assert!(!is_dns_name("a b"));
    }
}
