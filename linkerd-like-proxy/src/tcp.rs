//! Opaque TCP forwarding: bytes copied both ways, each half closed when its reader
//! sees end-of-stream, so protocols that half-close keep working.
//!
//! Outbound with discovery on, each connection goes to an endpoint the balancer picks
//! (the connection is the unit of load: pending = open connections, latency = connect
//! time).

use crate::{
    balance::Load,
    discover::{Balanced, Destination, Resolved},
    errors::{self, BoxError},
    http::Connector,
    io::UpstreamIo,
    metrics::Direction,
    tls::Alpn,
    Proxy,
};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// Forwards `downstream` to `target` (or, when discovery knows `target`, to one of its
/// endpoints; over mesh TLS when the endpoint is meshed) until both directions are
/// done. Returns `false` if no upstream could be reached, so that the caller resets the
/// client's connection, as a refused connection would have been.
pub(crate) async fn forward<I>(
    proxy: &Proxy,
    direction: Direction,
    downstream: &mut I,
    target: SocketAddr,
    dst: Option<&Destination>,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let resolved = match dst {
        Some(d) => d.resolve().await,
        None => Resolved::Fallback,
    };
    let connector = proxy.pool(direction).connector();
    let connected = match resolved {
        Resolved::Fallback => connector
            .connect(target, None, None)
            .await
            .map(|u| (u, None)),
        Resolved::NoEndpoints(dst) => Err(errors::NoEndpoints { dst }.into()),
        Resolved::Endpoint(b) => connect_balanced(connector, b)
            .await
            .map(|(u, load)| (u, Some(load))),
    };
    // The load stays claimed while the connection is open.
    let (mut upstream, _load) = match connected {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%target, error = %errors::chain(&*e), "opaque connect failed");
            return false;
        }
    };
    match tokio::io::copy_bidirectional(downstream, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(%target, up, down, "opaque connection closed"),
        Err(e) => tracing::debug!(%target, error = %e, "opaque connection failed"),
    }
    true
}

/// Connects to the chosen endpoint (or, if it cannot be reached, to one other: the
/// balancer's rule, [`Balanced::connect`]), recording the connect time as its latency.
pub(crate) async fn connect_balanced(
    connector: &Connector,
    endpoint: Balanced,
) -> Result<(UpstreamIo, Load), BoxError> {
    let peer = |load: &Load| connector.peer_identity(load.identity()).cloned();
    endpoint
        .connect(
            |load| peer(load).is_some(),
            |load| {
                let (addr, labels, peer) = (load.addr(), load.labels().cloned(), peer(load));
                async move {
                    let peer = peer.as_ref().map(|p| (p, Alpn::Opaque));
                    connector.connect(addr, labels.as_ref(), peer).await
                }
            },
        )
        .await
        .map(|(io, load)| {
            load.observe();
            (io, load)
        })
        .map_err(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{discover::Endpoints, metrics::Direction};
    use std::time::Duration;

    #[tokio::test]
    async fn an_unreachable_endpoint_is_penalized_and_another_tried() {
        let proxy = crate::test_proxy().await;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        // Bound, not listening: refused, and the port stays ours.
        let reserved =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        reserved
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let dead = reserved.local_addr().unwrap().as_socket().unwrap();
        let dst = Endpoints::for_test("db.test.svc.cluster.local:5432", &[dead, live_addr]);
        let connector = proxy.pool(Direction::Outbound).connector();

        // The pick lands on the dead endpoint; the connection still gets through.
        let Resolved::Endpoint(first) = dst.pick(Some(live_addr)) else {
            panic!("two endpoints")
        };
        assert_eq!(first.load.addr(), dead);
        let (_io, load) = connect_balanced(connector, first).await.unwrap();
        assert_eq!(load.addr(), live_addr);
        let (dead_ep, live_ep) = (
            dst.endpoint(dead).unwrap(),
            dst.endpoint(live_addr).unwrap(),
        );
        let now = tokio::time::Instant::now();
        assert!(dead_ep.estimate(now) > Duration::from_secs(4), "penalized");
        assert!(
            live_ep.estimate(now) < Duration::from_secs(1),
            "connect time recorded"
        );
        // Pending: the open connection counts, the failed attempt does not.
        assert_eq!((dead_ep.pending(), live_ep.pending()), (0, 1));
        // Later picks avoid the penalized endpoint.
        for _ in 0..50 {
            let Resolved::Endpoint(b) = dst.pick(None) else {
                panic!()
            };
            assert_eq!(b.load.addr(), live_addr);
        }
        drop(load);
        assert_eq!(live_ep.pending(), 0);

        // With nowhere else to go, the failure stands.
        let only = Endpoints::for_test("db.test.svc.cluster.local:5432", &[dead]);
        let Resolved::Endpoint(b) = only.pick(None) else {
            panic!()
        };
        let Err(err) = connect_balanced(connector, b).await else {
            panic!("nothing listens there")
        };
        assert!(errors::is_connect(&*err), "{err}");
    }
}
