//! Process gauges (`process_*`, `proxy_build_info`), read from `/proc` at scrape time
//! so that they cost nothing between scrapes, by the one `/proc` reader every mesh
//! binary shares (`mesh_rt::proc`).

use std::time::SystemTime;

pub(super) struct Process {
    start: SystemTime,
}

impl Default for Process {
    fn default() -> Self {
        Self {
            start: SystemTime::now(),
        }
    }
}

impl Process {
    pub(super) fn encode(&self, out: &mut String) {
        mesh_rt::proc::write_metrics(out, self.start, "proxy", env!("CARGO_PKG_VERSION"));
    }
}
