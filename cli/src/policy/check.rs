//! `mesh policy check --from TYPE/NAME --to TYPE/NAME:PORT [--path P] ...`: the dry
//! run. Both workloads come from the controller (`/api/policy`): the client's IP and
//! identity, the target's compiled policy for the port, the very message its proxies
//! are sent; the verdict is the proxy's own decision (`mesh_api::policy::decide`,
//! `explain_http` / `explain_tcp`), with what it tried.
//!
//! ```text
//! mesh policy check --from deploy/web --to deploy/voting:8080 --path /api/vote
//! mesh policy check --from-ip 203.0.113.9 --unmeshed --to deploy/voting:http
//! ```

use crate::{
    api::{Api, ApiArgs},
    authz::{compile, fetch, short, workload},
    UsageError,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use mesh_api::policy::decide::{Client, Explanation, Verdict};
use std::net::IpAddr;

/// Flags of `mesh policy check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The client: a workload the controller knows (`TYPE/NAME`); its first pod's IP
    /// and mesh identity are used.
    #[arg(long, value_name = "TYPE/NAME", required_unless_present = "from_ip")]
    from: Option<String>,

    /// The namespace of --from [default: --namespace].
    #[arg(long, value_name = "NAMESPACE", requires = "from")]
    from_namespace: Option<String>,

    /// The client's IP address (a caller outside the mesh, or in place of --from's).
    #[arg(long, value_name = "IP")]
    from_ip: Option<IpAddr>,

    /// The client's mesh identity (in place of --from's).
    #[arg(long, value_name = "ID", conflicts_with = "unmeshed")]
    from_identity: Option<String>,

    /// The client speaks plaintext: no mesh identity, whatever --from's is.
    #[arg(long)]
    unmeshed: bool,

    /// The target: `TYPE/NAME:PORT`, PORT a number or a named container port.
    #[arg(long, value_name = "TYPE/NAME:PORT")]
    to: String,

    /// The namespace of both workloads [default: the demo's against the demo, the
    /// kubeconfig context's in a cluster, else `default`].
    #[arg(short = 'n', long)]
    namespace: Option<String>,

    /// The request's path.
    #[arg(long, default_value = "/", conflicts_with = "tcp")]
    path: String,

    /// The request's method.
    #[arg(long, default_value = "GET", conflicts_with = "tcp")]
    method: String,

    /// A request header, `NAME:VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", conflicts_with = "tcp")]
    headers: Vec<String>,

    /// The request's host (`Host` / `:authority`), which routes with `hostnames`
    /// match.
    #[arg(long, value_name = "HOST", conflicts_with = "tcp")]
    host: Option<String>,

    /// Ask about a connection (opaque TCP: the server-wide authorizations alone)
    /// rather than an HTTP request; implied when the port's policy says opaque.
    #[arg(long)]
    tcp: bool,

    #[command(flatten)]
    api: ApiArgs,
}

/// The flags, checked before anything connects.
#[derive(Debug)]
struct Valid {
    to: String,
    port: PortRef,
    method: Method,
    headers: HeaderMap,
    host: Option<String>,
}

#[derive(Debug)]
enum PortRef {
    Number(u16),
    Name(String),
}

/// The check's outcome when it is not an allowance: exit 1, the verdict already
/// printed.
#[derive(Debug)]
pub(crate) struct NotAllowed;

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not allowed")
    }
}

impl std::error::Error for NotAllowed {}

