//! Network namespaces as stand-ins for pods: each has its own interfaces, routes and
//! iptables, which is all `mesh-proxy init` and a transparent proxy touch.
//!
//! A [`NetNs`] owns its namespace: dropping it kills every process left inside and deletes
//! the namespace (which removes its end of any veth pair). Names carry the test process's
//! pid and a counter, so tests run in parallel by nextest never collide; addresses come
//! from 198.18.0.0/15 (RFC 2544 benchmarking space), never from ranges a real network
//! might use.

use std::{
    ffi::{OsStr, OsString},
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{metrics::Metrics, process::Process, wait_until};

/// Prefix of every namespace the harness creates, so stale ones can be found.
const PREFIX: &str = "mit";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A network namespace owned by the test; deleted, with everything in it, on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    log_dir: PathBuf,
}

impl NetNs {
    /// Creates `mit-<label>-<pid>-<n>` with its loopback up.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        static REAP: Once = Once::new();
        REAP.call_once(reap_stale);

        let name = format!("{PREFIX}-{label}-{}-{}", std::process::id(), next_id());
        ip(["netns", "add", &name])?;
        let ns = Self {
            log_dir: crate::scratch_dir().join(&name),
            name,
        };
        std::fs::create_dir_all(&ns.log_dir)
            .with_context(|| format!("creating {}", ns.log_dir.display()))?;
        ip(["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A per-namespace scratch directory for logs and files the test needs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the namespace to completion, without judging its exit status.
    pub fn output<I, S>(&self, argv: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = argv.into_iter();
        let program = argv.next().context("empty command")?;
        let mut cmd = self.command(program);
        cmd.args(argv);
        cmd.output()
            .with_context(|| format!("running {cmd:?} in {}", self.name))
    }

    /// Runs `argv` inside the namespace and returns its stdout; fails, quoting stderr,
    /// unless it exits 0.
    pub fn run<I, S>(&self, argv: I) -> anyhow::Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let out = self.output(&argv)?;
        if !out.status.success() {
            bail!(
                "{argv:?} in {} failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
            );
        }
        Ok(out.stdout)
    }

    /// Starts building a long-running process inside the namespace.
    pub fn process(&self, label: &str, program: impl AsRef<OsStr>) -> Spawn<'_> {
        Spawn {
            ns: self,
            label: label.to_string(),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            uid: None,
        }
    }

    /// Waits until something in the namespace accepts TCP connections on `addr`.
    pub fn wait_for_port(&self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let (host, port) = (addr.ip().to_string(), addr.port().to_string());
        wait_until(&format!("{addr} in {}", self.name), timeout, || {
            let out = self.output(["nc", "-z", "-w", "1", &host, &port])?;
            Ok(out.status.success().then_some(()))
        })
    }

    /// `GET url` from inside the namespace with curl; returns the status and body.
    pub fn http_get(&self, url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let out = self.run([
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            url,
        ])?;
        let split = out
            .iter()
            .rposition(|b| *b == b'\n')
            .context("curl printed no status")?;
        let status = std::str::from_utf8(&out[split + 1..])?
            .trim()
            .parse()
            .context("curl status")?;
        Ok((status, out[..split].to_vec()))
    }

    /// Fetches and parses `http://<admin>/metrics` from inside the namespace.
    pub fn metrics(&self, admin: &str) -> anyhow::Result<Metrics> {
        let (status, body) = self.http_get(&format!("http://{admin}/metrics"))?;
        if status != 200 {
            bail!("GET {admin}/metrics: status {status}");
        }
        Metrics::parse(&String::from_utf8(body).context("metrics are not UTF-8")?)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = ip(["netns", "del", &self.name]);
    }
}

/// Builder for a process inside a namespace; see [`NetNs::process`].
#[derive(Debug)]
pub struct Spawn<'a> {
    ns: &'a NetNs,
    label: String,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    uid: Option<u32>,
}

impl Spawn<'_> {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the process as `uid` (and the same gid, no supplementary groups) via
    /// `setpriv`, the way a pod runs its proxy as a dedicated user that iptables skips.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    pub fn spawn(self) -> anyhow::Result<Process> {
        let mut cmd = match self.uid {
            None => self.ns.command(&self.program),
            Some(uid) => {
                let program = reachable_by_others(Path::new(&self.program))?;
                let mut cmd = self.ns.command("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(program);
                cmd
            }
        };
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let stderr = self
            .ns
            .log_dir
            .join(format!("{}-{}.stderr", self.label, next_id()));
        Process::spawn(format!("{}/{}", self.ns.name, self.label), cmd, stderr)
    }
}

/// A pod: a namespace and the address its veth has.
#[derive(Debug)]
pub struct Pod {
    pub ns: NetNs,
    pub ip: Ipv4Addr,
}

