//! Harness for mesh's process- and pod-level tests, and for the benchmarks (`bench/`):
//! find the built binaries, run them, wait on what they print, build "pods" out of
//! network namespaces, and read the proxies' metrics.
//!
//! Every wait here polls a condition against a deadline; nothing sleeps a fixed time and
//! hopes. Everything a test starts is owned by a value whose `Drop` ends it (processes
//! are killed, namespaces deleted), so a failing or panicking test leaves nothing behind,
//! and names include the test process's pid so nextest can run tests side by side.
//!
//! ```no_run
//! use std::time::Duration;
//! use mesh_integration_tests::{bin_path, Pod};
//!
//! let (client, server) = Pod::pair("client", "server").unwrap();
//! let mut app = server
//!     .process("app", bin_path("mesh-test-app"))
//!     .args(["--http", "0.0.0.0:8080"])
//!     .spawn()
//!     .unwrap();
//! app.wait_for_line("listening http", Duration::from_secs(10)).unwrap();
//! let url = format!("http://{}:8080/", server.ip);
//! let out = client.run(["curl", "-s", url.as_str()]).unwrap();
//! assert_eq!(out, b"hello from app\n");
//! ```
// Tests and benchmarks measure real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

pub mod mesh;
mod metrics;
mod netns;
mod process;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

pub use self::{
    metrics::{promtool_check, Metrics, Sample},
    netns::{veth, NetNs, Node, Pod, Spawn},
    process::{wait_for_line, Process},
};

/// Where the workspace's binaries are: `$MESH_BIN_DIR` if set, else the profile directory
/// the running test executable was built into (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of one of the workspace's binaries, e.g. `bin_path("mesh-proxy")`.
///
/// It does not build anything: `cargo test` builds this crate's own binaries
/// (`mesh-test-app`) first, and `scripts/test.sh` builds every workspace binary before
/// running tests.
pub fn bin_path(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The path of one of the Python helpers in `integration-tests/helpers/`.
pub fn helper_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("helpers")
        .join(name)
}

/// Whether this process runs as root (effective uid 0), which pod tests need for network
/// namespaces and iptables.
pub fn is_root() -> bool {
    // Read from /proc/self/status, which keeps this crate free of `unsafe` calls into libc.
    mesh_rt::proc::status(mesh_rt::proc::Pid::This).is_some_and(|s| s.euid == 0)
}

/// This test process's scratch directory (`$TMPDIR/mesh-it-<pid>`) for process logs and
/// files tests need; kept after the run so a failure can be read, and removed by a later
/// test process once this one is gone.
pub fn scratch_dir() -> PathBuf {
    static REAP: std::sync::Once = std::sync::Once::new();
    REAP.call_once(reap_stale_scratch_dirs);
    let dir = std::env::temp_dir().join(format!("mesh-it-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Removes the scratch directories (and binary copies, see `netns`) of test processes
/// that have exited, so that only the latest runs' logs stay around.
fn reap_stale_scratch_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix("mesh-it-bin-")
            .or_else(|| name.strip_prefix("mesh-it-"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Polls `check` until it returns `Some`, failing after `timeout` with the last error (or
/// "not yet") it gave, and saying what was awaited.
///
/// Polling every 20 ms is not a sleep standing in for a condition: the condition is
/// checked on every round and the wait ends as soon as it holds.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("condition not met");
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a TCP connection to `addr` (from this process's own network namespace)
/// succeeds.
pub fn wait_for_port(addr: std::net::SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    wait_until(&format!("{addr} to accept connections"), timeout, || {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => Ok(Some(())),
            Err(e) => Err(e).with_context(|| format!("connect {addr}")),
        }
    })
}
