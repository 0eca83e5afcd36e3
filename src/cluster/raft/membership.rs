//! Membership changes, on the leader: a server added as a learner, promoted to a voter once it
//! has caught up, and a server removed, each through openraft's joint consensus
//! (`change_membership`: a joint configuration of the old and new voters, then the new one).
//!
//! The addresses of the members live in the membership, in the log: every server reaches a
//! member added later at the address it was added with, whatever `--peers` said.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership, ServerState};

use super::RaftNode;
use super::types::{LogId, Member, Raft};
use crate::cluster::view::{MembershipError, NodeId};

/// How long a membership change may take to commit before the caller is answered (it goes on
/// in the background: a change half done would leave the cluster in its joint configuration).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, Member>>;

fn write_error(error: WriteError) -> MembershipError {
    match error {
        RaftError::Fatal(_) => MembershipError::Stopped,
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(progress),
        )) => MembershipError::InProgress(progress.to_string()),
        RaftError::APIError(other) => MembershipError::Raft(other.to_string()),
    }
}

/// Whether two base addresses name the same server (`--peers` compares them this way).
fn same_address(a: &str, b: &str) -> bool {
    let key = |address: &str| address.trim_end_matches('/').to_ascii_lowercase();
    key(a) == key(b)
}

impl RaftNode {
    /// The membership, if this server leads.
    fn leading_membership(&self) -> Result<Membership<NodeId, Member>, MembershipError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return Err(MembershipError::NotLeader);
        }
        Ok(metrics.membership_config.membership().clone())
    }

    /// Adds node `id` at `address` (its HTTP base address, already checked): as a learner
    /// first, which the leader replicates to (from a snapshot when the log behind is purged)
    /// until it holds the entry that added it, within `catch_up`; then as a voter. A learner
    /// added before is promoted (with the address given now).
    pub async fn add_node(
        &self,
        id: NodeId,
        address: String,
        catch_up: Duration,
    ) -> Result<(), MembershipError> {
        let membership = self.leading_membership()?;
        let voters = membership.get_joint_config().last().cloned();
        if voters.is_some_and(|voters| voters.contains(&id)) {
            let address = membership
                .get_node(&id)
                .map(|member| member.address.clone())
                .unwrap_or_default();
            return Err(MembershipError::AlreadyMember { id, address });
        }
        if let Some((other, _)) = membership
            .nodes()
            .find(|(other, member)| **other != id && same_address(&member.address, &address))
        {
            return Err(MembershipError::AddressTaken {
                address,
                other: *other,
            });
        }
        let member = Member {
            address: address.clone(),
        };
        let added = self
            .raft
            .add_learner(id, member, false)
            .await
            .map_err(write_error)?;
        tracing::info!(node = id, %address, "added as a learner; waiting for it to catch up");
        self.caught_up(id, added.log_id, catch_up)
            .await
            .map_err(|()| MembershipError::CatchUpTimeout {
                id,
                address,
                secs: catch_up.as_secs(),
            })?;
        let voter = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        committed(&self.raft, voter).await?;
        tracing::info!(node = id, "a voter now");
        Ok(())
    }

    /// Waits until the leader knows that `id` holds the log up to `added`; `Err` if not within
    /// `within`, or if this server stops leading meanwhile.
    async fn caught_up(&self, id: NodeId, added: LogId, within: Duration) -> Result<(), ()> {
        let mut metrics = self.raft.metrics();
        let holds = metrics.wait_for(|metrics| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&id).copied().flatten());
            metrics.state != ServerState::Leader || matched >= Some(added)
        });
        match tokio::time::timeout(within, holds).await {
            Ok(Ok(metrics)) if metrics.state == ServerState::Leader => Ok(()),
            _ => Err(()),
        }
    }

    /// Removes node `id`, voter or learner, from the membership. A removed leader steps down
    /// once the change is committed (an election follows among the others).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), MembershipError> {
        let membership = self.leading_membership()?;
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::UnknownNode {
                id,
                members: membership.nodes().map(|(id, _)| *id).collect(),
            });
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let removed = BTreeSet::from([id]);
        let change = if !voters.contains(&id) {
            ChangeMembers::RemoveNodes(removed)
        } else if voters.len() == 1 {
            return Err(MembershipError::LastVoter { id });
        } else {
            ChangeMembers::RemoveVoters(removed)
        };
        committed(&self.raft, change).await?;
        tracing::info!(node = id, "removed from the cluster");
        Ok(())
    }
}

/// Commits `change` through joint consensus (not retaining removed voters as learners). It
/// runs in a task of its own, so that it completes even when the caller stops waiting.
async fn committed(
    raft: &Raft,
    change: ChangeMembers<NodeId, Member>,
) -> Result<(), MembershipError> {
    let raft = raft.clone();
    let change = tokio::spawn(async move { raft.change_membership(change, false).await });
    match tokio::time::timeout(COMMIT_TIMEOUT, change).await {
        Ok(Ok(result)) => result.map(drop).map_err(write_error),
        Ok(Err(panicked)) => Err(MembershipError::Raft(panicked.to_string())),
        Err(_) => Err(MembershipError::CommitTimeout {
            secs: COMMIT_TIMEOUT.as_secs(),
        }),
    }
}
