//! What an agent reports about a task, and where it reports it.
//!
//! [`TaskEvent`] crosses the wire (the agent protocol's `status` message); [`TaskUpdate`] is
//! the event inside the server, with the callback that acknowledges it to a remote agent.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::TaskEnd;

/// The name of the agent inside the server process: what its `started` updates carry, and a
/// name remote agents may not take.
pub const LOCAL_AGENT: &str = "local";

/// Where status updates go: given to whoever produces them (the local agent, the broker) at
/// construction, so that they need not know who consumes them (the broker, the router).
pub type StatusSink = Arc<dyn Fn(TaskUpdate) + Send + Sync>;

/// What an agent reports about a task.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub task_id: String,
    pub event: TaskEvent,
    /// Told once the coordinator has applied the update durably (remote agents resend an
    /// update until the server acknowledges it).
    pub ack: Option<UpdateAck>,
}

impl TaskUpdate {
    pub fn new(task_id: impl Into<String>, event: TaskEvent) -> Self {
        TaskUpdate {
            task_id: task_id.into(),
            event,
            ack: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum TaskEvent {
    /// The task's process started (or was adopted still running) on `agent`.
    Started {
        at_ms: i64,
        agent: String,
    },
    Ended {
        end: TaskEnd,
        at_ms: i64,
    },
    /// Asked to adopt a task that no agent ever launched (the server died between recording
    /// the launch and making it): launching it now runs it once, not twice.
    NeverLaunched,
    /// No agent can take the task yet: it waits for an offer that fits, for this reason.
    WaitingForOffer {
        reason: String,
    },
}

/// Calls back once a coordinator has applied an update: `true` when it was about the
/// instance's current attempt.
#[derive(Clone)]
pub struct UpdateAck(Arc<dyn Fn(bool) + Send + Sync>);

impl UpdateAck {
    pub fn new(callback: impl Fn(bool) + Send + Sync + 'static) -> Self {
        UpdateAck(Arc::new(callback))
    }

    pub fn applied(&self, current: bool) {
        (self.0)(current)
    }
}

impl std::fmt::Debug for UpdateAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpdateAck")
    }
}
