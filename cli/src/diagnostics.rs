//! `mesh diagnostics endpoints AUTHORITY` and `mesh diagnostics profile AUTHORITY`: what
//! the destination service answers a proxy that asks for an authority, as `linkerd
//! diagnostics endpoints` shows it, with each endpoint's identity. The controller
//! answers from its destination index (`/api/diagnostics/...` on its API, at
//! `--api-addr` or the running demo's), so what is shown is what proxies get.

use crate::{
    api::{Api, ApiArgs},
    stat::Output,
    table,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Flags of `mesh diagnostics`.
#[derive(Debug, clap::Args)]
pub struct DiagnosticsArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// The endpoints the destination service sends for AUTHORITY, each with its
    /// identity and labels.
    Endpoints(Query),
    /// The ServiceProfile the destination service sends for AUTHORITY, as proxies
    /// apply it.
    Profile(Query),
}

#[derive(Debug, clap::Args)]
struct Query {
    /// What a proxy would ask for: `HOST:PORT` (e.g. `web.demo.svc.cluster.local:80`)
    /// or a pod's `IP:PORT`.
    #[arg(value_name = "AUTHORITY")]
    authority: String,

    /// Output format: the table, `wide` (adds each endpoint's weight and labels) or
    /// `json` (the controller's answer).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,

    #[command(flatten)]
    api: ApiArgs,
}

/// The parts of `/api/diagnostics/endpoints` the table shows.
#[derive(Debug, Deserialize)]
struct Endpoints {
    exists: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    address: String,
    weight: u32,
    identity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The parts of `/api/diagnostics/profile` the table shows.
#[derive(Debug, Deserialize)]
struct Profile {
    fully_qualified_name: Option<String>,
    opaque: bool,
    profile: Option<Spec>,
}

#[derive(Debug, Deserialize)]
struct Spec {
    routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
struct Route {
    name: String,
    is_retryable: bool,
    timeout_ms: u64,
}

/// Asks the controller and prints its answer.
pub async fn run(args: DiagnosticsArgs) -> anyhow::Result<()> {
    let (path, query) = match &args.what {
        What::Endpoints(q) => ("/api/diagnostics/endpoints", q),
        What::Profile(q) => ("/api/diagnostics/profile", q),
    };
    let api = Api::locate(&query.api).await?;
    let doc = api
        .get_json(path, &[("authority", query.authority.as_str())])
        .await?;
    let out = match (&args.what, query.output) {
        (_, Output::Json) => table::json(&doc),
        (What::Endpoints(q), output) => {
            let answer: Endpoints = crate::api::answer::read(&doc, "endpoints")?;
            if answer.endpoints.is_empty() {
                crate::note(&match answer.exists {
                    true => format!("{} exists but has no ready endpoints", q.authority),
                    false => format!(
                        "the destination service does not know {} (proxies fall back to its DNS name or address)",
                        q.authority
                    ),
                });
                return Ok(());
            }
            endpoints(&answer, output == Output::Wide)
        }
        (What::Profile(q), _) => {
            let answer: Profile = crate::api::answer::read(&doc, "profile")?;
            profile(&q.authority, &answer)
        }
    };
    crate::out(&out);
    Ok(())
}

/// `NAMESPACE IP PORT POD SERVICE IDENTITY` (Linkerd's, with the identity), `wide`
/// adding the weight and the endpoint's other labels.
fn endpoints(answer: &Endpoints, wide: bool) -> String {
    let mut header = vec!["NAMESPACE", "IP", "PORT", "POD", "SERVICE", "IDENTITY"];
    if wide {
        header.extend(["WEIGHT", "LABELS"]);
    }
    let label = |k: &str| table::or_dash(answer.labels.get(k).map(String::as_str));
    let rows: Vec<Vec<String>> = answer
        .endpoints
        .iter()
        .map(|e| {
            let (ip, port) = match e.address.rsplit_once(':') {
                Some((ip, port)) => (ip.trim_matches(['[', ']']).to_string(), port.to_string()),
                None => (e.address.clone(), "-".into()),
            };
            let mut row = vec![
                label("namespace"),
                ip,
                port,
                table::or_dash(e.labels.get("pod").map(String::as_str)),
                label("service"),
                table::or_dash(e.identity.as_deref()),
            ];
            if wide {
                row.push(e.weight.to_string());
                let labels: Vec<String> = e
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "pod")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                row.push(if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                });
            }
            row
        })
        .collect();
    table::render(&header, &rows)
}

