//! A shard's storage on RocksDB: one database per shard, six column families.
//!
//! | family      | key                                   | value                      |
//! |-------------|---------------------------------------|----------------------------|
//! | `jobs`      | job name                              | `JobRecord`                |
//! | `instances` | instance id (`job@target_ms`)         | live `InstanceRecord`      |
//! | `history`   | job name, 0x00, target (8 bytes, BE)  | `HistoryEntry`             |
//! | `outbox`    | event key (`ResourceEvent::key`)      | `ResourceEvent` for the bus |
//! | `notices`   | notice key (`Notice::key`)            | `Notice` for the notifier  |
//! | `backfills` | job, 0x00, id [, 0x00, target (BE)]   | `BackfillEntry`: a plan, a target |
//!
//! Values are postcard behind a version byte (`dron_model::codec`). There is no timer family:
//! each job's next fire time is in its record, and the coordinator rebuilds its timer index
//! from the jobs on start-up, so timers can never disagree with jobs.
//!
//! One writer thread per shard applies batches in submission order with group commit (see
//! [`super::writer`]): under load many API calls share a sync, and none is acknowledged
//! before its sync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use dron_actors::store::{Durable, ShardSnapshot, ShardStore, StoreError, StoreOp};
use dron_model::codec;
use dron_model::instance::HistoryEntry;
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};

use super::change::{Change, add_change};
use super::writer::{AfterFailure, Writer, backend, family};

const JOBS: &str = "jobs";
const INSTANCES: &str = "instances";
const HISTORY: &str = "history";
const OUTBOX: &str = "outbox";
const NOTICES: &str = "notices";
const BACKFILLS: &str = "backfills";
/// Every column family of a shard's database.
pub const FAMILIES: &[&str] = &[JOBS, INSTANCES, HISTORY, OUTBOX, NOTICES, BACKFILLS];

pub struct RocksShardStore {
    // Dropped first: the writer finishes its queue while the database is still open.
    writer: Writer<StoreOp>,
    db: Arc<DB>,
}

impl RocksShardStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Arc::new(open_db(path, FAMILIES, Reads::Scans)?);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let writer = Writer::spawn(
            format!("shard-writer-{name}"),
            db.clone(),
            add_op,
            AfterFailure::RefuseUntilReload,
        )?;
        Ok(RocksShardStore { writer, db })
    }

    /// The database, for reads outside the coordinator (retention, backups).
    pub fn db(&self) -> Arc<DB> {
        self.db.clone()
    }

    /// Holds this shard's writes (after those queued before) until the guard is dropped.
    pub fn pause(&self) -> Result<super::writer::Paused, StoreError> {
        self.writer.pause()
    }
}

/// Each column family's memtable is flushed at this size.
const MEMTABLE_BYTES: usize = 4 << 20;
/// All memtables of one database together.
const DB_MEMTABLES_BYTES: usize = 16 << 20;

/// The block cache every database of the process shares. Without one RocksDB gives each
/// database a 32 MB cache of its own: a single server has one database per shard (two per
/// core by default, up to 64) plus resources, notices and agent tokens (seven on two cores),
/// a cluster server more, and history trims and retention's scans filled them all: ~160 MB of a server's heap, profiled with heaptrack
/// under overload (docs/benchmarks.md, fourteenth session).
const BLOCK_CACHE_BYTES: usize = 32 << 20;

fn block_cache() -> &'static rocksdb::Cache {
    static CACHE: std::sync::OnceLock<rocksdb::Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES))
}

/// glibc malloc arenas RocksDB's C++ may use (dron's own heap is mimalloc's). glibc gives
/// each thread that finds the others' arenas busy a new one, up to eight per core, and keeps
/// what each frees for that arena alone: at 32,000 runs a second, sixteen arenas held 187 MB
/// for 104 MB in use after two and a half minutes; with two, 130 MB for 85 MB
/// (docs/benchmarks.md, eighteenth session).
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's arenas (called once, before the first database starts its threads), unless
/// the operator set `MALLOC_ARENA_MAX` (which glibc then reads itself).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of the allocator; it is thread-safe.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

