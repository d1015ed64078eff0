//! The route layer: decides which address each request goes to, and under which
//! `authority` label it is counted.
//!
//! A redirected connection goes to its original destination, whatever the request
//! says: the application chose that address and the proxy is transparent. A request
//! sent to the proxy itself (explicit mode) goes to the authority it names.
//!
//! Outbound, with discovery on, that destination (`ip:port`, or the authority's
//! `host:port`) is looked up in discovery, with its profile; when discovery knows it,
//! the balancer below picks the endpoint. A destination discovery does not know goes
//! where it would have gone without discovery (the original destination, or DNS).
//! A failure here that the client should see counted (DNS could not resolve the
//! authority) goes down in the target, to be answered below the metrics.

use super::ReqBody;
use super::{BoxFuture, ConnCtx, MeteredBody, Stack, Target};
use crate::{
    config::HttpConfig,
    discover::{Discovery, Endpoints},
    errors,
    metrics::{Direction, Metrics, RequestError},
};
use http::{header, HeaderValue, Request, Response, Uri, Version};
use std::{
    borrow::Cow,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    task::{Context, Poll},
};
use tower::{Service, ServiceExt};

/// What routing needs of the proxy: made once, shared by every connection.
pub(crate) struct Routing {
    metrics: Metrics,
    /// Outbound discovery, when it is on.
    discovery: Option<Arc<Discovery>>,
    /// Explicit inbound mode: where every request goes.
    inbound_forward_addr: Option<SocketAddr>,
    /// Whether inbound series carry the `authority` label.
    inbound_authority_labels: bool,
    /// Whether this proxy has a mesh identity (that a plaintext client could pose as).
    meshed: bool,
}

impl Routing {
    pub(crate) fn new(
        config: &HttpConfig,
        inbound_forward_addr: Option<SocketAddr>,
        metrics: Metrics,
        discovery: Option<Arc<Discovery>>,
        meshed: bool,
    ) -> Self {
        Self {
            metrics,
            discovery,
            inbound_forward_addr,
            inbound_authority_labels: config.inbound_authority_labels,
            meshed,
        }
    }

    /// Discovery's destination for a name, when discovery is on.
    fn discover_name(&self, name: &str) -> Option<Arc<crate::discover::Destination>> {
        Some(self.discovery.as_ref()?.by_name(name))
    }
}

#[derive(Clone)]
pub(crate) struct Router<S> {
    inner: S,
    routing: Arc<Routing>,
    conn: Arc<ConnCtx>,
}

impl<S> Router<S> {
    pub(crate) fn new(inner: S, routing: Arc<Routing>, conn: Arc<ConnCtx>) -> Self {
        Self {
            inner,
            routing,
            conn,
        }
    }
}

impl<S: Stack> Service<Request<ReqBody>> for Router<S> {
    type Response = Response<MeteredBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<MeteredBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let inner = self.inner.clone();
        let routing = self.routing.clone();
        let conn = self.conn.clone();
        Box::pin(async move {
            let downgraded = match mesh_headers(&routing, &conn, &mut req) {
                Ok(d) => d,
                Err(msg) => return Ok(errors::forbidden(msg).map(MeteredBody::unmetered)),
            };
            match target(&routing, &conn, &req).await {
                Ok(mut t) => {
                    t.downgraded = downgraded;
                    if let Some(policy) = &conn.policy {
                        // Inbound, policy on: a denial is carried down as the
                        // target's failure, so that it is counted and tapped like
                        // any failure and answered by `errors::respond`.
                        let (decision, failed) = crate::policy::enforce::http(
                            &routing.metrics,
                            policy,
                            conn.client,
                            conn.client_id.as_ref(),
                            &req,
                        );
                        t.authz = Some(decision);
                        if failed.is_some() {
                            t.failed = failed;
                        }
                    }
                    req.extensions_mut().insert(t);
                    inner.oneshot(req).await
                }
                Err(rsp) => Ok(rsp.map(MeteredBody::unmetered)),
            }
        })
    }
}

