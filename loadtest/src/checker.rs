//! The schedule checker: given the jobs the server acknowledged and the runs their commands
//! recorded (see `recorder`), did every target run once, inside its epsilon window, and did every
//! dependent job wait for its parents? In the manner of Jepsen's test of Chronos, the recorded
//! runs are the ground truth; the server's own account of its runs is not consulted.
//!
//! Pure: no clock, no files, no network. The caller passes the time the history was read.
//!
//! # Rules
//!
//! - A scheduled job's targets come from the load test's own oracle (`oracle`), never from dron's
//!   schedule code. A schedule the oracle cannot compute (cron, a zone other than UTC, months or
//!   years) is not judged: the job is reported as *unchecked*, with the reason, and only its
//!   runs are counted.
//! - A scheduled job owes one run per target `t` with `from <= t <= horizon`, where `from` is
//!   the later of its creation (when known) and its schedule's first target, and
//!   `horizon = read − epsilon − allowance`: a target after the horizon may still legitimately
//!   be waiting to start or to finish, so it is not judged (and its runs are *unchecked*).
//! - A run *counts* when it completed with exit code 0. Failed runs (a retry may follow) and
//!   incomplete runs (no end line: running or killed) are reported but satisfy nothing.
//! - A run belongs to the target its `DRON_TARGET` names. A run without one is matched by its
//!   start: to the earliest target whose window `[t, t + epsilon]` holds the start and has no run
//!   yet, else to the latest such target (a duplicate).
//! - A target is *satisfied* when a counted run started inside `[t, t + epsilon]`, else *missed*.
//!   It is a *duplicate* when two or more counted runs belong to it.
//! - *Lateness* of a target is the start of its earliest counted run minus `t`; it is reported
//!   for every target with a counted run, including those missed for starting after epsilon.
//! - A counted run that belongs to no target of its job (a manual run, a target before the job
//!   existed, a time that is no target) is *stray*: reported, not a failure.
//! - Dependent jobs: dron runs a child once all its parents succeeded since its last run, so
//!   every run of a child (runs grouped by target: retries are one run) must start after a
//!   success of each parent that no earlier child run used up. A run that finds none is a
//!   dependency violation (and uses none up). Parent successes that ended before the child was
//!   created do not count. Successes are matched by count, not by "since the last child run":
//!   a parent success that ends just as a child run starts is only counted by dron for the
//!   next run, and the recorded times cannot tell which side of that race it fell on.
//! - A job with a `created` record that the server no longer lists is *lost*.
//!
//! The check passes when nothing is missed, duplicated, out of order or lost. Unchecked jobs do
//! not fail it, but the report counts them (`Totals::unchecked_jobs`) so a pass says how much
//! it covered.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::oracle::{Interval, Unchecked};
use crate::stats::percentile;

/// How many missed targets a job report lists (the count is always complete).
const LISTED_MISSED: usize = 10;

/// A job as the server describes it.
#[derive(Debug, Clone)]
pub struct JobUnderTest {
    pub name: String,
    pub trigger: Trigger,
    pub epsilon_ms: i64,
    /// When the server acknowledged the job, if known: no target before it is owed a run.
    pub created_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Trigger {
    Schedule(Interval),
    /// A schedule the oracle cannot compute: reported, not judged.
    Unchecked(Unchecked),
    Parents(Vec<String>),
}

/// One recorded run of a job's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub job: String,
    pub start_ms: i64,
    /// `DRON_TARGET`, when the run had one.
    pub target_ms: Option<i64>,
    pub attempt: Option<u32>,
    /// The recording shell's pid (0 when unknown).
    pub pid: u32,
    /// None while running, or when killed.
    pub end: Option<RunEnd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    pub end_ms: i64,
    pub exit_code: i32,
}

impl Run {
    fn counts(&self) -> bool {
        self.end.is_some_and(|end| end.exit_code == 0)
    }

    fn failed(&self) -> bool {
        self.end.is_some_and(|end| end.exit_code != 0)
    }
}

