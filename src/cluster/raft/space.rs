//! A full disk under the Raft log or the replicated state: a pause, not a failure.
//!
//! openraft takes any error of its log store or state machine as fatal: the Raft stops, and
//! the server with it is useless until restarted. A full disk passes, so the writes here do
//! not fail for it: each is tried again every second until it goes through (RocksDB takes
//! writes again by itself once there is room). Meanwhile:
//!
//! - a leader whose log append waits stops heartbeating (openraft appends on its core task),
//!   so the others elect a leader with room; a follower whose append waits stops answering,
//!   and the others go on without it. Either catches up once space returns;
//! - [`Space::is_full`] is up: the proposer refuses new writes with [`StoreError::NoSpace`]
//!   (507) at once rather than queue them behind the write that waits, and `/metrics` shows
//!   `dron_disk_full{store="raft"} 1`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dron_actors::store::StoreError;

/// How often a write that met a full disk is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Writes waiting for space, shared by the log store, the state machine and the proposer.
#[derive(Debug, Default)]
pub struct Space {
    waiting: AtomicUsize,
}

impl Space {
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
                Err(error) if error.is_no_space() => {
                    if !waited {
                        waited = true;
                        self.enter(what, &error);
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
    }
}
