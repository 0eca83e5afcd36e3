//! `api`: job creation over HTTP, throughput and latency percentiles.
//!
//! Two ways to load the server. By default a closed loop: `concurrency` creates are sent at
//! once and the next batch goes when all have answered, so the rate is the server's and the
//! latency includes waiting behind the rest of the batch (about `concurrency / rate`). With
//! `--rate R` an open loop: a create is sent every `1/R` s whatever the answers, as users'
//! requests arrive, and each latency is timed from the moment its request was due, so a stall
//! of the server counts against every request it held up (no coordinated omission).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Ack, Outcome, create_all, create_endpoint, delete_all};
use crate::stats::percentile;

pub async fn run(
    url: &str,
    jobs: usize,
    concurrency: usize,
    rate: Option<f64>,
    keep: bool,
) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let run = chrono::Utc::now().timestamp_millis();
    let names: Vec<String> = (0..jobs).map(|i| format!("lt-api-{run}-{i}")).collect();
    // Far in the future: this measures creation, nothing fires.
    let definitions: Vec<Value> = names
        .iter()
        .map(|name| json!({"name": name, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"}))
        .collect();
    let started = Instant::now();
    let mut latencies_us: Vec<u64> = match rate {
        Some(rate) => create_at_rate(&client, url, &definitions, rate).await?,
        None => create_all(&client, url, &definitions, concurrency)
            .await?
            .iter()
            .map(|ack: &Ack| ack.latency_ms * 1000)
            .collect(),
    };
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    let achieved = jobs as f64 / elapsed.as_secs_f64();
    eprintln!("created {jobs} jobs in {elapsed:?}: {achieved:.0} jobs/s");
    if !keep {
        delete_all(&client, url, &names, concurrency).await?;
    }
    let ms = |us: u64| (us as f64 / 100.0).round() / 10.0;
    let json = json!({
        "workload": "api", "jobs": jobs,
        "mode": if rate.is_some() { "open" } else { "closed" },
        "concurrency": if rate.is_some() { Value::Null } else { json!(concurrency) },
        "offered_per_s": rate,
        "creates_per_s": achieved.round(),
        "p50_ms": ms(percentile(&latencies_us, 0.50)),
        "p99_ms": ms(percentile(&latencies_us, 0.99)),
        "p999_ms": ms(percentile(&latencies_us, 0.999)),
        "max_ms": ms(latencies_us.last().copied().unwrap_or_default()),
    });
    Ok(Outcome { json, passed: true })
}

/// Sends the creates at `rate` per second, each at its due time, and answers each one's
/// latency in microseconds from that due time. Fails on the first refusal (an open loop that
/// retried 503s would measure the retries, not the server).
async fn create_at_rate(
    client: &reqwest::Client,
    url: &str,
    jobs: &[Value],
    rate: f64,
) -> anyhow::Result<Vec<u64>> {
    if rate.is_nan() || rate <= 0.0 {
        bail!("--rate must be above 0");
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for (i, job) in jobs.iter().enumerate() {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let request = client.post(create_endpoint(url, job)).json(job);
        let name = job["name"].as_str().unwrap_or_default().to_string();
        in_flight.spawn(async move {
            let response = request.send().await.context("server unreachable")?;
            let status = response.status();
            if status != 204 {
                let body = response.text().await.unwrap_or_default();
                bail!("create of {name} answered {status}: {body}");
            }
            anyhow::Ok(due.elapsed().as_micros() as u64)
        });
    }
    let mut latencies = Vec::with_capacity(jobs.len());
    while let Some(result) = in_flight.join_next().await {
        latencies.push(result??);
    }
    Ok(latencies)
}
