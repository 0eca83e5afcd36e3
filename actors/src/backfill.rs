//! Backfills as the API sees them, as plain logic: checking a request and planning the
//! root's targets ([`plan_root`]), ordering the jobs downstream ([`order_downstream`]), and
//! summing up the shards' parts of a backfill ([`summarize`]). The shards run the plans
//! (`coordinator/shard/backfill.rs`); `client/backfill.rs` asks them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use dron_model::backfill::{BackfillPlan, TargetState};
use dron_model::error::Invalid;
use dron_model::instance::{HistoryEntry, InstanceState};
use dron_model::schedule::Schedule;

use crate::coordinator::BackfillPart;

/// Targets one backfill may have, unless configured otherwise (`[scheduler]
/// backfill_max_targets`).
pub const DEFAULT_MAX_TARGETS: u64 = 10_000;
/// Runs of one job in a backfill at once, at most.
pub const MAX_PARALLEL: u32 = 1_000;
/// Jobs one backfill may reach downstream.
pub const MAX_JOBS: usize = 1_000;

/// What `POST /api/jobs/{name}/backfill` asks.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    pub job: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub downstream: bool,
    pub parallel: u32,
    pub rerun_succeeded: bool,
}

fn ms_to_time(ms: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn rfc3339(ms: i64) -> String {
    ms_to_time(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Checks the request against the root's schedule: the first target, and how many targets
/// the range holds (at least one, at most `max_targets`).
pub fn check_range(
    request: &BackfillRequest,
    schedule: Option<&Schedule>,
    max_targets: u64,
) -> Result<(i64, u64), Invalid> {
    if !(1..=MAX_PARALLEL).contains(&request.parallel) {
        let message = format!("parallel must be 1 to {MAX_PARALLEL}");
        return Err(Invalid::new("parallel", message));
    }
    if request.from_ms > request.to_ms {
        let message = format!(
            "the range is inverted: from {} is after to {}",
            rfc3339(request.from_ms),
            rfc3339(request.to_ms)
        );
        return Err(Invalid::new("to", message));
    }
    let Some(schedule) = schedule else {
        let message = format!(
            "job '{}' has no schedule: backfill the scheduled job upstream of it, with downstream: true (or rerun one of its runs)",
            request.job
        );
        return Err(Invalid::new("job", message));
    };
    let (from, until) = (ms_to_time(request.from_ms), ms_to_time(request.to_ms + 1));
    let count = schedule.count_between(from, until, max_targets.saturating_add(1));
    let first = schedule
        .first_at_or_after(from)
        .map(|t| t.timestamp_millis());
    let Some(first) = first.filter(|_| count > 0) else {
        let message = format!(
            "the range is empty: job '{}' has no target from {} to {}",
            request.job,
            rfc3339(request.from_ms),
            rfc3339(request.to_ms)
        );
        return Err(Invalid::new("from", message));
    };
    if count > max_targets {
        let message = format!(
            "the range holds more than {} targets of job '{}' (the most one backfill may have): split it",
            max_targets, request.job
        );
        return Err(Invalid::new("to", message));
    }
    Ok((first, count))
}

/// The targets in `[from_ms, to_ms]` that succeeded before (in `history`): a backfill that
/// does not rerun successes leaves them alone. Only those that are targets of `schedule` (a
/// manual run at another time is not one of the range's).
pub fn succeeded_targets(
    history: &[HistoryEntry],
    schedule: Option<&Schedule>,
    from_ms: i64,
    to_ms: i64,
) -> Vec<i64> {
    let succeeded = history.iter().filter_map(|entry| match entry {
        HistoryEntry::Run(run) if run.state == InstanceState::Succeeded => Some(run.target_ms),
        _ => None,
    });
    let in_range = succeeded.filter(|t| (from_ms..=to_ms).contains(t));
    let targets = in_range.filter(|t| {
        let first = schedule.and_then(|s| s.first_at_or_after(ms_to_time(*t)));
        first.is_some_and(|first| first.timestamp_millis() == *t)
    });
    let unique: BTreeSet<i64> = targets.collect();
    unique.into_iter().collect()
}

/// Orders the jobs of a backfill so that each comes after its upstream (`upstream`: each
/// job's upstream jobs within the backfill; the root has none). A cycle is refused, naming
/// its jobs: they would wait for each other's run of the same time for ever.
pub fn order_downstream(
    root: &str,
    upstream: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, Invalid> {
    let mut ordered = Vec::with_capacity(upstream.len());
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&String> = upstream
            .iter()
            .filter(|(job, ups)| {
                !placed.contains(job.as_str()) && ups.iter().all(|u| placed.contains(u.as_str()))
            })
            .map(|(job, _)| job)
            .collect();
        if ready.is_empty() {
            break;
        }
        for job in ready {
            placed.insert(job);
            ordered.push(job.clone());
        }
    }
    if ordered.len() < upstream.len() {
        let stuck: Vec<&str> = upstream
            .keys()
            .map(String::as_str)
            .filter(|job| !placed.contains(job))
            .collect();
        let message = format!(
            "the jobs downstream of '{root}' form a dependency cycle among {}: each would wait for another's run of the same time",
            stuck.join(", ")
        );
        return Err(Invalid::new("downstream", message));
    }
    Ok(ordered)
}

/// How many times of a backfill stand where: of one job, or summed over its jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub running: u64,
    /// Times still to run: started when the backfill has room, or once the upstream's run of
    /// that time succeeded.
    pub waiting: u64,
    /// Times that will not run because an upstream run of that time failed.
    pub upstream_failed: u64,
}

impl Counts {
    fn add(self, other: Counts) -> Counts {
        Counts {
            total: self.total + other.total,
            succeeded: self.succeeded + other.succeeded,
            failed: self.failed + other.failed,
            running: self.running + other.running,
            waiting: self.waiting + other.waiting,
            upstream_failed: self.upstream_failed + other.upstream_failed,
        }
    }
}

/// Where one job of a backfill stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub job: String,
    pub upstream: Vec<String>,
    pub counts: Counts,
    /// The root's targets that had succeeded and were left alone.
    pub left_alone: u64,
    /// Its failed times, oldest first (at most [`FAILED_SHOWN`]).
    pub failed_targets: Vec<i64>,
}

/// Failed times listed per job.
pub const FAILED_SHOWN: usize = 100;

/// A backfill, summed up over its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillSummary {
    /// The root's plan (its job, range and settings).
    pub plan: BackfillPlan,
    pub state: &'static str,
    /// Its jobs' counts summed.
    pub counts: Counts,
    /// The root first, then downstream in dependency order.
    pub jobs: Vec<JobProgress>,
}

