//! The committer: one task per shard that releases each flushed batch's effects (replies,
//! launches, kills, adoptions, announcements, notices) once the batch is durable, in commit
//! order, and counts the shard's backlog of batches not durable yet (see `push_back` in
//! `mod.rs`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use ractor::ActorRef;
use tokio::sync::mpsc;

use dron_model::notice::Notice;
use dron_model::resource::ResourceEvent;

use super::announcer::Announcements;
use super::{Adoption, CoordinatorMsg, Then};
use crate::broker::BrokerMsg;
use crate::notify::NotifierMsg;
use crate::store::{Durable, StoreError};
use crate::trace;

/// A submitted batch and what to do once it is durable.
pub(super) struct Commit {
    pub(super) durable: Durable,
    pub(super) effects: Effects,
    /// Counted in the shard's [`Backlog`] (it has writes) until its durability resolves.
    pub(super) in_backlog: bool,
}

pub(super) struct Effects {
    pub(super) launches: Vec<crate::broker::LaunchRequest>,
    pub(super) kills: Vec<String>,
    pub(super) adopts: Vec<Adoption>,
    pub(super) announcements: Vec<ResourceEvent>,
    pub(super) notices: Vec<Notice>,
    pub(super) thens: Vec<Then>,
}

/// How many times `max_writes_in_flight` batches of announcements may wait for the bus before
/// the shard holds new work back (see [`Backlog::holding`]).
const ANNOUNCING_HOLD_FACTOR: usize = 4;

/// What a shard has submitted and is not durable yet, shared by the coordinator (which
/// pushes back while it is large) and its committer (which sends the deferred tick and flush
/// once it has drained to half the limit).
/// Batches of announcements waiting for the event bus count too (see `announcer.rs`).
#[derive(Default)]
pub(super) struct Backlog {
    pub(super) in_flight: AtomicUsize,
    /// Committed batches of announcements the bus has not applied yet.
    announcing: AtomicUsize,
    tick_deferred: AtomicBool,
    flush_deferred: AtomicBool,
    /// `dron_shard_writes_in_flight{shard}`, looked up once: a lookup (the label formatted,
    /// the registry searched) on each batch's submission and resolution was 1 % of a create.
    gauge: OnceLock<metrics::Gauge>,
}

impl Backlog {
    /// Whether more than `limit` batches wait to be durable or announced: new work waits.
    pub(super) fn over(&self, limit: usize) -> bool {
        self.in_flight.load(Ordering::Acquire) + self.announcing.load(Ordering::Acquire) > limit
    }

    /// Whether more than `limit` batches wait to be durable: the next flush waits. Only the
    /// writes count here: the bus applies announcements by asking every shard, and a shard
    /// that held its flush for the bus would never answer it.
    pub(super) fn writes_over(&self, limit: usize) -> bool {
        self.in_flight.load(Ordering::Acquire) > limit
    }

    /// Whether new work is held back: the writes are over `limit`, or the announcements
    /// far over it. New jobs and runs are refused (503) and a job whose run ended waits for
    /// the next tick to start its next target. The bus takes bursts of announcements behind
    /// by design (the ticks wait for it past `limit`), so only a backlog of several times the
    /// limit, which means it cannot keep up with the runs, holds the rest: API writes still
    /// go through while the runs alone saturate the bus.
    pub(super) fn holding(&self, limit: usize) -> bool {
        self.writes_over(limit)
            || self.announcing.load(Ordering::Acquire) > ANNOUNCING_HOLD_FACTOR * limit
    }

    /// `count` batches of announcements applied by the bus.
    pub(super) fn announced(&self, count: usize) {
        self.announcing.fetch_sub(count, Ordering::AcqRel);
    }

    /// Sends the tick and the flush the coordinator deferred while the backlog was large,
    /// once it has drained to `low_water`.
    pub(super) fn send_deferred_if_drained(
        &self,
        low_water: usize,
        coordinator: &ActorRef<CoordinatorMsg>,
    ) {
        if !self.writes_over(low_water) && self.flush_deferred.swap(false, Ordering::AcqRel) {
            let _ = coordinator.send_message(CoordinatorMsg::Flush);
        }
        if !self.over(low_water) && self.tick_deferred.swap(false, Ordering::AcqRel) {
            let _ = coordinator.send_message(CoordinatorMsg::Tick);
        }
    }

    /// Leaves the tick for the committer or the announcer to send once the backlog has
    /// drained. Answers true when it drained between the caller's check and now: they then saw
    /// nothing deferred, so the caller goes ahead after all.
    pub(super) fn defer_tick(&self, limit: usize) -> bool {
        self.tick_deferred.store(true, Ordering::Release);
        !self.over(limit) && self.tick_deferred.swap(false, Ordering::AcqRel)
    }

    /// As `defer_tick`, for the flush, which waits for the writes only.
    pub(super) fn defer_flush(&self, limit: usize) -> bool {
        self.flush_deferred.store(true, Ordering::Release);
        !self.writes_over(limit) && self.flush_deferred.swap(false, Ordering::AcqRel)
    }

