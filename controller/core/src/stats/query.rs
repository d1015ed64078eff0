//! The answers: stat summaries, edges and routes over a window, computed from the
//! pods' windows.
//!
//! As Linkerd's `stat`: a resource made of pods is read from the inbound side of its
//! own pods (what they served); with `to`, from the outbound side of its pods toward
//! the target; with `from`, rows are what the source's pods sent to, by the `dst_*`
//! labels; services and authorities are known only as destinations, so they are read
//! from the outbound side of every pod. Success rate is successes over classified
//! responses; rates are each pod's increase over the span its window covers, summed;
//! quantiles come from the summed bucket increases ([`super::quantile`]).

use super::{
    quantile::quantile,
    resource::{PodMeta, Resource, ResourceKind, Selector},
    scrape::{Class, Destination, Le, Measure, RouteKey, Side},
    window::{PodWindow, Span},
    Overflow, Stats,
};
use serde::Serialize;
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

/// `stat`: which resources, over which window, seen from which side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatQuery {
    pub selector: Selector,
    pub window: Duration,
    /// `to`: only the selected resources' traffic toward these.
    pub to: Option<Selector>,
    /// `from`: rows are what these resources' pods sent to.
    pub from: Option<Selector>,
}

/// `edges`: who talks to whom, between resources of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgesQuery {
    pub kind: ResourceKind,
    /// Edges with either end in this namespace; `None`: all.
    pub namespace: Option<String>,
    pub window: Duration,
}

/// `namespace`: what the dashboard's namespace page shows of one namespace, all read
/// at the same moment: `stat` of each of its kinds, and the edges between workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceQuery {
    pub namespace: String,
    pub window: Duration,
}

/// `routes`: ServiceProfile routes, of one service or all, as some pods' proxies (or
/// all) sent to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesQuery {
    /// A `svc` selector; `None`: every service.
    pub service: Option<Selector>,
    /// Whose outbound traffic; `None`: every pod's.
    pub from: Option<Selector>,
    pub window: Duration,
}

