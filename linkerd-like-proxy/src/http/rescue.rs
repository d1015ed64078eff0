//! The rescue layer: where an error from below becomes the response a client sees
//! (400/502/503/504 with `mesh-proxy-error`, or a gRPC status). Every synthetic response
//! is built by `errors::respond`; `Logical` also calls it, for the route timeout and a
//! request body that failed, which it answers itself.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{errors::ConnectFailed, http::Replay};

    fn failing(
    ) -> Rescue<tower::util::BoxCloneService<Request<ReqBody>, Response<ProxyBody>, errors::BoxError>>
    {
        let inner = tower::service_fn(|_: Request<ReqBody>| async {
            let e = ConnectFailed {
                addr: ([198, 18, 0, 9], 80).into(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            };
            Err::<Response<ProxyBody>, errors::BoxError>(e.into())
        });
        Rescue::new(tower::util::BoxCloneService::new(inner))
    }

    #[tokio::test]
    async fn an_error_below_becomes_the_response_the_client_sees() {
        let rsp = failing()
            .call(Request::new(ReqBody::from(Replay::default())))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 502);
        assert_eq!(
            rsp.extensions().get::<errors::SyntheticResponse>(),
            Some(&errors::SyntheticResponse("connect"))
        );
        // A gRPC client gets a gRPC status instead.
        let mut req = Request::new(ReqBody::from(Replay::default()));
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        let rsp = failing().call(req).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["grpc-status"], "14");
    }
}