    fn count(&self, shard: u32, change: impl FnOnce(&AtomicUsize)) {
        change(&self.in_flight);
        let in_flight = self.in_flight.load(Ordering::Acquire);
        self.gauge
            .get_or_init(
                || metrics::gauge!("dron_shard_writes_in_flight", "shard" => shard.to_string()),
            )
            .set(in_flight as f64);
    }

    /// One more batch submitted.
    pub(super) fn submitted(&self, shard: u32) {
        self.count(shard, |n| {
            n.fetch_add(1, Ordering::AcqRel);
        });
    }

    /// One batch durable (or failed).
    fn resolved(&self, shard: u32) {
        self.count(shard, |n| {
            n.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// For effects with nothing to write.
pub(super) fn already_durable() -> Durable {
    let (done, durable) = tokio::sync::oneshot::channel();
    let _ = done.send(Ok(()));
    durable
}

/// Where a commit's effects go.
pub(super) struct Links {
    pub(super) backlog: Arc<Backlog>,
    /// The backlog at which a deferred tick is sent.
    pub(super) low_water: usize,
    pub(super) shard: u32,
    pub(super) coordinator: ActorRef<CoordinatorMsg>,
    pub(super) broker: ActorRef<BrokerMsg>,
    /// The shard's announcer, which hands announcements to the event bus.
    pub(super) announcer: mpsc::UnboundedSender<Announcements>,
    pub(super) notifier: ActorRef<NotifierMsg>,
}

/// The task that releases each commit's effects once its batch is durable, in commit order.
/// After a failed batch it releases nothing more (later batches build on it, and the shard's
/// writer refuses them): the coordinator is told once, and every waiting caller is answered
/// with its batch's failure (507 for a full disk) rather than left without an answer.
pub(super) fn spawn_committer(links: Links) -> mpsc::UnboundedSender<Commit> {
    let (sender, mut commits) = mpsc::unbounded_channel::<Commit>();
    tokio::spawn(async move {
        let mut failed: Option<StoreError> = None;
        while let Some(commit) = commits.recv().await {
            let Commit {
                durable,
                effects,
                in_backlog,
            } = commit;
            let resolved = durable.await;
            if in_backlog {
                links.backlog.resolved(links.shard);
            }
            let written = resolved.unwrap_or(Err(StoreError::Stopped("the shard's writer")));
            let error = match (written, &failed) {
                (Ok(()), None) => {
                    release(effects, &links);
                    links.send_deferred_if_drained();
                    continue;
                }
                (Err(error), _) => error,
                // Its writes were refused or stand on a failed one (an empty batch).
                (Ok(()), Some(earlier)) => StoreError::RefusedAfter(Arc::new(earlier.clone())),
            };
            for then in effects.thens {
                then(Err(&error));
            }
            if failed.is_none() {
                let _ = links
                    .coordinator
                    .send_message(CoordinatorMsg::StoreFailed(error.clone()));
                failed = Some(error);
            }
        }
    });
    sender
}

impl Links {
    fn send_deferred_if_drained(&self) {
        self.backlog
            .send_deferred_if_drained(self.low_water, &self.coordinator);
    }

    /// Queues a committed batch of announcements for the shard's announcer.
    fn announce(&self, events: Vec<ResourceEvent>) {
        self.backlog.announcing.fetch_add(1, Ordering::AcqRel);
        if self.announcer.send(Announcements::new(events)).is_err() {
            // The announcer ended with the bus (shutting down): the outbox keeps them.
            self.backlog.announced(1);
        }
    }
}

fn release(effects: Effects, links: &Links) {
    for request in effects.launches {
        let _run = trace::enter_on_shard(&request.spec.task_id, links.shard);
        tracing::debug!("launch released");
        let _ = links.broker.send_message(BrokerMsg::Launch(request));
    }
    for task_id in effects.kills {
        let _run = trace::enter_on_shard(&task_id, links.shard);
        tracing::debug!("kill released");
        let _ = links.broker.send_message(BrokerMsg::Kill { task_id });
    }
    for adoption in effects.adopts {
        let _run = trace::enter_on_shard(&adoption.request.spec.task_id, links.shard);
        tracing::debug!(agent = adoption.agent.as_deref(), "adoption asked");
        let _ = links.broker.send_message(BrokerMsg::Adopt {
            request: adoption.request,
            agent: adoption.agent,
            timeout_deadline_ms: adoption.timeout_deadline_ms,
        });
    }
    if !effects.announcements.is_empty() {
        links.announce(effects.announcements);
    }
    if !effects.notices.is_empty() {
        let coordinator = links.coordinator.clone();
        let done = move |keys| {
            let _ = coordinator.send_message(CoordinatorMsg::NoticesDone { keys });
        };
        crate::notify::hand_over(links.notifier.clone(), effects.notices, done);
    }
    for then in effects.thens {
        then(Ok(()));
    }
}
