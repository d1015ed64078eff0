//! The balancer layer: which endpoint of the destination a request goes to.
//!
//! For a destination that discovery knows (`Target::endpoints`, set by `Router`), each
//! call picks an endpoint by power of two choices over peak-EWMA cost, and leases a
//! connection to it before anything is sent: an endpoint that cannot be reached is
//! penalized and one other endpoint tried ([`Balanced::connect`], the rule opaque TCP
//! uses too), so a connect failure never reaches the client while another endpoint
//! can take the request. The request then goes down with the endpoint's address,
//! `dst_*` labels, peer identity and leased connection in its [`Target`]; a failure
//! goes down too, so that the metrics layer counts it.
//!
//! The pick holds the endpoint's load (one more pending) until the response headers
//! arrive, whose latency becomes the endpoint's, unless the request waited for a new
//! connection ([`WaitedForConnect`]): a handshake would make a fast endpoint look slow.
//! A retry from the logical layer above is just another call: a new pick, avoiding
//! the endpoint that failed ([`Picked`]).
//!
//! Requests for anything else (no discovery, a destination it does not know, inbound)
//! pass through at no cost; `Forward` leases their connection.

use super::{
    client::{LeaseSlot, Plan, PoolHandle, WaitedForConnect},
    BoxFuture, MeteredBody, Passthrough, ReqBody, Stack, Target,
};
use crate::{
    balance::Load,
    classify,
    discover::{Balanced, Resolved},
    errors::{Decided, NoEndpoints, SyntheticResponse},
};
use futures_util::future::Either;
use http::{Request, Response};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};
use tower::{Service, ServiceExt};

/// Set on a response by the balancer: the endpoint that answered, so that a retry
/// can go elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Picked(pub(crate) SocketAddr);

#[derive(Clone)]
pub(crate) struct Balance<S> {
    inner: S,
    pool: Arc<PoolHandle>,
}

impl<S> Balance<S> {
    pub(crate) fn new(inner: S, pool: Arc<PoolHandle>) -> Self {
        Self { inner, pool }
    }
}

impl<S: Stack> Service<Request<ReqBody>> for Balance<S> {
    type Response = Response<MeteredBody>;
    type Error = Infallible;
    type Future = Passthrough<S, BoxFuture<Result<Response<MeteredBody>, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let inner = self.inner.clone();
        let balance = req
            .extensions_mut()
            .get_mut::<Target>()
            .and_then(|t| Some((t.endpoints.take()?, t.avoid, t.explicit)));
        let Some((dst, avoid, explicit)) = balance else {
            return Either::Left(inner.oneshot(req));
        };
        let pool = self.pool.clone();
        // How the request will travel, to a plain endpoint and to a meshed one.
        let plans = Plan::both(&req, explicit);
        Either::Right(Box::pin(async move {
            let picked = match dst.pick(avoid) {
                // The endpoint to avoid is the only one: still better than none.
                Resolved::NoEndpoints(_) if avoid.is_some() => dst.pick(None),
                picked => picked,
            };
            let load = match picked {
                // Discovery stopped knowing the destination since `Router` looked: the
                // request goes where it would have without discovery.
                Resolved::Fallback => None,
                Resolved::NoEndpoints(dst) => {
                    fail(&mut req, Decided::new(NoEndpoints { dst }));
                    None
                }
                Resolved::Endpoint(first) => Some(lease(&pool, first, plans, &mut req).await),
            };
            let Ok(mut rsp) = inner.oneshot(req).await;
            if let Some((load, leased)) = load {
                if leased {
                    observe(&load, &rsp);
                }
                rsp.extensions_mut().insert(Picked(load.addr()));
            }
            Ok(rsp)
        }))
    }
}

/// Leases a connection to `first` (or, if it cannot be reached, to one other
/// endpoint), and routes the request there. Returns the load of the endpoint the
/// request goes to, and whether a connection to it was leased (else the request
/// carries the failure down, and the endpoint was penalized already).
async fn lease(
    pool: &PoolHandle,
    first: Balanced,
    plans: [Plan; 2],
    req: &mut Request<ReqBody>,
) -> (Load, bool) {
    let connector = pool.connector();
    let peer = |load: &Load| connector.peer_identity(load.identity()).cloned();
    let result = first
        .connect(
            |load| peer(load).is_some(),
            |load| {
                let peer = peer(load);
                let plan = plans[usize::from(peer.is_some())];
                let (addr, labels) = (load.addr(), load.labels().cloned());
                async move { pool.lease(addr, labels.as_ref(), peer.as_ref(), plan).await }
            },
        )
        .await;
    let leased = result.is_ok();
    let (lease, load) = match result {
        Ok((lease, load)) => (Some(LeaseSlot::new(lease)), load),
        Err((e, load)) => {
            fail(req, Decided::from(e));
            (None, load)
        }
    };
    if let Some(t) = req.extensions_mut().get_mut::<Target>() {
        t.addr = load.addr();
        t.labels = load.labels().cloned();
        t.peer = peer(&load);
        t.lease = lease;
    }
    (load, leased)
}

fn fail(req: &mut Request<ReqBody>, failed: Decided) {
    if let Some(t) = req.extensions_mut().get_mut::<Target>() {
        t.failed = Some(failed);
    }
}

/// Records the response's latency as the endpoint's, unless the request waited for a
/// new connection: the first request to a new endpoint (or after its connection
/// closed) would otherwise make it look as slow as a handshake, and since a slow-looking
/// endpoint gets few requests, the estimate would recover only by decay (seconds), not
/// by new samples. Its pending count was still claimed and released as usual.
///
/// A response the proxy made (the connection failed after it was leased) says nothing
/// of the endpoint's latency, only that it failed.
fn observe(load: &Load, rsp: &Response<MeteredBody>) {
    let synthetic = rsp.extensions().get::<SyntheticResponse>().is_some();
    if !synthetic && rsp.extensions().get::<WaitedForConnect>().is_none() {
        load.observe();
    }
    // Only what the headers already say: a gRPC status may still come in trailers.
    let grpc_status = classify::grpc_status(rsp.headers());
    let class = classify::classify(rsp.status(), false, grpc_status);
    load.outcome(class == classify::Class::Failure);
}

#[cfg(test)]
mod tests;
