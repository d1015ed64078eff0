//! The destination index: the controller's in-memory picture of services, endpoint
//! slices and pods, and the live answers to destination queries computed from it.
//!
//! This is the controller's pure core: no IO, no kube, no tonic, so it is tested
//! without a cluster or a socket. Backends feed it with `apply_*`, `delete_*` and
//! [`Index::reset`]; the gRPC layer parses a path into a [`Target`] and
//! [`Index::subscribe`]s to it.
//!
//! Cost model: each distinct target has one shared latest [`Snapshot`] in a
//! `tokio::sync::watch` channel, however many streams ask for it. A change to an
//! object recomputes only the targets that depend on it, found through reverse maps
//! (service → targets, IP → targets, pod → services naming it), never every target.
//! A target's state is dropped with its last [`Subscription`].

pub mod model;
mod query;
mod snapshot;
#[cfg(test)]
mod tests;

pub use model::*;
pub use query::{context_namespace, parse_path, InvalidPath, Target, DEFAULT_PORT};
pub use snapshot::{diff, Change, Labels, ProfileInfo, Snapshot};

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::sync::watch;

/// Every object of one kind, as a backend listed them (after its watch restarted):
/// objects of that kind missing from the list are deleted.
#[derive(Clone, Debug)]
pub enum ResetObjects {
    Services(Vec<Service>),
    EndpointSlices(Vec<EndpointSlice>),
    Pods(Vec<Pod>),
    /// The valid profiles, and the keys of invalid ones, whose last valid version (if
    /// any) stays in force.
    ServiceProfiles(Vec<ServiceProfile>, Vec<ObjKey>),
}

impl ResetObjects {
    fn resource(&self) -> Resource {
        match self {
            Self::Services(_) => Resource::Services,
            Self::EndpointSlices(_) => Resource::EndpointSlices,
            Self::Pods(_) => Resource::Pods,
            Self::ServiceProfiles(..) => Resource::ServiceProfiles,
        }
    }
}

/// A cheap, cloneable handle on the shared index.
#[derive(Clone)]
pub struct Index {
    shared: Arc<Shared>,
}

/// Counts for the controller's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub services: usize,
    pub endpoint_slices: usize,
    pub pods: usize,
    pub service_profiles: usize,
    /// Distinct targets with at least one subscriber.
    pub queries: usize,
    /// Watch restarts recorded per resource, in [`Resource::ALL`] order.
    pub watch_restarts: [u64; 4],
}

impl IndexStats {
    pub fn objects(&self, resource: Resource) -> usize {
        match resource {
            Resource::Services => self.services,
            Resource::EndpointSlices => self.endpoint_slices,
            Resource::Pods => self.pods,
            Resource::ServiceProfiles => self.service_profiles,
        }
    }

    pub fn watch_restarts(&self, resource: Resource) -> u64 {
        self.watch_restarts[resource_index(resource)]
    }
}

/// A live query: the newest snapshot of one target. Dropping the last subscription
/// of a target drops the index's state for it.
pub struct Subscription {
    rx: watch::Receiver<Arc<Snapshot>>,
    target: Target,
    shared: Arc<Shared>,
    /// Keeps the channel of an [`Target::Unknown`] open: such a target never changes,
    /// and its stream must stay open rather than end.
    fixed: Option<watch::Sender<Arc<Snapshot>>>,
    first: bool,
}

struct Shared {
    cluster_domain: Arc<str>,
    trust_domain: Arc<str>,
    state: Mutex<State>,
    ready: watch::Sender<bool>,
    /// Which kinds have been synced once, in [`Resource::ALL`] order.
    synced: watch::Sender<[bool; 4]>,
}

struct State {
    cluster_domain: Arc<str>,
    trust_domain: Arc<str>,
    names: Names,
    not_found: Arc<Snapshot>,

    services: HashMap<ObjKey, Service>,
    slices: HashMap<ObjKey, EndpointSlice>,
    pods: HashMap<ObjKey, Pod>,
    /// Service → its slices.
    slices_by_service: HashMap<ObjKey, BTreeSet<ObjKey>>,
    /// Pod → services whose slices name it, with how many slice endpoints do.
    pod_services: HashMap<ObjKey, HashMap<ObjKey, u32>>,
    /// IP → services with that cluster IP (one, unless the cluster is mid-change).
    cluster_ips: HashMap<IpAddr, BTreeSet<ObjKey>>,
    /// IP → pods with that IP (several when finished pods keep a reused IP).
    pod_ips: HashMap<IpAddr, BTreeSet<ObjKey>>,
    /// Profiles by the service they describe (found from their names).
    profiles: HashMap<ObjKey, ServiceProfile>,
    /// `(namespace, service account)` → identity, so endpoints share the strings.
    identities: HashMap<(Arc<str>, Arc<str>), Identity>,

    queries: HashMap<Target, Query>,
    service_queries: HashMap<ObjKey, HashSet<Target>>,
    ip_queries: HashMap<IpAddr, HashSet<Target>>,

