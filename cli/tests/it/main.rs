//! The CLI's integration tests, one test binary for all of them (one link of `mesh` and
//! its dependencies instead of one per file): each module is what was a file of its
//! own under `tests/`.

mod authz;
mod browser;
mod check;
mod cluster;
mod dashboard;
mod dashboard_namespace;
mod dashboard_page;
mod dashboard_soak;
mod dashboard_tap;
mod dashboard_workload;
mod demo;
mod images;
mod inject;
mod install;
mod install_doc;
mod metrics_api;
mod policy;
mod profile;
mod top;
