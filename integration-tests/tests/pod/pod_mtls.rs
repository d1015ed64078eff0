//! Pod-level tests of mutual TLS between meshed proxies.
//!
//! Three network namespaces: a meshed client pod and a meshed server pod (each with
//! `mesh-proxy init` and a transparent proxy that got its certificate from the
//! controller), joined by a veth pair, and an unmeshed "outside" pod that runs
//! `mesh-controller` (file discovery + the identity service) and plays the part of
//! clients that are not in the mesh. The outside pod has a veth to each meshed pod and
//! reaches the server pod's address through the server's end of its own link.
//!
//! What is checked: meshed HTTP is mTLS with both identities counted and the app told
//! who called; the wire between the pods carries a TLS handshake and no plaintext (with
//! a plaintext control request that the same capture does see); a client proxy refuses
//! a server whose certificate names another identity than discovery announced; the
//! server proxy refuses expired and foreign-rooted client certificates and plaintext
//! requests that claim a mesh identity; and certificates rotate under steady load
//! without a failed request.
//!
//! Needs root (namespaces, iptables) and tcpdump.

use std::{
    fs::File,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, bail, ensure, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use mesh_integration_tests::{
    bin_path,
    mesh::{
        require_built, start_pod_controller, start_pod_proxy, DESTINATION_PORT,
        PROXY_ADMIN as ADMIN, PROXY_UID,
    },
    veth, wait_until, NetNs, Pod, Process,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub(crate) const IDENTITY_PORT: u16 = 8090;
const APP_PORT: u16 = 8080;
/// The server app's TCP echo port (opaque TCP through the mesh).
const ECHO_PORT: u16 = 9000;
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
const STARTUP: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(10);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn identity(sa: &str) -> String {
    mesh_api::names::ServiceAccount::new("default", sa).identity(TRUST_DOMAIN)
}

// === Tests ===

/// Meshed traffic is mTLS (tests 1 and 2 of the plan): what the wire carries is
/// captured from the first request on, so the handshake is in the capture.
pub(crate) fn meshed_http_is_mutual_tls_and_unreadable_on_the_wire() -> anyhow::Result<()> {
    let mesh = Mesh::start(Options::default())?;
    let sip = mesh.server.ip;
    let (client_id, server_id) = (identity("client"), identity("server"));

    // --- The capture: meshed requests with a marker, then one plaintext control.
    let secret = format!("PLAINTEXT-MARKER-{}", random_hex(8));
    let control = format!("CONTROL-MARKER-{}", random_hex(8));
    let mut capture = Capture::start(&mesh.server, &mesh.server_if)?;
    for i in 0..3 {
        let body = format!("{secret}-body-{i}");
        let url = format!("http://{sip}:{APP_PORT}/echo?q={secret}-{i}");
        let rsp = curl(
            &mesh.client,
            None,
            &[
                "-X",
                "POST",
                "--data-binary",
                &body,
                "-H",
                &format!("x-marker: {secret}"),
                &url,
            ],
        )?;
        ensure!(
            rsp.status == 200 && rsp.body == body.as_bytes(),
            "meshed POST {url}: {rsp:?}"
        );
    }
    // The proxy's uid is exempt from the client pod's redirect: this request leaves
    // the pod as plaintext, over the same veth, and the server's proxy lets plaintext
    // without identity claims through.
    let url = format!("http://{sip}:{APP_PORT}/echo?q={control}");
    let rsp = curl(
        &mesh.client,
        Some(PROXY_UID),
        &["-X", "POST", "--data-binary", &control, &url],
    )?;
    ensure!(
        rsp.status == 200 && rsp.body == control.as_bytes(),
        "plaintext control POST {url}: {rsp:?}"
    );
    // Packets reach the file one by one (-U, --immediate-mode); the control request
    // was the last thing sent, so once it is there, everything before it is too.
    wait_until(
        "the capture to show the plaintext control request's marker (without it the \
         capture proves nothing)",
        SETTLE,
        || Ok(contains(&capture.read()?, control.as_bytes()).then_some(())),
    )?;
    let pcap = capture.stop()?;
    ensure!(
        !contains(&pcap, secret.as_bytes()),
        "the meshed requests' marker {secret:?} is readable on the wire"
    );
    // A TLS handshake record (0x16 0x03 0x0X) holding a ClientHello (type 1), and the
    // SNI in it naming the server's identity.
    ensure!(
        pcap.windows(6)
            .any(|w| w[0] == 0x16 && w[1] == 0x03 && w[2] <= 0x04 && w[5] == 0x01),
        "no TLS ClientHello record in the capture"
    );
    ensure!(
        contains(&pcap, server_id.as_bytes()),
        "no ClientHello naming {server_id} (SNI) in the capture"
    );
    // TLS 1.3 encrypts both certificates: the client's identity never shows.
    ensure!(
        !contains(&pcap, client_id.as_bytes()),
        "the client's identity {client_id} is readable on the wire (a TLS 1.2 client \
         certificate?)"
    );

    // --- The metrics and the app's view (test 1).
    let rsp = curl(
        &mesh.client,
        None,
        &[&format!("http://{sip}:{APP_PORT}/headers")],
    )?;
    ensure!(rsp.status == 200, "GET /headers through the mesh: {rsp:?}");
    let seen = String::from_utf8_lossy(&rsp.body);
    ensure!(
        seen.lines()
            .any(|l| l == format!("mesh-client-id: {client_id}")),
        "the app was not told the client's identity:\n{seen}"
    );

    wait_until("both proxies to count the mTLS requests", SETTLE, || {
        let client = mesh.client.metrics(ADMIN)?;
        let server = mesh.server.metrics(ADMIN)?;
        let out = client.sum(
            "response_total",
            &[
                ("direction", "outbound"),
                ("tls", "true"),
                ("server_id", &server_id),
                ("status_code", "200"),
            ],
        );
        let inb = server.sum(
            "response_total",
            &[
                ("direction", "inbound"),
                ("tls", "true"),
                ("client_id", &client_id),
                ("status_code", "200"),
            ],
        );
        let out_tcp = client.sum(
            "tcp_open_total",
            &[("direction", "outbound"), ("tls", "true")],
        );
        let in_tcp = server.sum(
            "tcp_open_total",
            &[("direction", "inbound"), ("tls", "true")],
        );
        // Three echoes and /headers were meshed; the control was not.
        if out == 4.0 && inb == 4.0 && out_tcp >= 1.0 && in_tcp >= 1.0 {
            Ok(Some(()))
        } else {
            bail!(
                "outbound tls=true server_id={server_id}: {out}, inbound tls=true \
                 client_id={client_id}: {inb}, tcp_open tls=true {out_tcp}/{in_tcp}\n\
                 client:\n{}\nserver:\n{}",
                client.show("response_total", &[]),
                server.show("response_total", &[])
            )
        }
    })?;
    // No handshake failed along the way.
    for (pod, name) in [(&mesh.client, "client"), (&mesh.server, "server")] {
        let m = pod.metrics(ADMIN)?;
        ensure!(
            m.sum("tls_refused_total", &[]) == 0.0,
            "the {name} proxy refused TLS:\n{}",
            m.show("tls_refused_total", &[])
        );
    }
    Ok(())
}

/// Discovery says the endpoint is `other`, the server proxy is `server`: the client
/// proxy must refuse the server's certificate (test 3).
pub(crate) fn client_proxy_refuses_a_server_with_another_identity() -> anyhow::Result<()> {
    let mesh = Mesh::start(Options {
        announced_sa: "other",
        ..Options::default()
    })?;
    let sip = mesh.server.ip;
    let url = format!("http://{sip}:{APP_PORT}/");
    let rsp = curl(&mesh.client, None, &[&url])?;
    let error = rsp.header("mesh-proxy-error").unwrap_or_default();
    ensure!(
        rsp.status == 502 && error.contains("wrong_identity"),
        "GET {url} with the endpoint announced as {}: expected 502 with a \
         mesh-proxy-error naming wrong_identity, got {rsp:?}",
        identity("other")
    );
    wait_until("the client proxy to count wrong_identity", SETTLE, || {
        let m = mesh.client.metrics(ADMIN)?;
        let n = m.sum(
            "tls_refused_total",
            &[("direction", "outbound"), ("reason", "wrong_identity")],
        );
        if n >= 1.0 {
            Ok(Some(()))
        } else {
            bail!("{}", m.show("tls_refused_total", &[]))
        }
    })?;
    // Nothing reached the app through the server's proxy.
    let server = mesh.server.metrics(ADMIN)?;
    ensure!(
        server.sum("response_total", &[("direction", "inbound")]) == 0.0,
        "the server proxy answered requests:\n{}",
        server.show("response_total", &[])
    );
    Ok(())
}

/// A rogue TLS client outside the mesh, with SNI = the server's identity, presents an
/// expired certificate and one from another root; a plaintext client claims a mesh
/// identity. The server proxy refuses all of them and counts why (tests 4 and 5); a
/// valid certificate through the same client, and plaintext without claims, pass.
pub(crate) fn server_proxy_refuses_expired_foreign_and_claimed_clients() -> anyhow::Result<()> {
    let mesh = Mesh::start(Options::default())?;
    let sip = mesh.server.ip;
    let target = SocketAddr::from((sip, APP_PORT));
    let (client_id, server_id) = (identity("client"), identity("server"));
    let now = SystemTime::now();

    // A certificate from the mesh's own CA, for a valid-looking identity, that expired
    // a day ago (it lived an hour).
    let expired = Leaf::issue(
        &mesh.ca,
        &client_id,
        Duration::from_secs(3600),
        now - DAY * 2,
    )?;
    // A current certificate for the same identity from another root.
    let other_ca = CaPem::generate(now - DAY, now + DAY);
    let foreign = Leaf::issue(&other_ca, &client_id, DAY, now)?;
    // Control: a current certificate from the mesh's CA is accepted by the same client.
    let valid = Leaf::issue(&mesh.ca, &client_id, DAY, now)?;

    let anchors = mesh.ca.anchors.clone();
    let sid = server_id.clone();
    let outcomes = in_netns(&mesh.outside, move || {
        block_on(async move {
            let mut out = Vec::new();
            for leaf in [expired, foreign, valid] {
                out.push(rogue_request(target, &sid, &anchors, leaf).await);
            }
            out
        })
    })?;
    let [expired, foreign, valid]: [_; 3] =
        outcomes.try_into().map_err(|_| anyhow!("three outcomes"))?;
    ensure!(
        !expired.accepted,
        "an expired client certificate was accepted: {}",
        expired.what
    );
    ensure!(
        !foreign.accepted,
        "a client certificate from another root was accepted: {}",
        foreign.what
    );
    ensure!(
        valid.accepted,
        "the rogue client does not work even with a valid certificate, so its refusals \
         prove nothing: {}",
        valid.what
    );

    // Plaintext: without claims it passes; with a mesh header it is refused.
    let url = format!("http://{sip}:{APP_PORT}/headers");
    let rsp = curl(&mesh.outside, None, &[&url])?;
    ensure!(
        rsp.status == 200,
        "plaintext GET {url} from outside: {rsp:?}"
    );
    let seen = String::from_utf8_lossy(&rsp.body);
    ensure!(
        !seen.contains("mesh-client-id"),
        "plaintext reached the app with a client identity:\n{seen}"
    );
    let claim = format!("mesh-client-id: {client_id}");
    let rsp = curl(&mesh.outside, None, &["-H", &claim, &url])?;
    ensure!(
        rsp.status == 403,
        "plaintext GET {url} claiming `{claim}`: {rsp:?}"
    );

    let want = [
        ("expired", 1.0),
        ("untrusted", 1.0),
        ("plaintext_claim", 1.0),
    ];
    wait_until("the server proxy to count the refusals", SETTLE, || {
        let m = mesh.server.metrics(ADMIN)?;
        let got: Vec<f64> = want
            .iter()
            .map(|(reason, _)| {
                m.sum(
                    "tls_refused_total",
                    &[("direction", "inbound"), ("reason", reason)],
                )
            })
            .collect();
        // The rogue client's one request with a valid certificate is mTLS from
        // the identity it holds.
        let mtls = m.sum(
            "response_total",
            &[
                ("direction", "inbound"),
                ("tls", "true"),
                ("client_id", &client_id),
                ("status_code", "200"),
            ],
        );
        if got.iter().zip(&want).all(|(g, (_, w))| g == w) && mtls == 1.0 {
            Ok(Some(()))
        } else {
            bail!(
                "want {want:?}, got {got:?}, and 1 mTLS response, got {mtls}:\n{}\n{}",
                m.show("tls_refused_total", &[]),
                m.show("response_total", &[("direction", "inbound")])
            )
        }
    })?;
    // Exactly those refusals.
    let m = mesh.server.metrics(ADMIN)?;
    eprintln!(
        "rogue client: expired -> {}; foreign root -> {}; valid -> {:?}",
        expired.what, foreign.what, valid.what
    );
    ensure!(
        m.sum("tls_refused_total", &[]) == 3.0,
        "unexpected refusals:\n{}",
        m.show("tls_refused_total", &[])
    );
    Ok(())
}

/// Certificates live a minute and both proxies renew every second; a steady load of
/// HTTP on kept-alive and fresh connections, and of opaque TCP connections (each one a
/// new TLS handshake between the proxies), sees no failure while each proxy renews at
/// least twice (test 6).
pub(crate) fn certificate_rotation_under_load_drops_no_request() -> anyhow::Result<()> {
    let mesh = Mesh::start(Options {
        lifetime: "1m",
        refresh: Some(("1s", "1s")),
        ..Options::default()
    })?;
    /// (refreshes that succeeded, the certificate's expiry, inbound mTLS connections)
    fn state(pod: &Pod) -> anyhow::Result<[f64; 3]> {
        let m = pod.metrics(ADMIN)?;
        Ok([
            m.sum("identity_cert_refresh_total", &[("result", "ok")]),
            m.sum("identity_cert_expiration_timestamp_seconds", &[]),
            m.sum(
                "tcp_open_total",
                &[("direction", "inbound"), ("tls", "true")],
            ),
        ])
    }
    let before = [state(&mesh.client)?, state(&mesh.server)?];
    let load = Load::start(
        &mesh.client,
        SocketAddr::from((mesh.server.ip, APP_PORT)),
        SocketAddr::from((mesh.server.ip, ECHO_PORT)),
        &[
            Work::KeepAlive,
            Work::KeepAlive,
            Work::Fresh,
            Work::Fresh,
            Work::Echo,
        ],
    );
    // Twice each, counted from when the load began; the load runs on meanwhile, and a
    // failure ends the wait at once.
    let waited = wait_until(
        "both proxies to renew twice under load",
        Duration::from_secs(30),
        || {
            let stats = load.stats();
            if let Some(f) = stats.failures.first() {
                bail!("{} failed requests, the first: {f}", stats.failures.len());
            }
            let now = [state(&mesh.client)?, state(&mesh.server)?];
            let grew: Vec<f64> = now.iter().zip(&before).map(|(n, b)| n[0] - b[0]).collect();
            if grew.iter().all(|g| *g >= 2.0) {
                Ok(Some(now))
            } else {
                bail!("refreshes since the load began (client, server): {grew:?}")
            }
        },
    );
    let stats = load.stop();
    let after = waited?;
    ensure!(
        stats.failures.is_empty(),
        "{} failed during rotation ({} HTTP and {} echoes succeeded), the first few: {:?}",
        stats.failures.len(),
        stats.ok,
        stats.echo_ok,
        &stats.failures[..stats.failures.len().min(5)]
    );
    ensure!(
        stats.ok >= 20 && stats.fresh_ok >= 5 && stats.echo_ok >= 5,
        "too little load to mean anything: {stats:?}"
    );
    for (name, (b, a)) in ["client", "server"].iter().zip(before.iter().zip(&after)) {
        ensure!(
            a[1] > b[1],
            "the {name} proxy's certificate expiry did not move ({} -> {}): no new \
             certificate is in use",
            b[1],
            a[1]
        );
    }
    // Every echo was a new mTLS connection, handshaken while certificates changed.
    let opened = state(&mesh.server)?[2] - before[1][2];
    ensure!(
        opened >= stats.echo_ok as f64,
        "the server proxy opened {opened} inbound mTLS connections for {} echoes",
        stats.echo_ok
    );
    eprintln!(
        "rotation: {stats:?}; (refreshes, expiry, inbound mTLS connections) client {:?} -> {:?}, \
         server {:?} -> {:?}",
        before[0], after[0], before[1], after[1]
    );
    Ok(())
}

// === The mesh ===

struct Options {
    /// The service account discovery announces for the server's endpoint.
    announced_sa: &'static str,
    /// `--identity-lifetime`.
    lifetime: &'static str,
    /// The proxies' MIN_REFRESH and MAX_REFRESH, if not their defaults.
    refresh: Option<(&'static str, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            announced_sa: "server",
            lifetime: "24h",
            refresh: None,
        }
    }
}

/// The three pods and everything running in them. Fields drop in order: processes
/// first, then the namespaces.
struct Mesh {
    _processes: Vec<Process>,
    client: Pod,
    server: Pod,
    outside: NetNs,
    /// The server pod's end of the client-server veth.
    server_if: String,
    ca: CaPem,
}

impl Mesh {
    fn start(opts: Options) -> anyhow::Result<Self> {
        require_built(&["mesh-proxy", "mesh-controller", "mesh-test-app"])?;
        let (client, server) = Pod::pair("mclient", "mserver")?;
        let outside = NetNs::new("mout")?;
        let (_, ctl_for_client) = veth(&client, &outside)?;
        let (server_side, ctl_for_server) = veth(&server, &outside)?;
        let sip = server.ip;
        // The outside pod reaches the server pod's address through the server's end of
        // their own link, as a pod elsewhere in the cluster would.
        outside.run([
            "ip",
            "route",
            "add",
            &format!("{sip}/32"),
            "via",
            &server_side.to_string(),
        ])?;
        let server_if = interface_with(&server, sip)?;

        let now = SystemTime::now();
        let ca = CaPem::generate(now - DAY * 3, now + DAY * 30);
        let mut processes = Vec::new();
        let tokens = [("client", random_hex(16)), ("server", random_hex(16))];
        processes.push(start_controller(
            &outside,
            &ca,
            &tokens,
            opts.announced_sa,
            sip,
            opts.lifetime,
        )?);
        let mut app = server
            .process("app", bin_path("mesh-test-app"))
            .args(["--name", "server", "--http", &format!("0.0.0.0:{APP_PORT}")])
            .args(["--tcp-echo", &format!("0.0.0.0:{ECHO_PORT}")])
            .spawn()?;
        app.wait_for_line("listening tcp-echo", STARTUP)?;
        processes.push(app);
        for ((sa, token), (pod, ctl)) in tokens
            .iter()
            .zip([(&client, ctl_for_client), (&server, ctl_for_server)])
        {
            processes.push(start_proxy(
                pod,
                sa,
                token,
                ctl,
                &ca.anchors,
                opts.refresh,
                &[],
            )?);
        }
        Ok(Self {
            _processes: processes,
            client,
            server,
            outside,
            server_if,
            ca,
        })
    }
}

fn start_controller(
    outside: &NetNs,
    ca: &CaPem,
    tokens: &[(&str, String)],
    announced_sa: &str,
    sip: Ipv4Addr,
    lifetime: &str,
) -> anyhow::Result<Process> {
    let destinations = outside.log_dir().join("destinations.yaml");
    std::fs::write(
        &destinations,
        format!(
            "services:
  - name: server
    namespace: default
    endpoints:
      - address: \"{sip}:{APP_PORT}\"
        labels: {{pod: server-0, serviceaccount: {announced_sa}}}
        identity: {id}
  - name: server-echo
    namespace: default
    endpoints:
      - address: \"{sip}:{ECHO_PORT}\"
        labels: {{pod: server-0, serviceaccount: {announced_sa}}}
        identity: {id}
",
            id = identity(announced_sa)
        ),
    )?;
    let flags = identity_flags(outside, ca, tokens, lifetime)?;
    start_pod_controller(outside, &destinations, flags)
}

/// The controller's flags for its identity service on `0.0.0.0:`[`IDENTITY_PORT`],
/// signing with `ca`'s issuer for the service accounts (of `default`) that `tokens`
/// name, certificates living `lifetime`; the files they name are written in `ns`'s
/// scratch directory.
pub(crate) fn identity_flags(
    ns: &NetNs,
    ca: &CaPem,
    tokens: &[(&str, String)],
    lifetime: &str,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let dir = ns.log_dir();
    let write = |name: &str, contents: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let table: String = tokens
        .iter()
        .map(|(sa, token)| format!("{token} default/{sa}\n"))
        .collect();
    Ok(vec![
        "--identity-addr".into(),
        format!("0.0.0.0:{IDENTITY_PORT}").into(),
        "--identity-trust-anchors".into(),
        write("anchors.pem", &ca.anchors)?.into(),
        "--identity-issuer-cert".into(),
        write("issuer.crt", &ca.issuer_cert)?.into(),
        "--identity-issuer-key".into(),
        write("issuer.key", &ca.issuer_key)?.into(),
        "--identity-tokens".into(),
        write("tokens", &table)?.into(),
        "--identity-lifetime".into(),
        lifetime.into(),
    ])
}

/// `mesh-proxy init`, then the proxy as its uid with its identity (and `extra`
/// settings); returns once it is ready, which it is only with a certificate.
pub(crate) fn start_proxy(
    pod: &NetNs,
    sa: &str,
    token: &str,
    controller: Ipv4Addr,
    anchors: &str,
    refresh: Option<(&str, &str)>,
    extra: &[(&str, &str)],
) -> anyhow::Result<Process> {
    // The proxy runs as its own uid and must read its token, as from a projected volume.
    let token_file = pod.log_dir().join("token");
    std::fs::write(&token_file, token)?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644))?;
    let (destination, identity_addr, name) = (
        format!("{controller}:{DESTINATION_PORT}"),
        format!("{controller}:{IDENTITY_PORT}"),
        identity(sa),
    );
    let token_file = token_file.to_string_lossy();
    let mut env = vec![
        ("MESH_PROXY_DESTINATION_ADDR", destination.as_str()),
        ("MESH_PROXY_DESTINATION_CONTEXT", r#"{"ns":"default"}"#),
        ("MESH_PROXY_IDENTITY_ADDR", &identity_addr),
        ("MESH_PROXY_IDENTITY_NAME", &name),
        ("MESH_PROXY_IDENTITY_TOKEN_FILE", &token_file),
        ("MESH_PROXY_IDENTITY_TRUST_ANCHORS", anchors),
    ];
    if let Some((min, max)) = refresh {
        env.push(("MESH_PROXY_IDENTITY_MIN_REFRESH", min));
        env.push(("MESH_PROXY_IDENTITY_MAX_REFRESH", max));
    }
    env.extend_from_slice(extra);
    start_pod_proxy(pod, &env)
}

