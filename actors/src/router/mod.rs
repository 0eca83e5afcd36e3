//! The router: a routing table. It maps a job name to its shard on the consistent-hash ring
//! and forwards; it owns no job state, no storage and no coordinator's life. Its table (the
//! ring and each shard's current coordinator) is set by the shard supervisor
//! ([`crate::shards`]), which opens the shards, runs their coordinators and rebuilds a failed
//! one (then it sends [`RouterMsg::SetCoordinator`]). A reshard asked of the router goes to
//! the supervisor, which opens the new shards off the router's path and then sends one
//! [`RouterMsg::Move`]: the router moves the jobs inside that one message (`moves`), so that
//! every coordinator sees the move in order with whatever was routed to it before.

pub(crate) mod fanout;
mod messages;
pub(crate) mod moves;
#[cfg(test)]
mod tests;

/// Kept at its old path (the shard supervisor holds the factory now, not the router).
pub use crate::store::StoreFactory;
pub use messages::{Resharding, RouterMsg};

use dron_model::ids::parse_task_id;
use dron_model::resource::ResourceEvent;
use dron_model::ring::Ring;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};

use crate::bus::ApplyEverywhere;
use crate::coordinator::CoordinatorMsg;
use crate::error::CommandError;
use dron_task::TaskUpdate;

pub(crate) struct Router;

/// The receiving end of the event bus's link to the shards ([`crate::bus::ToShards`]), given to
/// the router at its start.
pub type FromBus = tokio::sync::mpsc::UnboundedReceiver<ApplyEverywhere>;

/// The router's first table, sent by the shard supervisor once every shard is recovered (and
/// an interrupted move finished). The router answers nothing before: what is sent to it
/// meanwhile waits in its mailbox.
pub(crate) struct Table {
    pub ring: Ring,
    /// One per shard of the ring, in order.
    pub coordinators: Vec<ActorRef<CoordinatorMsg>>,
    /// Where reshards go.
    pub supervisor: DerivedActorRef<Resharding>,
}

pub(crate) type RouterArgs = (tokio::sync::oneshot::Receiver<Table>, FromBus);

pub(crate) struct RouterState {
    ring: Ring,
    /// Each shard's current coordinator, by shard number. During a move, every open shard's.
    coordinators: Vec<ActorRef<CoordinatorMsg>>,
    supervisor: DerivedActorRef<Resharding>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        (table, from_bus): RouterArgs,
    ) -> Result<RouterState, ActorProcessingErr> {
        let Ok(table) = table.await else {
            return Err("the shard supervisor did not start".into());
        };
        forward_from_bus(from_bus, myself);
        Ok(RouterState {
            ring: table.ring,
            coordinators: table.coordinators,
            supervisor: table.supervisor,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Route { job, message } => state.route(&job, message),
            RouterMsg::Shards { reply } => {
                let _ = reply.send(state.coordinators.clone());
            }
            RouterMsg::TaskUpdate(update) => state.route_update(update, false),
            RouterMsg::ForwardTaskUpdate(update) => state.route_update(update, true),
            RouterMsg::ResourceReady { events, reply } => state.resource_ready(events, reply),
            RouterMsg::Reshard { count, reply } => {
                if let Err(error) = state.supervisor.send_message(Resharding { count, reply }) {
                    let message = "the shard supervisor stopped".to_string();
                    if let ractor::MessagingErr::SendErr(Resharding { reply, .. }) = error {
                        let _ = reply.send(Err(CommandError::Unavailable(message)));
                    }
                }
            }
            RouterMsg::ShardCount { reply } => {
                let _ = reply.send(state.ring.shard_count());
            }
            RouterMsg::InjectPanic { shard, reply } => {
                let result = match state.coordinators.get(shard as usize) {
                    Some(coordinator) => {
                        let _ = coordinator.send_message(CoordinatorMsg::InjectPanic);
                        Ok(())
                    }
                    None => Err(dron_model::error::Invalid::new(
                        "shard",
                        format!("there is no shard {shard}"),
                    )
                    .into()),
                };
                let _ = reply.send(result);
            }
            RouterMsg::SetCoordinator { shard, coordinator } => {
                match state.coordinators.get_mut(shard as usize) {
                    Some(current) => *current = coordinator,
                    // A shard opened for a reshard that did not reach the router: the next
                    // move names its coordinator.
                    None => tracing::debug!(shard, "coordinator of a shard not routed to yet"),
                }
            }
            RouterMsg::Move {
                count,
                coordinators,
                reply,
            } => {
                let moved = state.move_jobs(count, coordinators).await;
                let _ = reply.send(moved);
            }
        }
        Ok(())
    }
}

