//! Which shards hold children of which parent, shared by the coordinators (which keep it
//! current as jobs come and go) and the router (which reads it).
//!
//! Without it the router hands every successful run's `ParentSucceeded` to every shard: with
//! eight shards that is eight coordinator messages and eight empty commits per run, most of
//! the scheduler's work per run under load when few jobs have parents (the usual case: the
//! built-in saturate profile). With it a success reaches only the shards that hold one of its
//! children, and none when it has none.

use std::collections::HashMap;
use std::sync::RwLock;

/// parent name → shard → how many of its children that shard holds.
#[derive(Debug, Default)]
pub struct ParentIndex {
    children: RwLock<HashMap<String, HashMap<u32, usize>>>,
}

impl ParentIndex {
    /// A job naming `parent` now lives on `shard`.
    pub fn add(&self, shard: u32, parent: &str) {
        let mut children = self.children.write().expect("parent index lock");
        *children
            .entry(parent.to_string())
            .or_default()
            .entry(shard)
            .or_default() += 1;
    }

    /// A job naming `parent` left `shard` (deleted, replaced or moved away).
    pub fn remove(&self, shard: u32, parent: &str) {
        let mut children = self.children.write().expect("parent index lock");
        let Some(shards) = children.get_mut(parent) else {
            return;
        };
        if let Some(count) = shards.get_mut(&shard) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shards.remove(&shard);
            }
        }
        if shards.is_empty() {
            children.remove(parent);
        }
    }

    /// Forgets what `shard` held: it is being rebuilt from storage, which adds its jobs again.
    pub fn reset(&self, shard: u32) {
        let mut children = self.children.write().expect("parent index lock");
        children.retain(|_, shards| {
            shards.remove(&shard);
            !shards.is_empty()
        });
    }

    /// The shards holding at least one child of `parent`.
    pub fn shards_with_children_of(&self, parent: &str) -> Vec<u32> {
        let children = self.children.read().expect("parent index lock");
        children
            .get(parent)
            .map(|shards| shards.keys().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_children_per_shard_and_forgets_a_rebuilt_shard() {
        let index = ParentIndex::default();
        assert!(index.shards_with_children_of("a").is_empty());
        index.add(0, "a");
        index.add(0, "a");
        index.add(3, "a");
        let mut shards = index.shards_with_children_of("a");
        shards.sort();
        assert_eq!(shards, [0, 3]);
        index.remove(0, "a");
        assert_eq!(index.shards_with_children_of("a").len(), 2);
        index.remove(0, "a");
        assert_eq!(index.shards_with_children_of("a"), [3]);
        index.reset(3);
        assert!(index.shards_with_children_of("a").is_empty());
        // Removing what is not there changes nothing.
        index.remove(5, "b");
        assert!(index.shards_with_children_of("b").is_empty());
    }
}
