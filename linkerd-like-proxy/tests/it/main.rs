//! The proxy's integration tests, one test binary for all of them (one link of the
//! proxy and its dependencies instead of one per file): each module is what was a
//! file of its own under `tests/`, and `support` is what they share.

mod discovery;
mod identity;
mod injected;
mod mtls;
mod policy;
mod process;
mod profiles;
mod proxy;
mod support;
mod tap;
