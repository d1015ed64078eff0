//! HTTP/1 upgrades (WebSocket and friends) and CONNECT.
//!
//! An upgrade needs a connection of its own: the request goes upstream on a fresh,
//! unpooled connection, and if the server agrees (101, or 2xx to CONNECT) both
//! connections are spliced into a byte tunnel. In explicit mode the proxy answers
//! CONNECT itself, like any HTTP proxy.

use super::ReqBody;
use super::{body::ProxyBody, Pool, Target};
use crate::{errors::BoxError, errors::UpstreamFailed, tls::Alpn, Proxy};
use http::{header, Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

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

pub(crate) async fn forward(
    proxy: &Proxy,
    pool: &Pool,
    target: &Target,
    peer: Option<&Arc<str>>,
    mut req: Request<ReqBody>,
) -> Result<Response<ProxyBody>, BoxError> {
    let connector = pool.connector();
    let downstream = hyper::upgrade::on(&mut req);
    let connect = req.method() == Method::CONNECT;

    if connect && target.explicit {
        let mut upstream = connector
            .connect(
                target.addr,
                target.dst_labels(),
                peer.map(|p| (p, Alpn::Opaque)),
            )
            .await?;
        proxy.tasks.spawn(async move {
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
    // Between proxies too, an upgrade needs HTTP/1: the connection says so by ALPN.
    let io = connector
        .connect(addr, target.dst_labels(), peer.map(|p| (p, Alpn::Http1)))
        .await?;
    let (mut sender, conn) = connector
        .limits
        .h1_client()
        .handshake(TokioIo::new(io))
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
        proxy.tasks.spawn(async move {
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
