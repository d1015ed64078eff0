//! `mesh check`: is the cluster's mesh healthy? Checks run in order, grouped as
//! Linkerd's are, each printed `√` or `×` with a hint when it fails; a failed check
//! that later ones depend on stops them. Exit 0 when everything passed, 1 otherwise.
//!
//! Today: the Kubernetes API answers; the `serviceprofiles.mesh.rs` CRD is served;
//! every ServiceProfile in the cluster is valid (each problem named with its object,
//! field path and reason: the controller ignores an invalid update and keeps the last
//! valid profile, so an invalid one is otherwise silent). With `--pre`, only what an
//! install needs: the API answers.

use crate::api::kubeconfig::KubeArgs;
use kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams},
    Client,
};
use std::{fmt::Write as _, process::ExitCode};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Only the checks an install needs (the API server answers).
    #[arg(long)]
    pub pre: bool,
    /// The cluster, as every command that reaches one takes it.
    #[command(flatten)]
    kube: KubeArgs,
    /// The cluster's domain, which profile names end with.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// One check's outcome.
struct Outcome {
    name: &'static str,
    result: Result<(), String>,
    /// Lines shown under a failure (e.g. each invalid profile).
    details: Vec<String>,
}

/// Runs the checks and prints the report to stdout.
pub async fn run(args: CheckArgs) -> ExitCode {
    let (report, ok) = check(&args).await;
    crate::out(&report);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The report, and whether every check passed.
async fn check(args: &CheckArgs) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let mut section = |out: &mut String, title: &str, outcomes: &[Outcome]| {
        let _ = writeln!(out, "{title}\n{}", "-".repeat(title.len()));
        for o in outcomes {
            match &o.result {
                Ok(()) => {
                    let _ = writeln!(out, "√ {}", o.name);
                }
                Err(why) => {
                    ok = false;
                    let _ = writeln!(out, "× {}\n    {why}", o.name);
                    for d in &o.details {
                        let _ = writeln!(out, "    {d}");
                    }
                }
            }
        }
        out.push('\n');
    };

    let client = match client(args).await {
        Ok(c) => c,
        Err(e) => {
            section(
                &mut out,
                "kubernetes-api",
                &[Outcome {
                    name: "can initialize the client",
                    result: Err(format!("{e:#}")),
                    details: Vec::new(),
                }],
            );
            return (out, ok);
        }
    };
    let version = client
        .apiserver_version()
        .await
        .map(|_| ())
        .map_err(|e| format!("the API server does not answer: {e}"));
    let reachable = version.is_ok();
    section(
        &mut out,
        "kubernetes-api",
        &[
            Outcome {
                name: "can initialize the client",
                result: Ok(()),
                details: Vec::new(),
            },
            Outcome {
                name: "can query the Kubernetes API",
                result: version,
                details: Vec::new(),
            },
        ],
    );
    if !reachable || args.pre {
        return (out, ok);
    }

    let resource = profile_resource();
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut outcomes = Vec::new();
    match api.list(&ListParams::default()).await {
        Err(e) => {
            let why = match &e {
                kube::Error::Api(s) if s.code == 404 => {
                    "serviceprofiles.mesh.rs is not served: install the CRD (`mesh install | kubectl apply -f -`)".to_string()
                }
                e => format!("cannot list serviceprofiles.mesh.rs: {e}"),
            };
            outcomes.push(Outcome {
                name: "the ServiceProfile CRD is installed",
                result: Err(why),
                details: Vec::new(),
            });
        }
        Ok(list) => {
            outcomes.push(Outcome {
                name: "the ServiceProfile CRD is installed",
                result: Ok(()),
                details: Vec::new(),
            });
            let mut details = Vec::new();
            for obj in &list.items {
                let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
                let name = obj.metadata.name.as_deref().unwrap_or("");
                for problem in problems(obj, &args.cluster_domain) {
                    details.push(format!("{ns}/{name}: {problem}"));
                }
            }
            let invalid = details.len();
            outcomes.push(Outcome {
                name: "ServiceProfiles are valid",
                result: if details.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{invalid} problem(s); the controller keeps each profile's last valid version in force until it is fixed (see `mesh profile validate`):"
                    ))
                },
                details,
            });
        }
    }
    section(&mut out, "mesh-config", &outcomes);
    (out, ok)
}

/// `serviceprofiles.mesh.rs`, by the names the core gives it (the controller's watch
/// reads the same resource, `mesh_controller::k8s::profile_resource`).
fn profile_resource() -> ApiResource {
    use mesh_core::profile::{GROUP, KIND, PLURAL, VERSION};
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// Every problem of one ServiceProfile object, as `path: reason`: the controller's
/// own judgement of it ([`mesh_core::profile::validate_object`]).
fn problems(obj: &DynamicObject, cluster_domain: &str) -> Vec<String> {
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    let namespace = obj.metadata.namespace.as_deref().unwrap_or("default");
    match mesh_core::profile::validate_object(name, namespace, spec, cluster_domain) {
        Ok(_) => Vec::new(),
        Err(p) => p.0.iter().map(ToString::to_string).collect(),
    }
}

async fn client(args: &CheckArgs) -> anyhow::Result<Client> {
    Ok(args.kube.client().await?.0)
}
