//! The `kubernetes` discovery backend: watches Services, EndpointSlices, Pods and
//! ServiceProfiles across the cluster and feeds them to the [`Index`].
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
//! [`CRD_RETRY`] until the CRD appears; no restart is needed.
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
//! let status = std::sync::Arc::new(mesh_controller::k8s::Status::default());
//! mesh_controller::k8s::run(client, index, "mesh-system".into(), status).await
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
    control_plane_ns: String,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    index.ready_once_synced(&REQUIRED);
    let services = watch(
        Api::<core::Service>::all(client.clone()),
        &index,
        &status,
        convert::service,
    );
    let slices = watch(
        Api::<discovery::EndpointSlice>::all(client.clone()),
        &index,
        &status,
        convert::endpoint_slice,
    );
    let pods = watch(
        Api::<core::Pod>::all(client.clone()),
        &index,
        &status,
        |pod: &core::Pod| convert::pod(pod, &control_plane_ns),
    );
    let cluster_domain = index.cluster_domain().to_string();
    let profiles = watch(
        Api::<DynamicObject>::all_with(client, &profile_resource()),
        &index,
        &status,
        |obj: &DynamicObject| convert::profile(obj, &cluster_domain),
    );
    tokio::try_join!(services, slices, pods, profiles)?;
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
/// once, a missing CRD (ServiceProfiles only) every [`CRD_RETRY`].
async fn watch<K, M>(
    api: Api<K>,
    index: &Index,
    status: &Status,
    convert: impl Fn(&K) -> Option<M>,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    M: Model,
{
    let resource = M::RESOURCE.as_str();
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
                    action.apply(index, status);
                }
                continue;
            }
            Err(error) => error,
        };
        let failure = Failure::of(&error);
        status.watch_failed(M::RESOURCE);
        let delay = match failure {
            // The API server says the watch expired: routine. It answered, so the
            // outage (if any) is over: re-list now, with a fresh backoff.
            Failure::Gone => {
                debug!(resource, %error, "watch expired; listing again at once");
                backoff.gone()
            }
            Failure::NotFound if M::RESOURCE == Resource::ServiceProfiles => {
                backoff.reset();
                profiles_absent(index, status);
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

impl<M: Model> Action<M> {
    fn apply(self, index: &Index, status: &Status) {
        let resource = M::RESOURCE;
        match self {
            Action::Apply(model) => model.apply(index),
            Action::Delete(key) => M::delete(index, &key),
            Action::Restarted => {
                info!(
                    resource = resource.as_str(),
                    "watch restarted, listing again"
                );
                index.record_watch_restart(resource);
            }
            Action::Reset(models) => {
                debug!(
                    resource = resource.as_str(),
                    objects = models.len(),
                    "listed"
                );
                index.reset(resource, M::reset(models));
                index.synced(resource);
                if resource == Resource::ServiceProfiles
                    && status.set_profiles_crd(true) == Some(false)
                {
                    info!("the ServiceProfile CRD is installed now; profiles are read again");
                }
            }
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
