//! Moving jobs between shards when the ring changes. A reshard (`crate::shards`) has three
//! parts; the middle one is here:
//!
//! 1. the shard supervisor opens and starts the new shards and saves the new count (off the
//!    router's path: routing goes on meanwhile);
//! 2. the router, inside one `Move` message, so that no other message reaches a coordinator
//!    meanwhile: every shard releases the jobs the new ring places elsewhere (with live
//!    instances and history) and stops scheduling them, but keeps them in storage; the ring
//!    switches; each job's new owner adopts it and writes it durably; the old owners forget
//!    (delete) what they released;
//! 3. the supervisor stops the drained shards and removes their storage.
//!
//! Each coordinator thus sees, in order: every message routed to it before the move
//! (resource events included: they are sent from inside the router's handler, see `fanout`),
//! then `Release`. Scheduling goes on in every shard throughout; a moving job's targets wait
//! at most for the move itself, well inside epsilon.
//!
//! Start-up runs the same move with the saved count (the supervisor, before the router
//! routes anything), so a crash anywhere finishes it: a job still only on its old shard is
//! moved; a job on both (crash between adopting and forgetting) keeps the new owner's copy,
//! which is the newer one, and the old copy is deleted.

use std::collections::HashMap;

use dron_model::ring::Ring;
use ractor::{ActorRef, RpcReplyPort, call};

use crate::coordinator::{CoordinatorMsg, MovedJob};
use crate::error::CommandError;

/// What each shard released, by shard number.
#[must_use = "released jobs are scheduled nowhere until handed over"]
pub(crate) struct Released(Vec<(usize, Vec<MovedJob>)>);

/// Asks every shard in turn to release the jobs `ring` places elsewhere.
pub(crate) async fn release(
    coordinators: &[ActorRef<CoordinatorMsg>],
    ring: &Ring,
) -> Result<Released, CommandError> {
    let mut released = Vec::new();
    for (index, coordinator) in coordinators.iter().enumerate() {
        let ring = ring.clone();
        let jobs = ask(coordinator, |reply| CoordinatorMsg::Release { ring, reply }).await?;
        if !jobs.is_empty() {
            released.push((index, jobs));
        }
    }
    Ok(Released(released))
}

impl Released {
    /// Has each job's owner on `ring` adopt it durably, then its old shard forget it; answers
    /// how many jobs moved.
    pub(crate) async fn hand_over(
        self,
        coordinators: &[ActorRef<CoordinatorMsg>],
        ring: &Ring,
    ) -> Result<usize, CommandError> {
        let mut by_owner: HashMap<u32, Vec<MovedJob>> = HashMap::new();
        let mut sources = Vec::with_capacity(self.0.len());
        for (source, jobs) in self.0 {
            let names: Vec<String> = jobs.iter().map(|j| j.record.spec.name.clone()).collect();
            for job in jobs {
                let owner = ring.owner(&job.record.spec.name);
                by_owner.entry(owner).or_default().push(job);
            }
            sources.push((source, names));
        }
        let moved = by_owner.values().map(Vec::len).sum();
        for (owner, jobs) in by_owner {
            let coordinator = &coordinators[owner as usize];
            ask(coordinator, |reply| CoordinatorMsg::Adopt { jobs, reply }).await??;
        }
        for (source, names) in sources {
            let coordinator = &coordinators[source];
            ask(coordinator, |reply| CoordinatorMsg::Forget { names, reply }).await??;
        }
        Ok(moved)
    }
}

/// Asks a coordinator and waits for its answer.
async fn ask<T: Send + 'static>(
    coordinator: &ActorRef<CoordinatorMsg>,
    message: impl FnOnce(RpcReplyPort<T>) -> CoordinatorMsg,
) -> Result<T, CommandError> {
    call!(coordinator, message)
        .map_err(|e| CommandError::Unavailable(format!("shard did not answer: {e}")))
}