    expected: Option<HashSet<Resource>>,
    synced: HashSet<Resource>,
    watch_restarts: [u64; 4],
}

struct Query {
    tx: watch::Sender<Arc<Snapshot>>,
    subscribers: usize,
    /// Recomputations and publications after the first snapshot; tests check with
    /// them that work is done only where needed.
    recomputes: u64,
    publishes: u64,
}

/// Label names, allocated once and shared by every endpoint.
struct Names {
    namespace: Arc<str>,
    service: Arc<str>,
    pod: Arc<str>,
    serviceaccount: Arc<str>,
}

/// What a mutation touched; resolved into targets to recompute once per operation.
#[derive(Default)]
struct Dirty {
    services: HashSet<ObjKey>,
    ips: HashSet<IpAddr>,
}

/// One kind of object the index stores, as a re-list ([`State::replace`]) sees it.
trait Kind: Sized {
    /// The object's own key.
    fn key(&self) -> &ObjKey;
    /// The key the index stores an object of key `key` under, if it stores it.
    fn stored_key(_: &State, key: &ObjKey) -> Option<ObjKey> {
        Some(key.clone())
    }
    /// The stored objects of this kind, by stored key.
    fn stored(state: &State) -> &HashMap<ObjKey, Self>;
    fn apply(state: &mut State, object: Self, dirty: &mut Dirty);
    /// Removes the object stored under `stored_key`.
    fn remove(state: &mut State, stored_key: &ObjKey, dirty: &mut Dirty);
}

impl Kind for Service {
    fn key(&self) -> &ObjKey {
        &self.key
    }
    fn stored(state: &State) -> &HashMap<ObjKey, Self> {
        &state.services
    }
    fn apply(state: &mut State, object: Self, dirty: &mut Dirty) {
        state.apply_service(object, dirty);
    }
    fn remove(state: &mut State, stored_key: &ObjKey, dirty: &mut Dirty) {
        state.delete_service(stored_key, dirty);
    }
}

impl Kind for EndpointSlice {
    fn key(&self) -> &ObjKey {
        &self.key
    }
    fn stored(state: &State) -> &HashMap<ObjKey, Self> {
        &state.slices
    }
    fn apply(state: &mut State, object: Self, dirty: &mut Dirty) {
        state.apply_slice(object, dirty);
    }
    fn remove(state: &mut State, stored_key: &ObjKey, dirty: &mut Dirty) {
        state.delete_slice(stored_key, dirty);
    }
}

impl Kind for Pod {
    fn key(&self) -> &ObjKey {
        &self.key
    }
    fn stored(state: &State) -> &HashMap<ObjKey, Self> {
        &state.pods
    }
    fn apply(state: &mut State, object: Self, dirty: &mut Dirty) {
        state.apply_pod(object, dirty);
    }
    fn remove(state: &mut State, stored_key: &ObjKey, dirty: &mut Dirty) {
        state.delete_pod(stored_key, dirty);
    }
}

/// Profiles are stored by the service they describe, found from their names.
impl Kind for ServiceProfile {
    fn key(&self) -> &ObjKey {
        &self.key
    }
    fn stored_key(state: &State, key: &ObjKey) -> Option<ObjKey> {
        state.profile_service(key)
    }
    fn stored(state: &State) -> &HashMap<ObjKey, Self> {
        &state.profiles
    }
    fn apply(state: &mut State, object: Self, dirty: &mut Dirty) {
        state.apply_profile(object, dirty);
    }
    fn remove(state: &mut State, service: &ObjKey, dirty: &mut Dirty) {
        if state.profiles.remove(service).is_some() {
            dirty.services.insert(service.clone());
        }
    }
}

fn resource_index(resource: Resource) -> usize {
    match resource {
        Resource::Services => 0,
        Resource::EndpointSlices => 1,
        Resource::Pods => 2,
        Resource::ServiceProfiles => 3,
    }
}

// === impl Index ===

impl Index {
    pub fn new(cluster_domain: &str, trust_domain: &str) -> Index {
        let state = State {
            cluster_domain: cluster_domain.trim_matches('.').into(),
            trust_domain: trust_domain.into(),
            names: Names {
                namespace: "namespace".into(),
                service: "service".into(),
                pod: "pod".into(),
                serviceaccount: "serviceaccount".into(),
            },
            not_found: Arc::new(Snapshot::not_found()),
            services: HashMap::new(),
            slices: HashMap::new(),
            pods: HashMap::new(),
            slices_by_service: HashMap::new(),
            pod_services: HashMap::new(),
            cluster_ips: HashMap::new(),
            pod_ips: HashMap::new(),
            profiles: HashMap::new(),
            identities: HashMap::new(),
            queries: HashMap::new(),
            service_queries: HashMap::new(),
            ip_queries: HashMap::new(),
            expected: None,
            synced: HashSet::new(),
            watch_restarts: [0; 4],
        };
        Index {
            shared: Arc::new(Shared {
                cluster_domain: cluster_domain.trim_matches('.').into(),
                trust_domain: trust_domain.into(),
                state: Mutex::new(state),
                ready: watch::Sender::new(false),
                synced: watch::Sender::new([false; 4]),
            }),
        }
    }

