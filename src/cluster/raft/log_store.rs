//! openraft's log store (`RaftLogStorage`) on the Raft directory's RocksDB ([`super::db`]).
//!
//! Appends are written at once, without a sync, so that they are readable when `append`
//! returns (openraft requires it: replication reads them right away); a syncer thread then
//! syncs the WAL and only then tells openraft they are durable (the `LogFlushed` callback).
//! Appends that arrive while a sync runs share the next one (group commit), and the leader's
//! sync runs while its replication already sends the entries to the followers. Votes,
//! truncations and purges are synced before they return: they are rare, and openraft relies
//! on the vote being durable. Every write is one `WriteBatch` on a blocking thread, awaited,
//! so writes reach the WAL in the order openraft issued them (it requires vote and log IO to
//! be serialized), and a synced write also makes every earlier unsynced one durable. A write
//! that meets a full disk waits for space instead of failing ([`super::space`]).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::mpsc;

use dron_actors::store::StoreError;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::db::{
    self, COMMITTED, COMMITTED_KEY, LOG, PURGED, PURGED_KEY, RaftDb, VOTE, VOTE_KEY, index_key,
};
use super::space::Space;
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The log store openraft owns. Cloning it is cheap (the database is shared).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<RaftDb>,
    syncer: mpsc::Sender<LogFlushed<TypeConfig>>,
    space: Arc<Space>,
}

/// Reads the log for replication tasks, concurrently with the store's writes.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<RaftDb>,
}

impl LogStore {
    /// The store over `db`, with its syncer thread (which ends once every clone of the store
    /// is dropped).
    pub fn new(db: Arc<RaftDb>, space: Arc<Space>) -> Result<LogStore, StoreError> {
        let (syncer, callbacks) = mpsc::channel();
        let (sync_db, sync_space) = (db.clone(), space.clone());
        std::thread::Builder::new()
            .name("raft-log-sync".to_string())
            .spawn(move || sync_appends(&sync_db, &sync_space, &callbacks))
            .map_err(StoreError::backend("starting the Raft log's sync thread"))?;
        Ok(LogStore { db, syncer, space })
    }
}

/// The syncer thread: one WAL sync for every append queued since the last one, then their
/// callbacks, in order.
fn sync_appends(db: &RaftDb, space: &Space, callbacks: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = callbacks.recv() {
        let mut waiting = vec![first];
        waiting.extend(callbacks.try_iter());
        let synced = space.retry("syncing the Raft log", || {
            let sync = db.db().flush_wal(true);
            sync.map_err(StoreError::backend("syncing the Raft log"))
        });
        for callback in waiting {
            callback.log_io_completed(
                synced
                    .as_ref()
                    .map(|_| ())
                    .map_err(|error| io::Error::other(format!("syncing the Raft log: {error}"))),
            );
        }
    }
}

fn read_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&error)).into()
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&error)).into()
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// Runs a write on a blocking thread and waits for it (and, while the disk is full, for
/// space).
async fn write_blocking(
    store: &LogStore,
    doing: &'static str,
    write: impl Fn(&RaftDb) -> Result<(), StoreError> + Send + 'static,
    error: fn(StoreError) -> StorageError,
) -> Result<(), StorageError> {
    let (db, space) = (store.db.clone(), store.space.clone());
    tokio::task::spawn_blocking(move || space.retry(doing, || write(&db)))
        .await
        .map_err(|join| error(StoreError::backend(doing)(join)))?
        .map_err(error)
}

fn read_entries(db: &RaftDb, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
    let start = match range.start_bound() {
        Bound::Included(&index) => index,
        Bound::Excluded(&index) => index.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let past_end = match range.end_bound() {
        Bound::Included(&index) => index.checked_add(1),
        Bound::Excluded(&index) => Some(index),
        Bound::Unbounded => None,
    };
    let cf = db.family(LOG)?;
    let from = index_key(start);
    let mut entries = Vec::new();
    for item in db
        .db()
        .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
    {
        let (key, value) = item.map_err(StoreError::backend("reading the Raft log"))?;
        let index = key_index(&key)?;
        if past_end.is_some_and(|end| index >= end) {
            break;
        }
        entries.push(db::decode::<Entry>(&value, "a Raft log entry")?);
    }
    Ok(entries)
}

fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::decode("a Raft log key", BadKey(key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[derive(Debug, thiserror::Error)]
#[error("a log key is 8 bytes, not {0}")]
struct BadKey(usize);

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        // Read in place: replication reads the log's tail, which the memtables and the block
        // cache hold, and a blocking thread per read would cost more than the read.
        read_entries(&self.db, range).map_err(read_error)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, range).map_err(read_error)
    }
}

