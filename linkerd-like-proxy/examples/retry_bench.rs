//! The retry benchmark of issue 5: a service whose backend fails 30% of requests, called
//! at a fixed rate through a proxy with a ServiceProfile that makes the route
//! retryable under the default budget (retries ≤ 20% of requests + 10/s). Reports the
//! effective success rate (what clients saw) and the extra load retries put on the
//! backend, for two kinds of failure:
//! - one bad replica of three failing 90% of what it gets (30% of requests if spread
//!   evenly): retries go to another replica, and the balancer sends the bad one less;
//! - every replica failing 30% of requests at random: no endpoint is better than
//!   another, so only retries help, within the budget.
//!
//! `cargo run --release -p mesh-proxy --example retry_bench -- [RPS] [SECONDS]`
//! (default 1000 rps for 10 s). Everything runs in this process on loopback: the
//! controller (file discovery), the proxy, the backends and the load.

// A benchmark's report is its output.
#![allow(clippy::print_stdout)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_controller::Config;
use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};

/// A backend failing each request with probability `fail`; counts what it served.
async fn backend(fail: f64, hits: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    hits.fetch_add(1, Relaxed);
                    let status = if rand::random::<f64>() < fail {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    let mut rsp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *rsp.status_mut() = status;
                    async move { Ok::<_, Infallible>(rsp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

struct Outcome {
    requests: u64,
    ok: u64,
    attempts: u64,
    per_replica: Vec<u64>,
}

async fn scenario(fail: [f64; 3], rps: u64, seconds: u64) -> Outcome {
    let hits: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
    let mut addrs = Vec::new();
    for (f, h) in fail.iter().zip(&hits) {
        addrs.push(backend(*f, h.clone()).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let endpoints: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{address: '{a}'}}"))
        .collect();
    let yaml = format!(
        "services:\n  - name: web\n    namespace: default\n    endpoints: [{}]\nprofiles:\n  - metadata: {{name: web.default.svc.cluster.local}}\n    spec:\n      routes:\n        - name: all\n          condition: {{pathRegex: '/.*'}}\n          isRetryable: true\n",
        endpoints.join(", ")
    );
    std::fs::write(dir.path().join("d.yaml"), yaml).unwrap();
    let running = Config {
        log: "warn".into(),
        ..Config::local(dir.path().join("d.yaml"))
    }
    .build()
    .await
    .unwrap();
    let env: HashMap<String, String> = [
        ("MESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0".to_string()),
        ("MESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0".to_string()),
        ("MESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0".to_string()),
        (
            "MESH_PROXY_DESTINATION_ADDR",
            running.destination_addr.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bound = mesh_proxy::bind(mesh_proxy::config::Config::from_env(&env).unwrap())
        .await
        .unwrap();
    let (_, outbound, _) = bound.addrs();
    tokio::spawn(bound.serve());

    // Open loop: `workers` keep-alive connections, each sending on its own schedule.
    let workers = 50u64;
    let per_worker = Duration::from_secs_f64(workers as f64 / rps as f64);
    let (requests, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1 + seconds);
    let warm = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (requests, ok) = (requests.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(outbound).await.unwrap();
            let _ = s.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut next =
                tokio::time::Instant::now() + per_worker.mul_f64(w as f64 / workers as f64);
            while next < deadline {
                tokio::time::sleep_until(next).await;
                next += per_worker;
                let req = Request::get("http://web.default.svc.cluster.local/x")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let Ok(rsp) = send.send_request(req).await else {
                    break;
                };
                let good = rsp.status() == StatusCode::OK;
                let _ = rsp.into_body().collect().await;
                if tokio::time::Instant::now() >= warm {
                    requests.fetch_add(1, Relaxed);
                    ok.fetch_add(u64::from(good), Relaxed);
                }
            }
        }));
    }
    // Backend hits are counted from the end of the warm-up.
    tokio::time::sleep_until(warm).await;
    let base: Vec<u64> = hits.iter().map(|h| h.load(Relaxed)).collect();
    for t in tasks {
        let _ = t.await;
    }
    let per_replica: Vec<u64> = hits
        .iter()
        .zip(&base)
        .map(|(h, b)| h.load(Relaxed) - b)
        .collect();
    Outcome {
        requests: requests.load(Relaxed),
        ok: ok.load(Relaxed),
        attempts: per_replica.iter().sum(),
        per_replica,
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rps: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    println!(
        "| failures | requests | effective success | extra load (retries) | share per replica |"
    );
    println!("|---|---:|---:|---:|---|");
    for (name, fail) in [
        ("one replica of three fails 90%", [0.9, 0.0, 0.0]),
        ("every replica fails 30% at random", [0.3, 0.3, 0.3]),
    ] {
        let o = scenario(fail, rps, seconds).await;
        let shares: Vec<String> = o
            .per_replica
            .iter()
            .map(|n| format!("{:.1}%", 100.0 * *n as f64 / o.attempts.max(1) as f64))
            .collect();
        println!(
            "| {name} | {} | {:.2}% | {:.1}% | {} |",
            o.requests,
            100.0 * o.ok as f64 / o.requests.max(1) as f64,
            100.0 * (o.attempts as f64 / o.requests.max(1) as f64 - 1.0),
            shares.join(" / ")
        );
    }
}
