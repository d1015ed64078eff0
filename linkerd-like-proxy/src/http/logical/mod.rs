//! The logical layer: what a destination's ServiceProfile asks of each request.
//!
//! The route is the first of the profile's routes whose condition matches the request
//! (else the implicit default route). Then, for the whole request however many
//! attempts it takes:
//! - `route_request_total` / `route_response_total` / `route_response_latency_ms`
//!   (labels `direction`, always outbound, `dst`, `rt_route`), and per attempt
//!   `route_actual_*`;
//! - the route's timeout, over every attempt, until the response headers: 504 (gRPC:
//!   `grpc-status: 4`) with `mesh-proxy-error`;
//! - for a retryable route, a failed attempt (by the route's response classes, the one
//!   classifier, so a refused connection's 502 too) is retried, after a jittered
//!   backoff, by calling the balancer below again (which avoids the endpoint that
//!   failed), while the profile's retry budget and the route's
//!   `maxRetries` allow, and only if the body fit in [`super::REPLAY_LIMIT`] bytes for
//!   replay.
//!   Each retry and each skipped one is counted in `route_retryable_total`.
//!
//! Requests without a profile pass straight through, at no cost.

use super::{
    balance::Picked, metrics::meter, BoxFuture, MeteredBody, Passthrough, ReqBody, Stack, Target,
};
use crate::{
    classify::{self, Class},
    discover::DstProfile,
    http::Buffered,
    metrics::{Direction, Metrics, ResponseEnd, RouteFamily},
    profile::{self, Route},
};
use futures_util::future::Either;
use http::{Request, Response};
use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

#[derive(Clone)]
pub(crate) struct Logical<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Logical<S> {
    pub(crate) fn new(inner: S, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }
}

impl<S> Service<Request<ReqBody>> for Logical<S>
where
    S: Stack,
{
    type Response = Response<MeteredBody>;
    type Error = Infallible;
    type Future = Passthrough<S, BoxFuture<Result<Response<MeteredBody>, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let inner = self.inner.clone();
        let profile = req
            .extensions_mut()
            .get_mut::<Target>()
            .and_then(|t| t.profile.take());
        let Some(profile) = profile else {
            return Either::Left(inner.oneshot(req));
        };
        let metrics = self.metrics.clone();
        Either::Right(Box::pin(async move {
            Ok(logical(&metrics, inner, &profile, req).await)
        }))
    }
}

async fn logical<S>(
    metrics: &Metrics,
    inner: S,
    profile: &DstProfile,
    mut req: Request<ReqBody>,
) -> Response<MeteredBody>
where
    S: Stack,
{
    let start = Instant::now();
    let route = profile
        .profile
        .route(req.method(), req.uri().path())
        .clone();
    if let Some(t) = req.extensions_mut().get_mut::<Target>() {
        t.route = Some(route.clone());
    }
    let grpc = classify::is_grpc(req.headers());
    let series = metrics.route(
        RouteFamily::Logical,
        Direction::Outbound,
        &profile.name,
        route.name(),
    );
    series.request();
    let attempts = Attempts {
        metrics,
        profile,
        route: &route,
        grpc,
        deadline: route.timeout().map(|t| start + t),
    };
    let mut rsp = match route.timeout() {
        None => attempts.run(inner, req).await,
        Some(t) => match tokio::time::timeout(t, attempts.run(inner, req)).await {
            Ok(rsp) => rsp,
            Err(_) => timed_out(t, grpc),
        },
    };
    meter(&mut rsp, series, start, grpc, Some(route));
    rsp
}

struct Attempts<'a> {
    metrics: &'a Metrics,
    profile: &'a DstProfile,
    route: &'a Arc<Route>,
    grpc: bool,
    /// When the route's timeout ends every attempt, if it has one.
    deadline: Option<Instant>,
}

