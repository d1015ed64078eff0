//! The policy benchmark's smoke run: `mesh-policy-bench --pods 20 --rounds 2` goes
//! through every step (a fake API server with pods and policies, `mesh-controller`
//! compiling them, one `Watch` stream per pod, policy changes) at a small scale. The
//! run fails unless every stream receives every change; how fast is the benchmark's
//! business, not a test's.
//!
//! Needs `mesh-controller` and `mesh-policy-bench` built (`cargo build --workspace --bins`).

use mesh_integration_tests::bin_path;
use std::process::Command;

#[test]
fn small_policy_benchmark_reaches_every_stream() {
    let out = Command::new(bin_path("mesh-policy-bench"))
        .args(["--pods", "20", "--rounds", "2"])
        .output()
        .expect("run mesh-policy-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the benchmark failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("mesh-policy-bench: 20 pods, 20 streams, 2 rounds"),
        "{stderr}"
    );
    assert!(
        stderr.contains("per round (write to the last stream)"),
        "{stderr}"
    );
}
