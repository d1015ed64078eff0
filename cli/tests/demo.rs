//! Process-level test of `mesh demo`: the real `mesh` binary with real `mesh-proxy`
//! children on loopback ports.
//!
//! It checks what a user of the demo relies on: traffic flows through the proxies (the web
//! proxy's metrics show HTTP successes, the voting route's failures and gRPC), callees are
//! found by name through the controller and balanced over voting's replicas, the slow one
//! getting the smallest share, and Ctrl-C stops everything, with exit code 0 and no child
//! left behind. `mesh` finds `mesh-proxy` and `mesh-controller` next to itself, so every
//! binary must be built first (`cargo build --workspace --bins`, as `scripts/test.sh` does).
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

/// Ports per demo (6 workload instances and the controller, × 10), from
/// `cli/src/demo/topology.rs`.
const DEMO_PORTS: u16 = 70;
const POLL: Duration = Duration::from_millis(100);

#[test]
fn demo_meshes_traffic_and_stops_cleanly_on_sigint() {
    let mesh = env!("CARGO_BIN_EXE_mesh");
    for bin in ["mesh-proxy", "mesh-controller"] {
        let path = Path::new(mesh).with_file_name(bin);
        assert!(
            path.is_file(),
            "{} is missing: build every binary first (cargo build --workspace --bins)",
            path.display()
        );
    }

    let base_port = free_port_block();
    let mut demo = Demo::start(mesh, base_port);

    // The table is printed once every proxy is ready; it says where web's metrics are.
    let metrics = demo.wait_for_line(Duration::from_secs(120), |line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("web"))
            .then(|| words.find(|w| w.starts_with("http://") && w.ends_with("/metrics")))
            .flatten()
            .map(str::to_owned)
    });
    let metrics_addr: SocketAddr = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .expect("the table prints the metrics url as http://ip:port/metrics");

    // The proxies are the `mesh-proxy` children of `mesh`: one per workload instance.
    let proxies = children_named(demo.child.id(), "mesh-proxy");
    let controllers = children_named(demo.child.id(), "mesh-controller");
    demo.children = [&proxies[..], &controllers[..]].concat();
    assert_eq!(
        proxies.len(),
        6,
        "one proxy per workload instance: {proxies:?}"
    );
    assert_eq!(controllers.len(), 1, "one controller: {controllers:?}");

    let outbound = |body: &str, label: &str| {
        body.lines().any(|l| {
            l.starts_with("response_total{")
                && l.contains("direction=\"outbound\"")
                && l.contains(label)
        })
    };
    // Requests web's proxy sent to one voting replica, by its `dst_pod` label.
    let to_pod = |body: &str, pod: &str| -> u64 {
        let label = format!("dst_pod=\"{pod}\"");
        body.lines()
            .filter(|l| {
                l.starts_with("request_total{")
                    && l.contains("direction=\"outbound\"")
                    && l.contains(&label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let body = http_get(metrics_addr, "/metrics").unwrap_or_default();
        let seen = [
            "classification=\"success\"",
            "classification=\"failure\"",
            "grpc_status=\"0\"",
            "dst_service=\"emoji\"",
        ]
        .map(|label| outbound(&body, label));
        let [fast0, fast1, slow] = ["voting-0", "voting-1", "voting-2"].map(|p| to_pod(&body, p));
        // Enough votes that uniform balancing (a third each) could not pass for
        // latency-aware balancing by chance.
        if seen.iter().all(|s| *s) && fast0 + fast1 + slow >= 300 {
            assert!(
                fast0 > 0 && fast1 > 0,
                "both fast voting replicas get traffic: {fast0}, {fast1}"
            );
            assert!(
                slow * 4 < fast0 + fast1,
                "the slow replica gets the smallest share: voting-0 {fast0}, voting-1 {fast1}, \
                 voting-2 (slow) {slow}"
            );
            break;
        }
        demo.assert_running();
        assert!(
            Instant::now() < deadline,
            "web proxy's outbound metrics never showed success, failure, grpc and discovery \
             labels with 300 votes (seen {seen:?}, votes {:?}):\n{body}\nstderr:\n{}",
            [fast0, fast1, slow],
            demo.stderr()
        );
        thread::sleep(POLL);
    }

    kill(Pid::from_raw(demo.pid()), Signal::SIGINT).expect("signal mesh");
    let status = demo.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "mesh exited with {status}; stderr:\n{}",
        demo.stderr()
    );
    let left: Vec<u32> = proxies
        .into_iter()
        .filter(|&pid| is_alive(pid, "mesh-proxy"))
        .chain(
            controllers
                .into_iter()
                .filter(|&pid| is_alive(pid, "mesh-controller")),
        )
        .collect();
    assert!(
        left.is_empty(),
        "children still running after mesh exited: {left:?}"
    );
}

/// A running `mesh demo`, killed (with its children) if the test fails midway.
struct Demo {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    children: Vec<u32>,
}

impl Demo {
    fn start(mesh: &str, base_port: u16) -> Self {
        let mut child = Command::new(mesh)
            .args(["demo", "--base-port", &base_port.to_string(), "--rps", "50"])
            .env("MESH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mesh");

        // Both pipes are drained on threads so that `mesh` never blocks on a full pipe.
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr is piped");
        let buf = stderr.clone();
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                buf.lock().expect("stderr buffer").push_str(&text);
            }
        });
        Self {
            child,
            stdout,
            stderr,
            children: Vec::new(),
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in i32")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Reads stdout until `find` returns something for a line.
    fn wait_for_line<T>(&mut self, timeout: Duration, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        let mut seen = String::new();
        loop {
            match self.stdout.recv_timeout(POLL) {
                Ok(line) => {
                    if let Some(found) = find(&line) {
                        return found;
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.assert_running(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.assert_running();
                    thread::sleep(POLL);
                }
            }
            assert!(
                Instant::now() < deadline,
                "line not printed in time; stdout:\n{seen}\nstderr:\n{}",
                self.stderr()
            );
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "mesh exited early with {status}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mesh did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The children run in their own process groups and outlive a killed `mesh`.
        for &pid in &self.children {
            if is_alive(pid, "mesh-proxy") || is_alive(pid, "mesh-controller") {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// A block of [`DEMO_PORTS`] consecutive free loopback ports, below Linux's ephemeral range
/// and chosen from the pid, so parallel test runs and other demos do not collide.
fn free_port_block() -> u16 {
    const FIRST: u16 = 20_000;
    const SLOTS: u16 = 250;
    let start = (std::process::id() % u32::from(SLOTS)) as u16;
    (0..SLOTS)
        .map(|i| FIRST + ((start + i) % SLOTS) * DEMO_PORTS)
        .find(|&base| {
            (base..base + DEMO_PORTS)
                .all(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
        })
        .expect("a free block of loopback ports")
}

/// A minimal HTTP/1.0 GET, so the body is neither chunked nor kept alive.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// Pids of `parent`'s children whose command name is `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(comm, _, ppid)| comm == name && ppid == parent))
        .collect()
}

/// Whether `pid` is a live (not zombie) process called `name`.
fn is_alive(pid: u32, name: &str) -> bool {
    stat(pid).is_some_and(|(comm, state, _)| comm == name && state != 'Z')
}

/// `(comm, state, ppid)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may itself contain spaces or parentheses.
    let (head, tail) = stat.rsplit_once(") ")?;
    let comm = head.split_once(" (")?.1.to_owned();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, state, ppid))
}
