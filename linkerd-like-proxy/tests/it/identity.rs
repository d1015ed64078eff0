//! The proxy's identity client against the controller's real identity service, both
//! in process on loopback: the certificate gates `/ready`, its expiry is exported,
//! bad tokens are retried and counted, renewals happen, and a failing renewal keeps
//! the current certificate in use.

use crate::support::{
    control_plane::{self, ControlPlane, WithIdentity},
    *,
};
use mesh_controller::identity;
use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};
use x509_parser::prelude::{FromDer, X509Certificate};

const WEB: &str = "web.default.serviceaccount.identity.mesh.cluster.local";
const WEB_TOKEN: &str = "t0k3n-web";

/// The controller with its identity service on, issuing certificates of `lifetime`.
async fn controller(lifetime: Duration) -> ControlPlane {
    let tokens = format!("{WEB_TOKEN} default/web\n");
    let identity = WithIdentity {
        tokens: &tokens,
        lifetime,
    };
    control_plane::start("services: []\n", Some(identity)).await
}

impl ControlPlane {
    /// The proxy's token file, holding `token`.
    fn token_file(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join("proxy-token");
        std::fs::write(&path, token).unwrap();
        path
    }

    /// A proxy for `web` that presents `token` and renews within `refresh` (min, max).
    async fn web_proxy(&self, token: &str, refresh: (&str, &str)) -> TestProxy {
        let addr = self.running.identity_addr.expect("identity is on");
        proxy(&[
            ("MESH_PROXY_IDENTITY_ADDR", addr.to_string()),
            ("MESH_PROXY_IDENTITY_NAME", WEB.to_string()),
            (
                "MESH_PROXY_IDENTITY_TOKEN_FILE",
                self.token_file(token).display().to_string(),
            ),
            ("MESH_PROXY_IDENTITY_TRUST_ANCHORS", self.anchor.clone()),
            ("MESH_PROXY_IDENTITY_MIN_REFRESH", refresh.0.to_string()),
            ("MESH_PROXY_IDENTITY_MAX_REFRESH", refresh.1.to_string()),
        ])
        .await
    }
}

