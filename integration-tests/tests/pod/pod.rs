//! Pod-level test of `mesh-proxy`: two network namespaces stand in for a client pod and
//! a server pod, joined by a veth pair, and real clients talk to real servers first
//! directly, then with `mesh-proxy init` and a transparent `mesh-proxy` in both pods.
//!
//! The proxies must be invisible: every client's output through the mesh is compared
//! byte for byte with its direct output (HTTP/1.1, h2c, gRPC with trailers, WebSocket
//! upgrades, opaque TCP with half-close, and a server-speaks-first protocol that only
//! works if detection times out and falls back to TCP). Then the proxies' metrics must
//! count exactly the traffic that was sent, and pass `promtool check metrics`.
//!
//! Needs root (namespaces, iptables). Run alone with
//! `cargo test -p mesh-integration-tests --test pod -- pod:: --nocapture`.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path, time::Duration};

use anyhow::bail;
use mesh_integration_tests::{
    bin_path, helper_path,
    mesh::{require_built, start_pod_proxy, PROXY_ADMIN as ADMIN},
    promtool_check, wait_until, Metrics, Pod, Process,
};

/// Short, so the server-speaks-first flow (which waits it out twice, once per proxy)
/// stays fast.
const DETECT_TIMEOUT: &str = "200ms";

const HTTP_PORT: u16 = 8080;
const TCP_ECHO_PORT: u16 = 9000;
const TCP_BANNER_PORT: u16 = 9100;
const GRPC_PORT: u16 = 50051;
const WS_PORT: u16 = 8765;

const ECHO_BODY_LEN: usize = 200 * 1024;
const TCP_ECHO_LEN: usize = 100_000;
const TCP_BANNER_LEN: usize = 1_000;
const BANNER_LEN: usize = b"220 mesh-test-app ready\r\n".len();
const GRPC_MESSAGES: &str = "20";
const WS_MESSAGES: &str = "8";

const STARTUP: Duration = Duration::from_secs(15);
const METRICS_SETTLE: Duration = Duration::from_secs(10);

/// The HTTP requests each HTTP version makes: (name, path, extra curl arguments).
/// Every answer is deterministic except `date`, which [`strip_date`] removes.
const HTTP_REQUESTS: &[(&str, &str, &[&str])] = &[
    ("headers", "/headers", &[]),
    ("bytes", "/bytes/100000", &[]),
    (
        "echo",
        "/echo",
        &[
            "--data-binary",
            "@{echo_file}",
            "-H",
            "content-type: application/octet-stream",
        ],
    ),
    ("status-503", "/status/503", &[]),
    ("trailers", "/trailers", &["-H", "TE: trailers"]),
];
const HTTP_VERSIONS: &[(&str, &str)] = &[("h1", "--http1.1"), ("h2", "--http2-prior-knowledge")];

