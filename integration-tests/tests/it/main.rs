//! Process-level tests of mesh that need no root, one test binary for all of them (one
//! link instead of one per file): each module is what was a file of its own under
//! `tests/`. The pod-level tests, which need root, are the other binary (`tests/pod/`).

mod api_faults;
mod discovery;
mod policy;
mod process;
mod profiles;