fn validate(args: &CheckArgs) -> Result<Valid, UsageError> {
    let (to, port) = args.to.rsplit_once(':').ok_or_else(|| {
        UsageError::new(format!(
            "--to {:?}: expected TYPE/NAME:PORT (the port is required: a number or a named port)",
            args.to
        ))
    })?;
    let to = workload("--to", to)?;
    let port = match port.parse::<u16>() {
        Ok(0) => return Err(UsageError::new(format!("--to {:?}: port 0", args.to))),
        Ok(n) => PortRef::Number(n),
        Err(_) if mesh_api::names::is_dns_label(port) && port.len() <= 15 => {
            PortRef::Name(port.to_string())
        }
        Err(_) => {
            return Err(UsageError::new(format!(
                "--to {:?}: port {port:?} is neither a number from 1 to 65535 nor a port name",
                args.to
            )))
        }
    };
    if let Some(from) = &args.from {
        workload("--from", from)?;
    }
    for (flag, ns) in [
        ("--namespace", &args.namespace),
        ("--from-namespace", &args.from_namespace),
    ] {
        if let Some(ns) = ns {
            crate::dns_label(flag, ns)?;
        }
    }
    if let Some(id) = &args.from_identity {
        if !mesh_api::names::is_dns_name(id) {
            return Err(UsageError::new(format!(
                "--from-identity {id:?} is not a mesh identity (a DNS name such as \
                 web.demo.serviceaccount.identity.mesh.cluster.local)"
            )));
        }
    }
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| UsageError::new(format!("--method {:?} is not a method", args.method)))?;
    if !args.path.starts_with('/') {
        return Err(UsageError::new(format!(
            "--path {:?}: a path starts with /",
            args.path
        )));
    }
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let bad = || UsageError::new(format!("--header {h:?}: expected NAME:VALUE"));
        let (name, value) = h.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        headers.append(name, value);
    }
    let host = args
        .host
        .as_deref()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
    Ok(Valid {
        to,
        port,
        method,
        headers,
        host,
    })
}

