//! The mesh's own parts as test fixtures, the one place tests and benchmarks start them:
//! a `mesh-controller` process and an explicit-mode `mesh-proxy` process on loopback; the
//! same two inside a pod ([`start_pod_controller`], and [`start_pod_proxy`], which meshes
//! a pod as its init container and sidecar would); named HTTP backends that say who
//! answered, and a steady load that records which backend served each request and every
//! failure.
//!
//! Processes are owned by [`Process`] handles (killed on drop); backends and the load run
//! on the caller's tokio runtime and stop when dropped, so a failing test leaves nothing
//! behind.

use crate::{bin_path, scratch_dir, wait_until, Metrics, NetNs, Process};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, task::JoinSet};

/// Fails, naming what to build, unless every one of the workspace's binaries `names` is
/// built where [`bin_path`] looks.
pub fn require_built(names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let path = bin_path(name);
        if !path.exists() {
            bail!(
                "{} is missing: build every binary first (cargo build --workspace --bins, or \
                 ./scripts/test.sh)",
                path.display()
            );
        }
    }
    Ok(())
}

/// A TCP port that is free on loopback right now (the kernel's choice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A plain HTTP/1.0 GET from a blocking context: the status and body, `None` if the
/// server could not be reached.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Scrapes and parses `/metrics` from an admin server.
pub fn scrape(admin: SocketAddr) -> anyhow::Result<Metrics> {
    match http_get(admin, "/metrics") {
        Some((200, body)) => Metrics::parse(&body),
        Some((status, body)) => bail!("GET {admin}/metrics: {status}: {body}"),
        None => bail!("GET {admin}/metrics: no response"),
    }
}

