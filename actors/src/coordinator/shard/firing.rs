//! Firing: ticks turn due targets into instances, and queued instances start.

use dron_model::ids::instance_id;
use dron_model::instance::{HistoryEntry, InstanceRecord, InstanceState, RunCause, SkippedTargets};

use super::notices::push_notice;
use super::status::Ending;
use super::{Outbox, Shard, ms_to_time};
use crate::error::CommandError;
use crate::store::StoreOp;

/// Why due targets are fired late, for the reason a skipped range gives.
#[derive(Clone, Copy)]
enum Late {
    /// Their timer fired late: the server was down, paused or busy.
    Server,
    /// The job was parked behind its own run (one at a time), which ended only now.
    OwnRun,
}

impl Late {
    fn reason(self) -> &'static str {
        match self {
            Late::Server => "could not start within epsilon (server down or busy)",
            Late::OwnRun => "could not start within epsilon: the previous run was still running",
        }
    }
}

impl Shard {
    /// Fires every due target and retry, and expires every wait that ran out.
    pub fn tick(&mut self, now_ms: i64, out: &mut Outbox) {
        // A job stopped at the cap still has a due target: its timer goes back only after
        // this loop, which would otherwise pop it again at once and pass the cap.
        let mut capped = Vec::new();
        while !self.launches_capped()
            && let Some(name) = self.timers.pop_due(now_ms)
        {
            if let Some(due) = self.fire_due_targets(&name, now_ms, Late::Server, out) {
                capped.push((due, name));
            }
        }
        for (due, name) in capped {
            self.timers.insert(due, &name);
        }
        while let Some(id) = self.live.pop_due_retry(now_ms) {
            self.start_retry(&id, now_ms, out);
        }
        while let Some((id, missing)) = self.waits.pop_expired(now_ms) {
            self.expire(&id, missing, now_ms, out);
        }
    }

    /// Turns a job's due targets into instances, at most `max_instances_per_tick`. Targets
    /// whose epsilon window has closed are recorded as one skipped range; those still open
    /// run, late. Answers the first target left due when it stopped at the cap: the caller
    /// puts its timer back (this tick must not fire it again).
    ///
    /// A job that runs one instance at a time (not `concurrent`) gets no instance for a target
    /// while its slot is taken ([`Shard::slot_taken`]): it is *parked*, its due targets kept
    /// implicit in its durable `next_target_ms`, with no timer. When the slot frees
    /// (`try_start`), this runs again: the targets past their epsilon become one skipped
    /// range and the oldest still open starts. So an overloaded server, whose runs end late,
    /// writes nothing per waiting target (queued instances cost a write when queued and
    /// another when skipped): the overloaded path is the cheap one.
    fn fire_due_targets(
        &mut self,
        name: &str,
        now_ms: i64,
        late: Late,
        out: &mut Outbox,
    ) -> Option<i64> {
        let cap = self.config.max_instances_per_tick;
        let entry = self.jobs.get_mut(name)?;
        let schedule = entry.schedule.clone()?;
        let epsilon = entry.record.spec.epsilon_ms;
        let one_at_a_time = !entry.record.spec.concurrent;
        let mut next = entry.record.state.next_target_ms;
        if let Some(first_due) = next.filter(|t| t + epsilon < now_ms) {
            let open_from = now_ms - epsilon;
            next = schedule
                .first_at_or_after(ms_to_time(open_from))
                .map(|t| t.timestamp_millis());
            self.skip_range(name, first_due, open_from, late.reason(), now_ms, out);
        }
        let mut created = 0;
        let mut capped = None;
        let mut parked = false;
        while let Some(target) = next.filter(|t| *t <= now_ms) {
            if one_at_a_time && self.slot_taken(name) {
                parked = true;
                break;
            }
            if created == cap {
                out.more_due = true;
                capped = Some(target);
                break;
            }
            let instance = InstanceRecord::new(name, target, RunCause::Schedule, now_ms);
            if !self.live.contains(&instance.id()) {
                self.admit(instance, now_ms, out);
            }
            created += 1;
            next = schedule
                .next_after(ms_to_time(target))
                .map(|t| t.timestamp_millis());
        }
        let entry = self.jobs.get_mut(name).expect("job present");
        if parked {
            self.parked.insert(name.to_string());
        } else if let (Some(next), None) = (next, capped) {
            self.timers.insert(next, name);
        }
        if entry.record.state.next_target_ms != next {
            entry.record.state.next_target_ms = next;
            out.ops.push(StoreOp::PutJob(entry.record.clone()));
        }
        self.try_start(name, now_ms, out);
        capped
    }

