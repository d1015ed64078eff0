//! `series`: a stat answer over time, for the dashboard's charts: one point per step
//! over a span ending now, each point exactly the [`Stats::stat`] answer with a window
//! of one step ending then. So a chart drawn from the series, then extended with live
//! stat answers of the same window, is one line made of one kind of number.
//!
//! What the store keeps decides what a point can say: every scrape of the last
//! [`super::Limits::full_resolution`], one per coarse step before that. A point whose
//! step holds no scrape has no span to read (its rows' `seconds` is 0, as a stat answer
//! over a window with no recent scrape), and a chart leaves it out.

use super::{InvalidQuery, Overflow, StatAnswer, StatQuery, StatRow, Stats};
use serde::Serialize;
use std::time::Duration;

/// At most this many points in one answer (an hour at 10 s; the retention is less).
pub const MAX_POINTS: u64 = 360;

/// `series`: the stat query whose window is the step, over how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Each point's query; its `window` is the step between points.
    pub stat: StatQuery,
    /// How far back the first point ends: the points end at `now - k × step` for
    /// every `k` with `k × step < span`.
    pub span: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesAnswer {
    pub step_seconds: f64,
    pub span_seconds: f64,
    /// Oldest first, the last one ending now.
    pub points: Vec<SeriesPoint>,
    pub overflow: Overflow,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// How long before the answer this point's window ends.
    pub seconds_ago: f64,
    pub rows: Vec<StatRow>,
}

impl Stats {
    pub fn series(&self, q: &SeriesQuery, now: Duration) -> Result<SeriesAnswer, InvalidQuery> {
        let step = q.stat.window;
        if step.is_zero() {
            return Err(InvalidQuery::WindowZero);
        }
        let kept = self.limits().retention;
        if q.span > kept {
            return Err(InvalidQuery::WindowTooLong {
                asked: q.span,
                kept,
            });
        }
        if q.span < step {
            return Err(InvalidQuery::SpanShorterThanStep { span: q.span, step });
        }
        let n = (q.span.as_nanos() / step.as_nanos()) as u64;
        if n > MAX_POINTS {
            return Err(InvalidQuery::TooManyPoints {
                points: n,
                max: MAX_POINTS,
            });
        }
        let mut points = Vec::with_capacity(n as usize);
        for k in (0..n).rev() {
            let ago = step * u32::try_from(k).unwrap_or(u32::MAX);
            // Before the store's origin there is nothing to read.
            let Some(end) = now.checked_sub(ago) else {
                continue;
            };
            let StatAnswer { rows, .. } = self.stat(&q.stat, end)?;
            points.push(SeriesPoint {
                seconds_ago: ago.as_secs_f64(),
                rows,
            });
        }
        Ok(SeriesAnswer {
            step_seconds: step.as_secs_f64(),
            span_seconds: q.span.as_secs_f64(),
            points,
            overflow: self.overflow(),
        })
    }
}
