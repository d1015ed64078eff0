//! The watches' retry delays: exponential with jitter (as kube's default: 0.8 s
//! doubling to 30 s), reset by any answer of the API server, and none at all for a
//! `410 Gone`, which is an answer too.

use rand::Rng as _;
use std::time::Duration;

/// The first delay after an answer.
pub(super) const MIN: Duration = Duration::from_millis(800);
/// The longest delay, reached after six failures in a row.
pub(super) const MAX: Duration = Duration::from_secs(30);

/// Where a watch's retries stand.
#[derive(Debug)]
pub(super) struct Backoff {
    /// The delay before jitter of the next failure.
    next: Duration,
    /// A 410 came and nothing else has since: a second one is not re-listed at once
    /// (an API server compacting faster than a list pages must not be hammered).
    gone: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: MIN,
            gone: false,
        }
    }
}

impl Backoff {
    /// The API server answered: the next failure waits the shortest time again.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }

    /// The delay before retrying a failure: between half and all of the current step,
    /// which then doubles up to [`MAX`].
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// A 410 Gone: the API server answered, so the backoff starts over, and the
    /// re-list goes at once (`None`); unless the last failure was a 410 too with no
    /// answer between, which waits the shortest step.
    pub(super) fn gone(&mut self) -> Option<Duration> {
        let again = self.gone;
        self.reset();
        self.gone = true;
        again.then(|| self.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_up_to_the_maximum_with_jitter() {
        let mut b = Backoff::default();
        let mut step = MIN;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} within [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(MAX);
        }
        assert_eq!(b.next, MAX);
    }

    #[test]
    fn a_410_after_an_outage_relists_at_once_and_starts_over() {
        let mut b = Backoff::default();
        for _ in 0..6 {
            b.next_delay();
        }
        assert_eq!(b.next, MAX, "an outage built the backoff up");
        assert_eq!(b.gone(), None, "the 410 re-lists at once");
        assert_eq!(b.next, MIN);
        // A failure of that re-list waits the shortest step, not the outage's.
        assert!(b.next_delay() <= MIN);
    }

    #[test]
    fn a_second_410_without_an_answer_between_waits_the_shortest_step() {
        let mut b = Backoff::default();
        assert_eq!(b.gone(), None);
        let d = b.gone().expect("the second 410 in a row waits");
        assert!(d <= MIN);
        b.reset();
        assert_eq!(b.gone(), None, "after an answer, at once again");
    }
}
