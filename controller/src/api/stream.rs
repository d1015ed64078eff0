//! The live data of the dashboard, as Server-Sent Events (`text/event-stream`, what a
//! browser's `EventSource` reads):
//!
//! - `/api/stream/stat?<the /api/stat parameters>[&interval=2s]`: `event: stat` with
//!   the JSON `/api/stat` answers, at once and then every `interval` (a Go duration,
//!   default 2 s, from 1 s to 10 min);
//! - `/api/stream/namespace?<the /api/namespace parameters>[&interval=2s]`: `event:
//!   namespace` with the JSON `/api/namespace` answers, as the stat stream: one stream
//!   (one connection, one timer, one lock of the store per interval) for everything
//!   the dashboard's namespace page shows, rather than one per kind;
//! - `/api/stream/tap?<the /api/top target and filter parameters>[&access_token=T]`:
//!   `event: tap` with each tap event as `mesh tap -o json` prints it
//!   ([`mesh_core::top::json::to_json`], headers included, the sensitive ones
//!   redacted by the proxies), from the tap API's own fan-out
//!   ([`crate::tap::TapService::open`]), so the same authorization applies. A browser's
//!   `EventSource` cannot send an `Authorization` header, so the bearer token may come
//!   as the `access_token` parameter instead (RFC 6750, 2.3); in cluster mode it is
//!   reviewed as the header's would be, and the demo's controller reviews nothing.
//!   It ends when every pod's stream has ended; an `event: error` says why when the
//!   tap API does.
//!
//! Each stream starts with `retry: 2000` (an `EventSource` that loses it reconnects
//! after 2 s), and sends a comment line every 15 s while it has nothing else to say, so
//! proxies and port-forwards keep it open and a client that left is noticed. A stream
//! is the response's body itself: no task runs for it, and when the client goes away
//! hyper drops the body, and with it the tap's receiver (which stops the tap) or the
//! stat's timer. [`Streams`] counts the open ones (`api_event_streams_open` on the
//! admin server's `/metrics`).

use super::{
    error, namespace_answer, namespace_query, stat_answer, stat_query, tap_error, tap_request,
    BadRequest, Body, Params, Sources,
};
use crate::scrape::Store;
use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt as _};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use mesh_api::tap::observe_request::Extract;
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::time::{Instant, MissedTickBehavior};

/// How often a stream with nothing to say sends a comment.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// How long an `EventSource` waits before it reconnects, in milliseconds.
const RETRY_MS: u32 = 2000;

/// The interval of a stat or namespace stream when the query names none, and its bounds.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// How many event streams are open: each holds one count until its body is dropped.
#[derive(Clone, Debug, Default)]
pub struct Streams(Arc<AtomicUsize>);

impl Streams {
    /// The streams open now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn count(&self) -> Counted {
        self.0.fetch_add(1, Ordering::SeqCst);
        Counted(self.clone())
    }
}

impl crate::metrics::Family for Streams {
    /// The streams open now, on the admin server's `/metrics`.
    fn render(&self, out: &mut String) {
        crate::metrics::header(
            out,
            "api_event_streams_open",
            "gauge",
            "Server-Sent Event streams of the HTTP API (the dashboard's live data) open now.",
        );
        out.push_str(&format!("api_event_streams_open {}\n", self.open()));
    }
}

/// One open stream, counted until dropped.
struct Counted(Streams);

