//! The demo's identity: a throwaway CA made at start-up, and one bootstrap token per
//! workload, so that the controller's identity service can sign every proxy's
//! certificate and the proxies talk to each other over mutual TLS, as in a cluster.
//!
//! Everything lives in one directory, private to the user (0700, secrets 0600), and is
//! removed when the demo stops: a new CA is made at every start, so nothing in it is
//! worth keeping, and an issuer key should not linger in `/tmp`.
//!
//! Local mode has no Kubernetes TokenReview, so a token proves a service account by
//! being listed in the controller's bootstrap token file (`<token> <ns>/<sa>` lines);
//! each proxy reads its workload's token from a file of its own, as it would read a
//! projected service-account token in a pod.

use super::topology::{Workload, TRUST_DOMAIN};
use anyhow::Context as _;
use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::{DirBuilder, OpenOptions, Permissions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

/// How long the demo's trust anchor and issuer are valid. The CA is remade at every
/// start, so this only has to outlast one run, however long a user leaves it up.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Random bytes in a bootstrap token (hex-encoded in the files).
const TOKEN_BYTES: usize = 32;

/// The identity files of one demo run, written by [`Credentials::write`].
#[derive(Debug)]
pub(crate) struct Credentials {
    dir: PathBuf,
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
    /// workload, and writes them into `dir`, which is created (or made) private.
    pub(crate) fn write(dir: PathBuf) -> anyhow::Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        // `mode` only applies to a directory this call created; one left by an earlier
        // run with the same pid must not stay readable by others either. This also fails,
        // as it should, on a directory someone else made.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o700))
            .with_context(|| format!("make {} private (mode 0700)", dir.display()))?;
        // Half-written credentials are no use to anyone, and may include the issuer key.
        Self::write_into(dir.clone()).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
    }

    fn write_into(dir: PathBuf) -> anyhow::Result<Self> {
        let (anchors_pem, issuer_cert_pem, issuer_key_pem) =
            mesh_controller::identity::generate_anchor_and_issuer(TRUST_DOMAIN, CA_VALIDITY);
        let anchors = dir.join("trust-anchors.pem");
        let issuer_cert = dir.join("issuer.crt");
        let issuer_key = dir.join("issuer.key");
        let tokens = dir.join("tokens");
        write_file(&anchors, &anchors_pem, 0o644)?;
        write_file(&issuer_cert, &issuer_cert_pem, 0o644)?;
        write_file(&issuer_key, &issuer_key_pem, 0o600)?;

        let mut table = String::from(
            "# Written by `mesh demo`: which service account each proxy's token proves.\n",
        );
        let mut token_files = HashMap::new();
        for workload in Workload::ALL {
            let token = random_token();
            let sa = workload.service_account();
            let _ = writeln!(table, "{token} {sa}");
            let file = dir.join(format!("{}.token", workload.name()));
            write_file(&file, &token, 0o600)?;
            token_files.insert(workload, file);
        }
        write_file(&tokens, &table, 0o600)?;

        Ok(Self {
            dir,
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
            .expect("write() makes a token for every workload")
    }

    /// Deletes the directory and everything in it; a failure is only logged, since the
    /// demo is stopping anyway.
    pub(crate) fn remove(&self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot remove the demo's identity files");
        }
    }
}

/// Writes `contents` to `path` with `mode`, replacing any earlier file.
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        // `mode` applies only on creation; an existing file keeps its own otherwise.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents.as_bytes())
    };
    write().with_context(|| format!("write {}", path.display()))
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
    use mesh_controller::identity::BootstrapTokens;

    /// What the demo writes is what the controller and the proxies accept: the CA loads,
    /// and each workload's token proves its own service account.
    #[tokio::test]
    async fn credentials_are_accepted_by_the_controller() {
        use mesh_controller::identity::TokenValidator as _;
        let dir = std::env::temp_dir().join(format!(
            "mesh-demo-identity-test-{}-{}",
            std::process::id(),
            random_token()
        ));
        let creds = Credentials::write(dir.clone()).expect("write credentials");

        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&creds.issuer_key), 0o600);
        assert_eq!(mode(&creds.tokens), 0o600);

        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        mesh_controller::identity::Ca::new(
            TRUST_DOMAIN,
            Duration::from_secs(24 * 3600),
            &read(&creds.issuer_cert),
            &read(&creds.issuer_key),
            &read(&creds.anchors),
            std::time::SystemTime::now(),
        )
        .expect("the controller accepts the demo's CA");
        assert_eq!(read(&creds.anchors), creds.anchors_pem);

        let tokens = BootstrapTokens::load(&creds.tokens).expect("the token file parses");
        for workload in Workload::ALL {
            let file = creds.token_file(workload);
            assert_eq!(mode(file), 0o600);
            let token = read(file);
            assert_eq!(token.len(), 2 * TOKEN_BYTES);
            assert_eq!(
                tokens.validate(token.as_bytes()).await,
                Ok(workload.service_account()),
                "{workload:?}"
            );
        }

        creds.remove();
        assert!(!dir.exists());
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
    }
}
