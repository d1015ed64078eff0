//! The HTTP side of the proxy: serves a detected HTTP/1 or HTTP/2 connection with
//! hyper, and sends each request through a stack of tower middleware to a pooled
//! upstream connection.
//!
//! The stack, outermost first (see `serve`), in the order Linkerd uses (logical →
//! concrete → endpoint); each layer sits where it does for one reason:
//! - `Router`: which destination (the original one, or the authority named), its
//!   discovery lookup and profile; first, because every layer below reads its target.
//! - `Logical`: the profile's route, its timeout and retries; above the balancer, so
//!   that a retry is just another call below, with a new pick.
//! - `Balance`: which endpoint (P2C), with its connection leased before anything is
//!   sent, so that a connect failure goes to another endpoint unseen; above the
//!   metrics, so that each attempt is counted under the endpoint that served it.
//! - `Tap`: shows requests to tap streams, with what was decided about them (the
//!   endpoint, its labels, the peer's identity, the route); below `Balance`, since
//!   only then are those known (so each attempt of a retried request is tapped as
//!   sent), and above `HttpMetrics`, since its response hook rides on `MeteredBody`,
//!   the body every layer above the metrics carries, so no body type of its own
//!   wraps every response. While nobody taps it costs one relaxed atomic load.
//! - `HttpMetrics`: golden metrics per endpoint; above `Rescue`, so that the responses
//!   the proxy makes for failures are counted with their `error` label.
//! - `Rescue`: errors become 400/502/503/504 or a gRPC status, once, at the edge.
//! - `Forward`: the leased (or pooled) upstream connection, upgrades, CONNECT; and
//!   the failures decided above the metrics, carried down in the target, returned as
//!   errors here so that they are counted.

mod balance;
mod body;
mod client;
mod logical;
mod metrics;
pub(crate) mod recent;
mod req_body;
mod rescue;
mod route;
mod tap;
mod upgrade;

pub use self::body::ProxyBody;
pub(crate) use self::client::{Connector, Pool};
pub use self::req_body::{Buffered, Replay, ReqBody, REPLAY_LIMIT};

/// hyper's default HTTP/1 header-field limit, which it keeps on the stack; any other
/// limit costs a heap allocation per message head.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// hyper's default HTTP/1 read buffer limit. The head limit is enforced on its own
/// (`max_header_size`); the buffer is never smaller than this, so that reading bodies
/// is not slowed by a small head limit.
const HYPER_DEFAULT_MAX_BUF: usize = 8192 + 4096 * 100;

/// How large a message head the proxy reads, in requests and responses alike.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLimits {
    /// HTTP/1: most header fields.
    pub(crate) h1_fields: usize,
    /// HTTP/1: most bytes of head.
    pub(crate) h1_bytes: usize,
    /// HTTP/2: the largest header list (RFC 9113's size).
    pub(crate) h2_list: u32,
}

impl HeadLimits {
    pub(crate) fn new(config: &HttpConfig) -> Self {
        Self {
            h1_fields: config.http1_max_headers,
            h1_bytes: config.http1_max_header_bytes,
            h2_list: config.http2_max_header_list_bytes,
        }
    }

    /// An HTTP/1 client for upstream connections, with these limits on responses.
    pub(crate) fn h1_client(&self) -> hyper::client::conn::http1::Builder {
        let mut b = hyper::client::conn::http1::Builder::new();
        b.max_buf_size(self.h1_bytes.max(HYPER_DEFAULT_MAX_BUF))
            .max_header_size(self.h1_bytes);
        if self.h1_fields != HYPER_DEFAULT_MAX_HEADERS {
            b.max_headers(self.h1_fields);
        }
        b
    }

    /// Which limit an upstream's response head hit (hyper says "too large" for both),
    /// from how much of it had arrived.
    pub(crate) fn response_too_large(
        &self,
        addr: SocketAddr,
        read: usize,
    ) -> crate::errors::ResponseHeadTooLarge {
        crate::errors::ResponseHeadTooLarge {
            addr,
            limit: crate::errors::HeadLimit::hit(read, self.h1_fields, self.h1_bytes),
        }
    }
}

/// Set by the outbound proxy on an HTTP/1 request it carries to another proxy as
/// HTTP/2: the version to restore (`HTTP/1.1` or `HTTP/1.0`).
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("mesh-orig-proto");
/// Set by the inbound proxy on requests that came over mesh TLS: the client proxy's
/// verified identity, for the application to authorize on.
pub const CLIENT_ID: HeaderName = HeaderName::from_static("mesh-client-id");
pub use self::metrics::MeteredBody;

