//! What a coordinator needs from its shard's storage, as a trait: the RocksDB implementation
//! lives in the server package, so this crate builds and tests without RocksDB's C++.
//!
//! Writes are submitted, not awaited in line: a coordinator hands its batch over and goes on
//! with its next message, and whatever must wait for durability (an API acknowledgement, a
//! launch) waits on the returned [`Durable`] in a task of its own. A store writes its batches
//! in submission order and may group several into one synced write (group commit).

use std::sync::Arc;

use dron_model::backfill::BackfillEntry;
use dron_model::instance::{HistoryEntry, InstanceRecord};
use dron_model::job::JobRecord;
use dron_model::notice::{Notice, NoticeRecord};
use dron_model::resource::{PendingEvent, ResourceEvent, ResourceRecord};
use tokio::sync::oneshot;

#[cfg(any(test, feature = "testsuite"))]
mod memory;
#[cfg(any(test, feature = "testsuite"))]
pub use memory::{MemoryNoticeStore, MemoryResourceStore, MemoryStore};

/// One change to a shard. A `Vec<StoreOp>` is applied atomically.
// Batches are short-lived (until the writer applies them): boxing job records would cost an
// allocation per job write to save memory only while a batch waits.
#[allow(clippy::large_enum_variant)]
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
    /// Retention: deletes the history entries of `job` whose target is before `before_ms`,
    /// except its newest `keep`. Decided where it is applied (from what is stored then), so an
    /// entry appended meanwhile is judged too, the same way on every server of a cluster.
    PruneHistory {
        job: String,
        keep: usize,
        before_ms: i64,
    },
    /// An event this shard must hand to the event bus (a job run ended), kept until the bus
    /// has recorded it: the shard's outbox.
    PutAnnouncement(ResourceEvent),
    /// By [`ResourceEvent::key`].
    DeleteAnnouncement(String),
    /// A notice for the notifier (a run failed, a target was skipped...), kept until the
    /// notifier has recorded it: the shard's notice outbox.
    PutNotice(Notice),
    /// By [`Notice::key`].
    DeleteNotice(String),
    /// A backfill's plan for a job of this shard, or one of its targets.
    PutBackfill(BackfillEntry),
    /// The backfill plans of `job` (with their targets): one (`id`), or all of them.
    DeleteBackfills {
        job: String,
        id: Option<String>,
    },
}

/// The key a backfill entry is stored under: `job`, 0x00, `id`, then for a target 0x00 and
/// its time (8 bytes big-endian, sign bit flipped), so a job's plans, and a plan's targets,
/// are each one range (ids and names hold neither 0x00 nor 0x01).
pub fn backfill_key(entry: &BackfillEntry) -> Vec<u8> {
    match entry {
        BackfillEntry::Plan(plan) => backfill_prefix(&plan.job, Some(&plan.id)),
        BackfillEntry::Target(target) => {
            let mut key = backfill_prefix(&target.job, Some(&target.id));
            key.push(0);
            key.extend_from_slice(&((target.target_ms as u64) ^ (1 << 63)).to_be_bytes());
            key
        }
    }
}

/// `job`, 0x00 and `id` (or `job`, 0x00 alone): what every key of those plans starts with.
pub fn backfill_prefix(job: &str, id: Option<&str>) -> Vec<u8> {
    let mut key = job.as_bytes().to_vec();
    key.push(0);
    if let Some(id) = id {
        key.extend_from_slice(id.as_bytes());
    }
    key
}

/// The keys `[from, to)` a [`StoreOp::DeleteBackfills`] deletes.
pub fn backfill_range(job: &str, id: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let from = backfill_prefix(job, id);
    let mut to = from.clone();
    match id {
        // After every key of the plan, before another plan's whose id extends this one.
        Some(_) => to.push(1),
        None => *to.last_mut().expect("the 0x00 separator") = 1,
    }
    (from, to)
}

