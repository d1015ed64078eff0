//! `mesh-bench`: the end-to-end proxy benchmark.
//!
//! The same load is sent once over a direct connection and once through an outbound +
//! inbound `mesh-proxy` pair that iptables puts in the path, both between two network
//! namespaces joined by a veth pair, and the report gives the proxied numbers as
//! differences from and ratios to the direct ones of the same run.
//!
//! ```text
//! scripts/bench.sh                       # = mesh-bench run, as root; writes docs/bench/proxy-<date>.{md,json}
//! mesh-bench backend --listen 0.0.0.0:8080
//! mesh-bench load --target http://198.18.200.2:8080/ --proto h1 --conns 4 --rate 1000 --duration 10s
//! mesh-bench probe http://127.0.0.1:4191/ready
//! mesh-bench connects --target 198.18.200.2:9090 --concurrency 16 --duration 10s
//! mesh-bench hold --target 198.18.200.2:9090 --conns 1000
//! ```
//!
//! Subcommands:
//! - `backend`: a minimal hyper server (HTTP/1.1 keep-alive and h2c on each port) that
//!   answers every request with a 1 KiB body.
//! - `load`: an open-loop load generator for fixed rates (requests are scheduled at fixed
//!   intervals and latency is measured from the scheduled send time, so a stall is not
//!   hidden by the generator waiting for it: coordinated omission is corrected) and a
//!   closed-loop one for maximum throughput. Prints JSON lines.
//! - `probe`: GETs a URL until it answers 200 (waits for readiness, reads `/metrics`).
//! - `connects`, `hold`: opaque TCP to the backend's echo listeners: new connections per
//!   second (each a TLS handshake between the proxies with `--mtls`), and many idle
//!   connections held open (the proxies' memory per connection).
//! - `run`: the orchestrator (needs root): namespaces, veth, iptables, backend, proxies,
//!   every load, the measurements, the report, and clean-up.
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

mod backend;
mod load;
mod probe;
mod report;
mod run;
mod sys;
mod tcp;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mesh-bench",
    about = "End-to-end benchmark of mesh-proxy against a direct connection"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve a 1 KiB body to every request (HTTP/1.1 and h2c).
    Backend(backend::Args),
    /// Generate load against one URL and print the result as JSON.
    Load(load::Args),
    /// GET a URL until it answers 200; optionally print the body.
    Probe(probe::Args),
    /// Open TCP connections back to back (connect + one echoed byte each) and print
    /// connections per second as JSON.
    Connects(tcp::ConnectsArgs),
    /// Open many TCP connections (one echoed byte each) and hold them idle until stdin
    /// closes.
    Hold(tcp::HoldArgs),
    /// Run the whole benchmark (as root) and write the report.
    Run(run::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Backend(a) => backend::main(a),
        Cmd::Load(a) => load::main(a),
        Cmd::Probe(a) => probe::main(a),
        Cmd::Connects(a) => tcp::connects(a),
        Cmd::Hold(a) => tcp::hold(a),
        Cmd::Run(a) => run::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Cmd, Parser as _};

    /// Every duration flag reads Go's syntax (`mesh_api::duration`): a bare number has
    /// no unit, and the error names the flag and the value.
    #[test]
    fn durations() {
        let probe = |timeout: &str| {
            Cli::try_parse_from(["mesh-bench", "probe", "http://x/", "--timeout", timeout])
        };
        for (value, secs) in [("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1m30s", 90.0)] {
            let Ok(Cli {
                cmd: Cmd::Probe(a), ..
            }) = probe(value)
            else {
                panic!("{value} refused")
            };
            assert_eq!(a.timeout.as_secs_f64(), secs, "{value}");
        }
        for bad in ["1.5", "x", "3d"] {
            let err = probe(bad).expect_err(bad).to_string();
            assert!(err.contains("--timeout") && err.contains(bad), "{err}");
        }
    }
}
