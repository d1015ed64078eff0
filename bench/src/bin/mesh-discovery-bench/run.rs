//! The orchestration: the five phases in order, each measured, then the report.
//!
//! Everything a phase starts is owned by a value of [`main`]'s async block (the fake
//! API server, the controller and proxy [`Process`](mesh_integration_tests::Process)es,
//! the backends, the streams, the loads), so an error, a panic or Ctrl-C drops them,
//! which kills the processes and stops the tasks.

use crate::{
    backend::Backend,
    cluster::{Cluster, Probe},
    load::{self, ClosedLoop, Stats, Target},
    report,
    streams::{self, Change, Tracker},
    Args, Settings,
};
use anyhow::{bail, Context as _};
use mesh_bench::sys::{self, Machine, MachineSample, MachineWindow, Meter, Sample};
use mesh_integration_tests::mesh::{free_port, scrape, Controller, Proxy};
use mesh_kube_fake::FakeKube;
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

/// How long any one change may take to arrive before it counts as lost.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A removed backend that has served nothing for this long, while the load runs, has
/// been let go by the proxy.
const REMOVED_AFTER: Duration = Duration::from_millis(150);
/// How long the controller gets for its first sync.
const READY_WITHIN: Duration = Duration::from_secs(300);
/// Unmeasured load before each balancing window.
const BALANCE_WARMUP: Duration = Duration::from_secs(1);
/// Requests in flight in the cold-start balancing window.
const COLD_START_CONCURRENCY: usize = 4;
/// Connections of the open-loop balancing run (per target address).
const OPEN_LOOP_CONNS: usize = 16;

pub(crate) const CONTROLLER: &str = "controller";
pub(crate) const PROXY: &str = "proxy";
pub(crate) const BENCH: &str = "bench";

// === Results ===

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) meta: Meta,
    pub(crate) indexing: Indexing,
    pub(crate) streams: StreamsResult,
    pub(crate) propagation: Propagation,
    pub(crate) proxy: ProxyPropagation,
    pub(crate) balance: Vec<BalanceRun>,
    /// The machine and each process over every phase.
    pub(crate) windows: Vec<Window>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) date: String,
    pub(crate) command: String,
    pub(crate) git: String,
    pub(crate) machine: Machine,
    pub(crate) settings: Option<Settings>,
    pub(crate) clock_ticks_per_sec: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) busy_before_cores: f64,
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
    pub(crate) controller_env: Vec<String>,
    pub(crate) proxy_env: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Indexing {
    /// A controller on an empty cluster, settled after ready: the baseline that
    /// indexing adds to.
    pub(crate) empty: Sample,
    pub(crate) services: usize,
    pub(crate) endpoints: usize,
    pub(crate) pods: usize,
    /// Writing the objects into the fake API server.
    pub(crate) load_api_s: f64,
    /// From spawning the controller to its `/ready` answering 200 (polled every 20 ms).
    pub(crate) ready_s: f64,
    /// The controller at `/ready`: its whole life's CPU and memory so far.
    pub(crate) at_ready: Sample,
    /// The same, 2 s later (0.5 s with `--quick`).
    pub(crate) settled: Sample,
    /// `destination_index_objects` by resource once ready.
    pub(crate) index_objects: BTreeMap<String, f64>,
    /// The fake API server's list and watch requests during the sync.
    pub(crate) api_lists: u64,
    pub(crate) api_watches: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StreamsResult {
    pub(crate) streams: usize,
    pub(crate) conns: usize,
    /// From the first request to the last first message.
    pub(crate) open_all_s: f64,
    /// Each stream's request to its first message, ms.
    pub(crate) first_message_ms: Summary,
    pub(crate) before: Sample,
    /// Right after the last first message.
    pub(crate) opened: Sample,
    /// 2 s later (0.5 s with `--quick`).
    pub(crate) settled: Sample,
    /// `destination_streams{kind="get"}` and `destination_queries`, settled.
    pub(crate) streams_gauge: f64,
    pub(crate) queries_gauge: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Propagation {
    pub(crate) changes: usize,
    pub(crate) streams_per_service: usize,
    /// Changes that had not arrived on every stream within [`CHANGE_TIMEOUT`].
    pub(crate) lost: usize,
    /// From the apply to the first of the service's streams having it, ms.
    pub(crate) first_ms: Summary,
    /// ... to every stream of the service having it, ms.
    pub(crate) all_ms: Summary,
    /// Updates that matched no change (duplicates, or spurious), over all streams.
    pub(crate) unexpected_updates: u64,
    /// Controller CPU over the phase (ns, schedstat) per change.
    pub(crate) controller_cpu_us_per_change: f64,
    pub(crate) raw_all_ms: Vec<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ProxyPropagation {
    pub(crate) samples: usize,
    pub(crate) workers: usize,
    /// Additions not served within [`CHANGE_TIMEOUT`].
    pub(crate) lost: usize,
    /// From the apply adding an endpoint to its backend serving a request, ms.
    pub(crate) add_ms: Summary,
    /// From the apply removing it to the last request it served (0 when it served
    /// none after the apply), ms.
    pub(crate) remove_ms: Summary,
    /// Requests sent through the proxy over the phase, and how many failed.
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) raw_add_ms: Vec<f64>,
    pub(crate) raw_remove_ms: Vec<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct BalanceRun {
    /// `closed loop, 4 in flight` or `open loop, 200 rps`.
    pub(crate) load: String,
    /// The window that starts when the proxy first learns the service (measured from
    /// its first request, with no warm-up), rather than after the others.
    pub(crate) cold: bool,
    pub(crate) proxied: Stats,
    /// The same load straight to the backends, round-robin (none for the cold start).
    pub(crate) round_robin: Option<Stats>,
}

/// Nearest-rank percentiles of a sample.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Summary {
    pub(crate) fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Self::default();
        }
        let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            n,
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: v[n - 1],
            mean: v.iter().sum::<f64>() / n as f64,
        }
    }
}

