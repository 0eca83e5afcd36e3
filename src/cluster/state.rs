//! A server's replicated state: the databases every server keeps a copy of and applies the
//! Raft log to (the shards, the resource store, the notice store, and a small meta database
//! for what no store holds: the shard count, the fencing epoch, known agents).
//!
//! Each database records the index of the last entry applied to it, in the same write as the
//! entry's changes, so an entry offered again is skipped where it was applied and applied
//! where it was not: apply is exactly once per database. The meta database's index, written
//! last, is the last entry applied.
//!
//! **Applying does not sync.** An entry is durable once it is in a quorum's synced logs: that
//! is what a write's acknowledgement promises, and a server's databases are a copy of its log
//! that can be made again from it. So applying writes without syncing (a process crash loses
//! nothing: the writes are in the OS), and [`ReplicatedState::make_durable`] syncs every
//! database now and then (every second, from the leadership task, and before a snapshot lets
//! the log behind it go), then records the *durable* index. That index is what Raft is told
//! is applied at start-up ([`super::raft::Applier::applied_index`]): after a machine crash,
//! the entries after it are offered again, and each database, which holds a prefix of its own
//! writes (RocksDB's WAL recovers to a point in time), skips those it has. Syncing on every
//! apply cost one fsync per database touched plus one, on every server, on the path of every
//! write (docs/benchmarks.md).
//!
//! Paths are the single server's (`shards/shard-NNN`, `resources`, `notifications`), plus
//! `cluster-meta`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use dron_actors::store::StoreError;
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};

use super::command::{Command, Db, Entry, MetaChange};
use crate::storage::agent_tokens::{self, AGENT_TOKENS, AgentTokenRecord};
use crate::storage::backup::{self, Part};
use crate::storage::change::{Change, add_change};
use crate::storage::rocks::{self, Reads, open_db};
use crate::storage::writer::{backend, family};
use crate::storage::{notices, resources};

/// The family, in every replicated database, holding the last applied index.
const APPLIED: &str = "applied";
const INDEX_KEY: &[u8] = b"index";
/// The meta database's families.
const META: &str = "meta";
const AGENTS: &str = "agents";
const SHARD_COUNT_KEY: &[u8] = b"shards";
/// In the meta database's applied family: the last index every database has synced.
const DURABLE_KEY: &[u8] = b"durable";
/// In the meta database's applied family: the index of a snapshot being installed.
const INSTALLING_KEY: &[u8] = b"installing";
/// Where a snapshot's checkpoints wait, in the data directory, until every database has them.
const INSTALLING_DIR: &str = "snapshot-installing";
/// The databases' directories in the data directory (and in a backup or a snapshot).
const META_DIR: &str = "cluster-meta";
const RESOURCES_DIR: &str = "resources";
const NOTICES_DIR: &str = "notifications";
const EPOCH_KEY: &[u8] = b"epoch";

pub struct ReplicatedState {
    root: PathBuf,
    meta: DB,
    resources: Arc<DB>,
    notices: Arc<DB>,
    shards: RwLock<BTreeMap<u32, Arc<DB>>>,
    /// Held while an entry is applied, a snapshot taken or installed: each sees whole entries.
    applying: Mutex<()>,
    /// Held while the durable index is decided and written (never waits for `applying`).
    durable: Mutex<()>,
}

impl ReplicatedState {
    pub fn open(data_dir: &Path) -> Result<ReplicatedState, StoreError> {
        let shards_dir = data_dir.join("shards");
        std::fs::create_dir_all(&shards_dir).map_err(backend("creating the shards directory"))?;
        let state = ReplicatedState {
            root: data_dir.to_path_buf(),
            meta: open_db(
                &data_dir.join(META_DIR),
                &[META, AGENTS, AGENT_TOKENS, APPLIED],
                Reads::Scans,
            )?,
            resources: Arc::new(open_replicated(
                &data_dir.join(RESOURCES_DIR),
                resources::FAMILIES,
                resources::READS,
            )?),
            notices: Arc::new(open_replicated(
                &data_dir.join(NOTICES_DIR),
                notices::FAMILIES,
                Reads::Scans,
            )?),
            shards: RwLock::default(),
            applying: Mutex::default(),
            durable: Mutex::default(),
        };
        for index in existing_shards(&shards_dir)? {
            state.shard(index)?;
        }
        state.resume_install()?;
        state.mark_synced_state_durable()?;
        Ok(state)
    }

    fn shard_dir(&self, index: u32) -> PathBuf {
        self.root.join("shards").join(format!("shard-{index:03}"))
    }