/// What the checker is given.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The jobs the server lists now.
    pub jobs: Vec<JobUnderTest>,
    pub runs: Vec<Run>,
    /// Jobs known to have been acknowledged (from `created` records).
    pub acknowledged: Vec<String>,
    /// When the history was read (Unix ms).
    pub read_ms: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// How long a run may take to finish after its window closes before its target is judged.
    pub allowance_ms: i64,
    /// Targets judged per job at most (a runaway schedule must not exhaust memory).
    pub max_targets_per_job: usize,
    /// Missed targets listed per job (`JobReport::missed_targets`); the count is always complete.
    pub listed_missed: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            allowance_ms: 5_000,
            max_targets_per_job: 1_000_000,
            listed_missed: LISTED_MISSED,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobReport {
    pub name: String,
    pub dependent: bool,
    /// Every recorded run, whatever became of it.
    pub runs: u64,
    pub targets: u64,
    pub satisfied: u64,
    pub missed: u64,
    pub duplicates: u64,
    pub stray: u64,
    /// Runs for targets after the horizon: not judged yet.
    pub unchecked: u64,
    pub incomplete: u64,
    pub failed: u64,
    /// Lateness of each target that has a counted run, sorted.
    pub lateness_ms: Vec<i64>,
    /// The first few missed targets (Unix ms; `Params::listed_missed` of them).
    pub missed_targets: Vec<i64>,
    /// Every satisfied target (Unix ms).
    pub satisfied_targets: Vec<i64>,
    /// Every target run twice or more (Unix ms).
    pub duplicate_targets: Vec<i64>,
    /// The job had more targets than `max_targets_per_job`; only the first were judged.
    pub truncated: bool,
    /// Why the job's schedule was not judged, when it was not.
    pub unchecked_schedule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyViolation {
    pub child: String,
    pub parent: String,
    pub child_start_ms: i64,
    /// This was the child's k-th run (from 1)...
    pub child_run: usize,
    /// ...and this many parent successes had ended when it started, all used up by earlier runs.
    pub parent_successes: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub jobs: u64,
    pub targets: u64,
    pub satisfied: u64,
    pub missed: u64,
    pub duplicates: u64,
    pub stray: u64,
    pub unchecked: u64,
    pub incomplete: u64,
    pub failed: u64,
    pub late_p50_ms: i64,
    pub late_p99_ms: i64,
    pub late_max_ms: i64,
    pub dependency_violations: u64,
    /// Runs of jobs the server does not list.
    pub unknown_job_runs: u64,
    pub lost_jobs: u64,
    /// Scheduled jobs whose schedule the oracle cannot compute: not judged.
    pub unchecked_jobs: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub jobs: Vec<JobReport>,
    pub violations: Vec<DependencyViolation>,
    pub lost_jobs: Vec<String>,
    pub totals: Totals,
}

impl Report {
    pub fn passed(&self) -> bool {
        let totals = &self.totals;
        totals.missed == 0
            && totals.duplicates == 0
            && totals.dependency_violations == 0
            && totals.lost_jobs == 0
    }
}

/// Checks a history. See the module comment for the rules.
pub fn check(history: &History, params: Params) -> Report {
    let runs_by_job = group_runs(&history.runs);
    let no_runs = Vec::new();
    let jobs: Vec<JobReport> = history
        .jobs
        .iter()
        .map(|job| {
            let runs = runs_by_job.get(job.name.as_str()).unwrap_or(&no_runs);
            match &job.trigger {
                Trigger::Schedule(interval) => {
                    check_scheduled(job, interval, runs, history.read_ms, params)
                }
                Trigger::Unchecked(why) => check_unchecked(job, why, runs),
                Trigger::Parents(_) => check_dependent(job, runs),
            }
        })
        .collect();
    let violations: Vec<DependencyViolation> = history
        .jobs
        .iter()
        .flat_map(|job| dependency_violations(job, &runs_by_job))
        .collect();
    let listed: HashSet<&str> = history.jobs.iter().map(|job| job.name.as_str()).collect();
    let lost_jobs = lost_jobs(&history.acknowledged, &listed);
    let unknown_job_runs = history
        .runs
        .iter()
        .filter(|run| !listed.contains(run.job.as_str()))
        .count() as u64;
    let totals = totals(&jobs, &violations, &lost_jobs, unknown_job_runs);
    Report {
        jobs,
        violations,
        lost_jobs,
        totals,
    }
}

fn group_runs(runs: &[Run]) -> HashMap<&str, Vec<&Run>> {
    let mut by_job: HashMap<&str, Vec<&Run>> = HashMap::new();
    for run in runs {
        by_job.entry(run.job.as_str()).or_default().push(run);
    }
    by_job
}

fn lost_jobs(acknowledged: &[String], listed: &HashSet<&str>) -> Vec<String> {
    let mut lost: Vec<String> = acknowledged
        .iter()
        .filter(|name| !listed.contains(name.as_str()))
        .cloned()
        .collect();
    lost.sort();
    lost.dedup();
    lost
}

// ----- scheduled jobs -----------------------------------------------------------------------

/// The runs that belong to one target.
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    counted: u32,
    earliest_start: Option<i64>,
    in_window: bool,
}

