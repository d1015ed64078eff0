//! Giving freed memory back to the system.
//!
//! glibc's malloc keeps what the proxy frees: after a burst of connections or
//! requests, the freed chunks stay resident, so a proxy that once held 1,000
//! connections kept their ~35 MB for the rest of its life. `malloc_trim(0)` returns
//! every whole free page, anywhere in the heap (glibc ≥ 2.8 `madvise`s the free
//! chunks, not only the top), while live allocations stay where they are.
//!
//! The housekeeping loop calls [`release_free_memory`] every [`RELEASE_PERIOD`]: with
//! the proxy's small heap the walk costs microseconds, and memory freed by a burst is
//! returned within two seconds of its end.
//!
//! This is the crate's only `unsafe`: one call that takes no pointers and has no
//! preconditions (the function is thread-safe and serialized with every other
//! allocator call by glibc itself).

/// How often the housekeeping loop returns free memory.
pub const RELEASE_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks the allocator to return free memory to the system; whether any was returned.
/// A no-op (false) where the C library is not glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and has no preconditions; it is MT-safe.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Asks the allocator to return free memory to the system; whether any was returned.
/// A no-op (false) where the C library is not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kb() -> u64 {
        let status = mesh_rt::proc::status(mesh_rt::proc::Pid::This).expect("/proc/self/status");
        assert!(status.rss_anon_bytes > 0, "RssAnon in /proc/self/status");
        status.rss_anon_bytes / 1024
    }

    /// Freed memory pinned below a live allocation is resident until trimmed, and
    /// returned after.
    #[test]
    fn returns_memory_freed_below_live_allocations() {
        // 32 MiB in 16 KiB blocks (below glibc's mmap threshold, so on the heap),
        // every page written.
        let mut blocks: Vec<Vec<u8>> = (0..2048).map(|_| vec![1u8; 16 * 1024]).collect();
        // Keep the last block (and a few in between) so the heap cannot simply
        // shrink from the top; free the rest.
        let kept: Vec<Vec<u8>> = blocks
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| i % 256 == 255)
            .map(|(_, b)| std::mem::take(b))
            .collect();
        drop(blocks);
        let before = rss_anon_kb();
        assert!(release_free_memory(), "something was returned");
        let after = rss_anon_kb();
        assert!(
            before > after + 16 * 1024,
            "at least 16 MiB returned: {before} kB before, {after} kB after"
        );
        assert!(kept.iter().all(|b| b.len() == 16 * 1024 && b[0] == 1));
    }
}
