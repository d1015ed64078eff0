//! Mutual TLS between meshed proxies.
//!
//! Every connection from one meshed proxy to another is TLS 1.3 only, with the hybrid
//! post-quantum key exchange X25519MLKEM768 preferred (X25519 and P-256 remain for
//! peers without it). The client names the server's identity, as discovery gave it, in
//! SNI and accepts only a certificate for exactly that name, chained to the trust
//! anchors; the server accepts only clients with a certificate chained to the same
//! anchors, and records the client's identity.
//!
//! ALPN says what runs inside: `h2` (HTTP between proxies is always multiplexed
//! HTTP/2), `http/1.1` (upgrades such as WebSocket, which HTTP/2 cannot carry), or
//! `mesh.opaque/1` (opaque TCP, forwarded without protocol detection).
//!
//! The certificate comes from the identity client's watch channel at each handshake,
//! so a renewed certificate is used from the next connection on, without rebuilding
//! configuration or dropping connections.

pub mod hello;

use crate::identity::{provider, Credentials};
use rustls::{
    client::{ResolvesClientCert, WebPkiServerVerifier},
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    CertificateError, ClientConfig, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

/// How long a handshake may take, either side, before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
pub const ALPN_OPAQUE: &[u8] = b"mesh.opaque/1";

/// What a mesh connection will carry, announced by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    H2,
    Http1,
    Opaque,
}

impl Alpn {
    fn from_wire(p: Option<&[u8]>) -> Option<Self> {
        match p? {
            ALPN_H2 => Some(Self::H2),
            ALPN_HTTP1 => Some(Self::Http1),
            ALPN_OPAQUE => Some(Self::Opaque),
            _ => None,
        }
    }
}

/// A client-side mesh TLS stream.
pub type ClientStream<I> = tokio_rustls::client::TlsStream<I>;
/// A server-side mesh TLS stream.
pub type ServerStream<I> = tokio_rustls::server::TlsStream<I>;

pub use crate::errors::{HandshakeFailed, Refused};

// The reasons are labels (`errors::Refused`); telling them from a handshake's error is
// TLS's business, so it is written here.
impl Refused {
    /// Classifies a failed handshake's error.
    pub fn of(e: &std::io::Error) -> Self {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return Self::Io;
        };
        match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::WrongIdentity,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Self::Expired,
                CertificateError::UnknownIssuer | CertificateError::BadSignature => Self::Untrusted,
                _ => Self::Handshake,
            },
            rustls::Error::NoCertificatesPresented => Self::NoClientCert,
            rustls::Error::AlertReceived(_) => Self::PeerRefused,
            _ => Self::Handshake,
        }
    }
}

/// The proxy's mesh TLS configuration: one server side, one client side per ALPN.
pub struct MeshTls {
    name: Arc<str>,
    /// What every mesh identity in this trust domain ends with:
    /// `.serviceaccount.identity.mesh.<trust-domain>`.
    suffix: Box<str>,
    server: tokio_rustls::TlsAcceptor,
    client_h2: tokio_rustls::TlsConnector,
    client_http1: tokio_rustls::TlsConnector,
    client_opaque: tokio_rustls::TlsConnector,
}

/// Trust anchors that rustls cannot use, or no anchors at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the mesh TLS configuration: {0}")]
pub struct ConfigError(String);

impl MeshTls {
    /// Builds the configuration for identity `name`, trusting `anchors`, with the
    /// certificate the identity client publishes on `creds`.
    pub fn new(
        name: &str,
        anchors: &[CertificateDer<'static>],
        creds: watch::Receiver<Option<Arc<Credentials>>>,
    ) -> Result<Self, ConfigError> {
        let provider = Arc::new(provider());
        let mut roots = RootCertStore::empty();
        for a in anchors {
            roots
                .add(a.clone())
                .map_err(|e| ConfigError(format!("trust anchor: {e}")))?;
        }
        let roots = Arc::new(roots);
        let resolver = Arc::new(Resolver {
            creds,
            provider: provider.clone(),
            cached: Mutex::new(None),
        });
        let fail = |e: rustls::Error| ConfigError(e.to_string());

        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| ConfigError(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(fail)?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![ALPN_H2.into(), ALPN_HTTP1.into(), ALPN_OPAQUE.into()];

        let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| ConfigError(e.to_string()))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(fail)?
            .with_webpki_verifier(servers)
            .with_client_cert_resolver(resolver);
        let connector = |alpn: &[u8]| {
            let mut c = client.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(c))
        };
        // `.serviceaccount.identity.mesh.<trust-domain>`: every mesh identity's ending.
        let suffix = mesh_api::names::trust_domain_of(name)
            .map(|td| mesh_api::names::identity_suffix(&td.to_ascii_lowercase()))
            .ok_or_else(|| ConfigError(format!("{name:?} is not a mesh identity name")))?;
        Ok(Self {
            name: name.into(),
            suffix: suffix.into(),
            server: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            client_h2: connector(ALPN_H2),
            client_http1: connector(ALPN_HTTP1),
            client_opaque: connector(ALPN_OPAQUE),
        })
    }