    /// A shard's database, created if it does not exist yet.
    pub fn shard(&self, index: u32) -> Result<Arc<DB>, StoreError> {
        if let Some(db) = self.shards.read().expect("shards lock").get(&index) {
            return Ok(db.clone());
        }
        let mut shards = self.shards.write().expect("shards lock");
        if let Some(db) = shards.get(&index) {
            return Ok(db.clone());
        }
        let db = Arc::new(open_replicated(
            &self.shard_dir(index),
            rocks::FAMILIES,
            Reads::Scans,
        )?);
        shards.insert(index, db.clone());
        Ok(db)
    }

    pub fn db(&self, db: Db) -> Result<Arc<DB>, StoreError> {
        match db {
            Db::Shard(index) => self.shard(index),
            Db::Resources => Ok(self.resources.clone()),
            Db::Notices => Ok(self.notices.clone()),
        }
    }

    /// A shard's database if it exists here (unlike [`ReplicatedState::shard`], never made).
    pub fn existing_shard(&self, index: u32) -> Option<Arc<DB>> {
        self.shards
            .read()
            .expect("shards lock")
            .get(&index)
            .cloned()
    }

    /// The resource database, always open.
    pub fn resources_db(&self) -> Arc<DB> {
        self.resources.clone()
    }

    /// The shards that have a database here.
    pub fn shard_indexes(&self) -> Vec<u32> {
        self.shards
            .read()
            .expect("shards lock")
            .keys()
            .copied()
            .collect()
    }

    pub fn shard_count(&self) -> Result<Option<u32>, StoreError> {
        Ok(read_u64(&self.meta, META, SHARD_COUNT_KEY)?.map(|n| n as u32))
    }

    /// The epoch of the latest leader's term, if any leader has recorded one.
    pub fn epoch(&self) -> Result<Option<u64>, StoreError> {
        read_u64(&self.meta, META, EPOCH_KEY)
    }

    pub fn known_agents(&self) -> Result<Vec<String>, StoreError> {
        let cf = family(&self.meta, AGENTS)?;
        let mut names = Vec::new();
        for item in self.meta.iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item.map_err(backend("reading known agents"))?;
            names.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(names)
    }

    /// A remote agent's credential, as committed.
    pub fn agent_token(&self, name: &str) -> Result<Option<AgentTokenRecord>, StoreError> {
        agent_tokens::read_token(&self.meta, name)
    }

    pub fn agent_tokens(&self) -> Result<Vec<(String, AgentTokenRecord)>, StoreError> {
        agent_tokens::list_tokens(&self.meta)
    }

    /// The index of the last entry applied to every database (not necessarily durable).
    pub fn last_applied(&self) -> Result<Option<u64>, StoreError> {
        read_u64(&self.meta, APPLIED, INDEX_KEY)
    }

    /// The index up to which every database is synced ([`ReplicatedState::make_durable`]).
    pub fn durable_applied(&self) -> Result<Option<u64>, StoreError> {
        read_u64(&self.meta, APPLIED, DURABLE_KEY)
    }

    /// A state written before applying stopped syncing has no durable index, and everything
    /// it applied was synced: it is all durable.
    fn mark_synced_state_durable(&self) -> Result<(), StoreError> {
        if self.durable_applied()?.is_some() {
            return Ok(());
        }
        match self.last_applied()? {
            Some(last) => self.record_durable(last),
            None => Ok(()),
        }
    }

    fn record_durable(&self, index: u64) -> Result<(), StoreError> {
        self.put_applied_synced(DURABLE_KEY, index, "recording the durable index")
    }

    /// Writes `key` of the meta database's applied family, synced.
    fn put_applied_synced(
        &self,
        key: &[u8],
        index: u64,
        doing: &'static str,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(family(&self.meta, APPLIED)?, key, index.to_be_bytes());
        self.meta
            .write_opt(batch, &synced())
            .map_err(backend(doing))
    }

    /// Syncs every database's log, then records the last applied index as durable: every
    /// entry up to it survives a machine crash. Cheap when nothing was applied since the last
    /// call. Applying goes on meanwhile.
    pub fn make_durable(&self) -> Result<Option<u64>, StoreError> {
        let _durable = self.durable.lock().expect("durable lock");
        // Read first: every database an entry up to `last` touched is open by now.
        let last = self.last_applied()?;
        let durable = self.durable_applied()?;
        let Some(last) = last.filter(|last| Some(*last) > durable) else {
            return Ok(durable);
        };
        self.with_parts(|parts| {
            parts.iter().try_for_each(|part| {
                part.db
                    .flush_wal(true)
                    .map_err(backend("syncing replicated writes"))
            })
        })?;
        self.record_durable(last)?;
        Ok(Some(last))
    }

    /// Applies the committed entry at `index` (see the module docs).
    pub fn apply_entry(&self, index: u64, payload: &[u8]) -> Result<(), StoreError> {
        self.apply_entries(&[(index, payload)])
    }