    /// The cluster domain paths are resolved in (`cluster.local`).
    pub fn cluster_domain(&self) -> &str {
        &self.shared.cluster_domain
    }

    /// The trust domain identities are named in (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.shared.trust_domain
    }

    pub fn apply_service(&self, svc: Service) {
        self.mutate(|state, dirty| state.apply_service(svc, dirty));
    }

    pub fn delete_service(&self, key: &ObjKey) {
        self.mutate(|state, dirty| state.delete_service(key, dirty));
    }

    pub fn apply_slice(&self, slice: EndpointSlice) {
        self.mutate(|state, dirty| state.apply_slice(slice, dirty));
    }

    pub fn delete_slice(&self, key: &ObjKey) {
        self.mutate(|state, dirty| state.delete_slice(key, dirty));
    }

    pub fn apply_pod(&self, pod: Pod) {
        self.mutate(|state, dirty| state.apply_pod(pod, dirty));
    }

    pub fn delete_pod(&self, key: &ObjKey) {
        self.mutate(|state, dirty| state.delete_pod(key, dirty));
    }

    /// Applies a valid profile. One whose name is not `<svc>.<ns>.svc.<cluster-domain>`
    /// in the service's own namespace describes no service here and is ignored.
    pub fn apply_profile(&self, profile: ServiceProfile) {
        self.mutate(|state, dirty| state.apply_profile(profile, dirty));
    }

    /// Deletes the profile with this object key.
    pub fn delete_profile(&self, key: &ObjKey) {
        self.mutate(|state, dirty| state.delete_profile(key, dirty));
    }

    /// Replaces every object of one kind with `objects` (after a re-list). Streams see
    /// one recomputation for the whole list, not one per object.
    ///
    /// `resource` must match the kind of `objects`; if it does not, the objects win.
    pub fn reset(&self, resource: Resource, objects: ResetObjects) {
        if resource != objects.resource() {
            tracing::warn!(
                ?resource,
                objects = objects.resource().as_str(),
                "reset with mismatched resource"
            );
        }
        self.mutate(|state, dirty| state.reset(objects, dirty));
    }

    /// Several [`reset`](Self::reset)s as one change: streams never see a mix of old
    /// and new kinds (the file backend replaces everything at once this way).
    pub fn reset_many(&self, objects: impl IntoIterator<Item = ResetObjects>) {
        self.mutate(|state, dirty| {
            for objects in objects {
                state.reset(objects, dirty);
            }
        });
    }

    /// Declares which kinds of object the index needs before it answers: it is ready
    /// once each of them is [`synced`](Self::synced). The Kubernetes backend leaves
    /// ServiceProfiles out (endpoints never wait on profiles: their CRD may be
    /// missing); the file backend syncs every kind at once.
    pub fn ready_once_synced(&self, resources: &[Resource]) {
        let mut state = self.shared.lock();
        state.expected = Some(resources.iter().copied().collect());
        self.update_ready(&state);
    }

    /// The first full list of `resource` is in the index (or the backend knows there
    /// are none, e.g. their CRD is not installed).
    pub fn synced(&self, resource: Resource) {
        let mut state = self.shared.lock();
        state.synced.insert(resource);
        self.update_ready(&state);
        self.shared
            .synced
            .send_if_modified(|s| !std::mem::replace(&mut s[resource_index(resource)], true));
    }

    /// Waits until `resource` has been [`synced`](Self::synced) once (at once if it
    /// has): for answers that depend on a kind readiness does not wait for.
    pub async fn synced_once(&self, resource: Resource) {
        let mut rx = self.shared.synced.subscribe();
        // The sender lives as long as `self`, so this ends only when synced.
        let _ = rx.wait_for(|s| s[resource_index(resource)]).await;
    }

    /// Counts a restart of a backend's watch (exposed as a metric).
    pub fn record_watch_restart(&self, resource: Resource) {
        self.shared.lock().watch_restarts[resource_index(resource)] += 1;
    }

    /// Every expected kind has been synced.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Follows [`is_ready`](Self::is_ready).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.shared.ready.subscribe()
    }

    pub fn stats(&self) -> IndexStats {
        let state = self.shared.lock();
        IndexStats {
            services: state.services.len(),
            endpoint_slices: state.slices.len(),
            pods: state.pods.len(),
            service_profiles: state.profiles.len(),
            queries: state.queries.len(),
            watch_restarts: state.watch_restarts,
        }
    }

    /// Every pod, as the backends gave them (for the metrics API's scraper, once per
    /// round).
    pub fn pods(&self) -> Vec<Pod> {
        self.shared.lock().pods.values().cloned().collect()
    }

    /// One pod, as the backends gave it (for the API's proxy-metrics).
    pub fn pod(&self, key: &ObjKey) -> Option<Pod> {
        self.shared.lock().pods.get(key).cloned()
    }

    /// The pods a service's endpoint slices name, or `None` when the index has no
    /// such service (for the tap API).
    pub fn service_pods(&self, service: &ObjKey) -> Option<Vec<Pod>> {
        let state = self.shared.lock();
        state.services.get(service)?;
        let mut pods: Vec<Pod> = state
            .pod_services
            .iter()
            .filter(|(_, services)| services.contains_key(service))
            .filter_map(|(pod, _)| state.pods.get(pod).cloned())
            .collect();
        pods.sort_by(|a, b| a.key.cmp(&b.key));
        Some(pods)
    }

    /// The services whose endpoint slices name any of `pods` (the services a workload
    /// serves), each with whether a ServiceProfile describes it; by namespace and name.
    pub fn services_of_pods<'a>(
        &self,
        pods: impl IntoIterator<Item = &'a ObjKey>,
    ) -> Vec<(ObjKey, bool)> {
        let state = self.shared.lock();
        let mut services: BTreeSet<&ObjKey> = BTreeSet::new();
        for pod in pods {
            if let Some(of) = state.pod_services.get(pod) {
                services.extend(of.keys().filter(|s| state.services.contains_key(*s)));
            }
        }
        services
            .into_iter()
            .map(|s| (s.clone(), state.profiles.contains_key(s)))
            .collect()
    }

    /// The target ports of the endpoint slices that name a pod: the ports it serves
    /// behind services, for `/api/policy` (one walk of the slices; a diagnostic, not
    /// a stream).
    pub fn endpoint_ports(&self, pod: &ObjKey) -> BTreeSet<u16> {
        let state = self.shared.lock();
        state
            .slices
            .values()
            .filter(|slice| {
                *slice.key.namespace == *pod.namespace
                    && slice
                        .endpoints
                        .iter()
                        .any(|e| e.pod.as_deref() == Some(&*pod.name))
            })
            .flat_map(|slice| slice.ports.iter().map(|p| p.port))
            .collect()
    }

    /// Parses a destination path with this index's cluster domain.
    pub fn parse(&self, path: &str, context_token: &str) -> Result<Target, InvalidPath> {
        let ns = context_namespace(context_token);
        parse_path(path, ns.as_deref(), self.cluster_domain())
    }

    /// Starts following `target`. Streams on the same target share its snapshots.
    pub fn subscribe(&self, target: Target) -> Subscription {
        if target == Target::Unknown {
            let not_found = Arc::clone(&self.shared.lock().not_found);
            let (tx, rx) = watch::channel(not_found);
            return Subscription {
                rx,
                target,
                shared: Arc::clone(&self.shared),
                fixed: Some(tx),
                first: true,
            };
        }

        let mut state = self.shared.lock();
        let rx = match state.queries.get_mut(&target) {
            Some(query) => {
                query.subscribers += 1;
                query.tx.subscribe()
            }
            None => {
                let snapshot = state.compute(&target, None);
                let (tx, rx) = watch::channel(snapshot);
                state.queries.insert(
                    target.clone(),
                    Query {
                        tx,
                        subscribers: 1,
                        recomputes: 0,
                        publishes: 0,
                    },
                );
                state.add_dependency(&target);
                rx
            }
        };
        drop(state);
        Subscription {
            rx,
            target,
            shared: Arc::clone(&self.shared),
            fixed: None,
            first: true,
        }
    }

    fn mutate(&self, f: impl FnOnce(&mut State, &mut Dirty)) {
        let mut state = self.shared.lock();
        let mut dirty = Dirty::default();
        f(&mut state, &mut dirty);
        state.recompute(dirty);
    }

    fn update_ready(&self, state: &State) {
        let ready = match &state.expected {
            Some(expected) => expected.iter().all(|r| state.synced.contains(r)),
            None => false,
        };
        self.shared.ready.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("stats", &self.stats())
            .finish()
    }
}

