//! `mesh demo`: a demo application on this machine, each workload behind its own
//! `mesh-proxy`, with traffic, and no Kubernetes.
//!
//! It is the quickest way to see the mesh work, and the fixture later commands (`stat`,
//! `tap`, the dashboard) are tried against, so it must start in seconds and never leave a
//! process or a key behind, however it is stopped. The parts, in start-up order:
//!
//! 0. [`leftovers`]: what an earlier demo killed outright left (its directory, and the
//!    processes of a demo from before children died with their parent) is cleaned up,
//!    and the demo's ports are checked free;
//! 1. [`topology`]: the workloads and their ports, a pure function of `--base-port`;
//! 2. [`apps`]: `web`, `emoji` and three replicas of `voting` (one slow on purpose) as
//!    hyper servers on tokio tasks in this process;
//! 3. [`identity`]: a fresh trust anchor and issuer for trust domain `cluster.local`, and a
//!    bootstrap token per workload, in in-memory files that vanish with `mesh`;
//! 4. [`process`]: `mesh-controller` with the file backend, fed a destinations file that
//!    maps each service name to its replicas' proxies and their identities, and running
//!    the identity service with that issuer and those tokens; awaited on `/ready`;
//! 5. [`process`]: one `mesh-proxy` child per workload instance, in explicit mode,
//!    discovering its callees through the controller and getting its certificate from
//!    it, each awaited on `/ready` (which waits for the certificate); proxies then talk
//!    to each other over mutual TLS;
//! 6. [`state`]: `demo.json`, which lets `mesh stat`, `mesh edges`, `mesh routes`,
//!    `mesh version` and later commands find the demo with no flags;
//! 7. [`traffic`]: the vote-bot, calling `web` by name through its own proxy.
//!
//! Shutdown (Ctrl-C, SIGTERM, SIGHUP or `--duration`) runs in reverse: the vote-bot
//! stops and its in-flight requests finish, then every child gets SIGTERM and is awaited
//! with a deadline, then the identity files are freed and the apps go with the runtime.
//! A `mesh` killed with SIGKILL takes its children with it (each asked the kernel for
//! it) and its in-memory identity files; only its directory of logs stays, for the next
//! demo to clean up. Later parts of the mesh (tap, the dashboard) slot in beside the
//! controller.

mod apps;
mod client;
mod grpc;
mod identity;
mod leftovers;
mod process;
pub(crate) mod state;
mod topology;
mod traffic;

use crate::UsageError;
use anyhow::Context as _;
use identity::Credentials;
use process::Process;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use topology::{Topology, Workload};
use tracing::info;

/// How long all proxies together get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long proxies get to drain and exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

const PROXY_BIN: &str = "mesh-proxy";
const PROXY_BIN_ENV: &str = "MESH_DEMO_PROXY_BIN";
const CONTROLLER_BIN: &str = "mesh-controller";
const CONTROLLER_BIN_ENV: &str = "MESH_DEMO_CONTROLLER_BIN";

/// Flags of `mesh demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// First of the consecutive loopback ports the demo uses (10 per workload).
    #[arg(long, default_value_t = 7000)]
    base_port: u16,

    /// Requests per second the vote-bot sends to web.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rps: u32,

    /// Stop after this long (a Go duration: 30s, 5m, 1m30s); without it, run until
    /// Ctrl-C.
    #[arg(long, value_parser = mesh_api::duration::parse_positive)]
    duration: Option<Duration>,

    /// The mesh-proxy binary [default: next to this executable, else $MESH_DEMO_PROXY_BIN, else on
    /// PATH].
    #[arg(long, value_name = "PATH")]
    proxy_bin: Option<PathBuf>,

    /// The mesh-controller binary [default: next to this executable, else
    /// $MESH_DEMO_CONTROLLER_BIN, else on PATH].
    #[arg(long, value_name = "PATH")]
    controller_bin: Option<PathBuf>,

    /// Run the apps without proxies, to debug the demo itself.
    #[arg(long, hide = true, conflicts_with_all = ["proxy_bin", "controller_bin"])]
    no_proxy: bool,
}

/// A validated `mesh demo`: nothing has been bound or started yet.
#[derive(Debug)]
pub struct Config {
    topology: Topology,
    rps: u32,
    duration: Option<Duration>,
    /// The proxy and controller binaries; `None` with `--no-proxy`.
    bins: Option<Bins>,
}

#[derive(Debug)]
struct Bins {
    proxy: PathBuf,
    controller: PathBuf,
}

