//! The disk a server's data directory uses, for `/metrics`: bytes and inodes of the run
//! directories and of each store, measured by a task on every server (a cluster's followers
//! included: each has its own copy of the stores) every retention interval.
//!
//! `dron_disk_bytes{what}` and `dron_disk_inodes{what}`, where `what` is `runs`, `resources`,
//! `notifications`, `shard-NNN`, and in a cluster `raft` and `cluster-meta`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::run_dirs::Usage;

/// Measures now, then every `every`, until the returned task is aborted.
pub fn spawn(data_dir: PathBuf, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let dir = data_dir.clone();
            if let Ok(measured) = tokio::task::spawn_blocking(move || measure(&dir)).await {
                for (what, usage) in measured {
                    metrics::gauge!("dron_disk_bytes", "what" => what.clone())
                        .set(usage.bytes as f64);
                    metrics::gauge!("dron_disk_inodes", "what" => what).set(usage.inodes as f64);
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Each part of the data directory with what it uses.
pub fn measure(data_dir: &Path) -> Vec<(String, Usage)> {
    let mut parts = Vec::new();
    for what in ["runs", "resources", "notifications", "raft", "cluster-meta"] {
        let path = data_dir.join(what);
        if path.exists() {
            parts.push((what.to_string(), Usage::of(&path)));
        }
    }
    if let Ok(shards) = std::fs::read_dir(data_dir.join("shards")) {
        for shard in shards.flatten() {
            let name = shard.file_name().to_string_lossy().into_owned();
            if name.starts_with("shard-") {
                parts.push((name, Usage::of(&shard.path())));
            }
        }
    }
    parts
}
