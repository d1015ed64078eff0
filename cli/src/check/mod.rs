//! `mesh check`: is the cluster ready for the mesh (`--pre`), and is the mesh in it
//! healthy? Checks are grouped in categories as Linkerd's are, each printed `√`
//! (passed), `‼` (a warning: worth fixing, does not fail the run) or `×` (failed), a
//! failure followed by what failed and what to run, and a hint line naming its anchor
//! in `docs/checks.md`. `-o json` prints the same as one document. Exit 0 when no
//! check failed, 1 otherwise.
//!
//! Every check has a stable ID (the anchor, the JSON's `id`). The categories:
//!
//! - `kubernetes-api`, `kubernetes-version` (always): the client, the API answers,
//!   its version is at least [`MIN_KUBERNETES`](mesh_core::install::MIN_KUBERNETES);
//! - `pre-kubernetes-setup` (`--pre`, `pre.rs`): the control plane's namespace absent,
//!   permission to create every kind `mesh install` emits, the clock, the admission
//!   API;
//! - `mesh-config`, `mesh-control-plane` (pods ready, and the controller's own view of
//!   the ServiceProfile CRD), `mesh-identity`, `mesh-webhooks`, `mesh-version`
//!   (without `--pre`, `installed.rs` and `tls.rs`; only `mesh-config` when the
//!   namespace is missing, since every later check would fail for that one reason);
//! - `mesh-data-plane` (`--proxy`, `proxy.rs`).
//!
//! `--wait` re-runs the suite while the only failures are checks that can come good
//! by themselves (controller pods becoming ready, the controller answering, meshed
//! pods' proxies becoming ready), every 500 ms, until the duration passes; a failure
//! that waiting cannot mend (the API unreachable, a version, a permission, a
//! certificate, a missing object) ends it at once.

mod installed;
mod kube;
mod pre;
mod proxy;
mod report;
mod tls;

use crate::api::kubeconfig::KubeArgs;
use std::{process::ExitCode, time::Duration};

pub(crate) use self::report::{Category, Check};

/// How often `--wait` re-runs the suite while a retryable check fails.
const POLL: Duration = Duration::from_millis(500);

/// The flags of `mesh check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Only what an install needs: the API, its version, the namespace free,
    /// permissions, the clock, the admission API.
    #[arg(long, conflicts_with = "proxy")]
    pub pre: bool,
    /// Also the data plane: meshed pods' proxies ready, from this trust root, of this
    /// version.
    #[arg(long)]
    pub proxy: bool,
    /// With --proxy: only the pods of this namespace [default: every namespace].
    #[arg(short = 'n', long, requires = "proxy")]
    pub namespace: Option<String>,
    /// `table` (grouped lines) or `json` (one document: categories, checks with id,
    /// description, result, error, hint, details).
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
    /// Re-run while a check that can come good by itself fails (pods not ready yet, the
    /// controller not answering), for up to this long: `5m`, `30s`, `0s` for once.
    #[arg(long, default_value = "5m", value_parser = parse_wait)]
    pub wait: Duration,
    /// The cluster, as every command that reaches one takes it.
    #[command(flatten)]
    kube: KubeArgs,
    /// The cluster's domain, which profile names end with [default: the install's
    /// (`mesh-config`), else cluster.local].
    #[arg(long)]
    pub cluster_domain: Option<String>,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    mesh_api::duration::parse(s).map_err(|e| format!("{e} (e.g. 5m, 30s, 0s)"))
}

/// Runs the checks and prints the report to stdout.
pub async fn run(args: CheckArgs) -> ExitCode {
    let categories = suite_until(&args).await;
    let ok = report::success(&categories);
    match args.output.as_str() {
        "json" => crate::out(&report::json(&categories)),
        _ => crate::out(&report::table(&categories)),
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The suite, re-run while the only failures are checks that may come good by
/// themselves and `--wait` allows (a failure waiting cannot mend fails the run
/// anyway, so it ends the wait). What is awaited is said on stderr when it changes,
/// so a wait is never silent and stdout stays the report.
async fn suite_until(args: &CheckArgs) -> Vec<Category> {
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut said = String::new();
    loop {
        let categories = suite(args).await;
        let failed: Vec<&Check> = categories
            .iter()
            .flat_map(|c| &c.checks)
            .filter(|c| c.result == report::Verdict::Error)
            .collect();
        let retry = !failed.is_empty() && failed.iter().all(|c| c.wants_retry());
        if !retry || tokio::time::Instant::now() + POLL > deadline {
            return categories;
        }
        let waiting: String = failed
            .iter()
            .map(|c| {
                format!(
                    "waiting for: {} ({})\n",
                    c.description,
                    c.error.as_deref().unwrap_or("")
                )
            })
            .collect();
        if waiting != said {
            eprint!("{waiting}");
            said = waiting;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One run of every check the flags ask for.
async fn suite(args: &CheckArgs) -> Vec<Category> {
    let mut api = Category::new("kubernetes-api");
    let (client, cluster) = match args.kube.client().await {
        Ok(c) => c,
        Err(e) => {
            api.push(Check::error(
                "k8s-api-client",
                "can initialize the client",
                format!("{e:#}"),
            ));
            return vec![api];
        }
    };
    api.push(Check::ok("k8s-api-client", "can initialize the client"));
    let probe = kube::probe(&client, &cluster.described).await;
    let server = match probe {
        Ok(server) => {
            api.push(Check::ok("k8s-api-query", "can query the Kubernetes API"));
            server
        }
        Err(why) => {
            api.push(Check::error(
                "k8s-api-query",
                "can query the Kubernetes API",
                why,
            ));
            return vec![api];
        }
    };
    let mut out = vec![api, pre::version(&server)];
    let ctx = Ctx {
        client,
        kube: args.kube.clone(),
        cluster_domain: args.cluster_domain.clone(),
    };
    if args.pre {
        out.push(pre::setup(&ctx, &server).await);
        return out;
    }
    out.extend(installed::checks(&ctx).await);
    if args.proxy {
        out.push(proxy::check(&ctx, args.namespace.as_deref()).await);
    }
    out
}

/// What every check reads the cluster with.
pub(crate) struct Ctx {
    pub(crate) client: ::kube::Client,
    pub(crate) kube: KubeArgs,
    /// `--cluster-domain`, if given.
    pub(crate) cluster_domain: Option<String>,
}
