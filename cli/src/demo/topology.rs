//! Who runs in the demo and on which loopback ports.
//!
//! The layout is a pure function of `--base-port`, so a user (or a test) can predict every
//! address, and two demos with different base ports never collide. Each workload instance
//! owns a block of [`PORTS_PER_INSTANCE`] consecutive ports; only the first four are used
//! today, the rest are reserved so that later additions (a tap port, say) do not shift
//! anybody's addresses. Callers come first and replicas are appended, so adding a replica
//! leaves the existing blocks where they were.

use crate::UsageError;
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
};

/// Ports in each instance's block: app, proxy inbound, proxy outbound, proxy admin, spare.
pub(crate) const PORTS_PER_INSTANCE: u16 = 10;

/// The lowest base port accepted: below it are privileged ports the demo should not need.
const MIN_BASE_PORT: u16 = 1024;

/// One of the demo's workloads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
    /// Where the app listens. The vote-bot has no server, but its proxy still needs an
    /// inbound forward address, so it is given one that nothing listens on.
    pub(crate) app: SocketAddr,
    /// The proxy's inbound listener; meshed callers address this workload here.
    pub(crate) inbound: SocketAddr,
    /// The proxy's outbound listener, which the app uses as an explicit HTTP proxy.
    pub(crate) outbound: SocketAddr,
    /// The proxy's admin server: `/metrics`, `/ready`, `/live`.
    pub(crate) admin: SocketAddr,
}

/// Every instance in the demo, in port order.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    instances: Vec<Instance>,
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
}

// === impl Topology ===

impl Topology {
    /// Lays the demo out from `base_port`, or explains why the ports do not fit.
    pub(crate) fn new(base_port: u16) -> Result<Self, UsageError> {
        let workloads = [
            Workload::VoteBot,
            Workload::Web,
            Workload::Emoji,
            Workload::Voting,
        ];
        let span = PORTS_PER_INSTANCE * workloads.len() as u16;
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
        let instances = (0u16..)
            .zip(workloads)
            .map(|(slot, workload)| Instance {
                workload,
                app: port(slot, 0),
                inbound: port(slot, 1),
                outbound: port(slot, 2),
                admin: port(slot, 3),
            })
            .collect();
        Ok(Self { instances })
    }

    pub(crate) fn instances(&self) -> &[Instance] {
        &self.instances
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
                i.workload.name()
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
    }

    #[test]
    fn rejects_base_ports_that_do_not_fit() {
        assert!(Topology::new(80).is_err());
        assert!(Topology::new(u16::MAX - 38).is_err());
        assert!(Topology::new(u16::MAX - 39).is_ok());
    }

    #[test]
    fn renders_a_table() {
        let t = Topology::new(7000).expect("7000 fits");
        let expected = "\
WORKLOAD   APP              INBOUND          OUTBOUND         METRICS
vote-bot   -                127.0.0.1:7001   127.0.0.1:7002   http://127.0.0.1:7003/metrics
web        127.0.0.1:7010   127.0.0.1:7011   127.0.0.1:7012   http://127.0.0.1:7013/metrics
emoji      127.0.0.1:7020   127.0.0.1:7021   127.0.0.1:7022   http://127.0.0.1:7023/metrics
voting     127.0.0.1:7030   127.0.0.1:7031   127.0.0.1:7032   http://127.0.0.1:7033/metrics
";
        assert_eq!(t.render(true), expected);
    }
}
