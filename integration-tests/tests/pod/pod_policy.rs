//! Pod-level tests of authorization policy: real proxies in pods, with real identities
//! from the controller's identity service and their policy from a real controller (its
//! file backend), the policy written in the destinations file as an operator writes the
//! `policy.mesh.rs` resources.
//!
//! One node (a namespace that routes between the pods, and runs the controller) and
//! three meshed pods attached to it: `server` (`mesh-test-app` with HTTP and a TCP echo
//! that logs every connection it accepts, a gRPC echo, and a proxy with policy on), and
//! two clients with service accounts of their own, `web` and `other`. The node itself is
//! the unmeshed (plaintext) client. Each test checks what each client gets over HTTP/1
//! (curl), gRPC (grpcio) and opaque TCP, and what the server's proxy counts.
//!
//! Needs root (namespaces, iptables), curl and python3 with grpcio.

use std::{
    ffi::OsString,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{bail, ensure, Context as _};
use mesh_integration_tests::{
    bin_path, helper_path,
    mesh::{
        require_built, start_pod_controller, start_pod_proxy, CONTROLLER_ADMIN, DESTINATION_PORT,
        PROXY_ADMIN as ADMIN,
    },
    promtool_check, wait_until, Metrics, NetNs, Node, Pod, Process,
};

use crate::pod_mtls::{curl, identity, identity_flags, random_hex, start_proxy, CaPem, DAY};

const HTTP_PORT: u16 = 8080;
const GRPC_PORT: u16 = 50051;
const ECHO_PORT: u16 = 9000;
/// What the opaque TCP check sends, and must get back whole.
const ECHO_LEN: &str = "1000";
const STARTUP: Duration = Duration::from_secs(20);
/// How long a rewritten file (the controller polls it every 200 ms) or a restarted
/// controller (the proxy reconnects with backoff, at most 10 s) gets to reach the
/// server's proxy.
const CHANGE: Duration = Duration::from_secs(30);

/// The server's pod, as its proxy names it to the policy API.
const SERVER_WORKLOAD: &str = r#"{"ns":"default","pod":"server-0"}"#;
/// The server's ports whose policy its proxy watches from start-up.
const SERVER_PORTS: &str = "8080,9000,50051";
const SERVER: &str = "server";
const WEB: &str = "web";
const OTHER: &str = "other";
/// The line `mesh-test-app --log-connections` prints for each echo connection.
const ACCEPTED_ECHO: &str = "accepted tcp-echo";

// === Tests ===

/// An identity the policy names passes over HTTP/1, gRPC and opaque TCP; another gets
/// a 403 with `mesh-proxy-error`, `PERMISSION_DENIED` and a closed connection, and the
/// application sees none of its connections.
pub(crate) fn an_authorized_identity_passes_and_another_is_denied() -> anyhow::Result<()> {
    let mut c = Cluster::start(Policy::allowing(&[WEB]))?;
    c.settle(&[(WEB, ALLOWED), (OTHER, DENIED)])?;
    c.expect(WEB, ALLOWED)?;
    c.expect_denied_unseen(OTHER)?;

    let (web_id, other_id) = (identity(WEB), identity(OTHER));
    c.server_metrics("the allows and denials", |m| {
        let allow = m.sum("inbound_http_authz_allow_total", &[("client_id", &web_id)]);
        let deny = m.sum(
            "inbound_http_authz_deny_total",
            &[("client_id", &other_id), ("srv_name", "server-http")],
        ) + m.sum(
            "inbound_http_authz_deny_total",
            &[("client_id", &other_id), ("srv_name", "server-grpc")],
        );
        let tcp_allow = m.sum("inbound_tcp_authz_allow_total", &[("client_id", &web_id)]);
        let tcp_deny = m.sum(
            "inbound_tcp_authz_deny_total",
            &[("client_id", &other_id), ("srv_name", "server-echo")],
        );
        let wrong = m.sum("inbound_http_authz_deny_total", &[("client_id", &web_id)])
            + m.sum("inbound_tcp_authz_deny_total", &[("client_id", &web_id)]);
        Ok(allow >= 4.0 && deny >= 2.0 && tcp_allow >= 2.0 && tcp_deny >= 1.0 && wrong == 0.0)
    })?;
    Ok(())
}

/// Plaintext from outside the mesh: allowed under the default `all-unauthenticated`,
/// refused once the pod's `defaultInboundPolicy` says `all-authenticated`; then, under a
/// controller started with `--default-inbound-policy all-authenticated`, allowed while
/// the pod says `all-unauthenticated` and refused once it says nothing.
pub(crate) fn plaintext_is_refused_under_all_authenticated() -> anyhow::Result<()> {
    let mut c = Cluster::start(Policy::default())?;
    c.settle(&[(NODE, ALLOWED), (WEB, ALLOWED)])?;

    c.write(&Policy {
        pod_default: Some("all-authenticated"),
        ..Policy::default()
    })?;
    c.settle(&[(NODE, DENIED)])?;
    c.expect(WEB, ALLOWED)?;
    c.expect_denied_unseen(NODE)?;

    c.restart_controller(
        &["--default-inbound-policy", "all-authenticated"],
        &Policy {
            pod_default: Some("all-unauthenticated"),
            ..Policy::default()
        },
    )?;
    c.settle(&[(NODE, ALLOWED)])?;
    c.write(&Policy::default())?;
    c.settle(&[(NODE, DENIED)])?;
    c.expect(WEB, ALLOWED)?;
    c.expect_denied_unseen(NODE)?;
    c.server_metrics("plaintext denials under the default", |m| {
        let deny = |family| {
            m.sum(
                family,
                &[
                    ("srv_kind", "default"),
                    ("srv_name", "all-authenticated"),
                    ("tls", "false"),
                ],
            )
        };
        Ok(deny("inbound_http_authz_deny_total") >= 4.0
            && deny("inbound_tcp_authz_deny_total") >= 2.0)
    })?;
    Ok(())
}

/// Servers whose `accessPolicy` is `audit`: what the policy does not allow passes, and
/// is counted in `inbound_*_authz_audit_total`, not as allowed.
pub(crate) fn audit_lets_denied_requests_pass_and_counts_them() -> anyhow::Result<()> {
    let c = Cluster::start(Policy {
        access: Some("audit"),
        ..Policy::allowing(&[WEB])
    })?;
    c.settle(&[(WEB, ALLOWED), (OTHER, ALLOWED)])?;
    let (web_id, other_id) = (identity(WEB), identity(OTHER));
    let m = c.server_metrics("the audited requests", |m| {
        let audit = m.sum(
            "inbound_http_authz_audit_total",
            &[("client_id", &other_id)],
        );
        let tcp_audit = m.sum("inbound_tcp_authz_audit_total", &[("client_id", &other_id)]);
        let allow = m.sum(
            "inbound_http_authz_allow_total",
            &[("client_id", &other_id)],
        ) + m.sum("inbound_tcp_authz_allow_total", &[("client_id", &other_id)]);
        let web_audit = m.sum("inbound_http_authz_audit_total", &[("client_id", &web_id)]);
        Ok(audit >= 2.0 && tcp_audit >= 1.0 && allow == 0.0 && web_audit == 0.0)
    })?;
    ensure!(
        m.sum("inbound_http_authz_deny_total", &[]) == 0.0
            && m.sum("inbound_tcp_authz_deny_total", &[]) == 0.0,
        "audit denied something:\n{}",
        m.show("inbound_http_authz_deny_total", &[])
    );
    Ok(())
}

/// Rewriting the file changes what new requests get, with nothing restarted; an open
/// opaque TCP connection stays while the policy still allows it and is closed by the
/// change that no longer does.
pub(crate) fn a_policy_change_applies_to_new_requests_and_closes_revoked_connections(
) -> anyhow::Result<()> {
    let c = Cluster::start(Policy::allowing(&[WEB]))?;
    c.settle(&[(WEB, ALLOWED), (OTHER, DENIED)])?;
    let mut held = c
        .pod(WEB)
        .process("tcp-hold", "python3")
        .arg(helper_path("tcp_client.py"))
        .args(["hold", &format!("{}:{ECHO_PORT}", c.server.ip)])
        .spawn()?;
    held.wait_for_line("echoed", STARTUP)?;

    // Add the second identity.
    c.write(&Policy::allowing(&[WEB, OTHER]))?;
    c.settle(&[(OTHER, ALLOWED)])?;
    c.expect(WEB, ALLOWED)?;
    ensure!(
        held.lines_containing("closed") == 0,
        "web's open connection was closed by a change that still allows it:\n{}",
        held.describe()
    );

    // Take the first one away: its open connection is closed, its new ones refused.
    c.write(&Policy::allowing(&[OTHER]))?;
    let closed = held.wait_for_line("closed", CHANGE)?;
    c.settle(&[(WEB, DENIED)])?;
    c.expect(OTHER, ALLOWED)?;
    let web_id = identity(WEB);
    c.server_metrics("the revoked connection", |m| {
        Ok(m.sum(
            "inbound_tcp_authz_terminate_total",
            &[("client_id", &web_id), ("srv_name", "server-echo")],
        ) == 1.0)
    })?;
    eprintln!("web's held connection: {closed}");
    Ok(())
}

/// The controller killed: the server's proxy keeps enforcing the last policy it had;
/// a proxy started while the controller is down applies its configured default.
pub(crate) fn without_the_controller_the_last_policy_holds_and_new_proxies_use_the_default(
) -> anyhow::Result<()> {
    let mut c = Cluster::start(Policy::allowing(&[WEB]))?;
    c.settle(&[(WEB, ALLOWED), (OTHER, DENIED)])?;
    c.kill_controller();
    // Wait until the proxy has seen each port's policy stream break, so the checks
    // below are made during the outage as the proxy knows it.
    let proxy = &c.server_proxy;
    wait_until(
        "the server's proxy to lose its policy streams",
        STARTUP,
        || {
            let log = proxy.stderr();
            let broken: Vec<&str> = SERVER_PORTS
                .split(',')
                .filter(|port| {
                    log.lines().any(|l| {
                        l.contains("policy stream failed; keeping the last policy")
                            && l.contains(&format!("port={port} "))
                    })
                })
                .collect();
            if broken.len() == 3 {
                Ok(Some(()))
            } else {
                bail!("streams seen broken, by port: {broken:?}")
            }
        },
    )?;
    c.expect(WEB, ALLOWED)?;
    c.expect_denied_unseen(OTHER)?;
    c.expect(WEB, ALLOWED)?;

    // A new pod, meshed without identity (the identity service is down too), its
    // proxy's default `deny`.
    let (late, gateway) = c.node.pod("plate")?;
    let mut app = late
        .process("app", bin_path("mesh-test-app"))
        .args(["--name", "late", "--http", &format!("0.0.0.0:{HTTP_PORT}")])
        .args(["--tcp-echo", &format!("0.0.0.0:{ECHO_PORT}")])
        .arg("--log-connections")
        .spawn()?;
    app.wait_for_line("listening tcp-echo", STARTUP)?;
    let destination = format!("{gateway}:{DESTINATION_PORT}");
    let _proxy = start_pod_proxy(
        &late,
        &[
            ("MESH_PROXY_DESTINATION_ADDR", destination.as_str()),
            ("MESH_PROXY_DESTINATION_CONTEXT", r#"{"ns":"default"}"#),
            (
                "MESH_PROXY_POLICY_WORKLOAD",
                r#"{"ns":"default","pod":"late-0"}"#,
            ),
            ("MESH_PROXY_INBOUND_PORTS", "8080,9000"),
            ("MESH_PROXY_INBOUND_DEFAULT_POLICY", "deny"),
        ],
    )?;
    let http = http(&c.node, late.ip)?;
    let tcp = tcp(&c.node, late.ip)?;
    ensure!(
        (http, tcp) == (DENIED[0], DENIED[2]),
        "plaintext to a proxy whose default is deny, with no controller: HTTP {http:?}, TCP \
         {tcp:?}"
    );
    ensure!(
        app.lines_containing(ACCEPTED_ECHO) == 0,
        "the late pod's app accepted a connection its proxy's default denies:\n{}",
        app.describe()
    );
    let m = late.metrics(ADMIN)?;
    let deny = |family| m.sum(family, &[("srv_kind", "default"), ("srv_name", "deny")]);
    ensure!(
        deny("inbound_http_authz_deny_total") == 1.0 && deny("inbound_tcp_authz_deny_total") == 1.0,
        "the late proxy did not count its denials under the default `deny`:\n{}\n{}",
        m.show("inbound_http_authz_deny_total", &[]),
        m.show("inbound_tcp_authz_deny_total", &[])
    );
    promtool_check(&m.text).context("the late proxy's /metrics")?;
    Ok(())
}

/// A malformed policy written into the file is rejected, the controller saying which
/// field; the whole file is refused (the valid change beside it too) and the last valid
/// policy stays in force, until the file is mended.
pub(crate) fn a_malformed_policy_is_rejected_by_field_and_the_last_valid_one_stays(
) -> anyhow::Result<()> {
    let mut c = Cluster::start(Policy::allowing(&[WEB]))?;
    c.settle(&[(WEB, ALLOWED), (OTHER, DENIED)])?;
    let broken = Policy {
        broken: true,
        ..Policy::allowing(&[WEB, OTHER])
    };
    let field = format!("policies[{}].spec.port", broken.documents().len() - 1);
    c.write(&broken)?;
    let controller = c.controller.as_ref().context("the controller runs")?;
    let line = wait_until(
        &format!("the controller to log the broken field {field}"),
        CHANGE,
        || {
            Ok(controller
                .stderr()
                .lines()
                .find(|l| l.contains(&field) && l.contains("not loaded"))
                .map(str::to_string))
        },
    )?;
    eprintln!("controller: {line}");
    let m = c.node.metrics(CONTROLLER_ADMIN)?;
    ensure!(
        m.sum("destination_file_loads_total", &[("result", "rejected")]) == 1.0,
        "the controller did not count one rejected load:\n{}",
        m.show("destination_file_loads_total", &[])
    );
    c.expect(WEB, ALLOWED)?;
    c.expect_denied_unseen(OTHER)?;

    // Mended, the file is read again and its change applies.
    c.write(&Policy::allowing(&[WEB, OTHER]))?;
    c.settle(&[(WEB, ALLOWED), (OTHER, ALLOWED)])?;
    Ok(())
}

// === What clients get ===

/// What a request or connection got: through to the app, or refused by the server's
/// proxy in the way its protocol says (403 with `mesh-proxy-error`, `PERMISSION_DENIED`,
/// a connection closed before anything came back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Denied,
}

/// HTTP/1, gRPC and opaque TCP, in that order.
type Verdicts = [Verdict; 3];
const ALLOWED: Verdicts = [Verdict::Allowed; 3];
const DENIED: Verdicts = [Verdict::Denied; 3];

/// The unmeshed client: the node.
const NODE: &str = "node";

fn http(from: &NetNs, ip: Ipv4Addr) -> anyhow::Result<Verdict> {
    let url = format!("http://{ip}:{HTTP_PORT}/headers");
    let rsp = curl(from, None, &[&url])?;
    match (rsp.status, rsp.header("mesh-proxy-error")) {
        (200, None) => Ok(Verdict::Allowed),
        (403, Some(error)) if error.contains("unauthorized") => Ok(Verdict::Denied),
        _ => bail!("GET {url} from {}: {rsp:?}", from.name()),
    }
}

fn grpc(from: &NetNs, ip: Ipv4Addr) -> anyhow::Result<Verdict> {
    let addr = format!("{ip}:{GRPC_PORT}");
    let out = python(from, "grpc_echo.py", &["say", &addr])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let out = String::from_utf8_lossy(&out.stdout);
    if out.starts_with("status OK") {
        Ok(Verdict::Allowed)
    } else if out.starts_with("status PERMISSION_DENIED") {
        Ok(Verdict::Denied)
    } else {
        bail!("gRPC Say to {addr} from {}: {out}{stderr}", from.name())
    }
}

/// Runs one of the Python helpers in `from`, whatever its exit status.
fn python(from: &NetNs, helper: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut argv: Vec<OsString> = vec!["python3".into(), helper_path(helper).into()];
    argv.extend(args.iter().map(OsString::from));
    from.output(argv)
}

/// An echo of [`ECHO_LEN`] bytes: allowed if it all came back, denied if the
/// connection ended with nothing back.
fn tcp(from: &NetNs, ip: Ipv4Addr) -> anyhow::Result<Verdict> {
    let addr = format!("{ip}:{ECHO_PORT}");
    let out = python(from, "tcp_client.py", &["echo", &addr, ECHO_LEN])?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // A clean close or a failure (reset, broken pipe, ...), before any byte came back.
    let closed_with_nothing = stdout.contains("received 0");
    if out.status.success() && stdout.contains(&format!("sent {ECHO_LEN} received {ECHO_LEN}")) {
        Ok(Verdict::Allowed)
    } else if closed_with_nothing {
        Ok(Verdict::Denied)
    } else {
        bail!(
            "TCP echo to {addr} from {} ({}): {stdout}{stderr}",
            from.name(),
            out.status
        )
    }
}

// === The cluster ===

/// What the destinations file says about policy.
#[derive(Clone, Debug, Default)]
struct Policy {
    /// The service accounts the server's ports allow (one `MeshTLSAuthentication`, an
    /// `AuthorizationPolicy` per `Server`); `None`: no `Server` at all, every port under
    /// the default.
    allowed: Option<Vec<&'static str>>,
    /// The `Server`s' `accessPolicy`.
    access: Option<&'static str>,
    /// The server pod's `defaultInboundPolicy` (its annotation).
    pod_default: Option<&'static str>,
    /// A last document that is not a valid `Server` (port 0).
    broken: bool,
}

impl Policy {
    fn allowing(accounts: &[&'static str]) -> Self {
        Self {
            allowed: Some(accounts.to_vec()),
            ..Self::default()
        }
    }

    /// The `policies:` documents, as an operator writes them for `kubectl apply`.
    fn documents(&self) -> Vec<String> {
        let mut docs = Vec::new();
        let meta = |kind: &str, name: &str| {
            format!(
                "apiVersion: policy.mesh.rs/v1alpha1\n    kind: {kind}\n    metadata:\n      \
                 name: {name}\n      namespace: default\n    spec:"
            )
        };
        let servers = [
            ("server-http", HTTP_PORT, None),
            ("server-grpc", GRPC_PORT, Some("gRPC")),
            ("server-echo", ECHO_PORT, Some("opaque")),
        ];
        if let Some(allowed) = &self.allowed {
            for (name, port, protocol) in servers {
                let mut doc = format!(
                    "{}\n      podSelector:\n        matchLabels: {{deployment: server}}\n      \
                     port: {port}",
                    meta("Server", name)
                );
                if let Some(p) = protocol {
                    doc.push_str(&format!("\n      proxyProtocol: {p}"));
                }
                if let Some(a) = self.access {
                    doc.push_str(&format!("\n      accessPolicy: {a}"));
                }
                docs.push(doc);
            }
            let identities: Vec<String> = allowed.iter().map(|sa| identity(sa)).collect();
            docs.push(format!(
                "{}\n      identities: [{}]",
                meta("MeshTLSAuthentication", "clients"),
                identities.join(", ")
            ));
            for (name, _, _) in servers {
                docs.push(format!(
                    "{}\n      targetRef: {{group: policy.mesh.rs, kind: Server, name: {name}}}\n      \
                     requiredAuthenticationRefs:\n        - {{group: policy.mesh.rs, kind: \
                     MeshTLSAuthentication, name: clients}}",
                    meta("AuthorizationPolicy", &format!("{name}-clients"))
                ));
            }
        }
        if self.broken {
            docs.push(format!(
                "{}\n      podSelector: {{matchLabels: {{deployment: server}}}}\n      port: 0",
                meta("Server", "server-broken")
            ));
        }
        docs
    }

    /// The whole destinations file: the server pod's services (its identity and labels
    /// on each endpoint), then the policies.
    fn file(&self, sip: Ipv4Addr) -> String {
        let mut out = String::from("services:\n");
        for (service, port) in [
            ("server", HTTP_PORT),
            ("server-grpc", GRPC_PORT),
            ("server-echo", ECHO_PORT),
        ] {
            out.push_str(&format!(
                "  - name: {service}\n    namespace: default\n    endpoints:\n      \
                 - address: \"{sip}:{port}\"\n        labels: {{pod: server-0, deployment: \
                 server, serviceaccount: {SERVER}}}\n        identity: {}\n",
                identity(SERVER)
            ));
            if let Some(default) = self.pod_default {
                out.push_str(&format!("        defaultInboundPolicy: {default}\n"));
            }
        }
        let docs = self.documents();
        if !docs.is_empty() {
            out.push_str("policies:\n");
            for doc in docs {
                out.push_str(&format!("  - {doc}\n"));
            }
        }
        out
    }
}

/// The node and its pods, and everything running in them. Fields drop in order:
/// processes first, then the pods, then the node.
struct Cluster {
    controller: Option<Process>,
    app: Process,
    server_proxy: Process,
    _processes: Vec<Process>,
    web: Pod,
    other: Pod,
    server: Pod,
    node: Node,
    /// The controller's identity flags, kept for a restart.
    identity_flags: Vec<OsString>,
    file: PathBuf,
}

impl Cluster {
    /// The cluster, its destinations file saying `policy`.
    fn start(policy: Policy) -> anyhow::Result<Self> {
        require_built(&["mesh-proxy", "mesh-controller", "mesh-test-app"])?;
        let node = Node::new("pnode")?;
        let (server, server_gw) = node.pod("psrv")?;
        let (web, web_gw) = node.pod("pweb")?;
        let (other, other_gw) = node.pod("poth")?;

        let now = SystemTime::now();
        let ca = CaPem::generate(now - DAY, now + DAY * 30);
        let tokens: Vec<(&str, String)> = [SERVER, WEB, OTHER]
            .into_iter()
            .map(|sa| (sa, random_hex(16)))
            .collect();
        let identity_flags = identity_flags(&node, &ca, &tokens, "24h")?;
        let file = node.log_dir().join("destinations.yaml");
        write_atomically(&file, &policy.file(server.ip))?;
        let controller = start_pod_controller(&node, &file, &identity_flags)?;

        let mut app = server
            .process("app", bin_path("mesh-test-app"))
            .args([
                "--name",
                "server",
                "--http",
                &format!("0.0.0.0:{HTTP_PORT}"),
            ])
            .args(["--tcp-echo", &format!("0.0.0.0:{ECHO_PORT}")])
            .arg("--log-connections")
            .spawn()?;
        let mut grpc = server
            .process("grpc-echo", "python3")
            .arg(helper_path("grpc_echo.py"))
            .args(["server", &format!("0.0.0.0:{GRPC_PORT}")])
            .spawn()?;
        app.wait_for_line("listening tcp-echo", STARTUP)?;
        grpc.wait_for_line("listening", STARTUP)?;

        // The three proxies at once: each waits for its certificate.
        let token = |sa: &str| {
            tokens
                .iter()
                .find(|(s, _)| *s == sa)
                .map(|(_, t)| t.clone())
                .unwrap_or_default()
        };
        let server_env = [
            ("MESH_PROXY_POLICY_WORKLOAD", SERVER_WORKLOAD),
            ("MESH_PROXY_INBOUND_PORTS", SERVER_PORTS),
        ];
        let proxies: Vec<anyhow::Result<Process>> = std::thread::scope(|s| {
            let starts = [
                (&server, SERVER, server_gw, &server_env[..]),
                (&web, WEB, web_gw, &[][..]),
                (&other, OTHER, other_gw, &[][..]),
            ]
            .map(|(pod, sa, gw, env)| {
                let (token, anchors) = (token(sa), &ca.anchors);
                s.spawn(move || start_proxy(pod, sa, &token, gw, anchors, None, env))
            });
            starts
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a proxy's start panicked")))
                })
                .collect()
        });
        let mut proxies = proxies.into_iter();
        let server_proxy = proxies.next().context("the server's proxy")??;
        let mut processes = vec![grpc];
        for proxy in proxies {
            processes.push(proxy?);
        }
        Ok(Self {
            controller: Some(controller),
            app,
            server_proxy,
            _processes: processes,
            web,
            other,
            server,
            node,
            identity_flags,
            file,
        })
    }

    /// The client namespace by name: a client pod, or the node (unmeshed).
    fn pod(&self, name: &str) -> &NetNs {
        match name {
            WEB => &self.web,
            OTHER => &self.other,
            _ => &self.node,
        }
    }

    /// Rewrites the destinations file, as an operator applying resources would.
    fn write(&self, policy: &Policy) -> anyhow::Result<()> {
        write_atomically(&self.file, &policy.file(self.server.ip))
    }

    fn kill_controller(&mut self) {
        if let Some(mut controller) = self.controller.take() {
            controller.kill();
        }
    }

    /// Stops the controller, writes `policy`, and starts it again with `flags` on the
    /// same addresses, with the same CA and tokens.
    fn restart_controller(&mut self, flags: &[&str], policy: &Policy) -> anyhow::Result<()> {
        self.kill_controller();
        self.write(policy)?;
        let mut args = self.identity_flags.clone();
        args.extend(flags.iter().map(OsString::from));
        self.controller = Some(start_pod_controller(&self.node, &self.file, args)?);
        Ok(())
    }

    /// What `client` gets from the server now, over each protocol.
    fn verdicts(&self, client: &str) -> anyhow::Result<Verdicts> {
        let (from, sip) = (self.pod(client), self.server.ip);
        Ok([http(from, sip)?, grpc(from, sip)?, tcp(from, sip)?])
    }

    /// Fails unless `client` gets `want` now.
    fn expect(&self, client: &str, want: Verdicts) -> anyhow::Result<()> {
        let got = self.verdicts(client)?;
        ensure!(
            got == want,
            "{client} (HTTP, gRPC, TCP): expected {want:?}, got {got:?}"
        );
        Ok(())
    }

    /// Waits until each client gets what it should: a change has reached the server's
    /// proxy.
    fn settle(&self, want: &[(&str, Verdicts)]) -> anyhow::Result<()> {
        let what = format!("the server's proxy to give (HTTP, gRPC, TCP) {want:?}");
        wait_until(&what, CHANGE, || {
            for (client, verdicts) in want {
                let got = self.verdicts(client)?;
                if got != *verdicts {
                    bail!("{client} got {got:?}");
                }
            }
            Ok(Some(()))
        })
    }

    /// Fails unless `client` is denied everything and none of its echo connections
    /// reached the application: an allowed client's echo, sent after, is the only new
    /// connection the application sees.
    fn expect_denied_unseen(&mut self, client: &str) -> anyhow::Result<()> {
        let before = self.app.lines_containing(ACCEPTED_ECHO);
        self.expect(client, DENIED)?;
        let marker = tcp(&self.web, self.server.ip)?;
        ensure!(
            marker == Verdict::Allowed,
            "web's echo after {client}'s, which tells when the app would have seen \
             {client}'s, was {marker:?}"
        );
        let app = &mut self.app;
        let seen = wait_until("the app to log web's echo connection", STARTUP, || {
            let n = app.lines_containing(ACCEPTED_ECHO) - before;
            Ok((n >= 1).then_some(n))
        })?;
        ensure!(
            seen == 1,
            "the app accepted {seen} connections for web's one echo and {client}'s denied \
             one:\n{}",
            self.app.describe()
        );
        Ok(())
    }

    /// Waits until the server proxy's metrics pass `check`, then checks them with
    /// promtool; returns them.
    fn server_metrics(
        &self,
        what: &str,
        check: impl Fn(&Metrics) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Metrics> {
        let server = &self.server;
        wait_until(
            &format!("the server's proxy to count {what}"),
            CHANGE,
            || {
                let m = server.metrics(ADMIN)?;
                if check(&m)? {
                    return Ok(Some(m));
                }
                let shown: String = [
                    "inbound_http_authz_allow_total",
                    "inbound_http_authz_deny_total",
                    "inbound_http_authz_audit_total",
                    "inbound_tcp_authz_allow_total",
                    "inbound_tcp_authz_deny_total",
                    "inbound_tcp_authz_audit_total",
                    "inbound_tcp_authz_terminate_total",
                ]
                .iter()
                .map(|f| m.show(f, &[]))
                .collect::<Vec<_>>()
                .join("\n");
                bail!("not yet:\n{shown}")
            },
        )
        .and_then(|m| {
            promtool_check(&m.text).context("the server proxy's /metrics")?;
            Ok(m)
        })
    }
}

/// Writes `path` whole (a temporary file renamed over it), so the controller, which
/// polls the file, never reads half of it.
fn write_atomically(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
