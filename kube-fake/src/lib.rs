//! An in-process Kubernetes API server for tests: list and watch of Services, Pods,
//! EndpointSlices, ServiceProfiles and the `policy.mesh.rs` kinds over plain HTTP, and
//! the other kinds stored,
//! faithful enough that the real kube-rs client and `kube::runtime::watcher` run
//! against it unchanged.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use k8s_openapi::api::core::v1::Service;
//! use kube::api::{Api, ListParams};
//! use mesh_kube_fake::{service, FakeKube, ServicePort};
//!
//! let api = FakeKube::start().await?;
//! api.apply(service("shop", "web", "198.19.0.10", &[ServicePort::new("http", 80).target(8080)]))?;
//! let services: Api<Service> = Api::all(api.client()?);
//! assert_eq!(services.list(&ListParams::default()).await?.items.len(), 1);
//! // A controller in another process finds it through `KUBECONFIG`.
//! let mut controller = std::process::Command::new("mesh-controller");
//! controller.env("KUBECONFIG", api.kubeconfig_path());
//! # Ok(())
//! # }
//! ```
//!
//! Why a fake and not a cluster: the controller's tests need to provoke what a cluster
//! does rarely and at its own moment (a watch falling out of the history window, a
//! continue token outliving compaction) and to do it on demand, in milliseconds, without
//! root or containers. So the protocol is kept exact where clients depend on it:
//!
//! - one global resourceVersion; every write bumps it and stamps the object; creates
//!   set `uid` and `creationTimestamp`; writing an identical object writes nothing;
//! - lists in etcd key order, chunked with `limit` and `continue` tokens (etcd's
//!   encoding) served from a consistent snapshot at the first page's resourceVersion;
//!   `resourceVersion`/`resourceVersionMatch` with the API server's semantics; label
//!   selectors (the whole grammar) and field selectors (`metadata.*`, and the fields the
//!   API server supports for each kind);
//! - watches as chunked newline-delimited JSON: `ADDED`, `MODIFIED`, `DELETED` (also
//!   when an object stops matching a selector), `BOOKMARK` every
//!   [`FakeKube::set_bookmark_interval`] when asked for, streaming lists
//!   (`sendInitialEvents`, ended by a bookmark annotated `k8s.io/initial-events-end`),
//!   `timeoutSeconds`;
//! - history retained per kind up to [`FakeKube::set_history_limit`] changes;
//!   [`FakeKube::expire`] compacts it all and ends every watch, so a client's next
//!   watch gets an `ERROR` event with a `410 Expired` status, and a continue token gets
//!   a `410` response, and it must re-list.
//!
//! - faults on demand (`faults.rs`): an outage ([`FakeKube::set_unavailable`]), a custom
//!   resource whose CRD is missing ([`FakeKube::set_served`]), TokenReviews RBAC
//!   forbids ([`FakeKube::forbid_token_reviews`]).
//!
//! Writes come from the test, through [`FakeKube::apply`] and [`FakeKube::delete`],
//! and over HTTP (`write.rs`: create, replace, merge patch, server-side apply, delete).
//! Besides the four watched kinds, the fake stores every other kind an install creates
//! (`types.rs`: namespaces, RBAC, workloads, CRDs, webhook configurations; unwatched,
//! at the same resourceVersions) and lists them all in discovery. It answers the
//! reviews a controller or CLI creates to ask a question: TokenReviews (tokens name the
//! users [`FakeKube::add_token`] says), SubjectAccessReviews and
//! SelfSubjectAccessReviews (allowed what [`FakeKube::allow`] allows, or everything to
//! the kubeconfig's administrator, but never what [`FakeKube::deny`] denies, which
//! also refuses the request itself with a 403); strict authentication
//! ([`FakeKube::set_authenticate`]) turns unknown tokens into 401s. `/version`
//! ([`FakeKube::set_version`]), the clock of the `Date` header
//! ([`FakeKube::set_clock_offset`]) and whether the admission API is served
//! ([`FakeKube::set_admission_api`]) are the test's to set. And port-forwards
//! (`pods/portforward` over WebSocket, the kubelet's `v4.channel.k8s.io` framing),
//! each port led to the loopback address [`FakeKube::forward_port`] registered for it
//! (`portforward.rs`).
//!
//! Lifecycle: the server runs on tasks of the runtime that called [`FakeKube::start`],
//! and dropping the `FakeKube` stops it, closes every connection and removes its
//! kubeconfig file.