    /// This proxy's identity: the server name mesh clients ask for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a ClientHello for `sni` is mesh TLS: this proxy's name, or another mesh
    /// identity (a client that expects another proxy here). The second kind is
    /// answered with this proxy's certificate, which that client then refuses, rather
    /// than being passed to the application as if it were the application's own TLS.
    pub fn is_mesh_name(&self, sni: &str) -> bool {
        sni.eq_ignore_ascii_case(&self.name)
            || (sni.len() > self.suffix.len()
                && sni.is_char_boundary(sni.len() - self.suffix.len())
                && sni[sni.len() - self.suffix.len()..].eq_ignore_ascii_case(&self.suffix))
    }

    /// Opens mesh TLS over `io` to the proxy whose identity is `server`.
    pub async fn connect<I>(
        &self,
        io: I,
        server: &str,
        alpn: Alpn,
    ) -> Result<ClientStream<I>, HandshakeFailed>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let failed = |reason, source| HandshakeFailed {
            peer: server.to_string(),
            reason,
            source,
        };
        let name = ServerName::try_from(server.to_string()).map_err(|e| {
            failed(
                Refused::WrongIdentity,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            )
        })?;
        let connector = match alpn {
            Alpn::H2 => &self.client_h2,
            Alpn::Http1 => &self.client_http1,
            Alpn::Opaque => &self.client_opaque,
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, io)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(failed(Refused::of(&e), e)),
            Err(_) => Err(failed(
                Refused::Io,
                std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"),
            )),
        }
    }

    /// Accepts mesh TLS over `io` (whose ClientHello named this proxy): the stream,
    /// the client's identity, and what the client will send inside.
    pub async fn accept<I>(&self, io: I) -> Result<Accepted<I>, (Refused, std::io::Error)>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.server.accept(io)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err((Refused::of(&e), e)),
            Err(_) => {
                return Err((
                    Refused::Io,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"),
                ))
            }
        };
        let (_, conn) = stream.get_ref();
        let alpn = Alpn::from_wire(conn.alpn_protocol());
        let client = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| identity_of(leaf));
        let Some(client) = client else {
            // The verifier accepted a chain, but the leaf names no DNS identity: it is
            // not a proxy certificate.
            return Err((
                Refused::WrongIdentity,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the client certificate names no DNS identity",
                ),
            ));
        };
        Ok(Accepted {
            stream,
            client: client.into(),
            alpn,
        })
    }
}

/// An accepted mesh TLS connection.
pub struct Accepted<I> {
    pub stream: ServerStream<I>,
    /// The client proxy's identity, from its verified certificate.
    pub client: Arc<str>,
    /// What the client will send inside; `None`: not announced, detect it.
    pub alpn: Option<Alpn>,
}

/// The DNS identity a (verified) certificate names: its first DNS SAN.
fn identity_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    })
}

/// Hands rustls the current certificate, both as server and as client. The signing
/// key is loaded once per certificate, not per handshake.
#[derive(Debug)]
struct Resolver {
    creds: watch::Receiver<Option<Arc<Credentials>>>,
    provider: Arc<CryptoProvider>,
    cached: Mutex<Option<(Arc<Credentials>, Arc<CertifiedKey>)>>,
}

impl Resolver {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let creds = self.creds.borrow().clone()?;
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((c, k)) = &*cached {
            if Arc::ptr_eq(c, &creds) {
                return Some(k.clone());
            }
        }
        let key = match self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(creds.key.clone_key()))
        {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the identity key for TLS");
                return None;
            }
        };
        let mut chain = Vec::with_capacity(1 + creds.chain.len());
        chain.push(creds.leaf.clone());
        chain.extend(creds.chain.iter().cloned());
        let certified = Arc::new(CertifiedKey::new(chain, key));
        *cached = Some((creds, certified.clone()));
        Some(certified)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
