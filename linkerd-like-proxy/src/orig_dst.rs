//! The original destination of a connection that iptables redirected to the proxy.

use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Returns where the client meant to connect, or `None` when the connection was not
/// redirected (explicit mode), in which case the kernel reports the listener itself
/// or no NAT entry at all.
pub fn orig_dst(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    }
    .ok()?
    .as_socket()?;
    (addr != local).then_some(addr)
}
