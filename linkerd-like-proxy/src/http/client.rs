//! Upstream HTTP clients: the `Forward` service at the bottom of the stack, and the
//! [`Pool`] of connections it draws from.
//!
//! Each endpoint keeps idle HTTP/1 connections for reuse (a connection returns to
//! the pool when its response body ends) and one shared, multiplexed HTTP/2
//! connection. The protocol upstream is the protocol the client spoke ([`Plan`]).
//!
//! A request reaches `Forward` with its connection already leased when the balancer
//! chose an endpoint ([`Lease`], so that a connect failure could still go elsewhere);
//! otherwise `Forward` leases one to the target's address itself.

use super::ReqBody;
use super::{body::ProxyBody, recent::Recent, strip_hop_by_hop, upgrade, BoxFuture, Target};
use crate::{
    errors::{BoxError, ConnectFailed, ConnectTimeout, LoopDetected, UpstreamFailed},
    io::{MeteredIo, UpstreamIo},
    metrics::{Direction, Metrics, Peer},
    tls::{Alpn, MeshTls},
};
use http::{header, uri, HeaderValue, Method, Request, Response, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::TcpStream;
use tokio_util::{either::Either, task::TaskTracker};
use tower::Service;

/// Idle HTTP/1 connections kept per endpoint, at most.
const MAX_IDLE_PER_ENDPOINT: usize = 512;

// === impl Forward ===

/// Sends a routed request upstream and returns the upstream's response.
#[derive(Clone)]
pub(crate) struct Forward {
    pool: Arc<PoolHandle>,
    /// Where upgraded connections' tunnels run, so that shutdown waits for them.
    tasks: TaskTracker,
}

impl Forward {
    pub(crate) fn new(pool: Arc<PoolHandle>, tasks: TaskTracker) -> Self {
        Self { pool, tasks }
    }
}

impl Service<Request<ReqBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<ProxyBody>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let pool = self.pool.clone();
        let tasks = self.tasks.clone();
        Box::pin(async move {
            let mut target = req
                .extensions_mut()
                .remove::<Target>()
                .ok_or("request reached Forward unrouted")?;
            // A failure decided above the metrics layer is answered here, below it,
            // so that it is counted like any other.
            if let Some(failed) = target.failed {
                return Err(failed.into());
            }
            let lease = match target.lease.as_mut().and_then(LeaseSlot::take) {
                Some(l) => l,
                None => {
                    // Inbound, the peer is the client: connections to the application
                    // are never mesh TLS.
                    let peer = pool.connector().peer_identity(target.peer.as_ref());
                    let plan = Plan::of(&req, target.explicit, peer.is_some());
                    let labels = target.labels.as_ref();
                    pool.lease(target.addr, labels, peer, plan).await?
                }
            };
            let plan = lease.plan;
            let lease = match lease.into_tunnel() {
                Ok(io) => {
                    return upgrade::forward(&tasks, pool.connector(), io, &target, req).await
                }
                Err(lease) => lease,
            };
            let version = req.version();
            strip_hop_by_hop(req.headers_mut());
            if (target.explicit || target.downgraded) && version != Version::HTTP_2 {
                to_origin_form(&mut req);
            }
            // Between proxies, HTTP/1 travels as multiplexed HTTP/2, and the far side
            // turns it back into what the client sent.
            let upgraded = plan == Plan::H2 && version != Version::HTTP_2 && to_h2(&mut req);
            let mut rsp = pool.pool.send(lease, req).await?;
            // The upstream connection's own framing and lifetime (`connection: close`)
            // say nothing about the client's connection.
            strip_hop_by_hop(rsp.headers_mut());
            if upgraded {
                *rsp.version_mut() = version;
            }
            Ok(rsp)
        })
    }
}

