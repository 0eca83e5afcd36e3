//! The scheduler's actors, started together and stopped together: the offer broker (and its
//! local agent), the event bus, the notifier, the router with its coordinators, and the AMQP
//! link. A single server starts them once; a cluster's leader starts them when it takes the
//! lead and stops them when it loses it (src/cluster/leadership.rs).
//!
//! Order matters: the broker first (coordinators launch through it), then the bus and the
//! notifier, then the router, which recovers every shard before it answers anything; only
//! then is the API marked ready.

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use dron_actors::broker::BrokerMsg;
use dron_actors::broker::{KnownAgentsRecord, LocalAgentConfig, OfferBroker, OfferBrokerArgs};
use dron_actors::bus::{BusMsg, EventBus, EventBusArgs};
use dron_actors::client::SchedulerClient;
use dron_actors::clock::SharedClock;
use dron_actors::notify::{Notifier, NotifierArgs, NotifierMsg};
use dron_actors::router::{RouterMsg, StoreFactory};
use dron_actors::shards::{Shards, ShardsArgs};
use dron_actors::store::{NoticeStore, ResourceStore};
use dron_task::StatusSink;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::events::amqp::{self, AmqpSettings};
use crate::http::AppState;
use crate::retention::{PruneStores, Retention};

/// Where the scheduler keeps what it must not lose: a single server's own databases, or a
/// cluster's replicated ones.
pub struct Storage {
    pub factory: Arc<dyn StoreFactory>,
    pub resources: Arc<dyn ResourceStore>,
    pub notices: Arc<dyn NoticeStore>,
    pub known_agents: KnownAgentsRecord,
    /// The fencing epoch agents see in every command: above every earlier run's.
    pub epoch: u64,
    /// The same stores as retention reads and prunes them.
    pub prune: Arc<dyn PruneStores>,
}

/// How the scheduler reaches RabbitMQ, if it does.
pub struct Amqp {
    pub queue: String,
    pub publisher_id: String,
}

pub struct Scheduler {
    router: ActorRef<RouterMsg>,
    broker: ActorRef<BrokerMsg>,
    bus: ActorRef<BusMsg>,
    notifier: ActorRef<NotifierMsg>,
    handles: Vec<(&'static str, JoinHandle<()>)>,
    /// Prunes what retention says goes; stopped with the scheduler.
    retention: Retention,
}

impl Scheduler {
    /// Starts every actor, recovers the shards, and marks `state` ready.
    pub async fn start(
        config: &Config,
        storage: Storage,
        amqp_link: Option<Amqp>,
        clock: SharedClock,
        state: &AppState,
        address: &str,
    ) -> anyhow::Result<Scheduler> {
        let Storage {
            factory,
            resources,
            notices,
            known_agents,
            epoch,
            prune,
        } = storage;
        let policy = config.retention.policy()?;
        let router_cell = Arc::new(OnceLock::new());
        let status = to_router(router_cell.clone());
        let broker_args = broker_args(config, status, clock.clone(), epoch, known_agents)?;
        let (broker, broker_handle) =
            Actor::spawn(Some("broker".into()), OfferBroker, broker_args).await?;
        let mut started = Started(vec![broker.get_cell()]);
        // The bus hands events to the shards through the router, which starts after it.
        let (to_shards, from_bus) = tokio::sync::mpsc::unbounded_channel();
        let bus_args = EventBusArgs {
            store: resources.clone(),
            clock: clock.clone(),
            publishing: config.events.amqp_url.is_some(),
            shards: to_shards,
        };
        let (bus, bus_handle) = Actor::spawn(Some("bus".into()), EventBus, bus_args)
            .await
            .context("starting the event bus")?;
        started.0.push(bus.get_cell());
        let notifier_args = NotifierArgs {
            config: config
                .notify
                .actor_config(&format!("{}://{address}", config.tls.scheme())),
            store: notices,
            transport: Arc::new(crate::notify::Transports::new(&config.notify)?),
            clock: clock.clone(),
            runs_root: config.data_dir.join("runs"),
        };
        let (notifier, notifier_handle) =
            Actor::spawn(Some("notifier".into()), Notifier, notifier_args)
                .await
                .context("starting the notifier")?;
        started.0.push(notifier.get_cell());
        let shards_args = ShardsArgs {
            factory,
            default_shard_count: config.shards,
            clock: clock.clone(),
            broker: broker.clone(),
            bus: bus.clone(),
            notifier: notifier.clone(),
            resources,
            config: config.scheduler.shard_config(),
        };
        // Spawned without waiting for its recovery, so that its address exists before
        // anything can report a status (see `to_router`); what arrives while it recovers
        // waits in its mailbox.
        let (router, _supervisor, router_started) = Shards::start(shards_args, from_bus)?;
        started.0.push(router.get_cell());
        let _ = router_cell.set(router.clone());
        // Only now may remote agents connect: they report statuses.
        state.set_broker(broker.clone());
        let router_handle = router_started
            .await
            .context("starting the router")?
            .context("recovering shards")?;
        let client = SchedulerClient::new(router.clone(), bus.clone())
            .with_notifier(notifier.clone())
            .with_backfill_max_targets(config.scheduler.backfill_max_targets);
        if let (Some(url), Some(link)) = (&config.events.amqp_url, amqp_link) {
            let settings = AmqpSettings {
                url: url.clone(),
                exchange: config.events.exchange.clone(),
                queue: link.queue,
                publisher_id: link.publisher_id,
                outside_job_events: config.events.outside_job_events,
                publish_queue: config.events.publish_queue,
            };
            state.set_amqp(amqp::spawn(settings, client.clone(), bus.clone()));
        }
        let local_runs = config.agents.local.then(|| config.data_dir.join("runs"));
        let retention = Retention::spawn(policy, prune, notifier.clone(), local_runs, clock);
        state.set_retention(retention.handle());
        state.set_ready(client);
        started.0.clear(); // all started: they are the scheduler's now
        Ok(Scheduler {
            router,
            broker,
            bus,
            notifier,
            handles: vec![
                ("the router stopped (a shard kept failing)", router_handle),
                ("the offer broker stopped", broker_handle),
                ("the event bus stopped", bus_handle),
                ("the notifier stopped", notifier_handle),
            ],
            retention,
        })
    }

