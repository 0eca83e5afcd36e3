//! Online backups (`dron backup DIR`, `POST /api/backup`) and restores (`dron restore`).
//!
//! A backup is a RocksDB checkpoint of every store, taken at one consistent cut while the
//! server goes on scheduling: each store's memtables are flushed first (so the cut itself is
//! short), then every store's writer is paused (what is submitted meanwhile waits in its
//! queue, none is refused), a checkpoint of each database is made (hard links to its table
//! files where `DIR` is on the same file system, copies elsewhere), and the writers go on.
//! The cut is the state a crash at that instant would have left, which dron recovers from.
//!
//! A cluster node's backup is its copy of the replicated state, taken between two applied
//! entries (src/cluster/state.rs); it is restored as a single server's data directory.
//!
//! Layout of `DIR`: the data directory's own (`shards/shard-NNN`, `shards/shards.json`,
//! `resources`, `notifications`, `agent-tokens`, `known-agents`, `server-id`), and
//! `backup.json`. Run
//! directories (task output) are not included.

use std::path::{Path, PathBuf};

use dron_actors::store::StoreError;
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use super::writer::backend;

/// The manifest, written last: a backup without one is incomplete.
pub const MANIFEST: &str = "backup.json";
/// Small files of a single server's data directory a backup copies as they are.
const FILES: &[&str] = &["shards/shards.json", "known-agents", "server-id"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `server` or `cluster-node`.
    pub kind: String,
    /// When the cut was taken (RFC 3339).
    pub taken_at: String,
    /// The databases, as paths under the backup directory.
    pub stores: Vec<String>,
    /// What the stores hold on disk.
    pub bytes: u64,
    /// How long writes were held, in milliseconds.
    pub paused_ms: u64,
}

/// Something whose stores can be backed up while it runs.
pub trait BackupSource: Send + Sync + 'static {
    /// Writes a backup into `dir` (empty or absent). Blocking: call it on a blocking thread.
    fn backup(&self, dir: &Path) -> Result<Manifest, StoreError>;
}

/// Why a backup or a restore was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{0} is not empty: a backup goes into a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("{0} is not a dron backup (it has no {MANIFEST}): {1}")]
    NoManifest(PathBuf, String),
}

/// Makes `dir` ready to receive a backup or a restored data directory: absolute, and new or
/// empty.
pub fn prepare_empty(dir: &Path) -> Result<(), Refused> {
    if !dir.is_absolute() {
        return Err(Refused::NotAbsolute(dir.to_path_buf()));
    }
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(Refused::NotEmpty(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(|error| Refused::Create(dir.to_path_buf(), error))
}

/// One database to checkpoint, and how to hold its writes.
pub struct Part<'a> {
    /// Where it goes under the backup directory.
    pub name: String,
    pub db: &'a DB,
}

/// Checkpoints `parts` into `dir` at one cut: `hold` pauses every writer (and answers
/// guards that resume them when dropped) once the memtables are flushed.
pub fn checkpoint_all<G>(
    dir: &Path,
    parts: &[Part<'_>],
    hold: impl FnOnce() -> Result<G, StoreError>,
) -> Result<(Vec<String>, u64), StoreError> {
    for part in parts {
        part.db
            .flush()
            .map_err(backend("flushing before a backup"))?;
    }
    let held = std::time::Instant::now();
    let guards = hold()?;
    let mut made = Vec::new();
    for part in parts {
        let target = dir.join(&part.name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(backend("creating the backup directory"))?;
        }
        rocksdb::checkpoint::Checkpoint::new(part.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(&target))
            .map_err(backend("making a checkpoint"))?;
        made.push(part.name.clone());
    }
    drop(guards);
    Ok((made, held.elapsed().as_millis() as u64))
}

/// Copies a single server's small files (those that exist) from `data_dir` into `dir`.
pub fn copy_files(data_dir: &Path, dir: &Path) -> Result<(), StoreError> {
    for file in FILES {
        let from = data_dir.join(file);
        if from.is_file() {
            std::fs::copy(&from, dir.join(file)).map_err(backend("copying into the backup"))?;
        }
    }
    Ok(())
}

/// Writes the manifest (synced), which marks the backup complete.
pub fn finish(
    dir: &Path,
    kind: &str,
    stores: Vec<String>,
    paused_ms: u64,
) -> Result<Manifest, StoreError> {
    let manifest = Manifest {
        kind: kind.to_string(),
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        bytes: crate::retention::run_dirs::Usage::of(dir).bytes,
        stores,
        paused_ms,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(backend("encoding the manifest"))?;
    crate::agent::write_synced(&dir.join(MANIFEST), &text).map_err(|error| {
        StoreError::backend("writing the manifest")(std::io::Error::other(format!("{error:#}")))
    })?;
    Ok(manifest)
}

/// Reads a backup's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, Refused> {
    let no = |why: String| Refused::NoManifest(dir.to_path_buf(), why);
    let text = std::fs::read(dir.join(MANIFEST)).map_err(|error| no(error.to_string()))?;
    serde_json::from_slice(&text).map_err(|error| no(error.to_string()))
}

/// Copies a backup into `data_dir` (new or empty) as a single server's data directory. A
/// cluster node's backup loses what only a cluster has: its databases' applied index, and
/// its meta database, whose shard count and known agents become the single server's files.
pub fn restore(backup: &Path, data_dir: &Path) -> anyhow::Result<Manifest> {
    use anyhow::Context;
    let manifest = read_manifest(backup)?;
    prepare_empty(data_dir)?;
    copy_tree(backup, data_dir).context("copying the backup")?;
    std::fs::remove_file(data_dir.join(MANIFEST)).context("removing the manifest copy")?;
    if manifest.kind == CLUSTER_NODE {
        crate::cluster::state::as_single_server(data_dir)
            .context("turning a cluster node's state into a single server's")?;
    }
    Ok(manifest)
}

/// The kind of a cluster node's backup.
pub const CLUSTER_NODE: &str = "cluster-node";
/// The kind of a single server's backup.
pub const SERVER: &str = "server";

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
