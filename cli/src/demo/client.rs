//! How a demo app calls another: through its own proxy's outbound port, used as an explicit
//! HTTP proxy, or straight to the callee with `--no-proxy`.
//!
//! The proxy learns the destination from each request, and asks discovery about it:
//! HTTP/1 requests are sent in absolute-form
//! (`GET http://voting.demo.svc.cluster.local:80/leaderboard HTTP/1.1`), as to any
//! `http_proxy`, and HTTP/2 requests carry it in `:authority`. Either way the TCP
//! connection goes to the outbound port whatever the authority, which is what
//! [`Connector`] does; hyper-util's pooled client does the rest (it writes absolute-form for
//! connections marked as proxied, and keeps connections alive across requests, so the demo's
//! traffic looks like a real app's rather than a connection per request).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    rt::{Read, ReadBufCursor, Write},
    Request, Response, Uri,
};
use hyper_util::{
    client::legacy::{
        connect::{Connected, Connection},
        Client,
    },
    rt::{TokioExecutor, TokioIo},
};
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::TcpStream;

/// How long a demo app waits for a response before giving up on a call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled HTTP client for one app, speaking either HTTP/1 or HTTP/2 (prior knowledge).
#[derive(Clone, Debug)]
pub(crate) struct AppClient {
    inner: Client<Connector, Full<Bytes>>,
}

/// Connects every request to the app's outbound proxy port, or, with no proxy, to the
/// request's own authority.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    outbound: Option<SocketAddr>,
}

/// A connection that tells hyper-util whether it leads to a proxy.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

// === impl AppClient ===

impl AppClient {
    /// An HTTP/1 client; `outbound` is the app's proxy, `None` to call callees directly.
    pub(crate) fn http1(outbound: Option<SocketAddr>) -> Self {
        let inner = Client::builder(TokioExecutor::new()).build(Connector { outbound });
        Self { inner }
    }

    /// An HTTP/2 client with prior knowledge (h2c), as gRPC uses.
    pub(crate) fn http2(outbound: Option<SocketAddr>) -> Self {
        let inner = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(Connector { outbound });
        Self { inner }
    }

    /// Sends `req`, whose URI must be absolute, and waits for the response head.
    pub(crate) async fn request(
        &self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<Response<Incoming>> {
        let uri = req.uri().clone();
        match tokio::time::timeout(CALL_TIMEOUT, self.inner.request(req)).await {
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(error)) => Err(anyhow::Error::new(error).context(format!("{uri}"))),
            Err(_) => Err(anyhow::anyhow!("{uri}: timed out after {CALL_TIMEOUT:?}")),
        }
    }
}

// === impl Connector ===

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let outbound = self.outbound;
        Box::pin(async move {
            let (addr, proxied) = match outbound {
                Some(addr) => (addr.to_string(), true),
                None => {
                    let authority = uri.authority().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "uri has no authority")
                    })?;
                    (authority.as_str().to_string(), false)
                }
            };
            let tcp = TcpStream::connect(&addr).await?;
            // Demo requests are small and latency is what the demo shows off.
            tcp.set_nodelay(true)?;
            Ok(Conn {
                io: TokioIo::new(tcp),
                proxied,
            })
        })
    }
}

// === impl Conn ===

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
