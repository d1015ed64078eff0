//! The admin server (port 4191): `/metrics` for Prometheus or the controller,
//! `/ready` and `/live` for the kubelet, and `POST /shutdown`, from loopback only, to
//! drain and exit (how a Job's last container tells its sidecar to leave).

use crate::Proxy;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;

pub(crate) async fn serve(proxy: Arc<Proxy>, listener: TcpListener) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let rsp = handle(&proxy, client, &req);
                async move { Ok::<_, Infallible>(rsp) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            if let Err(e) = b.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%client, error = %e, "admin connection failed");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// Answers one admin request.
pub fn handle(proxy: &Proxy, client: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match req.uri().path() {
        "/metrics" if get => {
            let mut rsp = text(StatusCode::OK, proxy.metrics.encode());
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            rsp
        }
        "/live" if get => text(StatusCode::OK, "live\n"),
        "/ready" if get => match proxy.is_ready() {
            true => text(StatusCode::OK, "ready\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        },
        "/shutdown" => {
            if !client.ip().is_loopback() {
                text(
                    StatusCode::FORBIDDEN,
                    "shutdown is only allowed from localhost\n",
                )
            } else if req.method() != Method::POST {
                let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
                rsp.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
                rsp
            } else {
                tracing::info!("shutdown requested through the admin server");
                proxy.shutdown.cancel();
                text(StatusCode::OK, "shutdown\n")
            }
        }
        "/metrics" | "/live" | "/ready" => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