/// The destination's name and protocol, then its routes in the order proxies match
/// them.
fn profile(authority: &str, answer: &Profile) -> String {
    let mut out = format!(
        "{authority}: {}, {}\n",
        answer
            .fully_qualified_name
            .as_deref()
            .map_or("not a service".to_string(), |n| format!("service {n}")),
        if answer.opaque {
            "opaque TCP"
        } else {
            "protocol detected"
        },
    );
    match &answer.profile {
        None => out.push_str("no ServiceProfile: every request is the default route\n"),
        Some(spec) => {
            let rows: Vec<Vec<String>> = spec
                .routes
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        if r.is_retryable { "yes" } else { "no" }.to_string(),
                        match r.timeout_ms {
                            0 => "-".to_string(),
                            ms => format!("{ms}ms"),
                        },
                    ]
                })
                .collect();
            out.push_str(&table::render(&["ROUTE", "RETRYABLE", "TIMEOUT"], &rows));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: serde_json::Value) -> Endpoints {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn endpoints_show_where_and_who() {
        let a = answer(serde_json::json!({
            "authority": "web.demo.svc.cluster.local:80",
            "exists": true,
            "labels": {"namespace": "demo", "service": "web"},
            "endpoints": [
                {"address": "127.0.0.1:7010", "weight": 10000, "identity": "web.demo.serviceaccount.identity.mesh.cluster.local",
                 "labels": {"pod": "web-0", "deployment": "web", "serviceaccount": "web"}, "h2": true, "opaque": false},
                {"address": "[::1]:7011", "weight": 10000, "identity": null, "labels": {}, "h2": false, "opaque": false},
            ],
        }));
        assert_eq!(
            endpoints(&a, false),
            "NAMESPACE   IP          PORT   POD     SERVICE   IDENTITY\n\
             demo        127.0.0.1   7010   web-0   web       web.demo.serviceaccount.identity.mesh.cluster.local\n\
             demo        ::1         7011   -       web       -\n"
        );
        let wide = endpoints(&a, true);
        assert!(
            wide.lines()
                .nth(1)
                .unwrap()
                .ends_with("10000    deployment=web,serviceaccount=web"),
            "{wide}"
        );
    }

    #[test]
    fn a_profile_lists_its_routes_in_order() {
        let p: Profile = serde_json::from_value(serde_json::json!({
            "fully_qualified_name": "web.demo.svc.cluster.local",
            "opaque": false,
            "profile": {"routes": [
                {"name": "GET /api/list", "is_retryable": true, "timeout_ms": 250},
                {"name": "POST /api/vote", "is_retryable": false, "timeout_ms": 0},
            ]},
        }))
        .unwrap();
        assert_eq!(
            profile("web.demo.svc.cluster.local:80", &p),
            "web.demo.svc.cluster.local:80: service web.demo.svc.cluster.local, protocol detected\n\
             ROUTE            RETRYABLE   TIMEOUT\n\
             GET /api/list    yes         250ms\n\
             POST /api/vote   no          -\n"
        );
        let none: Profile = serde_json::from_value(serde_json::json!({
            "fully_qualified_name": null, "opaque": true, "profile": null,
        }))
        .unwrap();
        assert!(profile("198.18.0.1:5432", &none).contains("not a service, opaque TCP"));
    }
}
