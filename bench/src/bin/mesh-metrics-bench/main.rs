//! `mesh-metrics-bench`: the controller's metrics API at scale. Issue 12's target: "the
//! controller scraping 500 (synthetic) proxies every 10 s stays under 128 MB RSS and
//! 0.2 core".
//!
//! This process serves `--proxies` synthetic proxy admin servers on loopback, each a
//! `/metrics` page shaped like a meshed pod's (its inbound traffic and its outbound
//! traffic to `--destinations` pods, every counter growing between scrapes), and
//! starts a real `mesh-controller` on the file backend with one meshed pod per
//! synthetic proxy (its `admin` address). After `--warmup`, it measures the
//! controller's CPU and RSS over `--duration`, then asks `/api/stat` and checks that
//! every pod is counted.
//!
//! Run with `cargo build --release -p mesh-bench -p mesh-controller && target/release/mesh-metrics-bench`.
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use anyhow::{ensure, Context as _};
use clap::Parser;
use mesh_bench::sys::{self, Meter};
use mesh_integration_tests::{
    mesh::{http_get, Controller},
    scratch_dir,
};
use std::{
    fmt::Write as _,
    io::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

#[derive(Parser, Debug)]
#[command(about = "The controller scraping many synthetic proxies: its CPU and RSS")]
struct Args {
    /// Synthetic proxies (meshed pods) to serve.
    #[arg(long, default_value_t = 500)]
    proxies: usize,
    /// Destination pods each proxy's outbound traffic goes to.
    #[arg(long, default_value_t = 6)]
    destinations: usize,
    /// The controller's scrape interval (Go duration).
    #[arg(long, default_value = "10s", value_parser = mesh_api::duration::parse)]
    interval: Duration,
    /// Scraping before the measured window (Go duration).
    #[arg(long, default_value = "30s", value_parser = mesh_api::duration::parse)]
    warmup: Duration,
    /// The measured window (Go duration).
    #[arg(long, default_value = "60s", value_parser = mesh_api::duration::parse)]
    duration: Duration,
}

/// Pods per synthetic deployment.
const REPLICAS: usize = 10;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.proxies >= 1 && args.destinations >= 1,
        "--proxies and --destinations must be at least 1"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let scrapes = Arc::new(AtomicU64::new(0));
    let admins = rt.block_on(serve_proxies(&args, scrapes.clone()))?;
    let dir = scratch_dir();
    let file = dir.join(format!("metrics-bench-{}.yaml", std::process::id()));
    std::fs::write(&file, discovery_file(&admins))?;
    let interval = format!("{}ms", args.interval.as_millis());
    // Half the interval, at most the controller's default.
    let timeout = format!(
        "{}ms",
        (args.interval / 2).min(Duration::from_secs(5)).as_millis()
    );
    let controller = Controller::file_with(
        &file,
        None,
        &[
            "--metrics-scrape-interval",
            &interval,
            "--metrics-scrape-timeout",
            &timeout,
        ],
        &[("MESH_LOG", "warn")],
    )?;
    let api = controller.api;
    let pid = controller.process.pid();
    eprintln!(
        "{} synthetic proxies, {} destinations each; scraping every {:?}; warming up for {:?}",
        args.proxies, args.destinations, args.interval, args.warmup
    );
    std::thread::sleep(args.warmup);
    let before = scrapes.load(Relaxed);
    let meter = Meter::start([("controller", pid)])?;
    let mut rss_max_kib = 0;
    let end = Instant::now() + args.duration;
    while Instant::now() < end {
        rss_max_kib = rss_max_kib.max(sys::sample(pid)?.rss_kib);
        std::thread::sleep(Duration::from_millis(200));
    }
    let metered = meter.finish()?;
    let scraped = scrapes.load(Relaxed) - before;
    let (_, start, finish) = &metered.procs[0];
    let cores = sys::cores(finish.ticks_ns() - start.ticks_ns(), metered.seconds);
    let (status, body) = http_get(api, "/api/stat?resource=po&window=1m")
        .context("asking the controller's /api/stat")?;
    ensure!(status == 200, "/api/stat answered {status}: {body}");
    let stat: serde_json::Value = serde_json::from_str(&body)?;
    let rows = stat["rows"].as_array().map_or(0, Vec::len);
    let with_traffic = stat["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["rps"].as_f64().is_some_and(|v| v > 0.0))
        .count();
    let rss_mb = mesh_bench::report::mb(rss_max_kib);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let report = format!(
        "controller: {cores:.3} cores, RSS max {:.1} MB over {:.0} s; {scraped} pages served ({:.1} per proxy); /api/stat: {rows} pods, {with_traffic} with traffic; other CPU {:.2} cores",
        rss_mb,
        metered.seconds,
        scraped as f64 / args.proxies as f64,
        metered.machine.other_cores(cores),
    );
    std::io::stdout().write_all(
        format!(
            "{report}\ntargets: RSS < 128 MB: {}; CPU < 0.2 core: {}\n",
            verdict(rss_mb < 128.0),
            verdict(cores < 0.2),
        )
        .as_bytes(),
    )?;
    drop(controller);
    let _ = std::fs::remove_file(&file);
    ensure!(
        rows == args.proxies,
        "/api/stat counted {rows} pods of {}",
        args.proxies
    );
    Ok(())
}

/// The discovery file: `proxies` meshed pods in deployments of [`REPLICAS`], each
/// behind a service of its own name, with its admin address.
fn discovery_file(admins: &[SocketAddr]) -> String {
    let mut out = String::from("services:\n");
    for (d, chunk) in admins.chunks(REPLICAS).enumerate() {
        let _ = writeln!(
            out,
            "  - name: app-{d}\n    namespace: bench\n    ports: [{{port: 8080}}]\n    endpoints:"
        );
        for (r, admin) in chunk.iter().enumerate() {
            let i = d * REPLICAS + r;
            let _ = writeln!(
                out,
                "      - address: 198.18.{}.{}:8080\n        labels: {{pod: app-{d}-{r}, deployment: app-{d}, serviceaccount: app-{d}}}\n        identity: app-{d}.bench.serviceaccount.identity.mesh.cluster.local\n        admin: {admin}",
                10 + i / 250,
                1 + i % 250
            );
        }
    }
    out
}

/// Serves each synthetic proxy's `/metrics` on a loopback port of its own.
async fn serve_proxies(args: &Args, scrapes: Arc<AtomicU64>) -> anyhow::Result<Vec<SocketAddr>> {
    let mut admins = Vec::with_capacity(args.proxies);
    for i in 0..args.proxies {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        admins.push(listener.local_addr()?);
        let (scrapes, destinations, proxies) = (scrapes.clone(), args.destinations, args.proxies);
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((mut s, _)) = listener.accept().await {
                n += 1;
                scrapes.fetch_add(1, Relaxed);
                let page = page(i, n, destinations, proxies);
                // One request per connection: read the head, answer, close.
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    page.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(page.as_bytes()).await;
            }
        });
    }
    Ok(admins)
}

