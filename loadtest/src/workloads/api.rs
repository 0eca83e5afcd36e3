//! `api`: job creation over HTTP, throughput and latency percentiles.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all};
use crate::stats::percentile;

pub async fn run(url: &str, jobs: usize, concurrency: usize) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let run = chrono::Utc::now().timestamp_millis();
    let names: Vec<String> = (0..jobs).map(|i| format!("lt-api-{run}-{i}")).collect();
    // Far in the future: this measures creation, nothing fires.
    let definitions: Vec<Value> = names
        .iter()
        .map(|name| json!({"name": name, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"}))
        .collect();
    let started = Instant::now();
    let acks = create_all(&client, url, &definitions, concurrency).await?;
    let elapsed = started.elapsed();
    let mut latencies: Vec<u64> = acks.iter().map(|ack| ack.latency_ms).collect();
    latencies.sort_unstable();
    let rate = jobs as f64 / elapsed.as_secs_f64();
    eprintln!("created {jobs} jobs in {elapsed:?}: {rate:.0} jobs/s");
    delete_all(&client, url, &names, concurrency).await?;
    let json = json!({
        "workload": "api", "jobs": jobs, "concurrency": concurrency,
        "creates_per_s": rate.round(),
        "p50_ms": percentile(&latencies, 0.50), "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or_default(),
    });
    Ok(Outcome { json, passed: true })
}