/// How a request goes upstream, which decides the connection it needs: the one rule,
/// read by the balancer (which leases the connection) and by `Forward` (which uses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// On a pooled HTTP/1 connection.
    H1,
    /// On the endpoint's shared HTTP/2 connection: HTTP/2 requests, and between
    /// proxies HTTP/1 requests too (see [`to_h2`]).
    H2,
    /// On a fresh connection of its own, which becomes a tunnel (upgrades, CONNECT),
    /// announcing this ALPN to a meshed peer.
    Tunnel(Alpn),
}

impl Plan {
    /// `explicit`: the client addressed the proxy itself; `meshed`: the connection
    /// is mesh TLS to another proxy.
    pub(crate) fn of(req: &Request<ReqBody>, explicit: bool, meshed: bool) -> Self {
        Self::fixed(req, explicit).unwrap_or_else(|| Self::by_peer(req, meshed))
    }

    /// The plans to a plain endpoint and to a meshed one, `[plain, meshed]`, reading
    /// the request once: for the balancer, before it knows which it gets.
    pub(crate) fn both(req: &Request<ReqBody>, explicit: bool) -> [Self; 2] {
        match Self::fixed(req, explicit) {
            Some(p) => [p, p],
            None => [Plan::H1, Self::by_peer(req, true)],
        }
    }

    /// The plan when the peer does not change it: tunnels and HTTP/2.
    fn fixed(req: &Request<ReqBody>, explicit: bool) -> Option<Self> {
        if upgrade::is_upgrade(req) {
            // In explicit mode the proxy answers CONNECT itself and tunnels raw bytes;
            // otherwise an upgrade needs HTTP/1 between proxies too.
            return Some(match req.method() == Method::CONNECT && explicit {
                true => Plan::Tunnel(Alpn::Opaque),
                false => Plan::Tunnel(Alpn::Http1),
            });
        }
        (req.version() == Version::HTTP_2).then_some(Plan::H2)
    }

    /// An HTTP/1 request: carried as HTTP/2 between proxies when it names an authority.
    fn by_peer(req: &Request<ReqBody>, meshed: bool) -> Self {
        if meshed && h2_authority(req).is_some() {
            Plan::H2
        } else {
            Plan::H1
        }
    }
}

/// The authority an HTTP/1 request carried as HTTP/2 would name: its URI's, else its
/// `Host` header's. `None` when it names none: it must then travel as HTTP/1.
fn h2_authority(req: &Request<ReqBody>) -> Option<uri::Authority> {
    match req.uri().authority() {
        Some(a) => Some(a.clone()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<uri::Authority>().ok()),
    }
}

/// Turns an HTTP/1 request into the HTTP/2 request that carries it between proxies:
/// an absolute URI (HTTP/2 needs the authority) and `mesh-orig-proto` naming the
/// version to restore. `false` (and the request unchanged) when it names no
/// authority at all ([`Plan::of`] then chose HTTP/1).
fn to_h2(req: &mut Request<ReqBody>) -> bool {
    if req.uri().authority().is_none() {
        let Some(host) = h2_authority(req) else {
            return false;
        };
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(uri::Scheme::HTTP);
        parts.authority = Some(host);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(uri::PathAndQuery::from_static("/"));
        }
        match Uri::from_parts(parts) {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return false,
        }
    }
    let orig = if req.version() == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    req.headers_mut()
        .insert(super::ORIG_PROTO, HeaderValue::from_static(orig));
    *req.version_mut() = Version::HTTP_2;
    true
}

/// An HTTP proxy request (`GET http://host/path`) becomes the request the origin
/// expects (`GET /path` with `Host: host`).
fn to_origin_form(req: &mut Request<ReqBody>) {
    let Some(authority) = req.uri().authority().cloned() else {
        return;
    };
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
}

// === impl Connector ===

/// Opens metered upstream TCP connections, with mesh TLS to meshed endpoints.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) metrics: Metrics,
    pub(crate) direction: Direction,
    pub(crate) timeout: Duration,
    /// This proxy's mesh TLS, when identity is on and the connector is outbound
    /// (inbound, connections go to the application).
    pub(crate) tls: Option<Arc<MeshTls>>,
    /// How large a response head the proxy reads.
    pub(crate) limits: super::HeadLimits,
    /// The proxy's own listeners: connecting to one would loop.
    pub(crate) listeners: Arc<[SocketAddr]>,
}