/// Latency bucket bounds of the proxy's histograms (Linkerd's), in ms.
const BUCKETS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10_000, 20_000, 30_000, 40_000, 50_000,
];

/// Pod `i`'s page at its `n`th scrape: every counter `n` times a per-series rate.
fn page(i: usize, n: u64, destinations: usize, proxies: usize) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let inbound = "direction=\"inbound\",target_addr=\"127.0.0.1:8080\",tls=\"true\",client_id=\"client.bench.serviceaccount.identity.mesh.cluster.local\"".to_string();
    series(&mut out, &inbound, n * 100, n);
    for k in 1..=destinations {
        let j = (i + k) % proxies;
        let (d, r) = (j / REPLICAS, j % REPLICAS);
        let labels = format!(
            "direction=\"outbound\",authority=\"app-{d}.bench.svc.cluster.local:8080\",target_addr=\"198.18.{}.{}:8080\",tls=\"true\",server_id=\"app-{d}.bench.serviceaccount.identity.mesh.cluster.local\",dst_deployment=\"app-{d}\",dst_namespace=\"bench\",dst_pod=\"app-{d}-{r}\",dst_serviceaccount=\"app-{d}\"",
            10 + j / 250,
            1 + j % 250
        );
        series(&mut out, &labels, n * 20, n / 5);
    }
    let _ = writeln!(out, "tcp_open_connections{{{inbound},peer=\"src\"}} 4");
    let _ = writeln!(
        out,
        "tcp_read_bytes_total{{{inbound},peer=\"src\"}} {}",
        n * 100_000
    );
    let _ = writeln!(
        out,
        "tcp_write_bytes_total{{{inbound},peer=\"src\"}} {}",
        n * 200_000
    );
    out
}

/// One HTTP series: `requests` requests, `failures` of them failed, latencies spread
/// over the low buckets.
fn series(out: &mut String, labels: &str, requests: u64, failures: u64) {
    let _ = writeln!(out, "request_total{{{labels}}} {requests}");
    let ok = requests - failures.min(requests);
    let _ = writeln!(out, "response_total{{{labels},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} {ok}");
    let _ = writeln!(out, "response_total{{{labels},status_code=\"500\",classification=\"failure\",grpc_status=\"\",error=\"\"}} {}", requests - ok);
    for status in ["200", "500"] {
        let count = if status == "200" { ok } else { requests - ok };
        let mut cumulative = 0;
        for (b, le) in BUCKETS.iter().enumerate() {
            // A quarter in each of the first four buckets.
            if b < 4 {
                cumulative += count / 4;
            }
            let v = if b >= 3 { count } else { cumulative };
            let _ = writeln!(
                out,
                "response_latency_ms_bucket{{{labels},status_code=\"{status}\",le=\"{le}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "response_latency_ms_bucket{{{labels},status_code=\"{status}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "response_latency_ms_sum{{{labels},status_code=\"{status}\"}} {}",
            count * 3
        );
        let _ = writeln!(
            out,
            "response_latency_ms_count{{{labels},status_code=\"{status}\"}} {count}"
        );
    }
}
