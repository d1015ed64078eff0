//! Process-level test of `mesh demo`: the real `mesh` binary with real `mesh-proxy`
//! children on loopback ports.
//!
//! It checks what a user of the demo relies on: traffic flows through the proxies (the web
//! proxy's metrics show HTTP successes, the voting route's failures and gRPC), callees are
//! found by name through the controller and balanced over voting's replicas, the slow one
//! getting the smallest share, every proxy holds a certificate from the controller's
//! identity service and proxies talk to each other over mutual TLS with the identities
//! discovery gave (both sides' metrics name the peer's), the controller's metrics API
//! scrapes every proxy (`mesh stat deploy`, `mesh edges deploy -o wide` and `mesh routes`
//! show the demo's traffic, mTLS and identities with no flags), and Ctrl-C stops everything,
//! with exit code 0, no child left behind and the identity files removed. `mesh tap` and
//! `mesh diagnostics proxy-metrics` also reach the demo's controller as they would a
//! cluster's: through a port-forward on the fake API server. `mesh` finds `mesh-proxy` and `mesh-controller` next to itself, so every
//! binary must be built first (`cargo build --workspace --bins`, as `scripts/test.sh` does).
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use mesh_api::{
    control_plane::{COMPONENT_LABEL, CONTROLLER_COMPONENT, NAMESPACE},
    prom::Sample,
};
use mesh_kube_fake::{pod, FakeKube};
use mesh_rt::proc;
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime},
};

/// Ports per demo (6 workload instances and the controller, × 10), from
/// `cli/src/demo/topology.rs`.
const DEMO_PORTS: u16 = 70;
const POLL: Duration = Duration::from_millis(100);

