//! The demo's child processes: one `mesh-controller` (file backend) and one `mesh-proxy`
//! per workload instance, in explicit mode.
//!
//! Lifecycle: [`Process::spawn`] starts the child and hands it to a supervisor task, which
//! alone owns the `Child`: it reaps the process and is the only one to signal it, so a
//! signal can never reach a recycled pid. The [`Proxy`] handle talks to the supervisor
//! through channels. Every child is spawned with `kill_on_drop`, so if the supervisor is
//! dropped (the runtime shutting down on an error path) the child is killed rather than
//! orphaned; the orderly path is [`stop_all`]: SIGTERM, wait with a deadline, SIGKILL.
//!
//! Children run in their own process group so that a terminal's Ctrl-C (or hang-up)
//! reaches only `mesh`, which then stops traffic before the proxies, instead of every
//! proxy dying at once under the apps' in-flight requests. Each child is also told
//! `mesh`'s pid (`MESH_PROXY_PARENT_PID`, `--parent-pid`) and asks the kernel to kill
//! it when `mesh` dies: nothing outlives a `mesh` killed with SIGKILL. The kernel ties
//! that signal to the thread that spawned the child, so children are spawned from the
//! main thread (the one `block_on` runs the demo on), which lives as long as `mesh`.

use super::{
    client::AppClient,
    identity::Credentials,
    topology::{Instance, Topology, NAMESPACE, TRUST_DOMAIN},
};
use anyhow::Context as _;
use http_body_util::Full;
use hyper::Request;
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};
use tokio::{
    process::{Child, Command},
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

/// How often `/ready` is polled while a proxy starts.
const READY_POLL: Duration = Duration::from_millis(100);

/// The proxies' own drain period after SIGTERM.
const PROXY_GRACE: Duration = Duration::from_secs(5);
const _: () = assert!(
    PROXY_GRACE.as_secs() < super::STOP_GRACE.as_secs(),
    "proxies must finish draining before the demo kills them"
);

/// How many lines of a failed proxy's log are shown.
const LOG_TAIL_LINES: usize = 20;

/// A running (or exited) child: the controller or a proxy.
#[derive(Debug)]
pub(crate) struct Process {
    name: String,
    admin: SocketAddr,
    log: PathBuf,
    signals: mpsc::UnboundedSender<Signal>,
    /// `None` while the child runs, then how it exited.
    exit: watch::Receiver<Option<String>>,
}

/// The command line of the proxy of `instance`: explicit mode, discovering its callees
/// through the controller, and holding a certificate for its workload's identity from
/// the controller's identity service (its `/ready` waits for it).
pub(crate) fn proxy(
    bin: &Path,
    instance: &Instance,
    topology: &Topology,
    identity: &Credentials,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env(
        "MESH_PROXY_INBOUND_LISTEN_ADDR",
        instance.inbound.to_string(),
    )
    .env("MESH_PROXY_INBOUND_FORWARD_ADDR", instance.app.to_string())
    .env(
        "MESH_PROXY_OUTBOUND_LISTEN_ADDR",
        instance.outbound.to_string(),
    )
    .env("MESH_PROXY_ADMIN_LISTEN_ADDR", instance.admin.to_string())
    // Every proxy of the demo shares one host, so the tap port's default (4190) could
    // serve only one: each takes a free port until the demo has a tap service.
    .env("MESH_PROXY_TAP_LISTEN_ADDR", instance.tap.to_string())
    .env(
        "MESH_PROXY_DESTINATION_ADDR",
        topology.controller().destination.to_string(),
    )
    // Who is asking, as an injected pod's proxy says it: short names such as
    // `voting` resolve in the pod's own namespace.
    .env(
        "MESH_PROXY_DESTINATION_CONTEXT",
        format!(r#"{{"ns":"{NAMESPACE}","pod":"{}"}}"#, instance.name()),
    )
    .env(
        "MESH_PROXY_IDENTITY_ADDR",
        topology.controller().identity.to_string(),
    )
    .env("MESH_PROXY_IDENTITY_NAME", instance.workload.identity())
    .env(
        "MESH_PROXY_IDENTITY_TOKEN_FILE",
        identity.token_file(instance.workload),
    )
    // Inline, as Linkerd passes them, so the proxy needs no file for them.
    .env("MESH_PROXY_IDENTITY_TRUST_ANCHORS", &identity.anchors_pem)
    // Inbound policy on, as the injector turns it on: the pod's policy from the
    // policy service beside the destination service, the app's port watched from
    // start-up. The default until the controller answers is the controller's own
    // (`all-unauthenticated`). In explicit mode every caller comes from loopback, so the
    // proxy treats loopback as a client like any other.
    .env(
        "MESH_PROXY_POLICY_WORKLOAD",
        format!(r#"{{"ns":"{NAMESPACE}","pod":"{}"}}"#, instance.name()),
    )
    .env("MESH_PROXY_LOG", "warn")
    // Killed with `mesh` however `mesh` ends, SIGKILL included.
    .env("MESH_PROXY_PARENT_PID", std::process::id().to_string())
    // The proxy's own drain must end before `stop_all` gives up and kills it, so a
    // stuck connection costs a clean exit, not a SIGKILL.
    .env(
        "MESH_PROXY_SHUTDOWN_GRACE_PERIOD",
        format!("{}ms", PROXY_GRACE.as_millis()),
    );
    if instance.workload.has_server() {
        cmd.env("MESH_PROXY_INBOUND_PORTS", instance.app.port().to_string());
    }
    cmd
}

/// How often the demo's controller scrapes its proxies for the metrics API.
const DEMO_SCRAPE_INTERVAL: &str = "2s";

/// The command line of the controller: the destination service, from `file`, and the
/// identity service, signing with the demo's issuer for holders of its bootstrap tokens.
///
/// Every setting is a flag, even the defaults (the trust domain), because flags win over
/// the `MESH_*` variables the controller also reads, which a user's shell might set.
pub(crate) fn controller(
    bin: &Path,
    file: &Path,
    topology: &Topology,
    identity: &Credentials,
) -> Command {
    let addrs = topology.controller();
    let mut cmd = Command::new(bin);
    cmd.arg("--backend")
        .arg("file")
        .arg("--file")
        .arg(file)
        .arg("--destination-addr")
        .arg(addrs.destination.to_string())
        .arg("--admin-addr")
        .arg(addrs.admin.to_string())
        .arg("--api-addr")
        .arg(addrs.api.to_string())
        // The metrics API's scrapes every 2 s rather than 10 s, so that `mesh stat` has
        // numbers (two scrapes) seconds after the demo starts; a dozen local proxies
        // cost nothing to scrape that often.
        .arg("--metrics-scrape-interval")
        .arg(DEMO_SCRAPE_INTERVAL)
        .arg("--metrics-scrape-timeout")
        .arg(DEMO_SCRAPE_INTERVAL)
        .arg("--tap-addr")
        .arg(addrs.tap.to_string())
        // Killed with `mesh` however `mesh` ends, SIGKILL included.
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .arg("--trust-domain")
        .arg(TRUST_DOMAIN)
        .arg("--identity-addr")
        .arg(addrs.identity.to_string())
        .arg("--identity-trust-anchors")
        .arg(&identity.anchors)
        .arg("--identity-issuer-cert")
        .arg(&identity.issuer_cert)
        .arg("--identity-issuer-key")
        .arg(&identity.issuer_key)
        .arg("--identity-tokens")
        .arg(&identity.tokens)
        .env("MESH_LOG", "warn");
    cmd
}

// === impl Process ===

impl Process {
    /// Starts `cmd` as `name`, whose admin server is at `admin`, with its output going to
    /// `<name>.log` in `log_dir`.
    pub(crate) fn spawn(
        name: String,
        mut cmd: Command,
        admin: SocketAddr,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let stderr = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let stdout = stderr.try_clone().context("duplicate log file handle")?;
        let bin = cmd.as_std().get_program().to_string_lossy().into_owned();

        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {bin} as {name}"))?;
        debug!(name = %name, pid = ?child.id(), "started");

        let (signals, signals_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(supervise(child, signals_rx, exit_tx));
        Ok(Self {
            name,
            admin,
            log,
            signals,
            exit,
        })
    }

    /// Waits until `GET /ready` answers 200; fails, with the child's log, if it exits first
    /// or `deadline` passes.
    pub(crate) async fn wait_ready(&self, deadline: Instant) -> anyhow::Result<()> {
        let client = AppClient::http1(None);
        let uri = format!("http://{}/ready", self.admin);
        let poll = async {
            loop {
                let req = Request::get(&uri).body(Full::default())?;
                match client.request(req).await {
                    Ok(rsp) if rsp.status().is_success() => return anyhow::Ok(()),
                    Ok(rsp) => debug!(name = %self.name, status = %rsp.status(), "not ready"),
                    Err(error) => debug!(name = %self.name, %error, "not ready"),
                }
                tokio::time::sleep(READY_POLL).await;
            }
        };
        tokio::select! {
            ready = tokio::time::timeout_at(deadline, poll) => match ready {
                Ok(result) => result,
                Err(_) => Err(self.failure("did not become ready in time")),
            },
            status = self.exited() => {
                Err(self.failure(&format!("exited before it was ready ({status})")))
            }
        }
    }

    /// Completes when the child has exited, with how it exited.
    pub(crate) async fn exited(&self) -> String {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            // The supervisor always reports before it goes away, short of a panic.
            Err(_) => "supervisor gone".to_string(),
        };
        status
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    fn signal(&self, signal: Signal) {
        // A closed channel means the supervisor has reaped the child: nothing to signal.
        let _ = self.signals.send(signal);
    }

    /// An error naming this child and what went wrong, with the end of its log.
    pub(crate) fn failure(&self, what: &str) -> anyhow::Error {
        let log = std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        anyhow::anyhow!(
            "{} {what}; end of {}:\n{tail}",
            self.name,
            self.log.display()
        )
    }
}

/// Owns the child: reaps it, delivers signals to it, and publishes how it exited.
async fn supervise(
    mut child: Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    exit: watch::Sender<Option<String>>,
) {
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signals.recv() => {
                // `id()` is `None` once the child is reaped, and only this task reaps it,
                // so the pid signalled here is still this child's.
                if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                    if let Err(error) = nix::sys::signal::kill(Pid::from_raw(pid), signal) {
                        warn!(pid, %signal, %error, "failed to signal proxy");
                    }
                }
            }
        }
    };
    let status = match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("wait failed: {error}"),
    };
    exit.send_replace(Some(status));
}

/// Stops every child: SIGTERM to all at once (they drain in parallel), then wait until
/// `grace` has passed; whoever is still running then is killed.
pub(crate) async fn stop_all(proxies: &[Process], grace: Duration) {
    if proxies.is_empty() {
        return;
    }
    for proxy in proxies {
        proxy.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for proxy in proxies {
        match tokio::time::timeout_at(deadline, proxy.exited()).await {
            Ok(status) => debug!(name = %proxy.name, %status, "stopped"),
            Err(_) => {
                warn!(
                    name = %proxy.name,
                    ?grace,
                    "did not stop in time; killing it"
                );
                proxy.signal(Signal::SIGKILL);
                // SIGKILL cannot be ignored; the bound only guards against a stuck reaper.
                let _ = tokio::time::timeout(Duration::from_secs(2), proxy.exited()).await;
            }
        }
    }
    let running = proxies.iter().filter(|p| !p.has_exited()).count();
    if running == 0 {
        info!(count = proxies.len(), "children stopped");
    } else {
        warn!(running, "some children could not be stopped");
    }
}
