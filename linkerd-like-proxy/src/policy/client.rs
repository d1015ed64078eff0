//! The policy client: one `mesh.policy.InboundPolicies/Watch` stream per inbound port,
//! each port's current policy published in a `watch` channel that connections read.
//!
//! - **Eager ports** (`MESH_PROXY_INBOUND_PORTS`, the pod's container ports) are
//!   watched from start-up; any other port from its first connection, which waits for
//!   the controller's first answer at most `MESH_PROXY_POLICY_TIMEOUT` (as discovery's
//!   first use does), then goes on under the default. Connections never wait after
//!   that. Ports are never forgotten: there are at most as many as the pod listens on.
//! - **The outage rule**: a failed stream is re-opened with discovery's backoff (full
//!   jitter); the last policy stays in force meanwhile; a port never answered keeps
//!   the configured default (`MESH_PROXY_INBOUND_DEFAULT_POLICY`).
//! - **A bad update** (one that does not compile, e.g. an authorization without
//!   networks or a bad regex) is refused with a warning; the last good policy stays.
//! - A port the controller refuses (`INVALID_ARGUMENT`) keeps the default for good.

use super::{Client, Policy};
use crate::{
    discover::{follow, Backoff},
    metrics::{AuthzRecent, Metrics},
};
use mesh_api::policy::{inbound_policies_client::InboundPoliciesClient, PortSpec};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};
use tokio::{sync::watch, task::AbortHandle, time::Instant};
use tonic::{transport::Channel, Code};

/// The proxy's inbound policies, one watch per port.
pub struct Policies {
    client: InboundPoliciesClient<Channel>,
    workload: Arc<str>,
    default: Arc<Policy>,
    timeout: Duration,
    ports: Mutex<HashMap<u16, Arc<PortWatch>>>,
    loopback_is_local: bool,
}

struct PortWatch {
    rx: watch::Receiver<Arc<Policy>>,
    /// Whether the controller has answered (or refused the port for good).
    known: Arc<AtomicBool>,
    /// Until when a connection waits for the first answer.
    deadline: Instant,
    counts: Arc<Counts>,
    task: AbortHandle,
}

/// Updates a port's watch applied and refused.
#[derive(Default)]
struct Counts {
    applied: AtomicU64,
    refused: AtomicU64,
}

impl Drop for PortWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection's view of its port's policy: the current one at every read.
#[derive(Clone, Debug)]
pub struct PortPolicy {
    pub port: u16,
    rx: watch::Receiver<Arc<Policy>>,
    /// Whether loopback clients are the pod itself (transparent mode).
    loopback_is_local: bool,
    /// The authorization series the connection's requests were counted in last.
    counters: Arc<AuthzRecent>,
}

impl PortPolicy {
    /// The client as the policy sees it.
    pub fn client<'a>(&self, addr: SocketAddr, id: Option<&'a Arc<str>>) -> Client<'a> {
        let ip = addr.ip().to_canonical();
        Client {
            ip,
            id: id.map(|i| &**i),
            local: self.loopback_is_local && ip.is_loopback(),
        }
    }

    /// The authorization series the connection's requests were counted in last.
    pub(crate) fn counters(&self) -> &AuthzRecent {
        &self.counters
    }

    /// The port's policy now.
    pub fn current(&self) -> Arc<Policy> {
        self.rx.borrow().clone()
    }

    /// Waits for the next update, which is returned; pending forever once the port's
    /// watch is gone (the proxy shuts down).
    pub async fn changed(&mut self) -> Arc<Policy> {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.rx.borrow_and_update().clone()
    }

    /// A fixed policy, for tests and benchmarks.
    pub fn fixed(port: u16, policy: Policy) -> Self {
        let (tx, rx) = watch::channel(Arc::new(policy));
        // The sender stays alive (and with it the receiver's `changed` pending).
        std::mem::forget(tx);
        Self {
            port,
            rx,
            loopback_is_local: true,
            counters: Arc::default(),
        }
    }
}

