//! The coordinator: one per shard. It owns the shard's storage, keeps the shard's jobs,
//! timers and live instances in memory, fires targets, asks the broker to launch, and applies
//! status updates. On (re)start it rebuilds everything from storage.
//!
//! Every change is applied in memory, submitted to the store, and only once durable are its
//! effects released (the API's acknowledgement, launches, kills, announcements), in order, by
//! the shard's committer task. So nothing is acknowledged or run that a crash could forget.
//!
//! Changes are staged and flushed together: the first message that changes anything queues
//! a `Flush` behind the messages already waiting, and everything they change goes to the
//! store as one batch and through the committer once. Idle, a flush follows each message at
//! once; under load one batch carries a whole mailbox's worth of runs, and while more than
//! `max_writes_in_flight` batches wait for the disk the flush itself waits (see `push_back`).

mod announcer;
mod committer;
mod messages;
mod shard;
mod space;
mod ticker;

use announcer::{AnnouncerLinks, spawn_announcer};
use committer::{Backlog, Commit, Effects, Links, already_durable, spawn_committer};
use space::OutOfSpace;

pub use crate::views::{JobSummary, RunState};
pub use messages::{
    BackfillPart, CoordinatorMsg, JobView, MovedJob, PutOutcome, Reply, ShardLineage, ShardStats,
};
pub use shard::{Adoption, Applied, Outbox, PlanEntry, Shard, ShardConfig};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, watch};

use crate::broker::BrokerMsg;
use crate::bus::BusMsg;
use crate::clock::SharedClock;
use crate::error::CommandError;
use crate::notify::NotifierMsg;
use crate::router::RouterMsg;
use crate::store::{ResourceStore, ShardStore, StoreError, StoreOp};
use crate::trace;

pub struct Coordinator;

pub struct CoordinatorArgs {
    pub index: u32,
    pub store: Arc<dyn ShardStore>,
    pub clock: SharedClock,
    pub broker: ActorRef<BrokerMsg>,
    pub router: ActorRef<RouterMsg>,
    pub bus: ActorRef<BusMsg>,
    pub notifier: ActorRef<NotifierMsg>,
    pub resources: Arc<dyn ResourceStore>,
    pub config: ShardConfig,
}

pub struct CoordinatorState {
    shard: Shard,
    /// Batches submitted and not durable yet, and whether a tick waits for them to drain
    /// (shared with the committer: see [`Backlog`]).
    backlog: Arc<Backlog>,
    max_writes_in_flight: usize,
    store: Arc<dyn ShardStore>,
    /// Where admitted instances' resources are looked up (see `look_up`).
    resources: Arc<dyn ResourceStore>,
    clock: SharedClock,
    router: ActorRef<RouterMsg>,
    deadline: watch::Sender<Option<i64>>,
    committer: mpsc::UnboundedSender<Commit>,
    /// Changes not flushed yet.
    staged: Staged,
    /// Set while the shard's disk is full (see `space`).
    out_of_space: Option<OutOfSpace>,
}

/// What the messages handled since the last flush changed.
#[derive(Default)]
struct Staged {
    out: Outbox,
    thens: Vec<Then>,
    /// A `Flush` is in the mailbox.
    flush_queued: bool,
}

/// What to do once a change is durable (answer its caller, acknowledge an agent's report),
/// or once its write failed (answer the caller with the failure).
type Then = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

impl Actor for Coordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        // Loading waits for the writer and scans the shard: off this runtime worker.
        let store = args.store.clone();
        let snapshot = tokio::task::spawn_blocking(move || store.load()).await??;
        let now_ms = args.clock.now_ms();
        let max_writes_in_flight = args.config.max_writes_in_flight.max(1);
        let (shard, recovered) = Shard::recover(args.index, args.config, snapshot, now_ms);
        tracing::info!(
            shard = args.index,
            jobs = shard.stats(now_ms).jobs,
            "shard recovered"
        );
        let (deadline, deadline_rx) = watch::channel(None);
        ticker::spawn(myself.clone(), args.clock.clone(), deadline_rx);
        let backlog = Arc::new(Backlog::default());
        let announcer = spawn_announcer(AnnouncerLinks {
            bus: args.bus,
            coordinator: myself.clone(),
            backlog: backlog.clone(),
            low_water: max_writes_in_flight / 2,
        });
        let links = Links {
            backlog: backlog.clone(),
            low_water: max_writes_in_flight / 2,
            shard: args.index,
            coordinator: myself.clone(),
            broker: args.broker,
            announcer,
            notifier: args.notifier,
        };
        let committer = spawn_committer(links);
        let out_of_space = OutOfSpace::detect(&args.store, args.index, &myself);
        let mut state = CoordinatorState {
            shard,
            backlog,
            max_writes_in_flight,
            store: args.store,
            resources: args.resources,
            clock: args.clock,
            router: args.router,
            deadline,
            committer,
            staged: Staged::default(),
            out_of_space,
        };
        state.stage(&myself, recovered, None);
        // Catch up at once: targets that fell due while the shard was down.
        myself.send_message(CoordinatorMsg::Tick)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        message: CoordinatorMsg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle(&myself, message)
    }
}