    /// Applies committed entries in order, unsynced (see the module docs): each entry's writes
    /// go to its databases with its index, unless a database has it already, then the meta
    /// database records the last index. Meta changes of entries the meta database has are
    /// not made again.
    pub fn apply_entries(&self, entries: &[(u64, &[u8])]) -> Result<(), StoreError> {
        let _applying = self.applying.lock().expect("apply lock");
        let applied = self.last_applied()?;
        let mut touched: BTreeMap<Db, Arc<DB>> = BTreeMap::new();
        let mut meta = WriteBatch::default();
        let mut last = None;
        for (index, payload) in entries {
            let meta_has_it = applied.is_some_and(|applied| applied >= *index);
            self.apply_one(*index, payload, &mut meta, &mut touched, meta_has_it)?;
            if !meta_has_it {
                last = Some(*index);
            }
        }
        let Some(last) = last else {
            return Ok(());
        };
        meta.put_cf(family(&self.meta, APPLIED)?, INDEX_KEY, last.to_be_bytes());
        self.meta
            .write(meta)
            .map_err(backend("applying a replicated entry"))
    }

    /// One entry: its writes to each database (unsynced), its meta changes into `meta`.
    fn apply_one(
        &self,
        index: u64,
        payload: &[u8],
        meta: &mut WriteBatch,
        touched: &mut BTreeMap<Db, Arc<DB>>,
        meta_has_it: bool,
    ) -> Result<(), StoreError> {
        let entry =
            Entry::decode(payload).map_err(|error| StoreError::decode("a Raft entry", error))?;
        let mut writes: BTreeMap<Db, Vec<&Change>> = BTreeMap::new();
        let mut removed = Vec::new();
        for command in &entry.commands {
            match command {
                Command::Write { db, changes } => writes.entry(*db).or_default().extend(changes),
                // Removing a shard is done again even where the meta database has the entry:
                // the entries offered again before it may have brought the shard back.
                Command::Meta(MetaChange::RemoveShard(index)) => removed.push(Db::Shard(*index)),
                Command::Meta(_) if meta_has_it => {}
                Command::Meta(change) => self.add_meta(meta, change, &mut removed)?,
            }
        }
        for (db, changes) in writes {
            if removed.contains(&db) {
                continue;
            }
            let handle = self.db(db)?;
            apply_writes(&handle, index, &changes)?;
            touched.insert(db, handle);
        }
        for shard in removed {
            if let Db::Shard(index) = shard {
                touched.remove(&shard);
                self.remove_shard(index)?;
            }
        }
        Ok(())
    }

    fn add_meta(
        &self,
        batch: &mut WriteBatch,
        change: &MetaChange,
        removed: &mut Vec<Db>,
    ) -> Result<(), StoreError> {
        let meta = family(&self.meta, META)?;
        match change {
            MetaChange::ShardCount(count) => {
                batch.put_cf(meta, SHARD_COUNT_KEY, u64::from(*count).to_be_bytes())
            }
            MetaChange::Epoch(epoch) => batch.put_cf(meta, EPOCH_KEY, epoch.to_be_bytes()),
            MetaChange::KnownAgent(name) => {
                batch.put_cf(family(&self.meta, AGENTS)?, name.as_bytes(), [])
            }
            MetaChange::AgentToken { name, token } => {
                agent_tokens::add_token(&self.meta, batch, name, token.as_ref())?
            }
            MetaChange::RemoveShard(index) => removed.push(Db::Shard(*index)),
        }
        Ok(())
    }

