//! The Raft directory's one RocksDB: the log store and the state machine's bookkeeping share
//! it, so that one WAL orders every write (a synced write also makes every earlier one durable).
//!
//! | family          | key                    | value                                     |
//! |-----------------|------------------------|-------------------------------------------|
//! | `log`           | index (8 bytes, BE)    | `Entry` (log id and payload)              |
//! | `vote`          | `vote`                 | `Vote`                                    |
//! | `committed`     | `committed`            | `LogId`, the last committed one known     |
//! | `purged`        | `purged`               | `LogId`, the last one purged from `log`   |
//! | `state_machine` | `applied`              | `Applied`: last applied log id, membership |
//!
//! Values are postcard behind a version byte, as dron's other stores (`dron_model::codec`), so
//! that a later format can still read this one. Big-endian keys sort by index, which makes
//! the last entry the last key and truncation and purging one range deletion each.

use std::path::Path;
use std::sync::Arc;

use dron_actors::store::StoreError;
use rocksdb::DB;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::storage::rocks::{Reads, open_db};

pub const LOG: &str = "log";
pub const VOTE: &str = "vote";
pub const COMMITTED: &str = "committed";
pub const PURGED: &str = "purged";
pub const STATE_MACHINE: &str = "state_machine";

pub const VOTE_KEY: &[u8] = b"vote";
pub const COMMITTED_KEY: &[u8] = b"committed";
pub const PURGED_KEY: &[u8] = b"purged";
pub const APPLIED_KEY: &[u8] = b"applied";

/// The format of every value written here.
const VERSION: u8 = 1;

/// The database, and a signal raised once it is closed (its last handle dropped), so that
/// `RaftNode::shutdown` returns only when the directory can be opened again.
pub struct RaftDb {
    // Fields drop in order: RocksDB closes (and releases its lock) before the signal goes.
    db: DB,
    _closed: ClosedSignal,
}

struct ClosedSignal(watch::Sender<bool>);

impl Drop for ClosedSignal {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl RaftDb {
    pub fn open(dir: &Path) -> Result<(Arc<RaftDb>, watch::Receiver<bool>), StoreError> {
        // Point lookups: the other families are single keys, and the log is mostly read near
        // its end.
        let db = open_db(
            dir,
            &[LOG, VOTE, COMMITTED, PURGED, STATE_MACHINE],
            Reads::PointLookups,
        )?;
        let (closed, on_closed) = watch::channel(false);
        let db = RaftDb {
            db,
            _closed: ClosedSignal(closed),
        };
        Ok((Arc::new(db), on_closed))
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn family(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingFamily(name))
    }

    /// The value under `key` in `family`, decoded.
    pub fn get<T: DeserializeOwned>(
        &self,
        family: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let cf = self.family(family)?;
        match self
            .db
            .get_pinned_cf(cf, key)
            .map_err(StoreError::backend("reading the Raft log's database"))?
        {
            None => Ok(None),
            Some(bytes) => decode(&bytes, family).map(Some),
        }
    }
}

pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing into a Vec fails only for types serde cannot describe, never for these.
    postcard::to_extend(value, vec![VERSION])
        .unwrap_or_else(|error| panic!("encoding a Raft record cannot fail: {error}"))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|error| StoreError::decode(what.to_string(), error))
        }
        Some((version, _)) => Err(StoreError::decode(
            what.to_string(),
            UnknownVersion(*version),
        )),
        None => Err(StoreError::decode(what.to_string(), UnknownVersion(0))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown format version {0} (this build reads version {VERSION})")]
struct UnknownVersion(u8);
