//! What `GET /api/agents` and `dron agents` show of each agent.

use std::collections::BTreeMap;

use dron_model::demand::Resources;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AgentState {
    /// Connected and heartbeating: gets new tasks.
    Active,
    /// Connection gone, not yet past the agent timeout: its tasks are presumed running.
    Disconnected,
    /// Silent past the agent timeout: its tasks were declared lost and retried elsewhere.
    Lost,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub state: AgentState,
    /// The agent inside the server process.
    pub local: bool,
    pub last_heartbeat_ms: Option<i64>,
    pub attributes: BTreeMap<String, String>,
    pub offered: Resources,
    pub used: Resources,
    pub free: Resources,
    pub tasks: usize,
}
