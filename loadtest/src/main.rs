//! `dron-loadtest`: drives a running dron server through its public API and reports figures.
//! This first version measures job creation (`api`) and firing (`fire`); the checker and the
//! Dron/Facebook workloads are the load-test issue's work.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "dron-loadtest",
    about = "Load generator for a running dron server"
)]
struct Cli {
    /// The server's URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:4400")]
    url: String,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Job creation over HTTP: throughput and latency percentiles.
    Api {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Jobs firing every second running `true`: completed runs per second.
    Fire {
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        match cli.workload {
            Workload::Api { jobs, concurrency } => api(&cli.url, jobs, concurrency).await,
            Workload::Fire { jobs, seconds } => fire(&cli.url, jobs, seconds).await,
        }
    })?;
    println!("{report}");
    Ok(())
}

async fn api(url: &str, jobs: usize, concurrency: usize) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let run = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let names: Vec<String> = (0..jobs).map(|i| format!("lt-api-{run}-{i}")).collect();
    let mut latencies = create_all(
        &client,
        url,
        &names,
        concurrency,
        |name| json!({"name": name, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"}),
    )
    .await?;
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let rate = jobs as f64 / elapsed.as_secs_f64();
    eprintln!("created {jobs} jobs in {elapsed:?}: {rate:.0} jobs/s");
    delete_all(&client, url, &names, concurrency).await?;
    Ok(json!({
        "workload": "api", "jobs": jobs, "concurrency": concurrency,
        "creates_per_s": rate.round(),
        "p50_ms": percentile(&latencies, 0.50), "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or_default(),
    }))
}

async fn fire(url: &str, jobs: usize, seconds: u64) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let run = chrono::Utc::now().timestamp_millis();
    let names: Vec<String> = (0..jobs).map(|i| format!("lt-fire-{run}-{i}")).collect();
    create_all(
        &client,
        url,
        &names,
        32,
        |name| json!({"name": name, "command": "true", "schedule": "R//PT1S"}),
    )
    .await?;
    let before = successes(&client, url, &names).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = successes(&client, url, &names).await?;
    let elapsed = started.elapsed().as_secs_f64();
    delete_all(&client, url, &names, 32).await?;
    let rate = (after - before) as f64 / elapsed;
    eprintln!("{jobs} PT1S jobs: {rate:.0} successful runs/s (offered {jobs}/s)");
    Ok(
        json!({"workload": "fire", "jobs": jobs, "offered_per_s": jobs, "runs_per_s": rate.round(), "seconds": seconds}),
    )
}

async fn successes(client: &reqwest::Client, url: &str, names: &[String]) -> anyhow::Result<u64> {
    let jobs: Vec<Value> = client
        .get(format!("{url}/scheduler/jobs"))
        .send()
        .await?
        .json()
        .await?;
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    Ok(jobs
        .iter()
        .filter(|job| job["name"].as_str().is_some_and(|n| wanted.contains(n)))
        .filter_map(|job| job["successCount"].as_u64())
        .sum())
}

/// Creates jobs with `concurrency` requests in flight; answers each request's latency in ms.
async fn create_all(
    client: &reqwest::Client,
    url: &str,
    names: &[String],
    concurrency: usize,
    job: impl Fn(&str) -> Value,
) -> anyhow::Result<Vec<u64>> {
    let endpoint = format!("{url}/scheduler/iso8601");
    let mut latencies = Vec::with_capacity(names.len());
    for chunk in names.chunks(concurrency.max(1)) {
        let mut in_flight = tokio::task::JoinSet::new();
        for name in chunk {
            let request = client.post(&endpoint).json(&job(name));
            in_flight.spawn(async move {
                let started = Instant::now();
                let response = request.send().await.context("server unreachable")?;
                anyhow::Ok((response.status(), started.elapsed().as_millis() as u64))
            });
        }
        while let Some(result) = in_flight.join_next().await {
            let (status, latency) = result??;
            if status != 204 {
                bail!("create answered {status}");
            }
            latencies.push(latency);
        }
    }
    Ok(latencies)
}

async fn delete_all(
    client: &reqwest::Client,
    url: &str,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    for chunk in names.chunks(concurrency.max(1)) {
        let mut in_flight = tokio::task::JoinSet::new();
        for name in chunk {
            in_flight.spawn(client.delete(format!("{url}/scheduler/job/{name}")).send());
        }
        while let Some(result) = in_flight.join_next().await {
            result??;
        }
    }
    Ok(())
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
