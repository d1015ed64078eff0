//! The retry budget: how many retries a profile's routes may make, as a share of the
//! requests they carry plus a small constant allowance.
//!
//! It keeps Linkerd's (tower's `TpsBudget`) arithmetic so that a profile written for
//! Linkerd retries as much here as there, and so that retries can never multiply the
//! load on a struggling service by more than the ratio it configured.
//!
//! # The rule
//!
//! Built from `(retry_ratio, min_retries_per_second, ttl)`:
//! - A deposit adds `deposit` tokens and a retry costs `cost` tokens, where for
//!   `0 < ratio <= 1` `deposit = 1, cost = ⌊1/ratio⌋` (0.2 → 5); for `1 < ratio <= 1000`
//!   `deposit = 1000, cost = ⌊1000/ratio⌋`; for `ratio == 0` `deposit = 0, cost = 1`.
//!   The division is done in `f32`, as tower does, so that 0.2 costs 5 and not 4; a
//!   cost is capped at 1 000 000 (ratios below 1e-6 behave as 1e-6).
//! - A constant reserve of `min_retries_per_second × ⌊ttl in seconds⌋ × cost` tokens.
//! - The window is `ttl` cut into 10 slots of `ttl / 10`. A deposit or withdrawal counts
//!   while its slot is one of the last 10, the current one included: it lapses between
//!   0.9 × ttl and ttl after it was made.
//! - [`Budget::try_withdraw`] succeeds, and records a withdrawal of `cost`, when
//!   `reserve + deposits − withdrawals` in the window is at least `cost`.
//!
//! So over any window a budget allows `ratio × deposits + min_retries_per_second × ttl`
//! retries (rounded down by the integer cost). With the defaults (0.2, 10/s, 10 s) and
//! 1000 requests: 1500 tokens at 5 a retry, 300 retries.
//!
//! # Who deposits
//!
//! The caller deposits once per *original* request on a retryable route (never for a
//! retry), and withdraws once per retry. Linkerd deposits for every response that is not
//! retried instead; counting requests is simpler for the caller (it happens before any
//! response), equals Linkerd's count whenever retries are rare, and cannot be inflated by
//! the retries themselves.
//!
//! # One difference from tower
//!
//! Tower's slot ring reuses the next slot without clearing it when exactly one slot
//! period has passed, so a deposit can linger for up to 1.1 × ttl. Here a slot is cleared
//! when time enters it, so the window is never longer than `ttl`.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};
use tokio::time::Instant;

/// How many slots the window is cut into (tower's constant).
const SLOTS: usize = 10;

/// The most a retry can cost, so that the reserve fits an `i64` for any input
/// (`u32::MAX × 60 × MAX_COST < i64::MAX`).
const MAX_COST: i64 = 1_000_000;

/// A retry budget shared by every retryable route of one profile.
///
/// Thread-safe; each call takes one short, uncontended-in-practice lock (tower's takes
/// one too) and does O(1) work, O(10) when time has moved on by several slots.
#[derive(Debug)]
pub struct Budget {
    deposit: i64,
    cost: i64,
    reserve: i64,
    /// `ttl / 10`, in nanoseconds; zero for a budget that allows nothing.
    slot_nanos: u64,
    start: Instant,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// The slot number (time since `start` / slot length) last written.
    epoch: u64,
    /// Net tokens (deposits − withdrawals) per slot, indexed by `epoch % SLOTS`.
    slots: [i64; SLOTS],
    /// The sum of `slots`, kept so that a withdrawal need not add ten numbers.
    sum: i64,
}

/// Why a budget was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBudget {
    #[error("retry ratio {0} is not between 0 and 1000")]
    Ratio(f32),
    #[error("retry budget ttl {0:?} is not between 1s and 60s")]
    Ttl(Duration),
}

// === impl Budget ===

impl Budget {
    /// The budget Linkerd applies when a profile sets none: 20% of requests plus
    /// 10 retries a second, over 10 seconds.
    pub fn default_budget() -> Self {
        Self::new(0.2, 10, Duration::from_secs(10))
    }

