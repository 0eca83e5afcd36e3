//! The publish queue: events handed to the message broker's link and not confirmed yet,
//! bounded.
//!
//! Every event to publish is durable before it gets here, as a pending record of the
//! resource store (`publish` set, `apply` cleared once applied everywhere), and its record is
//! deleted only once the broker confirms it. So the queue in memory need not hold them all:
//! at most `capacity` events wait in memory (in the link's channel and its unconfirmed list);
//! beyond that, while RabbitMQ is down or slow, an event stays on disk only ("spilled") and is
//! read back from the store, in key order, as confirmations make room. Memory stays bounded
//! whatever the outage, scheduling and applying go on, and nothing is lost.

use std::collections::BTreeMap;

use dron_model::resource::ResourceEvent;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::store::{ResourceStore, StoreError};

/// Events waiting for the broker's confirmation in memory, until the link says otherwise.
pub const PUBLISH_QUEUE: usize = 10_000;
/// Pending records read from the store at once when reading spilled events back.
const REFILL_PAGE: usize = 1_000;

pub(super) struct Outbound {
    publisher: Option<mpsc::Sender<ResourceEvent>>,
    capacity: usize,
    /// Handed to the link (or held until it is set), not confirmed yet, by key.
    queued: BTreeMap<String, ResourceEvent>,
    /// Events were left on disk since the last pass over the store began.
    spilled: bool,
    /// A pass over the store's pending records under way: the last key read (None: none yet).
    pass: Option<Option<String>>,
}

impl Outbound {
    pub(super) fn new() -> Self {
        Outbound {
            publisher: None,
            capacity: PUBLISH_QUEUE,
            queued: BTreeMap::new(),
            spilled: false,
            pass: None,
        }
    }

    /// The link is up: it takes what is queued, and its channel's size is the queue's.
    pub(super) fn set_publisher(&mut self, publisher: mpsc::Sender<ResourceEvent>) {
        self.capacity = publisher.max_capacity().max(1);
        let held = std::mem::take(&mut self.queued);
        self.publisher = Some(publisher);
        for event in held.into_values() {
            self.publish(event);
        }
    }

    /// Hands a durable event to the link, or leaves it on disk while the queue is full.
    pub(super) fn publish(&mut self, event: ResourceEvent) {
        let key = event.key();
        if self.queued.contains_key(&key) {
            return; // the link has it already
        }
        if self.queued.len() >= self.capacity {
            return self.spill();
        }
        if let Some(publisher) = &self.publisher {
            match publisher.try_send(event.clone()) {
                // Closed: the server is stopping; the record is published after the restart.
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(_)) => return self.spill(),
            }
        }
        self.queued.insert(key, event);
        self.gauge();
    }

    fn spill(&mut self) {
        self.spilled = true;
        metrics::counter!("dron_events_publish_spilled_total").increment(1);
    }

    /// The broker confirmed `key`: answers whether to read spilled events back now.
    pub(super) fn confirmed(&mut self, key: &str) -> bool {
        self.queued.remove(key);
        self.gauge();
        self.wants_refill()
    }

    /// Whether spilled events wait on disk and the queue is down to half (so that each read
    /// fills half of it).
    pub(super) fn wants_refill(&self) -> bool {
        (self.spilled || self.pass.is_some()) && self.queued.len() <= self.capacity / 2
    }

    /// Reads spilled events back from the store until the queue is full or one pass over the
    /// store's pending records has ended. Every deletion of a confirmed event was submitted
    /// before, and the store's read sees it, so no confirmed event is read back.
    ///
    /// Why a pass can be trusted to find every spilled event: an event is spilled only while
    /// the queue is full, so confirmations (and another pass) follow; one spilled while a pass
    /// is under way sets `spilled` again for the next pass.
    pub(super) fn refill(&mut self, store: &dyn ResourceStore) -> Result<(), StoreError> {
        let mut after = match self.pass.take() {
            Some(after) => after,
            // A new pass: what is spilled from now on may be behind it.
            None if self.spilled => {
                self.spilled = false;
                None
            }
            None => return Ok(()),
        };
        loop {
            let page = match store.pending_page(after.as_deref(), REFILL_PAGE) {
                Ok(page) => page,
                Err(error) => {
                    self.spilled = true; // a new pass, later
                    return Err(error);
                }
            };
            let ended = page.len() < REFILL_PAGE;
            for pending in page {
                if self.queued.len() >= self.capacity {
                    self.pass = Some(after);
                    return Ok(());
                }
                let key = pending.event.key();
                if pending.publish && !pending.apply && !self.queued.contains_key(&key) {
                    metrics::counter!("dron_events_publish_read_back_total").increment(1);
                    self.publish(pending.event);
                }
                after = Some(key);
            }
            if ended {
                return Ok(());
            }
        }
    }

    fn gauge(&self) {
        metrics::gauge!("dron_events_publish_queue").set(self.queued.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryResourceStore, ResourceOp};
    use dron_model::resource::PendingEvent;

    fn event(i: usize) -> ResourceEvent {
        ResourceEvent::ready(format!("r:{i:04}"), Some(1_000))
    }

    /// What the bus records before it publishes: a pending record to publish.
    fn record(store: &MemoryResourceStore, event: &ResourceEvent) {
        let pending = PendingEvent {
            event: event.clone(),
            apply: false,
            publish: true,
        };
        drop(store.submit(vec![ResourceOp::PutPending(pending)]));
    }

    /// The link: takes what is in the channel, confirms it (the store's record goes, as the
    /// bus deletes it), and reads spilled events back when told to.
    fn confirm_all(
        outbound: &mut Outbound,
        store: &MemoryResourceStore,
        channel: &mut mpsc::Receiver<ResourceEvent>,
    ) -> Vec<String> {
        let mut published = Vec::new();
        while let Ok(event) = channel.try_recv() {
            let key = event.key();
            drop(store.submit(vec![ResourceOp::DeletePending(key.clone())]));
            if outbound.confirmed(&key) {
                outbound.refill(store).unwrap();
            }
            published.push(key);
        }
        published
    }

    #[test]
    fn a_full_queue_leaves_events_on_disk_and_reads_each_back_once() {
        let store = MemoryResourceStore::default();
        let mut outbound = Outbound::new();
        let (publisher, mut channel) = mpsc::channel(10);
        outbound.set_publisher(publisher);
        let events: Vec<ResourceEvent> = (0..95).map(event).collect();
        for event in &events {
            record(&store, event);
            outbound.publish(event.clone());
            assert!(outbound.queued.len() <= 10);
        }
        assert!(outbound.spilled, "85 events left on disk");
        let mut published = Vec::new();
        for _ in 0..100 {
            published.extend(confirm_all(&mut outbound, &store, &mut channel));
        }
        let mut expected: Vec<String> = events.iter().map(ResourceEvent::key).collect();
        published.sort();
        expected.sort();
        assert_eq!(published, expected, "each published once");
        assert!(store.pending().unwrap().is_empty());
        assert!(outbound.queued.is_empty() && !outbound.spilled && outbound.pass.is_none());
    }
}