/// The machine and the benchmark's processes over one phase, in cores.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Window {
    pub(crate) phase: String,
    pub(crate) seconds: f64,
    /// `busy_cores`, `softirq_cores` and `steal_cores`.
    #[serde(flatten)]
    pub(crate) machine: MachineWindow,
    /// Cores used by each of the benchmark's processes.
    pub(crate) procs: BTreeMap<String, f64>,
}

impl Window {
    /// Cores busy on the machine but in none of the benchmark's processes nor in
    /// softirq: other users of the machine.
    pub(crate) fn other_cores(&self) -> f64 {
        self.machine.other_cores(self.procs.values().sum())
    }
}

/// A phase being measured: the machine and the benchmark's processes (name, pid).
struct Phase {
    name: &'static str,
    meter: Meter,
}

impl Phase {
    fn start(name: &'static str, procs: &[(&'static str, u32)]) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            meter: Meter::start(procs.iter().copied())?,
        })
    }

    /// The phase's window, each process's CPU from schedstat.
    fn finish(self) -> anyhow::Result<Window> {
        let m = self.meter.finish()?;
        let procs = m
            .procs
            .iter()
            .map(|(name, before, after)| {
                let ns = after.cpu_ns.saturating_sub(before.cpu_ns);
                (name.clone(), sys::cores(ns, m.seconds))
            })
            .collect();
        Ok(Window {
            phase: self.name.to_string(),
            seconds: m.seconds,
            machine: m.machine,
            procs,
        })
    }
}

// === Orchestration ===

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let settings = args.settings();
    for bin in ["mesh-controller", "mesh-proxy"] {
        let path = mesh_integration_tests::bin_path(bin);
        if !path.exists() {
            bail!(
                "{} not found: build it beside this binary (scripts/bench-discovery.sh does), \
                 or set MESH_BIN_DIR",
                path.display()
            );
        }
    }
    let loadavg_start = sys::loadavg();
    let busy_before = wait_quiet(args.wait_quiet)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut results = rt.block_on(async {
        tokio::select! {
            r = phases(&settings) => r,
            _ = mesh_bench::net::terminated() => bail!("interrupted"),
        }
    })?;
    // Dropping the runtime waits for blocking start-ups still under way, whose
    // processes are then dropped, and killed, too.
    drop(rt);

    let argv: Vec<String> = std::env::args().skip(1).collect();
    results.meta = Meta {
        date: sys::utc_date(),
        command: format!("scripts/bench-discovery.sh {}", argv.join(" "))
            .trim_end()
            .to_string(),
        git: sys::git_revision(&[
            "controller",
            "linkerd-like-proxy",
            "integration-tests",
            "kube-fake",
            "bench",
        ]),
        machine: Machine::read(),
        settings: Some(settings.clone()),
        clock_ticks_per_sec: sys::clock_ticks_per_sec(),
        elapsed_s: started.elapsed().as_secs_f64(),
        busy_before_cores: busy_before,
        loadavg_start,
        loadavg_end: sys::loadavg(),
        controller_env: vec![format!("MESH_LOG={}", settings.controller_log)],
        proxy_env: vec![format!("MESH_PROXY_LOG={}", settings.proxy_log)],
    };
    let markdown = report::render(&results);
    if args.no_write {
        eprintln!("{markdown}");
        return Ok(());
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("discovery-{}", results.meta.date));
    eprintln!("{markdown}");
    mesh_bench::report::write(
        "mesh-discovery-bench",
        &args.out_dir,
        &name,
        &markdown,
        &results,
    )
}

