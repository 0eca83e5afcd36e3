//! `million`: a million jobs on one server. Creates them (daily schedules far in the future,
//! so nothing fires), then reports the creation rate, the server's RSS per job, the data
//! directory's size, the time and server memory `GET /scheduler/jobs` takes to list them all,
//! and, after a kill -9 and restart, the time to `/health` = 200 and to the first on-time fire
//! of a probe job that fires every second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Outcome, create_all};
use crate::progress::Progress;
use crate::server::{ManagedServer, ProcessStats, dir_size};

pub struct MillionOptions {
    pub jobs: usize,
    pub concurrency: usize,
}

const PROBE: &str = "lt-million-probe";

pub async fn run(server: &mut ManagedServer, options: MillionOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let url = server.url();
    let pid = server.pid().unwrap_or_default();
    let baseline = ProcessStats::read(pid).unwrap_or_default();
    let mut progress = Progress::new("million", options.jobs as u64);
    let started = Instant::now();
    let chunk = 10_000;
    for from in (0..options.jobs).step_by(chunk) {
        let jobs: Vec<Value> = (from..(from + chunk).min(options.jobs))
            .map(|i| {
                json!({"name": format!("lt-million-{i}"), "command": "true",
                "schedule": "R/2099-01-01T00:00:00Z/P1D"})
            })
            .collect();
        create_all(&client, &url, &jobs, options.concurrency).await?;
        progress.set((from + jobs.len()) as u64, "jobs created");
    }
    let created_in = started.elapsed();
    progress.finish();
    let probe = json!({"name": PROBE, "command": "true", "schedule": "R//PT1S", "epsilon": "PT5S"});
    create_all(&client, &url, &[probe], 1).await?;
    let loaded = ProcessStats::read(pid).unwrap_or_default();
    let data_bytes = dir_size(&server.data_dir.join("data"));
    let listed = list_every_job(&client, &url, pid).await?;

    let kill_ms = chrono::Utc::now().timestamp_millis();
    let to_health = server.crash_and_restart().await?;
    let to_fire = first_fire_after(&client, &url, kill_ms, Duration::from_secs(600)).await?;
    let restarted = server
        .pid()
        .and_then(ProcessStats::read)
        .unwrap_or_default();
    let per_job = |stats: ProcessStats| {
        (stats.rss_bytes.saturating_sub(baseline.rss_bytes)) as f64 / options.jobs as f64
    };
    let json = json!({
        "workload": "million",
        "jobs": options.jobs,
        "creates_per_s": (options.jobs as f64 / created_in.as_secs_f64()).round(),
        "rss_bytes_per_job": per_job(loaded).round(),
        "rss_bytes_per_job_after_restart": per_job(restarted).round(),
        "server_rss_mb": (loaded.rss_bytes as f64 / 1_048_576.0).round(),
        "data_dir_mb": (data_bytes as f64 / 1_048_576.0).round(),
        "list_ms": listed.took.as_millis() as u64,
        "list_first_byte_ms": listed.first_byte.as_millis() as u64,
        "list_mb": (listed.bytes as f64 / 1_048_576.0).round(),
        "list_rss_growth_mb": (listed.rss_peak_bytes.saturating_sub(loaded.rss_bytes) as f64
            / 1_048_576.0)
            .round(),
        "restart_to_health_ms": to_health.as_millis() as u64,
        "restart_to_first_fire_ms": to_fire.0,
        "first_fire_late_ms": to_fire.1,
    });
    Ok(Outcome { json, passed: true })
}

/// What reading `GET /scheduler/jobs` whole cost.
struct Listed {
    took: Duration,
    first_byte: Duration,
    bytes: u64,
    /// The server's highest RSS seen while it answered (sampled every 50 ms).
    rss_peak_bytes: u64,
}

/// Reads the whole Chronos job list, counting its bytes as they come (never holding them),
/// while sampling the server's RSS.
async fn list_every_job(client: &reqwest::Client, url: &str, pid: u32) -> anyhow::Result<Listed> {
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                let rss = ProcessStats::read(pid).map_or(0, |stats| stats.rss_bytes);
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let started = Instant::now();
    let mut response = client
        .get(format!("{url}/scheduler/jobs"))
        .timeout(Duration::from_secs(600))
        .send()
        .await?
        .error_for_status()?;
    let first_byte = started.elapsed();
    let mut bytes = 0;
    let mut last = 0u8;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        last = chunk.last().copied().unwrap_or(last);
    }
    let took = started.elapsed();
    anyhow::ensure!(
        last == b']',
        "the job list ended without its closing bracket"
    );
    sampling.abort();
    let rss_peak_bytes = peak.load(Ordering::Relaxed);
    Ok(Listed {
        took,
        first_byte,
        bytes,
        rss_peak_bytes,
    })
}

/// Waits for the probe's first run started after `kill_ms`; answers (ms from the kill to that
/// start, its lateness).
async fn first_fire_after(
    client: &reqwest::Client,
    url: &str,
    kill_ms: i64,
    timeout: Duration,
) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let answer: Value = client
            .get(format!("{url}/api/jobs/{PROBE}/runs?limit=50"))
            .send()
            .await?
            .json()
            .await?;
        let runs = answer["runs"].as_array().cloned().unwrap_or_default();
        let first = runs
            .iter()
            .filter_map(|run| {
                let started =
                    chrono::DateTime::parse_from_rfc3339(run["started"].as_str()?).ok()?;
                let started = started.timestamp_millis();
                (started > kill_ms)
                    .then(|| (started - kill_ms, run["lateMs"].as_i64().unwrap_or(0)))
            })
            .min();
        if let Some(first) = first {
            return Ok(first);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the probe job did not fire within {timeout:?} of the restart")
}
