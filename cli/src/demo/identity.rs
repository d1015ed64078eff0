//! The demo's identity: a throwaway CA made at start-up, and one bootstrap token per
//! workload, so that the controller's identity service can sign every proxy's
//! certificate and the proxies talk to each other over mutual TLS, as in a cluster.
//!
//! None of it is ever written to disk. Each file the controller and the proxies read is
//! an in-memory file (`memfd_create`) held open by `mesh` itself, which the children
//! open as `/proc/<mesh's pid>/fd/<n>`: the files exist exactly as long as `mesh`
//! does, and no way it can end (SIGKILL included) leaves an issuer key or a token
//! behind. The children read them only while `mesh` runs, since they die with it.
//!
//! Local mode has no Kubernetes TokenReview, so a token proves a service account by
//! being listed in the controller's bootstrap token file (`<token> <ns>/<sa>` lines);
//! each proxy reads its workload's token from a file of its own, as it would read a
//! projected service-account token in a pod.

use super::topology::{Workload, TRUST_DOMAIN};
use anyhow::Context as _;
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::{File, Permissions},
    io::Write as _,
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

/// How long the demo's trust anchor and issuer are valid. The CA is remade at every
/// start, so this only has to outlast one run, however long a user leaves it up.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Random bytes in a bootstrap token (hex-encoded in the files).
const TOKEN_BYTES: usize = 32;

/// The identity files of one demo run, made by [`Credentials::new`]; they vanish when
/// this is dropped, or when the process ends.
#[derive(Debug)]
pub(crate) struct Credentials {
    /// The in-memory files, kept open: closing the last descriptor frees them.
    _files: Vec<File>,
    /// The trust anchor, PEM; the proxies get it inline.
    pub(crate) anchors_pem: String,
    pub(crate) anchors: PathBuf,
    pub(crate) issuer_cert: PathBuf,
    pub(crate) issuer_key: PathBuf,
    /// The controller's bootstrap token file.
    pub(crate) tokens: PathBuf,
    /// Each workload's token, alone in its file, for its proxies.
    token_files: HashMap<Workload, PathBuf>,
}

impl Credentials {
    /// Makes a trust anchor and an issuer for [`TRUST_DOMAIN`] and a token for every
    /// workload, each in an in-memory file.
    pub(crate) fn new() -> anyhow::Result<Self> {
        let (anchors_pem, issuer_cert_pem, issuer_key_pem) =
            mesh_core::ca::generate_anchor_and_issuer(TRUST_DOMAIN, CA_VALIDITY);
        let mut files = Vec::new();
        let mut file = |name: &str, contents: &str, mode: u32| -> anyhow::Result<PathBuf> {
            let (f, path) = memory_file(name, contents, mode)?;
            files.push(f);
            Ok(path)
        };
        let anchors = file("trust-anchors.pem", &anchors_pem, 0o644)?;
        let issuer_cert = file("issuer.crt", &issuer_cert_pem, 0o644)?;
        let issuer_key = file("issuer.key", &issuer_key_pem, 0o600)?;

        let mut table = String::from(
            "# Made by `mesh demo`: which service account each proxy's token proves.\n",
        );
        let mut token_files = HashMap::new();
        for workload in Workload::ALL {
            let token = random_token();
            let sa = workload.service_account();
            let _ = writeln!(table, "{token} {sa}");
            let path = file(&format!("{}.token", workload.name()), &token, 0o600)?;
            token_files.insert(workload, path);
        }
        let tokens = file("tokens", &table, 0o600)?;
        Ok(Self {
            _files: files,
            anchors_pem,
            anchors,
            issuer_cert,
            issuer_key,
            tokens,
            token_files,
        })
    }

    /// The file holding `workload`'s token.
    pub(crate) fn token_file(&self, workload: Workload) -> &Path {
        self.token_files
            .get(&workload)
            .map(PathBuf::as_path)
            .expect("new() makes a token for every workload")
    }
}

/// An in-memory file holding `contents`, with `mode`, and the path other processes
/// of this user open it by while this process lives.
fn memory_file(name: &str, contents: &str, mode: u32) -> anyhow::Result<(File, PathBuf)> {
    let fd = memfd_create(&*format!("mesh-demo-{name}"), MFdFlags::MFD_CLOEXEC)
        .with_context(|| format!("create the in-memory file {name}"))?;
    let mut file = File::from(fd);
    file.set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents.as_bytes()))
        .with_context(|| format!("write the in-memory file {name}"))?;
    let path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ));
    Ok((file, path))
}

/// A token nobody can guess, as lowercase hex (the token file splits on whitespace).
fn random_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    bytes
        .iter()
        .fold(String::with_capacity(2 * TOKEN_BYTES), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the demo makes is what the controller and the proxies accept: the CA loads,
    /// and each workload's token proves its own service account; nothing is on disk,
    /// and dropping the credentials frees every file.
    #[test]
    fn credentials_are_accepted_by_the_controller() {
        let creds = Credentials::new().expect("make credentials");

        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&creds.issuer_key), 0o600);
        assert_eq!(mode(&creds.tokens), 0o600);
        let target = std::fs::read_link(&creds.issuer_key).expect("a /proc fd link");
        assert!(
            target.to_string_lossy().starts_with("/memfd:"),
            "in memory, not on disk: {}",
            target.display()
        );

        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        mesh_core::ca::Ca::new(
            TRUST_DOMAIN,
            Duration::from_secs(24 * 3600),
            &read(&creds.issuer_cert),
            &read(&creds.issuer_key),
            &read(&creds.anchors),
            std::time::SystemTime::now(),
        )
        .expect("the controller accepts the demo's CA");
        assert_eq!(read(&creds.anchors), creds.anchors_pem);

        // The controller's own parser and lookup (`identity::BootstrapTokens` reads the
        // file with them).
        let tokens = mesh_core::tokens::parse(&read(&creds.tokens)).expect("the token file parses");
        for workload in Workload::ALL {
            let file = creds.token_file(workload);
            assert_eq!(mode(file), 0o600);
            // Read twice: a proxy re-reads its token at every renewal.
            let token = read(file);
            assert_eq!(read(file), token);
            assert_eq!(token.len(), 2 * TOKEN_BYTES);
            assert_eq!(
                mesh_core::tokens::lookup(&tokens, token.as_bytes()),
                Ok(workload.service_account()),
                "{workload:?}"
            );
        }

        let key = creds.issuer_key.clone();
        drop(creds);
        assert!(!key.exists(), "gone with the credentials");
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
    }
}
