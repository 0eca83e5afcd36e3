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
use super::rocks::{Reads, decode_family, open_db};
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::resource::ResourceEvent;

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
