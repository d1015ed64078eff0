//! The policy index: the policy resources and the pods of every namespace, and each
//! watched pod port's compiled `mesh_api::policy::InboundPolicy` (what
//! `mesh.policy.InboundPolicies/Watch` streams).
//!
//! Pure, like the discovery index (`crate::index`): backends feed it events
//! ([`Index::apply`], [`Index::delete`], [`Index::apply_pod`], [`Index::delete_pod`]),
//! the gRPC layer asks [`Index::watch`]. Each watched port has one `tokio::sync::watch`
//! channel, created when first asked for and shared by every stream of that port; a
//! value is sent only when the compiled policy changes.
//!
//! Cost model: a change to a Server, AuthorizationPolicy or HTTPRoute recompiles the
//! watched ports of its namespace only; a MeshTLS or NetworkAuthentication change, the
//! namespaces whose policies name it (they may be in another namespace); a pod change,
//! that pod's ports. A namespace's Servers are sorted and their authorizations and
//! routes compiled once per recompute, not once per pod.
//!
//! How a port's policy is compiled (LINKERD-REFERENCE §11.2, §11.3): the oldest Server
//! (then by name) whose selector selects the pod and whose port is the port (or names
//! one of the pod's container ports with that number) wins it; a port no Server wins
//! gets the default server: the pod's `config.mesh.rs/default-inbound-policy`, else
//! the cluster's. A Server's authorizations are the AuthorizationPolicies targeting it
//! or its Namespace, by name, then its `accessPolicy`'s (last, so that metrics credit
//! the explicit rule); its routes, the HTTPRoutes naming it, oldest first, each with
//! the policies targeting that route. A default server, and a Server no HTTPRoute
//! names (not gRPC or opaque), get a `probe` route for the pod's kubelet HTTP probes
//! on that port (GET of each probe path, allowed from the probe networks) and a
//! `default` route for the rest. A policy whose MeshTLSAuthentication or
//! NetworkAuthentication does not exist is left out (fail closed), and the reason
//! kept in its namespace's [`Diagnostic`]s.

use super::{
    default_meta, spec::ProxyProtocol, unauthenticated, AuthorizationPolicy, Cidr, DefaultPolicy,
    HttpRoute, IdentitySource, Kind, MeshTlsAuthentication, NamedRef, NetworkAuthentication,
    PortRef, Resource, Server, Target, GROUP,
};
use crate::index::PortSet;
use mesh_api::policy as api;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};
use tokio::sync::watch;

/// What the index compiles with, beside the resources.
#[derive(Clone, Debug)]
pub struct Config {
    /// For ports no Server selects, on pods without the annotation.
    pub default_policy: DefaultPolicy,
    /// What `cluster-*` policies allow.
    pub cluster_networks: Vec<Cidr>,
    /// The trust domain identities of ServiceAccount references are made in.
    pub trust_domain: String,
    /// Whence the kubelet's probes are allowed; empty: no probe routes.
    pub probe_networks: Vec<Cidr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_policy: DefaultPolicy::AllUnauthenticated,
            cluster_networks: super::parse_networks(super::DEFAULT_CLUSTER_NETWORKS)
                .expect("the default cluster networks parse"),
            trust_domain: "cluster.local".into(),
            probe_networks: vec![Cidr::V4_ALL, Cidr::V6_ALL],
        }
    }
}

/// What the index knows of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `config.mesh.rs/default-inbound-policy`, as written (checked here).
    pub default_policy: Option<String>,
    /// `config.mesh.rs/opaque-ports`, as the backends read it.
    pub opaque_ports: PortSet,
    /// Named TCP container ports (containers and init containers): name → numbers.
    pub named_ports: BTreeMap<String, BTreeSet<u16>>,
    /// The kubelet's `httpGet` probes (liveness, readiness, startup): port → paths,
    /// the port resolved within the probe's container, the query string stripped, a
    /// missing path `/` (see [`probe_path`]).
    pub probes: BTreeMap<u16, BTreeSet<String>>,
}

/// A probe's path as its route matches it: without the query, `/` when missing.
pub fn probe_path(path: Option<&str>) -> String {
    let path = path.unwrap_or("").split('?').next().unwrap_or("");
    match path.starts_with('/') {
        true => path.to_string(),
        false => format!("/{path}"),
    }
}

