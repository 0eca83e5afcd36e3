//! The router: thin. It maps a job name to its shard on the consistent-hash ring and forwards;
//! it owns no job state. It is also the supervisor of the coordinators: a coordinator that
//! panics or fails is rebuilt from its shard's storage (one-for-one, with a restart cap), and
//! the router alone knows the current coordinator of each shard, so nobody holds a stale one.
//! Resharding runs here too, since it changes the ring.

pub(crate) mod fanout;
mod messages;
mod reshard;
#[cfg(test)]
mod tests;

pub use messages::RouterMsg;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dron_model::ids::parse_task_id;
use dron_model::resource::ResourceEvent;
use dron_model::ring::Ring;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::broker::BrokerMsg;
use crate::bus::{ApplyEverywhere, BusMsg};
use crate::clock::SharedClock;
use crate::coordinator::{Coordinator, CoordinatorArgs, CoordinatorMsg, ShardConfig};
use crate::store::{ResourceStore, ShardStore, StoreError};
use dron_task::TaskUpdate;

/// Restarts allowed per shard within [`RESTART_WINDOW`] before the router gives up (and so
/// stops the server loudly rather than crash-looping).
const MAX_RESTARTS: usize = 10;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The most shards a server may have.
pub const MAX_SHARDS: u32 = 1024;

/// Opens shard storage; implemented over RocksDB by the server, in memory by tests.
pub trait StoreFactory: Send + Sync + 'static {
    fn open(&self, index: u32) -> Result<Arc<dyn ShardStore>, StoreError>;
    /// Indexes of shards that exist in storage (they may hold jobs to move after a crash).
    fn existing(&self) -> Result<Vec<u32>, StoreError>;
    /// Deletes a drained shard's storage (its store has been dropped).
    fn remove(&self, index: u32) -> Result<(), StoreError>;
    fn load_shard_count(&self) -> Result<Option<u32>, StoreError>;
    fn save_shard_count(&self, count: u32) -> Result<(), StoreError>;
}

pub struct Router;

/// Runs a factory call (opening RocksDB, an fsync, deleting a directory) on a blocking thread,
/// so that it holds up no runtime worker and the actors on it. The caller still awaits it: a
/// reshard's steps stay in order. A panic in the call is the caller's panic, as in line.
pub(crate) async fn unblocked<T: Send + 'static>(
    factory: &Arc<dyn StoreFactory>,
    call: impl FnOnce(&dyn StoreFactory) -> T + Send + 'static,
) -> T {
    let factory = factory.clone();
    match tokio::task::spawn_blocking(move || call(factory.as_ref())).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("storage call cancelled: {error}"),
    }
}

/// The receiving end of the event bus's link to the shards ([`crate::bus::ToShards`]), given to
/// the router at its start beside its [`RouterArgs`].
pub type FromBus = tokio::sync::mpsc::UnboundedReceiver<ApplyEverywhere>;

pub struct RouterArgs {
    pub factory: Arc<dyn StoreFactory>,
    /// Used when storage does not record a shard count yet (a new data directory).
    pub default_shard_count: u32,
    pub clock: SharedClock,
    pub broker: ActorRef<BrokerMsg>,
    pub bus: ActorRef<BusMsg>,
    pub notifier: ActorRef<crate::notify::NotifierMsg>,
    /// Where coordinators look up satisfied resources.
    pub resources: Arc<dyn ResourceStore>,
    pub config: ShardConfig,
}

struct ShardSlot {
    coordinator: ActorRef<CoordinatorMsg>,
    store: Arc<dyn ShardStore>,
    restarts: VecDeque<Instant>,
}

