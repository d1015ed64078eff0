//! One scrape of a proxy's `/metrics`, reduced to the series the metrics API answers
//! from.
//!
//! A proxy exports far more than stat, edges and routes read: `target_addr` per
//! endpoint, `status_code`, `grpc_status`, `error`, `dst_pod_template_hash`... Keeping
//! them would multiply what the controller stores per pod by the number of endpoints and
//! status codes, so a scrape is reduced at once to the labels the answers group by
//! ([`Side`] and [`Measure`]), and the samples that differ only in other labels are
//! summed when recorded. Counter resets must be seen on each raw series before that sum
//! (a sum can go up while one of its parts restarted), so each sample keeps a hash of
//! its whole label set, [`Sample::raw`], by which the window follows it from scrape to
//! scrape.
//!
//! The page is parsed by the project's one Prometheus text parser, [`mesh_api::prom`];
//! a page that is not metrics, or whose counters hold what no counter can (negative,
//! NaN, infinite), is refused whole with the reason, never read as zeros.

use mesh_api::prom;
use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hash, Hasher},
};

/// How a response was classified by the proxy (`classification`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Success,
    Failure,
}

/// A histogram bucket's upper bound (`le`), kept as the bits of a non-negative `f64`,
/// whose order is then the numbers' order (`+Inf` last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Le(u64);

/// What one series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    /// `response_total` or `route_response_total`, of one classification.
    Responses(Class),
    /// A cumulative bucket of `response_latency_ms` or `route_response_latency_ms`.
    LatencyBucket(Le),
    /// `tcp_open_connections`, a gauge.
    OpenConnections,
    /// `tcp_open_total`.
    OpenedConnections,
    /// `tcp_read_bytes_total`.
    ReadBytes,
    /// `tcp_write_bytes_total`.
    WriteBytes,
    /// `inbound_{http,tcp}_authz_deny_total`: requests and connections the inbound
    /// policy refused.
    Unauthorized(Layer),
    /// `inbound_{http,tcp}_authz_audit_total`: what the policy would have refused, let
    /// through because it audits. Not a denial.
    Audited(Layer),
}

/// What an authorization decision was about: an HTTP request or a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Http,
    Tcp,
}

/// Whose traffic a series counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// What the pod's proxy received (`direction="inbound"`; TCP: `peer="src"`).
    Inbound,
    /// The inbound policy's decisions (`inbound_*_authz_*`), by the client's mesh
    /// identity (`client_id`; `None` without mesh TLS), which names the caller's
    /// workload on the edges: a denied client's own proxy may not be scraped, and
    /// its outbound side does not say the answer was a denial.
    InboundFrom(Option<Box<str>>),
    /// What the pod's proxy sent to one destination (`direction="outbound"`; TCP:
    /// `peer="dst"`, the connections it opened, which carry the `dst_*` labels).
    Outbound(Destination),
    /// One ServiceProfile route of one destination service (`route_*`): the requests
    /// as the application saw them, after retries.
    Route(RouteKey),
    /// The same route's attempts (`route_actual_response_total`): with retries, more
    /// than its requests, and the failures that retries hid. Responses only; the
    /// latency that matters is the request's.
    RouteActual(RouteKey),
}

/// A destination of outbound traffic, as discovery described it to the proxy (the
/// `dst_*` labels) and as mTLS verified it (`tls`, `server_id`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Destination {
    /// `authority`: the name the client asked for, when the proxy labels it.
    pub authority: Option<Box<str>>,
    pub namespace: Option<Box<str>>,
    pub service: Option<Box<str>>,
    pub pod: Option<Box<str>>,
    /// `(kind, name)` from the first `dst_<kind>` label of [`WORKLOAD_KINDS`].
    pub owner: Option<(Box<str>, Box<str>)>,
    /// The identity the server proved (`server_id`), with mTLS.
    pub server_id: Option<Box<str>>,
    /// `tls="true"`: the hop was mutual TLS.
    pub tls: bool,
}

/// A route of a ServiceProfile: its service (`dst`, `<fqdn>:<port>`) and name
/// (`rt_route`; `None` for the default route, which has no such label).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub dst: Box<str>,
    pub route: Option<Box<str>>,
}

/// One sample of a scrape, reduced.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// A hash of the sample's name and whole label set: which raw series it is.
    pub raw: u64,
    pub side: Side,
    pub measure: Measure,
    pub value: f64,
}

