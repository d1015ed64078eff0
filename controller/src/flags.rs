//! The controller's flags: clap [`Args`] (each with a `MESH_*` environment fallback),
//! and their validation into a [`Config`], which reads the files the flags name and
//! binds nothing.

use crate::{
    config::{Config, Discovery, IdentityConfig, IdentityTokens},
    identity,
    scrape::ScrapeConfig,
    webhook,
};
use clap::{Parser, ValueEnum};
use mesh_api::names::{is_dns_domain, is_dns_label};
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

/// The exit code for bad flags or configuration (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// The controller's flags. Each has an environment fallback, `MESH_<FLAG>`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "mesh-controller",
    version,
    about = "mesh's control plane: the destination and identity services, and the ServiceProfile admission webhook"
)]
pub struct Args {
    /// Where services and endpoints come from.
    #[arg(long, env = "MESH_BACKEND", value_enum, default_value_t = Backend::Kubernetes)]
    pub backend: Backend,

    /// The YAML file of the `file` backend.
    #[arg(long, env = "MESH_FILE", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// The destination gRPC server's address.
    #[arg(
        long,
        env = "MESH_DESTINATION_ADDR",
        default_value = "0.0.0.0:8086",
        value_name = "ADDR"
    )]
    pub destination_addr: SocketAddr,

    /// The admin server's address (`/metrics`, `/ready`, `/live`).
    #[arg(
        long,
        env = "MESH_ADMIN_ADDR",
        default_value = "0.0.0.0:9990",
        value_name = "ADDR"
    )]
    pub admin_addr: SocketAddr,

    /// The HTTP API's address (`/api/...`: what the CLI and the dashboard read).
    #[arg(
        long,
        env = "MESH_API_ADDR",
        default_value = "0.0.0.0:8084",
        value_name = "ADDR"
    )]
    pub api_addr: SocketAddr,

    /// A name the dashboard and API answer to besides localhost and IP addresses, with
    /// any port (repeatable, or comma-separated in the environment): e.g. an ingress's
    /// host in front of the controller. Any other `Host` is refused, against DNS
    /// rebinding.
    #[arg(
        long = "dashboard-allowed-host",
        env = "MESH_DASHBOARD_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub dashboard_allowed_hosts: Vec<String>,

    /// The tap API's address (`mesh.tap.TapApi/TapByResource`, gRPC; on with the
    /// identity service only, since the controller taps proxies with a certificate
    /// its CA issues). Loopback by default: callers send their Kubernetes bearer
    /// token, and the CLI reaches the API through a port-forward, which ends on the
    /// pod's loopback, so no token crosses the pod network in clear.
    #[arg(
        long,
        env = "MESH_TAP_ADDR",
        default_value = "127.0.0.1:8088",
        value_name = "ADDR"
    )]
    pub tap_addr: SocketAddr,

    /// The cluster's DNS domain, the suffix of `<svc>.<ns>.svc.<domain>`.
    #[arg(
        long,
        env = "MESH_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    pub cluster_domain: String,

    /// The cluster-wide default inbound policy, for ports no `Server` selects on pods
    /// without the `config.mesh.rs/default-inbound-policy` annotation (nor their
    /// namespace): all-unauthenticated, all-authenticated, cluster-authenticated,
    /// cluster-unauthenticated, deny or audit.
    #[arg(
        long,
        env = "MESH_DEFAULT_INBOUND_POLICY",
        default_value = "all-unauthenticated",
        value_name = "POLICY"
    )]
    pub default_inbound_policy: String,

    /// The cluster's pod and node networks, comma-separated CIDRs: what the
    /// `cluster-*` default policies allow.
    #[arg(
        long,
        env = "MESH_CLUSTER_NETWORKS",
        default_value = mesh_core::policy::DEFAULT_CLUSTER_NETWORKS,
        value_name = "CIDRS"
    )]
    pub cluster_networks: String,

    /// The domain identities are named in.
    #[arg(
        long,
        env = "MESH_TRUST_DOMAIN",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    pub trust_domain: String,

    /// The namespace of this control plane; pods labelled with it are meshed.
    #[arg(
        long,
        env = "MESH_CONTROL_PLANE_NAMESPACE",
        default_value = "mesh-system",
        value_name = "NS"
    )]
    pub control_plane_namespace: String,

    #[command(flatten)]
    pub identity: IdentityArgs,

    #[command(flatten)]
    pub webhook: WebhookArgs,

    /// How often the metrics API scrapes every meshed proxy's `/metrics` (a Go
    /// duration, at least 1s).
    #[arg(
        long,
        env = "MESH_METRICS_SCRAPE_INTERVAL",
        default_value = "10s",
        value_name = "DURATION",
        value_parser = mesh_api::duration::parse
    )]
    pub metrics_scrape_interval: Duration,

    /// How long one scrape may take (a Go duration, at most the interval).
    #[arg(
        long,
        env = "MESH_METRICS_SCRAPE_TIMEOUT",
        default_value = "5s",
        value_name = "DURATION",
        value_parser = mesh_api::duration::parse
    )]
    pub metrics_scrape_timeout: Duration,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "MESH_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,

    /// Exit when the process PID, which must be this one's parent, exits, however it
    /// exits (Linux's parent-death signal): for supervisors such as `mesh demo`.
    #[arg(long, env = "MESH_PARENT_PID", value_name = "PID", value_parser = clap::value_parser!(u32).range(2..))]
    pub parent_pid: Option<u32>,
}

