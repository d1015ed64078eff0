//! The `mesh-controller` binary as a process: flags, readiness, metrics, signals.
// Waiting on a child process is real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-controller");
const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    /// Flags, environment, and what the message must name.
    type Case = (
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let cases: &[Case] = &[
        (&["--bogus"], &[], "--bogus"),
        (&["--backend", "file"], &[], "--file"),
        (&["--backend", "consul"], &[], "--backend"),
        (
            &["--destination-addr", "nowhere"],
            &[],
            "--destination-addr",
        ),
        (&["--log", "[[["], &[], "--log"),
        // Environment fallbacks are validated alike.
        (&[], &[("MESH_BACKEND", "file")], "--file"),
        (&[], &[("MESH_ADMIN_ADDR", "nowhere")], "--admin-addr"),
        // A discovery file that is not there is a typo, said at once.
        (
            &["--backend", "file", "--file", "/nonexistent/typo.yaml"],
            &[],
            "cannot read --file /nonexistent/typo.yaml: No such file or directory",
        ),
        // Identity credentials are checked before anything starts.
        (
            &["--identity-issuer-cert", "/nonexistent/issuer.pem"],
            &[],
            "--identity-trust-anchors is required",
        ),
        (
            &[
                "--identity-trust-anchors",
                "/nonexistent/anchors.pem",
                "--identity-issuer-cert",
                "/nonexistent/issuer.pem",
                "--identity-issuer-key",
                "/nonexistent/issuer.key",
            ],
            &[],
            "cannot read --identity-trust-anchors",
        ),
        (&["--identity-lifetime", "soon"], &[], "--identity-lifetime"),
    ];
    for (args, env, needle) in cases {
        let out = Command::new(BIN)
            .args(*args)
            .envs(env.iter().copied())
            .env_remove("MESH_FILE")
            .env_remove("MESH_IDENTITY_TRUST_ANCHORS")
            .env_remove("MESH_IDENTITY_ISSUER_CERT")
            .env_remove("MESH_IDENTITY_ISSUER_KEY")
            .env_remove("MESH_IDENTITY_TOKENS")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {err}");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--destination-addr"));
}

/// A controller process whose stderr is scanned for its bound addresses.
struct Controller {
    child: Child,
    lines: mpsc::Receiver<String>,
    destination: SocketAddr,
    admin: SocketAddr,
    api: SocketAddr,
}

