//! The benchmarks' tests, one test binary (one link) for all of them.

mod discovery_bench;
mod metrics_bench;
mod policy_bench;
