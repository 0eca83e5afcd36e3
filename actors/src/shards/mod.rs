//! The shard supervisor: owns the shards' life, so that the router is only a routing table.
//!
//! It owns the [`StoreFactory`] and every open shard store, spawns each shard's coordinator
//! (linked to itself) and rebuilds a failed one from its store (one-for-one; more than
//! [`MAX_RESTARTS`] restarts of a shard within a minute and it gives up, which ends the handle
//! [`Shards::start`] gives, and the server exits rather than crash-loop). A failure for a full
//! disk is not counted: the server stays up and answers what it can while the disk is full
//! (`coordinator::space`); such restarts are only spaced [`NO_SPACE_RESTART_GAP`] apart.
//! After a restart it tells the router the shard's new coordinator
//! ([`RouterMsg::SetCoordinator`]).
//!
//! It runs reshards, one at a time (`reshard`): it opens the new shards and saves the count
//! on blocking threads, off the router's path (routing goes on meanwhile), then sends the
//! router one [`RouterMsg::Move`], inside which the router moves the jobs in order with
//! everything it routes (`router::moves`), and last stops the drained shards and removes
//! their storage.
//!
//! The router is its child too: a router that stops (the server shutting down) stops the
//! supervisor and with it every coordinator; a supervisor that gives up stops the router.

mod reshard;
#[cfg(test)]
mod tests;

/// The shard supervisor's; implemented over RocksDB by the server, in memory by tests.
pub use crate::store::StoreFactory;

use reshard::Mover;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dron_model::ring::Ring;
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorRuntime, SpawnErr, SupervisionEvent};
use tokio::task::JoinHandle;

use crate::broker::BrokerMsg;
use crate::bus::BusMsg;
use crate::clock::SharedClock;
use crate::coordinator::{Coordinator, CoordinatorArgs, CoordinatorMsg, ShardConfig};
use crate::router::{FromBus, Resharding, Router, RouterMsg, Table};
use crate::store::{ResourceStore, ShardStore, StoreError};

/// Restarts allowed per shard within [`RESTART_WINDOW`] before the supervisor gives up (and
/// so stops the server loudly rather than crash-looping).
pub const MAX_RESTARTS: usize = 10;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The least time between two restarts of a shard for a full disk, which are not counted:
/// a rebuilt shard whose first write fails again is rebuilt at most this often.
const NO_SPACE_RESTART_GAP: Duration = Duration::from_secs(1);
/// The most shards a server may have.
pub const MAX_SHARDS: u32 = 1024;

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

/// What the shards need: their storage, and what every coordinator is given.
pub struct ShardsArgs {
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

/// Ends once the shards are recovered, with the handle that ends when they stop: a shard
/// kept failing (the supervisor gave up), or the router stopped.
pub type Started = JoinHandle<Result<JoinHandle<()>, SpawnErr>>;

/// The router and the shard supervisor, started together.
pub struct Shards;

impl Shards {
    /// Spawns the router and the shard supervisor without waiting for the shards' recovery,
    /// so that the router's address exists before anything can report a status: what is sent
    /// to the router meanwhile waits in its mailbox until every shard is recovered (and an
    /// interrupted move finished). Answers the router, the supervisor, and `Started`.
    pub fn start(
        args: ShardsArgs,
        from_bus: FromBus,
    ) -> Result<(ActorRef<RouterMsg>, ActorRef<SupervisorMsg>, Started), SpawnErr> {
        let (table, first_table) = tokio::sync::oneshot::channel();
        let (router, router_started) =
            ActorRuntime::spawn_instant(None, Router, (first_table, from_bus))?;
        let supervisor_args = SupervisorArgs {
            shards: args,
            router: router.clone(),
            table,
        };
        let (supervisor, supervisor_started) =
            ActorRuntime::spawn_instant(None, ShardSupervisor, supervisor_args)?;
        let started = tokio::spawn(async move {
            let failed = |error: tokio::task::JoinError| SpawnErr::StartupFailed(error.into());
            let handle = supervisor_started.await.map_err(failed)??;
            // The router's own handle is not needed: it is the supervisor's child, so its end
            // ends the supervisor's.
            router_started.await.map_err(failed)??;
            Ok(handle)
        });
        Ok((router, supervisor, started))
    }
}

pub enum SupervisorMsg {
    /// Change the number of shards online (passed on by the router); answers the new count.
    Reshard(Resharding),
}

impl From<Resharding> for SupervisorMsg {
    fn from(resharding: Resharding) -> Self {
        SupervisorMsg::Reshard(resharding)
    }
}

impl TryFrom<SupervisorMsg> for Resharding {
    type Error = ();

