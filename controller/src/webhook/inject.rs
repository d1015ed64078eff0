//! The proxy injector: the mutating admission webhook on `POST /inject`, beside the
//! ServiceProfile validator on the same HTTPS server.
//!
//! The decision and the patch are `mesh_core::inject`'s (pure, shared with `mesh
//! inject --manual`); this module reads the `AdmissionReview`, looks up what the pod
//! alone does not say (its namespace's labels and annotations, and its owner through
//! a ReplicaSet or Job, behind [`Cluster`] so tests need no API server) and answers
//! with a base64 JSON Patch.
//!
//! It never refuses a pod: a pod it cannot inject is admitted as it is (with the
//! reason in `mesh.rs/inject-skipped` where it was asked to inject), and a review
//! that parsed but cannot be acted on is admitted with a warning. Only a body that is
//! no `AdmissionReview` at all gets an HTTP 400; the webhook configuration's
//! `failurePolicy: Ignore` then admits the pod, unchanged.
//!
//! ```text
//! POST /inject   AdmissionReview JSON (at most 1 MiB)
//!   200  {response: {uid, allowed: true, patchType: JSONPatch, patch: <base64>}}   injected / skipped
//!   200  {response: {uid, allowed: true}}                                         nothing asked, not a CREATE
//!   200  {response: {uid, allowed: true, warnings: [why]}}                        a review it cannot act on
//!   400  not an admission.k8s.io/v1 AdmissionReview (text: why)
//! ```

use super::tls::FileStamp;
use crate::metrics::{header, Family};
use base64::Engine as _;
use mesh_core::{
    inject::{self, Decision, Input, Namespace, Owner},
    install::Values,
};
use serde_json::{json, Value};
use std::{
    fmt::Write as _,
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

/// What injects, in `mesh.rs/created-by`.
pub fn created_by() -> String {
    format!("mesh/proxy-injector {}", mesh_core::install::VERSION)
}

/// A future the [`Cluster`] lookups return.
pub type Lookup<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A reference to an object's controlling owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// What the injector asks Kubernetes. Errors are messages for the log and the
/// skipped-annotation.
pub trait Cluster: Send + Sync + 'static {
    /// The namespace's labels and annotations.
    fn namespace<'a>(&'a self, name: &'a str) -> Lookup<'a, Namespace>;
    /// The controlling owner of the `kind` (`ReplicaSet` or `Job`) named `name` in
    /// `namespace`, if it has one.
    fn controller_of<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    ) -> Lookup<'a, Option<OwnerRef>>;
    /// Records a Warning Event on `regarding` (in `namespace`) saying why its pod was
    /// not injected: the pod does not exist yet at admission, so its owner carries
    /// it, where `kubectl describe deploy/web` shows it.
    fn skipped_event<'a>(
        &'a self,
        namespace: &'a str,
        regarding: &'a OwnerRef,
        reason: &'a str,
    ) -> Lookup<'a, ()>;
}

/// The Event's reason (`kubectl describe`'s `Reason`).
pub const SKIPPED_EVENT_REASON: &str = "ProxyInjectionSkipped";

/// The injector's configuration: the install's values and the trust anchors.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    pub values: Values,
    pub trust_anchors: String,
}

/// Where the configuration is read from (the `mesh-config` values and the trust
/// anchors, both ConfigMap volumes), and the controller's domains it must agree with:
/// a proxy told another trust domain than the identity service signs for would never
/// get a certificate.
#[derive(Clone, Debug)]
pub struct InjectFiles {
    pub values: PathBuf,
    pub anchors: PathBuf,
    pub trust_domain: String,
    pub cluster_domain: String,
}

/// Why the files do not make a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    Values(String),
    Anchors(String),
}

/// The configuration in force: read again when either file changes (an anchors
/// rotation or an upgrade's new values reach the pod's volumes within a minute or so;
/// no restart), the last good one kept while a change does not load.
#[derive(Debug)]
pub struct Reloading {
    files: Option<InjectFiles>,
    state: Mutex<(Option<[FileStamp; 2]>, Arc<InjectConfig>)>,
}

/// Answers `/inject` reviews; shared by every connection.
pub struct Injector {
    config: Reloading,
    cluster: Arc<dyn Cluster>,
    created_by: String,
    counts: Arc<Injections>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").finish_non_exhaustive()
    }
}

