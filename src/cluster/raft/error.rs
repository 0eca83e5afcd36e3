//! The adapter's errors. Each message names what failed, because logs and API answers print
//! errors with `Display` only.

use std::path::PathBuf;

use dron_actors::store::StoreError;

use crate::cluster::view::NodeId;

/// Why a Raft node did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster secret is empty: Raft traffic would be unauthenticated")]
    EmptySecret,
    #[error("node {this} is not among the members {members:?}")]
    NotAMember { this: NodeId, members: Vec<NodeId> },
    #[error("member {id}'s address {address:?} is not an http:// or https:// URL")]
    BadAddress { id: NodeId, address: String },
    #[error("invalid Raft settings: {0}")]
    Settings(Box<openraft::ConfigError>),
    #[error("cannot open the Raft log in {path}: {source}")]
    Open { path: PathBuf, source: StoreError },
    #[error("cannot build the HTTP client for Raft traffic to member {id}: {cause}")]
    Client { id: NodeId, cause: String },
    #[error("openraft did not start: {0}")]
    Start(String),
    #[error("cannot initialize the cluster with members {members:?}: {cause}")]
    Initialize { members: Vec<NodeId>, cause: String },
}

/// Why a proposal was not applied (or not queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This server does not lead. `leader` is the one it knows of, with its HTTP address:
    /// where the layer above forwards the request.
    #[error("this server is not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The Raft node has stopped (shut down, or a fatal storage error).
    #[error("the Raft node has stopped")]
    Stopped,
    /// openraft refused the proposal for another reason.
    #[error("the proposal failed in Raft: {0}")]
    Raft(String),
}

fn leader_hint(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, address)) => format!(" (node {id} at {address} is)"),
        None => " (no leader is known)".to_string(),
    }
}
