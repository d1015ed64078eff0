//! `mesh-bench run`: the orchestrator.
//!
//! ```text
//!  netns mesh-bench-client                       netns mesh-bench-server
//!  ┌──────────────────────────────┐  veth pair   ┌──────────────────────────────────┐
//!  │ load (root) ─┬─ :8081 direct ─┼──────────────┼─────────────────────▶ backend :8081 │
//!  │              └─ :8080 ─▶ outbound proxy ─────┼─▶ inbound proxy ────▶ backend :8080 │
//!  │   198.18.200.1/30            │              │ 198.18.200.2/30                  │
//!  └──────────────────────────────┘              └──────────────────────────────────┘
//! ```
//!
//! Both namespaces get `mesh-proxy init` (iptables REDIRECT, the proxy's uid exempt)
//! with port 8081 skipped, and a `mesh-proxy` running as that uid; the backend listens
//! on both ports. So the direct and proxied runs differ only in the port the generator
//! targets, and can be interleaved at each rate with the proxies, the iptables rules
//! and conntrack in place for both.

use crate::{
    load::{LoadResult, Proto},
    report,
    sys::{self, DropGuard, Guard, MachineWindow, Meter, Sample},
    tcp::ConnectResult,
};
use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const NS_CLIENT: &str = "mesh-bench-client";
const NS_SERVER: &str = "mesh-bench-server";
const IF_CLIENT: &str = "mbench-c";
const IF_SERVER: &str = "mbench-s";
// RFC 2544 benchmarking space (198.18.0.0/15), nothing a real network uses.
const CLIENT_IP: &str = "198.18.200.1";
const SERVER_IP: &str = "198.18.200.2";
const PORT_MESHED: u16 = 8080;
const PORT_DIRECT: u16 = 8081;
/// The backend's TCP echo listeners: opaque (MESH_PROXY_OPAQUE_PORTS) through the pair,
/// and skipped by both rules for the direct runs.
const PORT_ECHO_MESHED: u16 = 9090;
const PORT_ECHO_DIRECT: u16 = 9091;
const ADMIN: &str = "http://127.0.0.1:4191";
/// With `--mtls`: the controller runs in the server namespace, on ports both rules skip.
const CONTROLLER_DESTINATION_PORT: u16 = 8086;
const CONTROLLER_IDENTITY_PORT: u16 = 8083;
const CONTROLLER_ADMIN: &str = "127.0.0.1:9990";
/// Its metrics and tap APIs, for `--tap-with`'s subscriber beside it.
const CONTROLLER_API_PORT: u16 = 8084;
const CONTROLLER_TAP_PORT: u16 = 8088;
const MESH_NS: &str = "bench";
const TRUST_DOMAIN: &str = "cluster.local";
const CONTROLLER: &str = "controller";

/// The processes whose CPU and memory are read: the two proxies first.
pub(crate) const OUTBOUND: &str = "outbound proxy";
pub(crate) const INBOUND: &str = "inbound proxy";
pub(crate) const BACKEND: &str = "backend";
pub(crate) const LOADGEN: &str = "load generator";
pub(crate) const TAP: &str = "tap subscriber";

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Protocols, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "h1,h2")]
    protos: Vec<Proto>,
    /// Fixed rates in requests per second, in order (each direct, then proxied).
    #[arg(long, value_delimiter = ',', default_value = "20,200,1000,2000")]
    rates: Vec<f64>,
    /// Connections for the fixed rates.
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// Rounds of the fixed rates (every rate direct then proxied, then again); the report
    /// gives medians over the rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured window of each fixed-rate run.
    #[arg(long, default_value = "10s", value_parser = mesh_api::duration::parse)]
    duration: Duration,
    /// Unrecorded load before each measured window.
    #[arg(long, default_value = "2s", value_parser = mesh_api::duration::parse)]
    warmup: Duration,
    /// Measured window of each maximum-throughput run.
    #[arg(long, default_value = "10s", value_parser = mesh_api::duration::parse)]
    max_duration: Duration,
    #[arg(long, default_value = "2s", value_parser = mesh_api::duration::parse)]
    max_warmup: Duration,
    /// HTTP/1.1 connections at maximum throughput (one request in flight each).
    #[arg(long, default_value_t = 32)]
    max_conns: usize,
    /// HTTP/2 connections at maximum throughput.
    #[arg(long, default_value_t = 4)]
    max_h2_conns: usize,
    /// Concurrent streams per HTTP/2 connection at maximum throughput.
    #[arg(long, default_value_t = 16)]
    max_h2_streams: usize,
    /// Maximum-throughput rounds (direct, proxied, direct, proxied, ...); the report
    /// takes the median of each.
    #[arg(long, default_value_t = 3)]
    max_rounds: usize,
    /// Backend runtime threads.
    #[arg(long, default_value_t = 1)]
    backend_threads: usize,
    /// The proxy binary (default: `mesh-proxy` beside this binary).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// Mutual TLS between the proxies: start `mesh-controller` (file backend, identity
    /// and destination services) in the server namespace, give both proxies an identity
    /// and discovery, and announce the backend as a meshed endpoint. After the run both
    /// proxies' `/metrics` must show the outbound traffic as `tls="true"`, or the run fails.
    #[arg(long)]
    mtls: bool,
    /// The controller binary for `--mtls` (default: `mesh-controller` beside this binary).
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// With `--mtls`: one tap subscriber on the inbound proxy for the whole run, to
    /// measure tap's cost with someone watching. This is the `mesh` CLI to run it with:
    /// `mesh tap po/backend-0 -o json` through the controller's tap API, so the
    /// proxy serves a real mTLS `Observe` stream, headers included.
    #[arg(long, value_name = "MESH_BIN", requires = "mtls")]
    tap_with: Option<PathBuf>,
    /// With `--mtls`: inbound authorization policy on the server proxy, to measure its
    /// cost. `default`: policy on with no `Server`, so the ports fall back to the
    /// default `all-unauthenticated` (what every meshed pod pays once policy ships);
    /// `authz-100`: a `Server` on the backend's ports and 100 `AuthorizationPolicy`s,
    /// each with its own `MeshTLSAuthentication` of one identity, the client's last (by
    /// name, the order the controller sends them in). After the run the inbound proxy's
    /// `inbound_http_authz_allow_total` must have counted the requests, or the run fails.
    #[arg(long, value_enum, requires = "mtls")]
    policy: Option<PolicyMode>,
    /// Requests a second the tap subscriber asks for (each is three events: request,
    /// response, end).
    #[arg(long, default_value_t = 100)]
    tap_max_rps: u32,
    /// Rounds of the new-connection test (opaque TCP, each connection a connect and a
    /// one-byte round trip; with `--mtls` each is a TLS handshake between the proxies),
    /// direct then proxied, `--max-duration` each; 0 skips it.
    #[arg(long, default_value_t = 3)]
    connect_rounds: usize,
    /// Connections being opened at once in the new-connection test (a closed loop).
    #[arg(long, default_value_t = 16)]
    connect_concurrency: usize,
    /// Idle opaque connections held open through the pair to measure the proxies' RSS per
    /// connection (after all other load); 0 skips it.
    #[arg(long, default_value_t = 1000)]
    idle_conns: usize,
    #[arg(long, default_value_t = 2102)]
    proxy_uid: u32,
    /// Extra proxy environment, KEY=VALUE (repeatable), e.g. MESH_PROXY_CORES=2.
    #[arg(long = "proxy-env")]
    proxy_env: Vec<String>,
    /// Where the report goes.
    #[arg(long, default_value = "docs/bench")]
    out_dir: PathBuf,
    /// Report file name without extension (default `proxy-<UTC date>`).
    #[arg(long)]
    name: Option<String>,
    /// Print the report only.
    #[arg(long)]
    no_write: bool,
    /// Before starting, wait up to this long for the machine to be quiet (other
    /// processes using at most --busy-threshold cores); 0s = start at once. Either way the report shows
    /// how busy the machine was.
    #[arg(long, default_value = "0s", value_parser = mesh_api::duration::parse)]
    wait_quiet: Duration,
    /// Cores that other processes and the hypervisor (steal) may take during a run (see
    /// *other CPU + steal* in the report) before its direct/proxied pair is run again.
    #[arg(long, default_value_t = 0.2)]
    busy_threshold: f64,
    /// How many times a pair is run again when the machine was busy (the last attempt
    /// is kept, with its *other CPU* shown).
    #[arg(long, default_value_t = 2)]
    busy_retries: usize,
    /// Set everything up, print how to send load by hand, and wait for Ctrl-C (then
    /// clean up): for profiling or reproducing something.
    #[arg(long)]
    setup_only: bool,
}

