//! openraft's state machine (`RaftStateMachine`): committed entries go to the [`Applier`]
//! (dron's stores on this server), in log order, on a blocking thread, each batch openraft
//! hands over in one `Applier::apply_all` call.
//!
//! Every entry reaches the applier, blank and membership entries with an empty payload, so its
//! applied index is exactly the last applied entry's. This module keeps openraft's own
//! bookkeeping beside it (last applied log id, last membership, in the `state_machine` family),
//! written after the applier returned. The applier's index is the truth after a crash: ours
//! can only be behind it (written after), and then openraft re-offers entries the applier
//! skips; if ours is ahead (the applier's stores were replaced by older ones), entries are
//! re-offered from the applier's index, as long as the log still holds them.
//!
//! Snapshots are the applier's bytes, built under the same lock as `apply`, so that their
//! bytes and their last log id always agree (openraft builds snapshots concurrently with
//! applying). The current snapshot is kept in memory only: openraft 0.9 rebuilds one at
//! start-up when the log has been purged, which is all it needs.

// openraft's `StorageError` is large (224 bytes); its traits return it, and so do the helpers
// here that run their work on blocking threads. None of this is a hot path for errors.
#![expect(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dron_actors::store::StoreError;
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::Applier;
use super::db::{self, APPLIED_KEY, LOG, PURGED, PURGED_KEY, RaftDb, STATE_MACHINE, index_key};
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// openraft's view of what is applied, as stored in the `state_machine` family.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
}

/// The current snapshot: its meta and the applier's bytes.
#[derive(Clone)]
struct Current {
    meta: SnapshotMeta,
    bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<RaftDb>,
    applier: Arc<dyn Applier>,
    /// Held while applying, installing or taking a snapshot's bytes.
    applied: Mutex<Applied>,
    current: Mutex<Option<Current>>,
    /// Makes snapshot ids unique within a process (with the last log id, across processes:
    /// two snapshots at one log id hold the same state).
    built: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in the applier poisons the lock; what it guards is still consistent (it is
    // only written after the applier returned).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sm_read_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&error)).into()
}

fn sm_write_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&error)).into()
}

#[derive(Debug, thiserror::Error)]
enum Inconsistent {
    #[error(
        "the applier has applied up to {applier} but this server's Raft log no longer holds the \
         entries after it (purged up to {purged}): its stores are older than its log; empty the \
         Raft directory and the stores to rejoin from a snapshot"
    )]
    ApplierBehindPurged { applier: String, purged: u64 },
    #[error("the Raft log has no entry {0}, which the applier's index names")]
    MissingEntry(u64),
    #[error("a snapshot without a last log id cannot be installed")]
    SnapshotWithoutLogId,
}

impl StateMachine {
    /// The state machine over `db`'s `state_machine` family, applying to `applier`.
    pub fn open(db: Arc<RaftDb>, applier: Arc<dyn Applier>) -> Result<StateMachine, StoreError> {
        let applied = db.get(STATE_MACHINE, APPLIED_KEY)?.unwrap_or_default();
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db,
                applier,
                applied: Mutex::new(applied),
                current: Mutex::new(None),
                built: AtomicU64::new(0),
            }),
        })
    }
}

impl Shared {
    /// Writes openraft's view of what is applied. Not synced: the applier's own index is the
    /// truth, and every later synced write of this database (the log's) makes it durable.
    /// A purge, which needs it, is always a later synced write.
    fn record(&self, applied: &Applied) -> Result<(), StoreError> {
        let cf = self.db.family(STATE_MACHINE)?;
        self.db
            .db()
            .put_cf(cf, APPLIED_KEY, db::encode(applied))
            .map_err(StoreError::backend("recording the last applied log id"))
    }

