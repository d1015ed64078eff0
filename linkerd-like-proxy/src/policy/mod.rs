//! Inbound authorization policy: what the controller's `mesh.policy.InboundPolicies`
//! says of each inbound port, followed per port (`client.rs`) and enforced
//! (`enforce.rs`).
//!
//! The compiled policy and the decision are `mesh_api::policy::decide`'s, re-exported
//! here under their old names: `mesh policy check` runs the same code on the same
//! message, so the dry run and the proxy cannot disagree. What is the proxy's alone
//! stays here: how a port's forced protocol maps onto detection ([`forced_http`]).

pub(crate) mod client;
pub mod enforce;

pub use self::client::{Policies, PortPolicy};

pub use mesh_api::policy::decide::{
    request_host, Authz, Client, HttpDecision, InvalidPolicy, IpRange, Meta, Policy, Protocol,
    Route, Verdict,
};
pub use mesh_api::policy::{Cidr, DefaultPolicy, DEFAULT_CLUSTER_NETWORKS};

/// The HTTP protocol a policy's protocol forces, if any (gRPC is HTTP/2).
pub(crate) fn forced_http(p: Protocol) -> Option<crate::detect::Protocol> {
    match p {
        Protocol::Http1 => Some(crate::detect::Protocol::Http1),
        Protocol::Http2 | Protocol::Grpc => Some(crate::detect::Protocol::Http2),
        Protocol::Detect | Protocol::Opaque => None,
    }
}