/// The identity of `sa`'s proxies: the demo's namespace `demo`, trust domain `cluster.local`.
fn identity(sa: &str) -> String {
    mesh_api::names::ServiceAccount::new("demo", sa).identity("cluster.local")
}

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
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(mesh, base_port, tmp.path());

    // The table is printed once every proxy is ready; it says where each one's metrics
    // are, the controller's row last.
    let mut admins = BTreeMap::new();
    demo.wait_for_line(Duration::from_secs(120), |line| {
        let mut words = line.split_whitespace();
        let name = words.next()?;
        let metrics = words.find(|w| w.starts_with("http://") && w.ends_with("/metrics"))?;
        let addr: SocketAddr = metrics
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .parse()
            .expect("the table prints the metrics url as http://ip:port/metrics");
        admins.insert(name.to_owned(), addr);
        (name == "controller").then_some(())
    });
    admins.remove("controller");
    let proxy_names = [
        "vote-bot", "web", "emoji", "voting-0", "voting-1", "voting-2",
    ];
    let mut expected = proxy_names.to_vec();
    expected.sort_unstable();
    assert_eq!(
        admins.keys().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "the table names every proxy"
    );
    let metrics_addr = admins["web"];

    // Identity is announced, with the anchors every certificate chains to, which
    // live in memory only.
    let anchors: PathBuf = demo.wait_for_line(Duration::from_secs(10), |line| {
        line.trim()
            .strip_prefix("trust anchors: ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(PathBuf::from)
    });
    let anchors_pem = std::fs::read_to_string(&anchors)
        .unwrap_or_else(|e| panic!("read the trust anchors {}: {e}", anchors.display()));
    assert!(
        anchors_pem.contains("-----BEGIN CERTIFICATE-----"),
        "{}: {anchors_pem}",
        anchors.display()
    );
    assert!(
        std::fs::read_link(&anchors).is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:")),
        "{} is not an in-memory file",
        anchors.display()
    );
    // The banner ends with commands to try, each to be pasted as it is.
    let mut commands = Vec::new();
    let mut in_try = false;
    demo.wait_for_line(Duration::from_secs(10), |line| {
        if line.starts_with("Try these") {
            in_try = true;
        } else if in_try && line.trim().is_empty() {
            return Some(());
        } else if in_try {
            commands.push(line.trim().to_owned());
        }
        None
    });

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

    let outbound = |body: &str, (name, value): (&str, &str)| {
        series(body, "response_total", "outbound")
            .iter()
            .any(|s| s.label(name) == Some(value))
    };
    // Requests web's proxy sent to one voting replica, by its `dst_pod` label.
    let to_pod = |body: &str, pod: &str| -> u64 {
        series(body, "request_total", "outbound")
            .iter()
            .filter(|s| s.label("dst_pod") == Some(pod))
            .map(|s| s.value as u64)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let body = http_get(metrics_addr, "/metrics").unwrap_or_default();
        let seen = [
            ("classification", "success"),
            ("classification", "failure"),
            ("grpc_status", "0"),
            ("dst_service", "emoji"),
        ]
        .map(|label| outbound(&body, label));
        let [fast0, fast1, slow] = ["voting-0", "voting-1", "voting-2"].map(|p| to_pod(&body, p));
        // Enough votes that uniform balancing (a third each, give or take 2.7% at 300)
        // could not pass for latency-aware balancing by chance: the slow replica must
        // get under a quarter, 3 standard deviations below a third. (Under a fifth, as
        // on a quiet machine, failed on a loaded one: the first requests, before the
        // balancer has seen any latency, are shared evenly.)
        if seen.iter().all(|s| *s) && fast0 + fast1 + slow >= 300 {
            assert!(
                fast0 > 0 && fast1 > 0,
                "both fast voting replicas get traffic: {fast0}, {fast1}"
            );
            assert!(
                slow * 3 < fast0 + fast1,
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

    // Every proxy holds a certificate that has not expired: /ready waited for it.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64();
    let bodies: BTreeMap<&str, String> = proxy_names
        .iter()
        .map(|&name| {
            let body = http_get(admins[name], "/metrics")
                .unwrap_or_else(|| panic!("{name}'s proxy serves /metrics"));
            (name, body)
        })
        .collect();
    for (name, body) in &bodies {
        let expiry = samples(body)
            .iter()
            .find(|s| s.name == "identity_cert_expiration_timestamp_seconds")
            .map(|s| s.value)
            .unwrap_or_else(|| {
                panic!(
                    "{name}'s proxy shows no identity_cert_expiration_timestamp_seconds:\n{body}"
                )
            });
        assert!(
            expiry > now,
            "{name}'s certificate expired at {expiry} (now {now}):\n{body}"
        );
    }

    // Proxy to proxy is mutual TLS: each caller's proxy checked the server's identity
    // (the one discovery gave for the endpoint, named after its service), and each
    // server's proxy knows its caller's from the client certificate.
    for (caller, servers) in [
        ("vote-bot", &["web", "voting"][..]),
        ("web", &["emoji", "voting"][..]),
    ] {
        let body = &bodies[caller];
        let series = series(body, "response_total", "outbound");
        for server in servers {
            assert!(
                series
                    .iter()
                    .any(|l| l.label("dst_service") == Some(server)),
                "{caller}'s proxy has no outbound response_total to {server}:\n{body}"
            );
        }
        for line in &series {
            let server = line.label("dst_service").unwrap_or_else(|| {
                panic!("{caller}: outbound series without dst_service: {line:?}")
            });
            assert_eq!(
                (line.label("tls"), line.label("server_id")),
                (Some("true"), Some(&*identity(server))),
                "{caller}'s proxy called {server} without mutual TLS to its identity: {line:?}"
            );
        }
    }
    // `voting` is called by the vote-bot too, whose requests its policy refuses (403,
    // `error="unauthorized"`): only `web`'s identity is let in.
    for (server, callers) in [
        ("web", &["vote-bot"][..]),
        ("emoji", &["web"][..]),
        ("voting-0", &["web", "vote-bot"][..]),
        ("voting-1", &["web", "vote-bot"][..]),
        ("voting-2", &["web", "vote-bot"][..]),
    ] {
        let body = &bodies[server];
        let series = series(body, "response_total", "inbound");
        assert!(
            series
                .iter()
                .any(|l| l.label("client_id") == Some(&*identity(callers[0]))),
            "{server}'s proxy has no inbound response_total from {}:\n{body}",
            callers[0]
        );
        for line in &series {
            let caller = callers
                .iter()
                .find(|c| line.label("client_id") == Some(&*identity(c)))
                .unwrap_or_else(|| {
                    panic!("{server}'s proxy served someone else than {callers:?}: {line:?}")
                });
            assert_eq!(
                line.label("tls"),
                Some("true"),
                "{server}'s proxy served {caller} without mutual TLS: {line:?}"
            );
            if *caller == "vote-bot" && server.starts_with("voting") {
                assert_eq!(
                    (line.label("status_code"), line.label("error")),
                    (Some("403"), Some("unauthorized")),
                    "{server}'s policy let the vote-bot in: {line:?}"
                );
            }
        }
    }
    // The decisions, counted by the policy's own metrics: voting's proxies allowed
    // web by the demo's AuthorizationPolicy, and denied the vote-bot on its Server
    // (whose first call went out as the demo started, seconds before the 300 votes).
    let decided = |family: &str, caller: &str, authz: Option<&str>| -> f64 {
        ["voting-0", "voting-1", "voting-2"]
            .iter()
            .flat_map(|p| samples(&bodies[p]))
            .filter(|s| {
                s.name == family
                    && s.label("srv_kind") == Some("server")
                    && s.label("srv_name") == Some("voting-http")
                    && s.label("authz_name") == authz
                    && s.label("client_id") == Some(&*identity(caller))
            })
            .map(|s| s.value)
            .sum()
    };
    assert!(
        decided(
            "inbound_http_authz_allow_total",
            "web",
            Some("voting-from-web")
        ) > 0.0
            && decided("inbound_http_authz_deny_total", "vote-bot", None) > 0.0
            && decided(
                "inbound_http_authz_allow_total",
                "vote-bot",
                Some("voting-from-web")
            ) == 0.0
            && decided("inbound_http_authz_deny_total", "web", None) == 0.0,
        "voting's proxies did not enforce the demo's policy:\n{}",
        bodies["voting-0"]
    );

    // The demo's ServiceProfiles are in force: web's proxy retries voting's failing
    // vote route and counts it by route; the vote-bot's proxy times out web's slow
    // leaderboard at 500 ms.
    let web = &bodies["web"];
    let votes: Vec<Sample> = series(web, "route_response_total", "outbound")
        .into_iter()
        .filter(|l| {
            l.label("dst") == Some("voting.demo.svc.cluster.local:80")
                && l.label("rt_route") == Some("POST /vote/{choice}")
        })
        .collect();
    assert!(
        !votes.is_empty(),
        "no route metrics for voting's vote route:\n{web}"
    );
    assert!(
        samples(web)
            .iter()
            .any(|l| l.name == "route_retryable_total"
                && l.label("rt_route") == Some("POST /vote/{choice}")
                && l.label("skipped").is_none()),
        "web's proxy never retried a failed vote:\n{web}"
    );
    let bot = &bodies["vote-bot"];
    assert!(
        series(bot, "route_response_total", "outbound")
            .iter()
            .any(|l| {
                l.label("rt_route") == Some("GET /api/leaderboard")
                    && l.label("status_code") == Some("504")
                    && l.label("error") == Some("timeout")
            }),
        "the vote-bot's proxy never timed out web's leaderboard:\n{bot}"
    );

    // The controller's metrics API scrapes every proxy: `mesh stat deploy`, with no
    // flags, comes to list each demo deployment with a success rate and a rate, and
    // `mesh edges deploy -o wide` web's calls as mutual TLS with both identities.
    let mesh_cli = |args: &[&str]| -> String {
        let out = Command::new(mesh)
            .args(args)
            .env("TMPDIR", tmp.path())
            .output()
            .expect("mesh runs");
        assert!(
            out.status.success(),
            "mesh {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cells = |line: &str| -> Vec<String> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut stat = String::new();
    wait_until("mesh stat deploy shows every deployment's traffic", || {
        stat = mesh_cli(&["stat", "deploy"]);
        ["web", "emoji", "voting", "vote-bot"].iter().all(|d| {
            stat.lines().map(cells).any(|row| {
                // The vote-bot only sends: its own (inbound) side has no traffic.
                row.len() == 8
                    && row[0] == *d
                    && (*d == "vote-bot" || (row[2].ends_with('%') && row[3].ends_with("rps")))
            })
        })
    });
    let rows: Vec<Vec<String>> = stat.lines().map(cells).collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "MESHED",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
            "TCP_CONN"
        ],
        "{stat}"
    );
    let meshed = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .map(|r| r[1].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        (meshed("web"), meshed("voting")),
        ("1/1".into(), "3/3".into()),
        "{stat}"
    );
    // `-o wide` adds how many requests a second each resource's policy refused: the
    // vote-bot's calls to voting, about one a second, and nothing elsewhere.
    let mut wide = String::new();
    let rate = |cell: &str| cell.trim_end_matches("rps").parse::<f64>().ok();
    wait_until("mesh stat deploy -o wide shows voting's denials", || {
        wide = mesh_cli(&["stat", "deploy", "-o", "wide"]);
        wide.lines().map(cells).any(|row| {
            row.len() == 11 && row[0] == "voting" && rate(&row[10]).is_some_and(|r| r > 0.0)
        })
    });
    let rows: Vec<Vec<String>> = wide.lines().map(cells).collect();
    assert_eq!(
        rows[0].last().map(String::as_str),
        Some("UNAUTHORIZED"),
        "{wide}"
    );
    for row in &rows[1..] {
        if row[0] == "web" || row[0] == "emoji" {
            assert_eq!(rate(&row[10]), Some(0.0), "{wide}");
        }
    }
    let json = mesh_cli(&["stat", "deploy/voting", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(
        doc["rows"][0]["unauthorized_rps"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{json}"
    );
    let mut edges = String::new();
    wait_until("mesh edges deploy shows every call as secured", || {
        edges = mesh_cli(&["edges", "deploy", "-o", "wide"]);
        [
            ("vote-bot", "web"),
            ("web", "emoji"),
            ("web", "voting"),
            // The vote-bot's calls that voting's policy refuses: its proxy reached
            // voting's over mutual TLS, and voting's said no (UNAUTHORIZED, the one
            // edge with denials).
            ("vote-bot", "voting"),
        ]
        .iter()
        .all(|(src, dst)| {
            edges.lines().map(cells).any(|row| {
                let denied = (*src, *dst) == ("vote-bot", "voting");
                row.len() == 8
                    && row[..7]
                        == [
                            src.to_string(),
                            dst.to_string(),
                            "demo".into(),
                            "demo".into(),
                            "√".into(),
                            identity(src),
                            identity(dst),
                        ]
                    && if denied {
                        rate(&row[7]).is_some_and(|r| r > 0.0)
                    } else {
                        row[7] == "-"
                    }
            })
        })
    });
    assert!(
        edges.starts_with("SRC ") && edges.lines().count() == 5,
        "every edge between demo proxies is mutual TLS, and nothing else calls:\n{edges}"
    );
    let mut routes = String::new();
    wait_until("mesh routes svc/web shows the vote-bot's calls", || {
        routes = mesh_cli(&["routes", "svc/web"]);
        routes
            .lines()
            .map(cells)
            .any(|row| row.len() == 7 && row[0] == "GET /api/list" && row[2].ends_with('%'))
    });

    // The vote route fails a share on purpose and is retried: `-o wide` shows the
    // attempts beside the requests, more of them and less successful.
    let mut wide = String::new();
    let rps = |cell: &str| cell.trim_end_matches("rps").parse::<f64>().ok();
    let pct = |cell: &str| cell.trim_end_matches('%').parse::<f64>().ok();
    wait_until("mesh routes svc/voting -o wide shows retried votes", || {
        wide = mesh_cli(&["routes", "svc/voting", "-o", "wide"]);
        wide.lines().map(cells).any(|row| {
            row.len() == 9
                && row[0] == "POST /vote/{choice}"
                && matches!(
                    (rps(&row[3]), rps(&row[5]), pct(&row[2]), pct(&row[4])),
                    (Some(effective), Some(actual), Some(ok), Some(actual_ok))
                        if actual > effective && actual_ok < ok
                )
        })
    });
    assert!(
        wide.starts_with("ROUTE ") && wide.contains("ACTUAL_SUCCESS"),
        "{wide}"
    );

    // Every command the banner offers works against the demo as printed: from the
    // same directory, with nothing but the demo's TMPDIR (as a terminal would have it).
    for command in [
        "mesh stat deploy",
        "mesh stat deploy -o wide",
        "mesh top deploy",
        "mesh edges deploy -o wide",
        "mesh routes svc/web",
        "mesh diagnostics endpoints voting.demo.svc.cluster.local:80",
        "mesh diagnostics proxy-metrics po/voting-0",
    ] {
        assert!(
            commands.iter().any(|c| c.ends_with(command)),
            "{command} is not in {commands:?}"
        );
    }
    assert!(
        commands.iter().any(|c| c.ends_with("mesh version")),
        "{commands:?}"
    );
    // `mesh top` takes a terminal over, which a pipe is not (it refuses one): it
    // runs under tmux in its own test, `top_shows_the_demos_requests_with_no_flags`.
    let runs: Vec<(String, Child)> = commands
        .iter()
        .filter(|c| !c.ends_with("mesh top deploy"))
        .map(|c| {
            let child = Command::new("sh")
                .args(["-c", c])
                .env("TMPDIR", tmp.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sh");
            (c.clone(), child)
        })
        .collect();
    for (command, child) in runs {
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !stdout.trim().is_empty(),
            "`{command}` failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if command.ends_with("mesh routes svc/web") {
            assert!(
                stdout.starts_with("ROUTE") && stdout.contains("GET /api/list"),
                "`{command}`:\n{stdout}"
            );
        }
        if command.contains("mesh diagnostics endpoints voting.") {
            // The three replicas, each with its identity.
            let replicas = stdout
                .lines()
                .filter(|l| {
                    l.contains("voting-")
                        && l.contains("voting.demo.serviceaccount.identity.mesh.cluster.local")
                })
                .count();
            assert_eq!(replicas, 3, "`{command}`:\n{stdout}");
        }
        if command.ends_with("mesh diagnostics proxy-metrics po/voting-0") {
            // voting-0's own proxy's page, passed on by the controller: its inbound
            // requests from web, which the traffic above made sure of.
            let inbound = series(&stdout, "request_total", "inbound");
            assert!(
                inbound
                    .iter()
                    .any(|s| s.label("client_id") == Some(&*identity("web"))),
                "`{command}`:\n{stdout}"
            );
            assert!(
                samples(&stdout)
                    .iter()
                    .any(|s| s.name == "identity_cert_expiration_timestamp_seconds"),
                "`{command}`:\n{stdout}"
            );
        }
        if command.ends_with("mesh version") {
            let version = env!("CARGO_PKG_VERSION");
            assert_eq!(
                stdout,
                format!("Client version: {version}\nServer version: {version}\n")
            );
        }
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
    // The demo's CA lives only as long as the demo.
    assert!(
        !anchors.exists(),
        "{} is left after mesh exited",
        anchors.display()
    );
    assert!(
        !demo.state_dir().join("demo.json").exists(),
        "a stopped demo no longer offers itself"
    );
}

/// However the demo is stopped, nothing of it remains: no process, no listening port,
/// no key. SIGINT and SIGTERM are Ctrl-C and `kill`; SIGHUP goes to the demo's process
/// group, as a closing terminal sends it; SIGKILL runs no cleanup at all, so the
/// children must die on their own, and the next demo cleans up the directory, saying
/// so, and starts on the same ports.
#[test]
fn the_demo_leaves_nothing_behind_however_it_is_stopped() {
    let mesh = env!("CARGO_BIN_EXE_mesh");
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_port = free_port_block();
    let mut killed_pid = None;
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGKILL,
    ] {
        let mut demo = Demo::start(mesh, base_port, tmp.path());
        let banner = demo.banner();
        let children: Vec<u32> = ["mesh-proxy", "mesh-controller"]
            .iter()
            .flat_map(|name| children_named(demo.child.id(), name))
            .collect();
        assert_eq!(
            children.len(),
            7,
            "six proxies and a controller: {children:?}"
        );
        demo.children = children.clone();
        // Its key material: in-memory files of `mesh`, and nothing in its directory.
        let memory_files = memory_files(demo.child.id());
        assert!(
            memory_files
                .iter()
                .any(|(_, name)| name.contains("issuer.key")),
            "{memory_files:?}"
        );
        let state_dir = demo.state_dir();
        assert_no_keys(&state_dir);

        let target = match signal {
            Signal::SIGHUP => -demo.pid(),
            _ => demo.pid(),
        };
        kill(Pid::from_raw(target), signal).expect("signal mesh");
        let status = demo.wait(Duration::from_secs(30));
        if signal == Signal::SIGKILL {
            killed_pid = Some(demo.child.id());
        } else {
            assert!(
                status.success(),
                "{signal}: mesh exited with {status}; stderr:\n{}",
                demo.stderr()
            );
        }
        // Children die (after SIGKILL, on their own, as the kernel tells them).
        wait_until(&format!("{signal}: every child has exited"), || {
            children
                .iter()
                .all(|&p| !is_alive(p, "mesh-proxy") && !is_alive(p, "mesh-controller"))
        });
        wait_until(&format!("{signal}: every port is closed"), || {
            (base_port..base_port + DEMO_PORTS).all(|port| {
                TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    Duration::from_millis(200),
                )
                .is_err()
            })
        });
        for (path, name) in &memory_files {
            assert!(
                !path.exists(),
                "{signal}: {name} outlived mesh at {}",
                path.display()
            );
        }
        assert_no_keys(&state_dir);
        if signal != Signal::SIGKILL {
            assert!(
                !state_dir.join("demo.json").exists(),
                "{signal}: {} still offers a stopped demo",
                state_dir.display()
            );
        }
        drop(banner);
    }

    // After SIGKILL only the directory is left, and the next demo says it cleans it.
    let killed = killed_pid.expect("the last round was SIGKILL");
    let left = tmp.path().join(format!("mesh-demo-{killed}"));
    assert!(
        left.exists(),
        "a SIGKILLed demo cannot remove its directory"
    );
    let mut demo = Demo::start(mesh, base_port, tmp.path());
    demo.banner();
    let said = format!(
        "an earlier demo (pid {killed}) did not stop cleanly; removed {}",
        left.display()
    );
    assert!(demo.stderr().contains(&said), "{}", demo.stderr());
    assert!(!left.exists());
    kill(Pid::from_raw(demo.pid()), Signal::SIGINT).expect("signal mesh");
    assert!(demo.wait(Duration::from_secs(30)).success());
}

/// `pid`'s open in-memory files: their `/proc` path and name.
fn memory_files(pid: u32) -> Vec<(PathBuf, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let name = target.to_str()?.strip_prefix("/memfd:")?.to_owned();
            Some((e.path(), name))
        })
        .collect()
}

/// No file in `dir` (if it exists) holds a private key or a bootstrap token.
fn assert_no_keys(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            !name.ends_with(".key") && !name.ends_with(".token") && name != "tokens",
            "{} is key material on disk",
            path.display()
        );
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key",
            path.display()
        );
    }
}

