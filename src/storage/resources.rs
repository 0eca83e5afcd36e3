//! The server's resource store on RocksDB (`data/resources`): satisfied resources, and the
//! events the bus has not finished applying or publishing.
//!
//! | family      | key                           | value            |
//! |-------------|-------------------------------|------------------|
//! | `resources` | resource id                   | `ResourceRecord` |
//! | `pending`   | event key (`ResourceEvent::key`) | `PendingEvent` |

use std::path::Path;
use std::sync::Arc;

use dron_actors::store::{Durable, ResourceOp, ResourceStore, StoreError};
use dron_model::codec;
use dron_model::resource::{PendingEvent, ResourceRecord};
use rocksdb::{DB, WriteBatch};

use super::change::{Change, add_change};
use super::rocks::{Reads, decode_family, open_db, scan_once};
use super::writer::{AfterFailure, Writer, backend, family};

const RESOURCES: &str = "resources";
const PENDING: &str = "pending";
/// Every column family of the resource database.
pub const FAMILIES: &[&str] = &[RESOURCES, PENDING];
/// How the resource database is read.
pub const READS: Reads = Reads::PointLookups;

pub struct RocksResourceStore {
    writer: Writer<ResourceOp>,
    db: Arc<DB>,
}

impl RocksResourceStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Arc::new(open_db(path, FAMILIES, READS)?);
        let writer = Writer::spawn(
            "resource-writer".into(),
            db.clone(),
            add_op,
            AfterFailure::Continue,
        )?;
        Ok(RocksResourceStore { writer, db })
    }

    /// The database, for reads outside the event bus (retention, backups).
    pub fn db(&self) -> Arc<DB> {
        self.db.clone()
    }

    /// Holds this store's writes (after those queued before) until the guard is dropped.
    pub fn pause(&self) -> Result<super::writer::Paused, StoreError> {
        self.writer.pause()
    }
}

impl ResourceStore for RocksResourceStore {
    fn submit(&self, ops: Vec<ResourceOp>) -> Durable {
        self.writer.submit(ops)
    }

    fn get(&self, resource: &str) -> Result<Option<ResourceRecord>, StoreError> {
        get_resource(&self.db, resource)
    }

    fn pending(&self) -> Result<Vec<PendingEvent>, StoreError> {
        self.writer.barrier()?;
        read_pending(&self.db)
    }

    fn pending_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        self.writer.barrier()?;
        read_pending_page(&self.db, after, limit)
    }
}

/// A satisfied resource, as applied in `db`.
pub fn get_resource(db: &DB, resource: &str) -> Result<Option<ResourceRecord>, StoreError> {
    let cf = family(db, RESOURCES)?;
    let Some(bytes) = db
        .get_pinned_cf(cf, resource.as_bytes())
        .map_err(backend("reading a resource"))?
    else {
        return Ok(None);
    };
    codec::decode(&bytes)
        .map(Some)
        .map_err(|error| StoreError::decode(format!("{RESOURCES}/{resource}"), error))
}

/// Events not yet applied everywhere or published, as applied in `db`.
pub fn read_pending(db: &DB) -> Result<Vec<PendingEvent>, StoreError> {
    decode_family(db, PENDING)
}

/// At most `limit` pending events after the key `after` (exclusive; None: from the first).
pub fn read_pending_page(
    db: &DB,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<PendingEvent>, StoreError> {
    let cf = family(db, PENDING)?;
    let mut iter = db.raw_iterator_cf(cf);
    seek_after(&mut iter, after);
    let mut page = Vec::new();
    while page.len() < limit {
        let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
            iter.status().map_err(backend("scanning pending events"))?;
            break;
        };
        let pending = codec::decode(value).map_err(|error| {
            StoreError::decode(format!("{PENDING}/{}", String::from_utf8_lossy(key)), error)
        })?;
        page.push(pending);
        iter.next();
    }
    Ok(page)
}

/// Puts `iter` on the first key after `after` (exclusive), or the first key.
fn seek_after(iter: &mut rocksdb::DBRawIterator<'_>, after: Option<&str>) {
    match after {
        Some(after) => {
            iter.seek(after.as_bytes());
            if iter.key() == Some(after.as_bytes()) {
                iter.next();
            }
        }
        None => iter.seek_to_first(),
    }
}

fn add_op(db: &DB, batch: &mut WriteBatch, op: &ResourceOp) -> Result<(), StoreError> {
    add_change(db, batch, &change(op))
}

