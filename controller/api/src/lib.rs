//! `mesh-api`: what mesh's proxy, controller and CLI say to each other, and the rules
//! both sides of a conversation must read the same way.
//!
//! - The protobuf messages (package `mesh.*`, sources in `proto/`), generated at build
//!   time by protox and tonic-prost-build, so what is compiled is always what the
//!   `.proto` files say; with the `grpc` feature (the default), their tonic clients
//!   and servers and [`tls::connect_lazy`] too. Without it the crate has no tonic, no
//!   hyper and no tokio: what the controller's pure core depends on.
//! - Conversions between wire addresses and `std::net` ([`InvalidAddress`]).
//! - Rules written once: [`names`] (identities in both forms, DNS labels),
//!   [`duration`] (Go's syntax, for every flag, variable and field), [`path_regex`]
//!   (what a route's `pathRegex` matches), [`prom`] (the one reader of the Prometheus
//!   text format the binaries expose), and [`control_plane`] (the control plane's own
//!   names).

#![allow(unreachable_pub, clippy::all)]

pub mod net {
    include!(concat!(env!("OUT_DIR"), "/mesh.net.rs"));
}

pub mod destination {
    include!(concat!(env!("OUT_DIR"), "/mesh.destination.rs"));
}

pub mod identity {
    include!(concat!(env!("OUT_DIR"), "/mesh.identity.rs"));
}

pub mod policy {
    include!(concat!(env!("OUT_DIR"), "/mesh.policy.rs"));

    pub mod decide;
    mod defaults;
    pub use defaults::{
        any_identity, default_meta, unauthenticated, Cidr, DefaultPolicy, DEFAULT_CLUSTER_NETWORKS,
    };
}

pub mod tap {
    include!(concat!(env!("OUT_DIR"), "/mesh.tap.rs"));

    mod filter;
    pub use filter::HttpFilter;
}

mod convert;
pub mod duration;
pub mod names;
pub mod path_regex;
pub mod prom;
#[cfg(feature = "grpc")]
pub mod tls;

/// The control plane's names that proxies and controller must agree on: a proxy
/// verifies the identity and destination services' certificates, and its tap
/// server the tap service's client certificate, against
/// `<account>.<namespace>.serviceaccount.identity.mesh.<trust-domain>`.
pub mod control_plane {
    /// The control plane's namespace.
    pub const NAMESPACE: &str = "mesh-system";
    /// The identity service's service account.
    pub const IDENTITY_SERVICE_ACCOUNT: &str = "mesh-identity";
    /// The destination service's service account.
    pub const DESTINATION_SERVICE_ACCOUNT: &str = "mesh-destination";
    /// The tap service's service account: the only client a proxy's tap server
    /// serves (`MESH_PROXY_TAP_SVC_NAME`'s default).
    pub const TAP_SERVICE_ACCOUNT: &str = "mesh-tap";

    /// The label naming which part of the control plane a pod runs, by which `mesh`
    /// finds the controller's pods to port-forward to in a cluster (`mesh stat`, `mesh
    /// tap`, ... reach its APIs that way, as Linkerd's CLI does). The install manifests
    /// (issue 13) put it on the controller's pod template; the name follows Linkerd's
    /// `linkerd.io/control-plane-component`.
    pub const COMPONENT_LABEL: &str = "mesh.rs/control-plane-component";
    /// [`COMPONENT_LABEL`]'s value on the controller's pods.
    pub const CONTROLLER_COMPONENT: &str = "controller";
    /// The controller's HTTP API port (metrics API, diagnostics, version).
    pub const API_PORT: u16 = 8084;
    /// The controller's tap API port (gRPC).
    pub const TAP_PORT: u16 = 8088;
    /// The controller's admin port (`/ready`, `/live`, `/metrics`; `--admin-addr`).
    pub const ADMIN_PORT: u16 = 9990;

    /// The identity a control-plane service's certificate names:
    /// `<account>.<namespace>.serviceaccount.identity.mesh.<trust-domain>`.
    pub fn service_identity(account: &str, namespace: &str, trust_domain: &str) -> String {
        crate::names::ServiceAccount::new(namespace, account).identity(trust_domain)
    }
}

pub use convert::InvalidAddress;
