//! Outbound discovery: asks the destination service (the controller's `Get`) where a
//! destination's endpoints are, keeps the answer current, and gives the route layer
//! and the TCP forwarder an endpoint for each request or connection.
//!
//! What it keeps, and why:
//! - **One stream per destination**, shared by every connection and request to it: a
//!   destination is an `ip:port` (transparent mode: the original destination) or a
//!   request's `host:port` (explicit mode), and the cache maps it to a `Destination`.
//! - **Traffic does not wait on the controller**, except the first use of a
//!   destination, for at most `MESH_PROXY_DISCOVERY_TIMEOUT`; after that it goes where
//!   the client sent it until an answer comes, and never waits again.
//! - **The outage rule**: when the stream fails or the controller restarts, the last
//!   answer stays in force while the stream is re-opened with exponential backoff and
//!   full jitter; the new stream's first message replaces the state.
//! - **Idle destinations go**: one that no connection holds and no request used for
//!   `MESH_PROXY_DISCOVERY_IDLE_TIMEOUT` is dropped by the sweeper, which closes its
//!   stream and forgets its load estimates.
//!
//! Lifecycle: the [`Discovery`] cache owns an `Arc<Destination>` per destination; a transparent
//! connection holds another for its lifetime (so its requests need no lookup). A `Destination`
//! owns its resolution task: dropping the last `Arc<Destination>` aborts the task, which drops
//! the `Get` stream (the controller sees the stream reset). The task and the requests
//! in flight share the destination's state (`Endpoints`), so a request picked before a
//! destination was dropped still completes.

mod resolve;

pub(crate) use self::resolve::{follow, Backoff, DstProfile, ProfileState};
#[cfg(test)]
mod tests;

use crate::{
    balance::{self, Discovered, Endpoint, Load},
    config::{DiscoveryConfig, IdentityConfig},
    errors::{self, BoxError},
    metrics::{self, Metrics},
};
use mesh_api::destination::{self as api, destination_client::DestinationClient};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};
use tokio::{sync::watch, task::AbortHandle, time::Instant};
use tonic::transport::Channel;

/// A destination unused for this many sweeps (each half the idle timeout) has been
/// idle for at least the idle timeout and at most one and a half.
const IDLE_SWEEPS: u64 = 3;

/// The proxy's discovery client and its cache of destinations.
pub struct Discovery {
    client: DestinationClient<Channel>,
    context: Arc<str>,
    timeout: Duration,
    idle_timeout: Duration,
    cache: Mutex<Cache>,
    /// Ticks once per sweep; destinations remember the tick they were last used in.
    epoch: Arc<AtomicU64>,
    metrics: Metrics,
    /// The proxy's own listeners.
    listeners: Arc<[SocketAddr]>,
}

#[derive(Default)]
struct Cache {
    addrs: HashMap<SocketAddr, Arc<Destination>>,
    names: HashMap<Box<str>, Arc<Destination>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache holds no invariant a panic could break halfway.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the proxy knows about one destination (for tests and debugging).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No answer yet.
    Pending,
    /// The destination service does not know it: traffic goes where the client sent it.
    Unknown,
    /// Its endpoints, in no particular order; empty: it has none, requests fail.
    Endpoints(Vec<SocketAddr>),
}

impl Discovery {
    /// The discovery client, if `MESH_PROXY_DESTINATION_ADDR` is set. Nothing connects
    /// until the first lookup; must be called within the runtime. With `identity`, the
    /// destination service is reached over TLS. `listeners`: the proxy's own, which
    /// discovery is never asked about.
    pub(crate) fn new(
        config: Option<&DiscoveryConfig>,
        identity: Option<&IdentityConfig>,
        connect_timeout: Duration,
        metrics: Metrics,
        listeners: Arc<[SocketAddr]>,
    ) -> Option<Self> {
        let config = config?;
        let uri = config.addr.clone();
        let channel = control_channel(&uri, identity, connect_timeout)?;
        metrics.discovery().enable();
        tracing::info!(destination = %uri, tls = identity.is_some(), "outbound discovery on");
        Some(Self {
            client: DestinationClient::new(channel),
            context: config.context.as_str().into(),
            timeout: config.timeout,
            idle_timeout: config.idle_timeout,
            cache: Mutex::default(),
            epoch: Arc::default(),
            metrics,
            listeners,
        })
    }

