//! The identity service: a small CA that signs a proxy's certificate for the identity
//! its token proves, and nothing else.
//!
//! The layers are split on their IO: [`ca`] is pure (certificates in, certificates
//! out, the time given), [`token`] decides who a token belongs to (a bootstrap file or
//! a Kubernetes TokenReview), and [`service`] is the gRPC edge that joins them, turns
//! their errors into `grpc-status` and counts every outcome.

pub mod ca;
pub mod service;
pub mod tls;
pub mod token;

pub use self::{
    ca::{
        generate_anchor_and_issuer, generate_anchor_and_issuer_between, Ca, InvalidCa, Issued,
        Reject,
    },
    service::IdentityService,
    tls::{default_server_name, SelfIssued},
    token::{BootstrapTokens, TokenError, TokenReview, TokenValidator},
};

/// The suffix that makes a service account's identity name, before the trust domain.
const IDENTITY_INFIX: &str = "serviceaccount.identity.mesh";

/// A Kubernetes service account: who a token proves the caller is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// The identity name of this account: `<sa>.<ns>.serviceaccount.identity.mesh.<td>`.
    pub fn identity(&self, trust_domain: &str) -> String {
        format!(
            "{}.{}.{IDENTITY_INFIX}.{trust_domain}",
            self.name, self.namespace
        )
    }

    /// The SPIFFE ID of this account: `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.name
        )
    }

    /// The account an identity name in `trust_domain` names, if it is one.
    pub fn from_identity(identity: &str, trust_domain: &str) -> Option<Self> {
        let rest = identity
            .strip_suffix(trust_domain)?
            .strip_suffix('.')?
            .strip_suffix(IDENTITY_INFIX)?
            .strip_suffix('.')?;
        let (name, namespace) = rest.split_once('.')?;
        let valid = |s: &str| crate::is_dns_label(s);
        (valid(name) && valid(namespace)).then(|| Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_round_trip() {
        let sa = ServiceAccount {
            namespace: "default".into(),
            name: "web".into(),
        };
        let id = sa.identity("cluster.local");
        assert_eq!(id, "web.default.serviceaccount.identity.mesh.cluster.local");
        assert_eq!(
            sa.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/default/sa/web"
        );
        assert_eq!(
            ServiceAccount::from_identity(&id, "cluster.local"),
            Some(sa)
        );
        assert_eq!(ServiceAccount::from_identity(&id, "example.org"), None);
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
    }
}