/// What became of one `/inject` review (the `result` label of
/// `webhook_injections_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectOutcome {
    Injected,
    Skipped,
    /// Nothing asked, or not a pod's CREATE.
    Ignored,
    /// No review, or one the injector could not act on.
    Error,
}

/// `webhook_injections_total{result}`.
#[derive(Debug, Default)]
pub struct Injections {
    counts: [AtomicU64; 4],
}

const RESULTS: [(&str, InjectOutcome); 4] = [
    ("injected", InjectOutcome::Injected),
    ("skipped", InjectOutcome::Skipped),
    ("ignored", InjectOutcome::Ignored),
    ("error", InjectOutcome::Error),
];

impl Injections {
    pub fn count(&self, r: InjectOutcome) {
        self.counts[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self, r: InjectOutcome) -> u64 {
        self.counts[r as usize].load(Ordering::Relaxed)
    }
}

impl Family for Injections {
    fn render(&self, out: &mut String) {
        header(
            out,
            "webhook_injections_total",
            "counter",
            "Proxy injector reviews, by result.",
        );
        for (label, r) in RESULTS {
            let _ = writeln!(
                out,
                "webhook_injections_total{{result=\"{label}\"}} {}",
                self.total(r)
            );
        }
    }
}

/// One review's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub uid: String,
    pub patch: Option<Value>,
    pub warning: Option<String>,
    pub result: InjectOutcome,
}

impl Answer {
    /// The `AdmissionReview` to answer with.
    pub fn to_json(&self) -> Vec<u8> {
        let mut response = json!({ "uid": self.uid, "allowed": true });
        if let Some(patch) = &self.patch {
            let bytes = serde_json::to_vec(patch).unwrap_or_default();
            response["patchType"] = "JSONPatch".into();
            response["patch"] = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
        if let Some(w) = &self.warning {
            response["warnings"] = json!([w]);
        }
        super::review::answer_with(response)
    }
}

impl InjectFiles {
    /// Reads and checks both files.
    pub fn load(&self) -> Result<InjectConfig, LoadError> {
        let text =
            std::fs::read_to_string(&self.values).map_err(|e| LoadError::Values(e.to_string()))?;
        let values = Values::from_yaml(&text).map_err(LoadError::Values)?;
        inject::settings::check_values(&values).map_err(LoadError::Values)?;
        for (field, value, flag, ours) in [
            (
                "trustDomain",
                &values.trust_domain,
                "--trust-domain",
                &self.trust_domain,
            ),
            (
                "clusterDomain",
                &values.cluster_domain,
                "--cluster-domain",
                &self.cluster_domain,
            ),
        ] {
            if value.trim_matches('.') != ours {
                return Err(LoadError::Values(format!(
                    "{field} {value:?} is not the controller's {flag} {ours:?}"
                )));
            }
        }
        let trust_anchors = std::fs::read_to_string(&self.anchors)
            .map_err(|e| LoadError::Anchors(e.to_string()))?;
        if !trust_anchors.contains("-----BEGIN CERTIFICATE-----") {
            return Err(LoadError::Anchors("no PEM CERTIFICATE block".into()));
        }
        Ok(InjectConfig {
            values,
            trust_anchors,
        })
    }

    fn stamps(&self) -> Option<[FileStamp; 2]> {
        Some([FileStamp::of(&self.values)?, FileStamp::of(&self.anchors)?])
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Values(m) => write!(f, "values: {m}"),
            LoadError::Anchors(m) => write!(f, "trust anchors: {m}"),
        }
    }
}

impl Reloading {
    /// A configuration that never changes (tests).
    pub fn fixed(config: InjectConfig) -> Self {
        Self {
            files: None,
            state: Mutex::new((None, Arc::new(config))),
        }
    }

    /// Loads the files now: the injector never starts without a configuration.
    pub fn from_files(files: InjectFiles) -> Result<Self, LoadError> {
        let stamps = files.stamps();
        let config = files.load()?;
        Ok(Self {
            files: Some(files),
            state: Mutex::new((stamps, Arc::new(config))),
        })
    }

    /// The configuration to inject with, re-read first if a file changed.
    pub fn current(&self) -> Arc<InjectConfig> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(files) = &self.files {
            let stamps = files.stamps();
            // A file that cannot be stat'ed right now (mid-swap) is looked at again
            // next time.
            if stamps.is_some() && stamps != state.0 {
                state.0 = stamps;
                match files.load() {
                    Ok(config) => {
                        tracing::info!("proxy injector configuration reloaded");
                        state.1 = Arc::new(config);
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        "cannot reload the proxy injector's configuration; injecting with the previous one"
                    ),
                }
            }
        }
        Arc::clone(&state.1)
    }
}

