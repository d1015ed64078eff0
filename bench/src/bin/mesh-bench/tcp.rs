//! Opaque TCP for the connection benchmarks: `mesh-bench connects` (new connections
//! per second, each a connect and a one-byte round trip) and `mesh-bench hold` (many
//! idle connections held open), against the backend's echo listeners.
//!
//! Through the proxy pair an opaque port is not detected or multiplexed: every client
//! connection becomes its own connection between the proxies, so with mTLS each one is
//! a full TLS 1.3 handshake. `connects` prints the same `measuring` / `measured` /
//! `result` JSON lines as `load`.

use crate::load::{event, LATENCY_MAX_NS};
use anyhow::bail;
use hdrhistogram::Histogram;
use mesh_bench::{
    net::{accept, current_thread_runtime},
    stats::{histogram, Percentiles},
};
use serde::{Deserialize, Serialize};
use std::{
    cell::RefCell,
    rc::Rc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

#[derive(clap::Args, Debug)]
pub(crate) struct ConnectsArgs {
    /// `host:port` of an echo listener.
    #[arg(long)]
    pub(crate) target: String,
    /// Connections being opened at once (a closed loop).
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = mesh_api::duration::parse)]
    pub(crate) duration: Duration,
    #[arg(long, default_value = "2s", value_parser = mesh_api::duration::parse)]
    pub(crate) warmup: Duration,
    /// A connection whose byte has not come back within this counts as an error.
    #[arg(long, default_value = "5s", value_parser = mesh_api::duration::parse)]
    pub(crate) timeout: Duration,
}

/// What `connects` prints last.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConnectResult {
    pub(crate) target: String,
    pub(crate) concurrency: usize,
    pub(crate) duration_s: f64,
    /// Connections that connected and echoed their byte in the measured window.
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// `count / duration`.
    pub(crate) cps: f64,
    /// Connect + one byte there and back.
    pub(crate) latency_us: Percentiles,
}

/// One connection: connect, send a byte, read it back, close.
async fn once(target: &str, timeout: Duration) -> Result<(), String> {
    let work = async {
        let mut s = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        s.write_all(b"x").await.map_err(|e| format!("write: {e}"))?;
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Ok(1) => Ok(s),
            Ok(_) => Err("closed before the echo".to_string()),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(_s)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no echo within {timeout:?}")),
    }
}

pub(crate) fn connects(args: ConnectsArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let rt = current_thread_runtime()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run_connects(&args))?;
    event(&serde_json::to_string(
        &serde_json::json!({ "event": "result", "result": result }),
    )?);
    Ok(())
}

struct Stats {
    hist: Histogram<u64>,
    count: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn run_connects(args: &ConnectsArgs) -> anyhow::Result<ConnectResult> {
    // Check the path once before timing anything.
    once(&args.target, args.timeout)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.target))?;
    let start = Instant::now() + args.warmup;
    let end = start + args.duration;
    let stats = Rc::new(RefCell::new(Stats {
        hist: histogram(LATENCY_MAX_NS),
        count: 0,
        errors: 0,
        first_error: None,
    }));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let stats = stats.clone();
        let target = args.target.clone();
        let timeout = args.timeout;
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let from = Instant::now();
                if from >= end {
                    return;
                }
                let res = once(&target, timeout).await;
                let done = Instant::now();
                if from < start {
                    continue;
                }
                let failed = {
                    let mut s = stats.borrow_mut();
                    match res {
                        Ok(()) => {
                            s.count += 1;
                            let ns = u64::try_from((done - from).as_nanos()).unwrap_or(u64::MAX);
                            s.hist.saturating_record(ns.max(1));
                            false
                        }
                        Err(e) => {
                            s.errors += 1;
                            s.first_error.get_or_insert(e);
                            true
                        }
                    }
                };
                if failed {
                    // Out of ports or refused: do not spin.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    event(r#"{"event":"measuring"}"#);
    tokio::time::sleep_until(end.into()).await;
    event(r#"{"event":"measured"}"#);
    for w in workers {
        let _ = w.await;
    }
    let s = stats.borrow();
    let secs = args.duration.as_secs_f64();
    Ok(ConnectResult {
        target: args.target.clone(),
        concurrency: args.concurrency,
        duration_s: secs,
        count: s.count,
        errors: s.errors,
        first_error: s.first_error.clone(),
        cps: s.count as f64 / secs.max(1e-9),
        latency_us: Percentiles::of_ns(&s.hist),
    })
}

#[derive(clap::Args, Debug)]
pub(crate) struct HoldArgs {
    /// `host:port` of an echo listener.
    #[arg(long)]
    pub(crate) target: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub(crate) conns: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: usize,
}

/// Opens `--conns` connections, each with one byte echoed (so that the whole path is
/// established), prints `{"event":"open","count":N,"errors":E}`, and holds them idle
/// until stdin closes or the process is killed.
pub(crate) fn hold(args: HoldArgs) -> anyhow::Result<()> {
    let rt = current_thread_runtime()?;
    let held = rt.block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
        let mut tasks = Vec::new();
        for _ in 0..args.conns {
            let permit = sem.clone().acquire_owned().await?;
            let target = args.target.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let mut s = TcpStream::connect(&target).await?;
                s.write_all(b"x").await?;
                let mut b = [0u8; 1];
                if s.read(&mut b).await? != 1 {
                    return Err(std::io::Error::other("closed before the echo"));
                }
                Ok::<_, std::io::Error>(s)
            }));
        }
        let mut held = Vec::new();
        let mut errors = 0u64;
        let mut first_error = None;
        for t in tasks {
            match t.await? {
                Ok(s) => held.push(s),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        event(&serde_json::to_string(&serde_json::json!({
            "event": "open", "count": held.len(), "errors": errors, "first_error": first_error,
        }))?);
        Ok::<_, anyhow::Error>(held)
    })?;
    // The kernel keeps the idle connections; nothing needs polling until stdin closes.
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while std::io::Read::read(&mut stdin, &mut buf).unwrap_or(0) > 0 {}
    drop(held);
    Ok(())
}

/// The backend's echo listener: every byte read is written back.
pub(crate) async fn echo(listener: tokio::net::TcpListener) {
    loop {
        let mut stream = accept(&listener, "mesh-bench backend").await;
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