/// Waits until `done` holds, for at most 20 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        thread::sleep(POLL);
    }
}

/// Every sample of a Prometheus text `body`, read by the one parser (`mesh_api::prom`).
fn samples(body: &str) -> Vec<Sample> {
    mesh_api::prom::parse(body).unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{body}"))
}

/// The samples of `metric` with `direction="<direction>"` in a Prometheus text `body`.
fn series(body: &str, metric: &str, direction: &str) -> Vec<Sample> {
    samples(body)
        .into_iter()
        .filter(|s| s.name == metric && s.label("direction") == Some(direction))
        .collect()
}

#[test]
fn reads_labels() {
    let line = r#"response_total{direction="outbound",authority="web:80",tls="true",server_id="web.demo.serviceaccount.identity.mesh.cluster.local",classification="success"} 12"#;
    let series_ = series(line, "response_total", "outbound");
    assert_eq!(series_.len(), 1);
    let sample = &series_[0];
    assert_eq!(sample.label("tls"), Some("true"));
    assert_eq!(sample.label("authority"), Some("web:80"));
    assert_eq!(sample.label("classification"), Some("success"));
    assert_eq!(sample.label("server_id"), Some(&*identity("web")));
    assert_eq!(sample.label("id"), None);
    assert_eq!(sample.label("client_id"), None);
    assert_eq!(sample.value, 12.0);
    assert!(series(line, "response", "outbound").is_empty());
    assert!(series(line, "response_total", "inbound").is_empty());
}