/// What `op` writes, as physical changes to the resource database.
pub fn change(op: &ResourceOp) -> Change {
    match op {
        ResourceOp::Satisfy(record) => {
            Change::put(RESOURCES, record.resource.as_bytes(), codec::encode(record))
        }
        ResourceOp::PutPending(pending) => Change::put(
            PENDING,
            pending.event.key().as_bytes(),
            codec::encode(pending),
        ),
        ResourceOp::DeletePending(key) => Change::delete(PENDING, key.as_bytes()),
        ResourceOp::Expire(record) => Change::DeleteIfUnchanged {
            family: RESOURCES.into(),
            key: record.resource.as_bytes().to_vec(),
            value: codec::encode(record),
        },
    }
}

/// Satisfied resources whose time is before `before_ms`, among at most `limit` read from
/// after the resource `after` (exclusive) on, and the resource to go on after (None: the scan
/// reached the end).
pub fn expired_resources(
    db: &DB,
    after: Option<&str>,
    before_ms: i64,
    limit: usize,
) -> Result<(Vec<ResourceRecord>, Option<String>), StoreError> {
    let cf = family(db, RESOURCES)?;
    let mut iter = db.raw_iterator_cf_opt(cf, scan_once());
    seek_after(&mut iter, after);
    let mut expired = Vec::new();
    let mut last = None;
    for _ in 0..limit {
        let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
            iter.status().map_err(backend("scanning resources"))?;
            return Ok((expired, None));
        };
        let resource = String::from_utf8_lossy(key).into_owned();
        let record: ResourceRecord = codec::decode(value)
            .map_err(|error| StoreError::decode(format!("{RESOURCES}/{resource}"), error))?;
        if record.at_ms < before_ms {
            expired.push(record);
        }
        last = Some(resource);
        iter.next();
    }
    Ok((expired, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::resource::ResourceEvent;

    #[tokio::test]
    async fn old_resources_are_found_in_batches_and_expire_unless_satisfied_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksResourceStore::open(dir.path()).unwrap();
        let record = |resource: &str, at_ms: i64, meta: &str| ResourceRecord {
            resource: resource.into(),
            at_ms,
            recorded_ms: at_ms,
            meta_json: meta.into(),
        };
        let ops = ["a", "b", "c"].map(|r| ResourceOp::Satisfy(record(r, 5, "{}")));
        let mut ops = ops.to_vec();
        ops.push(ResourceOp::Satisfy(record("young", 50, "{}")));
        store.submit(ops).await.unwrap().unwrap();
        let db = store.db();
        let (first, next) = expired_resources(&db, None, 10, 2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(next.as_deref(), Some("b"));
        let (rest, next) = expired_resources(&db, Some("b"), 10, 10).unwrap();
        assert_eq!(rest, [record("c", 5, "{}")], "young is read, not expired");
        assert_eq!(next, None);

        // "b" is satisfied again (another record) between the read and the expiry: it stays.
        let again = ResourceOp::Satisfy(record("b", 5, "{\"again\":1}"));
        store.submit(vec![again]).await.unwrap().unwrap();
        let expire = first.into_iter().map(ResourceOp::Expire).collect();
        store.submit(expire).await.unwrap().unwrap();
        assert!(store.get("a").unwrap().is_none());
        assert_eq!(store.get("b").unwrap().unwrap().meta_json, "{\"again\":1}");
    }

    #[tokio::test]
    async fn satisfied_resources_and_pending_events_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let event = ResourceEvent::ready("hive:t/ds=2026-11-23", Some(5));
        {
            let store = RocksResourceStore::open(dir.path()).unwrap();
            let record = ResourceRecord {
                resource: event.resource.clone(),
                at_ms: 5,
                recorded_ms: 6,
                meta_json: "{\"rows\":1}".into(),
            };
            let pending = PendingEvent {
                event: event.clone(),
                apply: true,
                publish: false,
            };
            let ops = vec![ResourceOp::Satisfy(record), ResourceOp::PutPending(pending)];
            store.submit(ops).await.unwrap().unwrap();
        }
        let store = RocksResourceStore::open(dir.path()).unwrap();
        let record = store.get("hive:t/ds=2026-11-23").unwrap().unwrap();
        assert_eq!(record.meta_json, "{\"rows\":1}");
        assert!(store.get("hive:t/ds=2026-11-24").unwrap().is_none());
        assert_eq!(store.pending().unwrap()[0].event, event);
        let delete = vec![ResourceOp::DeletePending(event.key())];
        store.submit(delete).await.unwrap().unwrap();
        assert!(store.pending().unwrap().is_empty());
    }
}