/// A query that cannot be answered as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidQuery {
    #[error("window {asked:?} is longer than the {kept:?} the controller keeps")]
    WindowTooLong { asked: Duration, kept: Duration },
    #[error("window must be longer than zero")]
    WindowZero,
    #[error("to and from cannot both be given")]
    ToAndFrom,
    #[error("{what} must be a resource made of pods (ns, deploy, sts, ds, po), not {kind}")]
    NotPods {
        what: &'static str,
        kind: ResourceKind,
    },
    #[error("routes are asked of a service (svc), not {0}")]
    NotService(ResourceKind),
    #[error(
        "a series over {span:?} cannot have steps of {step:?}: the span must be at least one step"
    )]
    SpanShorterThanStep { span: Duration, step: Duration },
    #[error(
        "a series of {points} points is more than the {max} one answer holds: take a longer step"
    )]
    TooManyPoints { points: u64, max: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatAnswer {
    pub window_seconds: f64,
    pub rows: Vec<StatRow>,
    pub overflow: Overflow,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatRow {
    pub resource: Resource,
    /// Meshed and all pods of the resource; `None` for services and authorities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodCount>,
    #[serde(flatten)]
    pub traffic: Traffic,
    pub tcp: Tcp,
    /// Requests and connections the pods' inbound policy refused, a second (HTTP 403 /
    /// gRPC `PERMISSION_DENIED` and refused TCP connections alike); 0 with `to` and
    /// `from`, and for services and authorities, which are read from outbound sides.
    pub unauthorized_rps: f64,
    /// What an `audit` policy let through but would have refused, a second: not denials.
    pub audit_rps: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodCount {
    pub meshed: usize,
    pub total: usize,
}

/// HTTP traffic over a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Traffic {
    pub responses: Responses,
    /// Successes over classified responses; `None` without responses.
    pub success_rate: Option<f64>,
    /// Responses per second.
    pub rps: f64,
    pub latency_ms: Latency,
    /// The longest span a contributing pod's window covered (up to the window plus
    /// a scrape interval; less while the window is not yet covered).
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Responses {
    pub success: u64,
    pub failure: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Tcp {
    /// Open at the window's end.
    pub open_connections: u64,
    /// Opened during the window.
    pub opened: u64,
    pub read_bytes_per_second: f64,
    pub write_bytes_per_second: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgesAnswer {
    pub window_seconds: f64,
    pub edges: Vec<EdgeRow>,
    pub overflow: Overflow,
}

/// Traffic from one resource to another, by the identities each end had.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgeRow {
    pub src: Resource,
    pub dst: Resource,
    /// The source pods' identity (what their certificates name).
    pub client_id: Option<Arc<str>>,
    /// The identity the destination proved in the handshake.
    pub server_id: Option<Arc<str>>,
    /// Mutual TLS.
    pub secured: bool,
    pub responses: Responses,
    /// Successes over classified responses; `None` without responses.
    pub success_rate: Option<f64>,
    pub rps: f64,
    pub tcp: Tcp,
    /// Requests and connections the destination's inbound policy refused, a second:
    /// read from the destination's pods, whose policy counts them by the client's
    /// identity.
    pub unauthorized_rps: f64,
}

/// One namespace at one moment (see [`NamespaceQuery`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamespaceAnswer {
    pub window_seconds: f64,
    /// `stat`'s rows of each of [`NamespaceAnswer::KINDS`] in the namespace, by kind.
    pub stat: BTreeMap<ResourceKind, Vec<StatRow>>,
    /// Who talks to whom, each end a workload: a pod's deployment, statefulset or
    /// daemonset, or the pod itself when it has none of these; edges with either end
    /// in the namespace (so calls across namespaces show, with the other end's
    /// namespace).
    pub edges: Vec<EdgeRow>,
    pub overflow: Overflow,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutesAnswer {
    pub window_seconds: f64,
    pub routes: Vec<RouteRow>,
    pub overflow: Overflow,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteRow {
    /// The service, as the profile names it (`<fqdn>:<port>`).
    pub dst: String,
    /// The route's name; `None` for the default route (what no route matched).
    pub route: Option<String>,
    /// The requests as the application saw them (after retries): Linkerd's
    /// *effective* numbers.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// The attempts the proxies sent (Linkerd's *actual* numbers): with retries, more
    /// requests a second and a lower success rate than the effective ones. `None`
    /// when no proxy reported attempts for the route.
    pub actual: Option<Actual>,
}

/// A route's attempts over the window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Actual {
    pub responses: Responses,
    /// Successful attempts over classified attempts; `None` without attempts.
    pub success_rate: Option<f64>,
    /// Attempts per second.
    pub rps: f64,
}

/// Sums over pods, turned into a row at the end.
#[derive(Clone, Debug, Default)]
struct Tally {
    success: f64,
    failure: f64,
    rps: f64,
    buckets: BTreeMap<Le, f64>,
    open: f64,
    opened: f64,
    read: f64,
    written: f64,
    unauthorized: f64,
    audited: f64,
    seconds: f64,
}

#[derive(Debug, Default)]
struct Row {
    pods: Option<PodCount>,
    tally: Tally,
}

/// The kinds a pod's workload may be, in the order they are looked for.
const WORKLOADS: [ResourceKind; 4] = [
    ResourceKind::Deployment,
    ResourceKind::StatefulSet,
    ResourceKind::DaemonSet,
    ResourceKind::Pod,
];

// === impl NamespaceAnswer ===

impl NamespaceAnswer {
    /// The kinds whose rows it has.
    pub const KINDS: [ResourceKind; 5] = [
        ResourceKind::Deployment,
        ResourceKind::StatefulSet,
        ResourceKind::DaemonSet,
        ResourceKind::Pod,
        ResourceKind::Service,
    ];
}

// === impl StatQuery ===

impl StatQuery {
    pub fn new(selector: Selector, window: Duration) -> Self {
        Self {
            selector,
            window,
            to: None,
            from: None,
        }
    }
}

// === impl Stats: the queries ===

impl Stats {
    pub fn stat(&self, q: &StatQuery, now: Duration) -> Result<StatAnswer, InvalidQuery> {
        self.check_window(q.window)?;
        let kind = q.selector.kind;
        let mut rows: BTreeMap<Resource, Row> = BTreeMap::new();
        match (&q.to, &q.from) {
            (Some(_), Some(_)) => return Err(InvalidQuery::ToAndFrom),
            (to, None) if kind.has_pods() => {
                for (meta, window) in self.pods() {
                    let Some(r) = meta.resource(kind).filter(|r| q.selector.matches(r)) else {
                        continue;
                    };
                    let row = rows.entry(r).or_default();
                    row.count(meta);
                    each_series(window, now, q.window, |side, measure, span, i| {
                        let wanted = match (to, side) {
                            (None, Side::Inbound | Side::InboundFrom(_)) => true,
                            (Some(to), Side::Outbound(d)) => {
                                d.resource(to.kind).is_some_and(|r| to.matches(&r))
                            }
                            _ => false,
                        };
                        if wanted {
                            row.tally.add(measure, span, i);
                        }
                    });
                }
            }
            (Some(_), None) => {
                return Err(InvalidQuery::NotPods {
                    what: "a resource with to",
                    kind,
                })
            }
            (None, from) => {
                if let Some(from) = from.as_ref().filter(|f| !f.kind.has_pods()) {
                    return Err(InvalidQuery::NotPods {
                        what: "from",
                        kind: from.kind,
                    });
                }
                for (meta, window) in self.pods() {
                    if let Some(from) = from {
                        if !meta.resource(from.kind).is_some_and(|r| from.matches(&r)) {
                            continue;
                        }
                    }
                    each_series(window, now, q.window, |side, measure, span, i| {
                        let Side::Outbound(d) = side else {
                            return;
                        };
                        if let Some(r) = d.resource(kind).filter(|r| q.selector.matches(r)) {
                            rows.entry(r).or_default().tally.add(measure, span, i);
                        }
                    });
                }
                if kind.has_pods() {
                    for (meta, _) in self.pods() {
                        if let Some(row) = meta.resource(kind).and_then(|r| rows.get_mut(&r)) {
                            row.count(meta);
                        }
                    }
                }
            }
        }
        Ok(StatAnswer {
            window_seconds: q.window.as_secs_f64(),
            rows: rows
                .into_iter()
                .map(|(resource, row)| StatRow {
                    resource,
                    pods: row.pods,
                    traffic: row.tally.traffic(),
                    tcp: row.tally.tcp(),
                    unauthorized_rps: row.tally.unauthorized,
                    audit_rps: row.tally.audited,
                })
                .collect(),
            overflow: self.overflow(),
        })
    }

    pub fn edges(&self, q: &EdgesQuery, now: Duration) -> Result<EdgesAnswer, InvalidQuery> {
        self.check_window(q.window)?;
        if !q.kind.has_pods() {
            return Err(InvalidQuery::NotPods {
                what: "edges",
                kind: q.kind,
            });
        }
        Ok(EdgesAnswer {
            window_seconds: q.window.as_secs_f64(),
            edges: self.edges_by(
                q.namespace.as_deref(),
                q.window,
                now,
                |meta| meta.resource(q.kind),
                |d| d.resource(q.kind),
            ),
            overflow: self.overflow(),
        })
    }

    /// One namespace at one moment: `stat` of each of [`NamespaceAnswer::KINDS`],
    /// and the edges between workloads.
    pub fn namespace(
        &self,
        q: &NamespaceQuery,
        now: Duration,
    ) -> Result<NamespaceAnswer, InvalidQuery> {
        self.check_window(q.window)?;
        let mut stat = BTreeMap::new();
        for kind in NamespaceAnswer::KINDS {
            let selector = Selector {
                kind,
                namespace: Some(q.namespace.clone()),
                name: None,
            };
            stat.insert(
                kind,
                self.stat(&StatQuery::new(selector, q.window), now)?.rows,
            );
        }
        Ok(NamespaceAnswer {
            window_seconds: q.window.as_secs_f64(),
            stat,
            edges: self.edges_by(
                Some(&q.namespace),
                q.window,
                now,
                |meta| WORKLOADS.iter().find_map(|&k| meta.resource(k)),
                |d| WORKLOADS.iter().find_map(|&k| d.resource(k)),
            ),
            overflow: self.overflow(),
        })
    }

    /// The edges with either end in `namespace` (`None`: all), each end named by
    /// `src` (of the client pod) and `dst` (of the destination its proxy sent to).
    ///
    /// Denials are read from the other end: each server pod's policy counts them by
    /// the client's mesh identity, which names the caller's resource when exactly one
    /// resource's pods hold it (several workloads may share a service account; a
    /// denial that cannot be told apart is on no edge, and plaintext clients have no
    /// identity). The edge is the one the caller's proxy reports (same ends and
    /// identities), or a new one if it reports none.
    fn edges_by(
        &self,
        namespace: Option<&str>,
        window: Duration,
        now: Duration,
        src: impl Fn(&PodMeta) -> Option<Resource>,
        dst: impl Fn(&Destination) -> Option<Resource>,
    ) -> Vec<EdgeRow> {
        let in_ns = |r: &Resource| {
            namespace.is_none_or(|ns| {
                let of = match r.kind {
                    ResourceKind::Namespace => Some(&r.name),
                    _ => r.namespace.as_ref(),
                };
                of.is_some_and(|of| **of == *ns)
            })
        };
        type EdgeKey = (Resource, Resource, Option<Arc<str>>, Option<Arc<str>>, bool);
        let mut edges: BTreeMap<EdgeKey, Tally> = BTreeMap::new();
        for (meta, pod_window) in self.pods() {
            let Some(src) = src(meta) else {
                continue;
            };
            each_series(pod_window, now, window, |side, measure, span, i| {
                let Side::Outbound(d) = side else {
                    return;
                };
                let Some(dst) = dst(d) else {
                    return;
                };
                if !(in_ns(&src) || in_ns(&dst)) {
                    return;
                }
                let key = (
                    src.clone(),
                    dst,
                    meta.identity.clone(),
                    d.server_id.as_deref().map(Arc::from),
                    d.tls,
                );
                edges.entry(key).or_default().add(measure, span, i);
            });
        }
        let mut callers: HashMap<&str, Option<Resource>> = HashMap::new();
        for (meta, _) in self.pods() {
            let (Some(id), Some(r)) = (meta.identity.as_deref(), src(meta)) else {
                continue;
            };
            callers
                .entry(id)
                .and_modify(|c| {
                    if c.as_ref() != Some(&r) {
                        *c = None;
                    }
                })
                .or_insert(Some(r));
        }
        for (meta, pod_window) in self.pods() {
            let Some(server) = src(meta) else {
                continue;
            };
            each_series(pod_window, now, window, |side, measure, span, i| {
                let (Side::InboundFrom(Some(client)), Measure::Unauthorized(_)) = (side, measure)
                else {
                    return;
                };
                let Some(Some(caller)) = callers.get(&**client) else {
                    return;
                };
                if !(in_ns(caller) || in_ns(&server)) {
                    return;
                }
                let key = (
                    caller.clone(),
                    server.clone(),
                    Some(Arc::from(&**client)),
                    meta.identity.clone(),
                    true,
                );
                edges.entry(key).or_default().add(measure, span, i);
            });
        }
        edges
            .into_iter()
            .filter(|(_, t)| t.active())
            .map(|((src, dst, client_id, server_id, secured), t)| {
                let traffic = t.traffic();
                EdgeRow {
                    src,
                    dst,
                    client_id,
                    server_id,
                    secured,
                    responses: traffic.responses,
                    success_rate: traffic.success_rate,
                    rps: t.rps,
                    tcp: t.tcp(),
                    unauthorized_rps: t.unauthorized,
                }
            })
            .collect()
    }

    pub fn routes(&self, q: &RoutesQuery, now: Duration) -> Result<RoutesAnswer, InvalidQuery> {
        self.check_window(q.window)?;
        if let Some(s) = q
            .service
            .as_ref()
            .filter(|s| s.kind != ResourceKind::Service)
        {
            return Err(InvalidQuery::NotService(s.kind));
        }
        if let Some(from) = q.from.as_ref().filter(|f| !f.kind.has_pods()) {
            return Err(InvalidQuery::NotPods {
                what: "from",
                kind: from.kind,
            });
        }
        // Per route: the requests (effective) and, once a proxy reported them, the
        // attempts (actual).
        let mut routes: HashMap<&RouteKey, (Tally, Option<Tally>)> = HashMap::new();
        for (meta, window) in self.pods() {
            if let Some(from) = &q.from {
                if !meta.resource(from.kind).is_some_and(|r| from.matches(&r)) {
                    continue;
                }
            }
            each_series(window, now, q.window, |side, measure, span, i| {
                let (route, actual) = match side {
                    Side::Route(route) => (route, false),
                    Side::RouteActual(route) => (route, true),
                    _ => return,
                };
                if let Some(svc) = &q.service {
                    let Some((ns, name)) = route.service() else {
                        return;
                    };
                    let r = Resource {
                        kind: ResourceKind::Service,
                        namespace: Some(ns.into()),
                        name: name.into(),
                    };
                    if !svc.matches(&r) {
                        return;
                    }
                }
                let (effective, attempts) = routes.entry(route).or_default();
                match actual {
                    false => effective.add(measure, span, i),
                    true => attempts
                        .get_or_insert_with(Tally::default)
                        .add(measure, span, i),
                }
            });
        }
        let mut routes: Vec<RouteRow> = routes
            .into_iter()
            .map(|(key, (effective, attempts))| RouteRow {
                dst: key.dst.to_string(),
                route: key.route.as_deref().map(str::to_string),
                traffic: effective.traffic(),
                actual: attempts.map(|a| {
                    let t = a.traffic();
                    Actual {
                        responses: t.responses,
                        success_rate: t.success_rate,
                        rps: t.rps,
                    }
                }),
            })
            .collect();
        // The default route last, as the rest of what no route matched.
        routes.sort_by(|a, b| {
            (&a.dst, a.route.is_none(), &a.route).cmp(&(&b.dst, b.route.is_none(), &b.route))
        });
        Ok(RoutesAnswer {
            window_seconds: q.window.as_secs_f64(),
            routes,
            overflow: self.overflow(),
        })
    }

    fn check_window(&self, window: Duration) -> Result<(), InvalidQuery> {
        if window.is_zero() {
            return Err(InvalidQuery::WindowZero);
        }
        let kept = self.limits().retention;
        if window > kept {
            return Err(InvalidQuery::WindowTooLong {
                asked: window,
                kept,
            });
        }
        Ok(())
    }
}

/// Calls `f` with each series of `window` and the span it is read over.
fn each_series<'w>(
    window: Option<&'w PodWindow>,
    now: Duration,
    length: Duration,
    mut f: impl FnMut(&'w Side, Measure, &Span<'w>, usize),
) {
    let Some(window) = window else {
        return;
    };
    let Some(span) = window.span(now, length) else {
        return;
    };
    for (i, key) in window.keys().iter().enumerate() {
        f(&key.side, key.measure, &span, i);
    }
}

// === impl Row ===

impl Row {
    fn count(&mut self, meta: &PodMeta) {
        let pods = self.pods.get_or_insert_with(PodCount::default);
        pods.total += 1;
        pods.meshed += usize::from(meta.meshed);
    }
}

// === impl Tally ===

impl Tally {
    fn add(&mut self, measure: Measure, span: &Span<'_>, i: usize) {
        let seconds = span.seconds();
        let rate = |v: f64| if seconds > 0.0 { v / seconds } else { 0.0 };
        match measure {
            Measure::Responses(class) => {
                let n = span.increase(i);
                match class {
                    Class::Success => self.success += n,
                    Class::Failure => self.failure += n,
                }
                self.rps += rate(n);
            }
            Measure::LatencyBucket(le) => {
                *self.buckets.entry(le).or_default() += span.increase(i);
            }
            Measure::OpenConnections => self.open += span.last(i),
            Measure::OpenedConnections => self.opened += span.increase(i),
            Measure::ReadBytes => self.read += rate(span.increase(i)),
            Measure::WriteBytes => self.written += rate(span.increase(i)),
            Measure::Unauthorized(_) => self.unauthorized += rate(span.increase(i)),
            Measure::Audited(_) => self.audited += rate(span.increase(i)),
        }
        self.seconds = self.seconds.max(seconds);
    }

    /// Whether anything happened (for edges: an idle pair is not shown).
    fn active(&self) -> bool {
        self.success + self.failure + self.opened + self.open + self.unauthorized > 0.0
    }

    fn responses(&self) -> Responses {
        Responses {
            success: count(self.success),
            failure: count(self.failure),
        }
    }

    fn traffic(&self) -> Traffic {
        let all = self.success + self.failure;
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(le, n)| (le.value(), *n))
            .collect();
        Traffic {
            responses: self.responses(),
            success_rate: (all > 0.0).then(|| self.success / all),
            rps: self.rps,
            latency_ms: Latency {
                p50: quantile(0.5, &buckets),
                p95: quantile(0.95, &buckets),
                p99: quantile(0.99, &buckets),
            },
            seconds: self.seconds,
        }
    }

    fn tcp(&self) -> Tcp {
        Tcp {
            open_connections: count(self.open),
            opened: count(self.opened),
            read_bytes_per_second: self.read,
            write_bytes_per_second: self.written,
        }
    }
}

/// A sum of counter increases as the whole number it is (proxies count in integers;
/// sums of them are exact in `f64` up to 2^53).
fn count(n: f64) -> u64 {
    // `as` saturates, and the sums are never negative.
    n.round() as u64
}
