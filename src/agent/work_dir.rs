//! What a `dron agent` keeps on disk, so that it survives its own restart:
//!
//! - `agent-id`: its identity, made once.
//! - `epoch`: the newest server epoch it has accepted (the fence; written before obeying).
//! - `tasks/<task id>`: every task it was given whose end the server has not acknowledged,
//!   with the deadline of its timeout. On start-up the agent adopts each of them.
//! - `runs/<job>/<target>-<attempt>/`: run directories, as on the server's local agent.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dron_task::protocol::Fence;
use serde::{Deserialize, Serialize};

pub struct WorkDir {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskEntry {
    timeout_deadline_ms: Option<i64>,
}

impl WorkDir {
    pub fn open(root: &Path) -> anyhow::Result<WorkDir> {
        for dir in [root.to_path_buf(), root.join("tasks"), root.join("runs")] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating agent directory {}", dir.display()))?;
        }
        Ok(WorkDir {
            root: root.to_path_buf(),
        })
    }

    pub fn runs_root(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// The agent's stable id, made on first start.
    pub fn identity(&self) -> anyhow::Result<String> {
        let path = self.root.join("agent-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            return Ok(id.trim().to_string());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let seed = [
            nanos.to_le_bytes().as_slice(),
            &std::process::id().to_le_bytes(),
        ]
        .concat();
        let id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&seed));
        write_synced(&path, id.as_bytes())?;
        Ok(id)
    }

    pub fn fence(&self) -> Fence {
        let text = std::fs::read_to_string(self.root.join("epoch")).unwrap_or_default();
        Fence {
            newest_epoch: text.trim().parse().unwrap_or(0),
        }
    }

    /// Written (and synced) before the agent acts on a newer epoch: a crash cannot make it
    /// forget a fence it already obeyed.
    pub fn save_fence(&self, fence: &Fence) -> anyhow::Result<()> {
        write_synced(
            &self.root.join("epoch"),
            fence.newest_epoch.to_string().as_bytes(),
        )
    }

    pub fn record_task(
        &self,
        task_id: &str,
        timeout_deadline_ms: Option<i64>,
    ) -> anyhow::Result<()> {
        let entry = serde_json::to_vec(&TaskEntry {
            timeout_deadline_ms,
        })?;
        write_synced(&self.task_path(task_id), &entry)
    }

    pub fn forget_task(&self, task_id: &str) {
        let _ = std::fs::remove_file(self.task_path(task_id));
    }

    /// Tasks given to this agent whose end the server has not acknowledged, with their
    /// timeout deadlines.
    pub fn tasks(&self) -> Vec<(String, Option<i64>)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("tasks")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let task_id = entry.file_name().to_str()?.to_string();
                let text = std::fs::read(entry.path()).ok()?;
                let parsed: Option<TaskEntry> = serde_json::from_slice(&text).ok();
                Some((task_id, parsed.and_then(|t| t.timeout_deadline_ms)))
            })
            .collect()
    }

    fn task_path(&self, task_id: &str) -> PathBuf {
        // Task ids are made by coordinators from validated job names: no '/' in them.
        self.root.join("tasks").join(task_id)
    }
}

/// Writes through a temporary file, synced, then renamed, then the directory synced: never a
/// half-written file, and the rename itself survives a power loss.
pub fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", directory.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_identity_fence_and_tasks_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let first = WorkDir::open(dir.path()).unwrap();
        let id = first.identity().unwrap();
        first.save_fence(&Fence { newest_epoch: 42 }).unwrap();
        first.record_task("ct:1:0:a:", Some(99)).unwrap();
        first.record_task("ct:2:0:b:", None).unwrap();
        first.forget_task("ct:2:0:b:");

        let again = WorkDir::open(dir.path()).unwrap();
        assert_eq!(again.identity().unwrap(), id);
        assert_eq!(again.fence().newest_epoch, 42);
        assert_eq!(again.tasks(), vec![("ct:1:0:a:".to_string(), Some(99))]);
    }
}