/// Waits up to `max` for a 2-s sample with at most 0.2 cores busy; returns the last
/// sample's busy cores (a 1-s sample when not waiting).
fn wait_quiet(max: Duration) -> anyhow::Result<f64> {
    let sample = Duration::from_secs(if max.is_zero() { 1 } else { 2 });
    sys::wait_quiet("mesh-discovery-bench", max, 0.2, sample)
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("mesh-discovery-bench: {msg}");
}

async fn phases(s: &Settings) -> anyhow::Result<Results> {
    let me = std::process::id();
    let cluster = Cluster {
        services: s.services,
        per_service: s.endpoints_per_service,
    };
    let mut windows = Vec::new();
    // How long the controller is left alone before its memory is read again.
    let settle = Duration::from_millis(if s.quick { 500 } else { 2000 });

    progress(format_args!(
        "process logs go to {}",
        mesh_integration_tests::scratch_dir().display()
    ));

    // --- 1. Indexing ---
    let empty = empty_cluster(s, settle).await?;
    progress(format_args!(
        "controller on an empty cluster: RSS {:.1} MB",
        report::mb(empty.rss_kib)
    ));
    let api = FakeKube::start().await.context("fake API server")?;
    let t = Instant::now();
    api.apply_all(cluster.services())?;
    api.apply_all(cluster.pods())?;
    api.apply_all(cluster.slices())?;
    let load_api_s = t.elapsed().as_secs_f64();
    progress(format_args!(
        "API server holds {} services, {} endpoints, {} pods (written in {load_api_s:.2} s); starting the controller",
        cluster.services,
        cluster.endpoints(),
        cluster.endpoints()
    ));
    let api_before = api.stats();
    let machine = sys::machine_sample()?;
    let bench_before = sys::sample(me)?;
    let t = Instant::now();
    let controller = start_controller(s, &api)
        .await
        .context("starting mesh-controller")?;
    let ready_s = t.elapsed().as_secs_f64();
    let cpid = controller.process.pid();
    let at_ready = sys::sample(cpid)?;
    windows.push(window_since(
        "1. indexing (start to ready)",
        t,
        machine,
        &[
            (CONTROLLER, Sample::default(), at_ready),
            (BENCH, bench_before, sys::sample(me)?),
        ],
    )?);
    let api_after = api.stats();
    tokio::time::sleep(settle).await;
    let settled = sys::sample(cpid)?;
    let metrics = scrape(controller.admin)?;
    let index_objects = ["services", "endpointslices", "pods"]
        .iter()
        .map(|r| {
            (
                r.to_string(),
                metrics.sum("destination_index_objects", &[("resource", r)]),
            )
        })
        .collect();
    let indexing = Indexing {
        empty,
        services: cluster.services,
        endpoints: cluster.endpoints(),
        pods: cluster.endpoints(),
        load_api_s,
        ready_s,
        at_ready,
        settled,
        index_objects,
        api_lists: api_after.lists - api_before.lists,
        api_watches: api_after.watches - api_before.watches,
    };
    progress(format_args!(
        "controller ready in {ready_s:.2} s, {:.2} s CPU, RSS {:.1} MB (HWM {:.1} MB); index {:?}",
        at_ready.ticks_ns() as f64 / 1e9,
        report::mb(settled.rss_kib),
        report::mb(settled.hwm_kib),
        indexing.index_objects
    ));

    // --- 2. Streams ---
    let tracker = Arc::new(Tracker::default());
    let paths: Vec<(usize, String, usize)> = (0..cluster.services)
        .flat_map(|svc| {
            // Stream i goes on connection i % conns: a service's streams on different ones.
            (0..s.streams_per_service).map(move |_| svc)
        })
        .map(|svc| (svc, cluster.authority(svc), cluster.per_service))
        .collect();
    let n_streams = paths.len();
    let before = sys::sample(cpid)?;
    let phase = Phase::start("2. opening streams", &[(CONTROLLER, cpid), (BENCH, me)])?;
    let open = streams::open(controller.destination, s.conns, paths, tracker.clone()).await?;
    windows.push(phase.finish()?);
    let opened = sys::sample(cpid)?;
    tokio::time::sleep(settle).await;
    let settled = sys::sample(cpid)?;
    let metrics = scrape(controller.admin)?;
    let first_ms: Vec<f64> = open.first_message.iter().map(ms).collect();
    let streams_result = StreamsResult {
        streams: n_streams,
        conns: s.conns,
        open_all_s: open.open_all.as_secs_f64(),
        first_message_ms: Summary::of(&first_ms),
        before,
        opened,
        settled,
        streams_gauge: metrics.sum("destination_streams", &[("kind", "get")]),
        queries_gauge: metrics.sum("destination_queries", &[]),
    };
    progress(format_args!(
        "{n_streams} streams over {} connections open in {:.2} s; controller RSS {:.1} MB (HWM {:.1} MB)",
        s.conns,
        streams_result.open_all_s,
        report::mb(settled.rss_kib),
        report::mb(settled.hwm_kib)
    ));

    // --- 3. Propagation to the streams ---
    let mut rng = StdRng::seed_from_u64(0x6d65_7368);
    let mut ready = vec![vec![true; cluster.per_service]; cluster.services];
    let mut first = Vec::new();
    let mut all = Vec::new();
    let mut lost = 0;
    let updates_before = tracker.updates.load(std::sync::atomic::Ordering::Relaxed);
    let phase = Phase::start("3. changes to streams", &[(CONTROLLER, cpid), (BENCH, me)])?;
    let cpu_before = sys::sample(cpid)?.cpu_ns;
    for _ in 0..s.changes {
        let svc = rng.gen_range(0..cluster.services);
        let mut ep = rng.gen_range(0..cluster.per_service);
        // Never take the last ready endpoint away: an empty service is announced as
        // `NoEndpoints`, not as a removal.
        if ready[svc][ep] && ready[svc].iter().filter(|r| **r).count() == 1 {
            match ready[svc].iter().position(|r| !*r) {
                Some(other) => ep = other,
                None => continue,
            }
        }
        ready[svc][ep] = !ready[svc][ep];
        let change = Change {
            addr: cluster.endpoint_addr(svc, ep),
            added: ready[svc][ep],
        };
        let since = Instant::now();
        let delivered = tracker.expect(svc, change, s.streams_per_service, since);
        let flags = ready[svc].clone();
        api.apply(cluster.slice(svc, |e| flags[e]))?;
        match tokio::time::timeout(CHANGE_TIMEOUT, delivered).await {
            Ok(Ok(d)) => {
                first.push(ms(&d.first));
                all.push(ms(&d.last));
            }
            _ => {
                tracker.forget(svc);
                lost += 1;
            }
        }
        // A pause, so that changes do not line up with anything periodic.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..25))).await;
    }
    let cpu_ns = sys::sample(cpid)?.cpu_ns.saturating_sub(cpu_before);
    windows.push(phase.finish()?);
    let updates = tracker.updates.load(std::sync::atomic::Ordering::Relaxed) - updates_before;
    let propagation = Propagation {
        changes: s.changes,
        streams_per_service: s.streams_per_service,
        lost,
        first_ms: Summary::of(&first),
        all_ms: Summary::of(&all),
        unexpected_updates: tracker
            .unexpected
            .load(std::sync::atomic::Ordering::Relaxed),
        controller_cpu_us_per_change: cpu_ns as f64 / 1e3 / s.changes.max(1) as f64,
        raw_all_ms: all,
    };
    progress(format_args!(
        "{} changes reached their streams: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {lost} lost, {updates} updates, {} unexpected",
        propagation.all_ms.n,
        propagation.all_ms.p50,
        propagation.all_ms.p99,
        propagation.all_ms.max,
        propagation.unexpected_updates
    ));

    // --- 4. Propagation to the proxy ---
    let destination = controller.destination;
    let log = s.proxy_log.clone();
    let proxy = tokio::task::spawn_blocking(move || {
        Proxy::explicit(destination, &[("MESH_PROXY_LOG", &log)])
    })
    .await
    .context("proxy start-up task")?
    .context("starting mesh-proxy")?;
    let ppid = proxy.process.pid();
    let proxy_result = proxy_propagation(
        s,
        &api,
        destination,
        proxy.outbound,
        &mut windows,
        cpid,
        ppid,
    )
    .await?;
    progress(format_args!(
        "{} endpoint additions reached the proxy: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; removals p99 {:.2} ms; {} lost, {} failed requests of {}",
        proxy_result.add_ms.n,
        proxy_result.add_ms.p50,
        proxy_result.add_ms.p99,
        proxy_result.add_ms.max,
        proxy_result.remove_ms.p99,
        proxy_result.lost,
        proxy_result.errors,
        proxy_result.requests
    ));

    // --- 5. Balancing ---
    let balance = balancing(
        s,
        &api,
        destination,
        proxy.outbound,
        &mut windows,
        cpid,
        ppid,
    )
    .await?;

    drop(open);
    drop(proxy);
    drop(controller);
    Ok(Results {
        meta: Meta::default(),
        indexing,
        streams: streams_result,
        propagation,
        proxy: proxy_result,
        balance,
        windows,
    })
}

