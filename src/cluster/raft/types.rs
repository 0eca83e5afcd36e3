//! openraft's type configuration for dron, and the few types it names: the opaque payload, a
//! member's address, and the future that turns openraft's answer to a proposal into ours.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use openraft::error::ClientWriteError;
use openraft::raft::ClientWriteResult;
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
/// Serialized as bytes (the same postcard as a `Vec<u8>`, without a call per byte).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(#[serde(with = "crate::storage::bytes")] pub Vec<u8>);

openraft::declare_raft_types!(
    /// dron's Raft: opaque payloads, `u64` node ids, members known by their HTTP address,
    /// snapshots in files, sent and received in chunks (see `state_machine`).
    pub TypeConfig:
        D = Payload,
        // Nothing to answer but the entry's log id, which openraft's response carries anyway.
        R = (),
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        // openraft's own: its membership changes are offered with this responder only.
        Responder = openraft::raft::responder::OneshotResponder<TypeConfig>,
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

/// What a proposal resolves to: its log index once applied here, or why not.
pub type Proposed = Result<u64, ProposeError>;

/// A proposal's answer to come: openraft's own receiver, mapped to [`Proposed`] as it is
/// polled, so that no task per proposal is needed to translate it. Resolves to `Err` if the
/// Raft stopped before answering.
pub struct Proposal(oneshot::Receiver<ClientWriteResult<TypeConfig>>);

impl Proposal {
    pub fn new(receiver: oneshot::Receiver<ClientWriteResult<TypeConfig>>) -> Proposal {
        Proposal(receiver)
    }
}

impl Future for Proposal {
    type Output = Result<Proposed, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(context)
            .map(|answer| answer.map(proposed))
    }
}

fn proposed(answer: ClientWriteResult<TypeConfig>) -> Proposed {
    match answer {
        Ok(response) => Ok(response.log_id.index),
        Err(ClientWriteError::ForwardToLeader(forward)) => Err(ProposeError::NotLeader {
            leader: forward
                .leader_id
                .zip(forward.leader_node.map(|member| member.address)),
        }),
        // Only membership changes answer this, and they do not go through `propose`.
        Err(ClientWriteError::ChangeMembershipError(error)) => {
            Err(ProposeError::Raft(error.to_string()))
        }
    }
}
