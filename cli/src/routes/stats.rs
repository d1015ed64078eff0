//! From two scrapes of each proxy to per-route golden metrics.
//!
//! The arithmetic is Prometheus's, so `mesh routes` agrees with a Grafana panel fed by the
//! same proxies: counters are differenced as `increase` does (a counter that went down was
//! reset, and counts from zero), latency percentiles interpolate within histogram buckets
//! exactly as `histogram_quantile` does. No IO happens here.

use mesh_api::prom::Sample;
use std::{collections::BTreeMap, time::Duration};

/// The latency buckets' family, and the two response-count families.
const LATENCY_BUCKET: &str = "route_response_latency_ms_bucket";
const RESPONSES: &str = "route_response_total";
const ACTUAL_RESPONSES: &str = "route_actual_response_total";
const REQUESTS: &str = "route_request_total";
const ACTUAL_REQUESTS: &str = "route_actual_request_total";

/// Which route series belong to the service asked about.
#[derive(Clone, Debug)]
pub(crate) struct Selector {
    /// `<name>.<namespace>.svc.`: `dst` must start with it (any cluster domain, any port).
    dst_prefix: String,
}

/// A route's key: its name, `None` for the profile's default route.
pub(crate) type Route = Option<String>;

/// What one proxy did for one route in the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Delta {
    pub(crate) success: f64,
    pub(crate) failure: f64,
    pub(crate) actual_success: f64,
    pub(crate) actual_failure: f64,
    /// Cumulative bucket counts by upper bound (`+Inf` included), summed over status codes.
    pub(crate) buckets: BTreeMap<Bound, f64>,
}

/// A bucket's upper bound, ordered (`le` values are never NaN once parsed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bound(pub(crate) f64);

/// One row of the output: a route's numbers over the window, all proxies together.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RouteStats {
    pub(crate) route: Route,
    /// Success rate of requests as the application saw them (after retries), if any.
    pub(crate) success: Option<f64>,
    pub(crate) rps: f64,
    /// Success rate and rate of the individual attempts (retries included).
    pub(crate) actual_success: Option<f64>,
    pub(crate) actual_rps: f64,
    pub(crate) p50: Option<f64>,
    pub(crate) p95: Option<f64>,
    pub(crate) p99: Option<f64>,
}

// === impl Selector ===

impl Selector {
    pub(crate) fn new(name: &str, namespace: &str) -> Self {
        Self {
            dst_prefix: format!("{name}.{namespace}.svc."),
        }
    }

    fn matches(&self, sample: &Sample) -> bool {
        sample.label("direction").is_none_or(|d| d == "outbound")
            && sample
                .label("dst")
                .is_some_and(|dst| dst.starts_with(&self.dst_prefix))
    }
}

// === impl Bound ===

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

// === deltas ===

/// A series' identity: metric name and every label, sorted.
type SeriesKey = (String, Vec<(String, String)>);

/// The route series of one scrape that `selector` picks, by series.
pub(crate) fn select(samples: &[Sample], selector: &Selector) -> BTreeMap<SeriesKey, f64> {
    samples
        .iter()
        .filter(|s| s.name.starts_with("route_") && selector.matches(s))
        .map(|s| {
            let mut labels = s.labels.clone();
            labels.sort();
            ((s.name.clone(), labels), s.value)
        })
        .collect()
}

/// What happened per route between two scrapes of one proxy. Every route with a series in
/// either scrape is present, with zeros if it saw nothing in the window.
pub(crate) fn deltas(
    before: &BTreeMap<SeriesKey, f64>,
    after: &BTreeMap<SeriesKey, f64>,
) -> BTreeMap<Route, Delta> {
    let mut routes: BTreeMap<Route, Delta> = BTreeMap::new();
    for (_, labels) in before.keys() {
        routes.entry(route_of(labels)).or_default();
    }
    for ((name, labels), &now) in after {
        let delta = routes.entry(route_of(labels)).or_default();
        // As Prometheus's `increase`: a counter lower than before was reset (the proxy
        // restarted or dropped an idle series), so all of its value is new.
        let then = before.get(&(name.clone(), labels.clone())).copied();
        let increase = match then {
            Some(then) if now >= then => now - then,
            _ => now,
        };
        if !increase.is_finite() || increase < 0.0 {
            continue;
        }
        let label = |n: &str| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        match name.as_str() {
            RESPONSES | ACTUAL_RESPONSES => {
                let actual = name == ACTUAL_RESPONSES;
                let slot = match (label("classification"), actual) {
                    (Some("success"), false) => &mut delta.success,
                    (Some("failure"), false) => &mut delta.failure,
                    (Some("success"), true) => &mut delta.actual_success,
                    (Some("failure"), true) => &mut delta.actual_failure,
                    _ => continue,
                };
                *slot += increase;
            }
            LATENCY_BUCKET => {
                let Some(le) = label("le").and_then(parse_le) else {
                    continue;
                };
                *delta.buckets.entry(Bound(le)).or_default() += increase;
            }
            // Requests without a response yet are not in any rate Linkerd shows.
            REQUESTS | ACTUAL_REQUESTS => {}
            _ => {}
        }
    }
    routes
}