/// A running `mesh demo`, killed (with its children) if the test fails midway (also
/// used by `dashboard_page.rs`).
pub(crate) struct Demo {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    children: Vec<u32>,
    /// The demo's `TMPDIR`: its state directory is there, and commands run with it
    /// find this demo and no other test's.
    tmp: PathBuf,
}

impl Demo {
    /// Starts `mesh demo` in a process group of its own (as a shell's job is), with
    /// `tmp` as its `TMPDIR`.
    pub(crate) fn start(mesh: &str, base_port: u16, tmp: &Path) -> Self {
        let mut child = Command::new(mesh)
            .args(["demo", "--base-port", &base_port.to_string(), "--rps", "50"])
            .env("MESH_LOG", "info")
            .env("TMPDIR", tmp)
            .process_group(0)
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
            tmp: tmp.to_path_buf(),
        }
    }

    /// The demo's state directory.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.tmp.join(format!("mesh-demo-{}", self.child.id()))
    }

    /// Reads stdout up to the banner's last line; the banner's lines.
    pub(crate) fn banner(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        self.wait_for_line(Duration::from_secs(120), |line| {
            lines.push(line.to_owned());
            (line.contains("Ctrl-C")).then_some(())
        });
        lines
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in i32")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Reads stdout until `find` returns something for a line.
    fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> T {
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
        // Children die with `mesh`; should that ever fail, the test still cleans up.
        for &pid in &self.children {
            if is_alive(pid, "mesh-proxy") || is_alive(pid, "mesh-controller") {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// A block of [`DEMO_PORTS`] consecutive free loopback ports, below Linux's ephemeral range
/// and chosen from the pid, so parallel test runs and other demos do not collide.
pub(crate) fn free_port_block() -> u16 {
    const FIRST: u16 = 20_000;
    const SLOTS: u16 = 250;
    // Tests of one binary run in parallel in one process, so they share its pid: a
    // block handed out stays taken for the others, which would otherwise find it free
    // until its demo binds it.
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let start = (std::process::id() % u32::from(SLOTS)) as u16;
    let base = (0..SLOTS)
        .map(|i| FIRST + ((start + i) % SLOTS) * DEMO_PORTS)
        .find(|base| {
            !taken.contains(base)
                && (*base..base + DEMO_PORTS)
                    .all(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
        })
        .expect("a free block of loopback ports");
    taken.push(base);
    base
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
    proc::pids()
        .into_iter()
        .filter(|&pid| {
            proc::stat(proc::Pid::Of(pid)).is_some_and(|s| s.comm == name && s.ppid == parent)
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) process called `name`.
fn is_alive(pid: u32, name: &str) -> bool {
    proc::stat(proc::Pid::Of(pid)).is_some_and(|s| s.comm == name && s.state != 'Z')
}

/// A `mesh tap` running against the demo, its stdout read line by line on a thread.
struct Tap {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Tap {
    fn start(mesh: &str, tmp: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(mesh)
            .arg("tap")
            .args(args)
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mesh tap");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Takes what was printed so far; panics with its stderr if it exited.
    fn read(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "mesh tap exited with {status}: {err}\nprinted: {:?}",
                self.seen
            );
        }
        &self.seen
    }

    /// Waits until `done` holds of what was printed.
    fn wait_for(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self.read()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mesh tap: {what} not seen within {timeout:?}; printed: {:?}",
                self.seen
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn requests(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("req ")).collect()
}

#[test]
fn tap_shows_the_demos_requests_and_only_those_it_filters() {
    let mesh = env!("CARGO_BIN_EXE_mesh");
    let base_port = free_port_block();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(mesh, base_port, tmp.path());
    let banner = demo.banner();
    // The table's `web` row: `web APP INBOUND OUTBOUND METRICS`.
    let web_row: Vec<&str> = banner
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == Some(&"web") && words.len() == 5)
        .unwrap_or_else(|| panic!("no web row in the banner: {banner:#?}"));
    let web_inbound: SocketAddr = web_row[2].parse().expect("web's inbound address");
    let web_admin: SocketAddr = web_row[4]
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .expect("web's metrics address");
    demo.children = [
        children_named(demo.child.id(), "mesh-proxy"),
        children_named(demo.child.id(), "mesh-controller"),
    ]
    .concat();

    // Started first, so that its stream is open by the time the others have shown a
    // good number of requests.
    let mut nothing = Tap::start(mesh, tmp.path(), &["deploy/web", "--path", "/nonexistent"]);
    let mut list = Tap::start(mesh, tmp.path(), &["deploy/web", "--path", "/api/list"]);
    let mut all = Tap::start(mesh, tmp.path(), &["deploy/web"]);
    let mut json = Tap::start(
        mesh,
        tmp.path(),
        &["deploy/web", "--to", "deploy/voting", "-o", "json"],
    );

    // Every event of the web pod's traffic, in both directions, as Linkerd prints it.
    all.wait_for("30 requests", Duration::from_secs(60), |l| {
        requests(l).len() >= 30
    });
    let lines = all.read().to_vec();
    for line in &lines {
        assert!(
            ["req id=", "rsp id=", "end id="]
                .iter()
                .any(|p| line.starts_with(p))
                && line.contains(" tls=true"),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("req ") && l.contains("proxy=in ") && l.contains(":path=/api/")),
        "the web app's inbound requests: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("req ")
            && l.contains("proxy=out")
            && l.contains(":authority=voting.demo.svc.cluster.local:80")),
        "the web app's calls to voting: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rsp ") && l.contains(":status=") && l.contains("latency=")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("end ")
            && l.contains("duration=")
            && l.contains("response-length=")),
        "{lines:#?}"
    );

    // A path filter: only those requests.
    list.wait_for("5 requests to /api/list", Duration::from_secs(60), |l| {
        requests(l).len() >= 5
    });
    for line in requests(list.read()) {
        assert!(line.contains(":path=/api/list"), "{line}");
    }

    // `--to` and JSON: one object per event, every request to voting's pods.
    json.wait_for("5 requests", Duration::from_secs(60), |l| {
        l.iter().filter(|l| l.contains(r#""event":"req""#)).count() >= 5
    });
    for line in json.read() {
        let doc: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(doc["proxy"], "out", "{line}");
        if doc["event"] == "req" {
            assert_eq!(
                doc["authority"], "voting.demo.svc.cluster.local:80",
                "{line}"
            );
            // Both ends named: the endpoint by the proxy's discovery, the tapped pod
            // itself by the controller.
            assert_eq!(doc["source_labels"]["deployment"], "web", "{line}");
            assert_eq!(doc["destination_labels"]["deployment"], "voting", "{line}");
        }
    }

    // voting's policy, decided in its proxies: each inbound request line ends with the
    // decision, web's calls allowed by the demo's AuthorizationPolicy, the vote-bot's
    // (its own identity) denied on voting's Server and answered 403.
    let mut voting = Tap::start(
        mesh,
        tmp.path(),
        &["deploy/voting", "--path", "/leaderboard"],
    );
    let allowed = "authz=authorizationpolicy/voting-from-web";
    let denied = "authz=DENIED srv=server/voting-http";
    voting.wait_for(
        "an allowed and a denied request to voting",
        Duration::from_secs(60),
        |l| {
            requests(l).iter().any(|l| l.ends_with(allowed))
                && requests(l).iter().any(|l| l.ends_with(denied))
                && l.iter()
                    .any(|l| l.contains(":status=403") && l.contains("proxy-error=unauthorized"))
        },
    );
    for line in requests(voting.read()) {
        assert!(
            line.contains("proxy=in ") && (line.ends_with(allowed) || line.ends_with(denied)),
            "{line}"
        );
    }
    drop(voting);

    // The same from a cluster: the demo's controller stands behind a controller pod of
    // the fake API server, and `mesh tap --kubeconfig` streams through the port-forward
    // it opens itself (a flag's cluster comes before the running demo), as does
    // `mesh diagnostics proxy-metrics`, the one way to a proxy in both.
    let rt = tokio::runtime::Runtime::new().expect("a runtime for the fake API server");
    let kube = rt
        .block_on(FakeKube::start())
        .expect("the fake API server starts");
    let state_file = demo.state_dir().join("demo.json");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&state_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", state_file.display())),
    )
    .expect("demo.json is JSON");
    let demo_addr = |field: &str| -> SocketAddr {
        state[field]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("demo.json has no {field}: {state}"))
    };
    let controller = "mesh-controller-0";
    kube.apply(pod(
        NAMESPACE,
        controller,
        "10.0.0.2",
        "mesh-controller",
        None,
        &[(COMPONENT_LABEL, CONTROLLER_COMPONENT)],
    ))
    .expect("the controller pod");
    kube.forward_port(NAMESPACE, controller, 8084, demo_addr("api"));
    kube.forward_port(NAMESPACE, controller, 8088, demo_addr("tap"));
    let kubeconfig = kube.kubeconfig_path().to_str().expect("a UTF-8 path");
    let mut forwarded = Tap::start(
        mesh,
        tmp.path(),
        &["deploy/web", "-n", "demo", "--kubeconfig", kubeconfig],
    );
    forwarded.wait_for(
        "10 requests through the port-forward",
        Duration::from_secs(60),
        |l| requests(l).len() >= 10,
    );
    for line in forwarded.read() {
        assert!(line.contains(" tls=true"), "{line}");
    }
    drop(forwarded);
    let opened = kube.stats().port_forwards;
    assert!(opened >= 1, "{:?}", kube.stats());
    let out = Command::new(mesh)
        .args(["diagnostics", "proxy-metrics", "po/web", "-n", "demo"])
        .args(["--kubeconfig", kubeconfig])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("mesh runs");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !series(&page, "request_total", "inbound").is_empty(),
        "{page}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kube.stats().port_forwards > opened, "{:?}", kube.stats());
    drop(kube);
    drop(rt);

    // The metrics API's busiest paths: a short tap through the same fan-out, as the
    // table `mesh top` draws, busiest first.
    let answer = http_get(
        demo_addr("api"),
        "/api/top?resource=deploy/web&namespace=demo&seconds=2",
    )
    .expect("/api/top answers 200");
    let top: serde_json::Value = serde_json::from_str(&answer).expect("/api/top is JSON");
    let rows = top["rows"].as_array().expect("rows");
    assert!(
        rows.iter().any(|r| r["destination"] == "web"
            && r["path"].as_str().is_some_and(|p| p.starts_with("/api/"))
            && r["count"].as_u64().is_some_and(|n| n > 0)),
        "the web pod's own requests, by path: {top}"
    );
    let counts: Vec<u64> = rows.iter().filter_map(|r| r["count"].as_u64()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "busiest first: {top}"
    );
    assert_eq!(top["requests"], counts.iter().sum::<u64>(), "{top}");

    // Requests the test sends itself, with secrets: tap shows them, and those alone
    // with a filter on their path, the secrets redacted by the proxy.
    let mut mine = Tap::start(
        mesh,
        tmp.path(),
        &["deploy/web", "--path", "/sent-by-the-test", "-o", "json"],
    );
    // Sent until one shows: the tap's stream opens at a moment the test cannot see.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mine.read().iter().any(|l| l.contains(r#""event":"req""#)) {
        assert!(
            Instant::now() < deadline,
            "the test's requests never showed"
        );
        let mut stream = TcpStream::connect(web_inbound).expect("connect to web's proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET /sent-by-the-test?token=query-secret HTTP/1.0\r\nHost: web.demo.svc.cluster.local\r\n\
             Authorization: Bearer very-secret\r\nCookie: session=cookie-secret\r\nX-Visible: shown\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        thread::sleep(POLL);
    }
    let lines = mine.read().to_vec();
    for line in &lines {
        for secret in ["very-secret", "cookie-secret", "query-secret"] {
            assert!(!line.contains(secret), "{secret} shown: {line}");
        }
    }
    let req: serde_json::Value = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|d| d["event"] == "req")
        .unwrap();
    assert_eq!(req["path"], "/sent-by-the-test", "{req}");
    assert_eq!(req["proxy"], "in", "{req}");
    assert_eq!(req["destination_labels"]["deployment"], "web", "{req}");
    assert_eq!(req["destination_labels"]["namespace"], "demo", "{req}");
    let header = |name: &str| {
        req["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"].clone())
            .unwrap_or_else(|| panic!("no {name} in {req}"))
    };
    assert_eq!(header("authorization"), "[redacted]");
    assert_eq!(header("cookie"), "[redacted]");
    assert_eq!(header("x-visible"), "shown");

    // Each `mesh tap` is one stream on web's proxy, through the controller; when the
    // callers go away, so do the streams.
    let subscribers = || {
        http_get(web_admin, "/metrics").and_then(|body| {
            body.lines().find_map(|l| {
                l.strip_prefix("tap_subscribers ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
    };
    wait_until("five tap streams on web's proxy", || {
        subscribers() == Some(5)
    });

    // Every stream is open now: while the unfiltered tap shows 30 more requests, the
    // one filtered on a path nothing asks for shows none (and is still running).
    let seen = requests(all.read()).len();
    all.wait_for("30 more requests", Duration::from_secs(60), |l| {
        requests(l).len() >= seen + 30
    });
    assert_eq!(nothing.read(), &[] as &[String]);
    drop((nothing, list, all, json, mine));
    wait_until("web's proxy has no tap streams left", || {
        subscribers() == Some(0)
    });

    // An unknown resource is refused with the reason.
    let out = Command::new(mesh)
        .args(["tap", "deploy/nope"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run mesh tap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no deployment/nope in namespace demo"),
        "{err}"
    );
}

/// `mesh top deploy`, as the banner prints it, in a terminal (tmux) against the demo:
/// the web workload's paths show with their counts, and `q` gives the terminal back.
#[test]
#[cfg_attr(
    no_tmux,
    ignore = "tmux is not installed (scripts/test.sh installs it)"
)]
fn top_shows_the_demos_requests_with_no_flags() {
    let tmux = crate::top::Tmux::start();
    let mesh = env!("CARGO_BIN_EXE_mesh");
    let base_port = free_port_block();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(mesh, base_port, tmp.path());
    let banner = demo.banner();
    demo.children = [
        children_named(demo.child.id(), "mesh-proxy"),
        children_named(demo.child.id(), "mesh-controller"),
    ]
    .concat();
    let command = banner
        .iter()
        .map(|l| l.trim())
        .find(|l| l.ends_with("mesh top deploy"))
        .unwrap_or_else(|| panic!("no `mesh top deploy` in the banner: {banner:#?}"))
        .to_string();
    let stty = tmp.path().join("stty");
    let cwd = std::env::current_dir().expect("the test's directory");
    tmux.run_in(
        &format!(
            "TMPDIR='{}' {command}; echo exit=$?; stty -a > '{}'; sleep 120",
            tmp.path().display(),
            stty.display()
        ),
        Some(&cwd),
    );

    // The vote-bot's calls to web, as web's proxy saw them, counted; and web's own
    // calls onward. The demo's load is light and the machine may not be: the
    // deadlines are generous, and what is waited for is a condition.
    let count = |rows: &[Vec<String>], path: &str| -> u64 {
        rows.iter()
            .filter(|r| r[3].starts_with(path))
            .map(|r| r[4].parse::<u64>().unwrap_or(0))
            .sum()
    };
    // The pods by name: the controller names the tapped pod on its own side (web
    // calling voting's replicas), discovery the other (the vote-bot calling web).
    let screen = tmux.wait_for("web's paths, counted, and its calls by pod", |s| {
        let rows = crate::top::rows(s);
        count(&rows, "/api/list") >= 3
            && count(&rows, "/api/vote") >= 3
            && rows
                .iter()
                .any(|r| r[0] == "web" && r[1].starts_with("voting-"))
            && rows.iter().any(|r| r[1] == "web")
    });
    let rows = crate::top::rows(&screen);
    for row in &rows {
        assert!(
            ["GET", "POST"].contains(&row[2].as_str()) && row[8].ends_with('%'),
            "{row:?}\n{screen}"
        );
    }
    let counts: Vec<u64> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "sorted by count: {counts:?}\n{screen}"
    );
    assert!(
        screen.contains("mesh top deploy -n demo"),
        "the demo's namespace: {screen}"
    );

    tmux.keys("q");
    let screen = tmux.wait_for("top to exit", |s| s.contains("exit="));
    assert!(screen.contains("exit=0"), "{screen}");
    crate::top::assert_restored(&tmux, &stty);
}
