//! The CLI in cluster mode, as a process: the real `mesh` binary reaching the real
//! `mesh-controller` (file backend) through a port-forward it opens itself, kube-rs's
//! `pods/portforward` WebSocket to the fake API server, which leads the controller
//! pod's ports 8084 and 8088 to where the controller listens on loopback.
//!
//! What is checked: the commands work through the forward (`mesh version`, `mesh stat`,
//! `mesh diagnostics endpoints`, and a tap call, which the controller answers from
//! behind the forward); `--context` picks the cluster, and the context's namespace is
//! the default one; where the APIs are sought, in order (a flag's cluster over a
//! running demo, a running demo over a kubeconfig merely present); and each failure
//! says what was tried: no controller pod, none ready, an unknown context, an API
//! server that does not answer, a pod port the kubelet cannot reach.
// This measures real elapsed time for deadlines, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use mesh_api::control_plane::{COMPONENT_LABEL, CONTROLLER_COMPONENT, NAMESPACE};
use mesh_kube_fake::{pod, FakeKube};
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

/// The controller's pod in the fake cluster.
const CONTROLLER_POD: &str = "mesh-controller-7c9d-x2x4z";

/// How long the controller gets to start, and a condition to come true.
pub(super) const DEADLINE: Duration = Duration::from_secs(30);

/// `mesh-controller` on the file backend, on loopback ports of its own, stopped (and
/// reaped) when dropped; it also dies with this test process (`--parent-pid`).
pub(super) struct Controller {
    child: Child,
    pub(super) api: SocketAddr,
    tap: SocketAddr,
    destination: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Controller {
    pub(super) fn start() -> Self {
        Self::start_with(DISCOVERY)
    }

    /// The same on a destinations file of the caller's.
    pub(super) fn start_with(discovery: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("discovery.yaml"), discovery).unwrap();
        let [destination, admin, api, tap] = [(); 4].map(|()| free_addr());
        let child = Self::spawn(dir.path(), [destination, admin, api, tap]);
        let mut controller = Self {
            child,
            api,
            tap,
            destination,
            admin,
            dir,
        };
        controller.wait_ready();
        controller
    }

