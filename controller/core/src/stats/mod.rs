//! The metrics API's core: what the controller keeps of its proxies' scrapes, and the
//! answers it computes from them (stat summaries, edges, routes, and stat series over
//! time), with no IO.
//!
//! ```
//! use mesh_core::stats::{Limits, PodMeta, Selector, StatQuery, Stats};
//! use std::time::Duration;
//!
//! let mut stats = Stats::new(Limits::default());
//! let pod = PodMeta {
//!     namespace: "demo".into(),
//!     name: "web-0".into(),
//!     owner: Some(("deployment".into(), "web".into())),
//!     identity: None,
//!     meshed: true,
//! };
//! stats.set_pods([pod.clone()]);
//! let page = |n| format!("response_total{{direction=\"inbound\",classification=\"success\"}} {n}\n");
//! let parser = stats.parser();
//! stats.record(&pod.key(), Duration::from_secs(0), parser.parse(&page(5)).unwrap()).unwrap();
//! stats.record(&pod.key(), Duration::from_secs(10), parser.parse(&page(25)).unwrap()).unwrap();
//!
//! let query = StatQuery::new(Selector::parse("deploy", Some("demo")).unwrap(), Duration::from_secs(60));
//! let answer = stats.stat(&query, Duration::from_secs(10)).unwrap();
//! assert_eq!(answer.rows[0].traffic.responses.success, 20);
//! assert_eq!(answer.rows[0].traffic.rps, 2.0);
//! ```
//!
//! The controller finds the meshed pods (from the index), tells the store which exist
//! ([`Stats::set_pods`]: a pod that is gone is dropped with its window), scrapes each
//! one's `/metrics`, reduces the page with [`Stats::parser`] (outside any lock: it is
//! the costly part) and [`Stats::record`]s it with the time it was taken. Queries read
//! the windows; nothing here reads a clock, so tests give the times.
//!
//! Memory is bounded by [`Limits`], whatever pods come and go and whatever labels the
//! proxies export: what a limit leaves out is counted ([`Overflow`], in every answer),
//! never silently dropped.

mod export;
mod quantile;
mod query;
mod resource;
mod scrape;
mod series;
#[cfg(test)]
mod tests;
mod window;

pub use query::{
    EdgeRow, EdgesAnswer, EdgesQuery, InvalidQuery, Latency, NamespaceAnswer, NamespaceQuery,
    PodCount, Responses, RouteRow, RoutesAnswer, RoutesQuery, StatAnswer, StatQuery, StatRow, Tcp,
    Traffic,
};
pub use resource::{InvalidSelector, PodMeta, Resource, ResourceKind, Selector};
pub use scrape::{
    Class, Destination, InvalidScrape, Le, Measure, RouteKey, Sample, Scrape, ScrapeParser, Side,
    WORKLOAD_KINDS,
};
pub use series::{SeriesAnswer, SeriesPoint, SeriesQuery, MAX_POINTS};
pub use window::OutOfOrder;

use crate::index::ObjKey;
use serde::Serialize;
use std::{collections::HashMap, time::Duration};
use window::{Budget, PodWindow, WindowLimits};

/// What the store keeps at most, and for how long.
///
/// The defaults are sized for the target of 500 proxies scraped every 10 s in under
/// 128 MB, with room: a proxy's page reduces to about 32 series per destination pod it
/// talks to (26 latency buckets, two classes, four TCP), so some 250 series for a pod
/// with a handful of destination pods, 125,000 for 500 such pods, 23 MB of points at
/// 23 points of 8 bytes. The caps stop what is not typical: a pod minting series
/// (many authorities, routes), or a cluster far past the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest window a query may ask for. Linkerd's dashboard offers 10s, 1m, 10m
    /// and 1h; an hour of 10 s scrapes would be six times the memory of ten minutes
    /// for a window that an existing Prometheus answers better.
    pub retention: Duration,
    /// Every scrape of this last span is kept, so short windows read exact scrapes.
    pub full_resolution: Duration,
    /// Before the full-resolution span, one scrape per this step is kept: a window
    /// reaching back there starts within a step of its start (the answer says the span
    /// it covers), for a third of the memory of every scrape.
    pub coarse_step: Duration,
    /// Scrapes kept per pod, a backstop: with 10 s scrapes, 23 are needed (12 in the
    /// full-resolution span, one a minute for the rest, the one the longest window
    /// starts from); [`Limits::for_interval`] sizes it for another interval.
    pub max_points: usize,
    /// Pods whose scrapes are kept (4× the target); more meshed pods are counted in
    /// [`Overflow::pods`] and not scraped.
    pub max_pods: usize,
    /// Series one pod may hold (five times the typical pod), so one pod minting
    /// labels cannot take the budget of the others.
    pub max_series_per_pod: usize,
    /// Series all pods may hold together: at 23 points of 8 bytes, about 55 MB.
    pub max_series: usize,
    /// Raw series one pod's reset detection may follow (a raw series is a reduced
    /// one per endpoint and status code), and all pods together: about 40 bytes each.
    pub max_raw_per_pod: usize,
    pub max_raw: usize,
}

/// What the limits left out, as of each pod's last scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Overflow {
    /// Meshed pods not scraped because [`Limits::max_pods`] were.
    pub pods: usize,
    /// Samples of the pods' last scrapes that no series could take.
    pub samples: usize,
}

/// A scrape that was not recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("pod {0} is not one whose scrapes are kept")]
    NotTracked(ObjKey),
    #[error(transparent)]
    OutOfOrder(#[from] OutOfOrder),
}

