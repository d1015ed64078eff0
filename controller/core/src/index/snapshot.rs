//! The answer to one query at one moment, and the changes that turn one answer into
//! the next.
//!
//! Snapshots are immutable and shared (`Arc`): every stream on a query holds the one
//! it last sent, and [`diff`] computes what that stream must send next. A stream that
//! falls behind simply diffs against a newer snapshot later, so updates coalesce
//! instead of queueing.

use super::Endpoint;
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

/// Metric labels shared by every endpoint of a destination.
pub type Labels = Arc<BTreeMap<Arc<str>, Arc<str>>>;

/// What a query resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The destination is known (a service, or a running pod's address), even with no
    /// endpoints.
    pub exists: bool,
    /// `namespace` and `service` (or `namespace` alone for a pod address).
    pub labels: Labels,
    /// Ready endpoints, sorted by address, one per address.
    pub endpoints: Vec<Arc<Endpoint>>,
    pub profile: ProfileInfo,
}

/// What `GetProfile` reports, derived from the same resolution as the endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileInfo {
    /// `<svc>.<ns>.svc.<cluster-domain>` when the destination is a service.
    pub fully_qualified_name: Option<Arc<str>>,
    /// The destination port carries opaque TCP.
    pub opaque: bool,
    /// The endpoint, when the destination is one pod's address.
    pub endpoint: Option<Arc<Endpoint>>,
    /// The service's ServiceProfile, when it has a valid one.
    pub spec: Option<super::ProfileSpec>,
}

impl Snapshot {
    /// The answer for something the index does not know.
    pub fn not_found() -> Self {
        Self::default()
    }
}

/// One message a stream sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Endpoints that are new or changed; an address already sent is replaced.
    Add {
        labels: Labels,
        endpoints: Vec<Arc<Endpoint>>,
    },
    /// Addresses that went away.
    Remove(Vec<SocketAddr>),
    /// Nothing left (any endpoint sent before is gone).
    NoEndpoints { exists: bool },
}

/// The changes that turn what a stream last sent (`prev`, `None` before its first
/// message) into `next`.
///
/// The first message is always the full state: one `Add`, or `NoEndpoints`.
pub fn diff(prev: Option<&Snapshot>, next: &Snapshot) -> Vec<Change> {
    let Some(prev) = prev else {
        return vec![full(next)];
    };
    if next.endpoints.is_empty() {
        if prev.endpoints.is_empty() && prev.exists == next.exists {
            return Vec::new();
        }
        return vec![Change::NoEndpoints {
            exists: next.exists,
        }];
    }
    if prev.endpoints.is_empty() {
        return vec![full(next)];
    }

    // Both sides are sorted by address: one merge walk finds what went and what came.
    let relabeled = prev.labels != next.labels;
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let (mut p, mut n) = (
        prev.endpoints.iter().peekable(),
        next.endpoints.iter().peekable(),
    );
    loop {
        match (p.peek(), n.peek()) {
            (None, None) => break,
            (Some(old), None) => {
                removed.push(old.addr);
                p.next();
            }
            (None, Some(new)) => {
                added.push(Arc::clone(new));
                n.next();
            }
            (Some(old), Some(new)) => match old.addr.cmp(&new.addr) {
                std::cmp::Ordering::Less => {
                    removed.push(old.addr);
                    p.next();
                }
                std::cmp::Ordering::Greater => {
                    added.push(Arc::clone(new));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if relabeled || old != new {
                        added.push(Arc::clone(new));
                    }
                    p.next();
                    n.next();
                }
            },
        }
    }

    let mut changes = Vec::with_capacity(2);
    if !removed.is_empty() {
        changes.push(Change::Remove(removed));
    }
    if !added.is_empty() {
        changes.push(Change::Add {
            labels: Arc::clone(&next.labels),
            endpoints: added,
        });
    }
    changes
}

fn full(next: &Snapshot) -> Change {
    if next.endpoints.is_empty() {
        Change::NoEndpoints {
            exists: next.exists,
        }
    } else {
        Change::Add {
            labels: Arc::clone(&next.labels),
            endpoints: next.endpoints.clone(),
        }
    }
}