/// Starts a controller on `api` (off the runtime: it blocks until the controller is
/// ready).
async fn start_controller(s: &Settings, api: &FakeKube) -> anyhow::Result<Controller> {
    let kubeconfig = api.kubeconfig_path().to_path_buf();
    let log = s.controller_log.clone();
    tokio::task::spawn_blocking(move || {
        Controller::kubernetes_with(&kubeconfig, None, &[("MESH_LOG", &log)], READY_WITHIN)
    })
    .await
    .context("controller start-up task")?
}

/// Starts a controller on an empty API server, and samples it once settled.
async fn empty_cluster(s: &Settings, settle: Duration) -> anyhow::Result<Sample> {
    let api = FakeKube::start().await.context("fake API server")?;
    let controller = start_controller(s, &api)
        .await
        .context("starting mesh-controller on an empty cluster")?;
    tokio::time::sleep(settle).await;
    let sample = sys::sample(controller.process.pid())?;
    drop(controller);
    Ok(sample)
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A window for a phase whose start samples were taken by hand.
fn window_since(
    phase: &str,
    started: Instant,
    machine: MachineSample,
    procs: &[(&str, Sample, Sample)],
) -> anyhow::Result<Window> {
    let seconds = started.elapsed().as_secs_f64();
    Ok(Window {
        phase: phase.to_string(),
        seconds,
        machine: MachineWindow::between(&machine, &sys::machine_sample()?, seconds),
        procs: procs
            .iter()
            // utime + stime: the controller's threads that ended during start-up count.
            .map(|(name, a, b)| {
                let ns = b.ticks_ns().saturating_sub(a.ticks_ns());
                (name.to_string(), sys::cores(ns, seconds))
            })
            .collect(),
    })
}

/// Loopback addresses for the backends, one per "pod": `127.78.x.y`.
fn backend_ip(block: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, block, (i / 250) as u8, (i % 250 + 1) as u8)
}