/// Passes what the event bus sends down its link into the router's mailbox, where it is
/// ordered with everything else the router handles (moves above all).
fn forward_from_bus(mut from_bus: FromBus, router: ActorRef<RouterMsg>) {
    tokio::spawn(async move {
        while let Some(ApplyEverywhere { events, reply }) = from_bus.recv().await {
            let ready = RouterMsg::ResourceReady { events, reply };
            if router.send_message(ready).is_err() {
                return; // stopped: the reply is dropped, so the bus applies them again later
            }
        }
    });
}

impl RouterState {
    fn owner(&self, job: &str) -> &ActorRef<CoordinatorMsg> {
        &self.coordinators[self.ring.owner(job) as usize]
    }

    fn route(&self, job: &str, message: CoordinatorMsg) {
        if self.owner(job).send_message(message).is_err() {
            // The coordinator is restarting; the caller's reply port is dropped with the
            // message, so it sees an error and was not acknowledged.
            tracing::warn!(job, "shard unavailable, message dropped");
        }
    }

    /// Hands resource events to every coordinator; answers true once all have applied them
    /// durably.
    ///
    /// The events are sent here, while this message is handled, so that they are ordered with
    /// resharding: each coordinator's mailbox holds them ahead of whatever a later `Move`
    /// sends it (see [`fanout`]). A job on the move thus applies them on the shard that holds
    /// it, before that shard releases it (with what they triggered), and a later event finds
    /// the job on its new owner. Only the wait for the answers is left to a task: awaiting
    /// them here would hold every API call and status update behind a commit on every shard.
    fn resource_ready(&self, events: Vec<ResourceEvent>, reply: RpcReplyPort<bool>) {
        let asked = fanout::ask_each(&self.coordinators, |reply| CoordinatorMsg::ResourceReady {
            events: events.clone(),
            reply,
        });
        tokio::spawn(async move {
            let answers = asked.answers(crate::bus::APPLY_TIMEOUT).await;
            let all = answers
                .iter()
                .all(|answer| matches!(answer, CallResult::Success(Ok(()))));
            let _ = reply.send(all);
        });
    }

    fn route_update(&self, update: TaskUpdate, forwarded: bool) {
        let Some(task) = parse_task_id(&update.task_id) else {
            return tracing::warn!(
                task_id = update.task_id,
                "status update for a foreign task id"
            );
        };
        let shard = self.ring.owner(&task.job);
        let _run = crate::trace::enter_on_shard(&update.task_id, shard);
        tracing::debug!(forwarded, "status routed");
        let message = CoordinatorMsg::TaskUpdate { update, forwarded };
        if self.coordinators[shard as usize]
            .send_message(message)
            .is_err()
        {
            tracing::warn!(job = task.job, "shard unavailable, message dropped");
        }
    }

    /// Moves every job to its owner on the ring of `count` shards, all inside this message:
    /// release → ring switch → adopt → forget (see [`moves`]).
    async fn move_jobs(
        &mut self,
        count: u32,
        coordinators: Vec<ActorRef<CoordinatorMsg>>,
    ) -> Result<usize, CommandError> {
        if coordinators.len() < count as usize {
            let message = format!("a move to {count} shards names {}", coordinators.len());
            return Err(CommandError::Unavailable(message));
        }
        // Every open shard is routed to until the move is done, as the old ring may name any.
        self.coordinators = coordinators;
        let ring = Ring::new(count);
        let released = moves::release(&self.coordinators, &ring).await?;
        self.ring = ring;
        let moved = released.hand_over(&self.coordinators, &self.ring).await?;
        self.coordinators.truncate(count as usize);
        Ok(moved)
    }
}
