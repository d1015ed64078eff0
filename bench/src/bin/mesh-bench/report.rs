//! The Markdown report of a `mesh-bench run`.
//!
//! Every (protocol, load, path) may have been run several rounds; the report gives the
//! median over the rounds of each figure (and the per-round p99 or rps, to show the
//! spread), and the highest RSS.

use crate::{
    load::Proto,
    run::{
        other_cores, ConnectRecord, IdleConns, Results, RunRecord, BACKEND, INBOUND, LOADGEN,
        OUTBOUND,
    },
};
use mesh_bench::report::{made_by, mb};
use std::fmt::Write as _;

// The targets the issue sets for this 2-core machine.
const MAX_RATIO_MIN: f64 = 0.40;
const CPU_US_PER_REQ_MAX: f64 = 25.0;
const ADDED_P50_MS_MAX: f64 = 0.25;
const ADDED_P99_MS_MAX: f64 = 0.5;
// With mutual TLS between the proxies (`--mtls`).
const MTLS_MAX_RATIO_MIN: f64 = 0.35;
const MTLS_CPU_US_PER_REQ_MAX: f64 = 30.0;
const MTLS_ADDED_P50_MS_MAX: f64 = 0.3;
const MTLS_ADDED_P99_MS_MAX: f64 = 0.6;
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

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// CPU of `proc` per request handled in the run's window, in µs.
fn us_per_req(r: &RunRecord, proc: &str) -> Option<f64> {
    let n = r.load.count + r.load.errors;
    let p = r.procs.get(proc)?;
    (n > 0).then(|| p.cpu_ns() as f64 / n as f64 / 1e3)
}

/// CPU of `proc` over the window, in cores.
fn cores(r: &RunRecord, proc: &str) -> Option<f64> {
    let p = r.procs.get(proc)?;
    (r.window_s > 0.0).then(|| p.cores(r.window_s))
}

/// Share of `proc`'s CPU spent in the kernel (stime / (utime + stime)).
fn kernel_share(r: &RunRecord, proc: &str) -> Option<f64> {
    let p = r.procs.get(proc)?;
    let user = p.after.utime_ticks.saturating_sub(p.before.utime_ticks);
    let sys = p.after.stime_ticks.saturating_sub(p.before.stime_ticks);
    (user + sys > 0).then(|| sys as f64 / (user + sys) as f64)
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
    let _ = write!(
        s,
        "  other cpu {:.2} steal {:.2}",
        r.other_cores(),
        r.machine.steal_cores
    );
    if let Some(e) = &l.first_error {
        let _ = write!(s, "  first error: {e}");
    }
    s
}

/// The rounds of one (protocol, load, path).
struct Group<'a> {
    runs: Vec<&'a RunRecord>,
}

impl Group<'_> {
    fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    fn med(&self, f: impl Fn(&RunRecord) -> Option<f64>) -> Option<f64> {
        median(self.runs.iter().filter_map(|r| f(r)).collect())
    }

    fn p50(&self) -> f64 {
        self.med(|r| Some(r.load.latency_us.p50))
            .unwrap_or(f64::NAN)
    }

    fn p99(&self) -> f64 {
        self.med(|r| Some(r.load.latency_us.p99))
            .unwrap_or(f64::NAN)
    }

    fn p999(&self) -> f64 {
        self.med(|r| Some(r.load.latency_us.p999))
            .unwrap_or(f64::NAN)
    }

    fn rps(&self) -> f64 {
        self.med(|r| Some(r.load.rps)).unwrap_or(f64::NAN)
    }

    fn errors(&self) -> u64 {
        self.runs
            .iter()
            .map(|r| r.load.errors + r.load.incomplete)
            .sum()
    }

    fn us_per_req(&self, proc: &str) -> Option<f64> {
        self.med(|r| us_per_req(r, proc))
    }

    fn cores(&self, proc: &str) -> Option<f64> {
        self.med(|r| cores(r, proc))
    }

    fn rss_peak_kib(&self, proc: &str) -> Option<u64> {
        self.runs
            .iter()
            .filter_map(|r| r.procs.get(proc))
            .map(|w| w.rss_peak_kib.max(w.after.rss_kib))
            .max()
    }

    /// The worst round's other CPU + steal.
    fn disturbance(&self) -> f64 {
        self.runs
            .iter()
            .map(|r| r.disturbance())
            .fold(0.0, f64::max)
    }

    fn each(&self, f: impl Fn(&RunRecord) -> String) -> String {
        self.runs
            .iter()
            .map(|r| f(r))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct View<'a> {
    res: &'a Results,
}

