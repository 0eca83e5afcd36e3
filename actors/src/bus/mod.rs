//! The event bus: every resource event reaches every coordinator (Dron's broadcast: cheaper
//! than looking up who waits, and safe while shard ownership moves).
//!
//! An event is handled in this order, so that nothing is lost or applied twice:
//!
//! 1. **Duplicate?** A resource already satisfied by an event of the same time (or by any
//!    event, when this one gives no time) changes nothing. Events for a resource already in
//!    flight wait for it and are then duplicates.
//! 2. **Record** it durably in the [`ResourceStore`]: the resource as satisfied, and the event
//!    as pending (to apply, and to publish when a message broker is configured). From here an
//!    instance created anywhere sees the resource satisfied. A coordinator's announcements
//!    get no pending record: its outbox keeps them until they are applied (and they get one
//!    once applied if they are to be published).
//! 3. **Apply** it: the router hands it to every coordinator, each answering once what it
//!    released or triggered is durable. Coordinators apply events idempotently.
//! 4. **Answer** the sender (the HTTP call, or the broker's delivery, which is acked only now).
//! 5. **Publish** it (dron's own and HTTP events, when a broker is configured) and drop it from
//!    the pending events once the broker confirms.
//!
//! A crash anywhere leaves the event pending; on start-up the bus applies and publishes every
//! pending event again.

mod applier;
mod messages;
mod outbound;
#[cfg(test)]
mod tests;

pub use messages::{ApplyEverywhere, BusMsg, Ingested, Origin, ToShards};
pub use outbound::PUBLISH_QUEUE;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dron_model::resource::{EventStatus, PendingEvent, ResourceEvent, ResourceRecord};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::clock::SharedClock;
use crate::error::CommandError;
use crate::store::{ResourceOp, ResourceStore, StoreError};

/// How long applying one event to every coordinator may take before it is retried.
pub(crate) const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pending events applied together after a restart or a failed attempt.
const APPLY_BATCH: usize = 1000;
/// Pause before events that could not be applied everywhere are tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub struct EventBus;

pub struct EventBusArgs {
    pub store: Arc<dyn ResourceStore>,
    pub clock: SharedClock,
    /// Whether events are published to a message broker (AMQP configured).
    pub publishing: bool,
    /// Where recorded events go to be applied on every shard (to the router).
    pub shards: ToShards,
}

type IngestReply = RpcReplyPort<Result<Ingested, CommandError>>;

pub struct BusState {
    store: Arc<dyn ResourceStore>,
    clock: SharedClock,
    publishing: bool,
    shards: ToShards,
    /// Applies recorded events to every coordinator.
    applier: applier::Applier,
    /// Events to publish, handed to the broker's link (bounded; see `outbound`).
    outbound: outbound::Outbound,
    /// Resources being recorded and applied, with the senders of duplicates waiting on them.
    in_flight: HashMap<String, Vec<IngestReply>>,
    /// Events not applied everywhere yet, by key.
    to_apply: BTreeMap<String, PendingEvent>,
    retry_scheduled: bool,
}

impl Actor for EventBus {
    type Msg = BusMsg;
    type State = BusState;
    type Arguments = EventBusArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BusMsg>,
        args: EventBusArgs,
    ) -> Result<BusState, ActorProcessingErr> {
        let mut state = BusState {
            store: args.store,
            clock: args.clock,
            publishing: args.publishing,
            applier: applier::spawn(args.shards.clone(), myself.clone()),
            shards: args.shards,
            outbound: outbound::Outbound::new(),
            in_flight: HashMap::new(),
            to_apply: BTreeMap::new(),
            retry_scheduled: false,
        };
        // What a previous run recorded but did not finish.
        for pending in state.store.pending()? {
            let key = pending.event.key();
            if pending.apply {
                state.to_apply.insert(key, pending);
            } else if pending.publish {
                state.outbound.publish(pending.event);
            }
        }
        state.apply_pending(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<BusMsg>,
        message: BusMsg,
        state: &mut BusState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BusMsg::SetPublisher(publisher) => state.outbound.set_publisher(publisher),
            BusMsg::Ingest {
                event,
                origin,
                reply,
            } => state.ingest(&myself, event, origin, reply),
            BusMsg::Announce { events, reply } => state.announce(&myself, events, reply),
            BusMsg::Applied {
                batch,
                applied,
                announced,
            } => state.applied(&myself, batch, applied, announced),
            BusMsg::Published { key } => {
                metrics::counter!("dron_events_published_total").increment(1);
                drop(
                    state
                        .store
                        .submit(vec![ResourceOp::DeletePending(key.clone())]),
                );
                if state.outbound.confirmed(&key) {
                    state.refill(&myself);
                }
            }
            BusMsg::RetryPending => {
                state.retry_scheduled = false;
                state.apply_pending(&myself);
                if state.outbound.wants_refill() {
                    state.refill(&myself);
                }
            }
            BusMsg::Lookup { resource, reply } => {
                let found = state.store.get(&resource).map_err(unavailable);
                let _ = reply.send(found);
            }
        }
        Ok(())
    }
}

