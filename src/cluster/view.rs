//! What the HTTP API and the CLI see of the cluster, and the settings a server is started
//! with. Kept apart from the Raft adapter so that neither side depends on the other's insides.

use std::future::Future;
use std::pin::Pin;

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
    /// This server is no longer a member (`dron cluster remove-node`): it schedules nothing
    /// and should be stopped.
    Removed,
    /// This server was the leader but no majority has acknowledged it within its lease (it
    /// is cut off from the others): it stopped scheduling, and the others elect a new leader.
    #[serde(rename = "cut-off")]
    CutOff,
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
    /// The last log index in this server's snapshot (taken or received), if it has one.
    pub snapshot_index: Option<u64>,
    /// The last log index dropped from this server's log (behind a snapshot): a server
    /// further behind catches up from the snapshot.
    pub purged_index: Option<u64>,
    pub nodes: Vec<NodeStatus>,
}

/// Why a membership change was refused or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("node {id} is already a voting member of the cluster, at {address}")]
    AlreadyMember { id: NodeId, address: String },
    #[error("node {id} is not a member of the cluster (its members are {members:?})")]
    UnknownNode { id: NodeId, members: Vec<NodeId> },
    #[error(
        "node {id} is the cluster's last voting member: removing it would leave no cluster \
         (add its replacement first)"
    )]
    LastVoter { id: NodeId },
    #[error("address {address} is node {other}'s already: each node has an address of its own")]
    AddressTaken { address: String, other: NodeId },
    #[error("this server is not the leader; membership changes are made by the leader")]
    NotLeader,
    #[error("another membership change is in progress; retry once it is done: {0}")]
    InProgress(String),
    #[error(
        "node {id} was added as a learner but has not caught up within {secs} s (is it started \
         with --join and reachable at {address}?); it stays a learner: run add-node again to \
         make it a voter once it has caught up, or remove-node to drop it"
    )]
    CatchUpTimeout {
        id: NodeId,
        address: String,
        secs: u64,
    },
    #[error(
        "the membership change was not committed within {secs} s (is a majority of the servers \
         up?); it goes on in the background: see `dron cluster`"
    )]
    CommitTimeout { secs: u64 },
    #[error("the Raft node has stopped")]
    Stopped,
    #[error("the membership change failed in Raft: {0}")]
    Raft(String),
}

/// A membership change under way.
pub type Changing<'a> = Pin<Box<dyn Future<Output = Result<(), MembershipError>> + Send + 'a>>;

/// Something that can say what the cluster looks like now (the Raft node, in a server).
pub trait ClusterView: Send + Sync + 'static {
    fn status(&self) -> ClusterStatus;

    /// Whether the scheduler runs on this server: `status().scheduling`. The API asks it on
    /// every request (to forward those it cannot answer): override it with something cheaper
    /// (an atomic load) where `status` builds the whole answer.
    fn scheduling(&self) -> bool {
        self.status().scheduling
    }

    /// Adds server `id` at `address` (its HTTP base address, already checked): as a learner
    /// until it has caught up, then as a voter (`dron cluster add-node`). On the leader only:
    /// elsewhere `NotLeader`, which this default answers.
    fn add_node(&self, id: NodeId, address: String) -> Changing<'_> {
        let _ = (id, address);
        Box::pin(async { Err(MembershipError::NotLeader) })
    }

    /// Removes server `id` from the cluster (`dron cluster remove-node`), on the leader.
    fn remove_node(&self, id: NodeId) -> Changing<'_> {
        let _ = id;
        Box::pin(async { Err(MembershipError::NotLeader) })
    }
}
