//! Stores in memory, for tests of actor logic without RocksDB; built for this crate's tests
//! and, with the `testsuite` feature, for other crates' (never in release builds).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use dron_model::backfill::BackfillEntry;
use dron_model::instance::{HistoryEntry, InstanceRecord};
use dron_model::job::JobRecord;
use dron_model::notice::{Notice, NoticeRecord};
use dron_model::resource::{PendingEvent, ResourceEvent, ResourceRecord};
use tokio::sync::oneshot;

use super::{
    Durable, NoticeOp, NoticeStore, ResourceOp, ResourceStore, ShardSnapshot, ShardStore,
    StoreError, StoreOp,
};

/// A notice store in memory, for unit tests.
#[derive(Default)]
pub struct MemoryNoticeStore {
    inner: Mutex<BTreeMap<String, NoticeRecord>>,
}

impl NoticeStore for MemoryNoticeStore {
    fn submit(&self, ops: Vec<NoticeOp>) -> Durable {
        let mut inner = self.inner.lock().expect("memory store lock");
        for op in ops {
            match op {
                NoticeOp::Put(record) => {
                    inner.insert(record.notice.key(), record);
                }
                NoticeOp::Delete(key) => {
                    inner.remove(&key);
                }
            }
        }
        let (done, durable) = oneshot::channel();
        let _ = done.send(Ok(()));
        durable
    }

    fn load(&self) -> Result<Vec<NoticeRecord>, StoreError> {
        let inner = self.inner.lock().expect("memory store lock");
        Ok(inner.values().cloned().collect())
    }
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
    announcements: BTreeMap<String, ResourceEvent>,
    notices: BTreeMap<String, Notice>,
    backfills: BTreeMap<Vec<u8>, BackfillEntry>,
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
            announcements: shard.announcements.values().cloned().collect(),
            notices: shard.notices.values().cloned().collect(),
            backfills: shard.backfills.values().cloned().collect(),
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
            StoreOp::PruneHistory {
                job,
                keep,
                before_ms,
            } => {
                if let Some(entries) = self.history.get_mut(&job) {
                    let prunable = entries.len().saturating_sub(keep);
                    let old: Vec<i64> = entries.range(..before_ms).map(|(t, _)| *t).collect();
                    for target in old.into_iter().take(prunable) {
                        entries.remove(&target);
                    }
                }
            }
            StoreOp::PutAnnouncement(event) => {
                self.announcements.insert(event.key(), event);
            }
            StoreOp::DeleteAnnouncement(key) => {
                self.announcements.remove(&key);
            }
            StoreOp::PutNotice(notice) => {
                self.notices.insert(notice.key(), notice);
            }
            StoreOp::DeleteNotice(key) => {
                self.notices.remove(&key);
            }
            StoreOp::PutBackfill(entry) => {
                self.backfills.insert(super::backfill_key(&entry), entry);
            }
            StoreOp::DeleteBackfills { job, id } => {
                let (from, to) = super::backfill_range(&job, id.as_deref());
                self.backfills.retain(|key, _| *key < from || *key >= to);
            }
        }
    }
}

/// A resource store in memory, for unit tests.
#[derive(Default)]
pub struct MemoryResourceStore {
    inner: Mutex<(
        BTreeMap<String, ResourceRecord>,
        BTreeMap<String, PendingEvent>,
    )>,
}

impl ResourceStore for MemoryResourceStore {
    fn submit(&self, ops: Vec<ResourceOp>) -> Durable {
        let mut inner = self.inner.lock().expect("memory store lock");
        for op in ops {
            match op {
                ResourceOp::Satisfy(record) => {
                    inner.0.insert(record.resource.clone(), record);
                }
                ResourceOp::PutPending(pending) => {
                    inner.1.insert(pending.event.key(), pending);
                }
                ResourceOp::DeletePending(key) => {
                    inner.1.remove(&key);
                }
                ResourceOp::Expire(record) => {
                    if inner.0.get(&record.resource) == Some(&record) {
                        inner.0.remove(&record.resource);
                    }
                }
            }
        }
        let (done, durable) = oneshot::channel();
        let _ = done.send(Ok(()));
        durable
    }

    fn get(&self, resource: &str) -> Result<Option<ResourceRecord>, StoreError> {
        let inner = self.inner.lock().expect("memory store lock");
        Ok(inner.0.get(resource).cloned())
    }

    fn pending(&self) -> Result<Vec<PendingEvent>, StoreError> {
        let inner = self.inner.lock().expect("memory store lock");
        Ok(inner.1.values().cloned().collect())
    }
}
