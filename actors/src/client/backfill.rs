//! Backfills and reruns across shards: the request is checked against the root's schedule
//! and history, the jobs downstream are found (one round over the shards per level), and
//! each job's plan goes to its own shard, the downstream ones first so that none misses an
//! announcement of the root's first runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};

use dron_model::backfill::BackfillPlan;
use dron_model::error::Invalid;
use dron_model::instance::rerun_first_attempt;
use dron_model::job::JobSpec;

use super::{Asked, SchedulerClient};
use crate::backfill::{
    BackfillRequest, BackfillSummary, MAX_JOBS, check_range, order_downstream, succeeded_targets,
    summarize,
};
use crate::coordinator::{BackfillPart, CoordinatorMsg};
use crate::error::CommandError;

/// Tells apart backfills created in the same millisecond by this process.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

fn new_id(now_ms: i64) -> String {
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1000;
    format!("bf-{now_ms}-{sequence}")
}

impl SchedulerClient {
    /// Starts a backfill of `request.job` over its schedule's targets in the range; answers
    /// its id.
    pub async fn backfill(
        &self,
        request: BackfillRequest,
        now_ms: i64,
    ) -> Result<String, CommandError> {
        let root = self.job(&request.job).await?.record.spec;
        let schedule = root.schedule();
        let max_targets = self.backfill_max_targets;
        let (first, count) = check_range(&request, schedule.as_ref(), max_targets)?;
        let left_alone = match request.rerun_succeeded {
            true => Vec::new(),
            false => {
                let history = self.history(&request.job, usize::MAX).await?;
                let (from, to) = (request.from_ms, request.to_ms);
                succeeded_targets(&history, schedule.as_ref(), from, to)
            }
        };
        let plan = BackfillPlan {
            id: new_id(now_ms),
            job: request.job.clone(),
            root: request.job.clone(),
            upstream: Vec::new(),
            from_ms: request.from_ms,
            to_ms: request.to_ms,
            parallel: request.parallel,
            rerun_succeeded: request.rerun_succeeded,
            downstream: request.downstream,
            next_ms: Some(first),
            total: count.saturating_sub(left_alone.len() as u64),
            created_ms: now_ms,
            cancelled: false,
            first_attempt: rerun_first_attempt(now_ms),
        };
        self.start_backfill(root, plan, left_alone).await
    }

    /// Runs `job` again for one logical time (with the jobs downstream of it, if asked), as a
    /// backfill of that one time; answers its id.
    pub async fn rerun(
        &self,
        job: &str,
        target_ms: i64,
        downstream: bool,
        now_ms: i64,
    ) -> Result<String, CommandError> {
        let root = self.job(job).await?.record.spec;
        let plan = BackfillPlan {
            id: new_id(now_ms),
            job: job.to_string(),
            root: job.to_string(),
            upstream: Vec::new(),
            from_ms: target_ms,
            to_ms: target_ms,
            parallel: 1,
            rerun_succeeded: true,
            downstream,
            next_ms: Some(target_ms),
            total: 1,
            created_ms: now_ms,
            cancelled: false,
            first_attempt: rerun_first_attempt(now_ms),
        };
        self.start_backfill(root, plan, Vec::new()).await
    }

    /// Sends each job's plan to its shard: downstream ones first (in dependency order), the
    /// root's last, which starts the backfill.
    async fn start_backfill(
        &self,
        root: JobSpec,
        plan: BackfillPlan,
        left_alone: Vec<i64>,
    ) -> Result<String, CommandError> {
        let upstream = match plan.downstream {
            true => self.downstream_of(&root).await?,
            false => BTreeMap::from([(root.name.clone(), Vec::new())]),
        };
        let order = order_downstream(&root.name, &upstream)?;
        for job in order.iter().filter(|j| **j != root.name) {
            let part = BackfillPlan {
                job: job.clone(),
                upstream: upstream[job].clone(),
                next_ms: None,
                ..plan.clone()
            };
            self.create_plan(part, Vec::new()).await?;
        }
        let id = plan.id.clone();
        tracing::info!(backfill = %id, job = %root.name, jobs = order.len(), "backfill created");
        self.create_plan(plan, left_alone).await?;
        Ok(id)
    }

