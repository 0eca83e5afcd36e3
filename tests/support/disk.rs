//! A small filesystem of its own for the disk-full tests: a tmpfs mounted on a directory
//! (root needed; elsewhere the tests say SKIPPED and pass, except where `DRON_REQUIRE_NETNS`
//! is set, CI as root, where they fail), and a filler that uses it up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tmpfs. RocksDB resumes writing after a full disk only once the free space exceeds what
/// its stores may need to flush (64 MB with two shards): freed, this one has that room.
pub const SIZE: &str = "256m";

/// A tmpfs mounted on a directory, unmounted on drop (even when the test fails).
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path) -> Result<Tmpfs, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("running mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: whatever still holds a file there, the mount goes.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Writes a file until the filesystem refuses (ENOSPC); answers its path.
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("creating the filler");
    let chunk = vec![0x5a_u8; 256 * 1024];
    loop {
        if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_data()) {
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::StorageFull,
                "filling: {error}"
            );
            break;
        }
    }
    // The last pages: a smaller write may still fit.
    let small = vec![0x5a_u8; 4096];
    while file.write_all(&small).is_ok() {}
    path
}

/// A temporary directory whose `data` is a new tmpfs, or None (the test skips) where it cannot
/// be mounted.
pub fn small_data_dir() -> Option<(tempfile::TempDir, Tmpfs)> {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    Some((root, mount_or_skip(&data)?))
}

/// A tmpfs on `dir`, or None (the test skips, saying why) where it cannot be mounted.
pub fn mount_or_skip(dir: &Path) -> Option<Tmpfs> {
    match Tmpfs::mount(dir) {
        Ok(tmpfs) => Some(tmpfs),
        Err(why) => {
            assert!(
                std::env::var_os("DRON_REQUIRE_NETNS").is_none(),
                "cannot mount a tmpfs for the disk-full test: {why}"
            );
            eprintln!(
                "SKIPPED: the disk-full test mounts a tmpfs (root needed), unavailable here: {why}"
            );
            None
        }
    }
}
