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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Direction;
    use std::net::SocketAddr;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    fn req(method: Method, version: Version, headers: &[(&str, &str)]) -> Request<ReqBody> {
        let mut r = Request::new(ReqBody::from(crate::http::Replay::default()));
        *r.method_mut() = method;
        *r.version_mut() = version;
        for (k, v) in headers {
            let name: http::HeaderName = k.parse().unwrap();
            r.headers_mut().append(name, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn what_asks_for_an_upgrade() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert!(is_upgrade(&req(Method::GET, Version::HTTP_11, &ws)));
        assert!(is_upgrade(&req(Method::CONNECT, Version::HTTP_11, &[])));
        // Both headers are needed; HTTP/2 has no upgrades (its CONNECT is a stream).
        assert!(!is_upgrade(&req(Method::GET, Version::HTTP_11, &ws[..1])));
        assert!(!is_upgrade(&req(Method::GET, Version::HTTP_11, &ws[1..])));
        assert!(!is_upgrade(&req(Method::GET, Version::HTTP_2, &ws)));
        assert!(!is_upgrade(&req(Method::CONNECT, Version::HTTP_2, &[])));
    }

    /// An upstream that answers its first request with `status` and then, whatever it
    /// said, echoes what it reads.
    async fn upstream(status: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0; 1];
                if s.read(&mut b).await.unwrap() == 0 {
                    return;
                }
                head.push(b[0]);
            }
            let rsp = format!(
                "HTTP/1.1 {status}\r\nconnection: upgrade\r\nupgrade: echo\r\ncontent-length: 0\r\n\r\n"
            );
            s.write_all(rsp.as_bytes()).await.unwrap();
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        addr
    }

    /// Serves one client connection whose requests go through `forward` to `to`, and
    /// returns the client's end and the tracker the tunnels run on.
    async fn through_forward(to: SocketAddr) -> (TcpStream, TaskTracker) {
        let proxy = crate::test_proxy().await;
        let tasks = TaskTracker::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (io, _) = l.accept().await.unwrap();
        let tunnels = tasks.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (proxy, tasks) = (proxy.clone(), tunnels.clone());
            async move {
                let connector = proxy.pool(Direction::Outbound).connector();
                let upstream = connector.connect(to, None, None).await?;
                let req = req.map(ReqBody::Streamed);
                forward(&tasks, connector, upstream, &Target::new(to), req).await
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades(),
        );
        (client, tasks)
    }

    async fn read_head(c: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0; 1];
            assert_eq!(c.read(&mut b).await.unwrap(), 1, "closed after {head:?}");
            head.push(b[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn an_accepted_upgrade_becomes_a_tunnel() {
        let (mut c, tasks) = through_forward(upstream("101 Switching Protocols").await).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(
            tasks.len(),
            1,
            "the tunnel runs where shutdown waits for it"
        );
        c.write_all(b"ping").await.unwrap();
        let mut echo = [0; 4];
        c.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
    }

    #[tokio::test]
    async fn a_refused_upgrade_stays_http() {
        let (mut c, tasks) = through_forward(upstream("200 OK").await).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // The response was the whole answer: no tunnel was started for it.
        assert_eq!(tasks.len(), 0);
    }
}