    /// The destination for an outbound `ip:port`, unless the address is this host's:
    /// loopback, unspecified, multicast, or one of the proxy's own listeners (the
    /// controller knows nothing useful about those).
    pub(crate) fn for_addr(&self, addr: SocketAddr) -> Option<Arc<Destination>> {
        let ip = addr.ip().to_canonical();
        let local = ip.is_loopback() || ip.is_unspecified() || ip.is_multicast();
        if local || crate::io::is_listener(&self.listeners, addr) {
            return None;
        }
        Some(self.by_addr(addr))
    }

    /// The destination for an `ip:port`, resolving it from now on if it is new.
    pub(crate) fn by_addr(&self, addr: SocketAddr) -> Arc<Destination> {
        lock(&self.cache)
            .addrs
            .entry(addr)
            .or_insert_with(|| self.spawn(addr.to_string()))
            .clone()
    }

    /// The destination for a `host:port` name (lowercase, with its port), resolving it
    /// from now on if it is new.
    pub(crate) fn by_name(&self, name: &str) -> Arc<Destination> {
        let mut cache = lock(&self.cache);
        if let Some(d) = cache.names.get(name) {
            return d.clone();
        }
        let d = self.spawn(name.to_string());
        cache.names.insert(name.into(), d.clone());
        d
    }

    fn spawn(&self, path: String) -> Arc<Destination> {
        let shared = Arc::new(Endpoints {
            path: path.into(),
            state: watch::Sender::new(State::Pending),
            metrics: self.metrics.clone(),
        });
        let task = tokio::spawn(resolve::run(
            shared.clone(),
            self.client.clone(),
            self.context.clone(),
        ))
        .abort_handle();
        self.metrics.discovery().destinations(1);
        Arc::new(Destination {
            shared,
            client: self.client.clone(),
            context: self.context.clone(),
            timeout: self.timeout,
            profile: std::sync::OnceLock::new(),
            deadline: Instant::now() + self.timeout,
            last_used: AtomicU64::new(self.epoch.load(Relaxed)),
            epoch: self.epoch.clone(),
            task,
        })
    }

    /// How often [`Discovery::sweep`] should run.
    pub(crate) fn sweep_period(&self) -> Duration {
        (self.idle_timeout / 2).max(Duration::from_millis(10))
    }

    /// Drops destinations that no connection holds and nothing used for the idle
    /// timeout: their streams close and their state goes.
    pub(crate) fn sweep(&self) {
        let now = self.epoch.fetch_add(1, Relaxed) + 1;
        let keep = |d: &Arc<Destination>| {
            Arc::strong_count(d) > 1 || now.saturating_sub(d.last_used.load(Relaxed)) < IDLE_SWEEPS
        };
        let mut cache = lock(&self.cache);
        cache.addrs.retain(|_, d| keep(d));
        cache.names.retain(|_, d| keep(d));
    }

    /// What the proxy knows about `path` (`ip:port` or `host:port`), if it is
    /// resolving it.
    pub fn resolution(&self, path: &str) -> Option<Resolution> {
        let cache = lock(&self.cache);
        let dst = match path.parse::<SocketAddr>() {
            Ok(a) => cache.addrs.get(&a),
            Err(_) => cache.names.get(path),
        }?;
        Some(dst.shared.resolution())
    }

    /// How many destinations are being resolved.
    pub fn destinations(&self) -> usize {
        let cache = lock(&self.cache);
        cache.addrs.len() + cache.names.len()
    }
}

/// A lazy channel to the destination service at `uri` (which also serves the policy
/// API): TLS verified against the trust anchors when `identity` is on, since whoever
/// answers decides where traffic goes and whom the proxy lets in. `None` (logged) when
/// TLS cannot be configured.
pub(crate) fn control_channel(
    uri: &http::Uri,
    identity: Option<&IdentityConfig>,
    connect_timeout: Duration,
) -> Option<Channel> {
    let endpoint = tonic::transport::Endpoint::from(uri.clone())
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(10)))
        // PINGs find a controller that vanished without closing its connection, so
        // that streams fail and are re-opened instead of waiting forever.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    // (The `tcp_*` settings above apply to the plaintext connector; the TLS one sets
    // no-delay itself, and the HTTP/2 PINGs find a dead controller either way.)
    match identity {
        None => Some(endpoint.connect_lazy()),
        Some(id) => match crate::identity::control_plane_tls(id, &id.destination_name) {
            Ok((tls, name)) => Some(mesh_api::tls::connect_lazy(&endpoint, tls, name)),
            Err(error) => {
                tracing::error!(%error, "cannot configure TLS to the destination service");
                None
            }
        },
    }
}

// === impl Destination ===

