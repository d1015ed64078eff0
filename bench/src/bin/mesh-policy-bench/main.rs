//! `mesh-policy-bench`: how fast a policy change reaches every proxy's subscription
//! (issue 15's target: under 100 ms p99 at 1,000 pods).
//!
//! A fake Kubernetes API server (in this process) holds `--pods` pods selected by one
//! `Server`, whose `AuthorizationPolicy` requires a `MeshTLSAuthentication`; a
//! `mesh-controller --backend kubernetes` (the binary next to this one) starts against
//! it. One `mesh.policy.InboundPolicies/Watch` stream per pod, each on its own HTTP/2
//! connection as each proxy has, receives the pod's compiled policy. Then `--rounds`
//! times the MeshTLSAuthentication is rewritten to name a new identity
//! (`gen-<round>.bench...`) in the API server, and each stream's arrival of the policy
//! naming it is timed from the write: per stream (every stream's latency, all rounds)
//! and per round (until the last stream has it). Everything runs on loopback.
//!
//! ```text
//! cargo build --release -p mesh-controller -p mesh-bench --bin mesh-controller --bin mesh-policy-bench
//! target/release/mesh-policy-bench                   # 1,000 pods, 20 rounds
//! target/release/mesh-policy-bench --pods 50 --rounds 3   # a smoke run
//! ```
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use anyhow::Context as _;
use clap::Parser;
use mesh_api::policy::{
    authentication::Permit, inbound_policies_client::InboundPoliciesClient, InboundPolicy, PortSpec,
};
use mesh_bench::stats::{histogram, Percentiles};
use mesh_integration_tests::mesh::Controller;
use mesh_kube_fake::{pod, FakeKube};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(
    name = "mesh-policy-bench",
    about = "Benchmark of mesh's policy service: a policy change's propagation to every pod's Watch stream"
)]
struct Args {
    /// Pods, one Watch stream (and one connection) each.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Policy changes timed.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// How long one change may take to reach every stream before the run fails.
    #[arg(long, default_value = "30s", value_parser = mesh_api::duration::parse)]
    timeout: Duration,
}

const NS: &str = "bench";
const PORT: u32 = 8080;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.pods > 0 && args.pods <= 60_000, "--pods: 1 to 60000");
    anyhow::ensure!(args.rounds > 0, "--rounds: at least 1");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

fn identity(round: u32) -> String {
    format!("gen-{round}.{NS}.serviceaccount.identity.mesh.cluster.local")
}

fn policy_object(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "policy.mesh.rs/v1alpha1",
        "kind": kind,
        "metadata": {"namespace": NS, "name": name},
        "spec": spec,
    })
}

fn authentication(round: u32) -> serde_json::Value {
    policy_object(
        "MeshTLSAuthentication",
        "callers",
        json!({"identities": [identity(round)]}),
    )
}

