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
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let client = kube::Client::try_default().await?;
//! let index = mesh_controller::index::Index::new("cluster.local", "cluster.local");
//! mesh_controller::k8s::run(client, index, "mesh-system".into()).await
//! # }
//! ```

mod convert;
#[cfg(test)]
mod tests;

use std::fmt::Debug;

use futures_util::StreamExt;
use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        watcher::{self, Event},
        WatchStreamExt,
    },
    Api,
};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

pub use self::convert::{
    parse_port_list, InvalidPortRange, CONTROL_PLANE_NS_LABEL, OPAQUE_PORTS_ANNOTATION,
};
use crate::index::{model, Index, ObjKey, ResetObjects, Resource};

/// Runs the backend: watches the three kinds of object cluster-wide and keeps `index`
/// up to date, until a watch ends for good.
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
) -> anyhow::Result<()> {
    index.ready_once_synced(&Resource::ALL);
    let services = watch(
        Api::<core::Service>::all(client.clone()),
        &index,
        convert::service,
    );
    let slices = watch(
        Api::<discovery::EndpointSlice>::all(client.clone()),
        &index,
        convert::endpoint_slice,
    );
    let pods = watch(
        Api::<core::Pod>::all(client.clone()),
        &index,
        |pod: &core::Pod| convert::pod(pod, &control_plane_ns),
    );
    let cluster_domain = index.cluster_domain().to_string();
    let profiles = watch(
        Api::<DynamicObject>::all_with(client, &profile_resource()),
        &index,
        |obj: &DynamicObject| convert::profile(obj, &cluster_domain),
    );
    tokio::try_join!(services, slices, pods, profiles)?;
    Ok(())
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

/// Runs one watch until its stream ends.
async fn watch<K, M>(
    api: Api<K>,
    index: &Index,
    convert: impl Fn(&K) -> Option<M>,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    M: Model,
{
    let resource = M::RESOURCE.as_str();
    let mut translate = Translate::new(convert);
    let mut events = std::pin::pin!(watcher::watcher(api, watcher_config()).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if let Some(action) = translate.event(event) {
                    action.apply(index);
                }
            }
            // 410 Gone is the API server saying the watch expired: routine, and followed
            // by a re-list that is counted and logged on its own.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                debug!(resource, %status, "watch expired");
            }
            Err(error) => warn!(resource, %error, "watch failed, retrying with backoff"),
        }
    }
    anyhow::bail!("the {resource} watch ended")
}

/// Turns watch events into index updates: converts each object at once, and buffers a
/// re-list until it is complete.
struct Translate<F, M> {
    convert: F,
    /// The models of the list under way, from `Init` to `InitDone`.
    listing: Option<Vec<M>>,
    /// Whether a list was ever started: every later one is a restart of the watch.
    listed: bool,
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
            listed: false,
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
                std::mem::replace(&mut self.listed, true).then_some(Action::Restarted)
            }
            Event::InitApply(obj) => {
                if let Some(model) = (self.convert)(&obj) {
                    self.listing.get_or_insert_with(Vec::new).push(model);
                }
                None
            }
            Event::InitDone => Some(Action::Reset(self.listing.take().unwrap_or_default())),
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
    fn apply(self, index: &Index) {
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
