//! The Markdown report of a `mesh-discovery-bench` run.

use crate::run::{Results, Summary, BENCH, CONTROLLER, PROXY, SLOW};
use mesh_bench::report::made_by;
pub(crate) use mesh_bench::report::mb;
use std::fmt::Write as _;

// The targets of issue 3, and the scale they are set at.
const PROPAGATION_P99_MS_MAX: f64 = 100.0;
const CONTROLLER_RSS_MB_MAX: f64 = 64.0;
const SLOW_SHARE_MAX: f64 = 0.10;
const TARGET_SERVICES: usize = 1000;
const TARGET_ENDPOINTS: usize = 10_000;
const TARGET_STREAMS: usize = 2000;

fn met(ok: bool, at_scale: bool) -> &'static str {
    match (ok, at_scale) {
        (true, true) => "**met**",
        (false, true) => "**missed**",
        (true, false) => "met at a smaller scale (not the target's)",
        (false, false) => "missed at a smaller scale (not the target's)",
    }
}

fn summary(s: &Summary) -> String {
    if s.n == 0 {
        return "–".to_string();
    }
    format!("{:.2} / {:.2} / {:.2} / {:.2}", s.p50, s.p90, s.p99, s.max)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub(crate) fn render(res: &Results) -> String {
    let m = &res.meta;
    let settings = m.settings.clone().unwrap_or_default();
    let (ix, st, pr, px) = (&res.indexing, &res.streams, &res.propagation, &res.proxy);
    let at_scale = ix.services >= TARGET_SERVICES
        && ix.endpoints >= TARGET_ENDPOINTS
        && st.streams >= TARGET_STREAMS;
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# mesh discovery benchmark, {}\n", m.date);
    let _ = writeln!(w, "{}", made_by(&m.command, &m.git, m.elapsed_s));
    let _ = writeln!(
        w,
        "Machine: {}, {} cores, {} memory, Linux {}. The fake API server, the controller, the proxy, \
         the backends and the clients all share these cores, so absolute times depend on what else \
         ran; the last table shows how busy each phase kept the machine.\n",
        if m.machine.cpu.is_empty() { "unknown CPU" } else { &m.machine.cpu },
        m.machine.cores,
        m.machine.memory,
        m.machine.kernel
    );
    let _ = writeln!(
        w,
        "Setup, all on loopback: an in-process fake Kubernetes API server (list/watch over HTTP, \
         driven by the controller's real kube-rs client) holds {} Services in {} namespaces, each \
         with one EndpointSlice of {} ready endpoints ({} in all) and as many running, meshed Pods \
         owned by ReplicaSets (pod and cluster IPs from 198.18.0.0/15, where nothing listens). A \
         release `mesh-controller --backend kubernetes` ({}) indexes them; the benchmark then opens \
         {} `Get` streams ({} per service) over {} HTTP/2 connections, flips the readiness of \
         {} random endpoints in the API server, and times each flip until every stream of its \
         service has the update. A release `mesh-proxy` in explicit mode ({}) then resolves two \
         more services through the controller, whose endpoints are in-process HTTP/1 backends on \
         127.78.x.y and 127.79.x.y: a probe service, to which {} workers send requests back to \
         back while {} new endpoints are added and removed one by one; and a balanced service of \
         three backends, one {}x slower ({} ms and {} ms service times), loaded closed-loop at {} \
         in flight and open-loop at {} rps for {} s each (after 1 s of warm-up), every run \
         followed by the same load sent straight to the backends in round-robin order. MB = 10^6 \
         bytes; CPU is utime + stime unless said otherwise.\n",
        ix.services,
        ix.services.div_ceil(20),
        settings.endpoints_per_service,
        ix.endpoints,
        m.controller_env.join(" "),
        st.streams,
        pr.streams_per_service,
        st.conns,
        pr.changes,
        m.proxy_env.join(" "),
        px.workers,
        px.samples,
        if settings.fast_ms > 0.0 { settings.slow_ms / settings.fast_ms } else { 0.0 },
        settings.fast_ms,
        settings.slow_ms,
        settings
            .concurrency
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        settings.rate,
        settings.balance_secs,
    );
    let steal_max = res
        .windows
        .iter()
        .map(|w| w.machine.steal_cores)
        .fold(0.0, f64::max);
    let other_max = res
        .windows
        .iter()
        .map(|w| w.other_cores())
        .fold(0.0, f64::max);
    let _ = writeln!(
        w,
        "Other load: {:.2} cores were busy just before the start (load average {} at the start, {} \
         at the end). During the phases, other processes took at most {other_max:.2} cores and \
         the hypervisor (steal) at most {steal_max:.2}.\n",
        m.busy_before_cores, m.loadavg_start, m.loadavg_end
    );
    if settings.quick {
        let _ = writeln!(
            w,
            "**A `--quick` smoke run**: its scale is below the targets'.\n"
        );
    }

    // --- Targets ---
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured | |\n|---|---|---|");
    let _ = writeln!(
        w,
        "| propagation p99 < {PROPAGATION_P99_MS_MAX:.0} ms at 10k endpoints: from an endpoint added in \
         the API server to the proxy routing a request to it | p99 {:.1} ms (p50 {:.1}, max {:.1}; {} \
         samples, {} lost) with {} endpoints indexed and {} streams open | {} |",
        px.add_ms.p99,
        px.add_ms.p50,
        px.add_ms.max,
        px.add_ms.n,
        px.lost,
        ix.endpoints,
        st.streams,
        met(
            px.add_ms.n > 0 && px.lost == 0 && px.add_ms.p99 < PROPAGATION_P99_MS_MAX,
            ix.endpoints >= TARGET_ENDPOINTS
        )
    );
    let rss = st.settled.rss_kib.max(st.opened.rss_kib);
    let _ = writeln!(
        w,
        "| controller RSS < {CONTROLLER_RSS_MB_MAX:.0} MB at 1k services / 10k endpoints / 2,000 \
         streams | {:.1} MB with {} services / {} endpoints / {} pods / {} streams (peak over its \
         life, VmHWM: {:.1} MB) | {} |",
        mb(rss),
        ix.services,
        ix.endpoints,
        ix.pods,
        st.streams,
        mb(st.settled.hwm_kib),
        met(mb(rss) < CONTROLLER_RSS_MB_MAX, at_scale)
    );
    let steady: Vec<_> = res.balance.iter().filter(|r| !r.cold).collect();
    let worst = steady
        .iter()
        .map(|r| (r.proxied.share(SLOW), r.load.as_str()))
        .fold((0.0, ""), |a, b| if b.0 >= a.0 { b } else { a });
    let cold = res
        .balance
        .iter()
        .find(|r| r.cold)
        .map_or(String::new(), |r| {
            format!(
                "; in the first {:.0} s after discovery ({}): {:.1}%",
                r.proxied.window_s,
                r.load,
                r.proxied.share(SLOW) * 100.0
            )
        });
    let _ = writeln!(
        w,
        "| the {:.0}x slower replica receives < {:.0}% of requests | {:.1}% at most once the proxy has \
         measured the backends ({}): {}{cold} | {} |",
        if settings.fast_ms > 0.0 { settings.slow_ms / settings.fast_ms } else { 0.0 },
        SLOW_SHARE_MAX * 100.0,
        worst.0 * 100.0,
        worst.1,
        steady
            .iter()
            .map(|r| format!("{:.1}% {}", r.proxied.share(SLOW) * 100.0, r.load))
            .collect::<Vec<_>>()
            .join(", "),
        met(!steady.is_empty() && worst.0 < SLOW_SHARE_MAX, true)
    );
    let _ = writeln!(w);

    // --- Indexing ---
    let _ = writeln!(w, "## Controller: indexing\n");
    let ticks = |s: &mesh_bench::sys::Sample| secs(s.ticks_ns());
    let _ = writeln!(
        w,
        "| | |\n|---|---|\n\
         | objects in the API server | {} services, {} EndpointSlices ({} endpoints), {} pods |\n\
         | objects in the controller's index (`destination_index_objects`) | {} |\n\
         | API requests of the sync | {} lists (pages of 500), {} watches |\n\
         | start to `/ready` | {:.2} s |\n\
         | CPU from start to ready | {:.2} s ({:.2} s user, {:.2} s kernel) |\n\
         | VmRSS at ready / settled (2 s later) | {:.1} MB / {:.1} MB |\n\
         | VmHWM (peak RSS) at ready | {:.1} MB |\n\
         | VmRSS of a controller on an empty cluster, for comparison | {:.1} MB |\n\
         | RSS per 1,000 indexed endpoints (with their pods), over the empty cluster's | {:.2} MB |\n",
        ix.services,
        ix.services,
        ix.endpoints,
        ix.pods,
        ix.index_objects
            .iter()
            .map(|(k, v)| format!("{v:.0} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        ix.api_lists,
        ix.api_watches,
        ix.ready_s,
        ticks(&ix.at_ready),
        ix.at_ready.utime_ticks as f64 / m.clock_ticks_per_sec.max(1) as f64,
        ix.at_ready.stime_ticks as f64 / m.clock_ticks_per_sec.max(1) as f64,
        mb(ix.at_ready.rss_kib),
        mb(ix.settled.rss_kib),
        mb(ix.at_ready.hwm_kib),
        mb(ix.empty.rss_kib),
        mb(ix.settled.rss_kib.saturating_sub(ix.empty.rss_kib)) * 1000.0 / ix.endpoints.max(1) as f64,
    );

    // --- Streams ---
    let _ = writeln!(w, "## Controller: {} open streams\n", st.streams);
    let delta_kib = st.settled.rss_kib as i64 - st.before.rss_kib as i64;
    let _ = writeln!(
        w,
        "| | |\n|---|---|\n\
         | streams / connections | {} / {} (`destination_streams{{kind=\"get\"}}` {:.0}, `destination_queries` {:.0}) |\n\
         | time to open all, each awaited for its first message | {:.3} s |\n\
         | one stream's first message, all requested at once, p50 / p90 / p99 / max | {} ms |\n\
         | controller CPU opening them | {:.3} s ({:.0} µs per stream) |\n\
         | VmRSS before / all open / settled (2 s later) | {:.1} / {:.1} / {:.1} MB ({:+.0} bytes per stream) |\n\
         | VmHWM (peak RSS) | {:.1} MB |\n",
        st.streams,
        st.conns,
        st.streams_gauge,
        st.queries_gauge,
        st.open_all_s,
        summary(&st.first_message_ms),
        secs(st.opened.ticks_ns().saturating_sub(st.before.ticks_ns())),
        secs(st.opened.cpu_ns.saturating_sub(st.before.cpu_ns)) * 1e6 / st.streams.max(1) as f64,
        mb(st.before.rss_kib),
        mb(st.opened.rss_kib),
        mb(st.settled.rss_kib),
        delta_kib as f64 * 1024.0 / st.streams.max(1) as f64,
        mb(st.settled.hwm_kib),
    );

    // --- Propagation ---
    let _ = writeln!(w, "## Propagation to the streams\n");
    let _ = writeln!(
        w,
        "Each change flips one random endpoint's readiness (so an `Add` or a `Remove` is due) by \
         rewriting its EndpointSlice in the API server, one at a time, 5–25 ms apart, and is timed \
         from the write to the update arriving on the service's streams. It crosses the fake \
         API server's watch, the controller's kube-rs watcher, its index and its gRPC streams.\n"
    );
    let _ = writeln!(
        w,
        "| | ms, p50 / p90 / p99 / max |\n|---|---|\n\
         | to the first of the service's {} streams | {} |\n\
         | to all of them | {} |\n",
        pr.streams_per_service,
        summary(&pr.first_ms),
        summary(&pr.all_ms),
    );
    let _ = writeln!(
        w,
        "{} changes, {} lost (not on every stream within 10 s); {} updates that matched no change \
         (duplicates or spurious). Controller CPU: {:.0} µs per change (schedstat, over the phase).\n",
        pr.changes, pr.lost, pr.unexpected_updates, pr.controller_cpu_us_per_change
    );

    let _ = writeln!(w, "## Propagation to the proxy\n");
    let _ =
        writeln!(
        w,
        "The probe service has two endpoints; each sample adds a third (a backend that has never \
         served), times the write until that backend serves its first request, then removes it \
         again and times the write until it serves its last (0 if it served none after the \
         write; the phase waits until it has been idle for {} ms while the load runs). The \
         proxy's stream to the controller is one of {} open, on a controller indexing {} \
         endpoints.\n",
        150, st.streams + 2, ix.endpoints
    );
    let _ = writeln!(
        w,
        "| | ms, p50 / p90 / p99 / max |\n|---|---|\n\
         | endpoint added → proxy routes to it | {} |\n\
         | endpoint removed → its last request | {} |\n",
        summary(&px.add_ms),
        summary(&px.remove_ms),
    );
    let _ = writeln!(
        w,
        "{} samples, {} lost (not served within 10 s). Requests through the proxy during the \
         phase: {}, of which {} failed{}.\n",
        px.samples,
        px.lost,
        px.requests,
        px.errors,
        px.first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: `{e}`)"))
    );

    // --- Balancing ---
    let _ = writeln!(w, "## Balancing\n");
    let _ = writeln!(
        w,
        "Share of requests served by the slow backend, and latency (ms), through the proxy and \
         round-robin straight to the same backends in the same run. The first row starts with the \
         proxy's first request to the service, when it knows nothing of the backends' latencies; \
         the others follow it, each after 1 s of warm-up. Ratios are proxied / \
         round-robin: below 1 means the balancer did better than round-robin, even though the \
         proxied path has one more hop. The backends' service times are sleeps on a blocking thread \
         (precise to tens of µs), so the round-robin latencies show the real service times.\n"
    );
    let _ = writeln!(
        w,
        "| load | slow share: proxied / round-robin | requests by backend (proxied) | rps: proxied / round-robin | p50: proxied / round-robin (ratio) | p99: proxied / round-robin (ratio) | p99.9: proxied / round-robin | errors |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for r in &res.balance {
        let p = &r.proxied;
        let rr = r.round_robin.as_ref();
        let ratio = |a: f64, b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".to_string(),
        };
        let or_dash = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("–".to_string(), f);
        let pct = |v: f64| format!("{:.1}%", v * 100.0);
        let msf = |v: f64| format!("{:.2}", v / 1e3);
        let _ = writeln!(
            w,
            "| {} | {} / {} | {} | {:.0} / {} | {} / {} ({}) | {} / {} ({}) | {} / {} | {} / {} |",
            r.load,
            pct(p.share(SLOW)),
            or_dash(rr.map(|r| r.share(SLOW)), &pct),
            p.by_backend
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            p.rps,
            or_dash(rr.map(|r| r.rps), &|v| format!("{v:.0}")),
            msf(p.latency_us.p50),
            or_dash(rr.map(|r| r.latency_us.p50), &msf),
            ratio(p.latency_us.p50, rr.map(|r| r.latency_us.p50)),
            msf(p.latency_us.p99),
            or_dash(rr.map(|r| r.latency_us.p99), &msf),
            ratio(p.latency_us.p99, rr.map(|r| r.latency_us.p99)),
            msf(p.latency_us.p999),
            or_dash(rr.map(|r| r.latency_us.p999), &msf),
            p.errors,
            or_dash(rr.map(|r| r.errors as f64), &|v| format!("{v:.0}")),
        );
    }
    let _ = writeln!(w);

    // --- Machine ---
    let _ = writeln!(w, "## The machine during each phase\n");
    let _ = writeln!(
        w,
        "Cores in use, averaged over each phase (per-thread schedstat, except the start-up row, \
         which is utime + stime). *Bench* is this process: the fake API server, the stream \
         clients, the backends and the load. *Other* is the rest of the machine minus softirq; \
         *steal* is time the hypervisor gave this VM's vCPUs to someone else.\n"
    );
    let _ = writeln!(
        w,
        "| phase | seconds | controller | proxy | bench | softirq | other | steal |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for win in &res.windows {
        let core = |name: &str| {
            win.procs
                .get(name)
                .map_or("–".to_string(), |c| format!("{c:.2}"))
        };
        let _ = writeln!(
            w,
            "| {} | {:.1} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            win.phase,
            win.seconds,
            core(CONTROLLER),
            core(PROXY),
            core(BENCH),
            win.machine.softirq_cores,
            win.other_cores(),
            win.machine.steal_cores
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Raw numbers (every sample of every phase): the `.json` file beside this one."
    );
    o
}
