//! The `kubernetes` discovery backend: watches Services, EndpointSlices, Pods and
//! ServiceProfiles across the cluster and feeds them to the [`Index`]; and the five
//! `policy.mesh.rs` kinds, with the pods' labels, default-policy annotation, named
//! ports and probes, to the [`PolicyIndex`].
//!
//! Each watch turns every object into its small model type the moment it arrives and
//! drops the Kubernetes object, and no reflector store is kept: the index is the only
//! copy of the cluster the controller holds, which is what keeps it within its memory
//! budget. A re-list (at start, and when the API server has expired the watch) is
//! buffered whole and handed to the index as one [`Index::reset`], so readers never see
//! a half-listed cluster and objects deleted while the watch was down disappear.
//!
//! Readiness waits for Services, EndpointSlices and Pods only: endpoints never wait on
//! profiles. While the ServiceProfile CRD is not installed (its list answers 404),
//! profiles are absent (every `GetProfile` answers the default), one warning says what
//! to run, `serviceprofile_crd_installed` is 0, and the list is retried every
//! [`CRD_RETRY`] until the CRD appears; no restart is needed. A policy kind whose CRD
//! is missing is tolerated the same way (`policy_crd_installed{resource}` 0, one
//! warning per kind): none of that kind applies meanwhile. The policy `Watch` streams
//! answer once pods and every policy kind have been listed (or found absent);
//! readiness does not wait on them. An invalid policy object is logged with every
//! problem and its last valid version stays in force.
//!
//! Retries are this module's, not kube's `StreamBackoff`: that one resets its backoff
//! only when the watcher yields an event, and a watch that restarts after an outage
//! yields none before its `410 Gone`, so the re-list would wait out the backoff the
//! outage built up (8-22 s on a real cluster). Here any answer of the API server (an
//! object, a list, a 410) resets the backoff, and a 410 re-lists at once.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let client = mesh_controller::k8s::client().await?;
//! let index = mesh_controller::index::Index::new("cluster.local", "cluster.local");
//! let policy = mesh_controller::policy::PolicyIndex::new(Default::default());
//! let status = std::sync::Arc::new(mesh_controller::k8s::Status::default());
//! mesh_controller::k8s::run(client, index, policy, "mesh-system".into(), status).await
//! # }
//! ```

mod convert;
#[cfg(test)]
mod tests;

mod backoff;
mod status;

use std::{fmt::Debug, sync::Arc, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher::{self, Event},
    Api,
};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

pub use self::convert::{
    parse_port_list, InvalidPortRange, CONTROL_PLANE_NS_LABEL, OPAQUE_PORTS_ANNOTATION,
};
pub use self::status::Status;
use self::{backoff::Backoff, status::Failure};
use crate::index::{model, Index, ObjKey, ResetObjects, Resource};
use crate::policy::{Part as PolicyPart, PolicyIndex};
use mesh_core::policy::index::Pod as PolicyPod;

/// The kinds the index needs before it is ready: not ServiceProfiles, whose CRD may be
/// missing, and without which every service still has endpoints.
pub const REQUIRED: [Resource; 3] = [Resource::Services, Resource::EndpointSlices, Resource::Pods];

/// How often the ServiceProfile list is tried again while its CRD is missing: a modest
/// pace (an absent CRD is a state that lasts, not an outage), and a profile applied
/// right after the CRD is served within this.
pub const CRD_RETRY: Duration = Duration::from_secs(5);