// === impl Config ===

impl TryFrom<DemoArgs> for Config {
    type Error = UsageError;

    fn try_from(args: DemoArgs) -> Result<Self, UsageError> {
        let topology = Topology::new(args.base_port)?;
        let bins = if args.no_proxy {
            None
        } else {
            Some(Bins {
                proxy: find_bin(PROXY_BIN, PROXY_BIN_ENV, "--proxy-bin", args.proxy_bin)?,
                controller: find_bin(
                    CONTROLLER_BIN,
                    CONTROLLER_BIN_ENV,
                    "--controller-bin",
                    args.controller_bin,
                )?,
            })
        };
        Ok(Self {
            topology,
            rps: args.rps,
            duration: args.duration,
            bins,
        })
    }
}

/// Finds the binary `name`: the flag, else next to this executable (where cargo and the
/// release archive put it), else `$<env>`, else on `PATH`.
fn find_bin(
    name: &str,
    env: &str,
    flag_name: &str,
    flag: Option<PathBuf>,
) -> Result<PathBuf, UsageError> {
    if let Some(path) = flag {
        return existing_file(path, flag_name);
    }
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)));
    if let Some(path) = beside_exe.as_deref().filter(|p| p.is_file()) {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(env) {
        return existing_file(PathBuf::from(path), &format!("${env}"));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path.ok_or_else(|| {
        UsageError::new(format!(
            "{name} not found next to this executable, in ${env} or on PATH; \
             build it with `cargo build --workspace --bins` or pass {flag_name}"
        ))
    })
}

/// `path` if it is a file; otherwise an error naming where the path came from.
fn existing_file(path: PathBuf, source: &str) -> Result<PathBuf, UsageError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(UsageError::new(format!(
            "{source} {}: no such file",
            path.display()
        )))
    }
}

// === run ===

/// Runs the demo until Ctrl-C, SIGTERM, SIGHUP or `--duration`; errors if a child fails.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Registered before anything starts, so a signal during start-up also stops cleanly
    // instead of killing `mesh` with its default action.
    let mut stop = StopSignals::new()?;
    let shutdown = CancellationToken::new();
    let proxied = config.bins.is_some();

    // Before anything binds: an earlier demo killed outright may have left its
    // directory, and, before children died with their parent, processes on our ports.
    for c in leftovers::clean_up(&std::env::temp_dir()) {
        let stopped = match c.stopped {
            0 => String::new(),
            1 => "stopped 1 of its processes and ".to_string(),
            n => format!("stopped {n} of its processes and "),
        };
        crate::note(&format!(
            "mesh demo: an earlier demo (pid {}) did not stop cleanly; {stopped}removed {}",
            c.pid,
            c.dir.display()
        ));
    }
    check_ports(&config.topology)?;

    apps::start(&config.topology, proxied, &shutdown).await?;

    let state_dir = state::dir(std::process::id());
    let mut children = Vec::new();
    // Outside the block below, so that the files are freed however it ends.
    let mut credentials = None;
    let result = async {
        if let Some(bins) = &config.bins {
            let topology = &config.topology;
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("create {}", state_dir.display()))?;
            let file = state_dir.join("destinations.yaml");
            std::fs::write(&file, topology.destinations_yaml())
                .with_context(|| format!("write {}", file.display()))?;
            let identity = credentials
                .insert(Credentials::new().context("create the demo's identity credentials")?);
            let deadline = Instant::now() + READY_TIMEOUT;
            let ready = async {
                // The controller first: a proxy asked for a name it cannot resolve yet
                // would answer 502 until the controller came up, and one without its
                // identity service would not get a certificate.
                let controller = Process::spawn(
                    "controller".into(),
                    process::controller(&bins.controller, &file, topology, identity),
                    topology.controller().admin,
                    &state_dir,
                )?;
                children.push(controller);
                children[0].wait_ready(deadline).await?;
                for instance in topology.instances() {
                    children.push(Process::spawn(
                        format!("{}-proxy", instance.name()),
                        process::proxy(&bins.proxy, instance, topology, identity),
                        instance.admin,
                        &state_dir,
                    )?);
                }
                for child in &children[1..] {
                    child.wait_ready(deadline).await?;
                }
                // Only once every proxy answers, so whoever reads it can scrape them all.
                demo_state(topology).write(&state_dir)
            };
            tokio::select! {
                ready = ready => ready?,
                signal = stop.recv() => {
                    info!(signal, "stopping during start-up");
                    return Ok(());
                }
            }
        }

        print_banner(
            &config,
            proxied.then_some(state_dir.as_path()),
            credentials.as_ref(),
        );
        let traffic = tokio::spawn(traffic::run(
            config.topology.clone(),
            proxied,
            config.rps,
            shutdown.clone(),
        ));

        let outcome = tokio::select! {
            signal = stop.recv() => {
                info!(signal, "stopping");
                Ok(())
            }
            () = sleep_or_forever(config.duration) => {
                info!("--duration elapsed, stopping");
                Ok(())
            }
            (child, status) = first_exit(&children) => {
                Err(child.failure(&format!("exited unexpectedly ({status})")))
            }
        };
        shutdown.cancel();
        // The vote-bot only returns; a panic in it is already reported by the runtime.
        let _ = traffic.await;
        outcome
    }
    .await;

    // The demo no longer offers itself to other commands, even if the directory stays
    // for its logs.
    let _ = std::fs::remove_file(state_dir.join(state::STATE_FILE));
    // Whatever happened above, no child may outlive the demo.
    process::stop_all(&children, STOP_GRACE).await;
    // Only once no proxy can renew with them; the CA dies with this run.
    drop(credentials);
    shutdown.cancel();
    // A clean run with nothing logged should not leave a directory in /tmp every time;
    // logs that say something, or a failed run, are kept for the user to read.
    if result.is_ok() && all_empty(&state_dir) {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    result
}

