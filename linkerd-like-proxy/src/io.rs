//! I/O wrappers: [`MeteredIo`] counts a connection's bytes into its TCP metrics, and
//! [`PrefixedIo`] replays the bytes that protocol detection already read.

use crate::metrics::TcpConn;
use bytes::{Buf, Bytes};
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
}
