//! Tap: who is watching the requests this proxy carries, and what each watcher is
//! sent.
//!
//! The [`Registry`] of tap streams is shared by every connection. The HTTP stack's tap
//! layer (`http/tap`) asks it about each request; while nobody taps, that question is
//! one relaxed atomic load ([`Registry::is_idle`]) and nothing else: no lock, no
//! allocation, no clone. A request that some stream's filter matches is *tapped*: a
//! [`Tapped`] sends `request_init` at once, `response_init` at the response headers
//! and `response_end` when the response body ends (or breaks, or is abandoned), with
//! the bytes, latencies and gRPC status.
//!
//! A stream ([`Subscription`]) never slows traffic or grows memory: its events go
//! through a bounded channel of [`STREAM_BUFFER`] events, and one that does not fit
//! is dropped and counted (`tap_events_dropped_total`); it taps at most
//! `MESH_PROXY_TAP_MAX_RPS` requests per second (the others are counted in
//! `tap_rate_limited_total`) and at most its `limit` of requests, after which it
//! leaves the registry and ends once its tapped requests have. Dropping a
//! `Subscription` (the client went away) removes it from the registry.
//!
//! Header values are never shown for `authorization`, `cookie`, `set-cookie`,
//! `proxy-authorization` and the names in `MESH_PROXY_TAP_REDACT_HEADERS`: such a
//! header is kept by name, with the value [`REDACTED`], so that a reader can tell it
//! was there.
//!
//! The gRPC server that hands streams to the control plane is [`server`].

mod filter;
pub(crate) mod server;

#[cfg(test)]
mod tests;

pub use self::filter::InvalidMatch;

use crate::{
    config::TapConfig,
    metrics::{Direction, Metrics},
};
use http::{header, HeaderMap, HeaderName, Method, Uri};
use mesh_api::tap::{
    tap_event::{self, http::StreamId},
    Header, ObserveRequest, TapEvent,
};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, PoisonError, RwLock,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{sync::mpsc, time::Instant};

/// Header fields whose values tap never shows, whatever is configured.
pub const ALWAYS_REDACTED: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
    header::PROXY_AUTHORIZATION,
];

/// The value a redacted header is shown with.
pub const REDACTED: &str = "[redacted]";

/// Events a stream may have waiting for its client; more are dropped. About 50 KB of
/// events at most per stream, and a second of room at the default rate (100 requests,
/// three events each, per second) for a client that stalls briefly.
pub const STREAM_BUFFER: usize = 256;

/// Most tap streams at once: each holds a buffer, so their number is bounded too.
pub const MAX_SUBSCRIBERS: usize = 16;

/// Why a tap stream could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("limit must be at least 1")]
    NoLimit,
    #[error("invalid match: {0}")]
    Match(#[from] InvalidMatch),
    #[error("too many tap streams (at most {MAX_SUBSCRIBERS})")]
    TooMany,
}

/// The tap streams of a proxy, shared by every connection.
pub struct Registry {
    /// How many streams there are: all a request reads while it is 0.
    active: AtomicUsize,
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
    /// Header names whose values are never shown: [`ALWAYS_REDACTED`] and the
    /// configured ones.
    redact: Box<[HeaderName]>,
    max_rps: u32,
    /// Random per process: with `streams`, a tapped request's id.
    base: u32,
    streams: AtomicU64,
    subscriptions: AtomicU64,
    metrics: Metrics,
}

impl Registry {
    /// A registry for the tap server configured by `config` (`None`: no tap server,
    /// so no stream ever subscribes).
    pub fn new(config: Option<&TapConfig>, metrics: Metrics) -> Self {
        let mut redact: Vec<HeaderName> = ALWAYS_REDACTED.to_vec();
        for name in config.map(|c| &c.redact_headers[..]).unwrap_or_default() {
            if !redact.contains(name) {
                redact.push(name.clone());
            }
        }
        Self {
            active: AtomicUsize::new(0),
            subscribers: RwLock::default(),
            redact: redact.into(),
            max_rps: config.map_or(crate::config::DEFAULT_TAP_MAX_RPS, |c| c.max_rps),
            base: rand::random(),
            streams: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            metrics,
        }
    }

