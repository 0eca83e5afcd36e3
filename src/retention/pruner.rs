//! The pruner: a task beside the scheduler (started and stopped with it, so in a cluster it
//! runs on the leader only) that deletes what retention says goes, every `interval`, and on
//! `dron gc` (`POST /api/gc`).
//!
//! It never holds up scheduling: its reads run on blocking threads, outside every actor; its
//! deletions go through the same stores the actors write through, in batches of at most a few
//! dozen jobs or a thousand resources, each awaited before the next, so a shard's writer never
//! has more than one of them queued. Deletions are decided where they are applied
//! ([`StoreOp::PruneHistory`], [`ResourceOp::Expire`]), so a run or a resource written
//! between the pruner's read and its write is judged again, not lost. Notices are the
//! notifier's: it keeps them in memory, so it forgets them itself ([`NotifierMsg::Prune`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dron_actors::clock::SharedClock;
use dron_actors::notify::NotifierMsg;
use dron_actors::store::{ResourceOp, StoreError, StoreOp};
use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::run_dirs;
use super::{Cutoffs, Policy, PruneStores};
use crate::storage::{resources, rocks};

/// Jobs whose history one batch prunes.
const JOBS_PER_BATCH: usize = 64;
/// Resources one batch reads.
const RESOURCES_PER_BATCH: usize = 1000;
/// Notices one batch forgets.
const NOTICES_PER_BATCH: usize = 500;
/// Run directories one batch deletes.
const RUN_DIRS_PER_BATCH: usize = 200;
/// Between two batches: the stores' writers serve the scheduler meanwhile.
const BETWEEN_BATCHES: Duration = Duration::from_millis(5);
/// Names listed per kind in a report.
const SAMPLE: usize = 20;

/// What one pass deleted, or (`dryRun`) would delete.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    /// Runs (history entries, run directories) with a target before this go.
    pub runs_before: String,
    pub resources_before: String,
    pub notices_before: String,
    pub history: Pruned,
    pub resources: Pruned,
    pub notices: Pruned,
    pub run_directories: Pruned,
    /// What failed; the next pass tries again.
    pub errors: Vec<String>,
}

/// One kind of pruned thing: how many, the first few by name.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    pub count: u64,
    /// Run directories only: the bytes they hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub sample: Vec<String>,
}

impl Pruned {
    fn add(&mut self, count: u64, name: impl FnOnce() -> String) {
        self.count += count;
        if count > 0 && self.sample.len() < SAMPLE {
            self.sample.push(name());
        }
    }
}

struct GcRequest {
    dry_run: bool,
    reply: oneshot::Sender<GcReport>,
}

/// Asks the running pruner for a pass (`dron gc`).
#[derive(Clone)]
pub struct GcHandle(mpsc::Sender<GcRequest>);

impl GcHandle {
    /// Runs a pass now (after the one under way, if any) and answers its report; None if the
    /// pruner has stopped (this server stopped scheduling).
    pub async fn run(&self, dry_run: bool) -> Option<GcReport> {
        let (reply, report) = oneshot::channel();
        self.0.send(GcRequest { dry_run, reply }).await.ok()?;
        report.await.ok()
    }
}

/// The running pruner; stopped when dropped.
pub struct Retention {
    handle: GcHandle,
    task: JoinHandle<()>,
}