/// Waits until `GET /ready` on `admin` answers 200, failing early if `process` exits.
fn wait_ready(process: &mut Process, admin: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        process.ensure_running()?;
        if let Some((200, _)) = http_get(admin, "/ready") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let label = process.label().to_owned();
            bail!(
                "{label} not ready within {timeout:?}\n{}",
                process.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// === Controller ===

/// How long a controller (its first full sync) or a proxy gets to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running `mesh-controller`.
#[derive(Debug)]
pub struct Controller {
    pub process: Process,
    /// The destination gRPC service.
    pub destination: SocketAddr,
    /// `/metrics`, `/ready`, `/live`.
    pub admin: SocketAddr,
    /// The HTTP API (`/api/...`).
    pub api: SocketAddr,
}

impl Controller {
    /// Starts the controller on the `kubernetes` backend, talking to the API server that
    /// `kubeconfig` names, and waits until it is ready (its first full sync). With
    /// `destination`, it serves there (to restart a controller where proxies expect it).
    pub fn kubernetes(kubeconfig: &Path, destination: Option<SocketAddr>) -> anyhow::Result<Self> {
        Self::kubernetes_with(kubeconfig, destination, &[], READY_WITHIN)
    }

    /// Like [`Controller::kubernetes`], with extra environment (e.g. a quieter
    /// `MESH_LOG`) and a wait of up to `ready_within` for the first sync: for large
    /// clusters and the discovery benchmark.
    pub fn kubernetes_with(
        kubeconfig: &Path,
        destination: Option<SocketAddr>,
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin_path("mesh-controller"));
        cmd.args(["--backend", "kubernetes"])
            .env("KUBECONFIG", kubeconfig)
            .env("MESH_LOG", "info,mesh_controller=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::start(cmd, destination, ready_within)
    }

    /// Starts the controller on the `file` backend.
    pub fn file(file: &Path, destination: Option<SocketAddr>) -> anyhow::Result<Self> {
        Self::file_with(file, destination, &[], &[])
    }

    /// Like [`Controller::file`], with extra flags and environment (e.g. the metrics
    /// API's scrape interval, a quieter `MESH_LOG`): for the benchmarks.
    pub fn file_with(
        file: &Path,
        destination: Option<SocketAddr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin_path("mesh-controller"));
        cmd.args(["--backend", "file", "--file"])
            .arg(file)
            .args(args)
            .env("MESH_LOG", "info,mesh_controller=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::start(cmd, destination, READY_WITHIN)
    }

    fn start(
        mut cmd: Command,
        destination: Option<SocketAddr>,
        ready_within: Duration,
    ) -> anyhow::Result<Self> {
        let destination = destination.unwrap_or_else(|| loopback(free_port()));
        let admin = loopback(free_port());
        // Tests run several controllers at once: each API on a port of its own.
        let api = loopback(free_port());
        cmd.arg("--destination-addr")
            .arg(destination.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--api-addr")
            .arg(api.to_string())
            .arg("--tap-addr")
            .arg("127.0.0.1:0");
        let log = scratch_dir().join(format!("controller-{}.log", destination.port()));
        let mut process = Process::spawn("mesh-controller", cmd, log)?;
        wait_ready(&mut process, admin, ready_within)?;
        Ok(Self {
            process,
            destination,
            admin,
            api,
        })
    }

    pub fn metrics(&self) -> anyhow::Result<Metrics> {
        scrape(self.admin)
    }
}

// === Proxy ===

/// A running `mesh-proxy` in explicit mode: its outbound listener is an HTTP proxy that
/// resolves names through the controller.
#[derive(Debug)]
pub struct Proxy {
    pub process: Process,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Proxy {
    /// Starts a proxy using the controller at `destination`, with extra `MESH_PROXY_*`
    /// settings, and waits until it is ready.
    pub fn explicit(destination: SocketAddr, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let outbound = loopback(free_port());
        let admin = loopback(free_port());
        let mut cmd = Command::new(bin_path("mesh-proxy"));
        cmd.env("MESH_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string())
            .env("MESH_PROXY_INBOUND_LISTEN_ADDR", loopback(0).to_string())
            .env("MESH_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
            .env("MESH_PROXY_DESTINATION_ADDR", destination.to_string())
            .env("MESH_PROXY_DESTINATION_CONTEXT", r#"{"ns":"default"}"#)
            .env("MESH_PROXY_LOG", "info,mesh_proxy=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = scratch_dir().join(format!("proxy-{}.log", outbound.port()));
        let mut process = Process::spawn("mesh-proxy", cmd, log)?;
        wait_ready(&mut process, admin, READY_WITHIN)?;
        Ok(Self {
            process,
            outbound,
            admin,
        })
    }

    pub fn metrics(&self) -> anyhow::Result<Metrics> {
        scrape(self.admin)
    }
}

// === In a pod ===

/// The uid a meshed pod's proxy runs as; `mesh-proxy init` exempts its traffic from
/// redirection.
pub const PROXY_UID: u32 = 2102;
/// A pod's proxy's admin server (its default address), as reached from inside the pod.
pub const PROXY_ADMIN: &str = "127.0.0.1:4191";
/// The port a controller started by [`start_pod_controller`] serves destinations on, on
/// every address of its namespace.
pub const DESTINATION_PORT: u16 = 8086;
/// The admin server of a controller started by [`start_pod_controller`], as reached from
/// inside its namespace.
pub const CONTROLLER_ADMIN: &str = "127.0.0.1:9990";

/// Meshes `pod` as its init container and sidecar would: `mesh-proxy init` as root
/// (installs the iptables redirection), then a transparent `mesh-proxy` as [`PROXY_UID`]
/// with `env` (`MESH_PROXY_*` settings; `MESH_PROXY_LOG` defaults to
/// `info,mesh_proxy=debug`); returns once its `/ready` answers 200.
pub fn start_pod_proxy(pod: &NetNs, env: &[(&str, &str)]) -> anyhow::Result<Process> {
    let proxy_bin = bin_path("mesh-proxy");
    pod.run([proxy_bin.as_os_str(), "init".as_ref()])
        .with_context(|| format!("mesh-proxy init in {}", pod.name()))?;
    // Shown only when the test fails: the first thing to read when traffic went astray.
    if let Ok(rules) = pod.run(["iptables-save", "-t", "nat"]) {
        eprintln!(
            "--- {} nat rules after init ---\n{}",
            pod.name(),
            String::from_utf8_lossy(&rules)
        );
    }
    let mut spawn = pod
        .process("mesh-proxy", &proxy_bin)
        .uid(PROXY_UID)
        .env("MESH_PROXY_LOG", "info,mesh_proxy=debug");
    for (k, v) in env {
        spawn = spawn.env(k, v);
    }
    let mut proxy = spawn.spawn()?;
    wait_ready_in(pod, &mut proxy, PROXY_ADMIN)?;
    Ok(proxy)
}

/// Starts `mesh-controller` inside `ns` on its file backend with `file`, serving
/// destinations on `0.0.0.0:`[`DESTINATION_PORT`] and its admin server on
/// [`CONTROLLER_ADMIN`], with `extra` flags (identity, say); returns once it is ready.
pub fn start_pod_controller<I, S>(ns: &NetNs, file: &Path, extra: I) -> anyhow::Result<Process>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut controller = ns
        .process("mesh-controller", bin_path("mesh-controller"))
        .args(["--backend", "file", "--file"])
        .arg(file)
        .args(["--destination-addr", &format!("0.0.0.0:{DESTINATION_PORT}")])
        .args(["--admin-addr", CONTROLLER_ADMIN])
        .args(extra)
        .env("MESH_LOG", "info,mesh_controller=debug")
        .spawn()?;
    wait_ready_in(ns, &mut controller, CONTROLLER_ADMIN)?;
    Ok(controller)
}

/// Waits until `GET /ready` on `admin`, from inside `ns`, answers 200, failing early
/// (with the process's account of itself) if `process` exits.
fn wait_ready_in(ns: &NetNs, process: &mut Process, admin: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("{} to answer /ready", process.label()),
        READY_WITHIN,
        || {
            process.ensure_running()?;
            let (status, body) = ns.http_get(&format!("http://{admin}/ready"))?;
            if status == 200 {
                Ok(Some(()))
            } else {
                bail!("/ready: {status} {}", String::from_utf8_lossy(&body))
            }
        },
    )
    .with_context(|| process.describe())
}

// === Backend ===

/// An HTTP/1 server that answers every request with its name, on one IP and any number
/// of ports, counting what it served on each port.
pub struct Backend {
    pub name: String,
    pub ip: IpAddr,
    served: Arc<BTreeMap<u16, AtomicU64>>,
    tasks: JoinSet<()>,
}

impl Backend {
    /// Starts serving on `ip` at each of `ports`, answering after `delay`.
    pub async fn start(
        name: &str,
        ip: IpAddr,
        ports: &[u16],
        delay: Duration,
    ) -> anyhow::Result<Self> {
        let served: Arc<BTreeMap<u16, AtomicU64>> =
            Arc::new(ports.iter().map(|p| (*p, AtomicU64::new(0))).collect());
        let mut tasks = JoinSet::new();
        for &port in ports {
            let addr = SocketAddr::new(ip, port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("backend {name} binding {addr}"))?;
            let (name, served) = (Bytes::from(name.to_owned()), served.clone());
            tasks.spawn(async move {
                // Connections live in this set, so stopping the backend closes them too.
                let mut conns = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (name, served) = (name.clone(), served.clone());
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        let (name, served) = (name.clone(), served.clone());
                        async move {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            if let Some(n) = served.get(&port) {
                                n.fetch_add(1, Relaxed);
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(name)))
                        }
                    });
                    conns.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            ip,
            served,
            tasks,
        })
    }

    /// Requests served on every port together.
    pub fn served(&self) -> u64 {
        self.served.values().map(|n| n.load(Relaxed)).sum()
    }

    /// Requests served on `port`.
    pub fn served_on(&self, port: u16) -> u64 {
        self.served.get(&port).map_or(0, |n| n.load(Relaxed))
    }

    /// Stops listening and closes every connection, as a pod that went away.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

// === Load ===

/// What a [`Load`] has seen so far.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    /// Successful responses by the backend name in their body.
    pub by_backend: BTreeMap<String, u64>,
    /// Every failure, as `status: body` or the error, in order.
    pub failures: Vec<String>,
    /// The backend of each of the most recent successful responses, oldest first.
    pub recent: std::collections::VecDeque<String>,
}

impl LoadStats {
    pub fn ok(&self) -> u64 {
        self.by_backend.values().sum()
    }
}

/// How many recent responses [`LoadStats::recent`] keeps.
const RECENT: usize = 1000;

/// Requests sent without pause, by a few concurrent workers, each on its own kept-alive
/// connection to a proxy's outbound listener, asking for `http://<authority>/`.
pub struct Load {
    stats: Arc<Mutex<LoadStats>>,
    tasks: JoinSet<()>,
    sent: Arc<AtomicU64>,
}

impl Load {
    pub fn start(proxy: SocketAddr, authority: &str, workers: usize) -> Self {
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let (stats, sent) = (stats.clone(), sent.clone());
            let uri = format!("http://{authority}/");
            tasks.spawn(async move {
                loop {
                    if let Err(e) = worker(proxy, &uri, &stats, &sent).await {
                        record(&stats, Err(format!("connection: {e:#}")));
                    }
                }
            });
        }
        Self { stats, tasks, sent }
    }

    pub fn stats(&self) -> LoadStats {
        self.stats.lock().expect("load stats").clone()
    }

    /// Waits until `check` holds for the stats, polling, or fails after `timeout`
    /// with the stats and `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&LoadStats) -> bool,
    ) -> anyhow::Result<LoadStats> {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if check(&stats) {
                return Ok(stats);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}: by backend {:?}, {} failures \
                     (first: {:?})",
                    stats.by_backend,
                    stats.failures.len(),
                    stats.failures.first()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the next `n` successful responses all came from backends other than
    /// `name`: the proxy no longer sends it anything.
    pub async fn wait_until_avoided(
        &self,
        name: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = self.sent.load(Relaxed);
        self.wait_for(&format!("{n} responses without {name}"), timeout, |s| {
            // Only responses to requests sent after the wait began count.
            s.recent.len() >= n
                && self.sent.load(Relaxed) >= start + n as u64
                && s.recent.iter().rev().take(n).all(|b| b != name)
        })
        .await
        .map(|_| ())
    }

    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

fn record(stats: &Mutex<LoadStats>, outcome: Result<String, String>) {
    let mut s = stats.lock().expect("load stats");
    match outcome {
        Ok(backend) => {
            *s.by_backend.entry(backend.clone()).or_default() += 1;
            if s.recent.len() == RECENT {
                s.recent.pop_front();
            }
            s.recent.push_back(backend);
        }
        Err(failure) => s.failures.push(failure),
    }
}

/// One worker's connection: requests until the connection fails.
async fn worker(
    proxy: SocketAddr,
    uri: &str,
    stats: &Mutex<LoadStats>,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    loop {
        sender.ready().await?;
        // Absolute-form, as to any HTTP proxy: the proxy resolves the authority.
        let req = Request::get(uri).body(Empty::<Bytes>::new())?;
        sent.fetch_add(1, Relaxed);
        let rsp = sender.send_request(req).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            record(stats, Ok(body));
        } else {
            record(stats, Err(format!("{status}: {body}")));
        }
    }
}
