//! What mesh's two end-to-end benchmarks share: `mesh-bench` (the proxy pair against a
//! direct connection, `src/bin/mesh-bench/`) and `mesh-discovery-bench` (the controller
//! at scale, propagation and balancing, `src/bin/mesh-discovery-bench/`).
//!
//! - [`sys`]: /proc samples of processes and of the machine, measured windows
//!   ([`sys::Meter`]), waiting for a quiet machine, and what a report says of the
//!   machine and the code;
//! - [`stats`]: latency histograms and their percentiles;
//! - [`net`]: accepting connections, HTTP/1 client connections and responses, runtimes,
//!   signals;
//! - [`report`]: units, and writing a report with its raw numbers.
// This measures real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

pub mod net;
pub mod report;
pub mod stats;
pub mod sys;
