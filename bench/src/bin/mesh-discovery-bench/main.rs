//! `mesh-discovery-bench`: the discovery benchmark. It measures the controller at
//! cluster scale and discovery end to end, in one run, on loopback:
//!
//! 1. **Indexing**: a fake Kubernetes API server (in this process) holds
//!    `--services` Services × `--endpoints-per-service` endpoints (one EndpointSlice
//!    each) and as many Pods, owned by ReplicaSets; a release `mesh-controller
//!    --backend kubernetes` starts against it. Time to `/ready`, CPU time to get
//!    there, and VmRSS / VmHWM.
//! 2. **Streams**: `--streams-per-service` `Get` streams per service over `--conns`
//!    HTTP/2 connections, each awaited for its first message: time to open them all,
//!    and the controller's memory and CPU with them open.
//! 3. **Propagation to streams**: `--changes` readiness flips of random endpoints in the
//!    API server, each timed until every stream of its service has the update.
//! 4. **Propagation to the proxy**: a `mesh-proxy` (explicit mode) resolves a probe
//!    service through the controller while workers send requests through it back to
//!    back; `--proxy-samples` times a new endpoint (a fresh in-process backend) is
//!    added, each timed until the new backend serves a request, then removed again.
//! 5. **Balancing**: three backends behind one service, one `--slow-factor` times
//!    slower; closed loops at `--concurrency` levels and an open loop at `--rate`
//!    through the proxy, each followed by the same load sent round-robin straight to
//!    the backends as the reference. The slow backend's share, and latency ratios.
//!
//! ```text
//! scripts/bench-discovery.sh                # builds, runs, writes docs/bench/discovery-<date>.{md,json}
//! mesh-discovery-bench --quick --no-write   # a small smoke run (100 services, 200 streams)
//! ```
//!
//! Every process it starts is killed when the run ends, fails or panics, and Ctrl-C
//! ends the run the same way (the runtime is dropped, and with it every handle).
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

mod backend;
mod cluster;
mod load;
mod report;
mod run;
mod streams;

use clap::Parser;
use std::{path::PathBuf, process::ExitCode, time::Duration};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "mesh-discovery-bench",
    about = "Benchmark of mesh's discovery: controller memory and CPU at scale, update propagation, balancing"
)]
pub(crate) struct Args {
    /// A small smoke run: 100 services, 200 streams over 10 connections, 20 samples of
    /// each propagation, 1-s balancing runs at 4 in flight and 100 rps. Flags given
    /// explicitly still apply.
    #[arg(long)]
    quick: bool,
    /// Services in the cluster.
    #[arg(long)]
    services: Option<usize>,
    /// Endpoints (ready pods) per service.
    #[arg(long)]
    endpoints_per_service: Option<usize>,
    /// `Get` streams per service held open (on different connections).
    #[arg(long)]
    streams_per_service: Option<usize>,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long)]
    conns: Option<usize>,
    /// Endpoint changes timed until they reach the streams.
    #[arg(long)]
    changes: Option<usize>,
    /// Endpoint additions timed until the proxy routes to them.
    #[arg(long)]
    proxy_samples: Option<usize>,
    /// Workers sending requests back to back through the proxy while endpoints change.
    #[arg(long, default_value_t = 3)]
    proxy_workers: usize,
    /// Concurrency levels of the closed-loop balancing runs.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Rate of the open-loop balancing run, in requests per second (0: none).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured window of each balancing run, after 1s of warm-up (a Go duration;
    /// default 10s, 1s with --quick).
    #[arg(long, value_name = "DURATION", value_parser = mesh_api::duration::parse_positive)]
    balance_window: Option<Duration>,
    /// Service time of the fast backends (a Go duration).
    #[arg(long, default_value = "1ms", value_name = "DURATION", value_parser = mesh_api::duration::parse)]
    fast_service_time: Duration,
    /// How many times slower the slow backend is.
    #[arg(long, default_value_t = 10.0)]
    slow_factor: f64,
    /// Before starting, wait up to this long for the machine to be quiet (at most 0.2
    /// cores busy; a Go duration, 0s = start at once); either way the report says how
    /// busy it was.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = mesh_api::duration::parse)]
    wait_quiet: Duration,
    /// The controller's log filter (`MESH_LOG`); its log is kept in the scratch directory
    /// named at the end.
    #[arg(long, default_value = "warn")]
    controller_log: String,
    /// The proxy's log filter (`MESH_PROXY_LOG`).
    #[arg(long, default_value = "warn")]
    proxy_log: String,
    /// Where the report goes.
    #[arg(long, default_value = "docs/bench")]
    out_dir: PathBuf,
    /// Report file name without extension (default `discovery-<UTC date>`).
    #[arg(long)]
    name: Option<String>,
    /// Print the report only.
    #[arg(long)]
    no_write: bool,
}

