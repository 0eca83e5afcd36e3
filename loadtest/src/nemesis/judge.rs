//! The judgement after the last heal, a quiet period and a final read. The schedule checker
//! (`checker`) judges every target from the recorded runs; this module then reads its verdict
//! against the fault timeline:
//!
//! - A missed target is excused only when its whole window `[t, t + epsilon]` fell while no
//!   server (no majority) could schedule, each outage counted until `RECOVERY_GRACE_MS` after
//!   its heal. Anything else is a miss: one agent down or cut off leaves two others.
//! - A target run twice is excused only where an agent was cut off (partitioned, or killed
//!   with its task left running) while one of the runs was in flight there, and the other run
//!   started after the cut: the server cannot know the first run's fate. Each is listed.
//! - Every acknowledged job must be listed at the end (else *lost*); a dependent job's runs
//!   must each follow a success of its parent (the checker's dependency rule).
//! - A `triggeredBy` job owes one run per acknowledged event, with the event's `at` as target.
//! - Recovery: for each server fault, the targets due while it held, from the later of the
//!   target and the heal (for a cluster's minority fault: the target) to their first run.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::faults::{FaultRecord, Impact};
use super::workload::Acked;
use crate::check::{format_ms, job_under_test};
use crate::checker::{self, History, Params, Run, Trigger};
use crate::recorder::Recorded;

/// After a server outage heals, scheduling may take this long to catch up before a target
/// whose window closed meanwhile counts as missed (the recovery target).
pub const RECOVERY_GRACE_MS: i64 = 5_000;

pub struct Input<'a> {
    pub listed: &'a [Value],
    pub recorded: Recorded,
    /// The working directory of each run, by (job, recording shell's pid).
    pub places: HashMap<(String, u32), String>,
    pub acked: &'a Acked,
    pub faults: &'a [FaultRecord],
    pub read_ms: i64,
    pub allowance_ms: i64,
    /// The servers' agent timeout: when a silent agent is declared lost.
    pub agent_timeout_ms: i64,
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub targets: u64,
    pub satisfied: u64,
    /// Unexcused misses: (job, target).
    pub missed: Vec<(String, i64)>,
    pub excused_missed: u64,
    /// Targets run twice or more, each with why it is excused (None: not).
    pub duplicates: Vec<(String, i64, Option<String>)>,
    pub lost_jobs: Vec<String>,
    pub dependency_violations: Vec<String>,
    pub max_recovery_ms: i64,
    /// Where `max_recovery_ms` was measured: the fault, the job and the target.
    pub slowest_recovery: Option<String>,
    pub runs: u64,
    pub unchecked_jobs: u64,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.missed.is_empty()
            && self.lost_jobs.is_empty()
            && self.dependency_violations.is_empty()
            && self
                .duplicates
                .iter()
                .all(|(_, _, excuse)| excuse.is_some())
    }

    pub fn excused_duplicates(&self) -> usize {
        self.duplicates.iter().filter(|d| d.2.is_some()).count()
    }

    pub fn json(&self, faults: usize) -> Value {
        json!({
            "faults": faults,
            "targets": self.targets,
            "satisfied": self.satisfied,
            "missed": self.missed.len(),
            "duplicates": self.duplicates.len(),
            "excused_duplicates": self.excused_duplicates(),
            "lost_jobs": self.lost_jobs.len(),
            "max_recovery_ms": self.max_recovery_ms,
            "excused_missed": self.excused_missed,
            "dependency_violations": self.dependency_violations.len(),
            "runs": self.runs,
            "unchecked_jobs": self.unchecked_jobs,
            "ok": self.passed(),
        })
    }

    /// One line per problem, and per excused duplicate.
    pub fn details(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (job, target) in &self.missed {
            lines.push(format!("missed: {job} target {}", format_ms(*target)));
        }
        for (job, target, excuse) in &self.duplicates {
            let why = excuse.as_deref().unwrap_or("NOT excused");
            lines.push(format!(
                "duplicate: {job} target {}: {why}",
                format_ms(*target)
            ));
        }
        lines.extend(self.lost_jobs.iter().map(|job| format!("lost: {job}")));
        lines.extend(self.dependency_violations.iter().cloned());
        if let Some(at) = &self.slowest_recovery {
            lines.push(format!(
                "slowest recovery: {} ms, {at}",
                self.max_recovery_ms
            ));
        }
        lines
    }
}