impl Controller {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut this = Self {
            child,
            lines,
            destination: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            api: "0.0.0.0:0".parse().unwrap(),
        };
        let listening = this.wait_line("listening");
        this.destination = field(&listening, "destination=");
        this.admin = field(&listening, "admin=");
        this.api = field(&listening, "api=");
        this
    }

    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    fn wait_status(&self, path: &str, status: u16) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (got, body) = self.get(path);
            if got == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} stayed {got}, wanted {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `destination=127.0.0.1:1234` in a log line.
fn field(line: &str, key: &str) -> SocketAddr {
    let start = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    let rest = &line[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line}: {e}"))
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn file_backend_becomes_ready_serves_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.yaml");
    let file_arg = file.to_str().unwrap();
    // The file is invalid at start: the controller runs, and is not ready until it
    // has loaded a valid file, however long that takes.
    std::fs::write(&file, "services: [{name: web, bogus: 1}]\n").unwrap();
    let mut ctl = Controller::start(
        &[
            "--backend",
            "file",
            "--file",
            file_arg,
            "--admin-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--tap-addr",
            "127.0.0.1:0",
        ],
        // The destination address through its environment fallback.
        &[("MESH_DESTINATION_ADDR", "127.0.0.1:0")],
    );
    assert!(ctl.destination.ip().is_loopback() && ctl.destination.port() != 0);
    assert_eq!(ctl.get("/live").0, 200);
    assert_eq!(ctl.get("/ready").0, 503);
    ctl.wait_line("unknown field `bogus`");
    // Still not ready after several polls of the file: an invalid file never makes
    // it ready (what is asserted is an absence, so it takes time to see).
    for _ in 0..3 {
        std::thread::sleep(mesh_controller::file::POLL_INTERVAL);
        assert_eq!(ctl.get("/ready").0, 503);
    }

    std::fs::write(
        &file,
        "services:\n  - name: web\n    namespace: demo\n    endpoints: [{address: 198.18.0.1}]\n",
    )
    .unwrap();
    ctl.wait_status("/ready", 200);

    let metrics = ctl.get("/metrics").1;
    for needle in [
        "destination_index_objects{resource=\"services\"} 1",
        "destination_index_objects{resource=\"endpointslices\"} 1",
        "destination_streams{kind=\"get\"} 0",
        "destination_watch_restarts_total{resource=\"pods\"} 0",
        "destination_updates_sent_total 0",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }

    // The destination port speaks gRPC (HTTP/2): a TCP connection is accepted.
    TcpStream::connect(ctl.destination).unwrap();

    // An invalid edit is logged with its location and field; the controller stays ready.
    std::fs::write(
        &file,
        "services:\n  - name: web\n    namespace: demo\n    endpoints: [{address: nope}]\n",
    )
    .unwrap();
    let line = ctl.wait_line("keeping the last good state");
    assert!(line.contains("services[0].endpoints[0].address"), "{line}");
    assert!(line.contains("line 4 column"), "{line}");
    assert_eq!(ctl.get("/ready").0, 200);

    assert_eq!(ctl.terminate(), Some(0));
}

/// `mesh-controller … 2>&1 | head -1`: stderr is a pipe whose reader leaves after the
/// first line. Logging must not stop the controller from serving or from stopping.
#[test]
fn a_closed_stderr_does_not_stop_serving_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.yaml");
    std::fs::write(&file, "services: []\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["--backend", "file", "--file"])
        .arg(&file)
        .args([
            "--destination-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--tap-addr",
            "127.0.0.1:0",
            "--log",
            "debug",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    // `head -1` is done: every later write to stderr fails with EPIPE.
    drop(stderr);
    let admin = field(&first, "admin=");
    let ctl = Controller {
        child,
        lines: mpsc::channel().1,
        destination: field(&first, "destination="),
        admin,
        api: field(&first, "api="),
    };
    // Serving goes on while every log line fails (the file's load, the requests'
    // connections at debug level); before, the first failed line panicked its task.
    ctl.wait_status("/ready", 200);
    for _ in 0..50 {
        assert_eq!(ctl.get("/live").0, 200);
    }
    let mut ctl = ctl;
    assert_eq!(ctl.terminate(), Some(0), "SIGTERM stops it");
}

/// The injector as the install's Deployment runs it: the kubernetes backend (the fake
/// API server), the webhook's pair, `--identity-trust-anchors` and `--inject-config`
/// (a `mesh-config` values.yaml); a pod asking for the proxy gets the patch over
/// HTTPS, and the injector's counts are on the admin server.
#[test]
fn the_injector_serves_inject_with_the_install_flags() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kube = rt.block_on(mesh_kube_fake::FakeKube::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = super::webhook::self_signed();
    let (anchors, _, _) = mesh_controller::identity::generate_anchor_and_issuer(
        "cluster.local",
        Duration::from_secs(3600),
    );
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cert = path("tls.crt", &cert_pem);
    let key = path("tls.key", &key_pem);
    let anchors_file = path("ca-bundle.crt", &anchors);
    let values = path(
        "values.yaml",
        &mesh_core::install::Values::default().to_yaml(),
    );
    let kubeconfig = kube.kubeconfig_path().to_str().unwrap().to_string();
    let mut ctl = Controller::start(
        &[
            "--destination-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            "--api-addr=127.0.0.1:0",
            "--tap-addr=127.0.0.1:0",
            "--webhook-addr=127.0.0.1:0",
            &format!("--webhook-cert={cert}"),
            &format!("--webhook-key={key}"),
            &format!("--identity-trust-anchors={anchors_file}"),
            &format!("--inject-config={values}"),
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    let webhook = field(&ctl.wait_line("webhook="), "webhook=");
    ctl.wait_line("proxy injector on");
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-5d9c-",
            "annotations": { "mesh.rs/inject": "enabled" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c", "uid": "u", "controller": true }],
        },
        "spec": { "containers": [{ "name": "app", "image": "web:1" }] },
    });
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "namespace": "demo",
            "operation": "CREATE",
            "object": pod,
        },
    });
    let (status, body) = rt
        .block_on(super::webhook::post(
            webhook,
            &cert_pem,
            super::webhook::Proto::Http2,
            mesh_core::install::names::INJECT_PATH,
            serde_json::to_vec(&review).unwrap(),
        ))
        .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut injected = review["request"]["object"].clone();
    json_patch::patch(&mut injected, &patch).unwrap();
    let proxy = &injected["spec"]["initContainers"][1];
    assert_eq!(proxy["name"], "mesh-proxy");
    let anchors_env = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MESH_PROXY_IDENTITY_TRUST_ANCHORS")
        .unwrap();
    assert_eq!(
        anchors_env["value"],
        anchors.as_str(),
        "the anchors the flag names"
    );
    // The fake API server has no ReplicaSets: the owner stays the one the pod names.
    assert_eq!(
        injected["metadata"]["labels"]["mesh.rs/proxy-replicaset"],
        "web-5d9c"
    );
    let metrics = ctl.wait_status("/metrics", 200);
    assert!(
        metrics.contains("webhook_injections_total{result=\"injected\"} 1"),
        "{metrics}"
    );
    assert_eq!(ctl.terminate(), Some(0));
}

