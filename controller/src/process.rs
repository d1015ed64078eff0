//! Process gauges (`process_*`, `controller_build_info`), read from `/proc/self` at
//! scrape time so that they cost nothing between scrapes, by the one `/proc` reader
//! every mesh binary shares (`mesh_rt::proc`).

use std::{sync::OnceLock, time::SystemTime};

/// When the process started, fixed at the first call (made at start-up by `run`).
pub(crate) fn start_time() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

pub(crate) fn render(out: &mut String) {
    mesh_rt::proc::write_metrics(out, start_time(), "controller", env!("CARGO_PKG_VERSION"));
}
