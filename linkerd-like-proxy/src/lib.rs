//! `mesh-proxy`: the sidecar data plane of mesh.
//!
//! One proxy sits beside each workload and carries all of its TCP traffic: inbound
//! (iptables redirects it to 4143) and outbound (redirected to 4140). Each accepted
//! connection has its protocol detected; HTTP/1 and HTTP/2 (gRPC included) are
//! served per request through a tower stack that records golden metrics and pools
//! upstream connections; anything else is copied as opaque TCP. The admin server on
//! 4191 exposes `/metrics`, `/ready`, `/live` and `/shutdown`. With a destination
//! service configured, outbound traffic is balanced over the endpoints it names. With
//! an identity service configured, the proxy obtains and renews a certificate for its
//! workload's identity (for the TLS layer) and is not ready until it holds one; its
//! tap server (4190) then streams live request events to the control plane's tap
//! identity alone.
//!
//! The proxy never buffers whole bodies (but for a retryable route's request body of
//! at most `http::REPLAY_LIMIT` bytes, held for replay), never changes what the
//! application sent beyond per-connection (hop-by-hop) headers and its own
//! `mesh-orig-proto` / `mesh-client-id`, and never panics on input: every failure
//! becomes a clean error response or a closed connection.

pub mod admin;
pub mod alloc;
pub mod balance;
pub mod classify;
pub mod config;
pub mod detect;
pub mod discover;
pub mod errors;
pub mod http;
pub mod identity;
pub mod init;
pub mod io;
pub mod metrics;
pub mod orig_dst;
pub mod policy;
pub mod profile;
pub mod tap;
mod tcp;
pub mod tls;

use crate::{
    config::Config,
    detect::Protocol,
    discover::{Destination, Discovery},
    http::{ConnCtx, Pool},
    identity::Identity,
    io::{MeteredIo, PrefixedIo},
    metrics::{Direction, Metrics, Peer},
    tls::{hello::Peeked, MeshTls},
};
use bytes::{Bytes, BytesMut};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind the {name} listener on {addr}")]
pub struct BindError {
    pub name: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] tls::ConfigError),
}

/// State shared by every connection of a running proxy.
pub struct Proxy {
    pub config: Config,
    pub metrics: Metrics,
    /// What serving HTTP needs, shared by every connection.
    http: http::Http,
    /// Outbound discovery, when a destination service is configured.
    discovery: Option<Arc<Discovery>>,
    /// Inbound policy, when `MESH_PROXY_POLICY_WORKLOAD` is set.
    policy: Option<policy::Policies>,
    /// The identity client, when an identity service is configured.
    identity: Option<Identity>,
    /// Mesh TLS, on with identity.
    tls: Option<Arc<MeshTls>>,
    /// The tap streams, shared by every connection's tap layer and the tap server.
    tap: Arc<tap::Registry>,
    /// Cancelled when the proxy starts draining: listeners stop accepting, HTTP
    /// connections finish their in-flight requests and close.
    pub shutdown: CancellationToken,
    /// Every connection and tunnel task, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The addresses the proxy's listeners are bound to, for loop detection.
    listeners: Arc<[SocketAddr]>,
    ready: AtomicBool,
}

impl Proxy {
    pub(crate) fn pool(&self, direction: Direction) -> &Arc<Pool> {
        self.http.pool(direction)
    }

    /// Whether `addr` is one of this proxy's own listeners: forwarding there would loop.
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        io::is_listener(&self.listeners, addr)
    }

    /// Whether the proxy is serving and, with identity on, holds a certificate.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.identity.as_ref().is_none_or(Identity::has_credentials)
    }

    /// The identity client, when `MESH_PROXY_IDENTITY_ADDR` is set.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Mesh TLS, when identity is on.
    pub fn tls(&self) -> Option<&Arc<MeshTls>> {
        self.tls.as_ref()
    }

    /// Outbound discovery, when `MESH_PROXY_DESTINATION_ADDR` is set.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_deref()
    }

    /// Inbound policy, when `MESH_PROXY_POLICY_WORKLOAD` is set.
    pub fn policy(&self) -> Option<&policy::Policies> {
        self.policy.as_ref()
    }

    /// Discovery's destination for an outbound `ip:port` (see [`Discovery::for_addr`]),
    /// unless discovery is off.
    pub(crate) fn discover_addr(&self, addr: SocketAddr) -> Option<Arc<Destination>> {
        self.discovery.as_ref()?.for_addr(addr)
    }
}

