//! `saturate`: Dron's scheduling-delay benchmark. Periodic jobs firing every `period` are added
//! `step` at a time, every `step_secs`, until the start delay (start − target) passes the limit
//! at p99 or targets go missing (skipped past epsilon); reports the highest rate held and the
//! delay percentiles at each step.
//!
//! Two task kinds: real processes (`true`, started through dron's task shim, as any job), and
//! the built-in task (`builtinSleepMs: 0`), which the agent completes without forking, so the
//! scheduler's own ceiling shows apart from fork/exec. With real processes the run also
//! measures this machine's bare fork/exec rate (`/bin/sh -c true`, two at a time), the limit
//! dron's rate is compared with. Delays come from the server's own lateness histogram (the
//! built-in task records nothing itself), read from `/metrics` at each step's start and end.
//!
//! Recorded (`--runs DIR`): each job's command is the recorder's (`recorded_command`, inner
//! `true`) and the delays come from the runs files (start − `DRON_TARGET` of every target in
//! the step's window), so the same figures can be taken from a peer scheduler that has no
//! `/metrics` (see `peer`); a target without a run by the time the files are read counts as
//! missing, and as late as it then is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all};
use crate::checker::Run;
use crate::progress::Progress;
use crate::recorder::{read_runs_dir, recorded_command};
use crate::scrape::Scrape;
use crate::server::ProcessStats;

#[derive(Clone)]
pub struct SaturateOptions {
    pub builtin: bool,
    /// Jobs per step (the first step too).
    pub step: usize,
    pub step_secs: u64,
    pub period_ms: u64,
    /// Stop after this many jobs even if the server keeps up.
    pub max_jobs: usize,
    /// The p99 start delay that ends the run.
    pub limit_ms: f64,
    pub epsilon_ms: i64,
    pub server_pid: Option<u32>,
    /// Record the runs here and measure from the runs files.
    pub runs: Option<PathBuf>,
    /// Delete the jobs at the end (not worth it on a server thrown away after the run).
    pub delete_jobs: bool,
}

pub(crate) struct Step {
    pub(crate) jobs: usize,
    pub(crate) offered_per_s: f64,
    pub(crate) started_per_s: f64,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    skipped: f64,
    /// Recorded: the targets judged in the window (each either started or missing, so the
    /// started rate is not compared with the offered one: a new job's first target may fall
    /// after the window's start).
    window_targets: Option<usize>,
}

impl Step {
    pub(crate) fn held(&self, limit_ms: f64) -> bool {
        self.skipped == 0.0
            && self.p99_ms.is_some_and(|p99| p99 <= limit_ms)
            && (self.window_targets.is_some() || self.started_per_s >= 0.9 * self.offered_per_s)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "jobs": self.jobs, "offered_per_s": self.offered_per_s.round(),
            "started_per_s": self.started_per_s.round(),
            "mean_ms": self.mean_ms.map(|m| (m * 10.0).round() / 10.0), "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "skipped": self.skipped,
            "window_targets": self.window_targets,
        })
    }
}

