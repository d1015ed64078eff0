//! The golden-metrics layer: counts each request when it arrives, records latency at
//! the first response data frame, and counts the response, classified, when its
//! stream ends (a gRPC status may only come in the trailers).

use super::ReqBody;
use super::{recent::Recent, BoxFuture, ProxyBody, Target};
use crate::{
    classify::{self, Class},
    errors::SyntheticResponse,
    metrics::{Direction, HttpTarget, Metrics, ResponseEnd},
    tap::Tapped,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

#[derive(Clone)]
pub(crate) struct HttpMetrics<S> {
    inner: S,
    metrics: Metrics,
    direction: Direction,
    /// This connection's recent series: made once per connection (the stack is).
    recent: Arc<Recent<SeriesKey, Arc<HttpTarget>>>,
}

impl<S> HttpMetrics<S> {
    pub(crate) fn new(inner: S, metrics: Metrics, direction: Direction) -> Self {
        Self {
            inner,
            metrics,
            direction,
            recent: Arc::default(),
        }
    }

    /// The series of the request's target: from this connection's recent ones when it
    /// has one (a connection mostly talks to a few targets), else from the registry,
    /// whose lookup takes a global lock and hashes the target.
    fn series(&self, t: &Target) -> Arc<HttpTarget> {
        let series = self.recent.get(
            |key| key.is(t),
            || {
                let series = self.metrics.http(
                    self.direction,
                    t.addr,
                    t.peer.as_ref(),
                    t.authority.as_deref(),
                    t.labels.as_ref(),
                );
                (SeriesKey::of(t), series)
            },
        );
        self.metrics.touch(&series);
        series
    }
}

/// What names an HTTP series: the target's address, peer identity, authority label and
/// endpoint labels.
struct SeriesKey {
    addr: std::net::SocketAddr,
    peer: Option<Arc<str>>,
    authority: Option<Arc<str>>,
    labels: Option<Arc<str>>,
}

impl SeriesKey {
    fn of(t: &Target) -> Self {
        Self {
            addr: t.addr,
            peer: t.peer.clone(),
            authority: t.authority.clone(),
            labels: t.labels.clone(),
        }
    }

    fn is(&self, t: &Target) -> bool {
        self.addr == t.addr
            && self.peer == t.peer
            && self.authority == t.authority
            && self.labels == t.labels
    }
}

impl<S> Service<Request<ReqBody>> for HttpMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<MeteredBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let mut route = None;
        let handle = req.extensions().get::<Target>().map(|t| {
            let h = self.series(t);
            h.request();
            route = t.route.clone();
            h
        });
        let grpc = classify::is_grpc(req.headers());
        let inner = self.inner.clone();
        Box::pin(async move {
            let Ok(rsp) = inner.oneshot(req).await;
            let Some(handle) = handle else {
                return Ok(rsp.map(MeteredBody::unmetered));
            };
            let mut rsp = rsp.map(MeteredBody::unmetered);
            meter(&mut rsp, handle, start, grpc, route);
            Ok(rsp)
        })
    }
}

/// Adds a meter to a response: `handle`'s series will count it, with its latency
/// from `start`, when its stream ends, classified by `route`'s response classes (or
/// the default rules). A response may carry several meters (its endpoint's series,
/// its route's).
pub(crate) fn meter(
    rsp: &mut Response<MeteredBody>,
    handle: Arc<HttpTarget>,
    start: Instant,
    grpc: bool,
    route: Option<Arc<crate::profile::Route>>,
) {
    let error = rsp
        .extensions()
        .get::<SyntheticResponse>()
        .map_or("", |s| s.0);
    let state = MeterState {
        handle,
        start,
        status: rsp.status().as_u16(),
        grpc,
        grpc_status: classify::grpc_status(rsp.headers()),
        error,
        latency_recorded: false,
        route,
    };
    rsp.body_mut().meters.push(state);
}

/// A response body that reports its response's latency and outcome.
pub struct MeteredBody {
    inner: ProxyBody,
    /// Emptied once recorded; empty for responses that are not metered.
    meters: Vec<MeterState>,
    /// The response's tap, when a tap stream took its request: told of its bytes,
    /// trailers and end as the meters are.
    tap: Option<Box<Tapped>>,
}

struct MeterState {
    handle: Arc<HttpTarget>,
    start: Instant,
    status: u16,
    grpc: bool,
    grpc_status: Option<u16>,
    error: &'static str,
    latency_recorded: bool,
    /// The route whose response classes decide success.
    route: Option<Arc<crate::profile::Route>>,
}

impl MeterState {
    fn latency(&mut self) {
        if !self.latency_recorded {
            self.latency_recorded = true;
            self.handle.latency(self.status, self.start.elapsed());
        }
    }

    fn finish(mut self, failed: Option<&'static str>) {
        self.latency();
        let status = http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::OK);
        let class = match (failed, &self.route) {
            (Some(_), _) => Class::Failure,
            (None, _) if classify::is_client_fault(self.error) => Class::Success,
            (None, Some(r)) => r.classify(status, self.grpc, self.grpc_status),
            (None, None) => classify::classify(status, self.grpc, self.grpc_status),
        };
        let error = failed.unwrap_or(self.error);
        self.handle.response(ResponseEnd {
            status: self.status,
            grpc: self.grpc_status,
            class,
            error,
        });
    }
}

