//! A shard's scheduling state and rules, apart from the actor that drives it: every method
//! changes memory and records in an [`Outbox`] what must be written and what must happen once
//! the write is durable. It writes nothing itself, so it reads (and tests) as plain logic.
//!
//! It reads nothing either: admitting an instance that depends on resources must know which
//! of them are already satisfied (an instance created after its resource was announced must
//! see it satisfied, and only admission knows the instance's resources, its templates expanded
//! for its logical time). It asks: the instance waits for all of them, and the coordinator
//! looks them up off the actor ([`Outbox::lookups`]) and hands back those satisfied
//! ([`Shard::resources_found`] in `shard/deps.rs`, which says why no event can be missed).
//!
//! Layout: the indexes own their invariants ([`live::LiveSet`]: live instances and retries;
//! [`wait::WaitIndex`]: instances waiting for resources, and their deadlines;
//! [`timers::Timers`]: next targets), and `Shard` composes them. Its handlers sit by concern:
//! `jobs` (definitions and views), `firing` (ticks and starts), `admit` (new instances),
//! `status` (task reports, ends, kills), `deps` (parents and resources), `backfill` (runs
//! over past logical times, with `plans` their index), `reshard` (moving jobs between
//! shards); `launch` builds what the broker gets, `notices` what people get.

mod admit;
mod backfill;
mod deps;
mod firing;
mod jobs;
mod launch;
mod live;
mod notices;
mod outbox;
mod plans;
mod reshard;
mod status;
mod timers;
mod wait;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::DateTime;
use dron_model::demand::TaskDemand;
use dron_model::instance::{InstanceRecord, InstanceState};
use dron_model::job::JobRecord;
use dron_model::schedule::Schedule;

pub use outbox::{Adoption, Applied, Outbox};
pub use plans::PlanEntry;

