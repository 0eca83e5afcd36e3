//! `highload`: Dron's high-load benchmark. Long-running periodic jobs (`sleep 600` every ten
//! minutes) are added `step` at a time every `step_secs`, up to `max_running` instances
//! running at once; the server's CPU and RSS are sampled as the load grows. With the built-in
//! task (`builtinSleepMs`) no process runs, so the full 150,000 fit; with real processes each
//! running instance costs a shim, a shell and a `sleep`, so memory caps how many.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all};
use crate::progress::Progress;
use crate::scrape::Scrape;
use crate::server::ProcessStats;

pub struct HighloadOptions {
    pub builtin: bool,
    pub step: usize,
    pub step_secs: u64,
    pub max_running: usize,
    /// How long each run lasts (and the schedule's period).
    pub run_secs: u64,
    pub server_pid: Option<u32>,
}

pub async fn run(url: &str, options: HighloadOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let prefix = format!("lt-high-{}-", chrono::Utc::now().timestamp_millis());
    let mut names: Vec<String> = Vec::new();
    let mut samples: Vec<Value> = Vec::new();
    let started = Instant::now();
    let mut progress = Progress::new("highload", options.max_running as u64);
    while names.len() < options.max_running {
        let count = options.step.min(options.max_running - names.len());
        names.extend(add_jobs(&client, url, &prefix, names.len(), count, &options).await?);
        let step_end = Instant::now() + Duration::from_secs(options.step_secs);
        while Instant::now() < step_end {
            tokio::time::sleep(Duration::from_secs(options.step_secs.clamp(1, 5))).await;
            let sample = sample(&client, url, names.len(), started, options.server_pid).await?;
            progress.set(sample["running"].as_u64().unwrap_or_default(), "running");
            samples.push(sample);
        }
    }
    // The last step's jobs fire within a second or two: sample until they all run (or give up
    // after half a minute, and report what ran).
    let settle_until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle_until {
        let sample = sample(&client, url, names.len(), started, options.server_pid).await?;
        let running = sample["running"].as_f64().unwrap_or_default();
        samples.push(sample);
        if running >= names.len() as f64 * 0.99 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    progress.finish();
    let peak = |key: &str| {
        samples
            .iter()
            .filter_map(|s| s[key].as_f64())
            .fold(0.0, f64::max)
    };
    let json = json!({
        "workload": "highload",
        "task": if options.builtin { "builtin" } else { "process" },
        "jobs": names.len(),
        "peak_running": peak("running"),
        "peak_server_rss_mb": peak("server_rss_mb"),
        "server_cpu_s": samples.last().map(|s| s["server_cpu_s"].clone()),
        "samples": samples,
    });
    let reached = json["peak_running"].as_f64().unwrap_or_default() >= names.len() as f64 * 0.99;
    delete_all(&client, url, &names, 64).await?;
    Ok(Outcome {
        json,
        passed: reached,
    })
}

async fn add_jobs(
    client: &reqwest::Client,
    url: &str,
    prefix: &str,
    from: usize,
    count: usize,
    options: &HighloadOptions,
) -> anyhow::Result<Vec<String>> {
    // A start in the past would wait a whole period: leave time to create them all (the
    // server creates thousands a second).
    let ahead = 2 + (count / 5_000) as i64;
    let start = super::start_soon(ahead).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let period = crate::iso8601::format_duration_ms(options.run_secs as i64 * 1000);
    let jobs: Vec<Value> = (from..from + count)
        .map(|i| {
            let mut job = json!({"name": format!("{prefix}{i}"),
                "schedule": format!("R/{start}/{period}"), "retries": 0});
            match options.builtin {
                true => job["builtinSleepMs"] = json!(options.run_secs * 1000),
                false => job["command"] = json!(format!("exec sleep {}", options.run_secs)),
            }
            job
        })
        .collect();
    let acks = create_all(client, url, &jobs, 64).await?;
    Ok(acks.into_iter().map(|ack| ack.name).collect())
}

/// Running instances (the shards' live-instance gauges) and the server's RSS and CPU.
async fn sample(
    client: &reqwest::Client,
    url: &str,
    jobs: usize,
    started: Instant,
    pid: Option<u32>,
) -> anyhow::Result<Value> {
    let scrape = Scrape::take(client, url).await?;
    let running = scrape.sum_of("dron_live_instances");
    let mut sample = json!({
        "t_s": started.elapsed().as_secs(), "jobs": jobs, "running": running,
    });
    if let Some(stats) = pid.and_then(ProcessStats::read) {
        super::merge(&mut sample, stats.json());
    }
    Ok(sample)
}
