//! What a coordinator needs from its shard's storage, as a trait: the RocksDB implementation
//! lives in the server package, so this crate builds and tests without RocksDB's C++.
//!
//! Writes are submitted, not awaited in line: a coordinator hands its batch over and goes on
//! with its next message, and whatever must wait for durability (an API acknowledgement, a
//! launch) waits on the returned [`Durable`] in a task of its own. A store writes its batches
//! in submission order and may group several into one synced write (group commit).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use dron_model::instance::{HistoryEntry, InstanceRecord};
use dron_model::job::JobRecord;
use tokio::sync::oneshot;

/// One change to a shard. A `Vec<StoreOp>` is applied atomically.
#[derive(Debug, Clone)]
pub enum StoreOp {
    PutJob(JobRecord),
    DeleteJob(String),
    PutInstance(InstanceRecord),
    /// By instance id.
    DeleteInstance(String),
    AppendHistory(HistoryEntry),
    /// Keeps only the newest `keep` history entries of `job`.
    TrimHistory {
        job: String,
        keep: usize,
    },
    DeleteHistory {
        job: String,
    },
}

/// Everything a coordinator rebuilds its memory from.
#[derive(Debug, Default, Clone)]
pub struct ShardSnapshot {
    pub jobs: Vec<JobRecord>,
    /// Live (not final) instances.
    pub instances: Vec<InstanceRecord>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("shard storage failed: {0}")]
pub struct StoreError(pub String);

/// Resolves once a submitted batch is durable (synced to the write-ahead log), or failed.
pub type Durable = oneshot::Receiver<Result<(), StoreError>>;

pub trait ShardStore: Send + Sync + 'static {
    /// Queues an atomic batch; see the module docs.
    fn submit(&self, ops: Vec<StoreOp>) -> Durable;
    /// Reads the shard, after every batch submitted before the call has been applied.
    fn load(&self) -> Result<ShardSnapshot, StoreError>;
    /// The newest `limit` history entries of `job`, newest first.
    fn history(&self, job: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError>;
}

/// A store in memory, for unit tests of actor logic.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryShard>,
}

#[derive(Default)]
struct MemoryShard {
    jobs: BTreeMap<String, JobRecord>,
    instances: BTreeMap<String, InstanceRecord>,
    history: HashMap<String, BTreeMap<i64, HistoryEntry>>,
}

impl ShardStore for MemoryStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Durable {
        let mut shard = self.inner.lock().expect("memory store lock");
        for op in ops {
            shard.apply(op);
        }
        let (done, durable) = oneshot::channel();
        let _ = done.send(Ok(()));
        durable
    }

    fn load(&self) -> Result<ShardSnapshot, StoreError> {
        let shard = self.inner.lock().expect("memory store lock");
        Ok(ShardSnapshot {
            jobs: shard.jobs.values().cloned().collect(),
            instances: shard.instances.values().cloned().collect(),
        })
    }

    fn history(&self, job: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let shard = self.inner.lock().expect("memory store lock");
        let entries = shard
            .history
            .get(job)
            .into_iter()
            .flat_map(|h| h.values().rev());
        Ok(entries.take(limit).cloned().collect())
    }
}

impl MemoryShard {
    fn apply(&mut self, op: StoreOp) {
        match op {
            StoreOp::PutJob(job) => {
                self.jobs.insert(job.spec.name.clone(), job);
            }
            StoreOp::DeleteJob(name) => {
                self.jobs.remove(&name);
            }
            StoreOp::PutInstance(instance) => {
                self.instances.insert(instance.id(), instance);
            }
            StoreOp::DeleteInstance(id) => {
                self.instances.remove(&id);
            }
            StoreOp::AppendHistory(entry) => {
                let job = self.history.entry(entry.job().to_string()).or_default();
                job.insert(entry.target_ms(), entry);
            }
            StoreOp::TrimHistory { job, keep } => {
                if let Some(entries) = self.history.get_mut(&job) {
                    while entries.len() > keep {
                        entries.pop_first();
                    }
                }
            }
            StoreOp::DeleteHistory { job } => {
                self.history.remove(&job);
            }
        }
    }
}
