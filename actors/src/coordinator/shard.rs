//! A shard's scheduling state and rules, apart from the actor that drives it: every method
//! changes memory and records in an [`Outbox`] what must be written and what must happen once
//! the write is durable. Nothing here does I/O, so it reads (and tests) as plain logic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::DateTime;
use dron_model::demand::{Resources, TaskDemand};
use dron_model::ids::{TaskRef, instance_id, parse_task_id};
use dron_model::instance::{HistoryEntry, InstanceRecord, InstanceState, RunCause, SkippedTargets};
use dron_model::job::{JobRecord, JobSpec, JobState, Trigger};
use dron_model::notice::{Notice, NoticeKind};
use dron_model::resource::{EventStatus, Expansion, ResourceEvent, job_resource, pattern_matches};
use dron_model::ring::Ring;
use dron_model::schedule::Schedule;

use super::messages::{
    JobSummary, JobView, MovedJob, PutOutcome, RunState, ShardLineage, ShardStats,
};
use super::parents::ParentIndex;
use crate::agent::process::{TaskCommand, TaskEnd, TaskSpec};
use crate::broker::{LaunchRequest, TaskEvent, TaskUpdate};
use crate::error::CommandError;
use crate::store::{ResourceStore, ShardSnapshot, StoreOp};

/// Event times remembered per `triggeredBy` job, so a replayed event triggers no second run.
const TRIGGERS_REMEMBERED: usize = 256;

#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Cap on each of a run's stdout and stderr files.
    pub output_cap_bytes: u64,
    /// History entries kept per job.
    pub history_keep: usize,
    /// First retry delay; doubles per attempt up to `retry_backoff_max_ms`.
    pub retry_backoff_ms: i64,
    pub retry_backoff_max_ms: i64,
    /// Instances one job may create in one tick (a PT0.001S job after downtime must not
    /// stall its shard); the rest follow on the next tick.
    pub max_instances_per_tick: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            output_cap_bytes: 10 * 1024 * 1024,
            history_keep: 1000,
            retry_backoff_ms: 1000,
            retry_backoff_max_ms: 60_000,
            max_instances_per_tick: 1000,
        }
    }
}

/// Indexes shared by every shard of a server.
#[derive(Clone)]
pub struct SharedIndexes {
    /// Where satisfied resources are looked up.
    pub resources: Arc<dyn ResourceStore>,
    /// Which shards hold children of which parent.
    pub parents: Arc<ParentIndex>,
}

/// What a change needs written, and what to do once it is durable.
#[derive(Default)]
pub struct Outbox {
    pub ops: Vec<StoreOp>,
    pub launches: Vec<LaunchRequest>,
    pub kills: Vec<String>,
    /// Tasks to adopt after a restart.
    pub adopts: Vec<Adoption>,
    /// Jobs that just succeeded, announced to every shard for their dependants.
    pub succeeded: Vec<String>,
    /// Events for the bus (`job:NAME@TIME` of runs that ended), also written to the shard's
    /// outbox in `ops` so none is lost to a crash.
    pub announcements: Vec<ResourceEvent>,
    /// Notices for the notifier (failures, skips, recoveries), also written to the shard's
    /// notice outbox in `ops`, for the same reason.
    pub notices: Vec<Notice>,
    /// Set when a tick stopped at `max_instances_per_tick`: tick again at once.
    pub more_due: bool,
    /// A read of the resource store failed: the shard must be rebuilt.
    pub read_failed: Option<crate::store::StoreError>,
}

impl Outbox {
    /// Nothing to write and nothing to release.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.launches.is_empty()
            && self.kills.is_empty()
            && self.adopts.is_empty()
            && self.succeeded.is_empty()
            && self.announcements.is_empty()
            && self.notices.is_empty()
    }

    /// Adds `later`'s writes and effects after this one's.
    pub fn absorb(&mut self, later: Outbox) {
        append(&mut self.ops, later.ops);
        append(&mut self.launches, later.launches);
        append(&mut self.kills, later.kills);
        append(&mut self.adopts, later.adopts);
        append(&mut self.succeeded, later.succeeded);
        append(&mut self.announcements, later.announcements);
        append(&mut self.notices, later.notices);
        self.more_due |= later.more_due;
        self.read_failed = self.read_failed.take().or(later.read_failed);
    }
}

/// `to.extend(more)`, without copying `more` when `to` is empty (store ops are large).
fn append<T>(to: &mut Vec<T>, mut more: Vec<T>) {
    if to.is_empty() {
        std::mem::swap(to, &mut more);
    } else {
        to.append(&mut more);
    }
}

/// How an instance ended for good.
struct Ending {
    state: InstanceState,
    exit_code: Option<i32>,
    /// Why, for the run's history.
    message: Option<String>,
}

impl Ending {
    fn succeeded() -> Self {
        Ending {
            state: InstanceState::Succeeded,
            exit_code: Some(0),
            message: None,
        }
    }

    fn killed(why: &str) -> Self {
        Ending {
            state: InstanceState::Killed,
            exit_code: None,
            message: Some(why.to_string()),
        }
    }
}

/// What a waiting instance still misses, and until when it may wait.
struct Wait {
    deadline_ms: i64,
    missing: BTreeSet<String>,
}

struct JobEntry {
    record: JobRecord,
    /// Boxed to keep the entry within 512 bytes (an allocator size class) at a million jobs.
    schedule: Option<Box<Schedule>>,
    /// What each of its tasks asks of an agent (parsed once, shared by every launch).
    demand: Arc<TaskDemand>,
}

pub struct Shard {
    pub index: u32,
    config: ShardConfig,
    /// Boxed: a hash table keeps a slot for each bucket, and about half its buckets are
    /// empty; inline entries made the table alone over 1 KB per job at a million jobs.
    /// Keyed by `Box<str>`, 8 bytes smaller than `String` in every bucket.
    jobs: HashMap<Box<str>, Box<JobEntry>>,
    /// (next target, job) of every enabled scheduled job: the timer index.
    timers: BTreeSet<(i64, Box<str>)>,
    /// (retry time, instance id).
    retries: BTreeSet<(i64, String)>,
    /// Live instances by id.
    live: HashMap<String, InstanceRecord>,
    /// Targets of each job's live instances, oldest first.
    live_by_job: HashMap<String, BTreeSet<i64>>,
    /// Instances an operator asked to kill: however their process ends, they end killed.
    kill_requested: HashSet<String>,
    /// parent → its children on this shard.
    children: HashMap<String, BTreeSet<String>>,
    /// History appends per job since its last trim.
    appends_since_trim: HashMap<String, usize>,
    /// Jobs handed to another shard and not yet forgotten, with their instance ids.
    released: HashMap<String, Vec<String>>,
    /// Where satisfied resources are looked up.
    resources: Arc<dyn ResourceStore>,
    /// Which shards hold children of which parent (shared with the router and other shards).
    parents: Arc<ParentIndex>,
    /// Waiting instances: resource → the instances waiting for it...
    waiting: HashMap<String, HashSet<String>>,
    /// ...and instance → what it still misses, and until when it may wait.
    unsatisfied: HashMap<String, Wait>,
    /// (wait deadline, instance id) of waiting instances.
    expiries: BTreeSet<(i64, String)>,
    /// `triggeredBy` jobs: name → pattern.
    triggered: BTreeMap<String, String>,
}

