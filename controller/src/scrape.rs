//! The metrics API's scraper: every interval, the meshed pods the index knows are told
//! to the store ([`mesh_core::stats::Stats`]) and each one's proxy `/metrics` is
//! fetched, reduced and recorded, so the API answers from the controller's own memory
//! and no Prometheus is needed.
//!
//! A round fetches at most [`CONCURRENCY`] pages at once, each within the scrape
//! timeout and [`MAX_PAGE_BYTES`]; a proxy that is slow, down or answers something
//! that is not metrics costs its own scrape and nothing else (logged at `debug`,
//! counted in `metrics_api_scrapes_total{result="failed"}` on the admin server, which
//! the store renders as a [`Family`]). Pages are reduced outside the store's lock,
//! which is held only to record, and by the API only to answer.

use crate::metrics::{header, Family};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use mesh_core::{
    index::{Index, ObjKey},
    stats::{Limits, PodMeta, Stats},
};
use std::{
    collections::HashMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};
use tokio::{net::TcpStream, time::Instant};
use tokio_util::sync::CancellationToken;

/// Pages fetched at once: enough for 500 proxies in well under a second on loopback
/// or a cluster network, few enough that a round does not open a socket per pod at
/// once.
pub const CONCURRENCY: usize = 32;

/// The largest page read. A proxy's page is a few hundred kilobytes at most (its
/// series are capped); more is not a proxy's page, and is not read into memory.
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// How the scraper runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeConfig {
    /// How often every proxy is scraped (`--metrics-scrape-interval`).
    pub interval: Duration,
    /// How long one scrape may take (`--metrics-scrape-timeout`).
    pub timeout: Duration,
}

/// The store and the clock its times are read from, shared by the scraper and the API.
#[derive(Debug)]
pub struct Store {
    stats: Mutex<Stats>,
    origin: Instant,
    recorded: AtomicU64,
    failures: AtomicU64,
    /// The last round's outcome for each proxy it scraped (`namespace/pod`, and why it
    /// failed); `None` before the first round.
    last_round: Mutex<Option<Round>>,
}

/// A round's outcome per proxy: `namespace/pod`, and why its scrape failed.
pub type Round = Vec<(String, Option<String>)>;

/// Why one scrape failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScrapeFailed {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(hyper::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body: {0}")]
    Body(String),
    #[error("not UTF-8")]
    Utf8,
    #[error("timed out")]
    Timeout,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

// === impl Store ===

impl Store {
    pub fn new(limits: Limits) -> Self {
        Self {
            stats: Mutex::new(Stats::new(limits)),
            origin: Instant::now(),
            recorded: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_round: Mutex::new(None),
        }
    }

