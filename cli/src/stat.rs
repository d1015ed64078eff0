//! `mesh stat TYPE[/NAME]`: golden metrics per resource (success rate, request rate,
//! latency percentiles, TCP connections), as `linkerd viz stat` shows them, from the
//! controller's metrics API (`/api/stat`), wherever `Api::locate` finds it.
//!
//! The flags every metrics command shares (namespace, window, output, where the API is)
//! are [`Scope`], which `mesh edges` and `mesh routes` read too.

use crate::{
    api::{answer, Api, ApiArgs},
    table, UsageError,
};
use mesh_core::stats::Selector;
use std::time::Duration;

/// The flags `mesh stat`, `mesh edges` and `mesh routes` share.
#[derive(Debug, clap::Args)]
pub struct Scope {
    /// The namespace [default: the demo's against the demo, the kubeconfig context's in a
    /// cluster, else `default`].
    #[arg(short = 'n', long)]
    namespace: Option<String>,

    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,

    /// The window the numbers are over (a Go duration: 30s, 1m, 10m).
    #[arg(
        short = 't',
        long = "time-window",
        visible_alias = "window",
        default_value = "1m",
        value_parser = mesh_api::duration::parse_positive
    )]
    window: Duration,

    #[command(flatten)]
    api: ApiArgs,
}

/// Output formats of the metrics commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    /// The table with more columns.
    Wide,
    /// The controller's answer as it came, pretty-printed.
    Json,
}

/// A validated [`Scope`]: nothing has been connected yet.
#[derive(Debug)]
pub(crate) struct ValidScope {
    /// `None`: the default (see [`Scope::namespace`]).
    namespace: Option<String>,
    pub(crate) all_namespaces: bool,
    pub(crate) window: String,
    api: ApiArgs,
}

/// Flags of `mesh stat`.
#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// What to show: `TYPE` or `TYPE/NAME`, with TYPE one of ns, deploy, sts, ds, po,
    /// svc, authority (or namespace, deployment, statefulset, daemonset, pod, service).
    #[arg(value_name = "TYPE[/NAME]")]
    resource: String,

    /// Only traffic from this resource (`TYPE/NAME`), as its proxies saw it.
    #[arg(long, value_name = "TYPE/NAME", conflicts_with = "to")]
    from: Option<String>,

    /// The namespace of --from [default: --namespace].
    #[arg(long, value_name = "NAMESPACE", requires = "from")]
    from_namespace: Option<String>,

    /// Only traffic to this resource (`TYPE/NAME`), as the selected resource's proxies
    /// sent it.
    #[arg(long, value_name = "TYPE/NAME")]
    to: Option<String>,

    /// The namespace of --to [default: --namespace].
    #[arg(long, value_name = "NAMESPACE", requires = "to")]
    to_namespace: Option<String>,

    #[command(flatten)]
    scope: Scope,

    /// Output format: the table, `wide` (adds bytes read and written per second, and
    /// the requests and connections the inbound policy refused per second) or `json`
    /// (the controller's `/api/stat` answer).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// A validated `mesh stat`.
#[derive(Debug)]
pub struct Config {
    resource: String,
    /// `("to" | "from", TYPE/NAME, its namespace if given)`.
    peer: Option<(&'static str, String, Option<String>)>,
    scope: ValidScope,
    output: Output,
}

// === impl Scope ===

impl TryFrom<Scope> for ValidScope {
    type Error = UsageError;

    fn try_from(s: Scope) -> Result<Self, UsageError> {
        if let Some(ns) = &s.namespace {
            crate::dns_label("--namespace", ns)?;
        }
        Ok(Self {
            namespace: s.namespace,
            all_namespaces: s.all_namespaces,
            window: mesh_api::duration::format(s.window),
            api: s.api,
        })
    }
}

impl ValidScope {
    /// Finds the API; the namespace to ask about (`None` with `-A`).
    pub(crate) async fn locate(&self) -> anyhow::Result<(Api, Option<String>)> {
        let api = Api::locate(&self.api).await?;
        let namespace = match (&self.namespace, self.all_namespaces) {
            (_, true) => None,
            (Some(ns), false) => Some(ns.clone()),
            (None, false) => Some(api.default_namespace().to_string()),
        };
        Ok((api, namespace))
    }

    /// The query every metrics command starts from: the resource, the namespace
    /// located (none: every namespace) and the window.
    pub(crate) fn query<'a>(
        &'a self,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> Vec<(&'a str, &'a str)> {
        let mut params = vec![("resource", resource)];
        if let Some(ns) = namespace {
            params.push(("namespace", ns));
        }
        params.push(("window", self.window.as_str()));
        params
    }
}

