//! `mesh edges TYPE`: who talks to whom among resources of a kind, and whether each
//! hop is mutual TLS with both identities, as `linkerd viz edges` shows it, from the
//! controller's metrics API (`/api/edges`). Edges are read from the clients' outbound
//! metrics, so only meshed clients have edges.

use crate::{
    api::answer,
    stat::{selector, Output, Scope, ValidScope},
    table, UsageError,
};

/// Linkerd's marks for a secured and an unsecured edge.
const SECURED: &str = "√";
const NOT_SECURED: &str = "×";

/// Flags of `mesh edges`.
#[derive(Debug, clap::Args)]
pub struct EdgesArgs {
    /// The kind of resource the edges join: ns, deploy, sts, ds or po (or their long
    /// names).
    #[arg(value_name = "TYPE")]
    kind: String,

    #[command(flatten)]
    scope: Scope,

    /// Output format: the table, `wide` (adds CLIENT_ID, SERVER_ID and UNAUTHORIZED,
    /// what the destination's policy refused a second) or `json` (the controller's
    /// `/api/edges` answer).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// A validated `mesh edges`.
#[derive(Debug)]
pub struct Config {
    kind: String,
    scope: ValidScope,
    output: Output,
}

// === impl Config ===

impl TryFrom<EdgesArgs> for Config {
    type Error = UsageError;

    fn try_from(args: EdgesArgs) -> Result<Self, UsageError> {
        let s = selector("the resource type", &args.kind)?;
        if s.name.is_some() {
            return Err(UsageError::new(format!(
                "{:?}: edges take a resource type alone, such as deploy",
                args.kind
            )));
        }
        if !s.kind.has_pods() {
            return Err(UsageError::new(format!(
                "edges join resources made of pods (ns, deploy, sts, ds, po), not {}",
                s.kind
            )));
        }
        Ok(Self {
            kind: args.kind,
            scope: args.scope.try_into()?,
            output: args.output,
        })
    }
}

// === run ===

/// Asks the controller and prints the edges.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (api, namespace) = config.scope.locate().await?;
    let params = config.scope.query(&config.kind, namespace.as_deref());
    let doc = api.get_json("/api/edges", &params).await?;
    let out = match config.output {
        Output::Json => table::json(&doc),
        output => {
            let edges: answer::Edges = answer::read(&doc, "edges")?;
            if edges.edges.is_empty() {
                crate::note(&format!(
                    "no edges between resources of type {} found{}",
                    config.kind,
                    namespace.map_or(String::new(), |ns| format!(" in namespace {ns:?}"))
                ));
                return Ok(());
            }
            render(&edges.edges, output == Output::Wide)
        }
    };
    crate::out(&out);
    Ok(())
}

/// `SRC DST SRC_NS DST_NS SECURED`, `wide` adding `CLIENT_ID SERVER_ID UNAUTHORIZED` (the
/// last one ours: the requests and connections the destination's policy refused a
/// second, `-` for none).
fn render(edges: &[answer::Edge], wide: bool) -> String {
    let mut header = vec!["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"];
    if wide {
        header.extend(["CLIENT_ID", "SERVER_ID", "UNAUTHORIZED"]);
    }
    let rows: Vec<Vec<String>> = edges
        .iter()
        .map(|e| {
            let mut row = vec![
                e.src.name.clone(),
                e.dst.name.clone(),
                table::or_dash(e.src.namespace.as_deref()),
                table::or_dash(e.dst.namespace.as_deref()),
                if e.secured { SECURED } else { NOT_SECURED }.to_string(),
            ];
            if wide {
                row.push(table::or_dash(e.client_id.as_deref()));
                row.push(table::or_dash(e.server_id.as_deref()));
                row.push(table::rps(e.unauthorized_rps, e.unauthorized_rps > 0.0));
            }
            row
        })
        .collect();
    table::render(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EdgesArgs,
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("edges").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn renders_linkerds_table() {
        let doc = serde_json::json!({"window_seconds": 60.0, "edges": [
            {"src": {"type": "deployment", "namespace": "demo", "name": "web"},
             "dst": {"type": "deployment", "namespace": "demo", "name": "voting"},
             "client_id": "web.demo.serviceaccount.identity.mesh.cluster.local",
             "server_id": "voting.demo.serviceaccount.identity.mesh.cluster.local",
             "secured": true, "responses": {"success": 1, "failure": 0}, "rps": 1.0,
             "tcp": {"open_connections": 1, "opened": 1, "read_bytes_per_second": 0.0,
                     "write_bytes_per_second": 0.0}, "unauthorized_rps": 0.5},
            {"src": {"type": "deployment", "namespace": "demo", "name": "web"},
             "dst": {"type": "authority", "name": "example.com:80"},
             "client_id": "web.demo.serviceaccount.identity.mesh.cluster.local",
             "server_id": null,
             "secured": false, "responses": {"success": 1, "failure": 0}, "rps": 1.0,
             "tcp": {"open_connections": 1, "opened": 1, "read_bytes_per_second": 0.0,
                     "write_bytes_per_second": 0.0}}
        ], "overflow": {"pods": 0, "samples": 0}});
        let edges: answer::Edges = answer::read(&doc, "edges").expect("reads");
        assert_eq!(
            render(&edges.edges, false),
            "SRC   DST              SRC_NS   DST_NS   SECURED\n\
             web   voting           demo     demo     √\n\
             web   example.com:80   demo     -        ×\n"
        );
        let wide = render(&edges.edges, true);
        assert_eq!(
            wide.lines().nth(1),
            Some(
                "web   voting           demo     demo     √         \
                 web.demo.serviceaccount.identity.mesh.cluster.local   \
                 voting.demo.serviceaccount.identity.mesh.cluster.local   0.5rps"
            ),
            "{wide}"
        );
        assert!(
            wide.lines().nth(2).is_some_and(|l| l
                .split_whitespace()
                .collect::<Vec<_>>()
                .ends_with(&[
                    "×",
                    "web.demo.serviceaccount.identity.mesh.cluster.local",
                    "-",
                    "-"
                ])),
            "{wide}"
        );
    }

    #[test]
    fn validates_flags() {
        let c = config(&["deployment", "-A", "-o", "wide"]).expect("ok");
        assert_eq!((c.kind.as_str(), c.output), ("deployment", Output::Wide));
        for (args, want) in [
            (&["svc"][..], "made of pods"),
            (&["deploy/web"], "a resource type alone"),
            (&["nope"], "unknown resource type \"nope\""),
            (&["po", "-t", "1"], "--time-window"),
        ] {
            let err = config(args).expect_err(want);
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
