//! [`ProxyBody`]: a response body from upstream, or an empty synthetic one. An
//! upstream HTTP/1 body returns its connection to the pool when it ends.

use super::client::GiveBack;
use crate::errors::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// The body of every response the proxy returns.
pub struct ProxyBody {
    inner: Option<Incoming>,
    /// Returns the HTTP/1 connection to its pool once the body has been read to the
    /// end: only then can the connection carry another request.
    giveback: Option<GiveBack>,
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self {
            inner: None,
            giveback: None,
        }
    }

    pub(crate) fn upstream(body: Incoming, giveback: Option<GiveBack>) -> Self {
        Self {
            inner: Some(body),
            giveback,
        }
    }

    fn release(&mut self) {
        if let Some(g) = self.giveback.take() {
            g.release();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                // Trailers end a body even when the stream has not said so yet.
                if frame.is_trailers() || self.inner.as_ref().is_some_and(Body::is_end_stream) {
                    self.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // A connection that failed mid-body is not reused.
                self.giveback = None;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(Body::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper does not poll a body that says it has ended (an empty body, a HEAD
        // response): such a connection is still good to reuse.
        if self.inner.as_ref().is_some_and(Body::is_end_stream) {
            self.release();
        }
    }
}