/// A process's CPU and memory over one measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ProcWindow {
    pub(crate) before: Sample,
    pub(crate) after: Sample,
    /// Highest VmRSS seen, sampled every 100 ms through the window.
    pub(crate) rss_peak_kib: u64,
}

impl ProcWindow {
    pub(crate) fn cpu_ns(&self) -> u64 {
        self.after.cpu_ns.saturating_sub(self.before.cpu_ns)
    }

    /// Cores in use over a window of `window_s`.
    pub(crate) fn cores(&self, window_s: f64) -> f64 {
        sys::cores(self.cpu_ns(), window_s)
    }
}

/// Cores busy on the machine over a window but in none of `procs` (the benchmark's own
/// processes) nor in softirq: other processes.
pub(crate) fn other_cores(
    machine: &MachineWindow,
    procs: &BTreeMap<String, ProcWindow>,
    window_s: f64,
) -> f64 {
    machine.other_cores(procs.values().map(|p| p.cores(window_s)).sum())
}

/// One load run and what was measured around it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub(crate) proto: Proto,
    /// `None`: maximum throughput.
    pub(crate) rate: Option<f64>,
    pub(crate) proxied: bool,
    /// Wall time between the generator's `measuring` and `measured` events.
    pub(crate) window_s: f64,
    pub(crate) load: LoadResult,
    pub(crate) procs: BTreeMap<String, ProcWindow>,
    /// Proxied runs: increase of each proxy's `request_total` over the whole run
    /// (warm-up included), to show the traffic really went through both.
    pub(crate) proxy_requests: BTreeMap<String, u64>,
    pub(crate) machine: MachineWindow,
}

impl RunRecord {
    /// Cores busy on the machine but neither in the benchmark's processes nor in
    /// softirq (mostly the benchmark's own network traffic): other processes.
    pub(crate) fn other_cores(&self) -> f64 {
        if self.window_s <= 0.0 {
            return 0.0;
        }
        other_cores(&self.machine, &self.procs, self.window_s)
    }

    /// CPU the benchmark could not have: other processes' and the hypervisor's (steal).
    pub(crate) fn disturbance(&self) -> f64 {
        self.other_cores() + self.machine.steal_cores
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) date: String,
    pub(crate) command: String,
    pub(crate) git: String,
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) memory: String,
    pub(crate) proxy_env: Vec<String>,
    pub(crate) conns: usize,
    pub(crate) rounds: usize,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) max_duration_s: f64,
    pub(crate) max_h1_conns: usize,
    pub(crate) max_h2_conns: usize,
    pub(crate) max_h2_streams: usize,
    pub(crate) max_rounds: usize,
    pub(crate) backend_threads: usize,
    /// Clock ticks per second, the unit of `cpu_ticks` in the samples.
    pub(crate) clock_ticks_per_sec: u64,
    pub(crate) elapsed_s: f64,
    /// Cores in use on the machine just before the benchmark started.
    pub(crate) busy_before_cores: f64,
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
    /// Direct/proxied pairs run again because other processes were busy.
    pub(crate) pairs_rerun: usize,
    /// Mutual TLS between the proxies (`--mtls`).
    #[serde(default)]
    pub(crate) mtls: bool,
    /// `--tap-with`: the tap subscriber's `--max-rps`.
    #[serde(default)]
    pub(crate) tap_max_rps: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) meta: Meta,
    /// Each proxy after start, before any traffic.
    pub(crate) idle: BTreeMap<String, Sample>,
    /// Each proxy's CPU with no traffic, in cores, over 5 s.
    pub(crate) idle_cpu_cores: BTreeMap<String, f64>,
    /// Each proxy at the end, 2 s after the last run.
    pub(crate) end: BTreeMap<String, Sample>,
    pub(crate) runs: Vec<RunRecord>,
    /// What the proxies logged at `warn` and above (first lines).
    pub(crate) proxy_logs: BTreeMap<String, Vec<String>>,
    /// New opaque TCP connections per second, direct and proxied.
    #[serde(default)]
    pub(crate) connects: Vec<ConnectRecord>,
    /// The proxies' memory with many idle connections open through them.
    #[serde(default)]
    pub(crate) idle_conns: Option<IdleConns>,
    /// With `--mtls`: what the proxies' metrics said about TLS after the run.
    #[serde(default)]
    pub(crate) tls_check: Option<TlsCheck>,
    /// With `--tap-with`: what the tap subscriber received over the whole run.
    #[serde(default)]
    pub(crate) tap: Option<TapRecord>,
}

/// The tap subscriber of `--tap-with`, over the whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TapRecord {
    /// Events it printed (one JSON object a line).
    pub(crate) events: u64,
    /// Its CPU over the whole run, and the controller's, in seconds.
    pub(crate) subscriber_cpu_s: f64,
    pub(crate) controller_cpu_s: f64,
}

/// One run of `mesh-bench connects`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConnectRecord {
    pub(crate) proxied: bool,
    pub(crate) window_s: f64,
    pub(crate) result: ConnectResult,
    pub(crate) procs: BTreeMap<String, ProcWindow>,
    pub(crate) machine: MachineWindow,
}

impl ConnectRecord {
    /// CPU per connection of `proc`, µs.
    pub(crate) fn us_per_conn(&self, proc: &str) -> Option<f64> {
        let p = self.procs.get(proc)?;
        (self.result.count > 0).then(|| p.cpu_ns() as f64 / 1e3 / self.result.count as f64)
    }
}

