//! A destination's service profile, ready for the data path: its routes, their
//! response classes, timeouts and retry policy, the retry budget, and the traffic split.
//!
//! This module is pure: [`Profile::from_proto`] turns the controller's
//! `DestinationProfile` into matchers compiled once, and every per-request question
//! (which route, success or failure, may I retry, which backend) is a cheap lookup with
//! no IO. It never panics on what the controller sends: a route whose condition cannot
//! be compiled is skipped with a warning, and an invalid budget turns retries off.
//!
//! ```
//! use mesh_api::destination::{request_match::Match, DestinationProfile, RequestMatch, Route};
//! use mesh_proxy::profile::Profile;
//!
//! let proto = DestinationProfile {
//!     routes: vec![Route {
//!         name: "GET /books/{id}".into(),
//!         condition: Some(RequestMatch { r#match: Some(Match::PathRegex("/books/[^/]*".into())) }),
//!         is_retryable: true,
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! let profile = Profile::from_proto(&proto, 8080);
//! let route = profile.route(&http::Method::GET, "/books/42");
//! assert_eq!(route.name().as_ref(), "GET /books/{id}");
//! assert_eq!(route.labels(), r#"rt_route="GET /books/{id}""#);
//! assert!(profile.route(&http::Method::GET, "/books/42/x").is_default());
//! ```
//!
//! Semantics follow Linkerd (`LINKERD-REFERENCE.md` §1.3) except where `DESIGN.md` says
//! otherwise: a status range with one bound (the other 0) is open on that side instead
//! of being dropped, and a route may cap its retries (`max_retries`).

mod budget;
#[cfg(test)]
mod tests;

pub use self::budget::{Budget, InvalidBudget};

use crate::classify::{self, Class};
use http::{uri::Authority, Method, StatusCode};
use mesh_api::destination as proto;
use mesh_api::path_regex::{self, InvalidPathRegex};
use rand::Rng;
use regex::Regex;
use std::{sync::Arc, time::Duration};

/// How deeply `all`/`any`/`not` may nest. Decoded protobuf is already limited to 100
/// levels; this bounds the recursion for values built any other way.
const MAX_DEPTH: usize = 64;

/// A destination's profile, compiled.
#[derive(Debug)]
pub struct Profile {
    routes: Vec<(RequestMatch, Arc<Route>)>,
    default_route: Arc<Route>,
    budget: Arc<Budget>,
    split: Option<Split>,
}

/// A route: what the proxy does with requests that matched its condition.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    labels: Box<str>,
    retryable: bool,
    timeout: Option<Duration>,
    max_retries: Option<u32>,
    classes: Vec<ResponseClass>,
}

/// A response class: responses matching the condition are failures or successes.
#[derive(Debug)]
pub struct ResponseClass {
    matches: ResponseMatch,
    failure: bool,
}

/// A compiled request condition.
#[derive(Debug)]
enum RequestMatch {
    All(Vec<RequestMatch>),
    Any(Vec<RequestMatch>),
    Not(Box<RequestMatch>),
    Path(Regex),
    Method(Method),
}

/// A compiled response condition.
#[derive(Debug)]
enum ResponseMatch {
    All(Vec<ResponseMatch>),
    Any(Vec<ResponseMatch>),
    Not(Box<ResponseMatch>),
    /// Inclusive bounds; an open bound is 0 or `u16::MAX`.
    Status {
        min: u16,
        max: u16,
    },
}

/// The traffic split of `dst_overrides`: authorities with weights.
#[derive(Debug, Clone)]
pub struct Split {
    /// Each authority with the running total of weights up to and including it.
    targets: Vec<(Arc<str>, u64)>,
    total: u64,
}