impl Drop for Counted {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers `/api/stream/...`.
pub(super) async fn handle<B>(req: &Request<B>, sources: &Sources) -> Response<Body> {
    let path = req.uri().path();
    if ![
        "/api/stream/stat",
        "/api/stream/namespace",
        "/api/stream/tap",
    ]
    .contains(&path)
    {
        let message = format!("no such endpoint: {path}");
        return error(StatusCode::NOT_FOUND, &message).map(|b| b.boxed_unsync());
    }
    if req.method() != Method::GET {
        let mut rsp = error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        rsp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return rsp.map(|b| b.boxed_unsync());
    }
    match path {
        "/api/stream/stat" => every(req, sources, "stat", stat_query, stat_answer),
        "/api/stream/namespace" => {
            every(req, sources, "namespace", namespace_query, namespace_answer)
        }
        _ => tap(req, sources).await,
    }
}

/// A stream of `name` events: the answer to the query `parse` reads from the
/// parameters (with `interval`), at once and then every interval.
fn every<B, Q>(
    req: &Request<B>,
    sources: &Sources,
    name: &'static str,
    parse: fn(&mut Params) -> Result<Q, BadRequest>,
    answer: fn(&Q, &Store) -> Result<String, BadRequest>,
) -> Response<Body>
where
    Q: Send + 'static,
{
    let parsed = Params::of(req).and_then(|mut p| {
        let interval = interval(&mut p)?;
        let query = parse(&mut p)?;
        p.done()?;
        // Answered once before the stream starts, so a query the metrics refuse is
        // a 400, not a stream of errors.
        let first = answer(&query, &sources.store)?;
        Ok((interval, query, first))
    });
    let (interval, query, first) = match parsed {
        Ok(parsed) => parsed,
        Err(BadRequest(message)) => {
            return error(StatusCode::BAD_REQUEST, &message).map(|b| b.boxed_unsync())
        }
    };
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let store = Arc::clone(&sources.store);
    let rest = stream::unfold(
        (ticks, store, query),
        move |(mut ticks, store, query)| async move {
            ticks.tick().await;
            let frame = match answer(&query, &store) {
                Ok(json) => event(name, &json),
                Err(BadRequest(message)) => event(
                    "error",
                    &serde_json::json!({ "error": message }).to_string(),
                ),
            };
            Some((frame, (ticks, store, query)))
        },
    );
    sse(
        sources,
        stream::once(async move { event(name, &first) }).chain(rest),
    )
}

/// A stat or namespace stream's `interval`.
fn interval(p: &mut Params) -> Result<Duration, BadRequest> {
    let Some(value) = p.take("interval")? else {
        return Ok(DEFAULT_INTERVAL);
    };
    mesh_api::duration::parse(&value)
        .ok()
        .filter(|i| (MIN_INTERVAL..=MAX_INTERVAL).contains(i))
        .ok_or_else(|| {
            BadRequest(format!(
                "interval {value:?}: expected a duration from 1s to 10m, such as 2s"
            ))
        })
}

async fn tap<B>(req: &Request<B>, sources: &Sources) -> Response<Body> {
    let parsed = Params::of(req).and_then(|mut p| {
        let token = p.take("access_token")?;
        let request = tap_request(&mut p)?;
        p.done()?;
        Ok((token, request))
    });
    let (query_token, mut request) = match parsed {
        Ok(parsed) => parsed,
        Err(BadRequest(message)) => {
            return error(StatusCode::BAD_REQUEST, &message).map(|b| b.boxed_unsync())
        }
    };
    // The dashboard shows each request's headers, as `mesh tap -o json` prints them
    // (the proxies redact the sensitive ones before they leave the pod).
    request.extract = Some(Extract { headers: true });
    let authorization = req.headers().get(header::AUTHORIZATION);
    let token = match crate::tap::bearer_of(authorization.map(|v| v.as_bytes())) {
        Ok(token) => token.or(query_token),
        Err(status) => return tap_error(&status).map(|b| b.boxed_unsync()),
    };
    let events = match sources.tap.open(token.as_deref(), request).await {
        Ok(events) => events,
        Err(status) => return tap_error(&status).map(|b| b.boxed_unsync()),
    };
    let frames = stream::unfold(Some(events), |events| async move {
        let mut events = events?;
        match events.recv().await? {
            Ok(e) => Some((
                event("tap", &mesh_core::top::json::to_json(&e).to_string()),
                Some(events),
            )),
            // The tap API's last word: said, and the stream ends.
            Err(status) => {
                let json = serde_json::json!({ "error": status.message() }).to_string();
                Some((event("error", &json), None))
            }
        }
    });
    sse(sources, frames)
}

/// One event: its name, and its data on one line (JSON has no raw newlines).
fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The response streaming `events`, with the reconnection delay first and a comment
/// whenever 15 s pass without an event; counted in [`Sources::streams`] until the body
/// is dropped.
fn sse<S>(sources: &Sources, events: S) -> Response<Body>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let counted = sources.streams.count();
    let heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    let body = stream::unfold(
        (Box::pin(events), heartbeat, counted),
        |(mut events, mut heartbeat, counted)| async move {
            let frame = tokio::select! {
                event = events.next() => event?,
                _ = heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            };
            heartbeat.reset();
            Some((frame, (events, heartbeat, counted)))
        },
    );
    let retry = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    let frames = stream::once(async move { retry })
        .chain(body)
        .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    let mut rsp = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = rsp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    rsp
}
