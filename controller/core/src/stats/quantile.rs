//! Quantiles from a histogram's cumulative buckets, as Prometheus'
//! `histogram_quantile` computes them: find the bucket the rank falls in and
//! interpolate linearly inside it, so an answer is exact to within its bucket.

/// The `q`-quantile (0 ≤ q ≤ 1) of cumulative `buckets` (upper bound, count), sorted by
/// bound with `+Inf` last. `None` when there is nothing to rank: no `+Inf` bucket, no
/// observations, or `q` outside [0, 1].
///
/// As in Prometheus: a rank in the `+Inf` bucket answers the highest finite bound; the
/// first bucket starts at 0 (latencies are not negative); counts that go down from
/// one bucket to the next (a scrape torn between updates) are read as flat.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let &(last_bound, total) = buckets.last()?;
    if last_bound != f64::INFINITY || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = 0.0;
    let mut lower = 0.0;
    for (i, &(bound, count)) in buckets.iter().enumerate() {
        let count = count.max(below);
        if count >= rank && count > 0.0 {
            if bound == f64::INFINITY {
                // The highest finite bound, or nothing to say if there is none.
                return (i > 0).then_some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(lower + (bound - lower) * ((rank - below) / in_bucket));
        }
        below = count;
        lower = bound;
    }
    None
}