    /// Whether no stream is tapping: the one check every request makes.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.active.load(Relaxed) == 0
    }

    /// Starts a tap stream for `req`: it taps the requests `req.match` matches, up to
    /// `req.limit`.
    pub fn subscribe(
        self: &Arc<Self>,
        req: ObserveRequest,
    ) -> Result<Subscription, SubscribeError> {
        if req.limit == 0 {
            return Err(SubscribeError::NoLimit);
        }
        let filter = filter::Match::compile(req.r#match.as_ref())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let id = self.subscriptions.fetch_add(1, Relaxed);
        let subscriber = Arc::new(Subscriber {
            id,
            filter,
            headers: req.extract.is_some_and(|e| e.headers),
            remaining: AtomicU32::new(req.limit),
            max_rps: match req.max_rps {
                0 => self.max_rps,
                asked => asked.min(self.max_rps),
            },
            rate: Mutex::new(Window {
                start: Instant::now(),
                count: 0,
            }),
            events: tx,
        });
        {
            let mut subscribers = write(&self.subscribers);
            if subscribers.len() >= MAX_SUBSCRIBERS {
                return Err(SubscribeError::TooMany);
            }
            subscribers.push(subscriber);
            self.active.store(subscribers.len(), Relaxed);
        }
        self.metrics.tap().subscribers(1);
        Ok(Subscription {
            events: rx,
            id,
            registry: self.clone(),
        })
    }

    /// Removes stream `id`, if it is still here.
    fn remove(&self, id: u64) {
        let mut subscribers = write(&self.subscribers);
        let before = subscribers.len();
        subscribers.retain(|s| s.id != id);
        if subscribers.len() != before {
            self.active.store(subscribers.len(), Relaxed);
            self.metrics.tap().subscribers(-1);
        }
    }

    /// Taps `req` for every stream whose filter matches it, rate and limit allowing:
    /// sends their `request_init`, and returns what follows the request to its end.
    /// `None`: no stream takes it.
    pub(crate) fn tap(self: &Arc<Self>, req: &RequestView<'_>) -> Option<Tapped> {
        let authority = req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers.get(header::HOST)?.to_str().ok())
            .unwrap_or("");
        let scheme = req.uri.scheme_str().unwrap_or("http");
        let view = filter::View {
            source: req.source,
            destination: req.destination,
            labels: req.labels,
            method: req.method,
            scheme,
            authority,
            path: req.uri.path(),
            route: req.route.unwrap_or(""),
        };
        let now = Instant::now();
        let mut taking = Vec::new();
        let mut done = Vec::new();
        for s in read(&self.subscribers).iter() {
            if !s.filter.matches(&view) {
                continue;
            }
            if !s.admit(now) {
                self.metrics.tap().rate_limited();
                continue;
            }
            match s.take_one() {
                Taken::No => continue,
                Taken::Yes => {}
                Taken::Last => done.push(s.id),
            }
            taking.push(s.clone());
        }
        // A stream that took its last request leaves at once; it ends when the
        // requests it tapped have.
        for id in done {
            self.remove(id);
        }
        if taking.is_empty() {
            return None;
        }
        let id = StreamId {
            base: self.base,
            stream: self.streams.fetch_add(1, Relaxed),
        };
        let tapped = Tapped {
            subscribers: taking,
            meta: meta(req),
            id,
            start: now,
            response_at: None,
            bytes: 0,
            grpc_status: None,
            trailers: None,
            ended: false,
            registry: self.clone(),
        };
        let path = req.uri.path().to_string();
        tapped.emit(|headers| {
            tap_event::http::Event::RequestInit(tap_event::http::RequestInit {
                id: Some(id),
                method: req.method.as_str().to_string(),
                scheme: scheme.to_string(),
                authority: authority.to_string(),
                path: path.clone(),
                headers: if headers {
                    self.headers(req.headers)
                } else {
                    Vec::new()
                },
            })
        });
        Some(tapped)
    }

    /// `headers` as tap shows them: sensitive values redacted.
    fn headers(&self, headers: &HeaderMap) -> Vec<Header> {
        headers
            .iter()
            .map(|(name, value)| Header {
                name: name.as_str().to_string(),
                value: if self.redact.contains(name) {
                    REDACTED.as_bytes().to_vec()
                } else {
                    value.as_bytes().to_vec()
                },
            })
            .collect()
    }
}

