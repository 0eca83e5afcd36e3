//! A store's write as physical changes to its database: the keys and encoded values, with no
//! clock and nothing left to decide. A single server adds them to its `WriteBatch` at once; a
//! cluster carries them in its Raft log, so that every server applies the same bytes
//! (src/cluster).
//!
//! Three changes still read the database where they are applied: trimming and pruning a job's
//! history find the oldest entries to delete, and an expiry deletes a key only if it still
//! holds the value that was judged expired. They give the same result on every server because
//! every server applies the same entries, in the same groups, to the same state, and the
//! time they judge by is in their bytes, never read from a clock where they are applied.

use std::borrow::Cow;

use dron_actors::store::StoreError;
use rocksdb::{DB, WriteBatch};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Put {
        family: Cow<'static, str>,
        #[serde(with = "super::bytes")]
        key: Vec<u8>,
        #[serde(with = "super::bytes")]
        value: Vec<u8>,
    },
    Delete {
        family: Cow<'static, str>,
        #[serde(with = "super::bytes")]
        key: Vec<u8>,
    },
    /// Every key in `[from, to)`.
    DeleteRange {
        family: Cow<'static, str>,
        #[serde(with = "super::bytes")]
        from: Vec<u8>,
        #[serde(with = "super::bytes")]
        to: Vec<u8>,
    },
    /// Keeps only the newest `keep` history entries of `job` (a shard's history family).
    TrimHistory { job: String, keep: u64 },
    /// Deletes the history entries of `job` whose target is before `before_ms`, except the
    /// newest `keep` (retention).
    PruneHistory {
        job: String,
        keep: u64,
        before_ms: i64,
    },
    /// Deletes `key` if it holds exactly `value` (retention: a record written again since it
    /// was judged expired stays).
    DeleteIfUnchanged {
        family: Cow<'static, str>,
        #[serde(with = "super::bytes")]
        key: Vec<u8>,
        #[serde(with = "super::bytes")]
        value: Vec<u8>,
    },
}

impl Change {
    pub fn put(family: &'static str, key: &[u8], value: Vec<u8>) -> Change {
        Change::Put {
            family: Cow::Borrowed(family),
            key: key.to_vec(),
            value,
        }
    }

    pub fn delete(family: &'static str, key: &[u8]) -> Change {
        Change::Delete {
            family: Cow::Borrowed(family),
            key: key.to_vec(),
        }
    }
}

/// Adds `change` to `batch` (reading `db` only to trim or prune history and to expire).
pub fn add_change(db: &DB, batch: &mut WriteBatch, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::Put { family, key, value } => batch.put_cf(cf(db, family)?, key, value),
        Change::Delete { family, key } => batch.delete_cf(cf(db, family)?, key),
        Change::DeleteRange { family, from, to } => {
            batch.delete_range_cf(cf(db, family)?, from, to)
        }
        Change::TrimHistory { job, keep } => super::rocks::trim_history(
            db,
            batch,
            job,
            usize::try_from(*keep).unwrap_or(usize::MAX),
        )?,
        Change::PruneHistory {
            job,
            keep,
            before_ms,
        } => super::rocks::prune_history(
            db,
            batch,
            job,
            usize::try_from(*keep).unwrap_or(usize::MAX),
            *before_ms,
        )?,
        Change::DeleteIfUnchanged { family, key, value } => {
            let cf = cf(db, family)?;
            let stored = db
                .get_pinned_cf(cf, key)
                .map_err(StoreError::backend("reading a key to expire"))?;
            if stored.as_deref() == Some(value.as_slice()) {
                batch.delete_cf(cf, key);
            }
        }
    }
    Ok(())
}

/// A column family by a name that may have come off the network.
fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::MissingFamily(static_family(name)))
}

/// The `'static` name of one of dron's column families, for [`StoreError::MissingFamily`].
fn static_family(name: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "jobs",
        "instances",
        "history",
        "outbox",
        "notices",
        "backfills",
        "resources",
        "pending",
    ];
    KNOWN
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("(unknown)")
}