/// Applies and checks the headers proxies exchange. Outbound, the application's
/// copies are removed: only a proxy sets them. Inbound over mesh TLS, an HTTP/1
/// request carried as HTTP/2 gets its version back (returns `true`), and the
/// application learns the client's verified identity. Inbound in plaintext, a request
/// carrying them is posing as a proxy: it is refused (the caller answers 403 with the
/// returned reason) and counted.
fn mesh_headers(
    routing: &Routing,
    conn: &ConnCtx,
    req: &mut Request<ReqBody>,
) -> Result<bool, &'static str> {
    let headers = req.headers_mut();
    match (conn.direction, &conn.client_id) {
        (Direction::Outbound, _) => {
            headers.remove(super::ORIG_PROTO);
            headers.remove(super::CLIENT_ID);
            Ok(false)
        }
        (Direction::Inbound, Some(id)) => {
            if let Ok(v) = HeaderValue::from_str(id) {
                headers.insert(super::CLIENT_ID, v);
            }
            let version = match headers.remove(super::ORIG_PROTO) {
                None => return Ok(false),
                Some(v) if v == "HTTP/1.0" => Version::HTTP_10,
                Some(_) => Version::HTTP_11,
            };
            *req.version_mut() = version;
            Ok(true)
        }
        (Direction::Inbound, None) => {
            let claims =
                headers.contains_key(super::ORIG_PROTO) || headers.contains_key(super::CLIENT_ID);
            if !claims {
                return Ok(false);
            }
            if !routing.meshed {
                // No mesh identity here to pose as; the claim is just dropped.
                headers.remove(super::ORIG_PROTO);
                headers.remove(super::CLIENT_ID);
                return Ok(false);
            }
            routing
                .metrics
                .tls_refused(Direction::Inbound, crate::tls::Refused::PlaintextClaim);
            tracing::info!(client = %conn.client, "refusing a plaintext request that claims a mesh identity");
            Err("plaintext request carries mesh identity headers")
        }
    }
}

/// The authority a request names: its URI's, else its `Host` header.
fn authority(req: &Request<ReqBody>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// Splits `host[:port]`, defaulting the port by scheme. `None` unless the authority
/// parses and its port, if it has one, is a number from 1 to 65535: an authority such
/// as `host:99999` or `host:80abc` is invalid (RFC 9112 §3.2 wants a 400), not a
/// request for port 80.
fn host_port(authority: &str, uri: &Uri) -> Option<(String, u16)> {
    let a: http::uri::Authority = authority.parse().ok()?;
    let default = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    let host = a
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return None;
    }
    let port = match explicit_port(a.as_str())? {
        Some(p) => p,
        None => default,
    };
    Some((host, port))
}

/// The port an authority names: `Some(None)` when it names none (or an empty one,
/// which means the scheme's default), `None` when what follows the host's `:` is not
/// a port number from 1 to 65535. (`http`'s `Authority::port` cannot tell an invalid
/// port from a missing one.)
fn explicit_port(authority: &str) -> Option<Option<u16>> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = match host_port.strip_prefix('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket.
        Some(rest) => match rest.split_once(']')?.1 {
            "" => return Some(None),
            after => after.strip_prefix(':')?,
        },
        None => match host_port.rsplit_once(':') {
            None => return Some(None),
            Some((_, port)) => port,
        },
    };
    if port.is_empty() {
        return Some(None);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(p) => Some(Some(p)),
    }
}

