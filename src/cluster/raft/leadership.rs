//! What the layer above sees of Raft: leadership as it changes (from openraft's metrics), and
//! the cluster's status as `GET /api/cluster` shows it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;

use super::types::Member;
use crate::cluster::view::{ClusterStatus, NodeId, NodeStatus, Role};

type Metrics = RaftMetrics<NodeId, Member>;

/// Leadership as this server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub this_node: NodeId,
    /// This server's role; `Shutdown` once its Raft has stopped.
    pub role: Role,
    /// The leader this server knows of (its vote is committed)...
    pub leader: Option<NodeId>,
    /// ...and its HTTP base address, where writes are forwarded.
    pub leader_address: Option<String>,
    pub term: u64,
    /// The last log index applied on this server (by the `Applier`).
    pub last_applied: Option<u64>,
    /// On the leader: ms since a quorum last acknowledged it (openraft's
    /// `millis_since_quorum_ack`), as of `quorum_acked_at`'s computation.
    pub millis_since_quorum_ack: Option<u64>,
    /// On the leader: when a quorum last acknowledged it. Unlike the ms above, it stays right
    /// between updates, so a lease check is `quorum_acked_at.elapsed() < lease`.
    pub quorum_acked_at: Option<Instant>,
}

impl Leadership {
    pub fn starting(this_node: NodeId) -> Leadership {
        Leadership {
            this_node,
            role: Role::Learner,
            leader: None,
            leader_address: None,
            term: 0,
            last_applied: None,
            millis_since_quorum_ack: None,
            quorum_acked_at: None,
        }
    }

    /// Whether `self` and `other` differ in what watchers are woken for: role, leader, term
    /// or last applied index. The quorum ack's age changes at every metrics report (several
    /// times per heartbeat); it is updated in place without waking anyone.
    fn differs_from(&self, other: &Leadership) -> bool {
        (
            self.role,
            self.leader,
            &self.leader_address,
            self.term,
            self.last_applied,
        ) != (
            other.role,
            other.leader,
            &other.leader_address,
            other.term,
            other.last_applied,
        )
    }
}