pub(crate) fn proxies_are_transparent_and_count_everything() -> anyhow::Result<()> {
    require_built(&["mesh-proxy", "mesh-test-app"])?;

    let (client, server) = Pod::pair("client", "server")?;
    let sip = server.ip;
    let _servers = start_servers(&server)?;

    let echo_file = client.log_dir().join("echo-body.bin");
    std::fs::write(&echo_file, pseudo_random(ECHO_BODY_LEN))?;

    // Phase 1: no proxies, no iptables.
    let direct = run_clients(&client, sip, &echo_file);
    for (name, out) in &direct {
        if let Err(e) = out {
            bail!("direct run of {name} failed, so the test setup is broken: {e}");
        }
    }

    // Phase 2: the init container, then the sidecar, in each pod.
    let mut proxies = [start_proxy(&client)?, start_proxy(&server)?];
    let meshed = run_clients(&client, sip, &echo_file);

    let mut failures = Vec::new();
    for ((name, want), (_, got)) in direct.iter().zip(&meshed) {
        let want = want.as_ref().expect("checked above");
        match got {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{name}: output through the mesh differs from direct\n{}",
                diff(want, got)
            )),
            Err(e) => failures.push(format!("{name}: failed through the mesh: {e}")),
        }
    }

    let expectations = expected_metrics(sip);
    let settled = wait_until("the proxies' metrics", METRICS_SETTLE, || {
        let metrics = [client.metrics(ADMIN)?, server.metrics(ADMIN)?];
        let unmet = unmet(&expectations, &metrics);
        if unmet.is_empty() {
            Ok(Some(()))
        } else {
            Err(anyhow::anyhow!("unmet:\n{}", unmet.join("\n")))
        }
    });
    if let Err(e) = settled {
        failures.push(format!("{e:#}"));
    }
    for pod in [&client, &server] {
        match pod.metrics(ADMIN) {
            Ok(m) => {
                if let Err(e) = promtool_check(&m.text) {
                    failures.push(format!("{} proxy's /metrics: {e:#}", pod.name()));
                }
                if !failures.is_empty() {
                    eprintln!("--- {} proxy's /metrics ---\n{}", pod.name(), m.text);
                }
            }
            Err(e) => failures.push(format!("{} proxy's /metrics: {e:#}", pod.name())),
        }
    }
    if !failures.is_empty() {
        // The proxies' own account is usually the quickest way to the cause.
        for proxy in &mut proxies {
            eprintln!("{}", proxy.describe());
        }
        bail!(
            "{} problem(s):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
    Ok(())
}

/// Starts the server pod's workloads and waits until each one listens.
fn start_servers(server: &Pod) -> anyhow::Result<Vec<Process>> {
    let mut app = server
        .process("mesh-test-app", bin_path("mesh-test-app"))
        .args(["--name", "server"])
        .args(["--http", &format!("0.0.0.0:{HTTP_PORT}")])
        .args(["--tcp-echo", &format!("0.0.0.0:{TCP_ECHO_PORT}")])
        .args(["--tcp-banner", &format!("0.0.0.0:{TCP_BANNER_PORT}")])
        .spawn()?;
    app.wait_for_line("listening tcp-banner", STARTUP)?;
    let mut grpc = server
        .process("grpc-echo", "python3")
        .arg(helper_path("grpc_echo.py"))
        .args(["server", &format!("0.0.0.0:{GRPC_PORT}")])
        .spawn()?;
    let mut ws = server
        .process("ws-echo", "python3")
        .arg(helper_path("ws_echo.py"))
        .args(["server", &format!("0.0.0.0:{WS_PORT}")])
        .spawn()?;
    grpc.wait_for_line("listening", STARTUP)?;
    ws.wait_for_line("listening", STARTUP)?;
    Ok(vec![app, grpc, ws])
}

/// A meshed pod's proxy with this test's settings: a short detection timeout, and the
/// log level of `$MESH_PROXY_LOG` (default `info`).
fn start_proxy(pod: &Pod) -> anyhow::Result<Process> {
    let log = std::env::var("MESH_PROXY_LOG").unwrap_or_else(|_| "info".to_string());
    start_pod_proxy(
        pod,
        &[
            ("MESH_PROXY_DETECT_TIMEOUT", DETECT_TIMEOUT),
            ("MESH_PROXY_LOG", &log),
        ],
    )
}

type Outputs = Vec<(String, Result<Vec<u8>, String>)>;

/// Runs every client once from the client pod against the server pod, in a fixed order,
/// and returns each one's canonical output.
fn run_clients(client: &Pod, sip: Ipv4Addr, echo_file: &Path) -> Outputs {
    let mut out = Vec::new();
    let echo_file = echo_file.display().to_string();
    for (version, flag) in HTTP_VERSIONS {
        for (name, path, extra) in HTTP_REQUESTS {
            let mut argv: Vec<String> = ["curl", "-sS", "--noproxy", "*", "-m", "10", "-i", flag]
                .iter()
                .map(|s| s.to_string())
                .collect();
            argv.extend(extra.iter().map(|a| a.replace("{echo_file}", &echo_file)));
            argv.push(format!("http://{sip}:{HTTP_PORT}{path}"));
            let res = client.run(&argv).map(|o| strip_date(&o));
            out.push((
                format!("curl {version} {name}"),
                res.map_err(|e| format!("{e:#}")),
            ));
        }
    }
    let python = |helper: &str, args: &[String]| {
        let mut argv = vec![
            "python3".to_string(),
            helper_path(helper).display().to_string(),
        ];
        argv.extend(args.iter().cloned());
        client.run(&argv).map_err(|e| format!("{e:#}"))
    };
    let s = |v: &str| v.to_string();
    out.push((
        s("grpc"),
        python(
            "grpc_echo.py",
            &[s("client"), format!("{sip}:{GRPC_PORT}"), s(GRPC_MESSAGES)],
        ),
    ));
    out.push((
        s("websocket"),
        python(
            "ws_echo.py",
            &[
                s("client"),
                format!("ws://{sip}:{WS_PORT}/"),
                s(WS_MESSAGES),
            ],
        ),
    ));
    out.push((
        s("tcp echo"),
        python(
            "tcp_client.py",
            &[
                s("echo"),
                format!("{sip}:{TCP_ECHO_PORT}"),
                TCP_ECHO_LEN.to_string(),
            ],
        ),
    ));
    out.push((
        s("tcp banner"),
        python(
            "tcp_client.py",
            &[
                s("banner"),
                format!("{sip}:{TCP_BANNER_PORT}"),
                TCP_BANNER_LEN.to_string(),
            ],
        ),
    ));
    out
}

/// Which pod's proxy a metric expectation is about.
#[derive(Clone, Copy, Debug)]
enum Side {
    Client,
    Server,
}

struct Expect {
    side: Side,
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    want: f64,
}

/// Everything phase 2 sent, as the proxies must count it. The client pod's proxy sees
/// it as outbound, the server pod's as inbound; both label it with the original
/// destination (the server pod's address and port).
fn expected_metrics(sip: Ipv4Addr) -> Vec<Expect> {
    let http_requests = (HTTP_REQUESTS.len() * HTTP_VERSIONS.len()) as f64;
    let per_version_503 = HTTP_VERSIONS.len() as f64;
    let target = |port: u16| format!("{sip}:{port}");
    let mut e = Vec::new();
    let mut both = |name: &'static str, labels: &[(&'static str, String)], want: f64| {
        for (side, direction) in [(Side::Client, "outbound"), (Side::Server, "inbound")] {
            let mut labels = labels.to_vec();
            labels.push(("direction", direction.to_string()));
            e.push(Expect {
                side,
                name,
                labels,
                want,
            });
        }
    };
    let s = |v: &str| v.to_string();

    // HTTP/1.1 and h2c from curl.
    both(
        "request_total",
        &[("target_addr", target(HTTP_PORT))],
        http_requests,
    );
    both(
        "response_total",
        &[("target_addr", target(HTTP_PORT))],
        http_requests,
    );
    both(
        "response_total",
        &[
            ("target_addr", target(HTTP_PORT)),
            ("status_code", s("200")),
            ("classification", s("success")),
        ],
        http_requests - per_version_503,
    );
    both(
        "response_total",
        &[
            ("target_addr", target(HTTP_PORT)),
            ("status_code", s("503")),
            ("classification", s("failure")),
        ],
        per_version_503,
    );

    // gRPC: Chat and Say succeed, Fail ends with grpc-status 13 in a 200 response.
    both("request_total", &[("target_addr", target(GRPC_PORT))], 3.0);
    both(
        "response_total",
        &[
            ("target_addr", target(GRPC_PORT)),
            ("classification", s("success")),
            ("grpc_status", s("0")),
        ],
        2.0,
    );
    both(
        "response_total",
        &[
            ("target_addr", target(GRPC_PORT)),
            ("status_code", s("200")),
            ("classification", s("failure")),
            ("grpc_status", s("13")),
        ],
        1.0,
    );

    // WebSocket: one HTTP/1.1 upgrade request.
    both("request_total", &[("target_addr", target(WS_PORT))], 1.0);

    // Opaque TCP, with half-close: one connection, every byte counted each way.
    let echo = || vec![("target_addr", target(TCP_ECHO_PORT)), ("peer", s("src"))];
    both("tcp_open_total", &echo(), 1.0);
    both("tcp_close_total", &echo(), 1.0);
    both("tcp_open_connections", &echo(), 0.0);
    both("tcp_read_bytes_total", &echo(), TCP_ECHO_LEN as f64);
    both("tcp_write_bytes_total", &echo(), TCP_ECHO_LEN as f64);

    // Server speaks first: detection times out in both proxies, the banner still arrives
    // (checked by the transcript), and every byte is counted.
    let banner = || vec![("target_addr", target(TCP_BANNER_PORT)), ("peer", s("src"))];
    both("tcp_open_total", &banner(), 1.0);
    both("tcp_close_total", &banner(), 1.0);
    both("tcp_read_bytes_total", &banner(), TCP_BANNER_LEN as f64);
    both(
        "tcp_write_bytes_total",
        &banner(),
        (BANNER_LEN + TCP_BANNER_LEN) as f64,
    );
    both("protocol_detect_total", &[("result", s("timeout"))], 1.0);

    // Detection as the client pod's proxy sees it: one connection per curl run, one for
    // the gRPC channel, one for the WebSocket, one for the TCP echo.
    let outbound = |result: &str, want: usize| Expect {
        side: Side::Client,
        name: "protocol_detect_total",
        labels: vec![("direction", s("outbound")), ("result", s(result))],
        want: want as f64,
    };
    e.push(outbound("http1", HTTP_REQUESTS.len() + 1));
    e.push(outbound("h2", HTTP_REQUESTS.len() + 1));
    e.push(outbound("tcp", 1));
    e.push(outbound("opaque_port", 0));
    e
}