// === impl Shared ===

impl Shared {
    /// Locks the state. A panic while holding the lock cannot leave the maps in a
    /// state worse than a missed update, so a poisoned lock is used as is rather than
    /// taking the whole controller down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Subscription ===

impl Subscription {
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The current snapshot, marking it seen.
    pub fn current(&mut self) -> Arc<Snapshot> {
        self.first = false;
        Arc::clone(&self.rx.borrow_and_update())
    }

    /// The current snapshot the first time, then the newest one each time it changes.
    /// Changes that happen while the caller is busy are coalesced into the newest.
    pub async fn next(&mut self) -> Arc<Snapshot> {
        if self.first {
            return self.current();
        }
        if self.rx.changed().await.is_err() {
            // The index never drops the sender of a subscribed target; should that
            // change, an unchanging answer is still a correct one.
            std::future::pending::<()>().await;
        }
        self.current()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.fixed.is_some() {
            return;
        }
        let mut state = self.shared.lock();
        let last = match state.queries.get_mut(&self.target) {
            Some(query) => {
                query.subscribers = query.subscribers.saturating_sub(1);
                query.subscribers == 0
            }
            None => false,
        };
        if last {
            state.queries.remove(&self.target);
            state.remove_dependency(&self.target);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("target", &self.target)
            .finish()
    }
}

// === impl State ===

impl State {
    fn apply_service(&mut self, svc: Service, dirty: &mut Dirty) {
        if self.services.get(&svc.key) == Some(&svc) {
            return;
        }
        let key = svc.key.clone();
        for ip in &svc.cluster_ips {
            self.cluster_ips.entry(*ip).or_default().insert(key.clone());
            dirty.ips.insert(*ip);
        }
        if let Some(old) = self.services.insert(key.clone(), svc) {
            let new_ips = &self.services[&key].cluster_ips;
            for ip in old.cluster_ips.iter().filter(|ip| !new_ips.contains(ip)) {
                remove_from(&mut self.cluster_ips, ip, &key);
                dirty.ips.insert(*ip);
            }
        }
        dirty.services.insert(key);
    }