impl MeteredBody {
    pub fn unmetered(inner: ProxyBody) -> Self {
        Self {
            inner,
            meters: Vec::new(),
            tap: None,
        }
    }

    /// Has the tap of the response's request follow the body to its end.
    pub(crate) fn tap(&mut self, tapped: Box<Tapped>) {
        self.tap = Some(tapped);
    }

    #[cfg(test)]
    pub(crate) fn is_tapped(&self) -> bool {
        self.tap.is_some()
    }

    /// Records the response now, as its status says, for a response the proxy drops
    /// unread (a failed attempt that is retried).
    pub(crate) fn finish_discarded(&mut self) {
        self.finish(None);
    }

    fn finish(&mut self, failed: Option<&'static str>) {
        for m in self.meters.drain(..) {
            m.finish(failed);
        }
        if let Some(t) = self.tap.take() {
            t.end(failed);
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = crate::errors::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if this.meters.is_empty() && this.tap.is_none() {
            return res;
        }
        match &res {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                let trailers = frame.trailers_ref();
                let code = trailers.and_then(classify::grpc_status);
                for m in &mut this.meters {
                    if code.is_some() {
                        m.grpc_status = code;
                    }
                    if trailers.is_none() {
                        m.latency();
                    }
                }
                if let Some(t) = &mut this.tap {
                    match trailers {
                        Some(trailers) => t.trailers(trailers),
                        None => t.data(frame.data_ref().map_or(0, Bytes::len)),
                    }
                }
                // Trailers are always the last frame: an HTTP/1 server writes them
                // and drops the body without polling for the end.
                if trailers.is_some() || this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Ready(Some(Err(_))) => this.finish(Some("io")),
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if !self.meters.is_empty() || self.tap.is_some() {
            // Bodies that announce their end are never polled; anything else dropped
            // early was abandoned by the client or cut by shutdown.
            let failed = if self.inner.is_end_stream() {
                None
            } else {
                Some("cancelled")
            };
            self.finish(failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Replay;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn each_request_is_counted_under_its_target_when_its_response_ends() {
        let metrics = Metrics::new();
        let inner = tower::service_fn(|_: Request<ReqBody>| async {
            let mut rsp = Response::new(ProxyBody::empty());
            *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, Infallible>(rsp)
        });
        let mut svc = HttpMetrics::new(inner, metrics.clone(), Direction::Outbound);
        let mut req = Request::new(ReqBody::from(Replay::default()));
        let mut t = Target::new(([198, 18, 0, 9], 8080).into());
        t.authority = Some("web.test:8080".into());
        req.extensions_mut().insert(t);
        let rsp = svc.call(req).await.unwrap();
        let text = metrics.encode();
        let series =
            r#"direction="outbound",authority="web.test:8080",target_addr="198.18.0.9:8080""#;
        assert!(text.contains(&format!("request_total{{{series}")), "{text}");
        assert!(
            !text.contains("response_total{"),
            "not before the body ends"
        );
        rsp.into_body().collect().await.unwrap();
        let text = metrics.encode();
        assert!(
            text.lines().any(|l| l.starts_with("response_total{")
                && l.contains(series)
                && l.contains(r#"status_code="503",classification="failure""#)
                && l.ends_with(" 1")),
            "{text}"
        );

        // A request no layer routed is passed on, and not counted.
        let rsp = svc
            .call(Request::new(ReqBody::from(Replay::default())))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 503);
        assert_eq!(
            metrics
                .encode()
                .lines()
                .filter(|l| l.starts_with("request_total{"))
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn a_connections_recent_series_never_mix_targets() {
        let metrics = Metrics::new();
        let inner = tower::service_fn(|_: Request<ReqBody>| async {
            Ok::<_, Infallible>(Response::new(ProxyBody::empty()))
        });
        let mut svc = HttpMetrics::new(inner, metrics.clone(), Direction::Outbound);
        // More targets than the connection remembers, differing in one part each, every
        // one asked for twice, interleaved.
        let targets: Vec<Target> = (0..6u8)
            .map(|i| {
                let mut t = Target::new(([198, 18, 0, 9 + i / 3], 8080).into());
                t.authority = Some("web.test:8080".into());
                t.peer = (i % 3 == 1)
                    .then(|| "web.test.serviceaccount.identity.mesh.cluster.local".into());
                t.labels = (i % 3 == 2).then(|| "dst_pod=\"web-0\"".into());
                t
            })
            .collect();
        for _ in 0..2 {
            for t in &targets {
                let mut req = Request::new(ReqBody::from(Replay::default()));
                req.extensions_mut().insert(t.clone());
                let rsp = svc.call(req).await.unwrap();
                rsp.into_body().collect().await.unwrap();
            }
        }
        let text = metrics.encode();
        let counts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("request_total{"))
            .collect();
        assert_eq!(counts.len(), 6, "one series per target: {counts:#?}");
        assert!(counts.iter().all(|l| l.ends_with(" 2")), "{counts:#?}");
    }
}