impl Injector {
    pub fn new(config: Reloading, cluster: Arc<dyn Cluster>, counts: Arc<Injections>) -> Self {
        Self {
            config,
            cluster,
            created_by: created_by(),
            counts,
        }
    }

    pub fn counts(&self) -> &Arc<Injections> {
        &self.counts
    }

    /// Reviews one body; `Err` is why it is no `AdmissionReview` (an HTTP 400).
    pub async fn review(&self, body: &[u8]) -> Result<Answer, String> {
        let answer = self.answer(body).await;
        self.counts.count(match &answer {
            Ok(a) => a.result,
            Err(_) => InjectOutcome::Error,
        });
        answer
    }

    async fn answer(&self, body: &[u8]) -> Result<Answer, String> {
        let request = super::review::read_request(body).map_err(|e| e.to_string())?;
        let uid = request.uid.clone();
        let answer = |patch, warning: Option<String>, result| Answer {
            uid: uid.clone(),
            patch,
            warning,
            result,
        };
        if request.operation != "CREATE" {
            return Ok(answer(None, None, InjectOutcome::Ignored));
        }
        if let Some(k) = &request.kind {
            if !(k.group.is_empty() && k.kind == "Pod") {
                let w = format!(
                    "mesh proxy injector: request.kind: only Pods are injected, not {}/{} (check the {} webhook configuration's rules)",
                    k.group,
                    k.kind,
                    mesh_core::install::names::INJECTOR_WEBHOOK
                );
                tracing::warn!(uid = %uid, "{w}");
                return Ok(answer(None, Some(w), InjectOutcome::Error));
            }
        }
        let Some(pod) = request.object.filter(Value::is_object) else {
            let w = "mesh proxy injector: request.object: a pod is required for CREATE".to_string();
            tracing::warn!(uid = %uid, "{w}");
            return Ok(answer(None, Some(w), InjectOutcome::Error));
        };
        let ns_name = match request.namespace.as_deref().unwrap_or_default() {
            "" => pod
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            ns => ns.to_string(),
        };
        let namespace = match self.cluster.namespace(&ns_name).await {
            Ok(ns) => ns,
            Err(error) => {
                // Without the namespace only the pod's own annotation can decide; a
                // pod that asks nothing itself is recorded as not decided.
                tracing::warn!(namespace = %ns_name, %error, "injector: cannot read the namespace");
                let asked = inject::string_map(pod.pointer("/metadata/annotations"))
                    .contains_key(mesh_core::install::meta::INJECT);
                if !asked {
                    let w =
                        format!("mesh proxy injector: cannot read namespace {ns_name:?}: {error}");
                    return Ok(answer(None, Some(w), InjectOutcome::Error));
                }
                Namespace {
                    name: ns_name.clone(),
                    ..Namespace::default()
                }
            }
        };
        let owner_ref = self.owner(&ns_name, &pod).await;
        let owner = owner_ref.as_ref().map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
        });
        let config = self.config.current();
        let decision = inject::decide(Input {
            pod: &pod,
            namespace: &namespace,
            owner: owner.as_ref(),
            values: &config.values,
            trust_anchors: &config.trust_anchors,
            created_by: &self.created_by,
        });
        let pod_name = pod
            .pointer("/metadata/name")
            .or_else(|| pod.pointer("/metadata/generateName"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok(match decision {
            Decision::Inject(patch) => {
                tracing::debug!(namespace = %ns_name, pod = %pod_name, "injected");
                answer(Some(patch.to_json()), None, InjectOutcome::Injected)
            }
            Decision::Skip { reason, patch } => {
                tracing::info!(namespace = %ns_name, pod = %pod_name, %reason, "injection skipped");
                if let (Some(owner), false) = (owner_ref, request.dry_run.unwrap_or(false)) {
                    let cluster = Arc::clone(&self.cluster);
                    let reason = reason.clone();
                    // Off the admission's path: the API server waits for the answer.
                    tokio::spawn(async move {
                        if let Err(error) = cluster.skipped_event(&ns_name, &owner, &reason).await {
                            tracing::warn!(%error, kind = %owner.kind, name = %owner.name, "injector: cannot record the skip as an Event");
                        }
                    });
                }
                let patch = (!patch.is_empty()).then(|| patch.to_json());
                answer(patch, None, InjectOutcome::Skipped)
            }
            Decision::NotAsked => answer(None, None, InjectOutcome::Ignored),
        })
    }

    /// The pod's workload: its controller, followed from a ReplicaSet to its
    /// Deployment and from a Job to its CronJob. A failed lookup keeps the nearest
    /// owner known (logged).
    async fn owner(&self, namespace: &str, pod: &Value) -> Option<OwnerRef> {
        let first = controller_ref(pod)?;
        let parent_kind = match (first.api_version.as_str(), first.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => Some("Deployment"),
            ("batch/v1", "Job") => Some("CronJob"),
            _ => None,
        };
        if let Some(parent_kind) = parent_kind {
            match self
                .cluster
                .controller_of(namespace, &first.kind, &first.name)
                .await
            {
                Ok(Some(parent)) if parent.kind == parent_kind => return Some(parent),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%namespace, kind = %first.kind, name = %first.name, %error, "injector: cannot read the pod's owner");
                }
            }
        }
        Some(first)
    }
}