    fn remove_shard(&self, index: u32) -> Result<(), StoreError> {
        let db = self.shards.write().expect("shards lock").remove(&index);
        drop(db);
        match std::fs::remove_dir_all(self.shard_dir(index)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(backend("removing a shard")(error))
            }
            _ => Ok(()),
        }
    }

    /// Every database, as a checkpoint named by its path under the data directory.
    fn with_parts<T>(&self, use_parts: impl FnOnce(&[Part<'_>]) -> T) -> T {
        let shards: Vec<(u32, Arc<DB>)> = self
            .shards
            .read()
            .expect("shards lock")
            .iter()
            .map(|(index, db)| (*index, db.clone()))
            .collect();
        let mut parts = vec![
            Part {
                name: META_DIR.into(),
                db: &self.meta,
            },
            Part {
                name: RESOURCES_DIR.into(),
                db: &self.resources,
            },
            Part {
                name: NOTICES_DIR.into(),
                db: &self.notices,
            },
        ];
        for (index, db) in &shards {
            parts.push(Part {
                name: format!("shards/shard-{index:03}"),
                db,
            });
        }
        use_parts(&parts)
    }

    /// Flushes every database's memtables, so that the checkpoint of a snapshot, taken
    /// between two applied entries, has little left to flush.
    pub fn flush_all(&self) -> Result<(), StoreError> {
        self.with_parts(|parts| {
            parts.iter().try_for_each(|part| {
                part.db
                    .flush()
                    .map_err(backend("flushing before a snapshot"))
            })
        })
    }

    /// Checkpoints every database into `dir` between two applied entries, for a Raft
    /// snapshot: hard links to their table files (the memtables are flushed first).
    pub fn checkpoint(&self, dir: &Path) -> Result<u64, StoreError> {
        let (_, paused_ms) = self.with_parts(|parts| {
            backup::checkpoint_all(dir, parts, || Ok(self.applying.lock().expect("apply lock")))
        })?;
        Ok(paused_ms)
    }

    /// Replaces every database's content with the checkpoints in `dir` (a snapshot's, see
    /// [`ReplicatedState::checkpoint`]), which include every entry up to `index` (or further:
    /// a snapshot holds what was applied when it was taken). The databases stay open (the
    /// server's readers hold them): each one's families are emptied and refilled from its
    /// checkpoint in bounded batches, its applied index written last, synced. The checkpoints
    /// are first moved into the data directory and a mark written, so that an install cut
    /// short by a crash is finished when the state is opened again.
    pub fn install(&self, index: u64, dir: &Path) -> Result<(), StoreError> {
        let _applying = self.applying.lock().expect("apply lock");
        let _durable = self.durable.lock().expect("durable lock");
        let kept = self.root.join(INSTALLING_DIR);
        remove_dir(&kept)?;
        std::fs::rename(dir, &kept).map_err(backend("moving a snapshot's checkpoints"))?;
        self.put_applied_synced(INSTALLING_KEY, index, "marking a snapshot's install")?;
        self.finish_install(index)
    }

    /// Copies the checkpoints kept in the data directory into the databases, then removes
    /// them and the mark.
    fn finish_install(&self, index: u64) -> Result<(), StoreError> {
        let kept = self.root.join(INSTALLING_DIR);
        let meta = open_db(
            &kept.join(META_DIR),
            &[META, AGENTS, AGENT_TOKENS, APPLIED],
            Reads::Scans,
        )?;
        let applied = read_u64(&meta, APPLIED, INDEX_KEY)?
            .unwrap_or(index)
            .max(index);
        let in_snapshot = match std::fs::read_dir(kept.join("shards")) {
            Ok(_) => existing_shards(&kept.join("shards"))?,
            Err(_) => Vec::new(),
        };
        for shard in self.shard_indexes() {
            if !in_snapshot.contains(&shard) {
                self.remove_shard(shard)?;
            }
        }
        for shard in in_snapshot {
            let dir = kept.join("shards").join(format!("shard-{shard:03}"));
            let from = open_replicated(&dir, rocks::FAMILIES, Reads::Scans)?;
            copy_db(&from, &*self.shard(shard)?, rocks::FAMILIES, applied)?;
        }
        let resources_from = open_replicated(
            &kept.join(RESOURCES_DIR),
            resources::FAMILIES,
            resources::READS,
        )?;
        copy_db(
            &resources_from,
            &self.resources,
            resources::FAMILIES,
            applied,
        )?;
        let notices_from =
            open_replicated(&kept.join(NOTICES_DIR), notices::FAMILIES, Reads::Scans)?;
        copy_db(&notices_from, &self.notices, notices::FAMILIES, applied)?;
        // The meta database last: its applied index is the state's own.
        copy_db(&meta, &self.meta, &[META, AGENTS, AGENT_TOKENS], applied)?;
        drop((meta, resources_from, notices_from));
        remove_dir(&kept)?;
        let mut done = WriteBatch::default();
        done.put_cf(
            family(&self.meta, APPLIED)?,
            DURABLE_KEY,
            applied.to_be_bytes(),
        );
        done.delete_cf(family(&self.meta, APPLIED)?, INSTALLING_KEY);
        self.meta
            .write_opt(done, &synced())
            .map_err(backend("finishing a snapshot's install"))
    }

    /// Finishes a snapshot's install that a crash cut short (see [`ReplicatedState::install`]).
    fn resume_install(&self) -> Result<(), StoreError> {
        let Some(index) = read_u64(&self.meta, APPLIED, INSTALLING_KEY)? else {
            return Ok(());
        };
        if !self.root.join(INSTALLING_DIR).is_dir() {
            return Err(StoreError::backend("resuming a snapshot's install")(
                std::io::Error::other(format!(
                    "the install of a snapshot at index {index} was cut short and its \
                     checkpoints ({INSTALLING_DIR}) are gone: this server's state is torn; \
                     empty its data directory and add it to the cluster again"
                )),
            ));
        }
        tracing::warn!(
            index,
            "finishing the install of a snapshot a crash cut short"
        );
        self.finish_install(index)
    }
}

impl crate::storage::backup::BackupSource for ReplicatedState {
    /// Checkpoints every database between two applied entries (none is applied meanwhile).
    fn backup(&self, dir: &Path) -> Result<crate::storage::backup::Manifest, StoreError> {
        let (stores, paused_ms) = self.with_parts(|parts| {
            backup::checkpoint_all(dir, parts, || Ok(self.applying.lock().expect("apply lock")))
        })?;
        backup::finish(dir, backup::CLUSTER_NODE, stores, paused_ms)
    }
}

/// Turns a cluster node's restored state in `data_dir` into a single server's: each database
/// loses its applied index, and the meta database's shard count and known agents become
/// `shards/shards.json` and `known-agents`.
pub fn as_single_server(data_dir: &Path) -> Result<(), StoreError> {
    let meta_dir = data_dir.join("cluster-meta");
    let (count, agents, tokens) = {
        let families = [META, AGENTS, AGENT_TOKENS, APPLIED];
        let meta = open_db(&meta_dir, &families, Reads::Scans)?;
        let count = read_u64(&meta, META, SHARD_COUNT_KEY)?;
        let mut agents = Vec::new();
        for item in meta.iterator_cf(family(&meta, AGENTS)?, IteratorMode::Start) {
            let (key, _) = item.map_err(backend("reading known agents"))?;
            agents.push(String::from_utf8_lossy(&key).into_owned());
        }
        (count, agents, agent_tokens::list_tokens(&meta)?)
    };
    std::fs::remove_dir_all(&meta_dir).map_err(backend("removing the cluster's meta database"))?;
    let mut databases = vec![
        (
            data_dir.join("resources"),
            resources::FAMILIES,
            resources::READS,
        ),
        (
            data_dir.join("notifications"),
            notices::FAMILIES,
            Reads::Scans,
        ),
    ];
    for index in existing_shards(&data_dir.join("shards"))? {
        let dir = data_dir.join("shards").join(format!("shard-{index:03}"));
        databases.push((dir, rocks::FAMILIES, Reads::Scans));
    }
    for (path, families, reads) in databases {
        let mut db = open_replicated(&path, families, reads)?;
        db.drop_cf(APPLIED)
            .map_err(backend("dropping the applied index"))?;
    }
    if let Some(count) = count {
        use dron_actors::router::StoreFactory;
        let shards = rocks::RocksStoreFactory::new(data_dir.join("shards"))?;
        shards.save_shard_count(count as u32)?;
    }
    if !agents.is_empty() {
        std::fs::write(data_dir.join("known-agents"), agents.join("\n") + "\n")
            .map_err(backend("writing known agents"))?;
    }
    if !tokens.is_empty() {
        // The agents' credentials go with them: the single server's own token database.
        let db = open_db(
            &data_dir.join("agent-tokens"),
            &[AGENT_TOKENS],
            Reads::Scans,
        )?;
        let mut batch = rocksdb::WriteBatch::default();
        for (name, record) in &tokens {
            agent_tokens::add_token(&db, &mut batch, name, Some(record))?;
        }
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        db.write_opt(batch, &synced)
            .map_err(backend("writing the agents' credentials"))?;
    }
    Ok(())
}

/// What goes into one write while a snapshot is copied into a database.
const COPY_BATCH_BYTES: usize = 4 << 20;

/// Empties `families` of `to` and fills them with `from`'s pairs, in bounded batches, then
/// writes `applied` as `to`'s applied index, synced (which makes the batches before durable
/// too: one WAL).
fn copy_db(from: &DB, to: &DB, families: &[&'static str], applied: u64) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    for name in families {
        let everything = Change::DeleteRange {
            family: (*name).into(),
            // Keys are UTF-8 names (or start with one), and no UTF-8 byte is 0xff.
            from: Vec::new(),
            to: vec![0xff],
        };
        add_change(to, &mut batch, &everything)?;
        let target = family(to, name)?;
        let scan = crate::storage::rocks::scan_once();
        for item in from.iterator_cf_opt(family(from, name)?, scan, IteratorMode::Start) {
            let (key, value) = item.map_err(backend("reading a snapshot's checkpoint"))?;
            batch.put_cf(target, key, value);
            if batch.size_in_bytes() >= COPY_BATCH_BYTES {
                to.write(std::mem::take(&mut batch))
                    .map_err(backend("installing a snapshot"))?;
            }
        }
    }
    batch.put_cf(family(to, APPLIED)?, INDEX_KEY, applied.to_be_bytes());
    to.write_opt(batch, &synced())
        .map_err(backend("installing a snapshot"))
}

fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(backend("removing a snapshot's checkpoints")(error))
        }
        _ => Ok(()),
    }
}