/// Drops the writes of a batch that a later write in the same batch replaces: a job or an
/// instance put (or deleted) several times in one batch keeps only its last write. The batch is
/// atomic, so what it leaves in storage is the same, with fewer writes: a tick that creates an
/// instance and starts it puts it twice, and every run's end puts its job again.
pub fn coalesce(ops: Vec<StoreOp>) -> Vec<StoreOp> {
    let mut seen: std::collections::HashSet<(u8, Vec<u8>)> = std::collections::HashSet::new();
    let mut kept: Vec<StoreOp> = Vec::with_capacity(ops.len());
    for op in ops.into_iter().rev() {
        let key = match &op {
            StoreOp::PutJob(job) => Some((0, job.spec.name.clone().into_bytes())),
            StoreOp::DeleteJob(name) => Some((0, name.clone().into_bytes())),
            StoreOp::PutInstance(instance) => Some((1, instance.id().into_bytes())),
            StoreOp::DeleteInstance(id) => Some((1, id.clone().into_bytes())),
            StoreOp::PutBackfill(entry) => Some((2, backfill_key(entry))),
            _ => None,
        };
        if key.is_none_or(|key| seen.insert(key)) {
            kept.push(op);
        }
    }
    kept.reverse();
    kept
}

/// Everything a coordinator rebuilds its memory from.
#[derive(Debug, Default, Clone)]
pub struct ShardSnapshot {
    pub jobs: Vec<JobRecord>,
    /// Live (not final) instances.
    pub instances: Vec<InstanceRecord>,
    /// Announcements the bus has not confirmed yet.
    pub announcements: Vec<ResourceEvent>,
    /// Notices the notifier has not recorded yet.
    pub notices: Vec<Notice>,
    /// Backfill plans of its jobs, each followed by its targets.
    pub backfills: Vec<BackfillEntry>,
}

/// The error a storage engine reported, kept whole (e.g. a `rocksdb::Error`, which this crate
/// does not depend on) and shared: one failed write answers every batch of its group.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a store did not read or write. `Clone`, because a failed group commit answers many
/// waiters.
///
/// Each message includes its cause, because logs and API errors print errors with `Display`
/// only; the cause is therefore not also given as [`std::error::Error::source`], which would
/// print it twice in a chain (`{:#}`). [`StoreError::cause`] gives it for inspection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The storage engine or the file system failed while `doing` something.
    #[error("storage failed {doing}: {cause}")]
    Backend { doing: &'static str, cause: Cause },
    /// The disk (or the user's quota) is full: nothing can be made durable until space
    /// returns. Kept apart from [`StoreError::Backend`] because it passes, and the API
    /// answers it 507.
    #[error("the disk is full: storage failed {doing}: {cause}")]
    NoSpace { doing: &'static str, cause: Cause },
    /// A stored value (or a stored file) could not be decoded.
    #[error("cannot decode {what}: {cause}")]
    Decode { what: String, cause: Cause },
    /// A column family the store needs is missing from its database.
    #[error("the database has no column family '{0}'")]
    MissingFamily(&'static str),
    /// A part of the write path (named) has stopped: what was asked was not done.
    #[error("{0} has stopped")]
    Stopped(&'static str),
    /// A shard's writer refuses every batch after a failed one until the shard has reloaded
    /// what is durable, since later batches build on the failed one.
    #[error("refused: an earlier write failed and the shard has not reloaded since ({0})")]
    RefusedAfter(Arc<StoreError>),
}

impl StoreError {
    /// A backend failure while `doing` something, e.g. `map_err(StoreError::backend("writing"))`.
    pub fn backend<E>(doing: &'static str) -> impl FnOnce(E) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |cause| {
            let no_space = is_no_space(&cause);
            let cause: Cause = Arc::new(cause);
            match no_space {
                true => StoreError::NoSpace { doing, cause },
                false => StoreError::Backend { doing, cause },
            }
        }
    }

    /// Whether this failure (or the earlier one it was refused for) is a full disk.
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace { .. } => true,
            StoreError::RefusedAfter(earlier) => earlier.is_no_space(),
            _ => false,
        }
    }

    /// A decoding failure of `what`.
    pub fn decode<E>(what: impl Into<String>, cause: E) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError::Decode {
            what: what.into(),
            cause: Arc::new(cause),
        }
    }

    /// The underlying error the store reported, if there is one.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            StoreError::Backend { cause, .. }
            | StoreError::NoSpace { cause, .. }
            | StoreError::Decode { cause, .. } => Some(cause.as_ref()),
            StoreError::RefusedAfter(earlier) => earlier.cause(),
            StoreError::MissingFamily(_) | StoreError::Stopped(_) => None,
        }
    }
}

