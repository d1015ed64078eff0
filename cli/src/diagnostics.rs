//! `mesh diagnostics endpoints AUTHORITY` and `mesh diagnostics profile AUTHORITY`: what
//! the destination service answers a proxy that asks for an authority, as `linkerd
//! diagnostics endpoints` shows it, with each endpoint's identity. The controller
//! answers from its destination index (`/api/diagnostics/...` on its API, wherever
//! [`Api::locate`] finds it), so what is shown is what proxies get.
//!
//! `mesh diagnostics proxy-metrics po/NAME`: a pod's proxy's raw Prometheus metrics, as
//! `linkerd diagnostics proxy-metrics` prints them. The controller fetches the page from
//! the proxy's admin port when asked (`/api/diagnostics/proxy-metrics`), so the one way
//! to the controller (the demo's address, or the port-forward in a cluster) reaches
//! every proxy, and the proxies' admin ports need not be reachable from here.

use crate::{
    api::{Api, ApiArgs},
    stat::Output,
    table,
};
use mesh_core::stats::ResourceKind;
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
    /// A pod's proxy's metrics, in Prometheus text as the proxy serves them.
    ProxyMetrics(ProxyMetrics),
}

#[derive(Debug, clap::Args)]
struct ProxyMetrics {
    /// The pod whose proxy to read: `po/NAME` (or `pod/NAME`).
    #[arg(value_name = "po/NAME")]
    pod: String,

    /// The pod's namespace [default: the demo's against the demo, the kubeconfig
    /// context's in a cluster, else `default`].
    #[arg(short = 'n', long)]
    namespace: Option<String>,

    #[command(flatten)]
    api: ApiArgs,
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
        What::ProxyMetrics(p) => return proxy_metrics(p).await,
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
        (What::ProxyMetrics(_), _) => unreachable!("answered above"),
    };
    crate::out(&out);
    Ok(())
}

/// Prints the pod's proxy's metrics as the controller passed them on.
async fn proxy_metrics(args: &ProxyMetrics) -> anyhow::Result<()> {
    let pod = pod_name(&args.pod)?;
    if let Some(ns) = &args.namespace {
        crate::dns_label("--namespace", ns)?;
    }
    let api = Api::locate(&args.api).await?;
    let namespace = api.namespace_or_default(args.namespace.as_deref());
    let page = api
        .get_text(
            "/api/diagnostics/proxy-metrics",
            &[("namespace", namespace.as_str()), ("pod", pod)],
        )
        .await?;
    crate::out(&page);
    Ok(())
}

/// The pod `po/NAME` names; any other resource is a usage error (a proxy is a pod's).
fn pod_name(resource: &str) -> Result<&str, crate::UsageError> {
    let usage = || {
        crate::UsageError::new(format!(
            "{resource:?}: expected a pod, po/NAME (a proxy's metrics are one pod's)"
        ))
    };
    let (kind, name) = resource.split_once('/').ok_or_else(usage)?;
    match kind.parse() {
        Ok(ResourceKind::Pod) if !name.is_empty() => Ok(name),
        _ => Err(usage()),
    }
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
    fn proxy_metrics_takes_a_pod() {
        assert_eq!(pod_name("po/web-0").unwrap(), "web-0");
        assert_eq!(pod_name("pod/web-0").unwrap(), "web-0");
        for bad in ["web-0", "po/", "deploy/web", "svc/web"] {
            let e = pod_name(bad).unwrap_err().to_string();
            assert!(e.contains("expected a pod, po/NAME"), "{bad}: {e}");
        }
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
