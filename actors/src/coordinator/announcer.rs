//! The announcer: one task per shard that hands the shard's `job:NAME@TIME` announcements to
//! the event bus, one call at a time, each carrying every batch that queued while the last one
//! was applied.
//!
//! Every successful run announces, so at tens of thousands of runs a second a call per
//! committed batch (each its own task, retried while the bus is slow) outran the bus: the
//! calls piled up in memory by the hundred thousand and the server's memory grew without end.
//! One call in flight per shard batches by itself under load, and the batches waiting count
//! in the shard's backlog, so a bus that falls behind slows the shard (see `push_back` in
//! `mod.rs`) instead of filling memory.

use std::sync::Arc;

use ractor::ActorRef;
use tokio::sync::mpsc;

use dron_model::resource::ResourceEvent;

use super::CoordinatorMsg;
use super::committer::Backlog;
use crate::bus::BusMsg;
use crate::in_flight::InFlight;

/// A committed batch of announcements, counted while it waits.
pub(super) struct Announcements {
    events: Vec<ResourceEvent>,
    _counted: InFlight,
}

impl Announcements {
    pub(super) fn new(events: Vec<ResourceEvent>) -> Self {
        Announcements {
            events,
            _counted: InFlight::start("dron_announcements_in_flight"),
        }
    }
}

/// Where the announcer reports.
pub(super) struct AnnouncerLinks {
    pub(super) bus: ActorRef<BusMsg>,
    pub(super) coordinator: ActorRef<CoordinatorMsg>,
    pub(super) backlog: Arc<Backlog>,
    pub(super) low_water: usize,
}

pub(super) fn spawn_announcer(links: AnnouncerLinks) -> mpsc::UnboundedSender<Announcements> {
    let (sender, mut batches) = mpsc::unbounded_channel::<Announcements>();
    tokio::spawn(async move {
        while let Some(first) = batches.recv().await {
            let mut taken = vec![first];
            while let Ok(next) = batches.try_recv() {
                taken.push(next);
            }
            let events: Vec<ResourceEvent> = taken
                .iter()
                .flat_map(|batch| batch.events.iter().cloned())
                .collect();
            let Some(keys) = crate::bus::announce(&links.bus, events).await else {
                // The bus is gone (shutting down): the outbox keeps them for the next start.
                links.backlog.announced(taken.len());
                return;
            };
            let _ = links
                .coordinator
                .send_message(CoordinatorMsg::AnnouncementsDone { keys });
            links.backlog.announced(taken.len());
            links
                .backlog
                .send_deferred_if_drained(links.low_water, &links.coordinator);
        }
    });
    sender
}
