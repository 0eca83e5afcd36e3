//! A full disk under the Raft log or the replicated state: a pause, not a failure.
//!
//! openraft takes any error of its log store or state machine as fatal: the Raft stops, and
//! the server with it is useless until restarted. A full disk passes, so the writes here do
//! not fail for it: each is tried again every second until it goes through (RocksDB takes
//! writes again by itself once there is room). Meanwhile:
//!
//! - while any of its writes waits, the server sends no Raft request (`network.rs`): a leader
//!   stops heartbeating even when its log appends still fit and only applying waits, so the
//!   others elect a leader with room, whose higher term deposes it; a follower asks for no
//!   votes, and its appends wait, so the others go on without it. Either catches up once
//!   space returns;
//! - [`Space::is_full`] is up: the proposer refuses new writes with [`StoreError::NoSpace`]
//!   (507) at once rather than queue them behind the write that waits, and `/metrics` shows
//!   `dron_disk_full{store="raft"} 1`.
//!
//! RocksDB does not always resume by itself: a write-ahead log append that failed unsynced
//! (the replicated databases apply entries unsynced) leaves its log writer refusing every
//! later write ("Writer has previous error"), and the C API has no `Resume()`. Reopening the
//! databases would do, but their handles are shared by every store of the server. So once
//! the filesystem has room again and a write is still refused, the server restarts in place
//! ([`restart_in_place`]: the same process id, binary and arguments, as a `kill -9` and a
//! restart would, without its supervisor); it then catches up from the log as after any
//! restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dron_actors::store::StoreError;

/// How often a write that met a full disk is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Free space from which a write still refused after a full disk means RocksDB will not
/// resume by itself (it needs room to flush its memtables: 64 MB with two shards).
const ROOM_TO_RESUME: u64 = 64 << 20;

/// Whether the storage engine refused the write (not, say, an entry that failed to decode).
fn is_backend(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Backend { .. } | StoreError::NoSpace { .. }
    )
}

/// Writes waiting for space, shared by the log store, the state machine and the proposer.
#[derive(Debug, Default)]
pub struct Space {
    waiting: AtomicUsize,
    /// A directory on the filesystem the writes go to (none: never restarts in place).
    dir: Option<PathBuf>,
}

impl Space {
    /// Writes to the filesystem that holds `dir`.
    pub fn on(dir: &Path) -> Space {
        Space {
            waiting: AtomicUsize::new(0),
            dir: Some(dir.to_path_buf()),
        }
    }

    /// Whether the filesystem has room again.
    fn has_room(&self) -> bool {
        let space = self
            .dir
            .as_deref()
            .and_then(crate::retention::usage::filesystem_space);
        space.is_some_and(|(_, available)| available >= ROOM_TO_RESUME)
    }

    /// Whether a write of this server's Raft log or state waits for space now.
    pub fn is_full(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Runs `write` (on a blocking thread: it sleeps) until it does not fail for a full disk.
    pub fn retry<T>(
        &self,
        what: &'static str,
        mut write: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut waited = false;
        loop {
            match write() {
                // Once a write met a full disk, RocksDB refuses the next ones with other
                // words ("Writer has previous error") until it has resumed by itself, which
                // it does once there is room again (its SstFileManager polls the free space):
                // those are waited out too.
                Err(error) if error.is_no_space() || (waited && is_backend(&error)) => {
                    if !waited {
                        waited = true;
                        self.enter(what, &error);
                    } else if !error.is_no_space() && self.has_room() {
                        restart_in_place(what, &error);
                    }
                    std::thread::sleep(RETRY_EVERY);
                }
                result => {
                    if waited {
                        self.leave(what);
                    }
                    return result;
                }
            }
        }
    }

    fn enter(&self, what: &'static str, error: &StoreError) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("dron_disk_full", "store" => "raft").set(1.0);
        tracing::warn!(
            what,
            %error,
            "the disk is full: this server's Raft waits for space (writes are refused with 507 here; the other servers go on)"
        );
    }

    fn leave(&self, what: &'static str) {
        if self.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            metrics::gauge!("dron_disk_full", "store" => "raft").set(0.0);
        }
        tracing::info!(what, "space returned: this server's Raft writes again");
    }

    /// What the proposer answers while the disk is full.
    pub fn refused() -> StoreError {
        let cause = std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "this server's Raft log or replicated state waits for space; \
             free space on the data directory's filesystem and retry",
        );
        StoreError::NoSpace {
            doing: "replicating a write",
            cause: std::sync::Arc::new(cause),
        }
    }
}

/// Replaces this process with a fresh run of the same binary and arguments (same process id:
/// whoever supervises it sees it still running). Returns only if that fails.
fn restart_in_place(what: &'static str, error: &StoreError) {
    use std::os::unix::process::CommandExt;
    tracing::warn!(
        what,
        %error,
        "space returned but this server's databases still refuse writes (RocksDB does not \
         resume a log that failed unsynced): restarting in place to reopen them"
    );
    let failed = match std::env::current_exe() {
        Ok(binary) => std::process::Command::new(binary)
            .args(std::env::args_os().skip(1))
            .exec(),
        Err(error) => error,
    };
    tracing::error!(error = %failed, "restarting in place failed: restart this server");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_meets_a_full_disk_is_tried_until_it_goes_through() {
        let space = Space::default();
        let mut tries = 0;
        let written = space.retry("testing", || {
            tries += 1;
            match tries {
                1 => Err(Space::refused()),
                _ => Ok(tries),
            }
        });
        assert_eq!(written.unwrap(), 2);
        assert!(!space.is_full());
        // Other failures are not retried.
        let failed: Result<(), _> = space.retry("testing", || Err(StoreError::Stopped("x")));
        assert!(failed.is_err());
        // After a full disk, the engine's other refusals are waited out too (RocksDB answers
        // "Writer has previous error" until it has resumed).
        let mut tries = 0;
        let written = space.retry("testing", || {
            tries += 1;
            match tries {
                1 => Err(Space::refused()),
                2 => Err(StoreError::backend("testing")(std::io::Error::other(
                    "IO error: Writer has previous error.",
                ))),
                _ => Ok(tries),
            }
        });
        assert_eq!(written.unwrap(), 3);
        assert!(!space.is_full());
    }
}
