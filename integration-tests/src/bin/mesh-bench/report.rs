//! The Markdown report of a `mesh-bench run`.

use crate::{
    load::Proto,
    run::{Results, RunRecord, BACKEND, INBOUND, LOADGEN, OUTBOUND},
};
use std::fmt::Write as _;

// The targets the issue sets for this 2-core machine.
const MAX_RATIO_MIN: f64 = 0.40;
const CPU_US_PER_REQ_MAX: f64 = 25.0;
const ADDED_P50_MS_MAX: f64 = 0.25;
const ADDED_P99_MS_MAX: f64 = 0.5;
const TARGET_RATE: f64 = 1000.0;
const RSS_IDLE_MB_MAX: f64 = 8.0;
const RSS_LOAD_MB_MAX: f64 = 12.0;
const RSS_LOAD_RATE: f64 = 2000.0;

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1e3)
}

fn signed_ms(us: f64) -> String {
    format!("{:+.3}", us / 1e3)
}

/// KiB as MB (10^6 bytes).
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

/// CPU of `proc` per request handled in the run's window, in µs.
pub(crate) fn us_per_req(r: &RunRecord, proc: &str) -> Option<f64> {
    let n = r.load.count + r.load.errors;
    let p = r.procs.get(proc)?;
    (n > 0).then(|| p.cpu_ns() as f64 / n as f64 / 1e3)
}

/// CPU of `proc` over the window, in cores.
fn cores(r: &RunRecord, proc: &str) -> Option<f64> {
    let p = r.procs.get(proc)?;
    (r.window_s > 0.0).then(|| p.cpu_ns() as f64 / 1e9 / r.window_s)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
}

pub(crate) fn progress_line(r: &RunRecord) -> String {
    let l = &r.load;
    let mut s = format!(
        "{} {:>9} {:<7} {:>7} ok {:>3} err {:>9.1} rps  p50 {} p99 {} p99.9 {} ms",
        r.proto.as_str(),
        r.rate.map_or("max".to_string(), |r| format!("{r} rps")),
        if r.proxied { "proxied" } else { "direct" },
        l.count,
        l.errors + l.incomplete,
        l.rps,
        ms(l.latency_us.p50),
        ms(l.latency_us.p99),
        ms(l.latency_us.p999),
    );
    if r.proxied {
        let _ = write!(
            s,
            "  cpu/req out {} in {} µs",
            opt(us_per_req(r, OUTBOUND), 1),
            opt(us_per_req(r, INBOUND), 1)
        );
    }
    let _ = write!(s, "  other cpu {:.2}", r.other_cores());
    if let Some(e) = &l.first_error {
        let _ = write!(s, "  first error: {e}");
    }
    s
}

struct View<'a> {
    res: &'a Results,
}

impl<'a> View<'a> {
    fn fixed(&self, proto: Proto, rate: f64, proxied: bool) -> Option<&'a RunRecord> {
        self.res.runs.iter().find(|r| r.proto == proto && r.rate == Some(rate) && r.proxied == proxied)
    }

    /// The maximum-throughput run with the median rps (of several rounds).
    fn max(&self, proto: Proto, proxied: bool) -> Option<&'a RunRecord> {
        let mut runs: Vec<&RunRecord> =
            self.res.runs.iter().filter(|r| r.proto == proto && r.rate.is_none() && r.proxied == proxied).collect();
        runs.sort_by(|a, b| a.load.rps.total_cmp(&b.load.rps));
        runs.get(runs.len().saturating_sub(1) / 2).copied()
    }

    fn protos(&self) -> Vec<Proto> {
        let mut v: Vec<Proto> = Vec::new();
        for r in &self.res.runs {
            if !v.contains(&r.proto) {
                v.push(r.proto);
            }
        }
        v
    }

    fn rates(&self) -> Vec<f64> {
        let mut v: Vec<f64> = Vec::new();
        for r in self.res.runs.iter().filter_map(|r| r.rate) {
            if !v.contains(&r) {
                v.push(r);
            }
        }
        v
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::H1 => "HTTP/1.1",
        Proto::H2 => "HTTP/2",
    }
}