impl Retention {
    pub fn spawn(
        policy: Policy,
        stores: Arc<dyn PruneStores>,
        notifier: ActorRef<NotifierMsg>,
        runs_root: Option<PathBuf>,
        clock: SharedClock,
    ) -> Retention {
        let (requests, mut queue) = mpsc::channel::<GcRequest>(8);
        let pruner = Pruner {
            policy,
            stores,
            notifier,
            runs_root,
            clock,
        };
        let task = tokio::spawn(async move {
            let period = Duration::from_millis(policy.interval_ms.max(1) as u64);
            // The first pass one interval after the start: not in the way of a recovery.
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        let report = pruner.pass(false).await;
                        for error in &report.errors {
                            tracing::warn!(%error, "retention: a pruning pass failed in part");
                        }
                    }
                    request = queue.recv() => {
                        let Some(request) = request else { return };
                        let _ = request.reply.send(pruner.pass(request.dry_run).await);
                    }
                }
            }
        });
        Retention {
            handle: GcHandle(requests),
            task,
        }
    }

    pub fn handle(&self) -> GcHandle {
        self.handle.clone()
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Pruner {
    policy: Policy,
    stores: Arc<dyn PruneStores>,
    notifier: ActorRef<NotifierMsg>,
    /// The local agent's runs root, if the server runs one.
    runs_root: Option<PathBuf>,
    clock: SharedClock,
}

type Step = Result<(), String>;

impl Pruner {
    async fn pass(&self, dry_run: bool) -> GcReport {
        let cutoffs = self.policy.cutoffs(self.clock.now_ms());
        let mut report = GcReport {
            dry_run,
            runs_before: rfc3339(cutoffs.runs_before_ms),
            resources_before: rfc3339(cutoffs.resources_before_ms),
            notices_before: rfc3339(cutoffs.notices_before_ms),
            ..GcReport::default()
        };
        let steps = [
            self.history(&cutoffs, dry_run, &mut report.history).await,
            self.resources(&cutoffs, dry_run, &mut report.resources)
                .await,
            self.notices(&cutoffs, dry_run, &mut report.notices).await,
            self.run_dirs(&cutoffs, dry_run, &mut report.run_directories)
                .await,
        ];
        report.errors = steps.into_iter().filter_map(Result::err).collect();
        if !dry_run {
            for (what, pruned) in [
                ("history", &report.history),
                ("resources", &report.resources),
                ("notices", &report.notices),
                ("run_directories", &report.run_directories),
            ] {
                metrics::counter!("dron_retention_pruned_total", "what" => what)
                    .increment(pruned.count);
            }
        }
        report
    }

    /// Each shard's jobs with history older than the cut-off, a batch of jobs at a time.
    async fn history(&self, cutoffs: &Cutoffs, dry_run: bool, pruned: &mut Pruned) -> Step {
        let (keep, before_ms) = (self.policy.keep_runs, cutoffs.runs_before_ms);
        for index in self.stores.shard_indexes() {
            let mut after: Option<String> = None;
            loop {
                let Some(shard) = self.stores.shard(index) else {
                    break; // removed meanwhile (resharding)
                };
                let db = shard.db.clone();
                let from = after.take();
                let read = blocking(move || {
                    let (jobs, next) = rocks::jobs_with_old_history(
                        &db,
                        from.as_deref(),
                        before_ms,
                        JOBS_PER_BATCH,
                    )?;
                    let mut counted = Vec::new();
                    for job in jobs {
                        let count = rocks::prunable_history(&db, &job, keep, before_ms)?;
                        if count > 0 {
                            counted.push((job, count));
                        }
                    }
                    Ok((counted, next))
                })
                .await;
                let (counted, next) = read.map_err(|error| format!("shard {index}: {error}"))?;
                if !dry_run && !counted.is_empty() {
                    let ops = counted.iter().map(|(job, _)| StoreOp::PruneHistory {
                        job: job.clone(),
                        keep,
                        before_ms,
                    });
                    let durable = shard.store.submit(ops.collect());
                    drop(shard);
                    written(durable.await).map_err(|error| format!("shard {index}: {error}"))?;
                }
                for (job, count) in counted {
                    pruned.add(count as u64, || format!("{job} ({count} entries)"));
                }
                match next {
                    Some(job) => after = Some(job),
                    None => break,
                }
                tokio::time::sleep(BETWEEN_BATCHES).await;
            }
        }
        Ok(())
    }

    /// The satisfied resources older than the cut-off, a thousand read at a time.
    async fn resources(&self, cutoffs: &Cutoffs, dry_run: bool, pruned: &mut Pruned) -> Step {
        let before_ms = cutoffs.resources_before_ms;
        let mut after: Option<String> = None;
        loop {
            let (store, db) = self.stores.resources();
            let from = after.take();
            let read = blocking(move || {
                resources::expired_resources(&db, from.as_deref(), before_ms, RESOURCES_PER_BATCH)
            })
            .await;
            let (expired, next) = read.map_err(|error| format!("resources: {error}"))?;
            for record in &expired {
                pruned.add(1, || record.resource.clone());
            }
            if !dry_run && !expired.is_empty() {
                let ops = expired.into_iter().map(ResourceOp::Expire).collect();
                written(store.submit(ops).await).map_err(|error| format!("resources: {error}"))?;
            }
            match next {
                Some(resource) => after = Some(resource),
                None => return Ok(()),
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }

    async fn notices(&self, cutoffs: &Cutoffs, dry_run: bool, pruned: &mut Pruned) -> Step {
        // A dry run forgets nothing, so it asks once for all.
        let limit = if dry_run {
            usize::MAX
        } else {
            NOTICES_PER_BATCH
        };
        let before_ms = cutoffs.notices_before_ms;
        loop {
            let asked = self
                .notifier
                .call(
                    |reply| NotifierMsg::Prune {
                        before_ms,
                        limit,
                        dry_run,
                        reply,
                    },
                    Some(Duration::from_secs(30)),
                )
                .await;
            let Ok(CallResult::Success(keys)) = asked else {
                return Err("notices: the notifier did not answer".into());
            };
            let done = keys.len() < limit;
            for key in keys {
                pruned.add(1, || key);
            }
            if done {
                return Ok(());
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }

    async fn run_dirs(&self, cutoffs: &Cutoffs, dry_run: bool, pruned: &mut Pruned) -> Step {
        let Some(root) = self.runs_root.clone() else {
            return Ok(()); // no local agent: remote agents prune their own
        };
        let keep = self.policy.keep_runs;
        let before_ms = cutoffs.runs_before_ms;
        let expired = tokio::task::spawn_blocking(move || {
            run_dirs::expired(&root, keep, before_ms, &|_, _, _| false)
        })
        .await
        .map_err(|error| format!("run directories: {error}"))?;
        let mut bytes = 0;
        for batch in expired.chunks(RUN_DIRS_PER_BATCH) {
            let batch = batch.to_vec();
            let count = batch.len() as u64;
            let names: Vec<String> = batch.iter().map(|run| run.name.clone()).collect();
            let usage = tokio::task::spawn_blocking(move || match dry_run {
                true => batch
                    .iter()
                    .fold(0, |sum, run| sum + run_dirs::Usage::of(&run.path).bytes),
                false => run_dirs::remove(&batch).bytes,
            })
            .await
            .map_err(|error| format!("run directories: {error}"))?;
            bytes += usage;
            pruned.count += count;
            let room = SAMPLE.saturating_sub(pruned.sample.len());
            pruned.sample.extend(names.into_iter().take(room));
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
        pruned.bytes = Some(bytes);
        Ok(())
    }
}

/// Runs a store read on a blocking thread.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or(Err(StoreError::Stopped("the pruner's read")))
}

/// A submitted batch's outcome.
fn written(
    durable: Result<Result<(), StoreError>, oneshot::error::RecvError>,
) -> Result<(), StoreError> {
    durable.unwrap_or(Err(StoreError::Stopped("the store's writer")))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