mod faults;
mod http;
mod objects;
mod portforward;
mod review;
pub mod schema;
mod select;
mod store;
mod types;
mod watch;
mod write;

pub use self::review::ADMIN;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::Notify};

pub use self::objects::{
    endpoint_slice, pod, service, service_profile, Endpoint, ServicePort, TargetPort,
};
use self::store::Store;

/// The resource types the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `v1` Service.
    Service,
    /// `v1` Pod.
    Pod,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `mesh.rs/v1alpha1` ServiceProfile (a custom resource).
    ServiceProfile,
    /// `policy.mesh.rs/v1alpha1` Server (a custom resource, as the four below).
    Server,
    AuthorizationPolicy,
    MeshTlsAuthentication,
    NetworkAuthentication,
    HttpRoute,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Service,
        Kind::Pod,
        Kind::EndpointSlice,
        Kind::ServiceProfile,
        Kind::Server,
        Kind::AuthorizationPolicy,
        Kind::MeshTlsAuthentication,
        Kind::NetworkAuthentication,
        Kind::HttpRoute,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The object's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ServiceProfile => "ServiceProfile",
            Kind::Server => "Server",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::MeshTlsAuthentication => "MeshTLSAuthentication",
            Kind::NetworkAuthentication => "NetworkAuthentication",
            Kind::HttpRoute => "HTTPRoute",
        }
    }

    /// The object's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Pod => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::ServiceProfile => "mesh.rs/v1alpha1",
            _ => "policy.mesh.rs/v1alpha1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Pod => "pods",
            Kind::EndpointSlice => "endpointslices",
            Kind::ServiceProfile => "serviceprofiles",
            _ => self.policy_plural(),
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Pod => "pod",
            Kind::EndpointSlice => "endpointslice",
            Kind::ServiceProfile => "serviceprofile",
            Kind::Server => "server",
            Kind::AuthorizationPolicy => "authorizationpolicy",
            Kind::MeshTlsAuthentication => "meshtlsauthentication",
            Kind::NetworkAuthentication => "networkauthentication",
            Kind::HttpRoute => "httproute",
        }
    }

    fn policy_plural(self) -> &'static str {
        match self {
            Kind::Server => "servers",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::MeshTlsAuthentication => "meshtlsauthentications",
            Kind::NetworkAuthentication => "networkauthentications",
            _ => "httproutes",
        }
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &["svc"],
            Kind::Pod => &["po"],
            Kind::EndpointSlice => &[],
            Kind::ServiceProfile => &["sp"],
            Kind::Server => &["srv"],
            _ => &[],
        }
    }

    fn version(self) -> &'static str {
        match self.api_version().rsplit_once('/') {
            Some((_, version)) => version,
            None => self.api_version(),
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::Service | Kind::Pod => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::ServiceProfile => "mesh.rs",
            _ => "policy.mesh.rs",
        }
    }

    fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.kind() == kind)
    }

    fn from_plural(api_version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.plural() == plural)
    }

    /// The fields a field selector may name, as the API server allows them per kind.
    fn selectable_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &[
                "metadata.name",
                "metadata.namespace",
                "spec.clusterIP",
                "spec.type",
            ],
            Kind::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            _ => &["metadata.name", "metadata.namespace"],
        }
    }
}

/// Counters of what the server has done, for tests to assert on or wait for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// List requests answered with a list (one per page).
    pub lists: u64,
    /// Watch requests answered with a stream.
    pub watches: u64,
    /// Watch streams still open.
    pub open_watches: u64,
    /// GETs of a single object answered with it.
    pub gets: u64,
    /// `410 Gone` answers: responses to continue tokens and `ERROR` events on watches.
    pub gone: u64,
    /// `BOOKMARK` events sent.
    pub bookmarks: u64,
    /// Port-forwards upgraded to a WebSocket (`pods/portforward`).
    pub port_forwards: u64,
    /// Requests answered `503` during an outage ([`FakeKube::set_unavailable`]).
    pub unavailable: u64,
}

#[derive(Debug, Default)]
struct Counters {
    stats: Mutex<Stats>,
    changed: Notify,
}

impl Counters {
    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().expect("stats lock is not poisoned"));
        self.changed.notify_waiters();
    }

    fn get(&self) -> Stats {
        *self.stats.lock().expect("stats lock is not poisoned")
    }
}