impl Connector {
    /// The identity to open mesh TLS to, for an endpoint whose proxy has `identity`:
    /// none when this proxy has no identity of its own (it cannot authenticate).
    pub(crate) fn peer_identity<'a>(&self, identity: Option<&'a Arc<str>>) -> Option<&'a Arc<str>> {
        identity.filter(|_| self.tls.is_some())
    }

    /// Connects to `addr`, counted in the `tcp_*{peer="dst"}` series with the
    /// endpoint's `dst_*` labels, if any. With `peer`, the connection is mesh TLS to
    /// the proxy with that identity, announcing `alpn`. Never to one of the proxy's
    /// own listeners ([`LoopDetected`]), however the address was found.
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        labels: Option<&Arc<str>>,
        peer: Option<(&Arc<str>, Alpn)>,
    ) -> Result<UpstreamIo, BoxError> {
        if crate::io::is_listener(&self.listeners, addr) {
            return Err(LoopDetected { addr }.into());
        }
        let stream = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ConnectTimeout {
                    addr,
                    timeout: self.timeout,
                }
                .into())
            }
            Ok(Err(source)) => return Err(ConnectFailed { addr, source }.into()),
            Ok(Ok(s)) => s,
        };
        crate::io::tune(&stream);
        let mesh = peer.and_then(|(id, alpn)| Some((self.tls.as_ref()?, id, alpn)));
        let m = self.metrics.tcp_open(
            self.direction,
            Peer::Destination,
            addr,
            mesh.map(|(_, id, _)| id),
            labels,
        );
        let io = MeteredIo::new(stream, m);
        let Some((tls, id, alpn)) = mesh else {
            return Ok(Either::Left(io));
        };
        match tls.connect(io, id, alpn).await {
            Ok(s) => Ok(Either::Right(Box::new(s))),
            Err(e) => {
                self.metrics.tls_refused(self.direction, e.reason);
                Err(e.into())
            }
        }
    }
}

// === impl Pool ===

/// Upstream connections per (address, protocol), for one direction.
///
/// Idleness is measured in sweeps, not clock reads: the sweeper ticks an epoch every
/// idle timeout, and whatever has not been used for a whole epoch goes. This keeps
/// clock reads and locks off the per-request path.
pub(crate) struct Pool {
    connector: Connector,
    epoch: AtomicU64,
    endpoints: Mutex<HashMap<PoolKey, Arc<Endpoint>>>,
}

/// Connections are shared by address, protocol and, for mesh TLS, the identity the
/// server proved: a connection verified for one identity never carries requests
/// meant for another.
type PoolKey = (SocketAddr, bool, Option<Arc<str>>);

/// One server connection's way into a [`Pool`]: the pool, and the pool entries this
/// connection used last ([`Recent`]), so that most requests find their endpoint's
/// entry without the pool's lock and hash. Made once per connection, shared by its
/// balancer and `Forward`. A remembered entry stays in the pool (the sweep keeps
/// entries still referenced), so a connection never holds one the pool forgot.
pub(crate) struct PoolHandle {
    pool: Arc<Pool>,
    recent: Recent<PoolKey, Arc<Endpoint>>,
}

impl PoolHandle {
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        Self {
            pool,
            recent: Recent::default(),
        }
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.pool.connector
    }

    /// [`Pool::lease`], finding the endpoint's entry among this connection's recent
    /// ones first.
    pub(crate) async fn lease(
        &self,
        addr: SocketAddr,
        labels: Option<&Arc<str>>,
        peer: Option<&Arc<str>>,
        plan: Plan,
    ) -> Result<Lease, BoxError> {
        let h2 = plan == Plan::H2;
        let endpoint = self.recent.get(
            |(a, h, p)| *a == addr && *h == h2 && p.as_ref() == peer,
            || {
                (
                    (addr, h2, peer.cloned()),
                    self.pool.endpoint(addr, peer, h2),
                )
            },
        );
        self.pool.lease(endpoint, labels, plan).await
    }
}

