//! HTTP/1 upgrades (WebSocket and friends) and CONNECT.
//!
//! An upgrade needs a connection of its own: the request goes upstream on a fresh,
//! unpooled connection (leased as [`super::client::Plan::Tunnel`]), and if the server agrees (101, or 2xx to CONNECT) both
//! connections are spliced into a byte tunnel. In explicit mode the proxy answers
//! CONNECT itself, like any HTTP proxy.

use super::{body::ProxyBody, Connector, ReqBody, Target};
use crate::{
    errors::{BoxError, UpstreamFailed},
    io::UpstreamIo,
};
use http::{header, Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

/// Whether the request asks to leave HTTP behind on this connection.
pub(crate) fn is_upgrade(req: &Request<ReqBody>) -> bool {
    if req.version() == Version::HTTP_2 {
        return false;
    }
    if req.method() == Method::CONNECT {
        return true;
    }
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Sends an upgrade request (or CONNECT) on `upstream`, a connection of its own, and
/// splices the two connections into a byte tunnel if the server agrees. In explicit
/// mode the proxy answers CONNECT itself and tunnels at once.
pub(crate) async fn forward(
    tasks: &TaskTracker,
    connector: &Connector,
    mut upstream: UpstreamIo,
    target: &Target,
    mut req: Request<ReqBody>,
) -> Result<Response<ProxyBody>, BoxError> {
    let downstream = hyper::upgrade::on(&mut req);
    let connect = req.method() == Method::CONNECT;

    if connect && target.explicit {
        tasks.spawn(async move {
            match downstream.await {
                Ok(down) => {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut upstream).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT client went away before the tunnel opened")
                }
            }
        });
        return Ok(Response::new(ProxyBody::empty()));
    }

    let addr = target.addr;
    let (mut sender, conn) = connector
        .limits
        .h1_client()
        .handshake(TokioIo::new(upstream))
        .await
        .map_err(|source| UpstreamFailed { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream upgrade connection failed");
        }
    });
    let mut rsp = sender
        .send_request(req)
        .await
        .map_err(|source| UpstreamFailed { addr, source })?;
    let switched =
        rsp.status() == StatusCode::SWITCHING_PROTOCOLS || (connect && rsp.status().is_success());
    if switched {
        let upstream = hyper::upgrade::on(&mut rsp);
        tasks.spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((down, up)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(down),
                        &mut TokioIo::new(up),
                    )
                    .await;
                }
                Err(e) => tracing::debug!(%addr, error = %e, "upgrade failed"),
            }
        });
    }
    Ok(rsp.map(|b| ProxyBody::upstream(b, None)))
}