/// Why the index set something aside: a resource it ignores, wholly or in part.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// `AuthorizationPolicy`, `HTTPRoute` or `Pod`.
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.name, self.reason)
    }
}

/// The answer to a watch of a pod the index does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown pod {namespace}/{pod}")]
pub struct UnknownPod {
    pub namespace: String,
    pub pod: String,
}

pub type Policy = Arc<api::InboundPolicy>;

/// The index. Not shared by itself: the controller keeps it behind one lock.
pub struct Index {
    config: Config,
    namespaces: HashMap<String, Namespace>,
}

#[derive(Default)]
struct Namespace {
    servers: BTreeMap<String, Server>,
    policies: BTreeMap<String, AuthorizationPolicy>,
    mesh_tls: BTreeMap<String, MeshTlsAuthentication>,
    networks: BTreeMap<String, NetworkAuthentication>,
    routes: BTreeMap<String, HttpRoute>,
    pods: BTreeMap<String, PodState>,
    diagnostics: Vec<Diagnostic>,
}

struct PodState {
    pod: Pod,
    /// The watched ports.
    ports: HashMap<u16, watch::Sender<Policy>>,
}

/// A namespace's Servers, compiled once per recompute.
struct Compiled<'a> {
    /// Oldest first, then by name.
    servers: Vec<CompiledServer<'a>>,
}

struct CompiledServer<'a> {
    server: &'a Server,
    authorizations: Vec<api::Authz>,
    /// The HTTPRoutes naming it, compiled; empty: probe and default routes apply.
    routes: Vec<api::HttpRoute>,
}