/// The id of the last entry written to the log (with every entry purged, the last purged one).
pub fn last_log_id(db: &RaftDb) -> Result<Option<LogId>, StoreError> {
    let cf = db.family(LOG)?;
    let last = match db.db().iterator_cf(cf, IteratorMode::End).next() {
        None => None,
        Some(item) => {
            let (_, value) = item.map_err(StoreError::backend("reading the Raft log"))?;
            let entry: Entry = db::decode(&value, "a Raft log entry")?;
            Some(entry.log_id)
        }
    };
    match last {
        Some(last) => Ok(Some(last)),
        None => db.get(PURGED, PURGED_KEY),
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> =
            self.db.get(PURGED, PURGED_KEY).map_err(read_error)?;
        Ok(LogState {
            last_log_id: last_log_id(&self.db).map_err(read_error)?,
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            db: self.db.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let value = db::encode(vote);
        write_blocking(
            self,
            "saving the vote",
            move |db| {
                let cf = db.family(VOTE)?;
                db.db()
                    .put_cf_opt(cf, VOTE_KEY, &value, &synced())
                    .map_err(StoreError::backend("saving the vote"))
            },
            |error| StorageIOError::write_vote(AnyError::new(&error)).into(),
        )
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db
            .get(VOTE, VOTE_KEY)
            .map_err(|error| StorageIOError::read_vote(AnyError::new(&error)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced, nor on a blocking thread (no sync, so a memtable write): a committed log
        // id lost in a crash only means fewer entries re-applied at start-up; the next synced
        // write of the log makes it durable anyway (one WAL).
        // Nor is it waited for on a full disk: skipped, for the same reason.
        let cf = self.db.family(COMMITTED).map_err(write_error)?;
        let written = self
            .db
            .db()
            .put_cf(cf, COMMITTED_KEY, db::encode(&committed))
            .map_err(StoreError::backend("saving the committed log id"));
        match written {
            Err(error) if error.is_no_space() => Ok(()),
            written => written.map_err(write_error),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> =
            self.db.get(COMMITTED, COMMITTED_KEY).map_err(read_error)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.log_id.index, db::encode(&entry)))
            .collect();
        write_blocking(
            self,
            "appending to the Raft log",
            move |db| {
                let cf = db.family(LOG)?;
                let mut batch = WriteBatch::default();
                for (index, value) in &entries {
                    batch.put_cf(cf, index_key(*index), value);
                }
                // Unsynced: the syncer thread syncs before the callback.
                db.db()
                    .write(batch)
                    .map_err(StoreError::backend("appending to the Raft log"))
            },
            write_error,
        )
        .await?;
        if let Err(mpsc::SendError(callback)) = self.syncer.send(callback) {
            callback.log_io_completed(Err(io::Error::other(
                "the Raft log's sync thread has stopped",
            )));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        write_blocking(
            self,
            "truncating the Raft log",
            move |db| {
                let cf = db.family(LOG)?;
                let mut batch = WriteBatch::default();
                batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
                batch.delete_cf(cf, index_key(u64::MAX));
                db.db()
                    .write_opt(batch, &synced())
                    .map_err(StoreError::backend("truncating the Raft log"))
            },
            write_error,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let purged = db::encode(&log_id);
        write_blocking(
            self,
            "purging the Raft log",
            move |db| {
                let log = db.family(LOG)?;
                let mut batch = WriteBatch::default();
                // The marker and the deletion in one batch: the log never has a hole.
                batch.put_cf(db.family(PURGED)?, PURGED_KEY, &purged);
                batch.delete_range_cf(log, index_key(0), index_key(log_id.index));
                batch.delete_cf(log, index_key(log_id.index));
                db.db()
                    .write_opt(batch, &synced())
                    .map_err(StoreError::backend("purging the Raft log"))
            },
            write_error,
        )
        .await
    }
}