/// One database's part of an entry, unless that database has applied it already; unsynced
/// (see the module docs).
fn apply_writes(db: &DB, index: u64, changes: &[&Change]) -> Result<(), StoreError> {
    if read_u64(db, APPLIED, INDEX_KEY)?.is_some_and(|applied| applied >= index) {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    for change in changes {
        add_change(db, &mut batch, change)?;
    }
    batch.put_cf(family(db, APPLIED)?, INDEX_KEY, index.to_be_bytes());
    db.write(batch)
        .map_err(backend("applying a replicated entry"))
}

fn open_replicated(path: &Path, families: &[&'static str], reads: Reads) -> Result<DB, StoreError> {
    let families: Vec<&str> = families.iter().copied().chain([APPLIED]).collect();
    open_db(path, &families, reads)
}

fn existing_shards(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let listing = "listing the shards directory";
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(backend(listing))? {
        let name = entry.map_err(backend(listing))?.file_name();
        found.extend(
            name.to_str()
                .and_then(|n| n.strip_prefix("shard-"))
                .and_then(|n| n.parse::<u32>().ok()),
        );
    }
    Ok(found)
}

fn read_u64(db: &DB, family_name: &'static str, key: &[u8]) -> Result<Option<u64>, StoreError> {
    let value = db
        .get_pinned_cf(family(db, family_name)?, key)
        .map_err(backend("reading replicated state"))?;
    Ok(value.and_then(|bytes| Some(u64::from_be_bytes(bytes.as_ref().try_into().ok()?))))
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// The Raft state machine's side of dron: committed entries go to the replicated databases.
impl super::raft::Applier for ReplicatedState {
    fn apply(&self, index: u64, payload: &[u8]) -> Result<(), StoreError> {
        self.apply_entry(index, payload)
    }

    fn apply_all(&self, entries: &[(u64, &[u8])]) -> Result<(), StoreError> {
        self.apply_entries(entries)
    }

    fn applied_index(&self) -> Result<Option<u64>, StoreError> {
        self.durable_applied()
    }

    fn prepare_snapshot(&self) -> Result<(), StoreError> {
        self.flush_all()
    }

    fn snapshot(&self, dir: &Path) -> Result<(), StoreError> {
        let paused_ms = self.checkpoint(dir)?;
        tracing::debug!(paused_ms, "checkpointed every database for a snapshot");
        // Raft drops the log behind the snapshot next: what it held must not need it again.
        self.make_durable()?;
        Ok(())
    }

    fn install(&self, index: u64, dir: &Path) -> Result<(), StoreError> {
        ReplicatedState::install(self, index, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_actors::store::StoreOp;
    use dron_model::instance::{HistoryEntry, InstanceRecord, RunCause};

    fn run(job: &str, target_ms: i64) -> StoreOp {
        StoreOp::AppendHistory(HistoryEntry::Run(InstanceRecord::new(
            job,
            target_ms,
            RunCause::Schedule,
            target_ms,
        )))
    }

    fn shard_write(index: u32, ops: &[StoreOp]) -> Command {
        Command::Write {
            db: Db::Shard(index),
            changes: ops.iter().map(rocks::change).collect(),
        }
    }

    fn entry(commands: Vec<Command>) -> Vec<u8> {
        Entry { commands }.encode()
    }

    /// A snapshot's checkpoints of `state`, in a new directory under `dir`.
    fn snapshot(state: &ReplicatedState, dir: &Path) -> PathBuf {
        static TAKEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let files = dir.join(format!("snapshot-{n}"));
        state.flush_all().unwrap();
        state.checkpoint(&files).unwrap();
        files
    }

    fn history(state: &ReplicatedState, index: u32, job: &str) -> Vec<i64> {
        let db = state.shard(index).unwrap();
        let entries = rocks::read_history(&db, job, 100).unwrap();
        entries.iter().map(|e| e.target_ms()).collect()
    }

    #[test]
    fn an_entry_offered_again_is_applied_once_and_trimming_is_the_same_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let state = ReplicatedState::open(dir.path()).unwrap();
        let appends: Vec<StoreOp> = (1..=4).map(|t| run("a", t)).collect();
        state
            .apply_entry(1, &entry(vec![shard_write(0, &appends)]))
            .unwrap();
        let trim = StoreOp::TrimHistory {
            job: "a".into(),
            keep: 2,
        };
        let entry_2 = entry(vec![
            shard_write(0, &[run("a", 5), trim]),
            Command::Meta(MetaChange::ShardCount(3)),
            Command::Meta(MetaChange::KnownAgent("w1".into())),
        ]);
        state.apply_entry(2, &entry_2).unwrap();
        // The trim read the database as it was before entry 2: 5 joins the 2 it kept.
        assert_eq!(history(&state, 0, "a"), vec![5, 4, 3]);
        // Offered again after a crash: skipped, so the trim does not run a second time.
        state.apply_entry(2, &entry_2).unwrap();
        assert_eq!(history(&state, 0, "a"), vec![5, 4, 3]);
        assert_eq!(state.last_applied().unwrap(), Some(2));
        assert_eq!(state.shard_count().unwrap(), Some(3));
        assert_eq!(state.known_agents().unwrap(), vec!["w1".to_string()]);
        // An empty payload is a barrier: applied, nothing changed.
        state.apply_entry(3, &[]).unwrap();
        assert_eq!(state.last_applied().unwrap(), Some(3));
    }

    #[test]
    fn a_nodes_backup_restores_as_a_single_servers_data_directory() {
        use crate::storage::backup::BackupSource;
        use dron_actors::router::StoreFactory;
        use dron_actors::store::ShardStore;
        let (node, backups, restored) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let state = ReplicatedState::open(node.path()).unwrap();
        let first = entry(vec![
            shard_write(1, &[run("a", 1), run("a", 2)]),
            Command::Meta(MetaChange::ShardCount(2)),
            Command::Meta(MetaChange::KnownAgent("w1".into())),
            Command::Meta(MetaChange::AgentToken {
                name: "w1".into(),
                token: Some(AgentTokenRecord {
                    hash: [7; 32],
                    created_ms: 1,
                }),
            }),
        ]);
        state.apply_entry(1, &first).unwrap();
        let backup = backups.path().join("b");
        let manifest = state.backup(&backup).unwrap();
        assert_eq!(manifest.kind, "cluster-node");
        // Applied after the backup: not in it.
        state
            .apply_entry(2, &entry(vec![shard_write(1, &[run("a", 3)])]))
            .unwrap();

        let data = restored.path().join("data");
        crate::storage::backup::restore(&backup, &data).unwrap();
        assert!(!data.join("cluster-meta").exists());
        let shard = rocks::RocksShardStore::open(&data.join("shards/shard-001")).unwrap();
        let targets: Vec<i64> = shard
            .history("a", 10)
            .unwrap()
            .iter()
            .map(|h| h.target_ms())
            .collect();
        assert_eq!(targets, [2, 1]);
        let factory = rocks::RocksStoreFactory::new(data.join("shards")).unwrap();
        assert_eq!(factory.load_shard_count().unwrap(), Some(2));
        assert_eq!(
            std::fs::read_to_string(data.join("known-agents")).unwrap(),
            "w1\n"
        );
        crate::storage::resources::RocksResourceStore::open(&data.join("resources"))
            .expect("opens as a single server's store");
        // The agents' credentials come along, in the single server's own store.
        use crate::storage::agent_tokens::AgentTokenStore;
        let tokens =
            crate::storage::agent_tokens::RocksAgentTokens::open(&data.join("agent-tokens"))
                .unwrap();
        assert_eq!(tokens.get("w1").unwrap().unwrap().hash, [7; 32]);
    }

    #[test]
    fn a_snapshot_restores_every_database_and_removes_what_it_lacks() {
        let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = ReplicatedState::open(from_dir.path()).unwrap();
        from.apply_entry(1, &entry(vec![shard_write(1, &[run("a", 1)])]))
            .unwrap();
        from.apply_entry(2, &entry(vec![Command::Meta(MetaChange::Epoch(42))]))
            .unwrap();
        let to = ReplicatedState::open(to_dir.path()).unwrap();
        // A shard the snapshot does not have, and a history entry it does not have.
        to.apply_entry(1, &entry(vec![shard_write(7, &[run("b", 1)])]))
            .unwrap();
        let files = snapshot(&from, from_dir.path());
        to.install(1, &files).unwrap();
        assert_eq!(to.shard_indexes(), vec![1]);
        assert_eq!(history(&to, 1, "a"), vec![1]);
        assert_eq!(to.epoch().unwrap(), Some(42));
        assert_eq!(
            to.last_applied().unwrap(),
            Some(2),
            "the snapshot's own index"
        );
        assert!(
            !files.exists(),
            "the checkpoints are moved away and removed"
        );
        assert!(!to_dir.path().join(INSTALLING_DIR).exists());
        assert!(!to_dir.path().join("shards/shard-007").exists());
        // Reopened, the restored state is what it was.
        drop(to);
        let again = ReplicatedState::open(to_dir.path()).unwrap();
        assert_eq!(history(&again, 1, "a"), vec![1]);
    }

    #[test]
    fn agent_tokens_are_replicated_revoked_and_carried_by_snapshots() {
        let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = ReplicatedState::open(from_dir.path()).unwrap();
        let token = |name: &str, hash: u8| {
            let token = Some(AgentTokenRecord {
                hash: [hash; 32],
                created_ms: 1,
            });
            let name = name.to_string();
            Command::Meta(MetaChange::AgentToken { name, token })
        };
        from.apply_entry(1, &entry(vec![token("w1", 1), token("w2", 2)]))
            .unwrap();
        let revoke = MetaChange::AgentToken {
            name: "w2".into(),
            token: None,
        };
        from.apply_entry(2, &entry(vec![Command::Meta(revoke)]))
            .unwrap();
        assert_eq!(from.agent_token("w1").unwrap().unwrap().hash, [1; 32]);
        assert_eq!(from.agent_token("w2").unwrap(), None);
        let to = ReplicatedState::open(to_dir.path()).unwrap();
        to.apply_entry(1, &entry(vec![token("w3", 3)])).unwrap();
        to.install(2, &snapshot(&from, from_dir.path())).unwrap();
        let names: Vec<String> = to
            .agent_tokens()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["w1".to_string()]);
    }

    #[test]
    fn an_install_cut_short_by_a_crash_is_finished_at_the_next_open() {
        let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = ReplicatedState::open(from_dir.path()).unwrap();
        let many: Vec<StoreOp> = (1..=2_000).map(|t| run("a", t)).collect();
        from.apply_entry(1, &entry(vec![shard_write(2, &many)]))
            .unwrap();
        from.apply_entry(2, &entry(vec![Command::Meta(MetaChange::Epoch(7))]))
            .unwrap();
        let files = snapshot(&from, from_dir.path());
        let to = ReplicatedState::open(to_dir.path()).unwrap();
        to.apply_entry(1, &entry(vec![shard_write(5, &[run("b", 1)])]))
            .unwrap();
        // What `install` does before it copies: the checkpoints moved in, the mark written.
        std::fs::rename(&files, to_dir.path().join(INSTALLING_DIR)).unwrap();
        to.put_applied_synced(INSTALLING_KEY, 2, "marking").unwrap();
        drop(to);

        let to = ReplicatedState::open(to_dir.path()).unwrap();
        assert_eq!(to.shard_indexes(), vec![2]);
        assert_eq!(history(&to, 2, "a").len(), 100, "read_history's limit");
        assert_eq!(to.epoch().unwrap(), Some(7));
        assert_eq!(to.last_applied().unwrap(), Some(2));
        assert_eq!(read_u64(&to.meta, APPLIED, INSTALLING_KEY).unwrap(), None);
        assert!(!to_dir.path().join(INSTALLING_DIR).exists());

        // A mark without its checkpoints: a clear refusal, not a torn state in silence.
        to.put_applied_synced(INSTALLING_KEY, 3, "marking").unwrap();
        drop(to);
        let error = ReplicatedState::open(to_dir.path()).err().expect("refused");
        assert!(error.to_string().contains("cut short"), "{error}");
    }

    /// A machine crash may leave a database without the tail of its unsynced writes while
    /// another kept them: the entries after the durable index are offered again, each database
    /// takes those it lacks, and meta changes are not made twice.
    #[test]
    fn entries_after_the_durable_index_are_taken_again_by_the_databases_that_lost_them() {
        let dir = tempfile::tempdir().unwrap();
        let state = ReplicatedState::open(dir.path()).unwrap();
        state
            .apply_entry(1, &entry(vec![shard_write(0, &[run("a", 1)])]))
            .unwrap();
        assert_eq!(
            state.durable_applied().unwrap(),
            None,
            "applying does not sync"
        );
        assert_eq!(state.make_durable().unwrap(), Some(1));
        let second = entry(vec![
            shard_write(0, &[run("a", 2)]),
            Command::Meta(MetaChange::KnownAgent("w2".into())),
        ]);
        state.apply_entry(2, &second).unwrap();
        use super::super::raft::Applier;
        assert_eq!(
            state.applied_index().unwrap(),
            Some(1),
            "Raft hears of the durable one"
        );
        assert_eq!(state.last_applied().unwrap(), Some(2));

        // The shard lost entry 2 (its WAL's unsynced tail); the meta database kept it.
        let shard = state.shard(0).unwrap();
        let lost = StoreOp::DeleteHistory { job: "a".into() };
        let mut batch = WriteBatch::default();
        add_change(&shard, &mut batch, &rocks::change(&lost)).unwrap();
        add_change(&shard, &mut batch, &rocks::change(&run("a", 1))).unwrap();
        batch.put_cf(
            family(&shard, APPLIED).unwrap(),
            INDEX_KEY,
            1u64.to_be_bytes(),
        );
        shard.write(batch).unwrap();
        drop(shard);
        assert_eq!(history(&state, 0, "a"), vec![1]);
        // Offered again after the durable index: the shard takes it, meta is unchanged.
        state.apply_entry(2, &second).unwrap();
        assert_eq!(history(&state, 0, "a"), vec![2, 1]);
        assert_eq!(state.known_agents().unwrap(), vec!["w2".to_string()]);
        assert_eq!(state.make_durable().unwrap(), Some(2));
        drop(state);
        let reopened = ReplicatedState::open(dir.path()).unwrap();
        assert_eq!(reopened.durable_applied().unwrap(), Some(2));
    }
}
