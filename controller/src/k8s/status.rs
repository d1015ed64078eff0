//! What the Kubernetes backend reports on `/metrics` beyond the index's own counts:
//! whether the ServiceProfile CRD is installed (for `mesh check` and operators: a
//! missing CRD is no outage, the controller runs and answers without profiles), and
//! the watches' failed requests (each retry; restarts are counted by the index).

use crate::{index::Resource, metrics::Family};
use kube::runtime::watcher;
use mesh_core::policy::Kind;
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
};

/// The backend's state for `/metrics`; shared with the metrics by `Arc`, and kept
/// across restarts of the backend.
#[derive(Debug, Default)]
pub struct Status {
    /// 0: not known yet; 1: not installed; 2: installed.
    profiles_crd: AtomicU8,
    /// Failed list and watch requests per resource, in [`Resource::ALL`] order.
    watch_failures: [AtomicU64; 4],
    /// Per policy kind (in [`Kind::ALL`] order), as `profiles_crd`.
    policy_crds: [AtomicU8; 5],
    /// Failed list and watch requests per policy kind.
    policy_watch_failures: [AtomicU64; 5],
    /// Invalid policy objects refused, per kind.
    policy_rejected: [AtomicU64; 5],
}

/// How a watch failed, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// 410 Gone: the resourceVersion is too old; re-list.
    Gone,
    /// 404 Not Found: the resource is not served (a CRD not installed).
    NotFound,
    Other,
}

