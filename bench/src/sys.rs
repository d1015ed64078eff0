//! What the benchmarks read from the system: a process's CPU time and memory and the
//! whole machine's CPU counters from `/proc`, a [`Meter`] of both over a window, whether
//! the machine is quiet enough to start, and a description of the machine and the code.
//!
//! Both benchmarks (`mesh-bench` and `mesh-discovery-bench`) read them the same way, so
//! their reports can be read side by side: CPU as the sum of the threads' schedstat
//! (ns) and as utime + stime (clock ticks), memory as VmRSS and VmHWM.

use anyhow::Context as _;
use mesh_rt::proc::{self, Pid};
use serde::{Deserialize, Serialize};
use std::{
    process::Command,
    time::{Duration, Instant},
};

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// CPU time of the process's live threads, in ns (`/proc/PID/task/*/schedstat`).
    /// Threads that have exited are not in it; utime and stime are.
    pub cpu_ns: u64,
    /// utime and stime in clock ticks (`/proc/PID/stat`): only 10 ms resolution, but
    /// they split user from kernel time and include exited threads.
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// VmRSS in KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS over the process's life) in KiB.
    pub hwm_kib: u64,
}

impl Sample {
    /// utime + stime in ns.
    pub fn ticks_ns(&self) -> u64 {
        (self.utime_ticks + self.stime_ticks) * (1_000_000_000 / proc::TICKS_PER_SEC)
    }
}

/// Reads `/proc/<pid>/{stat,status,task/*/schedstat}` (through `mesh_rt::proc`, the
/// one reader the binaries' own `process_*` metrics use).
pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let p = Pid::Of(pid);
    let stat = proc::stat(p).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = proc::status(p).with_context(|| format!("reading /proc/{pid}/status"))?;
    let cpu_ns = proc::thread_cpu_ns(p).with_context(|| format!("reading /proc/{pid}/task"))?;
    Ok(Sample {
        utime_ticks: stat.utime_ticks,
        stime_ticks: stat.stime_ticks,
        cpu_ns,
        rss_kib: status.rss_bytes / 1024,
        hwm_kib: status.rss_peak_bytes / 1024,
    })
}

/// The whole machine's CPU counters (`/proc/stat`, first line), in ns.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct MachineSample {
    /// Everything but idle and iowait, all CPUs.
    pub busy_ns: u64,
    pub softirq_ns: u64,
    /// Time the hypervisor ran something else while a vCPU wanted to run.
    pub steal_ns: u64,
}

pub fn machine_sample() -> anyhow::Result<MachineSample> {
    let m = proc::machine_cpu().context("reading /proc/stat")?;
    Ok(MachineSample {
        busy_ns: m.busy_ns,
        softirq_ns: m.softirq_ns,
        steal_ns: m.steal_ns,
    })
}

/// Cores in use by the whole machine over `d` (blocks for `d`).
pub fn machine_busy_cores(d: Duration) -> anyhow::Result<f64> {
    let a = machine_sample()?;
    std::thread::sleep(d);
    let b = machine_sample()?;
    Ok(b.busy_ns.saturating_sub(a.busy_ns) as f64 / d.as_nanos() as f64)
}

/// `ns` of CPU time spent over `seconds` of wall time, in cores (0 over no time).
pub fn cores(ns: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        ns as f64 / 1e9 / seconds
    } else {
        0.0
    }
}

/// The whole machine over one measured window, in cores.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct MachineWindow {
    pub busy_cores: f64,
    pub softirq_cores: f64,
    pub steal_cores: f64,
}

impl MachineWindow {
    /// The machine between two samples `seconds` apart.
    pub fn between(before: &MachineSample, after: &MachineSample, seconds: f64) -> Self {
        let c = |a: u64, b: u64| cores(a.saturating_sub(b), seconds);
        Self {
            busy_cores: c(after.busy_ns, before.busy_ns),
            softirq_cores: c(after.softirq_ns, before.softirq_ns),
            steal_cores: c(after.steal_ns, before.steal_ns),
        }
    }

    /// Cores busy on the machine but neither in the benchmark's own processes (`ours`
    /// cores together) nor in softirq (mostly the benchmark's own network traffic):
    /// other processes.
    pub fn other_cores(&self, ours: f64) -> f64 {
        (self.busy_cores - self.softirq_cores - ours).max(0.0)
    }
}

/// The machine and some processes being measured over a window: [`Meter::start`] samples
/// them all, [`Meter::finish`] samples them again.
pub struct Meter {
    started: Instant,
    machine: MachineSample,
    procs: Vec<(String, u32, Sample)>,
}