pub fn judge(input: Input) -> Verdict {
    let triggered: HashSet<&str> = input
        .listed
        .iter()
        .filter(|job| job["triggeredBy"].is_string())
        .filter_map(|job| job["name"].as_str())
        .collect();
    let history = history(&input, &triggered);
    let params = Params {
        allowance_ms: input.allowance_ms,
        listed_missed: usize::MAX,
        ..Params::default()
    };
    let report = checker::check(&history, params);
    let epsilons: HashMap<&str, i64> = history
        .jobs
        .iter()
        .map(|job| (job.name.as_str(), job.epsilon_ms))
        .collect();
    let outages = outages(input.faults);
    let mut verdict = Verdict {
        targets: report.totals.targets,
        satisfied: report.totals.satisfied,
        runs: input.recorded.runs.len() as u64,
        unchecked_jobs: report.totals.unchecked_jobs,
        ..Verdict::default()
    };
    let runs = runs_by_target(&input.recorded.runs);
    for job in &report.jobs {
        let epsilon = epsilons.get(job.name.as_str()).copied().unwrap_or_default();
        for &target in &job.missed_targets {
            if covered(&outages, target, target + epsilon) {
                verdict.excused_missed += 1;
            } else {
                verdict.missed.push((job.name.clone(), target));
            }
        }
        for &target in &job.duplicate_targets {
            let these = runs
                .get(&(job.name.as_str(), target))
                .cloned()
                .unwrap_or_default();
            let excuse = excuse(&input, &these);
            verdict.duplicates.push((job.name.clone(), target, excuse));
        }
    }
    judge_events(&input, &runs, &mut verdict);
    verdict.dependency_violations = report
        .violations
        .iter()
        .map(|v| {
            format!(
                "dependency: {} run {} started at {} after only {} success(es) of {}",
                v.child,
                v.child_run,
                format_ms(v.child_start_ms),
                v.parent_successes,
                v.parent
            )
        })
        .collect();
    verdict.lost_jobs = lost_jobs(&input);
    let (worst, at) = max_recovery(&input, &history, &runs);
    verdict.max_recovery_ms = worst;
    verdict.slowest_recovery = at;
    verdict
}

/// The checker's history: every listed job but the triggered ones (judged by their events)
/// and the waiting ones whose resource was never announced (nothing is owed).
fn history(input: &Input, triggered: &HashSet<&str>) -> History {
    let fallback = input.recorded.earliest_ms().unwrap_or(input.read_ms);
    let skipped =
        |name: &str| triggered.contains(name) || input.acked.unannounced.iter().any(|n| n == name);
    let jobs = input
        .listed
        .iter()
        .filter(|json| json["name"].as_str().is_some_and(|name| !skipped(name)))
        .filter_map(|json| {
            let name = json["name"].as_str().unwrap_or_default();
            let created = input
                .recorded
                .created
                .get(name)
                .copied()
                .unwrap_or(fallback);
            let mut job = job_under_test(json, created).ok().flatten()?;
            // A dependent job may use a parent success that ended just before it was
            // acknowledged: the server learns of an end later than it happens (much later
            // across a fault). The rule is the issue's: each run follows an unused success.
            if matches!(job.trigger, Trigger::Parents(_)) {
                job.created_ms = None;
            }
            Some(job)
        })
        .collect();
    History {
        jobs,
        runs: input.recorded.runs.clone(),
        // Lost jobs are judged here, against every listed job (the triggered ones too).
        acknowledged: Vec::new(),
        read_ms: input.read_ms,
    }
}

fn lost_jobs(input: &Input) -> Vec<String> {
    let listed: HashSet<&str> = input
        .listed
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    let mut lost: Vec<String> = input
        .recorded
        .created
        .keys()
        .filter(|name| !listed.contains(name.as_str()))
        .cloned()
        .collect();
    lost.sort();
    lost
}

/// The counted runs (exit 0) of each (job, target).
fn runs_by_target(runs: &[Run]) -> HashMap<(&str, i64), Vec<&Run>> {
    let mut by_target: HashMap<(&str, i64), Vec<&Run>> = HashMap::new();
    for run in runs {
        if let (Some(target), Some(end)) = (run.target_ms, run.end)
            && end.exit_code == 0
        {
            by_target
                .entry((run.job.as_str(), target))
                .or_default()
                .push(run);
        }
    }
    by_target
}

/// The periods no server (or no majority) could schedule, each extended by the grace.
fn outages(faults: &[FaultRecord]) -> Vec<(i64, i64)> {
    faults
        .iter()
        .filter(|f| f.impact == Impact::Service)
        .map(|f| (f.start_ms, f.heal_ms + RECOVERY_GRACE_MS))
        .collect()
}

/// Whether `[from, to]` lies inside one of the outages (they never overlap: one fault at a
/// time).
fn covered(outages: &[(i64, i64)], from: i64, to: i64) -> bool {
    outages
        .iter()
        .any(|&(start, end)| start <= from && to <= end)
}