/// Why a condition could not be compiled.
#[derive(Debug, thiserror::Error)]
enum InvalidMatch {
    #[error("a match has none of its alternatives set")]
    Empty,
    #[error("invalid path regex")]
    Regex(#[source] InvalidPathRegex),
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("conditions nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("status range {min}..={max} is not a range of HTTP statuses")]
    Status { min: u32, max: u32 },
}

// === impl Profile ===

impl Profile {
    /// Compiles a profile.
    ///
    /// `port` is the destination's port: a `dst_overrides` authority without one gets
    /// `:<port>`, as Linkerd's controller does. Routes keep their order; one whose
    /// condition is missing or cannot be compiled is skipped, and a response class that
    /// cannot be compiled is dropped from its route, each with a warning. A missing
    /// budget is Linkerd's default (0.2, 10/s, 10s); an invalid one allows no retries.
    pub fn from_proto(profile: &proto::DestinationProfile, port: u16) -> Self {
        let routes = profile
            .routes
            .iter()
            .filter_map(|r| {
                let Some(condition) = &r.condition else {
                    tracing::warn!(route = %r.name, "skipping a route without a condition");
                    return None;
                };
                match RequestMatch::compile(condition, 0) {
                    Ok(m) => Some((m, Arc::new(Route::from_proto(r)))),
                    Err(error) => {
                        tracing::warn!(route = %r.name, %error, "skipping a route whose condition is invalid");
                        None
                    }
                }
            })
            .collect();
        let budget = match &profile.retry_budget {
            Some(b) => Budget::new(
                b.retry_ratio,
                b.min_retries_per_second,
                Duration::from_millis(b.ttl_ms),
            ),
            None => Budget::default_budget(),
        };
        Self {
            routes,
            default_route: Arc::new(Route::default_route()),
            budget: Arc::new(budget),
            split: Split::from_proto(&profile.dst_overrides, port),
        }
    }

    /// The route for a request: the first route whose condition matches `method` and
    /// `path` (the URI's path, without the query), else the default route.
    pub fn route(&self, method: &Method, path: &str) -> &Arc<Route> {
        self.routes
            .iter()
            .find(|(m, _)| m.matches(method, path))
            .map_or(&self.default_route, |(_, r)| r)
    }

    /// The implicit last route: no name, no retries, no timeout, default classification.
    pub fn default_route(&self) -> &Arc<Route> {
        &self.default_route
    }

    /// The routes that compiled, in order, without the default route.
    pub fn routes(&self) -> impl ExactSizeIterator<Item = &Arc<Route>> + '_ {
        self.routes.iter().map(|(_, r)| r)
    }

    /// The budget every retryable route of this profile shares.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// The traffic split, when `dst_overrides` has an entry with a weight.
    pub fn split(&self) -> Option<&Split> {
        self.split.as_ref()
    }

    /// Whether the profile says anything beyond defaults: Linkerd lets a profile take
    /// over a destination only when it has a route or a split.
    pub fn has_routes_or_split(&self) -> bool {
        !self.routes.is_empty() || self.split.is_some()
    }
}

impl Default for Profile {
    /// The profile of a destination without one: no routes, the default budget.
    fn default() -> Self {
        Self::from_proto(&proto::DestinationProfile::default(), 0)
    }
}

// === impl Route ===

impl Route {
    fn from_proto(r: &proto::Route) -> Self {
        let name: &str = if r.name.is_empty() {
            r.metrics_labels.get("route").map_or("", String::as_str)
        } else {
            &r.name
        };
        let classes = r
            .response_classes
            .iter()
            .filter_map(|c| {
                let compiled = c
                    .condition
                    .as_ref()
                    .ok_or(InvalidMatch::Empty)
                    .and_then(|m| ResponseMatch::compile(m, 0));
                match compiled {
                    Ok(matches) => Some(ResponseClass {
                        matches,
                        failure: c.is_failure,
                    }),
                    Err(error) => {
                        tracing::warn!(route = %name, %error, "dropping an invalid response class");
                        None
                    }
                }
            })
            .collect();
        Self {
            name: name.into(),
            labels: render_labels(name),
            retryable: r.is_retryable,
            timeout: (r.timeout_ms != 0).then(|| Duration::from_millis(r.timeout_ms)),
            max_retries: (r.max_retries != 0).then_some(r.max_retries),
            classes,
        }
    }

    fn default_route() -> Self {
        Self {
            name: "".into(),
            labels: "".into(),
            retryable: false,
            timeout: None,
            max_retries: None,
            classes: Vec::new(),
        }
    }

