//! `fire`: jobs firing every second, counting completed runs per second. With `--runs`, each job
//! records its runs and the checker judges them at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all, successes};
use crate::check::{self, CheckOptions};
use crate::recorder::recorded_command;

pub struct FireOptions {
    pub jobs: usize,
    pub seconds: u64,
    /// Record runs here and check them at the end.
    pub runs: Option<PathBuf>,
    /// The jobs' epsilon; the server's default (60 s) when None.
    pub epsilon_ms: Option<i64>,
    pub allowance_ms: i64,
}

pub async fn run(url: &str, options: FireOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let run = chrono::Utc::now().timestamp_millis();
    let prefix = format!("lt-fire-{run}-");
    let names: Vec<String> = (0..options.jobs).map(|i| format!("{prefix}{i}")).collect();
    let runs_dir = options
        .runs
        .as_deref()
        .map(super::prepare_runs_dir)
        .transpose()?;
    let start = super::start_soon(2);
    let definitions = names
        .iter()
        .map(|name| definition(name, runs_dir.as_deref(), start, options.epsilon_ms))
        .collect::<anyhow::Result<Vec<Value>>>()?;
    let acks = create_all(&client, url, &definitions, 32).await?;
    if let Some(dir) = &runs_dir {
        super::record_acks(dir, &acks)?;
        super::sleep_until(start).await;
    }
    let before = successes(&client, url, &names).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let after = successes(&client, url, &names).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let rate = (after - before) as f64 / elapsed;
    let jobs = options.jobs;
    eprintln!("{jobs} PT1S jobs: {rate:.0} successful runs/s (offered {jobs}/s)");
    let mut json = json!({
        "workload": "fire", "jobs": jobs, "offered_per_s": jobs,
        "runs_per_s": rate.round(), "seconds": options.seconds,
    });
    let mut passed = true;
    if let Some(dir) = runs_dir {
        let epsilon = options
            .epsilon_ms
            .unwrap_or(crate::check::DEFAULT_EPSILON_MS);
        // Let the last judged targets' windows close and their runs finish.
        tokio::time::sleep(Duration::from_millis(
            (epsilon + options.allowance_ms) as u64,
        ))
        .await;
        let check_options = CheckOptions {
            runs_dir: dir,
            jobs_prefix: Some(prefix),
            allowance_ms: options.allowance_ms,
            since_ms: None,
            jobs_file: None,
        };
        let checked = check::run(&client, url, &check_options).await?;
        super::merge(&mut json, checked.json);
        passed = checked.passed;
    }
    delete_all(&client, url, &names, 32).await?;
    Ok(Outcome { json, passed })
}

fn definition(
    name: &str,
    runs_dir: Option<&std::path::Path>,
    start: chrono::DateTime<chrono::Utc>,
    epsilon_ms: Option<i64>,
) -> anyhow::Result<Value> {
    let Some(dir) = runs_dir else {
        // Without recording: exactly the original workload.
        return Ok(json!({"name": name, "command": "true", "schedule": "R//PT1S"}));
    };
    let mut job = json!({
        "name": name,
        "command": recorded_command(dir, name, "true")?,
        "schedule": format!("R/{}/PT1S", start.format("%Y-%m-%dT%H:%M:%SZ")),
    });
    if let Some(epsilon) = epsilon_ms {
        job["epsilon"] = crate::iso8601::format_duration_ms(epsilon).into();
    }
    Ok(job)
}