/// What tap reads of a request, in plain types (the tap layer fills it in from the
/// request and its target).
pub(crate) struct RequestView<'a> {
    pub(crate) direction: Direction,
    /// The client's address.
    pub(crate) source: SocketAddr,
    /// Where the request goes: the endpoint picked, or the application.
    pub(crate) destination: SocketAddr,
    /// The peer proxy's identity over mesh TLS: inbound the client's, outbound the
    /// server's.
    pub(crate) peer: Option<&'a str>,
    /// The destination's rendered `dst_*` labels.
    pub(crate) labels: Option<&'a str>,
    /// The route's name; `None` on the default route.
    pub(crate) route: Option<&'a str>,
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    /// What the inbound policy decided of the request (policy on).
    pub(crate) authz: Option<&'a crate::policy::enforce::Decision>,
}

/// The metadata every event of a request carries.
fn meta(req: &RequestView<'_>) -> TapEvent {
    let labels = req.labels.map(parse_labels).unwrap_or_default();
    let identity = req.peer.unwrap_or_default().to_string();
    let (source_identity, destination_identity) = match req.direction {
        Direction::Inbound => (identity, String::new()),
        Direction::Outbound => (String::new(), identity),
    };
    TapEvent {
        source: Some(req.source.into()),
        source_meta: Some(tap_event::EndpointMeta {
            labels: Default::default(),
            identity: source_identity,
        }),
        destination: Some(req.destination.into()),
        destination_meta: Some(tap_event::EndpointMeta {
            labels: labels.into_iter().collect(),
            identity: destination_identity,
        }),
        route_meta: Some(tap_event::RouteMeta {
            labels: req
                .route
                .map(|r| ("route".to_string(), r.to_string()))
                .into_iter()
                .collect(),
        }),
        proxy_direction: match req.direction {
            Direction::Inbound => tap_event::ProxyDirection::Inbound,
            Direction::Outbound => tap_event::ProxyDirection::Outbound,
        } as i32,
        tls: req.peer.is_some(),
        http: None,
        authorization: req.authz.map(|d| tap_event::Authorization {
            outcome: d.outcome.as_str().to_string(),
            server: Some(d.server.to_proto()),
            route: d.route.as_ref().map(crate::policy::Meta::to_proto),
            authz: d.authz.as_ref().map(crate::policy::Meta::to_proto),
        }),
    }
}

/// The labels in a rendered `dst_*` label set (`dst_pod="web-0",dst_namespace="x"`),
/// without their `dst_` prefix and unescaped. Whatever does not parse ends the list:
/// the text is the proxy's own, so that never happens, and tap never panics on it.
fn parse_labels(rendered: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = rendered;
    while let Some((key, after)) = rest.split_once("=\"") {
        let key = key.trim_start_matches(',');
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => break,
                },
                c => value.push(c),
            }
        }
        let Some(end) = end else { break };
        out.push((key.strip_prefix("dst_").unwrap_or(key).to_string(), value));
        rest = &after[end..];
    }
    out
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The list is replaced whole or not at all: a panic elsewhere cannot leave it
    // half-changed.
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

// === impl Subscriber ===

/// One tap stream, as the registry and the requests it tapped hold it. Its channel's
/// sender lives here: the stream ends when the registry and every request it tapped
/// have let go.
struct Subscriber {
    id: u64,
    filter: filter::Match,
    /// Whether events carry headers.
    headers: bool,
    /// Requests it may still tap.
    remaining: AtomicU32,
    /// Requests a second it may tap: its own ask, within the proxy's cap.
    max_rps: u32,
    rate: Mutex<Window>,
    events: mpsc::Sender<TapEvent>,
}

/// Requests tapped in the current second.
struct Window {
    start: Instant,
    count: u32,
}

enum Taken {
    No,
    Yes,
    /// The stream's last request.
    Last,
}

impl Subscriber {
    /// Whether one more request fits this second's rate.
    fn admit(&self, now: Instant) -> bool {
        let mut w = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.count = 0;
        }
        if w.count >= self.max_rps {
            return false;
        }
        w.count += 1;
        true
    }

    /// Takes one request from the stream's limit.
    fn take_one(&self) -> Taken {
        match self
            .remaining
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        {
            Ok(1) => Taken::Last,
            Ok(_) => Taken::Yes,
            Err(_) => Taken::No,
        }
    }
}

// === impl Subscription ===

/// A tap stream's receiving end, held by its gRPC response. Dropping it removes the
/// stream from the registry.
pub struct Subscription {
    events: mpsc::Receiver<TapEvent>,
    id: u64,
    registry: Arc<Registry>,
}