/// `/api/policy` on the kubernetes backend (the fake API server): a deployment's pod as
/// the pod watch gives it (IP, service account, named container port) and its port's
/// policy from a `Server` read by the policy watches, in the shape `mesh authz` and
/// `mesh policy check` read.
#[test]
fn the_policy_api_answers_from_the_kubernetes_backend() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kube = rt.block_on(mesh_kube_fake::FakeKube::start()).unwrap();
    let mut pod = mesh_kube_fake::pod(
        "shop",
        "api-5d9c-x1",
        "10.1.0.4",
        "api",
        Some(("ReplicaSet", "api-5d9c")),
        &[("app", "api"), ("pod-template-hash", "5d9c")],
    );
    pod["spec"]["containers"][0]["ports"] =
        serde_json::json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]);
    kube.apply(pod).unwrap();
    kube.apply(serde_json::json!({
        "apiVersion": "policy.mesh.rs/v1alpha1",
        "kind": "Server",
        "metadata": {"name": "api-http", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "port": "http", "proxyProtocol": "HTTP/1"},
    }))
    .unwrap();
    let kubeconfig = kube.kubeconfig_path().to_str().unwrap().to_string();
    let ctl = Controller::start(
        &[
            "--destination-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            "--api-addr=127.0.0.1:0",
            "--tap-addr=127.0.0.1:0",
            // `http_get`'s Host.
            "--dashboard-allowed-host=x",
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    ctl.wait_status("/ready", 200);
    let deadline = Instant::now() + DEADLINE;
    let answer: mesh_core::policy::answer::WorkloadPolicy = loop {
        let (status, body) = http_get(ctl.api, "/api/policy?namespace=shop&resource=deploy/api");
        assert_eq!(status, 200, "{body}");
        let answer: mesh_core::policy::answer::WorkloadPolicy =
            serde_json::from_str(&body).unwrap();
        let served = answer
            .pods
            .first()
            .and_then(|p| p.ports.first())
            .is_some_and(|p| p.policy.server.name == "api-http");
        if served {
            break answer;
        }
        assert!(Instant::now() < deadline, "no Server's policy in {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let pod = &answer.pods[0];
    assert_eq!(pod.name, "api-5d9c-x1");
    assert_eq!(pod.ips, ["10.1.0.4".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(pod.service_account, "api");
    assert_eq!(pod.named_ports["http"], [8080]);
    assert_eq!(pod.ports[0].port, 8080);
    assert_eq!(pod.ports[0].policy.protocol, "http1");
    // No AuthorizationPolicy: the Server denies.
    assert!(pod.ports[0].policy.authorizations.is_empty());
    assert_eq!(pod.ports[0].policy.fallback, "deny");
}