/// What a [`Meter`] measured.
pub struct Metered {
    /// The window's wall time.
    pub seconds: f64,
    pub machine: MachineWindow,
    /// Each process by name: its samples at the start and at the end.
    pub procs: Vec<(String, Sample, Sample)>,
}

impl Meter {
    /// Samples each of `procs` (name, pid) and the machine.
    pub fn start<S: Into<String>>(
        procs: impl IntoIterator<Item = (S, u32)>,
    ) -> anyhow::Result<Self> {
        let procs = procs
            .into_iter()
            .map(|(name, pid)| Ok((name.into(), pid, sample(pid)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            started: Instant::now(),
            machine: machine_sample()?,
            procs,
        })
    }

    /// Samples them again.
    pub fn finish(self) -> anyhow::Result<Metered> {
        let seconds = self.started.elapsed().as_secs_f64();
        let machine = MachineWindow::between(&self.machine, &machine_sample()?, seconds);
        let procs = self
            .procs
            .into_iter()
            .map(|(name, pid, before)| Ok((name, before, sample(pid)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Metered {
            seconds,
            machine,
            procs,
        })
    }
}

/// Waits up to `max` for a quiet machine: one whose busy cores, sampled over `sample`,
/// are at most `threshold`. Returns the last sample's busy cores, and says on stderr
/// (after `who: `) what it waits for, and when it gave up.
pub fn wait_quiet(
    who: &str,
    max: Duration,
    threshold: f64,
    sample: Duration,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + max;
    loop {
        let busy = machine_busy_cores(sample)?;
        if busy <= threshold {
            return Ok(busy);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "{who}: warning: other processes keep {busy:.2} cores busy; the numbers will be noisy \
                 (--wait-quiet waits for a quiet machine)"
            );
            return Ok(busy);
        }
        eprintln!(
            "{who}: waiting for a quiet machine ({busy:.2} cores busy, load {})",
            loadavg()
        );
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn loadavg() -> String {
    proc::loadavg()
}

/// The clock ticks `/proc` counts CPU time in (`USER_HZ`).
pub fn clock_ticks_per_sec() -> u64 {
    proc::TICKS_PER_SEC
}

/// The process's name as the kernel has it (empty when it is gone).
pub fn comm(pid: u32) -> String {
    proc::stat(Pid::Of(pid)).map(|s| s.comm).unwrap_or_default()
}

/// What a report says about the machine it ran on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        let first_line = |path: &str, key: &str| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
                })
                .unwrap_or_default()
        };
        Self {
            cpu: first_line("/proc/cpuinfo", "model name"),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory: first_line("/proc/meminfo", "MemTotal"),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

/// Today's UTC date as YYYY-MM-DD.
pub fn utc_date() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// `git rev-parse --short HEAD`, marked when any of `paths` has uncommitted changes;
/// `unknown` outside a work tree.
pub fn git_revision(paths: &[&str]) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(rev) = git(&["rev-parse", "--short", "HEAD"]).filter(|r| !r.is_empty()) else {
        return "unknown".to_string();
    };
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend_from_slice(paths);
    match git(&status) {
        Some(s) if !s.is_empty() => format!("{rev} ({} modified)", paths.join(", ")),
        _ => rev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_window_in_cores() {
        let before = MachineSample {
            busy_ns: 1_000_000_000,
            softirq_ns: 0,
            steal_ns: 0,
        };
        let after = MachineSample {
            busy_ns: 4_000_000_000,
            softirq_ns: 500_000_000,
            steal_ns: 200_000_000,
        };
        let w = MachineWindow::between(&before, &after, 2.0);
        assert_eq!(
            (w.busy_cores, w.softirq_cores, w.steal_cores),
            (1.5, 0.25, 0.1)
        );
        // Busy 1.5, softirq 0.25, ours 1.0: others 0.25; never below 0.
        assert_eq!(w.other_cores(1.0), 0.25);
        assert_eq!(w.other_cores(2.0), 0.0);
        assert_eq!(cores(1_000_000_000, 0.0), 0.0);
    }

    #[test]
    fn a_meter_samples_each_process_at_both_ends() {
        let me = std::process::id();
        let meter = Meter::start([("me", me)]).unwrap();
        // Some CPU for the window to see.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let m = meter.finish().unwrap();
        assert!(m.seconds >= 0.03, "{}", m.seconds);
        let [(name, before, after)] = &m.procs[..] else {
            panic!("{} processes", m.procs.len())
        };
        assert_eq!(name, "me");
        assert!(after.cpu_ns > before.cpu_ns, "{before:?} {after:?}");
        assert!(after.rss_kib > 0);
    }
}