/// The bound listeners of a proxy that has not started serving yet.
pub struct Bound {
    inbound: TcpListener,
    outbound: TcpListener,
    admin: TcpListener,
    /// The tap server's, with identity on.
    tap: Option<TcpListener>,
    proxy: Arc<Proxy>,
}

impl Bound {
    /// The addresses actually bound (useful when configured with port 0).
    pub fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr) {
        let a = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
        (a(&self.inbound), a(&self.outbound), a(&self.admin))
    }

    /// The tap server's address, when it runs (identity on).
    pub fn tap_addr(&self) -> Option<SocketAddr> {
        self.tap.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }
}

/// A proxy bound on loopback ports, with nothing else configured and nothing served:
/// for unit tests of the parts that need a real one (pools, connectors, metrics).
#[cfg(test)]
pub(crate) async fn test_proxy() -> Arc<Proxy> {
    let loopback = std::collections::HashMap::from([
        ("MESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("MESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
        ("MESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
    ]);
    let config = Config::from_env(&loopback).expect("a valid configuration");
    bind(config).await.expect("loopback ports").proxy()
}

/// Binds every listener. Nothing is served until [`Bound::serve`].
pub async fn bind(config: Config) -> Result<Bound, StartError> {
    let bind = |name, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { name, addr, source })
    };
    let inbound = bind("inbound", config.listen.inbound_addr).await?;
    let outbound = bind("outbound", config.listen.outbound_addr).await?;
    let admin = bind("admin", config.listen.admin_addr).await?;
    let tap_listener = match &config.tap {
        Some(t) => Some(bind("tap", t.listen_addr).await?),
        None => None,
    };
    let metrics = Metrics::with_max_series(config.metrics_max_series);
    let identity = Identity::new(
        config.identity.as_ref(),
        config.http.connect_timeout,
        metrics.clone(),
    );
    let tls = match (&identity, &config.identity) {
        (Some(id), Some(c)) => Some(Arc::new(MeshTls::new(
            id.name(),
            &c.trust_anchors,
            id.watch(),
        )?)),
        _ => None,
    };
    let listeners: Arc<[SocketAddr]> = [Some(&inbound), Some(&outbound), Some(&admin)]
        .into_iter()
        .chain([tap_listener.as_ref()])
        .flatten()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let discovery = Discovery::new(
        config.discovery.as_ref(),
        config.identity.as_ref(),
        config.http.connect_timeout,
        metrics.clone(),
        listeners.clone(),
    )
    .map(Arc::new);
    // The policy service is served beside the destination service, over its TLS.
    let policy = match (&config.policy, &config.discovery) {
        (Some(p), Some(d)) => discover::control_channel(
            &d.addr,
            config.identity.as_ref(),
            config.http.connect_timeout,
        )
        .map(|channel| {
            // In explicit mode every workload of the host connects from loopback.
            let loopback_is_local = config.listen.inbound_forward_addr.is_none();
            policy::Policies::new(channel, p, metrics.clone(), loopback_is_local)
        }),
        _ => None,
    };
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let tap = Arc::new(tap::Registry::new(config.tap.as_ref(), metrics.clone()));
    let http = http::Http::new(
        &config.http,
        config.listen.inbound_forward_addr,
        (metrics.clone(), tap.clone()),
        tls.clone(),
        discovery.clone(),
        listeners.clone(),
        (shutdown.clone(), tasks.clone()),
    );
    let proxy = Arc::new(Proxy {
        http,
        discovery,
        policy,
        identity,
        tls,
        tap,
        metrics,
        shutdown,
        tasks,
        listeners,
        ready: AtomicBool::new(false),
        config,
    });
    Ok(Bound {
        inbound,
        outbound,
        admin,
        tap: tap_listener,
        proxy,
    })
}