/// One destination being resolved. Dropping the last handle stops the resolution.
pub(crate) struct Destination {
    shared: Arc<Endpoints>,
    client: DestinationClient<Channel>,
    context: Arc<str>,
    timeout: Duration,
    /// The profile stream, opened at the first HTTP request (opaque TCP needs none).
    profile: std::sync::OnceLock<ProfileWatch>,
    /// Until when a use waits for the first answer.
    deadline: Instant,
    last_used: AtomicU64,
    epoch: Arc<AtomicU64>,
    task: AbortHandle,
}

/// Where discovery sends one request or connection.
pub(crate) enum Resolved {
    /// Unknown to the destination service, or no answer in time: where the client
    /// sent it.
    Fallback,
    /// Known, with no endpoints: fail.
    NoEndpoints(Arc<str>),
    /// This endpoint.
    Endpoint(Balanced),
}

/// An endpoint chosen for one request or connection, with its destination, so that a
/// connect failure can be retried on another endpoint.
#[derive(Clone)]
pub(crate) struct Balanced {
    pub(crate) load: Load,
    pub(crate) dst: Arc<Endpoints>,
}

impl Destination {
    /// Chooses where one request or connection goes. Waits only while the first
    /// answer is pending, and never past the discovery timeout from the first use.
    pub(crate) async fn resolve(&self) -> Resolved {
        self.answered().await;
        self.shared.pick(None)
    }

    /// The destination to balance over, once discovery has answered (waiting as
    /// [`Destination::resolve`] does), when it knows the destination (with endpoints or
    /// without); `None` sends the request where the client sent it.
    pub(crate) async fn known(&self) -> Option<Arc<Endpoints>> {
        self.answered().await;
        let known = matches!(*self.shared.state.borrow(), State::Known(_));
        known.then(|| self.shared.clone())
    }

    /// Waits only while the first answer is pending, and never past the discovery
    /// timeout from the first use.
    async fn answered(&self) {
        self.last_used.store(self.epoch.load(Relaxed), Relaxed);
        if self.shared.is_pending() {
            let mut rx = self.shared.state.subscribe();
            let answered = rx.wait_for(|s| !matches!(s, State::Pending));
            let _ = tokio::time::timeout_at(self.deadline, answered).await;
        }
    }
}

/// A destination's profile stream and what it last said.
struct ProfileWatch {
    rx: watch::Receiver<ProfileState>,
    deadline: Instant,
    task: AbortHandle,
}

impl Destination {
    /// The destination's profile: opens its stream at the first call, and waits for
    /// the first answer no longer than the discovery timeout from then.
    pub(crate) async fn profile(&self) -> Option<Arc<DstProfile>> {
        let watch = self.profile.get_or_init(|| {
            let (tx, rx) = watch::channel(ProfileState::Pending);
            let task = tokio::spawn(resolve::run_profile(
                tx,
                self.client.clone(),
                self.shared.path.clone(),
                self.context.clone(),
            ))
            .abort_handle();
            ProfileWatch {
                rx,
                deadline: Instant::now() + self.timeout,
                task,
            }
        });
        if matches!(*watch.rx.borrow(), ProfileState::Pending) {
            let mut rx = watch.rx.clone();
            let answered = rx.wait_for(|s| !matches!(s, ProfileState::Pending));
            let _ = tokio::time::timeout_at(watch.deadline, answered).await;
        }
        match &*watch.rx.borrow() {
            ProfileState::Known(p) => p.clone(),
            ProfileState::Pending => None,
        }
    }

