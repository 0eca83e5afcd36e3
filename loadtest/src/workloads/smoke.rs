//! `smoke`: the whole loop in one command. A few recorded jobs of every kind (ISO intervals in
//! UTC and in a zone, a cron schedule with seconds, a job that runs for a while, a dependent job)
//! run for a while, then the checker judges what they recorded. The zoned and cron jobs exercise
//! the server, but the checker does not compute their targets (its oracle is UTC intervals
//! only): it reports them as not checked. The child of the zoned job is still held to its
//! parent's successes.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all};
use crate::check::{self, CheckOptions};
use crate::iso8601::format_duration_ms;
use crate::recorder::recorded_command;

pub struct SmokeOptions {
    pub runs: PathBuf,
    pub seconds: u64,
    pub epsilon_ms: i64,
    pub allowance_ms: i64,
    /// Leave the jobs on the server afterwards (to look at them, or to check again later).
    pub keep: bool,
}

/// A zone whose offset is not UTC's, so a zoned interval is exercised.
const ZONE: Tz = chrono_tz::Europe::Paris;

pub async fn run(url: &str, options: SmokeOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let prefix = format!("lt-smoke-{}-", Utc::now().timestamp_millis());
    let dir = super::prepare_runs_dir(&options.runs)?;
    // Ahead of the creations, so every target falls after its job's acknowledgement.
    let start = super::start_soon(3);
    let spec = JobSet {
        prefix: &prefix,
        dir: &dir,
        start,
        epsilon: format_duration_ms(options.epsilon_ms),
    };
    let scheduled = spec.scheduled()?;
    let dependent = spec.dependent()?;
    // Parents first: the server refuses a dependent job whose parents do not exist.
    let mut acks = create_all(&client, url, &scheduled, 8).await?;
    acks.extend(create_all(&client, url, &dependent, 8).await?);
    super::record_acks(&dir, &acks)?;
    let names: Vec<String> = acks.into_iter().map(|ack| ack.name).collect();
    eprintln!(
        "smoke: {} jobs ({prefix}*) from {start}, running {} s, recording in {}",
        names.len(),
        options.seconds,
        dir.display()
    );
    let settle = Duration::from_millis((options.epsilon_ms + options.allowance_ms) as u64);
    super::sleep_until(start).await;
    tokio::time::sleep(Duration::from_secs(options.seconds) + settle).await;
    let check_options = CheckOptions {
        runs_dir: dir,
        jobs_prefix: Some(prefix),
        allowance_ms: options.allowance_ms,
        since_ms: None,
        jobs_file: None,
    };
    let checked = check::run(&client, url, &check_options).await;
    if !options.keep {
        delete_all(&client, url, &names, 8).await?;
    }
    let checked = checked?;
    let mut json = json!({"workload": "smoke", "seconds": options.seconds});
    super::merge(&mut json, checked.json);
    Ok(Outcome {
        json,
        passed: checked.passed,
    })
}

/// The smoke test's job definitions.
struct JobSet<'a> {
    prefix: &'a str,
    dir: &'a std::path::Path,
    start: DateTime<Utc>,
    epsilon: String,
}

impl JobSet<'_> {
    fn scheduled(&self) -> anyhow::Result<Vec<Value>> {
        let utc_start = self.start.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        Ok(vec![
            self.job("every-1s", "true", json!({"schedule": format!("R/{utc_start}/PT1S")}))?,
            self.job(
                "every-2s-paris",
                "true",
                json!({"schedule": format!("R/{}/PT2S", self.wall_clock(ZONE)), "scheduleTimeZone": ZONE.name()}),
            )?,
            // Six fields: seconds first. Its targets start at its acknowledgement.
            self.job(
                "cron-1s-new-york",
                "true",
                json!({"schedule": "* * * * * *", "scheduleTimeZone": "America/New_York"}),
            )?,
            // Runs take a second: the end line comes well after the start.
            self.job("sleepy-3s", "sleep 1", json!({"schedule": format!("R/{utc_start}/PT3S")}))?,
        ])
    }

    fn dependent(&self) -> anyhow::Result<Vec<Value>> {
        let parent = format!("{}every-2s-paris", self.prefix);
        Ok(vec![self.job(
            "child",
            "true",
            json!({"parents": [parent]}),
        )?])
    }

    fn job(&self, suffix: &str, inner: &str, trigger: Value) -> anyhow::Result<Value> {
        let name = format!("{}{suffix}", self.prefix);
        let mut job = json!({
            "name": name,
            "command": recorded_command(self.dir, &name, inner)?,
            "epsilon": self.epsilon,
            "owner": "dron-loadtest",
        });
        super::merge(&mut job, trigger);
        Ok(job)
    }

    /// The start as `zone`'s wall clock: with a zone given, a schedule's start is read as that
    /// zone's wall clock (any offset written is ignored, as in Chronos).
    fn wall_clock(&self, zone: Tz) -> String {
        self.start
            .with_timezone(&zone)
            .naive_local()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    }
}