use crate::store::{ShardSnapshot, StoreOp};
use live::LiveSet;
use timers::Timers;
use wait::WaitIndex;

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
    /// Batches submitted to the store and not yet durable, beyond which the shard pushes
    /// back: it refuses new jobs and runs (503) and defers its ticks until the store has
    /// caught up, rather than queue work in memory faster than the disk takes it.
    pub max_writes_in_flight: usize,
    /// Runs started and not yet reported running by an agent (their launch on its way),
    /// beyond which due targets wait, implicit in their jobs' next targets, instead of
    /// becoming runs queued on the way: an overloaded server otherwise keeps a run (its
    /// record, launch and report in flight) for every overdue job. See
    /// `Shard::launches_capped`.
    pub max_launching: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            output_cap_bytes: 10 * 1024 * 1024,
            history_keep: 1000,
            retry_backoff_ms: 1000,
            retry_backoff_max_ms: 60_000,
            max_instances_per_tick: 1000,
            max_writes_in_flight: 64,
            max_launching: 4096,
        }
    }
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
    /// Next targets of enabled scheduled jobs.
    timers: Timers,
    /// Live instances, their retries and kill requests.
    live: LiveSet,
    /// Live instances waiting for resources. Every instance here is in `live` too: take
    /// instances out with [`Shard::remove_live`].
    waits: WaitIndex,
    /// parent → its children on this shard: what a parent's `job:` announcement reaches.
    children: HashMap<String, BTreeSet<String>>,
    /// History appends per job since its last trim.
    appends_since_trim: HashMap<String, usize>,
    /// Jobs handed to another shard and not yet forgotten, with their instance ids.
    released: HashMap<String, Vec<String>>,
    /// Jobs that run one instance at a time, whose slot is taken while targets are due: no
    /// timer and no instance for those targets until the slot frees (see
    /// `fire_due_targets` in `shard/firing.rs`).
    parked: HashSet<String>,
    /// `triggeredBy` jobs: name → pattern.
    triggered: BTreeMap<String, String>,
    /// When each job's skipped targets were last told (a notice at most once a minute).
    skip_notices: notices::SkipNotices,
    /// Backfill plans of its jobs (see `shard/backfill.rs`).
    plans: plans::Plans,
    /// Whether a job whose run ended waits for the next tick to start its next due target
    /// (set by the coordinator while its backlog is over its limit: see
    /// `Shard::rearm_due_timer` in `shard/firing.rs`).
    starts_held: bool,
    /// When this shard was rebuilt from storage: a run started before then is adopted, and
    /// its agent's report that it runs says nothing of how long its launch took.
    recovered_ms: i64,
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
        snapshot: ShardSnapshot,
        now_ms: i64,
    ) -> (Shard, Outbox) {
        let mut shard = Shard {
            index,
            config,
            jobs: HashMap::new(),
            timers: Timers::default(),
            live: LiveSet::default(),
            waits: WaitIndex::default(),
            children: HashMap::new(),
            appends_since_trim: HashMap::new(),
            released: HashMap::new(),
            parked: HashSet::new(),
            triggered: BTreeMap::new(),
            skip_notices: notices::SkipNotices::default(),
            plans: plans::Plans::default(),
            starts_held: false,
            recovered_ms: now_ms,
        };
        for record in snapshot.jobs {
            shard.insert_job(record);
        }
        shard.plans.load(snapshot.backfills);
        let mut out = Outbox {
            announcements: snapshot.announcements,
            notices: snapshot.notices,
            ..Outbox::default()
        };
        for instance in snapshot.instances {
            shard.recover_instance(instance, now_ms, &mut out);
        }
        let jobs: Vec<String> = shard.live.jobs().cloned().collect();
        for job in jobs {
            shard.try_start(&job, now_ms, &mut out);
        }
        let jobs = shard.plans.jobs();
        shard.resume_backfills(&jobs, now_ms, &mut out);
        (shard, out)
    }

    fn recover_instance(&mut self, instance: InstanceRecord, now_ms: i64, out: &mut Outbox) {
        if !self.jobs.contains_key(instance.job.as_str()) {
            out.ops.push(StoreOp::DeleteInstance(instance.id()));
            return;
        }
        if instance.state == InstanceState::Running {
            let timeout = self.jobs[instance.job.as_str()].record.spec.timeout_ms;
            let deadline = timeout.zip(instance.started_ms).map(|(t, s)| s + t as i64);
            out.adopts.push(Adoption {
                request: self.launch_request(&instance),
                agent: instance.agent.clone(),
                timeout_deadline_ms: deadline,
            });
        }
        self.add_live(instance, now_ms, out);
    }

    fn insert_job(&mut self, record: JobRecord) {
        let schedule = record.spec.schedule();
        self.insert_parsed_job(record, schedule);
    }

    /// As `insert_job`, with the record's schedule parsed already (`JobSpec::schedule`).
    fn insert_parsed_job(&mut self, record: JobRecord, schedule: Option<Schedule>) {
        let name = record.spec.name.clone();
        for parent in record.spec.parents() {
            self.children
                .entry(parent.clone())
                .or_default()
                .insert(name.clone());
        }
        if let (Some(next), false) = (record.state.next_target_ms, record.spec.disabled) {
            self.timers.insert(next, &name);
        }
        if let Some(pattern) = record.spec.trigger_pattern() {
            self.triggered.insert(name.clone(), pattern.to_string());
        }
        let schedule = schedule.map(Box::new);
        let demand = launch::job_demand(&record.spec);
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
            self.timers.remove(next, name);
        }
        for parent in entry.record.spec.parents() {
            if let Some(children) = self.children.get_mut(parent) {
                children.remove(name);
            }
        }
        self.appends_since_trim.remove(name);
        self.triggered.remove(name);
        self.parked.remove(name);
        self.skip_notices.forget(name);
        Some(entry.record)
    }

    /// Takes an instance out of the live set and, if it waited, out of the wait index.
    fn remove_live(&mut self, id: &str) -> Option<InstanceRecord> {
        let instance = self.live.remove(id)?;
        self.waits.stop(id);
        Some(instance)
    }

    /// Holds (or lets go) the start of a job's next due target as its run ends: the
    /// coordinator holds them while its writes or announcements are behind, when its ticks
    /// wait too.
    pub fn hold_starts(&mut self, held: bool) {
        self.starts_held = held;
    }

    /// Whether due targets wait for launches already on their way to be taken up
    /// ([`ShardConfig::max_launching`]). The job timers then give no deadline: the report of a
    /// launch taken up changes the deadline, which wakes the ticker.
    fn launches_capped(&self) -> bool {
        self.live.launching() >= self.config.max_launching
    }

    /// When the shard next needs a tick.
    pub fn next_deadline(&self) -> Option<i64> {
        let timer = self.timers.next_ms().filter(|_| !self.launches_capped());
        let retry = self.live.next_retry_ms();
        let expiry = self.waits.next_expiry_ms();
        timer.into_iter().chain(retry).chain(expiry).min()
    }
}

#[cfg(test)]
mod tests;