/// Runs the backend: watches the four kinds of object cluster-wide and keeps `index`
/// up to date, until a watch ends for good; `status` is what it reports on `/metrics`
/// (kept across restarts of the backend).
///
/// Watch errors (the API server unreachable, access denied, a watch expired) are
/// logged and retried with exponential backoff and jitter, forever: the controller
/// stays up and not ready, rather than exiting, until the cluster lets it list. The
/// returned error therefore only reports a watch stream that ended, which kube's
/// watcher does not do.
pub async fn run(
    client: kube::Client,
    index: Index,
    policy: PolicyIndex,
    control_plane_ns: String,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    index.ready_once_synced(&REQUIRED);
    let discovered = Discovered {
        index: &index,
        status: &status,
    };
    let services = watch(
        Api::<core::Service>::all(client.clone()),
        &discovered,
        convert::service,
    );
    let slices = watch(
        Api::<discovery::EndpointSlice>::all(client.clone()),
        &discovered,
        convert::endpoint_slice,
    );
    let pod_sink = Pods {
        discovered: &discovered,
        policy: &policy,
    };
    let pods = watch(
        Api::<core::Pod>::all(client.clone()),
        &pod_sink,
        |pod: &core::Pod| {
            let model = convert::pod(pod, &control_plane_ns)?;
            Some((model, convert::policy_pod(pod)?))
        },
    );
    let cluster_domain = index.cluster_domain().to_string();
    let profiles = watch(
        Api::<DynamicObject>::all_with(client.clone(), &profile_resource()),
        &discovered,
        |obj: &DynamicObject| convert::profile(obj, &cluster_domain),
    );
    let policy_sinks = mesh_core::policy::Kind::ALL.map(|kind| Policies {
        kind,
        policy: &policy,
        status: &status,
    });
    let policies = futures_util::future::try_join_all(policy_sinks.iter().map(|sink| {
        watch(
            Api::<DynamicObject>::all_with(client.clone(), &policy_resource(sink.kind)),
            sink,
            |obj: &DynamicObject| convert::policy(obj, sink.kind),
        )
    }));
    tokio::try_join!(services, slices, pods, profiles, policies)?;
    Ok(())
}

/// The client the watches use: the kubeconfig's or the pod's, without kube's own
/// retries of 429/503/504 answers. Those retry one request up to 15 times, waiting 5 ms
/// doubling up to minutes, unseen: a list refused through an outage would sit in such a
/// wait long after the API server is back, and no metric would show it. The watches
/// retry on their own, visibly (logged, counted), with [`Backoff`].
pub async fn client() -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

/// `serviceprofiles.mesh.rs/v1alpha1`, read as dynamic objects: the spec is decoded
/// and validated by the controller's own [`crate::profile`] code, which names the
/// field of every problem.
pub fn profile_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            crate::profile::GROUP,
            crate::profile::VERSION,
            crate::profile::KIND,
        ),
        crate::profile::PLURAL,
    )
}

/// A policy kind (`policy.mesh.rs/v1alpha1`), read as dynamic objects and validated
/// by `mesh_core::policy`, as the admission webhook validates them.
pub fn policy_resource(kind: mesh_core::policy::Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            mesh_core::policy::GROUP,
            mesh_core::policy::VERSION,
            kind.name(),
        ),
        kind.plural(),
    )
}

/// The watch parameters shared by the watches (services, endpoint slices, pods, profiles).
///
/// Lists are paged (500 objects, the default, as client-go) and read from etcd
/// (`MostRecent`, the default), which is what bounds the memory a re-list takes. The
/// cheaper `any_semantic()` (resourceVersion=0) is deliberately not used: the API server
/// serves such a list from its watch cache and ignores the page size, so at 10k pods
/// the whole list, tens of megabytes of JSON and then of decoded objects, would arrive
/// as one response. Bookmarks (on by default) keep the resume point fresh, so a
/// reconnect rarely needs a re-list.
fn watcher_config() -> watcher::Config {
    watcher::Config::default()
}

