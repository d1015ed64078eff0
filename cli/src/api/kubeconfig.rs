//! Which Kubernetes cluster `mesh` talks to, and as whom: `--context` and
//! `--kubeconfig` made into one `kube::Config`, the same way for every command
//! (`mesh check`, and the port-forward by which the others reach the controller), and
//! the bearer token that config carries, which the tap API reviews.
//!
//! Without either flag the config is kube's inference: `$KUBECONFIG` (its files
//! merged), else `~/.kube/config`, else the in-cluster service account, as `kubectl`
//! and Linkerd's CLI find theirs.

use anyhow::Context as _;
use http::HeaderValue;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};

/// Where the in-cluster config's token is (kube reads it when `KUBERNETES_SERVICE_HOST`
/// is set).
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The kubeconfig flags, shared by every command that reaches a cluster.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct KubeArgs {
    /// The kubeconfig context to use [default: the kubeconfig's current context].
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,

    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else the
    /// in-cluster service account].
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,
}

/// A resolved config, and the words that say where it points, for messages.
pub(crate) struct Cluster {
    pub(crate) config: kube::Config,
    /// `context "x" of /path/kubeconfig (https://api:6443)`, or the in-cluster config's.
    pub(crate) described: String,
}

// === impl KubeArgs ===

impl KubeArgs {
    /// Whether either flag was given: the user asked for a cluster.
    pub(crate) fn given(&self) -> bool {
        self.context.is_some() || self.kubeconfig.is_some()
    }

