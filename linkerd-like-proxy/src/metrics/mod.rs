//! The proxy's Prometheus metrics: golden HTTP metrics per target and authority, TCP
//! transport metrics per connection target, protocol detection outcomes and process
//! gauges, rendered as Prometheus text on the admin server's `/metrics`.
//!
//! Names, labels and latency buckets follow Linkerd's so that existing dashboards and
//! queries work. Handles are looked up once per connection (TCP) or per request (HTTP)
//! and then updated with atomics or an uncontended lock; nothing on the data path
//! formats text. Label sets are rendered once, when a series is created.

mod authz;
mod process;

#[cfg(test)]
mod tests;

pub use self::authz::{AuthzFamily, AuthzKey, AuthzLabels, AuthzRecent};
use crate::{
    classify::Class,
    detect::Protocol,
    errors::{Refused, TapRefused},
};
use std::{
    collections::HashMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

/// `response_latency_ms` bucket bounds, in milliseconds (Linkerd's).
pub const LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10_000, 20_000, 30_000, 40_000, 50_000,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which side of the proxy a TCP connection is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Accepted by the proxy.
    Src,
    /// Opened by the proxy.
    Destination,
}

impl Peer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Src => "src",
            Self::Destination => "dst",
        }
    }
}

/// The shared metrics registry. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Registry>);

/// HTTP series by (direction, target, peer identity), then by authority label, then by the
/// endpoint's pre-rendered `dst_*` labels (almost always one per authority, so a
/// short list compared by pointer first).
type HttpSeries =
    HashMap<(Direction, SocketAddr, Option<Arc<str>>), HashMap<Box<str>, Vec<HttpByDst>>>;
type HttpByDst = (Option<Arc<str>>, Arc<HttpTarget>);
/// TCP series by (direction, peer, target, peer identity, `dst_*` labels).
type TcpSeries = HashMap<
    (
        Direction,
        Peer,
        SocketAddr,
        Option<Arc<str>>,
        Option<Arc<str>>,
    ),
    Arc<TcpTarget>,
>;
type RouteSeries = HashMap<(Direction, Arc<str>, Arc<str>), Arc<HttpTarget>>;
/// `route_retryable_total`'s (dst, rt_route, skipped reason).
type RetryableKey = (Arc<str>, Arc<str>, &'static str);

/// Which route family a series belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteFamily {
    /// `route_*`: one per request, however many attempts it took.
    Logical,
    /// `route_actual_*`: one per attempt.
    Actual,
}

/// Why the proxy answered an HTTP request itself, without forwarding it: something
/// about the request was wrong (the client's fault, never the server's), counted in
/// `http_request_errors_total{direction,error}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The request line or a header field could not be parsed (400).
    Malformed,
    /// More header fields than `MESH_PROXY_HTTP1_MAX_HEADERS` (431).
    TooManyHeaders,
    /// A head larger than `MESH_PROXY_HTTP1_MAX_HEADER_BYTES` (431).
    HeadTooLarge,
    /// The authority (of the URI or the `Host` header) is not a valid `host[:port]`,
    /// a port out of range or not a number included (400).
    InvalidAuthority,
    /// An explicit-mode request names no authority at all (400).
    NoAuthority,
}

impl RequestError {
    pub const ALL: [Self; 5] = [
        Self::Malformed,
        Self::TooManyHeaders,
        Self::HeadTooLarge,
        Self::InvalidAuthority,
        Self::NoAuthority,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooManyHeaders => "too_many_headers",
            Self::HeadTooLarge => "head_too_large",
            Self::InvalidAuthority => "invalid_authority",
            Self::NoAuthority => "no_authority",
        }
    }
}

/// A simple per-target TCP family: name, type, help, and how to read it.
type TcpFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TcpTarget) -> i64,
);

/// How many HTTP series, and apart from them how many TCP series, the registry keeps
/// at most, unless `MESH_PROXY_METRICS_MAX_SERIES` says otherwise. A series is one
/// (direction, target address, peer identity, authority, endpoint labels): a sidecar
/// talking to 20 services of 50 pods each has 1,000 outbound ones. Each costs about
/// 1 KB of memory while its requests run and 2–4 KB of `/metrics` text; 2,000 keep the
/// worst case near 2 MB of memory and a scrape under 8 MB, where a client inventing an
/// authority per request would otherwise grow the proxy without bound.
pub const DEFAULT_MAX_SERIES: usize = 2000;