/// `--idle-conns` connections held open through the pair.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct IdleConns {
    pub(crate) requested: usize,
    pub(crate) opened: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Each proxy before opening them, 2 s after opening them all, and 2 s after they closed.
    pub(crate) before: BTreeMap<String, Sample>,
    pub(crate) held: BTreeMap<String, Sample>,
    pub(crate) after: BTreeMap<String, Sample>,
    /// `tcp_open_total` increase in each proxy while opening them.
    pub(crate) tcp_opened: BTreeMap<String, u64>,
}

/// The proxies' metric series after the run, split by their `tls` label.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TlsCheck {
    /// Per proxy: the `request_total` series of its direction (outbound for the outbound
    /// proxy, inbound for the inbound one) and the `tcp_open_total` series of its mesh
    /// side (`peer="dst"` outbound, `peer="src"` inbound) with a non-zero value.
    pub(crate) series: BTreeMap<String, TlsSeries>,
    pub(crate) passed: bool,
    /// Why it failed, if it did.
    pub(crate) problems: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TlsSeries {
    pub(crate) requests_tls: u64,
    pub(crate) requests_plain: u64,
    pub(crate) conns_tls: u64,
    pub(crate) conns_plain: u64,
    /// Peer identities seen (`server_id` outbound, `client_id` inbound).
    pub(crate) peers: Vec<String>,
    /// A few of the series, as scraped.
    pub(crate) examples: Vec<String>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    preflight()?;
    let loadavg_start = sys::loadavg();
    let busy_before = wait_quiet(args.wait_quiet, args.busy_threshold)?;
    let self_exe = std::env::current_exe().context("finding this binary")?;
    let proxy_bin = match &args.proxy_bin {
        Some(p) => p.clone(),
        None => self_exe.with_file_name("mesh-proxy"),
    };
    if !proxy_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --profile dist -p mesh-proxy) or pass --proxy-bin",
            proxy_bin.display()
        );
    }

    let guard = Guard::default();
    let _drop = DropGuard(guard.clone());
    guard.take_run_lock()?;
    guard.on_signal();

    let tmp = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    guard.set_tmp_dir(&tmp);
    let proxy_bin = reachable_by_others(&proxy_bin, &tmp)?;
    let controller_bin = match &args.controller_bin {
        Some(p) => p.clone(),
        None => self_exe.with_file_name("mesh-controller"),
    };
    if args.mtls && !controller_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p mesh-controller) or pass --controller-bin",
            controller_bin.display()
        );
    }

    let mut bench = Bench {
        args: &args,
        guard: guard.clone(),
        self_exe,
        pids: Vec::new(),
    };
    bench.network()?;
    bench.start_backend()?;
    bench.install_iptables(&proxy_bin)?;
    let outbound_log = tmp.join("outbound-proxy.log");
    let inbound_log = tmp.join("inbound-proxy.log");
    let (outbound_env, inbound_env) = if args.mtls {
        bench.start_controller(&controller_bin, &tmp)?
    } else {
        (Vec::new(), Vec::new())
    };
    bench.start_proxy(
        OUTBOUND,
        NS_CLIENT,
        &proxy_bin,
        &outbound_log,
        &outbound_env,
    )?;
    bench.start_proxy(INBOUND, NS_SERVER, &proxy_bin, &inbound_log, &inbound_env)?;

    std::thread::sleep(Duration::from_secs(1));
    let mut idle = BTreeMap::new();
    for (name, pid) in bench.proxies() {
        idle.insert(name.clone(), sys::sample(pid)?);
    }
    let idle_window = Duration::from_secs(5);
    std::thread::sleep(idle_window);
    let mut idle_cpu_cores = BTreeMap::new();
    for (name, pid) in bench.proxies() {
        let ns = sys::sample(pid)?.cpu_ns.saturating_sub(idle[&name].cpu_ns);
        idle_cpu_cores.insert(name.clone(), ns as f64 / idle_window.as_nanos() as f64);
    }
    bench.smoke_test()?;
    let tap = match &args.tap_with {
        Some(bin) => Some(bench.start_tap(bin, &tmp)?),
        None => None,
    };
    if args.setup_only {
        let exe = bench.self_exe.display();
        eprintln!(
            "mesh-bench: set up; Ctrl-C to tear down. Proxies: {:?}, backend and the rest: {:?}\n\
             direct:  ip netns exec {NS_CLIENT} {exe} load --target http://{SERVER_IP}:{PORT_DIRECT}/ --rate 2000\n\
             proxied: ip netns exec {NS_CLIENT} {exe} load --target http://{SERVER_IP}:{PORT_MESHED}/ --rate 2000\n\
             connects: ip netns exec {NS_CLIENT} {exe} connects --target {SERVER_IP}:{PORT_ECHO_MESHED}\n\
             metrics: ip netns exec {NS_CLIENT} {exe} probe --print {ADMIN}/metrics",
            bench.proxies(),
            bench.pids,
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    let mut runs = Vec::new();
    let mut retried = 0;
    for &proto in &args.protos {
        let mut loads: Vec<Option<f64>> = Vec::new();
        for _ in 0..args.rounds.max(1) {
            loads.extend(args.rates.iter().map(|r| Some(*r)));
        }
        loads.extend(std::iter::repeat_n(None, args.max_rounds.max(1)));
        for rate in loads {
            // A direct/proxied pair, run again if something else used the machine.
            let mut attempt = 0;
            let pair = loop {
                let pair = [
                    bench.load(proto, rate, false)?,
                    bench.load(proto, rate, true)?,
                ];
                let other = pair.iter().map(RunRecord::disturbance).fold(0.0, f64::max);
                if other <= args.busy_threshold || attempt >= args.busy_retries {
                    break pair;
                }
                attempt += 1;
                retried += 1;
                eprintln!(
                    "mesh-bench: other processes and the hypervisor (steal) took {other:.2} cores during that pair; \
                     running it again"
                );
                wait_quiet(Duration::from_secs(120), args.busy_threshold)?;
            };
            runs.extend(pair);
        }
    }
    let mut connects = Vec::new();
    for _ in 0..args.connect_rounds {
        connects.push(bench.connects(false)?);
        connects.push(bench.connects(true)?);
    }
    // Last: the proxies' allocators keep what the held connections used, which would
    // otherwise be counted in the RSS of every run after it.
    let idle_conns = if args.idle_conns > 0 {
        Some(bench.idle_conns()?)
    } else {
        None
    };
    let tls_check = if args.mtls {
        Some(bench.tls_check()?)
    } else {
        None
    };
    let tap = match tap {
        Some(out) => Some(bench.tap_record(&out)?),
        None => None,
    };

    std::thread::sleep(Duration::from_secs(2));
    let mut end = BTreeMap::new();
    for (name, pid) in bench.proxies() {
        end.insert(name.clone(), sys::sample(pid)?);
    }
    let mut proxy_logs = BTreeMap::new();
    for (name, log) in [(OUTBOUND, &outbound_log), (INBOUND, &inbound_log)] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text.lines().take(20).map(str::to_string).collect();
        proxy_logs.insert(name.to_string(), lines);
    }

    let mut meta = meta(&args, started.elapsed());
    meta.busy_before_cores = busy_before;
    meta.pairs_rerun = retried;
    meta.loadavg_start = loadavg_start;
    let results = Results {
        meta,
        idle,
        idle_cpu_cores,
        end,
        runs,
        proxy_logs,
        connects,
        idle_conns,
        tls_check,
        tap,
    };
    let markdown = report::render(&results);
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(markdown.as_bytes())?;
        out.flush()?;
    }
    if !args.no_write {
        let name = args.name.clone().unwrap_or_else(|| {
            let kind = if args.mtls { "proxy-mtls" } else { "proxy" };
            format!("{kind}-{}", results.meta.date)
        });
        mesh_bench::report::write("mesh-bench", &args.out_dir, &name, &markdown, &results)?;
    }
    if let Some(check) = &results.tls_check {
        if !check.passed {
            bail!(
                "the mTLS check failed: {} (the report above says what the metrics showed)",
                check.problems.join("; ")
            );
        }
        eprintln!("mesh-bench: mTLS check passed: every outbound and inbound series the run made is tls=\"true\"");
    }
    Ok(())
}