use self::client::LeaseSlot;
use crate::{
    config::HttpConfig,
    detect::Protocol,
    discover::{Destination, Discovery, Endpoints},
    metrics::{Direction, Metrics, RequestError},
    tls::MeshTls,
};
use http::{header, HeaderMap, HeaderName, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use std::{
    convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{Service, ServiceBuilder};

/// What serving HTTP needs of the proxy, and nothing more: made once by `bind`, shared
/// by every connection.
pub(crate) struct Http {
    /// The upstream pools, inbound and outbound.
    pools: [Arc<Pool>; 2],
    routing: Arc<route::Routing>,
    metrics: Metrics,
    /// The tap streams, which every connection's tap layer offers requests to.
    tap: Arc<crate::tap::Registry>,
    limits: HeadLimits,
    header_read_timeout: Duration,
    /// Cancelled when the proxy drains: connections finish in-flight requests and close.
    shutdown: CancellationToken,
    /// Where tunnels run, so that shutdown waits for them.
    tasks: TaskTracker,
}

impl Http {
    pub(crate) fn new(
        config: &HttpConfig,
        inbound_forward_addr: Option<SocketAddr>,
        (metrics, tap): (Metrics, Arc<crate::tap::Registry>),
        tls: Option<Arc<MeshTls>>,
        discovery: Option<Arc<Discovery>>,
        listeners: Arc<[SocketAddr]>,
        (shutdown, tasks): (CancellationToken, TaskTracker),
    ) -> Self {
        let limits = HeadLimits::new(config);
        let pool = |direction| {
            // Inbound, connections go to the application: never mesh TLS.
            let tls = tls.clone().filter(|_| direction == Direction::Outbound);
            let connector = Connector {
                metrics: metrics.clone(),
                direction,
                timeout: config.connect_timeout,
                tls,
                limits,
                listeners: listeners.clone(),
            };
            Arc::new(Pool::new(connector))
        };
        let routing = route::Routing::new(
            config,
            inbound_forward_addr,
            metrics.clone(),
            discovery,
            tls.is_some(),
        );
        Self {
            pools: [pool(Direction::Inbound), pool(Direction::Outbound)],
            routing: Arc::new(routing),
            metrics,
            tap,
            limits,
            header_read_timeout: config.http1_header_read_timeout,
            shutdown,
            tasks,
        }
    }

    pub(crate) fn pool(&self, direction: Direction) -> &Arc<Pool> {
        &self.pools[direction as usize]
    }

    pub(crate) fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of a layer that passes most requests straight through (no allocation)
/// and does its own work, boxed, for the others.
pub(crate) type Passthrough<S, F> =
    futures_util::future::Either<tower::util::Oneshot<S, Request<ReqBody>>, F>;

/// What the layers above the metrics wrap: the rest of the stack, answering every
/// request with a response (errors were made responses below), cloned per request.
pub(crate) trait Stack:
    Service<Request<ReqBody>, Response = Response<MeteredBody>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> Stack for S where
    S: Service<
            Request<ReqBody>,
            Response = Response<MeteredBody>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// What the proxy knows about a downstream connection.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) direction: Direction,
    /// The address the client meant to reach, when iptables redirected it.
    pub(crate) orig_dst: Option<SocketAddr>,
    pub(crate) client: SocketAddr,
    /// Discovery's destination for `orig_dst` (outbound, discovery on), looked up once
    /// for all of the connection's requests.
    pub(crate) destination: Option<Arc<Destination>>,
    /// The client proxy's identity, when the connection is mesh TLS (inbound).
    pub(crate) client_id: Option<Arc<str>>,
    /// The port's inbound policy, which each request is checked against (inbound,
    /// policy on).
    pub(crate) policy: Option<crate::policy::PortPolicy>,
}

/// Where one request goes: decided by `Router` (the destination), then by `Balance`
/// (the endpoint), and read by the layers below them.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The address the request goes to: the destination's (the original destination,
    /// or what DNS said of the authority), and once `Balance` picked, the endpoint's.
    pub(crate) addr: SocketAddr,
    /// The `authority` metric label, when there is one.
    pub(crate) authority: Option<Arc<str>>,
    /// The client addressed the proxy itself (explicit HTTP proxy mode), so an
    /// absolute-form request must become origin-form before it goes upstream.
    pub(crate) explicit: bool,
    /// The request came from another proxy as HTTP/2 and goes on as the HTTP/1 its
    /// client sent, so in origin form.
    pub(crate) downgraded: bool,
    /// The destination's ServiceProfile (outbound, discovery on): the logical layer
    /// takes it to apply the request's route.
    pub(crate) profile: Option<Arc<crate::discover::DstProfile>>,
    /// The route the request matched, whose response classes decide success.
    pub(crate) route: Option<Arc<crate::profile::Route>>,
    /// The destination discovery knows, whose endpoints `Balance` picks from.
    pub(crate) endpoints: Option<Arc<Endpoints>>,
    /// An endpoint a retry should not go back to: the one that failed it.
    pub(crate) avoid: Option<SocketAddr>,
    /// The chosen endpoint's `dst_*` metric labels.
    pub(crate) labels: Option<Arc<str>>,
    /// The peer proxy's identity when the request travels over mesh TLS: outbound the
    /// server's, inbound the client's.
    pub(crate) peer: Option<Arc<str>>,
    /// The connection `Balance` leased for the request.
    pub(crate) lease: Option<LeaseSlot>,
    /// A failure decided above the metrics layer, answered by `Forward`.
    pub(crate) failed: Option<crate::errors::Decided>,
    /// What the inbound policy decided of the request (policy on), for tap.
    pub(crate) authz: Option<crate::policy::enforce::Decision>,
}

impl Target {
    /// A target at `addr`, with nothing decided yet beyond it.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            authority: None,
            explicit: false,
            downgraded: false,
            profile: None,
            route: None,
            endpoints: None,
            avoid: None,
            labels: None,
            peer: None,
            lease: None,
            failed: None,
            authz: None,
        }
    }
}