pub struct RouterState {
    args: RouterArgs,
    ring: Ring,
    slots: Vec<ShardSlot>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = (RouterArgs, FromBus);

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        (args, from_bus): (RouterArgs, FromBus),
    ) -> Result<RouterState, ActorProcessingErr> {
        let stored = unblocked(&args.factory, |factory| factory.load_shard_count()).await?;
        let count = stored.unwrap_or(args.default_shard_count);
        if stored.is_some_and(|stored| stored != args.default_shard_count) {
            tracing::warn!(
                stored = count,
                configured = args.default_shard_count,
                "the data directory records its own shard count; change it with `dron shards set`"
            );
        }
        // Open every shard that exists, not only the first `count`: after a crash in the
        // middle of a move, jobs may still sit on a shard beyond the count.
        let existing = unblocked(&args.factory, |factory| factory.existing()).await?;
        let opened = existing.iter().map(|i| i + 1).max().unwrap_or(0).max(count);
        let mut state = RouterState {
            ring: Ring::new(count),
            slots: Vec::new(),
            args,
        };
        for index in 0..opened {
            state.spawn_shard(&myself, index).await?;
        }
        // Move any job that is not on its owner (an interrupted reshard) and drop extra shards.
        state.reshard(&myself, count).await?;
        forward_from_bus(from_bus, myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Route { job, message } => state.route(&job, message),
            RouterMsg::Shards { reply } => {
                let _ = reply.send(state.slots.iter().map(|s| s.coordinator.clone()).collect());
            }
            RouterMsg::TaskUpdate(update) => state.route_update(update, false),
            RouterMsg::ForwardTaskUpdate(update) => state.route_update(update, true),
            RouterMsg::ResourceReady { events, reply } => state.resource_ready(events, reply),
            RouterMsg::Reshard { count, reply } => {
                let result = state.reshard(&myself, count).await.map(|_| count);
                let _ = reply.send(result);
            }
            RouterMsg::ShardCount { reply } => {
                let _ = reply.send(state.ring.shard_count());
            }
            RouterMsg::InjectPanic { shard, reply } => {
                let result = match state.slots.get(shard as usize) {
                    Some(slot) => {
                        let _ = slot.coordinator.send_message(CoordinatorMsg::InjectPanic);
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
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RouterMsg>,
        event: SupervisionEvent,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = ?cell.get_id(), %error, "coordinator failed");
                state.restart(&myself, cell.get_id()).await?;
            }
            // Coordinators stop only when the router stops them (a shard removed, and then
            // no longer in a slot); any other stop is a failure.
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if state.slot_of(cell.get_id()).is_some() =>
            {
                tracing::error!(actor = ?cell.get_id(), ?reason, "coordinator stopped unexpectedly");
                state.restart(&myself, cell.get_id()).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Passes what the event bus sends down its link into the router's mailbox, where it is
/// ordered with everything else the router handles (resharding above all).
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
    fn owner(&self, job: &str) -> &ShardSlot {
        &self.slots[self.ring.owner(job) as usize]
    }

    fn route(&self, job: &str, message: CoordinatorMsg) {
        if self.owner(job).coordinator.send_message(message).is_err() {
            // The coordinator is restarting; the caller's reply port is dropped with the
            // message, so it sees an error and was not acknowledged.
            tracing::warn!(job, "shard unavailable, message dropped");
        }
    }

    /// Hands resource events to every coordinator; answers true once all have applied them
    /// durably.
    ///
    /// The events are sent here, while this message is handled, so that they are ordered with
    /// resharding: each coordinator's mailbox holds them ahead of whatever a later `Reshard`
    /// sends it (see [`fanout`]). A job on the move thus applies them on the shard that holds
    /// it, before that shard releases it (with what they triggered), and a later event finds
    /// the job on its new owner. Only the wait for the answers is left to a task: awaiting
    /// them here would hold every API call and status update behind a commit on every shard.
    fn resource_ready(&self, events: Vec<ResourceEvent>, reply: RpcReplyPort<bool>) {
        let shards = self.slots.iter().map(|slot| &slot.coordinator);
        let asked = fanout::ask_each(shards, |reply| CoordinatorMsg::ResourceReady {
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
        self.route(&task.job, CoordinatorMsg::TaskUpdate { update, forwarded });
    }

    fn slot_of(&self, id: ractor::ActorId) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.coordinator.get_id() == id)
    }

    async fn spawn_shard(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        index: u32,
    ) -> Result<(), ActorProcessingErr> {
        let store = unblocked(&self.args.factory, move |factory| factory.open(index)).await?;
        let coordinator = self.spawn_coordinator(myself, index, store.clone()).await?;
        self.slots.push(ShardSlot {
            coordinator,
            store,
            restarts: VecDeque::new(),
        });
        Ok(())
    }

    async fn spawn_coordinator(
        &self,
        myself: &ActorRef<RouterMsg>,
        index: u32,
        store: Arc<dyn ShardStore>,
    ) -> Result<ActorRef<CoordinatorMsg>, ActorProcessingErr> {
        let args = CoordinatorArgs {
            index,
            store,
            clock: self.args.clock.clone(),
            broker: self.args.broker.clone(),
            router: myself.clone(),
            bus: self.args.bus.clone(),
            notifier: self.args.notifier.clone(),
            resources: self.args.resources.clone(),
            config: self.args.config.clone(),
        };
        let (coordinator, _) =
            Actor::spawn_linked(None, Coordinator, args, myself.get_cell()).await?;
        Ok(coordinator)
    }

    /// Rebuilds a failed coordinator from its shard's storage.
    async fn restart(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        id: ractor::ActorId,
    ) -> Result<(), ActorProcessingErr> {
        let Some(index) = self.slot_of(id) else {
            return Ok(());
        };
        let slot = &mut self.slots[index];
        let now = Instant::now();
        slot.restarts
            .retain(|at| now.duration_since(*at) < RESTART_WINDOW);
        if slot.restarts.len() >= MAX_RESTARTS {
            return Err(format!(
                "shard {index} failed {MAX_RESTARTS} times within a minute; giving up"
            )
            .into());
        }
        slot.restarts.push_back(now);
        let store = slot.store.clone();
        let coordinator = self.spawn_coordinator(myself, index as u32, store).await?;
        tracing::info!(shard = index, "coordinator restarted from storage");
        self.slots[index].coordinator = coordinator;
        Ok(())
    }
}
