//! Who a token belongs to: a [`ServiceAccount`], decided by a bootstrap token file in
//! local mode or by a Kubernetes TokenReview in cluster mode.
//!
//! The identity service signs only for the account a token proves, so this is where
//! a caller is authenticated. A validator never panics or hangs on a bad token; it
//! says why the token is refused, or that it could not decide ([`TokenError::Unavailable`]).

use super::ServiceAccount;
use mesh_api::names::is_dns_label;
use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::RwLock,
    time::SystemTime,
};

/// The bootstrap token file's parser and lookup: its format is the core's
/// ([`mesh_core::tokens`]), which `mesh demo` writes by.
pub use mesh_core::tokens::{lookup, parse};

/// The audience the proxies' projected service-account tokens are minted for.
pub const AUDIENCE: &str = "identity.mesh.rs";

/// What a [`TokenValidator`] returns.
pub type Validation<'a> =
    Pin<Box<dyn Future<Output = Result<ServiceAccount, TokenError>> + Send + 'a>>;

/// Decides which service account a token proves.
pub trait TokenValidator: Send + Sync + 'static {
    fn validate<'a>(&'a self, token: &'a [u8]) -> Validation<'a>;
}

/// Why a token proves no account.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The token was checked and refused.
    #[error("{0}")]
    Invalid(String),
    /// The token could not be checked (the API server did not answer).
    #[error("cannot review the token: {0}")]
    Unavailable(String),
    /// The API server refused the controller's own TokenReview: its credentials
    /// (`unauthorized`, 401) or its RBAC (`forbidden`, 403: no `create` on
    /// `tokenreviews.authentication.k8s.io`). Says nothing of the caller's token, and
    /// its message is the controller's business, for its log: never for the caller.
    #[error("the API server refused the controller's TokenReview ({reason}): {message}")]
    Refused {
        /// `forbidden` or `unauthorized`.
        reason: &'static str,
        message: String,
    },
}

// === impl BootstrapTokens ===

/// Local mode: a file of `<token> <namespace>/<serviceaccount>` lines (`#` starts a
/// comment; the format is [`mesh_core::tokens`]'s). It is re-read when its modification time changes; a change that does not
/// parse is logged and the previous tokens stay.
#[derive(Debug)]
pub struct BootstrapTokens {
    path: PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    modified: Option<SystemTime>,
    tokens: HashMap<String, ServiceAccount>,
}

impl BootstrapTokens {
    /// Reads and parses the file; an error says which line is wrong.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read: {e}"))?;
        let tokens = parse(&text)?;
        Ok(Self {
            path,
            state: RwLock::new(Loaded { modified, tokens }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file if it changed since the last read.
    async fn refresh(&self) {
        let modified = tokio::fs::metadata(&self.path)
            .await
            .and_then(|m| m.modified())
            .ok();
        let unchanged = self
            .state
            .read()
            .map(|s| s.modified == modified)
            .unwrap_or(false);
        if unchanged || modified.is_none() {
            return;
        }
        let parsed = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => parse(&text),
            Err(e) => Err(format!("cannot read: {e}")),
        };
        let Ok(mut state) = self.state.write() else {
            return;
        };
        state.modified = modified;
        match parsed {
            Ok(tokens) => {
                tracing::info!(file = %self.path.display(), tokens = tokens.len(), "bootstrap tokens reloaded");
                state.tokens = tokens;
            }
            Err(error) => tracing::warn!(
                file = %self.path.display(),
                %error,
                "bootstrap token file rejected; keeping the previous tokens"
            ),
        }
    }

    fn lookup(&self, token: &[u8]) -> Result<ServiceAccount, TokenError> {
        let state = self
            .state
            .read()
            .map_err(|_| TokenError::Unavailable("token table poisoned".into()))?;
        lookup(&state.tokens, token).map_err(|why| TokenError::Invalid(why.into()))
    }
}

impl TokenValidator for BootstrapTokens {
    fn validate<'a>(&'a self, token: &'a [u8]) -> Validation<'a> {
        Box::pin(async move {
            self.refresh().await;
            self.lookup(token)
        })
    }
}

// === impl TokenReview ===

/// Cluster mode: asks the API server (`authentication.k8s.io/v1` TokenReview) whose
/// token it is, for the audience [`AUDIENCE`].
#[derive(Clone)]
pub struct TokenReview {
    client: kube::Client,
}

impl TokenReview {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl std::fmt::Debug for TokenReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReview").finish_non_exhaustive()
    }
}

impl TokenValidator for TokenReview {
    fn validate<'a>(&'a self, token: &'a [u8]) -> Validation<'a> {
        Box::pin(async move {
            let token = std::str::from_utf8(token)
                .map_err(|_| TokenError::Invalid("token is not UTF-8".into()))?;
            let status = review(&self.client, token, Some(vec![AUDIENCE.to_string()])).await?;
            decide(status.as_ref())
        })
    }
}

/// Asks the API server whose `token` is, for `audiences` (`None`: the API server's
/// own); the review's status as it came. The identity service and the tap API both
/// ask here.
pub async fn review(
    client: &kube::Client,
    token: &str,
    audiences: Option<Vec<String>>,
) -> Result<Option<k8s_openapi::api::authentication::v1::TokenReviewStatus>, TokenError> {
    use k8s_openapi::api::authentication::v1 as authn;
    let review = authn::TokenReview {
        spec: authn::TokenReviewSpec {
            token: token.to_string(),
            audiences,
        },
        ..Default::default()
    };
    let reviewed = kube::Api::<authn::TokenReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await
        .map_err(refusal)?;
    Ok(reviewed.status)
}

/// What a failed TokenReview request means: the controller refused (401, 403), or
/// the API server not answering (anything else).
fn refusal(error: kube::Error) -> TokenError {
    match &error {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            TokenError::Refused {
                reason: if status.code == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                },
                message: status.message.clone(),
            }
        }
        _ => TokenError::Unavailable(error.to_string()),
    }
}