    fn delete_service(&mut self, key: &ObjKey, dirty: &mut Dirty) {
        let Some(old) = self.services.remove(key) else {
            return;
        };
        for ip in &old.cluster_ips {
            remove_from(&mut self.cluster_ips, ip, key);
            dirty.ips.insert(*ip);
        }
        dirty.services.insert(key.clone());
    }

    fn apply_slice(&mut self, slice: EndpointSlice, dirty: &mut Dirty) {
        if self.slices.get(&slice.key) == Some(&slice) {
            return;
        }
        let key = slice.key.clone();
        self.link_slice(&slice, dirty);
        if let Some(old) = self.slices.insert(key, slice) {
            self.unlink_slice(&old, dirty);
        }
    }

    fn delete_slice(&mut self, key: &ObjKey, dirty: &mut Dirty) {
        if let Some(old) = self.slices.remove(key) {
            self.unlink_slice(&old, dirty);
        }
    }

    /// Adds a slice's entries to the reverse maps. Called before [`unlink_slice`] of
    /// the version it replaces, so counts never drop to zero in between.
    fn link_slice(&mut self, slice: &EndpointSlice, dirty: &mut Dirty) {
        let service = slice_service(slice);
        self.slices_by_service
            .entry(service.clone())
            .or_default()
            .insert(slice.key.clone());
        for pod in slice.endpoints.iter().filter_map(|ep| ep.pod.as_ref()) {
            let pod = ObjKey {
                namespace: Arc::clone(&slice.key.namespace),
                name: Arc::clone(pod),
            };
            *self
                .pod_services
                .entry(pod)
                .or_default()
                .entry(service.clone())
                .or_default() += 1;
        }
        dirty.services.insert(service);
    }

    fn unlink_slice(&mut self, slice: &EndpointSlice, dirty: &mut Dirty) {
        let service = slice_service(slice);
        // A replacement slice under the same key for the same service is still linked.
        let replaced = self
            .slices
            .get(&slice.key)
            .is_some_and(|s| s.service == slice.service);
        if !replaced {
            remove_from(&mut self.slices_by_service, &service, &slice.key);
        }
        for pod in slice.endpoints.iter().filter_map(|ep| ep.pod.as_ref()) {
            let pod = ObjKey {
                namespace: Arc::clone(&slice.key.namespace),
                name: Arc::clone(pod),
            };
            if let Some(services) = self.pod_services.get_mut(&pod) {
                if let Some(count) = services.get_mut(&service) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        services.remove(&service);
                    }
                }
                if services.is_empty() {
                    self.pod_services.remove(&pod);
                }
            }
        }
        dirty.services.insert(service);
    }

    fn apply_pod(&mut self, pod: Pod, dirty: &mut Dirty) {
        if self.pods.get(&pod.key) == Some(&pod) {
            return;
        }
        let key = pod.key.clone();
        for ip in &pod.ips {
            self.pod_ips.entry(*ip).or_default().insert(key.clone());
            dirty.ips.insert(*ip);
        }
        if let Some(old) = self.pods.insert(key.clone(), pod) {
            let new_ips = &self.pods[&key].ips;
            for ip in old.ips.iter().filter(|ip| !new_ips.contains(ip)) {
                remove_from(&mut self.pod_ips, ip, &key);
                dirty.ips.insert(*ip);
            }
        }
        self.dirty_pod_services(&key, dirty);
    }

