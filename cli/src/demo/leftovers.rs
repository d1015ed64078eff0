//! What an earlier demo left when it could not clean up after itself.
//!
//! A demo stopped by a signal it handles (SIGINT, SIGTERM, SIGHUP) stops its children
//! and removes its state directory. One killed outright (SIGKILL, a crash) does
//! neither: its children die with it (they asked for the parent-death signal), but its
//! directory stays, and a demo from before that existed left its children running too,
//! holding the demo's ports. So at start the demo looks for directories of demos that
//! are gone, stops any process still tied to one, removes the directory, and says so.

use super::state;
use mesh_rt::proc;
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// How long a leftover process gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// One earlier demo's leftovers, cleaned up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cleaned {
    pub(crate) pid: u32,
    pub(crate) dir: PathBuf,
    /// Processes of that demo that were still running, now stopped.
    pub(crate) stopped: usize,
}

/// Cleans up after every demo in `tmp` whose `mesh` process is gone.
pub(crate) fn clean_up(tmp: &Path) -> Vec<Cleaned> {
    // Listed whole before anything is removed: a directory read while entries go may
    // return some twice.
    let gone: std::collections::BTreeSet<u32> = std::fs::read_dir(tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| state::pid_of(e.file_name().to_str()?))
        .filter(|pid| *pid != std::process::id() && !state::is_alive(*pid))
        .collect();
    let mut cleaned = Vec::new();
    for pid in gone {
        let stopped = stop_processes_of(pid);
        let dir = tmp.join(format!("{}{pid}", state::STATE_DIR_PREFIX));
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove an earlier demo's directory");
        }
        cleaned.push(Cleaned { pid, dir, stopped });
    }
    cleaned
}

/// Stops every `mesh-proxy` and `mesh-controller` tied to the demo `pid`: started with
/// it as their parent, or reading files in its state directory. Returns how many.
fn stop_processes_of(demo: u32) -> usize {
    let parent_env = format!("MESH_PROXY_PARENT_PID={demo}");
    let state_dir = format!("{}{demo}/", state::STATE_DIR_PREFIX);
    let demo_arg = demo.to_string();
    let mut found = Vec::new();
    for pid in proc::pids() {
        let this = proc::Pid::Of(pid);
        let Some(stat) = proc::stat(this) else {
            continue;
        };
        if !matches!(stat.comm.as_str(), "mesh-proxy" | "mesh-controller") {
            continue;
        }
        let (args, env) = (proc::cmdline(this), proc::environ(this));
        let tied = args
            .windows(2)
            .any(|w| w[0] == "--parent-pid" && w[1] == demo_arg)
            || env.contains(&parent_env)
            || args.iter().chain(&env).any(|s| s.contains(&state_dir));
        if tied {
            found.push(pid);
        }
    }
    let signal = |pid: u32, signal| {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    };
    for &pid in &found {
        signal(pid, Signal::SIGTERM);
    }
    let alive = |pid: &u32| proc::is_running(*pid);
    let mut waited = Duration::ZERO;
    while found.iter().any(alive) && waited < TERM_GRACE {
        std::thread::sleep(POLL);
        waited += POLL;
    }
    for &pid in found.iter().filter(|p| alive(p)) {
        signal(pid, Signal::SIGKILL);
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_of_gone_demos_are_removed_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("mesh-demo-4000000000");
        let live = tmp.path().join(format!("mesh-demo-{}", std::process::id()));
        let other = tmp.path().join("something-else");
        for d in [&gone, &live, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("web-proxy.log"), "x").unwrap();
        }
        let cleaned = clean_up(tmp.path());
        assert_eq!(
            cleaned,
            [Cleaned {
                pid: 4_000_000_000,
                dir: gone.clone(),
                stopped: 0
            }]
        );
        assert!(!gone.exists() && live.exists() && other.exists());
    }
}