/// Why two or more runs of one target are excused, if they are (see the module comment).
fn excuse(input: &Input, runs: &[&Run]) -> Option<String> {
    for first in runs {
        let place = input.places.get(&(first.job.clone(), first.pid));
        let Some(agent) = place.and_then(|place| super::cluster::agent_of(place)) else {
            continue;
        };
        let end = first.end.map_or(i64::MAX, |e| e.end_ms);
        for fault in input.faults {
            if fault.impact != Impact::Agent(agent) {
                continue;
            }
            let in_flight = first.start_ms <= fault.start_ms && end >= fault.start_ms;
            let others_after = runs
                .iter()
                .filter(|r| !std::ptr::eq(**r, *first))
                .all(|r| r.start_ms >= fault.start_ms);
            if in_flight && others_after {
                let lost_at = fault.start_ms + input.agent_timeout_ms;
                let how = if end >= lost_at {
                    "and kept running past the point it was declared lost"
                } else {
                    "and finished while cut off, before it was declared lost (its end never reached the server)"
                };
                return Some(format!(
                    "the first run was in flight on {} when its {} began at {}, {how}",
                    fault.target,
                    fault.kind.name(),
                    format_ms(fault.start_ms),
                ));
            }
        }
    }
    None
}

/// Each acknowledged event owes one run of its triggered job, with the event's `at` as target.
fn judge_events(input: &Input, runs: &HashMap<(&str, i64), Vec<&Run>>, verdict: &mut Verdict) {
    for (job, at) in &input.acked.events {
        // An event that came before its job was acknowledged may have found no job.
        if input
            .recorded
            .created
            .get(job)
            .is_none_or(|created| created >= at)
        {
            continue;
        }
        verdict.targets += 1;
        let these = runs.get(&(job.as_str(), *at)).cloned().unwrap_or_default();
        match these.len() {
            0 => verdict.missed.push((job.clone(), *at)),
            1 => verdict.satisfied += 1,
            _ => {
                verdict.satisfied += 1;
                let excuse = excuse(input, &these);
                verdict.duplicates.push((job.clone(), *at, excuse));
            }
        }
    }
}