    fn delete_pod(&mut self, key: &ObjKey, dirty: &mut Dirty) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        for ip in &old.ips {
            remove_from(&mut self.pod_ips, ip, key);
            dirty.ips.insert(*ip);
        }
        self.dirty_pod_services(key, dirty);
    }

    /// The service a profile object describes: `<svc>.<ns>.svc.<cluster-domain>` in
    /// namespace `<ns>`.
    fn profile_service(&self, key: &ObjKey) -> Option<ObjKey> {
        let rest = key
            .name
            .strip_suffix(&*self.cluster_domain)?
            .strip_suffix(".svc.")?;
        let (svc, ns) = rest.split_once('.')?;
        (ns == &*key.namespace && !svc.is_empty()).then(|| ObjKey {
            namespace: Arc::clone(&key.namespace),
            name: svc.into(),
        })
    }

    fn apply_profile(&mut self, profile: ServiceProfile, dirty: &mut Dirty) {
        let Some(service) = self.profile_service(&profile.key) else {
            // Validation refuses such a profile before it gets here (every backend
            // validates); this only keeps the index consistent should one slip by.
            tracing::warn!(profile = %profile.key, "a profile that names no service of its namespace; ignored");
            return;
        };
        if self.profiles.get(&service) == Some(&profile) {
            return;
        }
        self.profiles.insert(service.clone(), profile);
        dirty.services.insert(service);
    }

    fn delete_profile(&mut self, key: &ObjKey, dirty: &mut Dirty) {
        let Some(service) = self.profile_service(key) else {
            return;
        };
        if self.profiles.remove(&service).is_some() {
            dirty.services.insert(service);
        }
    }

    fn dirty_pod_services(&self, pod: &ObjKey, dirty: &mut Dirty) {
        if let Some(services) = self.pod_services.get(pod) {
            dirty.services.extend(services.keys().cloned());
        }
    }

    fn reset(&mut self, objects: ResetObjects, dirty: &mut Dirty) {
        match objects {
            ResetObjects::Services(services) => self.replace(services, &[], dirty),
            ResetObjects::EndpointSlices(slices) => self.replace(slices, &[], dirty),
            ResetObjects::Pods(pods) => self.replace(pods, &[], dirty),
            ResetObjects::ServiceProfiles(profiles, invalid) => {
                self.replace(profiles, &invalid, dirty)
            }
        }
    }

    /// Replaces every stored object of one kind with `objects`: what the list lacks is
    /// removed (unless its key is in `kept`: objects listed but left as they are),
    /// then each listed object is applied.
    fn replace<K: Kind>(&mut self, objects: Vec<K>, kept: &[ObjKey], dirty: &mut Dirty) {
        let keep: HashSet<ObjKey> = objects
            .iter()
            .map(K::key)
            .chain(kept)
            .filter_map(|key| K::stored_key(self, key))
            .collect();
        let gone: Vec<ObjKey> = K::stored(self)
            .keys()
            .filter(|key| !keep.contains(*key))
            .cloned()
            .collect();
        for key in &gone {
            K::remove(self, key, dirty);
        }
        for object in objects {
            K::apply(self, object, dirty);
        }
    }

    fn add_dependency(&mut self, target: &Target) {
        match target {
            Target::Service { service, .. } => {
                self.service_queries
                    .entry(service.clone())
                    .or_default()
                    .insert(target.clone());
            }
            Target::Addr(addr) => {
                self.ip_queries
                    .entry(addr.ip())
                    .or_default()
                    .insert(target.clone());
            }
            Target::Unknown => {}
        }
    }

    fn remove_dependency(&mut self, target: &Target) {
        match target {
            Target::Service { service, .. } => {
                remove_from(&mut self.service_queries, service, target)
            }
            Target::Addr(addr) => remove_from(&mut self.ip_queries, &addr.ip(), target),
            Target::Unknown => {}
        }
    }

    /// Recomputes the targets a mutation touched and publishes those whose answer
    /// changed.
    fn recompute(&mut self, dirty: Dirty) {
        if self.queries.is_empty() {
            return;
        }
        let mut targets: HashSet<Target> = HashSet::new();
        let mut ips = dirty.ips;
        for service in &dirty.services {
            if let Some(ts) = self.service_queries.get(service) {
                targets.extend(ts.iter().cloned());
            }
            // Addresses that are this service's cluster IPs resolve through it.
            if let Some(svc) = self.services.get(service) {
                ips.extend(svc.cluster_ips.iter().copied());
            }
        }
        for ip in &ips {
            if let Some(ts) = self.ip_queries.get(ip) {
                targets.extend(ts.iter().cloned());
            }
        }
        for target in targets {
            let Some(query) = self.queries.get_mut(&target) else {
                continue;
            };
            query.recomputes += 1;
            let prev = Arc::clone(&query.tx.borrow());
            let next = self.compute(&target, Some(&prev));
            if !Arc::ptr_eq(&next, &prev) && *next != *prev {
                if let Some(query) = self.queries.get_mut(&target) {
                    query.tx.send_replace(next);
                    query.publishes += 1;
                }
            }
        }
    }

    /// Resolves `target` now. `prev` (its last snapshot) lends its allocations to the
    /// new one where they are equal, so unchanged endpoints stay shared between the
    /// snapshots streams hold.
    fn compute(&mut self, target: &Target, prev: Option<&Arc<Snapshot>>) -> Arc<Snapshot> {
        let next = match target {
            Target::Service {
                service,
                port,
                hostname,
            } => self.service_snapshot(service, *port, hostname.as_deref(), prev),
            Target::Addr(addr) => {
                let service = self
                    .cluster_ips
                    .get(&addr.ip())
                    .and_then(|s| s.first())
                    .cloned();
                match service {
                    Some(service) => self.service_snapshot(&service, addr.port(), None, prev),
                    None => self.pod_snapshot(*addr, prev),
                }
            }
            Target::Unknown => None,
        };
        match (next, prev) {
            (None, Some(prev)) if !prev.exists => Arc::clone(prev),
            (None, _) => Arc::clone(&self.not_found),
            (Some(next), Some(prev)) if next == **prev => Arc::clone(prev),
            (Some(next), _) => Arc::new(next),
        }
    }

    fn service_snapshot(
        &mut self,
        key: &ObjKey,
        port: u16,
        hostname: Option<&str>,
        prev: Option<&Arc<Snapshot>>,
    ) -> Option<Snapshot> {
        let svc = self.services.get(key)?;
        let labels = share_labels(
            prev,
            [
                (&self.names.namespace, &key.namespace),
                (&self.names.service, &key.name),
            ],
        );
        let fqn: Arc<str> = {
            let fqn = format!("{}.{}.svc.{}", key.name, key.namespace, self.cluster_domain);
            match prev.and_then(|p| p.profile.fully_qualified_name.as_ref()) {
                Some(old) if **old == *fqn => Arc::clone(old),
                _ => fqn.into(),
            }
        };
        let svc_opaque = svc.opaque_ports.contains(port);
        // A service that declares no ports (headless, selector-less) is reached on
        // whatever port the client asked for.
        let svc_port = if svc.ports.is_empty() {
            None
        } else {
            match svc.ports.iter().find(|p| p.port == port) {
                Some(p) => Some(p.clone()),
                None => {
                    return Some(Snapshot {
                        exists: true,
                        labels,
                        endpoints: Vec::new(),
                        profile: ProfileInfo {
                            fully_qualified_name: Some(fqn),
                            opaque: svc_opaque,
                            endpoint: None,
                            spec: self.profiles.get(key).map(|p| p.spec.clone()),
                        },
                    })
                }
            }
        };

        let mut found: Vec<(SocketAddr, Option<Arc<str>>, u16)> = Vec::new();
        if let Some(slice_keys) = self.slices_by_service.get(key) {
            for slice in slice_keys.iter().filter_map(|k| self.slices.get(k)) {
                let Some(target_port) =
                    slice_target_port(slice, svc_port.as_ref(), svc.ports.len() == 1, port)
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    if !ep.ready {
                        continue;
                    }
                    if let Some(h) = hostname {
                        if ep.hostname.as_deref() != Some(h) {
                            continue;
                        }
                    }
                    for ip in &ep.addresses {
                        found.push((
                            SocketAddr::new(*ip, target_port),
                            ep.pod.clone(),
                            target_port,
                        ));
                    }
                }
            }
        }
        // Slices are visited in key order, so of two slices listing one address (as
        // during a slice migration) the same one wins every time.
        found.sort_by_key(|(addr, _, _)| *addr);
        found.dedup_by_key(|(addr, _, _)| *addr);

        let namespace = Arc::clone(&key.namespace);
        let mut endpoints = Vec::with_capacity(found.len());
        for (addr, pod_name, target_port) in found {
            let ep = self.endpoint(addr, &namespace, pod_name.as_ref(), target_port, svc_opaque);
            endpoints.push(share_endpoint(prev, ep));
        }
        Some(Snapshot {
            exists: true,
            labels,
            endpoints,
            profile: ProfileInfo {
                fully_qualified_name: Some(fqn),
                opaque: svc_opaque,
                endpoint: None,
                spec: self.profiles.get(key).map(|p| p.spec.clone()),
            },
        })
    }

    fn pod_snapshot(&mut self, addr: SocketAddr, prev: Option<&Arc<Snapshot>>) -> Option<Snapshot> {
        let key = self
            .pod_ips
            .get(&addr.ip())?
            .iter()
            .find(|k| self.pods.get(*k).is_some_and(|p| p.running))?
            .clone();
        let opaque = self.pods[&key].opaque_ports.contains(addr.port());
        let labels = share_labels(prev, [(&self.names.namespace, &key.namespace)]);
        let ep = self.endpoint(addr, &key.namespace, Some(&key.name), addr.port(), opaque);
        let ep = share_endpoint(prev, ep);
        Some(Snapshot {
            exists: true,
            labels,
            endpoints: vec![Arc::clone(&ep)],
            profile: ProfileInfo {
                fully_qualified_name: None,
                opaque,
                endpoint: Some(ep),
                spec: None,
            },
        })
    }

    /// One endpoint, with its pod's labels and identity when the pod is known.
    fn endpoint(
        &mut self,
        addr: SocketAddr,
        namespace: &Arc<str>,
        pod_name: Option<&Arc<str>>,
        port: u16,
        opaque: bool,
    ) -> Endpoint {
        let mut labels = BTreeMap::new();
        let mut identity = None;
        let mut opaque = opaque;
        if let Some(name) = pod_name {
            labels.insert(Arc::clone(&self.names.pod), Arc::clone(name));
            let key = ObjKey {
                namespace: Arc::clone(namespace),
                name: Arc::clone(name),
            };
            if let Some(pod) = self.pods.get(&key) {
                if let Some((kind, owner)) = &pod.owner {
                    labels.insert(Arc::clone(kind), Arc::clone(owner));
                }
                labels.insert(
                    Arc::clone(&self.names.serviceaccount),
                    Arc::clone(&pod.service_account),
                );
                opaque |= pod.opaque_ports.contains(port);
                if pod.meshed {
                    let sa = Arc::clone(&pod.service_account);
                    let trust_domain = &self.trust_domain;
                    let id = self
                        .identities
                        .entry((Arc::clone(namespace), sa))
                        .or_insert_with_key(|(ns, sa)| {
                            Identity::for_service_account(ns, sa, trust_domain)
                        });
                    identity = Some(id.clone());
                }
            }
        }
        Endpoint {
            addr,
            weight: DEFAULT_WEIGHT,
            labels,
            h2: identity.is_some(),
            identity,
            opaque,
        }
    }
}