impl Policies {
    /// The policy client over `channel` (the destination service's), for `workload`
    /// (`{"ns","pod"}` JSON), starting the watches of `eager` ports now. Must be
    /// called within the runtime.
    /// `loopback_is_local`: whether a loopback client is the pod itself (transparent
    /// mode), which is always allowed.
    pub(crate) fn new(
        channel: Channel,
        config: &crate::config::PolicyConfig,
        metrics: Metrics,
        loopback_is_local: bool,
    ) -> Self {
        let default = Arc::new(
            config
                .default_policy()
                .expect("the configuration checked the default policy"),
        );
        metrics.authz_enable();
        tracing::info!(
            workload = %config.workload,
            default = %default.server.name,
            ports = ?config.ports,
            "inbound policy on"
        );
        let this = Self {
            client: InboundPoliciesClient::new(channel),
            workload: config.workload.as_str().into(),
            default,
            timeout: config.timeout,
            ports: Mutex::default(),
            loopback_is_local,
        };
        for port in &config.ports {
            this.watch(*port);
        }
        this
    }

    fn watch(&self, port: u16) -> Arc<PortWatch> {
        let mut ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        ports
            .entry(port)
            .or_insert_with(|| {
                let (tx, rx) = watch::channel(self.default.clone());
                let known = Arc::new(AtomicBool::new(false));
                let counts = Arc::new(Counts::default());
                let task = tokio::spawn(run(
                    tx,
                    self.client.clone(),
                    (self.workload.clone(), port),
                    known.clone(),
                    counts.clone(),
                ))
                .abort_handle();
                Arc::new(PortWatch {
                    rx,
                    known,
                    deadline: Instant::now() + self.timeout,
                    counts,
                    task,
                })
            })
            .clone()
    }

    /// The policy of inbound `port`, once the controller answered or its first
    /// answer's deadline passed.
    pub async fn port(&self, port: u16) -> PortPolicy {
        let w = self.watch(port);
        let mut rx = w.rx.clone();
        if !w.known.load(Ordering::Acquire) {
            let _ = tokio::time::timeout_at(w.deadline, rx.changed()).await;
        }
        PortPolicy {
            port,
            rx,
            loopback_is_local: self.loopback_is_local,
            counters: Arc::default(),
        }
    }

    /// Updates applied and refused on `port` so far, if it is watched.
    pub fn updates(&self, port: u16) -> Option<(u64, u64)> {
        let ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
        let w = ports.get(&port)?;
        Some((
            w.counts.applied.load(Ordering::Relaxed),
            w.counts.refused.load(Ordering::Relaxed),
        ))
    }

    /// The default policy, in force where the controller never answered.
    pub fn default_policy(&self) -> &Arc<Policy> {
        &self.default
    }
}

/// One port's watch, until the proxy exits (or the controller refuses the port).
async fn run(
    tx: watch::Sender<Arc<Policy>>,
    mut client: InboundPoliciesClient<Channel>,
    (workload, port): (Arc<str>, u16),
    known: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let mut backoff = Backoff::default();
    // Whether the last stream worked, so that an outage is logged once, not per retry.
    let mut healthy = true;
    loop {
        let req = PortSpec {
            workload: workload.to_string(),
            port: port.into(),
        };
        let status = follow(client.watch(req).await, |msg| match Policy::from_proto(&msg) {
            Ok(policy) => {
                backoff.reset();
                healthy = true;
                tracing::debug!(port, server = %policy.server.display(), "inbound policy updated");
                tx.send_replace(Arc::new(policy));
                known.store(true, Ordering::Release);
                counts.applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                let server = msg.server.as_ref().map(|s| s.name.as_str());
                tracing::warn!(port, ?server, %error, "refused an inbound policy update; keeping the last good policy");
            }
        })
        .await;
        match status {
            Some(s) if s.code() == Code::InvalidArgument => {
                tracing::warn!(
                    port,
                    message = s.message(),
                    "the policy service refuses this port; it keeps the default policy"
                );
                known.store(true, Ordering::Release);
                return;
            }
            Some(s) if healthy => tracing::warn!(
                port,
                code = ?s.code(),
                message = s.message(),
                "policy stream failed; keeping the last policy and reconnecting"
            ),
            Some(s) => {
                tracing::debug!(port, code = ?s.code(), message = s.message(), "policy stream failed again")
            }
            None => tracing::debug!(port, "policy stream ended; reconnecting"),
        }
        healthy = false;
        let wait = backoff.next(&mut rand::thread_rng());
        tokio::time::sleep(wait).await;
    }
}