impl<'a> View<'a> {
    /// `rate` `None`: maximum throughput.
    fn group(&self, proto: Proto, rate: Option<f64>, proxied: bool) -> Group<'a> {
        Group {
            runs: self
                .res
                .runs
                .iter()
                .filter(|r| r.proto == proto && r.rate == rate && r.proxied == proxied)
                .collect(),
        }
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
    if m.mtls {
        let _ = writeln!(
            w,
            "# mesh-proxy benchmark with mutual TLS between the proxies, {}\n",
            m.date
        );
    } else {
        let _ = writeln!(w, "# mesh-proxy benchmark, {}\n", m.date);
    }
    let _ = writeln!(w, "{}", made_by(&m.command, &m.git, m.elapsed_s));
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
         send time (coordinated omission corrected), {} round(s) of every rate. Maximum throughput: \
         closed loop, {} HTTP/1.1 connections or {} HTTP/2 connections × {} streams, {:.0} s measured, \
         {} round(s). Rounds alternate direct and proxied; figures are medians over the rounds. CPU \
         is each process's utime+stime over the measured window (per-thread schedstat, ns), which \
         leaves out the kernel's softirq network processing (shown for the whole machine); µs per \
         request equals ms per 1000 requests. MB = 10^6 bytes.\n",
        m.backend_threads,
        m.proxy_env.join(" "),
        m.conns,
        m.duration_s,
        m.warmup_s,
        m.rounds,
        m.max_h1_conns,
        m.max_h2_conns,
        m.max_h2_streams,
        m.max_duration_s,
        m.max_rounds,
    );
    let _ = writeln!(
        w,
        "Other load: {:.2} cores were busy just before the start (load average {} at the start, {} at the \
         end). The tables show *other CPU*: cores busy on the machine during the measured window but \
         neither in the benchmark's four processes nor in softirq (where the kernel's network work \
         is accounted), i.e. other processes; and *steal*: time the hypervisor gave this VM's vCPUs \
         to someone else. A direct/proxied pair during which their sum exceeded the threshold was \
         run again ({} pair(s) were); a sum well above 0.1 that remains means the run competed with \
         something else, which shows most in the proxied tail latencies (four processes and \
         twice the hops per request on two vCPUs).\n",
        m.busy_before_cores, m.loadavg_start, m.loadavg_end, m.pairs_rerun
    );

    if m.mtls {
        let _ = writeln!(
            w,
            "mTLS: `mesh-controller` (file backend) runs in the server namespace and serves identity \
             and discovery; each proxy gets a certificate for its own identity \
             (`client.bench…`, `server.bench…`), and discovery announces the backend's address as a \
             meshed endpoint with the server proxy's identity. So the outbound proxy sends all \
             proxied traffic to the inbound proxy as TLS 1.3 (X25519MLKEM768 preferred): HTTP as \
             HTTP/2 on pooled connections whatever the client spoke, opaque TCP as one TLS \
             connection per client connection. The direct runs are the same as without mTLS.\n"
        );
    }
    targets(&v, w);
    tls_check(res, w);
    tap(res, w);

    let _ = writeln!(w, "## Latency at fixed rates\n");
    let _ = writeln!(w, "Milliseconds, medians over the rounds; *added* = proxied − direct at the same percentile.\n");
    for proto in v.protos() {
        let _ = writeln!(w, "### {}\n", proto_name(proto));
        let _ = writeln!(
            w,
            "| rate (rps) | direct p50 / p99 / p99.9 | proxied p50 / p99 / p99.9 | added p50 / p99 / p99.9 | p99 of each round: direct; proxied | achieved rps direct / proxied | errors direct / proxied | generator send lag p99 direct / proxied | other CPU + steal direct / proxied (worst round) |"
        );
        let _ = writeln!(w, "|---:|---|---|---|---|---|---|---|---|");
        for rate in v.rates() {
            let (d, p) = (
                v.group(proto, Some(rate), false),
                v.group(proto, Some(rate), true),
            );
            if d.is_empty() || p.is_empty() {
                continue;
            }
            let lag = |g: &Group<'_>| opt(g.med(|r| r.load.send_lag_us.map(|l| l.p99 / 1e3)), 3);
            let _ = writeln!(
                w,
                "| {rate} | {} / {} / {} | {} / {} / {} | {} / {} / {} | {}; {} | {:.1} / {:.1} | {} / {} | {} / {} | {:.2} / {:.2} |",
                ms(d.p50()),
                ms(d.p99()),
                ms(d.p999()),
                ms(p.p50()),
                ms(p.p99()),
                ms(p.p999()),
                signed_ms(p.p50() - d.p50()),
                signed_ms(p.p99() - d.p99()),
                signed_ms(p.p999() - d.p999()),
                d.each(|r| ms(r.load.latency_us.p99)),
                p.each(|r| ms(r.load.latency_us.p99)),
                d.rps(),
                p.rps(),
                d.errors(),
                p.errors(),
                lag(&d),
                lag(&p),
                d.disturbance(),
                p.disturbance(),
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Maximum throughput\n");
    let _ = writeln!(
        w,
        "| protocol | in flight | direct rps | proxied rps | proxied / direct | direct p50 / p99 (ms) | proxied p50 / p99 (ms) | errors direct / proxied | rps of each round: direct; proxied |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---|---|---|---|");
    for proto in v.protos() {
        let (d, p) = (v.group(proto, None, false), v.group(proto, None, true));
        if d.is_empty() || p.is_empty() {
            continue;
        }
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {} / {} | {} / {} | {} / {} | {}; {} |",
            proto_name(proto),
            d.runs[0].load.concurrency,
            d.rps(),
            p.rps(),
            100.0 * p.rps() / d.rps().max(1e-9),
            ms(d.p50()),
            ms(d.p99()),
            ms(p.p50()),
            ms(p.p99()),
            d.errors(),
            p.errors(),
            d.each(|r| format!("{:.0}", r.load.rps)),
            p.each(|r| format!("{:.0}", r.load.rps)),
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "CPU in use during the maximum-throughput runs (cores, medians; the machine has {}). Per request, \
         the proxied path costs the whole machine (these four + softirq) / rps:\n",
        m.cores
    );
    let _ = writeln!(
        w,
        "| protocol | path | load generator | backend | outbound proxy | inbound proxy | these four | softirq | other | steal | machine µs per request |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for proto in v.protos() {
        for proxied in [false, true] {
            let g = v.group(proto, None, proxied);
            if g.is_empty() {
                continue;
            }
            let procs = [LOADGEN, BACKEND, OUTBOUND, INBOUND];
            let total: f64 = procs.iter().filter_map(|p| g.cores(p)).sum();
            let softirq = g.med(|r| Some(r.machine.softirq_cores)).unwrap_or(0.0);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                proto_name(proto),
                if proxied { "proxied" } else { "direct" },
                opt(g.cores(LOADGEN), 2),
                opt(g.cores(BACKEND), 2),
                if proxied {
                    opt(g.cores(OUTBOUND), 2)
                } else {
                    "(idle)".into()
                },
                if proxied {
                    opt(g.cores(INBOUND), 2)
                } else {
                    "(idle)".into()
                },
                total,
                softirq,
                g.med(|r| Some(r.other_cores())).unwrap_or(0.0),
                g.med(|r| Some(r.machine.steal_cores)).unwrap_or(0.0),
                (total + softirq) * 1e6 / g.rps().max(1e-9),
            );
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Proxy CPU per request\n");
    let _ = writeln!(
        w,
        "µs of CPU per request (= ms per 1000 requests), the share of it spent in the kernel (stime), \
         and cores in use, over each proxied run's measured window (medians over the rounds). At \
         fixed rates requests mostly arrive one at a time, so each pays for its own wake-ups and \
         syscalls; at saturation these are shared by several requests. For scale, the backend (a \
         bare hyper server: one read and one write per request) is in the last column.\n"
    );
    if !res.idle_cpu_cores.is_empty() {
        let idle: Vec<String> = res
            .idle_cpu_cores
            .iter()
            .map(|(p, c)| format!("{p} {:.1} µs/s", c * 1e6))
            .collect();
        let _ = writeln!(
            w,
            "With no traffic (5 s before the first run): {}.\n",
            idle.join(", ")
        );
    }
    let _ = writeln!(
        w,
        "| protocol | load | outbound µs/req | inbound µs/req | outbound kernel share | inbound kernel share | outbound cores | inbound cores | requests seen by outbound / inbound (incl. warm-up, all rounds) | backend µs/req (direct run) |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for proto in v.protos() {
        let mut loads: Vec<Option<f64>> = v.rates().into_iter().map(Some).collect();
        loads.push(None);
        for load in loads {
            let (g, d) = (v.group(proto, load, true), v.group(proto, load, false));
            if g.is_empty() {
                continue;
            }
            let seen = |p: &str| {
                g.runs
                    .iter()
                    .filter_map(|r| r.proxy_requests.get(p))
                    .sum::<u64>()
                    .to_string()
            };
            let pct = |x: Option<f64>| x.map_or("–".into(), |x| format!("{:.0}%", x * 100.0));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                proto_name(proto),
                load.map_or("max".to_string(), |r| format!("{r} rps")),
                opt(g.us_per_req(OUTBOUND), 1),
                opt(g.us_per_req(INBOUND), 1),
                pct(g.med(|r| kernel_share(r, OUTBOUND))),
                pct(g.med(|r| kernel_share(r, INBOUND))),
                opt(g.cores(OUTBOUND), 3),
                opt(g.cores(INBOUND), 3),
                seen(OUTBOUND),
                seen(INBOUND),
                opt(d.us_per_req(BACKEND), 1),
            );
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Proxy memory (RSS)\n");
    let _ = writeln!(
        w,
        "MB; *at* a load = the highest VmRSS sampled every 100 ms through its measured windows.\n"
    );
    let mut header = "| proxy | idle |".to_string();
    let mut sep = "|---|---:|".to_string();
    let mut cols: Vec<(String, Group<'_>)> = Vec::new();
    for proto in v.protos() {
        for load in [Some(RSS_LOAD_RATE), None] {
            let g = v.group(proto, load, true);
            if !g.is_empty() {
                cols.push((
                    format!(
                        "{} {}",
                        proto.as_str(),
                        load.map_or("max".into(), |r| format!("{r} rps"))
                    ),
                    g,
                ));
            }
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
        let mut row = format!(
            "| {p} | {} |",
            res.idle
                .get(p)
                .map_or("–".into(), |s| format!("{:.2}", mb(s.rss_kib)))
        );
        for (_, g) in &cols {
            let _ = write!(
                row,
                " {} |",
                g.rss_peak_kib(p)
                    .map_or("–".into(), |k| format!("{:.2}", mb(k)))
            );
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

    connections(res, w);

    let logs: Vec<_> = res
        .proxy_logs
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if !logs.is_empty() {
        let _ = writeln!(w, "## Proxy logs (warn and above, first lines)\n");
        for (name, lines) in logs {
            let _ = writeln!(w, "{name}:\n\n```text\n{}\n```\n", lines.join("\n"));
        }
    }
    let _ = writeln!(
        w,
        "Raw numbers (every run, every process sample): the `.json` file beside this one."
    );
    o
}

fn targets(v: &View<'_>, w: &mut String) {
    let res = v.res;
    let (max_ratio_min, cpu_us_per_req_max, added_p50_ms_max, added_p99_ms_max) = if res.meta.mtls {
        (
            MTLS_MAX_RATIO_MIN,
            MTLS_CPU_US_PER_REQ_MAX,
            MTLS_ADDED_P50_MS_MAX,
            MTLS_ADDED_P99_MS_MAX,
        )
    } else {
        (
            MAX_RATIO_MIN,
            CPU_US_PER_REQ_MAX,
            ADDED_P50_MS_MAX,
            ADDED_P99_MS_MAX,
        )
    };
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured (medians over the rounds) | |");
    let _ = writeln!(w, "|---|---|---|");
    for proto in v.protos() {
        let name = proto_name(proto);
        let (d, p) = (v.group(proto, None, false), v.group(proto, None, true));
        if d.is_empty() || p.is_empty() {
            let _ = writeln!(
                w,
                "| {name}: max throughput ≥ {:.0}% of direct | not measured | |",
                max_ratio_min * 100.0
            );
            continue;
        }
        let ratio = p.rps() / d.rps().max(1e-9);
        let _ = writeln!(
            w,
            "| {name}: max throughput through the pair ≥ {:.0}% of direct | {:.1}% ({:.0} / {:.0} rps) | {} |",
            max_ratio_min * 100.0,
            ratio * 100.0,
            p.rps(),
            d.rps(),
            met(ratio >= max_ratio_min)
        );
    }
    for proto in v.protos() {
        let name = proto_name(proto);
        let p = v.group(proto, None, true);
        if p.is_empty() {
            continue;
        }
        for proxy in [OUTBOUND, INBOUND] {
            let us = p.us_per_req(proxy);
            let _ = writeln!(
                w,
                "| {name}: {proxy} < {cpu_us_per_req_max:.0} µs CPU per request at saturation | {} µs | {} |",
                opt(us, 1),
                met(us.is_some_and(|u| u < cpu_us_per_req_max))
            );
        }
    }
    for proto in v.protos() {
        let name = proto_name(proto);
        let (d, p) = (
            v.group(proto, Some(TARGET_RATE), false),
            v.group(proto, Some(TARGET_RATE), true),
        );
        if d.is_empty() || p.is_empty() {
            let _ = writeln!(
                w,
                "| {name}: added latency at {TARGET_RATE:.0} rps | not measured | |"
            );
            continue;
        }
        let (a50, a99) = ((p.p50() - d.p50()) / 1e3, (p.p99() - d.p99()) / 1e3);
        let conns = d.runs[0].load.conns;
        let _ = writeln!(
            w,
            "| {name}: added latency at {TARGET_RATE:.0} rps ({conns} conns) p50 < {added_p50_ms_max} ms | {a50:+.3} ms | {} |",
            met(a50 < added_p50_ms_max)
        );
        let _ = writeln!(
            w,
            "| {name}: added latency at {TARGET_RATE:.0} rps ({conns} conns) p99 < {added_p99_ms_max} ms | {a99:+.3} ms | {} |",
            met(a99 < added_p99_ms_max)
        );
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
        let peak = v
            .protos()
            .into_iter()
            .filter_map(|proto| {
                v.group(proto, Some(RSS_LOAD_RATE), true)
                    .rss_peak_kib(proxy)
            })
            .max();
        match peak {
            Some(k) => {
                let _ = writeln!(
                    w,
                    "| {proxy} RSS at {RSS_LOAD_RATE:.0} rps < {RSS_LOAD_MB_MAX:.0} MB | {:.2} MB (highest over the protocols and rounds) | {} |",
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

pub(crate) fn connect_progress_line(r: &ConnectRecord) -> String {
    let l = &r.result;
    let mut s = format!(
        "tcp connects {:<7} {:>7} ok {:>3} err {:>9.1} conn/s  p50 {} p99 {} ms",
        if r.proxied { "proxied" } else { "direct" },
        l.count,
        l.errors,
        l.cps,
        ms(l.latency_us.p50),
        ms(l.latency_us.p99),
    );
    if r.proxied {
        let _ = write!(
            s,
            "  cpu/conn out {} in {} µs",
            opt(r.us_per_conn(OUTBOUND), 1),
            opt(r.us_per_conn(INBOUND), 1)
        );
    }
    if let Some(e) = &l.first_error {
        let _ = write!(s, "  first error: {e}");
    }
    s
}

/// RSS increase of `proxy` per held connection, KB (10^3 bytes).
fn kb_per_conn(i: &IdleConns, proxy: &str) -> Option<f64> {
    let (b, h) = (i.before.get(proxy)?, i.held.get(proxy)?);
    (i.opened > 0).then(|| (h.rss_kib as f64 - b.rss_kib as f64) * 1.024 / i.opened as f64)
}

pub(crate) fn idle_conns_line(i: &IdleConns) -> String {
    let mut s = format!(
        "idle conns: {} of {} open ({} errors)",
        i.opened, i.requested, i.errors
    );
    for p in [OUTBOUND, INBOUND] {
        let _ = write!(s, "  {p} {} KB/conn", opt(kb_per_conn(i, p), 1));
    }
    if let Some(e) = &i.first_error {
        let _ = write!(s, "  first error: {e}");
    }
    s
}

/// `--tap-with`: the subscriber that watched the inbound proxy through the whole run.
fn tap(res: &Results, w: &mut String) {
    let Some(t) = &res.tap else { return };
    let _ = writeln!(
        w,
        "\n## Tap subscriber\n\nOne `mesh tap po/backend-0 -o json --max-rps {}` through the controller's \
         tap API watched the inbound proxy for the whole run (an mTLS `Observe` stream with headers): \
         it received {} events. Its CPU over the run: {:.2} s; the controller's: {:.2} s (both counted \
         among the benchmark's processes, not as other load).\n",
        res.meta.tap_max_rps.unwrap_or_default(),
        t.events,
        t.subscriber_cpu_s,
        t.controller_cpu_s
    );
}

fn tls_check(res: &Results, w: &mut String) {
    let Some(c) = &res.tls_check else { return };
    let _ = writeln!(
        w,
        "## mTLS check
"
    );
    let _ = writeln!(
        w,
        "After the run both proxies' `/metrics` were scraped: every non-zero `request_total` \
         series of the outbound proxy's outbound side and of the inbound proxy's inbound side, \
         and every non-zero `tcp_open_total` series of the connections between the proxies \
         (`peer=\"dst\"` on the outbound proxy, `peer=\"src\"` on the inbound one; the \
         generator's and the backend's own connections to their proxies are plaintext by \
         design), split by the `tls` label. Totals since start, smoke test, warm-ups and the \
         connection tests included. The run fails unless all of them are `tls=\"true\"`. \
         **{}**{}\n",
        if c.passed { "Passed." } else { "FAILED:" },
        if c.passed {
            String::new()
        } else {
            format!(" {}", c.problems.join("; "))
        }
    );
    let _ = writeln!(
        w,
        "| proxy | requests tls=\"true\" | requests tls=\"false\" | connections tls=\"true\" | connections tls=\"false\" | peer identities |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---|");
    for (name, s) in &c.series {
        let _ = writeln!(
            w,
            "| {name} | {} | {} | {} | {} | {} |",
            s.requests_tls,
            s.requests_plain,
            s.conns_tls,
            s.conns_plain,
            s.peers
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(w);
    if let Some(ex) = c.series.get(OUTBOUND).and_then(|s| s.examples.first()) {
        let _ = writeln!(w, "For example (outbound proxy):\n\n```text\n{ex}\n```\n");
    }
}

fn connections(res: &Results, w: &mut String) {
    if res.connects.is_empty() && res.idle_conns.is_none() {
        return;
    }
    let mesh = if res.meta.mtls {
        "a TLS 1.3 handshake between the proxies"
    } else {
        "a new plaintext TCP connection between the proxies"
    };
    let _ = writeln!(w, "## New connections (opaque TCP)\n");
    if !res.connects.is_empty() {
        let _ = writeln!(
            w,
            "Closed loop, {} connections being opened at once, each: connect, send one byte to the \
             backend's echo listener, read it back, close. The port is opaque to the proxies \
             (`MESH_PROXY_OPAQUE_PORTS`), so through the pair every client connection is its own \
             connection from the outbound to the inbound proxy: {mesh}. Medians over the rounds; \
             latency is connect to echoed byte.\n",
            res.connects[0].result.concurrency
        );
        let med = |proxied: bool, f: &dyn Fn(&ConnectRecord) -> Option<f64>| {
            median(
                res.connects
                    .iter()
                    .filter(|r| r.proxied == proxied)
                    .filter_map(f)
                    .collect(),
            )
        };
        let cps = |r: &ConnectRecord| Some(r.result.cps);
        let (d, p) = (med(false, &cps), med(true, &cps));
        let each = |proxied: bool| {
            res.connects
                .iter()
                .filter(|r| r.proxied == proxied)
                .map(|r| format!("{:.0}", r.result.cps))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let errors: u64 = res.connects.iter().map(|r| r.result.errors).sum();
        let _ = writeln!(
            w,
            "| path | connections/s | p50 / p99 (ms) | conn/s of each round | outbound µs CPU/conn | inbound µs CPU/conn | outbound cores | inbound cores | softirq | other + steal (worst) |"
        );
        let _ = writeln!(w, "|---|---:|---|---|---:|---:|---:|---:|---:|---:|");
        for proxied in [false, true] {
            let p50 = med(proxied, &|r| Some(r.result.latency_us.p50));
            let p99 = med(proxied, &|r| Some(r.result.latency_us.p99));
            let core = |proc: &'static str| {
                med(proxied, &move |r: &ConnectRecord| {
                    let p = r.procs.get(proc)?;
                    (r.window_s > 0.0).then(|| p.cores(r.window_s))
                })
            };
            let worst = res
                .connects
                .iter()
                .filter(|r| r.proxied == proxied)
                .map(|r| other_cores(&r.machine, &r.procs, r.window_s) + r.machine.steal_cores)
                .fold(0.0, f64::max);
            let _ = writeln!(
                w,
                "| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                if proxied { "proxied" } else { "direct" },
                opt(med(proxied, &cps), 0),
                p50.map_or("–".into(), ms),
                p99.map_or("–".into(), ms),
                each(proxied),
                if proxied {
                    opt(med(true, &|r| r.us_per_conn(OUTBOUND)), 1)
                } else {
                    "(idle)".into()
                },
                if proxied {
                    opt(med(true, &|r| r.us_per_conn(INBOUND)), 1)
                } else {
                    "(idle)".into()
                },
                if proxied {
                    opt(core(OUTBOUND), 2)
                } else {
                    "(idle)".into()
                },
                if proxied {
                    opt(core(INBOUND), 2)
                } else {
                    "(idle)".into()
                },
                opt(med(proxied, &|r| Some(r.machine.softirq_cores)), 2),
                worst,
            );
        }
        let _ = writeln!(w);
        if let (Some(d), Some(p)) = (d, p) {
            let _ = writeln!(
                w,
                "Through the pair: **{p:.0} new connections per second**, {:.1}% of direct TCP ({d:.0}/s). \
                 Errors over all rounds: {errors}.\n",
                p / d.max(1e-9) * 100.0
            );
        }
    }
    if let Some(i) = &res.idle_conns {
        let _ = writeln!(w, "### Memory per open connection\n");
        let _ = writeln!(
            w,
            "After all other runs, {} idle opaque connections were opened through the pair ({} opened, \
             {} errors), each with one byte echoed so that the whole path (and with mTLS the TLS \
             session between the proxies) was established, and held. VmRSS of each proxy before, \
             2 s after all were open, and 2 s after they closed; MB = 10^6 bytes, KB = 10^3 bytes.\n",
            i.requested, i.opened, i.errors
        );
        let _ = writeln!(
            w,
            "| proxy | RSS before (MB) | RSS with them open (MB) | RSS after they closed (MB) | KB per open connection | tcp_open_total increase |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
        for p in [OUTBOUND, INBOUND] {
            let r = |m: &std::collections::BTreeMap<String, crate::sys::Sample>| {
                m.get(p)
                    .map_or("–".into(), |s| format!("{:.2}", mb(s.rss_kib)))
            };
            let _ = writeln!(
                w,
                "| {p} | {} | {} | {} | {} | {} |",
                r(&i.before),
                r(&i.held),
                r(&i.after),
                opt(kb_per_conn(i, p), 1),
                i.tcp_opened.get(p).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Meta, Results};
    use std::collections::BTreeMap;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn renders_without_runs() {
        let meta: Meta = serde_json::from_value(serde_json::json!({
            "date": "2026-01-01", "command": "scripts/bench.sh", "git": "abc", "kernel": "6", "cpu": "",
            "cores": 2, "memory": "1 kB", "proxy_env": [], "conns": 4, "rounds": 1, "duration_s": 1.0,
            "warmup_s": 1.0, "max_duration_s": 1.0, "max_h1_conns": 32, "max_h2_conns": 4,
            "max_h2_streams": 16, "max_rounds": 1, "backend_threads": 1, "clock_ticks_per_sec": 100,
            "elapsed_s": 1.0, "busy_before_cores": 0.0, "loadavg_start": "", "loadavg_end": "",
            "pairs_rerun": 0
        }))
        .unwrap();
        let res = Results {
            meta,
            idle: BTreeMap::new(),
            idle_cpu_cores: BTreeMap::new(),
            end: BTreeMap::new(),
            runs: Vec::new(),
            proxy_logs: BTreeMap::new(),
            connects: Vec::new(),
            idle_conns: None,
            tls_check: None,
            tap: None,
        };
        let md = render(&res);
        assert!(md.starts_with("# mesh-proxy benchmark, 2026-01-01"));
        assert!(md.contains("## Targets"));
    }
}
