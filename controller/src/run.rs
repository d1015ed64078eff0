//! Building and running the controller: [`Config::build`] binds the ports and starts
//! the servers and the discovery backend, returning a [`Running`] controller that
//! [`run`] waits on until a signal asks it to stop.

use crate::{
    admin::Admin,
    api,
    config::{Config, Discovery, IdentityConfig, IdentityTokens},
    destination,
    destination::DestinationService,
    file, identity,
    index::Index,
    k8s,
    metrics::Metrics,
    policy::{PolicyIndex, PolicyService},
    process, scrape, tap, webhook,
};
use anyhow::Context as _;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// How long streams and connections get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The Kubernetes backend's restart backoff: it doubles from the first to the last.
const K8S_BACKOFF_MIN: Duration = Duration::from_secs(1);
const K8S_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Config {
    /// Binds the servers and starts the backend. Must be called inside a runtime.
    pub async fn build(self) -> anyhow::Result<Running> {
        process::start_time();
        let index = Index::new(&self.cluster_domain, &self.trust_domain);
        let policy = PolicyIndex::new(mesh_core::policy::index::Config {
            trust_domain: self.trust_domain.clone(),
            ..self.policy.clone()
        });
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
        let tap_listener = TcpListener::bind(self.tap_addr)
            .await
            .with_context(|| format!("cannot bind the tap API server on {}", self.tap_addr))?;
        let tap_addr = tap_listener.local_addr()?;
        let destination_addr = destination.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let api_addr = api.local_addr()?;
        tracing::info!(destination = %destination_addr, admin = %admin_addr, api = %api_addr, tap = %tap_addr, "listening");
        let tap_client = tap_client(&self);
        let authorize: Option<Arc<dyn tap::Authorize>> = match &self.discovery {
            // Local mode: whoever reaches the port may tap.
            Discovery::File(_) => None,
            Discovery::Kubernetes { .. } => {
                let client = kube::Client::try_default().await.map_err(|e| {
                    tracing::error!(error = %e, "tap: no Kubernetes client to authorize callers with; every call will be refused");
                    format!("{e} (KUBECONFIG or in-cluster)")
                });
                Some(Arc::new(tap::KubeAuthorizer::new(client)))
            }
        };

        // With identity on, discovery is served over TLS too, with the CA's certificate.
        let destination_tls = match &self.identity {
            Some(id) => Some(
                identity::tls::self_issued_server(id.ca.clone(), &id.destination_server_name)
                    .map_err(|e| anyhow::anyhow!("destination service: {e}"))?,
            ),
            None => None,
        };
        let mut health = crate::health::Parts {
            ca: self.identity.as_ref().map(|id| id.ca.clone()),
            ..Default::default()
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
                    &metrics,
                    shutdown.clone(),
                )
                .await?
            }),
            None => None,
        };
        let webhook_addr = webhook.as_ref().map(|(addr, _, _)| *addr);
        health.webhook_cert = webhook.as_ref().map(|(_, cert, _)| cert.clone());

        let backend = match self.discovery {
            Discovery::File(path) => {
                tracing::info!(file = %path.display(), "file discovery");
                tokio::spawn(file::run(
                    path,
                    index.clone(),
                    policy.clone(),
                    Arc::clone(&metrics),
                    shutdown.clone(),
                ))
            }
            Discovery::Kubernetes {
                control_plane_namespace,
            } => {
                let status = Arc::new(k8s::Status::default());
                metrics.export(status.clone());
                health.kube = Some(status.clone());
                tokio::spawn(run_kubernetes(
                    index.clone(),
                    policy.clone(),
                    control_plane_namespace,
                    status,
                    shutdown.clone(),
                ))
            }
        };
        let admin_task = tokio::spawn(
            Admin {
                index: index.clone(),
                metrics: Arc::clone(&metrics),
            }
            .serve(admin, shutdown.clone()),
        );
        let store = Arc::new(scrape::Store::new(mesh_core::stats::Limits::for_interval(
            self.scrape.interval,
        )));
        metrics.export(store.clone());
        let scrape_task = tokio::spawn(scrape::run(
            index.clone(),
            Arc::clone(&store),
            self.scrape,
            shutdown.clone(),
        ));
        let tap_service =
            tap::TapService::new(index.clone(), tap_client, authorize, shutdown.clone());
        let streams = api::Streams::default();
        metrics.export(Arc::new(streams.clone()));
        let sources = api::Sources {
            store,
            index: index.clone(),
            scrape_timeout: self.scrape.timeout,
            tap: tap_service.clone(),
            allowed_hosts: self.dashboard_allowed_hosts.clone(),
            streams,
            health,
            policy: policy.clone(),
        };
        let api_task = tokio::spawn(api::serve(api, sources, shutdown.clone()));
        let tap_shutdown = shutdown.clone();
        let tap_task = tokio::spawn(async move {
            if let Err(error) = tap::serve(tap_listener, tap_service, tap_shutdown).await {
                tracing::error!(%error, "tap API server failed");
            }
        });
        let service =
            DestinationService::new(index.clone(), Arc::clone(&metrics), shutdown.clone());
        let policy_service =
            PolicyService::new(policy.clone(), Arc::clone(&metrics), shutdown.clone());
        let server = tokio::spawn(destination::serve(
            destination,
            service,
            policy_service,
            destination_tls,
            shutdown.clone(),
        ));

        let mut tasks = vec![backend, admin_task, api_task, scrape_task, tap_task];
        tasks.extend(identity.map(|(_, task)| task));
        tasks.extend(webhook.map(|(_, _, task)| task));
        Ok(Running {
            destination_addr,
            admin_addr,
            api_addr,
            tap_addr,
            identity_addr,
            webhook_addr,
            webhook_reviews,
            index,
            policy,
            metrics,
            shutdown,
            server,
            tasks,
        })
    }
}

