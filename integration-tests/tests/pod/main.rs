//! The pod-level tests: mesh in network namespaces standing in for pods, with
//! `mesh-proxy init`'s iptables rules, so they need root. Each module is what was a file
//! of its own under `tests/`.
//!
//! This binary has its own harness (`harness = false`, `libtest-mimic`) for one reason:
//! a test that cannot run here must say so in the runner's own count, not pass. libtest
//! decides `#[ignore]` when the test is compiled; here each test is marked ignored at run
//! time when the process is not root, so `cargo test` counts it as "ignored" and nextest
//! (which asks the binary for its ignored tests when it lists them) as "skipped", and
//! `scripts/test.sh` can fail a CI run that skipped them. The arguments and output are
//! libtest's, so filters, `--list`, `--ignored` and nextest work as for any test binary.
//! The tests need no more of a harness than that: plain functions returning
//! `anyhow::Result`, whose error (with its context chain) or panic fails the test.

mod pod;
mod pod_discovery;
mod pod_mtls;
mod pod_policy;

use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};
use mesh_integration_tests::is_root;

/// A pod test: a failure is its error.
type Test = fn() -> anyhow::Result<()>;

/// Every pod test, by the name the runners show and filter on (`module::function`).
const TESTS: &[(&str, Test)] = &[
    (
        "pod::proxies_are_transparent_and_count_everything",
        pod::proxies_are_transparent_and_count_everything,
    ),
    (
        "pod_discovery::cluster_ips_resolve_through_the_controller",
        pod_discovery::cluster_ips_resolve_through_the_controller,
    ),
    (
        "pod_mtls::meshed_http_is_mutual_tls_and_unreadable_on_the_wire",
        pod_mtls::meshed_http_is_mutual_tls_and_unreadable_on_the_wire,
    ),
    (
        "pod_mtls::client_proxy_refuses_a_server_with_another_identity",
        pod_mtls::client_proxy_refuses_a_server_with_another_identity,
    ),
    (
        "pod_mtls::server_proxy_refuses_expired_foreign_and_claimed_clients",
        pod_mtls::server_proxy_refuses_expired_foreign_and_claimed_clients,
    ),
    (
        "pod_mtls::certificate_rotation_under_load_drops_no_request",
        pod_mtls::certificate_rotation_under_load_drops_no_request,
    ),
    (
        "pod_policy::an_authorized_identity_passes_and_another_is_denied",
        pod_policy::an_authorized_identity_passes_and_another_is_denied,
    ),
    (
        "pod_policy::plaintext_is_refused_under_all_authenticated",
        pod_policy::plaintext_is_refused_under_all_authenticated,
    ),
    (
        "pod_policy::audit_lets_denied_requests_pass_and_counts_them",
        pod_policy::audit_lets_denied_requests_pass_and_counts_them,
    ),
    (
        "pod_policy::a_policy_change_applies_to_new_requests_and_closes_revoked_connections",
        pod_policy::a_policy_change_applies_to_new_requests_and_closes_revoked_connections,
    ),
    (
        "pod_policy::without_the_controller_the_last_policy_holds_and_new_proxies_use_the_default",
        pod_policy::without_the_controller_the_last_policy_holds_and_new_proxies_use_the_default,
    ),
    (
        "pod_policy::a_malformed_policy_is_rejected_by_field_and_the_last_valid_one_stays",
        pod_policy::a_malformed_policy_is_rejected_by_field_and_the_last_valid_one_stays,
    ),
];

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let skip = !is_root();
    if skip && !args.list {
        eprintln!(
            "pod tests ignored: they need root (network namespaces, iptables) and this \
             process is not root"
        );
    }
    let trials = TESTS
        .iter()
        .map(|&(name, test)| {
            Trial::test(name, move || {
                // `{:?}` of an anyhow error prints its whole context chain.
                test().map_err(|e| Failed::from(format!("{e:?}")))
            })
            .with_ignored_flag(skip)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
