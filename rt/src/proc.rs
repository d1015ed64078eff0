//! Reading `/proc`: the one parser of its files for every mesh binary, test and
//! benchmark, so that a process's CPU and memory mean the same everywhere they are
//! shown (the proxy's and the controller's `process_*` metrics, the benchmarks'
//! reports, the tests' checks on their children).
//!
//! Every reader returns `None` (or an error) for a file that is missing or not as
//! expected, never a panic: a process can exit between two reads.

use std::{fmt::Write as _, path::PathBuf, time::SystemTime};

/// Linux reports process CPU times in ticks of `USER_HZ`, which is 100 on every
/// architecture Linux supports today.
pub const TICKS_PER_SEC: u64 = 100;

/// Which process: this one, or another by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    This,
    Of(u32),
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Pid::This => PathBuf::from("/proc/self"),
            Pid::Of(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    fn read(self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir().join(file)).ok()
    }
}

/// What `/proc/<pid>/stat` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The command name, without its parentheses.
    pub comm: String,
    /// `R`, `S`, `Z` (exited, not reaped yet)...
    pub state: char,
    pub ppid: u32,
    /// User and system CPU, in [`TICKS_PER_SEC`] ticks: 10 ms resolution, exited
    /// threads included.
    pub utime_ticks: u64,
    pub stime_ticks: u64,
}

impl Stat {
    /// utime + stime, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        (self.utime_ticks + self.stime_ticks) as f64 / TICKS_PER_SEC as f64
    }

    /// utime + stime, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        (self.utime_ticks + self.stime_ticks) * (1_000_000_000 / TICKS_PER_SEC)
    }
}

/// Parses `/proc/<pid>/stat`.
pub fn stat(pid: Pid) -> Option<Stat> {
    parse_stat(&pid.read("stat")?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may itself hold spaces or parentheses:
    // the fields after it start after the last `) `.
    let (head, tail) = text.rsplit_once(") ")?;
    let comm = head.split_once(" (")?.1.to_string();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        comm,
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(field(1)?).ok()?,
        utime_ticks: field(11)?,
        stime_ticks: field(12)?,
    })
}

/// What `/proc/<pid>/status` says of memory and user, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// `VmRSS`.
    pub rss_bytes: u64,
    /// `VmHWM`: the peak RSS over the process's life.
    pub rss_peak_bytes: u64,
    /// `RssAnon`: the part of RSS that is not mapped files.
    pub rss_anon_bytes: u64,
    /// `VmSize`.
    pub virtual_bytes: u64,
    /// The effective uid (the second field of `Uid:`).
    pub euid: u32,
}

/// Parses `/proc/<pid>/status`.
pub fn status(pid: Pid) -> Option<Status> {
    parse_status(&pid.read("status")?)
}

fn parse_status(text: &str) -> Option<Status> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::split_whitespace)
    };
    let kib = |key: &str| -> Option<u64> { Some(field(key)?.next()?.parse::<u64>().ok()? * 1024) };
    // Kernel threads and zombies have no memory lines: zero, not an error, so that
    // whoever walks every process (the benchmark's quiet-machine check) can read them.
    Some(Status {
        rss_bytes: kib("VmRSS").unwrap_or(0),
        rss_peak_bytes: kib("VmHWM").unwrap_or(0),
        rss_anon_bytes: kib("RssAnon").unwrap_or(0),
        virtual_bytes: kib("VmSize").unwrap_or(0),
        euid: field("Uid")?.nth(1)?.parse().ok()?,
    })
}

