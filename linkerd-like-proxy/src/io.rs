//! I/O wrappers: [`MeteredIo`] counts a connection's bytes into its TCP metrics, and
//! [`PrefixedIo`] replays the bytes that protocol detection already read.

use crate::metrics::TcpConn;
use bytes::{Buf, Bytes};
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pin_project_lite::pin_project! {
    /// Counts bytes read and written, and remembers the first error, so that the
    /// connection's `tcp_*` metrics are exact whatever protocol runs over it.
    pub struct MeteredIo<I> {
        #[pin]
        inner: I,
        metrics: TcpConn,
    }
}

impl<I> MeteredIo<I> {
    pub fn new(inner: I, metrics: TcpConn) -> Self {
        Self { inner, metrics }
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead> AsyncRead for MeteredIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) => this.metrics.read(buf.filled().len() - before),
            Poll::Ready(Err(e)) => this.metrics.error(e),
            Poll::Pending => {}
        }
        res
    }
}

impl<I: AsyncWrite> AsyncWrite for MeteredIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        match &res {
            Poll::Ready(Ok(n)) => this.metrics.wrote(*n),
            Poll::Ready(Err(e)) => this.metrics.error(e),
            Poll::Pending => {}
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        match &res {
            Poll::Ready(Ok(n)) => this.metrics.wrote(*n),
            Poll::Ready(Err(e)) => this.metrics.error(e),
            Poll::Pending => {}
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.inner.poll_shutdown(cx);
        if let Poll::Ready(Err(e)) = &res {
            // A peer that is already gone is not worth an errno on a clean close.
            if e.kind() != io::ErrorKind::NotConnected {
                this.metrics.error(e);
            }
        }
        res
    }
}

/// A connection the proxy opened: plaintext, or mesh TLS to another proxy. Either way
/// its TCP metrics count the bytes on the wire.
pub type UpstreamIo = tokio_util::either::Either<
    MeteredIo<tokio::net::TcpStream>,
    Box<crate::tls::ClientStream<MeteredIo<tokio::net::TcpStream>>>,
>;

pin_project_lite::pin_project! {
    /// Reads `prefix` first, then from `inner`; writes go straight to `inner`.
    pub struct PrefixedIo<I> {
        prefix: Bytes,
        #[pin]
        inner: I,
    }
}

impl<I> PrefixedIo<I> {
    pub fn new(prefix: Bytes, inner: I) -> Self {
        Self { prefix, inner }
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for PrefixedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// How much an HTTP/1 connection has read between its writes: how much of the
/// message being read has arrived (a response, once its request is written; the next
/// request, once the previous response is). When hyper refuses a message head as too
/// large (it says the same for too many header fields and for too many bytes), this
/// tells which limit the head hit.
#[derive(Debug, Default)]
pub struct HeadRead {
    since_write: AtomicUsize,
    before_write: AtomicUsize,
}

impl HeadRead {
    /// Bytes read since the last write: on a client connection, the response so far.
    pub fn since_write(&self) -> usize {
        self.since_write.load(Ordering::Relaxed)
    }

    /// Bytes read between the last two writes: on a server connection whose request
    /// hyper refused, the request so far (hyper has written its 431 since).
    pub fn before_last_write(&self) -> usize {
        self.before_write.load(Ordering::Relaxed)
    }

    fn read(&self, n: usize) {
        self.since_write.fetch_add(n, Ordering::Relaxed);
    }

    fn wrote(&self) {
        let read = self.since_write.swap(0, Ordering::Relaxed);
        if read > 0 {
            self.before_write.store(read, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// Keeps a [`HeadRead`] of the connection it wraps.
    pub struct ReadSinceWrite<I> {
        #[pin]
        inner: I,
        head: Arc<HeadRead>,
    }
}

impl<I> ReadSinceWrite<I> {
    /// Wraps `inner`; the [`HeadRead`] follows it (a clone stays with the caller).
    pub fn new(inner: I) -> (Self, Arc<HeadRead>) {
        let head = Arc::new(HeadRead::default());
        (
            Self {
                inner,
                head: head.clone(),
            },
            head,
        )
    }
}

impl<I: AsyncRead> AsyncRead for ReadSinceWrite<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if res.is_ready() {
            this.head.read(buf.filled().len() - before);
        }
        res
    }
}

impl<I: AsyncWrite> AsyncWrite for ReadSinceWrite<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.head.wrote();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.head.wrote();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Socket options for every connection the proxy accepts or opens: no Nagle delay
/// (requests and responses are written whole), and TCP keep-alive so that a peer that
/// vanished without a FIN does not hold a connection, or a tunnel, forever.
pub(crate) fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// Whether `addr` is one of `listeners` (a wildcard listener counts for loopback
/// addresses): forwarding there would loop. The one loop rule, for discovery, HTTP and
/// opaque TCP alike.
pub(crate) fn is_listener(listeners: &[SocketAddr], addr: SocketAddr) -> bool {
    listeners.iter().any(|l| {
        l.port() == addr.port()
            && (l.ip() == addr.ip() || (l.ip().is_unspecified() && addr.ip().is_loopback()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_read_before_inner() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), a);
        let mut s = String::new();
        io.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    #[tokio::test]
    async fn reads_are_counted_between_writes() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut io, head) = ReadSinceWrite::new(a);
        b.write_all(b"12345").await.unwrap();
        let mut buf = [0; 5];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(head.since_write(), 5);
        io.write_all(b"x").await.unwrap();
        io.write_all(b"y").await.unwrap();
        assert_eq!((head.since_write(), head.before_last_write()), (0, 5));
        b.write_all(b"ab").await.unwrap();
        io.read_exact(&mut buf[..2]).await.unwrap();
        assert_eq!((head.since_write(), head.before_last_write()), (2, 5));
    }
}
