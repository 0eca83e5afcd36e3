//! A shard's ticker: sleeps until the shard's earliest timer and then sends it a `Tick`.
//! The coordinator publishes its next deadline on a watch channel after every change, so
//! timers come from the index of next fire times, never from polling every job.
//!
//! Deadlines are wall-clock times, but a sleep runs on the monotonic clock: when the wall
//! clock steps (NTP, a VM resumed), the instant a sleep was armed for no longer matches its
//! deadline. So a sleep lasts at most `RECHECK`, and on waking the ticker reads the wall clock
//! again: a step forward brings the deadline within `RECHECK` (not late by the step), a step
//! back re-arms the sleep for the time still left (no early tick).

use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;
use tokio::time::Instant;

use super::CoordinatorMsg;
use crate::clock::SharedClock;

/// The longest a ticker sleeps without reading the wall clock again.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

pub(super) fn spawn(
    coordinator: ActorRef<CoordinatorMsg>,
    clock: SharedClock,
    mut deadline: watch::Receiver<Option<i64>>,
) {
    tokio::spawn(async move {
        loop {
            let next = *deadline.borrow_and_update();
            let Some(at_ms) = next else {
                if deadline.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let wake = clock.instant_at(at_ms).min(Instant::now() + RECHECK);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    if clock.now_ms() < at_ms {
                        continue; // not due yet by the wall clock as it reads now
                    }
                    if coordinator.send_message(CoordinatorMsg::Tick).is_err() {
                        return; // the coordinator stopped; its successor has its own ticker
                    }
                    // Wait for the coordinator to publish the deadline after this tick.
                    if deadline.changed().await.is_err() {
                        return;
                    }
                }
                changed = deadline.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    });
}
