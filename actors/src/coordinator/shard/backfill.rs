//! Backfills: a job run again over past logical times, and the jobs downstream of it.
//!
//! Each shard drives the plans of its own jobs (`plans.rs`; the model in
//! `dron_model::backfill`). The root's plan walks its schedule's targets oldest first, at
//! most `parallel` live at once. A run of a backfill ends like any run (`status.rs`
//! `record_end`), and its `job:NAME@TIME` announcement names the backfill in its `meta`: the
//! shards that hold plans of the jobs downstream count it for them
//! ([`Shard::backfill_upstream_succeeded`]), and nobody counts it as a scheduled success
//! (`parents`, `triggeredBy`: see `deps.rs`). So a downstream job runs a time once each of its
//! upstream jobs in the backfill has succeeded for that time, through the same durable path
//! scheduled successes take, and a failed time's downstream never runs.
//!
//! A backfill's runs are instances like others (`RunCause::Backfill`, for their logical time:
//! `DRON_TARGET`, `dependsOn` templates and announcements are the target's) with their own
//! slots: they never take the job's one-at-a-time slot (a scheduled run never waits behind
//! them), have no epsilon, and number their attempts above earlier runs of the same target.

use dron_model::backfill::{BackfillPlan, TargetState};
use dron_model::ids::instance_id;
use dron_model::instance::{InstanceRecord, InstanceState};

use super::plans::PlanEntry;
use super::{Outbox, Shard, ms_to_time};
use crate::error::CommandError;
use crate::store::StoreOp;

/// Attempts numbers kept for one backfill's runs of a target (its retries) before the next
/// backfill's of the same job.
const RETRY_ROOM: u32 = 1_000;