/// What stopped when the resource store's acknowledgement of a write is dropped.
const WRITER: &str = "the resource store's writer";

/// 507 for a full disk, 503 for any other failure of the resource store.
fn unavailable(error: StoreError) -> CommandError {
    CommandError::storage("resource store", &error)
}

impl BusState {
    fn ingest(
        &mut self,
        myself: &ActorRef<BusMsg>,
        event: ResourceEvent,
        origin: Origin,
        reply: IngestReply,
    ) {
        metrics::counter!("dron_events_received_total", "origin" => origin.as_str()).increment(1);
        if event.status == EventStatus::Failed {
            // A failure satisfies nothing; dron's own are published by `announce`.
            let at_ms = event.at_ms.unwrap_or_else(|| self.clock.now_ms());
            let ingested = Ingested {
                duplicate: false,
                applied: true,
                at_ms,
            };
            let _ = reply.send(Ok(ingested));
            return;
        }
        if let Some(waiters) = self.in_flight.get_mut(&event.resource) {
            waiters.push(reply);
            return;
        }
        match self.duplicate_of(&event) {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok(Some(at_ms)) => {
                metrics::counter!("dron_events_duplicate_total").increment(1);
                let ingested = Ingested {
                    duplicate: true,
                    applied: true,
                    at_ms,
                };
                let _ = reply.send(Ok(ingested));
            }
            Ok(None) => {
                let publish = origin != Origin::Amqp;
                self.record_and_apply(myself, vec![event], publish, Asker::Ingest(reply));
            }
        }
    }

    /// Events announced by a coordinator (those of one commit): recorded together, then
    /// applied and published like others; the coordinator hears back once they are applied
    /// everywhere, and until then its outbox keeps them.
    ///
    /// No duplicate check: a coordinator announces a run's `job:NAME@TIME` once, or again
    /// from its outbox after a crash, and then it must be applied again (the first time may
    /// have been recorded and not applied). Applying twice changes nothing.
    fn announce(
        &mut self,
        myself: &ActorRef<BusMsg>,
        events: Vec<ResourceEvent>,
        reply: RpcReplyPort<Result<(), CommandError>>,
    ) {
        let mut waits = Vec::new();
        let mut batch: Vec<ResourceEvent> = Vec::new();
        let mut batched = std::collections::HashSet::new();
        let mut deferred = false;
        for event in events {
            metrics::counter!("dron_events_received_total", "origin" => "internal").increment(1);
            if event.status == EventStatus::Failed {
                if self.publishing {
                    waits.push(self.record_for_publishing(event));
                }
                continue;
            }
            // Another event of the same resource is being applied (an ingested one, or a
            // success marked by hand the same day): this one is a success of its own (its
            // job's children count each), so it goes once that one is done, when the
            // coordinator sends it again.
            if self.in_flight.contains_key(&event.resource) {
                deferred = true;
                continue;
            }
            // Two runs of one job announcing the same resource are two successes.
            if batched.insert(event.key()) {
                batch.push(event);
            }
        }
        let applied = (!batch.is_empty()).then(|| {
            let (done, applied) = tokio::sync::oneshot::channel();
            self.record_and_apply(myself, batch, true, Asker::Announce(done));
            applied
        });
        tokio::spawn(async move {
            let mut result = Ok(());
            for wait in waits {
                let written = wait.await.unwrap_or(Err(StoreError::Stopped(WRITER)));
                if let Err(error) = written {
                    result = Err(unavailable(error));
                }
            }
            if let Some(applied) = applied {
                let stopped = || Err(CommandError::Unavailable("the event bus stopped".into()));
                if let Err(error) = applied.await.unwrap_or_else(|_| stopped()) {
                    result = Err(error);
                }
            }
            if deferred {
                // The coordinator's outbox keeps the event and sends it again.
                let busy = "resource events: an event of the same resource is being applied";
                result = Err(CommandError::Unavailable(busy.into()));
            }
            let _ = reply.send(result);
        });
    }

