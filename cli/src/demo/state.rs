//! How a running `mesh demo` tells other `mesh` commands about itself, so that they
//! work against it with no flags: `<tmp>/mesh-demo-<pid>/demo.json`.
//!
//! The demo writes the file once every proxy answers (aside and renamed, so a reader
//! never sees half of it) and removes it when it stops; a demo killed before it could
//! leaves it behind, which is why a reader also checks that the pid is a live demo.
//! The directory holds the demo's logs and its destinations file too, never a key
//! ([`super::identity`] keeps those in memory).

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// A demo's state directory is `<tmp>/<STATE_DIR_PREFIX><pid>`.
pub(crate) const STATE_DIR_PREFIX: &str = "mesh-demo-";

/// In the state directory while the demo serves: a [`State`] as JSON.
pub(crate) const STATE_FILE: &str = "demo.json";

/// What a running demo says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The `mesh` process running the demo.
    pub(crate) pid: u32,
    /// The version of that `mesh`.
    pub(crate) version: String,
    /// The namespace the demo's services live in: the default of commands run against
    /// the demo.
    pub(crate) namespace: String,
    /// The demo's services (all in `namespace`).
    pub(crate) services: Vec<String>,
    /// The controller's HTTP API (`/api/...`).
    pub(crate) api: SocketAddr,
    /// The controller's tap API (gRPC); absent in the state of older demos.
    #[serde(default)]
    pub(crate) tap: Option<SocketAddr>,
    /// Every proxy, by workload instance.
    pub(crate) proxies: Vec<ProxyState>,
}

/// One of the demo's proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProxyState {
    /// The workload instance, e.g. `voting-1`.
    pub(crate) name: String,
    /// Its `/metrics` URL.
    pub(crate) metrics: String,
}

/// The state directory of the demo run by `pid`.
pub(crate) fn dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("{STATE_DIR_PREFIX}{pid}"))
}

/// The pid a state directory's name says, if it is one.
pub(crate) fn pid_of(dir_name: &str) -> Option<u32> {
    dir_name.strip_prefix(STATE_DIR_PREFIX)?.parse().ok()
}

/// Whether the demo run by `pid` may still be running: its pid is alive. (A reused
/// pid makes a dead demo look alive, which only errs on the safe side: its leftovers
/// are not cleaned up, and commands that find it fail to reach it, saying where.)
pub(crate) fn is_alive(pid: u32) -> bool {
    mesh_rt::proc::stat(mesh_rt::proc::Pid::Of(pid)).is_some()
}

// === impl State ===

impl State {
    /// Writes the state into `dir`, replacing it whole.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let file = dir.join(STATE_FILE);
        let partial = dir.join(format!("{STATE_FILE}.partial"));
        let text = serde_json::to_string_pretty(self).context("encode the demo's state")?;
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &file))
            .with_context(|| format!("write {}", file.display()))
    }

    /// The newest running demo's state, if any demo runs.
    pub(crate) fn find() -> anyhow::Result<Option<Self>> {
        let tmp = std::env::temp_dir();
        let mut newest: Option<(SystemTime, PathBuf)> = None;
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(pid_of) else {
                continue;
            };
            if !is_alive(pid) {
                continue;
            }
            let file = entry.path().join(STATE_FILE);
            let Ok(modified) = file.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, file));
            }
        }
        let Some((_, file)) = newest else {
            return Ok(None);
        };
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a demo's state", file.display()))?;
        Ok(Some(state))
    }

    /// Where [`find`](Self::find) looks, for messages that say a demo was not found:
    /// `<tmp>/mesh-demo-<pid>/demo.json`.
    pub(crate) fn looked_for() -> String {
        format!(
            "{}/{STATE_DIR_PREFIX}<pid>/{STATE_FILE}",
            std::env::temp_dir().display()
        )
    }

    /// Checks that `service` is one of the demo's in `namespace`, or says what is.
    pub(crate) fn check_service(&self, service: &str, namespace: &str) -> anyhow::Result<()> {
        if namespace != self.namespace {
            anyhow::bail!(
                "namespace {namespace:?} has no services in the demo: its services are in \
                 namespace {:?} (the default against the demo)",
                self.namespace
            );
        }
        if !self.services.iter().any(|s| s == service) {
            anyhow::bail!(
                "service {service:?} not found in namespace {namespace:?}: the demo's services \
                 are {}",
                self.services.join(", ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            pid: 1,
            version: "0.1.0".into(),
            namespace: "demo".into(),
            services: vec!["web".into(), "voting".into()],
            api: "127.0.0.1:7064".parse().unwrap(),
            tap: Some("127.0.0.1:7062".parse().unwrap()),
            proxies: vec![ProxyState {
                name: "web".into(),
                metrics: "http://127.0.0.1:7013/metrics".into(),
            }],
        }
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        state().write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state());
        assert!(!dir.path().join("demo.json.partial").exists());
    }

    #[test]
    fn unknown_services_and_namespaces_are_errors() {
        let s = state();
        s.check_service("web", "demo").unwrap();
        let e = s.check_service("nope", "demo").unwrap_err().to_string();
        assert!(
            e.contains("\"nope\" not found") && e.contains("web, voting"),
            "{e}"
        );
        let e = s.check_service("web", "default").unwrap_err().to_string();
        assert!(e.contains("namespace \"demo\""), "{e}");
    }

    #[test]
    fn only_live_demos_count() {
        assert_eq!(pid_of("mesh-demo-42"), Some(42));
        assert_eq!(pid_of("mesh-demo-x"), None);
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(4_000_000_000));
    }
}