    /// A budget with Linkerd's arithmetic (see the module docs). An invalid one is
    /// logged and becomes [`Budget::none`]: a bad profile must stop retries, not panic
    /// or retry without limit.
    pub fn new(retry_ratio: f32, min_retries_per_second: u32, ttl: Duration) -> Self {
        Self::try_new(retry_ratio, min_retries_per_second, ttl).unwrap_or_else(|error| {
            tracing::warn!(%error, "invalid retry budget; retries are off for this profile");
            Self::none()
        })
    }

    /// Like [`Budget::new`], but says why a budget is invalid.
    pub fn try_new(
        retry_ratio: f32,
        min_retries_per_second: u32,
        ttl: Duration,
    ) -> Result<Self, InvalidBudget> {
        if !(0.0..=1000.0).contains(&retry_ratio) {
            // NaN fails `contains` too.
            return Err(InvalidBudget::Ratio(retry_ratio));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(InvalidBudget::Ttl(ttl));
        }
        let (deposit, cost) = if retry_ratio == 0.0 {
            (0, 1)
        } else if retry_ratio <= 1.0 {
            // A ratio so small that 1/ratio is huge (or infinite) is held at
            // `MAX_COST`: retries from deposits are then practically impossible either
            // way, and the reserve below cannot overflow.
            (1, ((1.0 / retry_ratio) as i64).min(MAX_COST))
        } else {
            (1000, (1000.0 / retry_ratio) as i64)
        };
        let reserve = i64::from(min_retries_per_second)
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(cost);
        Ok(Self {
            deposit,
            cost: cost.max(1),
            reserve,
            slot_nanos: (ttl.as_nanos() / SLOTS as u128) as u64,
            start: Instant::now(),
            state: Mutex::new(Window::default()),
        })
    }

    /// A budget that never allows a retry.
    pub fn none() -> Self {
        Self {
            deposit: 0,
            cost: 1,
            reserve: 0,
            slot_nanos: 0,
            start: Instant::now(),
            state: Mutex::new(Window::default()),
        }
    }

    /// Whether this budget can ever allow a retry.
    pub fn allows_retries(&self) -> bool {
        self.slot_nanos != 0 && (self.reserve >= self.cost || self.deposit > 0)
    }

    /// Records a request that is not a retry, now.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes the tokens for one retry now, if the budget has them.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now())
    }

    /// [`Budget::deposit`] at a time the caller has already read.
    pub fn deposit_at(&self, now: Instant) {
        if self.deposit == 0 || self.slot_nanos == 0 {
            return;
        }
        let epoch = self.epoch(now);
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        w.advance(epoch);
        w.add(self.deposit);
    }

    /// [`Budget::try_withdraw`] at a time the caller has already read.
    pub fn try_withdraw_at(&self, now: Instant) -> bool {
        if self.slot_nanos == 0 {
            return false;
        }
        let epoch = self.epoch(now);
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        w.advance(epoch);
        if self.reserve.saturating_add(w.sum) < self.cost {
            return false;
        }
        w.add(-self.cost);
        true
    }

    /// Tokens one retry costs.
    pub fn cost(&self) -> i64 {
        self.cost
    }

    /// Tokens one deposit adds.
    pub fn deposit_amount(&self) -> i64 {
        self.deposit
    }

    /// The constant reserve, in tokens.
    pub fn reserve(&self) -> i64 {
        self.reserve
    }

    fn epoch(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.start).as_nanos();
        (nanos / u128::from(self.slot_nanos)) as u64
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::default_budget()
    }
}

// === impl Window ===

impl Window {
    /// Moves the window forward to `epoch`, clearing every slot time has entered since
    /// the last call. A clock that seems to go backwards leaves the window where it is.
    fn advance(&mut self, epoch: u64) {
        if epoch <= self.epoch {
            return;
        }
        let steps = (epoch - self.epoch).min(SLOTS as u64);
        for i in 1..=steps {
            let idx = ((self.epoch + i) % SLOTS as u64) as usize;
            self.sum = self.sum.saturating_sub(self.slots[idx]);
            self.slots[idx] = 0;
        }
        self.epoch = epoch;
    }

    fn add(&mut self, tokens: i64) {
        let idx = (self.epoch % SLOTS as u64) as usize;
        // Saturating: an absurd request rate must not wrap into a huge budget. The slot
        // and the sum saturate together only in the same absurd case.
        let before = self.slots[idx];
        self.slots[idx] = before.saturating_add(tokens);
        self.sum = self.sum.saturating_add(self.slots[idx] - before);
    }
}
