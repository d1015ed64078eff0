//! The kinds the fake stores without watching them: what `mesh install` applies and
//! `mesh check` reads (namespaces, RBAC, workloads, CRDs, webhook configurations, ...).
//!
//! They live in a plain map per type ([`Others`]) beside the four watched kinds, share
//! the one global resourceVersion, and are served over HTTP with create, get, list,
//! replace, merge patch and delete; a list of them is not paged and they have no watch
//! history (nothing in the mesh watches them). One table, [`TYPES`], is both what the
//! store accepts and what discovery lists, so the two cannot disagree.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Kind;

/// One stored type: its group, version, kind, plural and scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Type {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) short_names: &'static [&'static str],
}

const fn t(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Type {
    Type {
        group,
        version,
        kind,
        plural,
        namespaced,
        short_names,
    }
}

/// Every type stored here, grouped as discovery lists them.
pub(crate) const TYPES: &[Type] = &[
    t("", "v1", "Namespace", "namespaces", false, &["ns"]),
    t("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"]),
    t("", "v1", "ConfigMap", "configmaps", true, &["cm"]),
    t("", "v1", "Secret", "secrets", true, &[]),
    t("", "v1", "Event", "events", true, &["ev"]),
    t("", "v1", "Node", "nodes", false, &["no"]),
    t("apps", "v1", "Deployment", "deployments", true, &["deploy"]),
    t("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"]),
    t("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"]),
    t("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"]),
    t("batch", "v1", "Job", "jobs", true, &[]),
    t("batch", "v1", "CronJob", "cronjobs", true, &["cj"]),
    t(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
    ),
    t(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
    ),
    t(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
    ),
    t(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
    ),
    t(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
    ),
    t(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
    ),
    t(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        &[],
    ),
    t(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        &[],
    ),
    t("events.k8s.io", "v1", "Event", "events", true, &["ev"]),
];

/// The group whose switch [`crate::FakeKube::set_admission_api`] turns.
pub(crate) const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";

/// The namespaces every cluster starts with.
pub(crate) const INITIAL_NAMESPACES: [&str; 4] =
    ["default", "kube-node-lease", "kube-public", "kube-system"];

impl Type {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    pub(crate) fn from_type(api_version: &str, kind: &str) -> Option<&'static Type> {
        TYPES
            .iter()
            .find(|t| t.kind == kind && t.api_version() == api_version)
    }

    pub(crate) fn from_plural(api_version: &str, plural: &str) -> Option<&'static Type> {
        TYPES
            .iter()
            .find(|t| t.plural == plural && t.api_version() == api_version)
    }
}

/// A resource as discovery and the router see it: a watched kind or a stored type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    Watched(Kind),
    Stored(&'static Type),
}

impl Resource {
    pub(crate) fn from_plural(api_version: &str, plural: &str) -> Option<Self> {
        Kind::from_plural(api_version, plural)
            .map(Self::Watched)
            .or_else(|| Type::from_plural(api_version, plural).map(Self::Stored))
    }

    pub(crate) fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        Kind::from_type(api_version, kind)
            .map(Self::Watched)
            .or_else(|| Type::from_type(api_version, kind).map(Self::Stored))
    }

    pub(crate) fn group(&self) -> &'static str {
        match self {
            Self::Watched(k) => k.group(),
            Self::Stored(t) => t.group,
        }
    }

    pub(crate) fn plural(&self) -> &'static str {
        match self {
            Self::Watched(k) => k.plural(),
            Self::Stored(t) => t.plural,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Watched(k) => k.kind(),
            Self::Stored(t) => t.kind,
        }
    }

    pub(crate) fn namespaced(&self) -> bool {
        match self {
            Self::Watched(_) => true,
            Self::Stored(t) => t.namespaced,
        }
    }

    /// The resource as an `APIResourceList` entry.
    fn discovery(&self) -> Value {
        let (singular, short, verbs): (String, &[&str], &[&str]) = match self {
            Self::Watched(k) => (
                k.singular().to_owned(),
                k.short_names(),
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch",
                ],
            ),
            Self::Stored(t) => (
                t.singular(),
                t.short_names,
                &["create", "delete", "get", "list", "patch", "update"],
            ),
        };
        serde_json::json!({
            "name": self.plural(),
            "singularName": singular,
            "namespaced": self.namespaced(),
            "kind": self.kind(),
            "verbs": verbs,
            "shortNames": short,
        })
    }
}

/// Every resource of `api_version`, watched kinds first; `None` if the version is not
/// served at all.
pub(crate) fn resources(api_version: &str, admission: bool) -> Option<Vec<Value>> {
    if !admission && api_version.starts_with(&format!("{ADMISSION_GROUP}/")) {
        return None;
    }
    let mut out: Vec<Value> = Kind::ALL
        .into_iter()
        .filter(|k| k.api_version() == api_version)
        .map(|k| Resource::Watched(k).discovery())
        .collect();
    out.extend(
        TYPES
            .iter()
            .filter(|t| t.api_version() == api_version)
            .map(|t| Resource::Stored(t).discovery()),
    );
    // The review resources, answered but never stored (create only).
    let reviews: &[(&str, &str, &str)] = match api_version {
        "authentication.k8s.io/v1" => &[("tokenreviews", "TokenReview", "tokenreview")],
        "authorization.k8s.io/v1" => &[
            (
                "subjectaccessreviews",
                "SubjectAccessReview",
                "subjectaccessreview",
            ),
            (
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                "selfsubjectaccessreview",
            ),
        ],
        _ => &[],
    };
    out.extend(reviews.iter().map(|(plural, kind, singular)| {
        serde_json::json!({
            "name": plural, "singularName": singular, "namespaced": false,
            "kind": kind, "verbs": ["create"],
        })
    }));
    (!out.is_empty()).then_some(out)
}