/// What other commands need to know of the running demo.
fn demo_state(topology: &Topology) -> state::State {
    state::State {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        namespace: topology::NAMESPACE.to_string(),
        services: [Workload::Web, Workload::Emoji, Workload::Voting]
            .map(|w| w.name().to_string())
            .to_vec(),
        api: topology.controller().api,
        tap: Some(topology.controller().tap),
        proxies: topology
            .instances()
            .iter()
            .map(|i| state::ProxyState {
                name: i.name(),
                metrics: format!("http://{}/metrics", i.admin),
            })
            .collect(),
    }
}

/// Fails, naming the port and what it is for, if anything already listens on one of
/// the demo's ports: better said now than as a child's "Address already in use".
fn check_ports(topology: &Topology) -> anyhow::Result<()> {
    let taken: Vec<String> = topology
        .listeners()
        .into_iter()
        .filter(|(addr, _)| {
            std::net::TcpListener::bind(addr)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
        })
        .map(|(addr, what)| format!("{} ({what})", addr.port()))
        .collect();
    if taken.is_empty() {
        return Ok(());
    }
    let others: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| state::pid_of(e.file_name().to_str()?))
        .filter(|pid| *pid != std::process::id() && state::is_alive(*pid))
        .map(|pid| pid.to_string())
        .collect();
    let hint = match others.len() {
        0 => String::new(),
        _ => format!(
            "; another mesh demo is running (pid {}), stop it first or",
            others.join(", ")
        ),
    };
    let base = topology.instances()[0].app.port();
    anyhow::bail!(
        "port{} {} already in use{hint}; start the demo on other ports with --base-port \
         (it uses {} ports from {base})",
        if taken.len() == 1 { "" } else { "s" },
        taken.join(", "),
        topology.span()
    )
}

/// Whether every log in `dir` is empty (`false` if it cannot be read).
fn all_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.all(|e| {
            e.is_ok_and(|e| {
                e.path().extension().is_none_or(|x| x != "log")
                    || e.metadata().is_ok_and(|m| m.len() == 0)
            })
        })
    })
}

/// How the user runs this `mesh`: `mesh` when that is what their `PATH` finds, else
/// its path relative to the working directory (`target/demo/mesh` after
/// `scripts/demo.sh`), else its absolute path, so that printed commands paste as they
/// are.
fn mesh_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) else {
        return "mesh".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("mesh"))
            .find(|p| p.is_file())
    });
    if on_path.and_then(|p| p.canonicalize().ok()).as_ref() == Some(&exe) {
        return "mesh".into();
    }
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(r) if r.components().count() > 1 => r.display().to_string(),
        Some(r) => format!("./{}", r.display()),
        None => exe.display().to_string(),
    }
}