/// How a database is read besides full scans.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Scans and range reads only (shards: recovery, history).
    Scans,
    /// Point lookups too, mostly of keys that are absent (the resource store's duplicate
    /// check of every announcement): bloom filters in tables and memtables answer those
    /// without searching. Profiled at 12,000 runs/s, the searches were ~8 % of the server.
    PointLookups,
}

/// Opens (or creates) a database with these column families, LZ4-compressed.
pub fn open_db(path: &Path, families: &[&str], reads: Reads) -> Result<DB, StoreError> {
    static ARENAS_LIMITED: std::sync::Once = std::sync::Once::new();
    ARENAS_LIMITED.call_once(limit_malloc_arenas);
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Memtables are memory the process keeps: RocksDB's 64 MB per family let eight shards
    // of a million jobs hold ~200 MB of them. Smaller ones flush sooner, bounded per database.
    options.set_write_buffer_size(MEMTABLE_BYTES);
    options.set_db_write_buffer_size(DB_MEMTABLES_BYTES);
    let mut tables = rocksdb::BlockBasedOptions::default();
    tables.set_block_cache(block_cache());
    if reads == Reads::PointLookups {
        tables.set_bloom_filter(10.0, false);
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(0.05);
    }
    options.set_block_based_table_factory(&tables);
    let families = families
        .iter()
        .map(|name| rocksdb::ColumnFamilyDescriptor::new(*name, options.clone()));
    DB::open_cf_descriptors(&options, path, families).map_err(backend("opening the database"))
}

/// Read options for a scan that reads each block once (recovery, retention's passes): its
/// blocks would only push out of the shared cache those that are read again.
pub fn scan_once() -> rocksdb::ReadOptions {
    let mut scan = rocksdb::ReadOptions::default();
    scan.fill_cache(false);
    scan
}

/// Every value of a column family, decoded.
pub fn decode_family<T: codec::Stored>(db: &DB, name: &'static str) -> Result<Vec<T>, StoreError> {
    let cf = family(db, name)?;
    let mut values = Vec::new();
    for item in db.iterator_cf_opt(cf, scan_once(), IteratorMode::Start) {
        let (key, value) = item.map_err(backend("scanning"))?;
        let record = codec::decode(&value).map_err(|error| {
            StoreError::decode(format!("{name}/{}", String::from_utf8_lossy(&key)), error)
        })?;
        values.push(record);
    }
    Ok(values)
}

impl ShardStore for RocksShardStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Durable {
        self.writer.submit(ops)
    }

    fn load(&self) -> Result<ShardSnapshot, StoreError> {
        self.writer.barrier()?;
        load_shard(&self.db)
    }

    fn wait_applied(&self) -> Result<(), StoreError> {
        self.writer.applied()
    }

    fn out_of_space(&self) -> bool {
        self.writer.out_of_space()
    }

    fn probe_space(&self) -> Result<(), StoreError> {
        self.writer.probe()
    }

    fn history(&self, job: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        read_history(&self.db, job, limit)
    }
}

/// Everything a coordinator rebuilds its memory from, as applied in `db`.
pub fn load_shard(db: &DB) -> Result<ShardSnapshot, StoreError> {
    Ok(ShardSnapshot {
        jobs: decode_family(db, JOBS)?,
        instances: decode_family(db, INSTANCES)?,
        announcements: decode_family(db, OUTBOX)?,
        notices: decode_family(db, NOTICES)?,
        // Keys sort each plan before its targets.
        backfills: decode_family(db, BACKFILLS)?,
    })
}

/// The newest `limit` history entries of `job` in `db`, newest first.
pub fn read_history(db: &DB, job: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
    let cf = family(db, HISTORY)?;
    let prefix = history_prefix(job);
    let end = history_prefix_end(job);
    let mut entries = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse)) {
        let (key, value) = item.map_err(backend("reading history"))?;
        if !key.starts_with(&prefix) || entries.len() == limit {
            break;
        }
        let entry = codec::decode(&value)
            .map_err(|error| StoreError::decode(format!("{HISTORY}/{job}"), error))?;
        entries.push(entry);
    }
    Ok(entries)
}