impl Index {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            namespaces: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Adds or replaces a resource of `namespace` (the resource's own namespace, when
    /// it says, must be this one: it is set to it).
    pub fn apply(&mut self, namespace: &str, mut resource: Resource) {
        resource.meta_mut().namespace = Some(namespace.to_string());
        let name = resource.meta().name.clone();
        let kind = resource.kind();
        let ns = self.namespaces.entry(namespace.to_string()).or_default();
        match resource {
            Resource::Server(r) => {
                ns.servers.insert(name.clone(), r);
            }
            Resource::AuthorizationPolicy(r) => {
                ns.policies.insert(name.clone(), r);
            }
            Resource::MeshTlsAuthentication(r) => {
                ns.mesh_tls.insert(name.clone(), r);
            }
            Resource::NetworkAuthentication(r) => {
                ns.networks.insert(name.clone(), r);
            }
            Resource::HttpRoute(r) => {
                ns.routes.insert(name.clone(), r);
            }
        }
        self.changed(namespace, kind, &name);
    }

    /// Removes a resource; nothing if the index does not have it.
    pub fn delete(&mut self, namespace: &str, kind: Kind, name: &str) {
        let Some(ns) = self.namespaces.get_mut(namespace) else {
            return;
        };
        let removed = match kind {
            Kind::Server => ns.servers.remove(name).is_some(),
            Kind::AuthorizationPolicy => ns.policies.remove(name).is_some(),
            Kind::MeshTlsAuthentication => ns.mesh_tls.remove(name).is_some(),
            Kind::NetworkAuthentication => ns.networks.remove(name).is_some(),
            Kind::HttpRoute => ns.routes.remove(name).is_some(),
        };
        if removed {
            self.changed(namespace, kind, name);
        }
    }

    /// Adds or replaces a pod; its watched ports are recompiled.
    pub fn apply_pod(&mut self, pod: Pod) {
        let ns = self.namespaces.entry(pod.namespace.clone()).or_default();
        let name = pod.name.clone();
        match ns.pods.get_mut(&name) {
            Some(state) if state.pod == pod => return,
            Some(state) => state.pod = pod,
            None => {
                ns.pods.insert(
                    name.clone(),
                    PodState {
                        pod,
                        ports: HashMap::new(),
                    },
                );
            }
        }
        let namespace = ns.pods[&name].pod.namespace.clone();
        self.recompute(&namespace, Some(&name));
    }

    /// Removes a pod: the streams of its ports end.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.pods.remove(name);
        }
    }

    /// Replaces every resource of the `kinds` with `resources` (each `(namespace,
    /// resource)`): what a backend's re-list of a kind (or a reloaded file, of all
    /// kinds at once) says is all there is. Resources of those kinds missing from it
    /// are deleted; resources of other kinds are ignored. One recompute: no stream sees
    /// a state in between (a Server without its policies); only what changed is sent.
    pub fn reset(&mut self, kinds: &[Kind], resources: Vec<(String, Resource)>) {
        for ns in self.namespaces.values_mut() {
            for kind in kinds {
                match kind {
                    Kind::Server => ns.servers.clear(),
                    Kind::AuthorizationPolicy => ns.policies.clear(),
                    Kind::MeshTlsAuthentication => ns.mesh_tls.clear(),
                    Kind::NetworkAuthentication => ns.networks.clear(),
                    Kind::HttpRoute => ns.routes.clear(),
                }
            }
        }
        for (namespace, mut resource) in resources {
            if !kinds.contains(&resource.kind()) {
                continue;
            }
            resource.meta_mut().namespace = Some(namespace.clone());
            let name = resource.meta().name.clone();
            let ns = self.namespaces.entry(namespace).or_default();
            match resource {
                Resource::Server(r) => drop(ns.servers.insert(name, r)),
                Resource::AuthorizationPolicy(r) => drop(ns.policies.insert(name, r)),
                Resource::MeshTlsAuthentication(r) => drop(ns.mesh_tls.insert(name, r)),
                Resource::NetworkAuthentication(r) => drop(ns.networks.insert(name, r)),
                Resource::HttpRoute(r) => drop(ns.routes.insert(name, r)),
            }
        }
        self.recompute_all();
    }

    /// Replaces every pod with `pods` (a re-list): pods missing from it are deleted
    /// (their streams end), the others applied.
    pub fn reset_pods(&mut self, pods: Vec<Pod>) {
        let keep: BTreeSet<(String, String)> = pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        for (ns_name, ns) in self.namespaces.iter_mut() {
            ns.pods
                .retain(|name, _| keep.contains(&(ns_name.clone(), name.clone())));
        }
        for pod in pods {
            self.apply_pod(pod);
        }
    }

    /// A resource as the index has it (what a re-list keeps of an object that turned
    /// invalid).
    pub fn resource(&self, namespace: &str, kind: Kind, name: &str) -> Option<Resource> {
        let ns = self.namespaces.get(namespace)?;
        match kind {
            Kind::Server => ns.servers.get(name).cloned().map(Resource::Server),
            Kind::AuthorizationPolicy => ns
                .policies
                .get(name)
                .cloned()
                .map(Resource::AuthorizationPolicy),
            Kind::MeshTlsAuthentication => ns
                .mesh_tls
                .get(name)
                .cloned()
                .map(Resource::MeshTlsAuthentication),
            Kind::NetworkAuthentication => ns
                .networks
                .get(name)
                .cloned()
                .map(Resource::NetworkAuthentication),
            Kind::HttpRoute => ns.routes.get(name).cloned().map(Resource::HttpRoute),
        }
    }

    /// The pods the index knows, for diagnostics and tests.
    pub fn pods(&self) -> usize {
        self.namespaces.values().map(|ns| ns.pods.len()).sum()
    }

    fn recompute_all(&mut self) {
        let namespaces: Vec<String> = self.namespaces.keys().cloned().collect();
        for ns in namespaces {
            self.recompute(&ns, None);
        }
    }

    /// The port's policy, kept up to date; the receiver's first value is the current
    /// one.
    pub fn watch(
        &mut self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<watch::Receiver<Policy>, UnknownPod> {
        let unknown = || UnknownPod {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        };
        let ns = self.namespaces.get(namespace).ok_or_else(unknown)?;
        let state = ns.pods.get(pod).ok_or_else(unknown)?;
        if let Some(tx) = state.ports.get(&port) {
            return Ok(tx.subscribe());
        }
        let compiled = compile_namespace(&self.config, &self.namespaces, ns);
        let value = compile_port(&self.config, &compiled, &state.pod, port);
        let (tx, rx) = watch::channel(Arc::new(value));
        self.namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.pods.get_mut(pod))
            .ok_or_else(unknown)?
            .ports
            .insert(port, tx);
        Ok(rx)
    }

    /// The port's policy now, for diagnostics (`mesh authz`, `mesh policy check`).
    pub fn get(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<api::InboundPolicy, UnknownPod> {
        let unknown = || UnknownPod {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        };
        let ns = self.namespaces.get(namespace).ok_or_else(unknown)?;
        let state = ns.pods.get(pod).ok_or_else(unknown)?;
        let compiled = compile_namespace(&self.config, &self.namespaces, ns);
        Ok(compile_port(&self.config, &compiled, &state.pod, port))
    }

    /// What the index knows of a pod, and the ports worth showing of it: those the
    /// Servers of its namespace select (named ports resolved), its named container
    /// ports and its probes' ports, in order.
    pub fn pod_ports(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<(&Pod, std::collections::BTreeSet<u16>), UnknownPod> {
        let state = self
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.pods.get(pod))
            .ok_or_else(|| UnknownPod {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
            })?;
        let pod = &state.pod;
        let mut ports: std::collections::BTreeSet<u16> =
            pod.named_ports.values().flatten().copied().collect();
        ports.extend(pod.probes.keys().copied());
        let servers = self.namespaces.get(namespace).map(|ns| ns.servers.values());
        for server in servers.into_iter().flatten() {
            if !super::selects(&server.selector, &pod.labels) {
                continue;
            }
            match &server.port {
                PortRef::Number(n) => {
                    ports.insert(*n);
                }
                PortRef::Name(name) => {
                    ports.extend(pod.named_ports.get(name).into_iter().flatten().copied())
                }
            }
        }
        Ok((pod, ports))
    }

    /// What the index set aside in `namespace`, and why, as of the last change.
    pub fn diagnostics(&self, namespace: &str) -> &[Diagnostic] {
        self.namespaces
            .get(namespace)
            .map_or(&[], |ns| &ns.diagnostics)
    }

    /// Watched ports, for the controller's metrics.
    pub fn watched_ports(&self) -> usize {
        self.namespaces
            .values()
            .flat_map(|ns| ns.pods.values())
            .map(|p| p.ports.len())
            .sum()
    }

    fn changed(&mut self, namespace: &str, kind: Kind, name: &str) {
        match kind {
            Kind::MeshTlsAuthentication | Kind::NetworkAuthentication => {
                let referrers: Vec<String> = self
                    .namespaces
                    .iter()
                    .filter(|(ns_name, ns)| {
                        ns.policies
                            .values()
                            .any(|p| references(p, ns_name, kind, namespace, name))
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                for ns in referrers {
                    self.recompute(&ns, None);
                }
            }
            _ => self.recompute(namespace, None),
        }
    }

    /// Recompiles the watched ports of `namespace` (of one pod, when given), and its
    /// diagnostics; sends only what changed.
    fn recompute(&mut self, namespace: &str, only_pod: Option<&str>) {
        let Some(ns) = self.namespaces.get(namespace) else {
            return;
        };
        let diagnostics = namespace_diagnostics(&self.config, &self.namespaces, namespace, ns);
        let compiled = compile_namespace(&self.config, &self.namespaces, ns);
        for (name, state) in &ns.pods {
            if only_pod.is_some_and(|p| p != name) {
                continue;
            }
            for (port, tx) in &state.ports {
                let value = compile_port(&self.config, &compiled, &state.pod, *port);
                tx.send_if_modified(|old| {
                    let changed = **old != value;
                    if changed {
                        *old = Arc::new(value);
                    }
                    changed
                });
            }
        }
        drop(compiled);
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.diagnostics = diagnostics;
            // Ports no stream watches any more.
            for state in ns.pods.values_mut() {
                state.ports.retain(|_, tx| tx.receiver_count() > 0);
            }
        }
    }
}

/// Whether `policy` (in `policy_ns`) requires the authentication `kind` `ns/name`.
fn references(
    policy: &AuthorizationPolicy,
    policy_ns: &str,
    kind: Kind,
    ns: &str,
    name: &str,
) -> bool {
    let hit = |r: &NamedRef| r.namespace_in(policy_ns) == ns && r.name == name;
    match kind {
        Kind::MeshTlsAuthentication => {
            matches!(&policy.identity, Some(IdentitySource::MeshTls(r)) if hit(r))
        }
        Kind::NetworkAuthentication => policy.network.as_ref().is_some_and(hit),
        _ => false,
    }
}

/// `ns`'s Servers compiled, authentications of other namespaces looked up in `all`.
fn compile_namespace<'a>(
    config: &Config,
    all: &'a HashMap<String, Namespace>,
    ns: &'a Namespace,
) -> Compiled<'a> {
    compile_with(config, ns, &|kind, other_ns, name| {
        lookup(all, kind, other_ns, name)
    })
}

