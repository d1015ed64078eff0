//! `mesh-top-bench`: `mesh top` under a steady stream of tap events. Issue 12's
//! target: "`mesh top` renders 500 events/s without falling behind".
//!
//! This process serves a fake tap API on loopback that streams, for `--rate` requests
//! a second, each request's request-init and response-end (over `--paths` paths and
//! `--sources` sources), and runs the real `mesh top` against it in a detached tmux
//! session (160 × 50) for `--duration`. Every second it reads top's footer from the
//! screen (`events N`) against what had been sent by then: the lag. Then the stream
//! goes quiet, and the footer must show every event sent, and its `requests` count
//! every request, within a few redraws. `mesh top`'s CPU (utime + stime) and peak
//! RSS (VmHWM) come from /proc.
//!
//! "Without falling behind": the fake never waits on `top` (were `top` slow, its
//! stream's flow control would hold the sender back, and fewer events would be sent
//! than asked for), the lag stays within about a redraw's worth of events, and the
//! counts are complete at the end.
//!
//! Run with `cargo build --release -p mesh-bench -p mesh-cli && target/release/mesh-top-bench`.
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use anyhow::{ensure, Context as _};
use clap::Parser;
use mesh_api::tap::{
    tap_api_server::{TapApi, TapApiServer},
    tap_event::{http, EndpointMeta, Http},
    TapByResourceRequest, TapEvent,
};
use mesh_bench::sys;
use std::{
    io::Write as _,
    net::SocketAddr,
    pin::Pin,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

#[derive(Parser, Debug)]
#[command(about = "mesh top under a steady stream of tap events: does it keep up")]
struct Args {
    /// Requests a second (each two events: request-init and response-end).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Distinct paths.
    #[arg(long, default_value_t = 200)]
    paths: u64,
    /// Distinct sources.
    #[arg(long, default_value_t = 8)]
    sources: u64,
    /// How long the stream runs (Go duration).
    #[arg(long, default_value = "30s", value_parser = mesh_api::duration::parse)]
    duration: Duration,
}

/// The fake tap API's generator, shared with the measuring loop.
#[derive(Default)]
struct Sent {
    events: AtomicU64,
    requests: AtomicU64,
    /// Set when the run is over: the stream goes quiet (and stays open).
    stop: AtomicBool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.rate >= 1 && args.paths >= 1 && args.sources >= 1,
        "--rate, --paths and --sources must be at least 1"
    );
    let mesh = mesh_integration_tests::bin_path("mesh");
    ensure!(
        mesh.is_file(),
        "{} is missing: cargo build --release -p mesh-cli",
        mesh.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let sent = Arc::new(Sent::default());
    let addr = rt.block_on(serve(&args, sent.clone()))?;
    let tmux = Tmux::new();
    tmux.start(&format!(
        "KUBECONFIG=/nonexistent '{}' top deploy/bench --api-addr 127.0.0.1:1 --tap-addr {addr} --max-rps 100000; sleep 600",
        mesh.display()
    ))?;
    let pid = tmux.top_pid()?;
    eprintln!(
        "{} requests/s ({} events/s) over {} paths and {} sources, for {:?}",
        args.rate,
        args.rate * 2,
        args.paths,
        args.sources,
        args.duration
    );

    let before = sys::sample(pid)?;
    let started = Instant::now();
    let mut lags = Vec::new();
    while started.elapsed() < args.duration {
        std::thread::sleep(Duration::from_secs(1));
        let was_sent = sent.events.load(Relaxed);
        if let Some(shown) = footer(&tmux.screen()?).map(|f| f.events) {
            lags.push(was_sent.saturating_sub(shown));
        }
    }
    sent.stop.store(true, Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let after = sys::sample(pid)?;
    let (events, requests) = (sent.events.load(Relaxed), sent.requests.load(Relaxed));

    // Quiet now: the screen must catch up with every event sent.
    let quiet = Instant::now();
    let last = loop {
        let screen = tmux.screen()?;
        let last = footer(&screen);
        if last.is_some_and(|f| f.events == events && f.requests == requests)
            || quiet.elapsed() > Duration::from_secs(5)
        {
            break (last, quiet.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (shown, caught_up) = last;
    let shown = shown.context("no footer on top's screen")?;
    let cores = sys::cores(after.ticks_ns() - before.ticks_ns(), seconds);
    let max_lag = lags.iter().copied().max().unwrap_or(0);
    let mean_lag = lags.iter().sum::<u64>() as f64 / lags.len().max(1) as f64;
    let asked = args.rate as f64 * seconds;
    let report = format!(
        "sent {events} events ({requests} requests, {:.0} requests/s of {} asked: {:.1}%) in {seconds:.1} s\n\
         top showed: events {} requests {} ({} after the stream went quiet)\n\
         lag, sampled every second: mean {mean_lag:.0} events, max {max_lag} ({:.0} ms at this rate)\n\
         mesh top: {cores:.3} cores (utime+stime), VmHWM {:.1} MB",
        requests as f64 / seconds,
        args.rate,
        100.0 * requests as f64 / asked,
        shown.events,
        shown.requests,
        if shown.events == events {
            format!("caught up {caught_up:.1?}")
        } else {
            "never caught up".to_string()
        },
        1000.0 * max_lag as f64 / (2 * args.rate) as f64,
        mesh_bench::report::mb(after.hwm_kib),
    );
    std::io::stdout().write_all(format!("{report}\n").as_bytes())?;
    drop(tmux);
    ensure!(
        shown.events == events && shown.requests == requests,
        "top fell behind: it showed {} events of {events}",
        shown.events
    );
    Ok(())
}

/// What top's footer says.
#[derive(Clone, Copy, Debug)]
struct Footer {
    events: u64,
    requests: u64,
}

/// Reads `events N (R/s)  requests M ...` from a screen.
fn footer(screen: &str) -> Option<Footer> {
    let line = screen.lines().find(|l| l.starts_with("events "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let events = words.get(1)?.parse().ok()?;
    let at = words.iter().position(|w| *w == "requests")?;
    let requests = words.get(at + 1)?.parse().ok()?;
    Some(Footer { events, requests })
}

/// A tmux server of the benchmark's own (`-S`, its socket in the temporary directory),
/// with one 160 × 50 session; killed, and its socket removed, when dropped.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn new() -> Self {
        Self {
            socket: std::env::temp_dir()
                .join(format!("mesh-top-bench-{}.tmux", std::process::id())),
        }
    }

    fn start(&self, command: &str) -> anyhow::Result<()> {
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "50",
            command,
        ])
        .map(drop)
    }

    fn screen(&self) -> anyhow::Result<String> {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    /// `mesh top`'s pid: the pane's shell's `mesh` child, once it is running.
    fn top_pid(&self) -> anyhow::Result<u32> {
        let shell: u32 = self
            .tmux(&["display-message", "-p", "-t", "top", "#{pane_pid}"])?
            .trim()
            .parse()
            .context("the pane's pid")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let top = mesh_rt::proc::pids().into_iter().find(|&pid| {
                mesh_rt::proc::stat(mesh_rt::proc::Pid::Of(pid))
                    .is_some_and(|s| s.ppid == shell && s.comm == "mesh")
            });
            if let Some(pid) = top {
                return Ok(pid);
            }
            ensure!(Instant::now() < deadline, "mesh top did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running tmux (apt-get install tmux)")?;
        ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Serves the fake tap API on a loopback port.
async fn serve(args: &Args, sent: Arc<Sent>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = Fake {
        rate: args.rate,
        paths: args.paths,
        sources: args.sources,
        sent,
    };
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(
                TapApiServer::new(service),
                incoming,
                std::future::pending::<()>(),
            )
            .await;
    });
    Ok(addr)
}

type Events = Pin<Box<dyn futures_util::Stream<Item = Result<TapEvent, Status>> + Send>>;

#[derive(Clone)]
struct Fake {
    rate: u64,
    paths: u64,
    sources: u64,
    sent: Arc<Sent>,
}

#[tonic::async_trait]
impl TapApi for Fake {
    type TapByResourceStream = Events;

    async fn tap_by_resource(
        &self,
        _: Request<TapByResourceRequest>,
    ) -> Result<Response<Events>, Status> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(self.clone().generate(tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

impl Fake {
    /// Sends the requests due every 5 ms, at `rate` a second since the start, until
    /// told to stop; then holds the stream open.
    async fn generate(self, tx: mpsc::Sender<Result<TapEvent, Status>>) {
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut n = 0u64;
        while !self.sent.stop.load(Relaxed) {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * self.rate as f64) as u64;
            while n < due && !self.sent.stop.load(Relaxed) {
                for event in self.request(n) {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                    self.sent.events.fetch_add(1, Relaxed);
                }
                self.sent.requests.fetch_add(1, Relaxed);
                n += 1;
            }
        }
        tx.closed().await;
    }

    /// Request `n`'s request-init and response-end: a path and source by `n`, one
    /// request in 20 a 500, latencies of 1 to 50 ms.
    fn request(&self, n: u64) -> [TapEvent; 2] {
        let source = format!("198.18.1.{}:{}", n % self.sources + 1, 40_000 + n % 1000);
        let event = |e: http::Event| TapEvent {
            source: source.parse::<SocketAddr>().ok().map(Into::into),
            destination: "198.18.2.1:8080".parse::<SocketAddr>().ok().map(Into::into),
            destination_meta: Some(EndpointMeta {
                labels: [("pod".to_string(), "bench-0".to_string())].into(),
                identity: String::new(),
            }),
            http: Some(Http { event: Some(e) }),
            ..Default::default()
        };
        let id = Some(http::StreamId { base: 1, stream: n });
        let latency = Duration::from_millis(1 + n % 50);
        [
            event(http::Event::RequestInit(http::RequestInit {
                id,
                method: "GET".into(),
                path: format!("/bench/{}", n % self.paths),
                ..Default::default()
            })),
            event(http::Event::ResponseEnd(http::ResponseEnd {
                id,
                since_request_init: prost_types::Duration::try_from(latency).ok(),
                end: n
                    .is_multiple_of(20)
                    .then_some(http::response_end::End::GrpcStatusCode(13)),
                ..Default::default()
            })),
        ]
    }
}
