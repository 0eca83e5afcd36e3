//! What the shards answer about jobs for listings (the jobs table, the dependency graph, the
//! Chronos job list): plain values, so that the modules that compute views over them need not
//! know the coordinator.

use dron_model::job::JobRecord;

/// What a job's live instances are doing, as Chronos reports it (`state` in its summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Idle,
    /// Instances wait (for their previous run, or to retry) and none is running.
    Queued,
    Running,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Idle => "idle",
            RunState::Queued => "queued",
            RunState::Running => "running",
        }
    }
}

/// A job and what its live instances are doing.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub record: JobRecord,
    pub run_state: RunState,
}