impl Attempts<'_> {
    async fn run<S>(&self, inner: S, req: Request<ReqBody>) -> Response<MeteredBody>
    where
        S: Stack,
    {
        let budget = self.profile.profile.budget();
        // Every request adds to the budget; only retries take from it.
        budget.deposit();
        if !self.route.is_retryable() {
            return self.attempt(inner, req).await;
        }
        let (parts, body) = req.into_parts();
        let replay = match body {
            ReqBody::Streamed(b) => match ReqBody::buffer(b).await {
                Ok(Buffered::Whole(r)) => r,
                Ok(Buffered::TooLarge(body)) => {
                    let rsp = self.attempt(inner, Request::from_parts(parts, body)).await;
                    if self.failed(&rsp) {
                        self.count("body_too_large");
                    }
                    return rsp;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "request body failed while buffered for retries");
                    let e = crate::errors::RequestBodyFailed { source: e };
                    return crate::errors::respond(&e, self.grpc).map(MeteredBody::unmetered);
                }
            },
            // A body already whole in memory is replayable as it is.
            ReqBody::Replay(r) => r,
            // A body read ahead past the limit is sent once, as it is.
            other => return self.attempt(inner, Request::from_parts(parts, other)).await,
        };
        // Each attempt gets its own copy of the target: the balancer below fills in
        // the endpoint it picks for that attempt.
        let mut parts = parts;
        let first = parts.extensions.remove::<Target>();
        let mut avoid = None;
        let mut retries = 0u32;
        loop {
            let mut req = Request::new(ReqBody::Replay(replay.clone()));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            if let Some(t) = &first {
                let mut t = t.clone();
                t.avoid = avoid;
                req.extensions_mut().insert(t);
            }
            let mut rsp = self.attempt(inner.clone(), req).await;
            if !self.failed(&rsp) {
                return rsp;
            }
            if self.route.max_retries().is_some_and(|max| retries >= max) {
                self.count("max_retries");
                return rsp;
            }
            if !budget.try_withdraw() {
                self.count("no_budget");
                return rsp;
            }
            self.count("");
            retries += 1;
            avoid = rsp.extensions().get::<Picked>().map(|p| p.0);
            // The failed attempt is done with: its metrics are recorded now, by status.
            rsp.body_mut().finish_discarded();
            drop(rsp);
            let wait = profile::backoff(retries, &mut rand::thread_rng());
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt, counted in `route_actual_*`. Every attempt sent ends in exactly
    /// one recorded outcome: its response, or, when the route's timeout (or the
    /// client's going away) drops it first, a failure saying which.
    async fn attempt<S>(&self, inner: S, req: Request<ReqBody>) -> Response<MeteredBody>
    where
        S: Service<Request<ReqBody>, Response = Response<MeteredBody>, Error = Infallible>,
    {
        let start = Instant::now();
        let series = self.metrics.route(
            RouteFamily::Actual,
            Direction::Outbound,
            &self.profile.name,
            self.route.name(),
        );
        series.request();
        let mut unanswered = Unanswered {
            series: Some(series),
            deadline: self.deadline,
            grpc: self.grpc,
        };
        let Ok(mut rsp) = inner.oneshot(req).await;
        if let Some(series) = unanswered.series.take() {
            meter(&mut rsp, series, start, self.grpc, Some(self.route.clone()));
        }
        rsp
    }

    /// Whether an attempt failed, judged by its headers (a gRPC status in trailers
    /// comes too late to retry on). A response the client's own broken request caused
    /// is not a failure to retry.
    fn failed(&self, rsp: &Response<MeteredBody>) -> bool {
        let synthetic = rsp.extensions().get::<crate::errors::SyntheticResponse>();
        if synthetic.is_some_and(|s| classify::is_client_fault(s.0)) {
            return false;
        }
        let grpc_status = classify::grpc_status(rsp.headers());
        self.route.classify(rsp.status(), self.grpc, grpc_status) == Class::Failure
    }

    fn count(&self, skipped: &'static str) {
        self.metrics
            .retryable(&self.profile.name, self.route.name(), skipped);
    }
}

/// An attempt sent and not yet answered. Dropped with its series still in it (the
/// attempt's future was dropped before a response came), it records the attempt as
/// failed: timed out if the route's deadline has passed (and the client got the
/// route timeout's 504), else cancelled (the client went away).
struct Unanswered {
    series: Option<Arc<crate::metrics::HttpTarget>>,
    deadline: Option<Instant>,
    grpc: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(series) = self.series.take() else {
            return;
        };
        let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
        let end = match (timed_out, self.grpc) {
            (true, false) => ResponseEnd {
                status: 504,
                grpc: None,
                class: Class::Failure,
                error: "timeout",
            },
            (true, true) => ResponseEnd {
                status: 200,
                grpc: Some(4),
                class: Class::Failure,
                error: "timeout",
            },
            (false, _) => ResponseEnd {
                status: 0,
                grpc: None,
                class: Class::Failure,
                error: "cancelled",
            },
        };
        series.response(end);
    }
}

/// The answer when a route's timeout fires: 504, or for gRPC `DEADLINE_EXCEEDED`.
fn timed_out(after: Duration, grpc: bool) -> Response<MeteredBody> {
    crate::errors::respond(&crate::errors::RouteTimeout { after }, grpc).map(MeteredBody::unmetered)
}

#[cfg(test)]
mod tests;
