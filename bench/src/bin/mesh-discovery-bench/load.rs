//! HTTP/1 load, through the proxy (absolute-form requests naming a service, which the
//! proxy resolves and balances) or straight to a set of backends in round-robin order
//! (the reference a balancer is compared with).
//!
//! [`ClosedLoop`] keeps a fixed number of requests in flight, each worker on its own
//! kept-alive connection(s), sending the next request as soon as the last one is
//! answered. [`open_loop`] sends at a fixed rate whatever the answers do, and measures
//! latency from each request's scheduled send time, so a stall is charged to every
//! request it delays (coordinated omission corrected).

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Empty;
use hyper::Request;
use mesh_bench::{
    net::{connect_h1, read_response, H1Tx},
    stats::{histogram, Percentiles},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

/// Where requests go.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// Through an explicit-mode proxy's outbound listener, to `http://<authority>/`.
    Proxy {
        proxy: SocketAddr,
        authority: String,
    },
    /// Straight to the backends, each request to the next one in turn.
    RoundRobin(Vec<SocketAddr>),
}

/// What a measured window saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stats {
    pub(crate) window_s: f64,
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) rps: f64,
    pub(crate) latency_us: Percentiles,
    /// Successful responses by the backend that answered.
    pub(crate) by_backend: BTreeMap<String, u64>,
}

impl Stats {
    /// The share of successful responses that `backend` answered.
    pub(crate) fn share(&self, backend: &str) -> f64 {
        let n = self.by_backend.get(backend).copied().unwrap_or(0);
        if self.count == 0 {
            0.0
        } else {
            n as f64 / self.count as f64
        }
    }
}

/// The longest latency recorded, in µs (two minutes).
const LATENCY_MAX_US: u64 = 120_000_000;

/// What the current window has seen.
struct Measured {
    latency_us: Histogram<u64>,
    by_backend: BTreeMap<String, u64>,
    first_error: Option<String>,
    since: Instant,
}

/// The counters workers write into.
struct Recorder {
    measuring: AtomicBool,
    window: Mutex<Measured>,
    errors: AtomicU64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            measuring: AtomicBool::new(false),
            window: Mutex::new(Measured {
                latency_us: histogram(LATENCY_MAX_US),
                by_backend: BTreeMap::new(),
                first_error: None,
                since: Instant::now(),
            }),
            errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Measured> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ok(&self, latency: Duration, backend: &[u8]) {
        if !self.measuring.load(Relaxed) {
            return;
        }
        let mut w = self.lock();
        let _ = w.latency_us.record((latency.as_micros() as u64).max(1));
        let name = String::from_utf8_lossy(backend);
        match w.by_backend.get_mut(name.as_ref()) {
            Some(n) => *n += 1,
            None => {
                w.by_backend.insert(name.into_owned(), 1);
            }
        }
    }

    /// Errors count whether or not a window is open: none is expected, ever.
    fn error(&self, error: String) {
        self.errors.fetch_add(1, Relaxed);
        self.lock().first_error.get_or_insert(error);
    }

    /// Starts a measured window.
    fn begin(&self) {
        let mut w = self.lock();
        w.latency_us.reset();
        w.by_backend.clear();
        w.since = Instant::now();
        self.measuring.store(true, Relaxed);
    }

    /// Ends the window and returns what it saw.
    fn end(&self) -> Stats {
        self.measuring.store(false, Relaxed);
        let w = self.lock();
        let window_s = w.since.elapsed().as_secs_f64();
        let count = w.latency_us.len();
        Stats {
            window_s,
            count,
            errors: self.errors.load(Relaxed),
            first_error: w.first_error.clone(),
            rps: count as f64 / window_s.max(1e-9),
            latency_us: Percentiles::of_us(&w.latency_us),
            by_backend: w.by_backend.clone(),
        }
    }
}

/// One worker's connections: one to the proxy, or one per backend.
struct Conns {
    target: Target,
    senders: Vec<Option<H1Tx>>,
}

/// Requests sent so far by all round-robin workers together, which picks the next
/// backend, so that the order is round-robin across workers too.
static ROUND_ROBIN: AtomicU64 = AtomicU64::new(0);

impl Conns {
    fn new(target: Target) -> Self {
        let n = match &target {
            Target::Proxy { .. } => 1,
            Target::RoundRobin(addrs) => addrs.len(),
        };
        Self {
            target,
            senders: (0..n).map(|_| None).collect(),
        }
    }