/// The name of the interface in `ns` that has `ip`.
fn interface_with(ns: &NetNs, ip: Ipv4Addr) -> anyhow::Result<String> {
    let out = ns.run(["ip", "-o", "-4", "addr", "show", "to", &format!("{ip}/32")])?;
    let out = String::from_utf8_lossy(&out);
    out.split_whitespace()
        .nth(1)
        .map(|s| s.trim_end_matches(':').to_string())
        .with_context(|| format!("no interface with {ip} in {}: {out:?}", ns.name()))
}

// === Certificates ===

/// A trust anchor and an issuer it signs, as PEM.
#[derive(Clone)]
pub(crate) struct CaPem {
    pub(crate) anchors: String,
    issuer_cert: String,
    issuer_key: String,
}

impl CaPem {
    pub(crate) fn generate(not_before: SystemTime, not_after: SystemTime) -> Self {
        let (anchors, issuer_cert, issuer_key) =
            mesh_core::ca::generate_anchor_and_issuer_between(TRUST_DOMAIN, not_before, not_after);
        Self {
            anchors,
            issuer_cert,
            issuer_key,
        }
    }
}

/// A client certificate chain and its key.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Leaf {
    /// A certificate for `name` signed by `ca`'s issuer with the controller's own CA
    /// code, as if it had been issued at `at`.
    fn issue(ca: &CaPem, name: &str, lifetime: Duration, at: SystemTime) -> anyhow::Result<Self> {
        let signer = mesh_core::ca::Ca::new(
            TRUST_DOMAIN,
            lifetime,
            &ca.issuer_cert,
            &ca.issuer_key,
            &ca.anchors,
            at,
        )?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        // The CA signs CSRs that name nothing but the identity.
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        let issued = signer
            .certify(name, csr.der(), at)
            .map_err(|e| anyhow!("certify {name}: {e}"))?;
        let mut chain = vec![CertificateDer::from(issued.leaf)];
        chain.extend(issued.chain.into_iter().map(CertificateDer::from));
        Ok(Self {
            chain,
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

// === Clients ===

/// What a rogue TLS client got.
#[derive(Debug)]
struct RogueOutcome {
    /// The server answered the request.
    accepted: bool,
    what: String,
}

/// Connects to `target` with SNI `sni`, verifying the server against `anchors` and
/// presenting `leaf`, then sends an HTTP/1.1 request and reads what comes back.
async fn rogue_request(target: SocketAddr, sni: &str, anchors: &str, leaf: Leaf) -> RogueOutcome {
    let refused = |what: String| RogueOutcome {
        accepted: false,
        what,
    };
    let config = match rogue_config(anchors, leaf) {
        Ok(c) => c,
        Err(e) => return refused(format!("client config: {e:#}")),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = match ServerName::try_from(sni.to_string()) {
        Ok(n) => n,
        Err(e) => return refused(format!("server name: {e}")),
    };
    let io = async {
        let tcp = tokio::net::TcpStream::connect(target).await?;
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(format!("GET / HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
            .await?;
        tls.flush().await?;
        let mut buf = vec![0; 4096];
        let n = tls.read(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(5), io).await {
        Err(_) => refused("timed out".into()),
        Ok(Err(e)) => refused(format!("error: {e}")),
        Ok(Ok(buf)) if buf.is_empty() => refused("closed without an answer".into()),
        Ok(Ok(buf)) => RogueOutcome {
            accepted: true,
            what: String::from_utf8_lossy(&buf).into_owned(),
        },
    }
}

fn rogue_config(anchors: &str, leaf: Leaf) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(anchors.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(leaf.chain, leaf.key)?)
}

/// A response as curl saw it.
#[derive(Debug)]
pub(crate) struct CurlResponse {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl CurlResponse {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// Runs curl in `ns` (as `uid`, if given) with `args`, and parses its response.
pub(crate) fn curl(ns: &NetNs, uid: Option<u32>, args: &[&str]) -> anyhow::Result<CurlResponse> {
    let mut argv: Vec<String> = Vec::new();
    if let Some(uid) = uid {
        argv.extend([
            "setpriv".to_string(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_string(),
        ]);
    }
    argv.extend(
        ["curl", "-sS", "--noproxy", "*", "-m", "10", "-i"]
            .iter()
            .map(|s| s.to_string()),
    );
    argv.extend(args.iter().map(|s| s.to_string()));
    let out = ns.run(&argv)?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no header end in {:?}", String::from_utf8_lossy(&out)))?;
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(CurlResponse {
        status,
        headers,
        body: out[split + 4..].to_vec(),
    })
}

// === Capture ===

/// tcpdump on one interface of a pod, writing every packet to a file as it comes.
struct Capture {
    process: Process,
    file: PathBuf,
}

impl Capture {
    fn start(ns: &NetNs, interface: &str) -> anyhow::Result<Self> {
        let file = ns.log_dir().join(format!("{interface}.pcap"));
        // tcpdump says it is listening on stderr: fold that into stdout to wait on it.
        let mut process = ns
            .process("tcpdump", "sh")
            .arg("-c")
            .arg(format!(
                "command -v tcpdump >/dev/null || {{ echo 'tcpdump is not installed'; exit 127; }}; \
                 exec tcpdump -i {interface} -n -U --immediate-mode -s 0 -w {} 2>&1",
                file.display()
            ))
            .spawn()?;
        process.wait_for_line("listening on", STARTUP)?;
        Ok(Self { process, file })
    }

    /// Stops tcpdump (SIGTERM, so it flushes and reports) and returns what it captured.
    fn stop(&mut self) -> anyhow::Result<Vec<u8>> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.process.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let captured = self
            .process
            .wait_for_line("packets captured", STARTUP)
            .context("tcpdump did not report on stopping")?;
        eprintln!("tcpdump: {captured}");
        let dropped = self.process.wait_for_line("dropped by kernel", STARTUP)?;
        ensure!(
            dropped.trim_start().starts_with("0 "),
            "tcpdump lost packets: {dropped}"
        );
        self.read()
    }

    /// What the capture file holds so far.
    fn read(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// === Load ===

#[derive(Clone, Debug, Default)]
struct LoadStats {
    /// Successful HTTP requests.
    ok: u64,
    /// Of those, the ones on a connection opened for that one request.
    fresh_ok: u64,
    /// Opaque TCP connections that echoed back exactly what they sent.
    echo_ok: u64,
    failures: Vec<String>,
}

/// What a load worker does, over and over.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Work {
    /// HTTP/1.1 GETs on one kept-alive connection (a new one only after a failure).
    KeepAlive,
    /// One HTTP/1.1 GET per new connection.
    Fresh,
    /// One opaque TCP echo per new connection: the client proxy cannot pool these, so
    /// each is a new TLS handshake between the proxies, with whatever certificates they
    /// hold at that moment.
    Echo,
}

/// Traffic without pause from inside a pod (so through its proxy) to the server pod,
/// by a worker per entry of `work`, on a thread of its own in the pod's namespace.
struct Load {
    stats: Arc<Mutex<LoadStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    fn start(pod: &NetNs, http: SocketAddr, echo: SocketAddr, work: &[Work]) -> Self {
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let path = netns_path(pod);
        let (s, st, work) = (stats.clone(), stop.clone(), work.to_vec());
        let thread = std::thread::spawn(move || {
            enter_netns(&path)?;
            block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for w in work {
                    let target = if w == Work::Echo { echo } else { http };
                    tasks.spawn(load_worker(target, w, s.clone(), st.clone()));
                }
                while tasks.join_next().await.is_some() {}
            });
            Ok(())
        });
        Self {
            stats,
            stop,
            thread: Some(thread),
        }
    }

    fn stats(&self) -> LoadStats {
        self.stats.lock().expect("load stats").clone()
    }

    /// Lets every request in flight finish, then returns the stats.
    fn stop(mut self) -> LoadStats {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let failure = match thread.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("load thread: {e:#}")),
                Err(_) => Some("load thread panicked".to_string()),
            };
            if let Some(f) = failure {
                self.stats.lock().expect("load stats").failures.push(f);
            }
        }
        self.stats()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long one request (or echo) may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn load_worker(
    target: SocketAddr,
    work: Work,
    stats: Arc<Mutex<LoadStats>>,
    stop: Arc<AtomicBool>,
) {
    let record = |outcome: anyhow::Result<()>| {
        let mut s = stats.lock().expect("load stats");
        match outcome {
            Ok(()) if work == Work::Echo => s.echo_ok += 1,
            Ok(()) => {
                s.ok += 1;
                if work == Work::Fresh {
                    s.fresh_ok += 1;
                }
            }
            Err(e) => s.failures.push(format!("{work:?}: {e:#}")),
        }
    };
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        if work == Work::Echo {
            n += 1;
            record(timed(echo_once(target, n)).await);
            continue;
        }
        let mut sender = match timed(http_connect(target)).await {
            Ok(s) => s,
            Err(e) => {
                record(Err(e.context("connect")));
                continue;
            }
        };
        loop {
            let outcome = timed(http_get(&mut sender, target)).await;
            let failed = outcome.is_err();
            record(outcome);
            if failed || work == Work::Fresh || stop.load(Relaxed) {
                break;
            }
        }
    }
}

async fn timed<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("timed out after {REQUEST_TIMEOUT:?}"))?
}

async fn http_connect(
    target: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn http_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    target: SocketAddr,
) -> anyhow::Result<()> {
    sender.ready().await?;
    let req = http::Request::get("/")
        .header(http::header::HOST, target.to_string())
        .body(Empty::<Bytes>::new())?;
    let rsp = sender.send_request(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    ensure!(
        status == 200 && body.as_ref() == b"hello from server\n",
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

async fn echo_once(target: SocketAddr, n: u64) -> anyhow::Result<()> {
    let sent = format!("echo {n} through the mesh\n").repeat(8);
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    stream.write_all(sent.as_bytes()).await?;
    stream.shutdown().await?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await?;
    ensure!(
        got == sent.as_bytes(),
        "echo {n}: sent {} bytes, got back {:?}",
        sent.len(),
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

// === Namespaces from Rust ===

fn netns_path(ns: &NetNs) -> PathBuf {
    Path::new("/run/netns").join(ns.name())
}

/// Moves the calling thread into the network namespace at `path`: sockets it opens
/// from then on live there.
fn enter_netns(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", path.display()))
}

/// Runs `f` on a thread of its own inside `ns`'s network namespace.
fn in_netns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = netns_path(ns);
    let at = &path;
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_netns(at)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("the thread in {} panicked", path.display()))?
    })
}

/// A current-thread runtime, so every socket is opened by this (namespaced) thread.
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