/// The `ownerReferences` entry with `controller: true`.
pub fn controller_ref(object: &Value) -> Option<OwnerRef> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller") == Some(&Value::Bool(true)))
        .and_then(|r| {
            Some(OwnerRef {
                api_version: r.get("apiVersion")?.as_str()?.to_string(),
                kind: r.get("kind")?.as_str()?.to_string(),
                name: r.get("name")?.as_str()?.to_string(),
            })
        })
}

/// [`Cluster`] over the API server: `get` on namespaces, replicasets and jobs
/// (metadata only); `create` and `patch` on `events.k8s.io` events (a repeated
/// Event is one series, patched).
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
    recorder: kube::runtime::events::Recorder,
}

impl KubeCluster {
    pub fn new(client: kube::Client) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: mesh_core::install::names::INJECTOR_WEBHOOK.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter);
        Self { client, recorder }
    }
}

impl Cluster for KubeCluster {
    fn namespace<'a>(&'a self, name: &'a str) -> Lookup<'a, Namespace> {
        Box::pin(async move {
            use k8s_openapi::api::core::v1::Namespace as K8sNamespace;
            let api: kube::Api<K8sNamespace> = kube::Api::all(self.client.clone());
            let meta = api.get_metadata(name).await.map_err(|e| e.to_string())?;
            Ok(Namespace {
                name: name.to_string(),
                labels: meta.metadata.labels.unwrap_or_default(),
                annotations: meta.metadata.annotations.unwrap_or_default(),
            })
        })
    }

    fn controller_of<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    ) -> Lookup<'a, Option<OwnerRef>> {
        Box::pin(async move {
            use k8s_openapi::api::{apps::v1::ReplicaSet, batch::v1::Job};
            let meta = match kind {
                "ReplicaSet" => kube::Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                    .get_metadata(name)
                    .await
                    .map(|m| m.metadata),
                "Job" => kube::Api::<Job>::namespaced(self.client.clone(), namespace)
                    .get_metadata(name)
                    .await
                    .map(|m| m.metadata),
                other => return Err(format!("no lookup for a {other}'s owner")),
            }
            .map_err(|e| e.to_string())?;
            Ok(meta
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|r| r.controller == Some(true))
                .map(|r| OwnerRef {
                    api_version: r.api_version,
                    kind: r.kind,
                    name: r.name,
                }))
        })
    }

    fn skipped_event<'a>(
        &'a self,
        namespace: &'a str,
        regarding: &'a OwnerRef,
        reason: &'a str,
    ) -> Lookup<'a, ()> {
        Box::pin(async move {
            use kube::runtime::events::{Event, EventType};
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(regarding.api_version.clone()),
                kind: Some(regarding.kind.clone()),
                name: Some(regarding.name.clone()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            };
            // An Event's note holds 1 kB.
            let mut note = reason.to_string();
            if note.len() > 1000 {
                let mut end = 1000;
                while !note.is_char_boundary(end) {
                    end -= 1;
                }
                note.truncate(end);
            }
            let event = Event {
                type_: EventType::Warning,
                reason: SKIPPED_EVENT_REASON.into(),
                note: Some(note),
                action: "InjectProxy".into(),
                secondary: None,
            };
            self.recorder
                .publish(&event, &reference)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests;
