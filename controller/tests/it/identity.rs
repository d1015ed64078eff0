//! The identity service in-process, called with the real tonic client over loopback:
//! what a proxy gets for a good request, and what each bad one is told and counted as.

use mesh_api::identity::{identity_client::IdentityClient, CertifyRequest, CertifyResponse};
use mesh_controller::{
    identity::{self, BootstrapTokens, Ca},
    Config, IdentityConfig, IdentityTokens, Running,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, SignatureAlgorithm};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};
use tonic::{
    transport::{Channel, Endpoint},
    Code,
};
use x509_parser::prelude::{FromDer, X509Certificate};

const WEB: &str = "web.default.serviceaccount.identity.mesh.cluster.local";
const API: &str = "api.default.serviceaccount.identity.mesh.cluster.local";
const WEB_TOKEN: &[u8] = b"t0k3n-web";
const SERVER: &str = "mesh-identity.mesh-system.serviceaccount.identity.mesh.cluster.local";
const DESTINATION: &str = "mesh-destination.mesh-system.serviceaccount.identity.mesh.cluster.local";

struct Fixture {
    running: Running,
    anchor: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t0k3n-web default/web\nt0k3n-api default/api\n").unwrap();
    // Discovery answers once it has read its file.
    std::fs::write(dir.path().join("discovery.yaml"), "services: []\n").unwrap();
    let (anchor, cert, key) =
        identity::generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
    let ca = Ca::new(
        "cluster.local",
        identity::ca::DEFAULT_LIFETIME,
        &cert,
        &key,
        &anchor,
        SystemTime::now(),
    )
    .unwrap();
    let config = Config {
        identity: Some(IdentityConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ca: Arc::new(ca),
            tokens: IdentityTokens::Bootstrap(Arc::new(BootstrapTokens::load(&tokens).unwrap())),
            server_name: SERVER.to_string(),
            destination_server_name: DESTINATION.to_string(),
        }),
        ..Config::local(dir.path().join("discovery.yaml"))
    };
    let running = config.build().await.unwrap();
    Fixture {
        running,
        anchor,
        _dir: dir,
    }
}

impl Fixture {
    async fn client(&self) -> IdentityClient<Channel> {
        self.client_for(SERVER, &self.anchor)
    }

    /// A client that trusts `anchor_pem` and expects the service to be `server`.
    fn client_for(&self, server: &str, anchor_pem: &str) -> IdentityClient<Channel> {
        let addr = self.running.identity_addr.expect("identity is on");
        IdentityClient::new(tls_channel(addr, server, anchor_pem))
    }
}

/// A TLS channel to `addr` that trusts `anchor_pem` and expects `server`.
fn tls_channel(addr: std::net::SocketAddr, server: &str, anchor_pem: &str) -> Channel {
    {
        let mut roots = rustls::RootCertStore::empty();
        for der in pem_certificates(anchor_pem) {
            roots.add(der).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let name = ServerName::try_from(server.to_string()).unwrap();
        mesh_api::tls::connect_lazy(&endpoint, Arc::new(tls), name)
    }
}

impl Fixture {
    fn count(&self, result: &str) -> u64 {
        self.running.metrics.certify_total(result)
    }
}

fn csr_with(alg: &'static SignatureAlgorithm, identity: &str) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::DnsName(identity.to_string().try_into().unwrap())];
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn csr(identity: &str) -> Vec<u8> {
    csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, identity)
}

fn request(identity: &str, token: &[u8], csr: Vec<u8>) -> CertifyRequest {
    CertifyRequest {
        identity: identity.to_string(),
        token: token.to_vec(),
        certificate_signing_request: csr,
    }
}

fn pem_certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| CertificateDer::from(p.unwrap().contents))
        .collect()
}

