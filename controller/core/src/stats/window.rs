//! One pod's bounded window of scrapes: its reduced series, and their values at each
//! scrape the window still holds.
//!
//! A counter's stored value is its *reset-corrected total since the window began*: at
//! each scrape, every raw series adds its increase since the previous scrape (its
//! value minus the last one, or its whole value when it went down, which is a proxy
//! restart, as Prometheus' `increase()` counts it; or when it is new since the last
//! scrape, since the proxy creates a series at its first use). So the increase over any
//! span of the window is one subtraction, and the sum of raw series into a reduced
//! one never hides a reset. The first scrape only sets the baseline.
//!
//! What a window costs is bounded: every scrape of the last `full_resolution`, one per
//! `coarse_step` before that, at most `max_points` in all, none older than the
//! retention (but the one the longest window starts from), and series taken from the
//! store's budgets ([`Budget`]). A series that nothing feeds any more and that has not
//! changed over the whole window is dropped: it cannot change any answer.

use super::scrape::{Measure, Scrape, Side};
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

/// What the store still has to give out, shared by every pod's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Reduced series (each costs 8 bytes per point kept).
    pub(crate) series: usize,
    /// Raw series followed for resets.
    pub(crate) raw: usize,
}

/// The per-window limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowLimits {
    pub(crate) retention: Duration,
    pub(crate) full_resolution: Duration,
    pub(crate) coarse_step: Duration,
    pub(crate) max_points: usize,
    pub(crate) max_series: usize,
    pub(crate) max_raw: usize,
}

/// A reduced series: whose traffic, and what of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    pub(crate) side: Arc<Side>,
    pub(crate) measure: Measure,
}

/// Why a scrape was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutOfOrder {
    #[error("a scrape taken at {at:?} is not newer than the last one, at {last:?}")]
    NotNewer { at: Duration, last: Duration },
}

#[derive(Debug, Default)]
pub(crate) struct PodWindow {
    keys: Vec<SeriesKey>,
    index: HashMap<SeriesKey, u32>,
    /// The sides of `keys`, interned: a destination's strings are kept once for all
    /// its measures.
    sides: HashSet<Arc<Side>>,
    /// Raw series (by label-set hash) → their reduced series and last value.
    raw: HashMap<u64, Raw>,
    /// Each series' value now: a counter's corrected total, a gauge's last sum.
    current: Vec<f64>,
    points: VecDeque<Point>,
    /// Samples of the last scrape that no series could take (the caps).
    dropped: usize,
}

#[derive(Clone, Copy, Debug)]
struct Raw {
    series: u32,
    last: f64,
}

/// The values of every series at one scrape; a series created later than the point
/// is missing from its end, and reads as 0.
#[derive(Debug)]
struct Point {
    at: Duration,
    values: Box<[f64]>,
}

/// The two scrapes a window's answers are read between.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span<'a> {
    first: &'a Point,
    last: &'a Point,
}

// === impl PodWindow ===

impl PodWindow {
    /// Records a scrape taken at `at` (time since the store's origin).
    pub(crate) fn record(
        &mut self,
        at: Duration,
        scrape: Scrape,
        limits: &WindowLimits,
        budget: &mut Budget,
    ) -> Result<(), OutOfOrder> {
        let baseline = match self.points.back() {
            Some(last) if at <= last.at => {
                return Err(OutOfOrder::NotNewer { at, last: last.at });
            }
            // Nothing in the window to count from: start again from this scrape.
            Some(last) => at - last.at > limits.retention,
            None => true,
        };
        if baseline {
            self.clear(budget);
        }
        for (key, value) in self.keys.iter().zip(self.current.iter_mut()) {
            if key.measure.is_gauge() {
                *value = 0.0;
            }
        }
        let previous = std::mem::take(&mut self.raw);
        budget.raw += previous.len();
        // A series new since a scrape the caps cut may be one they left out, whose
        // value is not all new: it starts from a baseline instead.
        let cut = std::mem::take(&mut self.dropped) > 0;
        for sample in scrape.samples {
            let Some(series) = self.series(sample.side, sample.measure, limits, budget) else {
                self.dropped += 1;
                continue;
            };
            let i = series as usize;
            if sample.measure.is_gauge() {
                self.current[i] += sample.value;
                continue;
            }
            if self.raw.contains_key(&sample.raw) {
                // The same series twice in one page: only the first counts.
                continue;
            }
            if self.raw.len() >= limits.max_raw || budget.raw == 0 {
                self.dropped += 1;
                continue;
            }
            budget.raw -= 1;
            let increase = match previous.get(&sample.raw) {
                _ if baseline => 0.0,
                Some(p) if sample.value >= p.last => sample.value - p.last,
                // Went down: the proxy restarted and counted this much since.
                Some(_) => sample.value,
                None if cut => 0.0,
                // New since the last scrape: all of it is new.
                None => sample.value,
            };
            self.current[i] += increase;
            self.raw.insert(
                sample.raw,
                Raw {
                    series,
                    last: sample.value,
                },
            );
        }
        self.points.push_back(Point {
            at,
            values: self.current.clone().into_boxed_slice(),
        });
        // Past the full-resolution span, keep a point only a coarse step after the last
        // one kept (the oldest is kept: the retention rule below decides for it).
        let fine_start = at.saturating_sub(limits.full_resolution);
        let mut kept: Option<Duration> = None;
        self.points.retain(|p| {
            let keep = p.at >= fine_start || kept.is_none_or(|k| p.at >= k + limits.coarse_step);
            if keep {
                kept = Some(p.at);
            }
            keep
        });
        // Keep the newest point at or before the retention's start: the longest window
        // starts from it.
        while self.points.len() > limits.max_points.max(1)
            || (self.points.len() >= 2 && self.points[1].at + limits.retention <= at)
        {
            self.points.pop_front();
        }
        self.compact(budget);
        Ok(())
    }

