//! How long the policy index takes to bring a policy change to every subscribed port:
//! 1,000 pods in one namespace, each watching port 8080, all selected by one Server;
//! one AuthorizationPolicy applied (and then deleted), timed from the call until every
//! subscription holds the new policy (`apply` updates them before it returns; each
//! receiver is checked).
//!
//! ```text
//! cargo run --release -p mesh-core --example policy_index [PODS] [ROUNDS]
//! ```

// A measurement, printed for whoever runs it.
#![allow(clippy::print_stdout)]

use mesh_core::policy::{
    index::{Config, Index, Pod},
    parse_yaml, Kind,
};
use std::collections::BTreeMap;
use tokio::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut index = Index::new(Config::default());
    let doc =
        |yaml: &str| parse_yaml(&format!("apiVersion: policy.mesh.rs/v1alpha1\n{yaml}")).unwrap();
    index.apply(
        "bench",
        doc("kind: Server\nmetadata: {name: web}\nspec: {podSelector: {matchLabels: {app: web}}, port: 8080}\n"),
    );
    index.apply(
        "bench",
        doc("kind: MeshTLSAuthentication\nmetadata: {name: clients}\nspec: {identities: ['*.bench.serviceaccount.identity.mesh.cluster.local']}\n"),
    );
    let mut receivers = Vec::with_capacity(pods);
    for i in 0..pods {
        index.apply_pod(Pod {
            namespace: "bench".into(),
            name: format!("web-{i}"),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            ..Pod::default()
        });
        receivers.push(index.watch("bench", &format!("web-{i}"), 8080).unwrap());
    }
    let policy = doc("kind: AuthorizationPolicy\nmetadata: {name: allow}\nspec:\n  targetRef: {group: policy.mesh.rs, kind: Server, name: web}\n  requiredAuthenticationRefs: [{group: policy.mesh.rs, kind: MeshTLSAuthentication, name: clients}]\n");
    let mut samples = Vec::with_capacity(rounds * 2);
    for _ in 0..rounds {
        for apply in [true, false] {
            for rx in &mut receivers {
                rx.borrow_and_update();
            }
            let start = Instant::now();
            match apply {
                true => index.apply("bench", policy.clone()),
                false => index.delete("bench", Kind::AuthorizationPolicy, "allow"),
            }
            let all = receivers.iter_mut().all(|rx| {
                rx.has_changed().unwrap_or(false)
                    && rx.borrow_and_update().authorizations.len() == usize::from(apply)
            });
            samples.push(start.elapsed());
            assert!(all, "every subscription got the change");
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "policy change to {pods} subscribed pods, {} changes: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(0.5),
        pct(0.99),
        samples[samples.len() - 1]
    );
}
