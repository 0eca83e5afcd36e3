//! A server's replicated state: the databases every server keeps a copy of and applies the
//! Raft log to (the shards, the resource store, the notice store, and a small meta database
//! for what no store holds: the shard count, the fencing epoch, known agents).
//!
//! Each database records the index of the last entry applied to it, in the same synced write
//! as the entry's changes, so an entry offered again after a crash is skipped where it was
//! applied and applied where it was not: apply is exactly once per database. The meta
//! database's index, written last, is the state's own.
//!
//! Paths are the single server's (`shards/shard-NNN`, `resources`, `notifications`), plus
//! `cluster-meta`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use dron_actors::store::StoreError;
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::command::{Command, Db, Entry, MetaChange};
use crate::storage::agent_tokens::{self, AGENT_TOKENS, AgentTokenRecord};
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
const EPOCH_KEY: &[u8] = b"epoch";

pub struct ReplicatedState {
    root: PathBuf,
    meta: DB,
    resources: Arc<DB>,
    notices: Arc<DB>,
    shards: RwLock<BTreeMap<u32, Arc<DB>>>,
    /// Held while an entry is applied, a snapshot taken or installed: each sees whole entries.
    applying: Mutex<()>,
}

impl ReplicatedState {
    pub fn open(data_dir: &Path) -> Result<ReplicatedState, StoreError> {
        let shards_dir = data_dir.join("shards");
        std::fs::create_dir_all(&shards_dir).map_err(backend("creating the shards directory"))?;
        let state = ReplicatedState {
            root: data_dir.to_path_buf(),
            meta: open_db(
                &data_dir.join("cluster-meta"),
                &[META, AGENTS, AGENT_TOKENS, APPLIED],
                Reads::Scans,
            )?,
            resources: Arc::new(open_replicated(
                &data_dir.join("resources"),
                resources::FAMILIES,
                resources::READS,
            )?),
            notices: Arc::new(open_replicated(
                &data_dir.join("notifications"),
                notices::FAMILIES,
                Reads::Scans,
            )?),
            shards: RwLock::default(),
            applying: Mutex::default(),
        };
        for index in existing_shards(&shards_dir)? {
            state.shard(index)?;
        }
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

    /// The index of the last entry applied to every database.
    pub fn last_applied(&self) -> Result<Option<u64>, StoreError> {
        read_u64(&self.meta, APPLIED, INDEX_KEY)
    }

    /// Applies the committed entry at `index` (see the module docs).
    pub fn apply_entry(&self, index: u64, payload: &[u8]) -> Result<(), StoreError> {
        self.apply_entries(&[(index, payload)])
    }

    /// Applies committed entries in order, with one sync per database touched: each entry's
    /// writes go to the databases unsynced (with its index), then every touched database's
    /// log is synced, then the meta database records the last index, synced. A crash before
    /// the end re-offers the entries, and each database skips those it has.
    pub fn apply_entries(&self, entries: &[(u64, &[u8])]) -> Result<(), StoreError> {
        let _applying = self.applying.lock().expect("apply lock");
        let applied = self.last_applied()?;
        let mut touched: BTreeMap<Db, Arc<DB>> = BTreeMap::new();
        let mut meta = WriteBatch::default();
        let mut last = None;
        for (index, payload) in entries {
            if applied.is_some_and(|applied| applied >= *index) {
                continue;
            }
            self.apply_one(*index, payload, &mut meta, &mut touched)?;
            last = Some(*index);
        }
        let Some(last) = last else {
            return Ok(());
        };
        for db in touched.values() {
            db.flush_wal(true)
                .map_err(backend("syncing replicated writes"))?;
        }
        meta.put_cf(family(&self.meta, APPLIED)?, INDEX_KEY, last.to_be_bytes());
        self.meta
            .write_opt(meta, &synced())
            .map_err(backend("applying a replicated entry"))
    }

    /// One entry: its writes to each database (unsynced), its meta changes into `meta`.
    fn apply_one(
        &self,
        index: u64,
        payload: &[u8],
        meta: &mut WriteBatch,
        touched: &mut BTreeMap<Db, Arc<DB>>,
    ) -> Result<(), StoreError> {
        let entry =
            Entry::decode(payload).map_err(|error| StoreError::decode("a Raft entry", error))?;
        let mut writes: BTreeMap<Db, Vec<&Change>> = BTreeMap::new();
        let mut removed = Vec::new();
        for command in &entry.commands {
            match command {
                Command::Write { db, changes } => writes.entry(*db).or_default().extend(changes),
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

    /// Every database's content, for a Raft snapshot.
    pub fn dump(&self) -> Result<Vec<u8>, StoreError> {
        let _applying = self.applying.lock().expect("apply lock");
        let mut dump = Dump {
            applied: self.last_applied()?,
            databases: vec![
                dump_db(None, &self.meta, &[META, AGENTS, AGENT_TOKENS])?,
                dump_db(Some(Db::Resources), &self.resources, resources::FAMILIES)?,
                dump_db(Some(Db::Notices), &self.notices, notices::FAMILIES)?,
            ],
        };
        for (index, db) in self.shards.read().expect("shards lock").iter() {
            dump.databases
                .push(dump_db(Some(Db::Shard(*index)), db, rocks::FAMILIES)?);
        }
        postcard::to_allocvec(&dump).map_err(backend("encoding a snapshot"))
    }

    /// Replaces every database's content with a snapshot's, which includes every entry up to
    /// `index` (or further: a snapshot is taken of what is applied when it is built).
    pub fn restore(&self, index: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let _applying = self.applying.lock().expect("apply lock");
        let dump: Dump =
            postcard::from_bytes(bytes).map_err(|error| StoreError::decode("a snapshot", error))?;
        let applied = dump.applied.unwrap_or(index).max(index);
        let in_dump: Vec<u32> = dump
            .databases
            .iter()
            .filter_map(|d| match d.db {
                Some(Db::Shard(index)) => Some(index),
                _ => None,
            })
            .collect();
        for index in self.shard_indexes() {
            if !in_dump.contains(&index) {
                self.remove_shard(index)?;
            }
        }
        for database in &dump.databases {
            match database.db {
                None => restore_db(&self.meta, database, applied)?,
                Some(db) => restore_db(&*self.db(db)?, database, applied)?,
            }
        }
        Ok(())
    }
}

impl crate::storage::backup::BackupSource for ReplicatedState {
    /// Checkpoints every database between two applied entries (none is applied meanwhile).
    fn backup(&self, dir: &Path) -> Result<crate::storage::backup::Manifest, StoreError> {
        use crate::storage::backup::{self, Part};
        let shards: Vec<(u32, Arc<DB>)> = self
            .shards
            .read()
            .expect("shards lock")
            .iter()
            .map(|(index, db)| (*index, db.clone()))
            .collect();
        let mut parts = vec![
            Part {
                name: "cluster-meta".into(),
                db: &self.meta,
            },
            Part {
                name: "resources".into(),
                db: &self.resources,
            },
            Part {
                name: "notifications".into(),
                db: &self.notices,
            },
        ];
        for (index, db) in &shards {
            parts.push(Part {
                name: format!("shards/shard-{index:03}"),
                db,
            });
        }
        let (stores, paused_ms) = backup::checkpoint_all(dir, &parts, || {
            Ok(self.applying.lock().expect("apply lock"))
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

/// What a snapshot holds: every key of every family of every database.
#[derive(Serialize, Deserialize)]
struct Dump {
    applied: Option<u64>,
    databases: Vec<DatabaseDump>,
}

/// A family's keys and values, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Serialize, Deserialize)]
struct DatabaseDump {
    /// None: the meta database.
    db: Option<Db>,
    families: Vec<(String, Pairs)>,
}

fn dump_db(
    which: Option<Db>,
    db: &DB,
    families: &[&'static str],
) -> Result<DatabaseDump, StoreError> {
    let mut dump = DatabaseDump {
        db: which,
        families: Vec::new(),
    };
    for name in families {
        let cf = family(db, name)?;
        let mut pairs = Vec::new();
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(backend("reading for a snapshot"))?;
            pairs.push((key.to_vec(), value.to_vec()));
        }
        dump.families.push((name.to_string(), pairs));
    }
    Ok(dump)
}

/// Empties the families the dump names and writes the dump's pairs, with `applied` as the
/// database's applied index, in one synced write.
fn restore_db(db: &DB, dump: &DatabaseDump, applied: u64) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    for (name, pairs) in &dump.families {
        let change = Change::DeleteRange {
            family: name.clone().into(),
            // Keys are UTF-8 names (or start with one), and no UTF-8 byte is 0xff.
            from: Vec::new(),
            to: vec![0xff],
        };
        add_change(db, &mut batch, &change)?;
        for (key, value) in pairs {
            let put = Change::Put {
                family: name.clone().into(),
                key: key.clone(),
                value: value.clone(),
            };
            add_change(db, &mut batch, &put)?;
        }
    }
    batch.put_cf(family(db, APPLIED)?, INDEX_KEY, applied.to_be_bytes());
    db.write_opt(batch, &synced())
        .map_err(backend("installing a snapshot"))
}

/// One database's part of an entry, unless that database has applied it already; unsynced
/// (the caller syncs once for many entries).
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
        self.last_applied()
    }

    fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        self.dump()
    }

    fn install(&self, index: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.restore(index, bytes)
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
        to.restore(1, &from.dump().unwrap()).unwrap();
        assert_eq!(to.shard_indexes(), vec![1]);
        assert_eq!(history(&to, 1, "a"), vec![1]);
        assert_eq!(to.epoch().unwrap(), Some(42));
        assert_eq!(to.last_applied().unwrap(), Some(2), "the dump's own index");
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
        to.restore(2, &from.dump().unwrap()).unwrap();
        let names: Vec<String> = to
            .agent_tokens()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["w1".to_string()]);
    }
}
