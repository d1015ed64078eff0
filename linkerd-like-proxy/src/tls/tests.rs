use super::*;
use crate::identity::test_credentials;
use mesh_controller::identity::{self as ctl, Ca};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEB: &str = "web.default.serviceaccount.identity.mesh.cluster.local";
const API: &str = "api.default.serviceaccount.identity.mesh.cluster.local";
const HOUR: Duration = Duration::from_secs(3600);

struct Root {
    ca: Ca,
    anchor: CertificateDer<'static>,
}

/// A trust root whose issuer is valid from three hours ago for four hours, so that it
/// can sign certificates that have already expired.
fn root() -> Root {
    let now = SystemTime::now();
    let (anchor, cert, key) =
        ctl::generate_anchor_and_issuer_between("cluster.local", now - 3 * HOUR, now + HOUR);
    let ca = Ca::new("cluster.local", HOUR, &cert, &key, &anchor, now).unwrap();
    let der = x509_parser::pem::Pem::iter_from_buffer(anchor.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .contents;
    Root {
        ca,
        anchor: CertificateDer::from(der),
    }
}

/// A proxy's TLS for `name`, trusting `trust`, with a certificate from `signer`
/// issued at `at`.
fn mesh(name: &str, trust: &Root, signer: &Root, at: SystemTime) -> MeshTls {
    let creds = Arc::new(test_credentials(&signer.ca, name, at));
    let (_tx, rx) = watch::channel(Some(creds));
    // The sender may go: the receiver keeps the last value.
    MeshTls::new(name, std::slice::from_ref(&trust.anchor), rx).unwrap()
}

/// Runs one handshake: client `c` expecting `expect`, server `s`.
async fn handshake(
    c: &MeshTls,
    s: &MeshTls,
    expect: &str,
) -> (
    Result<ClientStream<tokio::io::DuplexStream>, HandshakeFailed>,
    Result<Accepted<tokio::io::DuplexStream>, (Refused, std::io::Error)>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::join!(c.connect(a, expect, Alpn::Opaque), s.accept(b))
}

#[tokio::test]
async fn mutual_tls_1_3_with_hybrid_key_exchange_and_identities() {
    let root = root();
    let now = SystemTime::now();
    let (web, api) = (mesh(WEB, &root, &root, now), mesh(API, &root, &root, now));
    let (client, server) = handshake(&web, &api, API).await;
    let mut client = client.unwrap();
    let mut server = server.unwrap();
    assert_eq!(&*server.client, WEB);
    assert_eq!(server.alpn, Some(Alpn::Opaque));
    let (_, conn) = client.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519MLKEM768)
    );
    // Bytes flow both ways.
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0; 4];
    server.stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let root = root();
    let now = SystemTime::now();
    let (web, api) = (mesh(WEB, &root, &root, now), mesh(API, &root, &root, now));
    // Discovery said the endpoint is `web`, but `api` answers.
    let (client, _) = handshake(&web, &api, WEB).await;
    let err = client.expect_err("refused");
    assert_eq!(err.reason, Refused::WrongIdentity, "{err:?}");
}

#[tokio::test]
async fn another_trust_root_is_refused_both_ways() {
    let (root, other) = (self::root(), self::root());
    let now = SystemTime::now();
    let web = mesh(WEB, &root, &root, now);
    // A server whose certificate comes from another root.
    let rogue = mesh(API, &root, &other, now);
    let (client, _) = handshake(&web, &rogue, API).await;
    assert_eq!(client.expect_err("refused").reason, Refused::Untrusted);
    // A client whose certificate comes from another root.
    let api = mesh(API, &root, &root, now);
    let rogue = mesh(WEB, &root, &other, now);
    let (_, server) = handshake(&rogue, &api, API).await;
    assert_eq!(server.err().expect("refused").0, Refused::Untrusted);
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let root = root();
    let now = SystemTime::now();
    let api = mesh(API, &root, &root, now);
    let stale = mesh(WEB, &root, &root, now - 2 * HOUR - Duration::from_secs(60));
    let (_, server) = handshake(&stale, &api, API).await;
    assert_eq!(server.err().expect("refused").0, Refused::Expired);
    let (client, _) = handshake(&api, &stale, WEB).await;
    assert_eq!(client.expect_err("refused").reason, Refused::Expired);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let root = root();
    let api = mesh(API, &root, &root, SystemTime::now());
    // A client that trusts the root but has no certificate yet.
    let (_tx, rx) = watch::channel(None);
    let bare = MeshTls::new(WEB, std::slice::from_ref(&root.anchor), rx).unwrap();
    let (_, server) = handshake(&bare, &api, API).await;
    assert_eq!(server.err().expect("refused").0, Refused::NoClientCert);
}

#[tokio::test]
async fn a_renewed_certificate_is_used_from_the_next_handshake() {
    let root = root();
    let now = SystemTime::now();
    let api = mesh(API, &root, &root, now);
    let first = Arc::new(test_credentials(&root.ca, WEB, now));
    let (tx, rx) = watch::channel(Some(first.clone()));
    let web = MeshTls::new(WEB, std::slice::from_ref(&root.anchor), rx).unwrap();
    let serial = |s: &Accepted<_>| {
        let (_, conn) = s.stream.get_ref();
        conn.peer_certificates().unwrap()[0].clone()
    };
    let (_, a) = handshake(&web, &api, API).await;
    assert_eq!(serial(&a.unwrap()), first.leaf);
    let second = Arc::new(test_credentials(&root.ca, WEB, now));
    tx.send_replace(Some(second.clone()));
    let (_, b) = handshake(&web, &api, API).await;
    assert_eq!(serial(&b.unwrap()), second.leaf);
}

#[test]
fn untrusted_anchor_bytes_are_a_config_error() {
    let (_tx, rx) = watch::channel(None);
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let err = MeshTls::new(WEB, &[junk], rx).err().expect("junk anchor");
    assert!(err.to_string().contains("trust anchor"), "{err}");
}

#[test]
fn mesh_names_are_this_trust_domain_identities() {
    let root = root();
    let web = mesh(WEB, &root, &root, SystemTime::now());
    assert!(web.is_mesh_name(WEB));
    assert!(web.is_mesh_name(&WEB.to_ascii_uppercase()));
    assert!(web.is_mesh_name(API));
    assert!(!web.is_mesh_name("example.com"));
    assert!(!web.is_mesh_name("serviceaccount.identity.mesh.cluster.local"));
    assert!(!web.is_mesh_name("api.default.serviceaccount.identity.mesh.other.domain"));
    assert!(!web.is_mesh_name("é"));
}
