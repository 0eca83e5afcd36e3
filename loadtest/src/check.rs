//! `check`: reads the jobs from the server (or from a jobs file: a peer scheduler has no
//! Chronos API) and the runs from a runs directory, runs the checker, prints a human summary
//! and, as the last line, one JSON object.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::checker::{self, History, JobReport, JobUnderTest, Params, Report, Trigger};
use crate::iso8601::parse_duration_ms;
use crate::oracle::parse_schedule;
use crate::recorder::{self, Recorded};
use crate::workloads::{Outcome, list_jobs};

/// A job's epsilon when it names none: Chronos's default, `PT60S`.
pub const DEFAULT_EPSILON_MS: i64 = 60_000;

/// Job lines printed at most; the totals always cover every job.
const PRINTED_JOBS: usize = 20;

pub struct CheckOptions {
    pub runs_dir: PathBuf,
    /// Only jobs (and runs) whose name starts with this.
    pub jobs_prefix: Option<String>,
    pub allowance_ms: i64,
    /// Creation time for jobs without a `created` record.
    pub since_ms: Option<i64>,
    /// Read the jobs from this file (a JSON array of Chronos jobs) instead of the server.
    pub jobs_file: Option<PathBuf>,
}

/// What the checker is given, and what was set aside to build it.
#[derive(Debug)]
struct Input {
    history: History,
    disabled: Vec<String>,
    /// Jobs without a `created` record, judged from `--since` or the earliest recorded time.
    undated: usize,
    malformed: usize,
}

/// Checks the jobs the server lists now against the runs recorded so far, and prints the
/// summary; the caller prints the JSON.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    options: &CheckOptions,
) -> anyhow::Result<Outcome> {
    let listed = match &options.jobs_file {
        Some(path) => read_jobs_file(path)?,
        None => list_jobs(client, url).await?,
    };
    // Read the runs after the clock: every run that ended before `read_ms` is in the files.
    let read_ms = Utc::now().timestamp_millis();
    let recorded = recorder::read_runs_dir(&options.runs_dir)?;
    let input = build_input(&listed, recorded, read_ms, options)?;
    let params = Params {
        allowance_ms: options.allowance_ms,
        ..Params::default()
    };
    let report = checker::check(&input.history, params);
    print!("{}", summary(&report, &input, options));
    Ok(Outcome {
        json: report_json(&report, &input),
        passed: report.passed(),
    })
}

/// A jobs file: a JSON array of jobs in Chronos JSON, as `GET /scheduler/jobs` answers.
pub fn read_jobs_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read jobs file {}", path.display()))?;
    parse_jobs(&text).with_context(|| format!("jobs file {}", path.display()))
}

fn parse_jobs(text: &str) -> anyhow::Result<Vec<Value>> {
    let jobs: Vec<Value> = serde_json::from_str(text).context("not a JSON array")?;
    for job in &jobs {
        if !job.is_object() || !job["name"].is_string() {
            anyhow::bail!("not a job (an object with a name): {job}");
        }
    }
    Ok(jobs)
}

fn wanted(name: &str, prefix: Option<&str>) -> bool {
    prefix.is_none_or(|prefix| name.starts_with(prefix))
}

fn build_input(
    listed: &[Value],
    recorded: Recorded,
    read_ms: i64,
    options: &CheckOptions,
) -> anyhow::Result<Input> {
    let prefix = options.jobs_prefix.as_deref();
    let mut recorded = recorded;
    recorded.runs.retain(|run| wanted(&run.job, prefix));
    recorded.created.retain(|job, _| wanted(job, prefix));
    let fallback_ms = options
        .since_ms
        .or(recorded.earliest_ms())
        .unwrap_or(read_ms);
    let mut input = Input {
        history: History {
            read_ms,
            ..History::default()
        },
        disabled: Vec::new(),
        undated: 0,
        malformed: recorded.malformed,
    };
    for json in listed {
        let name = json["name"].as_str().unwrap_or_default();
        if !wanted(name, prefix) {
            continue;
        }
        let created = recorded.created.get(name).copied();
        match job_under_test(json, created.unwrap_or(fallback_ms))? {
            Some(job) => {
                input.undated += usize::from(created.is_none());
                input.history.jobs.push(job);
            }
            None => input.disabled.push(name.to_string()),
        }
    }
    // A disabled job's runs are neither owed nor unknown.
    recorded
        .runs
        .retain(|run| !input.disabled.contains(&run.job));
    input.history.acknowledged = recorded.created.into_keys().collect();
    input.history.runs = recorded.runs;
    Ok(input)
}

