//! `overload`: what dron does past its ceiling (issue 18). It first finds the rate held as
//! `saturate` does (jobs added a step at a time until a step is not held), then offers
//! `factor` times that rate for `secs` seconds, then takes the extra jobs away and times how
//! long the server needs to fire on time again. Its last JSON line:
//! `{"held_per_s", "offered_per_s", "started_per_s", "rss_held_mb", "rss_peak_mb",
//! "recovery_ms"}`, plus the steps. Graceful overload means the started rate stays near the
//! held one, memory stays near its held figure and recovery takes seconds.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Outcome;
use super::create_accepted;
use super::saturate::{SaturateOptions, Step, add_jobs, job_bodies, measure};
use crate::progress::Progress;
use crate::server::ProcessStats;

pub struct OverloadOptions {
    pub saturate: SaturateOptions,
    /// The offered rate during the overload, as a multiple of the rate held.
    pub factor: f64,
    /// How long the overload lasts.
    pub secs: u64,
    /// How long to wait for the server to be back on time once the load drops: recovery not
    /// seen by then is reported as null.
    pub recovery_limit: Duration,
}

/// Extra jobs are added this many at a time...
const ADDING_CHUNK: usize = 2000;
/// ...for at most this long...
const ADDING_LIMIT: Duration = Duration::from_secs(60);
/// ...each create tried this many times while answered 503 (then left out: the server
/// refuses new jobs while its writes are behind, which under overload may be most of the
/// time).
const ADDING_TRIES: u32 = 3;
/// Recovery counts as done at the first one-second window that is held again.
const RECOVERY_WINDOW: Duration = Duration::from_secs(1);

pub async fn run(url: &str, options: OverloadOptions) -> anyhow::Result<Outcome> {
    let client = super::http_client();
    let sat = &options.saturate;
    let prefix = format!("lt-over-{}-", chrono::Utc::now().timestamp_millis());
    let mut progress = Progress::new("overload", sat.max_jobs as u64);
    // 1. The rate held: steps until one is not held, then back to the last held.
    let mut names: Vec<String> = Vec::new();
    let mut held: Option<(usize, Step)> = None;
    let mut steps = Vec::new();
    while names.len() < sat.max_jobs {
        names.extend(add_jobs(&client, url, &prefix, names.len(), sat).await?);
        tokio::time::sleep(Duration::from_millis(sat.period_ms)).await;
        let step = measure(&client, url, names.len(), sat).await?;
        progress.note(&format!(
            "{} jobs: started {:.0}/s",
            step.jobs, step.started_per_s
        ));
        steps.push(step.json());
        if !step.held(sat.limit_ms) {
            break;
        }
        held = Some((names.len(), step));
    }
    let Some((held_jobs, held_step)) = held else {
        anyhow::bail!("not even the first step ({} jobs) was held", sat.step);
    };
    let rss = || {
        sat.server_pid
            .and_then(ProcessStats::read)
            .map(|s| s.rss_bytes)
    };
    let rss_held = rss();
    // 2. The overload: `factor` times the jobs held, measured over `secs`, RSS sampled.
    // The extra jobs go in chunks: an overloaded server pushes back on new jobs (503), so
    // adding stops after ADDING_LIMIT, and the rate offered is what it accepted (the creates
    // it still refused after ADDING_TRIES are counted, not retried).
    let wanted = (held_jobs as f64 * options.factor).round() as usize;
    let mut more = SaturateOptions {
        step: ADDING_CHUNK,
        ..sat.clone()
    };
    let adding = Instant::now();
    let mut refused = 0;
    let mut next = names.len();
    while names.len() < wanted && adding.elapsed() < ADDING_LIMIT {
        more.step = ADDING_CHUNK.min(wanted - names.len());
        let jobs = job_bodies(&prefix, next, &more);
        next += jobs.len();
        let (acks, chunk_refused) = create_accepted(&client, url, &jobs, 64, ADDING_TRIES).await?;
        names.extend(acks.into_iter().map(|ack| ack.name));
        refused += chunk_refused;
    }
    let overload_jobs = names.len();
    more.step_secs = 1;
    let mut rss_peak = rss_held;
    let (mut started, mut seconds) = (0.0, 0);
    while seconds < options.secs {
        let second = measure(&client, url, names.len(), &more).await?;
        started += second.started_per_s;
        seconds += 1;
        rss_peak = rss_peak.max(rss());
    }
    let started_per_s = started / options.secs.max(1) as f64;
    progress.note(&format!(
        "{} jobs offered: started {started_per_s:.0}/s",
        names.len()
    ));
    // 3. Back to the held rate: the time until a one-second window is held again.
    let extra = names.split_off(held_jobs);
    super::delete_all(&client, url, &extra, 64).await?;
    let dropped = Instant::now();
    let mut recovery_ms = None;
    while dropped.elapsed() < options.recovery_limit {
        more.step_secs = RECOVERY_WINDOW.as_secs();
        let window = measure(&client, url, names.len(), &more).await?;
        progress.note(&format!("recovering: {}", window.json()));
        if window.held(sat.limit_ms) {
            recovery_ms = Some(dropped.elapsed().as_millis() as u64);
            break;
        }
    }
    progress.finish();
    let mb = |bytes: Option<u64>| bytes.map(|b| b / (1024 * 1024));
    let json = json!({
        "workload": "overload",
        "task": if sat.builtin { "builtin" } else { "process" },
        "factor": options.factor,
        "steps": steps,
        "held_per_s": held_step.offered_per_s.round(),
        "offered_per_s": (overload_jobs as f64 * 1000.0 / sat.period_ms as f64).round(),
        "wanted_per_s": (wanted as f64 * 1000.0 / sat.period_ms as f64).round(),
        "creates_refused": refused,
        "started_per_s": started_per_s.round(),
        "rss_held_mb": mb(rss_held),
        "rss_peak_mb": mb(rss_peak),
        "recovery_ms": recovery_ms,
    });
    let graceful = started_per_s >= 0.9 * held_step.offered_per_s && recovery_ms.is_some();
    Ok(Outcome {
        json,
        passed: graceful,
    })
}
