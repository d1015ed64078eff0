//! gRPC to the control plane over TLS, for callers that bring their own rustls
//! configuration (the proxy's identity client, which must verify the identity
//! service's name against the mesh trust anchors before it sends its token).
//!
//! tonic's own TLS features would bring a second rustls setup and a crypto provider
//! of their choosing; this is a tonic connector instead: a TCP connection to the
//! endpoint's host and port, then a handshake that must name `server_name`. The
//! endpoint's URI keeps the `http` scheme, since tonic sees only the TLS stream.

#![deny(unreachable_pub, clippy::all)]

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::{future::Future, io, pin::Pin, sync::Arc};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};
use tonic::transport::{Channel, Endpoint};

/// A channel to `endpoint` whose connections are TLS, verified by `config` to be
/// for `server_name`. It connects when first used (and again after a failure), as
/// `Endpoint::connect_lazy` does; the endpoint's connect timeout covers TCP and the
/// handshake together.
pub fn connect_lazy(
    endpoint: &Endpoint,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> Channel {
    let connector = TlsConnector::from(config);
    endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
        connect(uri, connector.clone(), server_name.clone())
    }))
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

fn connect(
    uri: http::Uri,
    connector: TlsConnector,
    server_name: ServerName<'static>,
) -> Connecting {
    Box::pin(async move {
        let host = uri.host().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host"))
        })?;
        // A bracketed IPv6 literal is given to the resolver without its brackets.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let tls = connector.connect(server_name, tcp).await?;
        Ok(TokioIo::new(tls))
    })
}
