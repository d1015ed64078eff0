//! Load balancing: power of two choices over peak-EWMA latency, as Linkerd and tower
//! do it, for the endpoints of one destination.
//!
//! ```
//! use mesh_proxy::balance::{self, Discovered};
//! use tokio::time::Instant;
//!
//! let now = Instant::now();
//! let found = ["192.0.2.1:80", "192.0.2.2:80"]
//!     .map(|a| Discovered { addr: a.parse().unwrap(), labels: None, identity: None });
//! let endpoints = balance::add(&[], found.into(), true, now);
//! // Each request (HTTP) or connection (TCP) holds a `Load` while it is pending.
//! let load = balance::pick(&endpoints, None).expect("two endpoints");
//! assert!(endpoints.iter().any(|e| e.addr() == load.addr()));
//! ```
//!
//! Each pick draws two distinct endpoints uniformly and takes the cheaper, where cost
//! = latency estimate × (pending + 1) / success², success being the endpoint's recent
//! share of responses that did not fail (fading like the estimate). Drawing two rather
//! than scanning all keeps a pick O(1) and avoids the herd that "always the least
//! loaded" causes when many proxies share stale information. The estimate jumps at
//! once to a slower sample and otherwise fades exponentially with time (decay 10s)
//! down to the level of the faster samples, so an endpoint that turned slow is avoided
//! at once, one that recovered wins its traffic back within seconds, and one that was
//! avoided (whose estimate faded with nothing to hold it up) is tried again later.
//!
//! Where this departs from Linkerd, it is about endpoints that have not answered yet,
//! whose estimate is a prior, not a measurement: a new endpoint's prior is the lowest
//! estimate among its peers (not a fixed 30ms), its first answer replaces the prior
//! whatever its value, and until then it counts as no slower than the endpoint it is
//! drawn against. So a new replica takes traffic at once, and a service's endpoints
//! are told apart by latency from their first answers, not half a minute later.
//!
//! Endpoint lists are immutable: an update builds a new list and swaps it in, and an
//! endpoint that stays (even when an update repeats it) keeps its load state, shared
//! by the old and new lists, so requests in flight count against the right endpoint.

#[cfg(test)]
mod tests;

use rand::Rng;
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};
use tokio::time::Instant;

/// How fast latency observations fade: after this long an estimate has fallen to
/// 1/e of its value (Linkerd's and tower's constant).
pub const DECAY: Duration = Duration::from_secs(10);
/// The estimate of an endpoint that has no peers to learn from (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// A connection attempt that failed counts as a response this slow, so that the
/// endpoint is avoided until the estimate decays (about a minute to reach 10ms) or
/// its peers are much busier.
pub const CONNECT_PENALTY: Duration = Duration::from_secs(5);

/// One endpoint of a destination: its address, the `dst_*` metric labels discovery
/// gave it (rendered once), and its load.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    labels: Option<Arc<str>>,
    identity: Option<Arc<str>>,
    load: Arc<PeakEwma>,
}

impl Endpoint {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The rendered `dst_*` labels, e.g. `dst_namespace="emojivoto",dst_pod="web-0"`.
    pub fn labels(&self) -> Option<&Arc<str>> {
        self.labels.as_ref()
    }

    /// The TLS identity of the endpoint's proxy, when it is meshed.
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.identity.as_ref()
    }

    /// The current latency estimate (for tests and debugging).
    pub fn estimate(&self, now: Instant) -> Duration {
        Duration::from_secs_f64(self.load.estimate(now) / 1e9)
    }

    /// Requests or connections in flight on this endpoint.
    pub fn pending(&self) -> usize {
        self.load.pending.load(Relaxed)
    }
}

/// An endpoint as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub addr: SocketAddr,
    pub labels: Option<Arc<str>>,
    /// The endpoint's proxy identity, when discovery says it is meshed.
    pub identity: Option<Arc<str>>,
}

// === impl PeakEwma ===

/// An endpoint's latency estimate, in nanoseconds, and its pending count.
#[derive(Debug)]
struct PeakEwma {
    estimate: Mutex<Estimate>,
    pending: AtomicUsize,
}

#[derive(Debug)]
struct Estimate {
    ns: f64,
    /// When `ns` was last set; the estimate fades from there.
    at: Instant,
    /// Whether `ns` comes from a response (or a failure), not from the prior an
    /// endpoint starts with.
    sampled: bool,
    /// The share of recent responses that failed (an EWMA over responses), as of
    /// `failure_at`; it fades with time like the estimate, so that an endpoint avoided
    /// for failing is tried again once what is known of it is old.
    failure: f64,
    failure_at: Instant,
}

/// What a pick compares: an endpoint's estimate now, its pending count, and whether
/// the estimate is a measurement.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    estimate: f64,
    pending: f64,
    sampled: bool,
    /// The recent share of successful responses (1 when nothing failed).
    success: f64,
}