/// What open watches are told when something changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pulse {
    rv: u64,
    epoch: u64,
    bookmark_interval: Duration,
}

struct Inner {
    store: Mutex<Store>,
    pulse: tokio::sync::watch::Sender<Pulse>,
    stats: Counters,
    addr: SocketAddr,
    reviews: Mutex<review::Rules>,
    forwards: Mutex<portforward::Forwards>,
    settings: Mutex<Settings>,
    faults: Mutex<faults::Faults>,
}

/// What the test set about the server itself.
#[derive(Clone, Debug)]
struct Settings {
    /// `/version`'s major and minor.
    version: (String, String),
    /// Added to this machine's clock in the `Date` header.
    clock_offset: time::Duration,
    /// Whether `admissionregistration.k8s.io/v1` is served.
    admission: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            version: ("1".into(), "33".into()),
            clock_offset: time::Duration::ZERO,
            admission: true,
        }
    }
}

impl Inner {
    fn rules(&self) -> std::sync::MutexGuard<'_, review::Rules> {
        self.reviews
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The server's clock as an HTTP `Date` (RFC 7231's IMF-fixdate).
    fn http_date(&self) -> String {
        let t = time::OffsetDateTime::now_utc() + self.settings().clock_offset;
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            DAYS[usize::from(t.weekday().number_days_from_monday())],
            t.day(),
            MONTHS[usize::from(u8::from(t.month()) - 1)],
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// Tells open watches what the store looks like now; called after every write.
    fn publish(&self, rv: u64, epoch: u64) {
        self.pulse.send_modify(|p| {
            p.rv = rv;
            p.epoch = epoch;
        });
    }
}

/// The default time between bookmarks on a watch that asked for them. Real API servers
/// send one about every minute; tests want to see them without waiting.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// The default number of changes retained per kind: a watch from further back than this
/// gets 410 Gone. Each retained change holds the object's previous version alive too.
pub const DEFAULT_HISTORY_LIMIT: usize = store::DEFAULT_HISTORY_LIMIT;

/// A running fake API server, and the test's handle for changing what it serves. See the
/// module documentation.
pub struct FakeKube {
    inner: Arc<Inner>,
    kubeconfig: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl FakeKube {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr` (e.g. an address a network namespace can reach), and
    /// writes a kubeconfig for it (see [`FakeKube::kubeconfig_path`]).
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let mut addr = listener.local_addr().context("listener address")?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let store = Store::new();
        let (pulse, _) = tokio::sync::watch::channel(Pulse {
            rv: store.rv(),
            epoch: store.epoch(),
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
        });
        let inner = Arc::new(Inner {
            store: Mutex::new(store),
            pulse,
            stats: Counters::default(),
            addr,
            reviews: Mutex::new(review::Rules::default()),
            forwards: Mutex::new(portforward::Forwards::default()),
            settings: Mutex::new(Settings::default()),
            faults: Mutex::new(faults::Faults::default()),
        });
        // Named by pid and port: test processes run side by side, each with servers of
        // its own.
        let kubeconfig = std::env::temp_dir().join(format!(
            "mesh-kube-fake-{}-{}.kubeconfig",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&kubeconfig, kubeconfig_yaml(&format!("http://{addr}")))
            .with_context(|| format!("write {}", kubeconfig.display()))?;
        let server = tokio::spawn(http::serve(listener, inner.clone()));
        Ok(Self {
            inner,
            kubeconfig,
            server,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The server's URL, `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// A kubeconfig file pointing at the server with no credentials, for a process
    /// started with `KUBECONFIG=<path>`. It is in the temporary directory, and is removed
    /// when the `FakeKube` is dropped (a test of a server that went away keeps a copy).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Makes `token` authenticate as `user` in `groups` (TokenReview); other tokens are
    /// unauthenticated.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.inner.rules().add_token(token, user, groups);
    }

    /// Allows `user` to `verb` the `resource` of API `group` in `namespace` (`None`:
    /// every namespace), as a RoleBinding would (SubjectAccessReview); whatever is not
    /// allowed is denied, with the reason.
    pub fn allow(
        &self,
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) {
        self.inner.rules().allow(review::Access {
            user: user.into(),
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
        });
    }

