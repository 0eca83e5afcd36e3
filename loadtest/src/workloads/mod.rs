//! The workloads, and the HTTP calls they share. Every workload answers one JSON object (the
//! last line printed) and whether it passed.

pub mod api;
pub mod facebook;
pub mod fire;
pub mod floor;
pub mod highload;
pub mod million;
pub mod overload;
pub mod saturate;
pub mod smoke;
pub mod ui;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// What a workload reports: its figures, and whether the checks it ran passed.
pub struct Outcome {
    pub json: Value,
    pub passed: bool,
}

/// One acknowledged creation.
pub struct Ack {
    pub name: String,
    pub latency_ms: u64,
    /// When the acknowledgement arrived (Unix ms): no target before it is owed a run.
    pub acked_ms: i64,
}

/// Creates jobs with `concurrency` requests in flight, in order of `jobs` chunk by chunk (so a
/// dependent job may follow its parents in a later call). Fails on the first refusal; a 503
/// (an overloaded server) is retried as `Retry-After` says, up to a minute.
pub async fn create_all(
    client: &reqwest::Client,
    url: &str,
    jobs: &[Value],
    concurrency: usize,
) -> anyhow::Result<Vec<Ack>> {
    let acks = create_each(client, url, jobs, concurrency, MAX_ATTEMPTS).await?;
    acks.into_iter()
        .collect::<Result<Vec<Ack>, String>>()
        .map_err(|refusal| anyhow::anyhow!(refusal))
}

/// As `create_all`, for a workload that overloads the server on purpose: a create still
/// answered 503 after `attempts` tries is left out, not an error. Answers the creates
/// acknowledged and how many were refused.
pub async fn create_accepted(
    client: &reqwest::Client,
    url: &str,
    jobs: &[Value],
    concurrency: usize,
    attempts: u32,
) -> anyhow::Result<(Vec<Ack>, usize)> {
    let answers = create_each(client, url, jobs, concurrency, attempts).await?;
    let total = answers.len();
    let acks: Vec<Ack> = answers.into_iter().filter_map(Result::ok).collect();
    let refused = total - acks.len();
    Ok((acks, refused))
}

/// Each job's create: its acknowledgement, or the 503 that still refused it after `attempts`
/// tries. Any other answer fails the whole.
async fn create_each(
    client: &reqwest::Client,
    url: &str,
    jobs: &[Value],
    concurrency: usize,
    attempts: u32,
) -> anyhow::Result<Vec<Result<Ack, String>>> {
    let mut answers = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(concurrency.max(1)) {
        let mut in_flight = tokio::task::JoinSet::new();
        for job in chunk {
            let request = client.post(create_endpoint(url, job)).json(job);
            let name = job["name"].as_str().unwrap_or_default().to_string();
            in_flight.spawn(create_one(request, name, attempts));
        }
        while let Some(result) = in_flight.join_next().await {
            answers.push(result??);
        }
    }
    Ok(answers)
}

/// One create, retried while answered 503 (as `Retry-After` says), up to `attempts` tries.
async fn create_one(
    request: reqwest::RequestBuilder,
    name: String,
    attempts: u32,
) -> anyhow::Result<Result<Ack, String>> {
    let started = Instant::now();
    let mut tries = 0;
    loop {
        let attempt = request.try_clone().context("a JSON request clones")?;
        let response = attempt.send().await.context("server unreachable")?;
        let status = response.status();
        if status == 204 {
            return Ok(Ok(Ack {
                name,
                latency_ms: started.elapsed().as_millis() as u64,
                acked_ms: chrono::Utc::now().timestamp_millis(),
            }));
        }
        tries += 1;
        if status == 503 && tries < attempts {
            tokio::time::sleep(retry_after(&response)).await;
            continue;
        }
        let body = response.text().await.unwrap_or_default();
        let refusal = format!("create of {name} answered {status}: {body}");
        if status == 503 {
            return Ok(Err(refusal));
        }
        bail!("{refusal}");
    }
}

/// Tries of a create answered 503 before the workload gives up.
const MAX_ATTEMPTS: u32 = 60;

/// How long a 503 asks to wait (`Retry-After` in seconds; one second if absent).
fn retry_after(response: &reqwest::Response) -> Duration {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds)
}

/// Chronos has one endpoint for scheduled jobs and one for dependent jobs.
pub(crate) fn create_endpoint(url: &str, job: &Value) -> String {
    let dependent = job["parents"].as_array().is_some_and(|p| !p.is_empty());
    let kind = if dependent { "dependency" } else { "iso8601" };
    format!("{url}/scheduler/{kind}")
}

pub async fn delete_all(
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

/// The jobs as the server lists them (Chronos JSON).
pub async fn list_jobs(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<Value>> {
    let response = client
        .get(format!("{url}/scheduler/jobs"))
        .send()
        .await
        .context("server unreachable")?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET /scheduler/jobs answered {status}");
    }
    response
        .json()
        .await
        .context("GET /scheduler/jobs: not a JSON array")
}

/// The sum of the `successCount` of the named jobs.
pub async fn successes(
    client: &reqwest::Client,
    url: &str,
    names: &[String],
) -> anyhow::Result<u64> {
    let jobs = list_jobs(client, url).await?;
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    Ok(jobs
        .iter()
        .filter(|job| job["name"].as_str().is_some_and(|n| wanted.contains(n)))
        .filter_map(|job| job["successCount"].as_u64())
        .sum())
}

/// Makes the runs directory and answers its absolute path: the recorded commands run with
/// their run directory as working directory.
pub fn prepare_runs_dir(runs_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(runs_dir)
        .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    runs_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", runs_dir.display()))
}

/// Writes each acknowledged job's `created` line.
pub fn record_acks(runs_dir: &Path, acks: &[Ack]) -> anyhow::Result<()> {
    for ack in acks {
        crate::recorder::record_created(runs_dir, &ack.name, ack.acked_ms)?;
    }
    Ok(())
}

/// A schedule start a few seconds ahead, on a whole second: every target then falls after the
/// job's acknowledgement, so none is ambiguous.
pub fn start_soon(seconds_ahead: i64) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now().timestamp();
    chrono::DateTime::from_timestamp(now + seconds_ahead, 0).expect("a time in range")
}

/// Sleeps until `at` (returns at once if it has passed).
pub async fn sleep_until(at: chrono::DateTime<chrono::Utc>) {
    let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
}

/// Adds the keys of `from` (the checker's report) to a workload's report.
pub fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The CA certificates `--ca-file` named, trusted instead of the system's.
static TRUSTED_CA: std::sync::OnceLock<Vec<reqwest::Certificate>> = std::sync::OnceLock::new();

/// Trusts the CA certificates in `path` (PEM) for every client [`http_client`] makes.
pub fn trust_ca(path: &std::path::Path) -> anyhow::Result<()> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("reading the CA file {}: {e}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| anyhow::anyhow!("the CA file {}: {e}", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "the CA file {} holds no certificate",
        path.display()
    );
    let _ = TRUSTED_CA.set(certificates);
    Ok(())
}

/// The HTTP client every workload uses: a request to an overloaded server fails after a minute
/// instead of hanging the run. It trusts `--ca-file`'s CA, if given.
pub fn http_client() -> reqwest::Client {
    let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
    let builder = match TRUSTED_CA.get() {
        Some(certificates) => builder.tls_certs_only(certificates.iter().cloned()),
        None => builder,
    };
    builder.build().unwrap_or_default()
}
