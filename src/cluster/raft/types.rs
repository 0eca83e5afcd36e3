//! openraft's type configuration for dron, and the few types it names: the opaque payload, a
//! member's address, and the responder that turns openraft's answer to a proposal into ours.

use std::io::Cursor;

use openraft::error::ClientWriteError;
use openraft::raft::ClientWriteResponse;
use openraft::raft::responder::Responder;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::error::ProposeError;
use crate::cluster::view::NodeId;

/// A member as stored in the membership: its HTTP base address, e.g. `"http://127.0.0.1:4401"`.
/// Raft traffic to it goes to `{address}/internal/raft/...`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub address: String,
}

/// One entry's payload: bytes the layer above encoded. The adapter never looks inside.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(pub Vec<u8>);

openraft::declare_raft_types!(
    /// dron's Raft: opaque payloads, `u64` node ids, members known by their HTTP address,
    /// snapshots held in memory (`Cursor<Vec<u8>>`, see the module docs for what that costs).
    pub TypeConfig:
        D = Payload,
        // Nothing to answer but the entry's log id, which openraft's response carries anyway.
        R = (),
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        Responder = ProposeResponder,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;

/// What a proposal's receiver resolves to: its log index once applied here, or why not.
pub type Proposed = Result<u64, ProposeError>;

/// Answers a proposal straight into the receiver `RaftNode::propose` hands out, mapping
/// openraft's answer on the way, so that no task per proposal is needed to translate it.
pub struct ProposeResponder {
    tx: oneshot::Sender<Proposed>,
}

impl Responder<TypeConfig> for ProposeResponder {
    type Receiver = oneshot::Receiver<Proposed>;

    fn from_app_data(app_data: Payload) -> (Payload, Self, Self::Receiver) {
        let (tx, rx) = oneshot::channel();
        (app_data, ProposeResponder { tx }, rx)
    }

    fn send(
        self,
        result: Result<ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, Member>>,
    ) {
        let answer = match result {
            Ok(response) => Ok(response.log_id.index),
            Err(ClientWriteError::ForwardToLeader(forward)) => Err(ProposeError::NotLeader {
                leader: forward
                    .leader_id
                    .zip(forward.leader_node.map(|member| member.address)),
            }),
            // Only membership changes answer this, and the adapter proposes none.
            Err(ClientWriteError::ChangeMembershipError(error)) => {
                Err(ProposeError::Raft(error.to_string()))
            }
        };
        // The proposer may have stopped waiting: nothing to do then.
        let _ = self.tx.send(answer);
    }
}
