//! `ui`: how fast the web UI's reads answer with many jobs: the jobs table's pages
//! (`GET /api/jobs`: first page, sorted, searched, filtered, last page) and a job's
//! dependency-graph neighbourhood (`GET /api/graph`), each asked `requests` times in turn.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all};
use crate::stats::percentile;

pub struct UiOptions {
    pub jobs: usize,
    pub concurrency: usize,
    pub requests: usize,
    /// Leave the jobs on the server (to look at them in a browser).
    pub keep: bool,
}

pub async fn run(url: &str, options: UiOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let run = chrono::Utc::now().timestamp_millis();
    let definitions = definitions(run, options.jobs);
    let started = Instant::now();
    // Parents first: a dependent job may only name jobs that exist.
    let (dependent, scheduled): (Vec<Value>, Vec<Value>) = definitions
        .into_iter()
        .partition(|job| job.get("parents").is_some());
    create_all(&client, url, &scheduled, options.concurrency).await?;
    create_all(&client, url, &dependent, options.concurrency).await?;
    eprintln!("created {} jobs in {:?}", options.jobs, started.elapsed());
    let last_page = options.jobs.saturating_sub(50);
    let queries = [
        ("first page", "/api/jobs".to_string()),
        ("by next fire", "/api/jobs?sort=nextFire".to_string()),
        (
            "newest success first",
            "/api/jobs?sort=lastSuccess&order=desc".to_string(),
        ),
        ("search", format!("/api/jobs?q=lt-ui-{run}-4242")),
        ("search by owner", "/api/jobs?q=team-7%40".to_string()),
        ("failing", "/api/jobs?filter=failing".to_string()),
        ("last page", format!("/api/jobs?offset={last_page}")),
        (
            "graph, 2 levels",
            format!("/api/graph?job=lt-ui-{run}-100&depth=2"),
        ),
    ];
    let mut figures = serde_json::Map::new();
    for (what, path) in queries {
        let timings = time_requests(&client, &format!("{url}{path}"), options.requests).await?;
        eprintln!("{what}: p50 {} ms, max {} ms", timings.0, timings.1);
        figures.insert(
            what.into(),
            json!({"path": path, "p50_ms": timings.0, "max_ms": timings.1}),
        );
    }
    if !options.keep {
        // Children first: deleting a parent re-wires its children, and would race with
        // deleting them.
        for jobs in [&dependent, &scheduled] {
            let names: Vec<String> = jobs.iter().map(job_name).collect();
            delete_all(&client, url, &names, options.concurrency).await?;
        }
    }
    let json = json!({"workload": "ui", "jobs": options.jobs, "requests": options.requests, "queries": figures});
    Ok(Outcome { json, passed: true })
}

/// Jobs far in the future with spread fire times, ten owners, and every tenth job running
/// after the one before it (so graphs have edges).
fn definitions(run: i64, jobs: usize) -> Vec<Value> {
    (0..jobs)
        .map(|i| {
            let name = format!("lt-ui-{run}-{i}");
            let owner = format!("team-{}@example.com", i % 10);
            match i % 10 {
                9 => json!({"name": name, "command": "true", "owner": owner,
                            "parents": [format!("lt-ui-{run}-{}", i - 1)]}),
                _ => json!({"name": name, "command": "true", "owner": owner,
                            "schedule": format!("R/2099-01-01T00:00:00Z/PT{}S", 60 + i % 86_400)}),
            }
        })
        .collect()
}

/// The median and the slowest time of `count` requests one after the other, in ms.
async fn time_requests(
    client: &reqwest::Client,
    url: &str,
    count: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let started = Instant::now();
        let response = client.get(url).send().await.context("server unreachable")?;
        let status = response.status();
        let body = response.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            bail!(
                "GET {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    Ok((
        round(percentile(&ms, 0.5)),
        round(*ms.last().unwrap_or(&0.0)),
    ))
}

fn job_name(job: &Value) -> String {
    job["name"].as_str().unwrap_or_default().to_string()
}