/// The status code `/ready` answers with.
async fn ready(p: &TestProxy) -> u16 {
    let rsp = raw(
        p.admin,
        b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    rsp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {rsp:?}"))
}

/// The value of the series `name` (with its labels) in `/metrics`, if present.
fn metric(p: &TestProxy, series: &str) -> Option<i64> {
    p.metrics().lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

fn refreshes(p: &TestProxy, result: &str) -> i64 {
    metric(
        p,
        &format!("identity_cert_refresh_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0)
}

fn not_after(der: &[u8]) -> i64 {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.validity().not_after.timestamp()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Waits for an async condition, polling, or fails after 15s.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_with_a_certificate() {
    let ctl = controller(identity::ca::DEFAULT_LIFETIME).await;
    let p = ctl.web_proxy("wrong-token", ("50ms", "1h")).await;

    // A refused token: retried, counted on both sides, and the proxy stays unready.
    wait_until("two refreshes failed", || refreshes(&p, "failure") >= 2).await;
    assert_eq!(ready(&p).await, 503);
    assert_eq!(refreshes(&p, "ok"), 0);
    assert!(ctl.running.metrics.certify_total("bad_token") >= 2);
    assert_eq!(
        metric(&p, "identity_cert_expiration_timestamp_seconds"),
        None
    );
    let identity = p.proxy.identity().expect("identity is on");
    assert_eq!(identity.name(), WEB);
    assert!(identity.credentials().is_none());

    // The token file is re-read at every request: the right token is picked up.
    ctl.token_file(&format!("{WEB_TOKEN}\n"));
    wait_for("the proxy is ready", || async { ready(&p).await == 200 }).await;
    assert_eq!(refreshes(&p, "ok"), 1);
    let creds = identity.credentials().expect("a certificate is held");
    assert_eq!(&*creds.name, WEB);
    assert_eq!(creds.chain.len(), 1);
    let expiry = not_after(&creds.leaf);
    assert_eq!(
        metric(&p, "identity_cert_expiration_timestamp_seconds"),
        Some(expiry)
    );
    // 24 h (and the CA's 20 s of skew allowance) from now.
    let left = expiry - unix_now();
    assert!((24 * 3600 - 10..=24 * 3600 + 20).contains(&left), "{left}");
    assert_eq!(
        SystemTime::UNIX_EPOCH + Duration::from_secs(expiry as u64),
        creds.not_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_and_keeps_the_certificate_while_renewal_fails() {
    // Short certificates and a 500ms maximum refresh: renewals come quickly.
    let ctl = controller(Duration::from_secs(60)).await;
    let p = ctl.web_proxy(WEB_TOKEN, ("100ms", "500ms")).await;
    let identity = p.proxy.identity().expect("identity is on");
    let mut certs = identity.watch();

    wait_until("the first certificate", || refreshes(&p, "ok") >= 1).await;
    let first = certs.borrow_and_update().clone().expect("a certificate");
    wait_until("two renewals", || refreshes(&p, "ok") >= 3).await;
    assert_eq!(ready(&p).await, 200);
    let renewed = certs.borrow_and_update().clone().expect("a certificate");
    assert_ne!(first.leaf, renewed.leaf);
    assert!(renewed.not_after >= first.not_after);
    // The key stays the same: only the certificate is renewed.
    assert_eq!(
        rcgen::KeyPair::try_from(&renewed.key)
            .unwrap()
            .public_key_raw(),
        rcgen::KeyPair::try_from(&first.key)
            .unwrap()
            .public_key_raw()
    );
    assert_eq!(refreshes(&p, "failure"), 0);

    // Renewal fails: the current certificate stays in use, the proxy stays ready.
    ctl.token_file("revoked");
    let failures = ctl.running.metrics.certify_total("bad_token");
    wait_until("renewals fail", || {
        refreshes(&p, "failure") >= 2 && ctl.running.metrics.certify_total("bad_token") > failures
    })
    .await;
    let ok = refreshes(&p, "ok");
    let held = identity.credentials().expect("still a certificate");
    assert_eq!(ready(&p).await, 200);
    assert!(held.not_after > SystemTime::now());
    assert_eq!(
        metric(&p, "identity_cert_expiration_timestamp_seconds"),
        Some(not_after(&held.leaf))
    );

    // And renewal resumes once the token is good again.
    ctl.token_file(WEB_TOKEN);
    wait_until("renewals resume", || refreshes(&p, "ok") > ok).await;
    assert_ne!(identity.credentials().unwrap().leaf, held.leaf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_retried_and_counted() {
    let (addr, _refusing) = refusing();
    let anchor = identity::generate_anchor_and_issuer("cluster.local", Duration::from_secs(60)).0;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, WEB_TOKEN).unwrap();
    let p = proxy(&[
        ("MESH_PROXY_IDENTITY_ADDR", addr.to_string()),
        ("MESH_PROXY_IDENTITY_NAME", WEB.to_string()),
        (
            "MESH_PROXY_IDENTITY_TOKEN_FILE",
            token.display().to_string(),
        ),
        ("MESH_PROXY_IDENTITY_TRUST_ANCHORS", anchor),
        ("MESH_PROXY_IDENTITY_MIN_REFRESH", "20ms".to_string()),
        ("MESH_PROXY_IDENTITY_MAX_REFRESH", "50ms".to_string()),
    ])
    .await;
    wait_until("refreshes fail", || refreshes(&p, "failure") >= 3).await;
    assert_eq!(ready(&p).await, 503);
    assert_eq!(refreshes(&p, "ok"), 0);
    // Live all the same: only readiness waits for the certificate.
    let live = raw(
        p.admin,
        b"GET /live HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
}

/// The token is sent only to the identity service named by
/// `MESH_PROXY_IDENTITY_SVC_NAME`, over TLS: a service with another name is refused
/// before any call, and a listener that merely accepts sees a TLS ClientHello, never
/// the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_only_to_the_named_identity_service_over_tls() {
    let ctl = controller(identity::ca::DEFAULT_LIFETIME).await;
    let env = |addr: std::net::SocketAddr, svc: &str| {
        vec![
            ("MESH_PROXY_IDENTITY_ADDR", addr.to_string()),
            ("MESH_PROXY_IDENTITY_NAME", WEB.to_string()),
            ("MESH_PROXY_IDENTITY_SVC_NAME", svc.to_string()),
            (
                "MESH_PROXY_IDENTITY_TOKEN_FILE",
                ctl.token_file(WEB_TOKEN).display().to_string(),
            ),
            ("MESH_PROXY_IDENTITY_TRUST_ANCHORS", ctl.anchor.clone()),
            ("MESH_PROXY_IDENTITY_MIN_REFRESH", "20ms".to_string()),
            ("MESH_PROXY_IDENTITY_MAX_REFRESH", "50ms".to_string()),
        ]
    };

    // The real service, expected under another name: the handshake fails, so no
    // call is made at all.
    let addr = ctl.running.identity_addr.unwrap();
    let other = "mesh-destination.mesh-system.serviceaccount.identity.mesh.cluster.local";
    let p = proxy(&env(addr, other)).await;
    wait_until("refreshes fail", || refreshes(&p, "failure") >= 2).await;
    assert_eq!(ready(&p).await, 503);
    for result in ["ok", "bad_token", "identity_mismatch", "invalid_request"] {
        assert_eq!(ctl.running.metrics.certify_total(result), 0, "{result}");
    }
    drop(p);

    // Whatever listens at the address sees TLS, not the token.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let capture = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the client gives up on this silent server, or the timeout.
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let default = "mesh-identity.mesh-system.serviceaccount.identity.mesh.cluster.local";
    let _p = proxy(&env(addr, default)).await;
    let seen = tokio::task::spawn_blocking(move || capture.join().unwrap())
        .await
        .unwrap();
    assert!(!seen.is_empty(), "the proxy connected and sent something");
    assert_eq!(seen[0], 0x16, "a TLS handshake record: {seen:02x?}");
    assert!(
        !seen
            .windows(WEB_TOKEN.len())
            .any(|w| w == WEB_TOKEN.as_bytes()),
        "the token was sent in the clear"
    );
    // The ClientHello names the service it expects.
    assert!(seen.windows(default.len()).any(|w| w == default.as_bytes()));
}
