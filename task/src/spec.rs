//! A task to run and how it ended: `task.json` and `status.json` in the task's run directory,
//! and what the server and its agents exchange about it.
//!
//! The server (or a remote agent) writes `task.json` before it starts the shim; the shim
//! writes `status.json` once the task has ended. Both may be read by another version of dron
//! after an upgrade, so their serde form is fixed (tests/wire.rs).

use std::path::{Path, PathBuf};

use dron_model::ids::parse_task_id;
use serde::{Deserialize, Serialize};

use crate::secret::SecretEnv;

/// The task to run, written by the server for the shim.
pub const TASK_FILE: &str = "task.json";
/// The task's end, written by the shim.
pub const STATUS_FILE: &str = "status.json";
/// `"<pid> <starttime>"` of the shim, then a line with the task's pid (also its process
/// group id) once the task started.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The task's standard output, capped; absent until the task writes to it.
pub const STDOUT_FILE: &str = "stdout";
/// The task's standard error, capped; absent until the task writes to it.
pub const STDERR_FILE: &str = "stderr";
/// Where the run of `task_id` keeps its spec, output and exit status. Task ids come from
/// coordinators, which build them from validated job names. What the server, its agents and
/// the output readers agree on: a run directory outlives the server that made it.
pub fn run_dir(runs_root: &Path, task_id: &str) -> Option<PathBuf> {
    let task = parse_task_id(task_id)?;
    Some(
        runs_root
            .join(&task.job)
            .join(format!("{}-{}", task.target_ms, task.attempt)),
    )
}

/// The dron subcommand that runs the shim: `dron task-shim <run_dir>`.
pub const SHIM_SUBCOMMAND: &str = "task-shim";

/// What a task runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum TaskCommand {
    /// Run through `/bin/sh -c`.
    Shell(String),
    /// Program and arguments, run directly.
    Argv(Vec<String>),
    /// A built-in task the agent completes itself after this many milliseconds, without a
    /// process (`builtinSleepMs`): the cheapest task there is, for measuring the scheduler
    /// apart from fork/exec. It has no output and does not survive a server restart (it is
    /// then launched again: it has no effects).
    Sleep { ms: u64 },
}

/// The task to run: `task.json`, and the `launch` command of the agent protocol.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskSpec {
    pub task_id: String,
    pub command: TaskCommand,
    /// The task's environment, with PATH, HOME, LANG and USER of the shim's own (nothing
    /// else of the server's or the agent's).
    pub env: Vec<(String, String)>,
    /// The job's secret variables: in the clear in a launch, sealed in `task.json`
    /// ([`crate::secret`]). Absent when there are none (as before they existed).
    #[serde(default, skip_serializing_if = "SecretEnv::is_none")]
    pub secret_env: SecretEnv,
    /// Defaults to the run directory.
    pub work_dir: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    /// Cap on each of stdout and stderr.
    pub output_cap_bytes: u64,
    /// Set for a job with a `container`: the command runs in that image. Absent from the
    /// JSON of other tasks, whose `task.json` is as before. Boxed: most tasks have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Box<crate::container::ContainerTask>>,
}

/// What the shim records in `status.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskStatus {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// Set when the task could not be started, saying why.
    pub error: Option<String>,
}

/// How a task ended, as the scheduler records it (from `status.json`, or decided by the
/// agent or the broker when there is no such file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskEnd {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Killed,
    FailedToStart(String),
    /// The shim ended without recording the task's end: its fate is unknown.
    Lost(String),
    /// The agent running it stopped heartbeating: it is retried elsewhere (without spending
    /// one of the job's retries) while its epsilon allows.
    AgentLost(String),
    /// Never launched: no agent could take it before its start deadline.
    NotPlaced(String),
}

impl TaskEnd {
    pub fn is_success(&self) -> bool {
        *self == TaskEnd::Exited(0)
    }
}