    /// Gives everything back to the budget (the pod went away, or is started again).
    pub(crate) fn clear(&mut self, budget: &mut Budget) {
        budget.series += self.keys.len();
        budget.raw += self.raw.len();
        *self = Self::default();
    }

    /// Scrapes held.
    #[cfg(test)]
    pub(crate) fn points(&self) -> usize {
        self.points.len()
    }

    /// Samples of the last scrape that the caps left out.
    pub(crate) fn dropped(&self) -> usize {
        self.dropped
    }

    /// The reduced series, by index into a span's values.
    pub(crate) fn keys(&self) -> &[SeriesKey] {
        &self.keys
    }

    /// Each series' value as of the last scrape, in the order of [`PodWindow::keys`].
    pub(crate) fn current(&self) -> &[f64] {
        &self.current
    }

    /// The scrapes a window of `window` ending `now` is read between: the newest up to
    /// `now`, if it is within the window, and the newest at or before the window's
    /// start (else the oldest: the window is not yet covered).
    pub(crate) fn span(&self, now: Duration, window: Duration) -> Option<Span<'_>> {
        let start = now.saturating_sub(window);
        let last = self
            .points
            .iter()
            .rev()
            .find(|p| p.at <= now)
            .filter(|p| p.at >= start)?;
        let first = self
            .points
            .iter()
            .rev()
            .find(|p| p.at <= start)
            .or(self.points.front())?;
        Some(Span { first, last })
    }

    /// The index of `(side, measure)`, made if the caps allow.
    fn series(
        &mut self,
        side: Side,
        measure: Measure,
        limits: &WindowLimits,
        budget: &mut Budget,
    ) -> Option<u32> {
        let side = match self.sides.get(&side) {
            Some(s) => s.clone(),
            None => Arc::new(side),
        };
        let key = SeriesKey { side, measure };
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        if self.keys.len() >= limits.max_series || budget.series == 0 {
            return None;
        }
        let i = u32::try_from(self.keys.len()).ok()?;
        budget.series -= 1;
        self.sides.insert(key.side.clone());
        self.index.insert(key.clone(), i);
        self.keys.push(key);
        self.current.push(0.0);
        Some(i)
    }

    /// Drops the series that nothing feeds and whose value is the same at every point
    /// (and now): no window's answer can read anything but zero from them.
    fn compact(&mut self, budget: &mut Budget) {
        let mut fed = vec![false; self.keys.len()];
        for raw in self.raw.values() {
            fed[raw.series as usize] = true;
        }
        let value = |p: &Point, i: usize| p.values.get(i).copied().unwrap_or(0.0);
        let dead: Vec<bool> = (0..self.keys.len())
            .map(|i| {
                let now = self.current[i];
                let idle = if self.keys[i].measure.is_gauge() {
                    now == 0.0
                } else {
                    !fed[i]
                };
                idle && self.points.iter().all(|p| value(p, i) == now)
            })
            .collect();
        if !dead.contains(&true) {
            return;
        }
        let mut renumber = vec![u32::MAX; self.keys.len()];
        let mut next = 0u32;
        for (i, &d) in dead.iter().enumerate() {
            if !d {
                renumber[i] = next;
                next += 1;
            }
        }
        let keep = |i: usize| !dead[i];
        let keys = std::mem::take(&mut self.keys);
        budget.series += keys.len() - next as usize;
        self.keys = keys
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| keep(i))
            .map(|(_, k)| k)
            .collect();
        self.index = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect();
        self.sides = self.keys.iter().map(|k| k.side.clone()).collect();
        let squeeze = |values: &[f64]| -> Box<[f64]> {
            values
                .iter()
                .enumerate()
                .filter(|&(i, _)| keep(i))
                .map(|(_, v)| *v)
                .collect()
        };
        self.current = squeeze(&self.current).into_vec();
        for p in &mut self.points {
            p.values = squeeze(&p.values);
        }
        for raw in self.raw.values_mut() {
            raw.series = renumber[raw.series as usize];
        }
    }
}

// === impl Span ===

impl Span<'_> {
    /// The seconds between the two scrapes (0 when the window holds one).
    pub(crate) fn seconds(&self) -> f64 {
        (self.last.at.saturating_sub(self.first.at)).as_secs_f64()
    }

    /// Series `i`'s increase over the span (a counter).
    pub(crate) fn increase(&self, i: usize) -> f64 {
        let at = |p: &Point| p.values.get(i).copied().unwrap_or(0.0);
        (at(self.last) - at(self.first)).max(0.0)
    }

    /// Series `i`'s value at the span's end (a gauge).
    pub(crate) fn last(&self, i: usize) -> f64 {
        self.last.values.get(i).copied().unwrap_or(0.0)
    }
}