impl Failure {
    pub(super) fn of(error: &watcher::Error) -> Self {
        let code = match error {
            watcher::Error::WatchError(status) => Some(status.code),
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => match e {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            watcher::Error::NoResourceVersion => None,
        };
        match code {
            Some(410) => Self::Gone,
            Some(404) => Self::NotFound,
            _ => Self::Other,
        }
    }
}

fn position(resource: Resource) -> usize {
    Resource::ALL
        .iter()
        .position(|r| *r == resource)
        .unwrap_or_default()
}

fn kind_position(kind: Kind) -> usize {
    Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

/// A CRD's state: 0 not known yet, 1 not installed, 2 installed.
fn set_crd(state: &AtomicU8, installed: bool) -> Option<bool> {
    crd(state.swap(if installed { 2 } else { 1 }, Ordering::Relaxed))
}

fn crd(state: u8) -> Option<bool> {
    match state {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    }
}

impl Status {
    /// Records whether the ServiceProfile CRD is installed; returns what was known
    /// before (`None`: nothing), so a change can be logged once.
    pub(crate) fn set_profiles_crd(&self, installed: bool) -> Option<bool> {
        set_crd(&self.profiles_crd, installed)
    }

    /// Whether the ServiceProfile CRD is installed, once a list has told.
    pub fn profiles_crd(&self) -> Option<bool> {
        crd(self.profiles_crd.load(Ordering::Relaxed))
    }

    /// As [`set_profiles_crd`](Self::set_profiles_crd), for a policy kind's CRD.
    pub(crate) fn set_policy_crd(&self, kind: Kind, installed: bool) -> Option<bool> {
        set_crd(&self.policy_crds[kind_position(kind)], installed)
    }

    /// Whether a policy kind's CRD is installed, once a list has told.
    pub fn policy_crd(&self, kind: Kind) -> Option<bool> {
        crd(self.policy_crds[kind_position(kind)].load(Ordering::Relaxed))
    }

    pub(crate) fn policy_watch_failed(&self, kind: Kind) {
        self.policy_watch_failures[kind_position(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn policy_rejected(&self, kind: Kind) {
        self.policy_rejected[kind_position(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// Invalid objects of a policy kind refused so far.
    pub fn policy_rejected_total(&self, kind: Kind) -> u64 {
        self.policy_rejected[kind_position(kind)].load(Ordering::Relaxed)
    }

    /// Failed list and watch requests of a policy kind so far.
    pub fn policy_watch_failures(&self, kind: Kind) -> u64 {
        self.policy_watch_failures[kind_position(kind)].load(Ordering::Relaxed)
    }

    pub(crate) fn watch_failed(&self, resource: Resource) {
        self.watch_failures[position(resource)].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed list and watch requests of `resource` so far.
    pub fn watch_failures(&self, resource: Resource) -> u64 {
        self.watch_failures[position(resource)].load(Ordering::Relaxed)
    }
}

impl Family for Status {
    fn render(&self, out: &mut String) {
        if let Some(installed) = self.profiles_crd() {
            crate::metrics::header(
                out,
                "serviceprofile_crd_installed",
                "gauge",
                "1 when serviceprofiles.mesh.rs is served, 0 when its list answers 404 (profiles are then absent); unset until the first list answers.",
            );
            let _ = writeln!(out, "serviceprofile_crd_installed {}", u8::from(installed));
        }
        crate::metrics::header(
            out,
            "destination_watch_failures_total",
            "counter",
            "Failed list and watch requests of the Kubernetes backend (each retried), 410 Gone included.",
        );
        for resource in Resource::ALL {
            let _ = writeln!(
                out,
                "destination_watch_failures_total{{resource=\"{}\"}} {}",
                resource.as_str(),
                self.watch_failures(resource)
            );
        }
        for kind in Kind::ALL {
            let _ = writeln!(
                out,
                "destination_watch_failures_total{{resource=\"{}\"}} {}",
                kind.plural(),
                self.policy_watch_failures(kind)
            );
        }
        crate::metrics::header(
            out,
            "policy_resources_rejected_total",
            "counter",
            "Invalid policy.mesh.rs objects the Kubernetes backend refused (their last valid version stays in force).",
        );
        for kind in Kind::ALL {
            let _ = writeln!(
                out,
                "policy_resources_rejected_total{{resource=\"{}\"}} {}",
                kind.plural(),
                self.policy_rejected_total(kind)
            );
        }
        let known: Vec<(Kind, bool)> = Kind::ALL
            .into_iter()
            .filter_map(|kind| Some((kind, self.policy_crd(kind)?)))
            .collect();
        if !known.is_empty() {
            crate::metrics::header(
                out,
                "policy_crd_installed",
                "gauge",
                "1 when a policy.mesh.rs kind is served, 0 when its list answers 404 (none of that kind applies then); unset until the first list answers.",
            );
            for (kind, installed) in known {
                let _ = writeln!(
                    out,
                    "policy_crd_installed{{resource=\"{}\"}} {}",
                    kind.plural(),
                    u8::from(installed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_crd_only_once_known() {
        let status = Status::default();
        let mut out = String::new();
        status.render(&mut out);
        assert!(!out.contains("serviceprofile_crd_installed"), "{out}");
        assert_eq!(status.set_profiles_crd(false), None);
        status.watch_failed(Resource::ServiceProfiles);
        let mut out = String::new();
        status.render(&mut out);
        assert!(out.contains("\nserviceprofile_crd_installed 0\n"), "{out}");
        assert!(
            out.contains("destination_watch_failures_total{resource=\"serviceprofiles\"} 1\n"),
            "{out}"
        );
        assert_eq!(status.set_profiles_crd(true), Some(false));
        assert_eq!(status.profiles_crd(), Some(true));
    }

    #[test]
    fn failures_by_code() {
        let status = |code| kube::core::Status {
            code,
            ..Default::default()
        };
        assert_eq!(
            Failure::of(&watcher::Error::WatchError(Box::new(status(410)))),
            Failure::Gone
        );
        assert_eq!(
            Failure::of(&watcher::Error::InitialListFailed(kube::Error::Api(
                Box::new(status(404))
            ))),
            Failure::NotFound
        );
        assert_eq!(
            Failure::of(&watcher::Error::WatchStartFailed(kube::Error::Api(
                Box::new(status(503))
            ))),
            Failure::Other
        );
    }
}