impl Subscription {
    /// The next event; `None` once the stream took its limit of requests and they all
    /// ended.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<TapEvent>> {
        self.events.poll_recv(cx)
    }

    pub async fn next(&mut self) -> Option<TapEvent> {
        self.events.recv().await
    }

    /// The next event if one is waiting (tests).
    #[cfg(test)]
    pub(crate) fn try_next(&mut self) -> Result<TapEvent, mpsc::error::TryRecvError> {
        self.events.try_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

// === impl Tapped ===

/// A tapped request, followed to its end: made by [`Registry::tap`], told of the
/// response by the tap layer and the response body. Dropped before it ended (the
/// client went away, the response never came), it sends `response_end` with `reset`
/// `cancelled`, so every `request_init` has its end.
pub(crate) struct Tapped {
    subscribers: Vec<Arc<Subscriber>>,
    /// The metadata of every event (`http` unset).
    meta: TapEvent,
    id: StreamId,
    start: Instant,
    response_at: Option<Instant>,
    bytes: u64,
    grpc_status: Option<u32>,
    trailers: Option<HeaderMap>,
    ended: bool,
    registry: Arc<Registry>,
}

impl Tapped {
    /// The response headers arrived. `proxy_error`: why the proxy answered itself
    /// (empty for the server's response).
    pub(crate) fn response_init(&mut self, status: u16, headers: &HeaderMap, proxy_error: &str) {
        let now = Instant::now();
        self.response_at = Some(now);
        // A trailers-only gRPC response carries its status in the headers.
        self.grpc_status = crate::classify::grpc_status(headers).map(u32::from);
        let (id, since) = (self.id, duration(now.saturating_duration_since(self.start)));
        self.emit(|with_headers| {
            tap_event::http::Event::ResponseInit(tap_event::http::ResponseInit {
                id: Some(id),
                since_request_init: Some(since),
                http_status: u32::from(status),
                headers: if with_headers {
                    self.registry.headers(headers)
                } else {
                    Vec::new()
                },
                proxy_error: proxy_error.to_string(),
            })
        });
    }

    /// `n` bytes of response body went by.
    pub(crate) fn data(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
    }

    /// The response's trailers went by.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = crate::classify::grpc_status(trailers) {
            self.grpc_status = Some(u32::from(code));
        }
        if self.subscribers.iter().any(|s| s.headers) {
            self.trailers = Some(trailers.clone());
        }
    }

    /// The response ended: cleanly (`reset` `None`), or broken (`io`) or abandoned
    /// (`cancelled`).
    pub(crate) fn end(mut self: Box<Self>, reset: Option<&'static str>) {
        self.finish(reset);
    }

    fn finish(&mut self, reset: Option<&'static str>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let now = Instant::now();
        use tap_event::http::response_end::End;
        let end = match (reset, self.grpc_status) {
            (Some(r), _) => Some(End::Reset(r.to_string())),
            (None, Some(code)) => Some(End::GrpcStatusCode(code)),
            (None, None) => None,
        };
        let trailers = self.trailers.take();
        let event = tap_event::http::ResponseEnd {
            id: Some(self.id),
            since_request_init: Some(duration(now.saturating_duration_since(self.start))),
            since_response_init: self
                .response_at
                .map(|at| duration(now.saturating_duration_since(at))),
            response_bytes: self.bytes,
            end,
            trailers: Vec::new(),
        };
        self.emit(|with_headers| {
            let mut e = event.clone();
            if with_headers {
                if let Some(t) = &trailers {
                    e.trailers = self.registry.headers(t);
                }
            }
            tap_event::http::Event::ResponseEnd(e)
        });
    }

    /// Sends each stream its event, made by `make` (with headers or not, as the stream
    /// asked). A full stream loses it, counted: tap never waits for a client.
    fn emit(&self, make: impl Fn(bool) -> tap_event::http::Event) {
        for s in &self.subscribers {
            let mut event = self.meta.clone();
            event.http = Some(tap_event::Http {
                event: Some(make(s.headers)),
            });
            if let Err(mpsc::error::TrySendError::Full(_)) = s.events.try_send(event) {
                self.registry.metrics.tap().dropped();
            }
        }
    }
}

impl Drop for Tapped {
    fn drop(&mut self) {
        self.finish(Some("cancelled"));
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