fn ms_to_time(ms: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Shard {
    /// Rebuilds a shard from storage: indexes, timers, and the adoption of tasks that were
    /// running when the server stopped.
    pub fn recover(
        index: u32,
        config: ShardConfig,
        shared: SharedIndexes,
        snapshot: ShardSnapshot,
        now_ms: i64,
    ) -> (Shard, Outbox) {
        let SharedIndexes { resources, parents } = shared;
        // What this shard's previous life added; its jobs are added again below.
        parents.reset(index);
        let mut shard = Shard {
            index,
            config,
            jobs: HashMap::new(),
            timers: BTreeSet::new(),
            retries: BTreeSet::new(),
            live: HashMap::new(),
            live_by_job: HashMap::new(),
            kill_requested: HashSet::new(),
            children: HashMap::new(),
            appends_since_trim: HashMap::new(),
            released: HashMap::new(),
            resources,
            parents,
            waiting: HashMap::new(),
            unsatisfied: HashMap::new(),
            expiries: BTreeSet::new(),
            triggered: BTreeMap::new(),
        };
        for record in snapshot.jobs {
            shard.insert_job(record);
        }
        let mut out = Outbox {
            announcements: snapshot.announcements,
            notices: snapshot.notices,
            ..Outbox::default()
        };
        for instance in snapshot.instances {
            shard.recover_instance(instance, now_ms, &mut out);
        }
        let jobs: Vec<String> = shard.live_by_job.keys().cloned().collect();
        for job in jobs {
            shard.try_start(&job, now_ms, &mut out);
        }
        (shard, out)
    }

    fn recover_instance(&mut self, instance: InstanceRecord, now_ms: i64, out: &mut Outbox) {
        if !self.jobs.contains_key(instance.job.as_str()) {
            out.ops.push(StoreOp::DeleteInstance(instance.id()));
            return;
        }
        match instance.state {
            InstanceState::Running => {
                let timeout = self.jobs[instance.job.as_str()].record.spec.timeout_ms;
                let deadline = timeout.zip(instance.started_ms).map(|(t, s)| s + t as i64);
                out.adopts.push(Adoption {
                    request: self.launch_request(&instance),
                    agent: instance.agent.clone(),
                    timeout_deadline_ms: deadline,
                });
            }
            InstanceState::RetryWait => {
                let at = instance.retry_at_ms.unwrap_or_default();
                self.retries.insert((at, instance.id()));
            }
            _ => {}
        }
        self.add_live(instance, now_ms, out);
    }

    fn insert_job(&mut self, record: JobRecord) {
        let name = record.spec.name.clone();
        for parent in record.spec.parents() {
            self.children
                .entry(parent.clone())
                .or_default()
                .insert(name.clone());
            self.parents.add(self.index, parent);
        }
        if let (Some(next), false) = (record.state.next_target_ms, record.spec.disabled) {
            self.timers.insert((next, name.as_str().into()));
        }
        if let Some(pattern) = record.spec.trigger_pattern() {
            self.triggered.insert(name.clone(), pattern.to_string());
        }
        let schedule = record.spec.schedule().map(Box::new);
        let demand = job_demand(&record.spec);
        let entry = JobEntry {
            record,
            schedule,
            demand,
        };
        self.jobs.insert(name.into_boxed_str(), Box::new(entry));
    }

    /// Removes a job from every index; answers its record.
    fn remove_job(&mut self, name: &str) -> Option<JobRecord> {
        let entry = *self.jobs.remove(name)?;
        if let Some(next) = entry.record.state.next_target_ms {
            self.timers.remove(&(next, name.into()));
        }
        for parent in entry.record.spec.parents() {
            if let Some(children) = self.children.get_mut(parent) {
                children.remove(name);
            }
            self.parents.remove(self.index, parent);
        }
        self.appends_since_trim.remove(name);
        self.triggered.remove(name);
        Some(entry.record)
    }

    /// When the shard next needs a tick.
    pub fn next_deadline(&self) -> Option<i64> {
        let timer = self.timers.first().map(|(at, _)| *at);
        let retry = self.retries.first().map(|(at, _)| *at);
        let expiry = self.expiries.first().map(|(at, _)| *at);
        timer.into_iter().chain(retry).chain(expiry).min()
    }

    // ----- jobs -------------------------------------------------------------------------

    pub fn put_job(&mut self, spec: JobSpec, received_ms: i64, out: &mut Outbox) -> PutOutcome {
        let name = spec.name.clone();
        let (outcome, state, reschedule) = match self.remove_job(&name) {
            Some(old) => {
                let enabled_again = old.spec.disabled && !spec.disabled;
                let reschedule = old.spec.trigger != spec.trigger || enabled_again;
                (PutOutcome::Replaced, old.state, reschedule)
            }
            None => (PutOutcome::Created, JobState::default(), true),
        };
        let mut record = JobRecord { spec, state };
        if reschedule {
            record.state.next_target_ms = record
                .spec
                .schedule()
                .and_then(|s| s.first_at_or_after(ms_to_time(received_ms)))
                .map(|t| t.timestamp_millis());
        }
        if !matches!(record.spec.trigger, Trigger::Parents(_)) {
            record.state.parents_succeeded.clear();
        }
        out.ops.push(StoreOp::PutJob(record.clone()));
        self.insert_job(record);
        outcome
    }

    pub fn delete_job(&mut self, name: &str, out: &mut Outbox) -> Result<(), CommandError> {
        self.ensure_job(name)?;
        for id in self.live_ids(name) {
            if let Some(instance) = self.remove_live(&id) {
                if instance.state == InstanceState::Running {
                    out.kills.push(instance.task_id());
                }
                out.ops.push(StoreOp::DeleteInstance(id));
            }
        }
        self.remove_job(name);
        out.ops.push(StoreOp::DeleteJob(name.to_string()));
        out.ops.push(StoreOp::DeleteHistory {
            job: name.to_string(),
        });
        Ok(())
    }

    pub fn job_view(&self, name: &str) -> Result<JobView, CommandError> {
        let entry = self
            .jobs
            .get(name)
            .ok_or_else(|| CommandError::JobNotFound(name.to_string()))?;
        let live = self
            .live_ids(name)
            .iter()
            .filter_map(|id| self.live.get(id))
            .cloned()
            .collect();
        let waiting_for = self
            .live_ids(name)
            .into_iter()
            .filter_map(|id| {
                let wait = self.unsatisfied.get(&id)?;
                Some((id, wait.missing.iter().cloned().collect()))
            })
            .collect();
        Ok(JobView {
            record: entry.record.clone(),
            live,
            waiting_for,
        })
    }

    pub fn job_records(&self) -> Vec<JobRecord> {
        self.jobs
            .values()
            .map(|entry| entry.record.clone())
            .collect()
    }

    pub fn job_names(&self) -> Vec<String> {
        self.jobs.keys().map(|name| name.to_string()).collect()
    }

    /// Every job with what its live instances are doing.
    pub fn summaries(&self) -> Vec<JobSummary> {
        let summary = |(record, run_state): (&JobRecord, RunState)| JobSummary {
            record: record.clone(),
            run_state,
        };
        self.jobs_with_run_state().map(summary).collect()
    }

    /// Every job, by reference, with what its live instances are doing (the jobs table and
    /// the graph read these without copying a shard's jobs).
    pub fn jobs_with_run_state(&self) -> impl Iterator<Item = (&JobRecord, RunState)> {
        let entries = self.jobs.values();
        entries.map(|entry| (&entry.record, self.run_state(&entry.record.spec.name)))
    }

    /// Running if an instance runs, queued if some wait (for their turn, a retry or their
    /// resources), idle otherwise.
    fn run_state(&self, name: &str) -> RunState {
        let Some(targets) = self.live_by_job.get(name) else {
            return RunState::Idle;
        };
        let instances = targets
            .iter()
            .filter_map(|target| self.live.get(&instance_id(name, *target)));
        instances.fold(RunState::Idle, |so_far, instance| {
            match (so_far, instance.state) {
                (RunState::Running, _) | (_, InstanceState::Running) => RunState::Running,
                _ => RunState::Queued,
            }
        })
    }

    fn ensure_job(&self, name: &str) -> Result<(), CommandError> {
        match self.jobs.contains_key(name) {
            true => Ok(()),
            false => Err(CommandError::JobNotFound(name.to_string())),
        }
    }

    pub fn has_job(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }

    pub fn children_of(&self, name: &str) -> Vec<String> {
        let children = self.children.get(name).into_iter().flatten();
        children
            .filter(|child| self.jobs.contains_key(child.as_str()))
            .cloned()
            .collect()
    }

    pub fn parents_of(&self, names: &[String]) -> Vec<(String, Vec<String>)> {
        let owned = names.iter().filter_map(|name| self.jobs.get(name.as_str()));
        owned
            .map(|entry| {
                (
                    entry.record.spec.name.clone(),
                    entry.record.spec.upstream_jobs(),
                )
            })
            .collect()
    }

    pub fn stats(&self) -> ShardStats {
        ShardStats {
            shard: self.index,
            jobs: self.jobs.len(),
            live_instances: self.live.len(),
            timers: self.timers.len(),
        }
    }

    // ----- firing -----------------------------------------------------------------------

    /// Fires every due target and retry.
    pub fn tick(&mut self, now_ms: i64, out: &mut Outbox) {
        while let Some((at, name)) = self.timers.first().cloned() {
            if at > now_ms {
                break;
            }
            self.timers.remove(&(at, name.clone()));
            self.fire_due_targets(&name, now_ms, out);
        }
        while let Some((at, id)) = self.retries.first().cloned() {
            if at > now_ms {
                break;
            }
            self.retries.remove(&(at, id.clone()));
            self.start_retry(&id, now_ms, out);
        }
        while let Some((at, id)) = self.expiries.first().cloned() {
            if at > now_ms {
                break;
            }
            self.expire(&id, now_ms, out);
        }
    }

    /// Turns a job's due targets into instances. Targets whose epsilon window has closed are
    /// recorded as one skipped range; those still open run, late.
    fn fire_due_targets(&mut self, name: &str, now_ms: i64, out: &mut Outbox) {
        let cap = self.config.max_instances_per_tick;
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        let Some(schedule) = entry.schedule.clone() else {
            return;
        };
        let epsilon = entry.record.spec.epsilon_ms;
        let mut next = entry.record.state.next_target_ms;
        if let Some(first_due) = next.filter(|t| t + epsilon < now_ms) {
            let open_from = now_ms - epsilon;
            let count =
                schedule.count_between(ms_to_time(first_due), ms_to_time(open_from), u64::MAX);
            next = schedule
                .first_at_or_after(ms_to_time(open_from))
                .map(|t| t.timestamp_millis());
            if count > 0 {
                let reason = "could not start within epsilon (server down or busy)".to_string();
                let skipped = SkippedTargets {
                    job: name.to_string(),
                    first_target_ms: first_due,
                    until_ms: open_from,
                    count,
                    recorded_ms: now_ms,
                    reason,
                };
                tracing::warn!(job = name, count, "targets skipped");
                metrics::counter!("dron_skipped_targets_total").increment(count);
                let notice = skipped_notice(&entry.record.spec, &skipped);
                push_notice(notice, out);
                self.append_history(HistoryEntry::Skipped(skipped), out);
            }
        }
        let mut created = 0;
        while let Some(target) = next.filter(|t| *t <= now_ms) {
            if created == cap {
                out.more_due = true;
                break;
            }
            let instance = InstanceRecord::new(name, target, RunCause::Schedule, now_ms);
            if !self.live.contains_key(&instance.id()) {
                self.admit(instance, now_ms, out);
            }
            created += 1;
            next = schedule
                .next_after(ms_to_time(target))
                .map(|t| t.timestamp_millis());
        }
        let entry = self.jobs.get_mut(name).expect("job present");
        entry.record.state.next_target_ms = next;
        if let Some(next) = next {
            self.timers.insert((next, name.into()));
        }
        out.ops.push(StoreOp::PutJob(entry.record.clone()));
        self.try_start(name, now_ms, out);
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
    fn create_instance(
        &mut self,
        name: &str,
        cause: RunCause,
        now_ms: i64,
        out: &mut Outbox,
    ) -> String {
        // Two triggers in the same millisecond still make two instances.
        let mut target = now_ms;
        while self.live.contains_key(&instance_id(name, target)) {
            target += 1;
        }
        let mut instance = InstanceRecord::new(name, target, cause, now_ms);
        // Its logical time is now: epsilon counts from now too.
        instance.ready_ms = Some(now_ms);
        let id = instance.id();
        self.admit(instance, now_ms, out);
        id
    }

    /// Records a new instance. One with `dependsOn` (a manual run aside: an operator's "run
    /// now" does not wait) expands its templates for its logical time and waits for those
    /// of its resources that are not satisfied yet.
    fn admit(&mut self, mut instance: InstanceRecord, now_ms: i64, out: &mut Outbox) {
        let spec = &self.jobs[instance.job.as_str()].record;
        if instance.cause != RunCause::Manual && !spec.spec.depends_on.is_empty() {
            let expansion = Expansion {
                logical: ms_to_time(instance.target_ms),
                zone: spec.spec.zone(),
                granularity: spec.spec.granularity(),
                last_run: spec.state.last_success_target_ms.map(ms_to_time),
            };
            let mut resources: Vec<String> = spec
                .spec
                .templates()
                .iter()
                .flat_map(|t| t.expand(&expansion))
                .collect();
            resources.sort();
            resources.dedup();
            instance.resources = resources;
            instance.state = InstanceState::Waiting;
        }
        self.add_live(instance.clone(), now_ms, out);
        if let Some(current) = self.live.get(&instance.id()) {
            out.ops.push(StoreOp::PutInstance(current.clone()));
        }
    }

    /// Starts what may start of a job's queued instances: the oldest one, or all of them for
    /// a concurrent job. A queued target past its epsilon is skipped instead.
    fn try_start(&mut self, name: &str, now_ms: i64, out: &mut Outbox) {
        let Some(entry) = self.jobs.get(name) else {
            return;
        };
        let (concurrent, epsilon) = (entry.record.spec.concurrent, entry.record.spec.epsilon_ms);
        // A non-concurrent job runs one instance at a time; queued ones past their epsilon are
        // skipped now, even while the slot is taken, so the queue stays bounded by epsilon.
        let mut slot_taken = false;
        for id in self.live_ids(name) {
            let Some(instance) = self.live.get(&id) else {
                continue;
            };
            match instance.state {
                InstanceState::Running | InstanceState::RetryWait => {
                    slot_taken = true;
                    continue;
                }
                InstanceState::Queued => {}
                _ => continue,
            }
            let due = instance.ready_ms.unwrap_or(instance.target_ms);
            let late = instance.cause != RunCause::Manual && due + epsilon < now_ms;
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

    fn start(&mut self, id: &str, now_ms: i64, out: &mut Outbox) {
        let Some(instance) = self.live.get_mut(id) else {
            return;
        };
        instance.state = InstanceState::Running;
        instance.started_ms = Some(now_ms);
        instance.retry_at_ms = None;
        let instance = instance.clone();
        metrics::counter!("dron_launches_total").increment(1);
        if instance.cause == RunCause::Schedule && instance.attempt == 0 {
            let lateness = (now_ms - instance.target_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("dron_start_lateness_seconds").record(lateness);
        }
        out.ops.push(StoreOp::PutInstance(instance.clone()));
        out.launches.push(self.launch_request(&instance));
    }

    fn start_retry(&mut self, id: &str, now_ms: i64, out: &mut Outbox) {
        let Some(instance) = self.live.get_mut(id) else {
            return;
        };
        if instance.state != InstanceState::RetryWait {
            return;
        }
        instance.attempt += 1;
        metrics::counter!("dron_retries_total").increment(1);
        self.start(id, now_ms, out);
    }

    /// The attempt's task, with what the broker needs to place it.
    fn launch_request(&self, instance: &InstanceRecord) -> LaunchRequest {
        let entry = &self.jobs[instance.job.as_str()];
        let spec = &entry.record.spec;
        // Epsilon bounds how late a target may start, not when a retry after a failure may.
        let first_try = instance.failed_attempts() == 0 && instance.cause != RunCause::Manual;
        let due = instance.ready_ms.unwrap_or(instance.target_ms);
        LaunchRequest {
            spec: self.task_spec(instance),
            demand: entry.demand.clone(),
            owner: spec.owner.clone(),
            start_deadline_ms: first_try.then(|| due + spec.epsilon_ms),
        }
    }

    fn task_spec(&self, instance: &InstanceRecord) -> TaskSpec {
        let spec = &self.jobs[instance.job.as_str()].record.spec;
        let task_id = instance.task_id();
        let command = if let Some(ms) = spec.builtin_sleep_ms {
            // No process, so no environment to build (formatting its target alone was ~1 % of
            // the server at 16,000 built-in runs/s).
            return TaskSpec {
                task_id,
                command: TaskCommand::Sleep { ms },
                env: Vec::new(),
                work_dir: None,
                timeout_ms: spec.timeout_ms,
                output_cap_bytes: self.config.output_cap_bytes,
            };
        } else if spec.shell {
            TaskCommand::Shell(spec.command.clone())
        } else {
            TaskCommand::Argv(
                std::iter::once(spec.command.clone())
                    .chain(spec.arguments.clone())
                    .collect(),
            )
        };
        let mut env: Vec<(String, String)> = spec
            .environment
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        let target =
            ms_to_time(instance.target_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        env.extend([
            ("DRON_JOB".to_string(), spec.name.clone()),
            ("DRON_TASK_ID".to_string(), task_id.clone()),
            ("DRON_TARGET".to_string(), target),
            ("DRON_ATTEMPT".to_string(), instance.attempt.to_string()),
            ("mesos_task_id".to_string(), task_id.clone()),
        ]);
        TaskSpec {
            task_id,
            command,
            env,
            work_dir: None,
            timeout_ms: spec.timeout_ms,
            output_cap_bytes: self.config.output_cap_bytes,
        }
    }

    // ----- task status ------------------------------------------------------------------

    /// Applies an agent's report, saying whether it was about a current attempt.
    pub fn task_update(&mut self, update: TaskUpdate, now_ms: i64, out: &mut Outbox) -> Applied {
        let Some((id, attempt)) = self.running_instance(&update.task_id) else {
            return Applied::Unknown;
        };
        if attempt.is_none() {
            return Applied::Stale; // a report about an earlier attempt: already handled
        }
        match update.event {
            TaskEvent::Started { agent, .. } => self.started_on(&id, agent, out),
            TaskEvent::WaitingForOffer { reason } => {
                if let Some(instance) = self.live.get_mut(&id) {
                    instance.message = Some(reason); // shown in views; not worth a write
                }
            }
            TaskEvent::NeverLaunched => {
                let instance = self.live[&id].clone();
                out.launches.push(self.launch_request(&instance));
            }
            TaskEvent::Ended { end, .. } => self.task_ended(&id, end, now_ms, out),
        }
        Applied::Current
    }

    /// Records the agent an attempt runs on. Written at once for a remote agent: after a
    /// restart its tasks are looked for there. A local run's agent is written with its end
    /// (a restart finds local runs by their run directory), sparing a write per launch.
    fn started_on(&mut self, id: &str, agent: String, out: &mut Outbox) {
        let Some(instance) = self.live.get_mut(id) else {
            return;
        };
        instance.message = None;
        if instance.agent.as_deref() == Some(agent.as_str()) {
            return;
        }
        let remote = agent != crate::agent::LOCAL_AGENT;
        instance.agent = Some(agent);
        if remote {
            out.ops.push(StoreOp::PutInstance(instance.clone()));
        }
    }

    /// Finds the live instance a task id names: (instance id, Some(attempt)) when that
    /// attempt is the one running, (id, None) for a stale attempt.
    fn running_instance(&self, task_id: &str) -> Option<(String, Option<u32>)> {
        let TaskRef {
            job,
            target_ms,
            attempt,
        } = parse_task_id(task_id)?;
        let id = instance_id(&job, target_ms);
        let instance = self.live.get(&id)?;
        let current = instance.attempt == attempt && instance.state == InstanceState::Running;
        Some((id, current.then_some(attempt)))
    }

    fn task_ended(&mut self, id: &str, end: TaskEnd, now_ms: i64, out: &mut Outbox) {
        let is_async = self
            .live
            .get(id)
            .map(|i| self.jobs[i.job.as_str()].record.spec.is_async)
            .unwrap_or(false);
        if self.kill_requested.contains(id) {
            return self.finish(id, Ending::killed("killed on request"), now_ms, out);
        }
        match end {
            // An async job's process only starts the work; PUT /scheduler/task/{id} ends it.
            TaskEnd::Exited(0) if is_async => {}
            TaskEnd::Exited(0) => self.finish(id, Ending::succeeded(), now_ms, out),
            TaskEnd::Killed => self.finish(id, Ending::killed("killed on request"), now_ms, out),
            TaskEnd::AgentLost(why) => self.agent_lost(id, why, now_ms, out),
            TaskEnd::NotPlaced(why) => {
                metrics::counter!("dron_skipped_targets_total").increment(1);
                let message = format!("could not start within epsilon: {why}");
                let skipped = Ending {
                    state: InstanceState::Skipped,
                    exit_code: None,
                    message: Some(message),
                };
                self.finish(id, skipped, now_ms, out)
            }
            other => self.attempt_failed(id, &other, now_ms, out),
        }
    }

    /// The attempt's agent was lost: launch a new attempt elsewhere at once while the target's
    /// epsilon allows (not counted against the job's retries), else fail the instance.
    fn agent_lost(&mut self, id: &str, why: String, now_ms: i64, out: &mut Outbox) {
        let instance = &self.live[id];
        let epsilon = self.jobs[instance.job.as_str()].record.spec.epsilon_ms;
        let due = instance.ready_ms.unwrap_or(instance.target_ms);
        let in_window = instance.cause == RunCause::Manual || due + epsilon >= now_ms;
        if !in_window {
            let message = format!("agent lost ({why}) and its epsilon has passed");
            let failed = Ending {
                state: InstanceState::Failed,
                exit_code: None,
                message: Some(message),
            };
            return self.finish(id, failed, now_ms, out);
        }
        metrics::counter!("dron_agent_lost_attempts_total").increment(1);
        let instance = self.live.get_mut(id).expect("live instance");
        instance.attempt += 1;
        instance.lost_attempts += 1;
        instance.agent = None;
        instance.message = Some(format!(
            "attempt {} lost: {why}; relaunched",
            instance.attempt - 1
        ));
        self.start(id, now_ms, out);
    }

    pub fn complete_async(
        &mut self,
        task: &TaskRef,
        status_code: i32,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<(), CommandError> {
        let task_id = dron_model::ids::task_id(&task.job, task.target_ms, task.attempt);
        let Some((id, Some(_))) = self.running_instance(&task_id) else {
            return Err(CommandError::TaskNotFound(task_id));
        };
        if !self.jobs[task.job.as_str()].record.spec.is_async {
            let message = format!(
                "job '{}' is not async: its tasks end when their process ends",
                task.job
            );
            return Err(CommandError::Conflict(message));
        }
        if status_code == 0 {
            self.finish(&id, Ending::succeeded(), now_ms, out);
        } else {
            self.attempt_failed(&id, &TaskEnd::Exited(status_code), now_ms, out);
        }
        Ok(())
    }

    /// A failed attempt: retry with backoff while retries remain, else fail for good.
    fn attempt_failed(&mut self, id: &str, end: &TaskEnd, now_ms: i64, out: &mut Outbox) {
        let instance = &self.live[id];
        let retries = self.jobs[instance.job.as_str()].record.spec.retries;
        let failed_before = instance.failed_attempts();
        let exit_code = match end {
            TaskEnd::Exited(code) => Some(*code),
            _ => None,
        };
        let message = describe(end);
        if failed_before < retries {
            let backoff = self
                .config
                .retry_backoff_ms
                .saturating_mul(1 << failed_before.min(20));
            let retry_at = now_ms + backoff.min(self.config.retry_backoff_max_ms);
            let instance = self.live.get_mut(id).expect("live instance");
            instance.state = InstanceState::RetryWait;
            instance.retry_at_ms = Some(retry_at);
            instance.exit_code = exit_code;
            instance.message = Some(format!("attempt {} {message}; retrying", instance.attempt));
            out.ops.push(StoreOp::PutInstance(instance.clone()));
            self.retries.insert((retry_at, id.to_string()));
            return;
        }
        let state = if *end == TaskEnd::TimedOut {
            InstanceState::TimedOut
        } else {
            InstanceState::Failed
        };
        let ending = Ending {
            state,
            exit_code,
            message: Some(message),
        };
        self.finish(id, ending, now_ms, out);
    }

    /// Ends an instance for good, then starts the job's next queued run.
    fn finish(&mut self, id: &str, ending: Ending, now_ms: i64, out: &mut Outbox) {
        let job = self.live.get(id).map(|instance| instance.job.clone());
        self.record_end(id, ending, now_ms, out);
        if let Some(job) = job {
            self.try_start(&job, now_ms, out);
        }
    }

    /// Ends an instance for good: counters, history, and the announcement of a success.
    fn record_end(&mut self, id: &str, ending: Ending, now_ms: i64, out: &mut Outbox) {
        let Some(mut instance) = self.remove_live(id) else {
            return;
        };
        let Ending {
            state,
            exit_code,
            message,
        } = ending;
        instance.state = state;
        instance.ended_ms = Some(now_ms);
        metrics::counter!("dron_runs_finished_total", "state" => state.as_str()).increment(1);
        instance.exit_code = exit_code.or(instance.exit_code);
        instance.message = message;
        let name = instance.job.clone();
        if let Some(entry) = self.jobs.get_mut(name.as_str()) {
            if let Some(notice) = run_notice(&entry.record, &instance, now_ms) {
                push_notice(notice, out);
            }
            let counters = &mut entry.record.state;
            match state {
                InstanceState::Succeeded => {
                    counters.success_count += 1;
                    counters.last_success_ms = Some(now_ms);
                    let newest = counters
                        .last_success_target_ms
                        .max(Some(instance.target_ms));
                    counters.last_success_target_ms = newest;
                    out.succeeded.push(name.clone());
                }
                InstanceState::Failed
                | InstanceState::TimedOut
                | InstanceState::Killed
                | InstanceState::Expired => {
                    counters.error_count += 1;
                    counters.last_error_ms = Some(now_ms);
                }
                _ => {}
            }
            out.ops.push(StoreOp::PutJob(entry.record.clone()));
            let status = match state {
                InstanceState::Succeeded => Some(EventStatus::Ready),
                InstanceState::Failed | InstanceState::TimedOut | InstanceState::Expired => {
                    Some(EventStatus::Failed)
                }
                _ => None,
            };
            if let Some(status) = status {
                let spec = &entry.record.spec;
                let logical = ms_to_time(instance.target_ms);
                let resource = job_resource(&name, logical, spec.zone(), spec.granularity());
                let event = ResourceEvent {
                    status,
                    ..ResourceEvent::ready(resource, Some(instance.target_ms))
                };
                out.ops.push(StoreOp::PutAnnouncement(event.clone()));
                out.announcements.push(event);
            }
        }
        out.ops.push(StoreOp::DeleteInstance(id.to_string()));
        self.append_history(HistoryEntry::Run(instance), out);
    }

    fn append_history(&mut self, entry: HistoryEntry, out: &mut Outbox) {
        let job = entry.job().to_string();
        out.ops.push(StoreOp::AppendHistory(entry));
        let appends = self.appends_since_trim.entry(job.clone()).or_default();
        *appends += 1;
        // Trimming scans the job's history, so do it once per 10% of the kept length.
        if *appends > self.config.history_keep / 10 {
            *appends = 0;
            out.ops.push(StoreOp::TrimHistory {
                job,
                keep: self.config.history_keep,
            });
        }
    }

    pub fn kill_tasks(
        &mut self,
        name: &str,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<usize, CommandError> {
        self.ensure_job(name)?;
        let is_async = self.jobs[name].record.spec.is_async;
        let ids = self.live_ids(name);
        for id in &ids {
            let instance = &self.live[id];
            if instance.state == InstanceState::Running {
                out.kills.push(instance.task_id());
                if is_async {
                    // An async job's process may have exited already, leaving nothing to
                    // report the kill: record it now.
                    self.record_end(id, Ending::killed("killed on request"), now_ms, out);
                } else {
                    // The end arrives as a status update; it is recorded as killed then.
                    self.kill_requested.insert(id.clone());
                }
            } else {
                let ending = Ending::killed("killed on request before it started");
                self.record_end(id, ending, now_ms, out);
            }
        }
        Ok(ids.len())
    }

    // ----- dependencies -----------------------------------------------------------------

    /// Counts a success of the job now, without a run, and announces it to its children as
    /// any success is: an operator satisfies a dependency whose parent's work was done by hand.
    pub fn mark_success(
        &mut self,
        name: &str,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<(), CommandError> {
        let entry = self
            .jobs
            .get_mut(name)
            .ok_or_else(|| CommandError::JobNotFound(name.to_string()))?;
        entry.record.state.success_count += 1;
        entry.record.state.last_success_ms = Some(now_ms);
        out.ops.push(StoreOp::PutJob(entry.record.clone()));
        out.succeeded.push(name.to_string());
        Ok(())
    }

    /// Records a parent's success with each of its children here; a child whose parents have
    /// all succeeded since its last run gets an instance.
    pub fn parent_succeeded(&mut self, parent: &str, now_ms: i64, out: &mut Outbox) {
        let children: Vec<String> = self
            .children
            .get(parent)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for child in children {
            let Some(entry) = self.jobs.get_mut(child.as_str()) else {
                continue;
            };
            let state = &mut entry.record.state;
            state.parents_succeeded.insert(parent.to_string());
            let ready = entry
                .record
                .spec
                .parents()
                .iter()
                .all(|p| state.parents_succeeded.contains(p));
            if ready && !entry.record.spec.disabled {
                state.parents_succeeded.clear();
            }
            out.ops.push(StoreOp::PutJob(entry.record.clone()));
            if ready && !entry.record.spec.disabled {
                self.create_instance(&child, RunCause::Parents, now_ms, out);
                self.try_start(&child, now_ms, out);
            }
        }
    }

    // ----- resources ----------------------------------------------------------------------

    /// A resource is ready (the bus recorded it before sending it here): instances waiting
    /// for it move on, and `triggeredBy` jobs whose pattern matches get an instance for the
    /// event's time. Applying the same event twice changes nothing the second time.
    pub fn resource_ready(&mut self, event: &ResourceEvent, now_ms: i64, out: &mut Outbox) {
        if event.status != EventStatus::Ready {
            return;
        }
        let mut to_start = BTreeSet::new();
        for id in self.waiting.remove(&event.resource).unwrap_or_default() {
            let Some(wait) = self.unsatisfied.get_mut(&id) else {
                continue;
            };
            wait.missing.remove(&event.resource);
            if wait.missing.is_empty() {
                self.stop_waiting(&id);
                if let Some(instance) = self.live.get_mut(&id) {
                    instance.state = InstanceState::Queued;
                    instance.ready_ms = Some(now_ms);
                    out.ops.push(StoreOp::PutInstance(instance.clone()));
                    to_start.insert(instance.job.clone());
                }
            }
        }
        let matching: Vec<String> = self
            .triggered
            .iter()
            .filter(|(_, pattern)| pattern_matches(pattern, &event.resource))
            .map(|(job, _)| job.clone())
            .collect();
        for job in matching {
            if self.trigger_instance(&job, event.at_ms.unwrap_or(now_ms), now_ms, out) {
                to_start.insert(job);
            }
        }
        for job in to_start {
            self.try_start(&job, now_ms, out);
        }
    }

    /// Creates the instance of an event-triggered job for logical time `at_ms`, unless that
    /// event time already triggered one (a replayed event). Answers whether it created one.
    fn trigger_instance(&mut self, job: &str, at_ms: i64, now_ms: i64, out: &mut Outbox) -> bool {
        let Some(entry) = self.jobs.get_mut(job) else {
            return false;
        };
        let seen = &mut entry.record.state.triggered_targets;
        if entry.record.spec.disabled || !seen.insert(at_ms) {
            return false;
        }
        while seen.len() > TRIGGERS_REMEMBERED {
            seen.pop_first();
        }
        out.ops.push(StoreOp::PutJob(entry.record.clone()));
        let mut instance = InstanceRecord::new(job, at_ms, RunCause::Event, now_ms);
        if self.live.contains_key(&instance.id()) {
            return false;
        }
        // The event's time may be long past (data for yesterday): epsilon counts from now.
        instance.ready_ms = Some(now_ms);
        self.admit(instance, now_ms, out);
        true
    }

    /// A waiting instance ran out of time: it ends expired, and its failure is announced.
    fn expire(&mut self, id: &str, now_ms: i64, out: &mut Outbox) {
        let missing: Vec<String> = match self.unsatisfied.get(id) {
            Some(wait) => wait.missing.iter().cloned().collect(),
            None => return,
        };
        self.stop_waiting(id);
        metrics::counter!("dron_instances_expired_total").increment(1);
        let shown = missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = missing.len().saturating_sub(5);
        let message = match more {
            0 => format!("waitTimeout passed while waiting for {shown}"),
            n => format!("waitTimeout passed while waiting for {shown} and {n} more"),
        };
        tracing::warn!(instance = id, %message, "instance expired");
        let ending = Ending {
            state: InstanceState::Expired,
            exit_code: None,
            message: Some(message),
        };
        self.finish(id, ending, now_ms, out);
    }

    /// What this shard knows of `resource`: which of its jobs produce it, wait for it (by
    /// template) or are triggered by it, and which live instances wait for it now.
    pub fn lineage(&self, resource: &str) -> ShardLineage {
        let mut lineage = ShardLineage::default();
        let produced_by = resource
            .strip_prefix(dron_model::resource::JOB_PREFIX)
            .and_then(|rest| rest.split_once('@'))
            .map(|(job, _)| job);
        for (name, entry) in &self.jobs {
            let spec = &entry.record.spec;
            if produced_by == Some(&**name) {
                lineage.producers.push(name.to_string());
            }
            let templates = spec.templates();
            if templates
                .iter()
                .any(|t| pattern_matches(&t.as_pattern(), resource))
            {
                lineage.consumers.push(name.to_string());
            }
            if spec
                .trigger_pattern()
                .is_some_and(|p| pattern_matches(p, resource))
            {
                lineage.triggered.push(name.to_string());
            }
        }
        let waiting = self.waiting.get(resource).into_iter().flatten();
        lineage.waiting = waiting.cloned().collect();
        lineage.waiting.sort();
        lineage
    }

    // ----- resharding -------------------------------------------------------------------

    /// Takes out of this shard every job `ring` places elsewhere (history is read by the
    /// caller, which has the store).
    pub fn release(&mut self, ring: &Ring) -> Vec<MovedJob> {
        let leaving: Vec<String> = self
            .jobs
            .keys()
            .filter(|name| ring.owner(name) != self.index)
            .map(|name| name.to_string())
            .collect();
        let mut moved = Vec::with_capacity(leaving.len());
        for name in leaving {
            let ids = self.live_ids(&name);
            let live: Vec<InstanceRecord> =
                ids.iter().filter_map(|id| self.remove_live(id)).collect();
            for id in &ids {
                self.retries.retain(|(_, retry)| retry != id);
            }
            let record = self.remove_job(&name).expect("job present");
            self.released.insert(name, ids);
            moved.push(MovedJob {
                record,
                live,
                history: Vec::new(),
            });
        }
        moved
    }

    pub fn adopt(&mut self, jobs: Vec<MovedJob>, now_ms: i64, out: &mut Outbox) {
        for moved in jobs {
            let name = moved.record.spec.name.clone();
            if self.jobs.contains_key(name.as_str()) {
                continue; // an earlier, interrupted move already brought it: ours is newer
            }
            out.ops.push(StoreOp::PutJob(moved.record.clone()));
            self.insert_job(moved.record);
            for instance in moved.live {
                out.ops.push(StoreOp::PutInstance(instance.clone()));
                if instance.state == InstanceState::RetryWait {
                    self.retries
                        .insert((instance.retry_at_ms.unwrap_or(now_ms), instance.id()));
                }
                self.add_live(instance, now_ms, out);
            }
            out.ops
                .extend(moved.history.into_iter().map(StoreOp::AppendHistory));
            self.try_start(&name, now_ms, out);
        }
    }

    pub fn forget(&mut self, names: &[String], out: &mut Outbox) {
        for name in names {
            let Some(ids) = self.released.remove(name) else {
                continue;
            };
            if self.jobs.contains_key(name.as_str()) {
                continue; // moved back in the meantime
            }
            out.ops.extend(ids.into_iter().map(StoreOp::DeleteInstance));
            out.ops.push(StoreOp::DeleteJob(name.clone()));
            out.ops.push(StoreOp::DeleteHistory { job: name.clone() });
        }
    }

    // ----- live-instance index ----------------------------------------------------------

    /// Indexes a live instance. A waiting one is checked against the resource store: what
    /// it still misses is indexed, and once nothing is missing it is ready to start.
    fn add_live(&mut self, mut instance: InstanceRecord, now_ms: i64, out: &mut Outbox) {
        let id = instance.id();
        if instance.state == InstanceState::Waiting {
            let missing = self.missing_resources(&instance.resources, out);
            if missing.is_empty() {
                instance.state = InstanceState::Queued;
                instance.ready_ms = Some(now_ms);
                out.ops.push(StoreOp::PutInstance(instance.clone()));
            } else {
                for resource in &missing {
                    let waiters = self.waiting.entry(resource.clone()).or_default();
                    waiters.insert(id.clone());
                }
                let timeout = self.jobs[instance.job.as_str()]
                    .record
                    .spec
                    .wait_timeout_ms();
                let deadline_ms = instance.created_ms.saturating_add(timeout);
                self.expiries.insert((deadline_ms, id.clone()));
                let wait = Wait {
                    deadline_ms,
                    missing,
                };
                self.unsatisfied.insert(id.clone(), wait);
            }
        }
        self.live_by_job
            .entry(instance.job.clone())
            .or_default()
            .insert(instance.target_ms);
        self.live.insert(id, instance);
    }

    /// The resources of `wanted` the store does not hold. A store that cannot answer fails the
    /// shard (its supervisor rebuilds it), as a failed write does.
    fn missing_resources(&self, wanted: &[String], out: &mut Outbox) -> BTreeSet<String> {
        let mut missing = BTreeSet::new();
        for resource in wanted {
            match self.resources.get(resource) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    missing.insert(resource.clone());
                }
                Err(error) => {
                    out.read_failed = Some(error);
                    missing.insert(resource.clone());
                }
            }
        }
        missing
    }

    fn remove_live(&mut self, id: &str) -> Option<InstanceRecord> {
        let instance = self.live.remove(id)?;
        self.kill_requested.remove(id);
        self.stop_waiting(id);
        if let Some(targets) = self.live_by_job.get_mut(&instance.job) {
            targets.remove(&instance.target_ms);
            if targets.is_empty() {
                self.live_by_job.remove(&instance.job);
            }
        }
        if let Some(at) = instance.retry_at_ms {
            self.retries.remove(&(at, id.to_string()));
        }
        Some(instance)
    }

    /// Takes a waiting instance out of the waiting indexes.
    fn stop_waiting(&mut self, id: &str) {
        let Some(wait) = self.unsatisfied.remove(id) else {
            return;
        };
        for resource in wait.missing {
            if let Some(waiters) = self.waiting.get_mut(&resource) {
                waiters.remove(id);
                if waiters.is_empty() {
                    self.waiting.remove(&resource);
                }
            }
        }
        self.expiries.remove(&(wait.deadline_ms, id.to_string()));
    }

    /// A job's live instance ids, oldest target first.
    fn live_ids(&self, name: &str) -> Vec<String> {
        let targets = self.live_by_job.get(name).into_iter().flatten();
        targets.map(|target| instance_id(name, *target)).collect()
    }
}

/// What to tell people about a run that just ended (its counters not updated yet): a failure
/// for good, a timeout, an expiry, a skip, or the first success after failures.
fn run_notice(job: &JobRecord, run: &InstanceRecord, now_ms: i64) -> Option<Notice> {
    let kind = match run.state {
        InstanceState::Failed => NoticeKind::Failed,
        InstanceState::TimedOut => NoticeKind::TimedOut,
        InstanceState::Expired => NoticeKind::Expired,
        InstanceState::Skipped => NoticeKind::Skipped,
        InstanceState::Succeeded if failing(&job.state) => NoticeKind::Recovered,
        _ => return None,
    };
    // Expired and skipped runs never started: no task, no output.
    let ran =
        run.started_ms.is_some() && !matches!(kind, NoticeKind::Expired | NoticeKind::Skipped);
    let message = match kind {
        NoticeKind::Recovered => "succeeded after failures".to_string(),
        _ => run.message.clone().unwrap_or_default(),
    };
    Some(Notice {
        job: run.job.clone(),
        kind,
        target_ms: run.target_ms,
        at_ms: now_ms,
        owner: job.spec.owner.clone(),
        webhooks: job.spec.notify_webhooks.clone(),
        attempt: run.attempt,
        task_id: ran.then(|| run.task_id()),
        exit_code: run.exit_code,
        message,
        count: 1,
        stderr_tail: String::new(),
    })
}

/// Whether the job's newest end was an error: its next success is a recovery.
fn failing(state: &JobState) -> bool {
    match (state.last_error_ms, state.last_success_ms) {
        (Some(error), Some(success)) => error > success,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn skipped_notice(spec: &JobSpec, skipped: &SkippedTargets) -> Notice {
    Notice {
        job: skipped.job.clone(),
        kind: NoticeKind::Skipped,
        target_ms: skipped.first_target_ms,
        at_ms: skipped.recorded_ms,
        owner: spec.owner.clone(),
        webhooks: spec.notify_webhooks.clone(),
        attempt: 0,
        task_id: None,
        exit_code: None,
        message: format!("{} target(s) {}", skipped.count, skipped.reason),
        count: skipped.count,
        stderr_tail: String::new(),
    }
}

/// Writes a notice to the shard's notice outbox and hands it on once that is durable.
fn push_notice(notice: Notice, out: &mut Outbox) {
    out.ops.push(StoreOp::PutNotice(notice.clone()));
    out.notices.push(notice);
}

fn describe(end: &TaskEnd) -> String {
    match end {
        TaskEnd::Exited(code) => format!("exited with code {code}"),
        TaskEnd::Signaled(signal) => format!("killed by signal {signal}"),
        TaskEnd::TimedOut => "ran past maxCompletionTime and was killed".to_string(),
        TaskEnd::Killed => "killed on request".to_string(),
        TaskEnd::FailedToStart(why) => format!("failed to start: {why}"),
        TaskEnd::Lost(why) => format!("lost: {why}"),
        TaskEnd::AgentLost(why) => format!("agent lost: {why}"),
        TaskEnd::NotPlaced(why) => format!("not placed: {why}"),
    }
}

/// A job's demand on agents. Built-in tasks start no process: they take no resources (so
/// load tests measure the scheduler), but keep their constraints.
fn job_demand(spec: &JobSpec) -> Arc<TaskDemand> {
    let mut demand = TaskDemand::from_json(&spec.extra_json).unwrap_or_default();
    if spec.builtin_sleep_ms.is_some() {
        demand.resources = Resources::default();
    }
    // Most jobs ask for the defaults: they share one demand rather than hold a copy each.
    static DEFAULT: std::sync::LazyLock<Arc<TaskDemand>> = std::sync::LazyLock::new(Arc::default);
    match demand == **DEFAULT {
        true => DEFAULT.clone(),
        false => Arc::new(demand),
    }
}

/// Whether a status update was about a live instance's current attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// No live instance of this shard has the task (the job moved shard, or was deleted, or
    /// the instance has ended).
    Unknown,
    /// About an earlier attempt of a live instance.
    Stale,
    Current,
}

/// A running task to reconnect with its agent after a restart.
#[derive(Debug, Clone)]
pub struct Adoption {
    pub request: LaunchRequest,
    /// The agent it was recorded on (None: not recorded before the restart).
    pub agent: Option<String>,
    pub timeout_deadline_ms: Option<i64>,
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