async fn target(
    routing: &Routing,
    conn: &ConnCtx,
    req: &Request<ReqBody>,
) -> Result<Target, http::Response<super::ProxyBody>> {
    let named = authority(req);
    // An authority the proxy cannot read is refused whatever the mode, before it is
    // used for routing or as a label.
    let host_port = match named.map(|a| host_port(a, req.uri())) {
        Some(None) => {
            routing
                .metrics
                .request_error(conn.direction, RequestError::InvalidAuthority);
            return Err(errors::bad_request(
                "invalid authority: expected host[:port] with a port from 1 to 65535",
            ));
        }
        Some(Some(hp)) => Some(hp),
        None => None,
    };
    let mut profile = None;
    let mut endpoints = None;
    let mut failed = None;
    let mut label = None;
    // Where the request goes, the port the client meant (for the `authority` label),
    // and whether the client addressed the proxy itself.
    let (addr, port, explicit) = match (conn.orig_dst, conn.direction) {
        (Some(dst), _) => {
            if let Some(d) = &conn.destination {
                endpoints = known(routing, d, &mut profile).await;
            }
            (dst, dst.port(), false)
        }
        (None, Direction::Inbound) => match routing.inbound_forward_addr {
            Some(a) => (a, a.port(), false),
            None => return Err(errors::bad_request("no inbound target configured")),
        },
        (None, Direction::Outbound) => {
            let (Some(named), Some((host, port))) = (named, host_port) else {
                routing
                    .metrics
                    .request_error(conn.direction, RequestError::NoAuthority);
                return Err(errors::bad_request("request names no authority"));
            };
            // The `authority` label (always on outbound), which is also, in the
            // common case, the discovery key: one allocation for both.
            let authority = label.insert(with_port(named, port));
            let ip = host.parse::<IpAddr>().ok();
            let dst = match ip {
                Some(ip) => routing
                    .discovery
                    .as_ref()
                    .and_then(|d| d.for_addr(SocketAddr::new(ip, port))),
                None => routing.discover_name(&name_key(authority, &host, port)),
            };
            if let Some(d) = dst {
                endpoints = known(routing, &d, &mut profile).await;
            }
            // The balancer picks the address of a destination discovery knows; until
            // then the series says there is none.
            let unresolved = SocketAddr::new(ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), port);
            let addr = match endpoints {
                Some(_) => unresolved,
                None => match resolve(&host, port, named).await {
                    Ok(a) => a,
                    Err(e) => {
                        failed = Some(errors::Decided::new(e));
                        unresolved
                    }
                },
            };
            (addr, port, true)
        }
    };
    let labelled = match conn.direction {
        Direction::Outbound => true,
        Direction::Inbound => routing.inbound_authority_labels,
    };
    let authority = label.or_else(|| {
        labelled
            .then(|| named.map(|a| with_port(a, port)))
            .flatten()
    });
    let mut target = super::Target::new(addr);
    target.authority = authority;
    target.explicit = explicit;
    target.profile = profile;
    target.endpoints = endpoints;
    target.failed = failed;
    // Inbound, the peer is the client proxy; outbound, the balancer learns it from the
    // endpoint it picks.
    target.peer = match conn.direction {
        Direction::Inbound => conn.client_id.clone(),
        Direction::Outbound => None,
    };
    Ok(target)
}

/// The destination an HTTP request to `d` is balanced over, when discovery knows
/// it: the destination's profile first (waited for at its first use, as the
/// endpoints are; kept only if it has routes or a split), then, when the profile
/// splits traffic (`dstOverrides`), one of its authorities picked by weight.
async fn known(
    routing: &Routing,
    d: &Arc<crate::discover::Destination>,
    profile: &mut Option<Arc<crate::discover::DstProfile>>,
) -> Option<Arc<Endpoints>> {
    // A profile with neither routes nor a split changes nothing a request does (as
    // Linkerd decides): the logical layer is skipped, and costs nothing.
    let p = d
        .profile()
        .await
        .filter(|p| p.profile.has_routes_or_split());
    let split = p
        .as_ref()
        .and_then(|p| p.profile.split())
        .map(|s| s.pick(&mut rand::thread_rng()).clone());
    *profile = p;
    match split {
        Some(authority) if *authority != **d.path() => match routing.discover_name(&authority) {
            // A split target discovery does not know yet goes where the request
            // would have gone without the split.
            Some(other) => match other.known().await {
                None => d.known().await,
                known => known,
            },
            None => d.known().await,
        },
        _ => d.known().await,
    }
}