/// Verifies the response's chain up to `anchor_pem` for `identity`, as a peer would.
fn verify(response: &CertifyResponse, anchor_pem: &str, identity: &str) {
    let anchor = x509_parser::pem::Pem::iter_from_buffer(anchor_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .contents;
    let anchor = CertificateDer::from(anchor);
    let anchors = [webpki::anchor_from_trusted_cert(&anchor).unwrap()];
    let leaf = CertificateDer::from(response.leaf_certificate.as_slice());
    let intermediates: Vec<_> = response
        .intermediate_certificates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let now = UnixTime::now();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &anchors,
            &intermediates,
            now,
            usage,
            None,
            None,
        )
        .unwrap();
    }
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(identity).unwrap())
        .unwrap();

    let (_, cert) = X509Certificate::from_der(&response.leaf_certificate).unwrap();
    let valid_until = response.valid_until.unwrap();
    assert_eq!(valid_until.seconds, cert.validity().not_after.timestamp());
    assert_eq!(valid_until.nanos, 0);
    let left = valid_until.seconds
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    // 24 h and 20 s of skew allowance, minus however long the test took.
    assert!((24 * 3600..=24 * 3600 + 20).contains(&left), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_over_grpc() {
    let fixture = start().await;
    let mut client = fixture.client().await;

    let good = client
        .certify(request(WEB, WEB_TOKEN, csr(WEB)))
        .await
        .expect("a good request is certified")
        .into_inner();
    verify(&good, &fixture.anchor, WEB);
    assert_eq!(fixture.count("ok"), 1);

    let bad_token = client
        .certify(request(WEB, b"guess", csr(WEB)))
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::Unauthenticated, "{bad_token:?}");
    assert!(
        bad_token.message().starts_with("bad token: "),
        "{bad_token:?}"
    );
    assert_eq!(fixture.count("bad_token"), 1);

    let mismatch = client
        .certify(request(API, WEB_TOKEN, csr(API)))
        .await
        .unwrap_err();
    assert_eq!(mismatch.code(), Code::PermissionDenied, "{mismatch:?}");
    assert_eq!(mismatch.message(), format!("token is for {WEB}, not {API}"));
    assert_eq!(fixture.count("identity_mismatch"), 1);

    let malformed = client
        .certify(request(WEB, WEB_TOKEN, b"not a csr".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
    assert!(
        malformed.message().contains("malformed CSR"),
        "{malformed:?}"
    );
    assert_eq!(fixture.count("malformed_csr"), 1);

    // The CSR names another identity than the token and request do.
    let csr_mismatch = client
        .certify(request(WEB, WEB_TOKEN, csr(API)))
        .await
        .unwrap_err();
    assert_eq!(
        csr_mismatch.code(),
        Code::FailedPrecondition,
        "{csr_mismatch:?}"
    );
    assert!(csr_mismatch.message().contains(API), "{csr_mismatch:?}");
    assert_eq!(fixture.count("identity_mismatch"), 2);

    let p384 = client
        .certify(request(
            WEB,
            WEB_TOKEN,
            csr_with(&rcgen::PKCS_ECDSA_P384_SHA384, WEB),
        ))
        .await
        .unwrap_err();
    assert_eq!(p384.code(), Code::FailedPrecondition, "{p384:?}");
    assert!(p384.message().contains("ECDSA P-256"), "{p384:?}");
    assert_eq!(fixture.count("unsupported_key"), 1);

    let empty = client
        .certify(request("", WEB_TOKEN, csr(WEB)))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    assert_eq!(fixture.count("invalid_request"), 1);

    // Each call was counted once, and the counts are what /metrics shows.
    assert_eq!(fixture.count("ok"), 1);
    assert_eq!(fixture.count("bad_token"), 1);
    let text = fixture.running.metrics.render(&fixture.running.index);
    for line in [
        "identity_certify_total{result=\"ok\"} 1",
        "identity_certify_total{result=\"bad_token\"} 1",
        "identity_certify_total{result=\"identity_mismatch\"} 2",
        "identity_certify_total{result=\"malformed_csr\"} 1",
        "identity_certify_total{result=\"unsupported_key\"} 1",
        "identity_certify_total{result=\"invalid_request\"} 1",
        "identity_certify_total{result=\"weak_key\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }

    fixture.running.shutdown();
    fixture.running.wait().await.unwrap();
}

/// The token goes only to the real identity service, over TLS: a client that expects
/// another name, or trusts another root, never completes a call, and a client that
/// speaks plaintext is not served. None of them is counted as a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_is_served_only_over_tls_to_the_right_name() {
    let fixture = start().await;

    let wrong_name = fixture
        .client_for(
            "mesh-destination.mesh-system.serviceaccount.identity.mesh.cluster.local",
            &fixture.anchor,
        )
        .certify(request(WEB, WEB_TOKEN, csr(WEB)))
        .await
        .unwrap_err();
    assert_eq!(wrong_name.code(), Code::Unavailable, "{wrong_name:?}");
    let text = format!("{wrong_name:?}");
    assert!(
        text.contains("invalid peer certificate") && text.contains("NotValidForName"),
        "{text}"
    );

    let (other_anchor, _, _) =
        identity::generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
    let other_root = fixture
        .client_for(SERVER, &other_anchor)
        .certify(request(WEB, WEB_TOKEN, csr(WEB)))
        .await
        .unwrap_err();
    assert_eq!(other_root.code(), Code::Unavailable, "{other_root:?}");
    // The other root has the same subject, so webpki finds it and the signature fails.
    let text = format!("{other_root:?}");
    assert!(text.contains("invalid peer certificate"), "{text}");

    let addr = fixture.running.identity_addr.unwrap();
    let plaintext = IdentityClient::connect(format!("http://{addr}")).await;
    let refused = match plaintext {
        Err(e) => format!("{e:?}"),
        Ok(mut client) => {
            // The TLS server reads the HTTP/2 preface as a bad ClientHello and
            // answers with an alert: a transport or protocol error, never an answer.
            let status = client
                .certify(request(WEB, WEB_TOKEN, csr(WEB)))
                .await
                .expect_err("plaintext is not served");
            format!("{status:?}")
        }
    };
    assert!(!refused.is_empty());

    for result in ["ok", "bad_token", "invalid_request"] {
        assert_eq!(fixture.count(result), 0, "{result}");
    }
    // The right client on the same server is answered: the refusals above were
    // about the channel, not a broken server.
    fixture
        .client()
        .await
        .certify(request(WEB, WEB_TOKEN, csr(WEB)))
        .await
        .expect("certified over TLS");
    assert_eq!(fixture.count("ok"), 1);

    fixture.running.shutdown();
    fixture.running.wait().await.unwrap();
}

/// With identity on, discovery is TLS too, under its own name: a proxy can verify who
/// tells it where traffic goes. Plaintext, or the identity service's name, fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_served_over_tls_when_identity_is_on() {
    use mesh_api::destination::{destination_client::DestinationClient, GetDestination};
    let fixture = start().await;
    let addr = fixture.running.destination_addr;
    let get = || GetDestination {
        path: "web.default.svc.cluster.local:80".into(),
        context_token: String::new(),
    };

    let mut client = DestinationClient::new(tls_channel(addr, DESTINATION, &fixture.anchor));
    let mut stream = client
        .get(get())
        .await
        .expect("served over TLS")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer");
    assert!(first.is_ok(), "{first:?}");

    let wrong = DestinationClient::new(tls_channel(addr, SERVER, &fixture.anchor))
        .get(get())
        .await
        .unwrap_err();
    assert!(
        format!("{wrong:?}").contains("NotValidForName"),
        "{wrong:?}"
    );

    let plaintext = match DestinationClient::connect(format!("http://{addr}")).await {
        Err(e) => Err(format!("{e:?}")),
        Ok(mut c) => c.get(get()).await.map(|_| ()).map_err(|e| format!("{e:?}")),
    };
    assert!(plaintext.is_err(), "plaintext discovery was served");

    fixture.running.shutdown();
    fixture.running.wait().await.unwrap();
}

/// Without the issuer flags nothing listens for identity.
#[tokio::test]
async fn identity_is_off_without_an_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::local(dir.path().join("discovery.yaml"));
    let running = config.build().await.unwrap();
    assert_eq!(running.identity_addr, None);
    running.shutdown();
    running.wait().await.unwrap();
}

