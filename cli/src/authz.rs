//! `mesh authz [-n NS] TYPE/NAME`: every port of a workload's pods with its server,
//! protocol, routes and authorizations, and what each allows, in words; then the
//! namespace's rejected policy resources, with their reasons.
//!
//! The controller answers from its policy index (`/api/policy`, the compiled
//! `InboundPolicy` each proxy is sent, `mesh_core::policy::answer`), and the words are
//! those of the compiled policy itself (`mesh_api::policy::decide`), so what is shown
//! is what the proxies enforce. [`fetch`] is also `mesh policy check`'s.
//!
//! ```text
//! mesh authz deploy/voting
//! mesh authz -n shop deploy/web -o json
//! ```

use crate::{
    api::{Api, ApiArgs},
    stat::Output,
    table, UsageError,
};
use mesh_api::policy::decide::{Meta, Policy};
use mesh_core::{
    policy::answer::{PodPolicy, PolicyJson, WorkloadPolicy},
    stats::{ResourceKind, Selector},
};

/// Flags of `mesh authz`.
#[derive(Debug, clap::Args)]
pub struct AuthzArgs {
    /// The workload: `TYPE/NAME`, TYPE one of deploy, sts, ds, po.
    #[arg(value_name = "TYPE/NAME")]
    resource: String,

    /// The namespace [default: the demo's against the demo, the kubeconfig context's in a
    /// cluster, else `default`].
    #[arg(short = 'n', long)]
    namespace: Option<String>,

    /// Output format: the table (`wide` is the same table) or `json` (the controller's
    /// answer as it came).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,

    #[command(flatten)]
    api: ApiArgs,
}

/// A workload the flags name: checked before anything connects.
pub(crate) fn workload(flag: &str, resource: &str) -> Result<String, UsageError> {
    let usage = |why: String| UsageError::new(format!("{flag} {resource:?}: {why}"));
    let selector = Selector::parse(resource, None).map_err(|e| usage(e.to_string()))?;
    if selector.name.is_none()
        || !selector.kind.has_pods()
        || selector.kind == ResourceKind::Namespace
    {
        return Err(usage(
            "expected a workload, TYPE/NAME with TYPE one of deploy, sts, ds, po".into(),
        ));
    }
    Ok(resource.to_string())
}

/// `/api/policy` for a workload: the controller's answer as JSON, and read.
pub(crate) async fn fetch(
    api: &Api,
    namespace: &str,
    resource: &str,
    port: Option<u16>,
) -> anyhow::Result<(serde_json::Value, WorkloadPolicy)> {
    let port = port.map(|p| p.to_string());
    let mut params = vec![("namespace", namespace), ("resource", resource)];
    if let Some(p) = &port {
        params.push(("port", p.as_str()));
    }
    let doc = api.get_json("/api/policy", &params).await?;
    let answer: WorkloadPolicy = crate::api::answer::read(&doc, "policy")?;
    Ok((doc, answer))
}

/// The compiled policy of a port, as the proxy compiles it.
pub(crate) fn compile(policy: &PolicyJson) -> anyhow::Result<Policy> {
    let msg = policy
        .to_proto()
        .map_err(|e| anyhow::anyhow!("the controller's policy does not read: {e}"))?;
    Policy::from_proto(&msg)
        .map_err(|e| anyhow::anyhow!("the controller's policy does not compile: {e}"))
}

/// `kind/name` as the commands show a policy's parts: `srv/NAME` for a Server,
/// `default/NAME` for what the controller made itself.
pub(crate) fn short(meta: &Meta) -> String {
    match &*meta.kind {
        "server" => format!("srv/{}", meta.name),
        kind => format!("{kind}/{}", meta.name),
    }
}

/// Runs `mesh authz`.
pub async fn run(args: AuthzArgs) -> anyhow::Result<()> {
    let resource = workload("TYPE/NAME", &args.resource)?;
    if let Some(ns) = &args.namespace {
        crate::dns_label("--namespace", ns)?;
    }
    let api = Api::locate(&args.api).await?;
    let namespace = api.namespace_or_default(args.namespace.as_deref());
    let (doc, answer) = fetch(&api, &namespace, &resource, None).await?;
    if args.output == Output::Json {
        crate::out(&table::json(&doc));
        return Ok(());
    }
    if answer.pods.is_empty() {
        anyhow::bail!("no pods of {resource} in namespace {namespace}");
    }
    crate::out(&render(&answer)?);
    Ok(())
}

/// The table, then the rejected resources.
fn render(answer: &WorkloadPolicy) -> anyhow::Result<String> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for pod in &answer.pods {
        for port in &pod.ports {
            for row in port_rows(port.port, &port.policy)? {
                // Pods of one workload mostly share their policies: one row each.
                if !rows.contains(&row) {
                    rows.push(row);
                }
            }
        }
    }
    let mut out = if rows.is_empty() {
        no_ports(&answer.pods)
    } else {
        table::render(
            &[
                "PORT",
                "SERVER",
                "PROTOCOL",
                "ROUTE",
                "MATCHES",
                "AUTHORIZATION",
                "ALLOWS",
            ],
            &rows,
        )
    };
    if !answer.diagnostics.is_empty() {
        out.push_str(&format!("\nrejected in namespace {}:\n", answer.namespace));
        for d in &answer.diagnostics {
            out.push_str(&format!("  {} {}: {}\n", d.kind, d.name, d.reason));
        }
    }
    Ok(out)
}

fn no_ports(pods: &[PodPolicy]) -> String {
    let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    format!(
        "no ports known for {} (no Server selects them, and they declare no container ports and back no \
         service; ask for one with `mesh policy check --to TYPE/NAME:PORT`)\n",
        names.join(", ")
    )
}

/// One port's rows: each route's own authorizations (a route without any: one row),
/// the server-wide authorizations (for every route), and the fallback.
fn port_rows(port: u16, json: &PolicyJson) -> anyhow::Result<Vec<Vec<String>>> {
    let policy = compile(json)?;
    let server = short(&policy.server);
    let row = |route: &str, matches: &str, authz: &str, allows: &str| {
        vec![
            port.to_string(),
            server.clone(),
            json.protocol.clone(),
            route.to_string(),
            matches.to_string(),
            authz.to_string(),
            allows.to_string(),
        ]
    };
    let mut rows = Vec::new();
    for route in policy.routes() {
        let (name, matches) = (short(&route.meta), route.describe());
        if route.authorizations().is_empty() {
            rows.push(row(&name, &matches, "-", "(the server's authorizations)"));
        }
        for a in route.authorizations() {
            rows.push(row(&name, &matches, &short(&a.meta), &a.describe()));
        }
    }
    let every = if policy.routes().is_empty() {
        "*"
    } else {
        "* (any route)"
    };
    for a in policy.authorizations() {
        rows.push(row(every, "-", &short(&a.meta), &a.describe()));
    }
    let fallback = if policy.audits() {
        "audit: allowed, reported as denied"
    } else {
        "deny"
    };
    rows.push(row(every, "-", "(fallback)", fallback));
    Ok(rows)
}
