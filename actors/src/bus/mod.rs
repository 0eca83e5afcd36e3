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
//!    instance created anywhere sees the resource satisfied.
//! 3. **Apply** it: the router hands it to every coordinator, each answering once what it
//!    released or triggered is durable. Coordinators apply events idempotently.
//! 4. **Answer** the sender (the HTTP call, or the broker's delivery, which is acked only now).
//! 5. **Publish** it (dron's own and HTTP events, when a broker is configured) and drop it from
//!    the pending events once the broker confirms.
//!
//! A crash anywhere leaves the event pending; on start-up the bus applies and publishes every
//! pending event again.

mod messages;

pub use messages::{BusMsg, Ingested, Origin};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dron_model::resource::{EventStatus, PendingEvent, ResourceEvent, ResourceRecord};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::coordinator::CoordinatorMsg;
use crate::error::CommandError;
use crate::router::RouterMsg;
use crate::store::{ResourceOp, ResourceStore};

/// How long applying one event to every coordinator may take before it is retried.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
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
}

type IngestReply = RpcReplyPort<Result<Ingested, CommandError>>;

pub struct BusState {
    store: Arc<dyn ResourceStore>,
    clock: SharedClock,
    publishing: bool,
    router: Option<ActorRef<RouterMsg>>,
    publisher: Option<mpsc::UnboundedSender<ResourceEvent>>,
    /// Resources being recorded and applied, with the senders of duplicates waiting on them.
    in_flight: HashMap<String, Vec<IngestReply>>,
    /// Events not applied everywhere yet, by key.
    to_apply: BTreeMap<String, PendingEvent>,
    /// Events handed to the publisher and not confirmed yet, by key.
    to_publish: BTreeMap<String, ResourceEvent>,
    retry_scheduled: bool,
}

impl Actor for EventBus {
    type Msg = BusMsg;
    type State = BusState;
    type Arguments = EventBusArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<BusMsg>,
        args: EventBusArgs,
    ) -> Result<BusState, ActorProcessingErr> {
        let mut state = BusState {
            store: args.store,
            clock: args.clock,
            publishing: args.publishing,
            router: None,
            publisher: None,
            in_flight: HashMap::new(),
            to_apply: BTreeMap::new(),
            to_publish: BTreeMap::new(),
            retry_scheduled: false,
        };
        // What a previous run recorded but did not finish.
        for pending in state.store.pending()? {
            let key = pending.event.key();
            if pending.apply {
                state.to_apply.insert(key, pending);
            } else if pending.publish {
                state.to_publish.insert(key, pending.event);
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<BusMsg>,
        message: BusMsg,
        state: &mut BusState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BusMsg::SetRouter(router) => {
                state.router = Some(router);
                state.apply_pending(&myself);
            }
            BusMsg::SetPublisher(publisher) => {
                for event in state.to_publish.values() {
                    let _ = publisher.send(event.clone());
                }
                state.publisher = Some(publisher);
            }
            BusMsg::Ingest {
                event,
                origin,
                reply,
            } => state.ingest(&myself, event, origin, reply),
            BusMsg::Announce { events, reply } => state.announce(&myself, events, reply),
            BusMsg::Applied { batch, applied } => state.applied(&myself, batch, applied),
            BusMsg::Published { key } => {
                metrics::counter!("dron_events_published_total").increment(1);
                state.to_publish.remove(&key);
                drop(state.store.submit(vec![ResourceOp::DeletePending(key)]));
            }
            BusMsg::RetryPending => {
                state.retry_scheduled = false;
                state.apply_pending(&myself);
            }
            BusMsg::Lookup { resource, reply } => {
                let found = state.store.get(&resource).map_err(unavailable);
                let _ = reply.send(found);
            }
        }
        Ok(())
    }
}

