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
//! - Every acknowledged job must be listed at the end (else *lost*), with the last definition
//!   acknowledged for it or one sent later without an answer (else *stale*); a dependent
//!   job's runs must each follow a success of its parent (the checker's dependency rule).
//! - A `triggeredBy` job owes one run per acknowledged event, with the event's `at` as target.
//! - Recovery: for each server fault, the targets due while it held, from the later of the
//!   target and the heal (for a cluster's minority fault: the target) to their first run.
//! - A clock step: the server schedules by its own wall clock, so targets are judged in it
//!   (`ServerClock`): each run's start (and a job's creation) is read as the server's clock
//!   read it at that moment. A step forward skips the server's time in between: a window that
//!   lies wholly inside the skipped time is excused (no clock ever read it open), one that
//!   reaches past it is owed, unless the job's own run covered it: a job runs one instance at
//!   a time, and a run across the jump lasted, in the server's time, the jump longer than it
//!   really did, so the next target's window may lie inside it (or inside it and an outage
//!   after it), where the server rightly skips the target. A step back makes the server live
//!   those seconds again: each target still runs once (a second run is a duplicate), and none
//!   is owed again. An event announced while the server's clock was off is excused if
//!   missed: its `at` was judged against that clock (stepped forward past its epsilon, the
//!   server rightly skips it). Dependencies are judged in real time, where the runs' order is.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::faults::{FaultRecord, Impact};
use super::picture::{Mark, Outcome};
use super::workload::Acked;
use crate::check::{format_ms, job_under_test};
use crate::checker::{self, History, Params, Run, Trigger};
use crate::recorder::Recorded;

/// After a server outage heals, scheduling may take this long to catch up before a target
/// whose window closed meanwhile counts as missed (the recovery target).
pub const RECOVERY_GRACE_MS: i64 = 5_000;