impl std::ops::Deref for Pod {
    type Target = NetNs;

    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl Pod {
    /// Two pods joined by a veth pair on a /30 of their own.
    pub fn pair(a: &str, b: &str) -> anyhow::Result<(Pod, Pod)> {
        let a = NetNs::new(a)?;
        let b = NetNs::new(b)?;
        let (ip_a, ip_b) = veth(&a, &b)?;
        Ok((Pod { ns: a, ip: ip_a }, Pod { ns: b, ip: ip_b }))
    }
}

/// A node: a namespace that routes between the pods attached to it, as a Kubernetes
/// node does, so that any number of pods reach each other (and whatever runs on the
/// node, a controller say) by their own addresses. Every address of 198.18.0.0/15 that
/// no attached pod holds is `unreachable` here, so a stray packet fails at once instead
/// of wandering.
#[derive(Debug)]
pub struct Node {
    pub ns: NetNs,
}

impl std::ops::Deref for Node {
    type Target = NetNs;

    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl Node {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let ns = NetNs::new(label)?;
        ns.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        ip([
            "-n",
            &ns.name,
            "route",
            "add",
            "unreachable",
            "198.18.0.0/15",
        ])?;
        Ok(Self { ns })
    }

    /// A new pod attached to this node by a veth pair, its default route through the
    /// node; returns the pod and the node's address on their link (where the pod
    /// reaches what runs on the node).
    pub fn pod(&self, label: &str) -> anyhow::Result<(Pod, Ipv4Addr)> {
        let ns = NetNs::new(label)?;
        let (ip, node_ip) = veth(&ns, &self.ns)?;
        ns.run(["ip", "route", "add", "default", "via", &node_ip.to_string()])?;
        Ok((Pod { ns, ip }, node_ip))
    }
}

/// Joins two namespaces with a veth pair and gives each end an address of a fresh /30
/// in 198.18.0.0/15; returns (a's address, b's address).
///
/// Namespaces do not share addresses, so the /30 only needs to be unique for tidiness
/// (and readable logs): it is derived from the pid and a counter.
pub fn veth(a: &NetNs, b: &NetNs) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let id = next_id();
    // 198.18.0.0/15 holds 2^15 blocks of four addresses.
    let block = (std::process::id().wrapping_mul(97).wrapping_add(id)) % (1 << 15);
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4;
    let (ip_a, ip_b) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
    // Interface names are at most 15 bytes; these only need to be unique per namespace.
    let (if_a, if_b) = (format!("veth{id}a"), format!("veth{id}b"));
    ip([
        "link", "add", &if_a, "netns", &a.name, "type", "veth", "peer", "name", &if_b, "netns",
        &b.name,
    ])?;
    for (ns, ifname, addr) in [(a, &if_a, ip_a), (b, &if_b, ip_b)] {
        ip([
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            ifname,
        ])?;
        ip(["-n", &ns.name, "link", "set", ifname, "up"])?;
    }
    Ok((ip_a, ip_b))
}

fn ip<const N: usize>(args: [&str; N]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Kills (SIGKILL) every process inside namespace `name`: all of them were started by
/// the test that owns it.
fn kill_all_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(&pids).output();
    }
}

/// Deletes namespaces left by earlier test processes that died without running their
/// destructors (a nextest timeout kills with SIGKILL), so they do not pile up.
fn reap_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        // mit-<label>-<pid>-<n>: the pid is the second field from the end.
        let fields: Vec<&str> = name.split('-').collect();
        if fields.len() < 4 || fields[0] != PREFIX {
            continue;
        }
        let pid = fields[fields.len() - 2];
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            kill_all_in(name);
            let _ = ip(["netns", "del", name]);
        }
    }
}

/// A path to `program` that a non-root uid can execute: the path itself when every
/// directory above it is searchable by others, otherwise a copy in a temporary directory
/// (a checkout under /root, say, is not).
fn reachable_by_others(program: &Path) -> anyhow::Result<PathBuf> {
    if program.components().count() <= 1 {
        // A bare name is looked up on PATH, which is world-readable.
        return Ok(program.to_path_buf());
    }
    let program = program
        .canonicalize()
        .with_context(|| format!("{} not found", program.display()))?;
    let others_can = |p: &Path, bits: u32| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & bits == bits)
            .unwrap_or(false)
    };
    let reachable = others_can(&program, 0o005)
        && program
            .ancestors()
            .skip(1)
            .all(|dir| others_can(dir, 0o001));
    if reachable {
        return Ok(program);
    }
    // Not under the scratch directory: that one sits in $TMPDIR too, but a copy must be
    // reachable even if $TMPDIR is private; /tmp is world-searchable.
    let dir = Path::new("/tmp").join(format!("mesh-it-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.join(program.file_name().context("program has no file name")?);
    std::fs::copy(&program, &copy)
        .with_context(|| format!("copying {} to {}", program.display(), copy.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}