/// A family's series with their count, and where requests go once the count reaches
/// the cap: one overflow series per key of `O`, so that totals stay whole.
struct Capped<M, O, T> {
    series: M,
    len: usize,
    overflow: Vec<(O, Arc<T>)>,
}

impl<M: Default, O, T> Default for Capped<M, O, T> {
    fn default() -> Self {
        Self {
            series: M::default(),
            len: 0,
            overflow: Vec::new(),
        }
    }
}

impl<M, O: PartialEq, T> Capped<M, O, T> {
    /// The overflow series for `key`, made with `make` the first time.
    fn overflow(&mut self, key: O, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some((_, t)) = self.overflow.iter().find(|(k, _)| *k == key) {
            return t.clone();
        }
        let t = Arc::new(make());
        self.overflow.push((key, t.clone()));
        t
    }
}

struct Registry {
    http: Mutex<Capped<HttpSeries, Direction, HttpTarget>>,
    tcp: Mutex<Capped<TcpSeries, (Direction, Peer), TcpTarget>>,
    /// The cap of each of `http` and `tcp`.
    max_series: usize,
    /// New series refused at the cap, by family (HTTP, TCP) and direction.
    series_overflow: [[AtomicU64; 2]; 2],
    detect: [[AtomicU64; Protocol::ALL.len()]; 2],
    process: process::Process,
    discovery: DiscoveryGauges,
    identity: IdentityMetrics,
    tap: TapMetrics,
    /// Authorization decisions, when policy is on.
    authz: authz::AuthzMetrics,
    /// Route series: logical requests (`route_*`) and their attempts
    /// (`route_actual_*`), by (direction, `dst`, `rt_route`).
    routes: [Mutex<RouteSeries>; 2],
    /// `route_retryable_total` by (dst, rt_route, skipped reason; "" for a retry made).
    retryable: Mutex<HashMap<RetryableKey, u64>>,
    /// Mesh TLS refusals by direction and [`Refused`] reason.
    tls_refused: [[AtomicU64; Refused::ALL.len()]; 2],
    /// Requests the proxy refused as invalid, by direction and [`RequestError`].
    request_errors: [[AtomicU64; RequestError::ALL.len()]; 2],
    /// Ticks once per [`Metrics::expire`]; series remember the epoch they were last
    /// used in, so that idle ones can go without a clock read per request.
    epoch: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            http: Mutex::default(),
            tcp: Mutex::default(),
            max_series: DEFAULT_MAX_SERIES,
            series_overflow: Default::default(),
            detect: Default::default(),
            process: Default::default(),
            discovery: Default::default(),
            identity: Default::default(),
            tap: Default::default(),
            authz: Default::default(),
            routes: Default::default(),
            retryable: Default::default(),
            tls_refused: Default::default(),
            request_errors: Default::default(),
            epoch: Default::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock cannot leave counters inconsistent in a
    // way that matters more than losing all metrics would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Appends `key="value"` to `out`, after a comma unless it is the first label.
fn push_label(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    mesh_api::prom::write_label(out, key, value);
}

/// Appends the `tls` label, and with mesh TLS the peer's identity: `server_id` for
/// connections this proxy opened (outbound), `client_id` for those it accepted.
fn push_tls(out: &mut String, direction: Direction, peer: Option<&Arc<str>>) {
    match peer {
        None => push_label(out, "tls", "false"),
        Some(id) => {
            push_label(out, "tls", "true");
            let key = match direction {
                Direction::Outbound => "server_id",
                Direction::Inbound => "client_id",
            };
            push_label(out, key, id);
        }
    }
}

/// Appends pre-rendered labels, if any.
fn push_dst(out: &mut String, dst: Option<&Arc<str>>) {
    if let Some(d) = dst.filter(|d| !d.is_empty()) {
        out.push(',');
        out.push_str(d);
    }
}

fn same_labels(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

/// Renders discovery's metric labels for one endpoint, once, as the `dst_*` labels of
/// its outbound series: the destination's labels (`namespace`, `service`) and the
/// endpoint's own (`pod`, `deployment`, `serviceaccount`...), the endpoint's winning a
/// clash. Names become valid Prometheus names (`app.kubernetes.io/name` →
/// `dst_app_kubernetes_io_name`), sorted; the first of two names that sanitize alike
/// wins. `None` when there are no labels.
pub fn dst_labels<'a>(
    set: impl IntoIterator<Item = (&'a String, &'a String)>,
    endpoint: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Option<Arc<str>> {
    let mut merged: std::collections::BTreeMap<&str, &str> = set
        .into_iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    merged.extend(endpoint.into_iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut names: std::collections::BTreeMap<String, &str> = Default::default();
    for (k, v) in merged {
        let name: String = "dst_"
            .chars()
            .chain(k.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            }))
            .collect();
        names.entry(name).or_insert(v);
    }
    if names.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (k, v) in &names {
        push_label(&mut out, k, v);
    }
    Some(out.into())
}

// === impl DiscoveryGauges ===

/// What discovery holds: destinations being resolved and their endpoints. Rendered
/// only when discovery is on.
#[derive(Default)]
pub(crate) struct DiscoveryGauges {
    enabled: std::sync::atomic::AtomicBool,
    destinations: AtomicI64,
    endpoints: AtomicI64,
}

impl DiscoveryGauges {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    pub(crate) fn destinations(&self, delta: i64) {
        self.destinations.fetch_add(delta, Relaxed);
    }

