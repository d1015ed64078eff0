//! `mesh-controller`: the control plane. It runs the destination service, which tells
//! proxies where a service's endpoints are and who they are, fed by a discovery
//! backend (Kubernetes watches or a YAML file); when given an issuer, the
//! [`identity`] service, which signs proxies' certificates; and, when given a serving
//! certificate, the [`webhook`], which refuses invalid ServiceProfiles at admission.
//!
//! Start-up has two stages, as everywhere in mesh: [`Args`] (flags, with `MESH_*`
//! environment fallbacks) become a validated [`Config`] with no side effects; then
//! [`Config::build`] binds the ports and starts the tasks, returning a [`Running`]
//! controller that [`run`] waits on until a signal asks it to stop.
//!
//! The core, [`index`] (with [`profile`], the file format and the CA), is the
//! `mesh-core` crate, which does no IO and cannot depend on kube, tonic or hyper; the
//! backends ([`k8s`], [`file`]) feed it and the gRPC layer ([`destination`]) reads it.

pub mod admin;
pub mod api;
pub mod destination;
pub mod file;
mod http_server;
pub mod identity;
pub mod k8s;
pub mod metrics;
mod process;
mod tls_incoming;
pub mod webhook;

/// The pure core, under the paths it had before it became a crate of its own.
pub use mesh_core::{index, profile, yaml};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use mesh_api::names::{is_dns_domain, is_dns_label};
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{admin::Admin, destination::DestinationService, index::Index, metrics::Metrics};