/// Every API group but the core one, in the order `/apis` lists them, each with its
/// one version.
pub(crate) fn groups(admission: bool) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let watched = Kind::ALL.into_iter().map(|k| (k.group(), k.version()));
    let stored = TYPES.iter().map(|t| (t.group, t.version));
    let reviews = [
        ("authentication.k8s.io", "v1"),
        ("authorization.k8s.io", "v1"),
    ];
    for (group, version) in watched.chain(stored).chain(reviews) {
        if group.is_empty() || (!admission && group == ADMISSION_GROUP) {
            continue;
        }
        if !out.contains(&(group, version)) {
            out.push((group, version));
        }
    }
    out
}

/// The objects of the stored types: per type, by `<namespace>/<name>` (`/<name>` for
/// cluster-scoped ones), each a whole object as a GET returns it.
#[derive(Debug, Default)]
pub(crate) struct Others(BTreeMap<(&'static str, &'static str), BTreeMap<String, Value>>);

impl Others {
    /// The store at birth: the namespaces every cluster has, at resourceVersion `rv`.
    pub(crate) fn new(rv: u64, now: &str) -> Self {
        let mut others = Self::default();
        let ns = Type::from_type("v1", "Namespace").expect("Namespace is a stored type");
        for name in INITIAL_NAMESPACES {
            let mut obj = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            stamp(&mut obj, &super::store::new_uid(), now, rv);
            others.map(ns).insert(format!("/{name}"), obj);
        }
        others
    }

    fn map(&mut self, t: &Type) -> &mut BTreeMap<String, Value> {
        self.0.entry((t.group, t.kind)).or_default()
    }

    pub(crate) fn get(&self, t: &Type, namespace: &str, name: &str) -> Option<&Value> {
        self.0.get(&(t.group, t.kind))?.get(&key(namespace, name))
    }

    /// Stores `obj` (type, name and namespace already checked) as of `rv`, keeping the
    /// uid and creation time of the object it replaces; returns it as stored.
    pub(crate) fn put(
        &mut self,
        t: &Type,
        namespace: &str,
        name: &str,
        mut obj: Value,
        rv: u64,
        now: &str,
    ) -> Value {
        let key = key(namespace, name);
        let map = self.map(t);
        let (uid, created) = match map.get(&key) {
            Some(old) => (
                old["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                old["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or(now)
                    .to_owned(),
            ),
            None => (super::store::new_uid(), now.to_owned()),
        };
        stamp(&mut obj, &uid, &created, rv);
        map.insert(key, obj.clone());
        obj
    }

    pub(crate) fn remove(&mut self, t: &Type, namespace: &str, name: &str) -> Option<Value> {
        self.map(t).remove(&key(namespace, name))
    }

    /// The objects of `t` in `namespace` (`None`: all), in key order.
    pub(crate) fn list(&self, t: &Type, namespace: Option<&str>) -> Vec<&Value> {
        let prefix = namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
        self.0
            .get(&(t.group, t.kind))
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Sets what the server owns in an object's metadata.
fn stamp(obj: &mut Value, uid: &str, created: &str, rv: u64) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = Value::Object(Map::new());
    }
    let meta = &mut obj["metadata"];
    meta["uid"] = uid.into();
    meta["creationTimestamp"] = created.into();
    meta["resourceVersion"] = rv.to_string().into();
}

/// The labels of an object, for label selectors (non-string values are skipped: the
/// API server would have refused them).
pub(crate) fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 7386 JSON merge patch: `patch`'s fields replace `target`'s, `null` removes.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(map) = target else {
                unreachable!("made an object above")
            };
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_adds_and_removes() {
        let mut obj = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        merge_patch(
            &mut obj,
            &json!({"a": null, "b": {"c": 9}, "e": [3], "f": "x"}),
        );
        assert_eq!(obj, json!({"b": {"c": 9, "d": 3}, "e": [3], "f": "x"}));
    }

    #[test]
    fn every_type_is_found_by_kind_and_plural_and_groups_list_each_once() {
        for t in TYPES {
            assert_eq!(Type::from_type(&t.api_version(), t.kind), Some(t));
            assert_eq!(Type::from_plural(&t.api_version(), t.plural), Some(t));
        }
        let all = groups(true);
        assert!(all.contains(&("apps", "v1")));
        assert!(all.contains(&(ADMISSION_GROUP, "v1")));
        assert!(!groups(false).iter().any(|(g, _)| *g == ADMISSION_GROUP));
        let mut seen = all.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), all.len());
        assert!(resources("admissionregistration.k8s.io/v1", false).is_none());
    }
}