    /// Sends one request; returns the body (the backend's name).
    async fn send(&mut self) -> anyhow::Result<Bytes> {
        let (i, addr, uri, host) = match &self.target {
            Target::Proxy { proxy, authority } => {
                // Absolute-form, as to any HTTP proxy: the proxy resolves the authority.
                (0, *proxy, format!("http://{authority}/"), authority.clone())
            }
            Target::RoundRobin(addrs) => {
                let i = (ROUND_ROBIN.fetch_add(1, Relaxed) % addrs.len() as u64) as usize;
                (i, addrs[i], "/".to_string(), addrs[i].to_string())
            }
        };
        let sender = match &mut self.senders[i] {
            Some(s) if !s.is_closed() => s,
            slot => slot.insert(
                connect_h1(&addr.to_string())
                    .await
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        let result = async {
            sender.ready().await?;
            let req = Request::get(uri)
                .header(hyper::header::HOST, host)
                .body(Empty::<Bytes>::new())?;
            read_response(sender.send_request(req).await)
                .await
                .map_err(anyhow::Error::msg)
        }
        .await;
        if result.is_err() {
            // A fresh connection for the next request.
            self.senders[i] = None;
        }
        result
    }
}

/// A closed-loop load running in the background until dropped.
pub(crate) struct ClosedLoop {
    recorder: Arc<Recorder>,
    tasks: JoinSet<()>,
}

impl ClosedLoop {
    /// Starts `workers` workers, each keeping one request in flight.
    pub(crate) fn start(target: Target, workers: usize) -> Self {
        let recorder = Arc::new(Recorder::new());
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let (recorder, mut conns) = (recorder.clone(), Conns::new(target.clone()));
            tasks.spawn(async move {
                loop {
                    let started = Instant::now();
                    match conns.send().await {
                        Ok(body) => recorder.ok(started.elapsed(), &body),
                        Err(e) => {
                            recorder.error(format!("{e:#}"));
                            // Do not spin on a target that refuses connections.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        }
        Self { recorder, tasks }
    }

    /// Starts a measured window (ending any earlier one).
    pub(crate) fn begin(&self) {
        self.recorder.begin();
    }

    /// Ends the window.
    pub(crate) fn end(&self) -> Stats {
        self.recorder.end()
    }

    /// Runs a window of `d` after `warmup`, and stops.
    pub(crate) async fn measure(mut self, warmup: Duration, d: Duration) -> Stats {
        tokio::time::sleep(warmup).await;
        self.begin();
        tokio::time::sleep(d).await;
        let stats = self.end();
        self.tasks.abort_all();
        stats
    }
}

/// Sends `rate` requests per second for `warmup` + `d` over `conns` connections (per
/// target address), and returns the window after the warm-up. Latency counts from each
/// request's scheduled time.
pub(crate) async fn open_loop(
    target: Target,
    rate: f64,
    conns: usize,
    warmup: Duration,
    d: Duration,
) -> Stats {
    let recorder = Arc::new(Recorder::new());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now();
    // Only requests scheduled after the warm-up count.
    let measure_from = start + warmup;
    recorder.begin();
    let mut tasks = JoinSet::new();
    for _ in 0..conns.max(1) {
        let (recorder, rx, mut conns) = (recorder.clone(), rx.clone(), Conns::new(target.clone()));
        tasks.spawn(async move {
            loop {
                let Some(scheduled) = rx.lock().await.recv().await else {
                    return;
                };
                match conns.send().await {
                    Ok(body) if scheduled >= measure_from => {
                        recorder.ok(scheduled.elapsed(), &body)
                    }
                    Ok(_) => {}
                    Err(e) => recorder.error(format!("{e:#}")),
                }
            }
        });
    }
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let end = measure_from + d;
    for k in 0u32.. {
        let at = start + interval * k;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let _ = tx.send(at);
    }
    drop(tx);
    // Let the requests already sent finish (their latency is what it is), up to a bound.
    let drain = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    });
    let _ = drain.await;
    tasks.abort_all();
    let mut stats = recorder.end();
    // The window is the scheduled time, not the drain.
    stats.window_s = d.as_secs_f64();
    stats.rps = stats.count as f64 / stats.window_s.max(1e-9);
    stats
}