/// The account a TokenReview's status proves, if any: it must be authenticated, for
/// our audience, and name a service account.
pub fn decide(
    status: Option<&k8s_openapi::api::authentication::v1::TokenReviewStatus>,
) -> Result<ServiceAccount, TokenError> {
    let status = status.ok_or_else(|| TokenError::Invalid("review has no status".into()))?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("not authenticated");
        return Err(TokenError::Invalid(why.to_string()));
    }
    // The API server returns the audiences the token was valid for among those asked;
    // a token for another audience must not pass even if it authenticated.
    if let Some(audiences) = &status.audiences {
        if !audiences.iter().any(|a| a == AUDIENCE) {
            return Err(TokenError::Invalid(format!(
                "token is not for audience {AUDIENCE}"
            )));
        }
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or("");
    service_account_of(username)
        .ok_or_else(|| TokenError::Invalid(format!("{username:?} is not a service account")))
}

/// Parses `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_of(username: &str) -> Option<ServiceAccount> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    // Dotted names are valid service accounts but cannot be identity names.
    (is_dns_label(namespace) && is_dns_label(name)).then(|| ServiceAccount::new(namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn sa(ns: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn bootstrap_tokens_validate_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "one default/web\n").expect("write");
        let tokens = BootstrapTokens::load(&path).expect("load");
        assert_eq!(tokens.validate(b"one").await, Ok(sa("default", "web")));
        assert!(matches!(
            tokens.validate(b"two").await,
            Err(TokenError::Invalid(_))
        ));

        std::fs::write(&path, "two data/db\n").expect("write");
        // Make the change visible even on filesystems with coarse timestamps.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .expect("set mtime");
        assert_eq!(tokens.validate(b"two").await, Ok(sa("data", "db")));
        assert!(matches!(
            tokens.validate(b"one").await,
            Err(TokenError::Invalid(_))
        ));

        // A broken file keeps the previous tokens.
        std::fs::write(&path, "broken\n").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later + std::time::Duration::from_secs(5)))
            .expect("set mtime");
        assert_eq!(tokens.validate(b"two").await, Ok(sa("data", "db")));
    }

    #[test]
    fn parses_service_account_usernames() {
        assert_eq!(
            service_account_of("system:serviceaccount:default:web"),
            Some(sa("default", "web"))
        );
        for bad in [
            "system:serviceaccount:default",
            "system:serviceaccount:default:web:x",
            "system:serviceaccount::web",
            "system:serviceaccount:default:web.v2",
            "system:node:worker-1",
            "admin",
            "",
        ] {
            assert_eq!(service_account_of(bad), None, "{bad}");
        }
    }

    fn status(
        authenticated: bool,
        username: &str,
        audiences: Option<&[&str]>,
    ) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.to_string()),
                ..Default::default()
            }),
            error: None,
        }
    }

    #[test]
    fn decides_on_review_status() {
        let ok = status(true, "system:serviceaccount:default:web", Some(&[AUDIENCE]));
        assert_eq!(decide(Some(&ok)), Ok(sa("default", "web")));
        let no_audiences = status(true, "system:serviceaccount:default:web", None);
        assert_eq!(decide(Some(&no_audiences)), Ok(sa("default", "web")));

        let unauthenticated = status(
            false,
            "system:serviceaccount:default:web",
            Some(&[AUDIENCE]),
        );
        let other_audience = status(true, "system:serviceaccount:default:web", Some(&["api"]));
        let user = status(true, "alice", Some(&[AUDIENCE]));
        for (what, s) in [
            ("unauthenticated", Some(&unauthenticated)),
            ("other audience", Some(&other_audience)),
            ("not a service account", Some(&user)),
            ("no status", None),
        ] {
            assert!(matches!(decide(s), Err(TokenError::Invalid(_))), "{what}");
        }
    }
}