/// A proxy's page, reduced: the samples the metrics API reads, in page order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

/// Why a page was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum InvalidScrape {
    #[error("not Prometheus text: {0}")]
    Parse(#[from] prom::ParseError),
    #[error("{metric} has value {value}, which no counter or gauge of a proxy can have")]
    Value { metric: String, value: f64 },
    #[error("{metric} has le={le:?}, which is not a bucket bound (a number from 0 to +Inf)")]
    Le { metric: String, le: String },
    #[error("{metric} has direction={direction:?}, expected \"inbound\" or \"outbound\"")]
    Direction { metric: String, direction: String },
}

/// The owner kinds a `dst_<kind>` label may name, in the order a destination's owner
/// is looked for (discovery gives one of them).
pub const WORKLOAD_KINDS: [&str; 7] = [
    "deployment",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "replicaset",
    "replicationcontroller",
];

/// Reduces pages to [`Scrape`]s. Each parser hashes label sets with its own random
/// keys, so a proxy cannot choose labels that collide (which would merge two series'
/// reset detection); the pages of one pod must all go through the same parser (the
/// store's [`crate::stats::Stats::parser`]).
#[derive(Clone, Debug, Default)]
pub struct ScrapeParser {
    hasher: RandomState,
}

/// The metric families the metrics API reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Responses,
    Latency,
    OpenConnections,
    Opened,
    Read,
    Written,
    RouteResponses,
    RouteLatency,
    RouteActualResponses,
    Authz(Measure),
}

// === impl Le ===

impl Le {
    /// The bound, or `None` for what is not a bound (negative, NaN).
    pub fn new(bound: f64) -> Option<Self> {
        // `-0.0` would order after every positive bound by its bits.
        (bound >= 0.0).then(|| Self((bound + 0.0).to_bits()))
    }

    pub fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

// === impl Measure ===

impl Measure {
    /// A gauge's value is read at the window's end; every other series is a counter,
    /// read as its increase over the window.
    pub fn is_gauge(self) -> bool {
        self == Self::OpenConnections
    }
}

// === impl RouteKey ===

impl RouteKey {
    /// The `(namespace, name)` of the service a route's `dst` names
    /// (`<name>.<namespace>.svc.<cluster-domain>:<port>`); `None` for another form.
    pub fn service(&self) -> Option<(&str, &str)> {
        let host = self.dst.rsplit_once(':').map_or(&*self.dst, |(h, _)| h);
        let mut labels = host.split('.');
        let name = labels.next()?;
        let namespace = labels.next()?;
        (labels.next()? == "svc").then_some((namespace, name))
    }
}

// === impl ScrapeParser ===

impl ScrapeParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses and reduces one page.
    pub fn parse(&self, text: &str) -> Result<Scrape, InvalidScrape> {
        let mut samples = Vec::new();
        for s in prom::parse(text)? {
            let Some(family) = Family::of(&s.name) else {
                continue;
            };
            if !(s.value.is_finite() && s.value >= 0.0) {
                return Err(InvalidScrape::Value {
                    metric: s.name,
                    value: s.value,
                });
            }
            let Some(measure) = family.measure(&s)? else {
                continue;
            };
            let Some(side) = family.side(&s)? else {
                continue;
            };
            samples.push(Sample {
                raw: self.raw(&s),
                side,
                measure,
                value: s.value,
            });
        }
        Ok(Scrape { samples })
    }

    fn raw(&self, s: &prom::Sample) -> u64 {
        let mut h = self.hasher.build_hasher();
        s.name.hash(&mut h);
        for (name, value) in &s.labels {
            name.hash(&mut h);
            value.hash(&mut h);
        }
        h.finish()
    }
}

// === impl Family ===

