//! The `file` discovery backend: the file's format and parser are the core's
//! ([`mesh_core::file`], re-exported here); this module reads the file into the index
//! and its policy index now and whenever it changes.

pub use mesh_core::file::*;

use crate::index::{Index, Resource};
use crate::metrics::Metrics;
use crate::policy::PolicyIndex;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio_util::sync::CancellationToken;

/// How often the file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Every this many polls the content is compared even when size and mtime look
/// unchanged, which catches a same-size rewrite within the mtime's granularity.
const FULL_READ_EVERY: u32 = 10;

/// Why the file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: InvalidFile,
    },
}

// === the backend ===

/// Reads the file into `index` and `policy` now and whenever it changes, until
/// `shutdown`.
///
/// A missing or invalid file is logged (once per distinct problem) and leaves the
/// indexes as they were: not ready before the first good read, the last good state
/// after.
pub async fn run(
    path: PathBuf,
    index: Index,
    policy: PolicyIndex,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    index.ready_once_synced(&Resource::ALL);
    let mut watcher = Watcher::new(path);
    let mut last_problem: Option<String> = None;
    loop {
        match watcher.poll().await {
            Ok(None) => {}
            Ok(Some(text)) => {
                match parse_with(&text, index.trust_domain(), Some(index.cluster_domain())) {
                    Ok(mut discovery) => {
                        apply_policy(&policy, &mut discovery);
                        apply(&index, discovery);
                        last_problem = None;
                        metrics.file_load(true);
                    }
                    Err(source) => {
                        let error = LoadError::Invalid {
                            path: watcher.path.clone(),
                            source,
                        };
                        report(&mut last_problem, &error);
                        metrics.file_load(false);
                    }
                }
            }
            Err(error) => {
                report(&mut last_problem, &error);
                metrics.file_load(false);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The file's policies and pods, into the policy index, whole: what the file no longer
/// has is deleted.
pub(crate) fn apply_policy(policy: &PolicyIndex, discovery: &mut Discovery) {
    let resources = std::mem::take(&mut discovery.policies);
    let pods = std::mem::take(&mut discovery.policy_pods);
    tracing::info!(policies = resources.len(), "policies loaded");
    let mut index = policy.lock();
    index.reset_pods(pods);
    index.reset(&mesh_core::policy::Kind::ALL, resources);
    drop(index);
    policy.synced_all();
}

fn report(last: &mut Option<String>, error: &LoadError) {
    let message = match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    };
    if last.as_deref() != Some(&message) {
        tracing::error!(error = %message, "discovery file not loaded; keeping the last good state");
        *last = Some(message);
    }
}

/// Notices changes of one file by polling: size and mtime first, the content itself
/// every few polls (and whenever they change). Polling, rather than inotify, also
/// follows editors that write a new file and rename it over the old one.
struct Watcher {
    path: PathBuf,
    meta: Option<(SystemTime, u64)>,
    /// A hash of the last content rather than the content: a big file is not kept
    /// twice (text and index), and a 64-bit SipHash does not collide by accident.
    content: Option<u64>,
    polls: u32,
}

impl Watcher {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            meta: None,
            content: None,
            polls: 0,
        }
    }

    /// The new content if it changed since the last call.
    async fn poll(&mut self) -> Result<Option<String>, LoadError> {
        let read_error = |path: &Path, source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        };
        self.polls = self.polls.wrapping_add(1);
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| read_error(&self.path, e))?;
        let meta = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if self.meta == Some(meta) && !self.polls.is_multiple_of(FULL_READ_EVERY) {
            return Ok(None);
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| read_error(&self.path, e))?;
        self.meta = Some(meta);
        let hash = {
            use std::hash::{Hash as _, Hasher as _};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut hasher);
            hasher.finish()
        };
        if self.content == Some(hash) {
            return Ok(None);
        }
        self.content = Some(hash);
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests;
