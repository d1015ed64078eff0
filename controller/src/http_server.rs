//! The controller's plain HTTP/1 servers (admin on 9990, the API on 8084): one accept
//! loop, one connection task each, a bounded wait for a request head, until shutdown.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{convert::Infallible, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handle` on `listener` until `shutdown` is cancelled; `name` is for logs.
/// Most answers are ready at once (`std::future::ready`); a few wait on a peer (the
/// API's proxy-metrics asks a proxy); the API's event streams are bodies that go on
/// until the client leaves.
pub(crate) async fn serve<F, Fut, B>(
    name: &'static str,
    listener: TcpListener,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!(server = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let rsp = handle(req);
                async move { Ok::<_, Infallible>(rsp.await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(server = name, %client, %error, "connection failed");
            }
        });
    }
}
