//! `mesh-rt`: what every mesh binary (`mesh-proxy`, `mesh-controller`, `mesh`) does the
//! same way around its main loop.
//!
//! Things that each binary would otherwise get subtly wrong on its own:
//! - [`log`]: logging to stderr that never blocks a thread and never fails the
//!   process, whatever stderr is (a terminal, a full pipe, a closed one);
//! - [`parent`]: a child started by a supervisor (`mesh demo`) dies with it, however
//!   the supervisor dies, SIGKILL included;
//! - [`proc`]: the one reader of `/proc`, for the binaries' `process_*` metrics and
//!   for the tests and benchmarks that watch processes.
//!
//! The crate has no async code and no knowledge of the mesh itself, so that the proxy
//! can link it without paying for more than these few functions.

pub mod log;
pub mod parent;
pub mod proc;