pub async fn run(url: &str, options: SaturateOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    if options.runs.is_some() {
        let mut sink = DronSink {
            client: &client,
            url,
            names: Vec::new(),
        };
        let mut outcome = run_recorded(&mut sink, &options).await?;
        let stats = options.server_pid.and_then(ProcessStats::read);
        if options.delete_jobs {
            delete_all(&client, url, &sink.names, 64).await?;
        }
        if let Some(stats) = stats {
            super::merge(&mut outcome.json, stats.json());
        }
        return Ok(outcome);
    }
    let prefix = format!("lt-sat-{}-", chrono::Utc::now().timestamp_millis());
    let fork_rate = match options.builtin {
        true => None,
        false => Some(bare_fork_exec_rate(Duration::from_secs(3)).await?),
    };
    let mut names: Vec<String> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut progress = Progress::new("saturate", options.max_jobs as u64);
    while names.len() < options.max_jobs {
        let added = add_jobs(&client, url, &prefix, names.len(), &options).await?;
        names.extend(added);
        progress.set(names.len() as u64, "jobs");
        // Let the new jobs' first targets come round before measuring.
        tokio::time::sleep(Duration::from_millis(options.period_ms)).await;
        let step = measure(&client, url, names.len(), &options).await?;
        let held = step.held(options.limit_ms);
        progress.note(&format!(
            "{} jobs: offered {:.0}/s, started {:.0}/s, p99 {} ms{}",
            step.jobs,
            step.offered_per_s,
            step.started_per_s,
            step.p99_ms.map_or("-".into(), |p| format!("{p:.0}")),
            if held { "" } else { " (not held)" }
        ));
        steps.push(step);
        if !held {
            break;
        }
    }
    progress.finish();
    let stats = options.server_pid.and_then(ProcessStats::read);
    if options.delete_jobs {
        delete_all(&client, url, &names, 64).await?;
    }
    let best = steps.iter().rfind(|s| s.held(options.limit_ms));
    let mut json = json!({
        "workload": "saturate",
        "task": if options.builtin { "builtin" } else { "process" },
        "period_ms": options.period_ms,
        "limit_ms": options.limit_ms,
        "held_per_s": best.map(|s| s.offered_per_s.round()),
        "held_p99_ms": best.and_then(|s| s.p99_ms),
        "bare_fork_exec_per_s": fork_rate.map(f64::round),
        "steps": steps.iter().map(Step::json).collect::<Vec<_>>(),
    });
    if let (Some(best), Some(fork)) = (best, fork_rate) {
        json["share_of_fork_exec"] = json!((best.offered_per_s / fork * 100.0).round() / 100.0);
    }
    if let Some(stats) = stats {
        super::merge(&mut json, stats.json());
    }
    Ok(Outcome {
        json,
        passed: !steps.is_empty(),
    })
}

/// Where the recorded variant's jobs go: a dron server, or a peer scheduler.
pub(crate) trait JobSink {
    async fn add(&mut self, jobs: Vec<Value>) -> anyhow::Result<()>;
}

struct DronSink<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    names: Vec<String>,
}

impl JobSink for DronSink<'_> {
    async fn add(&mut self, jobs: Vec<Value>) -> anyhow::Result<()> {
        let acks = create_all(self.client, self.url, &jobs, 64).await?;
        self.names.extend(acks.into_iter().map(|ack| ack.name));
        Ok(())
    }
}