fn add_op(db: &DB, batch: &mut WriteBatch, op: &StoreOp) -> Result<(), StoreError> {
    add_change(db, batch, &change(op))
}

/// What `op` writes, as physical changes to the shard's database.
pub fn change(op: &StoreOp) -> Change {
    match op {
        StoreOp::PutJob(job) => Change::put(JOBS, job.spec.name.as_bytes(), codec::encode(job)),
        StoreOp::DeleteJob(name) => Change::delete(JOBS, name.as_bytes()),
        StoreOp::PutInstance(instance) => {
            Change::put(INSTANCES, instance.id().as_bytes(), codec::encode(instance))
        }
        StoreOp::DeleteInstance(id) => Change::delete(INSTANCES, id.as_bytes()),
        StoreOp::AppendHistory(entry) => Change::Put {
            family: HISTORY.into(),
            key: history_key(entry.job(), entry.target_ms()),
            value: codec::encode(entry),
        },
        StoreOp::DeleteHistory { job } => Change::DeleteRange {
            family: HISTORY.into(),
            from: history_prefix(job),
            to: history_prefix_end(job),
        },
        StoreOp::TrimHistory { job, keep } => Change::TrimHistory {
            job: job.clone(),
            keep: *keep as u64,
        },
        StoreOp::PruneHistory {
            job,
            keep,
            before_ms,
        } => Change::PruneHistory {
            job: job.clone(),
            keep: *keep as u64,
            before_ms: *before_ms,
        },
        StoreOp::PutAnnouncement(event) => {
            Change::put(OUTBOX, event.key().as_bytes(), codec::encode(event))
        }
        StoreOp::DeleteAnnouncement(key) => Change::delete(OUTBOX, key.as_bytes()),
        StoreOp::PutNotice(notice) => {
            Change::put(NOTICES, notice.key().as_bytes(), codec::encode(notice))
        }
        StoreOp::DeleteNotice(key) => Change::delete(NOTICES, key.as_bytes()),
        StoreOp::PutBackfill(entry) => Change::Put {
            family: BACKFILLS.into(),
            key: dron_actors::store::backfill_key(entry),
            value: codec::encode(entry),
        },
        StoreOp::DeleteBackfills { job, id } => {
            let (from, to) = dron_actors::store::backfill_range(job, id.as_deref());
            Change::DeleteRange {
                family: BACKFILLS.into(),
                from,
                to,
            }
        }
    }
}

/// Deletes all but the newest `keep` history entries of `job`.
pub(super) fn trim_history(
    db: &DB,
    batch: &mut WriteBatch,
    job: &str,
    keep: usize,
) -> Result<(), StoreError> {
    let cf = family(db, HISTORY)?;
    let prefix = history_prefix(job);
    let end = history_prefix_end(job);
    let newest_first = db.iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse));
    let mut kept = 0;
    for item in newest_first {
        let (key, _) = item.map_err(backend("reading history to trim"))?;
        if !key.starts_with(&prefix) {
            break;
        }
        kept += 1;
        if kept > keep {
            // Everything from this key down is older than what is kept.
            batch.delete_range_cf(cf, prefix.as_slice(), key.as_ref());
            batch.delete_cf(cf, key.as_ref());
            break;
        }
    }
    Ok(())
}

/// Deletes the history entries of `job` with a target before `before_ms`, except the newest
/// `keep`: one range deletion, from the job's first key to the older of the first kept key
/// and the first key at `before_ms`.
pub(super) fn prune_history(
    db: &DB,
    batch: &mut WriteBatch,
    job: &str,
    keep: usize,
    before_ms: i64,
) -> Result<(), StoreError> {
    let cf = family(db, HISTORY)?;
    let prefix = history_prefix(job);
    let mut end = history_key(job, before_ms);
    if keep > 0 {
        let newest_first = db.iterator_cf(
            cf,
            IteratorMode::From(&history_prefix_end(job), Direction::Reverse),
        );
        let mut kept = 0;
        let mut oldest_kept = None;
        for item in newest_first {
            let (key, _) = item.map_err(backend("reading history to prune"))?;
            if !key.starts_with(&prefix) {
                break;
            }
            kept += 1;
            oldest_kept = Some(key);
            if kept == keep {
                break;
            }
        }
        match oldest_kept {
            // Fewer entries than kept: nothing goes.
            _ if kept < keep => return Ok(()),
            Some(key) if key.as_ref() < end.as_slice() => end = key.to_vec(),
            _ => {}
        }
    }
    batch.delete_range_cf(cf, prefix.as_slice(), end.as_slice());
    Ok(())
}