    /// What is applied, reconciled with the applier's index (see the module docs).
    fn reconcile(&self) -> Result<Applied, StorageError> {
        let mut applied = lock(&self.applied);
        let ours = applied.last.map(|id| id.index);
        let theirs = self.applier.applied_index().map_err(sm_read_error)?;
        if theirs >= ours {
            // Equal, or the applier is ahead (a crash before our record): openraft re-offers
            // the entries after ours, and the applier skips those it has.
            return Ok(applied.clone());
        }
        // Ours is ahead: go back to the applier's index, whose log id the log holds.
        let purged: Option<LogId> = self.db.get(PURGED, PURGED_KEY).map_err(sm_read_error)?;
        let back_to = match (theirs, purged) {
            (_, Some(purged)) if Some(purged.index) == theirs => Some(purged),
            (_, Some(purged)) if theirs.is_none_or(|index| index < purged.index) => {
                return Err(sm_read_error(Inconsistent::ApplierBehindPurged {
                    applier: theirs.map_or("nothing".to_string(), |index| index.to_string()),
                    purged: purged.index,
                }));
            }
            (None, _) => None,
            (Some(index), _) => {
                let cf = self.db.family(LOG).map_err(sm_read_error)?;
                let value = self
                    .db
                    .db()
                    .get_pinned_cf(cf, index_key(index))
                    .map_err(sm_read_error)?
                    .ok_or_else(|| sm_read_error(Inconsistent::MissingEntry(index)))?;
                let entry: Entry = db::decode(&value, "a Raft log entry").map_err(sm_read_error)?;
                Some(entry.log_id)
            }
        };
        tracing::warn!(
            ours = ?applied.last,
            applier = ?theirs,
            "the applier is behind this server's record of applied entries: re-applying from its index"
        );
        // The membership may stay ahead of the last applied log id: openraft allows it.
        applied.last = back_to;
        self.record(&applied).map_err(sm_write_error)?;
        Ok(applied.clone())
    }

    fn apply(&self, entries: Vec<Entry>) -> Result<Vec<()>, StorageError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let (first, last) = (first.log_id, last.log_id);
        let mut applied = lock(&self.applied);
        let mut membership = None;
        let mut batch: Vec<(u64, &[u8])> = Vec::with_capacity(entries.len());
        for entry in &entries {
            let payload: &[u8] = match &entry.payload {
                EntryPayload::Normal(payload) => &payload.0,
                EntryPayload::Blank => &[],
                EntryPayload::Membership(change) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), change.clone()));
                    &[]
                }
            };
            batch.push((entry.log_id.index, payload));
        }
        self.applier.apply_all(&batch).map_err(|error| {
            // Raft stops here; after a restart the applier's index says how far it got.
            let cause = AnyError::new(&error)
                .add_context(|| format!("applying entries {}..={}", first.index, last.index));
            StorageIOError::apply(last, cause)
        })?;
        if let Some(membership) = membership {
            applied.membership = membership;
        }
        applied.last = Some(last);
        self.record(&applied).map_err(sm_write_error)?;
        Ok(vec![(); entries.len()])
    }

    fn build(&self) -> Result<Current, StorageError> {
        let (bytes, applied) = {
            let applied = lock(&self.applied);
            let bytes = self.applier.snapshot().map_err(sm_read_error)?;
            (bytes, applied.clone())
        };
        let built = self.built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied.last {
            Some(id) => format!("{id}-{built}"),
            None => format!("empty-{built}"),
        };
        let current = Current {
            meta: SnapshotMeta {
                last_log_id: applied.last,
                last_membership: applied.membership,
                snapshot_id,
            },
            bytes,
        };
        *lock(&self.current) = Some(current.clone());
        Ok(current)
    }

    fn install(&self, meta: SnapshotMeta, bytes: Vec<u8>) -> Result<(), StorageError> {
        let last = meta
            .last_log_id
            .ok_or_else(|| sm_write_error(Inconsistent::SnapshotWithoutLogId))?;
        {
            let mut applied = lock(&self.applied);
            self.applier.install(last.index, &bytes).map_err(|error| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&error))
            })?;
            applied.last = Some(last);
            applied.membership = meta.last_membership.clone();
            self.record(&applied).map_err(sm_write_error)?;
        }
        *lock(&self.current) = Some(Current { meta, bytes });
        Ok(())
    }
}

/// Runs `work` on a blocking thread (the applier syncs to disk).
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce(&Shared) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || work(&shared))
        .await
        .map_err(sm_write_error)?
}

fn snapshot_of(current: Current) -> Snapshot {
    Snapshot {
        meta: current.meta,
        snapshot: Box::new(Cursor::new(current.bytes)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let current = blocking(&self.shared, Shared::build).await?;
        Ok(snapshot_of(current))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = blocking(&self.shared, Shared::reconcile).await?;
        Ok((applied.last, applied.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        blocking(&self.shared, move |shared| shared.apply(entries)).await
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let bytes = snapshot.into_inner();
        blocking(&self.shared, move |shared| shared.install(meta, bytes)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        // A copy of the bytes per call: the snapshot is sent from it while a newer one may
        // replace the current.
        Ok(lock(&self.shared.current).clone().map(snapshot_of))
    }
}