/// Reads `TYPE[/NAME]` by the controller's own rule (the kinds, their long names), so
/// that a bad type is a usage error naming the kinds there are.
pub(crate) fn selector(what: &str, s: &str) -> Result<Selector, UsageError> {
    Selector::parse(s, None).map_err(|e| UsageError::new(format!("{what}: {e}")))
}

// === impl Config ===

impl TryFrom<StatArgs> for Config {
    type Error = UsageError;

    fn try_from(args: StatArgs) -> Result<Self, UsageError> {
        selector("the resource", &args.resource)?;
        let peer = match (args.to, args.from) {
            (Some(to), None) => Some(("to", to, args.to_namespace)),
            (None, Some(from)) => Some(("from", from, args.from_namespace)),
            _ => None,
        };
        if let Some((flag, value, namespace)) = &peer {
            let s = selector(&format!("--{flag}"), value)?;
            if s.name.is_none() {
                return Err(UsageError::new(format!(
                    "--{flag} {value:?}: expected TYPE/NAME, such as deploy/web"
                )));
            }
            if let Some(ns) = namespace {
                crate::dns_label(&format!("--{flag}-namespace"), ns)?;
            }
        }
        Ok(Self {
            resource: args.resource,
            peer,
            scope: args.scope.try_into()?,
            output: args.output,
        })
    }
}

// === run ===

/// Asks the controller and prints the rows.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (api, namespace) = config.scope.locate().await?;
    let mut params = config.scope.query(&config.resource, namespace.as_deref());
    let peer_namespace;
    if let Some((flag, value, ns)) = &config.peer {
        params.push((*flag, value.as_str()));
        if let Some(ns) = ns {
            peer_namespace = format!("{flag}_namespace");
            params.push((peer_namespace.as_str(), ns.as_str()));
        }
    }
    let doc = api.get_json("/api/stat", &params).await?;
    let out = match config.output {
        Output::Json => table::json(&doc),
        output => {
            let stat: answer::Stat = answer::read(&doc, "stat")?;
            if stat.rows.is_empty() {
                crate::note(&format!(
                    "no resources of type {} found{}",
                    config.resource,
                    namespace.map_or(String::new(), |ns| format!(" in namespace {ns:?}"))
                ));
                return Ok(());
            }
            render(
                &stat.rows,
                config.scope.all_namespaces,
                output == Output::Wide,
            )
        }
    };
    crate::out(&out);
    Ok(())
}