    /// Stops the controller (SIGKILL, as a crash or an evicted pod) and starts a new one
    /// on the same addresses and file, ready.
    pub(super) fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(
            self.dir.path(),
            [self.destination, self.admin, self.api, self.tap],
        );
        self.wait_ready();
    }

    /// Stops it, for good.
    pub(super) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(dir: &Path, [destination, admin, api, tap]: [SocketAddr; 4]) -> Child {
        let bin = Path::new(env!("CARGO_BIN_EXE_mesh")).with_file_name("mesh-controller");
        assert!(
            bin.is_file(),
            "{} is missing: build every binary first (cargo build --workspace --bins)",
            bin.display()
        );
        Command::new(bin)
            .args(["--backend", "file", "--file"])
            .arg(dir.join("discovery.yaml"))
            .args(["--destination-addr", &destination.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--api-addr", &api.to_string()])
            .args(["--tap-addr", &tap.to_string()])
            .args([
                "--metrics-scrape-interval",
                "1s",
                "--metrics-scrape-timeout",
                "1s",
            ])
            .args(["--parent-pid", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mesh-controller")
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while http_status(self.admin, "/ready") != Some(200) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "mesh-controller exited before it was ready"
            );
            assert!(
                start.elapsed() < DEADLINE,
                "mesh-controller not ready in {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Namespace `shop`: `web` (one meshed pod) and `db` (one pod, not meshed).
const DISCOVERY: &str = "services:
- name: web
  namespace: shop
  ports: [{port: 80}]
  endpoints:
  - address: 127.0.0.1:7000
    labels: {pod: web-0, deployment: web}
    identity: web.shop.serviceaccount.identity.mesh.cluster.local
- name: db
  namespace: shop
  ports: [{port: 5432}]
  endpoints:
  - address: 127.0.0.1:7001
    labels: {pod: db-0, deployment: db}
";

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
}

/// The status of `GET path` on `addr`, if it answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A running, ready controller pod in the control plane's namespace, labelled as the
/// CLI looks for it.
fn controller_pod(name: &str) -> serde_json::Value {
    pod(
        NAMESPACE,
        name,
        "10.0.0.2",
        "mesh-controller",
        Some(("ReplicaSet", "mesh-controller-7c9d")),
        &[(COMPONENT_LABEL, CONTROLLER_COMPONENT)],
    )
}

/// A cluster with the controller's pod, its ports forwarded to `controller`.
pub(super) async fn cluster_with(controller: &Controller) -> FakeKube {
    cluster_forwarding(controller.api, controller.tap).await
}

/// A cluster with the controller's pod, its API port forwarded to `api` and its tap
/// port to `tap`.
pub(super) async fn cluster_forwarding(api: SocketAddr, tap: SocketAddr) -> FakeKube {
    let kube = FakeKube::start().await.unwrap();
    kube.apply(controller_pod(CONTROLLER_POD)).unwrap();
    kube.forward_port(NAMESPACE, CONTROLLER_POD, 8084, api);
    kube.forward_port(NAMESPACE, CONTROLLER_POD, 8088, tap);
    kube
}

/// A kubeconfig with two contexts: `main` (namespace `shop`) on `main`'s server and
/// `elsewhere` on `elsewhere`'s; `current` is the current one.
pub(super) fn kubeconfig(
    dir: &Path,
    name: &str,
    main: &str,
    elsewhere: &str,
    current: &str,
) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: main
  cluster: {{server: '{main}'}}
- name: elsewhere
  cluster: {{server: '{elsewhere}'}}
users:
- name: tester
  user: {{token: test-token}}
contexts:
- name: main
  context: {{cluster: main, user: tester, namespace: shop}}
- name: elsewhere
  context: {{cluster: elsewhere, user: tester}}
current-context: {current}
"
        ),
    )
    .unwrap();
    path
}

/// Runs `mesh` with `args`, no demo in its TMPDIR and no kubeconfig but the flags'
/// (unless `env` says otherwise).
async fn mesh(args: &[&str], tmp: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.args(args)
        .env("TMPDIR", tmp)
        .env("HOME", tmp)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("mesh finishes")
        .expect("mesh runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_controller_through_a_port_forward() {
    let controller = tokio::task::spawn_blocking(Controller::start)
        .await
        .unwrap();
    let kube = cluster_with(&controller).await;
    let empty = FakeKube::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), "config", &kube.url(), &empty.url(), "main");
    let config_str = config.to_str().unwrap();

    // The server's version, from the controller behind the forward.
    let out = mesh(&["version", "--kubeconfig", config_str], tmp.path(), &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        stdout(&out),
        format!("Client version: {version}\nServer version: {version}\n")
    );
    assert!(kube.stats().port_forwards >= 1, "{:?}", kube.stats());

    // `mesh stat`: the controller's table, in the namespace given, and in the
    // context's (`shop`) when none is.
    let start = Instant::now();
    loop {
        let out = mesh(
            &["stat", "deploy", "--kubeconfig", config_str, "-n", "shop"],
            tmp.path(),
            &[],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let table = stdout(&out);
        if table.lines().any(|l| l.starts_with("web ")) {
            assert!(table.starts_with("NAME "), "{table}");
            assert!(
                table.lines().any(|l| l.starts_with("db ")),
                "both deployments: {table}"
            );
            break;
        }
        // The scraper lists the pods at its first round, a second after start.
        assert!(
            start.elapsed() < DEADLINE,
            "mesh stat never showed the web deployment:\n{table}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = mesh(
        &["stat", "deploy", "--kubeconfig", config_str],
        tmp.path(),
        &[],
    )
    .await;
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("web ")),
        "the context's namespace is the default: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // `--context` picks the cluster: this kubeconfig's current context has no mesh.
    let other = kubeconfig(tmp.path(), "other", &kube.url(), &empty.url(), "elsewhere");
    let other = other.to_str().unwrap();
    let endpoints = [
        "diagnostics",
        "endpoints",
        "web.shop.svc.cluster.local:80",
        "--kubeconfig",
        other,
    ];
    let out = mesh(&endpoints, tmp.path(), &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no controller pod"),
        "{}",
        stderr(&out)
    );
    let out = mesh(
        &[&endpoints[..], &["--context", "main"]].concat(),
        tmp.path(),
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("NAMESPACE ")
            && table.contains("web-0")
            && table.contains("web.shop.serviceaccount.identity.mesh.cluster.local"),
        "{table}"
    );

    // The tap API's gRPC stream goes through the other forward: the controller runs
    // without identity, so it refuses, and its reason is what comes back.
    let out = mesh(
        &[
            "tap",
            "deploy/web",
            "-n",
            "shop",
            "--kubeconfig",
            config_str,
        ],
        tmp.path(),
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("tap is off: the controller runs without the identity service"),
        "{}",
        stderr(&out)
    );

    // A kubeconfig merely present is used when nothing else is there...
    let out = mesh(&["version"], tmp.path(), &[("KUBECONFIG", &config)]).await;
    assert!(
        stdout(&out).ends_with(&format!("Server version: {version}\n")),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // ... but a running demo comes first, and a flag's cluster before the demo.
    let demo_tmp = tempfile::tempdir().unwrap();
    fake_demo(demo_tmp.path(), controller.api);
    let before = kube.stats().port_forwards;
    let out = mesh(
        &["version"],
        demo_tmp.path(),
        &[("KUBECONFIG", Path::new(other))],
    )
    .await;
    assert!(
        stdout(&out).ends_with(&format!("Server version: {version}\n")),
        "the demo's controller answers: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        kube.stats().port_forwards,
        before,
        "no port-forward for the demo"
    );
    let out = mesh(&["version", "--kubeconfig", other], demo_tmp.path(), &[]).await;
    assert!(
        stdout(&out).contains("Server version: unavailable (no controller pod"),
        "the flag's cluster, not the demo: {}",
        stdout(&out)
    );
}

/// Writes a running demo's state into `tmp` (this test's pid is alive) naming `api`.
fn fake_demo(tmp: &Path, api: SocketAddr) {
    let pid = std::process::id();
    let dir = tmp.join(format!("mesh-demo-{pid}"));
    std::fs::create_dir(&dir).unwrap();
    let state = serde_json::json!({
        "pid": pid,
        "version": env!("CARGO_PKG_VERSION"),
        "namespace": "demo",
        "services": ["web"],
        "api": api.to_string(),
        "proxies": [],
    });
    std::fs::write(dir.join("demo.json"), state.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_says_what_was_tried() {
    let kube = FakeKube::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let closed = format!("http://{}", free_addr());
    let config = kubeconfig(tmp.path(), "config", &kube.url(), &closed, "main");
    let config = config.to_str().unwrap();
    let stat = |extra: &'static [&'static str]| {
        let tmp = tmp.path().to_path_buf();
        let args: Vec<String> = ["stat", "deploy", "--kubeconfig", config]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = mesh(&args, &tmp, &[]).await;
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
            stderr(&out)
        }
    };

    // No controller pod: is mesh installed?
    let err = stat(&[]).await;
    assert!(
        err.contains(&format!(
            "no controller pod in namespace mesh-system (pods labelled {COMPONENT_LABEL}={CONTROLLER_COMPONENT}, context \"main\" of {config}"
        )) && err.contains("is mesh installed? run `mesh check`"),
        "{err}"
    );

    // One that is not ready, one not running: each named with why.
    let mut unready = controller_pod("mesh-controller-a");
    unready["status"]["conditions"] = serde_json::json!([{"type": "Ready", "status": "False"}]);
    let mut pending = controller_pod("mesh-controller-b");
    pending["status"]["phase"] = "Pending".into();
    kube.apply_all([unready, pending]).unwrap();
    let err = stat(&[]).await;
    assert!(
        err.contains(
            "no controller pod in namespace mesh-system is running and ready (context \"main\""
        ) && err.contains("mesh-controller-a (Running, not ready), mesh-controller-b (Pending)"),
        "{err}"
    );

    // Ready, but nothing behind its port: the kubelet's words come back.
    kube.apply(controller_pod("mesh-controller-c")).unwrap();
    let err = stat(&[]).await;
    assert!(
        err.contains(
            "cannot reach the controller's API through the port-forward to mesh-system/mesh-controller-c:8084 (the kubelet refused: error forwarding port 8084 to pod mesh-controller-c"
        ),
        "{err}"
    );

    // A context the kubeconfig does not have.
    let err = stat(&["--context", "nope"]).await;
    assert!(
        err.contains(&format!(
            "context \"nope\" is not in the kubeconfig {config} (its contexts: main, elsewhere)"
        )),
        "{err}"
    );

    // An API server that does not answer.
    let err = stat(&["--context", "elsewhere"]).await;
    assert!(
        err.contains(&format!(
            "cannot reach the Kubernetes API of context \"elsewhere\" of {config} ({closed}"
        )),
        "{err}"
    );

    // Nothing at all to talk to: every way is named.
    let out = mesh(&["stat", "deploy"], tmp.path(), &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for way in [
        "--api-addr",
        "--context",
        "--kubeconfig",
        "no running mesh demo found",
        "$KUBECONFIG",
    ] {
        assert!(err.contains(way), "{way}: {err}");
    }
}
