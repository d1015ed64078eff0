//! The identity service: a small CA that signs a proxy's certificate for the identity
//! its token proves, and nothing else.
//!
//! The layers are split on their IO: [`ca`] (the `mesh-core` crate's) is pure (certificates in, certificates
//! out, the time given), [`token`] decides who a token belongs to (a bootstrap file or
//! a Kubernetes TokenReview), and [`service`] is the gRPC edge that joins them, turns
//! their errors into `grpc-status` and counts every outcome.

pub use mesh_core::ca;
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

/// A Kubernetes service account (who a token proves the caller is) and its identity
/// names, by the rules the proxies share (`mesh_api::names`).
pub use mesh_api::names::ServiceAccount;