    /// The time of the event that already satisfied this one's resource, if this one is a
    /// duplicate of it.
    fn duplicate_of(&self, event: &ResourceEvent) -> Result<Option<i64>, CommandError> {
        let recorded = self.store.get(&event.resource).map_err(unavailable)?;
        Ok(recorded
            .filter(|r| event.at_ms.is_none_or(|at| at == r.at_ms))
            .map(|r| r.at_ms))
    }

    /// A failure dron announces: kept until the broker confirms it.
    fn record_for_publishing(&mut self, event: ResourceEvent) -> crate::store::Durable {
        let pending = PendingEvent {
            event: event.clone(),
            apply: false,
            publish: true,
        };
        let durable = self.store.submit(vec![ResourceOp::PutPending(pending)]);
        self.publish(event);
        durable
    }

    /// Steps 2 to 4 of the module docs for a batch of events (distinct resources), in a task
    /// of its own so the bus goes on: one synced write and one round of the shards for all.
    fn record_and_apply(
        &mut self,
        myself: &ActorRef<BusMsg>,
        events: Vec<ResourceEvent>,
        publish: bool,
        asker: Asker,
    ) {
        let now_ms = self.clock.now_ms();
        let announced = matches!(asker, Asker::Announce(_));
        let mut ops = Vec::with_capacity(events.len() * 2);
        let mut batch = Vec::with_capacity(events.len());
        for event in events {
            let at_ms = event.at_ms.unwrap_or(now_ms);
            ops.push(ResourceOp::Satisfy(ResourceRecord {
                resource: event.resource.clone(),
                at_ms,
                recorded_ms: now_ms,
                meta_json: event.meta_json.clone(),
            }));
            let pending = PendingEvent {
                event: ResourceEvent {
                    at_ms: Some(at_ms),
                    ..event
                },
                apply: true,
                publish: publish && self.publishing,
            };
            // A coordinator's outbox keeps its announcements until they are applied.
            if !announced {
                ops.push(ResourceOp::PutPending(pending.clone()));
            }
            self.in_flight
                .insert(pending.event.resource.clone(), Vec::new());
            batch.push(pending);
        }
        let durable = self.store.submit(ops);
        let (applier, myself) = (self.applier.clone(), myself.clone());
        tokio::spawn(async move {
            let written = durable.await.unwrap_or(Err(StoreError::Stopped(WRITER)));
            if let Err(error) = written {
                tracing::error!(%error, "recording resource events failed");
                // Not recorded: nothing to apply, and the sender may try again.
                for pending in &mut batch {
                    pending.apply = false;
                }
                let recorded = applier::Recorded { batch, asker };
                return recorded.answer(&myself, Err(unavailable(error)));
            }
            let recorded = applier::Recorded { batch, asker };
            // The applier stopped (shutting down): recorded, so applied after the restart
            // from the pending events (or the coordinator's outbox).
            if let Err(recorded) = applier.apply(recorded) {
                recorded.answer(&myself, Ok(false));
            }
        });
    }