/// The exit code for bad flags or configuration (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// How long streams and connections get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The Kubernetes backend's restart backoff: it doubles from the first to the last.
const K8S_BACKOFF_MIN: Duration = Duration::from_secs(1);
const K8S_BACKOFF_MAX: Duration = Duration::from_secs(60);

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

    /// The cluster's DNS domain, the suffix of `<svc>.<ns>.svc.<domain>`.
    #[arg(
        long,
        env = "MESH_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    pub cluster_domain: String,

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

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "MESH_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,

    /// Exit when the process PID, which must be this one's parent, exits, however it
    /// exits (Linux's parent-death signal): for supervisors such as `mesh demo`.
    #[arg(long, env = "MESH_PARENT_PID", value_name = "PID", value_parser = clap::value_parser!(u32).range(2..))]
    pub parent_pid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Kubernetes,
    File,
}

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
    #[error("invalid --{flag} {value:?}: expected a DNS name such as cluster.local")]
    Domain { flag: &'static str, value: String },
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
    #[error("invalid --identity-lifetime {0:?}: expected at least 1m")]
    Lifetime(Duration),
    #[error("--{missing} is required with --{given}")]
    WebhookMissing {
        missing: &'static str,
        given: &'static str,
    },
    #[error(transparent)]
    Webhook(#[from] webhook::tls::InvalidPair),
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
    pub fn into_config(self) -> Result<Config, InvalidConfig> {
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
        let identity = identity_config(
            &discovery,
            &trust_domain,
            self.identity_addr,
            self.identity_trust_anchors,
            self.identity_issuer_cert,
            self.identity_issuer_key,
            self.identity_tokens,
            self.identity_lifetime,
            [self.identity_server_name, self.destination_server_name],
            &control_plane_namespace,
        )?;
        let webhook = webhook_config(self.webhook_addr, self.webhook_cert, self.webhook_key)?;
        Ok(Config {
            discovery,
            destination_addr: self.destination_addr,
            admin_addr: self.admin_addr,
            api_addr: self.api_addr,
            cluster_domain: domain("cluster-domain", self.cluster_domain)?,
            trust_domain,
            log: self.log,
            parent_pid: self.parent_pid,
            identity,
            webhook,
        })
    }
}

/// Checks that the webhook's certificate and key load, if it is enabled; the server
/// reads them again when it starts, and whenever they change.
fn webhook_config(
    addr: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<webhook::WebhookConfig>, InvalidConfig> {
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
    Ok(Some(webhook::WebhookConfig { addr, cert, key }))
}

/// Reads and checks the identity service's credentials, if it is enabled.
#[allow(clippy::too_many_arguments)]
fn identity_config(
    discovery: &Discovery,
    trust_domain: &str,
    addr: SocketAddr,
    anchors: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    tokens: Option<PathBuf>,
    lifetime: Duration,
    [server_name, destination_server_name]: [Option<String>; 2],
    control_plane_namespace: &str,
) -> Result<Option<IdentityConfig>, InvalidConfig> {
    let (anchors, cert, key) = match (anchors, cert, key) {
        (None, None, None) => {
            return match (tokens, server_name, destination_server_name) {
                (Some(_), _, _) => Err(InvalidConfig::IdentityUnused("identity-tokens")),
                (_, Some(_), _) => Err(InvalidConfig::IdentityUnused("identity-server-name")),
                (_, _, Some(_)) => Err(InvalidConfig::IdentityUnused("destination-server-name")),
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
        (Some(path), _) => {
            IdentityTokens::Bootstrap(Arc::new(identity::BootstrapTokens::load(&path).map_err(
                |message| InvalidConfig::IdentityInvalid {
                    flag: "identity-tokens",
                    path,
                    message,
                },
            )?))
        }
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

    /// Binds the servers and starts the backend. Must be called inside a runtime.
    pub async fn build(self) -> anyhow::Result<Running> {
        process::start_time();
        let index = Index::new(&self.cluster_domain, &self.trust_domain);
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();

        let destination = TcpListener::bind(self.destination_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot bind the destination server on {}",
                    self.destination_addr
                )
            })?;
        let admin = TcpListener::bind(self.admin_addr)
            .await
            .with_context(|| format!("cannot bind the admin server on {}", self.admin_addr))?;
        let api = TcpListener::bind(self.api_addr)
            .await
            .with_context(|| format!("cannot bind the API server on {}", self.api_addr))?;
        let destination_addr = destination.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let api_addr = api.local_addr()?;
        tracing::info!(destination = %destination_addr, admin = %admin_addr, api = %api_addr, "listening");

        // With identity on, discovery is served over TLS too, with the CA's certificate.
        let destination_tls = match &self.identity {
            Some(id) => Some(
                identity::tls::self_issued_server(id.ca.clone(), &id.destination_server_name)
                    .map_err(|e| anyhow::anyhow!("destination service: {e}"))?,
            ),
            None => None,
        };
        let identity = match self.identity {
            Some(identity) => {
                Some(start_identity(identity, Arc::clone(&metrics), shutdown.clone()).await?)
            }
            None => None,
        };
        let identity_addr = identity.as_ref().map(|(addr, _)| *addr);

        let webhook_reviews = Arc::new(webhook::Reviews::default());
        let webhook = match self.webhook {
            Some(config) => Some({
                metrics.export(webhook_reviews.clone());
                start_webhook(
                    config,
                    &self.cluster_domain,
                    Arc::clone(&webhook_reviews),
                    shutdown.clone(),
                )
                .await?
            }),
            None => None,
        };
        let webhook_addr = webhook.as_ref().map(|(addr, _)| *addr);

        let backend = match self.discovery {
            Discovery::File(path) => {
                tracing::info!(file = %path.display(), "file discovery");
                tokio::spawn(file::run(
                    path,
                    index.clone(),
                    Arc::clone(&metrics),
                    shutdown.clone(),
                ))
            }
            Discovery::Kubernetes {
                control_plane_namespace,
            } => tokio::spawn(run_kubernetes(
                index.clone(),
                control_plane_namespace,
                shutdown.clone(),
            )),
        };
        let admin_task = tokio::spawn(
            Admin {
                index: index.clone(),
                metrics: Arc::clone(&metrics),
            }
            .serve(admin, shutdown.clone()),
        );
        let api_task = tokio::spawn(api::serve(api, shutdown.clone()));
        let service =
            DestinationService::new(index.clone(), Arc::clone(&metrics), shutdown.clone());
        let server = tokio::spawn(destination::serve(
            destination,
            service,
            destination_tls,
            shutdown.clone(),
        ));

        let mut tasks = vec![backend, admin_task, api_task];
        tasks.extend(identity.map(|(_, task)| task));
        tasks.extend(webhook.map(|(_, task)| task));
        Ok(Running {
            destination_addr,
            admin_addr,
            api_addr,
            identity_addr,
            webhook_addr,
            webhook_reviews,
            index,
            metrics,
            shutdown,
            server,
            tasks,
        })
    }
}

/// Binds the identity server and starts it; a failure of the server later is logged.
async fn start_identity(
    config: IdentityConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let tokens: Arc<dyn identity::TokenValidator> = match config.tokens {
        IdentityTokens::Bootstrap(tokens) => tokens,
        IdentityTokens::TokenReview => {
            let client = kube::Client::try_default().await.context(
                "cannot create a Kubernetes client for TokenReview (KUBECONFIG or in-cluster)",
            )?;
            Arc::new(identity::TokenReview::new(client))
        }
    };
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot bind the identity server on {}", config.addr))?;
    let addr = listener.local_addr()?;
    let tls = identity::tls::self_issued_server(config.ca.clone(), &config.server_name)
        .map_err(|e| anyhow::anyhow!("identity service: {e}"))?;
    tracing::info!(identity = %addr, trust_domain = config.ca.trust_domain(), server_name = %config.server_name, "listening (TLS)");
    let service = identity::IdentityService::new(config.ca, tokens, metrics);
    let task = tokio::spawn(async move {
        if let Err(error) = identity::service::serve(listener, service, tls, shutdown).await {
            tracing::error!(%error, "identity server failed");
        }
    });
    Ok((addr, task))
}

/// Loads the webhook's certificate, binds its server and starts it.
async fn start_webhook(
    config: webhook::WebhookConfig,
    cluster_domain: &str,
    reviews: Arc<webhook::Reviews>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let provider = webhook::tls::provider();
    let cert = webhook::tls::ReloadingCert::new(config.cert, config.key, Arc::clone(&provider))?;
    let tls = webhook::tls::server_config(provider, Arc::new(cert))
        .context("cannot configure the webhook's TLS")?;
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot bind the webhook server on {}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(webhook = %addr, path = webhook::PATH, "listening");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let service = webhook::Webhook::new(cluster_domain, reviews);
    let task = tokio::spawn(webhook::serve(listener, acceptor, service, shutdown));
    Ok((addr, task))
}

/// A started controller.
pub struct Running {
    pub destination_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The identity server's address, when it runs.
    pub identity_addr: Option<SocketAddr>,
    /// The admission webhook's address, when it runs.
    pub webhook_addr: Option<SocketAddr>,
    /// The webhook's review counts (zero while it is off).
    pub webhook_reviews: Arc<webhook::Reviews>,
    pub index: Index,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Asks everything to stop: streams end, listeners close, the backend stops.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the destination server to end (after [`shutdown`](Self::shutdown),
    /// or on a server error), then stops the rest.
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = match self.server.await {
            Ok(result) => result.context("destination server failed"),
            Err(join) => Err(anyhow::Error::new(join).context("destination server panicked")),
        };
        self.shutdown.cancel();
        for task in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("a task did not stop within the grace period");
            }
        }
        result
    }
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = config.build().await?;
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    let stopping = running.shutdown.clone();
    // Streams end at once on shutdown; a connection that still lingers past the grace
    // period does not hold the process.
    tokio::select! {
        result = running.wait() => result,
        () = async {
            stopping.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open after the grace period; exiting");
            Ok(())
        }
    }
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the controller");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the Kubernetes backend, restarting it with jittered exponential backoff when
/// it fails. Its watches restart themselves; this loop only catches what they give up
/// on (a client that cannot be built, an API server that went away for good).
async fn run_kubernetes(index: Index, control_plane_ns: String, shutdown: CancellationToken) {
    use rand::Rng as _;
    index.expect(&index::Resource::ALL);
    let mut backoff = K8S_BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let attempt = async {
            let client = kube::Client::try_default()
                .await
                .context("cannot create a Kubernetes client (KUBECONFIG or in-cluster)")?;
            k8s::run(client, index.clone(), control_plane_ns.clone()).await
        };
        let result = tokio::select! {
            result = attempt => result,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(()) => tracing::warn!("kubernetes backend stopped; restarting"),
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "kubernetes backend failed; restarting"
            ),
        }
        // A backend that ran for a while earned a fresh, short backoff.
        if started.elapsed() > K8S_BACKOFF_MAX {
            backoff = K8S_BACKOFF_MIN;
        }
        let jitter = rand::thread_rng().gen_range(0.5..1.0);
        let delay = backoff.mul_f64(jitter);
        backoff = (backoff * 2).min(K8S_BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
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

/// Installs the tracing subscriber (stderr, the `--log` filter), which never blocks
/// and never fails, whatever stderr is; keep the guard until the end of `main`.
pub fn init_tracing(config: &Config) -> mesh_rt::log::LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    mesh_rt::log::init(filter)
}

#[cfg(test)]
mod tests;