/// A run recorded as starting up to this long after its agent was cut off (or after a step of
/// the server's clock began or healed) may have been launched before: the launch reached the
/// agent, its shell started a little later. (The 30-minute run saw two runs start 7 and 18 ms
/// after a cut began, then run again.)
const LAUNCHED_BEFORE_MS: i64 = 1_000;

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
    /// Jobs listed with a definition other than their last acknowledged one: one line each.
    pub stale_definitions: Vec<String>,
    pub dependency_violations: Vec<String>,
    pub max_recovery_ms: i64,
    /// Where `max_recovery_ms` was measured: the fault, the job and the target.
    pub slowest_recovery: Option<String>,
    pub runs: u64,
    pub unchecked_jobs: u64,
    /// Every judged target and what became of it (for the picture).
    pub marks: Vec<Mark>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.missed.is_empty()
            && self.lost_jobs.is_empty()
            && self.stale_definitions.is_empty()
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
            "stale_definitions": self.stale_definitions.len(),
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
        lines.extend(self.stale_definitions.iter().cloned());
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
    let clock = ServerClock::new(input.faults);
    let report = checker::check(&clock.history(&history), params);
    // Dependencies in real time (no step reorders the runs there).
    let violations = if clock.steps.is_empty() {
        report.violations.clone()
    } else {
        checker::check(&history, params).violations
    };
    let epsilons: HashMap<&str, i64> = history
        .jobs
        .iter()
        .map(|job| (job.name.as_str(), job.epsilon_ms))
        .collect();
    let outages = clock.outages(input.faults);
    let stretched = clock.stretched_runs(&history.runs);
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
        let mark = |target_ms, outcome| Mark {
            job: job.name.clone(),
            target_ms,
            epsilon_ms: epsilon,
            outcome,
        };
        for &target in &job.satisfied_targets {
            verdict.marks.push(mark(target, Outcome::Satisfied));
        }
        let mut busy = outages.clone();
        busy.extend(stretched.get(job.name.as_str()).into_iter().flatten());
        for &target in &job.missed_targets {
            if covered(&busy, target, target + epsilon) {
                verdict.excused_missed += 1;
                verdict.marks.push(mark(target, Outcome::Excused));
            } else {
                verdict.missed.push((job.name.clone(), target));
                verdict.marks.push(mark(target, Outcome::Missed));
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
    judge_events(&input, &runs, &clock, &mut verdict);
    verdict.dependency_violations = violations
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
    verdict.stale_definitions = stale_definitions(&input);
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

/// The acknowledged jobs listed with a definition they should not have (see `Definition`).
fn stale_definitions(input: &Input) -> Vec<String> {
    let mut stale = Vec::new();
    for name in &input.acked.jobs {
        let Some(listed) = input.listed.iter().find(|j| j["name"] == name.as_str()) else {
            continue; // lost, counted there
        };
        let definition = input
            .acked
            .definitions
            .get(name)
            .cloned()
            .unwrap_or_default();
        let allowed = definition.allowed_owners();
        let owner = listed["owner"].as_str().unwrap_or_default();
        if !allowed.iter().any(|a| a == owner) {
            stale.push(format!(
                "stale: {name} ends with owner '{owner}', expected {}",
                allowed.join(" or ")
            ));
        }
    }
    stale.sort();
    stale
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

/// The scheduling server's wall clock as the clock-step faults set it: real time plus each
/// step's offset while it held (one fault at a time, so steps never overlap).
struct ServerClock {
    /// (from, until, offset): real time in `[from, until)` read `offset` ms off.
    steps: Vec<(i64, i64, i64)>,
}

impl ServerClock {
    fn new(faults: &[FaultRecord]) -> ServerClock {
        let steps = faults
            .iter()
            .filter_map(|f| match f.impact {
                Impact::Clock(offset) => Some((f.start_ms, f.heal_ms, offset)),
                _ => None,
            })
            .collect();
        ServerClock { steps }
    }

    /// What the server's clock read at real time `real_ms`.
    fn read(&self, real_ms: i64) -> i64 {
        let step = self
            .steps
            .iter()
            .find(|&&(from, until, _)| from <= real_ms && real_ms < until);
        real_ms + step.map_or(0, |&(_, _, offset)| offset)
    }

    /// What the server's clock read when it launched a run whose shell started at real time
    /// `start_ms`. A step that began or healed just before the start may have come between
    /// the launch and the start (the launch reaches the agent, the shell starts a little
    /// later): then the reading before it is as likely, and of the two readings at or after
    /// the run's target the earlier is taken. (The cluster's 30-minute run: a run launched
    /// inside its window as a step back held, its shell started 74 ms after the heal.)
    fn read_start(&self, start_ms: i64, target_ms: Option<i64>) -> i64 {
        let now = self.read(start_ms);
        let launched = self.read(start_ms - LAUNCHED_BEFORE_MS) + LAUNCHED_BEFORE_MS;
        match target_ms {
            Some(target) if target <= launched && launched < now => launched,
            _ => now,
        }
    }

    /// Whether real time `real_ms` fell inside a step, or within the grace after it.
    fn stepped_at(&self, real_ms: i64) -> bool {
        self.steps
            .iter()
            .any(|&(from, until, _)| from <= real_ms && real_ms <= until + RECOVERY_GRACE_MS)
    }

    /// The history with every run's start and end, and every job's creation, as the server's
    /// clock read them.
    fn history(&self, history: &History) -> History {
        let mut history = history.clone();
        if self.steps.is_empty() {
            return history;
        }
        for run in &mut history.runs {
            run.start_ms = self.read_start(run.start_ms, run.target_ms);
            if let Some(end) = &mut run.end {
                end.end_ms = self.read(end.end_ms);
            }
        }
        for job in &mut history.jobs {
            job.created_ms = job.created_ms.map(|created| self.read(created));
        }
        history
    }

    /// The real times at which the server's clock jumped forward: a step forward, or the
    /// heal of a step back.
    fn jumps_forward(&self) -> impl Iterator<Item = i64> + '_ {
        self.steps
            .iter()
            .map(|&(from, until, offset)| if offset > 0 { from } else { until })
    }

    /// Each job's runs across which the server's clock jumped forward, as the server's clock
    /// read them (by job). A job runs one instance at a time: in the server's time such a run
    /// lasted the jump longer than it really did, and a next target whose window it covered
    /// could not start (the server rightly skips it past its epsilon; the workload's spacing
    /// keeps runs out of the next window only in real time).
    fn stretched_runs(&self, runs: &[Run]) -> HashMap<String, Vec<(i64, i64)>> {
        let mut stretched: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for run in runs {
            let Some(end) = run.end.map(|end| end.end_ms) else {
                continue;
            };
            if self.jumps_forward().any(|at| run.start_ms < at && at < end) {
                let period = (self.read(run.start_ms), self.read(end));
                stretched.entry(run.job.clone()).or_default().push(period);
            }
        }
        stretched
    }

    /// The periods, in the server's time, in which nothing was owed, each extended by the
    /// grace: those in which no server (or no majority) could schedule, and the time a step
    /// forward skipped.
    fn outages(&self, faults: &[FaultRecord]) -> Vec<(i64, i64)> {
        let mut outages: Vec<(i64, i64)> = faults
            .iter()
            .filter(|f| f.impact == Impact::Service)
            .map(|f| {
                (
                    self.read(f.start_ms),
                    self.read(f.heal_ms) + RECOVERY_GRACE_MS,
                )
            })
            .collect();
        for &(from, until, offset) in &self.steps {
            // Forward at the fault (offset > 0), or forward at its heal (offset < 0).
            let (at, by) = if offset > 0 {
                (from, offset)
            } else {
                (until + offset, -offset)
            };
            outages.push((at, at + by + RECOVERY_GRACE_MS));
        }
        outages
    }
}

/// Whether `[from, to]` lies inside the periods taken together.
fn covered(periods: &[(i64, i64)], from: i64, to: i64) -> bool {
    let mut sorted = periods.to_vec();
    sorted.sort_unstable();
    let mut reached = from;
    for (start, end) in sorted {
        if start > reached {
            break;
        }
        reached = reached.max(end);
    }
    reached >= to
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
            let in_flight =
                first.start_ms <= fault.start_ms + LAUNCHED_BEFORE_MS && end >= fault.start_ms;
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
fn judge_events(
    input: &Input,
    runs: &HashMap<(&str, i64), Vec<&Run>>,
    clock: &ServerClock,
    verdict: &mut Verdict,
) {
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
        let outcome = match these.len() {
            0 if clock.stepped_at(*at) => {
                verdict.excused_missed += 1;
                Outcome::Excused
            }
            0 => {
                verdict.missed.push((job.clone(), *at));
                Outcome::Missed
            }
            1 => {
                verdict.satisfied += 1;
                Outcome::Satisfied
            }
            _ => {
                verdict.satisfied += 1;
                let excuse = excuse(input, &these);
                verdict.duplicates.push((job.clone(), *at, excuse));
                Outcome::Satisfied
            }
        };
        verdict.marks.push(Mark {
            job: job.clone(),
            target_ms: *at,
            epsilon_ms: listed_epsilon_ms(input.listed, job),
            outcome,
        });
    }
}

/// A listed job's epsilon as the workload writes it (`PT<n>S`); 10 s if unreadable.
fn listed_epsilon_ms(listed: &[Value], name: &str) -> i64 {
    let epsilon = listed
        .iter()
        .find(|job| job["name"] == name)
        .and_then(|job| job["epsilon"].as_str());
    let seconds = epsilon
        .and_then(|e| e.strip_prefix("PT")?.strip_suffix('S')?.parse::<i64>().ok())
        .unwrap_or(10);
    seconds * 1000
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
            Impact::Agent(_) | Impact::Broker | Impact::Clock(_) => continue,
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
    use crate::nemesis::workload::{Definition, owner};

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
        // The first run's shell started just after the cut: launched before it, excused too.
        let just_after = [fault(
            FaultKind::AgentPartition,
            Impact::Agent(1),
            target + 100 - 20,
            target + 40_000,
        )];
        assert!(verdict(runs.clone(), &just_after).passed());
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

    /// The server's clock 30 s ahead from BASE + 50 s to BASE + 100 s (real): it jumps over
    /// the target at BASE + 60 s, runs the one at BASE + 120 s at real BASE + 90 s, and
    /// nothing twice when it steps back.
    #[test]
    fn a_clock_step_is_judged_in_the_servers_clock() {
        let minute = |k: i64| BASE + k * 60_000;
        let runs = vec![
            run(minute(0), minute(0) + 100, 1),
            run(minute(2), minute(2) - 30_000 + 100, 1),
            run(minute(3), minute(3) + 100, 1),
            run(minute(4), minute(4) + 100, 1),
        ];
        let step = [fault(
            FaultKind::ClockStep,
            Impact::Clock(30_000),
            BASE + 50_000,
            BASE + 100_000,
        )];
        let stepped = verdict(runs.clone(), &step);
        assert!(stepped.passed(), "{:?}", stepped.details());
        assert_eq!(stepped.excused_missed, 1, "the window the step jumped over");
        // Read in real time, the early run misses its window.
        let real = verdict(runs.clone(), &[]);
        let missed: Vec<i64> = real.missed.iter().map(|m| m.1).collect();
        assert_eq!(missed, vec![minute(1), minute(2)]);
        // A second run of BASE + 120 s when the server lived it again: a duplicate.
        let mut twice = runs;
        twice.push(run(minute(2), minute(2) + 100, 2));
        assert!(!verdict(twice, &step).passed());
    }

    /// The cluster's 30-minute run (`j426-s`): the leader's clock stepped back 30 s, the
    /// target came due in its clock just before the step healed, and the run's shell started
    /// 74 ms after the heal. Launched inside its window: on time. A start 1.5 s after the
    /// heal was launched after it, 30 s late: missed.
    #[test]
    fn a_run_launched_just_before_a_step_healed_is_read_in_the_steps_clock() {
        let minute = |k: i64| BASE + k * 60_000;
        let heal = minute(2) + 30_400;
        let step = [fault(
            FaultKind::ClockStep,
            Impact::Clock(-30_000),
            BASE + 70_000,
            heal,
        )];
        let runs = |late_start| {
            let mut runs = on_time();
            runs[2] = run(minute(2), late_start, 1);
            runs
        };
        let launched_before = verdict(runs(heal + 74), &step);
        assert!(launched_before.passed(), "{:?}", launched_before.details());
        let launched_after = verdict(runs(heal + 1_500), &step);
        assert_eq!(launched_after.missed, vec![("j".to_string(), minute(2))]);
    }

    /// Bug 9 (the 30-minute run's `j025-s`): the server's clock stepped forward 30 s while a
    /// run was in flight, and that run, in the server's time, covered the next target's whole
    /// window: the job runs one instance at a time, so the server skipped the target, rightly.
    /// Excused; the same miss without the step, or with the window outlasting the run, is not.
    #[test]
    fn a_target_whose_window_a_run_stretched_by_a_step_forward_covered_is_excused() {
        let minute = |k: i64| BASE + k * 60_000;
        let with_long_run = |end: i64| {
            let mut runs = on_time();
            runs.remove(2);
            runs[1].end = Some(RunEnd {
                end_ms: end,
                exit_code: 0,
            });
            runs
        };
        // Target 1's run from real 10:01:00.1; the clock 30 s ahead from 10:01:10 to 10:01:50.
        let step = [fault(
            FaultKind::ClockStep,
            Impact::Clock(30_000),
            minute(1) + 10_000,
            minute(1) + 50_000,
        )];
        // It ends at real 10:01:45, which the server's clock read 10:02:15: past the window of
        // target 2, [10:02:00, 10:02:10].
        let covered = verdict(with_long_run(minute(1) + 45_000), &step);
        assert!(covered.passed(), "{:?}", covered.details());
        assert_eq!(covered.excused_missed, 1, "target 2");
        // Ending at real 10:01:35 (10:02:05 to the server), the window was open after it.
        let short = verdict(with_long_run(minute(1) + 35_000), &step);
        assert_eq!(short.missed, vec![("j".to_string(), minute(2))]);
        // No step: a run that long is the workload's, not the clock's; the miss is not excused.
        let unstepped = verdict(with_long_run(minute(1) + 75_000), &[]);
        assert_eq!(unstepped.missed, vec![("j".to_string(), minute(2))]);
    }

    /// The judgement of `listed` and `recorded` with no fault and no run's place.
    fn judge_without_faults(listed: &[Value], recorded: Recorded, acked: &Acked) -> Verdict {
        judge(Input {
            listed,
            recorded,
            places: HashMap::new(),
            acked,
            faults: &[],
            read_ms: READ,
            allowance_ms: 1_000,
            agent_timeout_ms: 10_000,
        })
    }

    #[test]
    fn a_job_acknowledged_and_gone_is_lost() {
        let mut recorded = Recorded::default();
        recorded.created.insert("gone".into(), BASE);
        let verdict = judge_without_faults(&[], recorded, &Acked::default());
        assert_eq!(verdict.lost_jobs, vec!["gone".to_string()]);
        assert!(!verdict.passed());
    }

    #[test]
    fn a_job_must_end_with_its_last_acknowledged_definition() {
        let job = |name: &str, version: u32| json!({"name": name, "owner": owner(version)});
        let listed = [
            job("kept", 2),
            job("unsure", 3),
            job("reverted", 1),
            job("plain", 0),
        ];
        let mut acked = Acked {
            jobs: ["kept", "unsure", "reverted", "plain"]
                .map(String::from)
                .to_vec(),
            ..Acked::default()
        };
        let definition = |acked, unsure: &[u32]| Definition {
            acked,
            unsure: unsure.to_vec(),
        };
        for name in ["kept", "unsure", "reverted"] {
            let unsure = if name == "unsure" { &[3][..] } else { &[1][..] };
            acked.definitions.insert(name.into(), definition(2, unsure));
        }
        let verdict = judge_without_faults(&listed, Recorded::default(), &acked);
        // Version 1 was sent before the acknowledged 2: ending with it lost an update.
        let expected =
            "stale: reverted ends with owner 'v1@nemesis.example', expected v2@nemesis.example";
        assert_eq!(verdict.stale_definitions, vec![expected.to_string()]);
        assert!(!verdict.passed());
    }
}