impl CoordinatorState {
    fn handle(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        message: CoordinatorMsg,
    ) -> Result<(), ActorProcessingErr> {
        let now_ms = self.clock.now_ms();
        let mut out = Outbox::default();
        let message = match &self.out_of_space {
            Some(full) => match full.refuse(self.shard.index, message) {
                Some(message) => message,
                None => return Ok(()),
            },
            None => message,
        };
        let message = match self.push_back(message) {
            Some(message) => message,
            None => return Ok(()),
        };
        self.shard
            .hold_starts(self.backlog.holding(self.max_writes_in_flight));
        match message {
            CoordinatorMsg::PutJob {
                spec,
                received_ms,
                reply,
            } => {
                let outcome = self.shard.put_job(spec, received_ms, &mut out);
                self.stage(myself, out, reply_later(reply, Ok(outcome)));
            }
            CoordinatorMsg::DeleteJob { name, reply } => {
                let result = self.shard.delete_job(&name, &mut out);
                self.stage(myself, out, reply_later(reply, result));
            }
            CoordinatorMsg::RunNow { name, reply } => {
                let result = self.shard.run_now(&name, now_ms, &mut out);
                self.stage(myself, out, reply_later(reply, result));
            }
            CoordinatorMsg::MarkSuccess { name, reply } => {
                let result = self.shard.mark_success(&name, now_ms, &mut out);
                self.stage(myself, out, reply_later(reply, result));
            }
            CoordinatorMsg::CreateBackfill {
                plan,
                left_alone,
                reply,
            } => {
                let result = self
                    .shard
                    .create_backfill(plan, left_alone, now_ms, &mut out);
                self.stage(myself, out, reply_later(reply, result));
            }
            CoordinatorMsg::CancelBackfill { id, kill, reply } => {
                let cancelled = self.shard.cancel_backfill(&id, kill, now_ms, &mut out);
                self.stage(myself, out, reply_later(reply, Ok(cancelled)));
            }
            CoordinatorMsg::Backfills { id, reply } => {
                let _ = reply.send(self.shard.backfill_parts(id.as_deref()));
            }
            CoordinatorMsg::KillTasks { name, reply } => {
                let result = self.shard.kill_tasks(&name, now_ms, &mut out);
                self.stage(myself, out, reply_later(reply, result));
            }
            CoordinatorMsg::CompleteAsync {
                task,
                status_code,
                reply,
            } => {
                let result = self
                    .shard
                    .complete_async(&task, status_code, now_ms, &mut out);
                self.stage(myself, out, reply_later(reply, result));
            }
            CoordinatorMsg::GetJob { name, reply } => {
                let _ = reply.send(self.shard.job_view(&name));
            }
            CoordinatorMsg::ListJobs { reply } => {
                let _ = reply.send(self.shard.job_records());
            }
            CoordinatorMsg::JobNames { reply } => {
                let _ = reply.send(self.shard.job_names());
            }
            CoordinatorMsg::JobsNamed { names, reply } => {
                let _ = reply.send(self.shard.jobs_named(&names));
            }
            CoordinatorMsg::History { name, limit, reply } => {
                if !self.shard.has_job(&name) {
                    let _ = reply.send(Err(crate::error::CommandError::JobNotFound(name)));
                    return Ok(());
                }
                self.read_after_staged(myself, move |store| {
                    let history = store
                        .wait_applied()
                        .and_then(|()| store.history(&name, limit));
                    let _ = reply.send(history.map_err(CommandError::from));
                });
            }
            CoordinatorMsg::QueryJobs { query, reply } => {
                let _ = reply.send(query.page(self.shard.jobs_with_run_state()));
            }
            CoordinatorMsg::Neighbours {
                describe,
                children_of,
                reply,
            } => {
                let jobs = self.shard.jobs_with_run_state();
                let _ = reply.send(crate::graph::shard_neighbours(
                    jobs,
                    &describe,
                    &children_of,
                ));
            }
            CoordinatorMsg::Summaries { reply } => {
                let _ = reply.send(self.shard.summaries());
            }
            CoordinatorMsg::RunDurations { limit, reply } => {
                let names = self.shard.job_names();
                self.read_after_staged(myself, move |store| {
                    let _ = reply.send(run_durations(store, names, limit));
                });
            }
            CoordinatorMsg::ChildrenOf { name, reply } => {
                let _ = reply.send(self.shard.children_of(&name));
            }
            CoordinatorMsg::ParentsOf { names, reply } => {
                let _ = reply.send(self.shard.parents_of(&names));
            }
            CoordinatorMsg::ResourceReady { events, reply } => {
                for event in &events {
                    self.shard.resource_ready(event, now_ms, &mut out);
                }
                self.stage(myself, out, reply_later(reply, Ok(())));
            }
            CoordinatorMsg::ResourcesFound { found } => {
                self.shard.resources_found(&found, now_ms, &mut out);
                self.stage(myself, out, None);
            }
            CoordinatorMsg::AnnouncementsDone { keys } => {
                out.ops
                    .extend(keys.into_iter().map(StoreOp::DeleteAnnouncement));
                self.stage(myself, out, None);
            }
            CoordinatorMsg::NoticesDone { keys } => {
                out.ops.extend(keys.into_iter().map(StoreOp::DeleteNotice));
                self.stage(myself, out, None);
            }
            CoordinatorMsg::Lineage { resource, reply } => {
                let _ = reply.send(self.shard.lineage(&resource));
            }
            CoordinatorMsg::TaskUpdate { update, forwarded } => {
                let ack = update.ack.clone();
                let applied = {
                    // Only while the shard applies it: the `Flush` staged below is not this
                    // run's.
                    let _run = trace::enter_on_shard(&update.task_id, self.shard.index);
                    let applied = self.shard.task_update(update.clone(), now_ms, &mut out);
                    tracing::debug!(event = ?update.event, ?applied, forwarded, "status applied");
                    applied
                };
                if applied == Applied::Unknown && !forwarded {
                    // Sent here before its job moved to another shard: pass it on to the owner.
                    let _ = self
                        .router
                        .send_message(RouterMsg::ForwardTaskUpdate(update));
                    self.stage(myself, out, None);
                    return Ok(());
                }
                let current = applied == Applied::Current;
                // Not acknowledged if its write fails: the agent reports it again.
                let then = ack.map(|ack| -> Then {
                    Box::new(move |written| {
                        if written.is_ok() {
                            ack.applied(current)
                        }
                    })
                });
                self.stage(myself, out, then);
            }
            CoordinatorMsg::Tick => {
                self.shard.tick(now_ms, &mut out);
                if out.more_due {
                    myself.send_message(CoordinatorMsg::Tick)?;
                }
                self.stage(myself, out, None);
                // The ticker waits for a new deadline after each tick: always publish one,
                // even an unchanged one (a tick that woke a millisecond early).
                self.deadline.send_modify(|_| ());
            }
            CoordinatorMsg::StoreFailed(error) => {
                // Memory is now ahead of storage: fail, and let the supervisor rebuild this
                // shard from what is durable. Callers were not acknowledged.
                return Err(Box::new(error));
            }
            CoordinatorMsg::SpaceReturned => {
                tracing::info!(
                    shard = self.shard.index,
                    "space returned: scheduling resumes"
                );
                self.out_of_space = None;
                self.flush(myself);
                // Catch up with the targets that fell due meanwhile.
                myself.send_message(CoordinatorMsg::Tick)?;
            }
            CoordinatorMsg::Release { ring, reply } => {
                // The jobs leave memory now, so nothing handled after this message touches
                // them or their history, which stays in storage until the router's `Forget`,
                // sent only after this reply.
                let mut moved = self.shard.release(&ring);
                self.publish_deadline();
                let coordinator = myself.clone();
                self.read_after_staged(myself, move |store| {
                    match read_histories(store, &mut moved) {
                        Ok(()) => {
                            let _ = reply.send(moved);
                        }
                        // As when the read failed in the handler: rebuild this shard from storage
                        // (which still has the jobs); the router's ask fails with the dropped reply.
                        Err(error) => {
                            let _ = coordinator.send_message(CoordinatorMsg::StoreFailed(error));
                        }
                    }
                });
            }
            CoordinatorMsg::Adopt { jobs, reply } => {
                self.shard.adopt(jobs, now_ms, &mut out);
                self.stage(myself, out, reply_later(reply, Ok(())));
            }
            CoordinatorMsg::Forget { names, reply } => {
                self.shard.forget(&names, &mut out);
                self.stage(myself, out, reply_later(reply, Ok(())));
            }
            CoordinatorMsg::Stats { reply } => {
                let _ = reply.send(self.shard.stats(now_ms));
            }
            CoordinatorMsg::Flush => {
                self.staged.flush_queued = false;
                self.flush(myself);
            }
            CoordinatorMsg::InjectPanic => {
                panic!("fault injection: shard {} panics", self.shard.index)
            }
        }
        Ok(())
    }

