//! Changing the shard count online, one reshard at a time (each runs inside one supervisor
//! message; restarts wait for it, as they are its handler's supervision events):
//!
//! 1. grow: open the new shards' stores and start their coordinators, on blocking threads and
//!    off the router's path (it routes meanwhile; the new shards hold nothing yet); save the
//!    new count;
//! 2. move the jobs: the router does it inside one `Move` message (`router::moves`);
//! 3. shrink: the drained shards' coordinators stop and their storage is removed.
//!
//! At start-up the same steps run with the saved count before the router routes anything,
//! and step 2 is done here, directly: that finishes a move a crash interrupted.

use dron_model::error::Invalid;
use dron_model::ring::Ring;
use ractor::{ActorRef, call};

use super::{MAX_SHARDS, SupervisorMsg, SupervisorState, unblocked};
use crate::error::CommandError;
use crate::router::{RouterMsg, moves};

/// Who moves the jobs (step 2).
#[derive(Clone, Copy)]
pub(super) enum Mover {
    /// At start-up, before the router routes anything: the supervisor, directly.
    Supervisor,
    /// Online: the router, in order with everything it routes.
    Router,
}

impl SupervisorState {
    pub(super) async fn reshard(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        count: u32,
        mover: Mover,
    ) -> Result<(), CommandError> {
        if count == 0 || count > MAX_SHARDS {
            let message = format!("shard count must be between 1 and {MAX_SHARDS}, got {count}");
            return Err(Invalid::new("count", message).into());
        }
        while self.slots.len() < count as usize {
            let index = self.slots.len() as u32;
            self.open_shard(myself, index).await.map_err(|e| {
                CommandError::Unavailable(format!("resharding failed: opening shard {index}: {e}"))
            })?;
        }
        // The new count is saved before anything moves: a crash from here on restarts with the
        // new ring, and start-up finishes the move (the new owner's copy wins).
        unblocked(&self.args.factory, move |factory| {
            factory.save_shard_count(count)
        })
        .await
        .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let coordinators: Vec<_> = self.coordinators().collect();
        let moved = match mover {
            Mover::Supervisor => {
                let ring = Ring::new(count);
                let released = moves::release(&coordinators, &ring).await?;
                released.hand_over(&coordinators, &ring).await?
            }
            Mover::Router => {
                let asked = call!(self.router, |reply| RouterMsg::Move {
                    count,
                    coordinators,
                    reply
                });
                asked.map_err(|e| {
                    CommandError::Unavailable(format!("the router did not answer: {e}"))
                })??
            }
        };
        self.drop_extra_shards(count).await;
        if moved > 0 {
            tracing::info!(count, moved, "resharded");
        }
        Ok(())
    }

    async fn drop_extra_shards(&mut self, count: u32) {
        while self.slots.len() > count as usize {
            let slot = self.slots.pop().expect("more slots than count");
            let index = self.slots.len() as u32;
            // Removed from `slots` first, so its termination is not taken for a failure.
            let _ = slot
                .coordinator
                .stop_and_wait(
                    Some("shard removed".into()),
                    Some(std::time::Duration::from_secs(30)),
                )
                .await;
            drop(slot.store);
            let removed = unblocked(&self.args.factory, move |f| f.remove(index)).await;
            if let Err(error) = removed {
                tracing::warn!(shard = index, %error, "drained shard's storage not removed");
            }
        }
    }
}
