use std::sync::Arc;

use dron_model::demand::TaskDemand;
use dron_task::TaskSpec;
use dron_task::protocol::{AgentMessage, OutputChunk, ServerMessage};
use ractor::RpcReplyPort;
use tokio::sync::mpsc;

// The status types are part of the task contract (`dron-task`); re-exported so that
// `broker::{TaskEvent, TaskUpdate, UpdateAck}` keep their old paths.
pub use dron_task::{TaskEvent, TaskUpdate, UpdateAck};

use super::view::AgentView;

pub enum BrokerMsg {
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
        outbox: mpsc::Sender<ServerMessage>,
    },
    /// A message a remote agent sent on a connection.
    FromAgent {
        connection: u64,
        message: AgentMessage,
    },
    Disconnected {
        connection: u64,
    },
    /// The agent's credential was revoked: close its connection.
    CloseAgent {
        name: String,
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
    /// A backfill's run: its owner's other tasks waiting for room go ahead of it, so a
    /// backfill never holds up scheduled runs.
    pub backfill: bool,
}