/// The service a slice belongs to.
fn slice_service(slice: &EndpointSlice) -> ObjKey {
    ObjKey {
        namespace: Arc::clone(&slice.key.namespace),
        name: Arc::clone(&slice.service),
    }
}

/// The port a slice's endpoints serve the service port on: the slice port named like
/// the service port (named target ports differ per slice), else a numeric target port.
///
/// When a port is renamed, the Service changes first and its slices follow a moment
/// later, so for a while no slice port carries the new name. A service with a single
/// port whose slice has a single port is not ambiguous, so that slice port is used
/// meanwhile rather than dropping every endpoint of the service.
fn slice_target_port(
    slice: &EndpointSlice,
    svc_port: Option<&ServicePort>,
    single_port: bool,
    port: u16,
) -> Option<u16> {
    let Some(svc_port) = svc_port else {
        return Some(port);
    };
    let by_name = slice
        .ports
        .iter()
        .find(|p| p.name.as_deref() == svc_port.name.as_deref())
        .map(|p| p.port);
    let only = match slice.ports.as_slice() {
        [only] if single_port => Some(only.port),
        _ => None,
    };
    by_name.or(only).or(match svc_port.target_port {
        TargetPort::Number(n) => Some(n),
        TargetPort::Name(_) => None,
    })
}

