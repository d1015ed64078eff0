//! The real controller, in process on loopback: discovery from a file the test writes
//! (`discovery.yaml` in [`ControlPlane::dir`]) and, when asked, the identity service
//! with a fresh trust anchor and the bootstrap tokens given.

use mesh_controller::{
    identity::{self, BootstrapTokens, Ca},
    Config, IdentityConfig, IdentityTokens, Running,
};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

pub struct ControlPlane {
    pub running: Running,
    /// The trust anchor (PEM), when identity is on.
    pub anchor: String,
    /// The identity service's CA, when identity is on (for fakes that serve as the
    /// control plane, such as the policy service's).
    pub ca: Option<Arc<Ca>>,
    pub dir: tempfile::TempDir,
}

/// Identity settings for [`start`]: the bootstrap tokens file's lines
/// (`<token> <ns>/<sa>`) and the certificates' lifetime.
pub struct WithIdentity<'a> {
    pub tokens: &'a str,
    pub lifetime: Duration,
}

/// Starts the controller on the file backend with `discovery` as its file's first
/// content, and identity when `identity` is given.
pub async fn start(discovery: &str, identity: Option<WithIdentity<'_>>) -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("discovery.yaml"), discovery).unwrap();
    let mut anchor = String::new();
    let mut issuer = None;
    let identity = identity.map(|id| {
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, id.tokens).unwrap();
        let (a, cert, key) =
            identity::generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
        let ca = Ca::new(
            "cluster.local",
            id.lifetime,
            &cert,
            &key,
            &a,
            SystemTime::now(),
        )
        .unwrap();
        anchor = a;
        let ca = Arc::new(ca);
        issuer = Some(ca.clone());
        IdentityConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ca,
            tokens: IdentityTokens::Bootstrap(Arc::new(BootstrapTokens::load(&tokens).unwrap())),
            server_name: identity::default_server_name("mesh-system", "cluster.local"),
            destination_server_name: identity::tls::service_identity(
                identity::tls::DESTINATION_SERVICE_ACCOUNT,
                "mesh-system",
                "cluster.local",
            ),
        }
    });
    let config = Config {
        identity,
        ..Config::local(dir.path().join("discovery.yaml"))
    };
    let running = config.build().await.unwrap();
    ControlPlane {
        running,
        anchor,
        ca: issuer,
        dir,
    }
}
