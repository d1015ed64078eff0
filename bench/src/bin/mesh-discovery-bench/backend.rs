//! In-process HTTP/1 backends standing in for pods: each answers every request with its
//! name after a fixed service time, and records when it served its first and last
//! request, which is how propagation to the proxy is timed (the proxy routes a request
//! to it only once it knows the endpoint).

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use mesh_bench::net::accept;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, task::JoinSet};

/// The instant backends' timestamps count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[derive(Debug, Default)]
struct Counters {
    served: AtomicU64,
    /// ns since [`epoch`] + 1 (0: never).
    first: AtomicU64,
    last: AtomicU64,
}

impl Counters {
    fn record(&self, at: Instant) {
        let ns = at.duration_since(epoch()).as_nanos() as u64 + 1;
        self.served.fetch_add(1, Relaxed);
        let _ = self.first.compare_exchange(0, ns, Relaxed, Relaxed);
        self.last.fetch_max(ns, Relaxed);
    }
}

fn instant(ns: u64) -> Option<Instant> {
    (ns != 0).then(|| epoch() + Duration::from_nanos(ns - 1))
}

/// Waits `delay`, to within tens of µs. Tokio's timer rounds every sleep up to its next
/// 1-ms tick, which would make a 1-ms service time 1–2 ms and a "10x slower" backend
/// only about 5x slower; a blocking thread's sleep is precise, and these backends are
/// only ever a few dozen requests in flight.
async fn service_time(delay: Duration) {
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
}

/// A running backend; dropping it stops it and closes its connections.
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Serves on `addr` (e.g. `127.78.0.5:<port>`), answering after `delay`.
    pub(crate) async fn start(
        name: &str,
        addr: SocketAddr,
        delay: Duration,
    ) -> anyhow::Result<Self> {
        epoch();
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("backend {name} binding {addr}"))?;
        let counters = Arc::new(Counters::default());
        let body = Bytes::from(name.to_owned());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so stopping the backend closes them too.
            let mut conns = JoinSet::new();
            loop {
                let stream = accept(&listener, "mesh-discovery-bench backend").await;
                let (body, c) = (body.clone(), c.clone());
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let (body, c) = (body.clone(), c.clone());
                    async move {
                        if !delay.is_zero() {
                            service_time(delay).await;
                        }
                        c.record(Instant::now());
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    }
                });
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                // Reap finished connections so the set does not grow.
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            name: name.to_owned(),
            addr,
            counters,
            task,
        })
    }

    pub(crate) fn served(&self) -> u64 {
        self.counters.served.load(Relaxed)
    }

    /// When it served its first request.
    pub(crate) fn first_served(&self) -> Option<Instant> {
        instant(self.counters.first.load(Relaxed))
    }

    /// When it served its latest request.
    pub(crate) fn last_served(&self) -> Option<Instant> {
        instant(self.counters.last.load(Relaxed))
    }
}