    /// The config the flags name; an error says which file or context was wrong.
    pub(crate) async fn resolve(&self) -> anyhow::Result<Cluster> {
        if !self.given() {
            let config = kube::Config::infer().await.context(
                "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster",
            )?;
            let described = format!("the inferred kubeconfig ({})", config.cluster_url);
            return Ok(Cluster { config, described });
        }
        let (kubeconfig, source) = match &self.kubeconfig {
            Some(path) => (
                Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (
                Kubeconfig::read().context(
                    "cannot read the kubeconfig ($KUBECONFIG, else ~/.kube/config) for --context",
                )?,
                default_source(),
            ),
        };
        let context = match &self.context {
            Some(name) => {
                if !kubeconfig.contexts.iter().any(|c| &c.name == name) {
                    let known: Vec<&str> = kubeconfig
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    anyhow::bail!(
                        "context {name:?} is not in the kubeconfig {source} (its contexts: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    );
                }
                name.clone()
            }
            None => kubeconfig.current_context.clone().with_context(|| {
                format!("the kubeconfig {source} has no current context; give --context")
            })?,
        };
        let options = KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| {
                format!("cannot use context {context:?} of the kubeconfig {source}")
            })?;
        let described = format!("context {context:?} of {source} ({})", config.cluster_url);
        Ok(Cluster { config, described })
    }

    /// A Kubernetes client for the flags' cluster, with where it points.
    pub(crate) async fn client(&self) -> anyhow::Result<(kube::Client, Cluster)> {
        let cluster = self.resolve().await?;
        let client = kube::Client::try_from(cluster.config.clone()).with_context(|| {
            format!("cannot build a Kubernetes client for {}", cluster.described)
        })?;
        Ok((client, cluster))
    }
}

/// Whether a cluster config is there to be inferred without flags: a kubeconfig file
/// at `$KUBECONFIG` (any of its paths) or `~/.kube/config`, or the in-cluster service
/// account.
pub(crate) fn available() -> bool {
    // As kube infers: `$KUBECONFIG` alone when set, else `~/.kube/config`; then the
    // in-cluster config.
    let file = match std::env::var_os("KUBECONFIG") {
        Some(paths) => std::env::split_paths(&paths).any(|p| p.is_file()),
        None => std::env::var_os("HOME")
            .is_some_and(|home| Path::new(&home).join(".kube").join("config").is_file()),
    };
    file || (std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && Path::new(SERVICE_ACCOUNT_TOKEN).is_file())
}

fn default_source() -> String {
    match std::env::var("KUBECONFIG") {
        Ok(paths) if !paths.is_empty() => format!("$KUBECONFIG ({paths})"),
        _ => "~/.kube/config".into(),
    }
}

/// The `authorization` value a tap call carries: the bearer token of `config`'s user,
/// however kube's client gets it (inline, a token file, an exec plugin or an
/// auth-provider's token), through kube's own auth layer so that it is exactly what
/// the API server sees. `Ok(None)` when the user has none; `Err` says why there is
/// none the tap API could review: a user authenticated by a client certificate or a
/// password (the controller's TokenReview takes bearer tokens only), or a plugin that
/// failed.
pub(crate) async fn bearer(config: &kube::Config) -> Result<Option<HeaderValue>, String> {
    use kube::client::ConfigExt as _;
    use tower::{Layer as _, ServiceExt as _};

    let layer = config
        .auth_layer()
        .map_err(|e| format!("cannot get the kubeconfig user's credentials: {e}"))?;
    let Some(layer) = layer else {
        let info = &config.auth_info;
        if info.client_certificate.is_some() || info.client_certificate_data.is_some() {
            return Err(
                "the kubeconfig's user authenticates with a client certificate, which \
                 the tap API cannot review: it takes a bearer token"
                    .into(),
            );
        }
        return Ok(None);
    };
    // The layer adds the header to a request; a service that hands the request back
    // reads it off.
    // (A response, and the filter's error type, as the layer's two sides require.)
    let capture = tower::service_fn(|req: http::Request<kube::client::Body>| async move {
        let value = req.headers().get(http::header::AUTHORIZATION).cloned();
        Ok::<_, tower::BoxError>(http::Response::new(value))
    });
    let value = layer
        .layer(capture)
        .oneshot(http::Request::new(kube::client::Body::empty()))
        .await
        .map_err(|e| format!("cannot get the kubeconfig user's token: {e}"))?
        .into_body();
    match value {
        Some(v) if v.as_bytes().starts_with(b"Bearer ") => Ok(Some(v)),
        Some(_) => Err(
            "the kubeconfig's user authenticates with a username and password, \
             which the tap API cannot review: it takes a bearer token"
                .into(),
        ),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig whose current context `main` is of a user `user:` (YAML), with a
    /// second context `other`.
    fn kubeconfig(dir: &Path, user: &str) -> PathBuf {
        let path = dir.join("config");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: 'http://127.0.0.1:1'}}
users:
- name: u
  user: {user}
contexts:
- name: main
  context: {{cluster: c, user: u, namespace: shop}}
- name: other
  context: {{cluster: c, user: u}}
current-context: main
"
            ),
        )
        .unwrap();
        path
    }

    async fn resolve(path: &Path, context: Option<&str>) -> anyhow::Result<Cluster> {
        KubeArgs {
            context: context.map(str::to_string),
            kubeconfig: Some(path.to_path_buf()),
        }
        .resolve()
        .await
    }

    #[tokio::test]
    async fn the_tap_token_is_the_users_bearer_token() {
        let dir = tempfile::tempdir().unwrap();
        let config = resolve(&kubeconfig(dir.path(), "{token: t0ken}"), None)
            .await
            .unwrap();
        assert_eq!(config.config.default_namespace, "shop");
        assert!(
            config.described.starts_with("context \"main\" of "),
            "{}",
            config.described
        );
        assert_eq!(
            bearer(&config.config).await.unwrap().unwrap(),
            "Bearer t0ken"
        );

        let token_file = dir.path().join("token");
        // No newline: kube reads the file as it is (client-go trims it).
        std::fs::write(&token_file, "fr0m-file").unwrap();
        let user = format!("{{tokenFile: '{}'}}", token_file.display());
        let config = resolve(&kubeconfig(dir.path(), &user), Some("other"))
            .await
            .unwrap();
        assert_eq!(config.config.default_namespace, "default");
        assert_eq!(
            bearer(&config.config).await.unwrap().unwrap(),
            "Bearer fr0m-file"
        );

        let config = resolve(&kubeconfig(dir.path(), "{}"), None).await.unwrap();
        assert_eq!(bearer(&config.config).await.unwrap(), None);

        let config = resolve(&kubeconfig(dir.path(), "{username: a, password: b}"), None)
            .await
            .unwrap();
        let why = bearer(&config.config).await.unwrap_err();
        assert!(why.contains("username and password"), "{why}");
    }

    #[tokio::test]
    async fn a_context_the_kubeconfig_lacks_is_named_with_those_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = kubeconfig(dir.path(), "{}");
        let e = resolve(&path, Some("nope")).await.err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "context \"nope\" is not in the kubeconfig {} (its contexts: main, other)",
                path.display()
            )
        );
        let e = resolve(&dir.path().join("missing"), None)
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("cannot read the kubeconfig "),
            "{e}"
        );
    }
}
