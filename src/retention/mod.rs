//! Retention: what dron deletes so that a server that runs for a year keeps a bounded disk.
//!
//! - [`pruner`]: on the scheduling server (a single server, or a cluster's leader), a task that
//!   prunes old history, satisfied resources and notices, in small batches, through the
//!   stores' ordinary write path: in a cluster its deletions are entries of the Raft log, decided
//!   by the leader (the cut-off time is in their bytes) and applied alike by every server.
//!   It also deletes the local agent's old run directories.
//! - [`run_dirs`]: which run directories go (the server's and each remote agent's, each on
//!   its own machine), and the disk they use.
//! - [`usage`]: the disk used by run directories and each store, for `/metrics`.

pub mod pruner;
pub mod run_dirs;
pub mod usage;

use std::sync::Arc;

use dron_actors::store::{ResourceStore, ShardStore};
use rocksdb::DB;

pub use pruner::{GcReport, Retention};

/// The `[retention]` settings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A run goes once it is older than `max_age_ms` and not among its job's newest `keep_runs`.
    pub keep_runs: usize,
    pub max_age_ms: i64,
    /// After the resource's logical time.
    pub resources_max_age_ms: i64,
    pub notices_max_age_ms: i64,
    /// Between the starts of two passes.
    pub interval_ms: i64,
}

/// The cut-off times of one pass: what is older goes.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub runs_before_ms: i64,
    pub resources_before_ms: i64,
    pub notices_before_ms: i64,
}

impl Policy {
    pub fn cutoffs(&self, now_ms: i64) -> Cutoffs {
        Cutoffs {
            runs_before_ms: now_ms - self.max_age_ms,
            resources_before_ms: now_ms - self.resources_max_age_ms,
            notices_before_ms: now_ms - self.notices_max_age_ms,
        }
    }
}

/// One shard as the pruner sees it: the store its coordinator writes through (so the
/// pruner's batches are ordered with the coordinator's, and replicated in a cluster), and the
/// database it reads, as applied here.
pub struct PrunedShard {
    pub index: u32,
    pub store: Arc<dyn ShardStore>,
    pub db: Arc<DB>,
}

/// What the pruner reads and writes: a single server's own stores, or a cluster leader's
/// replicated ones.
pub trait PruneStores: Send + Sync + 'static {
    /// The shards open now.
    fn shard_indexes(&self) -> Vec<u32>;
    /// One of them, if it is still open. The pruner holds it only for a batch: a shard being
    /// reopened (its coordinator restarted) needs its database released.
    fn shard(&self, index: u32) -> Option<PrunedShard>;
    /// The resource store, and its database as applied here.
    fn resources(&self) -> (Arc<dyn ResourceStore>, Arc<DB>);
}