impl Bound {
    /// Serves until SIGTERM, SIGINT or `/shutdown`, then drains: stops accepting, lets
    /// in-flight requests and streams finish within the grace period, and returns.
    pub async fn serve(self) {
        let t = self.tap_addr();
        let Bound {
            inbound,
            outbound,
            admin,
            tap,
            proxy,
        } = self;
        let (i, o, a) = (
            inbound.local_addr().ok(),
            outbound.local_addr().ok(),
            admin.local_addr().ok(),
        );
        tokio::spawn(admin::serve(proxy.clone(), admin));
        match (tap, &proxy.tls, &proxy.config.tap) {
            (Some(listener), Some(tls), Some(config)) => {
                proxy.metrics.tap().enable();
                let ctx = tap::server::TapServerCtx {
                    registry: proxy.tap.clone(),
                    tls: tls.clone(),
                    client: config.client_name.as_str().into(),
                    metrics: proxy.metrics.clone(),
                    shutdown: proxy.shutdown.clone(),
                };
                tokio::spawn(tap::server::serve(listener, ctx));
            }
            _ => tracing::info!("tap is off: it needs identity (MESH_PROXY_IDENTITY_ADDR)"),
        }
        let accepting = TaskTracker::new();
        accepting.spawn(accept(proxy.clone(), inbound, Direction::Inbound));
        accepting.spawn(accept(proxy.clone(), outbound, Direction::Outbound));
        accepting.close();
        let sweeper = tokio::spawn(sweep(proxy.clone()));
        proxy.ready.store(true, Ordering::Release);
        tracing::info!(inbound = ?i, outbound = ?o, admin = ?a, tap = ?t, "proxy listening");

        tokio::select! {
            _ = signal() => {}
            _ = proxy.shutdown.cancelled() => {}
        }
        let grace = proxy.config.listen.shutdown_grace_period;
        proxy.ready.store(false, Ordering::Release);
        proxy.shutdown.cancel();
        accepting.wait().await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            open = proxy.tasks.len(),
            "listeners closed; draining"
        );
        sweeper.abort();
        proxy.tasks.close();
        if tokio::time::timeout(grace, proxy.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = proxy.tasks.len(),
                "grace period over; closing remaining connections"
            );
        }
        tracing::info!("shut down");
    }
}

/// Binds and serves: the whole life of a proxy.
pub async fn run(config: Config) -> Result<(), StartError> {
    bind(config).await?.serve().await;
    Ok(())
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Periodic housekeeping: idle pooled connections, idle metric series and freed
/// memory, and idle discovery destinations (on their own period, from their own idle
/// timeout).
async fn sweep(proxy: Arc<Proxy>) {
    let every = proxy
        .config
        .http
        .pool_idle_timeout
        .max(Duration::from_secs(1));
    // Metric retention in ticks of this loop, rounded up.
    let retain = proxy
        .config
        .metrics_retain_idle
        .as_millis()
        .div_ceil(every.as_millis()) as u64;
    let ticker = |period: Duration| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    };
    let mut pools = ticker(every);
    let mut discovery = proxy.discovery.as_ref().map(|d| ticker(d.sweep_period()));
    let mut trim = ticker(alloc::RELEASE_PERIOD);
    loop {
        tokio::select! {
            _ = trim.tick() => {
                alloc::release_free_memory();
            }
            _ = pools.tick() => {
                for p in proxy.http.pools() {
                    p.sweep();
                }
                proxy.metrics.expire(retain);
            }
            _ = async { discovery.as_mut()?.tick().await; Some(()) }, if discovery.is_some() => {
                if let Some(d) = &proxy.discovery {
                    d.sweep();
                }
            }
        }
    }
}

