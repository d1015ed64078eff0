//! The route layer: decides which address each request goes to, and under which
//! `authority` label it is counted.
//!
//! A redirected connection goes to its original destination, whatever the request
//! says: the application chose that address and the proxy is transparent. A request
//! sent to the proxy itself (explicit mode) goes to the authority it names.

use super::{BoxFuture, ConnCtx, MeteredBody, Target};
use crate::{errors, metrics::Direction, Proxy};
use http::{header, Request, Response, Uri};
use hyper::body::Incoming;
use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    task::{Context, Poll},
};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
pub(crate) struct RouteLayer {
    proxy: Arc<Proxy>,
    conn: Arc<ConnCtx>,
}

impl RouteLayer {
    pub(crate) fn new(proxy: Arc<Proxy>, conn: Arc<ConnCtx>) -> Self {
        Self { proxy, conn }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            proxy: self.proxy.clone(),
            conn: self.conn.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Route<S> {
    inner: S,
    proxy: Arc<Proxy>,
    conn: Arc<ConnCtx>,
}

impl<S> Service<Request<Incoming>> for Route<S>
where
    S: Service<Request<Incoming>, Response = Response<MeteredBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<MeteredBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<MeteredBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let proxy = self.proxy.clone();
        let conn = self.conn.clone();
        Box::pin(async move {
            match target(&proxy, &conn, &req).await {
                Ok(t) => {
                    req.extensions_mut().insert(t);
                    inner.oneshot(req).await
                }
                Err(rsp) => Ok(rsp.map(MeteredBody::unmetered)),
            }
        })
    }
}

/// The authority a request names: its URI's, else its `Host` header.
fn authority(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// Splits `host[:port]`, defaulting the port by scheme.
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
    Some((host, a.port_u16().unwrap_or(default)))
}

async fn target(
    proxy: &Proxy,
    conn: &ConnCtx,
    req: &Request<Incoming>,
) -> Result<Target, http::Response<super::ProxyBody>> {
    let named = authority(req);
    let (addr, explicit) = match (conn.orig_dst, conn.direction) {
        (Some(dst), _) => (dst, false),
        (None, Direction::Inbound) => match proxy.config.inbound_forward_addr {
            Some(a) => (a, false),
            None => return Err(errors::bad_request("no inbound target configured")),
        },
        (None, Direction::Outbound) => {
            let Some(named) = named else {
                return Err(errors::bad_request("request names no authority"));
            };
            let Some((host, port)) = host_port(named, req.uri()) else {
                return Err(errors::bad_request("invalid authority"));
            };
            (
                resolve(&host, port, named)
                    .await
                    .map_err(|e| errors::respond(&e, false))?,
                true,
            )
        }
    };
    if proxy.is_own_listener(addr) {
        let e = errors::LoopDetected { addr };
        return Err(errors::respond(&e, crate::classify::is_grpc(req.headers())));
    }
    let label = match conn.direction {
        Direction::Outbound => true,
        Direction::Inbound => proxy.config.inbound_authority_labels,
    };
    let authority = label
        .then(|| named.map(|a| with_port(a, addr.port())))
        .flatten();
    Ok(Target {
        addr,
        authority,
        explicit,
    })
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
        assert_eq!(&*with_port("10.1.2.3", 9), "10.1.2.3:9");
    }

    #[test]
    fn host_and_port() {
        let uri: Uri = "https://x/".parse().unwrap();
        assert_eq!(host_port("x", &uri), Some(("x".into(), 443)));
        let uri: Uri = "/".parse().unwrap();
        assert_eq!(host_port("[::1]:9", &uri), Some(("::1".into(), 9)));
        assert_eq!(host_port("a b", &uri), None);
    }
}
