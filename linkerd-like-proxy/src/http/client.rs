//! Upstream HTTP clients: the `Forward` service at the bottom of the stack, and the
//! [`Pool`] of connections it draws from.
//!
//! Each endpoint keeps idle HTTP/1 connections for reuse (a connection returns to
//! the pool when its response body ends) and one shared, multiplexed HTTP/2
//! connection. The protocol upstream is the protocol the client spoke.

use super::ReqBody;
use super::{body::ProxyBody, strip_hop_by_hop, upgrade, BoxFuture, Target};
use crate::{
    discover::Balanced,
    errors::{is_connect, BoxError, ConnectFailed, ConnectTimeout, NoEndpoints, UpstreamFailed},
    io::{MeteredIo, UpstreamIo},
    metrics::{Direction, Metrics, Peer},
    tls::{Alpn, MeshTls},
    Proxy,
};
use http::{header, uri, HeaderValue, Request, Response, Uri, Version};
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
use tokio_util::either::Either;
use tower::Service;

/// Idle HTTP/1 connections kept per endpoint, at most.
const MAX_IDLE_PER_ENDPOINT: usize = 512;

// === impl Forward ===

/// Sends a routed request upstream and returns the upstream's response.
#[derive(Clone)]
pub(crate) struct Forward {
    proxy: Arc<Proxy>,
    direction: Direction,
}

