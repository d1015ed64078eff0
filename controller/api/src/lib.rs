//! `mesh-api`: the protobuf messages and gRPC services that mesh's proxy, controller
//! and CLI speak to each other (package `mesh.*`, sources in `proto/`).
//!
//! The code is generated at build time from `proto/` by protox and tonic-prost-build,
//! so what is compiled is always what the `.proto` files say. Conversions between
//! wire addresses and `std::net` live here too, so both sides agree on them.

#![allow(unreachable_pub, clippy::all)]

pub mod net {
    tonic::include_proto!("mesh.net");
}

pub mod destination {
    tonic::include_proto!("mesh.destination");
}

pub mod identity {
    tonic::include_proto!("mesh.identity");
}

mod convert;
pub mod tls;

/// The control plane's names that proxies and controller must agree on: a proxy
/// verifies the identity and destination services' certificates against
/// `<account>.<namespace>.serviceaccount.identity.mesh.<trust-domain>`.
pub mod control_plane {
    /// The control plane's namespace.
    pub const NAMESPACE: &str = "mesh-system";
    /// The identity service's service account.
    pub const IDENTITY_SERVICE_ACCOUNT: &str = "mesh-identity";
    /// The destination service's service account.
    pub const DESTINATION_SERVICE_ACCOUNT: &str = "mesh-destination";
}

pub use convert::InvalidAddress;