    /// Records the targets of `name` in `[first_ms, until_ms)` as one skipped range (one
    /// history entry, whatever their number, and a notice at most once a minute per job:
    /// see `SkipNotices`).
    fn skip_range(
        &mut self,
        name: &str,
        first_ms: i64,
        until_ms: i64,
        reason: &str,
        now_ms: i64,
        out: &mut Outbox,
    ) {
        let Some(entry) = self.jobs.get(name) else {
            return;
        };
        let Some(schedule) = &entry.schedule else {
            return;
        };
        let count = schedule.count_between(ms_to_time(first_ms), ms_to_time(until_ms), u64::MAX);
        if count == 0 {
            return;
        }
        let skipped = SkippedTargets {
            job: name.to_string(),
            first_target_ms: first_ms,
            until_ms,
            count,
            recorded_ms: now_ms,
            reason: reason.to_string(),
        };
        metrics::counter!("dron_skipped_targets_total").increment(count);
        // Logged as the notice goes, at most once a minute per job with the count since: an
        // overloaded server skips a range for every busy job about every run, and a line for
        // each (a million lines a minute) made the overloaded path the expensive one.
        match self.skip_notices.notice(&entry.record.spec, &skipped) {
            Some(notice) => {
                tracing::warn!(job = name, count = notice.count, reason, "targets skipped");
                push_notice(notice, out);
            }
            None => tracing::debug!(job = name, count, reason, "targets skipped"),
        }
        self.append_history(HistoryEntry::Skipped(skipped), out);
    }

    /// Whether a job that runs one instance at a time has its slot taken: an instance runs,
    /// waits to retry, or is queued to start. (Instances waiting for resources do not take
    /// it: several targets may wait for their data at once.)
    ///
    /// A backfill's runs never take it: they have their own slots (the backfill's
    /// `parallel`), so a scheduled run never waits behind one.
    fn slot_taken(&self, name: &str) -> bool {
        self.live.instances_of(name).any(|instance| {
            instance.cause != RunCause::Backfill
                && matches!(
                    instance.state,
                    InstanceState::Running | InstanceState::RetryWait | InstanceState::Queued
                )
        })
    }

    /// A parked job's due targets, dropped with the job's tasks (`kill_tasks`): recorded as
    /// one skipped range, and its timer armed for its next target after now. Answers how
    /// many were dropped.
    pub(super) fn drop_parked_targets(&mut self, name: &str, now_ms: i64, out: &mut Outbox) -> u64 {
        if !self.parked.remove(name) {
            return 0;
        }
        let Some(entry) = self.jobs.get_mut(name) else {
            return 0;
        };
        let (Some(first), Some(schedule)) = (entry.record.state.next_target_ms, &entry.schedule)
        else {
            return 0;
        };
        let next = schedule
            .next_after(ms_to_time(now_ms))
            .map(|t| t.timestamp_millis());
        let until = next.unwrap_or(now_ms + 1);
        let count = schedule.count_between(ms_to_time(first), ms_to_time(until), u64::MAX);
        entry.record.state.next_target_ms = next;
        out.ops.push(StoreOp::PutJob(entry.record.clone()));
        if let Some(next) = next {
            self.timers.insert(next, name);
        }
        let reason = "killed on request before it started";
        self.skip_range(name, first, until, reason, now_ms, out);
        count
    }