    /// The store's time: since it was made.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The store, locked (a panic elsewhere while holding it leaves nothing half
    /// done that matters here: the next scrape records over it).
    pub fn lock(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Scrapes recorded since start.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Relaxed)
    }

    /// Scrapes that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// The last round's outcome per proxy (`namespace/pod`, and why its scrape failed),
    /// sorted; `None` before the first round.
    pub fn last_round(&self) -> Option<Round> {
        self.last_round
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Family for Store {
    /// Appends the scraper's outcomes and what the store's limits leave out.
    fn render(&self, out: &mut String) {
        let (pods, overflow) = {
            let stats = self.lock();
            (stats.tracked().count(), stats.overflow())
        };
        header(
            out,
            "metrics_api_scrapes_total",
            "counter",
            "Scrapes of proxies' /metrics by the metrics API, by outcome.",
        );
        let _ = writeln!(
            out,
            "metrics_api_scrapes_total{{result=\"ok\"}} {}",
            self.recorded()
        );
        let _ = writeln!(
            out,
            "metrics_api_scrapes_total{{result=\"failed\"}} {}",
            self.failures()
        );
        header(
            out,
            "metrics_api_pods",
            "gauge",
            "Meshed pods the metrics API scrapes.",
        );
        let _ = writeln!(out, "metrics_api_pods {pods}");
        header(
            out,
            "metrics_api_overflow_pods",
            "gauge",
            "Meshed pods not scraped: over the metrics API's limit.",
        );
        let _ = writeln!(out, "metrics_api_overflow_pods {}", overflow.pods);
        header(
            out,
            "metrics_api_overflow_samples",
            "gauge",
            "Samples of the last scrapes over the metrics API's series limits.",
        );
        let _ = writeln!(out, "metrics_api_overflow_samples {}", overflow.samples);
    }
}

/// Scrapes every interval until `shutdown`.
pub async fn run(
    index: Index,
    store: std::sync::Arc<Store>,
    config: ScrapeConfig,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.interval);
    // A round that ran long is not followed by a burst of rounds.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = round(&index, &store, config.timeout) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One round: the pods now, then a scrape of each tracked one.
async fn round(index: &Index, store: &Store, timeout: Duration) {
    // Before the first full sync the index has no pods yet, which would read as every
    // pod gone and drop their windows.
    if !index.is_ready() {
        return;
    }
    let trust_domain = index.trust_domain().to_string();
    let pods = index.pods();
    let (targets, parser) = {
        let mut stats = store.lock();
        stats.set_pods(
            pods.iter()
                .filter(|p| p.running)
                .map(|p| PodMeta::of(p, &trust_domain)),
        );
        let admin: HashMap<&ObjKey, SocketAddr> = pods
            .iter()
            .filter_map(|p| Some((&p.key, p.admin_addr()?)))
            .collect();
        let targets: Vec<(ObjKey, SocketAddr)> = stats
            .tracked()
            .filter_map(|m| {
                let key = m.key();
                let addr = *admin.get(&key)?;
                Some((key, addr))
            })
            .collect();
        (targets, stats.parser())
    };
    let mut pages = futures_util::stream::iter(targets)
        .map(|(key, addr)| async move { (key, addr, fetch(addr, timeout).await) })
        .buffer_unordered(CONCURRENCY);
    let mut outcomes = Vec::new();
    while let Some((key, addr, page)) = pages.next().await {
        let at = store.now();
        let scrape = match page {
            Ok(text) => parser.parse(&text).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let result =
            scrape.and_then(|s| store.lock().record(&key, at, s).map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                store.recorded.fetch_add(1, Relaxed);
                outcomes.push((key.to_string(), None));
            }
            Err(error) => {
                store.failures.fetch_add(1, Relaxed);
                tracing::debug!(pod = %key, %addr, %error, "scrape failed");
                outcomes.push((key.to_string(), Some(format!("{addr}: {error}"))));
            }
        }
    }
    outcomes.sort();
    *store
        .last_round
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(outcomes);
}

/// `GET /metrics` from a proxy's admin server, over a connection of its own, within
/// `timeout` and [`MAX_PAGE_BYTES`]: a scrape, and the API's proxy-metrics, which
/// fetches a page the same way when asked.
pub(crate) async fn fetch(addr: SocketAddr, timeout: Duration) -> Result<String, ScrapeFailed> {
    tokio::time::timeout(timeout, fetch_page(addr))
        .await
        .unwrap_or(Err(ScrapeFailed::Timeout))
}

async fn fetch_page(addr: SocketAddr) -> Result<String, ScrapeFailed> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ScrapeFailed::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ScrapeFailed::Http)?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| ScrapeFailed::Body(e.to_string()))?;
    let result = async {
        let rsp = sender.send_request(req).await.map_err(ScrapeFailed::Http)?;
        if rsp.status() != http::StatusCode::OK {
            return Err(ScrapeFailed::Status(rsp.status()));
        }
        let body = Limited::new(rsp.into_body(), MAX_PAGE_BYTES)
            .collect()
            .await
            .map_err(|e| ScrapeFailed::Body(e.to_string()))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| ScrapeFailed::Utf8)
    }
    .await;
    conn.abort();
    result
}