fn unavailable(error: impl std::fmt::Display) -> CommandError {
    CommandError::Unavailable(format!("resource store: {error}"))
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
                let publish = origin != Origin::Broker;
                self.record_and_apply(myself, vec![event], publish, Some(reply), None);
            }
        }
    }

    /// Events announced by a coordinator (those of one commit): recorded together, then
    /// applied and published like others; the coordinator hears back once they are recorded.
    fn announce(
        &mut self,
        myself: &ActorRef<BusMsg>,
        events: Vec<ResourceEvent>,
        reply: RpcReplyPort<Result<(), CommandError>>,
    ) {
        let mut waits = Vec::new();
        let mut batch: Vec<ResourceEvent> = Vec::new();
        let mut batched = std::collections::HashSet::new();
        for event in events {
            metrics::counter!("dron_events_received_total", "origin" => "internal").increment(1);
            if event.status == EventStatus::Failed {
                if self.publishing {
                    waits.push(self.record_for_publishing(event));
                }
                continue;
            }
            if batched.contains(&event.resource) || self.in_flight.contains_key(&event.resource) {
                continue;
            }
            match self.duplicate_of(&event) {
                Err(error) => {
                    let _ = reply.send(Err(error));
                    return;
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    batched.insert(event.resource.clone());
                    batch.push(event);
                }
            }
        }
        if !batch.is_empty() {
            let (done, wait) = tokio::sync::oneshot::channel();
            self.record_and_apply(myself, batch, true, None, Some(done));
            waits.push(wait);
        }
        tokio::spawn(async move {
            let mut result = Ok(());
            for wait in waits {
                match wait.await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => result = Err(unavailable(error)),
                    Err(_) => result = Err(unavailable("the write was dropped")),
                }
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
        reply: Option<IngestReply>,
        recorded: Option<tokio::sync::oneshot::Sender<Result<(), crate::store::StoreError>>>,
    ) {
        let now_ms = self.clock.now_ms();
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
            ops.push(ResourceOp::PutPending(pending.clone()));
            self.in_flight
                .insert(pending.event.resource.clone(), Vec::new());
            batch.push(pending);
        }
        let durable = self.store.submit(ops);
        let (router, myself) = (self.router.clone(), myself.clone());
        tokio::spawn(async move {
            let written = durable
                .await
                .unwrap_or_else(|_| Err(crate::store::StoreError("write dropped".into())));
            if let Some(recorded) = recorded {
                let _ = recorded.send(written.clone());
            }
            let at_ms = batch[0].event.at_ms.unwrap_or_default();
            if let Err(error) = written {
                tracing::error!(%error, "recording resource events failed");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(unavailable(error)));
                }
                // Not recorded: nothing to apply, and the sender may try again.
                for pending in &mut batch {
                    pending.apply = false;
                }
                let _ = myself.send_message(BusMsg::Applied {
                    batch,
                    applied: false,
                });
                return;
            }
            let events = batch.iter().map(|p| p.event.clone()).collect();
            let applied = apply_everywhere(router.as_ref(), events).await;
            if let Some(reply) = reply {
                let ingested = Ingested {
                    duplicate: false,
                    applied,
                    at_ms,
                };
                let _ = reply.send(Ok(ingested));
            }
            let _ = myself.send_message(BusMsg::Applied { batch, applied });
        });
    }

    fn applied(&mut self, myself: &ActorRef<BusMsg>, batch: Vec<PendingEvent>, applied: bool) {
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
            if !pending.apply {
                continue; // the write failed: nothing was recorded
            }
            if !applied {
                self.to_apply.insert(key, pending);
                continue;
            }
            self.to_apply.remove(&key);
            ops.push(if pending.publish {
                self.publish(pending.event.clone());
                ResourceOp::PutPending(PendingEvent {
                    apply: false,
                    ..pending
                })
            } else {
                ResourceOp::DeletePending(key)
            });
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
        if let Some(publisher) = &self.publisher {
            let _ = publisher.send(event.clone());
        }
        self.to_publish.insert(event.key(), event);
    }

    fn apply_pending(&mut self, myself: &ActorRef<BusMsg>) {
        if self.router.is_none() {
            return;
        }
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
            let (router, myself, chunk) = (self.router.clone(), myself.clone(), chunk.to_vec());
            tokio::spawn(async move {
                let events = chunk.iter().map(|p| p.event.clone()).collect();
                let applied = apply_everywhere(router.as_ref(), events).await;
                let _ = myself.send_message(BusMsg::Applied {
                    batch: chunk,
                    applied,
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

/// Hands events to every coordinator through the router; true once all have applied them.
async fn apply_everywhere(
    router: Option<&ActorRef<RouterMsg>>,
    events: Vec<ResourceEvent>,
) -> bool {
    let Some(router) = router else {
        return false;
    };
    let asked = router
        .call(
            |reply| RouterMsg::ResourceReady { events, reply },
            Some(APPLY_TIMEOUT),
        )
        .await;
    matches!(asked, Ok(CallResult::Success(true)))
}

/// Asks every coordinator in `shards` to apply `events`; true once all have, durably.
pub async fn apply_to_shards(
    shards: Vec<ActorRef<CoordinatorMsg>>,
    events: Vec<ResourceEvent>,
) -> bool {
    let mut all = true;
    for shard in shards {
        let events = events.clone();
        let asked = shard
            .call(
                |reply| CoordinatorMsg::ResourceReady { events, reply },
                Some(APPLY_TIMEOUT),
            )
            .await;
        all &= matches!(asked, Ok(CallResult::Success(Ok(()))));
    }
    all
}

/// Hands a coordinator's announcements to the bus until it has recorded them, then tells the
/// coordinator to drop them from its outbox. Runs in a task of its own: a slow bus never
/// holds up a shard.
pub fn announce(
    bus: ActorRef<BusMsg>,
    coordinator: ActorRef<CoordinatorMsg>,
    events: Vec<ResourceEvent>,
) {
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            let sent = events.clone();
            let asked = bus
                .call(
                    |reply| BusMsg::Announce {
                        events: sent,
                        reply,
                    },
                    Some(APPLY_TIMEOUT),
                )
                .await;
            match asked {
                Ok(CallResult::Success(Ok(()))) => {
                    let keys = events.iter().map(ResourceEvent::key).collect();
                    let _ = coordinator.send_message(CoordinatorMsg::AnnouncementsDone { keys });
                    return;
                }
                // The bus is gone (shutting down): the outbox keeps them for the next start.
                Ok(CallResult::SenderError) | Err(_) => return,
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
}