fn check_scheduled(
    job: &JobUnderTest,
    interval: &Interval,
    runs: &[&Run],
    read_ms: i64,
    params: Params,
) -> JobReport {
    let horizon = read_ms - job.epsilon_ms - params.allowance_ms;
    // No target before the job existed is owed; without a creation time, every one is.
    let from = job.created_ms.unwrap_or(i64::MIN);
    let (targets, truncated) = interval.targets_between(from, horizon, params.max_targets_per_job);
    let mut slots = vec![Slot::default(); targets.len()];
    let mut report = JobReport {
        name: job.name.clone(),
        truncated,
        ..JobReport::default()
    };
    count_runs(&mut report, runs);
    let (named, unnamed): (Vec<&Run>, Vec<&Run>) = runs
        .iter()
        .copied()
        .filter(|run| run.counts())
        .partition(|run| run.target_ms.is_some());
    for run in named {
        let target = run.target_ms.expect("partitioned on target");
        match targets.binary_search(&target) {
            Ok(index) => assign(&mut slots[index], target, run.start_ms, job.epsilon_ms),
            Err(_) if target > horizon => report.unchecked += 1,
            Err(_) => report.stray += 1,
        }
    }
    match_by_start(
        &mut report,
        &targets,
        &mut slots,
        unnamed,
        job.epsilon_ms,
        horizon,
    );
    summarise(&mut report, &targets, &slots, params.listed_missed);
    report
}

/// All runs, and the failed and incomplete ones: reported, never matched.
fn count_runs(report: &mut JobReport, runs: &[&Run]) {
    report.runs = runs.len() as u64;
    report.failed = runs.iter().filter(|run| run.failed()).count() as u64;
    report.incomplete = runs.iter().filter(|run| run.end.is_none()).count() as u64;
}

fn assign(slot: &mut Slot, target: i64, start: i64, epsilon: i64) {
    slot.counted += 1;
    slot.earliest_start = Some(slot.earliest_start.map_or(start, |s| s.min(start)));
    slot.in_window |= (target..=target + epsilon).contains(&start);
}

/// Matches runs without a target by their start (see the module comment). In start order, and
/// with every window the same length, "earliest open target first" never strands a run that
/// another choice would have placed.
fn match_by_start(
    report: &mut JobReport,
    targets: &[i64],
    slots: &mut [Slot],
    mut runs: Vec<&Run>,
    epsilon: i64,
    horizon: i64,
) {
    runs.sort_by_key(|run| run.start_ms);
    for run in runs {
        let start = run.start_ms;
        // Targets t with start − epsilon <= t <= start.
        let low = targets.partition_point(|&t| t < start - epsilon);
        let high = targets.partition_point(|&t| t <= start);
        let open = (low..high).find(|&i| slots[i].counted == 0);
        let last = high.checked_sub(1).filter(|&i| i >= low);
        match open.or(last) {
            Some(index) => assign(&mut slots[index], targets[index], start, epsilon),
            None if start > horizon => report.unchecked += 1,
            None => report.stray += 1,
        }
    }
}

