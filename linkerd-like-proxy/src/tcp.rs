//! Opaque TCP forwarding: bytes copied both ways, each half closed when its reader
//! sees end-of-stream, so protocols that half-close keep working.

use crate::{
    errors,
    io::{MeteredIo, PrefixedIo},
    metrics::Direction,
    Proxy,
};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Forwards `downstream` to `target` until both directions are done. If the target
/// cannot be reached, the client's connection is reset, as a refused connection would
/// have been.
pub(crate) async fn forward(
    proxy: &Proxy,
    direction: Direction,
    mut downstream: PrefixedIo<MeteredIo<TcpStream>>,
    target: SocketAddr,
) {
    if proxy.is_own_listener(target) {
        tracing::warn!(%target, ?direction, "refusing to forward a connection to the proxy itself");
        return;
    }
    let mut upstream = match proxy.pool(direction).connector().connect(target).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%target, error = %errors::chain(&*e), "opaque connect failed");
            let _ = downstream.get_ref().get_ref().set_zero_linger();
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(%target, up, down, "opaque connection closed"),
        Err(e) => tracing::debug!(%target, error = %e, "opaque connection failed"),
    }
}
