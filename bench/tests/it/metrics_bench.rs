//! The metrics benchmark's smoke run: `mesh-metrics-bench` at a small scale serves
//! synthetic proxies, runs `mesh-controller` scraping them, and checks through
//! `/api/stat` that every pod was counted. How much the controller costs is the
//! benchmark's business, not a test's: this checks that the run completes and counts
//! every pod with traffic.
//!
//! Needs `mesh-controller` built (`cargo build --workspace --bins`).

use mesh_integration_tests::bin_path;
use std::process::Command;

#[test]
fn small_metrics_benchmark_counts_every_pod() {
    let out = Command::new(bin_path("mesh-metrics-bench"))
        .args([
            "--proxies",
            "20",
            "--interval",
            "1s",
            "--warmup",
            "2s",
            "--duration",
            "2s",
        ])
        .output()
        .expect("run mesh-metrics-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the benchmark failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("/api/stat: 20 pods, 20 with traffic"),
        "{stdout}\n{stderr}"
    );
}
