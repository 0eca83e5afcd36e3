//! A remote agent's run directories, pruned on its own machine by its own settings
//! (`dron agent --keep-runs --max-age`), the same rule as the server's (src/retention): a run
//! directory goes once it is finished, older than the maximum age by its target, and not among
//! its job's newest `keep_runs`. Tasks whose end the server has not acknowledged stay.

use std::path::PathBuf;
use std::time::Duration;

use crate::retention::run_dirs;

/// What the agent keeps.
#[derive(Debug, Clone, Copy)]
pub struct RunRetention {
    pub keep_runs: usize,
    pub max_age_ms: i64,
    pub every: Duration,
}

/// Prunes `runs_root` now and every `every`, until the returned task is aborted.
/// `unacknowledged` names the tasks to keep whatever their age.
pub fn spawn(
    runs_root: PathBuf,
    policy: RunRetention,
    unacknowledged: impl Fn() -> Vec<String> + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let unacknowledged = std::sync::Arc::new(unacknowledged);
        loop {
            let (root, keep) = (runs_root.clone(), unacknowledged.clone());
            let before_ms = chrono::Utc::now().timestamp_millis() - policy.max_age_ms;
            let pruned = tokio::task::spawn_blocking(move || {
                let keep: Vec<String> = keep();
                let skip = |job: &str, target: i64, attempt: u32| {
                    keep.contains(&dron_model::ids::task_id(job, target, attempt))
                };
                let expired = run_dirs::expired(&root, policy.keep_runs, before_ms, &skip);
                let freed = run_dirs::remove(&expired);
                (expired.len(), freed)
            })
            .await;
            if let Ok((count, freed)) = pruned
                && count > 0
            {
                tracing::info!(
                    count,
                    bytes = freed.bytes,
                    "retention: deleted old run directories"
                );
            }
            tokio::time::sleep(policy.every).await;
        }
    })
}
