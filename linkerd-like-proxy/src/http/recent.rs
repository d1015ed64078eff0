//! A connection's few most recent lookups in a registry that all connections share
//! (metric series, pool entries).
//!
//! A connection mostly talks to a few targets, so most of its requests find their
//! entry here, under the connection's own lock, instead of under the registry's
//! global lock and its SipHash of the key.

use std::sync::{Mutex, PoisonError};

/// How many entries a connection remembers.
const RECENT: usize = 4;

pub(crate) struct Recent<K, V>(Mutex<Vec<(K, V)>>);

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Self(Mutex::new(Vec::new()))
    }
}

impl<K, V: Clone> Recent<K, V> {
    /// The entry whose key `is` the one wanted, else the one `lookup` finds in the
    /// registry, which is remembered in place of the least recently used.
    pub(crate) fn get(&self, is: impl Fn(&K) -> bool, lookup: impl FnOnce() -> (K, V)) -> V {
        let mut recent = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = recent.iter().position(|(k, _)| is(k)) {
            // Most recently used last.
            recent[i..].rotate_left(1);
            return recent[recent.len() - 1].1.clone();
        }
        let (k, v) = lookup();
        if recent.len() == RECENT {
            recent.remove(0);
        }
        recent.push((k, v.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_few_and_looks_up_the_rest() {
        let recent = Recent::<u32, String>::default();
        let lookups = std::cell::Cell::new(0);
        let get = |k: u32| {
            recent.get(
                |c| *c == k,
                || {
                    lookups.set(lookups.get() + 1);
                    (k, format!("v{k}"))
                },
            )
        };
        for k in [1, 2, 1, 3, 4, 1] {
            assert_eq!(get(k), format!("v{k}"));
        }
        assert_eq!(lookups.get(), 4, "1 was remembered, 2, 3 and 4 were new");
        // A fifth key pushes out the least recently used (2), not the others.
        assert_eq!(get(5), "v5");
        assert_eq!(get(1), "v1");
        assert_eq!(lookups.get(), 5);
        assert_eq!(get(2), "v2");
        assert_eq!(lookups.get(), 6);
    }
}