/// The expectations `metrics` (client's, server's) do not meet, each with what was seen.
fn unmet(expectations: &[Expect], metrics: &[Metrics; 2]) -> Vec<String> {
    let mut unmet = Vec::new();
    for e in expectations {
        let m = match e.side {
            Side::Client => &metrics[0],
            Side::Server => &metrics[1],
        };
        let labels: Vec<(&str, &str)> = e.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = m.sum(e.name, &labels);
        if got != e.want {
            let mut msg = format!(
                "{:?} proxy: sum of {}{labels:?} = {got}, want {}",
                e.side, e.name, e.want
            );
            // Show the neighbours too (same metric and target, any status, class or
            // error), since where the missing count went is the interesting part.
            let context: Vec<(&str, &str)> = labels
                .iter()
                .copied()
                .filter(|(k, _)| ["direction", "target_addr", "peer"].contains(k))
                .collect();
            for line in m.show(e.name, &context).lines() {
                let _ = write!(msg, "\n    {line}");
            }
            unmet.push(msg);
        }
    }
    unmet
}

/// Drops `date:` header lines, the only part of the app's answers that changes run to run.
fn strip_date(output: &[u8]) -> Vec<u8> {
    output
        .split_inclusive(|b| *b == b'\n')
        .filter(|line| !line.to_ascii_lowercase().starts_with(b"date:"))
        .flatten()
        .copied()
        .collect()
}

/// A readable account of where two outputs first differ.
fn diff(want: &[u8], got: &[u8]) -> String {
    let want_text = String::from_utf8_lossy(want);
    let got_text = String::from_utf8_lossy(got);
    let want_lines: Vec<&str> = want_text.lines().collect();
    let got_lines: Vec<&str> = got_text.lines().collect();
    let first = want_lines
        .iter()
        .zip(&got_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(want_lines.len().min(got_lines.len()));
    let show = |lines: &[&str]| {
        lines
            .iter()
            .skip(first.saturating_sub(2))
            .take(6)
            .map(|l| {
                let l: String = l.chars().take(160).collect();
                format!("    |{l}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "  direct: {} bytes, meshed: {} bytes, first differing line {}\n  direct:\n{}\n  meshed:\n{}",
        want.len(),
        got.len(),
        first + 1,
        show(&want_lines),
        show(&got_lines),
    )
}

/// Deterministic bytes that do not compress or repeat in short cycles.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
