//! The consistent-hash ring that places a job on a shard.
//!
//! Each shard owns [`VIRTUAL_NODES`] points on a 64-bit ring; a job belongs to the shard of the
//! first point at or after the hash of its name. The hash is XXH3-64 with a fixed seed: its
//! output is fixed by its specification, so a new compiler or std release never moves a job
//! (std's `DefaultHasher` makes no such promise). A shard's points depend only on its own
//! index, so growing from N to N+1 shards moves only the jobs the new shard takes, and
//! shrinking moves only the jobs of the removed shards.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Points per shard: enough to keep shards within a few per cent of each other.
pub const VIRTUAL_NODES: u32 = 256;

/// Pinned seed. Changing it moves every job: never do.
const SEED: u64 = 0x64_72_6f_6e; // "dron"

#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, shard), sorted by point.
    points: Vec<(u64, u32)>,
    shard_count: u32,
}

impl Ring {
    /// A ring of `shard_count` shards, numbered `0..shard_count`. Panics on zero, which callers
    /// validate away (config and API refuse it).
    pub fn new(shard_count: u32) -> Ring {
        assert!(shard_count > 0, "a ring needs at least one shard");
        let mut points: Vec<(u64, u32)> = (0..shard_count)
            .flat_map(|shard| (0..VIRTUAL_NODES).map(move |v| (point_of(shard, v), shard)))
            .collect();
        points.sort_unstable();
        Ring {
            points,
            shard_count,
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The shard that owns the job called `name`.
    pub fn owner(&self, name: &str) -> u32 {
        let hash = hash_key(name);
        let index = self.points.partition_point(|(point, _)| *point < hash);
        // Past the last point the ring wraps around to the first.
        self.points.get(index).unwrap_or(&self.points[0]).1
    }
}

fn hash_key(name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), SEED)
}

fn point_of(shard: u32, virtual_node: u32) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&shard.to_be_bytes());
    bytes[4..].copy_from_slice(&virtual_node.to_be_bytes());
    xxh3_64_with_seed(&bytes, SEED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("job-{i}")).collect()
    }

    #[test]
    fn placement_is_pinned() {
        // If this fails, the hash or the ring changed and every stored job would move shard.
        let ring = Ring::new(8);
        let placed: Vec<u32> = ["a", "daily_users", "export.orders", "job-42"]
            .iter()
            .map(|n| ring.owner(n))
            .collect();
        assert_eq!(placed, PINNED_PLACEMENT);
    }
    const PINNED_PLACEMENT: [u32; 4] = [7, 2, 4, 3];

    #[test]
    fn shards_are_balanced() {
        let ring = Ring::new(8);
        let mut counts = [0u32; 8];
        for name in names(80_000) {
            counts[ring.owner(&name) as usize] += 1;
        }
        for count in counts {
            assert!((8_000..12_000).contains(&count), "unbalanced: {counts:?}");
        }
    }

    proptest! {
        #[test]
        fn growing_moves_only_to_the_new_shard(shards in 1u32..16) {
            let before = Ring::new(shards);
            let after = Ring::new(shards + 1);
            let mut moved = 0;
            for name in names(2_000) {
                let (from, to) = (before.owner(&name), after.owner(&name));
                if from != to {
                    prop_assert_eq!(to, shards);
                    moved += 1;
                }
            }
            // Roughly 1/(N+1) of the jobs move; never most of them.
            prop_assert!(moved < 2_000 * 2 / (shards as usize + 1) + 100);
        }
    }
}
