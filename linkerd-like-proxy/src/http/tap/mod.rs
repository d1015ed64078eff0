//! The tap layer: shows the requests a tap stream asked for to the [`tap`] registry,
//! with what the stack decided about them (the endpoint, its labels, the peer's
//! identity, the route).
//!
//! While nobody taps, a request costs one relaxed atomic load here and goes on as it
//! came ([`Registry::is_idle`]): the layer's future is then the inner service's own.
//! A tapped request's events are sent as it goes: `request_init` here, before it goes
//! on; `response_init` when the response headers come back; `response_end` from the
//! response body ([`MeteredBody`] carries the [`Tapped`]), when it ends, breaks or is
//! dropped.
//!
//! [`tap`]: crate::tap
//! [`Tapped`]: crate::tap::Tapped

use super::{BoxFuture, ConnCtx, MeteredBody, ReqBody, Stack, Target};
use crate::{
    errors::SyntheticResponse,
    tap::{Registry, RequestView},
};
use futures_util::future::Either;
use http::{Request, Response};
use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};
use tower::Service;

/// What the layer needs of its connection: the registry, and who the client is.
/// Made once per connection, so that the clone of the layer each request makes
/// touches no cache line that other connections write.
pub(crate) struct TapConn {
    pub(crate) registry: Arc<Registry>,
    pub(crate) conn: Arc<ConnCtx>,
}

#[derive(Clone)]
pub(crate) struct Tap<S> {
    inner: S,
    tap: Arc<TapConn>,
}

impl<S> Tap<S> {
    pub(crate) fn new(inner: S, tap: Arc<TapConn>) -> Self {
        Self { inner, tap }
    }
}

impl<S: Stack> Service<Request<ReqBody>> for Tap<S> {
    type Response = Response<MeteredBody>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<Result<Response<MeteredBody>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if self.tap.registry.is_idle() {
            return Either::Left(self.inner.call(req));
        }
        let Some(tapped) = self.observe(&req) else {
            return Either::Left(self.inner.call(req));
        };
        let rsp = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let mut tapped = Box::new(tapped);
            let Ok(mut rsp) = rsp.await;
            let proxy_error = rsp
                .extensions()
                .get::<SyntheticResponse>()
                .map_or("", |s| s.0);
            tapped.response_init(rsp.status().as_u16(), rsp.headers(), proxy_error);
            rsp.body_mut().tap(tapped);
            Ok(rsp)
        }))
    }
}

impl<S> Tap<S> {
    /// Offers the request to the registry's streams.
    fn observe(&self, req: &Request<ReqBody>) -> Option<crate::tap::Tapped> {
        let t = req.extensions().get::<Target>()?;
        let conn = &self.tap.conn;
        let view = RequestView {
            direction: conn.direction,
            source: conn.client,
            destination: t.addr,
            peer: t.peer.as_deref(),
            labels: t.labels.as_deref(),
            route: t
                .route
                .as_ref()
                .filter(|r| !r.is_default())
                .map(|r| &**r.name()),
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            authz: t.authz.as_ref(),
        };
        self.tap.registry.tap(&view)
    }
}

#[cfg(test)]
mod tests;