/// Jobs of the shard in `db` whose oldest history entry is before `before_ms`, from `after`
/// (exclusive) on, at most `limit` of them, and the job to go on after. Reads one key per job.
pub fn jobs_with_old_history(
    db: &DB,
    after: Option<&str>,
    before_ms: i64,
    limit: usize,
) -> Result<(Vec<String>, Option<String>), StoreError> {
    let cf = family(db, HISTORY)?;
    let mut found = Vec::new();
    let mut from = after.map(history_prefix_end).unwrap_or_default();
    let mut last = None;
    let mut iter = db.raw_iterator_cf_opt(cf, scan_once());
    for _ in 0..limit {
        iter.seek(&from);
        let Some(key) = iter.key() else {
            iter.status().map_err(backend("reading history"))?;
            return Ok((found, None));
        };
        let Some(split) = key.iter().position(|b| *b == 0) else {
            return Ok((found, None)); // not a history key: nothing of ours after it
        };
        let job = String::from_utf8_lossy(&key[..split]).into_owned();
        if key.len() == split + 9 {
            let target = u64::from_be_bytes(key[split + 1..].try_into().expect("8 bytes"));
            if ((target ^ (1 << 63)) as i64) < before_ms {
                found.push(job.clone());
            }
        }
        from = history_prefix_end(&job);
        last = Some(job);
    }
    Ok((found, last))
}

/// How many history entries `job` has in `db` (for `dron gc --dry-run`), and how many of them
/// a [`StoreOp::PruneHistory`] with these settings would delete.
pub fn prunable_history(
    db: &DB,
    job: &str,
    keep: usize,
    before_ms: i64,
) -> Result<usize, StoreError> {
    let cf = family(db, HISTORY)?;
    let prefix = history_prefix(job);
    let end = history_key(job, before_ms);
    let mut old = 0;
    for item in db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, _) = item.map_err(backend("reading history"))?;
        if !key.starts_with(&prefix) || key.as_ref() >= end.as_slice() {
            break;
        }
        old += 1;
    }
    if old == 0 {
        return Ok(0);
    }
    let total = read_history_count(db, job, old + keep)?;
    Ok(old.min(total.saturating_sub(keep)))
}

/// The number of history entries of `job`, counting at most `limit`.
fn read_history_count(db: &DB, job: &str, limit: usize) -> Result<usize, StoreError> {
    let cf = family(db, HISTORY)?;
    let prefix = history_prefix(job);
    let mut count = 0;
    for item in db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, _) = item.map_err(backend("reading history"))?;
        if !key.starts_with(&prefix) || count == limit {
            break;
        }
        count += 1;
    }
    Ok(count)
}

fn history_prefix(job: &str) -> Vec<u8> {
    let mut key = job.as_bytes().to_vec();
    key.push(0);
    key
}

/// The first key after every history key of `job` (names contain no 0x00 or 0x01).
fn history_prefix_end(job: &str) -> Vec<u8> {
    let mut key = job.as_bytes().to_vec();
    key.push(1);
    key
}

fn history_key(job: &str, target_ms: i64) -> Vec<u8> {
    let mut key = history_prefix(job);
    // Flipping the sign bit makes big-endian bytes sort like the signed numbers.
    key.extend_from_slice(&((target_ms as u64) ^ (1 << 63)).to_be_bytes());
    key
}