/// Linkerd's stat table: `[NAMESPACE] NAME MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95
/// LATENCY_P99 TCP_CONN`, `wide` adding `READ_BYTES/SEC WRITE_BYTES/SEC UNAUTHORIZED` (the
/// last one ours: denials by the pods' inbound policy, requests and connections alike).
fn render(rows: &[answer::StatRow], all_namespaces: bool, wide: bool) -> String {
    let mut header = vec![];
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ]);
    if wide {
        header.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC", "UNAUTHORIZED"]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![];
            if all_namespaces {
                row.push(table::or_dash(r.resource.namespace.as_deref()));
            }
            let any = r.success_rate.is_some();
            let tcp = r.tcp.open_connections > 0 || r.tcp.opened > 0;
            row.extend([
                r.resource.name.clone(),
                r.pods
                    .map_or("-".into(), |p| format!("{}/{}", p.meshed, p.total)),
                table::percent(r.success_rate),
                table::rps(r.rps, any),
                table::ms(r.latency_ms.p50),
                table::ms(r.latency_ms.p95),
                table::ms(r.latency_ms.p99),
                if tcp {
                    r.tcp.open_connections.to_string()
                } else {
                    "-".into()
                },
            ]);
            if wide {
                let (read, write) = if tcp {
                    (
                        table::bytes_per_second(r.tcp.read_bytes_per_second),
                        table::bytes_per_second(r.tcp.write_bytes_per_second),
                    )
                } else {
                    ("-".into(), "-".into())
                };
                let denied = r.unauthorized_rps > 0.0;
                row.extend([read, write, table::rps(r.unauthorized_rps, any || denied)]);
            }
            row
        })
        .collect();
    table::render(&header, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: StatArgs,
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("stat").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(cli.args).map_err(|e| e.to_string())
    }

    /// An answer as `/api/stat` gives it: the demo's deployments, one without traffic.
    const ANSWER: &str = r#"{
        "window_seconds": 60.0,
        "rows": [
            {"resource": {"type": "deployment", "namespace": "demo", "name": "voting"},
             "pods": {"meshed": 3, "total": 3},
             "responses": {"success": 290, "failure": 10},
             "success_rate": 0.9666666666666667, "rps": 5.0,
             "latency_ms": {"p50": 1.52, "p95": 4.6, "p99": 24.1}, "seconds": 60.0,
             "tcp": {"open_connections": 3, "opened": 3, "read_bytes_per_second": 812.26,
                     "write_bytes_per_second": 1024.0},
             "unauthorized_rps": 1.0, "audit_rps": 0.0},
            {"resource": {"type": "deployment", "namespace": "demo", "name": "web"},
             "pods": {"meshed": 1, "total": 2},
             "responses": {"success": 0, "failure": 0},
             "success_rate": null, "rps": 0.0,
             "latency_ms": {"p50": null, "p95": null, "p99": null}, "seconds": 0.0,
             "tcp": {"open_connections": 0, "opened": 0, "read_bytes_per_second": 0.0,
                     "write_bytes_per_second": 0.0}}
        ],
        "overflow": {"pods": 0, "samples": 0}
    }"#;

    fn rows() -> Vec<answer::StatRow> {
        let doc: serde_json::Value = serde_json::from_str(ANSWER).expect("JSON");
        answer::read::<answer::Stat>(&doc, "stat")
            .expect("reads")
            .rows
    }

    #[test]
    fn renders_linkerds_table() {
        assert_eq!(
            render(&rows(), false, false),
            "NAME     MESHED   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n\
             voting   3/3      96.67%    5.0rps   2ms           5ms           24ms          3\n\
             web      1/2      -         -        -             -             -             -\n"
        );
        let all = render(&rows(), true, true);
        assert!(
            all.starts_with("NAMESPACE   NAME     MESHED   SUCCESS"),
            "{all}"
        );
        assert!(
            all.contains("TCP_CONN   READ_BYTES/SEC   WRITE_BYTES/SEC   UNAUTHORIZED\n"),
            "{all}"
        );
        assert!(all.contains("demo        voting   3/3"), "{all}");
        assert!(
            all.contains("3          812.3B/s         1024.0B/s         1.0rps\n"),
            "{all}"
        );
        // No traffic and no denials: nothing to say; a controller that does not count
        // denials (no `unauthorized_rps`) reads as none.
        assert!(
            all.ends_with("-                -                 -\n"),
            "{all}"
        );
    }

    #[test]
    fn services_have_no_meshed_count() {
        let doc = serde_json::json!({"rows": [{
            "resource": {"type": "service", "namespace": "demo", "name": "web"},
            "responses": {"success": 1, "failure": 0},
            "success_rate": 1.0, "rps": 0.5,
            "latency_ms": {"p50": 3.0, "p95": 3.0, "p99": 3.0}, "seconds": 2.0,
            "tcp": {"open_connections": 1, "opened": 1, "read_bytes_per_second": 1.0,
                    "write_bytes_per_second": 1.0}}]});
        let stat: answer::Stat = answer::read(&doc, "stat").expect("reads");
        assert_eq!(
            render(&stat.rows, false, false).lines().nth(1),
            Some("web    -        100.00%   0.5rps   3ms           3ms           3ms           1")
        );
    }

    #[test]
    fn validates_flags() {
        let c = config(&["deploy", "-n", "demo", "--to", "svc/web", "-t", "30s"]).expect("ok");
        assert_eq!(c.resource, "deploy");
        assert_eq!(c.peer, Some(("to", "svc/web".to_string(), None)));
        assert_eq!(c.scope.window, "30s");
        assert_eq!(c.scope.namespace.as_deref(), Some("demo"));
        let c = config(&["deployment/web", "-A"]).expect("ok");
        assert!(c.scope.all_namespaces && c.peer.is_none());
        assert_eq!(c.scope.window, "1m");
        for (args, want) in [
            (&["deployz"][..], "unknown resource type \"deployz\""),
            (&["deploy/"], "names no resource"),
            (&["deploy", "-t", "soon"], "--time-window"),
            (&["deploy", "-t", "0s"], "greater than zero"),
            (&["deploy", "-n", "Demo"], "not a DNS label"),
            (&["deploy", "-n", "demo", "-A"], "cannot be used with"),
            (
                &["deploy", "--to", "svc/a", "--from", "deploy/b"],
                "cannot be used with",
            ),
            (&["deploy", "--to", "svc"], "expected TYPE/NAME"),
            (
                &["deploy", "--to", "pods/x", "--to-namespace", "X"],
                "not a DNS label",
            ),
            (&["deploy", "--from-namespace", "x"], "--from"),
            (&["deploy", "-o", "yaml"], "invalid value"),
        ] {
            let err = config(args).expect_err(want);
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