/// Runs one watch until its stream ends, retrying failures with [`Backoff`]: a 410 at
/// once, a missing CRD (ServiceProfiles, the policy kinds) every [`CRD_RETRY`].
async fn watch<K, M, S>(
    api: Api<K>,
    sink: &S,
    convert: impl Fn(&K) -> Option<M>,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    S: Sink<M>,
{
    let resource = sink.name();
    let mut translate = Translate::new(convert);
    let mut backoff = Backoff::default();
    let mut events = std::pin::pin!(watcher::watcher(api, watcher_config()));
    while let Some(event) = events.next().await {
        let error = match event {
            Ok(event) => {
                // `Init` is said before the list is asked for: no sign the API server
                // answers. Everything else came from it.
                if !matches!(event, Event::Init) {
                    backoff.reset();
                }
                if let Some(action) = translate.event(event) {
                    action.apply(sink);
                }
                continue;
            }
            Err(error) => error,
        };
        let failure = Failure::of(&error);
        sink.failed();
        let delay = match failure {
            // The API server says the watch expired: routine. It answered, so the
            // outage (if any) is over: re-list now, with a fresh backoff.
            Failure::Gone => {
                debug!(resource, %error, "watch expired; listing again at once");
                backoff.gone()
            }
            Failure::NotFound if sink.absent() => {
                backoff.reset();
                Some(CRD_RETRY)
            }
            Failure::NotFound | Failure::Other => {
                let delay = backoff.next_delay();
                warn!(resource, %error, retry_in = ?delay, "watch failed, retrying with backoff");
                Some(delay)
            }
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }
    anyhow::bail!("the {resource} watch ended")
}

/// Where one watch's events go.
trait Sink<M> {
    /// The resource's plural, for logs.
    fn name(&self) -> &'static str;
    fn apply(&self, model: M);
    fn delete(&self, key: &ObjKey);
    /// A list completed: these are all the objects there are.
    fn reset(&self, models: Vec<M>);
    /// The watch restarted and is listing again.
    fn restarted(&self);
    /// A list or watch request failed (it is retried).
    fn failed(&self);
    /// The resource is not served (404): whether that is tolerated (a CRD not
    /// installed: the kind is empty meanwhile, retried every [`CRD_RETRY`]).
    fn absent(&self) -> bool {
        false
    }
}

/// The discovery kinds, into the discovery index.
struct Discovered<'a> {
    index: &'a Index,
    status: &'a Status,
}

impl<M: Model> Sink<M> for Discovered<'_> {
    fn name(&self) -> &'static str {
        M::RESOURCE.as_str()
    }
    fn apply(&self, model: M) {
        model.apply(self.index);
    }
    fn delete(&self, key: &ObjKey) {
        M::delete(self.index, key);
    }
    fn reset(&self, models: Vec<M>) {
        let resource = M::RESOURCE;
        debug!(
            resource = resource.as_str(),
            objects = models.len(),
            "listed"
        );
        // The status first: whoever sees the listed profiles sees the CRD installed.
        if resource == Resource::ServiceProfiles
            && self.status.set_profiles_crd(true) == Some(false)
        {
            info!("the ServiceProfile CRD is installed now; profiles are read again");
        }
        self.index.reset(resource, M::reset(models));
        self.index.synced(resource);
    }
    fn restarted(&self) {
        info!(
            resource = M::RESOURCE.as_str(),
            "watch restarted, listing again"
        );
        self.index.record_watch_restart(M::RESOURCE);
    }
    fn failed(&self) {
        self.status.watch_failed(M::RESOURCE);
    }
    fn absent(&self) -> bool {
        if M::RESOURCE != Resource::ServiceProfiles {
            return false;
        }
        profiles_absent(self.index, self.status);
        true
    }
}

/// Pods, into both indexes: discovery's model and the policy index's.
struct Pods<'a> {
    discovered: &'a Discovered<'a>,
    policy: &'a PolicyIndex,
}

impl Sink<(model::Pod, PolicyPod)> for Pods<'_> {
    fn name(&self) -> &'static str {
        Resource::Pods.as_str()
    }
    fn apply(&self, (pod, policy): (model::Pod, PolicyPod)) {
        self.discovered.apply(pod);
        self.policy.apply_pod(policy);
    }
    fn delete(&self, key: &ObjKey) {
        Sink::<model::Pod>::delete(self.discovered, key);
        self.policy.delete_pod(&key.namespace, &key.name);
    }
    fn reset(&self, models: Vec<(model::Pod, PolicyPod)>) {
        let (pods, policy): (Vec<_>, Vec<_>) = models.into_iter().unzip();
        self.policy.reset_pods(policy);
        self.policy.synced(PolicyPart::Pods);
        self.discovered.reset(pods);
    }
    fn restarted(&self) {
        Sink::<model::Pod>::restarted(self.discovered);
    }
    fn failed(&self) {
        Sink::<model::Pod>::failed(self.discovered);
    }
}

/// One policy kind, into the policy index. An invalid object is refused with every
/// problem, and the last valid version of it stays in force (as for ServiceProfiles).
struct Policies<'a> {
    kind: mesh_core::policy::Kind,
    policy: &'a PolicyIndex,
    status: &'a Status,
}