/// Serves one HTTP connection until it ends, or until shutdown drains it.
pub(crate) async fn serve<I>(http: &Http, conn: ConnCtx, io: I, protocol: Protocol)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let pool = Arc::new(client::PoolHandle::new(http.pool(conn.direction).clone()));
    let tap_conn = Arc::new(tap::TapConn {
        registry: http.tap.clone(),
        conn: conn.clone(),
    });
    let svc = ServiceBuilder::new()
        .layer_fn(|s| route::Router::new(s, http.routing.clone(), conn.clone()))
        .layer_fn(|s| logical::Logical::new(s, http.metrics.clone()))
        .layer_fn(|s| balance::Balance::new(s, pool.clone()))
        .layer_fn(|s| tap::Tap::new(s, tap_conn.clone()))
        .layer_fn(|s| metrics::HttpMetrics::new(s, http.metrics.clone(), conn.direction))
        .layer_fn(rescue::Rescue::new)
        .service(client::Forward::new(pool.clone(), http.tasks.clone()));
    // Requests leave hyper with its body type; the stack carries bodies that may also
    // be held for a retry.
    let svc = tower::util::MapRequest::new(svc, |req: http::Request<hyper::body::Incoming>| {
        req.map(ReqBody::Streamed)
    });
    let svc = TowerToHyperService::new(svc);
    let shutdown = http.shutdown.clone();
    let limits = http.limits;
    // How much of the request being read has arrived, should hyper refuse its head.
    let mut head_read = None;
    let res = match protocol {
        Protocol::Http2 => {
            let io = TokioIo::new(io);
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            // PINGs find clients that went away without closing; without them an idle
            // HTTP/2 connection would be held forever.
            b.timer(TokioTimer::new())
                .max_concurrent_streams(Some(1000))
                .max_header_list_size(limits.h2_list)
                .keep_alive_interval(Some(Duration::from_secs(10)))
                .keep_alive_timeout(Duration::from_secs(20));
            let conn = b.serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        _ => {
            let (io, read) = crate::io::ReadSinceWrite::new(io);
            head_read = Some(read);
            let io = TokioIo::new(io);
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(http.header_read_timeout)
                .max_buf_size(limits.h1_bytes.max(HYPER_DEFAULT_MAX_BUF))
                .max_header_size(limits.h1_bytes)
                // The application's `Date` passes through; the proxy adds none.
                .auto_date_header(false);
            if limits.h1_fields != HYPER_DEFAULT_MAX_HEADERS {
                b.max_headers(limits.h1_fields);
            }
            let conn = b.serve_connection(io, svc).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    let Err(e) = res else { return };
    // hyper answered a request it could not parse itself (400, or 431 for a head over
    // a limit): counted, and for a head, which limit it hit.
    if e.is_parse_too_large() {
        // hyper has written its 431 since it gave up on the head.
        let read = head_read.map_or(0, |r| r.before_last_write());
        let limit = crate::errors::HeadLimit::hit(read, limits.h1_fields, limits.h1_bytes);
        let error = match limit {
            crate::errors::HeadLimit::Fields(_) => RequestError::TooManyHeaders,
            crate::errors::HeadLimit::Bytes(_) => RequestError::HeadTooLarge,
        };
        http.metrics.request_error(conn.direction, error);
        tracing::debug!(client = %conn.client, "refused a request head with {limit}");
    } else if e.is_parse() {
        http.metrics
            .request_error(conn.direction, RequestError::Malformed);
        tracing::debug!(client = %conn.client, error = %crate::errors::chain(&e), "refused a malformed request");
    } else {
        tracing::debug!(client = %conn.client, error = %crate::errors::chain(&e), "http connection closed with error");
    }
}

/// Headers that describe one connection, not the message: they stop at the proxy
/// (RFC 9110 §7.6.1). Upgrades are handled before this is called.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION).cloned() {
        if let Ok(conn) = conn.to_str() {
            for name in conn.split(',').map(str::trim) {
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                    if name != header::TE {
                        headers.remove(name);
                    }
                }
            }
        }
    }
    headers.remove(header::CONNECTION);
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    // `te: trailers` is how gRPC says it understands trailers; any other TE value is
    // about this connection's encoding only.
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-app"], "kept");
        assert_eq!(h[header::TE], "trailers");
    }
}