/// Cluster mode on the fake API server: a TokenReview RBAC forbids (403, naming the
/// controller's account and the missing rule) is the controller's problem: counted
/// in `identity_token_review_errors_total{reason="forbidden"}` (and logged at warn),
/// while the proxy is told only "unauthenticated".
#[tokio::test]
async fn a_forbidden_token_review_is_counted_and_the_caller_told_only_unauthenticated() {
    use mesh_api::identity::identity_server::Identity as _;
    let kube = mesh_kube_fake::FakeKube::start().await.unwrap();
    let controller = "system:serviceaccount:mesh-system:mesh-controller";
    kube.add_token("web-token", "system:serviceaccount:default:web", &[]);
    let (anchor, cert, key) =
        identity::generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
    let ca = Ca::new(
        "cluster.local",
        identity::ca::DEFAULT_LIFETIME,
        &cert,
        &key,
        &anchor,
        SystemTime::now(),
    )
    .unwrap();
    let metrics = Arc::new(mesh_controller::metrics::Metrics::default());
    let service = identity::IdentityService::new(
        Arc::new(ca),
        Arc::new(identity::TokenReview::new(kube.client().unwrap())),
        Arc::clone(&metrics),
    );
    let certify = || service.certify(tonic::Request::new(request(WEB, b"web-token", csr(WEB))));

    // Allowed to review: the token proves web, which gets its certificate.
    let issued = certify().await.expect("certified").into_inner();
    verify(&issued, &anchor, WEB);

    kube.forbid_token_reviews(Some(controller));
    let status = certify().await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "unauthenticated");
    assert_eq!(metrics.token_review_errors_total("forbidden"), 1);
    assert_eq!(metrics.token_review_errors_total("unavailable"), 0);
    let page = metrics.render(&mesh_controller::index::Index::new(
        "cluster.local",
        "cluster.local",
    ));
    assert!(
        page.contains("identity_token_review_errors_total{reason=\"forbidden\"} 1\n"),
        "{page}"
    );

    // Allowed again: certified again.
    kube.forbid_token_reviews(None);
    certify().await.expect("certified once RBAC allows");
}
