//! The machine's own floor for `facebook`'s lateness, measured without any scheduler: with as
//! many idle processes alive as the workload keeps running, how late does a directly started
//! command of the recorder's shape (`sh` reading the clock through `date`) read the clock
//! against its planned start?
//!
//! On the VMs this project runs on, that floor grows with the number of live processes: the
//! kernel's memory monitor (DAMON) walks every mapping of each shared-library page it samples,
//! under the lock a starting process needs to map the same library (docs/benchmarks.md). A
//! scheduler's lateness can only be judged against it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::stats::percentile;

/// Start delays (read clock − planned start) of the directly started commands.
pub struct Floor {
    pub idle_processes: usize,
    pub launches: usize,
    pub p50_ms: i64,
    pub p99_ms: i64,
    pub max_ms: i64,
}

impl Floor {
    pub fn json(&self) -> Value {
        json!({
            "bare_launch_idle_processes": self.idle_processes,
            "bare_launch_count": self.launches,
            "bare_launch_p50_ms": self.p50_ms,
            "bare_launch_p99_ms": self.p99_ms,
            "bare_launch_max_ms": self.max_ms,
        })
    }
}

/// Keeps `idle` `sleep` processes alive while starting the recorder's shape of command
/// `per_second` times a second for `duration`; then ends them all.
pub async fn bare_launch_lateness(
    idle: usize,
    per_second: usize,
    duration: Duration,
) -> anyhow::Result<Floor> {
    let mut sleepers = Vec::with_capacity(idle);
    for _ in 0..idle {
        sleepers.push(
            tokio::process::Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    let measured = time_launches(per_second, duration).await;
    for sleeper in &mut sleepers {
        let _ = sleeper.start_kill();
    }
    for sleeper in &mut sleepers {
        let _ = sleeper.wait().await;
    }
    let mut delays = measured?;
    delays.sort_unstable();
    Ok(Floor {
        idle_processes: idle,
        launches: delays.len(),
        p50_ms: percentile(&delays, 0.50),
        p99_ms: percentile(&delays, 0.99),
        max_ms: delays.last().copied().unwrap_or_default(),
    })
}

/// Starts `sh -c 's=$(date +%s%3N); echo $s'` on a fixed plan; answers each start's delay.
async fn time_launches(per_second: usize, duration: Duration) -> anyhow::Result<Vec<i64>> {
    let period_ms = 1000.0 / per_second.max(1) as f64;
    let count = (duration.as_secs_f64() * 1000.0 / period_ms) as usize;
    let first_ms = now_ms() + 200;
    let mut launches = JoinSet::new();
    for k in 0..count {
        let planned_ms = first_ms + (k as f64 * period_ms) as i64;
        let wait_ms = (planned_ms - now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        // Started here, at the planned time; only the wait for its output goes to a task.
        let child = tokio::process::Command::new("/bin/sh")
            .args(["-c", "s=$(date +%s%3N); echo $s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        launches.spawn(async move {
            let output = child.wait_with_output().await?;
            let read_ms: i64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
            anyhow::Ok(read_ms - planned_ms)
        });
    }
    let mut delays = Vec::with_capacity(count);
    while let Some(delay) = launches.join_next().await {
        delays.push(delay??);
    }
    Ok(delays)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
