//! [`ReqBody`]: the body of a request on its way upstream. Usually the client's body,
//! streamed as it arrives; for a request that may be retried, a copy of a small body
//! held in memory, so that every attempt sends the same bytes.
//!
//! Buffering never holds more than [`REPLAY_LIMIT`]: a bigger body is sent as it
//! streams (what was read ahead first), and its request is not retried.

use crate::errors::RequestBodyFailed;
use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

/// The most a request body may hold in memory for a retry (Linkerd's 64 KiB).
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body: streamed, replayable, or read ahead and then streamed.
pub enum ReqBody {
    /// The client's body as it arrives.
    Streamed(Incoming),
    /// A whole body held for replay; each attempt gets a copy.
    Replay(Replay),
    /// A body that turned out larger than [`REPLAY_LIMIT`]: what was read ahead, then
    /// the rest as it arrives.
    ReadAhead {
        chunks: VecDeque<Bytes>,
        rest: Incoming,
    },
}

/// A complete body in memory: its data and trailers. Cloning is cheap (`Bytes`).
#[derive(Clone, Debug, Default)]
pub struct Replay {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Replay {
    pub fn len(&self) -> usize {
        self.data.as_ref().map_or(0, Bytes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What reading a body for replay gave.
pub enum Buffered {
    /// The whole body, within the limit.
    Whole(Replay),
    /// Over the limit: the body to send once, not retryable.
    TooLarge(ReqBody),
}

impl ReqBody {
    /// Reads `body` to its end if it fits in [`REPLAY_LIMIT`], for replay.
    pub async fn buffer(body: Incoming) -> Result<Buffered, hyper::Error> {
        if body.size_hint().lower() > REPLAY_LIMIT as u64 {
            return Ok(Buffered::TooLarge(ReqBody::Streamed(body)));
        }
        let mut body = body;
        let mut chunks: VecDeque<Bytes> = VecDeque::new();
        let mut len = 0usize;
        let mut trailers = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame?;
            match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    chunks.push_back(data);
                    if len > REPLAY_LIMIT {
                        return Ok(Buffered::TooLarge(ReqBody::ReadAhead {
                            chunks,
                            rest: body,
                        }));
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        let data = match chunks.len() {
            0 => None,
            1 => chunks.pop_front(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(len);
                for c in chunks {
                    all.extend_from_slice(&c);
                }
                Some(all.freeze())
            }
        };
        Ok(Buffered::Whole(Replay { data, trailers }))
    }
}

impl From<Incoming> for ReqBody {
    fn from(b: Incoming) -> Self {
        ReqBody::Streamed(b)
    }
}

impl From<Replay> for ReqBody {
    fn from(r: Replay) -> Self {
        ReqBody::Replay(r)
    }
}

/// The client's body failed: marked as the client's, so that the request's failure
/// upstream is answered as a bad request, not counted against the server.
fn client(e: hyper::Error) -> RequestBodyFailed {
    RequestBodyFailed { source: e }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = RequestBodyFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyFailed>>> {
        match self.get_mut() {
            ReqBody::Streamed(b) => Pin::new(b).poll_frame(cx).map_err(client),
            ReqBody::Replay(r) => {
                if let Some(d) = r.data.take().filter(Bytes::has_remaining) {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(r.trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            ReqBody::ReadAhead { chunks, rest } => match chunks.pop_front() {
                Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
                None => Pin::new(rest).poll_frame(cx).map_err(client),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Streamed(b) => b.is_end_stream(),
            ReqBody::Replay(r) => {
                r.data.as_ref().is_none_or(Bytes::is_empty) && r.trailers.is_none()
            }
            ReqBody::ReadAhead { chunks, rest } => chunks.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Streamed(b) => b.size_hint(),
            ReqBody::Replay(r) => SizeHint::with_exact(r.len() as u64),
            ReqBody::ReadAhead { chunks, rest } => {
                let ahead: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + ahead);
                if let Some(u) = r.upper() {
                    h.set_upper(u + ahead);
                }
                h
            }
        }
    }
}
