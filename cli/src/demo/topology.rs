//! Who runs in the demo and on which loopback ports.
//!
//! The layout is a pure function of `--base-port`, so a user (or a test) can predict every
//! address, and two demos with different base ports never collide. Each workload instance
//! owns a block of [`PORTS_PER_INSTANCE`] consecutive ports; only the first five are used
//! today, the rest are reserved so that later additions do not shift anybody's
//! addresses. Callers come first and replicas are appended, so adding a replica
//! leaves the existing blocks where they were; the controller's block comes last.
//!
//! Inside the mesh, workloads call each other by service name
//! (`voting.demo.svc.cluster.local`), as they would in Kubernetes; the controller's
//! destinations file ([`Topology::destinations_yaml`]) maps those names to the proxies'
//! inbound ports, and gives each endpoint the identity its proxy holds, so that callers'
//! proxies open mutual TLS to it.

use crate::UsageError;
use mesh_api::names::ServiceAccount;
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
};

/// Ports in each instance's block: app, proxy inbound, proxy outbound, proxy admin,
/// proxy tap, spare.
pub(crate) const PORTS_PER_INSTANCE: u16 = 10;

/// The Kubernetes-style namespace the demo's services live in.
pub(crate) const NAMESPACE: &str = "demo";

/// The domain the demo's identities are named in: the controller's and a cluster's default.
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";

/// The demo's ServiceProfiles, as an operator would write them: `voting`'s vote route
/// fails a share of requests on purpose and is safe to retry (a lost vote is not
/// counted), so callers retry it under the default budget; `web`'s leaderboard is slow
/// on purpose (300 to 800 ms), so callers give it 500 ms and then answer 504; `emoji`'s
/// two gRPC methods are named routes.
const PROFILES: &str = include_str!("profiles.yaml");

/// The demo's authorization policy, as an operator would write it: `voting` accepts
/// `web`'s identity alone, on the container port its pods name `http`; the vote-bot,
/// which also calls `voting` itself now and then, is refused (403). Every other port
/// keeps the default, `all-unauthenticated`.
const POLICY: &str = include_str!("policy.yaml");

/// The name of every demo app's port, which `voting`'s `Server` selects.
pub(crate) const APP_PORT_NAME: &str = "http";

/// How many replicas of `voting` run; the last one is slow on purpose, so that latency-aware
/// balancing has something to show.
pub(crate) const VOTING_REPLICAS: u16 = 3;

/// How much longer the slow `voting` replica takes over every request.
pub(crate) const SLOW_REPLICA_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// The lowest base port accepted: below it are privileged ports the demo should not need.
const MIN_BASE_PORT: u16 = 1024;

/// One of the demo's workloads.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Workload {
    /// The traffic generator: calls `web`; has no server of its own.
    VoteBot,
    /// HTTP/1 front end: `/api/vote`, `/api/list`, `/api/leaderboard`.
    Web,
    /// gRPC (h2c) service: `emoji.EmojiService/{ListAll,FindByShortcode}`.
    Emoji,
    /// HTTP/1 service: `POST /vote/:choice` (fails ~25%), `GET /leaderboard` (slow).
    Voting,
}

/// One running copy of a workload: its app and the ports of the proxy in front of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Instance {
    pub(crate) workload: Workload,
    /// Which copy of the workload this is, from 0.
    pub(crate) replica: u16,
    /// Where the app listens. The vote-bot has no server, but its proxy still needs an
    /// inbound forward address, so it is given one that nothing listens on.
    pub(crate) app: SocketAddr,
    /// The proxy's inbound listener; meshed callers address this workload here.
    pub(crate) inbound: SocketAddr,
    /// The proxy's outbound listener, which the app uses as an explicit HTTP proxy.
    pub(crate) outbound: SocketAddr,
    /// The proxy's admin server: `/metrics`, `/ready`, `/live`.
    pub(crate) admin: SocketAddr,
    /// The proxy's tap server, which the controller's tap API observes.
    pub(crate) tap: SocketAddr,
}

/// Every instance in the demo, in port order, and the controller.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    instances: Vec<Instance>,
    controller: Controller,
}