/// Waits (up to `max`) for a 2-s sample with at most `threshold` cores busy; returns
/// the last sample's busy cores.
fn wait_quiet(max: Duration, threshold: f64) -> anyhow::Result<f64> {
    sys::wait_quiet("mesh-bench", max, threshold, Duration::from_secs(2))
}

fn preflight() -> anyhow::Result<()> {
    if !mesh_integration_tests::is_root() {
        bail!("`mesh-bench run` needs root (network namespaces, iptables, setpriv)");
    }
    for tool in ["ip", "iptables", "setpriv"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} not found (apt-get install iproute2 iptables util-linux)");
        }
    }
    Ok(())
}

/// A path to `program` that the proxy's uid can execute: the path itself if every
/// directory above it is searchable by others, else a copy in `tmp`.
fn reachable_by_others(program: &Path, tmp: &Path) -> anyhow::Result<PathBuf> {
    let program = program.canonicalize()?;
    let others = |p: &Path, bits: u32| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & bits == bits)
            .unwrap_or(false)
    };
    if others(&program, 0o005) && program.ancestors().skip(1).all(|d| others(d, 0o001)) {
        return Ok(program);
    }
    let copy = tmp.join("mesh-proxy");
    std::fs::copy(&program, &copy)?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}

struct Bench<'a> {
    args: &'a Args,
    guard: Guard,
    self_exe: PathBuf,
    /// Long-lived processes: name, pid.
    pids: Vec<(String, u32)>,
}