/// An authentication of another namespace.
enum Authn<'a> {
    MeshTls(&'a MeshTlsAuthentication),
    Network(&'a NetworkAuthentication),
}

fn lookup<'a>(
    all: &'a HashMap<String, Namespace>,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Option<Authn<'a>> {
    let ns = all.get(ns)?;
    match kind {
        Kind::MeshTlsAuthentication => ns.mesh_tls.get(name).map(Authn::MeshTls),
        Kind::NetworkAuthentication => ns.networks.get(name).map(Authn::Network),
        _ => None,
    }
}

type Lookup<'l, 'a> = dyn Fn(Kind, &str, &str) -> Option<Authn<'a>> + 'l;

fn compile_with<'a>(config: &Config, ns: &'a Namespace, other: &Lookup<'_, 'a>) -> Compiled<'a> {
    let mut servers: Vec<&Server> = ns.servers.values().collect();
    servers.sort_by(|a, b| (&a.meta.created, &a.meta.name).cmp(&(&b.meta.created, &b.meta.name)));
    let authz_of = |policy: &AuthorizationPolicy| authorization(config, ns, other, policy).ok();
    let servers = servers
        .into_iter()
        .map(|server| {
            let name = &server.meta.name;
            let mut authorizations: Vec<api::Authz> = ns
                .policies
                .values()
                .filter(|p| match &p.target {
                    Target::Server(s) => s == name,
                    Target::Namespace => true,
                    Target::Route(_) => false,
                })
                .filter_map(authz_of)
                .collect();
            authorizations.extend(server.access_policy.authorization(&config.cluster_networks));
            let mut routes: Vec<&HttpRoute> = match server.protocol {
                ProxyProtocol::Opaque => vec![],
                _ => ns
                    .routes
                    .values()
                    .filter(|r| r.parents.contains(name))
                    .collect(),
            };
            routes.sort_by(|a, b| {
                (&a.meta.created, &a.meta.name).cmp(&(&b.meta.created, &b.meta.name))
            });
            let routes = routes
                .into_iter()
                .map(|route| api::HttpRoute {
                    meta: Some(api::Meta {
                        group: GROUP.into(),
                        kind: Kind::HttpRoute.meta_kind(),
                        name: route.meta.name.clone(),
                    }),
                    matches: route.matches.clone(),
                    authorizations: ns
                        .policies
                        .values()
                        .filter(|p| p.target == Target::Route(route.meta.name.clone()))
                        .filter_map(authz_of)
                        .collect(),
                    hostnames: route.hostnames.clone(),
                })
                .collect();
            CompiledServer {
                server,
                authorizations,
                routes,
            }
        })
        .collect();
    Compiled { servers }
}

