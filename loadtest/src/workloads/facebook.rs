//! `facebook`: the load Dron was designed for. Long-running jobs keep `long_jobs` instances
//! live the whole time (one run each, `sleep` for the whole test), and minute-granularity jobs
//! bring new instances at `per_second` (jobs = per_second × 60, spread over the minute), all
//! real processes recorded in a runs directory; at the end the checker judges every target of
//! the minute jobs from what the runs recorded.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all, floor};
use crate::check::{self, CheckOptions};
use crate::progress::Progress;
use crate::recorder::recorded_command;
use crate::scrape::Scrape;
use crate::server::ProcessStats;

pub struct FacebookOptions {
    pub long_jobs: usize,
    pub per_second: usize,
    pub duration_secs: u64,
    pub runs: PathBuf,
    pub epsilon_ms: i64,
    pub allowance_ms: i64,
    pub server_pid: Option<u32>,
    /// Seconds spent first measuring the machine's own launch floor (`floor.rs`); 0 skips it.
    pub floor_secs: u64,
}

/// The load's jobs: the long-running ones and the minute ones (recorded in `dir`). The long
/// runs start at `start`; the minute jobs once those are all launched (a launch costs a few
/// milliseconds of process creation), so the steady state is what is measured. The peer runs
/// the same definitions.
pub struct Definitions {
    pub long: Vec<Value>,
    pub minute: Vec<Value>,
    pub minute_prefix: String,
}

pub fn definitions(
    prefix: &str,
    dir: &std::path::Path,
    start: chrono::DateTime<chrono::Utc>,
    options: &FacebookOptions,
) -> anyhow::Result<Definitions> {
    let start_text = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let start = minute_start(start, options);
    let epsilon = crate::iso8601::format_duration_ms(options.epsilon_ms);
    let long_secs = options.duration_secs + 120;
    let long: Vec<Value> = (0..options.long_jobs)
        .map(|i| {
            let name = format!("{prefix}long-{i}");
            let command = format!("exec sleep {long_secs}");
            json!({"name": name, "command": command, "schedule": format!("R1/{start_text}/P1D"),
                "epsilon": epsilon, "retries": 0})
        })
        .collect();
    let minute_prefix = format!("{prefix}min-");
    let minute_jobs = options.per_second * 60;
    let minute = (0..minute_jobs)
        .map(|i| {
            let name = format!("{minute_prefix}{i}");
            let offset_ms = (i as i64 * 60_000) / minute_jobs.max(1) as i64;
            let first = start + chrono::Duration::milliseconds(offset_ms);
            let schedule = format!(
                "R/{}/PT1M",
                first.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            let command = recorded_command(dir, &name, "true")?;
            anyhow::Ok(
                json!({"name": name, "command": command, "schedule": schedule,
                "epsilon": epsilon, "retries": 0}),
            )
        })
        .collect::<anyhow::Result<Vec<Value>>>()?;
    Ok(Definitions {
        long,
        minute,
        minute_prefix,
    })
}

/// When the minute jobs start: once the long runs have had time to launch.
pub fn minute_start(
    start: chrono::DateTime<chrono::Utc>,
    options: &FacebookOptions,
) -> chrono::DateTime<chrono::Utc> {
    start + chrono::Duration::seconds(2 + options.long_jobs as i64 / 300)
}

pub async fn run(url: &str, options: FacebookOptions) -> anyhow::Result<Outcome> {
    let floor = measure_floor(&options).await?;
    let client = super::http_client();
    let prefix = format!("lt-fb-{}-", chrono::Utc::now().timestamp_millis());
    let dir = super::prepare_runs_dir(&options.runs)?;
    let start = super::start_soon(5);
    let Definitions {
        long,
        minute,
        minute_prefix,
    } = definitions(&prefix, &dir, start, &options)?;
    let minute_jobs = minute.len();
    let mut acks = create_all(&client, url, &minute, 64).await?;
    super::record_acks(&dir, &acks)?;
    acks.extend(create_all(&client, url, &long, 64).await?);
    let names: Vec<String> = acks.into_iter().map(|ack| ack.name).collect();
    super::sleep_until(minute_start(start, &options)).await;
    let mut progress = Progress::new("facebook", options.duration_secs);
    let mut peak_live = 0.0f64;
    for second in (0..options.duration_secs).step_by(5) {
        tokio::time::sleep(Duration::from_secs(5.min(options.duration_secs - second))).await;
        let live = Scrape::take(&client, url)
            .await?
            .sum_of("dron_live_instances");
        peak_live = peak_live.max(live);
        progress.set(second + 5, &format!("{live} live instances"));
    }
    progress.finish();
    let stats = options.server_pid.and_then(ProcessStats::read);
    // Let the last judged windows close and their runs finish, then judge.
    tokio::time::sleep(Duration::from_millis(
        (options.epsilon_ms + options.allowance_ms) as u64,
    ))
    .await;
    let check_options = CheckOptions {
        runs_dir: dir,
        jobs_prefix: Some(minute_prefix),
        allowance_ms: options.allowance_ms,
        since_ms: None,
        jobs_file: None,
    };
    let checked = check::run(&client, url, &check_options).await?;
    delete_all(&client, url, &names, 64).await?;
    let mut json = json!({
        "workload": "facebook", "long_jobs": options.long_jobs,
        "minute_jobs": minute_jobs, "new_instances_per_s": options.per_second,
        "duration_s": options.duration_secs, "peak_live_instances": peak_live,
    });
    if let Some(stats) = stats {
        super::merge(&mut json, stats.json());
    }
    if let Some(floor) = floor {
        super::merge(&mut json, floor.json());
    }
    super::merge(&mut json, checked.json);
    Ok(Outcome {
        json,
        passed: checked.passed,
    })
}

/// Before any job exists: the lateness of commands started directly, with as many processes
/// alive as the long jobs will keep running, at the same rate as the minute jobs.
async fn measure_floor(options: &FacebookOptions) -> anyhow::Result<Option<floor::Floor>> {
    if options.floor_secs == 0 {
        return Ok(None);
    }
    let duration = Duration::from_secs(options.floor_secs);
    let floor =
        floor::bare_launch_lateness(options.long_jobs, options.per_second, duration).await?;
    eprintln!(
        "this machine's own floor: {} commands started directly beside {} idle processes, late p50 {} ms, p99 {} ms, max {} ms",
        floor.launches, floor.idle_processes, floor.p50_ms, floor.p99_ms, floor.max_ms
    );
    Ok(Some(floor))
}
