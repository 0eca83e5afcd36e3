//! dron's task contract: the types that cross a process boundary between the scheduler and
//! whatever runs its tasks, and the status updates that come back.
//!
//! - [`spec`]: a task to run (`task.json`), how it ended (`status.json`, [`TaskEnd`]), and the
//!   files of a run directory. Read by the shim, maybe of another version after an upgrade.
//! - [`container`]: a task that runs in a container, and how an agent runs containers.
//! - [`update`]: what an agent reports about a task ([`TaskEvent`], [`TaskUpdate`]) and the
//!   narrow sink it reports to ([`StatusSink`]).
//! - [`secret`]: a task's secret variables, sealed in `task.json`.
//! - [`protocol`]: what a remote agent (`dron agent`) and the server say to each other.
//!
//! Everything serialized here is a wire or on-disk format: serde names and tags must not
//! change (tests/wire.rs pins them). Renaming a Rust item is fine; renaming what serde
//! writes breaks running agents and the run directories a restarted server adopts.

pub mod container;
pub mod protocol;
pub mod secret;
pub mod spec;
pub mod update;

pub use spec::{
    SHIM_PID_FILE, SHIM_SUBCOMMAND, STATUS_FILE, STDERR_FILE, STDOUT_FILE, TASK_FILE, TaskCommand,
    TaskEnd, TaskSpec, TaskStatus, run_dir,
};
pub use update::{LOCAL_AGENT, StatusSink, TaskEvent, TaskUpdate, UpdateAck};