    /// The path discovery resolves: `ip:port` or `host:port`.
    pub(crate) fn path(&self) -> &Arc<str> {
        &self.shared.path
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl Balanced {
    /// Connects to this endpoint with `connect`. If it cannot be reached (so nothing
    /// was sent), it is penalized and one other endpoint of the destination tried:
    /// meshed after meshed only, plain after plain, since what is sent was prepared
    /// for one kind of peer. The one connect-failure rule, for HTTP requests and opaque
    /// connections alike. On failure, the error and the last endpoint tried.
    pub(crate) async fn connect<T, F, Fut>(
        self,
        meshed: impl Fn(&Load) -> bool,
        mut connect: F,
    ) -> Result<(T, Load), (BoxError, Load)>
    where
        F: FnMut(&Load) -> Fut,
        Fut: std::future::Future<Output = Result<T, BoxError>>,
    {
        let Balanced { load, dst } = self;
        let error = match connect(&load).await {
            Ok(c) => return Ok((c, load)),
            Err(e) if errors::is_connect(&*e) => e,
            Err(e) => return Err((e, load)),
        };
        load.penalize();
        let other = match dst.pick_other(load.addr()) {
            Some(o) if meshed(&o.load) == meshed(&load) => o,
            _ => return Err((error, load)),
        };
        drop(load);
        tracing::debug!(error = %errors::chain(&*error), retry = %other.load.addr(), "endpoint unreachable; trying another");
        match connect(&other.load).await {
            Ok(c) => Ok((c, other.load)),
            Err(e) => {
                if errors::is_connect(&*e) {
                    other.load.penalize();
                }
                Err((e, other.load))
            }
        }
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("path", &self.path)
            .finish()
    }
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("dst", &self.dst.path)
            .field("addr", &self.load.addr())
            .finish()
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(p) = self.profile.get() {
            p.task.abort();
        }
        self.shared.metrics.discovery().destinations(-1);
    }
}

// === impl Endpoints ===

/// A destination's current state, shared by its resolution task (the only writer)
/// and the requests using it.
pub(crate) struct Endpoints {
    path: Arc<str>,
    /// Readers hold the lock only to pick; the writer builds a new endpoint list
    /// outside it and swaps it in.
    state: watch::Sender<State>,
    metrics: Metrics,
}

#[derive(Debug)]
enum State {
    Pending,
    Unknown,
    Known(Vec<Arc<Endpoint>>),
}

impl State {
    fn len(&self) -> usize {
        match self {
            State::Known(e) => e.len(),
            _ => 0,
        }
    }
}

impl Endpoints {
    fn is_pending(&self) -> bool {
        matches!(*self.state.borrow(), State::Pending)
    }

    /// Chooses an endpoint other than `exclude`.
    pub(crate) fn pick(self: &Arc<Self>, exclude: Option<SocketAddr>) -> Resolved {
        let state = self.state.borrow();
        match &*state {
            State::Pending | State::Unknown => Resolved::Fallback,
            State::Known(endpoints) => match balance::pick(endpoints, exclude) {
                Some(load) => Resolved::Endpoint(Balanced {
                    load,
                    dst: self.clone(),
                }),
                None => Resolved::NoEndpoints(self.path.clone()),
            },
        }
    }

    /// Another endpoint than `not`, for a second attempt.
    pub(crate) fn pick_other(self: &Arc<Self>, not: SocketAddr) -> Option<Balanced> {
        match self.pick(Some(not)) {
            Resolved::Endpoint(b) => Some(b),
            _ => None,
        }
    }

    fn resolution(&self) -> Resolution {
        match &*self.state.borrow() {
            State::Pending => Resolution::Pending,
            State::Unknown => Resolution::Unknown,
            State::Known(e) => Resolution::Endpoints(e.iter().map(|e| e.addr()).collect()),
        }
    }

    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        match &*self.state.borrow() {
            State::Known(e) => e.clone(),
            _ => Vec::new(),
        }
    }

    fn set(&self, next: State) {
        let added = next.len() as i64;
        let old = self.state.send_replace(next);
        self.metrics.discovery().endpoints(added - old.len() as i64);
    }

    /// Applies one update from the destination service. `first`: the first message
    /// of a stream, which carries the whole state. Returns whether the message was
    /// such a state (an Add or NoEndpoints). Invalid parts are logged and skipped.
    fn apply(&self, update: api::Update, first: bool) -> bool {
        use api::update::Update as Kind;
        match update.update {
            Some(Kind::Add(set)) => {
                let mut found = Vec::with_capacity(set.endpoints.len());
                for ep in &set.endpoints {
                    let valid = endpoint_addr(ep).and_then(|a| {
                        // Traffic to this very pod never leaves it, and the pod's
                        // iptables do not send it to the inbound proxy: it goes to the
                        // application in plaintext, as Linkerd's does.
                        let id = endpoint_identity(ep)?.filter(|_| !is_this_host(a.ip()));
                        Ok((a, id))
                    });
                    match valid {
                        Ok((addr, identity)) => found.push(Discovered {
                            addr,
                            labels: metrics::dst_labels(&set.metric_labels, &ep.metric_labels),
                            identity,
                        }),
                        Err(error) => tracing::warn!(
                            dst = %self.path,
                            error,
                            "ignoring an invalid endpoint from the destination service"
                        ),
                    }
                }
                let next = balance::add(&self.endpoints(), found, first, Instant::now());
                tracing::debug!(dst = %self.path, endpoints = next.len(), "endpoints added");
                self.set(State::Known(next));
                true
            }
            Some(Kind::Remove(set)) => {
                if first {
                    tracing::debug!(dst = %self.path, "a stream began with a removal");
                }
                let mut gone = Vec::with_capacity(set.addrs.len());
                for a in &set.addrs {
                    match SocketAddr::try_from(a) {
                        Ok(a) => gone.push(a),
                        Err(e) => tracing::warn!(
                            dst = %self.path,
                            error = %e,
                            "ignoring an invalid removal from the destination service"
                        ),
                    }
                }
                if matches!(*self.state.borrow(), State::Known(_)) {
                    let next = balance::remove(&self.endpoints(), &gone);
                    tracing::debug!(dst = %self.path, endpoints = next.len(), "endpoints removed");
                    self.set(State::Known(next));
                }
                false
            }
            Some(Kind::NoEndpoints(n)) => {
                tracing::debug!(dst = %self.path, exists = n.exists, "no endpoints");
                self.set(if n.exists {
                    State::Known(Vec::new())
                } else {
                    State::Unknown
                });
                true
            }
            None => {
                tracing::warn!(dst = %self.path, "ignoring an empty update from the destination service");
                false
            }
        }
    }