/// Runs `mesh policy check`. A verdict other than allowed is [`NotAllowed`] (exit 1);
/// a check that cannot be made is an error the caller exits 2 on.
pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let valid = validate(&args)?;
    let api = Api::locate(&args.api).await.map_err(cannot)?;
    let namespace = api.namespace_or_default(args.namespace.as_deref());
    let (client_ip, client_id) = client(&api, &args, &namespace).await.map_err(cannot)?;
    let asked = match valid.port {
        PortRef::Number(n) => Some(n),
        PortRef::Name(_) => None,
    };
    let (_, target) = fetch(&api, &namespace, &valid.to, asked)
        .await
        .map_err(cannot)?;
    let pod = target.pods.first().ok_or_else(|| {
        cannot(anyhow::anyhow!(
            "--to: no pods of {} in namespace {namespace}",
            valid.to
        ))
    })?;
    let port = match &valid.port {
        PortRef::Number(n) => *n,
        PortRef::Name(name) => *pod
            .named_ports
            .get(name)
            .and_then(|p| p.first())
            .ok_or_else(|| {
                let known: Vec<&str> = pod.named_ports.keys().map(String::as_str).collect();
                cannot(anyhow::anyhow!(
                    "--to: pod {} of {} has no port named {name:?} (its named ports: {})",
                    pod.name,
                    valid.to,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?,
    };
    let json = &pod
        .ports
        .iter()
        .find(|p| p.port == port)
        .ok_or_else(|| {
            cannot(anyhow::anyhow!(
                "the policy index does not know pod {} of {} (is it meshed?)",
                pod.name,
                valid.to
            ))
        })?
        .policy;
    let policy = compile(json).map_err(cannot)?;
    let client = Client {
        ip: client_ip,
        id: client_id.as_deref(),
        local: false,
    };
    let tcp = args.tcp || json.protocol == "opaque";
    let e = if tcp {
        policy.explain_tcp(client)
    } else {
        policy.explain_http(
            client,
            valid.host.as_deref(),
            &valid.method,
            &args.path,
            &valid.headers,
        )
    };
    let what = if tcp {
        format!("connection to {}:{port}", valid.to)
    } else {
        format!("{} {} to {}:{port}", valid.method, args.path, valid.to)
    };
    let who = match &client_id {
        Some(id) => format!("{client_ip} as {id}"),
        None => format!("{client_ip}, no mesh identity"),
    };
    let (text, allowed) = report(&e, &what, &who, &pod.name);
    crate::out(&text);
    match allowed {
        true => Ok(()),
        false => Err(NotAllowed.into()),
    }
}

/// An error that is not the flags' (exit 2).
fn cannot(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<UsageError>() {
        Ok(usage) => usage.into(),
        Err(e) => CheckFailed(e).into(),
    }
}

/// The check could not be made: exit 2, not 1 (which says "denied").
#[derive(Debug)]
pub(crate) struct CheckFailed(pub(crate) anyhow::Error);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for CheckFailed {}

/// The client's IP and identity: `--from`'s first pod, overridden by `--from-ip`,
/// `--from-identity` and `--unmeshed`.
async fn client(
    api: &Api,
    args: &CheckArgs,
    namespace: &str,
) -> anyhow::Result<(IpAddr, Option<String>)> {
    let (mut ip, mut id) = (args.from_ip, args.from_identity.clone());
    if let Some(from) = &args.from {
        let ns = args.from_namespace.as_deref().unwrap_or(namespace);
        let (_, answer) = fetch(api, ns, from, None).await?;
        let pod = answer
            .pods
            .iter()
            .find(|p| !p.ips.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--from: no pods of {from} in namespace {ns}"))?;
        ip = ip.or(pod.ips.first().copied());
        if id.is_none() {
            id = pod.identity.clone();
        }
    }
    if args.unmeshed {
        id = None;
    }
    let ip = ip.ok_or_else(|| anyhow::anyhow!("--from-ip is required without --from"))?;
    Ok((ip.to_canonical(), id))
}

/// The verdict line, then one line per route missed and per authorization tried;
/// and whether it is an allowance.
fn report(e: &Explanation<'_>, what: &str, who: &str, pod: &str) -> (String, bool) {
    let server = format!("server {}", short(e.server));
    let route = e.route.map(|r| format!("route {}, ", short(r)));
    let route = route.as_deref().unwrap_or("");
    let (verdict, allowed) = match (e.route, e.verdict) {
        (None, _) if !e.routes_missed.is_empty() => {
            (format!("NOT FOUND: no route of {server} matches"), false)
        }
        (_, Verdict::Allow(m)) => (format!("ALLOWED by {} ({route}{server})", short(m)), true),
        (_, Verdict::Deny) => (
            format!("DENIED: no authorization allows it ({route}{server})"),
            false,
        ),
        (_, Verdict::Audit) => (
            format!(
                "AUDIT: would be denied: no authorization allows it ({route}{server}); \
                 allowed only by the audit fallback"
            ),
            false,
        ),
    };
    let mut out = format!("{verdict}\n  {what} from {who} (pod {pod})\n");
    if e.local {
        out.push_str("  the client is the pod itself (loopback): always allowed\n");
    }
    for m in &e.routes_missed {
        out.push_str(&format!("  route {}: {}\n", short(m.meta), m.reason));
    }
    if let Some(r) = e.route {
        if !e.routes_missed.is_empty() || r.kind.as_ref() != "default" {
            out.push_str(&format!("  route {}: matches\n", short(r)));
        }
    }
    for t in &e.tried {
        let scope = t
            .route
            .map_or(String::new(), |r| format!(" (route {})", short(r)));
        let line = match (&t.network, &t.authentication) {
            (Ok(()), Ok(())) => "matches".to_string(),
            (Err(n), Ok(())) => n.clone(),
            (Ok(()), Err(a)) => a.clone(),
            (Err(n), Err(a)) => format!("{n}; {a}"),
        };
        out.push_str(&format!("  {}{scope}: {line}\n", short(t.meta)));
    }
    if e.tried.is_empty() && !e.local && e.route.is_some() {
        out.push_str(&format!("  {server} has no authorization\n"));
    }
    (out, allowed)
}