/// The CPU time of the process's live threads, in ns (the sum of
/// `/proc/<pid>/task/*/schedstat`): nanosecond resolution, exited threads left out.
pub fn thread_cpu_ns(pid: Pid) -> Option<u64> {
    let tasks = std::fs::read_dir(pid.dir().join("task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// How many file descriptors the process has open.
pub fn open_fds(pid: Pid) -> Option<usize> {
    Some(std::fs::read_dir(pid.dir().join("fd")).ok()?.count())
}

/// The process's arguments (`/proc/<pid>/cmdline`), lossily decoded.
pub fn cmdline(pid: Pid) -> Vec<String> {
    nul_separated(&pid.dir().join("cmdline"))
}

/// The process's environment (`/proc/<pid>/environ`) as `KEY=VALUE` strings.
pub fn environ(pid: Pid) -> Vec<String> {
    nul_separated(&pid.dir().join("environ"))
}

fn nul_separated(path: &std::path::Path) -> Vec<String> {
    std::fs::read(path)
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Every pid in `/proc`.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether `pid` is running: it exists and has not exited (a zombie has).
pub fn is_running(pid: u32) -> bool {
    stat(Pid::Of(pid)).is_some_and(|s| s.state != 'Z')
}

/// The whole machine's CPU counters (`/proc/stat`, first line), in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// Everything but idle and iowait, all CPUs.
    pub busy_ns: u64,
    pub softirq_ns: u64,
    /// Time the hypervisor ran something else while a vCPU wanted to run.
    pub steal_ns: u64,
}

/// Reads the machine's CPU counters.
pub fn machine_cpu() -> Option<MachineCpu> {
    parse_machine_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_cpu(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let ns = 1_000_000_000 / TICKS_PER_SEC;
    Some(MachineCpu {
        busy_ns: busy * ns,
        softirq_ns: get(6) * ns,
        steal_ns: get(7) * ns,
    })
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Appends this process's gauges in the Prometheus text format, with the names and
/// meanings of the Prometheus client libraries (`process_start_time_seconds`,
/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`), and `<binary>_build_info`
/// with the version (its help text `<Binary> build information.`). Read at scrape time, so they cost nothing in between.
pub fn write_metrics(out: &mut String, started: SystemTime, binary: &str, version: &str) {
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let start = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    };
    gauge(
        out,
        "process_start_time_seconds",
        "Time that the process started (in seconds since the UNIX epoch).",
        start,
    );
    if let Some(s) = stat(Pid::This) {
        header(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", s.cpu_seconds());
    }
    if let Some(s) = status(Pid::This) {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.rss_bytes as f64,
        );
        gauge(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.virtual_bytes as f64,
        );
    }
    if let Some(n) = open_fds(Pid::This) {
        gauge(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            n as f64,
        );
    }
    let name = format!("{binary}_build_info");
    let mut title = binary.chars();
    let title: String = title
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(title)
        .collect();
    header(out, &name, "gauge", &format!("{title} build information."));
    let _ = writeln!(out, "{name}{{version=\"{version}\"}} 1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_strange_command_name() {
        let s =
            parse_stat("42 (a (b) c) S 7 42 42 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 1 0").unwrap();
        assert_eq!(s.comm, "a (b) c");
        assert_eq!((s.state, s.ppid), ('S', 7));
        assert_eq!((s.utime_ticks, s.stime_ticks), (150, 25));
        assert_eq!(s.cpu_seconds(), 1.75);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn status_fields() {
        let s = parse_status(
            "Name:\tx\nUid:\t1000\t2102\t2102\t2102\nVmHWM:\t 900 kB\nVmRSS:\t 800 kB\nRssAnon:\t 100 kB\nVmSize:\t 5000 kB\n",
        )
        .unwrap();
        assert_eq!(s.rss_bytes, 800 * 1024);
        assert_eq!(s.rss_peak_bytes, 900 * 1024);
        assert_eq!(s.rss_anon_bytes, 100 * 1024);
        assert_eq!(s.virtual_bytes, 5000 * 1024);
        assert_eq!(s.euid, 2102);
        // A kernel thread: no memory at all, still a status.
        let k = parse_status("Name:\tkthreadd\nUid:\t0\t0\t0\t0\n").unwrap();
        assert_eq!((k.rss_bytes, k.virtual_bytes, k.euid), (0, 0, 0));
    }

    #[test]
    fn this_process() {
        let s = stat(Pid::This).unwrap();
        assert_ne!(s.state, 'Z');
        assert!(status(Pid::This).unwrap().rss_bytes > 0);
        assert!(open_fds(Pid::This).unwrap() > 0);
        assert!(thread_cpu_ns(Pid::This).unwrap() > 0);
        assert!(is_running(std::process::id()));
        assert!(!is_running(4_000_000_000));
        assert!(!cmdline(Pid::This).is_empty());
        assert!(machine_cpu().unwrap().busy_ns > 0);
        let mut out = String::new();
        write_metrics(&mut out, SystemTime::now(), "test", "1.0");
        assert!(out.contains("process_resident_memory_bytes "), "{out}");
        assert!(out.contains("test_build_info{version=\"1.0\"} 1"), "{out}");
        assert!(
            out.contains("# HELP test_build_info Test build information."),
            "{out}"
        );
    }
}