impl Shard {
    /// Takes this shard's part of a backfill: the plan of one of its jobs (the root's, or a
    /// downstream job's), with the root's targets it leaves alone. The root starts at once. A
    /// plan already here (a repeated request) changes nothing.
    pub fn create_backfill(
        &mut self,
        plan: BackfillPlan,
        left_alone: Vec<i64>,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<(), CommandError> {
        self.ensure_job(&plan.job)?;
        let (job, id) = (plan.job.clone(), plan.id.clone());
        if self.plans.get(&job, &id).is_some() {
            return Ok(());
        }
        // Above the attempts of the job's earlier backfills, even one made the same second
        // (with room for their retries): each run keeps its own task id and run directory.
        let earlier = self.plans.ids_of(&job).into_iter();
        let earlier = earlier.filter_map(|id| self.plans.get(&job, &id));
        let above = earlier
            .map(|e| e.plan.first_attempt.saturating_add(RETRY_ROOM))
            .max();
        let mut plan = plan;
        plan.first_attempt = plan.first_attempt.max(above.unwrap_or(0));
        let mut entry = PlanEntry::new(plan);
        for target in left_alone {
            entry.set(target, TargetState::LeftAlone);
        }
        out.ops.extend(entry.entries().map(StoreOp::PutBackfill));
        self.plans.insert(entry);
        self.drive_backfill(&job, &id, now_ms, out);
        Ok(())
    }

    /// Cancels this shard's plans of backfill `id`: nothing new starts; with `kill`, its live
    /// runs are killed, else they finish. Answers how many plans it held.
    pub fn cancel_backfill(
        &mut self,
        id: &str,
        kill: bool,
        now_ms: i64,
        out: &mut Outbox,
    ) -> usize {
        let jobs = self.plans.jobs_in(id);
        for job in &jobs {
            let entry = self.plans.get_mut(job, id).expect("plan present");
            if !entry.plan.cancelled {
                entry.plan.cancelled = true;
                let plan = dron_model::backfill::BackfillEntry::Plan(entry.plan.clone());
                out.ops.push(StoreOp::PutBackfill(plan));
            }
            if kill {
                let running = entry.targets().iter();
                let running = running.filter(|(_, s)| **s == TargetState::Running);
                let live: Vec<String> = running.map(|(t, _)| instance_id(job, *t)).collect();
                for instance in live {
                    self.kill_instance(&instance, now_ms, out);
                }
            }
        }
        jobs.len()
    }

    /// This shard's plans (of backfill `id`, or all), with their targets.
    pub fn backfill_parts(&self, id: Option<&str>) -> Vec<crate::coordinator::BackfillPart> {
        let parts = self
            .plans
            .all(id)
            .map(|entry| crate::coordinator::BackfillPart {
                plan: entry.plan.clone(),
                targets: entry.targets().clone(),
            });
        parts.collect()
    }

    /// Starts what may start of every plan of `job` (after one of its runs ended, which may
    /// have freed a slot or a target).
    pub(super) fn drive_backfills_of(&mut self, job: &str, now_ms: i64, out: &mut Outbox) {
        for id in self.plans.ids_of(job) {
            self.drive_backfill(job, &id, now_ms, out);
        }
    }

    /// Starts targets of a plan while it has room (`parallel`): the root's next ones in time
    /// order, a downstream job's ready ones oldest first. A target whose instance is live
    /// already (a scheduled run of the same time) waits for it to end.
    fn drive_backfill(&mut self, job: &str, id: &str, now_ms: i64, out: &mut Outbox) {
        if !self.jobs.contains_key(job) {
            return; // a plan left by a job gone from this shard: nothing to run
        }
        loop {
            let Some(entry) = self.plans.get(job, id) else {
                return;
            };
            if entry.plan.cancelled || entry.running() >= entry.plan.parallel.max(1) as usize {
                return;
            }
            let next = match entry.plan.is_root() {
                true => self.next_root_target(job, id, out),
                false => entry
                    .ready()
                    .find(|t| !self.live.contains(&instance_id(job, *t))),
            };
            let Some(target) = next else {
                return;
            };
            if self.live.contains(&instance_id(job, target)) {
                return; // the root waits for that run's end, which drives it again
            }
            self.start_backfill_target(job, id, target, now_ms, out);
        }
    }

    /// The root's next target to start, passing those it leaves alone (moving its cursor
    /// past them); None once past the range.
    fn next_root_target(&mut self, job: &str, id: &str, out: &mut Outbox) -> Option<i64> {
        loop {
            let entry = self.plans.get(job, id)?;
            let target = entry.plan.next_ms.filter(|t| *t <= entry.plan.to_ms)?;
            if entry.state(target).is_none() {
                return Some(target);
            }
            self.advance_root(job, id, target, out);
        }
    }

    /// Moves the root's cursor past `target`, to the schedule's next target (a rerun, whose
    /// range is one time, needs no schedule).
    fn advance_root(&mut self, job: &str, id: &str, target: i64, out: &mut Outbox) {
        let schedule = self.jobs.get(job).and_then(|e| e.schedule.as_deref());
        let entry = self.plans.get_mut(job, id).expect("plan present");
        let next = match (schedule, entry.plan.to_ms > target) {
            (Some(schedule), true) => schedule
                .next_after(ms_to_time(target))
                .map(|t| t.timestamp_millis()),
            _ => None,
        };
        entry.plan.next_ms = next;
        let plan = dron_model::backfill::BackfillEntry::Plan(entry.plan.clone());
        out.ops.push(StoreOp::PutBackfill(plan));
    }

    /// Creates the backfill's instance of `job` for `target` and starts it (or lets it wait
    /// for its resources).
    fn start_backfill_target(
        &mut self,
        job: &str,
        id: &str,
        target: i64,
        now_ms: i64,
        out: &mut Outbox,
    ) {
        let entry = self.plans.get(job, id).expect("plan present");
        let (root, first_attempt) = (entry.plan.is_root(), entry.plan.first_attempt);
        if root {
            self.advance_root(job, id, target, out);
        }
        let entry = self.plans.get_mut(job, id).expect("plan present");
        out.ops.push(StoreOp::PutBackfill(
            entry.set(target, TargetState::Running),
        ));
        tracing::debug!(job, backfill = id, target, "backfill run created");
        let instance = InstanceRecord::rerun(job, target, first_attempt, now_ms);
        let instance_id = instance.id();
        self.admit(instance, now_ms, out);
        if self.live.get(&instance_id).map(|i| i.state) == Some(InstanceState::Queued) {
            self.start(&instance_id, now_ms, out);
        }
    }

    /// A backfill's run of `instance` ended as `state`: its target is done. Answers the
    /// backfill, which its announcement names (None: its plan is gone).
    pub(super) fn backfill_run_ended(
        &mut self,
        instance: &InstanceRecord,
        state: InstanceState,
        out: &mut Outbox,
    ) -> Option<String> {
        let (job, target) = (instance.job.as_str(), instance.target_ms);
        let id = self.plans.running(job, target)?;
        let done = match state {
            InstanceState::Succeeded => TargetState::Succeeded,
            _ => TargetState::Failed,
        };
        let entry = self.plans.get_mut(job, &id).expect("plan present");
        out.ops.push(StoreOp::PutBackfill(entry.set(target, done)));
        Some(id)
    }

    /// `upstream` succeeded for `target_ms` in backfill `id` (told by its announcement):
    /// each job here with a plan in that backfill that runs after it counts it, and runs
    /// that time once all its upstream jobs have. A repeated announcement changes nothing.
    pub(super) fn backfill_upstream_succeeded(
        &mut self,
        id: &str,
        upstream: &str,
        target_ms: i64,
        now_ms: i64,
        out: &mut Outbox,
    ) {
        for job in self.plans.jobs_in(id) {
            let entry = self.plans.get_mut(&job, id).expect("plan present");
            if !entry.plan.upstream.iter().any(|u| u == upstream) {
                continue;
            }
            let mut done = match entry.state(target_ms) {
                None => Vec::new(),
                Some(TargetState::Waiting(done)) if !done.iter().any(|u| u == upstream) => {
                    done.clone()
                }
                Some(_) => continue,
            };
            done.push(upstream.to_string());
            let all = entry.plan.upstream.iter().all(|u| done.contains(u));
            let state = match all {
                true => TargetState::Ready,
                false => TargetState::Waiting(done),
            };
            out.ops
                .push(StoreOp::PutBackfill(entry.set(target_ms, state)));
            self.drive_backfill(&job, id, now_ms, out);
        }
    }

    /// After a restart or a move: a target marked running whose instance is gone (it cannot
    /// be, as both are written in one batch, but a lost slot would hold the plan for ever)
    /// counts as failed; then every plan starts what it may.
    pub(super) fn resume_backfills(&mut self, jobs: &[String], now_ms: i64, out: &mut Outbox) {
        for job in jobs {
            for id in self.plans.ids_of(job) {
                let entry = self.plans.get_mut(job, &id).expect("plan present");
                let running = entry.targets().iter();
                let lost: Vec<i64> = running
                    .filter(|(_, s)| **s == TargetState::Running)
                    .map(|(t, _)| *t)
                    .filter(|t| !self.live.contains(&instance_id(job, *t)))
                    .collect();
                for target in lost {
                    out.ops
                        .push(StoreOp::PutBackfill(entry.set(target, TargetState::Failed)));
                }
                self.drive_backfill(job, &id, now_ms, out);
            }
        }
    }
}