/// Opens shards as `<root>/shard-NNN` and keeps the shard count in `<root>/shards.json`.
pub struct RocksStoreFactory {
    root: PathBuf,
    /// The shards it opened, while their coordinators hold them: retention and backups reach
    /// them here, without keeping one open when its coordinator lets it go.
    open: Mutex<BTreeMap<u32, Weak<RocksShardStore>>>,
}

impl RocksStoreFactory {
    pub fn new(root: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&root).map_err(backend("creating the shards directory"))?;
        Ok(RocksStoreFactory {
            root,
            open: Mutex::default(),
        })
    }

    /// The indexes of the shards open now.
    pub fn open_indexes(&self) -> Vec<u32> {
        let open = self.open.lock().expect("open shards lock");
        open.iter()
            .filter(|(_, store)| store.strong_count() > 0)
            .map(|(index, _)| *index)
            .collect()
    }

    /// A shard, if it is open now.
    pub fn open_shard(&self, index: u32) -> Option<Arc<RocksShardStore>> {
        let open = self.open.lock().expect("open shards lock");
        open.get(&index).and_then(Weak::upgrade)
    }

    /// The directory shards live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens a shard. Retention and backups hold a shard's previous store for a batch or a
    /// checkpoint (at most a few seconds): a coordinator restarted meanwhile waits for them to
    /// let its database go rather than fail on RocksDB's lock.
    fn reopen(&self, index: u32) -> Result<RocksShardStore, StoreError> {
        let held = || {
            let open = self.open.lock().expect("open shards lock");
            open.get(&index)
                .is_some_and(|store| store.strong_count() > 0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match RocksShardStore::open(&self.shard_dir(index)) {
                Err(_) if held() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return opened,
            }
        }
    }

    fn shard_dir(&self, index: u32) -> PathBuf {
        self.root.join(format!("shard-{index:03}"))
    }

    fn count_file(&self) -> PathBuf {
        self.root.join("shards.json")
    }
}

impl dron_actors::router::StoreFactory for RocksStoreFactory {
    fn open(&self, index: u32) -> Result<Arc<dyn ShardStore>, StoreError> {
        let store = Arc::new(self.reopen(index)?);
        let mut open = self.open.lock().expect("open shards lock");
        open.retain(|_, store| store.strong_count() > 0);
        open.insert(index, Arc::downgrade(&store));
        Ok(store)
    }

    fn existing(&self) -> Result<Vec<u32>, StoreError> {
        let mut found = Vec::new();
        let listing = "listing the shards directory";
        for entry in std::fs::read_dir(&self.root).map_err(backend(listing))? {
            let name = entry.map_err(backend(listing))?.file_name();
            let index = name
                .to_str()
                .and_then(|n| n.strip_prefix("shard-"))
                .and_then(|n| n.parse::<u32>().ok());
            found.extend(index);
        }
        found.sort_unstable();
        Ok(found)
    }

    fn remove(&self, index: u32) -> Result<(), StoreError> {
        std::fs::remove_dir_all(self.shard_dir(index)).map_err(backend("removing a shard"))
    }

