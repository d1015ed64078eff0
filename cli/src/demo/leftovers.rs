//! What an earlier demo left when it could not clean up after itself.
//!
//! A demo stopped by a signal it handles (SIGINT, SIGTERM, SIGHUP) stops its children
//! and removes its state directory. One killed outright (SIGKILL, a crash) does
//! neither: its children die with it (they asked for the parent-death signal), but its
//! directory stays, and a demo from before that existed left its children running too,
//! holding the demo's ports. So at start the demo looks for directories of demos that
//! are gone, stops any process still tied to one, removes the directory, and says so.

use super::state;
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
    let marks = [
        format!("MESH_PROXY_PARENT_PID={demo}"),
        format!("{}{demo}/", state::STATE_DIR_PREFIX),
    ];
    let flag = format!("--parent-pid\0{demo}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !matches!(comm.trim(), "mesh-proxy" | "mesh-controller") {
            continue;
        }
        let read = |name: &str| {
            let bytes = std::fs::read(entry.path().join(name)).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let (cmdline, environ) = (read("cmdline"), read("environ"));
        let tied = cmdline.contains(&flag)
            || marks
                .iter()
                .any(|m| cmdline.contains(m.as_str()) || environ.contains(m.as_str()));
        if tied {
            found.push(Pid::from_raw(pid));
        }
    }
    for pid in &found {
        let _ = nix::sys::signal::kill(*pid, Signal::SIGTERM);
    }
    let alive = |pid: &Pid| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid);
    let mut waited = Duration::ZERO;
    while found.iter().any(alive) && waited < TERM_GRACE {
        std::thread::sleep(POLL);
        waited += POLL;
    }
    for pid in found.iter().filter(|p| alive(p)) {
        let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
    }
    found.len()
}

/// A process that has exited and waits for its parent to reap it.
fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(") ")?.1.starts_with('Z')))
        .unwrap_or(false)
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