/// How much one response moves an endpoint's failure share.
const FAILURE_WEIGHT: f64 = 0.05;
/// The least success share a cost is divided by (squared): an endpoint that fails
/// everything costs 400 times its latency cost, not infinitely much.
const MIN_SUCCESS: f64 = 0.05;

/// The weight that what was known `elapsed` ago still has.
fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

impl PeakEwma {
    fn new(prior: f64, now: Instant) -> Self {
        Self {
            estimate: Mutex::new(Estimate {
                ns: prior,
                at: now,
                sampled: false,
                failure: 0.0,
                failure_at: now,
            }),
            pending: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        // Two floats cannot be left half-updated in a way worse than losing them.
        self.estimate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The estimate now: what was last recorded, faded by the time since.
    fn estimate(&self, now: Instant) -> f64 {
        let e = self.lock();
        e.ns * decay(now.saturating_duration_since(e.at))
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let e = self.lock();
        Snapshot {
            estimate: e.ns * decay(now.saturating_duration_since(e.at)),
            pending: self.pending.load(Relaxed) as f64,
            sampled: e.sampled,
            success: 1.0 - e.failure * decay(now.saturating_duration_since(e.failure_at)),
        }
    }

    /// Records whether one response failed.
    fn outcome(&self, failed: bool, now: Instant) {
        let mut e = self.lock();
        let faded = e.failure * decay(now.saturating_duration_since(e.failure_at));
        let x = if failed { 1.0 } else { 0.0 };
        e.failure = faded + FAILURE_WEIGHT * (x - faded);
        e.failure_at = e.failure_at.max(now);
    }

    /// Records one latency sample. The first replaces the prior the endpoint started
    /// with, whatever its value: the prior is a guess, the sample a measurement (with
    /// Linkerd's 30ms default, services faster than that look alike for half a minute,
    /// and only pending counts tell them apart). After that, a slower sample than the
    /// estimate replaces it at once (the peak); a faster one leaves it to fade toward
    /// it, so the estimate reaches the faster level exponentially, with the decay
    /// constant, and then holds there as samples keep coming.
    ///
    /// Tower's `PeakEwma` also blends a faster sample in, weighted by the time since
    /// the estimate was last read; but a sample always follows the pick that read it,
    /// one round trip earlier, so that weight is about rtt/10s, nothing. Leaving it
    /// out keeps reads free of writes, and keeps an endpoint that was just sampled
    /// from fading faster than its peers, which would make it win every draw.
    fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let mut e = self.lock();
        if !e.sampled || rtt >= e.ns * decay(now.saturating_duration_since(e.at)) {
            e.ns = rtt;
            e.at = e.at.max(now);
            e.sampled = true;
        }
    }
}

// === impl Load ===

/// One request's (HTTP) or connection's (TCP) claim on an endpoint: it counts as
/// pending from the pick until it is dropped.
#[derive(Debug)]
pub struct Load {
    endpoint: Arc<Endpoint>,
    start: Instant,
}

impl Load {
    fn new(endpoint: Arc<Endpoint>, start: Instant) -> Self {
        endpoint.load.pending.fetch_add(1, Relaxed);
        Self { endpoint, start }
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    pub fn labels(&self) -> Option<&Arc<str>> {
        self.endpoint.labels.as_ref()
    }

    /// The endpoint proxy's TLS identity, when it is meshed.
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.endpoint.identity.as_ref()
    }

    /// Records the time since the pick as a latency sample: for HTTP when the response
    /// headers arrive, for TCP when the connection is established.
    pub fn observe(&self) {
        let now = Instant::now();
        self.endpoint
            .load
            .observe(now.saturating_duration_since(self.start), now);
    }

    /// Records whether the response failed (a 5xx, or a gRPC error status in its
    /// headers): an endpoint that fails more than its peers costs more, by the square of
    /// its success share, so it gets fewer requests (and retries of its failures succeed
    /// elsewhere). Peers failing alike keep their order: latency still decides.
    pub fn outcome(&self, failed: bool) {
        self.endpoint.load.outcome(failed, Instant::now());
    }

