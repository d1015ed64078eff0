//! `mesh policy`: authorization policy documents (`policy.mesh.rs`) offline, and the
//! dry run of the live policy (`check`, [`check`]).
//!
//! `validate FILE...` runs the controller's own checks ([`mesh_core::policy`]) over
//! every document, as `mesh profile validate` does for profiles: a document this
//! command accepts is one the admission webhook and the controller accept too.
//!
//! ```text
//! mesh policy validate server.yaml policy.yaml
//! kubectl get authorizationpolicies -A -o yaml | mesh policy validate -
//! ```

mod check;
pub(crate) use check::{CheckFailed, NotAllowed};

use crate::profile::{
    validate::{report, Outcome},
    Input,
};
use clap::Subcommand;
use mesh_core::{
    policy::{self, Resource, Target},
    yaml,
};
use std::{io::Write, path::PathBuf};

/// Authorization policy: documents offline (`validate FILE`), the live policy's dry
/// run (`check`).
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check every Server, AuthorizationPolicy, MeshTLSAuthentication,
    /// NetworkAuthentication and HTTPRoute in FILE (`-` reads stdin; several documents
    /// may be separated by `---`); exits 1 if any is invalid, naming each problem's
    /// field.
    Validate(ValidateArgs),
    /// Whether a request (or a connection, `--tcp`) from a client to a workload's
    /// port would be allowed by the policy the controller sends the target's proxies
    /// now, by which authorization and route, or why not: each authorization tried
    /// and why it did not match. The dry run runs the proxy's own decision.
    ///
    /// Exit status: 0 allowed; 1 denied, no route found, or allowed only by an
    /// audit fallback (it would be denied); 2 the check could not be made
    /// (controller unreachable, unknown workload or port); 64 bad flags.
    Check(Box<check::CheckArgs>),
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Files of policy documents; `-` reads stdin.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

/// Runs `mesh policy`, printing to stdout.
pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.command {
        PolicyCommand::Check(c) => crate::block_on(check::run(*c)),
        PolicyCommand::Validate(v) => {
            let inputs: Vec<Input> = v.files.into_iter().map(Input::from).collect();
            validate(&inputs, &mut std::io::stdout().lock())
        }
    }
}

/// Checks every input; an error (exit 1) when any document is invalid or there is
/// none.
fn validate(inputs: &[Input], out: &mut impl Write) -> anyhow::Result<()> {
    report(inputs, out, "policy document", check)
}

/// API groups whose documents are checked: ours, and the two a user may bring over
/// (told how to move them) rather than have them skipped as unrelated.
const CHECKED_GROUPS: &[&str] = &[
    policy::GROUP,
    "policy.linkerd.io",
    "gateway.networking.k8s.io",
];

fn check(doc: &str) -> Outcome {
    // A first, schema-less read finds the kind and the name for the report; the
    // controller's parse then finds the problems (YAML syntax included).
    let value: Option<serde_json::Value> = yaml::from_str(doc).ok();
    if matches!(value, Some(serde_json::Value::Null)) {
        return Outcome::Empty;
    }
    let str_at = |keys: &[&str]| {
        let mut v = value.as_ref()?;
        for k in keys {
            v = v.get(k)?;
        }
        v.as_str().map(str::to_string)
    };
    let name = str_at(&["metadata", "name"]).unwrap_or_else(|| "no name".into());
    let kind = str_at(&["kind"]).unwrap_or_else(|| "no kind".into());
    let group = str_at(&["apiVersion"]).map(|v| {
        v.split_once('/')
            .map_or(String::new(), |(g, _)| g.to_string())
    });
    let label = format!("{kind} {name}");
    if let Some(group) = &group {
        if !CHECKED_GROUPS.contains(&group.as_str()) {
            return Outcome::Skipped {
                label,
                why: "not a policy document".into(),
            };
        }
    }
    match policy::parse_yaml(doc) {
        Ok(r) => Outcome::Valid {
            label,
            what: summary(&r),
        },
        Err(problems) => Outcome::Invalid { label, problems },
    }
}

/// What a valid document says, in a few words.
fn summary(r: &Resource) -> String {
    let plural = |n: usize, one: &str| match (n, one.ends_with("ch")) {
        (1, _) => format!("1 {one}"),
        (n, true) => format!("{n} {one}es"),
        (n, false) => format!("{n} {one}s"),
    };
    match r {
        Resource::Server(s) => format!(
            "port {}, protocol {}, accessPolicy {}",
            s.port,
            s.protocol.name(),
            s.access_policy
        ),
        Resource::AuthorizationPolicy(p) => {
            let target = match &p.target {
                Target::Server(s) => format!("Server {s}"),
                Target::Namespace => "every Server of its namespace".into(),
                Target::Route(r) => format!("HTTPRoute {r}"),
            };
            let n = usize::from(p.identity.is_some()) + usize::from(p.network.is_some());
            match n {
                0 => format!("{target}, no authentication (every client allowed)"),
                n => format!("{target}, {}", plural(n, "authentication")),
            }
        }
        Resource::MeshTlsAuthentication(m) => plural(m.identities.len(), "identity match"),
        Resource::NetworkAuthentication(n) => plural(n.networks.len(), "network"),
        Resource::HttpRoute(h) => format!(
            "{}, {}",
            plural(h.parents.len(), "parent"),
            plural(h.matches.len(), "match")
        ),
    }
}