impl Bench<'_> {
    fn proxies(&self) -> Vec<(String, u32)> {
        self.pids
            .iter()
            .filter(|(n, _)| n == OUTBOUND || n == INBOUND)
            .cloned()
            .collect()
    }

    fn network(&mut self) -> anyhow::Result<()> {
        for ns in [NS_CLIENT, NS_SERVER] {
            if sys::netns_exists(ns) {
                eprintln!("mesh-bench: deleting {ns}, left by an earlier run");
                sys::delete_netns(ns);
            }
        }
        for ns in [NS_CLIENT, NS_SERVER] {
            sys::run("ip", &["netns", "add", ns])?;
            self.guard.add_netns(ns);
            sys::run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        sys::run(
            "ip",
            &[
                "link", "add", IF_CLIENT, "netns", NS_CLIENT, "type", "veth", "peer", "name",
                IF_SERVER, "netns", NS_SERVER,
            ],
        )?;
        for (ns, ifname, ip) in [
            (NS_CLIENT, IF_CLIENT, CLIENT_IP),
            (NS_SERVER, IF_SERVER, SERVER_IP),
        ] {
            sys::run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/30"), "dev", ifname],
            )?;
            sys::run("ip", &["-n", ns, "link", "set", ifname, "up"])?;
            // The new-connection test opens tens of thousands of connections: let
            // TIME_WAIT ports be reused and widen the ephemeral range (both per netns).
            for setting in [
                "net.ipv4.tcp_tw_reuse=1",
                "net.ipv4.ip_local_port_range=1024 65000",
            ] {
                sys::run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", setting])?;
            }
        }
        Ok(())
    }

    fn in_ns(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `mesh-bench probe` inside `ns`.
    fn probe(&self, ns: &str, url: &str, timeout: &str, print: bool) -> anyhow::Result<String> {
        let mut c = self.in_ns(ns);
        c.arg(&self.self_exe)
            .args(["probe", url, "--timeout", timeout]);
        if print {
            c.arg("--print");
        }
        let out = c.output()?;
        if !out.status.success() {
            bail!("in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start_backend(&mut self) -> anyhow::Result<()> {
        let mut c = self.in_ns(NS_SERVER);
        c.arg(&self.self_exe).arg("backend");
        for port in [PORT_MESHED, PORT_DIRECT] {
            c.args(["--listen", &format!("0.0.0.0:{port}")]);
        }
        for port in [PORT_ECHO_MESHED, PORT_ECHO_DIRECT] {
            c.args(["--echo", &format!("0.0.0.0:{port}")]);
        }
        c.args(["--threads", &self.args.backend_threads.to_string()]);
        let pid = self.guard.add_child(
            BACKEND,
            c.stdout(Stdio::null())
                .spawn()
                .context("starting the backend")?,
        );
        self.pids.push((BACKEND.to_string(), pid));
        for port in [PORT_MESHED, PORT_DIRECT] {
            self.probe(
                NS_SERVER,
                &format!("http://127.0.0.1:{port}/"),
                "10s",
                false,
            )?;
        }
        self.probe(
            NS_CLIENT,
            &format!("http://{SERVER_IP}:{PORT_DIRECT}/"),
            "10s",
            false,
        )
        .context("the backend is not reachable over the veth pair")?;
        check_exec(BACKEND, pid, "mesh-bench");
        Ok(())
    }

    fn install_iptables(&self, proxy_bin: &Path) -> anyhow::Result<()> {
        let uid = self.args.proxy_uid.to_string();
        let direct = format!("{PORT_DIRECT},{PORT_ECHO_DIRECT}");
        // The controller's gRPC ports, which the client proxy reaches over the veth.
        let server_skip =
            format!("{direct},{CONTROLLER_DESTINATION_PORT},{CONTROLLER_IDENTITY_PORT}");
        for (ns, flag, skip) in [
            (NS_CLIENT, "--skip-outbound-ports", &direct),
            (NS_SERVER, "--skip-inbound-ports", &server_skip),
        ] {
            let out = self
                .in_ns(ns)
                .arg(proxy_bin)
                .args(["init", "--proxy-uid", &uid, flag, skip])
                .output()?;
            if !out.status.success() {
                bail!(
                    "mesh-proxy init in {ns} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }

    fn start_proxy(
        &mut self,
        name: &str,
        ns: &str,
        bin: &Path,
        log: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        let uid = self.args.proxy_uid;
        let mut c = self.in_ns(ns);
        c.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(bin)
        .env("MESH_PROXY_LOG", "warn")
        .env("MESH_PROXY_OPAQUE_PORTS", PORT_ECHO_MESHED.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
        for kv in &self.args.proxy_env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--proxy-env {kv:?}: expected KEY=VALUE"))?;
            c.env(k, v);
        }
        let pid = self.guard.add_child(
            name,
            c.spawn().with_context(|| format!("starting the {name}"))?,
        );
        self.pids.push((name.to_string(), pid));
        self.probe(ns, &format!("{ADMIN}/ready"), "20s", false)
            .with_context(|| {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                format!("the {name} did not become ready; its log:\n{log}")
            })?;
        check_exec(name, pid, "mesh-proxy");
        Ok(())
    }

    /// Sum of `request_total` of the proxy in `ns`.
    fn proxy_requests(&self, ns: &str) -> anyhow::Result<u64> {
        let text = self.probe(ns, &format!("{ADMIN}/metrics"), "5s", true)?;
        let metrics = mesh_integration_tests::Metrics::parse(&text)
            .with_context(|| format!("the proxy in {ns}"))?;
        Ok(metrics.sum("request_total", &[]) as u64)
    }

    /// One request over each path; the proxied one must show up in both proxies.
    fn smoke_test(&self) -> anyhow::Result<()> {
        let before = (
            self.proxy_requests(NS_CLIENT)?,
            self.proxy_requests(NS_SERVER)?,
        );
        self.probe(
            NS_CLIENT,
            &format!("http://{SERVER_IP}:{PORT_MESHED}/"),
            "5s",
            false,
        )
        .context("no answer through the proxies")?;
        self.probe(
            NS_CLIENT,
            &format!("http://{SERVER_IP}:{PORT_DIRECT}/"),
            "5s",
            false,
        )?;
        let after = (
            self.proxy_requests(NS_CLIENT)?,
            self.proxy_requests(NS_SERVER)?,
        );
        if after.0 != before.0 + 1 || after.1 != before.1 + 1 {
            bail!(
                "smoke test: request_total went from {before:?} to {after:?} (outbound, inbound); \
                 expected exactly one proxied request in each (is the iptables redirection in place?)"
            );
        }
        Ok(())
    }

    fn load(
        &mut self,
        proto: Proto,
        rate: Option<f64>,
        proxied: bool,
    ) -> anyhow::Result<RunRecord> {
        let a = self.args;
        let port = if proxied { PORT_MESHED } else { PORT_DIRECT };
        let (conns, duration, warmup) = match (rate, proto) {
            (Some(_), _) => (a.conns, a.duration, a.warmup),
            (None, Proto::H1) => (a.max_conns, a.max_duration, a.max_warmup),
            (None, Proto::H2) => (a.max_h2_conns, a.max_duration, a.max_warmup),
        };
        let mut c = self.in_ns(NS_CLIENT);
        c.arg(&self.self_exe)
            .args(["load", "--target", &format!("http://{SERVER_IP}:{port}/")]);
        c.args([
            "--proto",
            proto.as_str(),
            "--conns",
            &conns.to_string(),
            "--streams",
            &a.max_h2_streams.to_string(),
        ]);
        c.args(["--rate", &rate.map_or("max".to_string(), |r| r.to_string())]);
        c.args(["--duration", &format!("{}ms", duration.as_millis())]);
        c.args(["--warmup", &format!("{}ms", warmup.as_millis())]);
        c.stdout(Stdio::piped());

        let requests_before = if proxied {
            [
                (OUTBOUND, self.proxy_requests(NS_CLIENT)?),
                (INBOUND, self.proxy_requests(NS_SERVER)?),
            ]
        } else {
            [(OUTBOUND, 0), (INBOUND, 0)]
        };

        let (window_s, procs, machine, result) = self.measured(c)?;
        let load: LoadResult = serde_json::from_value(result)?;

        let mut proxy_requests = BTreeMap::new();
        if proxied {
            let after = [
                self.proxy_requests(NS_CLIENT)?,
                self.proxy_requests(NS_SERVER)?,
            ];
            for ((name, before), after) in requests_before.iter().zip(after) {
                proxy_requests.insert(name.to_string(), after.saturating_sub(*before));
            }
        }
        let record = RunRecord {
            proto,
            rate,
            proxied,
            window_s,
            load,
            procs,
            proxy_requests,
            machine,
        };
        eprintln!("{}", report::progress_line(&record));
        Ok(record)
    }

    /// Runs a generator (`load` or `connects`, stdout piped) to completion, reading
    /// every watched process's CPU and RSS, and the machine's, at its `measuring` and
    /// `measured` events; returns the window, those, and its `result`.
    fn measured(
        &mut self,
        mut c: Command,
    ) -> anyhow::Result<(
        f64,
        BTreeMap<String, ProcWindow>,
        MachineWindow,
        serde_json::Value,
    )> {
        let mut child = c.spawn().context("starting the load generator")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let load_pid = self.guard.add_child(LOADGEN, child);
        let mut watched = self.pids.clone();
        watched.push((LOADGEN.to_string(), load_pid));

        let mut procs: BTreeMap<String, ProcWindow> = BTreeMap::new();
        let mut meter: Option<Meter> = None;
        let mut window_s = 0.0;
        let mut sampler: Option<RssSampler> = None;
        let mut result: Option<serde_json::Value> = None;
        let mut machine = MachineWindow::default();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => {
                    eprintln!("mesh-bench load: {line}");
                    continue;
                }
            };
            match v["event"].as_str() {
                Some("measuring") => {
                    meter = Some(Meter::start(watched.iter().cloned())?);
                    sampler = Some(rss_sampler(watched.clone()));
                }
                Some("measured") => {
                    if let Some(meter) = meter.take() {
                        let m = meter.finish()?;
                        window_s = m.seconds;
                        machine = m.machine;
                        for (name, before, after) in m.procs {
                            let p = procs.entry(name).or_default();
                            (p.before, p.after) = (before, after);
                        }
                    }
                    if let Some((stop, handle)) = sampler.take() {
                        stop.store(true, Ordering::Relaxed);
                        for (name, peak) in handle.join().unwrap_or_default() {
                            procs.entry(name).or_default().rss_peak_kib = peak;
                        }
                    }
                }
                Some("result") => result = Some(v["result"].clone()),
                _ => {}
            }
        }
        if let Some((stop, _)) = sampler.take() {
            stop.store(true, Ordering::Relaxed);
        }
        let status = match self.guard.take_child(load_pid) {
            Some(mut child) => child.wait()?,
            None => bail!("interrupted"),
        };
        if !status.success() {
            bail!("the load generator failed ({status})");
        }
        let result = result.context("the load generator printed no result")?;
        Ok((window_s, procs, machine, result))
    }

    /// One run of `mesh-bench connects`, direct or through the pair.
    fn connects(&mut self, proxied: bool) -> anyhow::Result<ConnectRecord> {
        let a = self.args;
        let port = if proxied {
            PORT_ECHO_MESHED
        } else {
            PORT_ECHO_DIRECT
        };
        let mut c = self.in_ns(NS_CLIENT);
        c.arg(&self.self_exe)
            .args(["connects", "--target", &format!("{SERVER_IP}:{port}")])
            .args(["--concurrency", &a.connect_concurrency.to_string()])
            .args(["--duration", &format!("{}ms", a.max_duration.as_millis())])
            .args(["--warmup", &format!("{}ms", a.max_warmup.as_millis())])
            .stdout(Stdio::piped());
        let (window_s, procs, machine, result) = self.measured(c)?;
        let record = ConnectRecord {
            proxied,
            window_s,
            result: serde_json::from_value(result)?,
            procs,
            machine,
        };
        eprintln!("{}", report::connect_progress_line(&record));
        Ok(record)
    }

    /// Sum of `tcp_open_total` of the proxy in `ns`.
    fn proxy_tcp_opens(&self, ns: &str) -> anyhow::Result<u64> {
        let text = self.probe(ns, &format!("{ADMIN}/metrics"), "5s", true)?;
        let metrics = mesh_integration_tests::Metrics::parse(&text)
            .with_context(|| format!("the proxy in {ns}"))?;
        Ok(metrics.sum("tcp_open_total", &[]) as u64)
    }

    /// Opens `--idle-conns` opaque connections through the pair and reads both
    /// proxies' memory before, while they are held, and after they closed.
    fn idle_conns(&mut self) -> anyhow::Result<IdleConns> {
        let settle = Duration::from_secs(2);
        let proxies = self.proxies();
        let sample_all = || -> anyhow::Result<BTreeMap<String, Sample>> {
            proxies
                .iter()
                .map(|(n, pid)| Ok((n.clone(), sys::sample(*pid)?)))
                .collect()
        };
        let opens_before = [
            self.proxy_tcp_opens(NS_CLIENT)?,
            self.proxy_tcp_opens(NS_SERVER)?,
        ];
        std::thread::sleep(settle);
        let before = sample_all()?;
        let mut c = self.in_ns(NS_CLIENT);
        c.arg(&self.self_exe)
            .args([
                "hold",
                "--target",
                &format!("{SERVER_IP}:{PORT_ECHO_MESHED}"),
            ])
            .args(["--conns", &self.args.idle_conns.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = c.spawn().context("starting mesh-bench hold")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let pid = self.guard.add_child("hold", child);
        let mut opened = None;
        for line in BufReader::new(stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
            if v["event"] == "open" {
                opened = Some(v);
                break;
            }
        }
        let opened = opened.context("mesh-bench hold did not open its connections")?;
        std::thread::sleep(settle);
        let held = sample_all()?;
        let opens_held = [
            self.proxy_tcp_opens(NS_CLIENT)?,
            self.proxy_tcp_opens(NS_SERVER)?,
        ];
        drop(stdin);
        if let Some(mut child) = self.guard.take_child(pid) {
            child.wait()?;
        }
        std::thread::sleep(settle);
        let after = sample_all()?;
        let res = IdleConns {
            requested: self.args.idle_conns,
            opened: opened["count"].as_u64().unwrap_or(0),
            errors: opened["errors"].as_u64().unwrap_or(0),
            first_error: opened["first_error"].as_str().map(str::to_string),
            before,
            held,
            after,
            tcp_opened: [OUTBOUND, INBOUND]
                .iter()
                .zip(opens_held.iter().zip(opens_before))
                .map(|(n, (h, b))| (n.to_string(), h.saturating_sub(b)))
                .collect(),
        };
        eprintln!("{}", report::idle_conns_line(&res));
        Ok(res)
    }

    /// Scrapes both proxies' metrics and checks that all the traffic between them was
    /// mutual TLS.
    fn tls_check(&self) -> anyhow::Result<TlsCheck> {
        let mut check = TlsCheck::default();
        // The mesh side of each proxy: the connections the outbound proxy opened to its
        // peer (`peer="dst"`) and those the inbound proxy accepted from it (`peer="src"`);
        // the other sides are the application's own plaintext connections to its proxy.
        for (name, ns, direction, peer_key, mesh_peer) in [
            (OUTBOUND, NS_CLIENT, "outbound", "server_id", "dst"),
            (INBOUND, NS_SERVER, "inbound", "client_id", "src"),
        ] {
            let text = self.probe(ns, &format!("{ADMIN}/metrics"), "5s", true)?;
            let samples = mesh_api::prom::parse(&text)
                .with_context(|| format!("the {name}'s /metrics is not Prometheus text"))?;
            let mut s = TlsSeries::default();
            for sample in &samples {
                let is_req = sample.name == "request_total";
                let is_conn = sample.name == "tcp_open_total";
                if !(is_req || is_conn) || sample.label("direction") != Some(direction) {
                    continue;
                }
                if is_conn && sample.label("peer") != Some(mesh_peer) {
                    continue;
                }
                let n = sample.value as u64;
                if n == 0 {
                    continue;
                }
                let tls = sample.label("tls") == Some("true");
                match (is_req, tls) {
                    (true, true) => s.requests_tls += n,
                    (true, false) => s.requests_plain += n,
                    (false, true) => s.conns_tls += n,
                    (false, false) => s.conns_plain += n,
                }
                if let Some(id) = sample.label(peer_key) {
                    if !s.peers.iter().any(|p| p == id) {
                        s.peers.push(id.to_string());
                    }
                }
                if s.examples.len() < 4 {
                    let labels: Vec<String> = sample
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect();
                    s.examples.push(format!(
                        "{}{{{}}} {}",
                        sample.name,
                        labels.join(","),
                        sample.value
                    ));
                }
            }
            if s.requests_tls == 0 || s.conns_tls == 0 {
                check.problems.push(format!(
                    "the {name} shows no {direction} requests or connections with tls=\"true\""
                ));
            }
            if s.requests_plain > 0 || s.conns_plain > 0 {
                check.problems.push(format!(
                    "the {name} shows {} requests and {} connections {direction} without TLS",
                    s.requests_plain, s.conns_plain
                ));
            }
            check.series.insert(name.to_string(), s);
        }
        if let Some(mode) = self.args.policy {
            check.problems.extend(self.policy_check(mode)?);
        }
        check.passed = check.problems.is_empty();
        Ok(check)
    }

    /// With `--policy`: what is wrong with the inbound proxy's authorization counters,
    /// if anything: its requests must have been allowed, each by the authorization the
    /// mode makes them pass (the client's, the last of 100; or the default's), and
    /// none denied.
    fn policy_check(&self, mode: PolicyMode) -> anyhow::Result<Vec<String>> {
        let text = self.probe(NS_SERVER, &format!("{ADMIN}/metrics"), "5s", true)?;
        let samples = mesh_api::prom::parse(&text)
            .with_context(|| format!("the {INBOUND}'s /metrics is not Prometheus text"))?;
        let want = match mode {
            PolicyMode::Default => "all-unauthenticated",
            PolicyMode::Authz100 => "authz-http-099",
        };
        let sum = |name: &str, authz: Option<&str>| -> f64 {
            samples
                .iter()
                .filter(|s| s.name == name && (authz.is_none() || s.label("authz_name") == authz))
                .map(|s| s.value)
                .sum()
        };
        let mut problems = Vec::new();
        if sum("inbound_http_authz_allow_total", Some(want)) == 0.0 {
            problems.push(format!(
                "the {INBOUND} counted no request allowed by authorization {want:?} (--policy {mode:?})"
            ));
        }
        let denied =
            sum("inbound_http_authz_deny_total", None) + sum("inbound_tcp_authz_deny_total", None);
        if denied > 0.0 {
            problems.push(format!(
                "the {INBOUND} denied {denied} requests or connections"
            ));
        }
        Ok(problems)
    }

    /// Starts the tap subscriber of `--tap-with` in the server namespace, beside the
    /// controller; counted among the benchmark's processes, so its CPU and the
    /// controller's are not taken for another process's. Returns where it writes.
    fn start_tap(&mut self, mesh: &Path, tmp: &Path) -> anyhow::Result<PathBuf> {
        let out = tmp.join("tap.out");
        let err = tmp.join("tap.err");
        let mut c = self.in_ns(NS_SERVER);
        c.arg(mesh)
            .args(["tap", "po/backend-0", "-n", MESH_NS, "-o", "json"])
            .args(["--max-rps", &self.args.tap_max_rps.to_string()])
            .args(["--api-addr", &format!("127.0.0.1:{CONTROLLER_API_PORT}")])
            .args(["--tap-addr", &format!("127.0.0.1:{CONTROLLER_TAP_PORT}")])
            .env("MESH_LOG", "warn")
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?);
        let pid = self
            .guard
            .add_child(TAP, c.spawn().context("starting the tap subscriber")?);
        self.pids.push((TAP.to_string(), pid));
        // The stream is open once the inbound proxy counts a subscriber.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let metrics = self.probe(NS_SERVER, &format!("{ADMIN}/metrics"), "2s", true)?;
            if metrics
                .lines()
                .any(|l| l.starts_with("tap_subscribers ") && !l.ends_with(" 0"))
            {
                return Ok(out);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&err).unwrap_or_default();
                bail!("the tap subscriber did not reach the inbound proxy in 20s; it said:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What the tap subscriber received; an error if it received nothing, since then
    /// the run measured no tap at all.
    fn tap_record(&self, out: &Path) -> anyhow::Result<TapRecord> {
        let text = std::fs::read_to_string(out)?;
        let events = text.lines().filter(|l| l.starts_with('{')).count() as u64;
        if events == 0 {
            let err = std::fs::read_to_string(out.with_file_name("tap.err")).unwrap_or_default();
            bail!("the tap subscriber received no events; it said:\n{err}");
        }
        let cpu = |name: &str| {
            self.pids
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, pid)| sys::sample(*pid).ok())
                .map_or(0.0, |s| s.cpu_ns as f64 / 1e9)
        };
        Ok(TapRecord {
            events,
            subscriber_cpu_s: cpu(TAP),
            controller_cpu_s: cpu(CONTROLLER),
        })
    }

    /// Makes a CA (the controller's CA code) and tokens, writes the controller's destinations file
    /// (the backend's pod, with its identity), starts `mesh-controller` in the server
    /// namespace, and returns the proxies' identity and discovery environment.
    #[allow(clippy::type_complexity)]
    fn start_controller(
        &mut self,
        bin: &Path,
        tmp: &Path,
    ) -> anyhow::Result<(Vec<(String, String)>, Vec<(String, String)>)> {
        let dir = tmp.join("identity");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let anchors = dir.join("anchor.pem");
        let issuer_cert = dir.join("issuer.crt");
        let issuer_key = dir.join("issuer.key");
        make_ca(&anchors, &issuer_cert, &issuer_key)?;
        let anchors_pem = std::fs::read_to_string(&anchors)?;

        let mut table = String::new();
        let mut token_files = BTreeMap::new();
        for sa in ["client", "server"] {
            let bytes: [u8; 24] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            table.push_str(&format!("{token} {MESH_NS}/{sa}\n"));
            // Readable by the proxy's uid; the directory is removed at exit.
            let file = dir.join(format!("{sa}.token"));
            std::fs::write(&file, &token)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
            token_files.insert(sa, file);
        }
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, table)?;
        let identity =
            |sa: &str| mesh_api::names::ServiceAccount::new(MESH_NS, sa).identity(TRUST_DOMAIN);

        // The backend's pod: found by IP (transparent discovery of 198.18.200.2:<port>),
        // meshed, with the server proxy's identity.
        let file = dir.join("destinations.yaml");
        std::fs::write(
            &file,
            format!(
                "services:
  - name: backend
    namespace: {MESH_NS}
    ports: [{{name: http, port: {PORT_MESHED}, targetPort: {PORT_MESHED}}}, {{name: echo, port: {PORT_ECHO_MESHED}, targetPort: {PORT_ECHO_MESHED}}}]
    endpoints:
      - address: \"{SERVER_IP}\"
        labels: {{pod: backend-0, deployment: backend, serviceaccount: server}}
        identity: {}
{}",
                identity("server"),
                self.args
                    .policy
                    .map(|m| policies_yaml(m, &identity("client")))
                    .unwrap_or_default(),
            ),
        )?;
        let log = tmp.join("controller.log");
        let mut c = self.in_ns(NS_SERVER);
        c.arg(bin)
            .args(["--backend", "file", "--file"])
            .arg(&file)
            .args([
                "--destination-addr",
                &format!("0.0.0.0:{CONTROLLER_DESTINATION_PORT}"),
            ])
            .args(["--admin-addr", CONTROLLER_ADMIN])
            .args(["--api-addr", &format!("127.0.0.1:{CONTROLLER_API_PORT}")])
            .args(["--tap-addr", &format!("127.0.0.1:{CONTROLLER_TAP_PORT}")])
            .args([
                "--identity-addr",
                &format!("0.0.0.0:{CONTROLLER_IDENTITY_PORT}"),
            ])
            .arg("--identity-trust-anchors")
            .arg(&anchors)
            .arg("--identity-issuer-cert")
            .arg(&issuer_cert)
            .arg("--identity-issuer-key")
            .arg(&issuer_key)
            .arg("--identity-tokens")
            .arg(&tokens)
            .env("MESH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let pid = self
            .guard
            .add_child(CONTROLLER, c.spawn().context("starting mesh-controller")?);
        if self.args.tap_with.is_some() {
            // Its tap fan-out works during the runs: the benchmark's own CPU.
            self.pids.push((CONTROLLER.to_string(), pid));
        }
        self.probe(
            NS_SERVER,
            &format!("http://{CONTROLLER_ADMIN}/ready"),
            "20s",
            false,
        )
        .with_context(|| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("the controller did not become ready; its log:\n{log}")
        })?;
        check_exec(CONTROLLER, pid, "mesh-controller");

        let env = |sa: &str, controller_host: &str| {
            vec![
                (
                    "MESH_PROXY_DESTINATION_ADDR".to_string(),
                    format!("{controller_host}:{CONTROLLER_DESTINATION_PORT}"),
                ),
                (
                    "MESH_PROXY_DESTINATION_CONTEXT".to_string(),
                    format!(r#"{{"ns":"{MESH_NS}"}}"#),
                ),
                (
                    "MESH_PROXY_IDENTITY_ADDR".to_string(),
                    format!("{controller_host}:{CONTROLLER_IDENTITY_PORT}"),
                ),
                ("MESH_PROXY_IDENTITY_NAME".to_string(), identity(sa)),
                (
                    "MESH_PROXY_IDENTITY_TOKEN_FILE".to_string(),
                    token_files[sa].display().to_string(),
                ),
                (
                    "MESH_PROXY_IDENTITY_TRUST_ANCHORS".to_string(),
                    anchors_pem.clone(),
                ),
            ]
        };
        let mut server = env("server", "127.0.0.1");
        if self.args.policy.is_some() {
            server.push((
                "MESH_PROXY_POLICY_WORKLOAD".to_string(),
                format!(r#"{{"ns":"{MESH_NS}","pod":"backend-0"}}"#),
            ));
        }
        Ok((env("client", SERVER_IP), server))
    }
}

/// What `--policy` puts in front of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PolicyMode {
    Default,
    #[value(name = "authz-100")]
    Authz100,
}

/// The `policies:` of the controller's file for `mode`: none for `default`; for
/// `authz-100` a `Server` per backend port and 100 authorizations of one identity each,
/// `client`'s last.
fn policies_yaml(mode: PolicyMode, client: &str) -> String {
    if mode == PolicyMode::Default {
        return String::new();
    }
    let mut out = String::from("policies:\n");
    for (name, port) in [("http", PORT_MESHED), ("echo", PORT_ECHO_MESHED)] {
        out.push_str(&format!(
            "  - apiVersion: policy.mesh.rs/v1alpha1
    kind: Server
    metadata: {{name: backend-{name}, namespace: {MESH_NS}}}
    spec: {{podSelector: {{matchLabels: {{deployment: backend}}}}, port: {port}}}
"
        ));
    }
    for i in 0..100 {
        let identity = if i == 99 {
            client.to_string()
        } else {
            mesh_api::names::ServiceAccount::new(MESH_NS, format!("sa-{i:03}"))
                .identity(TRUST_DOMAIN)
        };
        for server in ["http", "echo"] {
            out.push_str(&format!(
                "  - apiVersion: policy.mesh.rs/v1alpha1
    kind: AuthorizationPolicy
    metadata: {{name: authz-{server}-{i:03}, namespace: {MESH_NS}}}
    spec:
      targetRef: {{group: policy.mesh.rs, kind: Server, name: backend-{server}}}
      requiredAuthenticationRefs:
        - {{group: policy.mesh.rs, kind: MeshTLSAuthentication, name: id-{i:03}}}
"
            ));
        }
        out.push_str(&format!(
            "  - apiVersion: policy.mesh.rs/v1alpha1
    kind: MeshTLSAuthentication
    metadata: {{name: id-{i:03}, namespace: {MESH_NS}}}
    spec: {{identities: [\"{identity}\"]}}
"
        ));
    }
    out
}

/// A running [`rss_sampler`]: its stop flag and the thread that returns the peaks.
type RssSampler = (
    Arc<AtomicBool>,
    std::thread::JoinHandle<BTreeMap<String, u64>>,
);

/// Samples VmRSS of each process every 100 ms until stopped; returns the peaks.
fn rss_sampler(watched: Vec<(String, u32)>) -> RssSampler {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut peaks: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            for (name, pid) in &watched {
                if let Ok(sample) = sys::sample(*pid) {
                    let p = peaks.entry(name.clone()).or_default();
                    *p = (*p).max(sample.rss_kib);
                }
            }
            if s.load(Ordering::Relaxed) {
                return peaks;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (stop, handle)
}

/// `ip netns exec` and `setpriv` exec (not fork), so the child's pid is the program's;
/// if that ever changes, CPU and RSS would be read from the wrong process.
fn check_exec(name: &str, pid: u32, expected: &str) {
    let comm = sys::comm(pid);
    if !expected.starts_with(&comm) || comm.is_empty() {
        eprintln!("mesh-bench: warning: the {name}'s pid {pid} runs {comm:?}, not {expected}; its CPU and RSS are wrong");
    }
}

fn meta(args: &Args, elapsed: Duration) -> Meta {
    let machine = mesh_bench::sys::Machine::read();
    // What the numbers are of: the proxy (`abc1234 (linkerd-like-proxy/ modified)`).
    let git = sys::git_revision(&["linkerd-like-proxy/"]);
    let argv: Vec<String> = std::env::args().skip(2).collect();
    Meta {
        date: mesh_bench::sys::utc_date(),
        command: format!("sudo scripts/bench.sh {}", argv.join(" "))
            .trim_end()
            .to_string(),
        git,
        kernel: machine.kernel,
        cpu: machine.cpu,
        cores: machine.cores,
        memory: machine.memory,
        proxy_env: std::iter::once("MESH_PROXY_LOG=warn".to_string())
            .chain(args.proxy_env.iter().cloned())
            .collect(),
        conns: args.conns,
        rounds: args.rounds.max(1),
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        max_duration_s: args.max_duration.as_secs_f64(),
        max_h1_conns: args.max_conns,
        max_h2_conns: args.max_h2_conns,
        max_h2_streams: args.max_h2_streams,
        max_rounds: args.max_rounds.max(1),
        backend_threads: args.backend_threads,
        clock_ticks_per_sec: sys::clock_ticks_per_sec(),
        elapsed_s: elapsed.as_secs_f64(),
        busy_before_cores: 0.0,
        loadavg_start: String::new(),
        loadavg_end: sys::loadavg(),
        pairs_rerun: 0,
        mtls: args.mtls,
        tap_max_rps: args.tap_with.as_ref().map(|_| args.tap_max_rps),
    }
}

/// A trust anchor and an issuer for the controller, written as PEM, made by the
/// controller's own CA code (`generate_anchor_and_issuer`): one CA implementation for
/// the controller, `mesh demo`, the tests and the benchmarks.
fn make_ca(anchor: &Path, issuer_cert: &Path, issuer_key: &Path) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let (anchor_pem, cert_pem, key_pem) =
        mesh_core::ca::generate_anchor_and_issuer(TRUST_DOMAIN, Duration::from_secs(2 * 24 * 3600));
    std::fs::write(anchor, anchor_pem).with_context(|| format!("writing {}", anchor.display()))?;
    std::fs::write(issuer_cert, cert_pem)
        .with_context(|| format!("writing {}", issuer_cert.display()))?;
    // The controller runs as root; nobody else needs the key.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(issuer_key)
        .and_then(|mut f| f.write_all(key_pem.as_bytes()))
        .with_context(|| format!("writing {}", issuer_key.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files `make_ca` writes are what `mesh-controller --identity-*` loads, and
    /// its key is readable by its owner only.
    #[test]
    fn the_controller_accepts_the_benchmark_ca() {
        let dir = std::env::temp_dir().join(format!("mesh-bench-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (anchor, cert, key) = (
            dir.join("anchor.pem"),
            dir.join("issuer.crt"),
            dir.join("issuer.key"),
        );
        make_ca(&anchor, &cert, &key).unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let ca = mesh_core::ca::Ca::new(
            TRUST_DOMAIN,
            Duration::from_secs(3600),
            &read(&cert),
            &read(&key),
            &read(&anchor),
            std::time::SystemTime::now(),
        );
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(ca.is_ok(), "{:?}", ca.err());
        assert_eq!(mode, 0o600);
    }
}
