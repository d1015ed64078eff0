//! What the benchmarks read from the system: a process's CPU time and memory and the
//! whole machine's CPU counters from `/proc`, and a description of the machine.
//!
//! Both benchmarks (`mesh-bench` and `mesh-discovery-bench`) read them the same way, so
//! their reports can be read side by side: CPU as the sum of the threads' schedstat
//! (ns) and as utime + stime (clock ticks), memory as VmRSS and VmHWM.

use anyhow::Context as _;
use mesh_rt::proc::{self, Pid};
use serde::{Deserialize, Serialize};
use std::{process::Command, time::Duration};

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

/// Today's UTC date as YYYY-MM-DD (civil-from-days, H. Hinnant).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
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
