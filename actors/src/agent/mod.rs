//! Agents run tasks. Today: the local agent inside the server. A task runs under a small shim
//! process (`dron task-shim`) that outlives the server and leaves the task's exit status in
//! the run's directory, so a restarted server learns how a task ended instead of guessing.
//!
//! - [`local`]: the local agent actor.
//! - [`process`]: launching, waiting for, killing and adopting a task through the shim.
//! - [`shim`]: the shim itself.
//! - [`launcher`]: the long-lived process that forks shims for the agent (no exec per run).
//! - [`protocol`]: what a remote agent (`dron agent`, the same local agent in a process of
//!   its own) and the server say to each other.

pub mod launcher;
mod local;
pub mod process;
pub mod protocol;
pub mod shim;

pub use local::{AgentMsg, LocalAgent, LocalAgentArgs, ReportFn};

// Part of the task contract (`dron-task`); re-exported under their old paths.
pub use dron_task::{LOCAL_AGENT, run_dir};