impl Forward {
    pub(crate) fn new(proxy: Arc<Proxy>, direction: Direction) -> Self {
        Self { proxy, direction }
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
        let proxy = self.proxy.clone();
        let direction = self.direction;
        Box::pin(async move {
            let pool = proxy.pool(direction);
            let mut target = req
                .extensions_mut()
                .remove::<Target>()
                .ok_or("request reached Forward unrouted")?;
            if let Some(dst) = target.no_endpoints.take() {
                return Err(NoEndpoints { dst }.into());
            }
            let peer = match direction {
                Direction::Outbound => target.tls.clone(),
                Direction::Inbound => None,
            };
            if upgrade::is_upgrade(&req) {
                return upgrade::forward(&proxy, pool, &target, peer.as_ref(), req).await;
            }
            let version = req.version();
            let mut h2 = version == Version::HTTP_2;
            strip_hop_by_hop(req.headers_mut());
            if (target.explicit || target.downgraded) && !h2 {
                to_origin_form(&mut req);
            }
            // Between proxies, HTTP/1 travels as multiplexed HTTP/2, and the far side
            // turns it back into what the client sent.
            let upgraded = peer.is_some() && !h2 && to_h2(&mut req);
            h2 |= upgraded;
            let mut rsp = match target.endpoint.take() {
                None => pool
                    .send(target.addr, None, peer.as_ref(), h2, req)
                    .await
                    .map_err(|e| e.error)?,
                Some(endpoint) => send_balanced(pool, endpoint, h2, req).await?,
            };
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

/// Turns an HTTP/1 request into the HTTP/2 request that carries it between proxies:
/// an absolute URI (HTTP/2 needs the authority) and `mesh-orig-proto` naming the
/// version to restore. `false` (and the request unchanged) when it names no
/// authority at all, so that it must travel as HTTP/1.
fn to_h2(req: &mut Request<ReqBody>) -> bool {
    if req.uri().authority().is_none() {
        let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<uri::Authority>().ok())
        else {
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

/// Sends a request to the endpoint the balancer chose, recording its latency to the
/// response headers. If the endpoint cannot be reached, nothing was sent, so the
/// request is retried once on another endpoint, and the unreachable one is penalized
/// so that later picks avoid it until discovery removes it or it recovers. (Not on an
/// endpoint that is meshed when the first was not, or the reverse: the request was
/// prepared for one kind of peer.)
///
/// The request stays counted in the metrics of the endpoint first chosen (the metrics
/// layer above labelled it before it was sent); the TCP metrics show where the
/// connection that carried it went.
async fn send_balanced(
    pool: &Pool,
    endpoint: Balanced,
    h2: bool,
    req: Request<ReqBody>,
) -> Result<Response<ProxyBody>, BoxError> {
    let Balanced { load, dst } = endpoint;
    let peer = pool.connector.mesh(load.identity()).cloned();
    let (req, error) = match pool
        .send(load.addr(), load.labels(), peer.as_ref(), h2, req)
        .await
    {
        Ok(rsp) => {
            observe(&load, &rsp);
            return Ok(rsp);
        }
        Err(SendError {
            error,
            unsent: Some(req),
        }) if is_connect(&*error) => (req, error),
        Err(e) => return Err(e.error),
    };
    load.penalize();
    let Some(other) = dst.pick_other(load.addr()) else {
        return Err(error);
    };
    let other_peer = pool.connector.mesh(other.load.identity()).cloned();
    if other_peer.is_some() != peer.is_some() {
        return Err(error);
    }
    drop(load);
    tracing::debug!(error = %crate::errors::chain(&*error), retry = %other.load.addr(), "endpoint unreachable; trying another");
    match pool
        .send(
            other.load.addr(),
            other.load.labels(),
            other_peer.as_ref(),
            h2,
            req,
        )
        .await
    {
        Ok(rsp) => {
            observe(&other.load, &rsp);
            Ok(rsp)
        }
        Err(e) => {
            if is_connect(&*e.error) {
                other.load.penalize();
            }
            Err(e.error)
        }
    }
}

/// Records the response's latency as the endpoint's, unless the request waited for a
/// new connection: the first request to a new endpoint (or after its connection
/// closed) would otherwise make it look as slow as a handshake, and since a slow-looking
/// endpoint gets few requests, the estimate would recover only by decay (seconds), not
/// by new samples. Its pending count was still claimed and released as usual.
fn observe(load: &crate::balance::Load, rsp: &Response<ProxyBody>) {
    if rsp.extensions().get::<WaitedForConnect>().is_none() {
        load.observe();
    }
    // Only what the headers already say: a gRPC status may still come in trailers.
    let grpc_status = crate::classify::grpc_status(rsp.headers());
    let class = crate::classify::classify(rsp.status(), false, grpc_status);
    load.outcome(class == crate::classify::Class::Failure);
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
    /// This proxy's mesh TLS, when identity is on.
    pub(crate) tls: Option<Arc<MeshTls>>,
    /// How large a response head the proxy reads.
    pub(crate) limits: super::HeadLimits,
}

impl Connector {
    /// The identity to open mesh TLS to, for an endpoint whose proxy has `identity`:
    /// none when this proxy has no identity of its own (it cannot authenticate).
    pub(crate) fn mesh<'a>(&self, identity: Option<&'a Arc<str>>) -> Option<&'a Arc<str>> {
        identity.filter(|_| self.tls.is_some())
    }

    /// Connects to `addr`, counted in the `tcp_*{peer="dst"}` series with the
    /// endpoint's `dst_*` labels, if any. With `peer`, the connection is mesh TLS to
    /// the proxy with that identity, announcing `alpn`.
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        dst: Option<&Arc<str>>,
        peer: Option<(&Arc<str>, Alpn)>,
    ) -> Result<UpstreamIo, BoxError> {
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
        crate::tune(&stream);
        let mesh = peer.and_then(|(id, alpn)| Some((self.tls.as_ref()?, id, alpn)));
        let m = self.metrics.tcp_open(
            self.direction,
            Peer::Dst,
            addr,
            mesh.map(|(_, id, _)| id),
            dst,
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

/// Marks a response whose request waited for a new connection (TCP, TLS, HTTP/2
/// handshakes): its latency says more about the handshake than about the endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitedForConnect;

/// A request that could not be sent, and the request itself when none of it went
/// out (so that it may be sent elsewhere).
pub(crate) struct SendError {
    pub(crate) error: BoxError,
    pub(crate) unsent: Option<Request<ReqBody>>,
}

impl SendError {
    fn sent(error: impl Into<BoxError>) -> Self {
        Self {
            error: error.into(),
            unsent: None,
        }
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

    fn endpoint(
        &self,
        addr: SocketAddr,
        peer: Option<&Arc<str>>,
        h2: bool,
    ) -> (Arc<Endpoint>, u64) {
        let epoch = self.epoch.load(Relaxed);
        let ep = lock(&self.endpoints)
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
            .clone();
        ep.last_used.store(epoch, Relaxed);
        (ep, epoch)
    }

    /// Sends `req` to `addr` on a pooled connection, opening one (labelled with `dst`)
    /// if needed; with `peer`, over mesh TLS to the proxy with that identity.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        dst: Option<&Arc<str>>,
        peer: Option<&Arc<str>>,
        h2: bool,
        req: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        let (ep, epoch) = self.endpoint(addr, peer, h2);
        if h2 {
            self.send_h2(&ep, dst, req).await
        } else {
            self.send_h1(ep, epoch, dst, req).await
        }
    }

    async fn send_h1(
        &self,
        ep: Arc<Endpoint>,
        epoch: u64,
        dst: Option<&Arc<str>>,
        mut req: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        loop {
            let (mut conn, reused) = match Self::checkout_h1(&ep).await {
                Some(s) => (s, true),
                None => match self.connect_h1(&ep, dst).await {
                    Ok(s) => (s, false),
                    Err(error) => {
                        return Err(SendError {
                            error,
                            unsent: Some(req),
                        })
                    }
                },
            };
            match conn.sender.try_send_request(req).await {
                Ok(rsp) => {
                    let giveback = GiveBack {
                        endpoint: ep,
                        epoch,
                        conn,
                    };
                    let mut rsp = rsp.map(|b| ProxyBody::upstream(b, Some(giveback)));
                    if !reused {
                        rsp.extensions_mut().insert(WaitedForConnect);
                    }
                    return Ok(rsp);
                }
                Err(mut e) => match e.take_message() {
                    // The pooled connection closed before the request went out on it:
                    // nothing was sent, so sending on another connection is safe.
                    Some(r) if reused => req = r,
                    _ => {
                        let source = e.into_error();
                        if source.is_parse_too_large() {
                            let read = conn.head_read.since_write();
                            let limits = &self.connector.limits;
                            return Err(SendError::sent(limits.response_too_large(ep.addr, read)));
                        }
                        return Err(SendError::sent(UpstreamFailed {
                            addr: ep.addr,
                            source,
                        }));
                    }
                },
            }
        }
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

    async fn connect_h1(&self, ep: &Endpoint, dst: Option<&Arc<str>>) -> Result<H1, BoxError> {
        let addr = ep.addr;
        let peer = ep.peer.as_ref().map(|p| (p, Alpn::Http1));
        let io = self.connector.connect(addr, dst, peer).await?;
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

    async fn send_h2(
        &self,
        ep: &Endpoint,
        dst: Option<&Arc<str>>,
        req: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        let mut waited = false;
        let mut sender = match Self::open_h2(ep) {
            Some(s) => s,
            None => {
                waited = true;
                let _connecting = ep.h2_connecting.lock().await;
                // Another request may have connected while this one waited.
                match Self::open_h2(ep) {
                    Some(s) => s,
                    None => match self.connect_h2(ep, dst).await {
                        Ok(s) => {
                            *lock(&ep.h2) = Some(s.clone());
                            s
                        }
                        Err(error) => {
                            return Err(SendError {
                                error,
                                unsent: Some(req),
                            })
                        }
                    },
                }
            }
        };
        let failed = |source| {
            SendError::sent(UpstreamFailed {
                addr: ep.addr,
                source,
            })
        };
        sender.ready().await.map_err(failed)?;
        let rsp = sender.send_request(req).await.map_err(failed)?;
        let mut rsp = rsp.map(|b| ProxyBody::upstream(b, None));
        if waited {
            rsp.extensions_mut().insert(WaitedForConnect);
        }
        Ok(rsp)
    }

    fn open_h2(ep: &Endpoint) -> Option<http2::SendRequest<ReqBody>> {
        lock(&ep.h2).as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_h2(
        &self,
        ep: &Endpoint,
        dst: Option<&Arc<str>>,
    ) -> Result<http2::SendRequest<ReqBody>, BoxError> {
        let addr = ep.addr;
        let peer = ep.peer.as_ref().map(|p| (p, Alpn::H2));
        let io = self.connector.connect(addr, dst, peer).await?;
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
