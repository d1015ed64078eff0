//! Dying with the parent.
//!
//! A process that a supervisor started (the proxies and the controller `mesh demo`
//! runs) must not outlive it: a supervisor killed with SIGKILL, or whose terminal
//! closed, runs no cleanup, and its children would go on under PID 1 holding their
//! ports. [`exit_with_parent`] asks the kernel to send this process SIGKILL when its
//! parent dies (Linux's parent-death signal), then checks that the parent is still
//! the one expected: had it died between `fork` and the `prctl`, the signal would
//! never come, and the check catches that.
//!
//! The kernel ties the signal to the parent *thread* that forked the child, not to
//! the whole parent process: a supervisor must spawn its children from a thread that
//! lives as long as it does (its main thread).

use nix::{sys::signal::Signal, unistd::Pid};

/// The parent is not the process that was expected: it has already exited, and this
/// process was adopted by another.
#[derive(Debug)]
pub struct ParentGone {
    pub expected: u32,
    pub actual: u32,
}

impl std::fmt::Display for ParentGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "parent process {} has already exited (the parent is now {})",
            self.expected, self.actual
        )
    }
}

impl std::error::Error for ParentGone {}

/// Arranges for this process to be killed when its parent, `expected`, exits.
///
/// Fails with [`ParentGone`] if the parent is not `expected` (it already exited), or
/// if the kernel refuses the request (not Linux): either way the caller should exit
/// rather than run unsupervised.
pub fn exit_with_parent(expected: u32) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("cannot ask to be killed with the parent (prctl): {e}"))?;
    // Checked after the request, not before: a parent that dies after this line is
    // covered by the signal, one that died before it is seen here.
    let actual = nix::unistd::getppid();
    if actual != Pid::from_raw(expected as i32) {
        return Err(Box::new(ParentGone {
            expected,
            actual: actual.as_raw() as u32,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_parent_is_refused() {
        // Whatever runs the tests, it is not PID 1's child... unless it is: then any
        // other pid is still not our parent.
        let parent = nix::unistd::getppid().as_raw() as u32;
        let wrong = if parent == 1 { 2 } else { 1 };
        let err = exit_with_parent(wrong).expect_err("not our parent");
        assert!(err.to_string().contains("has already exited"), "{err}");
        // Undo the request, so that the test runner's death does not kill this
        // process's later tests in odd ways.
        nix::sys::prctl::set_pdeathsig(None).expect("clear the parent-death signal");
    }

    #[test]
    fn the_real_parent_is_accepted() {
        let parent = nix::unistd::getppid().as_raw() as u32;
        exit_with_parent(parent).expect("the parent is the parent");
        assert_eq!(
            nix::sys::prctl::get_pdeathsig().expect("read it back"),
            Some(Signal::SIGKILL)
        );
        nix::sys::prctl::set_pdeathsig(None).expect("clear the parent-death signal");
    }
}
