//! What the orchestrator reads from and does to the system: per-process CPU and memory
//! from /proc (shared with the discovery benchmark, in the library's `sys`), commands,
//! and the [`Guard`] that owns everything the benchmark starts.

use anyhow::{bail, Context as _};
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

pub(crate) use mesh_bench::sys::{
    clock_ticks_per_sec, comm, cores, git_revision, loadavg, sample, wait_quiet, MachineWindow,
    Meter, Sample,
};

/// Runs a command to completion; fails with its stderr if it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Kills every process inside namespace `name` and deletes it.
pub(crate) fn delete_netns(name: &str) {
    if let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[derive(Default)]
struct Owned {
    children: Vec<(String, Child)>,
    netns: Vec<String>,
    tmp_dir: Option<std::path::PathBuf>,
    lock_file: Option<std::path::PathBuf>,
    done: bool,
}

/// Owns every process, namespace and temporary file the benchmark makes. Clean-up runs
/// on drop (normal exit, error, panic) and from the SIGINT/SIGTERM handler, once.
#[derive(Clone, Default)]
pub(crate) struct Guard(Arc<Mutex<Owned>>);

impl Guard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add_child(&self, name: &str, child: Child) -> u32 {
        let pid = child.id();
        self.lock().children.push((name.to_string(), child));
        pid
    }

    /// Takes back a child (to wait for it) that no longer needs killing at clean-up.
    pub(crate) fn take_child(&self, pid: u32) -> Option<Child> {
        let mut o = self.lock();
        let i = o.children.iter().position(|(_, c)| c.id() == pid)?;
        Some(o.children.remove(i).1)
    }

    pub(crate) fn add_netns(&self, name: &str) {
        self.lock().netns.push(name.to_string());
    }

    /// Makes this the only `mesh-bench run` on the machine (they share namespace names
    /// and would tear down each other's): fails if another live one holds the lock.
    pub(crate) fn take_run_lock(&self) -> anyhow::Result<()> {
        let path = Path::new("/run/mesh-bench.pid");
        let own = std::process::id();
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            if pid != own && comm(pid) == "mesh-bench" {
                bail!("another `mesh-bench run` (pid {pid}) is in progress; wait for it, they would share namespaces");
            }
        }
        std::fs::write(path, format!("{own}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        self.lock().lock_file = Some(path.to_path_buf());
        Ok(())
    }

    pub(crate) fn set_tmp_dir(&self, dir: &Path) {
        self.lock().tmp_dir = Some(dir.to_path_buf());
    }

    /// Ends the children (SIGTERM, then SIGKILL after 3 s), deletes the namespaces and
    /// the temporary directory.
    pub(crate) fn cleanup(&self) {
        let mut o = self.lock();
        if o.done {
            return;
        }
        o.done = true;
        for (_, child) in o.children.iter_mut().rev() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (name, child) in o.children.iter_mut() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("mesh-bench: {name} did not stop on SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        o.children.clear();
        for ns in o.netns.drain(..).rev() {
            delete_netns(&ns);
        }
        if let Some(dir) = o.tmp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(lock) = o.lock_file.take() {
            if std::fs::read_to_string(&lock)
                .is_ok_and(|s| s.trim() == std::process::id().to_string())
            {
                let _ = std::fs::remove_file(lock);
            }
        }
    }

    /// Cleans up and exits on SIGINT or SIGTERM.
    pub(crate) fn on_signal(&self) {
        let guard = self.clone();
        std::thread::spawn(move || {
            let Ok(rt) = mesh_bench::net::current_thread_runtime() else {
                return;
            };
            rt.block_on(async {
                mesh_bench::net::terminated().await;
                eprintln!("mesh-bench: interrupted; cleaning up");
                guard.cleanup();
                std::process::exit(130);
            });
        });
    }
}

/// Dropped last in `run`: cleans up whatever is still owned.
pub(crate) struct DropGuard(pub(crate) Guard);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}