fn summarise(report: &mut JobReport, targets: &[i64], slots: &[Slot], listed_missed: usize) {
    report.targets = targets.len() as u64;
    for (&target, slot) in targets.iter().zip(slots) {
        if slot.in_window {
            report.satisfied += 1;
            report.satisfied_targets.push(target);
        } else {
            report.missed += 1;
            if report.missed_targets.len() < listed_missed {
                report.missed_targets.push(target);
            }
        }
        if slot.counted >= 2 {
            report.duplicates += 1;
            report.duplicate_targets.push(target);
        }
        if let Some(start) = slot.earliest_start {
            report.lateness_ms.push(start - target);
        }
    }
    report.lateness_ms.sort_unstable();
}

/// A job whose schedule the oracle cannot compute: its runs are counted, nothing is judged.
fn check_unchecked(job: &JobUnderTest, why: &Unchecked, runs: &[&Run]) -> JobReport {
    let mut report = JobReport {
        name: job.name.clone(),
        unchecked_schedule: Some(why.to_string()),
        ..JobReport::default()
    };
    count_runs(&mut report, runs);
    report
}

// ----- dependent jobs -----------------------------------------------------------------------

fn check_dependent(job: &JobUnderTest, runs: &[&Run]) -> JobReport {
    let mut report = JobReport {
        name: job.name.clone(),
        dependent: true,
        ..JobReport::default()
    };
    count_runs(&mut report, runs);
    report
}

/// The child's runs as the starts of its triggers: runs of one target (its attempts) are one.
fn trigger_starts(runs: &[&Run]) -> Vec<i64> {
    let mut by_target: BTreeMap<i64, i64> = BTreeMap::new();
    let mut starts = Vec::new();
    for run in runs {
        match run.target_ms {
            Some(target) => {
                let start = by_target.entry(target).or_insert(run.start_ms);
                *start = (*start).min(run.start_ms);
            }
            None => starts.push(run.start_ms),
        }
    }
    starts.extend(by_target.into_values());
    starts.sort_unstable();
    starts
}

fn dependency_violations(
    job: &JobUnderTest,
    runs_by_job: &HashMap<&str, Vec<&Run>>,
) -> Vec<DependencyViolation> {
    let Trigger::Parents(parents) = &job.trigger else {
        return Vec::new();
    };
    let no_runs = Vec::new();
    let children = trigger_starts(runs_by_job.get(job.name.as_str()).unwrap_or(&no_runs));
    let mut violations = Vec::new();
    for parent in parents {
        let parent_runs = runs_by_job.get(parent.as_str()).unwrap_or(&no_runs);
        let ends = success_ends(parent_runs, job.created_ms);
        // Each child run uses up one parent success. A run that finds none unused is a violation
        // and uses none up, so one early run does not make every later run a violation too.
        let mut used = 0;
        for (index, &start) in children.iter().enumerate() {
            let before = ends.partition_point(|&end| end <= start);
            if before > used {
                used += 1;
            } else {
                violations.push(DependencyViolation {
                    child: job.name.clone(),
                    parent: parent.clone(),
                    child_start_ms: start,
                    child_run: index + 1,
                    parent_successes: before,
                });
            }
        }
    }
    violations
}

/// When each counted run of a parent ended, sorted; only those after the child existed.
fn success_ends(runs: &[&Run], since: Option<i64>) -> Vec<i64> {
    let mut ends: Vec<i64> = runs
        .iter()
        .filter(|run| run.counts())
        .filter_map(|run| run.end.map(|end| end.end_ms))
        .filter(|&end| since.is_none_or(|since| end >= since))
        .collect();
    ends.sort_unstable();
    ends
}

// ----- totals -------------------------------------------------------------------------------