impl Family {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "response_total" => Self::Responses,
            "response_latency_ms_bucket" => Self::Latency,
            "tcp_open_connections" => Self::OpenConnections,
            "tcp_open_total" => Self::Opened,
            "tcp_read_bytes_total" => Self::Read,
            "tcp_write_bytes_total" => Self::Written,
            "route_response_total" => Self::RouteResponses,
            "route_response_latency_ms_bucket" => Self::RouteLatency,
            "route_actual_response_total" => Self::RouteActualResponses,
            "inbound_http_authz_deny_total" => Self::Authz(Measure::Unauthorized(Layer::Http)),
            "inbound_tcp_authz_deny_total" => Self::Authz(Measure::Unauthorized(Layer::Tcp)),
            "inbound_http_authz_audit_total" => Self::Authz(Measure::Audited(Layer::Http)),
            "inbound_tcp_authz_audit_total" => Self::Authz(Measure::Audited(Layer::Tcp)),
            _ => return None,
        })
    }

    /// What the sample measures; `None` for a sample the answers do not read (a
    /// response the proxy could not classify).
    fn measure(self, s: &prom::Sample) -> Result<Option<Measure>, InvalidScrape> {
        Ok(Some(match self {
            Self::Responses | Self::RouteResponses | Self::RouteActualResponses => {
                match s.label("classification") {
                    Some("success") => Measure::Responses(Class::Success),
                    Some("failure") => Measure::Responses(Class::Failure),
                    _ => return Ok(None),
                }
            }
            Self::Latency | Self::RouteLatency => {
                let le = s.label("le").unwrap_or("");
                let bound = match le {
                    "+Inf" | "Inf" => Some(f64::INFINITY),
                    _ => le.parse::<f64>().ok().filter(|b| b.is_finite()),
                };
                match bound.and_then(Le::new) {
                    Some(le) => Measure::LatencyBucket(le),
                    None => {
                        return Err(InvalidScrape::Le {
                            metric: s.name.clone(),
                            le: le.to_string(),
                        })
                    }
                }
            }
            Self::OpenConnections => Measure::OpenConnections,
            Self::Opened => Measure::OpenedConnections,
            Self::Read => Measure::ReadBytes,
            Self::Written => Measure::WriteBytes,
            Self::Authz(measure) => measure,
        }))
    }

    /// Whose traffic the sample counts; `None` for one the answers do not read: TCP
    /// connections on the other side of the proxy (inbound `peer="dst"`, the
    /// connections to the application; outbound `peer="src"`, the application's
    /// connections to the proxy, which carry no destination), and route series that
    /// are not outbound.
    fn side(self, s: &prom::Sample) -> Result<Option<Side>, InvalidScrape> {
        // Authorization is inbound only: its counters have no `direction` (Linkerd's
        // names and labels).
        if let Self::Authz(_) = self {
            let client = s.label("client_id").filter(|id| !id.is_empty());
            return Ok(Some(Side::InboundFrom(client.map(Box::from))));
        }
        let direction = s.label("direction").unwrap_or("");
        let inbound = match direction {
            "inbound" => true,
            "outbound" => false,
            _ => {
                return Err(InvalidScrape::Direction {
                    metric: s.name.clone(),
                    direction: direction.to_string(),
                })
            }
        };
        match self {
            Self::RouteResponses | Self::RouteLatency | Self::RouteActualResponses => {
                let dst = s.label("dst").filter(|_| !inbound);
                return Ok(dst.map(|dst| {
                    let key = RouteKey {
                        dst: dst.into(),
                        route: s.label("rt_route").map(Into::into),
                    };
                    match self {
                        Self::RouteActualResponses => Side::RouteActual(key),
                        _ => Side::Route(key),
                    }
                }));
            }
            Self::OpenConnections | Self::Opened | Self::Read | Self::Written => {
                let ours = if inbound { "src" } else { "dst" };
                if s.label("peer") != Some(ours) {
                    return Ok(None);
                }
            }
            Self::Responses | Self::Latency | Self::Authz(_) => {}
        }
        if inbound {
            return Ok(Some(Side::Inbound));
        }
        let label = |name: &str| s.label(name).filter(|v| !v.is_empty()).map(Box::from);
        let owner = WORKLOAD_KINDS.iter().find_map(|kind| {
            let name = s
                .labels
                .iter()
                .find(|(n, v)| n.strip_prefix("dst_") == Some(kind) && !v.is_empty())?;
            Some((Box::from(*kind), Box::from(name.1.as_str())))
        });
        Ok(Some(Side::Outbound(Destination {
            authority: label("authority"),
            namespace: label("dst_namespace"),
            service: label("dst_service"),
            pod: label("dst_pod"),
            owner,
            server_id: label("server_id"),
            tls: s.label("tls") == Some("true"),
        })))
    }
}
