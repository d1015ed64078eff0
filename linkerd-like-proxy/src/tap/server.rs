//! The tap server: `mesh.tap.Tap/Observe` on `MESH_PROXY_TAP_LISTEN_ADDR` (4190),
//! over mesh TLS, for the control plane's tap identity alone.
//!
//! A tap stream shows what the workload's requests carry, so the server takes no
//! chances on who is asking: a connection must be mesh TLS from a client whose
//! certificate chains to the trust anchors and names exactly
//! `MESH_PROXY_TAP_SVC_NAME`. A plaintext connection, a failed handshake and any
//! other identity are closed before a byte of HTTP is read, counted in
//! `tap_refused_total{reason}` (`plaintext`, `handshake`, `unauthorized`) and logged.
//! The server runs only with identity on: without it there is no one to trust.

use super::{Registry, SubscribeError, Subscription};
use crate::{errors::TapRefused, metrics::Metrics, tls::MeshTls};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use mesh_api::tap::{
    tap_server::{Tap, TapServer},
    ObserveRequest, TapEvent,
};
use std::{
    future::Future as _,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the tap server needs of the proxy.
pub(crate) struct TapServerCtx {
    pub(crate) registry: Arc<Registry>,
    pub(crate) tls: Arc<MeshTls>,
    /// The one client identity served.
    pub(crate) client: Arc<str>,
    pub(crate) metrics: Metrics,
    /// Cancelled when the proxy drains: tap streams end with it, they carry no
    /// traffic to finish.
    pub(crate) shutdown: CancellationToken,
}

/// Accepts tap clients on `listener` until shutdown.
pub(crate) async fn serve(listener: TcpListener, ctx: TapServerCtx) {
    let ctx = Arc::new(ctx);
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, client)) => {
                tokio::spawn(serve_conn(ctx.clone(), stream, client));
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "tap accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(ctx: Arc<TapServerCtx>, stream: TcpStream, client: SocketAddr) {
    crate::io::tune(&stream);
    let refuse = |reason: TapRefused, why: &dyn std::fmt::Display| {
        ctx.metrics.tap().refused(reason);
        tracing::info!(%client, reason = reason.as_str(), error = %why, "refused a tap client");
    };
    // Plaintext is told from a failed handshake by the first byte, so that a
    // misconfigured client learns which it is.
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, stream.peek(&mut first));
    match peeked.await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => return refuse(TapRefused::Plaintext, &"not TLS"),
        Ok(Ok(_)) => return,
        Ok(Err(e)) => return refuse(TapRefused::Handshake, &e),
        Err(_) => return refuse(TapRefused::Handshake, &"nothing sent"),
    }
    let accepted = match ctx.tls.accept(stream).await {
        Ok(a) => a,
        Err((reason, e)) => {
            return refuse(
                TapRefused::Handshake,
                &format_args!("{e} ({})", reason.as_str()),
            )
        }
    };
    if !accepted.client.eq_ignore_ascii_case(&ctx.client) {
        return refuse(
            TapRefused::Unauthorized,
            &format_args!("{} is not {}", accepted.client, ctx.client),
        );
    }
    tracing::debug!(%client, "tap client connected");
    let svc = TapServer::new(Observe {
        registry: ctx.registry.clone(),
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(accepted.stream), TowerToHyperService::new(svc));
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(%client, error = %e, "tap connection closed with error");
            }
        }
        _ = ctx.shutdown.cancelled() => {}
    }
}

/// The `Tap` service: one stream per `Observe`.
struct Observe {
    registry: Arc<Registry>,
}

#[tonic::async_trait]
impl Tap for Observe {
    type ObserveStream = Events;

    async fn observe(&self, req: Request<ObserveRequest>) -> Result<Response<Events>, Status> {
        match self.registry.subscribe(req.into_inner()) {
            Ok(s) => Ok(Response::new(Events::new(s))),
            Err(e @ SubscribeError::TooMany) => Err(Status::resource_exhausted(e.to_string())),
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        }
    }
}

/// How long a tap stream holds an event for others to join it before sending them
/// together. tonic writes every event that is ready in one HTTP/2 frame, one TLS
/// record and one write; sent as they come, each of a tapped request's three events
/// would be a write of its own, a syscall and a trip through the kernel's TCP stack
/// that costs the proxy more than making the event. A tenth of a second is what `mesh
/// top` redraws at and what a person reading `mesh tap` can tell.
pub(crate) const GATHER: Duration = Duration::from_millis(100);

/// A tap stream's events, as tonic sends them: gathered for [`GATHER`] after the
/// first of them, then passed on all at once.
pub(crate) struct Events {
    subscription: Subscription,
    /// The first event of the next batch, held while the others gather.
    held: Option<TapEvent>,
    /// Running while a batch gathers.
    gather: Pin<Box<tokio::time::Sleep>>,
    /// Passing a batch on: every event waiting, until none is.
    releasing: bool,
}

impl Events {
    pub(crate) fn new(subscription: Subscription) -> Self {
        Self {
            subscription,
            held: None,
            gather: Box::pin(tokio::time::sleep(Duration::ZERO)),
            releasing: false,
        }
    }
}

impl futures_util::Stream for Events {
    type Item = Result<TapEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.releasing {
                if let Some(event) = this.held.take() {
                    return Poll::Ready(Some(Ok(event)));
                }
                match this.subscription.poll_next(cx) {
                    Poll::Ready(Some(event)) => return Poll::Ready(Some(Ok(event))),
                    Poll::Ready(None) => return Poll::Ready(None),
                    // The batch is out; the next event starts another.
                    Poll::Pending => this.releasing = false,
                }
            }
            if this.held.is_none() {
                match this.subscription.poll_next(cx) {
                    Poll::Ready(Some(event)) => {
                        this.held = Some(event);
                        let deadline = tokio::time::Instant::now() + GATHER;
                        this.gather.as_mut().reset(deadline);
                    }
                    other => return other.map(|e| e.map(Ok)),
                }
            }
            match this.gather.as_mut().poll(cx) {
                Poll::Ready(()) => this.releasing = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