/// [`Args`] with the defaults filled in (full or `--quick`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) services: usize,
    pub(crate) endpoints_per_service: usize,
    pub(crate) streams_per_service: usize,
    pub(crate) conns: usize,
    pub(crate) changes: usize,
    pub(crate) proxy_samples: usize,
    pub(crate) proxy_workers: usize,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) rate: f64,
    pub(crate) balance_secs: f64,
    pub(crate) fast_ms: f64,
    pub(crate) slow_ms: f64,
    pub(crate) controller_log: String,
    pub(crate) proxy_log: String,
}

impl Args {
    fn settings(&self) -> Settings {
        let q = self.quick;
        Settings {
            quick: q,
            services: self.services.unwrap_or(if q { 100 } else { 1000 }),
            endpoints_per_service: self.endpoints_per_service.unwrap_or(10).max(1),
            streams_per_service: self.streams_per_service.unwrap_or(2),
            conns: self.conns.unwrap_or(if q { 10 } else { 50 }).max(1),
            changes: self.changes.unwrap_or(if q { 20 } else { 200 }),
            proxy_samples: self.proxy_samples.unwrap_or(if q { 20 } else { 100 }),
            proxy_workers: self.proxy_workers.max(1),
            concurrency: self.concurrency.clone().unwrap_or_else(|| {
                if q {
                    vec![4]
                } else {
                    vec![1, 4, 16]
                }
            }),
            rate: self.rate.unwrap_or(if q { 100.0 } else { 200.0 }),
            balance_secs: self
                .balance_window
                .map_or(if q { 1.0 } else { 10.0 }, |d| d.as_secs_f64()),
            fast_ms: self.fast_service_time.as_secs_f64() * 1e3,
            slow_ms: self.fast_service_time.as_secs_f64() * 1e3 * self.slow_factor,
            controller_log: self.controller_log.clone(),
            proxy_log: self.proxy_log.clone(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run::main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-discovery-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Args, Parser as _};
    use std::time::Duration;

    /// Duration flags read Go's syntax (`mesh_api::duration`); errors name the flag.
    #[test]
    fn durations() {
        let args = Args::try_parse_from([
            "mesh-discovery-bench",
            "--balance-window",
            "1m30s",
            "--fast-service-time",
            "500us",
            "--wait-quiet",
            "2m",
        ])
        .unwrap();
        assert_eq!(args.wait_quiet, Duration::from_secs(120));
        let settings = args.settings();
        assert_eq!(settings.balance_secs, 90.0);
        assert_eq!(settings.fast_ms, 0.5);
        let defaults = Args::try_parse_from(["mesh-discovery-bench"]).unwrap();
        assert_eq!(defaults.wait_quiet, Duration::ZERO);
        assert_eq!(defaults.settings().fast_ms, 1.0);
        assert_eq!(defaults.settings().balance_secs, 10.0);
        for (flag, bad) in [("--wait-quiet", "120"), ("--balance-window", "0s")] {
            let err = Args::try_parse_from(["mesh-discovery-bench", flag, bad])
                .expect_err(bad)
                .to_string();
            assert!(err.contains(flag) && err.contains(bad), "{err}");
        }
    }
}
