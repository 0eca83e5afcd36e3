//! What the HTTP API and the CLI see of the cluster, and the settings a server is started
//! with. Kept apart from the Raft adapter so that neither side depends on the other's insides.

use serde::{Deserialize, Serialize};

/// A server's id in the cluster (`--node-id`), as openraft's `NodeId`.
pub type NodeId = u64;

/// A server's role as this server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// Not a voter, or not started yet.
    Learner,
    /// This server's Raft has stopped (a fatal storage error): it answers nothing but health.
    Shutdown,
}

/// One member of the cluster, as `GET /api/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: NodeId,
    /// Its HTTP base address, e.g. `http://127.0.0.1:4401`.
    pub address: String,
    /// The leader, or a follower; what this server knows of the others (a follower knows only
    /// who leads).
    pub role: Role,
    /// The last log index the leader knows this node holds (known on the leader only).
    pub matched_index: Option<u64>,
    /// How far behind the leader's log this node is, in ms (known on the leader only).
    pub lag_ms: Option<u64>,
}

/// `GET /api/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The leader's id, if one is known.
    pub leader: Option<NodeId>,
    /// The leader's HTTP base address, if one is known: where writes are forwarded.
    pub leader_address: Option<String>,
    pub term: u64,
    /// This server's id and role.
    pub this_node: NodeId,
    pub role: Role,
    /// Whether the scheduler (router, coordinators, broker...) runs on this server: on the
    /// leader, once it has applied its first entry of the term and recovered.
    pub scheduling: bool,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub nodes: Vec<NodeStatus>,
}

/// Something that can say what the cluster looks like now (the Raft node, in a server).
pub trait ClusterView: Send + Sync + 'static {
    fn status(&self) -> ClusterStatus;

    /// Whether the scheduler runs on this server: `status().scheduling`. The API asks it on
    /// every request (to forward those it cannot answer): override it with something cheaper
    /// (an atomic load) where `status` builds the whole answer.
    fn scheduling(&self) -> bool {
        self.status().scheduling
    }
}