async fn wait_served(backend: &Backend, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while backend.served() == 0 {
        if Instant::now() >= deadline {
            bail!("{} served nothing within {timeout:?}", backend.name);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn proxy_propagation(
    s: &Settings,
    api: &FakeKube,
    destination: SocketAddr,
    proxy: SocketAddr,
    windows: &mut Vec<Window>,
    cpid: u32,
    ppid: u32,
) -> anyhow::Result<ProxyPropagation> {
    let probe = Probe {
        name: "probe",
        cluster_ip: Ipv4Addr::new(198, 19, 127, 1),
    };
    let port = free_port();
    let mut pool = Vec::with_capacity(s.proxy_samples + 2);
    for i in 0..s.proxy_samples + 2 {
        let addr = SocketAddr::from((backend_ip(78, i), port));
        pool.push(Backend::start(&format!("probe-{i}"), addr, Duration::ZERO).await?);
    }
    let pods: Vec<_> = pool.iter().map(|b| probe.pod(&b.name, b.addr)).collect();
    api.apply_all(pods)?;
    api.apply(probe.service(port))?;
    let base = |extra: Option<&Backend>| {
        let mut eps: Vec<(&str, SocketAddr)> = pool[..2]
            .iter()
            .map(|b| (b.name.as_str(), b.addr))
            .collect();
        if let Some(b) = extra {
            eps.push((b.name.as_str(), b.addr));
        }
        probe.slice(&eps)
    };
    api.apply(base(None))?;
    streams::await_endpoints(destination, &probe.authority(), 2, Duration::from_secs(20)).await?;
    let load = ClosedLoop::start(
        Target::Proxy {
            proxy,
            authority: probe.authority(),
        },
        s.proxy_workers,
    );
    load.begin();
    for b in &pool[..2] {
        wait_served(b, Duration::from_secs(20))
            .await
            .context("the proxy never reached the probe service")?;
    }

    let phase = Phase::start(
        "4. changes to the proxy",
        &[
            (CONTROLLER, cpid),
            (PROXY, ppid),
            (BENCH, std::process::id()),
        ],
    )?;
    let (mut add, mut remove, mut lost) = (Vec::new(), Vec::new(), 0);
    for new in &pool[2..] {
        let since = Instant::now();
        api.apply(base(Some(new)))?;
        let deadline = since + CHANGE_TIMEOUT;
        let first = loop {
            if let Some(at) = new.first_served() {
                break Some(at);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let Some(first) = first else {
            lost += 1;
            api.apply(base(None))?;
            continue;
        };
        add.push(ms(&first.saturating_duration_since(since)));

        let since = Instant::now();
        api.apply(base(None))?;
        let deadline = since + CHANGE_TIMEOUT;
        loop {
            let last = new.last_served().map_or(since, |l| l.max(since));
            if last.elapsed() >= REMOVED_AFTER || Instant::now() >= deadline {
                remove.push(ms(&last.saturating_duration_since(since)));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    windows.push(phase.finish()?);
    let stats = load.end();
    Ok(ProxyPropagation {
        samples: s.proxy_samples,
        workers: s.proxy_workers,
        lost,
        add_ms: Summary::of(&add),
        remove_ms: Summary::of(&remove),
        requests: stats.count + stats.errors,
        errors: stats.errors,
        first_error: stats.first_error,
        raw_add_ms: add,
        raw_remove_ms: remove,
    })
}

pub(crate) const SLOW: &str = "slow";

async fn balancing(
    s: &Settings,
    api: &FakeKube,
    destination: SocketAddr,
    proxy: SocketAddr,
    windows: &mut Vec<Window>,
    cpid: u32,
    ppid: u32,
) -> anyhow::Result<Vec<BalanceRun>> {
    let svc = Probe {
        name: "balance",
        cluster_ip: Ipv4Addr::new(198, 19, 127, 2),
    };
    let port = free_port();
    let fast = Duration::from_secs_f64(s.fast_ms / 1e3);
    let slow = Duration::from_secs_f64(s.slow_ms / 1e3);
    let mut backends = Vec::new();
    for (i, (name, delay)) in [("fast-0", fast), ("fast-1", fast), (SLOW, slow)]
        .into_iter()
        .enumerate()
    {
        let addr = SocketAddr::from((backend_ip(79, i), port));
        backends.push(Backend::start(name, addr, delay).await?);
    }
    let pods: Vec<_> = backends.iter().map(|b| svc.pod(&b.name, b.addr)).collect();
    api.apply_all(pods)?;
    api.apply(svc.service(port))?;
    let eps: Vec<(&str, SocketAddr)> = backends.iter().map(|b| (b.name.as_str(), b.addr)).collect();
    api.apply(svc.slice(&eps))?;
    streams::await_endpoints(destination, &svc.authority(), 3, Duration::from_secs(20)).await?;

    let proxied = Target::Proxy {
        proxy,
        authority: svc.authority(),
    };
    let direct = Target::RoundRobin(backends.iter().map(|b| b.addr).collect());
    let d = Duration::from_secs_f64(s.balance_secs);
    let procs = [
        (CONTROLLER, cpid),
        (PROXY, ppid),
        (BENCH, std::process::id()),
    ];
    let mut runs = Vec::new();

    // Cold start: the first requests after the proxy discovered the service, when it
    // knows nothing of the backends' latencies yet.
    let phase = Phase::start("5. balancing", &procs)?;
    let started = Instant::now();
    let cold = ClosedLoop::start(proxied.clone(), COLD_START_CONCURRENCY);
    cold.begin();
    for b in &backends {
        wait_served(b, Duration::from_secs(20))
            .await
            .context("the proxy never reached every balanced backend")?;
    }
    tokio::time::sleep_until((started + d).into()).await;
    let p = cold.end();
    drop(cold);
    let mut w = phase.finish()?;
    w.phase = format!("5. balancing, cold start, {COLD_START_CONCURRENCY} in flight");
    windows.push(w);
    progress(format_args!(
        "balancing, cold start: slow share {:.1}% through the proxy; p99 {:.2} ms",
        p.share(SLOW) * 100.0,
        p.latency_us.p99 / 1e3,
    ));
    runs.push(BalanceRun {
        load: format!("cold start, {COLD_START_CONCURRENCY} in flight"),
        cold: true,
        proxied: p,
        round_robin: None,
    });
    for &c in &s.concurrency {
        let phase = Phase::start("5. balancing", &procs)?;
        let p = ClosedLoop::start(proxied.clone(), c)
            .measure(BALANCE_WARMUP, d)
            .await;
        let r = ClosedLoop::start(direct.clone(), c)
            .measure(BALANCE_WARMUP, d)
            .await;
        let mut w = phase.finish()?;
        w.phase = format!("5. balancing, {c} in flight (proxied, then round-robin)");
        windows.push(w);
        progress(format_args!(
            "balancing, {c} in flight: slow share {:.1}% through the proxy ({:.1}% round-robin); p99 {:.2} vs {:.2} ms",
            p.share(SLOW) * 100.0,
            r.share(SLOW) * 100.0,
            p.latency_us.p99 / 1e3,
            r.latency_us.p99 / 1e3
        ));
        runs.push(BalanceRun {
            load: format!("closed loop, {c} in flight"),
            cold: false,
            proxied: p,
            round_robin: Some(r),
        });
    }
    if s.rate > 0.0 {
        let phase = Phase::start("5. balancing", &procs)?;
        let p = load::open_loop(proxied, s.rate, OPEN_LOOP_CONNS, BALANCE_WARMUP, d).await;
        let r = load::open_loop(direct, s.rate, OPEN_LOOP_CONNS, BALANCE_WARMUP, d).await;
        let mut w = phase.finish()?;
        w.phase = format!("5. balancing, {} rps (proxied, then round-robin)", s.rate);
        windows.push(w);
        progress(format_args!(
            "balancing, {} rps: slow share {:.1}% through the proxy ({:.1}% round-robin); p99 {:.2} vs {:.2} ms",
            s.rate,
            p.share(SLOW) * 100.0,
            r.share(SLOW) * 100.0,
            p.latency_us.p99 / 1e3,
            r.latency_us.p99 / 1e3
        ));
        runs.push(BalanceRun {
            load: format!("open loop, {} rps", s.rate),
            cold: false,
            proxied: p,
            round_robin: Some(r),
        });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A phase's window keeps the JSON it had before the machine's cores were a shared
    /// type: the three machine figures beside the phase's other fields, in order.
    #[test]
    fn window_json_is_flat() {
        let w = Window {
            phase: "p".to_string(),
            seconds: 2.0,
            machine: MachineWindow {
                busy_cores: 1.5,
                softirq_cores: 0.25,
                steal_cores: 0.125,
            },
            procs: BTreeMap::from([("bench".to_string(), 0.5)]),
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"phase":"p","seconds":2.0,"busy_cores":1.5,"softirq_cores":0.25,"steal_cores":0.125,"procs":{"bench":0.5}}"#
        );
        assert_eq!(w.other_cores(), 0.75);
        let back: Window = serde_json::from_str(&json).unwrap();
        assert_eq!(back.machine.steal_cores, 0.125);
    }
}
