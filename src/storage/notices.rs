//! The notifier's store on RocksDB (`data/notifications`): every notice recorded, with the
//! state of each of its deliveries, so that queued ones survive a restart.
//!
//! | family    | key                            | value          |
//! |-----------|--------------------------------|----------------|
//! | `notices` | notice key (`Notice::key`, time-ordered) | `NoticeRecord` |

use std::path::Path;
use std::sync::Arc;

use dron_actors::store::{Durable, NoticeOp, NoticeStore, StoreError};
use dron_model::codec;
use dron_model::notice::NoticeRecord;
use rocksdb::{DB, WriteBatch};

use super::change::{Change, add_change};
use super::rocks::{Reads, decode_family, open_db};
use super::writer::{AfterFailure, Writer};

const NOTICES: &str = "notices";
/// Every column family of the notice database.
pub const FAMILIES: &[&str] = &[NOTICES];

pub struct RocksNoticeStore {
    // Dropped first: the writer finishes its queue while the database is still open.
    writer: Writer<NoticeOp>,
    db: Arc<DB>,
}

impl RocksNoticeStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Arc::new(open_db(path, FAMILIES, Reads::Scans)?);
        let writer = Writer::spawn(
            "notice-writer".into(),
            db.clone(),
            add_op,
            AfterFailure::Continue,
        )?;
        Ok(RocksNoticeStore { writer, db })
    }

    /// The database, for backups.
    pub fn db(&self) -> Arc<DB> {
        self.db.clone()
    }

    /// Holds this store's writes (after those queued before) until the guard is dropped.
    pub fn pause(&self) -> Result<super::writer::Paused, StoreError> {
        self.writer.pause()
    }
}

impl NoticeStore for RocksNoticeStore {
    fn submit(&self, ops: Vec<NoticeOp>) -> Durable {
        self.writer.submit(ops)
    }

    fn load(&self) -> Result<Vec<NoticeRecord>, StoreError> {
        self.writer.barrier()?;
        read_notices(&self.db)
    }
}

/// Every record, oldest first, as applied in `db`.
pub fn read_notices(db: &DB) -> Result<Vec<NoticeRecord>, StoreError> {
    decode_family(db, NOTICES)
}

fn add_op(db: &DB, batch: &mut WriteBatch, op: &NoticeOp) -> Result<(), StoreError> {
    add_change(db, batch, &change(op))
}

/// What `op` writes, as physical changes to the notice database.
pub fn change(op: &NoticeOp) -> Change {
    match op {
        NoticeOp::Put(record) => Change::put(
            NOTICES,
            record.notice.key().as_bytes(),
            codec::encode(record),
        ),
        NoticeOp::Delete(key) => Change::delete(NOTICES, key.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::notice::{Channel, Delivery, Notice, NoticeKind};

    #[tokio::test]
    async fn notices_and_their_deliveries_survive_reopening_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let record = |at_ms: i64| NoticeRecord {
            notice: Notice {
                job: "j".into(),
                kind: NoticeKind::Failed,
                target_ms: at_ms,
                at_ms,
                owner: "ops@example.com".into(),
                webhooks: vec![],
                attempt: 0,
                task_id: None,
                exit_code: Some(1),
                message: "exited with code 1".into(),
                count: 1,
                stderr_tail: "boom".into(),
            },
            deliveries: vec![Delivery::queued(Channel::Email)],
        };
        {
            let store = RocksNoticeStore::open(dir.path()).unwrap();
            let ops = vec![NoticeOp::Put(record(20_000)), NoticeOp::Put(record(3_000))];
            store.submit(ops).await.unwrap().unwrap();
        }
        let store = RocksNoticeStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded, [record(3_000), record(20_000)]);
        let delete = vec![NoticeOp::Delete(record(3_000).notice.key())];
        store.submit(delete).await.unwrap().unwrap();
        assert_eq!(store.load().unwrap(), [record(20_000)]);
    }
}