fn route_of(labels: &[(String, String)]) -> Route {
    labels
        .iter()
        .find(|(k, _)| k == "rt_route")
        .map(|(_, v)| v.clone())
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => le.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

// === aggregation ===

/// Adds up every proxy's deltas, each with the time that really passed between its two
/// scrapes, into one row per route: routes sorted by name, the default route last.
///
/// Rates are summed per proxy (`delta / elapsed`), so a proxy scraped a little late does
/// not skew the others; success rates and percentiles pool the counts.
pub(crate) fn aggregate(per_proxy: &[(BTreeMap<Route, Delta>, Duration)]) -> Vec<RouteStats> {
    let mut pooled: BTreeMap<Route, (Delta, f64, f64)> = BTreeMap::new();
    for (routes, elapsed) in per_proxy {
        let secs = elapsed.as_secs_f64();
        for (route, d) in routes {
            let (sum, rps, actual_rps) = pooled.entry(route.clone()).or_default();
            sum.success += d.success;
            sum.failure += d.failure;
            sum.actual_success += d.actual_success;
            sum.actual_failure += d.actual_failure;
            for (le, n) in &d.buckets {
                *sum.buckets.entry(*le).or_default() += n;
            }
            if secs > 0.0 {
                *rps += (d.success + d.failure) / secs;
                *actual_rps += (d.actual_success + d.actual_failure) / secs;
            }
        }
    }
    let mut rows: Vec<RouteStats> = pooled
        .into_iter()
        .map(|(route, (d, rps, actual_rps))| {
            let buckets: Vec<(f64, f64)> = d.buckets.iter().map(|(le, n)| (le.0, *n)).collect();
            RouteStats {
                route,
                success: ratio(d.success, d.failure),
                rps,
                actual_success: ratio(d.actual_success, d.actual_failure),
                actual_rps,
                p50: histogram_quantile(0.5, &buckets),
                p95: histogram_quantile(0.95, &buckets),
                p99: histogram_quantile(0.99, &buckets),
            }
        })
        .collect();
    // `None < Some` in Option's order; the default route goes last instead.
    rows.sort_by(|a, b| (a.route.is_none(), &a.route).cmp(&(b.route.is_none(), &b.route)));
    rows
}

fn ratio(success: f64, failure: f64) -> Option<f64> {
    let total = success + failure;
    (total > 0.0).then(|| success / total)
}

/// Prometheus's `histogram_quantile(q, ...)` over cumulative `(upper bound, count)`
/// buckets sorted by bound; `None` where Prometheus answers NaN (no observations, no
/// `+Inf` bucket, fewer than two buckets, `q` outside 0..=1).
pub(crate) fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || buckets.len() < 2 {
        return None;
    }
    if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
        return None;
    }
    // Counts should never fall as bounds rise; Prometheus repairs scrapes that raced
    // with an observation by carrying the maximum forward, and so does this.
    let mut counts = Vec::with_capacity(buckets.len());
    let mut max = 0.0_f64;
    for &(_, n) in buckets {
        max = max.max(n);
        counts.push(max);
    }
    let observations = *counts.last()?;
    if observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let b = counts.iter().position(|&c| c >= rank)?;
    if b == buckets.len() - 1 {
        // The quantile is beyond the last finite bound: its bound is the best answer.
        return Some(buckets[b - 1].0);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let (start, below) = if b == 0 {
        (0.0, 0.0)
    } else {
        (buckets[b - 1].0, counts[b - 1])
    };
    let end = buckets[b].0;
    let in_bucket = counts[b] - below;
    if in_bucket <= 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * ((rank - below) / in_bucket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::prom::parse;

    const WEB: &str = "web.demo.svc.cluster.local:80";

    fn snapshot(text: &str) -> BTreeMap<SeriesKey, f64> {
        select(&parse(text).expect("parses"), &Selector::new("web", "demo"))
    }

    fn responses(route: &str, success: u32, failure: u32) -> String {
        let rt = if route.is_empty() {
            String::new()
        } else {
            format!(",rt_route=\"{route}\"")
        };
        format!(
            "route_response_total{{direction=\"outbound\",dst=\"{WEB}\"{rt},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} {success}\n\
             route_response_total{{direction=\"outbound\",dst=\"{WEB}\"{rt},status_code=\"500\",classification=\"failure\",grpc_status=\"\",error=\"\"}} {failure}\n"
        )
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let inf = f64::INFINITY;
        // 10 observations: 2 in (0,1], 6 in (1,2], 2 in (2,5].
        let b = [(1.0, 2.0), (2.0, 8.0), (5.0, 10.0), (inf, 10.0)];
        // rank 5 lies 3 of 6 into (1,2].
        assert_eq!(histogram_quantile(0.5, &b), Some(1.5));
        // rank 9.5 lies 1.5 of 2 into (2,5].
        assert_eq!(histogram_quantile(0.95, &b), Some(4.25));
        assert_eq!(histogram_quantile(0.1, &b), Some(0.5));
        assert_eq!(histogram_quantile(1.0, &b), Some(5.0));
        // Beyond the last finite bound: that bound.
        let tail = [(1.0, 0.0), (2.0, 1.0), (inf, 10.0)];
        assert_eq!(histogram_quantile(0.99, &tail), Some(2.0));
        // Non-monotonic counts are repaired.
        let racy = [(1.0, 4.0), (2.0, 3.0), (inf, 4.0)];
        assert_eq!(histogram_quantile(0.5, &racy), Some(0.5));
        // NaN cases.
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (inf, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 3.0), (2.0, 3.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(inf, 3.0)]), None);
        assert_eq!(histogram_quantile(1.5, &b), None);
        assert_eq!(histogram_quantile(0.5, &[]), None);
    }

    #[test]
    fn deltas_difference_counters_and_handle_resets() {
        let before = snapshot(&format!(
            "{}{}",
            responses("GET /", 100, 10),
            responses("gone", 5, 0)
        ));
        let after = snapshot(&format!(
            "{}{}{}",
            responses("GET /", 127, 13),
            responses("", 4, 1),
            // A reset: lower than before, so all of it is new.
            responses("gone", 2, 0),
        ));
        let d = deltas(&before, &after);
        assert_eq!(d.len(), 3);
        let get = &d[&Some("GET /".to_string())];
        assert_eq!((get.success, get.failure), (27.0, 3.0));
        let default = &d[&None];
        assert_eq!((default.success, default.failure), (4.0, 1.0));
        let gone = &d[&Some("gone".to_string())];
        assert_eq!((gone.success, gone.failure), (2.0, 0.0));
    }

    #[test]
    fn selects_only_the_service_outbound() {
        let text = format!(
            "{}route_response_total{{direction=\"outbound\",dst=\"web.other.svc.cluster.local:80\",rt_route=\"x\",classification=\"success\"}} 9\n\
             route_response_total{{direction=\"outbound\",dst=\"webby.demo.svc.cluster.local:80\",rt_route=\"x\",classification=\"success\"}} 9\n\
             route_response_total{{direction=\"inbound\",dst=\"{WEB}\",rt_route=\"x\",classification=\"success\"}} 9\n\
             response_total{{direction=\"outbound\",dst=\"{WEB}\",classification=\"success\"}} 9\n\
             route_response_total{{direction=\"outbound\",dst=\"web.demo.svc.cluster.local:8080\",rt_route=\"y\",classification=\"success\"}} 1\n",
            responses("a", 1, 0)
        );
        let snap = snapshot(&text);
        let routes: Vec<Route> = deltas(&BTreeMap::new(), &snap).into_keys().collect();
        assert_eq!(routes, [Some("a".to_string()), Some("y".to_string())]);
    }

    #[test]
    fn aggregates_proxies_with_their_own_elapsed_time() {
        let d = |s: f64, f: f64, le: &[(f64, f64)]| Delta {
            success: s,
            failure: f,
            actual_success: s,
            actual_failure: f * 2.0,
            buckets: le.iter().map(|&(b, n)| (Bound(b), n)).collect(),
        };
        let inf = f64::INFINITY;
        let a: BTreeMap<Route, Delta> = [
            (
                Some("b".to_string()),
                d(27.0, 3.0, &[(10.0, 20.0), (20.0, 30.0), (inf, 30.0)]),
            ),
            (None, d(0.0, 0.0, &[])),
        ]
        .into();
        let b: BTreeMap<Route, Delta> = [
            (
                Some("b".to_string()),
                d(10.0, 0.0, &[(10.0, 0.0), (20.0, 10.0), (inf, 10.0)]),
            ),
            (Some("a".to_string()), d(1.0, 0.0, &[])),
        ]
        .into();
        let rows = aggregate(&[(a, Duration::from_secs(1)), (b, Duration::from_secs(2))]);
        let names: Vec<_> = rows.iter().map(|r| r.route.clone()).collect();
        assert_eq!(names, [Some("a".into()), Some("b".into()), None]);
        let r = &rows[1];
        assert_eq!(r.success, Some(37.0 / 40.0));
        assert_eq!(r.rps, 30.0 + 5.0);
        assert_eq!(r.actual_success, Some(37.0 / 43.0));
        assert_eq!(r.actual_rps, 33.0 + 5.0);
        // 40 observations: 20 in (0,10], 20 in (10,20]; p50 is rank 20 → 10.
        assert_eq!(r.p50, Some(10.0));
        assert_eq!(r.p95, Some(10.0 + 10.0 * (18.0 / 20.0)));
        let default = &rows[2];
        assert_eq!(
            (default.success, default.rps, default.p50),
            (None, 0.0, None)
        );
    }
}
