//! `mesh-bench load`: the load generator.
//!
//! It runs on one thread (a current-thread runtime), since it shares the machine with
//! the backend and both proxies, and prints JSON lines on stdout: `{"event":"measuring"}`
//! when the measured window opens (after the warm-up), `{"event":"measured"}` when it
//! closes, and `{"event":"result",...}` with the numbers, so that the orchestrator can
//! sample the proxies' CPU exactly over the window.
//!
//! Fixed rate (open loop): request `k` is *scheduled* at `t0 + k / rate` and handed to
//! connection `k mod conns`. An HTTP/1 connection sends its queue one request at a time;
//! HTTP/2 sends each request as its own stream at once. Latency runs from the scheduled
//! time to the end of the response body, so a request that waited behind a slow one is
//! charged for the wait (coordinated omission corrected, as wrk2 does). Scheduling uses
//! a timerfd (nanosecond expiry), not tokio's millisecond timer wheel, whose rounding
//! would add up to 1 ms to every latency.
//!
//! Maximum throughput (closed loop): `conns` HTTP/1 connections, or `conns` HTTP/2
//! connections with `streams` concurrent streams each, send back to back.
//!
//! Requests are `GET`s; the backend answers with a 1 KiB body, read to the end.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request, Uri};
use http_body_util::Empty;
use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;
use mesh_bench::{
    net::{connect_h1, current_thread_runtime, read_response, tcp, H1Tx},
    stats::{histogram, Percentiles},
};
use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use serde::{Deserialize, Serialize};
use std::{
    cell::RefCell,
    io::Write as _,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    rc::Rc,
    str::FromStr,
    time::{Duration, Instant},
};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::spawn_local};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Proto {
    H1,
    H2,
}

impl Proto {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

/// `--rate`: requests per second, or `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Rate {
    Fixed(f64),
    Max,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::Fixed(r)),
            _ => Err(format!("{s:?}: expected requests per second or \"max\"")),
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// URL to load, e.g. http://198.18.200.2:8080/
    #[arg(long)]
    pub(crate) target: Uri,
    #[arg(long, value_enum, default_value = "h1")]
    pub(crate) proto: Proto,
    /// Connections.
    #[arg(long, default_value_t = 4)]
    pub(crate) conns: usize,
    /// HTTP/2 at `--rate max`: concurrent streams per connection.
    #[arg(long, default_value_t = 8)]
    pub(crate) streams: usize,
    /// Requests per second (open loop), or `max` (closed loop).
    #[arg(long, default_value = "max")]
    pub(crate) rate: Rate,
    /// Length of the measured window.
    #[arg(long, default_value = "10s", value_parser = mesh_api::duration::parse)]
    pub(crate) duration: Duration,
    /// Load sent before the measured window, not recorded.
    #[arg(long, default_value = "2s", value_parser = mesh_api::duration::parse)]
    pub(crate) warmup: Duration,
    /// A request not answered within this counts as an error.
    #[arg(long, default_value = "5s", value_parser = mesh_api::duration::parse)]
    pub(crate) timeout: Duration,
    /// Also write every measured request as `ms since the window opened, latency in µs`
    /// (CSV) to this file, to look for patterns in time (periodic stalls).
    #[arg(long)]
    pub(crate) trace: Option<std::path::PathBuf>,
}

/// What `load` prints last.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LoadResult {
    pub(crate) proto: Proto,
    pub(crate) target: String,
    /// Requests per second asked for; `None` for maximum throughput.
    pub(crate) target_rps: Option<f64>,
    pub(crate) conns: usize,
    /// Requests in flight at most: `conns`, or `conns * streams` for h2 at max.
    pub(crate) concurrency: usize,
    pub(crate) duration_s: f64,
    /// Successful requests in the measured window.
    pub(crate) count: u64,
    /// Failed requests (transport errors, timeouts, non-2xx) in the window.
    pub(crate) errors: u64,
    /// Requests still unanswered when the generator gave up waiting.
    pub(crate) incomplete: u64,
    pub(crate) first_error: Option<String>,
    /// `count / duration`.
    pub(crate) rps: f64,
    /// From the scheduled send time (fixed rate) or the actual one (max) to the end of
    /// the response body.
    pub(crate) latency_us: Percentiles,
    /// Fixed rate only: how late requests were actually sent (queueing behind the
    /// previous response on an HTTP/1 connection, or the generator itself lagging).
    pub(crate) send_lag_us: Option<Percentiles>,
}

/// The longest latency recorded, in ns (a minute).
pub(crate) const LATENCY_MAX_NS: u64 = 60_000_000_000;