/// The store: every pod the controller knows, and a window for each meshed one.
#[derive(Debug)]
pub struct Stats {
    limits: Limits,
    pods: HashMap<ObjKey, Pod>,
    overflow_pods: usize,
    budget: Budget,
    parser: ScrapeParser,
}

#[derive(Debug)]
struct Pod {
    meta: PodMeta,
    /// `None` for a pod that is not meshed, or over [`Limits::max_pods`].
    window: Option<PodWindow>,
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(600),
            full_resolution: Duration::from_secs(120),
            coarse_step: Duration::from_secs(60),
            max_points: 23,
            max_pods: 2_000,
            max_series_per_pod: 1_000,
            max_series: 300_000,
            max_raw_per_pod: 5_000,
            max_raw: 500_000,
        }
    }
}

impl Limits {
    /// The default limits, with as many points as scrapes every `interval` need to
    /// cover the retention: every scrape of the full-resolution span, one per coarse
    /// step before it, and the one the longest window starts from (131 at the
    /// controller's shortest interval, 1 s).
    pub fn for_interval(interval: Duration) -> Self {
        let default = Self::default();
        let fine = default.full_resolution.as_millis() / interval.as_millis().max(1);
        let coarse = default
            .retention
            .saturating_sub(default.full_resolution)
            .as_millis()
            / default.coarse_step.as_millis().max(1);
        Self {
            max_points: usize::try_from(fine + coarse + 3).unwrap_or(usize::MAX),
            ..default
        }
    }

    fn window(&self) -> WindowLimits {
        WindowLimits {
            retention: self.retention,
            full_resolution: self.full_resolution,
            coarse_step: self.coarse_step,
            max_points: self.max_points,
            max_series: self.max_series_per_pod,
            max_raw: self.max_raw_per_pod,
        }
    }
}

// === impl PodMeta ===

impl PodMeta {
    /// What the store needs of one of the index's pods: its identity is the one the
    /// identity service signs for its service account, when it is meshed.
    pub fn of(pod: &crate::index::Pod, trust_domain: &str) -> Self {
        let identity = pod.meshed.then(|| {
            crate::index::Identity::for_service_account(
                &pod.key.namespace,
                &pod.service_account,
                trust_domain,
            )
            .name
        });
        Self {
            namespace: pod.key.namespace.clone(),
            name: pod.key.name.clone(),
            owner: pod.owner.clone(),
            identity,
            meshed: pod.meshed,
        }
    }

    pub fn key(&self) -> ObjKey {
        ObjKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

// === impl Stats ===

impl Stats {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pods: HashMap::new(),
            overflow_pods: 0,
            budget: Budget {
                series: limits.max_series,
                raw: limits.max_raw,
            },
            parser: ScrapeParser::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The parser whose scrapes [`Stats::record`] takes (its label hashing is this
    /// store's).
    pub fn parser(&self) -> ScrapeParser {
        self.parser.clone()
    }

    /// Replaces the set of pods: pods not in `pods` are dropped with their windows;
    /// a pod that stays keeps its window while it stays meshed. Meshed pods past
    /// [`Limits::max_pods`] are counted, not scraped; the pods already kept are kept
    /// first, so a window is not lost to a newcomer.
    pub fn set_pods(&mut self, pods: impl IntoIterator<Item = PodMeta>) {
        let mut old = std::mem::take(&mut self.pods);
        let mut fresh = Vec::new();
        for meta in pods {
            let key = meta.key();
            let window = match old.remove(&key).and_then(|p| p.window) {
                Some(w) if meta.meshed => Some(w),
                Some(mut w) => {
                    w.clear(&mut self.budget);
                    None
                }
                None => {
                    if meta.meshed {
                        fresh.push(key.clone());
                    }
                    None
                }
            };
            self.pods.insert(key, Pod { meta, window });
        }
        for (_, pod) in old {
            if let Some(mut w) = pod.window {
                w.clear(&mut self.budget);
            }
        }
        let mut kept = self.pods.values().filter(|p| p.window.is_some()).count();
        self.overflow_pods = 0;
        // In a stable order, so which pods are left out does not change per call.
        fresh.sort();
        for key in fresh {
            let Some(pod) = self.pods.get_mut(&key) else {
                continue;
            };
            if kept < self.limits.max_pods {
                pod.window = Some(PodWindow::default());
                kept += 1;
            } else {
                self.overflow_pods += 1;
            }
        }
    }

    /// The pods whose scrapes are kept: the ones to scrape.
    pub fn tracked(&self) -> impl Iterator<Item = &PodMeta> {
        self.pods
            .values()
            .filter(|p| p.window.is_some())
            .map(|p| &p.meta)
    }

    /// Records `pod`'s scrape taken at `at` (time since an origin the caller keeps).
    pub fn record(
        &mut self,
        pod: &ObjKey,
        at: Duration,
        scrape: Scrape,
    ) -> Result<(), RecordError> {
        let limits = self.limits.window();
        let window = self
            .pods
            .get_mut(pod)
            .and_then(|p| p.window.as_mut())
            .ok_or_else(|| RecordError::NotTracked(pod.clone()))?;
        window.record(at, scrape, &limits, &mut self.budget)?;
        Ok(())
    }

    /// What the limits leave out now.
    pub fn overflow(&self) -> Overflow {
        Overflow {
            pods: self.overflow_pods,
            samples: self
                .pods
                .values()
                .filter_map(|p| p.window.as_ref())
                .map(PodWindow::dropped)
                .sum(),
        }
    }

    fn pods(&self) -> impl Iterator<Item = (&PodMeta, Option<&PodWindow>)> {
        self.pods.values().map(|p| (&p.meta, p.window.as_ref()))
    }
}