    fn try_from(message: SupervisorMsg) -> Result<Self, ()> {
        match message {
            SupervisorMsg::Reshard(resharding) => Ok(resharding),
        }
    }
}

pub(crate) struct ShardSupervisor;

pub(crate) struct SupervisorArgs {
    shards: ShardsArgs,
    router: ActorRef<RouterMsg>,
    /// Where the router's first table goes, once the shards are recovered.
    table: tokio::sync::oneshot::Sender<Table>,
}

struct ShardSlot {
    coordinator: ActorRef<CoordinatorMsg>,
    store: Arc<dyn ShardStore>,
    restarts: VecDeque<Instant>,
    /// When the shard was last restarted for a full disk.
    no_space_restart: Option<Instant>,
}

pub(crate) struct SupervisorState {
    args: ShardsArgs,
    router: ActorRef<RouterMsg>,
    /// Every open shard, by number.
    slots: Vec<ShardSlot>,
}

impl Actor for ShardSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        SupervisorArgs {
            shards: args,
            router,
            table,
        }: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        // The router is supervised here too: it stops with the shards, and they with it.
        router.get_cell().link(myself.get_cell());
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
        let mut state = SupervisorState {
            args,
            router,
            slots: Vec::new(),
        };
        for index in 0..opened {
            state.open_shard(&myself, index).await?;
        }
        // Move any job that is not on its owner (an interrupted reshard), save the count and
        // drop extra shards, all before the router routes anything.
        state.reshard(&myself, count, Mover::Supervisor).await?;
        let first = Table {
            ring: Ring::new(count),
            coordinators: state.coordinators().collect(),
            supervisor: myself.get_derived(),
        };
        let _ = table.send(first);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Reshard(Resharding { count, reply }) => {
                let result = state.reshard(&myself, count, Mover::Router).await;
                let result = result.map(|_| count);
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error)
                if cell.get_id() == state.router.get_id() =>
            {
                return Err(format!("the router failed: {error}").into());
            }
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if cell.get_id() == state.router.get_id() =>
            {
                // The server shutting down: the coordinators stop with the supervisor.
                myself.stop(reason);
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let shard = state.slot_of(cell.get_id());
                let no_space = error
                    .downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_no_space);
                match no_space {
                    true => tracing::warn!(?shard, %error, "coordinator failed: the disk is full"),
                    false => {
                        tracing::error!(?shard, actor = ?cell.get_id(), %error, "coordinator failed")
                    }
                }
                state.restart(&myself, cell.get_id(), no_space).await?;
            }
            // Coordinators stop only when the supervisor stops them (a shard removed, and
            // then no longer in a slot); any other stop is a failure.
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if state.slot_of(cell.get_id()).is_some() =>
            {
                let shard = state.slot_of(cell.get_id());
                tracing::error!(?shard, ?reason, "coordinator stopped unexpectedly");
                state.restart(&myself, cell.get_id(), false).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    fn coordinators(&self) -> impl Iterator<Item = ActorRef<CoordinatorMsg>> + '_ {
        self.slots.iter().map(|slot| slot.coordinator.clone())
    }

    fn slot_of(&self, id: ractor::ActorId) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.coordinator.get_id() == id)
    }

    /// Opens shard `index`'s store (on a blocking thread) and starts its coordinator.
    async fn open_shard(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: u32,
    ) -> Result<(), ActorProcessingErr> {
        let store = unblocked(&self.args.factory, move |factory| factory.open(index)).await?;
        let coordinator = self.spawn_coordinator(myself, index, store.clone()).await?;
        self.slots.push(ShardSlot {
            coordinator,
            store,
            restarts: VecDeque::new(),
            no_space_restart: None,
        });
        // At zero from the start, so an alert's increase() sees the first restart.
        metrics::counter!("dron_shard_restarts_total", "shard" => index.to_string()).increment(0);
        Ok(())
    }

    async fn spawn_coordinator(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        index: u32,
        store: Arc<dyn ShardStore>,
    ) -> Result<ActorRef<CoordinatorMsg>, ActorProcessingErr> {
        let args = CoordinatorArgs {
            index,
            store,
            clock: self.args.clock.clone(),
            broker: self.args.broker.clone(),
            router: self.router.clone(),
            bus: self.args.bus.clone(),
            notifier: self.args.notifier.clone(),
            resources: self.args.resources.clone(),
            config: self.args.config.clone(),
        };
        let (coordinator, _) =
            Actor::spawn_linked(None, Coordinator, args, myself.get_cell()).await?;
        Ok(coordinator)
    }

    /// Rebuilds a failed coordinator from its shard's storage, and points the router to it.
    /// A failure for a full disk (`no_space`) is not counted against [`MAX_RESTARTS`].
    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ractor::ActorId,
        no_space: bool,
    ) -> Result<(), ActorProcessingErr> {
        let Some(index) = self.slot_of(id) else {
            return Ok(());
        };
        let slot = &mut self.slots[index];
        let now = Instant::now();
        if no_space {
            let since = slot.no_space_restart.map(|at| now.duration_since(at));
            if let Some(wait) = since.and_then(|since| NO_SPACE_RESTART_GAP.checked_sub(since)) {
                tokio::time::sleep(wait).await;
            }
            slot.no_space_restart = Some(Instant::now());
        } else {
            slot.restarts
                .retain(|at| now.duration_since(*at) < RESTART_WINDOW);
            if slot.restarts.len() >= MAX_RESTARTS {
                return Err(format!(
                    "shard {index} failed {MAX_RESTARTS} times within a minute; giving up"
                )
                .into());
            }
            slot.restarts.push_back(now);
            // Alerted on (docs/monitoring/): a shard that keeps failing is about to give up.
            // Restarts for a full disk lead to no giving up: not counted here.
            let shard = index.to_string();
            metrics::counter!("dron_shard_restarts_total", "shard" => shard).increment(1);
        }
        let slot = &self.slots[index];
        let store = slot.store.clone();
        let coordinator = self.spawn_coordinator(myself, index as u32, store).await?;
        tracing::info!(shard = index, "coordinator restarted from storage");
        self.slots[index].coordinator = coordinator.clone();
        let shard = index as u32;
        let _ = self
            .router
            .send_message(RouterMsg::SetCoordinator { shard, coordinator });
        Ok(())
    }
}