/// The recorded variant: the jobs run the recorder's command, and each step's delays are read
/// from the runs files. Answers the report (the caller adds process figures and cleans up).
pub(crate) async fn run_recorded(
    sink: &mut impl JobSink,
    options: &SaturateOptions,
) -> anyhow::Result<Outcome> {
    let Some(runs) = &options.runs else {
        anyhow::bail!("the recorded saturate needs a runs directory");
    };
    let dir = super::prepare_runs_dir(runs)?;
    let prefix = format!("lt-sat-{}-", chrono::Utc::now().timestamp_millis());
    let fork_rate = bare_fork_exec_rate(Duration::from_secs(3)).await?;
    let period = options.period_ms as i64;
    let mut jobs: Vec<JobTargets> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut progress = Progress::new("saturate", options.max_jobs as u64);
    while jobs.len() < options.max_jobs {
        let (values, added) = recorded_jobs(&dir, &prefix, jobs.len(), options)?;
        sink.add(values).await?;
        jobs.extend(added);
        progress.set(jobs.len() as u64, "jobs");
        // Let the new jobs' first targets come round, then measure a window of targets.
        tokio::time::sleep(Duration::from_millis(options.period_ms)).await;
        let from_ms = chrono::Utc::now().timestamp_millis();
        tokio::time::sleep(Duration::from_secs(options.step_secs)).await;
        let to_ms = chrono::Utc::now().timestamp_millis();
        // Give the window's last targets the limit (and a little) to start before judging them.
        tokio::time::sleep(Duration::from_millis(options.limit_ms as u64 + 500)).await;
        let read_ms = chrono::Utc::now().timestamp_millis();
        let recorded = read_runs_dir(&dir)?;
        let window = Window {
            from_ms,
            to_ms,
            read_ms,
            period_ms: period,
        };
        let figures = measure_runs(&jobs, window, &recorded.runs);
        let step = figures.step(jobs.len(), window);
        let held = step.held(options.limit_ms);
        progress.note(&format!(
            "{} jobs: offered {:.0}/s, started {:.0}/s, p99 {} ms, {} missing{}",
            step.jobs,
            step.offered_per_s,
            step.started_per_s,
            step.p99_ms.map_or("-".into(), |p| format!("{p:.0}")),
            step.skipped,
            if held { "" } else { " (not held)" }
        ));
        steps.push(step);
        if !held {
            break;
        }
    }
    progress.finish();
    let best = steps.iter().rfind(|s| s.held(options.limit_ms));
    let mut json = json!({
        "workload": "saturate",
        "task": "process",
        "measured_from": "runs files",
        "period_ms": options.period_ms,
        "limit_ms": options.limit_ms,
        "held_per_s": best.map(|s| s.offered_per_s.round()),
        "held_p99_ms": best.and_then(|s| s.p99_ms),
        "bare_fork_exec_per_s": fork_rate.round(),
        "steps": steps.iter().map(Step::json).collect::<Vec<_>>(),
    });
    if let Some(best) = best {
        json["share_of_fork_exec"] =
            json!((best.offered_per_s / fork_rate * 100.0).round() / 100.0);
    }
    Ok(Outcome {
        json,
        passed: !steps.is_empty(),
    })
}

/// A job's name and first target (Unix ms).
type JobTargets = (String, i64);

/// The next `step` recorded jobs (Chronos JSON) and their (name, first target) pairs; the
/// targets are scattered over the period starting a period from now, as in the plain variant.
fn recorded_jobs(
    dir: &Path,
    prefix: &str,
    from: usize,
    options: &SaturateOptions,
) -> anyhow::Result<(Vec<Value>, Vec<JobTargets>)> {
    let period = options.period_ms as i64;
    let base = chrono::Utc::now().timestamp_millis() / 1000 * 1000 + period;
    let epsilon = crate::iso8601::format_duration_ms(options.epsilon_ms);
    let schedule_period = crate::iso8601::format_duration_ms(period);
    let mut values = Vec::with_capacity(options.step);
    let mut added = Vec::with_capacity(options.step);
    for i in from..from + options.step {
        let name = format!("{prefix}{i}");
        let start_ms = base + (i as i64 * 7919) % period;
        let start = chrono::DateTime::from_timestamp_millis(start_ms).expect("in range");
        let schedule = format!(
            "R/{}/{schedule_period}",
            start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        values.push(
            json!({"name": name, "schedule": schedule, "epsilon": epsilon,
            "retries": 0, "command": recorded_command(dir, &name, "true")?}),
        );
        added.push((name, start_ms));
    }
    Ok((values, added))
}

/// The targets judged in one step: those in `[from_ms, to_ms)`, read at `read_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
    pub read_ms: i64,
    pub period_ms: i64,
}

/// One window's figures from the runs files.
#[derive(Debug, Default, PartialEq)]
pub struct RunFigures {
    pub targets: usize,
    /// Targets with a recorded start.
    pub started: usize,
    /// Start − target of every target, sorted; a target without a run counts as late as it was
    /// when the files were read.
    pub lateness_ms: Vec<i64>,
}

