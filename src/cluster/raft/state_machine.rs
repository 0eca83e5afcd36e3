//! openraft's state machine (`RaftStateMachine`): committed entries go to the [`Applier`]
//! (dron's stores on this server), in log order, on a blocking thread, each batch openraft
//! hands over in one `Applier::apply_all` call.
//!
//! Every entry reaches the applier, blank and membership entries with an empty payload, so its
//! applied index is exactly the last applied entry's. This module keeps openraft's own
//! bookkeeping beside it (last applied log id, last membership, in the `state_machine` family),
//! written after the applier returned. The applier's (durable) index is the truth after a
//! crash: if ours is behind it, openraft re-offers entries the applier skips; if ours is
//! ahead (the applier does not sync each apply, or its stores were replaced by older ones),
//! entries are re-offered from the applier's index, as long as the log still holds them.
//!
//! Snapshots are files (`super::snapshot_file`): the applier writes its state into a new
//! directory (dron: RocksDB checkpoints, hard links to its table files) between two applies,
//! under the same lock as `apply`, so that the files and their last log id always agree
//! (openraft builds snapshots concurrently with applying); the applier is asked to make that
//! short first ([`Applier::prepare_snapshot`], outside the lock). The directory is then packed
//! into one file in `snapshots/` beside the log's database, outside the lock; openraft sends
//! it in chunks read from that file, and a receiver writes the chunks into a file of its own
//! and unpacks it for the applier to install. Only the current snapshot's meta is kept in
//! memory, and only the current file on disk; at start-up the directory is emptied (openraft
//! 0.9 rebuilds a snapshot at start-up when the log has been purged, which is all it needs).

// openraft's `StorageError` is large (224 bytes); its traits return it, and so do the helpers
// here that run their work on blocking threads. None of this is a hot path for errors.
#![expect(clippy::result_large_err)]

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dron_actors::store::StoreError;
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::Applier;
use super::db::{self, APPLIED_KEY, LOG, PURGED, PURGED_KEY, RaftDb, STATE_MACHINE, index_key};
use super::snapshot_file;
use super::space::Space;
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// openraft's view of what is applied, as stored in the `state_machine` family.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
}