impl Sink<convert::PolicyObject> for Policies<'_> {
    fn name(&self) -> &'static str {
        self.kind.plural()
    }
    fn apply(&self, object: convert::PolicyObject) {
        match object.resource {
            Ok(resource) => self.policy.apply(&object.key.namespace, resource),
            Err(problems) => {
                self.status.policy_rejected(self.kind);
                warn!(
                    kind = self.kind.name(),
                    object = %object.key,
                    %problems,
                    "invalid policy resource; the last valid one stays in force"
                )
            }
        }
    }
    fn delete(&self, key: &ObjKey) {
        self.policy.delete(&key.namespace, self.kind, &key.name);
    }
    fn reset(&self, objects: Vec<convert::PolicyObject>) {
        debug!(
            resource = self.kind.plural(),
            objects = objects.len(),
            "listed"
        );
        // The status first, as for profiles.
        if self.status.set_policy_crd(self.kind, true) == Some(false) {
            info!(
                kind = self.kind.name(),
                "the policy CRD is installed now; its resources are read again"
            );
        }
        let mut valid = Vec::with_capacity(objects.len());
        let mut index = self.policy.lock();
        for object in objects {
            match object.resource {
                Ok(resource) => valid.push((object.key.namespace.to_string(), resource)),
                Err(problems) => {
                    self.status.policy_rejected(self.kind);
                    warn!(kind = self.kind.name(), object = %object.key, %problems, "invalid policy resource; the last valid one stays in force");
                    // Kept as the index has it, if it has it.
                    if let Some(kept) =
                        index.resource(&object.key.namespace, self.kind, &object.key.name)
                    {
                        valid.push((object.key.namespace.to_string(), kept));
                    }
                }
            }
        }
        index.reset(&[self.kind], valid);
        drop(index);
        self.policy.synced(PolicyPart::Kind(self.kind));
    }
    fn restarted(&self) {
        info!(
            resource = self.kind.plural(),
            "watch restarted, listing again"
        );
    }
    fn failed(&self) {
        self.status.policy_watch_failed(self.kind);
    }
    fn absent(&self) -> bool {
        if self.status.set_policy_crd(self.kind, false) != Some(false) {
            warn!(
                crd = format!("{}.{}", self.kind.plural(), mesh_core::policy::GROUP),
                retry_every = ?CRD_RETRY,
                "a policy CRD is not installed: no {} applies until it is; install it with `mesh install --crds | kubectl apply -f -`",
                self.kind.name()
            );
        }
        self.policy.reset(&[self.kind], Vec::new());
        self.policy.synced(PolicyPart::Kind(self.kind));
        true
    }
}

/// The ServiceProfile CRD is not installed: no profiles (every service gets the
/// default), said once, loudly, with what to run.
fn profiles_absent(index: &Index, status: &Status) {
    if status.set_profiles_crd(false) != Some(false) {
        warn!(
            crd = "serviceprofiles.mesh.rs",
            retry_every = ?CRD_RETRY,
            "the ServiceProfile CRD is not installed: every service gets the default profile until it is; install it with `mesh install --crds | kubectl apply -f -`"
        );
    }
    index.reset(
        Resource::ServiceProfiles,
        ResetObjects::ServiceProfiles(Vec::new(), Vec::new()),
    );
    index.synced(Resource::ServiceProfiles);
}

/// Turns watch events into index updates: converts each object at once, and buffers a
/// re-list until it is complete.
struct Translate<F, M> {
    convert: F,
    /// The models of the list under way, from `Init` to `InitDone`.
    listing: Option<Vec<M>>,
    /// Whether a list has completed and no list began since: the watch is
    /// established, and the next list is a restart of it (a list that fails and begins
    /// again is the same restart, not another).
    watching: bool,
}

/// What one watch event does to the index.
#[derive(Debug, PartialEq)]
enum Action<M> {
    Apply(M),
    Delete(ObjKey),
    /// The watch restarted and is listing again.
    Restarted,
    /// A list completed: these are all the objects there are.
    Reset(Vec<M>),
}