pub(crate) struct Endpoint {
    addr: SocketAddr,
    /// The server's identity, for mesh TLS.
    peer: Option<Arc<str>>,
    /// Idle HTTP/1 connections with the epoch in which they became idle.
    idle: Mutex<Vec<(u64, H1)>>,
    /// The shared HTTP/2 connection, if one is open.
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
    /// Held while opening the HTTP/2 connection, so that concurrent first requests
    /// share one connection instead of racing to open several.
    h2_connecting: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
}

/// A connection ready to carry one request, taken from the pool or opened for it.
pub(crate) struct Lease {
    endpoint: Arc<Endpoint>,
    epoch: u64,
    /// The endpoint's `dst_*` labels, for connections opened to it.
    labels: Option<Arc<str>>,
    /// How the request travels: what the connection was leased for.
    plan: Plan,
    conn: Leased,
    /// The request waited for a new connection ([`WaitedForConnect`]).
    waited: bool,
}

impl Lease {
    /// The connection of a [`Plan::Tunnel`] lease; any other lease back.
    fn into_tunnel(self) -> Result<UpstreamIo, Self> {
        match self.conn {
            Leased::Raw(io) => Ok(io),
            conn => Err(Self { conn, ..self }),
        }
    }
}

enum Leased {
    H1(H1),
    H2(http2::SendRequest<ReqBody>),
    /// A fresh connection of its own, for a tunnel.
    Raw(UpstreamIo),
}

/// A lease handed from the layer that took it to `Forward`, in the request's target.
/// A copy of a target carries no connection: a copy is empty. (Request extensions
/// must be `Clone`; targets are copied before the balancer leases, never after.)
#[derive(Default)]
pub(crate) struct LeaseSlot(Option<Lease>);

impl Clone for LeaseSlot {
    fn clone(&self) -> Self {
        Self(None)
    }
}

impl LeaseSlot {
    pub(crate) fn new(lease: Lease) -> Self {
        Self(Some(lease))
    }

    pub(crate) fn take(&mut self) -> Option<Lease> {
        self.0.take()
    }

    #[cfg(test)]
    pub(crate) fn is_leased(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for LeaseSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseSlot")
    }
}

/// An upstream HTTP/1 connection: its sender, and how much of the response being
/// read has arrived (to tell which head limit a refused response hit).
pub(crate) struct H1 {
    sender: http1::SendRequest<ReqBody>,
    head_read: Arc<crate::io::HeadRead>,
}

/// An HTTP/1 connection on loan to one response; [`GiveBack::release`] returns it.
pub(crate) struct GiveBack {
    endpoint: Arc<Endpoint>,
    epoch: u64,
    conn: H1,
}

