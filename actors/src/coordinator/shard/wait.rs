//! The wait index: live instances waiting for resources, by resource and by instance, and
//! their wait deadlines.
//!
//! Invariants, kept by every method here (the fields are private to this file):
//! - `by_resource[r]` holds `id` exactly when `by_instance[id].missing` holds `r`, and holds
//!   no empty set;
//! - `expiries` holds `(deadline, id)` exactly when `by_instance[id]` has that deadline.

use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Default)]
pub(super) struct WaitIndex {
    /// resource → the instances waiting for it...
    by_resource: HashMap<String, HashSet<String>>,
    /// ...and instance → what it still misses, and until when it may wait.
    by_instance: HashMap<String, Wait>,
    /// (wait deadline, instance id) of waiting instances.
    expiries: BTreeSet<(i64, String)>,
}

/// What a waiting instance still misses, and until when it may wait.
struct Wait {
    deadline_ms: i64,
    missing: BTreeSet<String>,
}

impl WaitIndex {
    /// Makes instance `id` wait for `missing` (not empty) until `deadline_ms`.
    pub(super) fn wait(&mut self, id: &str, missing: BTreeSet<String>, deadline_ms: i64) {
        debug_assert!(!missing.is_empty(), "{id} waits for nothing");
        for resource in &missing {
            let waiters = self.by_resource.entry(resource.clone()).or_default();
            waiters.insert(id.to_string());
        }
        self.expiries.insert((deadline_ms, id.to_string()));
        let wait = Wait {
            deadline_ms,
            missing,
        };
        self.by_instance.insert(id.to_string(), wait);
    }

    /// Takes an instance out of the index; answers what it still missed (None: it did not
    /// wait).
    pub(super) fn stop(&mut self, id: &str) -> Option<BTreeSet<String>> {
        let wait = self.by_instance.remove(id)?;
        for resource in &wait.missing {
            if let Some(waiters) = self.by_resource.get_mut(resource) {
                waiters.remove(id);
                if waiters.is_empty() {
                    self.by_resource.remove(resource);
                }
            }
        }
        self.expiries.remove(&(wait.deadline_ms, id.to_string()));
        Some(wait.missing)
    }

    /// `resource` is ready: answers the instances it was the last missing resource of, which
    /// leave the index; the others miss one resource less.
    pub(super) fn satisfy(&mut self, resource: &str) -> Vec<String> {
        let mut ready = Vec::new();
        for id in self.by_resource.remove(resource).unwrap_or_default() {
            let Some(wait) = self.by_instance.get_mut(&id) else {
                continue;
            };
            wait.missing.remove(resource);
            if wait.missing.is_empty() {
                self.stop(&id);
                ready.push(id);
            }
        }
        ready
    }

    /// What a waiting instance still misses.
    pub(super) fn missing(&self, id: &str) -> Option<&BTreeSet<String>> {
        self.by_instance.get(id).map(|wait| &wait.missing)
    }

    /// The instances waiting for `resource`.
    pub(super) fn waiters(&self, resource: &str) -> impl Iterator<Item = &String> {
        self.by_resource.get(resource).into_iter().flatten()
    }

    /// An instance whose wait ran out by `now_ms`, taken out of the index, with what it
    /// still missed.
    pub(super) fn pop_expired(&mut self, now_ms: i64) -> Option<(String, BTreeSet<String>)> {
        let (at, id) = self.expiries.first()?;
        if *at > now_ms {
            return None;
        }
        let id = id.clone();
        let missing = self.stop(&id).unwrap_or_default();
        Some((id, missing))
    }

    pub(super) fn next_expiry_ms(&self) -> Option<i64> {
        self.expiries.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(resources: &[&str]) -> BTreeSet<String> {
        resources.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn an_instance_leaves_the_index_with_its_last_missing_resource() {
        let mut waits = WaitIndex::default();
        waits.wait("i1", set(&["a", "b"]), 100);
        waits.wait("i2", set(&["a"]), 50);
        let mut ready = waits.satisfy("a");
        ready.sort();
        assert_eq!(ready, ["i2"]);
        assert_eq!(waits.missing("i1"), Some(&set(&["b"])));
        assert_eq!(waits.waiters("a").count(), 0);
        assert_eq!(
            waits.next_expiry_ms(),
            Some(100),
            "i2's deadline went with it"
        );
        assert_eq!(waits.satisfy("b"), ["i1"]);
        assert_eq!(waits.next_expiry_ms(), None);
    }

    #[test]
    fn only_due_waits_expire_and_stopping_clears_every_index() {
        let mut waits = WaitIndex::default();
        waits.wait("i1", set(&["a"]), 100);
        waits.wait("i2", set(&["a", "b"]), 200);
        assert_eq!(waits.pop_expired(99), None);
        assert_eq!(waits.pop_expired(100), Some(("i1".into(), set(&["a"]))));
        assert_eq!(waits.waiters("a").collect::<Vec<_>>(), ["i2"]);
        assert_eq!(waits.stop("i2"), Some(set(&["a", "b"])));
        assert_eq!(waits.waiters("a").count() + waits.waiters("b").count(), 0);
        assert_eq!(waits.next_expiry_ms(), None);
        assert_eq!(waits.stop("i2"), None);
    }
}