impl<F, M> Translate<F, M> {
    fn new(convert: F) -> Self {
        Self {
            convert,
            listing: None,
            watching: false,
        }
    }

    fn event<K>(&mut self, event: Event<K>) -> Option<Action<M>>
    where
        K: kube::Resource,
        F: Fn(&K) -> Option<M>,
    {
        match event {
            Event::Init => {
                // A list that failed half-way starts over from scratch: what it had
                // buffered is dropped here, not mixed into the next one.
                self.listing = Some(Vec::new());
                std::mem::replace(&mut self.watching, false).then_some(Action::Restarted)
            }
            Event::InitApply(obj) => {
                if let Some(model) = (self.convert)(&obj) {
                    self.listing.get_or_insert_with(Vec::new).push(model);
                }
                None
            }
            Event::InitDone => {
                self.watching = true;
                Some(Action::Reset(self.listing.take().unwrap_or_default()))
            }
            // An object that no longer converts (a Service turned ExternalName, a slice
            // that lost its service label) may have converted before: it is deleted.
            Event::Apply(obj) => match (self.convert)(&obj) {
                Some(model) => Some(Action::Apply(model)),
                None => convert::obj_key(obj.meta()).map(Action::Delete),
            },
            Event::Delete(obj) => convert::obj_key(obj.meta()).map(Action::Delete),
        }
    }
}

impl<M> Action<M> {
    fn apply(self, sink: &impl Sink<M>) {
        match self {
            Action::Apply(model) => sink.apply(model),
            Action::Delete(key) => sink.delete(&key),
            Action::Restarted => sink.restarted(),
            Action::Reset(models) => sink.reset(models),
        }
    }
}

/// A model type, with the index operations for its kind.
trait Model: Sized {
    const RESOURCE: Resource;
    fn apply(self, index: &Index);
    fn delete(index: &Index, key: &ObjKey);
    fn reset(models: Vec<Self>) -> ResetObjects;
}

impl Model for model::Service {
    const RESOURCE: Resource = Resource::Services;
    fn apply(self, index: &Index) {
        index.apply_service(self);
    }
    fn delete(index: &Index, key: &ObjKey) {
        index.delete_service(key);
    }
    fn reset(models: Vec<Self>) -> ResetObjects {
        ResetObjects::Services(models)
    }
}

impl Model for model::EndpointSlice {
    const RESOURCE: Resource = Resource::EndpointSlices;
    fn apply(self, index: &Index) {
        index.apply_slice(self);
    }
    fn delete(index: &Index, key: &ObjKey) {
        index.delete_slice(key);
    }
    fn reset(models: Vec<Self>) -> ResetObjects {
        ResetObjects::EndpointSlices(models)
    }
}

/// A profile as the watch saw it: valid, or invalid with its problems. An invalid
/// update leaves the last valid profile in force (it is not a deletion), and is logged
/// with every problem.
impl Model for convert::Profile {
    const RESOURCE: Resource = Resource::ServiceProfiles;
    fn apply(self, index: &Index) {
        match self {
            convert::Profile::Valid(p) => index.apply_profile(p),
            convert::Profile::Invalid(key, problems) => {
                warn!(profile = %key, %problems, "invalid ServiceProfile; the last valid one stays in force")
            }
        }
    }
    fn delete(index: &Index, key: &ObjKey) {
        index.delete_profile(key);
    }
    fn reset(models: Vec<Self>) -> ResetObjects {
        let mut valid = Vec::new();
        let mut keep = Vec::new();
        for m in models {
            match m {
                convert::Profile::Valid(p) => valid.push(p),
                convert::Profile::Invalid(key, problems) => {
                    warn!(profile = %key, %problems, "invalid ServiceProfile; the last valid one stays in force");
                    keep.push(key);
                }
            }
        }
        ResetObjects::ServiceProfiles(valid, keep)
    }
}

impl Model for model::Pod {
    const RESOURCE: Resource = Resource::Pods;
    fn apply(self, index: &Index) {
        index.apply_pod(self);
    }
    fn delete(index: &Index, key: &ObjKey) {
        index.delete_pod(key);
    }
    fn reset(models: Vec<Self>) -> ResetObjects {
        ResetObjects::Pods(models)
    }
}