impl GiveBack {
    pub(crate) fn release(self) {
        let mut idle = lock(&self.endpoint.idle);
        if idle.len() < MAX_IDLE_PER_ENDPOINT && !self.conn.sender.is_closed() {
            idle.push((self.epoch, self.conn));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    pub(crate) fn new(connector: Connector) -> Self {
        Self {
            connector,
            epoch: AtomicU64::new(0),
            endpoints: Mutex::default(),
        }
    }

    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The pool's entry for an endpoint, made on first use. A registry lookup: a
    /// global lock and a hash, which [`PoolHandle`] saves most requests.
    fn endpoint(&self, addr: SocketAddr, peer: Option<&Arc<str>>, h2: bool) -> Arc<Endpoint> {
        let epoch = self.epoch.load(Relaxed);
        lock(&self.endpoints)
            .entry((addr, h2, peer.cloned()))
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    addr,
                    peer: peer.cloned(),
                    idle: Mutex::default(),
                    h2: Mutex::default(),
                    h2_connecting: tokio::sync::Mutex::default(),
                    last_used: AtomicU64::new(epoch),
                })
            })
            .clone()
    }

    /// A connection to `endpoint` (labelled with its `dst_*` labels) for a request
    /// sent by `plan`: pooled when there is one, else opened; with the endpoint's
    /// peer, mesh TLS to the proxy with that identity. An error here means nothing
    /// was sent.
    async fn lease(
        &self,
        endpoint: Arc<Endpoint>,
        labels: Option<&Arc<str>>,
        plan: Plan,
    ) -> Result<Lease, BoxError> {
        let epoch = self.epoch.load(Relaxed);
        endpoint.last_used.store(epoch, Relaxed);
        let addr = endpoint.addr;
        let (conn, waited) = match plan {
            Plan::Tunnel(alpn) => {
                let peer = endpoint.peer.as_ref().map(|p| (p, alpn));
                let io = self.connector.connect(addr, labels, peer).await?;
                (Leased::Raw(io), true)
            }
            Plan::H1 => match Self::checkout_h1(&endpoint).await {
                Some(c) => (Leased::H1(c), false),
                None => (Leased::H1(self.connect_h1(&endpoint, labels).await?), true),
            },
            Plan::H2 => {
                let (sender, waited) = self.h2(&endpoint, labels).await?;
                (Leased::H2(sender), waited)
            }
        };
        Ok(Lease {
            endpoint,
            epoch,
            labels: labels.cloned(),
            plan,
            conn,
            waited,
        })
    }

    /// Sends `req` on a leased HTTP connection. A pooled HTTP/1 connection that
    /// closed before the request went out on it sent nothing, so the request goes on
    /// another connection to the same endpoint.
    async fn send(
        &self,
        lease: Lease,
        mut req: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, BoxError> {
        let Lease {
            endpoint,
            epoch,
            labels,
            conn,
            mut waited,
            ..
        } = lease;
        let addr = endpoint.addr;
        let mut rsp = match conn {
            Leased::Raw(_) => return Err("a tunnel's connection cannot carry a request".into()),
            Leased::H2(mut sender) => {
                let failed = |source| UpstreamFailed { addr, source };
                sender.ready().await.map_err(failed)?;
                let rsp = sender.send_request(req).await.map_err(failed)?;
                rsp.map(|b| ProxyBody::upstream(b, None))
            }
            Leased::H1(mut conn) => {
                let mut reused = !waited;
                loop {
                    match conn.sender.try_send_request(req).await {
                        Ok(rsp) => {
                            let giveback = GiveBack {
                                endpoint,
                                epoch,
                                conn,
                            };
                            break rsp.map(|b| ProxyBody::upstream(b, Some(giveback)));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(r) if reused => {
                                req = r;
                                (conn, reused) = match Self::checkout_h1(&endpoint).await {
                                    Some(c) => (c, true),
                                    None => {
                                        waited = true;
                                        // Rare (the pooled connection closed as it was
                                        // taken): boxed, so that the connect code is not
                                        // inlined here a second time.
                                        let connect = self.connect_h1(&endpoint, labels.as_ref());
                                        (Box::pin(connect).await?, false)
                                    }
                                };
                            }
                            _ => {
                                let source = e.into_error();
                                if source.is_parse_too_large() {
                                    let read = conn.head_read.since_write();
                                    let limits = &self.connector.limits;
                                    return Err(limits.response_too_large(addr, read).into());
                                }
                                return Err(UpstreamFailed { addr, source }.into());
                            }
                        },
                    }
                }
            }
        };
        if waited {
            rsp.extensions_mut().insert(WaitedForConnect);
        }
        Ok(rsp)
    }

    /// The most recently used idle connection that is still open, if any.
    async fn checkout_h1(ep: &Endpoint) -> Option<H1> {
        loop {
            let (_, mut conn) = lock(&ep.idle).pop()?;
            if conn.sender.is_closed() {
                continue;
            }
            if conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    async fn connect_h1(&self, ep: &Endpoint, labels: Option<&Arc<str>>) -> Result<H1, BoxError> {
        let addr = ep.addr;
        let peer = ep.peer.as_ref().map(|p| (p, Alpn::Http1));
        let io = self.connector.connect(addr, labels, peer).await?;
        let (io, head_read) = crate::io::ReadSinceWrite::new(io);
        let (sender, conn) = self
            .connector
            .limits
            .h1_client()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| UpstreamFailed { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream http/1 connection failed");
            }
        });
        Ok(H1 { sender, head_read })
    }

    /// The endpoint's shared HTTP/2 connection, opened if needed (`true`: the caller
    /// waited for it).
    async fn h2(
        &self,
        ep: &Endpoint,
        labels: Option<&Arc<str>>,
    ) -> Result<(http2::SendRequest<ReqBody>, bool), BoxError> {
        if let Some(s) = Self::open_h2(ep) {
            return Ok((s, false));
        }
        let _connecting = ep.h2_connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(s) = Self::open_h2(ep) {
            return Ok((s, true));
        }
        let s = self.connect_h2(ep, labels).await?;
        *lock(&ep.h2) = Some(s.clone());
        Ok((s, true))
    }

    fn open_h2(ep: &Endpoint) -> Option<http2::SendRequest<ReqBody>> {
        lock(&ep.h2).as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_h2(
        &self,
        ep: &Endpoint,
        labels: Option<&Arc<str>>,
    ) -> Result<http2::SendRequest<ReqBody>, BoxError> {
        let addr = ep.addr;
        let peer = ep.peer.as_ref().map(|p| (p, Alpn::H2));
        let io = self.connector.connect(addr, labels, peer).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(self.connector.limits.h2_list)
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| UpstreamFailed { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream h2 connection failed");
            }
        });
        Ok(sender)
    }

    /// Called once per idle timeout: drops idle connections and endpoints unused for a
    /// whole epoch, so that a proxy that once talked to many addresses does not keep
    /// them all.
    pub(crate) fn sweep(&self) {
        let now = self.epoch.fetch_add(1, Relaxed) + 1;
        let stale = |epoch: u64| now.saturating_sub(epoch) > 1;
        lock(&self.endpoints).retain(|_, ep| {
            let mut idle = lock(&ep.idle);
            idle.retain(|(epoch, c)| !stale(*epoch) && !c.sender.is_closed());
            // An endpoint still referenced by a request or response stays.
            !stale(ep.last_used.load(Relaxed)) || !idle.is_empty() || Arc::strong_count(ep) > 1
        });
    }
}