    /// The route's name (`rt_route`); empty for the default route.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether this is the implicit default route (which has no name).
    pub fn is_default(&self) -> bool {
        self.name.is_empty()
    }

    /// The route's metric labels, rendered and escaped for the Prometheus text format:
    /// `rt_route="<name>"`, or empty for the default route, which has no `rt_route`
    /// label (as in Linkerd).
    pub fn labels(&self) -> &str {
        &self.labels
    }

    /// Whether failed responses may be retried (budget permitting).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The timeout on the whole route call, retries included, until response headers.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The most retries of one request; `None`: only the budget limits them.
    pub fn max_retries(&self) -> Option<u32> {
        self.max_retries
    }

    /// The route's response classes, in order.
    pub fn classes(&self) -> &[ResponseClass] {
        &self.classes
    }

    /// Classifies a response: the first response class whose condition matches
    /// `status` decides; when none does, the proxy's default rule
    /// ([`classify::classify`]: the gRPC status when there is one, else 5xx = failure).
    pub fn classify(&self, status: StatusCode, grpc: bool, grpc_status: Option<u16>) -> Class {
        match self.classes.iter().find(|c| c.matches.matches(status)) {
            Some(c) if c.failure => Class::Failure,
            Some(_) => Class::Success,
            None => classify::classify(status, grpc, grpc_status),
        }
    }
}

/// `rt_route="<name>"`, escaped as the Prometheus text format requires.
fn render_labels(name: &str) -> Box<str> {
    if name.is_empty() {
        return "".into();
    }
    let mut out = String::with_capacity(name.len() + 12);
    mesh_api::prom::write_label(&mut out, "rt_route", name);
    out.into_boxed_str()
}

// === impl ResponseClass ===

impl ResponseClass {
    /// Whether a response matching this class is a failure.
    pub fn is_failure(&self) -> bool {
        self.failure
    }