    async fn create_plan(
        &self,
        plan: BackfillPlan,
        left_alone: Vec<i64>,
    ) -> Result<(), CommandError> {
        let job = plan.job.clone();
        let creating = Asked::about("creating a backfill of job", &job);
        self.ask_job(creating, &job, |reply| CoordinatorMsg::CreateBackfill {
            plan,
            left_alone,
            reply,
        })
        .await
    }

    /// Every job downstream of `root`, transitively, each with its upstream jobs among them
    /// (the root's own upstream is left out: the backfill starts at the root).
    async fn downstream_of(
        &self,
        root: &JobSpec,
    ) -> Result<BTreeMap<String, Vec<String>>, CommandError> {
        let mut specs: BTreeMap<String, JobSpec> = BTreeMap::new();
        specs.insert(root.name.clone(), root.clone());
        // Each round describes the jobs found in the last one and finds their children.
        let mut found: HashSet<String> = HashSet::from([root.name.clone()]);
        let mut describe: HashSet<String> = HashSet::new();
        while !found.is_empty() {
            let walking = Asked::about("finding the jobs downstream of job", &root.name);
            let answers = self
                .ask_all(walking, |reply| CoordinatorMsg::Neighbours {
                    describe: describe.clone(),
                    children_of: found.clone(),
                    reply,
                })
                .await?;
            let mut children = HashSet::new();
            for answer in answers {
                for summary in answer.described {
                    specs.insert(summary.record.spec.name.clone(), summary.record.spec);
                }
                children.extend(answer.children);
            }
            children.retain(|child| !specs.contains_key(child));
            if specs.len() + children.len() > MAX_JOBS {
                let message = format!(
                    "more than {MAX_JOBS} jobs are downstream of '{}': backfill a job further down, or without downstream",
                    root.name
                );
                return Err(Invalid::new("downstream", message).into());
            }
            describe = children.clone();
            found = children;
        }
        let names: HashSet<&String> = specs.keys().collect();
        let upstream = specs.iter().map(|(name, spec)| {
            let ups = match *name == root.name {
                true => Vec::new(),
                false => {
                    let mut ups: Vec<String> = crate::graph::upstream_jobs(spec)
                        .filter(|u| names.contains(u) && u != name)
                        .collect();
                    ups.sort();
                    ups.dedup();
                    ups
                }
            };
            (name.clone(), ups)
        });
        Ok(upstream.collect())
    }

    /// Every backfill whose root is known, newest first.
    pub async fn backfills(&self) -> Result<Vec<BackfillSummary>, CommandError> {
        Ok(summarize(self.backfill_parts(None).await?))
    }

    /// One backfill, summed up over its jobs.
    pub async fn backfill_status(&self, id: &str) -> Result<BackfillSummary, CommandError> {
        let parts = self.backfill_parts(Some(id)).await?;
        let summary = summarize(parts).into_iter().next();
        summary.ok_or_else(|| CommandError::BackfillNotFound(id.to_string()))
    }

    /// Cancels a backfill on every shard holding a plan of it: nothing new starts, and runs
    /// already live finish (or, with `kill`, are killed). Answers where it stands then.
    pub async fn cancel_backfill(
        &self,
        id: &str,
        kill: bool,
    ) -> Result<BackfillSummary, CommandError> {
        self.backfill_status(id).await?;
        let cancelling = Asked::about("cancelling backfill", id);
        let answers = self
            .ask_all(cancelling, |reply| CoordinatorMsg::CancelBackfill {
                id: id.to_string(),
                kill,
                reply,
            })
            .await?;
        for answer in answers {
            super::answered(cancelling, answer)?;
        }
        self.backfill_status(id).await
    }

    async fn backfill_parts(&self, id: Option<&str>) -> Result<Vec<BackfillPart>, CommandError> {
        let reading = Asked::to("reading backfills");
        let parts = self
            .ask_all(reading, |reply| CoordinatorMsg::Backfills {
                id: id.map(str::to_string),
                reply,
            })
            .await?;
        Ok(parts.concat())
    }
}