/// The identity service's flags (`--identity-*`, `--destination-server-name`).
#[derive(Clone, Debug, clap::Args)]
pub struct IdentityArgs {
    /// The identity gRPC server's address (served only with the issuer flags).
    #[arg(
        long,
        env = "MESH_IDENTITY_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    pub identity_addr: SocketAddr,

    /// PEM trust anchors the issuer certificate must chain to.
    #[arg(long, env = "MESH_IDENTITY_TRUST_ANCHORS", value_name = "PATH")]
    pub identity_trust_anchors: Option<PathBuf>,

    /// PEM issuer certificate (ECDSA P-256 CA). With --identity-issuer-key, this turns
    /// the identity service on.
    #[arg(long, env = "MESH_IDENTITY_ISSUER_CERT", value_name = "PATH")]
    pub identity_issuer_cert: Option<PathBuf>,

    /// PEM (PKCS#8) private key of the issuer certificate.
    #[arg(long, env = "MESH_IDENTITY_ISSUER_KEY", value_name = "PATH")]
    pub identity_issuer_key: Option<PathBuf>,

    /// Local mode: a file of `<token> <namespace>/<serviceaccount>` lines. Without it,
    /// tokens are checked with Kubernetes TokenReview (kubernetes backend only).
    #[arg(long, env = "MESH_IDENTITY_TOKENS", value_name = "PATH")]
    pub identity_tokens: Option<PathBuf>,

    /// How long issued certificates live, at least 1m (a Go duration: `24h`, `90m`).
    #[arg(
        long,
        env = "MESH_IDENTITY_LIFETIME",
        default_value = "24h",
        value_name = "DURATION",
        value_parser = mesh_api::duration::parse
    )]
    pub identity_lifetime: Duration,

    /// The identity the identity service's own certificate names, which proxies
    /// verify before sending their token (default:
    /// `mesh-identity.<control-plane-namespace>.serviceaccount.identity.mesh.<trust-domain>`).
    #[arg(long, env = "MESH_IDENTITY_SERVER_NAME", value_name = "NAME")]
    pub identity_server_name: Option<String>,

    /// With the identity service on, the destination service is served over TLS too,
    /// with a certificate for this identity, which proxies verify (default:
    /// `mesh-destination.<control-plane-namespace>.serviceaccount.identity.mesh.<trust-domain>`).
    #[arg(long, env = "MESH_DESTINATION_SERVER_NAME", value_name = "NAME")]
    pub destination_server_name: Option<String>,
}