async fn accept(proxy: Arc<Proxy>, listener: TcpListener, direction: Direction) {
    loop {
        let accepted = tokio::select! {
            _ = proxy.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, client)) => {
                proxy
                    .tasks
                    .spawn(serve_conn(proxy.clone(), direction, stream, client));
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(?direction, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(
    proxy: Arc<Proxy>,
    direction: Direction,
    mut stream: TcpStream,
    client: SocketAddr,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    io::tune(&stream);
    let orig_dst = orig_dst::orig_dst(&stream, local);
    // Outbound traffic that iptables redirected is balanced over what discovery knows
    // of its original destination. The lookup starts here, so that the answer for a
    // new destination is usually in by the time detection is done, and it is made
    // once for all of the connection's requests.
    let dst = match (direction, orig_dst) {
        (Direction::Outbound, Some(a)) => proxy.discover_addr(a),
        _ => None,
    };
    // Where opaque bytes would go: the original destination, or in explicit inbound
    // mode the configured application address.
    let target = orig_dst.or(match direction {
        Direction::Inbound => proxy.config.listen.inbound_forward_addr,
        Direction::Outbound => None,
    });
    // Inbound with policy on: the port's policy, which may say its protocol.
    let port_policy = match (direction, &proxy.policy) {
        (Direction::Inbound, Some(p)) => Some(p.port(target.unwrap_or(local).port()).await),
        _ => None,
    };
    let forced = port_policy.as_ref().map(|p| p.current().protocol);
    let opaque = forced == Some(policy::Protocol::Opaque)
        || target.is_some_and(|t| proxy.config.listen.is_opaque(t.port()));

    // Inbound with identity on, a ClientHello naming a mesh identity is mesh TLS from
    // another proxy; anything else (plaintext, the application's own TLS) goes on as
    // before, with the bytes read so far replayed.
    let mut peeked = BytesMut::new();
    let mut silent = false;
    if let (Direction::Inbound, Some(tls)) = (direction, proxy.tls.clone()) {
        let found = tls::hello::peek(
            &mut stream,
            &mut peeked,
            |sni| tls.is_mesh_name(sni),
            proxy.config.listen.detect_timeout,
        )
        .await;
        match found {
            Ok(Peeked::Mesh) => {
                let io = PrefixedIo::new(peeked.freeze(), stream);
                let at = (orig_dst, target.unwrap_or(local));
                serve_mesh(proxy, &tls, io, client, at, port_policy).await;
                return;
            }
            Ok(Peeked::Other) => {}
            Ok(Peeked::Silent) => silent = true,
            Err(e) => {
                tracing::debug!(%client, error = %e, "connection failed before its first bytes");
                return;
            }
        }
    }

    let conn_metrics =
        proxy
            .metrics
            .tcp_open(direction, Peer::Src, target.unwrap_or(local), None, None);
    let mut io = MeteredIo::new(PrefixedIo::new(peeked.freeze(), stream), conn_metrics);

    let (protocol, prefix) = if opaque {
        (Protocol::OpaquePort, Bytes::new())
    } else if let Some(p) = forced.and_then(policy::forced_http) {
        (p, Bytes::new())
    } else if silent {
        // The client said nothing for a whole detection timeout already.
        (Protocol::Timeout, Bytes::new())
    } else {
        match detect::detect_io(&mut io, proxy.config.listen.detect_timeout).await {
            Ok((p, buf)) => (p, buf.freeze()),
            Err(e) => {
                tracing::debug!(%client, error = %e, "connection failed during protocol detection");
                return;
            }
        }
    };
    proxy.metrics.detected(direction, protocol);
    let mut io = PrefixedIo::new(prefix, io);

    if protocol.is_http() {
        let conn = ConnCtx {
            direction,
            orig_dst,
            client,
            destination: dst,
            client_id: None,
            policy: port_policy,
        };
        http::serve(&proxy.http, conn, io, protocol).await;
        return;
    }
    match target {
        Some(t) => {
            let forwarded = match port_policy {
                None => tcp::forward(&proxy, direction, &mut io, t, dst.as_deref()).await,
                Some(p) => {
                    let fwd = tcp::forward(&proxy, direction, &mut io, t, dst.as_deref());
                    authorized_tcp(&proxy, p, client, None, fwd).await
                }
            };
            if !forwarded {
                let _ = io.get_ref().get_ref().get_ref().set_zero_linger();
            }
        }
        None => {
            tracing::debug!(%client, ?direction, "no destination for a non-HTTP connection; closing")
        }
    }
}

/// Serves an inbound connection whose ClientHello named this proxy: completes the
/// handshake (refusing clients the trust anchors do not vouch for), then serves what
/// ALPN announced, HTTP/2 from the client proxy or opaque bytes for `target`.
async fn serve_mesh(
    proxy: Arc<Proxy>,
    tls: &MeshTls,
    io: PrefixedIo<TcpStream>,
    client: SocketAddr,
    (orig_dst, target): (Option<SocketAddr>, SocketAddr),
    port_policy: Option<policy::PortPolicy>,
) {
    let accepted = match tls.accept(io).await {
        Ok(a) => a,
        Err((reason, e)) => {
            proxy.metrics.tls_refused(Direction::Inbound, reason);
            tracing::info!(%client, reason = reason.as_str(), error = %e, "refused a mesh TLS connection");
            return;
        }
    };
    let conn_metrics = proxy.metrics.tcp_open(
        Direction::Inbound,
        Peer::Src,
        target,
        Some(&accepted.client),
        None,
    );
    let mut io = MeteredIo::new(accepted.stream, conn_metrics);
    let (protocol, prefix) = match accepted.alpn {
        Some(tls::Alpn::H2) => (Protocol::Http2, Bytes::new()),
        Some(tls::Alpn::Http1) => (Protocol::Http1, Bytes::new()),
        Some(tls::Alpn::Opaque) => (Protocol::OpaquePort, Bytes::new()),
        None => match detect::detect_io(&mut io, proxy.config.listen.detect_timeout).await {
            Ok((p, buf)) => (p, buf.freeze()),
            Err(e) => {
                tracing::debug!(%client, error = %e, "mesh connection failed during protocol detection");
                return;
            }
        },
    };
    proxy.metrics.detected(Direction::Inbound, protocol);
    let mut io = PrefixedIo::new(prefix, io);
    if protocol.is_http() {
        let conn = ConnCtx {
            direction: Direction::Inbound,
            orig_dst,
            client,
            destination: None,
            client_id: Some(accepted.client),
            policy: port_policy,
        };
        http::serve(&proxy.http, conn, io, protocol).await;
        return;
    }
    let forwarded = match port_policy {
        None => tcp::forward(&proxy, Direction::Inbound, &mut io, target, None).await,
        Some(p) => {
            let fwd = tcp::forward(&proxy, Direction::Inbound, &mut io, target, None);
            authorized_tcp(&proxy, p, client, Some(&accepted.client), fwd).await
        }
    };
    if !forwarded {
        let _ = io
            .get_ref()
            .get_ref()
            .get_ref()
            .0
            .get_ref()
            .set_zero_linger();
    }
}

/// Runs `forward` (an inbound connection's forwarding, not yet started) if the port's
/// policy allows the connection, until it ends or a policy update no longer allows
/// it. Returns `false` when the client's connection should be reset: denied before a
/// byte reached the application, closed by a policy update, or not forwarded.
async fn authorized_tcp(
    proxy: &Proxy,
    port: policy::PortPolicy,
    client: SocketAddr,
    id: Option<&Arc<str>>,
    forward: impl std::future::Future<Output = bool>,
) -> bool {
    if !policy::enforce::tcp(&proxy.metrics, &port, client, id) {
        return false;
    }
    tokio::select! {
        ok = forward => ok,
        () = policy::enforce::revoked(&proxy.metrics, port, client, id) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_get_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        io::tune(&stream);
        let sock = socket2::SockRef::from(&stream);
        assert!(stream.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn own_listeners_are_recognised() {
        let bound = bind(
            Config::from_env(&std::collections::HashMap::from([
                ("MESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
                ("MESH_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:0"),
                ("MESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
            ]))
            .unwrap(),
        )
        .await
        .unwrap();
        let (inbound, outbound, _) = bound.addrs();
        let proxy = bound.proxy();
        assert!(proxy.is_own_listener(outbound));
        // A wildcard listener is reachable on loopback too.
        assert!(proxy.is_own_listener(SocketAddr::from(([127, 0, 0, 1], inbound.port()))));
        assert!(!proxy.is_own_listener(SocketAddr::from(([198, 18, 0, 9], outbound.port()))));
    }
}
