//! The rescue layer: the one place where an error from below becomes the response a
//! client sees (502/504 with `mesh-proxy-error`, or a gRPC status).

use super::ReqBody;
use super::{BoxFuture, ProxyBody};
use crate::{classify, errors};
use http::{Request, Response};
use std::{
    convert::Infallible,
    task::{Context, Poll},
};
use tower::{Service, ServiceExt};

#[derive(Clone)]
pub(crate) struct Rescue<S> {
    inner: S,
}

impl<S> Rescue<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request<ReqBody>> for Rescue<S>
where
    S: Service<Request<ReqBody>, Response = Response<ProxyBody>, Error = errors::BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = classify::is_grpc(req.headers());
        let inner = self.inner.clone();
        Box::pin(async move {
            match inner.oneshot(req).await {
                Ok(rsp) => Ok(rsp),
                Err(e) => {
                    tracing::debug!(error = %errors::chain(&*e), "request failed");
                    Ok(errors::respond(&*e, grpc))
                }
            }
        })
    }
}