    /// Resolves when one of the actors has stopped on its own, saying which.
    pub async fn stopped(&mut self) -> &'static str {
        let waits = self.handles.iter_mut().map(|(what, handle)| {
            Box::pin(async move {
                let _ = handle.await;
                *what
            })
        });
        futures_util::future::select_all(waits).await.0
    }

    /// Stops every actor and waits for them. Running tasks keep running under their shims;
    /// the next scheduler (after a restart, or on the next leader) adopts them.
    pub async fn stop(self) {
        drop(self.retention);
        self.router.stop(Some("shutdown".into()));
        self.broker.stop(Some("shutdown".into()));
        self.bus.stop(Some("shutdown".into()));
        self.notifier.stop(Some("shutdown".into()));
        for (_, handle) in self.handles {
            // One may have ended (and been awaited) in `stopped`.
            if !handle.is_finished() {
                let _ = handle.await;
            }
        }
    }
}

/// The actors started so far, stopped if starting the rest fails: a cluster's leader tries
/// again, and must not find their names taken (nor leave a broker commanding agents).
struct Started(Vec<ractor::ActorCell>);

impl Drop for Started {
    fn drop(&mut self) {
        for actor in &self.0 {
            actor.stop(Some("the scheduler failed to start".into()));
        }
    }
}

/// The broker's status sink: to the router, which routes each update to its job's coordinator.
/// (The coordinators are the shard supervisor's children; the router only routes.)
///
/// The router's coordinators launch through the broker, so the broker starts first and the
/// router's address goes into `router` after. This is not the late binding it replaces (a
/// `SetRouter` message, and updates buffered in the broker until it came): `start` fills the
/// cell right after spawning the router, before anything can report a status (the
/// coordinators that launch and adopt start with the router, remote agents connect only
/// after `set_broker`, and the local agent and the broker's timers act only on those), so
/// nothing is buffered, and the broker neither knows the router nor has a state without it.
/// `wait` covers the few instructions between the router's spawn and the fill, during which
/// the router's recovery already runs on another thread.
fn to_router(router: Arc<OnceLock<ActorRef<RouterMsg>>>) -> StatusSink {
    Arc::new(move |update| {
        let _ = router.wait().send_message(RouterMsg::TaskUpdate(update));
    })
}

fn broker_args(
    config: &Config,
    status: StatusSink,
    clock: SharedClock,
    epoch: u64,
    known_agents: KnownAgentsRecord,
) -> anyhow::Result<OfferBrokerArgs> {
    let agents = &config.agents;
    let local = match agents.local {
        false => None,
        true => Some(LocalAgentConfig {
            shim_program: super::shim_program()?,
            runs_root: config.data_dir.join("runs"),
            resources: agents.local_resources(&config.data_dir),
            containers: config.containers.detect(&config.data_dir),
        }),
    };
    Ok(OfferBrokerArgs {
        local,
        epoch,
        heartbeat_ms: agents.heartbeat_ms,
        agent_timeout_ms: agents.timeout_ms,
        weights: agents.weights.clone(),
        max_offer: agents.max_offer,
        known_agents,
        status,
        clock,
    })
}