    /// A batch was applied everywhere, or not. `announced` batches have no pending record:
    /// their coordinator keeps them, and sends them again if they were not applied.
    fn applied(
        &mut self,
        myself: &ActorRef<BusMsg>,
        batch: Vec<PendingEvent>,
        applied: bool,
        announced: bool,
    ) {
        let mut ops = Vec::new();
        for pending in batch {
            let key = pending.event.key();
            if let Some(waiters) = self.in_flight.remove(&pending.event.resource) {
                let at_ms = pending.event.at_ms.unwrap_or_default();
                for waiter in waiters {
                    let ingested = Ingested {
                        duplicate: true,
                        applied,
                        at_ms,
                    };
                    let _ = waiter.send(Ok(ingested));
                }
            }
            if !pending.apply || (announced && !applied) {
                continue; // nothing recorded, or the coordinator sends it again
            }
            if !applied {
                self.to_apply.insert(key, pending);
                continue;
            }
            self.to_apply.remove(&key);
            if pending.publish {
                self.publish(pending.event.clone());
                ops.push(ResourceOp::PutPending(PendingEvent {
                    apply: false,
                    ..pending
                }));
            } else if !announced {
                ops.push(ResourceOp::DeletePending(key));
            }
        }
        if !self.to_apply.is_empty() {
            self.schedule_retry(myself);
        }
        // Not awaited: if this write is lost, the events are applied once more after a
        // restart, which changes nothing.
        if !ops.is_empty() {
            drop(self.store.submit(ops));
        }
    }

    fn publish(&mut self, event: ResourceEvent) {
        self.outbound.publish(event);
    }

    /// Reads events to publish back from the store (`outbound`); tried again shortly if the
    /// store fails.
    fn refill(&mut self, myself: &ActorRef<BusMsg>) {
        if let Err(error) = self.outbound.refill(&*self.store) {
            tracing::warn!(%error, "reading events to publish back from the store failed");
            self.schedule_retry(myself);
        }
    }

    fn apply_pending(&mut self, myself: &ActorRef<BusMsg>) {
        let pending: Vec<PendingEvent> = std::mem::take(&mut self.to_apply).into_values().collect();
        let mut batch = Vec::new();
        for event in pending {
            if self.in_flight.contains_key(&event.event.resource) {
                self.to_apply.insert(event.event.key(), event);
                continue;
            }
            self.in_flight
                .insert(event.event.resource.clone(), Vec::new());
            batch.push(event);
        }
        for chunk in batch.chunks(APPLY_BATCH) {
            let (shards, myself, chunk) = (self.shards.clone(), myself.clone(), chunk.to_vec());
            tokio::spawn(async move {
                let events = chunk.iter().map(|p| p.event.clone()).collect();
                let applied = apply_everywhere(&shards, events).await;
                let _ = myself.send_message(BusMsg::Applied {
                    batch: chunk,
                    applied,
                    announced: false,
                });
            });
        }
        if !self.to_apply.is_empty() {
            self.schedule_retry(myself);
        }
    }

    fn schedule_retry(&mut self, myself: &ActorRef<BusMsg>) {
        if !self.retry_scheduled {
            self.retry_scheduled = true;
            myself.send_after(RETRY_AFTER, || BusMsg::RetryPending);
        }
    }
}

/// Who asked for a batch to be recorded and applied, so who hears how it went.
enum Asker {
    /// An ingested event's sender: answered once the event is applied everywhere.
    Ingest(IngestReply),
    /// A coordinator's announcements: answered once applied everywhere, when it drops them
    /// from its outbox. Until then that outbox keeps them across a crash, so the store
    /// keeps no pending copy (only one to publish, once applied).
    Announce(tokio::sync::oneshot::Sender<Result<(), CommandError>>),
}

/// Hands events to every coordinator (through the router); true once all have applied them.
async fn apply_everywhere(shards: &ToShards, events: Vec<ResourceEvent>) -> bool {
    let (reply, answer) = ractor::concurrency::oneshot();
    let reply = reply.into();
    if shards.send(ApplyEverywhere { events, reply }).is_err() {
        return false; // the router has stopped
    }
    matches!(
        tokio::time::timeout(APPLY_TIMEOUT, answer).await,
        Ok(Ok(true))
    )
}

/// Hands a shard's announcements to the bus until it has applied them everywhere; answers
/// their keys (the coordinator drops them from its outbox), or None when the bus is gone
/// (shutting down: the outbox keeps them for the next start). The shard's announcer awaits
/// it, one call at a time (`coordinator/announcer.rs`).
pub async fn announce(bus: &ActorRef<BusMsg>, events: Vec<ResourceEvent>) -> Option<Vec<String>> {
    let ask = |reply| BusMsg::Announce {
        events: events.clone(),
        reply,
    };
    let taken = crate::in_flight::ask_until_taken(bus, ask, APPLY_TIMEOUT).await;
    taken.then(|| events.iter().map(ResourceEvent::key).collect())
}