/// The longest wait, after a server fault, for a target due while it held (see the module
/// comment), and where it was; 0 without such targets.
fn max_recovery(
    input: &Input,
    history: &History,
    runs: &HashMap<(&str, i64), Vec<&Run>>,
) -> (i64, Option<String>) {
    let mut worst = (0, None);
    for fault in input.faults {
        let from_heal = match fault.impact {
            Impact::Service => true,
            Impact::Minority => false,
            Impact::Agent(_) | Impact::Broker => continue,
        };
        for job in &history.jobs {
            let Trigger::Schedule(interval) = &job.trigger else {
                continue;
            };
            let (targets, _) = interval.targets_between(fault.start_ms, fault.heal_ms, 10_000);
            for target in targets {
                let first = runs
                    .get(&(job.name.as_str(), target))
                    .and_then(|r| r.iter().map(|r| r.start_ms).min());
                let Some(start) = first else {
                    continue;
                };
                let since = if from_heal {
                    target.max(fault.heal_ms)
                } else {
                    target
                };
                if start - since > worst.0 {
                    let at = format!(
                        "{} of {} at {}: {} target {}",
                        fault.kind.name(),
                        fault.target,
                        format_ms(fault.start_ms),
                        job.name,
                        format_ms(target)
                    );
                    worst = (start - since, Some(at));
                }
            }
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::RunEnd;
    use crate::nemesis::plan::FaultKind;

    /// 2026-11-23T10:00:00Z; the job fires every 60 s from there, epsilon 10 s.
    const BASE: i64 = 1_795_428_000_000;
    const READ: i64 = BASE + 300_000;

    fn job() -> Value {
        json!({"name": "j", "schedule": "R/2026-11-23T10:00:00Z/PT60S", "epsilon": "PT10S"})
    }

    fn run(target: i64, start: i64, pid: u32) -> Run {
        Run {
            job: "j".into(),
            start_ms: start,
            target_ms: Some(target),
            attempt: Some(0),
            pid,
            end: Some(RunEnd {
                end_ms: start + 5_000,
                exit_code: 0,
            }),
        }
    }

    fn fault(kind: FaultKind, impact: Impact, start: i64, heal: i64) -> FaultRecord {
        FaultRecord {
            kind,
            target: "x".into(),
            start_ms: start,
            heal_ms: heal,
            impact,
        }
    }

    fn verdict(runs: Vec<Run>, faults: &[FaultRecord]) -> Verdict {
        let listed = [job()];
        let acked = Acked::default();
        let mut recorded = Recorded {
            runs,
            ..Recorded::default()
        };
        recorded.created.insert("j".into(), BASE - 1_000);
        let places = (1..=9)
            .map(|pid| {
                (
                    ("j".to_string(), pid),
                    format!("/tmp/n/agent-{pid}/work/runs/1"),
                )
            })
            .collect();
        judge(Input {
            listed: &listed,
            recorded,
            places,
            acked: &acked,
            faults,
            read_ms: READ,
            allowance_ms: 1_000,
            agent_timeout_ms: 10_000,
        })
    }

    /// Targets 0..=4 (BASE + k minutes) each run once, 100 ms late, on agent 1.
    fn on_time() -> Vec<Run> {
        (0..5)
            .map(|k| run(BASE + k * 60_000, BASE + k * 60_000 + 100, 1))
            .collect()
    }

    #[test]
    fn a_miss_is_excused_only_inside_an_outage() {
        let mut runs = on_time();
        runs.remove(2);
        let target = BASE + 120_000;
        let outage = [fault(
            FaultKind::Pause,
            Impact::Service,
            target - 1_000,
            target + 9_000,
        )];
        let excused = verdict(runs.clone(), &outage);
        assert!(excused.missed.is_empty() && excused.passed());
        assert_eq!(excused.excused_missed, 1);
        // One agent down leaves the others: no excuse.
        let agent = [fault(
            FaultKind::AgentKill,
            Impact::Agent(1),
            target - 1_000,
            target + 60_000,
        )];
        assert_eq!(
            verdict(runs, &agent).missed,
            vec![("j".to_string(), target)]
        );
    }

    #[test]
    fn a_duplicate_is_excused_only_when_its_agent_was_cut_off_mid_run() {
        let target = BASE + 60_000;
        let mut runs = on_time();
        // A second run on agent 2, after agent 1 was cut while the first ran.
        runs.push(run(target, target + 12_000, 2));
        let cut = [fault(
            FaultKind::AgentPartition,
            Impact::Agent(1),
            target + 1_000,
            target + 40_000,
        )];
        let excused = verdict(runs.clone(), &cut);
        assert_eq!(excused.duplicates.len(), 1);
        assert!(excused.passed(), "{:?}", excused.details());
        // The same runs with the cut on the other agent: not excused.
        let elsewhere = [fault(
            FaultKind::AgentPartition,
            Impact::Agent(3),
            target + 1_000,
            target + 40_000,
        )];
        let unexcused = verdict(runs, &elsewhere);
        assert!(!unexcused.passed());
        assert_eq!(unexcused.excused_duplicates(), 0);
    }

    /// A child of `j`, acknowledged 100 ms after the parent's run (target BASE) ended, that ran
    /// once from `child_start`.
    fn dependency_verdict(child_start: i64) -> Verdict {
        let child = json!({"name": "c", "parents": ["j"], "epsilon": "PT10S"});
        let listed = [job(), child];
        let mut child_run = run(BASE + 5_200, child_start, 2);
        child_run.job = "c".into();
        let mut recorded = Recorded {
            runs: vec![run(BASE, BASE + 100, 1), child_run],
            ..Recorded::default()
        };
        recorded.created.insert("j".into(), BASE - 1_000);
        recorded.created.insert("c".into(), BASE + 5_200);
        let acked = Acked::default();
        judge(Input {
            listed: &listed,
            recorded,
            places: HashMap::new(),
            acked: &acked,
            faults: &[],
            read_ms: BASE + 30_000,
            allowance_ms: 1_000,
            agent_timeout_ms: 10_000,
        })
    }

    #[test]
    fn a_dependent_may_use_a_parent_success_that_ended_just_before_it_existed() {
        let verdict = dependency_verdict(BASE + 5_300);
        assert!(
            verdict.dependency_violations.is_empty(),
            "{:?}",
            verdict.details()
        );
        // Before the parent's success ended: a violation.
        assert_eq!(
            dependency_verdict(BASE + 2_000).dependency_violations.len(),
            1
        );
    }

    #[test]
    fn a_job_acknowledged_and_gone_is_lost() {
        let mut recorded = Recorded::default();
        recorded.created.insert("gone".into(), BASE);
        let acked = Acked::default();
        let verdict = judge(Input {
            listed: &[],
            recorded,
            places: HashMap::new(),
            acked: &acked,
            faults: &[],
            read_ms: READ,
            allowance_ms: 1_000,
            agent_timeout_ms: 10_000,
        });
        assert_eq!(verdict.lost_jobs, vec!["gone".to_string()]);
        assert!(!verdict.passed());
    }
}
