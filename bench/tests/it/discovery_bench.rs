//! The discovery benchmark's smoke run: `mesh-discovery-bench --quick --no-write` goes
//! through every phase (a fake API server, `mesh-controller` indexing it, destination
//! streams, endpoint changes, `mesh-proxy` routing by them, balancing) at a small scale.
//!
//! It checks that the run completes and that discovery stayed correct while it ran (no
//! change lost, no request failed); how fast is the benchmark's business, not a test's.
//!
//! Needs `mesh-controller` and `mesh-proxy` built (`cargo build --workspace --bins`).

use mesh_integration_tests::bin_path;
use std::process::Command;

#[test]
fn quick_discovery_benchmark_runs_without_losing_changes_or_requests() {
    let out = Command::new(bin_path("mesh-discovery-bench"))
        .args(["--quick", "--no-write"])
        .output()
        .expect("run mesh-discovery-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the benchmark failed:\n{stderr}");
    assert!(stderr.contains("## Targets"), "no report:\n{stderr}");
    let progress = |what: &str| {
        stderr
            .lines()
            .find(|l| l.starts_with("mesh-discovery-bench:") && l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line:\n{stderr}"))
            .to_string()
    };
    let streams = progress("changes reached their streams");
    assert!(
        streams.contains(" 0 lost") && streams.contains(" 0 unexpected"),
        "{streams}"
    );
    let proxy = progress("endpoint additions reached the proxy");
    assert!(
        proxy.contains(" 0 lost") && proxy.contains(" 0 failed requests"),
        "{proxy}"
    );
}
