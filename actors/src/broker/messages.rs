use ractor::ActorRef;

use crate::agent::process::{TaskEnd, TaskSpec};
use crate::router::RouterMsg;

pub enum BrokerMsg {
    /// Tells the broker where status updates go (the router is started after the broker).
    SetRouter(ActorRef<RouterMsg>),
    /// Launch one attempt of an instance.
    Launch(TaskSpec),
    /// Kill a task's whole process group.
    Kill { task_id: String },
    /// After a restart: find out how a task that was running ended, or adopt it if it still runs.
    Adopt {
        task_id: String,
        timeout_deadline_ms: Option<i64>,
    },
    /// From an agent.
    Update(TaskUpdate),
}

/// What an agent reports about a task.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub task_id: String,
    pub event: TaskEvent,
}

#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// The task's process started (or was adopted still running).
    Started {
        at_ms: i64,
    },
    Ended {
        end: TaskEnd,
        at_ms: i64,
    },
    /// Asked to adopt a task that no agent ever launched (the server died between recording
    /// the launch and making it): launching it now runs it once, not twice.
    NeverLaunched,
}