/// The commands the banner offers: each works against this demo exactly as printed.
fn try_commands(config: &Config, proxied: bool) -> Vec<String> {
    let web = config.topology.get(Workload::Web);
    let web_addr = if proxied { web.inbound } else { web.app };
    let mut commands = vec![format!("curl -s http://{web_addr}/api/list")];
    if proxied {
        let mesh = mesh_command();
        commands.extend([
            format!("{mesh} stat deploy"),
            format!("{mesh} stat deploy -o wide"),
            format!("{mesh} top deploy"),
            format!("{mesh} edges deploy -o wide"),
            format!("{mesh} routes svc/web"),
            format!(
                "{mesh} diagnostics endpoints voting.{}.svc.cluster.local:80",
                topology::NAMESPACE
            ),
            format!("{mesh} diagnostics proxy-metrics po/voting-0"),
            format!("{mesh} version"),
            format!("{mesh} dashboard"),
        ]);
    }
    commands
}

fn print_banner(config: &Config, state_dir: Option<&Path>, identity: Option<&Credentials>) {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line("mesh demo: vote-bot -> web -> emoji (gRPC) and voting (HTTP/1)");
    line("");
    out_table(&mut line, &config.topology.render(state_dir.is_some()));
    line("");
    line(
        "  voting fails ~25% of POST /vote/:choice; web answers GET /api/leaderboard in 300-800 ms",
    );
    if state_dir.is_some() {
        let slow = config
            .topology
            .replicas(Workload::Voting)
            .find(|i| i.is_slow())
            .map(|i| i.name())
            .unwrap_or_default();
        line(&format!(
            "  voting has {} replicas; {slow} answers {} ms slower, so web's proxy sends it less \
             (see dst_pod in web's metrics)",
            topology::VOTING_REPLICAS,
            topology::SLOW_REPLICA_DELAY.as_millis()
        ));
        line(
            "  voting admits web's identity alone (cli/src/demo/policy.yaml); the vote-bot's own \
             calls to voting are denied (UNAUTHORIZED in stat -o wide, authz=DENIED in tap)",
        );
    }
    if let Some(identity) = identity {
        line(&format!(
            "  identity: on (trust domain {}, served at {}): every proxy holds a certificate, \
             and calls between proxies use mutual TLS",
            topology::TRUST_DOMAIN,
            config.topology.controller().identity
        ));
        line(&format!(
            "  trust anchors: {} (in memory; gone when the demo stops)",
            identity.anchors.display()
        ));
    }
    line(&format!(
        "  vote-bot sends {} requests/s to web",
        config.rps
    ));
    if state_dir.is_some() {
        line(&format!(
            "  dashboard: http://{}/ (also from `mesh dashboard`)",
            config.topology.controller().api
        ));
    }
    match state_dir {
        Some(dir) => line(&format!(
            "  logs: {}/<name>.log (removed at exit if empty)",
            dir.display()
        )),
        None => line("  running WITHOUT proxies (--no-proxy)"),
    }
    line("");
    line(&format!(
        "Try these (namespace {} is the default):",
        topology::NAMESPACE
    ));
    for command in try_commands(config, state_dir.is_some()) {
        line(&format!("  {command}"));
    }
    line("");
    match config.duration {
        Some(d) => line(&format!("Stopping after {d:?}; Ctrl-C stops sooner.")),
        None => line("Press Ctrl-C to stop."),
    }
    crate::out(&out);
}

/// Appends a multi-line block, line by line.
fn out_table(line: &mut impl FnMut(&str), table: &str) {
    for l in table.lines() {
        line(l);
    }
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// Completes when any child exits, with that child and how it exited; never, if none run.
async fn first_exit(proxies: &[Process]) -> (&Process, String) {
    if proxies.is_empty() {
        return std::future::pending().await;
    }
    let exits = proxies.iter().map(|p| Box::pin(p.exited()));
    let (status, index, _) = futures_util::future::select_all(exits).await;
    (&proxies[index], status)
}

/// SIGINT, SIGTERM and SIGHUP (the terminal went away), each meaning "stop the demo
/// cleanly".
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            hangup: signal(SignalKind::hangup()).context("install SIGHUP handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--duration` reads Go's syntax (`mesh_api::duration`), more than zero; errors
    /// name the flag and the value.
    #[test]
    fn parses_durations() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            demo: DemoArgs,
        }
        let parse = |d: &str| {
            <Cli as clap::Parser>::try_parse_from(["mesh".into(), format!("--duration={d}")])
                .map(|c| c.demo.duration)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse("500ms"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse("2m"), Ok(Some(Duration::from_secs(120))));
        assert_eq!(parse("1h"), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(parse("1m30s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse("1.5s"), Ok(Some(Duration::from_millis(1500))));
        for bad in ["", "s", "0s", "10x", "-1s", "30"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("--duration"), "{bad:?}: {err}");
        }
    }
}