struct Stats {
    hist: Histogram<u64>,
    lag: Histogram<u64>,
    count: u64,
    errors: u64,
    first_error: Option<String>,
    in_flight: u64,
    start: Instant,
    end: Instant,
    trace: Option<Vec<(u32, u32)>>,
}

impl Stats {
    fn new(start: Instant, end: Instant) -> Self {
        Self {
            hist: histogram(LATENCY_MAX_NS),
            lag: histogram(LATENCY_MAX_NS),
            count: 0,
            errors: 0,
            first_error: None,
            in_flight: 0,
            start,
            end,
            trace: None,
        }
    }

    /// Records a request that was due at `from` (scheduled or actual send time) and, for
    /// fixed rate, actually sent at `sent`; counted if `from` lies in the window.
    fn finish(
        &mut self,
        from: Instant,
        sent: Option<Instant>,
        done: Instant,
        res: Result<(), String>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if from < self.start || from >= self.end {
            return;
        }
        match res {
            Ok(()) => {
                self.count += 1;
                self.hist.saturating_record(ns(done - from));
                if let Some(t) = &mut self.trace {
                    let at = (from - self.start).as_millis().min(u32::MAX.into()) as u32;
                    t.push((at, ((done - from).as_micros().min(u32::MAX.into())) as u32));
                }
                if let Some(sent) = sent {
                    self.lag
                        .saturating_record(ns(sent.saturating_duration_since(from)));
                }
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// The target, split the ways the two protocols want it.
struct Target {
    addr: String,
    authority: String,
    path: String,
    uri: Uri,
}

impl Target {
    fn new(uri: &Uri) -> anyhow::Result<Self> {
        if uri.scheme_str() != Some("http") {
            bail!("{uri}: only http:// targets");
        }
        let authority = uri
            .authority()
            .context("the target has no host")?
            .to_string();
        let addr = if uri.port().is_some() {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        Ok(Self {
            addr,
            authority,
            path,
            uri: uri.clone(),
        })
    }

    fn request(&self, proto: Proto) -> Request<Empty<Bytes>> {
        let b = match proto {
            Proto::H1 => {
                Request::get(self.path.as_str()).header(header::HOST, self.authority.as_str())
            }
            Proto::H2 => Request::get(self.uri.clone()),
        };
        b.body(Empty::new()).expect("a valid request")
    }
}

type H2Tx = http2::SendRequest<Empty<Bytes>>;

async fn connect_h2(addr: &str) -> Result<H2Tx, String> {
    let (tx, conn) = http2::handshake(TokioExecutor::new(), tcp(addr).await?)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// One HTTP/1 connection, reconnected after an error.
struct H1Conn {
    target: Rc<Target>,
    tx: Option<H1Tx>,
}

impl H1Conn {
    async fn send(&mut self) -> Result<(), String> {
        let res = async {
            if self.tx.as_ref().is_none_or(|t| t.is_closed()) {
                self.tx = Some(connect_h1(&self.target.addr).await?);
            }
            let tx = self.tx.as_mut().expect("connected");
            tx.ready().await.map_err(|e| format!("connection: {e}"))?;
            read_response(tx.send_request(self.target.request(Proto::H1)).await)
                .await
                .map(drop)
        }
        .await;
        if res.is_err() {
            self.tx = None;
        }
        res
    }
}

impl H1Conn {
    /// [`H1Conn::send`] within `timeout`. A connection that timed out mid-request is
    /// dropped: what it would read next is unknown.
    async fn send_within(&mut self, timeout: Duration) -> Result<(), String> {
        let res = within(timeout, self.send()).await;
        if res.is_err() {
            self.tx = None;
        }
        res
    }
}

/// `fut`'s result, or a `timeout` error once `timeout` has passed.
async fn within(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// One HTTP/2 connection shared by many streams, reconnected once it closes.
struct H2Conn {
    target: Rc<Target>,
    tx: RefCell<Option<H2Tx>>,
}

impl H2Conn {
    async fn send(&self) -> Result<(), String> {
        let current = self.tx.borrow().clone().filter(|t| !t.is_closed());
        let mut tx = match current {
            Some(t) => t,
            None => {
                let t = connect_h2(&self.target.addr).await?;
                *self.tx.borrow_mut() = Some(t.clone());
                t
            }
        };
        tx.ready().await.map_err(|e| format!("connection: {e}"))?;
        read_response(tx.send_request(self.target.request(Proto::H2)).await)
            .await
            .map(drop)
    }
}

/// Sleeps until an `Instant` with nanosecond precision: a one-shot absolute timerfd
/// on CLOCK_MONOTONIC (the clock `Instant` reads), awaited through the runtime.
struct Pacer {
    fd: AsyncFd<Tfd>,
    base: Instant,
    base_ts: Duration,
}

struct Tfd(TimerFd);

impl AsRawFd for Tfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Pacer {
    fn new() -> anyhow::Result<Self> {
        let tfd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .context("timerfd_create")?;
        let base = Instant::now();
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .context("clock_gettime")?;
        let base_ts = Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
        // `AsyncFd::new` is deprecated because a caller could close the fd while it is
        // registered; `Tfd` owns its fd and always returns that same one, which is what
        // the unsafe `AsyncFd::register` asks for (and this crate forbids unsafe code).
        #[allow(deprecated)]
        let fd = AsyncFd::new(Tfd(tfd)).context("registering the timerfd")?;
        Ok(Self { fd, base, base_ts })
    }

    async fn sleep_until(&self, at: Instant) -> anyhow::Result<()> {
        if at <= Instant::now() {
            return Ok(());
        }
        let abs = self.base_ts + at.saturating_duration_since(self.base);
        self.fd
            .get_ref()
            .0
            .set(
                Expiration::OneShot(TimeSpec::from_duration(abs)),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )
            .context("timerfd_settime")?;
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(std::io::Error::from)) {
                Ok(res) => return res.context("reading the timerfd"),
                Err(_would_block) => continue,
            }
        }
    }
}

pub(crate) fn event(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    if args.conns == 0 || args.streams == 0 {
        bail!("--conns and --streams must be at least 1");
    }
    let rt = current_thread_runtime()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run(args))?;
    event(&serde_json::to_string(
        &serde_json::json!({ "event": "result", "result": result }),
    )?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<LoadResult> {
    let target = Rc::new(Target::new(&args.target)?);
    let (result, trace) = match args.rate {
        Rate::Fixed(rate) => fixed_rate(&args, target, rate).await?,
        Rate::Max => max_rate(&args, target).await?,
    };
    if let (Some(path), Some(trace)) = (&args.trace, trace) {
        let mut csv = String::from("ms,latency_us\n");
        for (at, us) in trace {
            csv.push_str(&format!("{at},{us}\n"));
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result)
}

type Outcome = (LoadResult, Option<Vec<(u32, u32)>>);

async fn fixed_rate(args: &Args, target: Rc<Target>, rate: f64) -> anyhow::Result<Outcome> {
    let pacer = Pacer::new()?;
    // The window is set once connected; nothing is recorded before that.
    let now = Instant::now();
    let stats = Rc::new(RefCell::new(Stats::new(now, now)));
    // Connect first, so that connection set-up is not charged to the first requests.
    let mut h1_queues = Vec::new();
    let mut h2_conns = Vec::new();
    for _ in 0..args.conns {
        match args.proto {
            Proto::H1 => {
                let tx = connect_h1(&target.addr).await.map_err(anyhow::Error::msg)?;
                let (q, rx) = mpsc::unbounded_channel::<Instant>();
                h1_queues.push(q);
                let conn = H1Conn {
                    target: target.clone(),
                    tx: Some(tx),
                };
                h1_worker(conn, rx, stats.clone(), args.timeout);
            }
            Proto::H2 => {
                let tx = connect_h2(&target.addr).await.map_err(anyhow::Error::msg)?;
                h2_conns.push(Rc::new(H2Conn {
                    target: target.clone(),
                    tx: RefCell::new(Some(tx)),
                }));
            }
        }
    }

    let t0 = Instant::now() + Duration::from_millis(20);
    let (start, end) = (t0 + args.warmup, t0 + args.warmup + args.duration);
    {
        let mut s = stats.borrow_mut();
        s.start = start;
        s.end = end;
        s.trace = args.trace.as_ref().map(|_| Vec::new());
    }
    let total = ((args.warmup + args.duration).as_secs_f64() * rate).floor() as u64;
    let mut announced = false;
    for k in 0..total {
        let at = t0 + Duration::from_nanos((k as f64 * 1e9 / rate) as u64);
        pacer.sleep_until(at).await?;
        if !announced && at >= start {
            event(r#"{"event":"measuring"}"#);
            announced = true;
        }
        stats.borrow_mut().in_flight += 1;
        let i = (k % args.conns as u64) as usize;
        match args.proto {
            Proto::H1 => {
                let _ = h1_queues[i].send(at);
            }
            Proto::H2 => {
                let (conn, stats, timeout) = (h2_conns[i].clone(), stats.clone(), args.timeout);
                spawn_local(async move {
                    let sent = Instant::now();
                    let res = within(timeout, conn.send()).await;
                    stats
                        .borrow_mut()
                        .finish(at, Some(sent), Instant::now(), res);
                });
            }
        }
    }
    pacer.sleep_until(end).await?;
    if !announced {
        event(r#"{"event":"measuring"}"#);
    }
    event(r#"{"event":"measured"}"#);
    drop(h1_queues);
    let give_up = Instant::now() + args.timeout + Duration::from_secs(1);
    while stats.borrow().in_flight > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let incomplete = stats.borrow().in_flight;
    Ok(outcome(args, &stats, Some(rate), args.conns, incomplete))
}

/// An HTTP/1 connection working through its queue of scheduled send times.
fn h1_worker(
    mut conn: H1Conn,
    mut rx: mpsc::UnboundedReceiver<Instant>,
    stats: Rc<RefCell<Stats>>,
    timeout: Duration,
) {
    spawn_local(async move {
        while let Some(at) = rx.recv().await {
            let sent = Instant::now();
            let res = conn.send_within(timeout).await;
            stats
                .borrow_mut()
                .finish(at, Some(sent), Instant::now(), res);
        }
    });
}

async fn max_rate(args: &Args, target: Rc<Target>) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let (start, end) = (t0 + args.warmup, t0 + args.warmup + args.duration);
    let stats = Rc::new(RefCell::new(Stats::new(start, end)));
    stats.borrow_mut().trace = args.trace.as_ref().map(|_| Vec::new());
    let mut workers = Vec::new();
    let concurrency = match args.proto {
        Proto::H1 => {
            for _ in 0..args.conns {
                let tx = connect_h1(&target.addr).await.map_err(anyhow::Error::msg)?;
                let mut conn = H1Conn {
                    target: target.clone(),
                    tx: Some(tx),
                };
                let (stats, timeout) = (stats.clone(), args.timeout);
                workers.push(spawn_local(async move {
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let res = conn.send_within(timeout).await;
                        closed_loop_record(&stats, sent, res);
                    }
                }));
            }
            args.conns
        }
        Proto::H2 => {
            for _ in 0..args.conns {
                let tx = connect_h2(&target.addr).await.map_err(anyhow::Error::msg)?;
                let conn = Rc::new(H2Conn {
                    target: target.clone(),
                    tx: RefCell::new(Some(tx)),
                });
                for _ in 0..args.streams {
                    let (conn, stats, timeout) = (conn.clone(), stats.clone(), args.timeout);
                    workers.push(spawn_local(async move {
                        loop {
                            let sent = Instant::now();
                            if sent >= end {
                                break;
                            }
                            let res = within(timeout, conn.send()).await;
                            closed_loop_record(&stats, sent, res);
                        }
                    }));
                }
            }
            args.conns * args.streams
        }
    };
    tokio::time::sleep_until(start.into()).await;
    event(r#"{"event":"measuring"}"#);
    tokio::time::sleep_until(end.into()).await;
    event(r#"{"event":"measured"}"#);
    let mut incomplete = 0;
    for w in workers {
        if tokio::time::timeout(args.timeout + Duration::from_secs(1), w)
            .await
            .is_err()
        {
            incomplete += 1;
        }
    }
    Ok(outcome(args, &stats, None, concurrency, incomplete))
}

/// What a run saw: the result `load` prints, and the trace if asked for. `rate` is
/// `None` at maximum throughput, which has no send lag.
fn outcome(
    args: &Args,
    stats: &RefCell<Stats>,
    rate: Option<f64>,
    concurrency: usize,
    incomplete: u64,
) -> Outcome {
    let mut s = stats.borrow_mut();
    let trace = s.trace.take();
    let result = LoadResult {
        proto: args.proto,
        target: args.target.to_string(),
        target_rps: rate,
        conns: args.conns,
        concurrency,
        duration_s: args.duration.as_secs_f64(),
        count: s.count,
        errors: s.errors,
        incomplete,
        first_error: s.first_error.clone(),
        rps: s.count as f64 / args.duration.as_secs_f64(),
        latency_us: Percentiles::of_ns(&s.hist),
        send_lag_us: rate.map(|_| Percentiles::of_ns(&s.lag)),
    };
    (result, trace)
}

/// Closed loop: a request counts if it was sent and answered inside the window.
fn closed_loop_record(stats: &RefCell<Stats>, sent: Instant, res: Result<(), String>) {
    let done = Instant::now();
    let mut s = stats.borrow_mut();
    if done > s.end {
        return;
    }
    s.in_flight += 1; // balanced by finish()
    s.finish(sent, None, done, res);
}