/// The current snapshot: its meta and its packed file.
#[derive(Clone)]
struct Current {
    meta: SnapshotMeta,
    file: PathBuf,
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<RaftDb>,
    applier: Arc<dyn Applier>,
    /// Held while applying, installing or taking a snapshot's files.
    applied: Mutex<Applied>,
    current: Mutex<Option<Current>>,
    /// The previous current snapshot's file.
    retired: Mutex<Option<PathBuf>>,
    /// Where snapshots are built, received and kept.
    snapshots: PathBuf,
    /// The file the latest snapshot being received is written to.
    receiving: Mutex<Option<PathBuf>>,
    /// Makes snapshot ids and file names unique within a process (with the last log id,
    /// across processes: two snapshots at one log id hold the same state).
    built: AtomicU64,
    /// Applies wait here while the disk is full (an entry applied again is skipped where it
    /// was applied: see `Applier`).
    space: Arc<Space>,
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
    #[error("{doing} {path}: {source}")]
    SnapshotFile {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An I/O error on a snapshot's file or directory, with what was done to which path.
fn file_error(doing: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Inconsistent {
    let path = path.to_path_buf();
    move |source| Inconsistent::SnapshotFile {
        doing,
        path,
        source,
    }
}

/// Removes a file or a directory that may not exist.
fn remove(path: &Path) -> std::io::Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

impl StateMachine {
    /// The state machine over `db`'s `state_machine` family, applying to `applier`, with its
    /// snapshots in `snapshots/` beside the database's files (emptied here: see the module
    /// docs).
    /// The state machine over `db`, applying through `applier`; while the disk is full its
    /// applies wait for space (`space`).
    pub fn open(
        db: Arc<RaftDb>,
        applier: Arc<dyn Applier>,
        space: Arc<Space>,
    ) -> Result<StateMachine, StoreError> {
        let applied = db.get(STATE_MACHINE, APPLIED_KEY)?.unwrap_or_default();
        let snapshots = db.db().path().join("snapshots");
        remove(&snapshots)
            .and_then(|()| std::fs::create_dir_all(&snapshots))
            .map_err(StoreError::backend("emptying the snapshots directory"))?;
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db,
                applier,
                applied: Mutex::new(applied),
                current: Mutex::new(None),
                retired: Mutex::new(None),
                snapshots,
                receiving: Mutex::new(None),
                built: AtomicU64::new(0),
                space,
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
        // Expected after a restart when the applier does not sync each apply (dron's does
        // not): it says how far it is durable.
        tracing::info!(
            ours = ?applied.last,
            applier = ?theirs,
            "applying again the entries after the applier's durable index"
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
        let applying = || self.applier.apply_all(&batch);
        self.space
            .retry("applying entries", applying)
            .map_err(|error| {
                // Raft stops here; after a restart the applier's index says how far it got.
                let cause = AnyError::new(&error)
                    .add_context(|| format!("applying entries {}..={}", first.index, last.index));
                StorageIOError::apply(last, cause)
            })?;
        if let Some(membership) = membership {
            applied.membership = membership;
        }
        applied.last = Some(last);
        let recording = || self.record(&applied);
        self.space
            .retry("recording the last applied log id", recording)
            .map_err(sm_write_error)?;
        Ok(vec![(); entries.len()])
    }

    /// A path in the snapshots directory no other has used in this process.
    fn fresh_path(&self, what: &str) -> PathBuf {
        let n = self.built.fetch_add(1, Ordering::Relaxed);
        self.snapshots.join(format!("{what}-{n}"))
    }

    fn build(&self) -> Result<Current, StorageError> {
        // The slow part (dron: flushing memtables) while entries are still applied.
        self.applier.prepare_snapshot().map_err(sm_read_error)?;
        let files = self.fresh_path("building");
        let applied = {
            let applied = lock(&self.applied);
            if let Err(error) = self.applier.snapshot(&files) {
                let _ = remove(&files);
                return Err(sm_read_error(error));
            }
            applied.clone()
        };
        let snapshot_id = match applied.last {
            Some(id) => format!("{id}-{}", self.built.fetch_add(1, Ordering::Relaxed)),
            None => format!("empty-{}", self.built.fetch_add(1, Ordering::Relaxed)),
        };
        let file = self.fresh_path("snapshot");
        let packed = snapshot_file::pack(&files, &file)
            .map_err(file_error("packing a snapshot into", &file))
            .map_err(sm_read_error);
        let removed = remove(&files).map_err(file_error("removing", &files));
        let size = packed?;
        removed.map_err(sm_read_error)?;
        tracing::info!(snapshot = %snapshot_id, bytes = size, "built a snapshot");
        let meta = SnapshotMeta {
            last_log_id: applied.last,
            last_membership: applied.membership,
            snapshot_id,
        };
        Ok(self.make_current(Current { meta, file }))
    }

    /// Makes `current` the snapshot sent from now on. The previous one's file is kept until
    /// the next (a send that read its path just before keeps its way to it; one that opened it
    /// keeps its open file anyway); the one before it is removed.
    fn make_current(&self, current: Current) -> Current {
        let previous = lock(&self.current).replace(current.clone());
        let retired = previous.map(|previous| previous.file);
        if let Some(old) = std::mem::replace(&mut *lock(&self.retired), retired)
            && old != current.file
            && let Err(error) = remove(&old)
        {
            tracing::warn!(%error, file = %old.display(), "cannot remove an old snapshot");
        }
        current
    }

    /// A new file for a snapshot about to be received; the previous one, if a transfer was
    /// abandoned, is removed.
    fn begin_receiving(&self) -> Result<std::fs::File, StorageError> {
        let path = self.fresh_path("receiving");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(file_error("creating", &path))
            .map_err(sm_write_error)?;
        if let Some(abandoned) = lock(&self.receiving).replace(path) {
            let _ = remove(&abandoned);
        }
        Ok(file)
    }

    /// Installs a received snapshot: unpacks its file and hands the files to the applier, then
    /// keeps the file as the current snapshot.
    fn install(&self, meta: SnapshotMeta, mut file: std::fs::File) -> Result<(), StorageError> {
        let last = meta
            .last_log_id
            .ok_or_else(|| sm_write_error(Inconsistent::SnapshotWithoutLogId))?;
        let write_error = |error: Inconsistent| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::new(&error),
            ))
        };
        let files = self.fresh_path("installing");
        file.sync_all()
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| snapshot_file::unpack(&file, &files))
            .map_err(file_error("unpacking a received snapshot into", &files))
            .map_err(write_error)?;
        {
            let mut applied = lock(&self.applied);
            self.applier.install(last.index, &files).map_err(|error| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&error))
            })?;
            applied.last = Some(last);
            applied.membership = meta.last_membership.clone();
            self.record(&applied).map_err(sm_write_error)?;
        }
        remove(&files)
            .map_err(file_error("removing", &files))
            .map_err(write_error)?;
        let kept = self.keep_received(&file).map_err(write_error)?;
        self.make_current(Current { meta, file: kept });
        Ok(())
    }

    /// The path of `file`, the latest snapshot received: the file `begin_receiving` made if it
    /// is that one, else a copy of it.
    fn keep_received(&self, file: &std::fs::File) -> Result<PathBuf, Inconsistent> {
        use std::os::unix::fs::MetadataExt;
        let received = lock(&self.receiving).take();
        let handle = file
            .metadata()
            .map_err(file_error("reading", &self.snapshots))?;
        if let Some(path) = received {
            let same = std::fs::metadata(&path)
                .is_ok_and(|named| (named.dev(), named.ino()) == (handle.dev(), handle.ino()));
            if same {
                return Ok(path);
            }
            let _ = remove(&path);
        }
        let copy = self.fresh_path("snapshot");
        let mut reader = file;
        reader
            .seek(SeekFrom::Start(0))
            .and_then(|_| std::io::copy(&mut reader, &mut std::fs::File::create(&copy)?))
            .map_err(file_error("copying a received snapshot to", &copy))?;
        Ok(copy)
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

/// The current snapshot with a file handle of its own (each send reads from its own offset).
async fn snapshot_of(current: Current) -> Result<Snapshot, StorageError> {
    let file = tokio::fs::File::open(&current.file)
        .await
        .map_err(file_error("opening", &current.file))
        .map_err(sm_read_error)?;
    Ok(Snapshot {
        meta: current.meta,
        snapshot: Box::new(file),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let current = blocking(&self.shared, Shared::build).await?;
        snapshot_of(current).await
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = blocking(&self.shared, Shared::begin_receiving).await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let file = (*snapshot).into_std().await;
        blocking(&self.shared, move |shared| shared.install(meta, file)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = lock(&self.shared.current).clone();
        match current {
            Some(current) => snapshot_of(current).await.map(Some),
            None => Ok(None),
        }
    }
}