/// The round whose identity the policy names, if any.
fn round_of(policy: &InboundPolicy) -> Option<u32> {
    policy.authorizations.iter().find_map(|a| {
        let Some(Permit::MeshTls(tls)) = a.authentication.as_ref()?.permit.as_ref() else {
            return None;
        };
        tls.identities.iter().find_map(|id| {
            id.strip_prefix("gen-")?
                .split_once('.')
                .and_then(|(n, _)| n.parse().ok())
        })
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let kube = FakeKube::start().await?;
    let pods = (0..args.pods).map(|i| {
        let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        pod(
            NS,
            &format!("web-{i}"),
            &ip,
            "web",
            Some(("Deployment", "web")),
            &[("app", "web")],
        )
    });
    kube.apply_all(pods)?;
    kube.apply_all([
        policy_object(
            "Server",
            "web",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "port": PORT}),
        ),
        authentication(0),
        policy_object(
            "AuthorizationPolicy",
            "web",
            json!({
                "targetRef": {"group": "policy.mesh.rs", "kind": "Server", "name": "web"},
                "requiredAuthenticationRefs": [
                    {"group": "policy.mesh.rs", "kind": "MeshTLSAuthentication", "name": "callers"}
                ],
            }),
        ),
    ])?;
    let kubeconfig = kube.kubeconfig_path().to_path_buf();
    let ctl = tokio::task::spawn_blocking(move || {
        Controller::kubernetes_with(
            &kubeconfig,
            None,
            &[("MESH_LOG", "warn")],
            Duration::from_secs(120),
        )
    })
    .await?
    .context("starting mesh-controller")?;

    // One stream per pod, each on a connection of its own; each reports the round of
    // every policy it receives.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, Instant)>();
    let opened = Instant::now();
    let mut tasks = Vec::with_capacity(args.pods);
    for i in 0..args.pods {
        let addr = ctl.destination;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = InboundPoliciesClient::connect(format!("http://{addr}")).await?;
            let mut stream = client
                .watch(PortSpec {
                    workload: format!(r#"{{"ns":"{NS}","pod":"web-{i}"}}"#),
                    port: PORT,
                })
                .await?
                .into_inner();
            while let Some(policy) = stream.message().await? {
                if let Some(round) = round_of(&policy) {
                    let _ = tx.send((round, Instant::now()));
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(tx);
    wait_round(&mut rx, 0, args.pods, opened, args.timeout)
        .await
        .context("the streams' first policies")?;
    let open_time = opened.elapsed();

    let mut per_stream = histogram(600_000_000);
    let mut per_round = histogram(600_000_000);
    let mut first = histogram(600_000_000);
    for round in 1..=args.rounds {
        let written = Instant::now();
        kube.apply(authentication(round))?;
        let arrivals = wait_round(&mut rx, round, args.pods, written, args.timeout)
            .await
            .with_context(|| format!("round {round}"))?;
        for us in &arrivals {
            per_stream.record((*us).max(1))?;
        }
        per_round.record(arrivals.iter().copied().max().unwrap_or(1).max(1))?;
        first.record(arrivals.iter().copied().min().unwrap_or(1).max(1))?;
    }
    for task in tasks {
        task.abort();
    }

    let (s, r, f) = (
        Percentiles::of_us(&per_stream),
        Percentiles::of_us(&per_round),
        Percentiles::of_us(&first),
    );
    let ms = |us: f64| us / 1000.0;
    eprintln!(
        "mesh-policy-bench: {} pods, {} streams, {} rounds",
        args.pods, args.pods, args.rounds
    );
    eprintln!(
        "mesh-policy-bench: streams opened with their first policy in {:.0} ms",
        open_time.as_secs_f64() * 1000.0
    );
    eprintln!(
        "mesh-policy-bench: per stream (write to arrival): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(s.p50),
        ms(s.p99),
        ms(s.max)
    );
    eprintln!(
        "mesh-policy-bench: per round (write to the last stream): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(r.p50),
        ms(r.p99),
        ms(r.max)
    );
    eprintln!(
        "mesh-policy-bench: per round (write to the first stream: the API server's watch and the controller's compile): p50 {:.1} ms, p99 {:.1} ms",
        ms(f.p50),
        ms(f.p99)
    );
    Ok(())
}

/// Waits until `streams` streams have received round `round`; each one's latency from
/// `since`, in microseconds.
async fn wait_round(
    rx: &mut mpsc::UnboundedReceiver<(u32, Instant)>,
    round: u32,
    streams: usize,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<Vec<u64>> {
    let mut arrivals = Vec::with_capacity(streams);
    let deadline = tokio::time::Instant::now() + timeout;
    while arrivals.len() < streams {
        let next = tokio::time::timeout_at(deadline, rx.recv()).await;
        let (got, at) = match next {
            Ok(Some(message)) => message,
            Ok(None) => anyhow::bail!("every stream ended"),
            Err(_) => anyhow::bail!(
                "only {} of {streams} streams received the change within {timeout:?}",
                arrivals.len()
            ),
        };
        if got == round {
            arrivals.push(at.saturating_duration_since(since).as_micros() as u64);
        }
    }
    Ok(arrivals)
}