    pub(crate) fn endpoints(&self, delta: i64) {
        self.endpoints.fetch_add(delta, Relaxed);
    }

    fn encode(&self, out: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        header(
            out,
            "outbound_discovery_destinations",
            "gauge",
            "Destinations the proxy is resolving through the destination service.",
        );
        let _ = writeln!(
            out,
            "outbound_discovery_destinations {}",
            self.destinations.load(Relaxed)
        );
        header(
            out,
            "outbound_discovery_endpoints",
            "gauge",
            "Endpoints the destination service gave for those destinations.",
        );
        let _ = writeln!(
            out,
            "outbound_discovery_endpoints {}",
            self.endpoints.load(Relaxed)
        );
    }
}

// === impl IdentityMetrics ===

/// The identity client's certificate and its refreshes. Rendered only when identity
/// is on; the expiry only once a certificate is held.
#[derive(Default)]
pub(crate) struct IdentityMetrics {
    enabled: std::sync::atomic::AtomicBool,
    /// The current certificate's NotAfter, in Unix seconds; 0: none yet.
    expiration: AtomicI64,
    ok: AtomicU64,
    failure: AtomicU64,
}

impl IdentityMetrics {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    /// A refresh succeeded with a certificate valid until `not_after` (Unix seconds).
    pub(crate) fn refreshed(&self, not_after: i64) {
        self.expiration.store(not_after, Relaxed);
        self.ok.fetch_add(1, Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failure.fetch_add(1, Relaxed);
    }

    fn encode(&self, out: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let expiration = self.expiration.load(Relaxed);
        if expiration != 0 {
            header(
                out,
                "identity_cert_expiration_timestamp_seconds",
                "gauge",
                "When the proxy's current certificate expires, in seconds since the Unix epoch.",
            );
            let _ = writeln!(
                out,
                "identity_cert_expiration_timestamp_seconds {expiration}"
            );
        }
        header(
            out,
            "identity_cert_refresh_total",
            "counter",
            "Certificate requests to the identity service, by result.",
        );
        for (result, n) in [("ok", &self.ok), ("failure", &self.failure)] {
            let _ = writeln!(
                out,
                "identity_cert_refresh_total{{result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
}

// === impl TapMetrics ===

/// The tap server: its streams, the events they lost, the requests their rate
/// skipped, the connections it refused. Rendered only while the tap server runs.
#[derive(Default)]
pub(crate) struct TapMetrics {
    enabled: std::sync::atomic::AtomicBool,
    subscribers: AtomicI64,
    dropped: AtomicU64,
    rate_limited: AtomicU64,
    refused: [AtomicU64; TapRefused::ALL.len()],
}

impl TapMetrics {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    pub(crate) fn subscribers(&self, delta: i64) {
        self.subscribers.fetch_add(delta, Relaxed);
    }

    /// An event a stream's full buffer could not take.
    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    /// A request a stream's filter matched, not tapped for the stream's rate.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self, reason: TapRefused) {
        let i = TapRefused::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("TapRefused::ALL lists every reason");
        self.refused[i].fetch_add(1, Relaxed);
    }

    fn encode(&self, out: &mut String) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        header(out, "tap_subscribers", "gauge", "Tap streams open now.");
        let _ = writeln!(out, "tap_subscribers {}", self.subscribers.load(Relaxed));
        header(
            out,
            "tap_events_dropped_total",
            "counter",
            "Tap events dropped because their stream's buffer was full (its client reads too slowly).",
        );
        let _ = writeln!(
            out,
            "tap_events_dropped_total {}",
            self.dropped.load(Relaxed)
        );
        header(
            out,
            "tap_rate_limited_total",
            "counter",
            "Requests a tap stream's filter matched that were not tapped, the stream being at MESH_PROXY_TAP_MAX_RPS.",
        );
        let _ = writeln!(
            out,
            "tap_rate_limited_total {}",
            self.rate_limited.load(Relaxed)
        );
        header(
            out,
            "tap_refused_total",
            "counter",
            "Connections to the tap port refused, by reason.",
        );
        for (i, r) in TapRefused::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "tap_refused_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.refused[i].load(Relaxed)
            );
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that keeps at most `max` HTTP series and `max` TCP series; requests
    /// and connections that would need more are counted in per-direction overflow
    /// series and in `metrics_series_overflow_total`.
    pub fn with_max_series(max: usize) -> Self {
        Self(Arc::new(Registry {
            max_series: max,
            ..Registry::default()
        }))
    }

    /// The HTTP series for requests to `target_addr` with the given authority
    /// (`None` where the authority is not a label, as on inbound by default) and the
    /// endpoint's rendered `dst_*` labels (see [`dst_labels`]).
    pub fn http(
        &self,
        direction: Direction,
        target_addr: SocketAddr,
        tls: Option<&Arc<str>>,
        authority: Option<&str>,
        dst: Option<&Arc<str>>,
    ) -> Arc<HttpTarget> {
        let mut guard = lock(&self.0.http);
        let http = &mut *guard;
        let key = authority.unwrap_or("");
        let epoch = self.0.epoch.load(Relaxed);
        let found = http
            .series
            .get(&(direction, target_addr, tls.cloned()))
            .and_then(|by_authority| by_authority.get(key))
            .and_then(|by_dst| by_dst.iter().find(|(d, _)| same_labels(d.as_ref(), dst)));
        if let Some((_, t)) = found {
            t.seen.store(epoch, Relaxed);
            return t.clone();
        }
        if http.len >= self.0.max_series {
            self.0.series_overflow[0][direction.index()].fetch_add(1, Relaxed);
            return http.overflow(direction, || {
                let mut labels = String::new();
                push_label(&mut labels, "direction", direction.as_str());
                push_label(&mut labels, "series_overflow", "true");
                HttpTarget::new(labels, epoch)
            });
        }
        http.len += 1;
        let by_authority = http
            .series
            .entry((direction, target_addr, tls.cloned()))
            .or_default();
        let mut labels = String::new();
        push_label(&mut labels, "direction", direction.as_str());
        if let Some(a) = authority {
            push_label(&mut labels, "authority", a);
        }
        push_label(&mut labels, "target_addr", &target_addr.to_string());
        push_tls(&mut labels, direction, tls);
        push_dst(&mut labels, dst);
        let t = Arc::new(HttpTarget::new(labels, epoch));
        by_authority
            .entry(key.into())
            .or_default()
            .push((dst.cloned(), t.clone()));
        t
    }

    /// Marks a series its holder found without [`Metrics::http`] as in use now, as a
    /// lookup would, so that it ages from its last use.
    pub fn touch(&self, series: &HttpTarget) {
        series.seen.store(self.0.epoch.load(Relaxed), Relaxed);
    }

    /// The series of route `route` (its name) of destination `dst` (the profile's
    /// `host:port`), in the given family.
    pub fn route(
        &self,
        family: RouteFamily,
        direction: Direction,
        dst: &Arc<str>,
        route: &Arc<str>,
    ) -> Arc<HttpTarget> {
        let i = family as usize;
        let epoch = self.0.epoch.load(Relaxed);
        let mut routes = lock(&self.0.routes[i]);
        let t = routes
            .entry((direction, dst.clone(), route.clone()))
            .or_insert_with(|| {
                let mut labels = String::new();
                push_label(&mut labels, "direction", direction.as_str());
                push_label(&mut labels, "dst", dst);
                if !route.is_empty() {
                    push_label(&mut labels, "rt_route", route);
                }
                Arc::new(HttpTarget::new(labels, epoch))
            });
        t.seen.store(epoch, Relaxed);
        t.clone()
    }

    /// Counts a retryable request's failed attempt: retried (`skipped` empty), or not,
    /// and why (`no_budget`, `body_too_large`, `max_retries`).
    pub fn retryable(&self, dst: &Arc<str>, route: &Arc<str>, skipped: &'static str) {
        *lock(&self.0.retryable)
            .entry((dst.clone(), route.clone(), skipped))
            .or_default() += 1;
    }

    /// Opens a TCP connection's metrics; dropping the returned handle records its close.
    /// `dst` is the endpoint's rendered `dst_*` labels, for connections the proxy
    /// opens to an endpoint discovery chose.
    pub fn tcp_open(
        &self,
        direction: Direction,
        peer: Peer,
        target_addr: SocketAddr,
        tls: Option<&Arc<str>>,
        dst: Option<&Arc<str>>,
    ) -> TcpConn {
        let mut guard = lock(&self.0.tcp);
        let tcp = &mut *guard;
        let key = (direction, peer, target_addr, tls.cloned(), dst.cloned());
        let target = match tcp.series.get(&key) {
            Some(t) => t.clone(),
            None if tcp.len >= self.0.max_series => {
                self.0.series_overflow[1][direction.index()].fetch_add(1, Relaxed);
                tcp.overflow((direction, peer), || {
                    let mut labels = String::new();
                    push_label(&mut labels, "direction", direction.as_str());
                    push_label(&mut labels, "peer", peer.as_str());
                    push_label(&mut labels, "series_overflow", "true");
                    TcpTarget {
                        labels,
                        ..TcpTarget::default()
                    }
                })
            }
            None => {
                let mut labels = String::new();
                push_label(&mut labels, "direction", direction.as_str());
                push_label(&mut labels, "peer", peer.as_str());
                push_label(&mut labels, "target_addr", &target_addr.to_string());
                push_tls(&mut labels, direction, tls);
                push_dst(&mut labels, dst);
                let t = Arc::new(TcpTarget {
                    labels,
                    ..TcpTarget::default()
                });
                tcp.len += 1;
                tcp.series.insert(key, t.clone());
                t
            }
        };
        drop(guard);
        target.open_total.fetch_add(1, Relaxed);
        target.open.fetch_add(1, Relaxed);
        target.seen.store(self.0.epoch.load(Relaxed), Relaxed);
        TcpConn {
            target,
            errno: None,
        }
    }

    /// Drops series that no request or connection holds and that have not been used
    /// for more than `retain` calls of this function, so that targets and authorities
    /// seen once do not cost memory forever. Prometheus sees a dropped counter that
    /// comes back as a new series starting at zero, which its functions handle.
    pub fn expire(&self, retain: u64) {
        let now = self.0.epoch.fetch_add(1, Relaxed) + 1;
        let stale = |seen: &AtomicU64| now.saturating_sub(seen.load(Relaxed)) > retain;
        let keep = |t: &Arc<HttpTarget>| Arc::strong_count(t) > 1 || !stale(&t.seen);
        let mut http = lock(&self.0.http);
        let mut removed = 0;
        http.series.retain(|_, by_authority| {
            by_authority.retain(|_, by_dst| {
                let before = by_dst.len();
                by_dst.retain(|(_, t)| keep(t));
                removed += before - by_dst.len();
                !by_dst.is_empty()
            });
            !by_authority.is_empty()
        });
        http.len -= removed;
        drop(http);
        let mut tcp = lock(&self.0.tcp);
        tcp.series
            .retain(|_, t| Arc::strong_count(t) > 1 || !stale(&t.seen));
        tcp.len = tcp.series.len();
        drop(tcp);
        for routes in &self.0.routes {
            lock(routes).retain(|_, t| Arc::strong_count(t) > 1 || !stale(&t.seen));
        }
    }

    /// Counts one protocol detection outcome.
    pub fn detected(&self, direction: Direction, protocol: Protocol) {
        let i = Protocol::ALL
            .iter()
            .position(|p| *p == protocol)
            .expect("Protocol::ALL lists every protocol");
        self.0.detect[direction.index()][i].fetch_add(1, Relaxed);
    }

    /// Counts a mesh TLS connection (or plaintext request) refused for `reason`.
    pub fn tls_refused(&self, direction: Direction, reason: Refused) {
        let i = Refused::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("Refused::ALL lists every reason");
        self.0.tls_refused[direction.index()][i].fetch_add(1, Relaxed);
    }

    /// Counts a request the proxy refused because it was invalid.
    pub fn request_error(&self, direction: Direction, error: RequestError) {
        let i = RequestError::ALL
            .iter()
            .position(|e| *e == error)
            .expect("RequestError::ALL lists every error");
        self.0.request_errors[direction.index()][i].fetch_add(1, Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.encode_http(&mut out);
        header(
            &mut out,
            "http_request_errors_total",
            "counter",
            "HTTP requests the proxy refused as invalid without forwarding them, by what was wrong.",
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            for (i, e) in RequestError::ALL.iter().enumerate() {
                let v = self.0.request_errors[d.index()][i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "http_request_errors_total{{direction=\"{}\",error=\"{}\"}} {v}",
                    d.as_str(),
                    e.as_str()
                );
            }
        }
        self.encode_tcp(&mut out);
        header(
            &mut out,
            "metrics_series_overflow_total",
            "counter",
            "New HTTP or TCP series refused because the family had MESH_PROXY_METRICS_MAX_SERIES series; their traffic is counted in the series labelled series_overflow=\"true\".",
        );
        for (f, family) in ["http", "tcp"].iter().enumerate() {
            for d in [Direction::Inbound, Direction::Outbound] {
                let v = self.0.series_overflow[f][d.index()].load(Relaxed);
                let _ = writeln!(
                    out,
                    "metrics_series_overflow_total{{family=\"{family}\",direction=\"{}\"}} {v}",
                    d.as_str()
                );
            }
        }
        header(
            &mut out,
            "protocol_detect_total",
            "counter",
            "Connections by protocol detection outcome.",
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            for (i, p) in Protocol::ALL.iter().enumerate() {
                let v = self.0.detect[d.index()][i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "protocol_detect_total{{direction=\"{}\",result=\"{}\"}} {v}",
                    d.as_str(),
                    p.as_str()
                );
            }
        }
        self.0.discovery.encode(&mut out);
        self.0.identity.encode(&mut out);
        if self.0.identity.enabled.load(Relaxed) {
            header(
                &mut out,
                "tls_refused_total",
                "counter",
                "Mesh TLS handshakes (and plaintext requests claiming an identity) refused, by reason.",
            );
            for d in [Direction::Inbound, Direction::Outbound] {
                for (i, r) in Refused::ALL.iter().enumerate() {
                    let v = self.0.tls_refused[d.index()][i].load(Relaxed);
                    let _ = writeln!(
                        out,
                        "tls_refused_total{{direction=\"{}\",reason=\"{}\"}} {v}",
                        d.as_str(),
                        r.as_str()
                    );
                }
            }
        }
        self.0.tap.encode(&mut out);
        self.0.authz.encode(&mut out);
        self.0.process.encode(&mut out);
        out
    }

    pub(crate) fn discovery(&self) -> &DiscoveryGauges {
        &self.0.discovery
    }

    pub(crate) fn identity(&self) -> &IdentityMetrics {
        &self.0.identity
    }

    pub(crate) fn tap(&self) -> &TapMetrics {
        &self.0.tap
    }

    /// Renders the authorization families from now on (policy is on).
    pub(crate) fn authz_enable(&self) {
        self.0.authz.enable();
    }

    /// Counts one authorization decision, within the registry's series cap, in the
    /// series `recent` (the connection's) remembers if it is one of them.
    pub fn authz(&self, labels: AuthzLabels<'_>, recent: Option<&AuthzRecent>) {
        self.0.authz.count(labels, recent, self.0.max_series);
    }

    fn encode_http(&self, out: &mut String) {
        let http = lock(&self.0.http);
        let targets: Vec<Arc<HttpTarget>> = http
            .series
            .values()
            .flat_map(HashMap::values)
            .flatten()
            .map(|(_, t)| t.clone())
            .chain(http.overflow.iter().map(|(_, t)| t.clone()))
            .collect();
        drop(http);
        encode_targets(out, "", &targets);
        for (family, prefix) in [
            (RouteFamily::Logical, "route_"),
            (RouteFamily::Actual, "route_actual_"),
        ] {
            let routes: Vec<Arc<HttpTarget>> = lock(&self.0.routes[family as usize])
                .values()
                .cloned()
                .collect();
            if !routes.is_empty() {
                encode_targets(out, prefix, &routes);
            }
        }
        let retryable = lock(&self.0.retryable).clone();
        if !retryable.is_empty() {
            header(
                out,
                "route_retryable_total",
                "counter",
                "Failed attempts of retryable requests: retried, or skipped and why.",
            );
            for ((dst, route, skipped), n) in retryable {
                let mut labels = String::new();
                push_label(&mut labels, "dst", &dst);
                if !route.is_empty() {
                    push_label(&mut labels, "rt_route", &route);
                }
                if !skipped.is_empty() {
                    push_label(&mut labels, "skipped", skipped);
                }
                let _ = writeln!(out, "route_retryable_total{{{labels}}} {n}");
            }
        }
    }
}

/// Renders HTTP series as the `<prefix>request_total`, `<prefix>response_total` and
/// `<prefix>response_latency_ms` families.
fn encode_targets(out: &mut String, prefix: &str, targets: &[Arc<HttpTarget>]) {
    {
        header(
            out,
            &format!("{prefix}request_total"),
            "counter",
            "Total count of HTTP requests.",
        );
        for t in targets {
            let _ = writeln!(
                out,
                "{prefix}request_total{{{}}} {}",
                t.labels,
                t.requests.load(Relaxed)
            );
        }
        let snapshots: Vec<(&str, Responses)> = targets
            .iter()
            .map(|t| (t.labels.as_str(), lock(&t.responses).clone()))
            .collect();
        header(
            out,
            &format!("{prefix}response_total"),
            "counter",
            "Total count of HTTP responses.",
        );
        for (labels, r) in &snapshots {
            for s in &r.series {
                let grpc = s.grpc.map(|g| g.to_string()).unwrap_or_default();
                let status = if s.status == 0 {
                    String::new()
                } else {
                    s.status.to_string()
                };
                let _ = writeln!(
                    out,
                    "{prefix}response_total{{{labels},status_code=\"{status}\",classification=\"{}\",grpc_status=\"{grpc}\",error=\"{}\"}} {}",
                    s.class.as_str(),
                    s.error,
                    s.count
                );
            }
        }
        let latency = format!("{prefix}response_latency_ms");
        header(out, &latency, "histogram", "Elapsed times between a request's headers being received and its response's first data frame, in milliseconds.");
        for (labels, r) in &snapshots {
            for (status, h) in &r.latencies {
                let labels = format!("{labels},status_code=\"{status}\"");
                h.encode(out, &latency, &labels);
            }
        }
    }
}

impl Metrics {
    fn encode_tcp(&self, out: &mut String) {
        let tcp = lock(&self.0.tcp);
        let targets: Vec<&Arc<TcpTarget>> = tcp
            .series
            .values()
            .chain(tcp.overflow.iter().map(|(_, t)| t))
            .collect();
        let simple: [TcpFamily; 4] = [
            (
                "tcp_open_total",
                "counter",
                "Total count of opened connections.",
                |t| t.open_total.load(Relaxed) as i64,
            ),
            (
                "tcp_open_connections",
                "gauge",
                "Number of currently open connections.",
                |t| t.open.load(Relaxed),
            ),
            (
                "tcp_read_bytes_total",
                "counter",
                "Total count of bytes read from peers.",
                |t| t.read.load(Relaxed) as i64,
            ),
            (
                "tcp_write_bytes_total",
                "counter",
                "Total count of bytes written to peers.",
                |t| t.write.load(Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in simple {
            header(out, name, kind, help);
            for t in &targets {
                let _ = writeln!(out, "{name}{{{}}} {}", t.labels, get(t));
            }
        }
        header(
            out,
            "tcp_close_total",
            "counter",
            "Total count of closed connections.",
        );
        for t in &targets {
            for (errno, n) in lock(&t.closes).iter() {
                let _ = writeln!(out, "tcp_close_total{{{},errno=\"{errno}\"}} {n}", t.labels);
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

// === impl HttpTarget ===

/// HTTP metrics for one (direction, target, tls, authority).
pub struct HttpTarget {
    labels: String,
    requests: AtomicU64,
    responses: Mutex<Responses>,
    seen: AtomicU64,
}

impl HttpTarget {
    fn new(labels: String, epoch: u64) -> Self {
        Self {
            labels,
            requests: AtomicU64::new(0),
            responses: Mutex::default(),
            seen: AtomicU64::new(epoch),
        }
    }
}

#[derive(Clone, Default)]
struct Responses {
    series: Vec<ResponseSeries>,
    latencies: Vec<(u16, Histogram)>,
}

#[derive(Clone)]
struct ResponseSeries {
    status: u16,
    grpc: Option<u16>,
    class: Class,
    error: &'static str,
    count: u64,
}

/// How a response ended, as `response_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseEnd {
    /// 0 when there was no response at all.
    pub status: u16,
    pub grpc: Option<u16>,
    pub class: Class,
    /// Empty for a response from the server; else why the proxy answered or failed.
    pub error: &'static str,
}

impl HttpTarget {
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    pub fn latency(&self, status: u16, elapsed: Duration) {
        let mut r = lock(&self.responses);
        match r.latencies.iter_mut().find(|(s, _)| *s == status) {
            Some((_, h)) => h.record(elapsed),
            None => {
                let mut h = Histogram::default();
                h.record(elapsed);
                r.latencies.push((status, h));
            }
        }
    }

    pub fn response(&self, end: ResponseEnd) {
        let mut r = lock(&self.responses);
        let found = r.series.iter_mut().find(|s| {
            s.status == end.status
                && s.grpc == end.grpc
                && s.class == end.class
                && s.error == end.error
        });
        match found {
            Some(s) => s.count += 1,
            None => r.series.push(ResponseSeries {
                status: end.status,
                grpc: end.grpc,
                class: end.class,
                error: end.error,
                count: 1,
            }),
        }
    }
}

// === impl Histogram ===

/// A latency histogram with Linkerd's millisecond buckets.
#[derive(Clone, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last is +Inf.
    buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    sum_us: u64,
    count: u64,
}

impl Histogram {
    pub fn record(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_MS.partition_point(|ms| ms * 1000 < us);
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    fn encode(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            match LATENCY_BUCKETS_MS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}.{:03}",
            self.sum_us / 1000,
            self.sum_us % 1000
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

// === impl TcpConn ===

#[derive(Default)]
struct TcpTarget {
    labels: String,
    open_total: AtomicU64,
    open: AtomicI64,
    read: AtomicU64,
    write: AtomicU64,
    closes: Mutex<Vec<(&'static str, u64)>>,
    seen: AtomicU64,
}

/// One open connection's metrics. Dropping it records the close, with the errno of
/// the first error seen on the connection, if any.
pub struct TcpConn {
    target: Arc<TcpTarget>,
    errno: Option<&'static str>,
}

impl TcpConn {
    #[inline]
    pub fn read(&self, n: usize) {
        self.target.read.fetch_add(n as u64, Relaxed);
    }

    #[inline]
    pub fn wrote(&self, n: usize) {
        self.target.write.fetch_add(n as u64, Relaxed);
    }

    pub fn error(&mut self, e: &std::io::Error) {
        if self.errno.is_none() {
            self.errno = errno_name(e);
        }
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        self.target.open.fetch_sub(1, Relaxed);
        let errno = self.errno.unwrap_or("");
        let mut closes = lock(&self.target.closes);
        match closes.iter_mut().find(|(e, _)| *e == errno) {
            Some((_, n)) => *n += 1,
            None => closes.push((errno, 1)),
        }
    }
}

/// The symbolic name of an OS error, for the `errno` label.
pub fn errno_name(e: &std::io::Error) -> Option<&'static str> {
    Some(match e.raw_os_error()? {
        1 => "EPERM",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        24 => "EMFILE",
        32 => "EPIPE",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        107 => "ENOTCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        _ => "EOTHER",
    })
}
