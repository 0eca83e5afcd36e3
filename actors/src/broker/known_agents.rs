//! Names of remote agents this server has ever seen, kept on disk: after a restart, a task
//! whose launch was in flight may be on one of them, so its adoption waits for them
//! (`Remotes::any_known`).
//!
//! A single server keeps them in a file, replaced whole, durably (temporary file, fsync,
//! rename, fsync of the directory), by a task of its own: the broker's handler only hands it
//! the new list. A cluster keeps them in its replicated state, so that a new leader knows the
//! agents the old one saw ([`KnownAgentsRecord::Custom`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use tokio::sync::mpsc;

/// Where a broker keeps the names of the remote agents it has seen.
pub enum KnownAgentsRecord {
    /// In memory only (tests).
    Memory,
    /// In this file (a single server's data directory).
    File(PathBuf),
    /// Elsewhere: the names known at start, and what records a new one.
    Custom {
        names: Vec<String>,
        remember: Arc<dyn Fn(String) + Send + Sync>,
    },
}

pub struct KnownAgents {
    names: BTreeSet<String>,
    persist: Persist,
}

enum Persist {
    Nothing,
    /// To the task that writes the file.
    File(mpsc::UnboundedSender<String>),
    Custom(Arc<dyn Fn(String) + Send + Sync>),
}

impl KnownAgents {
    /// Reads the names recorded (none if the file is missing or unreadable). A file is
    /// written by a task: call within a tokio runtime when a file is given.
    pub fn load(record: KnownAgentsRecord) -> Self {
        match record {
            KnownAgentsRecord::Memory => KnownAgents {
                names: BTreeSet::new(),
                persist: Persist::Nothing,
            },
            KnownAgentsRecord::File(file) => KnownAgents {
                names: std::fs::read_to_string(&file)
                    .map(|text| text.lines().map(str::to_string).collect())
                    .unwrap_or_default(),
                persist: Persist::File(spawn_writer(file)),
            },
            KnownAgentsRecord::Custom { names, remember } => KnownAgents {
                names: names.into_iter().collect(),
                persist: Persist::Custom(remember),
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Remembers `name`, and has the file rewritten when it is new.
    pub fn add(&mut self, name: &str) {
        if !self.names.insert(name.to_string()) {
            return;
        }
        match &self.persist {
            Persist::Nothing => {}
            Persist::File(writer) => {
                let text = self.names.iter().map(|n| format!("{n}\n")).collect();
                let _ = writer.send(text);
            }
            Persist::Custom(remember) => remember(name.to_string()),
        }
    }
}

/// Writes the lists it is sent one at a time, in order, so the file ends with the last one.
/// Each list holds every name, so lists that queued up behind a write are skipped for the
/// newest. Ends when the sender is dropped, after the writes already sent.
fn spawn_writer(file: PathBuf) -> mpsc::UnboundedSender<String> {
    let (lists, mut received) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(mut text) = received.recv().await {
            while let Ok(newer) = received.try_recv() {
                text = newer;
            }
            let path = file.clone();
            let written =
                tokio::task::spawn_blocking(move || write_synced(&path, text.as_bytes())).await;
            if let Err(error) = written.map_err(io::Error::other).and_then(|done| done) {
                tracing::warn!(%error, file = %file.display(), "cannot record known agents");
            }
        }
    });
    lists
}

/// Replaces `path` with `bytes` whole and durably: a crash leaves the old file or the new one,
/// and once this returns the new one survives power loss.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    // The rename is an entry of the directory: durable once the directory is synced.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn file_reads(path: &Path, expected: &str) -> bool {
        for _ in 0..200 {
            if std::fs::read_to_string(path).is_ok_and(|text| text == expected) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn the_file_ends_with_every_name_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known-agents");
        let mut known = KnownAgents::load(KnownAgentsRecord::File(path.clone()));
        assert!(known.is_empty());
        for name in ["b", "a", "c", "a"] {
            known.add(name);
        }
        assert!(file_reads(&path, "a\nb\nc\n").await);
        assert!(!dir.path().join("known-agents.tmp").exists());
        drop(known);
        let again = KnownAgents::load(KnownAgentsRecord::File(path));
        assert_eq!(
            again.names,
            BTreeSet::from(["a", "b", "c"].map(String::from))
        );
    }

    #[test]
    fn without_a_file_names_stay_in_memory() {
        let mut known = KnownAgents::load(KnownAgentsRecord::Memory);
        known.add("a");
        assert!(!known.is_empty());
    }
}
