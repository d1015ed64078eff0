//! The admission webhooks: an HTTPS server (port 8443) that answers the API server's
//! `admission.k8s.io/v1` `AdmissionReview`s on `POST /validate/serviceprofiles` (the
//! ServiceProfile validator, below), `POST /validate/policy` (the policy kinds of
//! `policy.mesh.rs`, judged by `mesh_core::policy::validate_value`, as `mesh policy
//! validate` judges them; the same limits and answers) and, when configured, `POST
//! /inject` (the proxy injector, [`inject`]).
//!
//! It exists so that an invalid profile is refused by `kubectl apply` with every
//! problem named (`spec.routes[0].condition.pathRegex: ...`), instead of being stored
//! and then ignored by the destination service. It judges with the same checks as
//! the destination service and `mesh profile validate` ([`crate::profile`]), so the
//! three always agree. The decision itself is pure ([`review`]); this module adds the
//! HTTP edge (size limit, timeouts, status codes) and [`tls`] the certificate, which
//! is re-read from disk when it is rotated.
//!
//! ```text
//! POST /validate/serviceprofiles   AdmissionReview JSON (at most 1 MiB)
//!   200  AdmissionReview {response: {uid, allowed: true}}
//!   200  AdmissionReview {response: {uid, allowed: false, status: {code: 400, message}}}
//!   400  not an admission.k8s.io/v1 AdmissionReview (text: why)
//!   408  the body did not arrive within 10s
//!   413  a body over 1 MiB
//! ```
//!
//! The `ValidatingWebhookConfiguration` that points the API server here is in
//! `controller/README.md`.

pub mod inject;
pub mod review;
pub mod tls;

use crate::metrics::{header, Family};
use bytes::Bytes;
use http::{header as h, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::{
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Where the API server posts ServiceProfile reviews.
pub const PATH: &str = "/validate/serviceprofiles";

/// The largest review body read. The API server caps objects at about 1.5 MiB in
/// etcd, but a profile is a few KiB: 1 MiB is generous and bounds the memory a
/// caller can make the controller hold.
pub const MAX_BODY: usize = 1024 * 1024;

/// A body over [`MAX_BODY`] is still read, and dropped, up to this size before the
/// 413 is sent: an HTTP/1 client still writing its body when the connection closes
/// would see a reset instead of the answer.
const MAX_DRAIN: usize = 8 * MAX_BODY;

/// How long a TLS handshake, a request's headers or its body may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook's validated configuration: where to listen, and the PEM files (already
/// checked to load) of its certificate.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The proxy injector (`/inject`), when `--inject-config` was given: its files,
    /// already checked to load.
    pub inject: Option<inject::InjectFiles>,
}

/// Counts of review outcomes: `webhook_reviews_total{result}`.
#[derive(Debug, Default)]
pub struct Reviews {
    allowed: AtomicU64,
    denied: AtomicU64,
    error: AtomicU64,
}

/// What became of one review (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    /// The body was no review: unreadable, too large, too slow, or not an
    /// `AdmissionReview`.
    Error,
}

/// Answers review requests; cheap to clone (one per connection).
#[derive(Clone, Debug)]
pub struct Webhook {
    cluster_domain: Arc<str>,
    reviews: Arc<Reviews>,
    /// The proxy injector on [`INJECT_PATH`], when configured.
    injector: Option<Arc<inject::Injector>>,
}

/// Where the API server posts pods to inject.
pub const INJECT_PATH: &str = mesh_core::install::names::INJECT_PATH;

/// Where the API server posts the policy kinds (`policy.mesh.rs`) to validate.
pub const POLICY_PATH: &str = mesh_core::install::names::VALIDATE_POLICY_PATH;

/// Which validator a review is for.
#[derive(Clone, Copy, Debug)]
enum Validator {
    Profile,
    Policy,
}

// === impl Reviews ===