impl RunFigures {
    fn step(&self, jobs: usize, window: Window) -> Step {
        let seconds = (window.to_ms - window.from_ms).max(1) as f64 / 1000.0;
        let late = &self.lateness_ms;
        let quantile = |q| (!late.is_empty()).then(|| crate::stats::percentile(late, q) as f64);
        Step {
            jobs,
            offered_per_s: jobs as f64 * 1000.0 / window.period_ms as f64,
            started_per_s: self.started as f64 / seconds,
            mean_ms: (!late.is_empty())
                .then(|| late.iter().sum::<i64>() as f64 / late.len() as f64),
            p50_ms: quantile(0.50),
            p99_ms: quantile(0.99),
            skipped: (self.targets - self.started) as f64,
            window_targets: Some(self.targets),
        }
    }
}

/// Every target of `jobs` (name, first target; one every `period_ms`) inside the window, matched
/// with the earliest recorded start that names it (its `DRON_TARGET`). Pure.
pub fn measure_runs(jobs: &[JobTargets], window: Window, runs: &[Run]) -> RunFigures {
    let mut starts: HashMap<(&str, i64), i64> = HashMap::new();
    for run in runs {
        if let Some(target) = run.target_ms {
            let start = starts
                .entry((run.job.as_str(), target))
                .or_insert(run.start_ms);
            *start = (*start).min(run.start_ms);
        }
    }
    let mut figures = RunFigures::default();
    for (name, first) in jobs {
        // The first target at or after the window's start.
        let skip = (window.from_ms - first).max(0);
        let mut target =
            first + (skip + window.period_ms - 1) / window.period_ms * window.period_ms;
        while target < window.to_ms {
            figures.targets += 1;
            match starts.get(&(name.as_str(), target)) {
                Some(start) => {
                    figures.started += 1;
                    figures.lateness_ms.push(start - target);
                }
                None => figures.lateness_ms.push(window.read_ms - target),
            }
            target += window.period_ms;
        }
    }
    figures.lateness_ms.sort_unstable();
    figures
}

pub(crate) async fn add_jobs(
    client: &reqwest::Client,
    url: &str,
    prefix: &str,
    from: usize,
    options: &SaturateOptions,
) -> anyhow::Result<Vec<String>> {
    let jobs = job_bodies(prefix, from, options);
    let acks = create_all(client, url, &jobs, 64).await?;
    Ok(acks.into_iter().map(|ack| ack.name).collect())
}

/// Jobs `from..from + options.step` of a saturate run, to create: their first targets a
/// period from now, and no end.
pub(crate) fn job_bodies(prefix: &str, from: usize, options: &SaturateOptions) -> Vec<Value> {
    let period = options.period_ms as i64;
    let base = chrono::Utc::now().timestamp_millis() / 1000 * 1000 + period;
    periodic_job_bodies(prefix, from..from + options.step, options, base, None)
}

/// Periodic jobs numbered `numbers`, every `options.period_ms` from `base_ms` (each shifted
/// by a fixed scatter within the period, so their targets do not clump), for `repetitions`
/// targets (without end if `None`).
pub(crate) fn periodic_job_bodies(
    prefix: &str,
    numbers: std::ops::Range<usize>,
    options: &SaturateOptions,
    base_ms: i64,
    repetitions: Option<u64>,
) -> Vec<Value> {
    let period = options.period_ms as i64;
    let epsilon = crate::iso8601::format_duration_ms(options.epsilon_ms);
    let schedule_period = crate::iso8601::format_duration_ms(period);
    let repeat = repetitions.map_or(String::new(), |n| n.to_string());
    numbers
        .map(|i| {
            let offset = (i as i64 * 7919) % period;
            let start =
                chrono::DateTime::from_timestamp_millis(base_ms + offset).expect("in range");
            let schedule = format!(
                "R{repeat}/{}/{schedule_period}",
                start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            let mut job = json!({"name": format!("{prefix}{i}"), "schedule": schedule,
                "epsilon": epsilon, "retries": 0});
            match options.builtin {
                true => job["builtinSleepMs"] = json!(0),
                false => job["command"] = json!("true"),
            }
            job
        })
        .collect()
}

/// One step's figures, between two scrapes `step_secs` apart (plus the exporter's upkeep).
pub(crate) async fn measure(
    client: &reqwest::Client,
    url: &str,
    jobs: usize,
    options: &SaturateOptions,
) -> anyhow::Result<Step> {
    let before = Scrape::take(client, url).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.step_secs)).await;
    let after = Scrape::take(client, url).await?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Step {
        jobs,
        offered_per_s: jobs as f64 * 1000.0 / options.period_ms as f64,
        started_per_s: after.since(&before, "dron_launches_total") / elapsed,
        mean_ms: after.lateness_mean_ms(&before),
        p50_ms: after.lateness_quantile_ms(&before, 0.50),
        p99_ms: after.lateness_quantile_ms(&before, 0.99),
        skipped: after.since(&before, "dron_skipped_targets_total"),
        window_targets: None,
    })
}