/// Where the demo's `mesh-controller` listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Controller {
    /// The destination gRPC service (8086 in a cluster).
    pub(crate) destination: SocketAddr,
    /// The identity gRPC service (8080 in a cluster), which signs the proxies'
    /// certificates.
    pub(crate) identity: SocketAddr,
    /// `/metrics`, `/ready`, `/live` (9990 in a cluster).
    pub(crate) admin: SocketAddr,
    /// The HTTP API, `/api/...` (8084 in a cluster).
    pub(crate) api: SocketAddr,
    /// The tap API, gRPC (8088 in a cluster).
    pub(crate) tap: SocketAddr,
}

// === impl Workload ===

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::VoteBot => "vote-bot",
            Self::Web => "web",
            Self::Emoji => "emoji",
            Self::Voting => "voting",
        }
    }

    /// Whether the workload's app serves requests (the vote-bot only sends them).
    pub(crate) fn has_server(self) -> bool {
        !matches!(self, Self::VoteBot)
    }

    /// The name its callers use inside the mesh, with the port its service exposes.
    pub(crate) fn authority(self) -> String {
        format!("{}.{NAMESPACE}.svc.cluster.local:80", self.name())
    }

    /// The service account its pods run as: one per workload, named after it, as
    /// Kubernetes manifests usually do, so all replicas share one identity.
    pub(crate) fn service_account(self) -> ServiceAccount {
        ServiceAccount::new(NAMESPACE, self.name())
    }

    /// The identity its proxies' certificates are for, and that discovery announces
    /// for its endpoints: `<sa>.<ns>.serviceaccount.identity.mesh.<trust domain>`.
    pub(crate) fn identity(self) -> String {
        self.service_account().identity(TRUST_DOMAIN)
    }

    /// Every workload, callers first.
    pub(crate) const ALL: [Self; 4] = [Self::VoteBot, Self::Web, Self::Emoji, Self::Voting];
}

// === impl Instance ===

impl Instance {
    /// The instance's pod name: the workload's name, with the replica number where the
    /// workload has several.
    pub(crate) fn name(&self) -> String {
        match self.workload {
            Workload::Voting => format!("{}-{}", self.workload.name(), self.replica),
            w => w.name().to_string(),
        }
    }

    /// Whether this is the replica that answers slowly on purpose.
    pub(crate) fn is_slow(&self) -> bool {
        self.workload == Workload::Voting && self.replica == VOTING_REPLICAS - 1
    }
}

// === impl Topology ===

