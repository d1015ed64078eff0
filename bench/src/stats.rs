//! Latency histograms and their percentiles, as both benchmarks record and report them.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A histogram of values from 1 to `highest`, to 3 significant digits.
pub fn histogram(highest: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, highest, 3).expect("1 < highest, 3 significant digits")
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Of a histogram of nanoseconds.
    pub fn of_ns(h: &Histogram<u64>) -> Self {
        Self::scaled(h, 1e-3)
    }

    /// Of a histogram of microseconds.
    pub fn of_us(h: &Histogram<u64>) -> Self {
        Self::scaled(h, 1.0)
    }

    fn scaled(h: &Histogram<u64>, to_us: f64) -> Self {
        let q = |q: f64| h.value_at_quantile(q) as f64 * to_us;
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 * to_us,
            mean: h.mean() * to_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut ns = histogram(60_000_000_000);
        let mut us = histogram(120_000_000);
        for v in 1..=1000u64 {
            ns.record(v * 1000).unwrap();
            us.record(v).unwrap();
        }
        let (a, b) = (Percentiles::of_ns(&ns), Percentiles::of_us(&us));
        for (x, y) in [
            (a.p50, b.p50),
            (a.p99, b.p99),
            (a.max, b.max),
            (a.mean, b.mean),
        ] {
            assert!((x - y).abs() <= y * 1e-3, "{x} vs {y}");
        }
        assert!((b.p50 - 500.0).abs() <= 1.0, "{}", b.p50);
        assert_eq!(b.max, 1000.0);
    }
}
