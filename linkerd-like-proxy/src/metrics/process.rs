//! Process gauges (`process_*`, `proxy_build_info`), read from `/proc` at scrape time
//! so that they cost nothing between scrapes.

use std::{fmt::Write as _, time::SystemTime};

pub(super) struct Process {
    start: SystemTime,
}

impl Default for Process {
    fn default() -> Self {
        Self {
            start: SystemTime::now(),
        }
    }
}

impl Process {
    pub(super) fn encode(&self, out: &mut String) {
        let start = self
            .start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        gauge(
            out,
            "process_start_time_seconds",
            "Time that the process started (in seconds since the UNIX epoch).",
            start,
        );
        if let Some(cpu) = cpu_seconds() {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
            );
        }
        if let Some((rss, virt)) = memory_bytes() {
            gauge(
                out,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            );
            gauge(
                out,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                virt as f64,
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                fds.count() as f64,
            );
        }
        let _ = writeln!(
            out,
            "# HELP proxy_build_info Proxy build information.\n# TYPE proxy_build_info gauge\nproxy_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// utime + stime from `/proc/self/stat`, in seconds. Linux reports them in clock
/// ticks of USER_HZ, which is 100 on every architecture Linux supports today.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields are counted after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn memory_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmSize:")?))
}