/// The tap API's mesh TLS client: a certificate for the controller's tap identity
/// from its own CA, renewed before expiry; or why tap is off.
fn tap_client(config: &Config) -> Result<Arc<rustls::ClientConfig>, String> {
    let Some(identity) = &config.identity else {
        tracing::info!("tap is off: the controller runs without the identity service, whose CA issues its tap certificate");
        return Err("tap is off: the controller runs without the identity service (--identity-issuer-cert, --identity-issuer-key, --identity-trust-anchors), whose CA issues the certificate it taps proxies with".into());
    };
    let name = config.tap_identity.clone().unwrap_or_else(|| {
        mesh_api::control_plane::service_identity(
            mesh_api::control_plane::TAP_SERVICE_ACCOUNT,
            mesh_api::control_plane::NAMESPACE,
            identity.ca.trust_domain(),
        )
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let made = identity::SelfIssued::new(identity.ca.clone(), &name, provider)
        .and_then(|cert| tap::client_config(&identity.ca, Arc::new(cert)));
    match made {
        Ok(config) => {
            tracing::info!(identity = %name, "tap client certificate issued");
            Ok(config)
        }
        Err(error) => {
            tracing::error!(%error, identity = %name, "tap is off: cannot issue the tap client certificate");
            Err(format!(
                "tap is off: cannot issue the controller's tap certificate for {name}: {error}"
            ))
        }
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
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, Arc<webhook::tls::ReloadingCert>, JoinHandle<()>)> {
    let provider = webhook::tls::provider();
    let cert = Arc::new(webhook::tls::ReloadingCert::new(
        config.cert,
        config.key,
        Arc::clone(&provider),
    )?);
    let tls = webhook::tls::server_config(provider, cert.clone())
        .context("cannot configure the webhook's TLS")?;
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot bind the webhook server on {}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(webhook = %addr, path = webhook::PATH, "listening");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let mut service = webhook::Webhook::new(cluster_domain, reviews);
    if let Some(files) = config.inject {
        let inject = webhook::inject::Reloading::from_files(files)
            .map_err(|e| anyhow::anyhow!("the proxy injector's configuration: {e}"))?;
        let client = kube::Client::try_default()
            .await
            .context("the proxy injector needs a Kubernetes client (KUBECONFIG or in-cluster)")?;
        let counts = Arc::new(webhook::inject::Injections::default());
        metrics.export(counts.clone());
        let cluster = Arc::new(webhook::inject::KubeCluster::new(client));
        tracing::info!(path = webhook::INJECT_PATH, "proxy injector on");
        service = service.with_injector(Arc::new(webhook::inject::Injector::new(
            inject, cluster, counts,
        )));
    }
    let task = tokio::spawn(webhook::serve(listener, acceptor, service, shutdown));
    Ok((addr, cert, task))
}

/// A started controller.
pub struct Running {
    pub destination_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The tap API's address.
    pub tap_addr: SocketAddr,
    /// The identity server's address, when it runs.
    pub identity_addr: Option<SocketAddr>,
    /// The admission webhook's address, when it runs.
    pub webhook_addr: Option<SocketAddr>,
    /// The webhook's review counts (zero while it is off).
    pub webhook_reviews: Arc<webhook::Reviews>,
    pub index: Index,
    /// The policy index, as the backend keeps it.
    pub policy: PolicyIndex,
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
async fn run_kubernetes(
    index: Index,
    policy: PolicyIndex,
    control_plane_ns: String,
    status: Arc<k8s::Status>,
    shutdown: CancellationToken,
) {
    use rand::Rng as _;
    let mut backoff = K8S_BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let attempt = async {
            let client = k8s::client()
                .await
                .context("cannot create a Kubernetes client (KUBECONFIG or in-cluster)")?;
            k8s::run(
                client,
                index.clone(),
                policy.clone(),
                control_plane_ns.clone(),
                Arc::clone(&status),
            )
            .await
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

/// Installs the tracing subscriber (stderr, the `--log` filter), which never blocks
/// and never fails, whatever stderr is; keep the guard until the end of `main`.
pub fn init_tracing(config: &Config) -> mesh_rt::log::LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    mesh_rt::log::init(filter)
}