/// This server's role. A server missing from a membership that has members was removed
/// (`Removed`); one whose membership is empty has not been added yet (`Learner`).
pub fn role_of(metrics: &Metrics) -> Role {
    if metrics.running_state.is_err() {
        return Role::Shutdown;
    }
    let membership = metrics.membership_config.membership();
    if membership.get_node(&metrics.id).is_none() && membership.nodes().next().is_some() {
        return Role::Removed;
    }
    match metrics.state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// The leader this server knows of, and its address. None on a removed server: the leader
/// it remembers may be itself, which leads no more.
fn leader_of(metrics: &Metrics) -> Option<(NodeId, String)> {
    if role_of(metrics) == Role::Removed {
        return None;
    }
    let leader = metrics.current_leader?;
    let member = metrics.membership_config.membership().get_node(&leader);
    Some((
        leader,
        member.map(|m| m.address.clone()).unwrap_or_default(),
    ))
}

fn leadership_of(metrics: &Metrics, now: Instant) -> Leadership {
    let millis = metrics.millis_since_quorum_ack;
    let leader = leader_of(metrics);
    Leadership {
        this_node: metrics.id,
        role: role_of(metrics),
        leader: leader.as_ref().map(|(id, _)| *id),
        leader_address: leader.map(|(_, address)| address),
        term: metrics.current_term,
        last_applied: metrics.last_applied.map(|id| id.index),
        millis_since_quorum_ack: millis,
        quorum_acked_at: millis.map(|ms| {
            now.checked_sub(std::time::Duration::from_millis(ms))
                .unwrap_or(now)
        }),
    }
}

/// On the leader, when each member last held every entry the leader had: its lag is the time
/// since (0 while it holds them all). Known only while this server leads.
#[derive(Default)]
pub struct Lag {
    caught_up_at: HashMap<NodeId, Instant>,
}

impl Lag {
    fn update(&mut self, metrics: &Metrics, now: Instant) {
        let Some(replication) = metrics.replication.as_ref() else {
            self.caught_up_at.clear();
            return;
        };
        let last = metrics.last_log_index;
        for (id, matched) in replication {
            let since = self.caught_up_at.entry(*id).or_insert(now);
            if matched.map(|m| m.index) >= last {
                *since = now;
            }
        }
    }

    fn lag_ms(
        &self,
        id: NodeId,
        matched: Option<u64>,
        last: Option<u64>,
        now: Instant,
    ) -> Option<u64> {
        if matched >= last {
            return Some(0);
        }
        let since = self.caught_up_at.get(&id)?;
        Some(now.saturating_duration_since(*since).as_millis() as u64)
    }
}

/// Follows openraft's metrics until its Raft stops: publishes leadership changes and keeps
/// the lag of each member up to date.
pub async fn follow(
    mut metrics: watch::Receiver<Metrics>,
    leadership: watch::Sender<Leadership>,
    lag: Arc<Mutex<Lag>>,
) {
    loop {
        {
            let current = metrics.borrow_and_update();
            let now = Instant::now();
            let next = leadership_of(&current, now);
            lock(&lag).update(&current, now);
            leadership.send_if_modified(|published| {
                let changed = next.differs_from(published);
                *published = next;
                changed
            });
        }
        if metrics.changed().await.is_err() {
            break;
        }
    }
    leadership.send_modify(|published| {
        published.role = Role::Shutdown;
        published.leader = None;
        published.leader_address = None;
        published.millis_since_quorum_ack = None;
        published.quorum_acked_at = None;
    });
}

fn lock(lag: &Mutex<Lag>) -> std::sync::MutexGuard<'_, Lag> {
    lag.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cluster as `GET /api/cluster` shows it, from this server's metrics. `scheduling` is
/// left false: the layer above knows whether its scheduler runs.
///
/// A leader that no quorum has acknowledged within `lease` (of `leadership`, which stays
/// right between metrics reports) is cut off from the majority: openraft still calls it the
/// leader of its term, which it cannot know it lost, but it leads nothing: it says
/// `CutOff`, with no leader known.
pub fn status(
    metrics: &Metrics,
    lag: &Mutex<Lag>,
    leadership: &Leadership,
    lease: std::time::Duration,
) -> ClusterStatus {
    let now = Instant::now();
    let mut role = role_of(metrics);
    let mut leader = leader_of(metrics);
    let cut_off = leadership
        .quorum_acked_at
        .is_some_and(|acked| now.saturating_duration_since(acked) > lease);
    if role == Role::Leader && cut_off {
        role = Role::CutOff;
        leader = None;
    }
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let lag = lock(lag);
    let nodes = membership
        .nodes()
        .map(|(id, member)| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(id))
                .map(|matched| matched.map(|m| m.index));
            NodeStatus {
                id: *id,
                address: member.address.clone(),
                role: if *id == metrics.id {
                    role
                } else if Some(*id) == metrics.current_leader {
                    Role::Leader
                } else if voters.contains(id) {
                    Role::Follower
                } else {
                    Role::Learner
                },
                matched_index: matched.flatten(),
                lag_ms: matched
                    .and_then(|matched| lag.lag_ms(*id, matched, metrics.last_log_index, now)),
            }
        })
        .collect();
    ClusterStatus {
        leader: leader.as_ref().map(|(id, _)| *id),
        leader_address: leader.map(|(_, address)| address),
        term: metrics.current_term,
        this_node: metrics.id,
        role,
        scheduling: false,
        last_log_index: metrics.last_log_index,
        last_applied: metrics.last_applied.map(|id| id.index),
        snapshot_index: metrics.snapshot.map(|id| id.index),
        purged_index: metrics.purged.map(|id| id.index),
        nodes,
    }
}
