//! The resources stat, edges and routes group by: their kinds, as the CLI and the API
//! name them (`deploy`, `sts/db`, ...), and how a pod or a destination of its traffic
//! belongs to one.
//!
//! A pod belongs to its namespace, its owner workload and itself, as the index knows
//! them; a destination belongs to what discovery told its client about it, the `dst_*`
//! labels (so the same rule names both ends of an edge). Services and authorities are
//! known only as destinations, as in Linkerd's `stat svc`.

use super::scrape::Destination;
use serde::Serialize;
use std::{fmt, str::FromStr, sync::Arc};

/// A kind of resource that rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Namespace,
    Deployment,
    StatefulSet,
    DaemonSet,
    Pod,
    Service,
    Authority,
}

/// One resource: a row of an answer, or one end of an edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    /// `None` for a namespace, and for an authority whose namespace is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Arc<str>>,
    pub name: Arc<str>,
}

/// Which resources a query is about: a kind, and optionally a namespace and a name
/// (`deploy`, `deploy/web` in `demo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub kind: ResourceKind,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// A resource type or selector that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSelector {
    #[error("unknown resource type {0:?}; expected one of {KINDS}")]
    Kind(String),
    #[error("{0:?} names no resource; expected TYPE or TYPE/NAME")]
    Empty(String),
}

const KINDS: &str =
    "ns, deploy, sts, ds, po, svc, authority (or their long names: namespace, deployment...)";

/// The fields of a pod that stat and edges need, from the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The owning workload, `(kind, name)` as the index names it (`deployment`, ...).
    pub owner: Option<(Arc<str>, Arc<str>)>,
    /// The identity its proxy's certificate names, when meshed with identity on.
    pub identity: Option<Arc<str>>,
    /// Whether a proxy of this control plane runs in it (only these are scraped).
    pub meshed: bool,
}

// === impl ResourceKind ===

impl ResourceKind {
    /// The owner kind (and `dst_<kind>` label) of a workload kind.
    pub fn workload(self) -> Option<&'static str> {
        match self {
            Self::Deployment => Some("deployment"),
            Self::StatefulSet => Some("statefulset"),
            Self::DaemonSet => Some("daemonset"),
            _ => None,
        }
    }

    /// Whether resources of this kind are made of pods (whose own series, and whose
    /// meshed count, a row can read).
    pub fn has_pods(self) -> bool {
        !matches!(self, Self::Service | Self::Authority)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::DaemonSet => "daemonset",
            Self::Pod => "pod",
            Self::Service => "service",
            Self::Authority => "authority",
        }
    }
}

impl FromStr for ResourceKind {
    type Err = InvalidSelector;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "ns" | "namespace" | "namespaces" => Self::Namespace,
            "deploy" | "deployment" | "deployments" => Self::Deployment,
            "sts" | "statefulset" | "statefulsets" => Self::StatefulSet,
            "ds" | "daemonset" | "daemonsets" => Self::DaemonSet,
            "po" | "pod" | "pods" => Self::Pod,
            "svc" | "service" | "services" => Self::Service,
            "au" | "authority" | "authorities" => Self::Authority,
            _ => return Err(InvalidSelector::Kind(s.to_string())),
        })
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Selector ===

impl Selector {
    /// Reads `TYPE` or `TYPE/NAME`, in `namespace` (`None`: every namespace).
    pub fn parse(s: &str, namespace: Option<&str>) -> Result<Self, InvalidSelector> {
        let (kind, name) = match s.split_once('/') {
            Some((_, "")) => return Err(InvalidSelector::Empty(s.to_string())),
            Some((kind, name)) => (kind, Some(name.to_string())),
            None => (s, None),
        };
        if kind.is_empty() {
            return Err(InvalidSelector::Empty(s.to_string()));
        }
        Ok(Self {
            kind: kind.parse()?,
            namespace: namespace.map(str::to_string),
            name,
        })
    }

    /// Whether `r` is one of the selected resources. A namespace is matched by its
    /// name only.
    pub fn matches(&self, r: &Resource) -> bool {
        r.kind == self.kind
            && self.name.as_deref().is_none_or(|n| *r.name == *n)
            && match (&self.namespace, &r.namespace) {
                (Some(want), Some(ns)) => **ns == **want,
                (Some(_), None) => r.kind == ResourceKind::Namespace,
                (None, _) => true,
            }
    }
}

// === impl PodMeta ===

impl PodMeta {
    /// The pod's resource of `kind`, if it has one.
    pub fn resource(&self, kind: ResourceKind) -> Option<Resource> {
        let in_ns = |name: &Arc<str>| Resource {
            kind,
            namespace: Some(self.namespace.clone()),
            name: name.clone(),
        };
        match kind {
            ResourceKind::Namespace => Some(Resource {
                kind,
                namespace: None,
                name: self.namespace.clone(),
            }),
            ResourceKind::Pod => Some(in_ns(&self.name)),
            ResourceKind::Service | ResourceKind::Authority => None,
            _ => {
                let (owner_kind, name) = self.owner.as_ref()?;
                (Some(&**owner_kind) == kind.workload()).then(|| in_ns(name))
            }
        }
    }
}

// === impl Destination ===

impl Destination {
    /// The destination's resource of `kind`, from what discovery said of it.
    pub fn resource(&self, kind: ResourceKind) -> Option<Resource> {
        let namespace = self.namespace.as_deref().map(Arc::from);
        let in_ns = |name: &str| {
            Some(Resource {
                kind,
                namespace: Some(namespace.clone()?),
                name: name.into(),
            })
        };
        match kind {
            ResourceKind::Namespace => Some(Resource {
                kind,
                namespace: None,
                name: namespace?,
            }),
            ResourceKind::Pod => in_ns(self.pod.as_deref()?),
            ResourceKind::Service => in_ns(self.service.as_deref()?),
            ResourceKind::Authority => Some(Resource {
                kind,
                namespace: namespace.clone(),
                name: self.authority.as_deref()?.into(),
            }),
            _ => {
                let (owner_kind, name) = self.owner.as_ref()?;
                if Some(&**owner_kind) == kind.workload() {
                    in_ns(name)
                } else {
                    None
                }
            }
        }
    }
}