/// The admission webhook's flags (`--webhook-*`).
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// The admission webhook's HTTPS address (served only with --webhook-cert and
    /// --webhook-key).
    #[arg(
        long,
        env = "MESH_WEBHOOK_ADDR",
        default_value = "0.0.0.0:8443",
        value_name = "ADDR"
    )]
    pub webhook_addr: SocketAddr,

    /// PEM certificate chain the webhook serves (re-read when the file changes). With
    /// --webhook-key, this turns the ServiceProfile admission webhook on.
    #[arg(long, env = "MESH_WEBHOOK_CERT", value_name = "PATH")]
    pub webhook_cert: Option<PathBuf>,

    /// PEM private key of --webhook-cert (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "MESH_WEBHOOK_KEY", value_name = "PATH")]
    pub webhook_key: Option<PathBuf>,

    /// The install's values (the `mesh-config` ConfigMap's `values.yaml`): with the
    /// webhook's certificate, --identity-trust-anchors and the kubernetes backend,
    /// this turns the proxy injector (`POST /inject`) on. Re-read when it (or the
    /// anchors) change.
    #[arg(long, env = "MESH_INJECT_CONFIG", value_name = "PATH")]
    pub inject_config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Kubernetes,
    File,
}

/// A flag with a value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    #[error("--file (MESH_FILE) is required with --backend file")]
    MissingFile,
    #[error("--file (MESH_FILE) is only used with --backend file")]
    UnusedFile,
    #[error("cannot read --file {}", .path.display())]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --default-inbound-policy (MESH_DEFAULT_INBOUND_POLICY) {0:?}: {1}")]
    DefaultInboundPolicy(String, String),
    #[error("invalid --cluster-networks (MESH_CLUSTER_NETWORKS) {0:?}: {1}")]
    ClusterNetworks(String, String),
    #[error("invalid --{flag} {value:?}: expected a DNS name such as cluster.local")]
    Domain { flag: &'static str, value: String },
    #[error("{0}")]
    DashboardAllowedHost(String),
    #[error("invalid --control-plane-namespace {0:?}: expected a namespace name")]
    Namespace(String),
    #[error("--{0} is required with --identity-issuer-cert and --identity-issuer-key")]
    IdentityMissing(&'static str),
    #[error("--{0} is only used with --identity-issuer-cert and --identity-issuer-key")]
    IdentityUnused(&'static str),
    #[error("--identity-tokens is required with --backend file (TokenReview needs the kubernetes backend)")]
    IdentityTokensRequired,
    #[error("cannot read --{flag} {path}")]
    IdentityRead {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --{flag} {path}: {message}")]
    IdentityInvalid {
        flag: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "invalid --{flag} {name:?}: expected <serviceaccount>.<namespace>{}",
        mesh_api::names::identity_suffix(trust_domain)
    )]
    ServerName {
        flag: &'static str,
        name: String,
        trust_domain: String,
    },
    #[error("invalid --metrics-scrape-interval {0:?}: expected at least 1s")]
    ScrapeInterval(Duration),
    #[error("invalid --metrics-scrape-timeout {timeout:?}: expected more than zero and at most --metrics-scrape-interval ({interval:?})")]
    ScrapeTimeout {
        timeout: Duration,
        interval: Duration,
    },
    #[error("invalid --identity-lifetime {0:?}: expected at least 1m")]
    Lifetime(Duration),
    #[error("--{missing} is required with --{given}")]
    WebhookMissing {
        missing: &'static str,
        given: &'static str,
    },
    #[error(transparent)]
    Webhook(#[from] webhook::tls::InvalidPair),
    #[error("--inject-config needs {0}")]
    InjectNeeds(&'static str),
    #[error("invalid --inject-config {}: {message}", .path.display())]
    InjectConfig { path: PathBuf, message: String },
    #[error("invalid --log {value:?}")]
    Log {
        value: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
}

// === impl Args ===

impl Args {
    /// Validates the flags into a [`Config`].
    pub fn into_config(mut self) -> Result<Config, InvalidConfig> {
        let control_plane_namespace = self.control_plane_namespace.clone();
        let discovery = match (self.backend, self.file) {
            // A file missing at start is a typo, not a file yet to come: it would
            // leave a controller that never becomes ready and says why only in a log.
            (Backend::File, Some(path)) => match std::fs::File::open(&path) {
                Ok(_) => Discovery::File(path),
                Err(source) => return Err(InvalidConfig::FileUnreadable { path, source }),
            },
            (Backend::File, None) => return Err(InvalidConfig::MissingFile),
            (Backend::Kubernetes, Some(_)) => return Err(InvalidConfig::UnusedFile),
            (Backend::Kubernetes, None) => {
                if !is_dns_label(&self.control_plane_namespace) {
                    return Err(InvalidConfig::Namespace(self.control_plane_namespace));
                }
                Discovery::Kubernetes {
                    control_plane_namespace: self.control_plane_namespace,
                }
            }
        };
        let domain = |flag: &'static str, value: String| {
            let trimmed = value.trim_matches('.');
            if is_dns_domain(trimmed) {
                Ok(trimmed.to_string())
            } else {
                Err(InvalidConfig::Domain { flag, value })
            }
        };
        if let Err(source) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(InvalidConfig::Log {
                value: self.log,
                source,
            });
        }
        let trust_domain = domain("trust-domain", self.trust_domain)?;
        let cluster_domain = domain("cluster-domain", self.cluster_domain)?;
        let mut identity_args = self.identity;
        let inject = match self.webhook.inject_config.take() {
            None => None,
            Some(path) => {
                let anchors = identity_args.identity_trust_anchors.clone();
                // The injector alone needs the anchors, not the issuer.
                if identity_args.identity_issuer_cert.is_none()
                    && identity_args.identity_issuer_key.is_none()
                {
                    identity_args.identity_trust_anchors = None;
                }
                Some(inject_config(
                    path,
                    anchors,
                    &discovery,
                    &trust_domain,
                    &cluster_domain,
                )?)
            }
        };
        let identity =
            identity_args.into_config(&discovery, &trust_domain, &control_plane_namespace)?;
        let mut webhook = self.webhook.into_config()?;
        match (&mut webhook, inject) {
            (Some(webhook), inject) => webhook.inject = inject,
            (None, Some(_)) => {
                return Err(InvalidConfig::InjectNeeds(
                    "--webhook-cert and --webhook-key (the injector is served by the webhook)",
                ))
            }
            (None, None) => {}
        }
        let scrape = scrape_config(self.metrics_scrape_interval, self.metrics_scrape_timeout)?;
        let policy = mesh_core::policy::index::Config {
            default_policy: self.default_inbound_policy.parse().map_err(|e| {
                InvalidConfig::DefaultInboundPolicy(self.default_inbound_policy.clone(), e)
            })?,
            cluster_networks: mesh_core::policy::parse_networks(&self.cluster_networks)
                .map_err(|e| InvalidConfig::ClusterNetworks(self.cluster_networks.clone(), e))?,
            ..Default::default()
        };
        let dashboard_allowed_hosts =
            crate::dashboard::AllowedHosts::new(self.dashboard_allowed_hosts)
                .map_err(InvalidConfig::DashboardAllowedHost)?;
        Ok(Config {
            discovery,
            destination_addr: self.destination_addr,
            admin_addr: self.admin_addr,
            api_addr: self.api_addr,
            tap_addr: self.tap_addr,
            tap_identity: Some(mesh_api::control_plane::service_identity(
                mesh_api::control_plane::TAP_SERVICE_ACCOUNT,
                &control_plane_namespace,
                &trust_domain,
            )),
            cluster_domain,
            trust_domain,
            log: self.log,
            parent_pid: self.parent_pid,
            identity,
            webhook,
            scrape,
            dashboard_allowed_hosts,
            policy,
        })
    }
}

/// A scrape more often than every second would cost proxies more than it tells; a
/// timeout past the interval would let rounds overlap.
fn scrape_config(interval: Duration, timeout: Duration) -> Result<ScrapeConfig, InvalidConfig> {
    if interval < Duration::from_secs(1) {
        return Err(InvalidConfig::ScrapeInterval(interval));
    }
    if timeout.is_zero() || timeout > interval {
        return Err(InvalidConfig::ScrapeTimeout { timeout, interval });
    }
    Ok(ScrapeConfig { interval, timeout })
}

// === impl WebhookArgs ===

impl WebhookArgs {
    /// Checks that the webhook's certificate and key load, if it is enabled; the server
    /// reads them again when it starts, and whenever they change.
    fn into_config(self) -> Result<Option<webhook::WebhookConfig>, InvalidConfig> {
        let Self {
            webhook_addr: addr,
            webhook_cert: cert,
            webhook_key: key,
            inject_config: _,
        } = self;
        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(InvalidConfig::WebhookMissing {
                    missing: "webhook-key",
                    given: "webhook-cert",
                })
            }
            (None, Some(_)) => {
                return Err(InvalidConfig::WebhookMissing {
                    missing: "webhook-cert",
                    given: "webhook-key",
                })
            }
            (Some(cert), Some(key)) => (cert, key),
        };
        webhook::tls::load(&cert, &key, &webhook::tls::provider())?;
        Ok(Some(webhook::WebhookConfig {
            addr,
            cert,
            key,
            inject: None,
        }))
    }
}

/// Checks that the injector's values and trust anchors load (the injector reads
/// them again when it starts, and whenever they change).
fn inject_config(
    path: PathBuf,
    anchors: Option<PathBuf>,
    discovery: &Discovery,
    trust_domain: &str,
    cluster_domain: &str,
) -> Result<webhook::inject::InjectFiles, InvalidConfig> {
    if !matches!(discovery, Discovery::Kubernetes { .. }) {
        return Err(InvalidConfig::InjectNeeds(
            "--backend kubernetes (it looks up namespaces and owners)",
        ));
    }
    let anchors = anchors.ok_or(InvalidConfig::InjectNeeds(
        "--identity-trust-anchors (the proxies' trust anchors)",
    ))?;
    let files = webhook::inject::InjectFiles {
        values: path,
        anchors,
        trust_domain: trust_domain.to_string(),
        cluster_domain: cluster_domain.to_string(),
    };
    match files.load() {
        Ok(_) => Ok(files),
        Err(webhook::inject::LoadError::Values(message)) => Err(InvalidConfig::InjectConfig {
            path: files.values,
            message,
        }),
        Err(webhook::inject::LoadError::Anchors(message)) => Err(InvalidConfig::IdentityInvalid {
            flag: "identity-trust-anchors",
            path: files.anchors,
            message,
        }),
    }
}

// === impl IdentityArgs ===

impl IdentityArgs {
    /// Reads and checks the identity service's credentials, if it is enabled.
    fn into_config(
        self,
        discovery: &Discovery,
        trust_domain: &str,
        control_plane_namespace: &str,
    ) -> Result<Option<IdentityConfig>, InvalidConfig> {
        let Self {
            identity_addr: addr,
            identity_trust_anchors: anchors,
            identity_issuer_cert: cert,
            identity_issuer_key: key,
            identity_tokens: tokens,
            identity_lifetime: lifetime,
            identity_server_name: server_name,
            destination_server_name,
        } = self;
        let (anchors, cert, key) = match (anchors, cert, key) {
            (None, None, None) => {
                return match (tokens, server_name, destination_server_name) {
                    (Some(_), _, _) => Err(InvalidConfig::IdentityUnused("identity-tokens")),
                    (_, Some(_), _) => Err(InvalidConfig::IdentityUnused("identity-server-name")),
                    (_, _, Some(_)) => {
                        Err(InvalidConfig::IdentityUnused("destination-server-name"))
                    }
                    (None, None, None) => Ok(None),
                }
            }
            (Some(_), None, None) => {
                return Err(InvalidConfig::IdentityUnused("identity-trust-anchors"))
            }
            (None, _, _) => return Err(InvalidConfig::IdentityMissing("identity-trust-anchors")),
            (_, None, _) => return Err(InvalidConfig::IdentityMissing("identity-issuer-cert")),
            (_, _, None) => return Err(InvalidConfig::IdentityMissing("identity-issuer-key")),
            (Some(a), Some(c), Some(k)) => (a, c, k),
        };
        if lifetime < Duration::from_secs(60) {
            return Err(InvalidConfig::Lifetime(lifetime));
        }
        let name = |flag: &'static str, given: Option<String>, account: &str| {
            let name = given.map(|n| n.to_ascii_lowercase()).unwrap_or_else(|| {
                identity::tls::service_identity(account, control_plane_namespace, trust_domain)
            });
            match identity::ServiceAccount::from_identity(&name, trust_domain) {
                Some(_) => Ok(name),
                None => Err(InvalidConfig::ServerName {
                    flag,
                    name,
                    trust_domain: trust_domain.to_string(),
                }),
            }
        };
        let server_name = name(
            "identity-server-name",
            server_name,
            identity::tls::IDENTITY_SERVICE_ACCOUNT,
        )?;
        let destination_server_name = name(
            "destination-server-name",
            destination_server_name,
            identity::tls::DESTINATION_SERVICE_ACCOUNT,
        )?;
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| InvalidConfig::IdentityRead {
                flag,
                path: path.clone(),
                source,
            })
        };
        let anchors_pem = read("identity-trust-anchors", &anchors)?;
        let cert_pem = read("identity-issuer-cert", &cert)?;
        let key_pem = read("identity-issuer-key", &key)?;
        let ca = identity::Ca::new(
            trust_domain,
            lifetime,
            &cert_pem,
            &key_pem,
            &anchors_pem,
            std::time::SystemTime::now(),
        )
        .map_err(|e| {
            let (flag, path, message) = match e {
                identity::InvalidCa::Anchors(m) => ("identity-trust-anchors", anchors, m),
                identity::InvalidCa::IssuerCert(m) => ("identity-issuer-cert", cert, m),
                identity::InvalidCa::IssuerKey(m) => ("identity-issuer-key", key, m),
            };
            InvalidConfig::IdentityInvalid {
                flag,
                path,
                message,
            }
        })?;
        let tokens = match (tokens, discovery) {
            (Some(path), _) => IdentityTokens::Bootstrap(Arc::new(
                identity::BootstrapTokens::load(&path).map_err(|message| {
                    InvalidConfig::IdentityInvalid {
                        flag: "identity-tokens",
                        path,
                        message,
                    }
                })?,
            )),
            (None, Discovery::Kubernetes { .. }) => IdentityTokens::TokenReview,
            (None, Discovery::File(_)) => return Err(InvalidConfig::IdentityTokensRequired),
        };
        Ok(Some(IdentityConfig {
            addr,
            ca: Arc::new(ca),
            tokens,
            server_name,
            destination_server_name,
        }))
    }
}

/// Parses the command line into a [`Config`], or the exit code to leave with: 0 for
/// `--help` and `--version`, [`EXIT_USAGE`] for anything wrong (with a message on
/// stderr naming the flag).
pub fn config_from_args() -> Result<Config, std::process::ExitCode> {
    use std::process::ExitCode;
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return Err(if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    args.into_config().map_err(|error| {
        let mut message = format!("mesh-controller: {error}");
        if let Some(source) = std::error::Error::source(&error) {
            message.push_str(&format!(": {source}"));
        }
        mesh_rt::log::print_error(&message);
        ExitCode::from(EXIT_USAGE)
    })
}

#[cfg(test)]
mod tests;