    /// The destination service refuses this destination for good: its traffic goes
    /// where the client sent it.
    fn refused(&self) {
        self.set(State::Unknown);
    }
}

#[cfg(test)]
#[test]
fn only_this_hosts_own_addresses_are_local() {
    // Loopback is excluded: explicit-mode proxies on one machine still use mTLS.
    assert!(!is_this_host("127.0.0.1".parse().unwrap()));
    // Documentation addresses are nobody's.
    assert!(!is_this_host("192.0.2.1".parse().unwrap()));
    // An address of this host: the source it would use to reach elsewhere, if any.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    if probe.connect("192.0.2.1:9").is_ok() {
        let own = probe.local_addr().unwrap().ip();
        if !own.is_unspecified() {
            assert!(is_this_host(own), "{own}");
        }
    }
}

#[cfg(test)]
impl Endpoints {
    /// A destination known to have these endpoints, with no stream behind it.
    pub(crate) fn for_test(path: &str, endpoints: &[SocketAddr]) -> Arc<Self> {
        let found = endpoints
            .iter()
            .map(|&addr| Discovered {
                addr,
                labels: None,
                identity: None,
            })
            .collect();
        let state = State::Known(balance::add(&[], found, true, Instant::now()));
        Arc::new(Self {
            path: path.into(),
            state: watch::Sender::new(state),
            metrics: Metrics::new(),
        })
    }

    pub(crate) fn endpoint(&self, addr: SocketAddr) -> Option<Arc<Endpoint>> {
        self.endpoints().into_iter().find(|e| e.addr() == addr)
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        let len = self.state.borrow().len() as i64;
        self.metrics.discovery().endpoints(-len);
    }
}

/// The identity of a meshed endpoint's proxy, which its certificate must name. A name
/// that cannot be a TLS server name makes the endpoint invalid: sending its traffic in
/// plaintext instead would be a silent downgrade.
fn endpoint_identity(ep: &api::Endpoint) -> Result<Option<Arc<str>>, &'static str> {
    let Some(id) = ep.tls_identity.as_ref().filter(|i| !i.name.is_empty()) else {
        return Ok(None);
    };
    match rustls_pki_types::ServerName::try_from(id.name.as_str()) {
        Ok(rustls_pki_types::ServerName::DnsName(_)) => {
            Ok(Some(id.name.to_ascii_lowercase().into()))
        }
        _ => Err("TLS identity is not a DNS name"),
    }
}

/// Whether `ip` is an address of this host (network namespace), other than loopback:
/// a connected UDP socket's source is the destination itself only then. No packet
/// is sent.
fn is_this_host(ip: std::net::IpAddr) -> bool {
    if ip.is_loopback() {
        return false;
    }
    let any: SocketAddr = match ip {
        std::net::IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        std::net::IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect((ip, 9))?;
            s.local_addr()
        })
        .is_ok_and(|local| local.ip() == ip)
}

/// An endpoint's address, if it is one the proxy can connect to.
fn endpoint_addr(ep: &api::Endpoint) -> Result<SocketAddr, &'static str> {
    let addr = ep.addr.as_ref().ok_or("endpoint has no address")?;
    let addr = SocketAddr::try_from(addr).map_err(|e| match e {
        mesh_api::InvalidAddress::MissingIp => "address has no IP",
        mesh_api::InvalidAddress::Ipv6Length(_) => "IPv6 address is not 16 bytes",
        mesh_api::InvalidAddress::Port(_) => "port is out of range",
    })?;
    if addr.port() == 0 {
        return Err("port is 0");
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err("address is not a unicast host");
    }
    Ok(addr)
}