impl Reviews {
    fn counter(&self, outcome: Outcome) -> &AtomicU64 {
        match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Denied => &self.denied,
            Outcome::Error => &self.error,
        }
    }

    fn count(&self, outcome: Outcome) {
        self.counter(outcome).fetch_add(1, Ordering::Relaxed);
    }

    /// Reviews that ended with `outcome`.
    pub fn total(&self, outcome: Outcome) -> u64 {
        self.counter(outcome).load(Ordering::Relaxed)
    }
}

impl Family for Reviews {
    /// Appends `webhook_reviews_total` in the Prometheus text format.
    fn render(&self, out: &mut String) {
        header(
            out,
            "webhook_reviews_total",
            "counter",
            "ServiceProfile and policy admission reviews, by outcome.",
        );
        for (result, outcome) in [
            ("allowed", Outcome::Allowed),
            ("denied", Outcome::Denied),
            ("error", Outcome::Error),
        ] {
            let _ = writeln!(
                out,
                "webhook_reviews_total{{result=\"{result}\"}} {}",
                self.total(outcome)
            );
        }
    }
}

// === impl Webhook ===

impl Webhook {
    pub fn new(cluster_domain: &str, reviews: Arc<Reviews>) -> Self {
        Self {
            cluster_domain: cluster_domain.into(),
            reviews,
            injector: None,
        }
    }

    /// Serves the proxy injector on [`INJECT_PATH`] too.
    pub fn with_injector(mut self, injector: Arc<inject::Injector>) -> Self {
        self.injector = Some(injector);
        self
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (injector, validator) = match (req.uri().path(), &self.injector) {
            (PATH, _) => (None, Validator::Profile),
            (POLICY_PATH, _) => (None, Validator::Policy),
            (INJECT_PATH, Some(injector)) => (Some(Arc::clone(injector)), Validator::Profile),
            _ => {
                let paths = match self.injector {
                    Some(_) => format!("{PATH}, {POLICY_PATH} or {INJECT_PATH}"),
                    None => format!("{PATH} or {POLICY_PATH}"),
                };
                return text(
                    StatusCode::NOT_FOUND,
                    format!("not found; use POST {paths}\n"),
                );
            }
        };
        if req.method() != Method::POST {
            let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            rsp.headers_mut()
                .insert(h::ALLOW, h::HeaderValue::from_static("POST"));
            return rsp;
        }
        if let Some(injector) = injector {
            return inject_review(&injector, req.into_body()).await;
        }
        let (rsp, outcome) = self.review(validator, req.into_body()).await;
        self.reviews.count(outcome);
        rsp
    }

    async fn review<B>(&self, validator: Validator, body: B) -> (Response<Full<Bytes>>, Outcome)
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match tokio::time::timeout(IO_TIMEOUT, read_body(body)).await {
            Ok(Ok(body)) => body,
            Ok(Err(BodyError::TooLarge)) => {
                let msg = format!("the review is larger than {MAX_BODY} bytes\n");
                return (text(StatusCode::PAYLOAD_TOO_LARGE, msg), Outcome::Error);
            }
            Ok(Err(BodyError::Read(error))) => {
                tracing::debug!(%error, "cannot read a review");
                let msg = format!("cannot read the body: {error}\n");
                return (text(StatusCode::BAD_REQUEST, msg), Outcome::Error);
            }
            Err(_) => {
                let msg = format!("the body did not arrive within {IO_TIMEOUT:?}\n");
                return (text(StatusCode::REQUEST_TIMEOUT, msg), Outcome::Error);
            }
        };
        let reviewed = match validator {
            Validator::Profile => review::review(&body, &self.cluster_domain),
            Validator::Policy => review::review_policy(&body),
        };
        match reviewed {
            Ok(reviewed) => {
                let outcome = match &reviewed.decision {
                    review::Decision::Allowed => Outcome::Allowed,
                    review::Decision::Denied(message) => {
                        tracing::debug!(uid = %reviewed.uid, %message, ?validator, "denied");
                        Outcome::Denied
                    }
                };
                let mut rsp = Response::new(Full::new(Bytes::from(reviewed.to_json())));
                rsp.headers_mut().insert(
                    h::CONTENT_TYPE,
                    h::HeaderValue::from_static("application/json"),
                );
                (rsp, outcome)
            }
            Err(error) => {
                tracing::debug!(%error, "not a review");
                let msg = format!("{error}\n");
                (text(StatusCode::BAD_REQUEST, msg), Outcome::Error)
            }
        }
    }
}

