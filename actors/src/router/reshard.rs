//! Changing the shard count online. The router runs the whole move inside one message, so no
//! other message reaches a coordinator meanwhile, and each coordinator sees, in order: every
//! message routed to it before the move (resource events included: they are sent from inside
//! the router's handler, see `fanout`), then `Release`. Scheduling goes on in every shard
//! throughout; a moving job's targets wait at most for the move itself, well inside epsilon.
//!
//! 1. grow: open and start the new shards; save the new count;
//! 2. every shard releases the jobs the new ring places elsewhere (with live instances and
//!    history) and stops scheduling them, but keeps them in storage;
//! 3. the ring switches; each job's new owner adopts it and writes it durably;
//! 4. the old owners forget (delete) what they released;
//! 5. shrink: the drained shards stop and their storage is removed.
//!
//! Start-up runs the same move with the saved count, so a crash anywhere finishes it: a job
//! still only on its old shard is moved; a job on both (crash between 3 and 4) keeps the new
//! owner's copy, which is the newer one, and the old copy is deleted.

use std::collections::HashMap;

use dron_model::ring::Ring;
use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort, call};

use super::{MAX_SHARDS, RouterMsg, RouterState};
use crate::coordinator::{CoordinatorMsg, MovedJob};
use crate::error::CommandError;
use dron_model::error::Invalid;

impl RouterState {
    pub(super) async fn reshard(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        count: u32,
    ) -> Result<(), CommandError> {
        if count == 0 || count > MAX_SHARDS {
            let message = format!("shard count must be between 1 and {MAX_SHARDS}, got {count}");
            return Err(Invalid::new("count", message).into());
        }
        let unavailable =
            |e: ActorProcessingErr| CommandError::Unavailable(format!("resharding failed: {e}"));
        while self.slots.len() < count as usize {
            self.spawn_shard(myself, self.slots.len() as u32)
                .await
                .map_err(unavailable)?;
        }
        // The new count is saved before anything moves: a crash from here on restarts with the
        // new ring, and start-up finishes the move (the new owner's copy wins).
        super::unblocked(&self.args.factory, move |factory| {
            factory.save_shard_count(count)
        })
        .await
        .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let ring = Ring::new(count);
        let released = self.release_all(&ring).await?;
        self.ring = ring;
        let moved = released.iter().map(|(_, jobs)| jobs.len()).sum::<usize>();
        self.adopt_all(released.iter().flat_map(|(_, jobs)| jobs.iter().cloned()))
            .await?;
        for (source, jobs) in &released {
            let names = jobs
                .iter()
                .map(|job| job.record.spec.name.clone())
                .collect();
            let coordinator = &self.slots[*source].coordinator;
            ask(coordinator, |reply| CoordinatorMsg::Forget { names, reply }).await??;
        }
        self.drop_extra_shards(count).await;
        if moved > 0 {
            tracing::info!(count, moved, "resharded");
        }
        Ok(())
    }

    async fn release_all(&self, ring: &Ring) -> Result<Vec<(usize, Vec<MovedJob>)>, CommandError> {
        let mut released = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let ring = ring.clone();
            let jobs = ask(&slot.coordinator, |reply| CoordinatorMsg::Release {
                ring,
                reply,
            })
            .await?;
            if !jobs.is_empty() {
                released.push((index, jobs));
            }
        }
        Ok(released)
    }

    async fn adopt_all(&self, jobs: impl Iterator<Item = MovedJob>) -> Result<(), CommandError> {
        let mut by_owner: HashMap<u32, Vec<MovedJob>> = HashMap::new();
        for job in jobs {
            by_owner
                .entry(self.ring.owner(&job.record.spec.name))
                .or_default()
                .push(job);
        }
        for (owner, jobs) in by_owner {
            let coordinator = &self.slots[owner as usize].coordinator;
            ask(coordinator, |reply| CoordinatorMsg::Adopt { jobs, reply }).await??;
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
            let removed = super::unblocked(&self.args.factory, move |f| f.remove(index)).await;
            if let Err(error) = removed {
                tracing::warn!(shard = index, %error, "drained shard's storage not removed");
            }
        }
    }
}

/// Asks a coordinator and waits for its answer.
async fn ask<T: Send + 'static>(
    coordinator: &ractor::ActorRef<CoordinatorMsg>,
    message: impl FnOnce(RpcReplyPort<T>) -> CoordinatorMsg,
) -> Result<T, CommandError> {
    call!(coordinator, message)
        .map_err(|e| CommandError::Unavailable(format!("shard did not answer: {e}")))
}