/// A policy's authorization, or why it is ignored.
fn authorization<'a>(
    config: &Config,
    ns: &'a Namespace,
    other: &Lookup<'_, 'a>,
    policy: &AuthorizationPolicy,
) -> Result<api::Authz, String> {
    let own = policy.meta.namespace.as_deref().unwrap_or_default();
    let find = |kind: Kind, r: &NamedRef| -> Option<Authn<'a>> {
        let in_ns = r.namespace_in(own);
        if in_ns == own {
            match kind {
                Kind::MeshTlsAuthentication => ns.mesh_tls.get(&r.name).map(Authn::MeshTls),
                _ => ns.networks.get(&r.name).map(Authn::Network),
            }
        } else {
            other(kind, in_ns, &r.name)
        }
    };
    let missing = |kind: Kind, r: &NamedRef| {
        format!(
            "ignored (nothing it targets allows anyone through it): {} {}/{} does not exist",
            kind.name(),
            r.namespace_in(own),
            r.name
        )
    };
    let authentication = match &policy.identity {
        None => unauthenticated(),
        Some(IdentitySource::ServiceAccount(r)) => api::Authentication {
            permit: Some(api::authentication::Permit::MeshTls(
                api::authentication::MeshTls {
                    identities: vec![mesh_api::names::ServiceAccount::new(
                        r.namespace_in(own),
                        &r.name,
                    )
                    .identity(&config.trust_domain)],
                    suffixes: vec![],
                },
            )),
        },
        Some(IdentitySource::MeshTls(r)) => {
            let Some(Authn::MeshTls(m)) = find(Kind::MeshTlsAuthentication, r) else {
                return Err(missing(Kind::MeshTlsAuthentication, r));
            };
            let m_ns = m.meta.namespace.as_deref().unwrap_or(own);
            let mut tls = api::authentication::MeshTls::default();
            for id in &m.identities {
                id.add_to(m_ns, &config.trust_domain, &mut tls);
            }
            api::Authentication {
                permit: Some(api::authentication::Permit::MeshTls(tls)),
            }
        }
    };
    let networks = match &policy.network {
        None => vec![Cidr::V4_ALL.network(), Cidr::V6_ALL.network()],
        Some(r) => {
            let Some(Authn::Network(n)) = find(Kind::NetworkAuthentication, r) else {
                return Err(missing(Kind::NetworkAuthentication, r));
            };
            n.networks.iter().map(|n| n.to_api()).collect()
        }
    };
    Ok(api::Authz {
        meta: Some(api::Meta {
            group: GROUP.into(),
            kind: Kind::AuthorizationPolicy.meta_kind(),
            name: policy.meta.name.clone(),
        }),
        networks,
        authentication: Some(authentication),
    })
}