    fn load_shard_count(&self) -> Result<Option<u32>, StoreError> {
        match std::fs::read_to_string(self.count_file()) {
            Ok(text) => Ok(Some(
                serde_json::from_str::<ShardCount>(&text)
                    .map_err(|error| StoreError::decode("shards.json", error))?
                    .shards,
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(backend("reading shards.json")(error)),
        }
    }

    fn save_shard_count(&self, count: u32) -> Result<(), StoreError> {
        let temporary = self.root.join("shards.json.tmp");
        let text = serde_json::to_string(&ShardCount { shards: count })
            .map_err(backend("encoding shards.json"))?;
        let writing = "writing shards.json";
        write_durably(&temporary, text.as_bytes()).map_err(backend(writing))?;
        std::fs::rename(&temporary, self.count_file()).map_err(backend(writing))?;
        std::fs::File::open(&self.root)
            .and_then(|dir| dir.sync_all())
            .map_err(backend(writing))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ShardCount {
    shards: u32,
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::instance::{InstanceRecord, RunCause};

    fn run(job: &str, target_ms: i64) -> HistoryEntry {
        HistoryEntry::Run(InstanceRecord::new(
            job,
            target_ms,
            RunCause::Schedule,
            target_ms,
        ))
    }

    #[tokio::test]
    async fn history_is_newest_first_per_job_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksShardStore::open(dir.path()).unwrap();
        let mut ops: Vec<StoreOp> = (0..20)
            .map(|t| StoreOp::AppendHistory(run("a", t * 1000 - 5000)))
            .collect();
        ops.push(StoreOp::AppendHistory(run("ab", 1)));
        store.submit(ops).await.unwrap().unwrap();
        let history = store.history("a", 3).unwrap();
        let targets: Vec<i64> = history.iter().map(|h| h.target_ms()).collect();
        assert_eq!(targets, vec![14_000, 13_000, 12_000]);
        store
            .submit(vec![StoreOp::TrimHistory {
                job: "a".into(),
                keep: 5,
            }])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.history("a", 100).unwrap().len(), 5);
        assert_eq!(
            store.history("ab", 100).unwrap().len(),
            1,
            "a prefix of another job's name is untouched"
        );
        store
            .submit(vec![StoreOp::DeleteHistory { job: "a".into() }])
            .await
            .unwrap()
            .unwrap();
        assert!(store.history("a", 100).unwrap().is_empty());
    }

    #[tokio::test]
    async fn pruning_keeps_each_jobs_newest_and_its_young_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksShardStore::open(dir.path()).unwrap();
        let a = (1..=10).map(|t| StoreOp::AppendHistory(run("a", t * 1000)));
        let b = (1..=3).map(|t| StoreOp::AppendHistory(run("b", t * 1000)));
        store.submit(a.chain(b).collect()).await.unwrap().unwrap();
        let db = store.db();
        assert_eq!(
            prunable_history(&db, "a", 3, 6000).unwrap(),
            5,
            "1000..5000"
        );
        assert_eq!(
            prunable_history(&db, "a", 8, 6000).unwrap(),
            2,
            "beyond the newest 8"
        );
        assert_eq!(
            prunable_history(&db, "b", 3, 6000).unwrap(),
            0,
            "only its newest"
        );
        let all = jobs_with_old_history(&db, None, 1500, 10).unwrap();
        assert_eq!(all, (vec!["a".to_string(), "b".to_string()], None));
        let first = jobs_with_old_history(&db, None, 1500, 1).unwrap();
        assert_eq!(first, (vec!["a".to_string()], Some("a".to_string())));
        let second = jobs_with_old_history(&db, Some("a"), 1500, 1).unwrap();
        assert_eq!(second.0, ["b"]);
        assert!(
            jobs_with_old_history(&db, None, 500, 10)
                .unwrap()
                .0
                .is_empty()
        );

        let prune = |job: &str, keep, before_ms| StoreOp::PruneHistory {
            job: job.into(),
            keep,
            before_ms,
        };
        let ops = vec![prune("a", 3, 6000), prune("b", 0, 2500)];
        store.submit(ops).await.unwrap().unwrap();
        let targets = |job| -> Vec<i64> {
            let history = store.history(job, 100).unwrap();
            history.iter().map(|h| h.target_ms()).collect()
        };
        assert_eq!(targets("a"), [10_000, 9_000, 8_000, 7_000, 6_000]);
        assert_eq!(targets("b"), [3_000]);
        // Fewer entries than kept: nothing goes, however old.
        store
            .submit(vec![prune("b", 2, 99_000)])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(targets("b"), [3_000]);
    }

    #[tokio::test]
    async fn what_was_acknowledged_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RocksShardStore::open(dir.path()).unwrap();
            let instance = InstanceRecord::new("job", 7, RunCause::Manual, 7);
            store
                .submit(vec![StoreOp::PutInstance(instance)])
                .await
                .unwrap()
                .unwrap();
        }
        let store = RocksShardStore::open(dir.path()).unwrap();
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.instances.len(), 1);
        assert_eq!(snapshot.instances[0].id(), "job@7");
    }
}