/// Sums up the shards' parts, one summary per backfill whose root's plan is there, newest
/// first. A downstream job's times are the root's: those an upstream failed (or could not
/// run because its own upstream failed) are `upstream_failed`, the rest not done `waiting`.
pub fn summarize(parts: Vec<BackfillPart>) -> Vec<BackfillSummary> {
    let mut by_id: BTreeMap<String, BTreeMap<String, BackfillPart>> = BTreeMap::new();
    for part in parts {
        let plans = by_id.entry(part.plan.id.clone()).or_default();
        plans.insert(part.plan.job.clone(), part);
    }
    let mut summaries: Vec<BackfillSummary> = by_id
        .into_values()
        .filter_map(|parts| summarize_one(&parts))
        .collect();
    summaries.sort_by(|a, b| {
        let newest = b.plan.created_ms.cmp(&a.plan.created_ms);
        newest.then_with(|| a.plan.id.cmp(&b.plan.id))
    });
    summaries
}

fn summarize_one(parts: &BTreeMap<String, BackfillPart>) -> Option<BackfillSummary> {
    let root = parts.values().find(|p| p.plan.is_root())?;
    let upstream: BTreeMap<String, Vec<String>> = parts
        .iter()
        .map(|(job, part)| (job.clone(), part.plan.upstream.clone()))
        .collect();
    // Parts whose upstream is missing (a job deleted since) sort last: they show, and wait.
    let mut order = order_downstream(&root.plan.job, &upstream).unwrap_or_default();
    let rest: Vec<String> = parts
        .keys()
        .filter(|j| !order.contains(j))
        .cloned()
        .collect();
    order.extend(rest);
    // Per job: the times it will never run (its own failures, or an upstream's).
    let mut dead: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    let mut jobs = Vec::with_capacity(order.len());
    for job in &order {
        let part = &parts[job];
        let blocked: BTreeSet<i64> = part
            .plan
            .upstream
            .iter()
            .filter_map(|u| dead.get(u.as_str()))
            .flatten()
            .copied()
            .filter(|t| part.targets.get(t).is_none_or(|s| !started(s)))
            .collect();
        let progress = job_progress(part, root.plan.total, blocked.len() as u64);
        let failed = part.targets.iter();
        let failed = failed.filter(|(_, s)| **s == TargetState::Failed);
        let mut dead_here: BTreeSet<i64> = failed.map(|(t, _)| *t).collect();
        dead_here.extend(blocked);
        dead.insert(job, dead_here);
        jobs.push(progress);
    }
    let counts = jobs
        .iter()
        .fold(Counts::default(), |sum, j| sum.add(j.counts));
    let state = match (root.plan.cancelled, counts.running + counts.waiting) {
        (true, _) => "cancelled",
        (false, 0) => "finished",
        (false, _) => "running",
    };
    Some(BackfillSummary {
        plan: root.plan.clone(),
        state,
        counts,
        jobs,
    })
}

/// Whether the time has run or runs in this job (not merely waits for its upstream).
fn started(state: &TargetState) -> bool {
    matches!(
        state,
        TargetState::Running | TargetState::Succeeded | TargetState::Failed
    )
}

fn job_progress(part: &BackfillPart, total: u64, upstream_failed: u64) -> JobProgress {
    let count = |state: TargetState| part.targets.values().filter(|s| **s == state).count() as u64;
    let (succeeded, failed) = (count(TargetState::Succeeded), count(TargetState::Failed));
    let running = count(TargetState::Running);
    let failed_targets = part.targets.iter();
    let failed_targets = failed_targets.filter(|(_, s)| **s == TargetState::Failed);
    let done = succeeded + failed + running + upstream_failed;
    JobProgress {
        job: part.plan.job.clone(),
        upstream: part.plan.upstream.clone(),
        counts: Counts {
            total,
            succeeded,
            failed,
            running,
            waiting: total.saturating_sub(done),
            upstream_failed,
        },
        left_alone: count(TargetState::LeftAlone),
        failed_targets: failed_targets.map(|(t, _)| *t).take(FAILED_SHOWN).collect(),
    }
}

#[cfg(test)]
mod tests;