/// Answers one `/inject` request: the body's limits as for profiles, then the
/// injector's answer.
async fn inject_review<B>(injector: &inject::Injector, body: B) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let failed = |status, msg: String| {
        injector.counts().count(inject::InjectOutcome::Error);
        text(status, msg)
    };
    let body = match tokio::time::timeout(IO_TIMEOUT, read_body(body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => {
            let msg = format!("the review is larger than {MAX_BODY} bytes\n");
            return failed(StatusCode::PAYLOAD_TOO_LARGE, msg);
        }
        Ok(Err(BodyError::Read(error))) => {
            return failed(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {error}\n"),
            )
        }
        Err(_) => {
            let msg = format!("the body did not arrive within {IO_TIMEOUT:?}\n");
            return failed(StatusCode::REQUEST_TIMEOUT, msg);
        }
    };
    match injector.review(&body).await {
        Ok(answer) => {
            let mut rsp = Response::new(Full::new(Bytes::from(answer.to_json())));
            rsp.headers_mut().insert(
                h::CONTENT_TYPE,
                h::HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Err(error) => {
            tracing::debug!(%error, "not a review");
            text(StatusCode::BAD_REQUEST, format!("{error}\n"))
        }
    }
}

enum BodyError {
    TooLarge,
    Read(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads a body of at most [`MAX_BODY`] bytes. A larger one is drained up to
/// [`MAX_DRAIN`] without being kept, and one that declares more is not read at all.
async fn read_body<B>(body: B) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > MAX_DRAIN as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue; // Trailers: nothing to review in them.
        };
        seen = seen.saturating_add(data.len());
        if seen > MAX_DRAIN {
            return Err(BodyError::TooLarge);
        }
        if seen <= MAX_BODY {
            buf.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY {
        return Err(BodyError::TooLarge);
    }
    Ok(buf.freeze())
}

/// Serves reviews over TLS on `listener` until `shutdown` is cancelled; connections
/// then finish their requests in flight and close.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    webhook: Webhook,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!(%error, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let acceptor = acceptor.clone();
        let webhook = webhook.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // The handshake is in the connection's task, so a slow client holds up
            // no one else, and it is bounded so it cannot hold a task forever.
            let tls = match tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%client, %error, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%client, "webhook TLS handshake timed out");
                    return;
                }
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let svc = hyper::service::service_fn(move |req| {
                let webhook = webhook.clone();
                async move { Ok::<_, Infallible>(webhook.handle(req).await) }
            });
            let io = TokioIo::new(tls);
            let result = if h2 {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder.timer(TokioTimer::new());
                let conn = builder.serve_connection(io, svc);
                drain(conn, &shutdown, |c| c.graceful_shutdown()).await
            } else {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(IO_TIMEOUT);
                let conn = builder.serve_connection(io, svc);
                drain(conn, &shutdown, |c| c.graceful_shutdown()).await
            };
            if let Err(error) = result {
                tracing::debug!(%client, %error, "webhook connection failed");
            }
        });
    }
}

/// Runs a connection to its end, or, on shutdown, lets it finish what is in flight.
async fn drain<C, F>(conn: C, shutdown: &CancellationToken, graceful: F) -> C::Output
where
    C: std::future::Future,
    F: FnOnce(std::pin::Pin<&mut C>),
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result,
        () = shutdown.cancelled() => graceful(conn.as_mut()),
    }
    conn.await
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        h::CONTENT_TYPE,
        h::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

#[cfg(test)]
mod tests;