/// Whether `error` says the disk is full: an I/O error ENOSPC or EDQUOT, or a storage
/// engine's error whose message says so (RocksDB reports "IO error: No space left on device").
fn is_no_space(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    let io_kind = error
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind);
    if matches!(io_kind, Some(StorageFull | QuotaExceeded)) {
        return true;
    }
    let message = error.to_string();
    message.contains("No space left on device") || message.contains("Disk quota exceeded")
}

/// Resolves once a submitted batch is durable (synced to the write-ahead log), or failed.
pub type Durable = oneshot::Receiver<Result<(), StoreError>>;

pub trait ShardStore: Send + Sync + 'static {
    /// Queues an atomic batch; see the module docs.
    fn submit(&self, ops: Vec<StoreOp>) -> Durable;
    /// Reads the shard, after every batch submitted before the call has been applied.
    fn load(&self) -> Result<ShardSnapshot, StoreError>;
    /// The newest `limit` history entries of `job`, newest first: what is applied, so call
    /// [`ShardStore::wait_applied`] first to see every batch submitted before.
    fn history(&self, job: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Returns once every batch submitted before the call is applied (durable or failed), so
    /// that reads after it see them; nothing else. A store that applies a batch as it is
    /// submitted has nothing to wait for.
    fn wait_applied(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether the store's last write failed because the disk is full, and no write has
    /// succeeded since: its coordinator then refuses new work (507) and waits for space.
    fn out_of_space(&self) -> bool {
        false
    }
    /// Blocks until a small write that changes no data is durable, or failed: `Ok` once the
    /// disk takes writes again (after every batch submitted before the call).
    fn probe_space(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Opens shard storage; implemented over RocksDB by the server, in memory by tests. Only the
/// shard supervisor (`crate::shards`) holds one.
pub trait StoreFactory: Send + Sync + 'static {
    fn open(&self, index: u32) -> Result<Arc<dyn ShardStore>, StoreError>;
    /// Indexes of shards that exist in storage (they may hold jobs to move after a crash).
    fn existing(&self) -> Result<Vec<u32>, StoreError>;
    /// Deletes a drained shard's storage (its store has been dropped).
    fn remove(&self, index: u32) -> Result<(), StoreError>;
    fn load_shard_count(&self) -> Result<Option<u32>, StoreError>;
    fn save_shard_count(&self, count: u32) -> Result<(), StoreError>;
}

/// One change to the resource store.
#[derive(Debug, Clone)]
pub enum ResourceOp {
    /// The resource is ready.
    Satisfy(ResourceRecord),
    /// An event still to apply to the coordinators or to publish.
    PutPending(PendingEvent),
    /// By [`ResourceEvent::key`].
    DeletePending(String),
    /// Retention: forgets a satisfied resource, unless it was satisfied again since this
    /// record was read (then the store holds another record, which stays).
    Expire(ResourceRecord),
}

/// Where satisfied resources live: one store for the server, written by the event bus before
/// it answers, read by coordinators when an instance is created or recovered (so an instance
/// created after its resource was announced sees it satisfied). It also keeps the events not
/// yet applied everywhere or not yet published, so that a restart finishes them.
pub trait ResourceStore: Send + Sync + 'static {
    fn submit(&self, ops: Vec<ResourceOp>) -> Durable;
    /// Sees every write whose [`Durable`] has resolved.
    fn get(&self, resource: &str) -> Result<Option<ResourceRecord>, StoreError>;
    /// Every pending event, in key order, after every batch submitted before the call.
    fn pending(&self) -> Result<Vec<PendingEvent>, StoreError>;
    /// At most `limit` pending events whose key is after `after` (all: None), in key order,
    /// after every batch submitted before the call: how the bus reads back the events it
    /// left on disk while its publish queue was full.
    fn pending_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        let after = |p: &PendingEvent| after.is_none_or(|after| p.event.key().as_str() > after);
        let pending = self.pending()?.into_iter().filter(after);
        Ok(pending.take(limit).collect())
    }
}

