//! `saturate`: Dron's scheduling-delay benchmark. Periodic jobs firing every `period` are added
//! `step` at a time, every `step_secs`, until the start delay (start − target) passes the limit
//! at p99 or targets go missing (skipped past epsilon); reports the highest rate held and the
//! delay percentiles at each step.
//!
//! Two task kinds: real processes (`true`, started through dron's task shim, as any job), and
//! the built-in task (`builtinSleepMs: 0`), which the agent completes without forking, so the
//! scheduler's own ceiling shows apart from fork/exec. With real processes the run also
//! measures this machine's bare fork/exec rate (`/bin/sh -c true`, two at a time), the limit
//! dron's rate is compared with. Delays come from the server's own lateness histogram (the
//! built-in task records nothing itself), read from `/metrics` at each step's start and end.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Outcome, create_all, delete_all};
use crate::progress::Progress;
use crate::scrape::Scrape;
use crate::server::ProcessStats;

pub struct SaturateOptions {
    pub builtin: bool,
    /// Jobs per step (the first step too).
    pub step: usize,
    pub step_secs: u64,
    pub period_ms: u64,
    /// Stop after this many jobs even if the server keeps up.
    pub max_jobs: usize,
    /// The p99 start delay that ends the run.
    pub limit_ms: f64,
    pub epsilon_ms: i64,
    pub server_pid: Option<u32>,
}

struct Step {
    jobs: usize,
    offered_per_s: f64,
    started_per_s: f64,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    skipped: f64,
}

impl Step {
    fn held(&self, limit_ms: f64) -> bool {
        self.skipped == 0.0
            && self.p99_ms.is_some_and(|p99| p99 <= limit_ms)
            && self.started_per_s >= 0.9 * self.offered_per_s
    }

    fn json(&self) -> Value {
        json!({
            "jobs": self.jobs, "offered_per_s": self.offered_per_s.round(),
            "started_per_s": self.started_per_s.round(),
            "mean_ms": self.mean_ms.map(|m| (m * 10.0).round() / 10.0), "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "skipped": self.skipped,
        })
    }
}

pub async fn run(url: &str, options: SaturateOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let prefix = format!("lt-sat-{}-", chrono::Utc::now().timestamp_millis());
    let fork_rate = match options.builtin {
        true => None,
        false => Some(bare_fork_exec_rate(Duration::from_secs(3)).await?),
    };
    let mut names: Vec<String> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut progress = Progress::new("saturate", options.max_jobs as u64);
    while names.len() < options.max_jobs {
        let added = add_jobs(&client, url, &prefix, names.len(), &options).await?;
        names.extend(added);
        progress.set(names.len() as u64, "jobs");
        // Let the new jobs' first targets come round before measuring.
        tokio::time::sleep(Duration::from_millis(options.period_ms)).await;
        let step = measure(&client, url, names.len(), &options).await?;
        let held = step.held(options.limit_ms);
        progress.note(&format!(
            "{} jobs: offered {:.0}/s, started {:.0}/s, p99 {} ms{}",
            step.jobs,
            step.offered_per_s,
            step.started_per_s,
            step.p99_ms.map_or("-".into(), |p| format!("{p:.0}")),
            if held { "" } else { " (not held)" }
        ));
        steps.push(step);
        if !held {
            break;
        }
    }
    progress.finish();
    let stats = options.server_pid.and_then(ProcessStats::read);
    delete_all(&client, url, &names, 64).await?;
    let best = steps.iter().rfind(|s| s.held(options.limit_ms));
    let mut json = json!({
        "workload": "saturate",
        "task": if options.builtin { "builtin" } else { "process" },
        "period_ms": options.period_ms,
        "limit_ms": options.limit_ms,
        "held_per_s": best.map(|s| s.offered_per_s.round()),
        "held_p99_ms": best.and_then(|s| s.p99_ms),
        "bare_fork_exec_per_s": fork_rate.map(f64::round),
        "steps": steps.iter().map(Step::json).collect::<Vec<_>>(),
    });
    if let (Some(best), Some(fork)) = (best, fork_rate) {
        json["share_of_fork_exec"] = json!((best.offered_per_s / fork * 100.0).round() / 100.0);
    }
    if let Some(stats) = stats {
        super::merge(&mut json, stats.json());
    }
    Ok(Outcome {
        json,
        passed: !steps.is_empty(),
    })
}

async fn add_jobs(
    client: &reqwest::Client,
    url: &str,
    prefix: &str,
    from: usize,
    options: &SaturateOptions,
) -> anyhow::Result<Vec<String>> {
    let period = options.period_ms as i64;
    // Spread the jobs' targets over the period, starting a period from now.
    let base = chrono::Utc::now().timestamp_millis() / 1000 * 1000 + period;
    let epsilon = dron_model::job::format_duration_ms(options.epsilon_ms);
    let schedule_period = dron_model::job::format_duration_ms(period);
    let jobs: Vec<Value> = (from..from + options.step)
        .map(|i| {
            let offset = (i as i64 * 7919) % period; // a fixed scatter, not a clump
            let start = chrono::DateTime::from_timestamp_millis(base + offset).expect("in range");
            let schedule = format!(
                "R/{}/{schedule_period}",
                start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            let mut job = json!({"name": format!("{prefix}{i}"), "schedule": schedule,
                "epsilon": epsilon, "retries": 0});
            match options.builtin {
                true => job["builtinSleepMs"] = json!(0),
                false => job["command"] = json!("true"),
            }
            job
        })
        .collect();
    let acks = create_all(client, url, &jobs, 64).await?;
    Ok(acks.into_iter().map(|ack| ack.name).collect())
}

/// One step's figures, between two scrapes `step_secs` apart (plus the exporter's upkeep).
async fn measure(
    client: &reqwest::Client,
    url: &str,
    jobs: usize,
    options: &SaturateOptions,
) -> anyhow::Result<Step> {
    let before = Scrape::take(client, url).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.step_secs)).await;
    let after = Scrape::take(client, url).await?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Step {
        jobs,
        offered_per_s: jobs as f64 * 1000.0 / options.period_ms as f64,
        started_per_s: after.since(&before, "dron_launches_total") / elapsed,
        mean_ms: after.lateness_mean_ms(&before),
        p50_ms: after.lateness_quantile_ms(&before, 0.50),
        p99_ms: after.lateness_quantile_ms(&before, 0.99),
        skipped: after.since(&before, "dron_skipped_targets_total"),
    })
}

/// How many `/bin/sh -c true` this machine starts and reaps per second, two at a time (one per
/// core): the ceiling for any scheduler that runs each target as a process.
pub async fn bare_fork_exec_rate(duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        workers.spawn(async move {
            let mut count = 0u64;
            while started.elapsed() < duration {
                tokio::process::Command::new("/bin/sh")
                    .args(["-c", "true"])
                    .status()
                    .await?;
                count += 1;
            }
            anyhow::Ok(count)
        });
    }
    let mut total = 0;
    while let Some(count) = workers.join_next().await {
        total += count??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