    pub fn run_now(
        &mut self,
        name: &str,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<String, CommandError> {
        self.ensure_job(name)?;
        let id = self.create_instance(name, RunCause::Manual, now_ms, out);
        self.try_start(name, now_ms, out);
        Ok(self.live.get(&id).map(|i| i.task_id()).unwrap_or(id))
    }

    /// Creates an instance for "now" (a manual run or a dependency trigger); answers its id.
    pub(super) fn create_instance(
        &mut self,
        name: &str,
        cause: RunCause,
        now_ms: i64,
        out: &mut Outbox,
    ) -> String {
        // Two triggers in the same millisecond still make two instances.
        let mut target = now_ms;
        while self.live.contains(&instance_id(name, target)) {
            target += 1;
        }
        let mut instance = InstanceRecord::new(name, target, cause, now_ms);
        // Its logical time is now: epsilon counts from now too.
        instance.ready_ms = Some(now_ms);
        let id = instance.id();
        self.admit(instance, now_ms, out);
        id
    }

    /// Starts what may start of a job's queued instances: the oldest one, or all of them for
    /// a concurrent job. A queued target past its epsilon is skipped instead.
    pub(super) fn try_start(&mut self, name: &str, now_ms: i64, out: &mut Outbox) {
        self.start_queued(name, now_ms, out);
        if self.parked.contains(name) && !self.slot_taken(name) {
            self.parked.remove(name);
            if self.starts_held || self.launches_capped() {
                return self.rearm_due_timer(name);
            }
            // Its slot is free: fire its implicit targets now (which starts the oldest open
            // one, through here again).
            if let Some(due) = self.fire_due_targets(name, now_ms, Late::OwnRun, out) {
                self.timers.insert(due, name);
            }
        }
    }

    /// While the shard's writes or announcements are behind ([`Shard::hold_starts`]), or
    /// launches on their way are at their cap ([`Shard::launches_capped`]), a job whose run
    /// ended does not start its next due target at once, or an overloaded server would start
    /// runs as fast as they end, faster than it can record, launch and announce them, and its
    /// queues would grow without bound. Its targets stay implicit in its durable next target;
    /// its timer goes back, already due, for the next tick (which waits for the backlog to
    /// drain) to fire: the most overdue job first.
    fn rearm_due_timer(&mut self, name: &str) {
        let Some(entry) = self.jobs.get(name) else {
            return;
        };
        if let (Some(next), false) = (
            entry.record.state.next_target_ms,
            entry.record.spec.disabled,
        ) {
            self.timers.insert(next, name);
        }
    }

    /// Starts what may start of a job's queued instances (see `try_start`).
    fn start_queued(&mut self, name: &str, now_ms: i64, out: &mut Outbox) {
        let Some(entry) = self.jobs.get(name) else {
            return;
        };
        let (concurrent, epsilon) = (entry.record.spec.concurrent, entry.record.spec.epsilon_ms);
        // A non-concurrent job runs one instance at a time; queued ones past their epsilon are
        // skipped now, even while the slot is taken, so the queue stays bounded by epsilon.
        let mut slot_taken = false;
        for id in self.live.ids_of(name) {
            let Some(instance) = self.live.get(&id) else {
                continue;
            };
            if instance.cause == RunCause::Backfill {
                // Admitted within its backfill's `parallel`: it starts once queued, beside
                // the job's own slot, and has no epsilon.
                if instance.state == InstanceState::Queued {
                    self.start(&id, now_ms, out);
                }
                continue;
            }
            match instance.state {
                InstanceState::Running | InstanceState::RetryWait => {
                    slot_taken = true;
                    continue;
                }
                InstanceState::Queued => {}
                _ => continue,
            }
            let due = instance.ready_ms.unwrap_or(instance.target_ms);
            let late = instance.cause.bound_by_epsilon() && due + epsilon < now_ms;
            if late {
                let message = "could not start within epsilon: the previous run was still running";
                let skipped = Ending {
                    state: InstanceState::Skipped,
                    exit_code: None,
                    message: Some(message.into()),
                };
                metrics::counter!("dron_skipped_targets_total").increment(1);
                self.record_end(&id, skipped, now_ms, out);
            } else if concurrent || !slot_taken {
                self.start(&id, now_ms, out);
                slot_taken = true;
            }
        }
    }

    pub(super) fn start(&mut self, id: &str, now_ms: i64, out: &mut Outbox) {
        let Some(instance) = self.live.start(id, now_ms) else {
            return;
        };
        let instance = instance.clone();
        metrics::counter!("dron_launches_total").increment(1);
        if instance.cause == RunCause::Schedule && instance.attempt == 0 {
            let lateness = (now_ms - instance.target_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("dron_start_lateness_seconds").record(lateness);
        }
        out.ops.push(StoreOp::PutInstance(instance.clone()));
        let request = self.launch_request(&instance);
        let _run = crate::trace::enter_on_shard(&request.spec.task_id, self.index);
        tracing::debug!(attempt = instance.attempt, "launch staged");
        out.launches.push(request);
    }

    fn start_retry(&mut self, id: &str, now_ms: i64, out: &mut Outbox) {
        let retrying = self.live.update(id, |instance| {
            let retrying = instance.state == InstanceState::RetryWait;
            if retrying {
                instance.attempt += 1;
            }
            retrying
        });
        if retrying == Some(true) {
            metrics::counter!("dron_retries_total").increment(1);
            self.start(id, now_ms, out);
        }
    }
}