/// A job from its Chronos JSON; None when it is disabled (nothing is owed). A schedule the
/// oracle cannot compute makes an unchecked job, not an error: the other jobs are still judged.
pub fn job_under_test(json: &Value, created_ms: i64) -> anyhow::Result<Option<JobUnderTest>> {
    let name = json["name"].as_str().context("a job without a name")?;
    if json["disabled"].as_bool() == Some(true) {
        return Ok(None);
    }
    let epsilon_ms = match json["epsilon"].as_str().filter(|text| !text.is_empty()) {
        Some(text) => {
            parse_duration_ms(text).map_err(|error| anyhow!("job {name}: epsilon {error}"))?
        }
        None => DEFAULT_EPSILON_MS,
    };
    let schedule = json["schedule"]
        .as_str()
        .filter(|text| !text.trim().is_empty());
    let trigger = match schedule {
        Some(text) => match parse_schedule(text, json["scheduleTimeZone"].as_str()) {
            Ok(interval) => Trigger::Schedule(interval),
            Err(why) => Trigger::Unchecked(why),
        },
        None => Trigger::Parents(
            json["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|parent| parent.as_str().map(str::to_string))
                .collect(),
        ),
    };
    Ok(Some(JobUnderTest {
        name: name.to_string(),
        trigger,
        epsilon_ms,
        created_ms: Some(created_ms),
    }))
}

// ----- output -------------------------------------------------------------------------------

fn summary(report: &Report, input: &Input, options: &CheckOptions) -> String {
    let mut text = String::new();
    let read = format_ms(input.history.read_ms);
    let _ = writeln!(
        text,
        "checked {} jobs against the runs in {} (read at {read}; targets judged up to epsilon + {} ms before)",
        report.totals.jobs - report.totals.unchecked_jobs,
        options.runs_dir.display(),
        options.allowance_ms,
    );
    write_notes(&mut text, input);
    write_jobs(&mut text, &report.jobs);
    for violation in &report.violations {
        let _ = writeln!(
            text,
            "  dependency violated: {} run {} started at {} after only {} success(es) of {}",
            violation.child,
            violation.child_run,
            format_ms(violation.child_start_ms),
            violation.parent_successes,
            violation.parent,
        );
    }
    for job in &report.lost_jobs {
        let _ = writeln!(
            text,
            "  lost: {job} was acknowledged but the server no longer lists it"
        );
    }
    write_totals(&mut text, report);
    text
}

fn write_notes(text: &mut String, input: &Input) {
    if input.undated > 0 {
        let _ = writeln!(
            text,
            "  note: {} jobs have no created record; judged from --since or the earliest recorded time",
            input.undated
        );
    }
    if !input.disabled.is_empty() {
        let _ = writeln!(
            text,
            "  note: {} disabled jobs not judged",
            input.disabled.len()
        );
    }
    if input.malformed > 0 {
        let _ = writeln!(
            text,
            "  note: {} unreadable lines in the runs files",
            input.malformed
        );
    }
}

/// Every job when there are few, else those with something to report.
fn write_jobs(text: &mut String, jobs: &[JobReport]) {
    let notable = |job: &&JobReport| {
        jobs.len() <= PRINTED_JOBS
            || job.missed + job.duplicates + job.stray + job.failed + job.incomplete > 0
            || job.unchecked_schedule.is_some()
    };
    let shown: Vec<&JobReport> = jobs.iter().filter(notable).collect();
    for job in shown.iter().take(PRINTED_JOBS) {
        let _ = writeln!(text, "  {}", job_line(job));
    }
    if shown.len() > PRINTED_JOBS {
        let _ = writeln!(text, "  ... and {} more", shown.len() - PRINTED_JOBS);
    }
}

fn job_line(job: &JobReport) -> String {
    let mut line = if job.dependent {
        format!("{}: dependent, {} runs", job.name, job.runs)
    } else if let Some(why) = &job.unchecked_schedule {
        format!("{}: NOT CHECKED, {why}; {} runs", job.name, job.runs)
    } else {
        let late = &job.lateness_ms;
        format!(
            "{}: {} targets, {} satisfied, {} missed, {} duplicates, late p50 {} ms max {} ms",
            job.name,
            job.targets,
            job.satisfied,
            job.missed,
            job.duplicates,
            crate::stats::percentile(late, 0.5),
            late.last().copied().unwrap_or_default(),
        )
    };
    for (count, what) in [
        (job.stray, "stray"),
        (job.failed, "failed"),
        (job.incomplete, "incomplete"),
        (job.unchecked, "not judged yet"),
    ] {
        if count > 0 {
            let _ = write!(line, ", {count} {what}");
        }
    }
    if !job.missed_targets.is_empty() {
        let missed: Vec<String> = job.missed_targets.iter().map(|&t| format_ms(t)).collect();
        let _ = write!(line, "; missed {}", missed.join(" "));
    }
    if job.truncated {
        line.push_str(" (too many targets: only the first judged)");
    }
    line
}

fn write_totals(text: &mut String, report: &Report) {
    let totals = &report.totals;
    let _ = writeln!(
        text,
        "total: {} targets, {} satisfied, {} missed, {} duplicates, {} stray; late p50 {} ms, p99 {} ms, max {} ms",
        totals.targets,
        totals.satisfied,
        totals.missed,
        totals.duplicates,
        totals.stray,
        totals.late_p50_ms,
        totals.late_p99_ms,
        totals.late_max_ms,
    );
    if totals.unchecked_jobs > 0 {
        let _ = writeln!(
            text,
            "NOT CHECKED: {} of {} jobs have schedules the checker does not compute itself (cron, zones other than UTC, months or years); their targets were not judged",
            totals.unchecked_jobs, totals.jobs,
        );
    }
    let verdict = if report.passed() { "PASS" } else { "FAIL" };
    let _ = writeln!(
        text,
        "{verdict}: {} missed, {} duplicates, {} dependency violations, {} lost jobs, {} jobs not checked",
        totals.missed,
        totals.duplicates,
        totals.dependency_violations,
        totals.lost_jobs,
        totals.unchecked_jobs,
    );
}

fn report_json(report: &Report, input: &Input) -> Value {
    let totals = &report.totals;
    json!({
        "targets": totals.targets,
        "satisfied": totals.satisfied,
        "missed": totals.missed,
        "duplicates": totals.duplicates,
        "late_p50_ms": totals.late_p50_ms,
        "late_p99_ms": totals.late_p99_ms,
        "late_max_ms": totals.late_max_ms,
        "stray": totals.stray,
        "unchecked": totals.unchecked,
        "incomplete": totals.incomplete,
        "failed_runs": totals.failed,
        "dependency_violations": totals.dependency_violations,
        "lost_jobs": totals.lost_jobs,
        "unknown_job_runs": totals.unknown_job_runs,
        "checked_jobs": totals.jobs - totals.unchecked_jobs,
        "unchecked_jobs": totals.unchecked_jobs,
        "disabled_jobs": input.disabled.len(),
        "malformed_lines": input.malformed,
        "read_at": format_ms(input.history.read_ms),
        "ok": report.passed(),
    })
}

pub fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Run;
    use crate::oracle::{Interval, Unchecked};

    fn options(prefix: Option<&str>) -> CheckOptions {
        CheckOptions {
            runs_dir: PathBuf::from("/nonexistent"),
            jobs_prefix: prefix.map(str::to_string),
            allowance_ms: 1_000,
            since_ms: None,
            jobs_file: None,
        }
    }

    fn listed() -> Vec<Value> {
        vec![
            json!({"name": "lt-a", "schedule": "R/2026-11-23T10:00:00.000Z/PT1S",
                   "scheduleTimeZone": "UTC", "epsilon": "PT2S", "parents": []}),
            json!({"name": "lt-child", "parents": ["lt-a"], "epsilon": "PT60S"}),
            json!({"name": "lt-off", "schedule": "R/2026-11-23T10:00:00.000Z/PT1S",
                   "disabled": true}),
            json!({"name": "other", "schedule": "* * * * *", "scheduleTimeZone": "Europe/Paris"}),
        ]
    }

    fn recorded() -> Recorded {
        let run = |job: &str| Run {
            job: job.into(),
            start_ms: 1_795_428_000_100,
            target_ms: None,
            attempt: None,
            pid: 0,
            end: None,
        };
        Recorded {
            runs: vec![run("lt-a"), run("lt-off"), run("other")],
            created: [("lt-a".to_string(), 1_795_428_000_000)].into(),
            malformed: 0,
        }
    }

    #[test]
    fn builds_the_checker_input_from_chronos_json() {
        let read = 1_795_428_100_000;
        let input = build_input(&listed(), recorded(), read, &options(Some("lt-"))).unwrap();
        let jobs = &input.history.jobs;
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].epsilon_ms, 2_000);
        assert_eq!(jobs[0].created_ms, Some(1_795_428_000_000));
        assert!(matches!(jobs[0].trigger, Trigger::Schedule(_)));
        assert!(matches!(&jobs[1].trigger, Trigger::Parents(p) if p == &["lt-a".to_string()]));
        assert_eq!(input.disabled, vec!["lt-off".to_string()]);
        assert_eq!(input.undated, 1, "the child has no created record");
        // Only lt-a's run: lt-off is disabled and "other" lacks the prefix.
        assert_eq!(input.history.runs.len(), 1);
        assert_eq!(input.history.acknowledged, vec!["lt-a".to_string()]);
    }

    #[test]
    fn a_cron_job_in_a_zone_is_kept_but_unchecked() {
        let read = 1_795_428_100_000;
        let input = build_input(&listed(), recorded(), read, &options(None)).unwrap();
        assert_eq!(input.history.jobs.len(), 3);
        let Trigger::Unchecked(why) = &input.history.jobs[2].trigger else {
            panic!("an unchecked job: {:?}", input.history.jobs[2].trigger);
        };
        assert_eq!(why, &Unchecked::Zone("Europe/Paris".into()));
        assert_eq!(input.history.jobs[2].epsilon_ms, DEFAULT_EPSILON_MS);
        // Its run is neither judged nor unknown, and the summary says it was not checked.
        let report = checker::check(&input.history, Params::default());
        assert_eq!(report.totals.unchecked_jobs, 1);
        assert_eq!(report.totals.unknown_job_runs, 0);
        let text = summary(&report, &input, &options(None));
        assert!(
            text.contains("other: NOT CHECKED, time zone Europe/Paris"),
            "{text}"
        );
        assert!(text.contains("NOT CHECKED: 1 of 3 jobs"), "{text}");
        let json = report_json(&report, &input);
        assert_eq!(
            (
                json["unchecked_jobs"].as_u64(),
                json["checked_jobs"].as_u64()
            ),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn the_utc_interval_is_read_by_the_oracle() {
        let read = 1_795_428_100_000;
        let input = build_input(&listed(), recorded(), read, &options(Some("lt-a"))).unwrap();
        let Trigger::Schedule(interval) = &input.history.jobs[0].trigger else {
            panic!("a scheduled job");
        };
        assert_eq!(
            *interval,
            Interval {
                start_ms: 1_795_428_000_000,
                period_ms: 1_000,
                repetitions: None
            }
        );
    }

    #[test]
    fn a_jobs_file_is_a_chronos_array() {
        let text = serde_json::to_string(&listed()).unwrap();
        let jobs = parse_jobs(&text).unwrap();
        let input = build_input(&jobs, recorded(), 1_795_428_100_000, &options(None)).unwrap();
        assert_eq!(input.history.jobs.len(), 3);
        assert!(parse_jobs("{}").is_err(), "an object is not an array");
        assert!(
            parse_jobs(r#"[{"command": "true"}]"#).is_err(),
            "a job needs a name"
        );
        assert!(parse_jobs("[1]").is_err());
        assert!(parse_jobs("[]").unwrap().is_empty());
    }

    #[test]
    fn reads_a_jobs_file_from_disk() {
        let path = std::env::temp_dir().join(format!("dron-jobs-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_string(&listed()).unwrap()).unwrap();
        let jobs = read_jobs_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(jobs.len(), 4);
        assert!(read_jobs_file(&path).is_err(), "a missing file is an error");
    }

    #[test]
    fn a_bad_epsilon_names_its_job() {
        let bad = vec![json!({"name": "x", "schedule": "R//PT1S", "epsilon": "soon"})];
        let error = build_input(&bad, Recorded::default(), 0, &options(None)).unwrap_err();
        assert!(
            error.to_string().contains("job x: epsilon 'soon'"),
            "{error}"
        );
        let calendar = vec![json!({"name": "y", "schedule": "R//PT1S", "epsilon": "P1M"})];
        let error = build_input(&calendar, Recorded::default(), 0, &options(None)).unwrap_err();
        assert!(
            error.to_string().contains("job y: epsilon 'P1M'"),
            "{error}"
        );
    }
}
