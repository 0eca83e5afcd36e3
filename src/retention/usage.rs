//! The disk a server's data directory uses, for `/metrics`: bytes and inodes of the run
//! directories and of each store, measured by a task on every server (a cluster's followers
//! included: each has its own copy of the stores) every retention interval.
//!
//! `dron_disk_bytes{what}` and `dron_disk_inodes{what}`, where `what` is `runs`, `resources`,
//! `notifications`, `shard-NNN`, and in a cluster `raft` and `cluster-meta`; and the
//! filesystem holding the data directory, `dron_filesystem_size_bytes` and
//! `dron_filesystem_available_bytes` (what an unprivileged process may still write), for the
//! disk-nearly-full alert (docs/monitoring/).

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
            if let Some((size, available)) = filesystem_space(&data_dir) {
                metrics::gauge!("dron_filesystem_size_bytes").set(size as f64);
                metrics::gauge!("dron_filesystem_available_bytes").set(available as f64);
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// The size of the filesystem holding `dir` and the bytes still available to unprivileged
/// writers (statvfs); None if it cannot be asked.
// The casts are no-ops on 64-bit Linux; the fields are narrower on some 32-bit targets.
#[allow(clippy::unnecessary_cast)]
pub fn filesystem_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs answered 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    let fragment = stat.f_frsize as u64;
    Some((
        stat.f_blocks as u64 * fragment,
        stat.f_bavail as u64 * fragment,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filesystem_space_is_read_and_a_missing_dir_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let (size, available) = filesystem_space(dir.path()).unwrap();
        assert!(size > 0 && available <= size, "{size} {available}");
        assert_eq!(filesystem_space(&dir.path().join("missing")), None);
    }
}