    /// Records a failed connection attempt as a [`CONNECT_PENALTY`] sample.
    pub fn penalize(&self) {
        self.endpoint.load.observe(CONNECT_PENALTY, Instant::now());
    }
}

/// A copy is a claim of its own (it counts as one more pending), so that counts stay
/// exact however the load is carried. (Request extensions must be `Clone`; the proxy
/// never actually copies one.)
impl Clone for Load {
    fn clone(&self) -> Self {
        Self::new(self.endpoint.clone(), self.start)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.endpoint.load.pending.fetch_sub(1, Relaxed);
    }
}

// === picking ===

/// Picks an endpoint for one request or connection, other than `exclude`, and claims
/// it. `None` when there is no endpoint to pick.
pub fn pick(endpoints: &[Arc<Endpoint>], exclude: Option<SocketAddr>) -> Option<Load> {
    let now = Instant::now();
    let picked = p2c(endpoints, exclude, now, &mut rand::thread_rng())?;
    Some(Load::new(picked.clone(), now))
}

/// Power of two choices: two distinct endpoints drawn uniformly (from those other than
/// `exclude`), the cheaper one chosen. A single candidate is just used.
pub fn p2c<'a>(
    endpoints: &'a [Arc<Endpoint>],
    exclude: Option<SocketAddr>,
    now: Instant,
    rng: &mut impl Rng,
) -> Option<&'a Arc<Endpoint>> {
    let skip = exclude.and_then(|a| endpoints.iter().position(|e| e.addr == a));
    let n = endpoints.len() - usize::from(skip.is_some());
    // The i-th candidate, counting around the excluded endpoint.
    let nth = |i: usize| match skip {
        Some(k) if i >= k => &endpoints[i + 1],
        _ => &endpoints[i],
    };
    match n {
        0 => None,
        1 => Some(nth(0)),
        _ => {
            let i = rng.gen_range(0..n);
            let mut j = rng.gen_range(0..n - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (nth(i), nth(j));
            let (ca, cb) = costs(a.load.snapshot(now), b.load.snapshot(now));
            Some(if ca <= cb { a } else { b })
        }
    }
}

/// The costs of two candidates: estimate × (pending + 1) / success². An endpoint that has not
/// answered yet counts as no slower than its rival (nor than its prior): its prior is
/// only a guess, and without this, once its peers had answered faster than the prior
/// it would lose every draw until the prior faded (half a minute from 30ms to 1ms).
fn costs(a: Snapshot, b: Snapshot) -> (f64, f64) {
    let (ea, eb) = match (a.sampled, b.sampled) {
        (false, true) => (a.estimate.min(b.estimate), b.estimate),
        (true, false) => (a.estimate, b.estimate.min(a.estimate)),
        _ => (a.estimate, b.estimate),
    };
    let health = |s: &Snapshot| {
        let ok = s.success.clamp(MIN_SUCCESS, 1.0);
        ok * ok
    };
    (
        ea * (a.pending + 1.0) / health(&a),
        eb * (b.pending + 1.0) / health(&b),
    )
}

// === updates ===

/// The endpoint list after discovery adds `added` to `current`, or with `replace`
/// (the first message of a stream: the whole state) after it replaces `current`. An
/// address already in `current` keeps its load state, and takes the new labels.
pub fn add(
    current: &[Arc<Endpoint>],
    added: Vec<Discovered>,
    replace: bool,
    now: Instant,
) -> Vec<Arc<Endpoint>> {
    // A new endpoint's prior is the lowest estimate among its peers, not the 30ms
    // default: otherwise a new replica of a service that answers in 1ms looks 30 times
    // slower than its peers and gets almost no traffic until the default has decayed
    // (about 30s), which is when a scale-up is needed most. This deliberately differs
    // from Linkerd, which starts every endpoint at the default.
    let prior = current
        .iter()
        .map(|e| e.load.estimate(now))
        .min_by(f64::total_cmp)
        .unwrap_or(DEFAULT_RTT.as_nanos() as f64);
    let known: HashMap<SocketAddr, &Arc<Endpoint>> = current.iter().map(|e| (e.addr, e)).collect();
    let mut out: Vec<Arc<Endpoint>> = if replace {
        Vec::with_capacity(added.len())
    } else {
        current.to_vec()
    };
    let mut position: HashMap<SocketAddr, usize> =
        out.iter().enumerate().map(|(i, e)| (e.addr, i)).collect();
    for d in added {
        let endpoint = match known.get(&d.addr) {
            Some(e) if e.labels == d.labels && e.identity == d.identity => Arc::clone(e),
            Some(e) => Arc::new(Endpoint {
                addr: d.addr,
                labels: d.labels,
                identity: d.identity,
                load: e.load.clone(),
            }),
            None => Arc::new(Endpoint {
                addr: d.addr,
                labels: d.labels,
                identity: d.identity,
                load: Arc::new(PeakEwma::new(prior, now)),
            }),
        };
        match position.get(&endpoint.addr) {
            Some(&i) => out[i] = endpoint,
            None => {
                position.insert(endpoint.addr, out.len());
                out.push(endpoint);
            }
        }
    }
    out
}

/// The endpoint list without `removed`. Requests in flight on a removed endpoint keep
/// their [`Load`] and finish normally.
pub fn remove(current: &[Arc<Endpoint>], removed: &[SocketAddr]) -> Vec<Arc<Endpoint>> {
    let removed: HashSet<&SocketAddr> = removed.iter().collect();
    current
        .iter()
        .filter(|e| !removed.contains(&e.addr))
        .cloned()
        .collect()
}