fn share_labels<const N: usize>(
    prev: Option<&Arc<Snapshot>>,
    pairs: [(&Arc<str>, &Arc<str>); N],
) -> Labels {
    let labels: BTreeMap<Arc<str>, Arc<str>> = pairs
        .into_iter()
        .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
        .collect();
    match prev {
        Some(prev) if *prev.labels == labels => Arc::clone(&prev.labels),
        _ => Arc::new(labels),
    }
}

/// `ep`, or the equal endpoint `prev` already holds.
fn share_endpoint(prev: Option<&Arc<Snapshot>>, ep: Endpoint) -> Arc<Endpoint> {
    if let Some(prev) = prev {
        if let Ok(i) = prev.endpoints.binary_search_by_key(&ep.addr, |e| e.addr) {
            if *prev.endpoints[i] == ep {
                return Arc::clone(&prev.endpoints[i]);
            }
        }
    }
    Arc::new(ep)
}

/// Removes `value` from the set at `key`, and the set when it empties.
fn remove_from<K, V, S>(map: &mut HashMap<K, S>, key: &K, value: &V)
where
    K: std::hash::Hash + Eq,
    S: SetLike<V>,
{
    if let Some(set) = map.get_mut(key) {
        set.remove_item(value);
        if set.is_empty_set() {
            map.remove(key);
        }
    }
}

trait SetLike<V> {
    fn remove_item(&mut self, value: &V);
    fn is_empty_set(&self) -> bool;
}

impl<V: Ord> SetLike<V> for BTreeSet<V> {
    fn remove_item(&mut self, value: &V) {
        self.remove(value);
    }
    fn is_empty_set(&self) -> bool {
        self.is_empty()
    }
}

impl<V: std::hash::Hash + Eq> SetLike<V> for HashSet<V> {
    fn remove_item(&mut self, value: &V) {
        self.remove(value);
    }
    fn is_empty_set(&self) -> bool {
        self.is_empty()
    }
}
