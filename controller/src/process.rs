//! Process gauges (`process_*`, `controller_build_info`), read from `/proc/self` at
//! scrape time so that they cost nothing between scrapes. The names and meanings are
//! those of the Prometheus client libraries, as the proxy's are.

use std::{fmt::Write as _, sync::OnceLock, time::SystemTime};

/// When the process started, fixed at the first call (made at start-up by `run`).
pub(crate) fn start_time() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

pub(crate) fn render(out: &mut String) {
    let start = start_time()
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
        crate::metrics::header(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
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
    crate::metrics::header(
        out,
        "controller_build_info",
        "gauge",
        "Controller build information.",
    );
    let _ = writeln!(
        out,
        "controller_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    crate::metrics::header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

/// utime + stime from `/proc/self/stat`, in seconds. Linux reports them in clock
/// ticks of USER_HZ, which is 100 on every architecture Linux supports today.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields are counted after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn memory_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.get(key.len()..)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmSize:")?))
}