fn totals(
    jobs: &[JobReport],
    violations: &[DependencyViolation],
    lost_jobs: &[String],
    unknown_job_runs: u64,
) -> Totals {
    let mut lateness: Vec<i64> = jobs
        .iter()
        .flat_map(|job| job.lateness_ms.iter().copied())
        .collect();
    lateness.sort_unstable();
    let sum = |field: fn(&JobReport) -> u64| jobs.iter().map(field).sum();
    Totals {
        jobs: jobs.len() as u64,
        targets: sum(|job| job.targets),
        satisfied: sum(|job| job.satisfied),
        missed: sum(|job| job.missed),
        duplicates: sum(|job| job.duplicates),
        stray: sum(|job| job.stray),
        unchecked: sum(|job| job.unchecked),
        incomplete: sum(|job| job.incomplete),
        failed: sum(|job| job.failed),
        late_p50_ms: percentile(&lateness, 0.50),
        late_p99_ms: percentile(&lateness, 0.99),
        late_max_ms: lateness.last().copied().unwrap_or_default(),
        dependency_violations: violations.len() as u64,
        unknown_job_runs,
        lost_jobs: lost_jobs.len() as u64,
        unchecked_jobs: jobs
            .iter()
            .filter(|job| job.unchecked_schedule.is_some())
            .count() as u64,
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::oracle::parse_schedule;

    /// 2026-11-23T10:00:00Z: target 0 of the test schedules.
    const BASE: i64 = 1_795_428_000_000;
    const EPSILON: i64 = 2_000;
    const PARAMS: Params = Params {
        allowance_ms: 1_000,
        max_targets_per_job: 1_000_000,
        listed_missed: LISTED_MISSED,
    };
    /// Read so that the horizon is BASE + 9 s: targets BASE, BASE + 1 s, ..., BASE + 9 s.
    const READ: i64 = BASE + 9_000 + EPSILON + 1_000;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn target(k: i64) -> i64 {
        BASE + k * 1_000
    }

    fn scheduled(name: &str, schedule: &str, zone: Option<&str>, epsilon_ms: i64) -> JobUnderTest {
        let trigger = match parse_schedule(schedule, zone) {
            Ok(interval) => Trigger::Schedule(interval),
            Err(why) => Trigger::Unchecked(why),
        };
        JobUnderTest {
            name: name.into(),
            trigger,
            epsilon_ms,
            created_ms: None,
        }
    }

    /// Every second from BASE, epsilon 2 s.
    fn every_second(name: &str) -> JobUnderTest {
        scheduled(name, "R/2026-11-23T10:00:00Z/PT1S", None, EPSILON)
    }

    fn dependent(name: &str, parents: &[&str]) -> JobUnderTest {
        JobUnderTest {
            name: name.into(),
            trigger: Trigger::Parents(parents.iter().map(|p| p.to_string()).collect()),
            epsilon_ms: EPSILON,
            created_ms: None,
        }
    }

    /// A successful run for `target` that started at `start` and took 10 ms.
    fn run(job: &str, target: Option<i64>, start: i64) -> Run {
        Run {
            job: job.into(),
            start_ms: start,
            target_ms: target,
            attempt: Some(0),
            pid: 0,
            end: Some(RunEnd {
                end_ms: start + 10,
                exit_code: 0,
            }),
        }
    }

    /// One run per target, each 50 ms late.
    fn on_time(job: &str) -> Vec<Run> {
        (0..10)
            .map(|k| run(job, Some(target(k)), target(k) + 50))
            .collect()
    }

    fn check_one(job: JobUnderTest, runs: Vec<Run>) -> Report {
        let history = History {
            jobs: vec![job],
            runs,
            acknowledged: vec![],
            read_ms: READ,
        };
        check(&history, PARAMS)
    }

    #[test]
    fn every_target_run_once_on_time_passes() {
        let report = check_one(every_second("a"), on_time("a"));
        let totals = &report.totals;
        assert_eq!(
            (totals.targets, totals.satisfied, totals.missed),
            (10, 10, 0)
        );
        assert_eq!((totals.duplicates, totals.stray), (0, 0));
        assert_eq!((totals.late_p50_ms, totals.late_max_ms), (50, 50));
        assert!(report.passed());
    }

    #[test]
    fn a_missed_target_fails() {
        let mut runs = on_time("a");
        runs.remove(3);
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.missed, 1);
        assert_eq!(report.jobs[0].missed_targets, vec![target(3)]);
        assert!(!report.passed());
    }

    #[test]
    fn a_duplicate_run_fails() {
        let mut runs = on_time("a");
        runs.push(run("a", Some(target(2)), target(2) + 300));
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.duplicates, 1);
        assert_eq!(report.totals.missed, 0);
        assert!(!report.passed());
    }

    #[test]
    fn a_late_start_inside_epsilon_is_satisfied_and_its_lateness_counted() {
        let mut runs = on_time("a");
        runs[4].start_ms = target(4) + EPSILON - 500;
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.satisfied, 10);
        assert_eq!(report.totals.late_max_ms, EPSILON - 500);
        assert_eq!(report.totals.late_p50_ms, 50);
        assert!(report.passed());
    }

    #[test]
    fn a_start_after_epsilon_is_missed() {
        let mut runs = on_time("a");
        runs[4].start_ms = target(4) + EPSILON + 1;
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.missed, 1);
        assert_eq!(report.jobs[0].missed_targets, vec![target(4)]);
        assert_eq!(report.totals.late_max_ms, EPSILON + 1);
        assert!(!report.passed());
    }

    #[test]
    fn a_start_exactly_at_epsilon_is_inside_the_window() {
        let mut runs = on_time("a");
        runs[4].start_ms = target(4) + EPSILON;
        assert!(check_one(every_second("a"), runs).passed());
    }

    #[test]
    fn a_stray_run_is_reported_but_does_not_fail() {
        let mut runs = on_time("a");
        // A manual run: its target is "now", no target of the schedule.
        runs.push(run("a", Some(target(5) + 123), target(5) + 130));
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.stray, 1);
        assert_eq!(report.totals.duplicates, 0);
        assert!(report.passed());
    }

    #[test]
    fn a_run_without_a_target_outside_every_window_is_stray() {
        // Every 10 s with epsilon 2 s: a start 5 s after a target is in no window.
        let job = scheduled("a", "R/2026-11-23T10:00:00Z/PT10S", None, EPSILON);
        let report = check_one(
            job,
            vec![run("a", None, BASE), run("a", None, BASE + 5_000)],
        );
        assert_eq!((report.totals.targets, report.totals.satisfied), (1, 1));
        assert_eq!(report.totals.stray, 1);
    }

    #[test]
    fn runs_without_a_target_are_matched_by_their_start() {
        let mut runs: Vec<Run> = (0..10).map(|k| run("a", None, target(k) + 100)).collect();
        let report = check_one(every_second("a"), runs.clone());
        assert_eq!(report.totals.satisfied, 10);
        assert!(report.passed());
        // A second run 200 ms after target 2 can only be target 2's (targets 0 and 1 have theirs).
        runs.push(run("a", None, target(2) + 200));
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.duplicates, 1);
        assert_eq!(report.totals.missed, 0);
    }

    #[test]
    fn a_late_run_without_a_target_fills_the_open_target_first() {
        let mut runs = on_time("a");
        // Target 3's run started 1.5 s late, after target 4's: it must not take target 4's slot.
        runs[3] = run("a", None, target(3) + 1_500);
        runs[4] = run("a", None, target(4) + 50);
        let report = check_one(every_second("a"), runs);
        assert_eq!((report.totals.missed, report.totals.duplicates), (0, 0));
    }

    #[test]
    fn failed_and_incomplete_runs_satisfy_nothing() {
        let mut runs = on_time("a");
        runs[1].end = Some(RunEnd {
            end_ms: target(1) + 60,
            exit_code: 1,
        });
        runs[2].end = None;
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.missed, 2);
        assert_eq!((report.totals.failed, report.totals.incomplete), (1, 1));
        assert!(!report.passed());
    }

    #[test]
    fn a_failed_attempt_then_a_successful_retry_is_no_duplicate() {
        let mut runs = on_time("a");
        runs[1].end = Some(RunEnd {
            end_ms: target(1) + 60,
            exit_code: 1,
        });
        let mut retry = run("a", Some(target(1)), target(1) + 500);
        retry.attempt = Some(1);
        runs.push(retry);
        let report = check_one(every_second("a"), runs);
        assert_eq!((report.totals.missed, report.totals.duplicates), (0, 0));
        assert_eq!(report.totals.failed, 1);
    }

    #[test]
    fn targets_after_the_horizon_are_not_judged() {
        let mut runs = on_time("a");
        runs.push(run("a", Some(target(11)), target(11) + 5));
        runs.push(run("a", None, target(12) + 5));
        let report = check_one(every_second("a"), runs);
        assert_eq!(report.totals.targets, 10);
        assert_eq!(report.totals.unchecked, 2);
        assert_eq!(report.totals.stray, 0);
    }

    #[test]
    fn no_target_before_the_job_was_created_is_owed() {
        let mut job = every_second("a");
        job.created_ms = Some(target(4) + 500);
        let runs: Vec<Run> = on_time("a").into_iter().skip(5).collect();
        let report = check_one(job, runs);
        assert_eq!(report.totals.targets, 5);
        assert!(report.passed());
    }

    #[test]
    fn a_runaway_schedule_is_truncated() {
        let params = Params {
            max_targets_per_job: 3,
            ..PARAMS
        };
        let history = History {
            jobs: vec![every_second("a")],
            read_ms: READ,
            ..History::default()
        };
        let report = check(&history, params);
        assert!(report.jobs[0].truncated);
        assert_eq!(report.totals.targets, 3);
    }

    #[test]
    fn a_child_starting_before_its_parent_fails() {
        let jobs = vec![every_second("p"), dependent("c", &["p"])];
        let mut runs = on_time("p");
        // Parent target 0 ends at BASE + 60; the child's first run starts before that.
        runs.push(run("c", Some(BASE + 40), BASE + 40));
        let history = History {
            jobs,
            runs,
            acknowledged: vec![],
            read_ms: READ,
        };
        let report = check(&history, PARAMS);
        assert_eq!(
            report.violations,
            vec![DependencyViolation {
                child: "c".into(),
                parent: "p".into(),
                child_start_ms: BASE + 40,
                child_run: 1,
                parent_successes: 0,
            }]
        );
        assert_eq!(report.totals.dependency_violations, 1);
        assert!(!report.passed());
    }

    #[test]
    fn a_child_runs_at_most_once_per_success_of_each_parent() {
        let jobs = vec![
            every_second("p1"),
            every_second("p2"),
            dependent("c", &["p1", "p2"]),
        ];
        let mut runs = on_time("p1");
        runs.extend(on_time("p2"));
        // One run after each pair of parent successes (parents end at target + 60)...
        runs.extend((0..10).map(|k| run("c", Some(target(k) + 70), target(k) + 80)));
        // ...and its retry (same target) is the same run.
        runs.push(run("c", Some(target(9) + 70), target(9) + 900));
        let history = History {
            jobs: jobs.clone(),
            runs: runs.clone(),
            acknowledged: vec![],
            read_ms: READ,
        };
        assert!(check(&history, PARAMS).passed());
        // An eleventh run with no eleventh parent success is a violation (once per parent).
        runs.push(run("c", Some(target(9) + 950), target(9) + 960));
        let history = History {
            jobs,
            runs,
            acknowledged: vec![],
            read_ms: READ,
        };
        let report = check(&history, PARAMS);
        assert_eq!(report.totals.dependency_violations, 2);
        assert_eq!(report.violations[0].child_run, 11);
    }

    #[test]
    fn one_extra_child_run_is_one_violation_not_a_cascade() {
        let jobs = vec![every_second("p"), dependent("c", &["p"])];
        let mut runs = on_time("p");
        runs.extend((0..10).map(|k| run("c", Some(target(k) + 70), target(k) + 80)));
        // An extra run between the parent's third and fourth successes.
        runs.push(run("c", Some(target(2) + 500), target(2) + 500));
        let history = History {
            jobs,
            runs,
            acknowledged: vec![],
            read_ms: READ,
        };
        let report = check(&history, PARAMS);
        assert_eq!(report.totals.dependency_violations, 1);
        assert_eq!(report.violations[0].child_start_ms, target(2) + 500);
        assert_eq!(report.violations[0].parent_successes, 3);
    }

    #[test]
    fn an_acknowledged_job_the_server_forgot_is_lost() {
        let history = History {
            jobs: vec![every_second("a")],
            runs: [on_time("a"), vec![run("gone", None, BASE)]].concat(),
            acknowledged: vec!["a".into(), "gone".into()],
            read_ms: READ,
        };
        let report = check(&history, PARAMS);
        assert_eq!(report.lost_jobs, vec!["gone".to_string()]);
        assert_eq!(report.totals.unknown_job_runs, 1);
        assert!(!report.passed());
    }

    /// A daily schedule in UTC: every day is 24 hours, so a run 24 h after the last is on time.
    fn daily(first_day: &str) -> JobUnderTest {
        let mut job = scheduled(
            "daily",
            &format!("R/{first_day}T02:30:00Z/P1D"),
            None,
            60_000,
        );
        job.created_ms = Some(ms(&format!("{first_day}T00:00:00Z")));
        job
    }

    fn check_days(job: JobUnderTest, runs: Vec<Run>, read: &str) -> Report {
        let history = History {
            jobs: vec![job],
            runs,
            acknowledged: vec![],
            read_ms: ms(read),
        };
        check(&history, PARAMS)
    }

    #[test]
    fn a_daily_utc_schedule_owes_one_run_a_day_at_its_time() {
        // Across Paris's spring-forward night: UTC has none, so nothing moves.
        let targets = [
            "2026-03-28T02:30:00Z",
            "2026-03-29T02:30:00Z",
            "2026-03-30T02:30:00Z",
        ];
        let runs = targets
            .iter()
            .map(|t| run("daily", None, ms(t) + 1_000))
            .collect();
        let report = check_days(daily("2026-03-28"), runs, "2026-03-30T12:00:00Z");
        assert_eq!(report.totals.targets, 3);
        assert!(report.passed(), "{report:?}");
        // A scheduler that moved the second day's run an hour early (as if it were Paris time)
        // misses that target, and its early run belongs to none.
        let shifted = vec![
            run("daily", None, ms(targets[0]) + 1_000),
            run("daily", None, ms(targets[1]) - 3_600_000),
            run("daily", None, ms(targets[2]) + 1_000),
        ];
        let report = check_days(daily("2026-03-28"), shifted, "2026-03-30T12:00:00Z");
        assert_eq!(report.jobs[0].missed_targets, vec![ms(targets[1])]);
        assert_eq!(report.totals.stray, 1);
        assert!(!report.passed());
    }

    #[test]
    fn a_schedule_the_oracle_cannot_compute_is_reported_unchecked_not_judged() {
        let zoned = scheduled(
            "paris",
            "R/2026-11-23T10:00:00/PT1S",
            Some("Europe/Paris"),
            EPSILON,
        );
        let cron = scheduled("cron", "* * * * * *", None, EPSILON);
        let history = History {
            jobs: vec![zoned, cron, every_second("a")],
            // Runs of the unchecked jobs at odd times: neither judged nor unknown.
            runs: [
                on_time("a"),
                vec![
                    run("paris", None, BASE + 123),
                    run("cron", None, BASE + 456),
                ],
            ]
            .concat(),
            acknowledged: vec![],
            read_ms: READ,
        };
        let report = check(&history, PARAMS);
        assert_eq!(report.totals.unchecked_jobs, 2);
        assert_eq!(report.totals.targets, 10, "only job a's targets");
        assert_eq!(
            (report.totals.stray, report.totals.unknown_job_runs),
            (0, 0)
        );
        let paris = &report.jobs[0];
        assert_eq!((paris.runs, paris.targets), (1, 0));
        let why = paris.unchecked_schedule.as_deref().unwrap();
        assert!(why.contains("Europe/Paris"), "{why}");
        assert!(report.jobs[1].unchecked_schedule.is_some());
        assert_eq!(report.jobs[2].unchecked_schedule, None);
        assert!(report.passed());
    }

    #[test]
    fn a_child_of_an_unchecked_parent_is_still_held_to_its_parents_successes() {
        let parent = scheduled("p", "* * * * * *", None, EPSILON);
        let history = History {
            jobs: vec![parent, dependent("c", &["p"])],
            runs: vec![run("p", None, BASE), run("c", None, BASE + 5)],
            acknowledged: vec![],
            read_ms: READ,
        };
        let report = check(&history, PARAMS);
        assert_eq!(report.totals.dependency_violations, 1);
        assert!(!report.passed());
    }
}
