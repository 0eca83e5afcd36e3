//! What a remote agent (`dron agent`) and the server say to each other: JSON messages, one per
//! WebSocket text frame, on the server's HTTP port (`GET /api/agents/connect`).
//!
//! The agent speaks first (`register`); the server answers `registered` with its epoch. Every
//! command the server sends carries that epoch, and an agent refuses commands from an epoch
//! older than the newest it has seen: a server that was presumed dead and came back cannot
//! start or kill work (fencing). Status updates are resent by the agent until acknowledged.

use std::collections::BTreeMap;

use dron_model::demand::Resources;
use serde::{Deserialize, Serialize};

use crate::spec::TaskSpec;
use crate::update::TaskEvent;

/// The protocol's version: a server refuses agents that speak another.
pub const PROTOCOL_VERSION: u32 = 1;

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    #[serde(rename_all = "camelCase")]
    Register {
        protocol: u32,
        /// Stable across restarts (kept in the agent's work directory).
        agent_id: String,
        /// Unique among connected agents; what runs record and constraints' `hostname` means.
        name: String,
        /// What the agent offers in all; the server tracks what its tasks use.
        resources: Resources,
        attributes: BTreeMap<String, String>,
        /// Tasks the agent still runs or whose end it has not had acknowledged.
        tasks: Vec<String>,
        /// The newest server epoch the agent has obeyed: a server whose own epoch is older
        /// has been superseded, and refuses the agent rather than command it.
        newest_epoch: u64,
        /// Fresh for each registration: a server with the epoch key answers a proof of its
        /// epoch made with it (`Registered::proof`). Absent from older agents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// Registrations this agent refused since it started because the server's epoch was
        /// not proved (a forged epoch): the server shows it in its metrics.
        #[serde(default, skip_serializing_if = "is_zero")]
        epochs_refused: u64,
    },
    Heartbeat,
    #[serde(rename_all = "camelCase")]
    Status {
        task_id: String,
        event: TaskEvent,
    },
    /// The answer to [`ServerMessage::ReadOutput`].
    #[serde(rename_all = "camelCase")]
    Output {
        request: u64,
        chunk: Result<OutputChunk, String>,
    },
    /// A command the agent refused (a stale epoch, a task it cannot run).
    #[serde(rename_all = "camelCase")]
    Rejected {
        task_id: Option<String>,
        reason: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Registered {
        epoch: u64,
        heartbeat_ms: u64,
        /// HMAC-SHA256 (hex) of the registration's nonce and `epoch` with the epoch key, from a
        /// server that has one (docs/security.md, "Epochs").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
    },
    /// Registration refused; the agent says why and retries later.
    #[serde(rename_all = "camelCase")]
    Refused {
        reason: String,
    },
    HeartbeatAck,
    #[serde(rename_all = "camelCase")]
    Launch {
        epoch: u64,
        task: TaskSpec,
    },
    #[serde(rename_all = "camelCase")]
    Kill {
        epoch: u64,
        task_id: String,
    },
    /// Report how a task ended, or that it still runs, or that it never started here.
    #[serde(rename_all = "camelCase")]
    Adopt {
        epoch: u64,
        task_id: String,
        timeout_deadline_ms: Option<i64>,
    },
    /// Read a run's `stdout` or `stderr` from `offset` (for the API: output stays on the agent).
    #[serde(rename_all = "camelCase")]
    ReadOutput {
        request: u64,
        task_id: String,
        file: String,
        offset: u64,
    },
    /// The server has durably applied the task's status update of this kind.
    #[serde(rename_all = "camelCase")]
    Ack {
        task_id: String,
        started: bool,
    },
}

/// Bytes of a run's output read on its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputChunk {
    /// The bytes, base64 (output need not be UTF-8).
    pub base64: String,
    /// Where to read next.
    pub next: u64,
    /// The run has ended and nothing is left past `next`.
    pub finished: bool,
}

/// An agent's fencing rule: commands from an epoch older than the newest seen are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence {
    pub newest_epoch: u64,
}

impl Fence {
    /// Admits a command of `epoch`, raising the fence when it is newer.
    pub fn admit(&mut self, epoch: u64) -> Result<(), String> {
        if epoch < self.newest_epoch {
            return Err(format!(
                "stale server epoch {epoch}: this agent has seen epoch {}",
                self.newest_epoch
            ));
        }
        self.newest_epoch = epoch;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TaskEnd;

    #[test]
    fn fence_refuses_older_epochs_only() {
        let mut fence = Fence::default();
        assert!(fence.admit(5).is_ok());
        assert!(fence.admit(5).is_ok(), "the same server again");
        assert!(fence.admit(7).is_ok());
        let refused = fence.admit(6).unwrap_err();
        assert!(refused.contains("stale server epoch 6"), "{refused}");
        assert_eq!(fence.newest_epoch, 7);
    }

    #[test]
    fn messages_are_tagged_json() {
        let status = AgentMessage::Status {
            task_id: "ct:1:0:a:".into(),
            event: TaskEvent::Ended {
                end: TaskEnd::Exited(3),
                at_ms: 9,
            },
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["type"], "status");
        assert_eq!(json["taskId"], "ct:1:0:a:");
        assert_eq!(json["event"]["kind"], "ended");
        let back: AgentMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