impl Topology {
    /// Lays the demo out from `base_port`, or explains why the ports do not fit.
    pub(crate) fn new(base_port: u16) -> Result<Self, UsageError> {
        let mut workloads = vec![
            (Workload::VoteBot, 0),
            (Workload::Web, 0),
            (Workload::Emoji, 0),
        ];
        workloads.extend((0..VOTING_REPLICAS).map(|r| (Workload::Voting, r)));
        // One more block for the controller.
        let span = PORTS_PER_INSTANCE * (workloads.len() as u16 + 1);
        if base_port < MIN_BASE_PORT || base_port.checked_add(span - 1).is_none() {
            return Err(UsageError::new(format!(
                "--base-port {base_port} is out of range: the demo uses {span} consecutive ports, \
                 so it must be between {MIN_BASE_PORT} and {}",
                u16::MAX - (span - 1)
            )));
        }
        let port = |slot: u16, offset: u16| {
            SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                base_port + slot * PORTS_PER_INSTANCE + offset,
            ))
        };
        let instances: Vec<Instance> = (0u16..)
            .zip(workloads)
            .map(|(slot, (workload, replica))| Instance {
                workload,
                replica,
                app: port(slot, 0),
                inbound: port(slot, 1),
                outbound: port(slot, 2),
                admin: port(slot, 3),
                tap: port(slot, 4),
            })
            .collect();
        let slot = instances.len() as u16;
        // The controller's block mirrors an instance's: its servers take the ports an
        // instance's app, inbound and admin take, so offset 1 (an instance's inbound) is
        // the identity service's; the tap API takes offset 2.
        let controller = Controller {
            destination: port(slot, 0),
            identity: port(slot, 1),
            admin: port(slot, 3),
            api: port(slot, 4),
            tap: port(slot, 2),
        };
        Ok(Self {
            instances,
            controller,
        })
    }

    /// How many consecutive ports the demo uses from its base port.
    pub(crate) fn span(&self) -> u16 {
        PORTS_PER_INSTANCE * (self.instances.len() as u16 + 1)
    }

    /// Every port something of the demo listens on, with what listens there.
    pub(crate) fn listeners(&self) -> Vec<(SocketAddr, String)> {
        let mut out = Vec::new();
        for i in &self.instances {
            if i.workload.has_server() {
                out.push((i.app, format!("{}'s app", i.name())));
            }
            out.push((i.inbound, format!("{}'s proxy (inbound)", i.name())));
            out.push((i.outbound, format!("{}'s proxy (outbound)", i.name())));
            out.push((i.admin, format!("{}'s proxy (admin)", i.name())));
            out.push((i.tap, format!("{}'s proxy (tap)", i.name())));
        }
        let c = self.controller;
        for (addr, what) in [
            (c.destination, "destination"),
            (c.identity, "identity"),
            (c.admin, "admin"),
            (c.api, "API"),
            (c.tap, "tap API"),
        ] {
            out.push((addr, format!("the controller ({what})")));
        }
        out
    }

    pub(crate) fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub(crate) fn controller(&self) -> Controller {
        self.controller
    }

    /// Every instance of `workload`.
    pub(crate) fn replicas(&self, workload: Workload) -> impl Iterator<Item = &Instance> {
        self.instances
            .iter()
            .filter(move |i| i.workload == workload)
    }

    /// The controller's destinations file: one service per serving workload, whose
    /// endpoints are its instances' proxies (inbound ports), labelled as Kubernetes pods
    /// of a deployment would be, each with its proxy's identity, which marks it meshed:
    /// callers then open mutual TLS to it and check that it presents that identity; and
    /// with its proxy's admin address, where the controller's metrics API scrapes it
    /// (every demo proxy is on 127.0.0.1, so the default, the pod's IP on 4191, is none
    /// of them).
    ///
    /// The vote-bot serves nothing, but its proxy is the only client of `web`, so the
    /// metrics API must know its pod too: the file knows pods only as endpoints, so it
    /// is the one endpoint of a `vote-bot` service, never ready, which nothing can reach.
    pub(crate) fn destinations_yaml(&self) -> String {
        let mut out = String::from(
            "# Written by `mesh demo`: where each demo service's replicas are.\nservices:\n",
        );
        for workload in [
            Workload::Web,
            Workload::Emoji,
            Workload::Voting,
            Workload::VoteBot,
        ] {
            let name = workload.name();
            let _ = writeln!(
                out,
                "  - name: {name}\n    namespace: {NAMESPACE}\n    endpoints:"
            );
            let ready = if workload.has_server() {
                ""
            } else {
                "\n        ready: false"
            };
            for i in self.replicas(workload) {
                let _ = writeln!(
                    out,
                    "      - address: \"{}\"{ready}\n        labels: {{pod: {}, deployment: {name}, serviceaccount: {sa}}}\n        identity: {}\n        admin: \"{}\"\n        tap: \"{}\"",
                    i.inbound,
                    i.name(),
                    workload.identity(),
                    i.admin,
                    i.tap,
                    sa = workload.service_account().name,
                );
                // The app's port by name, as a pod's container port would be: each
                // replica's differs, the name is what a `Server` selects.
                if workload.has_server() {
                    let _ = writeln!(
                        out,
                        "        namedPorts: {{{APP_PORT_NAME}: {}}}",
                        i.app.port()
                    );
                }
            }
        }
        out.push_str(PROFILES);
        out.push_str(POLICY);
        out
    }

    /// The (first) instance of `workload`.
    pub(crate) fn get(&self, workload: Workload) -> &Instance {
        self.instances
            .iter()
            .find(|i| i.workload == workload)
            .expect("every workload has an instance in the topology")
    }

    /// The table printed at start-up: one row per instance, `-` for what does not exist.
    pub(crate) fn render(&self, proxied: bool) -> String {
        let mut out = format!(
            "{:<10} {:<16} {:<16} {:<16} {}\n",
            "WORKLOAD", "APP", "INBOUND", "OUTBOUND", "METRICS"
        );
        for i in &self.instances {
            let app = if i.workload.has_server() {
                i.app.to_string()
            } else {
                "-".to_string()
            };
            let (inbound, outbound, metrics) = if proxied {
                (
                    i.inbound.to_string(),
                    i.outbound.to_string(),
                    format!("http://{}/metrics", i.admin),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            let _ = writeln!(
                out,
                "{:<10} {app:<16} {inbound:<16} {outbound:<16} {metrics}",
                i.name()
            );
        }
        if proxied {
            let c = self.controller;
            let _ = writeln!(
                out,
                "{:<10} {:<16} {:<16} {:<16} http://{}/metrics",
                "controller",
                "-",
                c.destination.to_string(),
                "-",
                c.admin
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_a_function_of_the_base_port() {
        let t = Topology::new(7000).expect("7000 fits");
        let web = t.get(Workload::Web);
        assert_eq!(web.app.port(), 7010);
        assert_eq!(web.inbound.port(), 7011);
        assert_eq!(web.outbound.port(), 7012);
        assert_eq!(web.admin.port(), 7013);
        assert_eq!(t.get(Workload::Voting).admin.port(), 7033);
        let voting: Vec<u16> = t.replicas(Workload::Voting).map(|i| i.app.port()).collect();
        assert_eq!(voting, [7030, 7040, 7050]);
        assert_eq!(t.controller().destination.port(), 7060);
        assert_eq!(t.controller().identity.port(), 7061);
        assert_eq!(t.controller().admin.port(), 7063);
        assert_eq!(t.controller().api.port(), 7064);
        assert_eq!(t.span(), 70);
        // Every listener inside the span, none twice.
        let ports: std::collections::BTreeSet<u16> =
            t.listeners().iter().map(|(a, _)| a.port()).collect();
        assert_eq!(ports.len(), t.listeners().len());
        assert!(ports.iter().all(|p| (7000..7070).contains(p)));
        assert!(t.replicas(Workload::Voting).last().unwrap().is_slow());
        assert_eq!(
            t.replicas(Workload::Voting).filter(|i| i.is_slow()).count(),
            1
        );
    }

    #[test]
    fn destinations_name_every_replica_behind_its_proxy() {
        let t = Topology::new(7000).expect("7000 fits");
        let yaml = t.destinations_yaml();
        assert!(
            yaml.contains("  - name: voting\n    namespace: demo\n"),
            "{yaml}"
        );
        for (port, pod, admin) in [
            (7031, "voting-0", 7033),
            (7041, "voting-1", 7043),
            (7051, "voting-2", 7053),
        ] {
            assert!(
                yaml.contains(&format!(
                    "address: \"127.0.0.1:{port}\"\n        labels: {{pod: {pod}, deployment: voting, serviceaccount: voting}}\n        \
                     identity: voting.demo.serviceaccount.identity.mesh.cluster.local\n        admin: \"127.0.0.1:{admin}\"\n"
                )),
                "{yaml}"
            );
        }
        assert!(
            yaml.contains("  - name: vote-bot\n    namespace: demo\n    endpoints:\n      - address: \"127.0.0.1:7001\"\n        ready: false\n"),
            "the vote-bot serves nothing, but its pod is known: {yaml}"
        );
        assert_eq!(
            Workload::Voting.authority(),
            "voting.demo.svc.cluster.local:80"
        );
    }

    /// The demo's layout at 7000, and its destinations file as the controller reads it.
    fn parsed() -> (Topology, mesh_core::file::Discovery) {
        let t = Topology::new(7000).expect("7000 fits");
        let discovery = mesh_core::file::parse_with(
            &t.destinations_yaml(),
            TRUST_DOMAIN,
            Some("cluster.local"),
        )
        .unwrap_or_else(|e| panic!("the controller rejects the demo's file: {e}"));
        (t, discovery)
    }

    /// The controller is the judge of the file: it must accept it and see every
    /// instance (the vote-bot's too) as a meshed pod running as its workload's service
    /// account, scraped where its proxy serves its metrics.
    #[test]
    fn destinations_parse_as_meshed_pods() {
        let (t, discovery) = parsed();
        // Every demo service has its profile, valid.
        let mut profiled: Vec<&str> = discovery.profiles.iter().map(|p| &*p.key.name).collect();
        profiled.sort_unstable();
        assert_eq!(
            profiled,
            [
                "emoji.demo.svc.cluster.local",
                "voting.demo.svc.cluster.local",
                "web.demo.svc.cluster.local"
            ]
        );
        assert_eq!(
            discovery.pods.len(),
            t.instances().len(),
            "{:?}",
            discovery.pods
        );
        for i in t.instances() {
            let pod = discovery
                .pods
                .iter()
                .find(|p| *p.key.name == *i.name())
                .unwrap_or_else(|| panic!("no pod {}: {:?}", i.name(), discovery.pods));
            assert!(pod.meshed, "{pod:?}");
            assert_eq!(*pod.key.namespace, *NAMESPACE);
            assert_eq!(*pod.service_account, *i.workload.name());
            assert_eq!(pod.ips, [i.inbound.ip()]);
            // The controller scrapes each demo proxy where it serves its metrics.
            assert_eq!(pod.admin_addr(), Some(i.admin), "{pod:?}");
        }
        assert_eq!(
            Workload::Web.identity(),
            "web.demo.serviceaccount.identity.mesh.cluster.local"
        );
    }

    /// The demo's policy, compiled by the controller's index from the file as the file
    /// backend feeds it: each `voting` replica's app port is its `Server`'s, and admits
    /// `web`'s identity alone; the other workloads keep the default.
    #[test]
    fn voting_admits_web_alone() {
        use mesh_api::policy::authentication::Permit;
        let (t, discovery) = parsed();
        let mut index = mesh_core::policy::index::Index::new(Default::default());
        index.reset_pods(discovery.policy_pods.clone());
        index.reset(&mesh_core::policy::Kind::ALL, discovery.policies.clone());
        assert!(
            index.diagnostics(NAMESPACE).is_empty(),
            "{:?}",
            index.diagnostics(NAMESPACE)
        );
        // The policy of an instance's app port, and the server it names.
        let policy_of = |i: &Instance| {
            let policy = index.get(NAMESPACE, &i.name(), i.app.port()).unwrap();
            let server = policy.server.clone().expect("a server");
            (policy, (server.kind, server.name))
        };
        for i in t.replicas(Workload::Voting) {
            let (policy, server) = policy_of(i);
            assert_eq!(
                server,
                ("server".into(), "voting-http".into()),
                "{policy:?}"
            );
            let [authz] = &policy.authorizations[..] else {
                panic!("one authorization: {policy:?}")
            };
            match authz
                .authentication
                .as_ref()
                .and_then(|a| a.permit.as_ref())
            {
                Some(Permit::MeshTls(tls)) => {
                    assert_eq!(tls.identities, [Workload::Web.identity()], "{policy:?}");
                    assert!(tls.suffixes.is_empty(), "{policy:?}");
                }
                other => panic!("web's identity alone, not {other:?}"),
            }
        }
        for workload in [Workload::Web, Workload::Emoji] {
            let (policy, server) = policy_of(t.get(workload));
            assert_eq!(
                server,
                ("default".into(), "all-unauthenticated".into()),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn rejects_base_ports_that_do_not_fit() {
        assert!(Topology::new(80).is_err());
        assert!(Topology::new(u16::MAX - 68).is_err());
        assert!(Topology::new(u16::MAX - 69).is_ok());
    }

    #[test]
    fn renders_a_table() {
        let t = Topology::new(7000).expect("7000 fits");
        let expected = "\
WORKLOAD   APP              INBOUND          OUTBOUND         METRICS
vote-bot   -                127.0.0.1:7001   127.0.0.1:7002   http://127.0.0.1:7003/metrics
web        127.0.0.1:7010   127.0.0.1:7011   127.0.0.1:7012   http://127.0.0.1:7013/metrics
emoji      127.0.0.1:7020   127.0.0.1:7021   127.0.0.1:7022   http://127.0.0.1:7023/metrics
voting-0   127.0.0.1:7030   127.0.0.1:7031   127.0.0.1:7032   http://127.0.0.1:7033/metrics
voting-1   127.0.0.1:7040   127.0.0.1:7041   127.0.0.1:7042   http://127.0.0.1:7043/metrics
voting-2   127.0.0.1:7050   127.0.0.1:7051   127.0.0.1:7052   http://127.0.0.1:7053/metrics
controller -                127.0.0.1:7060   -                http://127.0.0.1:7063/metrics
";
        assert_eq!(t.render(true), expected);
    }
}