/// How many `/bin/sh -c true` this machine starts and reaps per second, two at a time (one per
/// core): the ceiling for any scheduler that runs each target as a process.
pub async fn bare_fork_exec_rate(duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        workers.spawn(async move {
            let mut count = 0u64;
            while started.elapsed() < duration {
                tokio::process::Command::new("/bin/sh")
                    .args(["-c", "true"])
                    .status()
                    .await?;
                count += 1;
            }
            anyhow::Ok(count)
        });
    }
    let mut total = 0;
    while let Some(count) = workers.join_next().await {
        total += count??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, target_ms: i64, start_ms: i64) -> Run {
        Run {
            job: job.into(),
            start_ms,
            target_ms: Some(target_ms),
            attempt: Some(0),
            pid: 0,
            end: None,
        }
    }

    #[test]
    fn measures_every_target_in_the_window_from_the_runs() {
        let jobs = vec![("a".to_string(), 1_000), ("b".to_string(), 6_000)];
        // a: targets 1000, 11000, 21000, ...; b: 6000, 16000, 26000, ...
        let window = Window {
            from_ms: 10_000,
            to_ms: 30_000,
            read_ms: 32_000,
            period_ms: 10_000,
        };
        let runs = vec![
            run("a", 1_000, 1_005),   // before the window
            run("a", 11_000, 11_020), // 20 ms late
            run("a", 11_000, 11_010), // a duplicate: the earliest start counts
            run("a", 21_000, 21_300),
            run("b", 16_000, 16_040),
            // b's 26000 never ran: 6000 ms late when read.
            run("c", 16_000, 16_000), // not a job of this run
        ];
        let figures = measure_runs(&jobs, window, &runs);
        assert_eq!(figures.targets, 4);
        assert_eq!(figures.started, 3);
        assert_eq!(figures.lateness_ms, vec![10, 40, 300, 6_000]);
        let step = figures.step(2, window);
        assert_eq!(step.offered_per_s, 0.2);
        assert_eq!(step.skipped, 1.0);
        assert!(!step.held(1_000.0), "a missing target is not held");
    }

    #[test]
    fn a_target_on_the_window_edges_belongs_to_the_start_only() {
        let jobs = vec![("a".to_string(), 0)];
        let window = Window {
            from_ms: 10_000,
            to_ms: 20_000,
            read_ms: 21_000,
            period_ms: 10_000,
        };
        let runs = vec![run("a", 10_000, 10_001), run("a", 20_000, 20_001)];
        let figures = measure_runs(&jobs, window, &runs);
        assert_eq!(figures.lateness_ms, vec![1]);
        let step = figures.step(1, window);
        assert!(step.held(1_000.0));
        let empty = measure_runs(&jobs, window, &[]);
        assert!(!empty.step(1, window).held(1_000.0));
    }
}