fn namespace_diagnostics(
    config: &Config,
    all: &HashMap<String, Namespace>,
    namespace: &str,
    ns: &Namespace,
) -> Vec<Diagnostic> {
    let other = |kind: Kind, other_ns: &str, name: &str| lookup(all, kind, other_ns, name);
    let mut out = Vec::new();
    for policy in ns.policies.values() {
        let mut add = |reason: String| {
            out.push(Diagnostic {
                kind: Kind::AuthorizationPolicy.name(),
                name: policy.meta.name.clone(),
                reason,
            })
        };
        if let Err(reason) = authorization(config, ns, &other, policy) {
            add(reason);
        }
        match &policy.target {
            Target::Server(s) if !ns.servers.contains_key(s) => add(format!(
                "targets Server {namespace}/{s}, which does not exist: it applies to nothing"
            )),
            Target::Route(r) if !ns.routes.contains_key(r) => add(format!(
                "targets HTTPRoute {namespace}/{r}, which does not exist: it applies to nothing"
            )),
            Target::Namespace if ns.servers.is_empty() => add(format!(
                "targets namespace {namespace}, which has no Server: a Namespace target applies to Servers only, not to ports under the default policy"
            )),
            _ => {}
        }
    }
    for route in ns.routes.values() {
        for parent in &route.parents {
            let reason = match ns.servers.get(parent) {
                None => format!("names Server {namespace}/{parent}, which does not exist"),
                Some(s) if s.protocol == ProxyProtocol::Opaque => {
                    format!("names Server {namespace}/{parent}, whose protocol is opaque: no HTTP route applies to it")
                }
                Some(_) => continue,
            };
            out.push(Diagnostic {
                kind: Kind::HttpRoute.name(),
                name: route.meta.name.clone(),
                reason,
            });
        }
    }
    for state in ns.pods.values() {
        if let Some(value) = &state.pod.default_policy {
            if let Err(reason) = value.parse::<DefaultPolicy>() {
                out.push(Diagnostic {
                    kind: "Pod",
                    name: state.pod.name.clone(),
                    reason: format!(
                        "annotation {}: {reason}; the cluster's default ({}) applies",
                        crate::install::meta::DEFAULT_INBOUND_POLICY,
                        config.default_policy
                    ),
                });
            }
        }
    }
    out.sort();
    out
}