    /// Denies everyone `verb` on `resource` of API `group` (e.g. `("create", "apps",
    /// "deployments")`): requests get the API server's 403, access reviews
    /// `allowed: false`. Stronger than [`FakeKube::allow`] and than `system:masters`.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        self.inner.rules().deny(verb, group, resource);
    }

    /// Strict authentication: a request whose bearer token [`FakeKube::add_token`]
    /// did not name (or with none) gets `401 Unauthorized`, as from a cluster with
    /// anonymous access off. Off by default, where such a request is [`ADMIN`].
    pub fn set_authenticate(&self, on: bool) {
        self.inner.rules().set_authenticate(on);
    }

    /// What `/version` says (default `1`, `33`).
    pub fn set_version(&self, major: &str, minor: &str) {
        self.inner.settings().version = (major.to_owned(), minor.to_owned());
    }

    /// Sets the server's clock, as its `Date` header shows it, `offset` seconds ahead
    /// of this machine's (negative: behind).
    pub fn set_clock_offset(&self, offset_secs: i64) {
        self.inner.settings().clock_offset = time::Duration::seconds(offset_secs);
    }

    /// Whether `admissionregistration.k8s.io/v1` is served (default: yes); when not,
    /// discovery leaves it out and its resources are 404s.
    pub fn set_admission_api(&self, served: bool) {
        self.inner.settings().admission = served;
    }

    /// Makes `port` of pod `namespace/pod` lead to `to` (a loopback address standing
    /// for the pod's port) for port-forwards (`pods/portforward`, as
    /// `Api::<Pod>::portforward` opens them), replacing what it led to. A forward to a
    /// port with none gets the kubelet's error on its error channel; the pod itself
    /// must exist, or the request is a 404 as in a cluster.
    pub fn forward_port(&self, namespace: &str, pod: &str, port: u16, to: SocketAddr) {
        self.inner
            .forwards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(namespace, pod, port, to);
    }

    /// Undoes [`FakeKube::forward_port`]: later forwards of the port get the kubelet's
    /// error (open ones run on).
    pub fn stop_forward(&self, namespace: &str, pod: &str, port: u16) {
        self.inner
            .forwards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(namespace, pod, port);
    }

    /// Makes the server unavailable (`true`), as during an outage: every request is
    /// answered `503 ServiceUnavailable` and every open watch ends; or available again
    /// (`false`). The store is untouched: [`FakeKube::expire`] during an outage makes
    /// the clients' resourceVersions too old once it ends, as a long outage does.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.fault(|f| f.set_unavailable(unavailable));
    }

    /// Serves `kind` (`true`, the default) or not, as when its CRD is installed or
    /// not: an unserved kind's API group is left out of discovery (`/apis`), and
    /// everything under `/apis/<group>` is a 404 (the API server's plain-text `404 page
    /// not found`, not a `Status`); open watches of it end.
    /// Objects of the kind stay stored, and are listed again once it is served.
    pub fn set_served(&self, kind: Kind, served: bool) {
        self.fault(|f| f.set_served(kind, served));
    }

    /// Makes every TokenReview (`Some(user)`) a `403 Forbidden` naming `user`, as the
    /// API server answers when RBAC does not let that user create TokenReviews; `None`
    /// reviews tokens again.
    pub fn forbid_token_reviews(&self, user: Option<&str>) {
        self.fault(|f| f.forbid_token_reviews(user));
    }

    /// Changes the faults, then wakes every open watch to check whether it must end.
    fn fault(&self, change: impl FnOnce(&mut faults::Faults)) {
        change(
            &mut self
                .inner
                .faults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.inner.pulse.send_modify(|_| {});
    }

    /// A kube-rs client for the server. Needs a tokio runtime (the client spawns a task).
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let url = self.url().parse().context("server URL")?;
        kube::Client::try_from(kube::Config::new(url)).context("build kube client")
    }

    /// Creates or replaces an object (found by kind, namespace and name; the namespace
    /// defaults to `default`) and returns its resourceVersion. Replacing an object with
    /// an identical one changes nothing and notifies no watch, as in Kubernetes.
    pub fn apply(&self, object: serde_json::Value) -> anyhow::Result<u64> {
        self.apply_all([object])
    }

    /// Applies many objects at once (one lock, one wake-up of the watches), e.g. to load
    /// a large cluster; returns the resourceVersion after the last. Stops at the first
    /// invalid object, with the ones before it applied.
    pub fn apply_all(
        &self,
        objects: impl IntoIterator<Item = serde_json::Value>,
    ) -> anyhow::Result<u64> {
        let now = store::now_rfc3339();
        let mut store = self.lock();
        let mut result = Ok(store.rv());
        for object in objects {
            match store.apply(object, &now) {
                Ok((rv, _)) => result = Ok(rv),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let (rv, epoch) = (store.rv(), store.epoch());
        drop(store);
        self.inner.publish(rv, epoch);
        result
    }

    /// Deletes an object at once (as with a zero grace period) and returns the deletion's
    /// resourceVersion, or `None` if there was no such object.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        let mut store = self.lock();
        let rv = store.delete(kind, namespace, name)?;
        let epoch = store.epoch();
        drop(store);
        self.inner.publish(rv, epoch);
        Some(rv)
    }

    /// The stored object, as a GET returns it.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.lock().get(kind, namespace, name).map(|o| o.to_value())
    }

    /// Any stored object by type, as a GET returns it; `namespace` is ignored for a
    /// cluster-scoped type.
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let store = self.lock();
        match types::Resource::from_type(api_version, kind)? {
            types::Resource::Watched(kind) => {
                store.get(kind, namespace, name).map(|o| o.to_value())
            }
            types::Resource::Stored(t) => {
                let ns = if t.namespaced { namespace } else { "" };
                store.others.get(t, ns, name).cloned()
            }
        }
    }

    /// Deletes any stored object by type; whether there was one.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> bool {
        match types::Resource::from_type(api_version, kind) {
            Some(types::Resource::Watched(kind)) => self.delete(kind, namespace, name).is_some(),
            Some(types::Resource::Stored(t)) => {
                let ns = if t.namespaced { namespace } else { "" };
                let mut store = self.lock();
                let gone = store.others.remove(t, ns, name).is_some();
                if gone {
                    store.bump();
                }
                gone
            }
            None => false,
        }
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv()
    }

    /// Compacts all history and ends every open watch: every resourceVersion a client
    /// holds becomes too old, so a watcher's next watch gets 410 and it re-lists, and an
    /// outstanding continue token gets 410. Objects written or deleted afterwards, before
    /// the client re-lists, reach it only through that list.
    pub fn expire(&self) {
        let mut store = self.lock();
        store.expire();
        let (rv, epoch) = (store.rv(), store.epoch());
        drop(store);
        self.inner.publish(rv, epoch);
    }

    /// Sets the time between bookmarks on watches that asked for them (default
    /// [`DEFAULT_BOOKMARK_INTERVAL`]); open watches follow it from their next bookmark or
    /// sooner.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        let interval = interval.max(Duration::from_millis(1));
        self.inner
            .pulse
            .send_modify(|p| p.bookmark_interval = interval);
    }

    /// Sets how many changes are retained per kind (default [`DEFAULT_HISTORY_LIMIT`]),
    /// compacting older ones now if there are more.
    pub fn set_history_limit(&self, changes: usize) {
        self.lock().set_history_limit(changes);
    }

    /// What the server has done so far.
    pub fn stats(&self) -> Stats {
        self.inner.stats.get()
    }

    /// Waits until `done` holds for the stats, failing after `timeout` with what was
    /// awaited and the last stats. Wakes on every change of the counters; it does not
    /// poll.
    pub async fn wait_for_stats(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Stats) -> bool,
    ) -> anyhow::Result<Stats> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.stats.changed.notified();
            tokio::pin!(changed);
            // Register before checking, so that a change in between still wakes us.
            changed.as_mut().enable();
            let stats = self.stats();
            if done(&stats) {
                return Ok(stats);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!("timed out after {timeout:?} waiting for {what}: {stats:?}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.store.lock().expect("store lock is not poisoned")
    }
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the store: it may hold tens of thousands of objects.
        f.debug_struct("FakeKube")
            .field("addr", &self.inner.addr)
            .field("resource_version", &self.resource_version())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        // The accept loop owns every connection task, so aborting it closes them all.
        self.server.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: mesh-fake
  cluster:
    server: {server}
users:
- name: mesh-fake
  user: {{}}
contexts:
- name: mesh-fake
  context:
    cluster: mesh-fake
    user: mesh-fake
    namespace: default
current-context: mesh-fake
"
    )
}