/// One change to the notifier's store.
#[derive(Debug, Clone)]
pub enum NoticeOp {
    /// Records a notice with its deliveries (replacing the record of the same key).
    Put(NoticeRecord),
    /// By [`Notice::key`].
    Delete(String),
}

/// Where the notifier keeps notices and how their deliveries fared, so that queued ones
/// survive a restart and recent ones can be listed.
pub trait NoticeStore: Send + Sync + 'static {
    fn submit(&self, ops: Vec<NoticeOp>) -> Durable;
    /// Every record, oldest first, after every batch submitted before the call.
    fn load(&self) -> Result<Vec<NoticeRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::instance::{InstanceState, RunCause};

    fn instance(state: InstanceState) -> InstanceRecord {
        let mut instance = InstanceRecord::new("job", 5, RunCause::Schedule, 5);
        instance.state = state;
        instance
    }

    #[test]
    fn a_store_error_names_what_failed_and_keeps_its_cause() {
        let io = std::io::Error::other("disk full");
        let error = StoreError::backend("writing a batch")(io);
        assert_eq!(
            error.to_string(),
            "storage failed writing a batch: disk full"
        );
        let cause = error.cause().expect("a backend error has its cause");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        // Its cause is in its message, so not given again as its source.
        assert!(std::error::Error::source(&error).is_none());
        let refused = StoreError::RefusedAfter(Arc::new(error.clone()));
        assert!(
            refused
                .to_string()
                .ends_with("(storage failed writing a batch: disk full)")
        );
        assert!(
            refused
                .cause()
                .is_some_and(|c| c.to_string() == "disk full")
        );
        assert!(StoreError::Stopped("the writer").cause().is_none());
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_failures() {
        let enospc = std::io::Error::from_raw_os_error(28);
        let full = StoreError::backend("writing a batch")(enospc);
        assert!(full.is_no_space(), "{full}");
        assert!(full.to_string().starts_with("the disk is full: "), "{full}");
        // As RocksDB reports it: in its message only.
        let rocks = std::io::Error::other("IO error: No space left on device: While appending");
        let rocks = StoreError::backend("writing a batch")(rocks);
        assert!(rocks.is_no_space(), "{rocks}");
        assert!(StoreError::RefusedAfter(Arc::new(full)).is_no_space());
        let other = StoreError::backend("writing a batch")(std::io::Error::other("disk error"));
        assert!(!other.is_no_space());
        assert!(!StoreError::RefusedAfter(Arc::new(other)).is_no_space());
    }

    #[test]
    fn coalescing_keeps_the_last_write_of_each_key_in_order() {
        let ops = vec![
            StoreOp::PutInstance(instance(InstanceState::Queued)),
            StoreOp::AppendHistory(HistoryEntry::Run(instance(InstanceState::Failed))),
            StoreOp::PutInstance(instance(InstanceState::Running)),
            StoreOp::DeleteInstance("other@1".into()),
            StoreOp::PutInstance(InstanceRecord::new("other", 1, RunCause::Manual, 1)),
        ];
        let kept = coalesce(ops);
        assert_eq!(kept.len(), 3);
        assert!(matches!(kept[0], StoreOp::AppendHistory(_)));
        assert!(matches!(&kept[1], StoreOp::PutInstance(i) if i.state == InstanceState::Running));
        assert!(matches!(&kept[2], StoreOp::PutInstance(i) if i.job == "other"));
        // The same end state as applying every write.
        let (all, fewer) = (MemoryStore::default(), MemoryStore::default());
        let ops = vec![
            StoreOp::PutInstance(instance(InstanceState::Queued)),
            StoreOp::DeleteInstance("job@5".into()),
            StoreOp::PutInstance(instance(InstanceState::Running)),
        ];
        drop(all.submit(ops.clone()));
        drop(fewer.submit(coalesce(ops)));
        assert_eq!(
            all.load().unwrap().instances,
            fewer.load().unwrap().instances
        );
    }
}