    /// Whether a response with `status` belongs to this class.
    pub fn matches(&self, status: StatusCode) -> bool {
        self.matches.matches(status)
    }
}

// === impl RequestMatch ===

impl RequestMatch {
    fn compile(m: &proto::RequestMatch, depth: usize) -> Result<Self, InvalidMatch> {
        use proto::request_match::Match;
        if depth > MAX_DEPTH {
            return Err(InvalidMatch::TooDeep);
        }
        let seq = |s: &proto::request_match::Seq| {
            let mut ms = s
                .matches
                .iter()
                .map(|m| Self::compile(m, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            // Conditions are pure, so their order does not change the answer: try the
            // cheap method comparisons before any regex.
            ms.sort_by_key(Self::cost);
            Ok(ms)
        };
        match m.r#match.as_ref().ok_or(InvalidMatch::Empty)? {
            Match::All(s) => Ok(Self::All(seq(s)?)),
            Match::Any(s) => Ok(Self::Any(seq(s)?)),
            Match::Not(m) => Ok(Self::Not(Box::new(Self::compile(m, depth + 1)?))),
            Match::PathRegex(re) => compile_path(re).map(Self::Path),
            Match::Method(name) => match Method::from_bytes(name.as_bytes()) {
                Ok(m) if !name.is_empty() => Ok(Self::Method(m)),
                _ => Err(InvalidMatch::Method(name.clone())),
            },
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        match self {
            Self::All(ms) => ms.iter().all(|m| m.matches(method, path)),
            Self::Any(ms) => ms.iter().any(|m| m.matches(method, path)),
            Self::Not(m) => !m.matches(method, path),
            Self::Path(re) => re.is_match(path),
            Self::Method(m) => m == method,
        }
    }

    /// A rough rank of how expensive a condition is to evaluate.
    fn cost(&self) -> u8 {
        match self {
            Self::Method(_) => 0,
            Self::Not(m) => m.cost(),
            Self::Path(_) => 2,
            Self::All(_) | Self::Any(_) => 3,
        }
    }
}

/// Compiles a path regex by the one rule both sides share ([`mesh_api::path_regex`]):
/// it matches the whole path, whatever anchors it has, and is bounded in size (the
/// controller validates regexes, but a proxy must not let a profile make it allocate
/// without bound).
fn compile_path(re: &str) -> Result<Regex, InvalidMatch> {
    path_regex::compile(re).map_err(InvalidMatch::Regex)
}

// === impl ResponseMatch ===

impl ResponseMatch {
    fn compile(m: &proto::ResponseMatch, depth: usize) -> Result<Self, InvalidMatch> {
        use proto::response_match::Match;
        if depth > MAX_DEPTH {
            return Err(InvalidMatch::TooDeep);
        }
        let seq = |s: &proto::response_match::Seq| {
            s.matches
                .iter()
                .map(|m| Self::compile(m, depth + 1))
                .collect::<Result<Vec<_>, _>>()
        };
        match m.r#match.as_ref().ok_or(InvalidMatch::Empty)? {
            Match::All(s) => Ok(Self::All(seq(s)?)),
            Match::Any(s) => Ok(Self::Any(seq(s)?)),
            Match::Not(m) => Ok(Self::Not(Box::new(Self::compile(m, depth + 1)?))),
            &Match::Status(proto::HttpStatusRange { min, max }) => {
                let invalid = InvalidMatch::Status { min, max };
                let bound = |b: u32, open: u16| match b {
                    0 => Ok(open),
                    100..=999 => Ok(b as u16),
                    _ => Err(()),
                };
                match (bound(min, 0), bound(max, u16::MAX)) {
                    (Ok(min), Ok(max)) if min <= max => Ok(Self::Status { min, max }),
                    _ => Err(invalid),
                }
            }
        }
    }

    fn matches(&self, status: StatusCode) -> bool {
        match self {
            Self::All(ms) => ms.iter().all(|m| m.matches(status)),
            Self::Any(ms) => ms.iter().any(|m| m.matches(status)),
            Self::Not(m) => !m.matches(status),
            Self::Status { min, max } => (*min..=*max).contains(&status.as_u16()),
        }
    }
}

// === impl Split ===

impl Split {
    /// The split of `dst_overrides`, or `None` when no entry has a weight.
    ///
    /// Entries with weight 0 are ignored, as are authorities that do not parse (with a
    /// warning). An authority without a port gets `:<port>`.
    pub fn from_proto(overrides: &[proto::WeightedDst], port: u16) -> Option<Self> {
        let mut total = 0u64;
        let mut targets = Vec::new();
        for d in overrides.iter().filter(|d| d.weight != 0) {
            let authority = match d.authority.parse::<Authority>() {
                Ok(a) if a.port().is_some() => Arc::from(a.as_str()),
                Ok(a) => Arc::from(format!("{}:{port}", a.as_str())),
                Err(error) => {
                    tracing::warn!(authority = %d.authority, %error, "skipping an invalid dst override");
                    continue;
                }
            };
            total += u64::from(d.weight);
            targets.push((authority, total));
        }
        (!targets.is_empty()).then_some(Self { targets, total })
    }

    /// Picks an authority, each with probability proportional to its weight.
    pub fn pick(&self, rng: &mut impl Rng) -> &Arc<str> {
        let x = rng.gen_range(0..self.total);
        // The first target whose running total exceeds `x`; `targets` is non-empty and
        // the last running total is `total > x`, so there always is one.
        let i = self.targets.partition_point(|(_, upto)| *upto <= x);
        &self.targets[i.min(self.targets.len() - 1)].0
    }

    /// The authorities with their weights, in the profile's order.
    pub fn targets(&self) -> impl Iterator<Item = (&Arc<str>, u64)> + '_ {
        let mut prev = 0;
        self.targets.iter().map(move |(a, upto)| {
            let w = upto - prev;
            prev = *upto;
            (a, w)
        })
    }
}

// === retry backoff ===

/// The first retry's backoff ceiling.
pub const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// The largest backoff ceiling.
pub const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// How long to wait before retry number `attempt` (0 for the first retry):
/// exponential with full jitter, uniform in `0..=min(25ms × 2^attempt, 250ms)`.
/// Full jitter spreads the retries of many clients that failed together.
pub fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    Duration::from_nanos(rng.gen_range(0..=ceiling.as_nanos() as u64))
}