pub(crate) fn render(res: &Results) -> String {
    let v = View { res };
    let m = &res.meta;
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# mesh-proxy benchmark, {}\n", m.date);
    let _ = writeln!(w, "Made by `{}` at commit {} in {:.0} s.\n", m.command, m.git, m.elapsed_s);
    let _ = writeln!(
        w,
        "Machine: {}, {} cores, {} memory, Linux {}. The load generator, the backend and both proxies \
         share these cores, so absolute numbers depend on what else ran; **read the differences and \
         ratios to the direct runs**, which were measured alongside.\n",
        if m.cpu.is_empty() { "unknown CPU" } else { &m.cpu },
        m.cores,
        m.memory,
        m.kernel
    );
    let _ = writeln!(
        w,
        "Setup: two network namespaces joined by a veth pair (198.18.200.1/30, .2/30). The backend \
         (`mesh-bench backend`, hyper, {} runtime thread(s)) answers every `GET` with a 1 KiB body over \
         HTTP/1.1 keep-alive or h2c. Both namespaces have `mesh-proxy init` iptables rules and a \
         `mesh-proxy` running as uid 2102 ({}); *direct* runs target a port both rules skip, *proxied* \
         runs go load → outbound proxy → inbound proxy → backend. Fixed rates: open loop over {} \
         connections, {:.0} s measured after {:.0} s warm-up, latency from each request's *scheduled* \
         send time (coordinated omission corrected). Maximum throughput: closed loop, {} HTTP/1.1 \
         connections or {} HTTP/2 connections × {} streams, {:.0} s measured{}. CPU is each process's \
         utime+stime over the measured window (per-thread schedstat, ns), which leaves out the \
         kernel's softirq network processing (shown for the whole machine); µs per request equals ms \
         per 1000 requests. MB = 10^6 bytes.\n",
        m.backend_threads,
        m.proxy_env.join(" "),
        m.conns,
        m.duration_s,
        m.warmup_s,
        m.max_h1_conns,
        m.max_h2_conns,
        m.max_h2_streams,
        m.max_duration_s,
        if m.max_rounds > 1 { format!(", median of {} rounds", m.max_rounds) } else { String::new() },
    );
    let _ = writeln!(
        w,
        "Other load: {:.2} cores were busy just before the start (load average {} at the start, {} at the \
         end). Each table shows *other CPU*: cores busy on the machine during the measured window but \
         neither in the benchmark's four processes nor in softirq (where the kernel's network work \
         is accounted): other processes. A direct/proxied pair during which it exceeded the \
         threshold was run again ({} pair(s) were); a value well above 0.1 that remains means the \
         run competed with something else.\n",
        m.busy_before_cores, m.loadavg_start, m.loadavg_end, m.pairs_rerun
    );

    targets(&v, w);

    let _ = writeln!(w, "## Latency at fixed rates\n");
    let _ = writeln!(w, "Milliseconds; *added* = proxied − direct at the same percentile.\n");
    for proto in v.protos() {
        let _ = writeln!(w, "### {}\n", proto_name(proto));
        let _ = writeln!(
            w,
            "| rate (rps) | direct p50 / p99 / p99.9 | proxied p50 / p99 / p99.9 | added p50 / p99 / p99.9 | achieved rps direct / proxied | errors direct / proxied | generator send lag p99 direct / proxied | other CPU direct / proxied |"
        );
        let _ = writeln!(w, "|---:|---|---|---|---|---|---|---|");
        for rate in v.rates() {
            let (Some(d), Some(p)) = (v.fixed(proto, rate, false), v.fixed(proto, rate, true)) else { continue };
            let (dl, pl) = (&d.load.latency_us, &p.load.latency_us);
            let lag = |r: &RunRecord| r.load.send_lag_us.map_or("–".to_string(), |l| ms(l.p99));
            let _ = writeln!(
                w,
                "| {rate} | {} / {} / {} | {} / {} / {} | {} / {} / {} | {:.1} / {:.1} | {} / {} | {} / {} | {:.2} / {:.2} |",
                ms(dl.p50),
                ms(dl.p99),
                ms(dl.p999),
                ms(pl.p50),
                ms(pl.p99),
                ms(pl.p999),
                signed_ms(pl.p50 - dl.p50),
                signed_ms(pl.p99 - dl.p99),
                signed_ms(pl.p999 - dl.p999),
                d.load.rps,
                p.load.rps,
                d.load.errors + d.load.incomplete,
                p.load.errors + p.load.incomplete,
                lag(d),
                lag(p),
                d.other_cores(),
                p.other_cores(),
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Maximum throughput\n");
    let _ = writeln!(
        w,
        "| protocol | in flight | direct rps | proxied rps | proxied / direct | direct p50 / p99 (ms) | proxied p50 / p99 (ms) | errors direct / proxied |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---|---|---|");
    for proto in v.protos() {
        let (Some(d), Some(p)) = (v.max(proto, false), v.max(proto, true)) else { continue };
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {} / {} | {} / {} | {} / {} |",
            proto_name(proto),
            d.load.concurrency,
            d.load.rps,
            p.load.rps,
            100.0 * p.load.rps / d.load.rps.max(1e-9),
            ms(d.load.latency_us.p50),
            ms(d.load.latency_us.p99),
            ms(p.load.latency_us.p50),
            ms(p.load.latency_us.p99),
            d.load.errors + d.load.incomplete,
            p.load.errors + p.load.incomplete,
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "CPU in use during the maximum-throughput runs (cores; the machine has {}):\n", m.cores);
    let _ = writeln!(
        w,
        "| protocol | path | load generator | backend | outbound proxy | inbound proxy | these four | other | of which softirq | steal |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for proto in v.protos() {
        for proxied in [false, true] {
            let Some(r) = v.max(proto, proxied) else { continue };
            let procs = [LOADGEN, BACKEND, OUTBOUND, INBOUND];
            let total: f64 = procs.iter().filter_map(|p| cores(r, p)).sum();
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                proto_name(proto),
                if proxied { "proxied" } else { "direct" },
                opt(cores(r, LOADGEN), 2),
                opt(cores(r, BACKEND), 2),
                if proxied { opt(cores(r, OUTBOUND), 2) } else { "(idle)".into() },
                if proxied { opt(cores(r, INBOUND), 2) } else { "(idle)".into() },
                total,
                r.other_cores(),
                r.machine.softirq_cores,
                r.machine.steal_cores,
            );
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Proxy CPU per request\n");
    let _ = writeln!(
        w,
        "µs of CPU per request (= ms per 1000 requests) and cores in use, over each proxied run's measured window. \
         At fixed rates requests mostly arrive one at a time, so each pays for its own wake-ups and \
         syscalls; at saturation these are shared by several requests.\n"
    );
    if !res.idle_cpu_cores.is_empty() {
        let idle: Vec<String> =
            res.idle_cpu_cores.iter().map(|(p, c)| format!("{p} {:.1} µs/s", c * 1e6)).collect();
        let _ = writeln!(w, "With no traffic (5 s before the first run): {}.\n", idle.join(", "));
    }
    let _ = writeln!(w, "| protocol | load | outbound µs/req | inbound µs/req | outbound cores | inbound cores | requests seen by outbound / inbound (incl. warm-up) |");
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---|");
    for proto in v.protos() {
        let mut rows: Vec<(String, &RunRecord)> =
            v.rates().into_iter().filter_map(|rate| Some((format!("{rate} rps"), v.fixed(proto, rate, true)?))).collect();
        if let Some(r) = v.max(proto, true) {
            rows.push(("max".into(), r));
        }
        for (label, r) in rows {
            let seen = |p: &str| r.proxy_requests.get(p).map_or("–".into(), u64::to_string);
            let _ = writeln!(
                w,
                "| {} | {label} | {} | {} | {} | {} | {} / {} |",
                proto_name(proto),
                opt(us_per_req(r, OUTBOUND), 1),
                opt(us_per_req(r, INBOUND), 1),
                opt(cores(r, OUTBOUND), 3),
                opt(cores(r, INBOUND), 3),
                seen(OUTBOUND),
                seen(INBOUND),
            );
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Proxy memory (RSS)\n");
    let _ = writeln!(w, "MB; *at* a load = the highest VmRSS sampled every 100 ms through its measured window.\n");
    let mut header = "| proxy | idle |".to_string();
    let mut sep = "|---|---:|".to_string();
    let mut cols: Vec<(String, Vec<&RunRecord>)> = Vec::new();
    for proto in v.protos() {
        if let Some(r) = v.fixed(proto, RSS_LOAD_RATE, true) {
            cols.push((format!("{} {RSS_LOAD_RATE} rps", proto.as_str()), vec![r]));
        }
        let maxes: Vec<&RunRecord> = res.runs.iter().filter(|r| r.proto == proto && r.rate.is_none() && r.proxied).collect();
        if !maxes.is_empty() {
            cols.push((format!("{} max", proto.as_str()), maxes));
        }
    }
    for (c, _) in &cols {
        let _ = write!(header, " at {c} |");
        sep.push_str("---:|");
    }
    header.push_str(" end (idle, 2 s after the last run) | VmHWM at end |");
    sep.push_str("---:|---:|");
    let _ = writeln!(w, "{header}\n{sep}");
    for p in [OUTBOUND, INBOUND] {
        let mut row = format!("| {p} | {} |", res.idle.get(p).map_or("–".into(), |s| format!("{:.2}", mb(s.rss_kib))));
        for (_, runs) in &cols {
            let peak = runs.iter().filter_map(|r| r.procs.get(p)).map(|w| w.rss_peak_kib.max(w.after.rss_kib)).max();
            let _ = write!(row, " {} |", peak.map_or("–".into(), |k| format!("{:.2}", mb(k))));
        }
        let end = res.end.get(p);
        let _ = write!(
            row,
            " {} | {} |",
            end.map_or("–".into(), |s| format!("{:.2}", mb(s.rss_kib))),
            end.map_or("–".into(), |s| format!("{:.2}", mb(s.hwm_kib)))
        );
        let _ = writeln!(w, "{row}");
    }
    let _ = writeln!(w);

    let logs: Vec<_> = res.proxy_logs.iter().filter(|(_, l)| !l.is_empty()).collect();
    if !logs.is_empty() {
        let _ = writeln!(w, "## Proxy logs (warn and above, first lines)\n");
        for (name, lines) in logs {
            let _ = writeln!(w, "{name}:\n\n```text\n{}\n```\n", lines.join("\n"));
        }
    }
    let _ = writeln!(w, "Raw numbers (every run, every process sample): the `.json` file beside this one.");
    o
}

fn targets(v: &View<'_>, w: &mut String) {
    let res = v.res;
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured | |");
    let _ = writeln!(w, "|---|---|---|");
    for proto in v.protos() {
        let name = proto_name(proto);
        match (v.max(proto, false), v.max(proto, true)) {
            (Some(d), Some(p)) => {
                let ratio = p.load.rps / d.load.rps.max(1e-9);
                let _ = writeln!(
                    w,
                    "| {name}: max throughput through the pair ≥ {:.0}% of direct | {:.1}% ({:.0} / {:.0} rps) | {} |",
                    MAX_RATIO_MIN * 100.0,
                    ratio * 100.0,
                    p.load.rps,
                    d.load.rps,
                    met(ratio >= MAX_RATIO_MIN)
                );
            }
            _ => {
                let _ = writeln!(w, "| {name}: max throughput ≥ 40% of direct | not measured | |");
            }
        }
    }
    for proto in v.protos() {
        let name = proto_name(proto);
        if let Some(p) = v.max(proto, true) {
            for proxy in [OUTBOUND, INBOUND] {
                let us = us_per_req(p, proxy);
                let _ = writeln!(
                    w,
                    "| {name}: {proxy} < {CPU_US_PER_REQ_MAX:.0} µs CPU per request at saturation | {} µs | {} |",
                    opt(us, 1),
                    met(us.is_some_and(|u| u < CPU_US_PER_REQ_MAX))
                );
            }
        }
    }
    for proto in v.protos() {
        let name = proto_name(proto);
        match (v.fixed(proto, TARGET_RATE, false), v.fixed(proto, TARGET_RATE, true)) {
            (Some(d), Some(p)) => {
                let (a50, a99) = (
                    (p.load.latency_us.p50 - d.load.latency_us.p50) / 1e3,
                    (p.load.latency_us.p99 - d.load.latency_us.p99) / 1e3,
                );
                let _ = writeln!(
                    w,
                    "| {name}: added latency at {TARGET_RATE:.0} rps ({} conns) p50 < {ADDED_P50_MS_MAX} ms | {a50:+.3} ms | {} |",
                    d.load.conns,
                    met(a50 < ADDED_P50_MS_MAX)
                );
                let _ = writeln!(
                    w,
                    "| {name}: added latency at {TARGET_RATE:.0} rps ({} conns) p99 < {ADDED_P99_MS_MAX} ms | {a99:+.3} ms | {} |",
                    d.load.conns,
                    met(a99 < ADDED_P99_MS_MAX)
                );
            }
            _ => {
                let _ = writeln!(w, "| {name}: added latency at {TARGET_RATE:.0} rps | not measured | |");
            }
        }
    }
    for proxy in [OUTBOUND, INBOUND] {
        if let Some(s) = res.idle.get(proxy) {
            let _ = writeln!(
                w,
                "| {proxy} RSS idle < {RSS_IDLE_MB_MAX:.0} MB | {:.2} MB | {} |",
                mb(s.rss_kib),
                met(mb(s.rss_kib) < RSS_IDLE_MB_MAX)
            );
        }
        let peak = res
            .runs
            .iter()
            .filter(|r| r.proxied && r.rate == Some(RSS_LOAD_RATE))
            .filter_map(|r| r.procs.get(proxy))
            .map(|p| p.rss_peak_kib.max(p.after.rss_kib))
            .max();
        match peak {
            Some(k) => {
                let _ = writeln!(
                    w,
                    "| {proxy} RSS at {RSS_LOAD_RATE:.0} rps < {RSS_LOAD_MB_MAX:.0} MB | {:.2} MB (peak over both protocols) | {} |",
                    mb(k),
                    met(mb(k) < RSS_LOAD_MB_MAX)
                );
            }
            None => {
                let _ = writeln!(w, "| {proxy} RSS at {RSS_LOAD_RATE:.0} rps < {RSS_LOAD_MB_MAX:.0} MB | not measured | |");
            }
        }
    }
    let _ = writeln!(w);
}