/// Whether `server` claims `port` of `pod`.
fn claims(server: &Server, pod: &Pod, port: u16) -> bool {
    let port_matches = match &server.port {
        PortRef::Number(n) => *n == port,
        PortRef::Name(name) => pod
            .named_ports
            .get(name)
            .is_some_and(|ports| ports.contains(&port)),
    };
    port_matches && super::selects(&server.selector, &pod.labels)
}

fn compile_port(
    config: &Config,
    compiled: &Compiled<'_>,
    pod: &Pod,
    port: u16,
) -> api::InboundPolicy {
    use api::protocol::Kind as P;
    let probes = pod.probes.get(&port);
    if let Some(cs) = compiled
        .servers
        .iter()
        .find(|cs| claims(cs.server, pod, port))
    {
        let server = cs.server;
        let protocol = match server.protocol {
            ProxyProtocol::Unknown => P::Detect(api::protocol::Detect { timeout_ms: 0 }),
            ProxyProtocol::Http1 => P::Http1(api::protocol::Http1 {}),
            ProxyProtocol::Http2 => P::Http2(api::protocol::Http2 {}),
            ProxyProtocol::Grpc => P::Grpc(api::protocol::Grpc {}),
            ProxyProtocol::Opaque => P::Opaque(api::protocol::Opaque {}),
        };
        let http_routes = match server.protocol {
            ProxyProtocol::Opaque => vec![],
            ProxyProtocol::Grpc if cs.routes.is_empty() => vec![],
            _ if cs.routes.is_empty() => probe_routes(config, probes),
            _ => cs.routes.clone(),
        };
        return api::InboundPolicy {
            server: Some(api::Meta {
                group: GROUP.into(),
                kind: Kind::Server.meta_kind(),
                name: server.meta.name.clone(),
            }),
            protocol: Some(api::Protocol {
                kind: Some(protocol),
            }),
            authorizations: cs.authorizations.clone(),
            http_routes,
            fallback: server.access_policy.fallback() as i32,
        };
    }
    let policy = pod
        .default_policy
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(config.default_policy);
    let opaque = pod.opaque_ports.contains(port);
    api::InboundPolicy {
        server: Some(default_meta(policy.name())),
        protocol: Some(api::Protocol {
            kind: Some(match opaque {
                true => P::Opaque(api::protocol::Opaque {}),
                false => P::Detect(api::protocol::Detect { timeout_ms: 0 }),
            }),
        }),
        authorizations: policy
            .authorization(&config.cluster_networks)
            .into_iter()
            .collect(),
        http_routes: match opaque {
            true => vec![],
            false => probe_routes(config, probes),
        },
        fallback: policy.fallback() as i32,
    }
}

/// The `probe` route (GET of each probe path, from the probe networks) and the
/// `default` route for every other request; none without probes on the port.
fn probe_routes(config: &Config, paths: Option<&BTreeSet<String>>) -> Vec<api::HttpRoute> {
    let Some(paths) = paths.filter(|p| !p.is_empty()) else {
        return vec![];
    };
    if config.probe_networks.is_empty() {
        return vec![];
    }
    let probe = api::HttpRoute {
        meta: Some(default_meta("probe")),
        matches: paths
            .iter()
            .map(|p| api::HttpMatch {
                path: Some(api::PathMatch {
                    kind: Some(api::path_match::Kind::Exact(p.clone())),
                }),
                method: "GET".into(),
                headers: vec![],
            })
            .collect(),
        authorizations: vec![api::Authz {
            meta: Some(default_meta("probe")),
            networks: config.probe_networks.iter().map(Cidr::network).collect(),
            authentication: Some(unauthenticated()),
        }],
        hostnames: vec![],
    };
    let default = api::HttpRoute {
        meta: Some(default_meta("default")),
        matches: vec![],
        authorizations: vec![],
        hostnames: vec![],
    };
    vec![probe, default]
}

#[cfg(test)]
mod tests;
