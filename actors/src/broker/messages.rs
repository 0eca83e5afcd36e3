use std::sync::Arc;

use dron_model::demand::TaskDemand;
use ractor::{ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::agent::process::{TaskEnd, TaskSpec};
use crate::agent::protocol::{AgentMessage, OutputChunk, ServerMessage};
use crate::router::RouterMsg;

use super::view::AgentView;

pub enum BrokerMsg {
    /// Tells the broker where status updates go (the router is started after the broker).
    SetRouter(ActorRef<RouterMsg>),
    /// Place one attempt of an instance on an agent and launch it there.
    Launch(LaunchRequest),
    /// Kill a task, wherever it is (placed or still waiting for an offer).
    Kill {
        task_id: String,
    },
    /// After a restart: find out how a task that was running ended, or adopt it if it still
    /// runs, on the agent the coordinator recorded (None: the launch was in flight).
    Adopt {
        request: LaunchRequest,
        agent: Option<String>,
        timeout_deadline_ms: Option<i64>,
    },
    /// From the local agent, or from a remote agent once decoded.
    Update(TaskUpdate),
    /// A coordinator applied (and made durable) a status update: `current` is false when
    /// the update was about an attempt that is no longer the instance's current one.
    UpdateApplied {
        agent: String,
        task_id: String,
        started: bool,
        current: bool,
    },
    /// A remote agent's connection opened: what the broker sends to it goes to `outbox`.
    Connected {
        connection: u64,
        outbox: mpsc::UnboundedSender<ServerMessage>,
    },
    /// A message a remote agent sent on a connection.
    FromAgent {
        connection: u64,
        message: AgentMessage,
    },
    Disconnected {
        connection: u64,
    },
    /// Periodic: heartbeats, agent loss, tasks past their start deadline.
    Tick,
    /// For `GET /api/agents`.
    ListAgents(RpcReplyPort<Vec<AgentView>>),
    /// For the output endpoints: a chunk of a run's output, read on the remote agent.
    ReadOutput {
        agent: String,
        task_id: String,
        file: String,
        offset: u64,
        reply: RpcReplyPort<Result<OutputChunk, String>>,
    },
}

/// An attempt to place: the task for the agent, and what the broker needs to place it.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub spec: TaskSpec,
    pub demand: Arc<TaskDemand>,
    /// Whose share of the cluster it counts against (the job's owner).
    pub owner: String,
    /// If no agent can take it by then, it is not launched (its epsilon has passed).
    pub start_deadline_ms: Option<i64>,
}

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
