//! The `disk-full` fault: each server's data directory on a small filesystem of its own (a
//! tmpfs, mounted before the server starts), filled with a file until it refuses, then freed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Large enough for RocksDB to resume once freed (it wants room to flush its memtables: 64 MB
/// with two shards), small enough to fill in a moment.
const SIZE: &str = "256m";

/// A tmpfs mounted on a server's data directory, unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
            .arg(path)
            .output()
            .context("running mount")?;
        if !output.status.success() {
            bail!(
                "the disk-full fault needs a tmpfs on {}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Writes a file until the filesystem refuses (ENOSPC); answers its path, to remove to
    /// heal.
    pub fn fill(&self) -> anyhow::Result<PathBuf> {
        let path = self.path.join("nemesis-filler");
        let mut file = std::fs::File::create(&path).context("creating the filler")?;
        let chunk = vec![0x5a_u8; 1 << 20];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
                Err(error) => return Err(error).context("filling the data directory"),
            }
        }
        // The last pages: a smaller write may still fit.
        let page = vec![0x5a_u8; 4096];
        while file.write_all(&page).is_ok() {}
        Ok(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: whatever still holds a file there, the mount goes.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