/// The discovery key for a requested name: `host:port` in lowercase, as the
/// destination service expects it; borrowed from the request when it already is one.
fn name_key<'a>(authority: &'a str, host: &str, port: u16) -> Cow<'a, str> {
    let as_is = authority
        .strip_prefix(host)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|p| p.parse::<u16>().ok() == Some(port) && !p.starts_with('0'))
        && !authority.bytes().any(|b| b.is_ascii_uppercase());
    if as_is {
        Cow::Borrowed(authority)
    } else {
        Cow::Owned(format!("{}:{port}", host.to_ascii_lowercase()))
    }
}

/// The authority with an explicit port, as Linkerd labels it.
fn with_port(authority: &str, port: u16) -> Arc<str> {
    match authority.parse::<http::uri::Authority>() {
        Ok(a) if a.port().is_some() => authority.into(),
        _ => format!("{authority}:{port}").into(),
    }
}

async fn resolve(
    host: &str,
    port: u16,
    authority: &str,
) -> Result<SocketAddr, errors::ResolveFailed> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let fail = |source| errors::ResolveFailed {
        authority: authority.to_string(),
        source,
    };
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| fail(Some(e)))?;
    addrs.next().ok_or_else(|| fail(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_labels_carry_a_port() {
        assert_eq!(&*with_port("web.default.svc", 8080), "web.default.svc:8080");
        assert_eq!(&*with_port("web:80", 8080), "web:80");
        assert_eq!(&*with_port("[::1]", 80), "[::1]:80");
        assert_eq!(&*with_port("[::1]:81", 80), "[::1]:81");
        assert_eq!(&*with_port("198.18.102.3", 9), "198.18.102.3:9");
    }

    #[test]
    fn name_keys_are_lowercase_with_a_port() {
        fn key(a: &str) -> Cow<'_, str> {
            let (host, port) = host_port(a, &"/".parse().unwrap()).unwrap();
            name_key(a, &host, port)
        }
        assert!(matches!(
            key("web.ns.svc.cluster.local:80"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            key("web.ns.svc.cluster.local:80"),
            "web.ns.svc.cluster.local:80"
        );
        assert_eq!(key("web"), "web:80");
        assert_eq!(key("Web.NS:8080"), "web.ns:8080");
        assert_eq!(key("web:080"), "web:80");
    }

    #[test]
    fn host_and_port() {
        let uri: Uri = "https://x/".parse().unwrap();
        assert_eq!(host_port("x", &uri), Some(("x".into(), 443)));
        let uri: Uri = "/".parse().unwrap();
        assert_eq!(host_port("[::1]:9", &uri), Some(("::1".into(), 9)));
        assert_eq!(host_port("[::1]", &uri), Some(("::1".into(), 80)));
        assert_eq!(host_port("x:", &uri), Some(("x".into(), 80)));
        assert_eq!(host_port("u@x:8080", &uri), Some(("x".into(), 8080)));
        assert_eq!(host_port("a b", &uri), None);
    }

    #[test]
    fn bad_ports_are_not_port_80() {
        let uri: Uri = "/".parse().unwrap();
        for bad in [
            "127.0.0.1:99999",
            "127.0.0.1:65536",
            "127.0.0.1:18088abc",
            "x:0",
            "x:-1",
            "[::1]:70000",
            "[::1]x",
            ":80",
        ] {
            assert_eq!(host_port(bad, &uri), None, "{bad}");
        }
        assert_eq!(
            host_port("127.0.0.1:65535", &uri),
            Some(("127.0.0.1".into(), 65535))
        );
    }
}