    /// While the store or the bus is behind (more than `max_writes_in_flight` batches not
    /// durable or not announced), new work is pushed back instead of queued in memory: a tick
    /// and a flush wait until the committer has seen the backlog drain (it sends them then).
    /// New jobs and runs are refused with a 503 (their callers retry) while the backlog is
    /// [`Backlog::holding`]: the writes behind, or the announcements far behind (so an API
    /// write still goes through while the runs alone keep the bus busy). Ends, kills,
    /// deletions and events are still applied in memory (they free resources or must not be
    /// lost) and wait in the staged batch; while holding, an end starts nothing (see
    /// `Shard::hold_starts`). Answers the message when it is to be handled.
    fn push_back(&mut self, message: CoordinatorMsg) -> Option<CoordinatorMsg> {
        let limit = self.max_writes_in_flight;
        if !self.backlog.over(limit) {
            return Some(message);
        }
        let new_work = matches!(
            message,
            CoordinatorMsg::PutJob { .. }
                | CoordinatorMsg::RunNow { .. }
                | CoordinatorMsg::MarkSuccess { .. }
                | CoordinatorMsg::CreateBackfill { .. }
        );
        if new_work && !self.backlog.holding(limit) {
            return Some(message);
        }
        let in_flight = self.backlog.in_flight.load(Ordering::Acquire);
        let busy = || {
            let shard = self.shard.index;
            metrics::counter!("dron_writes_pushed_back_total").increment(1);
            crate::error::CommandError::Unavailable(format!(
                "shard {shard} is overloaded: its writes wait for the disk or the event bus ({in_flight} batches not durable yet); retry shortly"
            ))
        };
        match message {
            CoordinatorMsg::PutJob { reply, .. } => drop(reply.send(Err(busy()))),
            CoordinatorMsg::RunNow { reply, .. } => drop(reply.send(Err(busy()))),
            CoordinatorMsg::MarkSuccess { reply, .. } => drop(reply.send(Err(busy()))),
            CoordinatorMsg::CreateBackfill { reply, .. } => drop(reply.send(Err(busy()))),
            CoordinatorMsg::Tick => {
                if self.backlog.defer_tick(limit) {
                    return Some(CoordinatorMsg::Tick);
                }
            }
            // What was staged waits, in memory, and goes as one batch when the committer
            // sends the flush: so the batches in flight stay bounded however fast status
            // updates come, and each one carries more (a run's start and end may coalesce).
            CoordinatorMsg::Flush => {
                if !self.backlog.writes_over(limit) || self.backlog.defer_flush(limit) {
                    return Some(CoordinatorMsg::Flush);
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Runs `read` against the store on a blocking thread (a RocksDB read must not hold up
    /// this actor's worker) and answers from there. It sees every write of every message
    /// handled before this one, as a read in the handler after a flush would: the flush
    /// submits them, and `read` starts with [`ShardStore::wait_applied`], which returns once
    /// the store has applied every batch submitted before it. (Not once durable: a read does
    /// not wait for the sync, and a slow disk holds up no reshard's `Release`.)
    fn read_after_staged(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        read: impl FnOnce(&dyn ShardStore) + Send + 'static,
    ) {
        self.flush(myself);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(store.as_ref()));
    }

    /// Stages the outbox's writes and effects for the next flush.
    fn stage(&mut self, myself: &ActorRef<CoordinatorMsg>, mut out: Outbox, then: Option<Then>) {
        self.publish_deadline();
        if !out.lookups.is_empty() {
            self.look_up(myself, std::mem::take(&mut out.lookups));
        }
        self.staged.out.absorb(out);
        self.staged.thens.extend(then);
        if !self.staged.flush_queued && !self.staged.is_empty() {
            self.staged.flush_queued = myself.send_message(CoordinatorMsg::Flush).is_ok();
        }
    }

    /// Looks up, on a blocking thread (RocksDB reads must not hold up this actor's worker),
    /// which of `resources` the resource store holds, and hands those back
    /// (`ResourcesFound`). A store that cannot answer fails the shard, which its supervisor
    /// rebuilds from storage rather than let it run on a guess.
    fn look_up(&self, myself: &ActorRef<CoordinatorMsg>, mut resources: Vec<String>) {
        resources.sort_unstable();
        resources.dedup();
        let store = self.resources.clone();
        let coordinator = myself.clone();
        tokio::task::spawn_blocking(move || {
            let message = match satisfied_among(store.as_ref(), resources) {
                Ok(found) if found.is_empty() => return,
                Ok(found) => CoordinatorMsg::ResourcesFound { found },
                Err(error) => CoordinatorMsg::StoreFailed(error),
            };
            let _ = coordinator.send_message(message);
        });
    }

    /// Hands the staged writes to the store and their effects to the committer. While the
    /// disk is full they stay staged (unacknowledged) until space returns: writing them would
    /// only fail, and rebuild the shard.
    fn flush(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        if self.staged.is_empty() || self.out_of_space.is_some() {
            // Nothing to write or release (an event nobody here waits for, a tick with
            // nothing due): no trip through the committer.
            return;
        }
        let flush_queued = self.staged.flush_queued;
        let Staged { out, thens, .. } = std::mem::take(&mut self.staged);
        self.staged.flush_queued = flush_queued;
        let Outbox {
            ops,
            launches,
            kills,
            adopts,
            announcements,
            notices,
            ..
        } = out;
        let effects = Effects {
            launches,
            kills,
            adopts,
            announcements,
            notices,
            thens,
        };
        let in_backlog = !ops.is_empty();
        let durable = if in_backlog {
            self.backlog.submitted(self.shard.index);
            self.store.submit(crate::store::coalesce(ops))
        } else {
            already_durable()
        };
        let commit = Commit {
            durable,
            effects,
            in_backlog,
        };
        if self.committer.send(commit).is_err() {
            tracing::error!(shard = self.shard.index, "committer gone");
            let _ = myself.send_message(CoordinatorMsg::StoreFailed(
                crate::store::StoreError::Stopped("the committer"),
            ));
        }
    }

    fn publish_deadline(&self) {
        let next = self.shard.next_deadline();
        self.deadline.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
    }
}

/// Reads each job's recent history beside the store, so that statistics over every job cost
/// one message per shard rather than one per job.
fn run_durations(
    store: &dyn ShardStore,
    names: Vec<String>,
    limit: usize,
) -> Result<Vec<(String, Vec<i64>)>, crate::error::CommandError> {
    store.wait_applied()?;
    let mut durations = Vec::with_capacity(names.len());
    for name in names {
        let history = store.history(&name, limit)?;
        let runs = history.iter().filter_map(crate::stats::run_duration_ms);
        durations.push((name, runs.collect()));
    }
    Ok(durations)
}

/// Those of `resources` that `store` holds.
fn satisfied_among(
    store: &dyn ResourceStore,
    resources: Vec<String>,
) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    for resource in resources {
        if store.get(&resource)?.is_some() {
            found.push(resource);
        }
    }
    Ok(found)
}

/// Fills in the history of jobs leaving this shard.
fn read_histories(store: &dyn ShardStore, moved: &mut [MovedJob]) -> Result<(), StoreError> {
    store.wait_applied()?;
    for job in moved {
        job.history = store.history(&job.record.spec.name, usize::MAX)?;
    }
    Ok(())
}

/// Wraps an RPC reply so that it is sent only once the change is durable, or with the
/// failure if it could not be made durable (507 for a full disk).
fn reply_later<T: Send + 'static>(
    reply: Reply<T>,
    result: Result<T, CommandError>,
) -> Option<Then> {
    Some(Box::new(move |written: Result<(), &StoreError>| {
        let written = written.map_err(|error| CommandError::from(error.clone()));
        let _ = reply.send(written.and(result));
    }))
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.thens.is_empty() && self.out.is_empty()
    }
}

#[cfg(test)]
mod tests;