/// Marks a response whose request waited for a new connection (TCP, TLS, HTTP/2
/// handshakes): its latency says more about the handshake than about the endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitedForConnect;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Replay;

    fn req(
        method: Method,
        uri: &str,
        version: Version,
        headers: &[(&str, &str)],
    ) -> Request<ReqBody> {
        let mut r = Request::new(ReqBody::from(Replay::default()));
        *r.method_mut() = method;
        *r.uri_mut() = uri.parse().unwrap();
        *r.version_mut() = version;
        for (k, v) in headers {
            let name: http::HeaderName = k.parse().unwrap();
            r.headers_mut().insert(name, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn how_a_request_travels() {
        let h1 = |headers: &[(&str, &str)]| req(Method::GET, "/", Version::HTTP_11, headers);
        let host = [("host", "web:80")];
        // HTTP/1 stays HTTP/1 to a plain endpoint, and becomes HTTP/2 between proxies
        // when it names an authority to carry.
        assert_eq!(Plan::of(&h1(&host), false, false), Plan::H1);
        assert_eq!(Plan::of(&h1(&host), false, true), Plan::H2);
        assert_eq!(Plan::of(&h1(&[]), false, true), Plan::H1);
        let absolute = req(Method::GET, "http://web/", Version::HTTP_11, &[]);
        assert_eq!(Plan::of(&absolute, true, true), Plan::H2);
        // HTTP/2 stays HTTP/2.
        let h2 = req(Method::GET, "http://web/", Version::HTTP_2, &[]);
        assert_eq!(Plan::of(&h2, false, false), Plan::H2);
        // Upgrades need a connection of their own, HTTP/1 between proxies too; an
        // explicit CONNECT is a raw tunnel.
        let ws = h1(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert_eq!(Plan::of(&ws, false, true), Plan::Tunnel(Alpn::Http1));
        let connect = req(Method::CONNECT, "web:443", Version::HTTP_11, &[]);
        assert_eq!(Plan::of(&connect, true, true), Plan::Tunnel(Alpn::Opaque));
        assert_eq!(Plan::of(&connect, false, false), Plan::Tunnel(Alpn::Http1));
        // Both at once, as the balancer asks, agree with each asked alone.
        for (r, explicit) in [
            (&h1(&host), false),
            (&h1(&[]), false),
            (&h2, false),
            (&ws, false),
            (&connect, true),
        ] {
            let plain_meshed = [false, true].map(|m| Plan::of(r, explicit, m));
            assert_eq!(Plan::both(r, explicit), plain_meshed);
        }
    }

    #[test]
    fn http1_between_proxies_carries_its_version() {
        let mut r = req(Method::GET, "/a?b", Version::HTTP_10, &[("host", "web:80")]);
        assert!(to_h2(&mut r));
        assert_eq!(r.version(), Version::HTTP_2);
        assert_eq!(r.uri(), "http://web:80/a?b");
        assert_eq!(r.headers()[super::super::ORIG_PROTO], "HTTP/1.0");
        let mut r = req(Method::GET, "/", Version::HTTP_11, &[]);
        assert!(!to_h2(&mut r), "no authority to carry");
        assert_eq!(r.version(), Version::HTTP_11);
    }

    /// A connection's handle remembers pool entries, but always leases to the entry of
    /// the endpoint and identity asked for, the pool's own, even past the few it
    /// remembers.
    #[tokio::test]
    async fn a_connections_pool_handle_never_mixes_endpoints() {
        let proxy = crate::test_proxy().await;
        let pool = proxy.pool(crate::metrics::Direction::Outbound).clone();
        let handle = PoolHandle::new(pool.clone());
        let mut listeners = Vec::new();
        for _ in 0..6 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        for round in 0..2 {
            for &addr in addrs.iter().chain(&addrs[..2]) {
                let lease = handle.lease(addr, None, None, Plan::H1).await.unwrap();
                assert_eq!(lease.endpoint.addr, addr, "round {round}");
                assert!(Arc::ptr_eq(
                    &lease.endpoint,
                    &pool.endpoint(addr, None, false)
                ));
            }
        }
        // Another protocol or identity is another entry.
        let lease = handle.lease(addrs[0], None, None, Plan::H2).await.unwrap();
        assert!(!Arc::ptr_eq(
            &lease.endpoint,
            &pool.endpoint(addrs[0], None, false)
        ));
        let peer: Arc<str> = Arc::from("web.default.serviceaccount.identity.mesh.cluster.local");
        let theirs = handle.lease(addrs[0], None, Some(&peer), Plan::H1).await;
        // (The test proxy has no mesh TLS: the connection is plain, the entry the
        // peer's own.)
        let theirs = theirs.unwrap().endpoint;
        assert_eq!(theirs.peer.as_deref(), Some(&*peer));
        assert!(Arc::ptr_eq(
            &theirs,
            &pool.endpoint(addrs[0], Some(&peer), false)
        ));
        let plain = handle.lease(addrs[0], None, None, Plan::H1).await.unwrap();
        assert!(!Arc::ptr_eq(&plain.endpoint, &theirs));
    }
}
