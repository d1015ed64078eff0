//! `mesh-controller`: the control plane. It runs the destination service, which tells
//! proxies where a service's endpoints are and who they are, fed by a discovery
//! backend (Kubernetes watches or a YAML file); when given an issuer, the
//! [`identity`] service, which signs proxies' certificates; and, when given a serving
//! certificate, the [`webhook`], which refuses invalid ServiceProfiles at admission.
//!
//! Start-up has two stages, as everywhere in mesh: [`Args`] (flags, with `MESH_*`
//! environment fallbacks; `flags.rs`) become a validated [`Config`] with no side
//! effects; then [`Config::build`] (`run.rs`) binds the ports and starts the tasks,
//! returning a [`Running`] controller that [`run`] waits on until a signal asks it to
//! stop.
//!
//! The core, [`index`] (with [`profile`], the file format and the CA), is the
//! `mesh-core` crate, which does no IO and cannot depend on kube, tonic or hyper; the
//! backends ([`k8s`], [`file`]) feed it and the gRPC layer ([`destination`]) reads it.

pub mod admin;
pub mod api;
pub mod destination;
pub mod file;
mod flags;
mod http_server;
pub mod identity;
pub mod k8s;
pub mod metrics;
mod process;
mod run;
mod tls_incoming;
pub mod webhook;

/// The pure core, under the paths it had before it became a crate of its own.
pub use mesh_core::{index, profile, yaml};

pub use flags::{
    config_from_args, Args, Backend, IdentityArgs, InvalidConfig, WebhookArgs, EXIT_USAGE,
};
pub use run::{init_tracing, run, Running};

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

/// A validated configuration. Building it binds and connects nothing.
#[derive(Clone, Debug)]
pub struct Config {
    pub discovery: Discovery,
    pub destination_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub cluster_domain: String,
    pub trust_domain: String,
    /// A filter in `RUST_LOG` syntax, known to parse.
    pub log: String,
    /// The supervisor this controller must not outlive, if any.
    pub parent_pid: Option<u32>,
    /// The identity service, when its issuer flags were given.
    pub identity: Option<IdentityConfig>,
    /// The ServiceProfile admission webhook, when its certificate flags were given.
    pub webhook: Option<webhook::WebhookConfig>,
}

/// The identity service's validated configuration: a CA whose credentials were read
/// and checked, and where tokens are checked.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub addr: SocketAddr,
    pub ca: Arc<identity::Ca>,
    pub tokens: IdentityTokens,
    /// The identity the service's own certificate names.
    pub server_name: String,
    /// The identity the destination service's certificate names (it serves TLS when
    /// identity is on).
    pub destination_server_name: String,
}

/// Who decides whose a token is.
#[derive(Clone, Debug)]
pub enum IdentityTokens {
    /// Local mode: a bootstrap token file.
    Bootstrap(Arc<identity::BootstrapTokens>),
    /// Cluster mode: Kubernetes TokenReview.
    TokenReview,
}

#[derive(Clone, Debug)]
pub enum Discovery {
    Kubernetes { control_plane_namespace: String },
    File(PathBuf),
}

// === impl Config ===

impl Config {
    /// A local control plane: discovery (and profiles) from `file`, every server on an
    /// ephemeral loopback port, cluster and trust domain `cluster.local`, identity and
    /// the webhook off (set those fields to turn them on). For tests, benchmarks and
    /// tools that run the controller in process.
    pub fn local(file: std::path::PathBuf) -> Self {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            discovery: Discovery::File(file),
            destination_addr: loopback,
            admin_addr: loopback,
            api_addr: loopback,
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            log: "info".into(),
            parent_pid: None,
            identity: None,
            webhook: None,
        }
    }
}
