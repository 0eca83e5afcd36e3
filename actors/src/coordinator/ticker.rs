//! A shard's ticker: sleeps until the shard's earliest timer and then sends it a `Tick`.
//! The coordinator publishes its next deadline on a watch channel after every change, so
//! timers come from the index of next fire times, never from polling every job.

use ractor::ActorRef;
use tokio::sync::watch;

use super::CoordinatorMsg;
use crate::clock::SharedClock;

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
            tokio::select! {
                _ = tokio::time::sleep_until(clock.instant_at(at_ms)) => {
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
