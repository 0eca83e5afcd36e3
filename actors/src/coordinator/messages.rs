use std::collections::BTreeMap;

use dron_model::backfill::{BackfillPlan, TargetState};
use dron_model::ids::TaskRef;
use dron_model::instance::{HistoryEntry, InstanceRecord};
use dron_model::job::{JobRecord, JobSpec};
use dron_model::resource::ResourceEvent;
use dron_model::ring::Ring;
use ractor::RpcReplyPort;

use crate::error::CommandError;
use crate::store::StoreError;
use crate::views::JobSummary;
use dron_task::TaskUpdate;

pub type Reply<T> = RpcReplyPort<Result<T, CommandError>>;

// Messages are moved into the mailbox once; boxing the job spec would add an allocation per
// API call for no gain.
#[allow(clippy::large_enum_variant)]
pub enum CoordinatorMsg {
    /// Create a job, or replace the one of the same name. `received_ms` is when the request
    /// arrived: a schedule whose start was "now" fires its first target then.
    PutJob {
        spec: JobSpec,
        received_ms: i64,
        reply: Reply<PutOutcome>,
    },
    DeleteJob {
        name: String,
        reply: Reply<()>,
    },
    GetJob {
        name: String,
        reply: Reply<JobView>,
    },
    ListJobs {
        reply: RpcReplyPort<Vec<JobRecord>>,
    },
    /// The names of the shard's jobs, in no order: a streamed job list sorts them off the
    /// coordinator, then asks for their records a batch at a time (`JobsNamed`).
    JobNames {
        reply: RpcReplyPort<Vec<String>>,
    },
    /// The records of those of `names` the shard still holds, in the order given.
    JobsNamed {
        names: Vec<String>,
        reply: RpcReplyPort<Vec<JobRecord>>,
    },
    /// Start an instance now (Chronos `PUT /scheduler/job/{name}`); answers its task id.
    RunNow {
        name: String,
        reply: Reply<String>,
    },
    /// Record a success of the job now without running it (Chronos
    /// `PUT /scheduler/job/success/{name}`, used to satisfy a dependency by hand): its
    /// counters move and its children hear of it as of any success.
    MarkSuccess {
        name: String,
        reply: Reply<()>,
    },
    /// Take this shard's part of a backfill: the plan of one of its jobs (see
    /// `shard/backfill.rs`), with the root's targets left alone.
    CreateBackfill {
        plan: BackfillPlan,
        left_alone: Vec<i64>,
        reply: Reply<()>,
    },
    /// Cancel this shard's plans of a backfill (`kill`: and kill their live runs); answers
    /// how many it held.
    CancelBackfill {
        id: String,
        kill: bool,
        reply: Reply<usize>,
    },
    /// This shard's plans of a backfill (`id`), or of every backfill.
    Backfills {
        id: Option<String>,
        reply: RpcReplyPort<Vec<BackfillPart>>,
    },
    /// Kill every live instance of the job; answers how many.
    KillTasks {
        name: String,
        reply: Reply<usize>,
    },
    /// An async job's task reports its end (`PUT /scheduler/task/{taskId}`).
    CompleteAsync {
        task: TaskRef,
        status_code: i32,
        reply: Reply<()>,
    },
    History {
        name: String,
        limit: usize,
        reply: Reply<Vec<HistoryEntry>>,
    },
    /// One page of this shard's jobs table (see `listing`).
    QueryJobs {
        query: crate::listing::JobQuery,
        reply: RpcReplyPort<crate::listing::JobPage>,
    },
    /// One round of a dependency-graph walk (see `graph`).
    Neighbours {
        describe: std::collections::HashSet<String>,
        children_of: std::collections::HashSet<String>,
        reply: RpcReplyPort<crate::graph::ShardNeighbours>,
    },
    /// Every job of this shard with what its live instances are doing.
    Summaries {
        reply: RpcReplyPort<Vec<JobSummary>>,
    },
    /// Run durations (ms) of the newest `limit` history entries of each job of this shard.
    RunDurations {
        limit: usize,
        reply: Reply<Vec<(String, Vec<i64>)>>,
    },
    /// Jobs of this shard that list `name` among their parents.
    ChildrenOf {
        name: String,
        reply: RpcReplyPort<Vec<String>>,
    },
    /// The upstream jobs (parents, `job:` dependencies) of those of `names` this shard owns.
    ParentsOf {
        names: Vec<String>,
        reply: RpcReplyPort<Vec<(String, Vec<String>)>>,
    },
    /// Resources are ready (recorded by the bus first). Answers once the instances they
    /// released or triggered are durable.
    ResourceReady {
        events: Vec<ResourceEvent>,
        reply: Reply<()>,
    },
    /// Those of the resources admitted instances wait for that the resource store holds
    /// (looked up off the actor: see `Outbox::lookups`).
    ResourcesFound {
        found: Vec<String>,
    },
    /// The bus has recorded and applied these announcements (by key): drop them from the outbox.
    AnnouncementsDone {
        keys: Vec<String>,
    },
    /// The notifier has recorded these notices (by key): drop them from the notice outbox.
    NoticesDone {
        keys: Vec<String>,
    },
    /// What this shard knows of a resource (lineage queries).
    Lineage {
        resource: String,
        reply: RpcReplyPort<ShardLineage>,
    },
    /// `forwarded` is set when another coordinator passed the update on (see `handle_update`).
    TaskUpdate {
        update: TaskUpdate,
        forwarded: bool,
    },
    /// Sent by the shard's ticker when the earliest timer is due.
    Tick,
    StoreFailed(StoreError),
    /// The shard's store takes writes again after a full disk (see `space`).
    SpaceReturned,
    /// Resharding: hand over the jobs that `ring` places on another shard, and stop
    /// scheduling them. They stay in this shard's storage until `Forget`.
    Release {
        ring: Ring,
        reply: RpcReplyPort<Vec<MovedJob>>,
    },
    /// Resharding: take over jobs released by another shard (a job already here wins).
    Adopt {
        jobs: Vec<MovedJob>,
        reply: Reply<()>,
    },
    /// Resharding: delete released jobs from this shard's storage.
    Forget {
        names: Vec<String>,
        reply: Reply<()>,
    },
    Stats {
        reply: RpcReplyPort<ShardStats>,
    },
    /// Write and release what the messages handled since the last flush changed; queued by
    /// the first of them, so it comes round once those already queued are handled.
    Flush,
    /// Fault injection for tests: panic inside the handler.
    InjectPanic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// A job with its live instances.
#[derive(Debug, Clone)]
pub struct JobView {
    pub record: JobRecord,
    pub live: Vec<InstanceRecord>,
    /// (instance id, resources it still waits for) of its waiting instances.
    pub waiting_for: Vec<(String, Vec<String>)>,
}

/// What one shard knows of a resource.
#[derive(Debug, Clone, Default)]
pub struct ShardLineage {
    /// Jobs whose runs announce it (`job:NAME@...`).
    pub producers: Vec<String>,
    /// Jobs with a `dependsOn` template that can name it.
    pub consumers: Vec<String>,
    /// Jobs whose `triggeredBy` pattern matches it.
    pub triggered: Vec<String>,
    /// Live instances waiting for it now.
    pub waiting: Vec<String>,
}

/// A job on its way from one shard to another, with everything it owns.
#[derive(Debug, Clone)]
pub struct MovedJob {
    pub record: JobRecord,
    pub live: Vec<InstanceRecord>,
    pub history: Vec<HistoryEntry>,
    /// Its plans in backfills, with their targets.
    pub backfills: Vec<super::shard::PlanEntry>,
}

/// One job's part in a backfill, as its shard answers it.
#[derive(Debug, Clone)]
pub struct BackfillPart {
    pub plan: BackfillPlan,
    pub targets: BTreeMap<i64, TargetState>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShardStats {
    pub shard: u32,
    pub jobs: usize,
    pub live_instances: usize,
    /// Runs launching: started and not yet reported running by an agent (at
    /// `ShardConfig::max_launching` the shard's due targets wait).
    pub launching: usize,
    pub timers: usize,
    /// How far behind its schedule the shard is: the time since its most overdue timer fell
    /// due, 0 when none is due. Targets parked behind a job's own run are not counted.
    pub behind_ms: i64,
}
