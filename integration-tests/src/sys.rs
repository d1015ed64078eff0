//! What the benchmarks read from the system: a process's CPU time and memory and the
//! whole machine's CPU counters from `/proc`, and a description of the machine.
//!
//! Both benchmarks (`mesh-bench` and `mesh-discovery-bench`) read them the same way, so
//! their reports can be read side by side: CPU as the sum of the threads' schedstat
//! (ns) and as utime + stime (clock ticks), memory as VmRSS and VmHWM.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::{path::Path, process::Command, time::Duration};

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
        (self.utime_ticks + self.stime_ticks) * (1_000_000_000 / clock_ticks_per_sec().max(1))
    }
}

/// Reads `/proc/<pid>/{stat,status,task/*/schedstat}`.
pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let proc = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(proc.join("stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (utime_ticks, stime_ticks) = (tick(11), tick(12));

    let mut cpu_ns = 0;
    for task in std::fs::read_dir(proc.join("task"))?.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            cpu_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }

    let status = std::fs::read_to_string(proc.join("status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        utime_ticks,
        stime_ticks,
        cpu_ns,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
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
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let ns = 1_000_000_000 / clock_ticks_per_sec().max(1);
    Ok(MachineSample {
        busy_ns: busy * ns,
        softirq_ns: get(6) * ns,
        steal_ns: get(7) * ns,
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
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn clock_ticks_per_sec() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The process's name as the kernel has it.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
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
