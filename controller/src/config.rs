//! The controller's validated configuration: what [`crate::Args`] become, and what
//! [`Config::build`] starts.

use crate::{identity, scrape::ScrapeConfig, webhook};
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

/// A validated configuration. Building it binds and connects nothing.
#[derive(Clone, Debug)]
pub struct Config {
    pub discovery: Discovery,
    pub destination_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The tap API's address.
    pub tap_addr: SocketAddr,
    /// The identity the controller's own tap certificate names (the one client a
    /// proxy's tap server serves); `None`: `mesh-tap` in `mesh-system` of the trust
    /// domain.
    pub tap_identity: Option<String>,
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
    /// How the metrics API scrapes the proxies.
    pub scrape: ScrapeConfig,
    /// The names the dashboard and API answer besides localhost and IP addresses.
    pub dashboard_allowed_hosts: crate::dashboard::AllowedHosts,
    /// What the policy index compiles with beside the resources: the cluster-wide
    /// default inbound policy, the cluster networks (its trust domain is ignored: the
    /// controller's, `trust_domain`, is used).
    pub policy: mesh_core::policy::index::Config,
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
            tap_addr: loopback,
            tap_identity: None,
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            log: "info".into(),
            parent_pid: None,
            identity: None,
            webhook: None,
            scrape: ScrapeConfig::default(),
            dashboard_allowed_hosts: crate::dashboard::AllowedHosts::default(),
            policy: mesh_core::policy::index::Config::default(),
        }
    }
}
