//! The controller's integration tests, one test binary for all of them (one link of the
//! controller and its dependencies instead of one per file): each module is what was a
//! file of its own under `tests/`.

mod destination;
mod identity;
mod metrics_api;
mod process;
mod tap;
mod webhook;
