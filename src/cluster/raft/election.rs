//! Elections with a pre-vote: a follower that finds its leader gone first asks the other voters
//! whether they would vote for it, and stands for election (`Raft::trigger().elect()`) only if
//! a majority would. openraft 0.9 has no pre-vote, so its own elections are turned off
//! (`Config::enable_elect`) and this module's task starts them instead.
//!
//! Why (bug 11 of docs/reliability.md): without it, the first follower to time out stands at
//! once, even when its log is behind another's. Refused for its shorter log, it has still taken
//! the next term's vote for itself, so the up-to-date follower, standing in that same term, is
//! refused too and wins only at the next election, an election timeout later: failovers of
//! 4.4 s where one election takes 2. And a server cut from the leader alone (the nemesis's
//! `split-majority`) raised its term at every timeout, deposing the leader when the cut healed.
//! With the pre-vote, neither stands: the up-to-date follower wins the first election, and a
//! server that still has a leader around it keeps its term.
//!
//! The pre-vote asks what openraft's vote checks (`Engine::handle_vote_req`), without changing
//! anything: a voter grants it unless it leads, or it heard from a leader within the leader
//! lease (`election_timeout_max`), or its log is ahead of the candidate's. The timing is
//! openraft's own: a follower stands once it has not heard from its leader for the lease plus a
//! random election timeout (a candidate, or one that has no leader, for the timeout alone), but
//! the timeout is drawn again at every attempt, so that two candidates that collided once do not
//! collide again.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use openraft::error::Fatal;
use openraft::{Config, LogId, ServerState, TokioRuntime};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::RaftSettings;
use super::db::RaftDb;
use super::log_store;
use super::network::Network;
use super::space::Space;
use super::types::{Member, Raft};
use crate::cluster::view::NodeId;

/// Asks a voter whether it would vote for the candidate: see [`would_vote`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The candidate's last log id: a voter whose log is ahead would refuse it.
    pub last_log_id: Option<LogId<NodeId>>,
}

/// A voter's answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// Why not, for the candidate's log.
    pub refusal: Option<Refusal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The voter leads.
    Leads,
    /// The voter heard from its leader less than the leader lease ago.
    HasLeader,
    /// The voter's log is ahead of the candidate's.
    LogAhead,
}

/// The timings the pre-vote uses, from [`RaftSettings`].
#[derive(Debug, Clone)]
pub struct Timing {
    /// openraft's leader lease: how long after hearing from its leader a voter refuses votes.
    pub lease: Duration,
    pub timeout_min: Duration,
    pub timeout_max: Duration,
    /// How often the task looks at its Raft's state.
    pub tick: Duration,
    config: Arc<Config>,
}

impl Timing {
    /// From the settings, and openraft's `config` made of them (it draws the timeouts).
    pub fn of(settings: &RaftSettings, config: Arc<Config>) -> Timing {
        Timing {
            lease: Duration::from_millis(settings.election_timeout_max_ms),
            timeout_min: Duration::from_millis(settings.election_timeout_min_ms),
            timeout_max: Duration::from_millis(settings.election_timeout_max_ms),
            tick: Duration::from_millis((settings.heartbeat_ms / 2).max(10)),
            config,
        }
    }

    /// A random election timeout in `[min, max)`, drawn as openraft draws its own.
    fn random_timeout(&self) -> Duration {
        Duration::from_millis(self.config.new_rand_election_timeout::<TokioRuntime>())
    }
}

/// What this server's Raft knows that an election turns on, read inside openraft's core.
#[derive(Debug, Clone)]
struct Standing {
    state: ServerState,
    /// Whether this server's vote is for a leader it knows (openraft's committed vote).
    has_leader: bool,
    /// When its vote last changed or was refreshed: for a follower, when it last heard from
    /// its leader; for a candidate, when it stood.
    vote_touched_at: Option<Instant>,
    /// The voter sets a majority is needed in (two while the membership changes).
    voter_sets: Vec<BTreeSet<NodeId>>,
    /// Every voter's address.
    voters: Vec<(NodeId, Member)>,
}

impl Standing {
    fn is_voter(&self, id: NodeId) -> bool {
        self.voter_sets.iter().any(|set| set.contains(&id))
    }

    /// Whether `granted` holds a majority of every voter set.
    fn majority_in(&self, granted: &BTreeSet<NodeId>) -> bool {
        self.voter_sets
            .iter()
            .all(|set| set.intersection(granted).count() * 2 > set.len())
    }
}

async fn standing(raft: &Raft) -> Result<Standing, Fatal<NodeId>> {
    raft.with_raft_state(|state| {
        let membership = state.membership_state.effective().membership();
        Standing {
            state: state.server_state,
            has_leader: state.vote_ref().is_committed(),
            vote_touched_at: state.vote_last_modified(),
            voter_sets: membership.get_joint_config().clone(),
            voters: membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|m| (id, m.clone())))
                .collect(),
        }
    })
    .await
}

/// Whether a voter in `standing`, whose log ends at `last_log_id`, would vote for `request`'s
/// candidate now (see the module's comment), or why not.
fn would_vote(
    standing: &Standing,
    last_log_id: Option<LogId<NodeId>>,
    request: &PreVoteRequest,
    lease: Duration,
    now: Instant,
) -> Result<(), Refusal> {
    if standing.state == ServerState::Leader {
        return Err(Refusal::Leads);
    }
    let heard_lately = standing
        .vote_touched_at
        .is_some_and(|at| now.saturating_duration_since(at) <= lease);
    if standing.has_leader && heard_lately {
        return Err(Refusal::HasLeader);
    }
    if request.last_log_id < last_log_id {
        return Err(Refusal::LogAhead);
    }
    Ok(())
}

/// The id of the last entry in this server's log, read from its database (openraft keeps its
/// own copy private). None once the database is closed, or if it cannot be read: then this
/// server neither grants nor asks for pre-votes.
fn last_log_id(log: &Weak<RaftDb>) -> Option<Option<LogId<NodeId>>> {
    let db = log.upgrade()?;
    match log_store::last_log_id(&db) {
        Ok(last) => Some(last),
        Err(error) => {
            tracing::warn!(%error, "cannot read the Raft log's last entry for a pre-vote");
            None
        }
    }
}

/// The voter's side of the pre-vote, as the routes serve it. Holds the Raft log's database
/// weakly, so that the routes do not keep it open after the Raft stops.
#[derive(Clone)]
pub struct Voter {
    pub raft: Raft,
    pub log: Weak<RaftDb>,
    /// openraft's leader lease (`election_timeout_max`).
    pub lease: Duration,
}

impl Voter {
    pub async fn answer(&self, request: &PreVoteRequest) -> Result<PreVoteResponse, Fatal<NodeId>> {
        let standing = standing(&self.raft).await?;
        let Some(last_log_id) = last_log_id(&self.log) else {
            return Err(Fatal::Stopped);
        };
        let verdict = would_vote(&standing, last_log_id, request, self.lease, Instant::now());
        if let Err(refusal) = verdict {
            tracing::debug!(candidate = request.candidate, ?refusal, "pre-vote refused");
        }
        Ok(PreVoteResponse {
            granted: verdict.is_ok(),
            refusal: verdict.err(),
        })
    }
}

/// The candidate's side: runs until this server's Raft stops. Each tick, a voter that is not
/// leading and has waited long enough (see the module's comment) asks for pre-votes, and
/// stands if a majority of every voter set (itself included) would vote for it.
pub async fn run(
    this: NodeId,
    raft: Raft,
    log: Weak<RaftDb>,
    network: Arc<Network>,
    space: Arc<Space>,
    timing: Timing,
) {
    let mut timeout = timing.random_timeout();
    let mut last_attempt: Option<Instant> = None;
    loop {
        tokio::time::sleep(timing.tick).await;
        // The metrics are a watch: a leader (most ticks of a busy server) costs no message
        // to openraft's core.
        if raft.metrics().borrow().state == ServerState::Leader {
            continue;
        }
        let Ok(standing) = standing(&raft).await else {
            return;
        };
        // A server whose disk is full asks for no votes (see `network::Peer::call`).
        if standing.state == ServerState::Leader || !standing.is_voter(this) || space.is_full() {
            continue;
        }
        let wait = if standing.has_leader {
            timing.lease + timeout
        } else {
            timeout
        };
        let since = standing.vote_touched_at.max(last_attempt);
        if since.is_some_and(|at| at.elapsed() < wait) {
            continue;
        }
        last_attempt = Some(Instant::now());
        timeout = timing.random_timeout();
        let Some(last_log_id) = last_log_id(&log) else {
            continue;
        };
        if !pre_vote(this, last_log_id, &standing, &network, &timing).await {
            continue;
        }
        // While the pre-vote was out, this server may have voted for another candidate, or
        // heard from a new leader (both refresh its vote): standing now would depose it.
        let Ok(now) = self::standing(&raft).await else {
            return;
        };
        if now.vote_touched_at != standing.vote_touched_at || now.state == ServerState::Leader {
            tracing::debug!("voted or heard from a leader during the pre-vote: not standing");
            continue;
        }
        tracing::info!(
            ?last_log_id,
            "a majority would vote for this server: standing for election"
        );
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

/// Whether a majority of every voter set would vote for this server.
async fn pre_vote(
    this: NodeId,
    last_log_id: Option<LogId<NodeId>>,
    standing: &Standing,
    network: &Arc<Network>,
    timing: &Timing,
) -> bool {
    let request = PreVoteRequest {
        candidate: this,
        last_log_id,
    };
    let mut asks: FuturesUnordered<_> = standing
        .voters
        .iter()
        .filter(|(id, _)| *id != this)
        .map(|(id, member)| {
            let request = &request;
            async move {
                let answer = network
                    .pre_vote(*id, member, request, timing.timeout_min)
                    .await;
                (*id, answer)
            }
        })
        .collect();
    let mut granted = BTreeSet::from([this]);
    let mut refusals = Vec::new();
    // Decided as soon as a majority grants: a paused voter's silence would otherwise hold the
    // candidate back for the whole deadline, while the others move on.
    while !standing.majority_in(&granted) {
        let Some((id, answer)) = asks.next().await else {
            tracing::debug!(
                ?granted,
                ?refusals,
                "the pre-vote found no majority: not standing"
            );
            return false;
        };
        match answer {
            Ok(PreVoteResponse { granted: true, .. }) => {
                granted.insert(id);
            }
            Ok(PreVoteResponse { refusal, .. }) => refusals.push(format!("{id}: {refusal:?}")),
            Err(error) => refusals.push(format!("{id}: {error}")),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    fn follower(has_leader: bool, heard_ms_ago: u64) -> Standing {
        Standing {
            state: ServerState::Follower,
            has_leader,
            vote_touched_at: Some(Instant::now() - Duration::from_millis(heard_ms_ago)),
            voter_sets: vec![BTreeSet::from([1, 2, 3])],
            voters: Vec::new(),
        }
    }

    fn asks(last: Option<LogId<NodeId>>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            last_log_id: last,
        }
    }

    const LEASE: Duration = Duration::from_millis(1200);
    /// The voter's last log id.
    fn mine() -> Option<LogId<NodeId>> {
        log_id(3, 10)
    }

    #[test]
    fn a_voter_refuses_while_it_hears_from_its_leader() {
        let voter = follower(true, 100);
        let verdict = would_vote(&voter, mine(), &asks(log_id(3, 10)), LEASE, Instant::now());
        assert_eq!(verdict, Err(Refusal::HasLeader));
    }

    #[test]
    fn a_voter_whose_leader_went_silent_grants_an_up_to_date_candidate() {
        let voter = follower(true, 1500);
        assert_eq!(
            would_vote(&voter, mine(), &asks(log_id(3, 10)), LEASE, Instant::now()),
            Ok(())
        );
        assert_eq!(
            would_vote(&voter, mine(), &asks(log_id(4, 2)), LEASE, Instant::now()),
            Ok(()),
            "a later term's log is ahead, however short"
        );
    }

    #[test]
    fn a_voter_refuses_a_candidate_whose_log_is_behind() {
        let voter = follower(true, 1500);
        let now = Instant::now();
        assert_eq!(
            would_vote(&voter, mine(), &asks(log_id(3, 9)), LEASE, now),
            Err(Refusal::LogAhead)
        );
        assert_eq!(
            would_vote(&voter, mine(), &asks(log_id(2, 50)), LEASE, now),
            Err(Refusal::LogAhead),
            "an earlier term's log is behind, however long"
        );
    }

    #[test]
    fn a_candidate_grants_whoever_is_up_to_date_and_a_leader_no_one() {
        // A candidate's vote is for itself, uncommitted: no lease holds it back.
        let mut voter = follower(false, 10);
        voter.state = ServerState::Candidate;
        assert_eq!(
            would_vote(&voter, mine(), &asks(log_id(3, 10)), LEASE, Instant::now()),
            Ok(())
        );
        voter.state = ServerState::Leader;
        assert_eq!(
            would_vote(&voter, mine(), &asks(log_id(9, 99)), LEASE, Instant::now()),
            Err(Refusal::Leads)
        );
    }

    #[test]
    fn a_majority_is_needed_in_both_sets_while_the_membership_changes() {
        let mut standing = follower(false, 0);
        assert!(standing.majority_in(&BTreeSet::from([1, 2])));
        assert!(!standing.majority_in(&BTreeSet::from([1])));
        standing.voter_sets = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert!(!standing.majority_in(&BTreeSet::from([1, 2])));
        assert!(standing.majority_in(&BTreeSet::from([1, 3, 4])));
    }

    #[test]
    fn timeouts_are_drawn_in_their_range() {
        let settings = RaftSettings::default();
        let timing = Timing::of(&settings, Arc::new(settings.config().unwrap()));
        let drawn: BTreeSet<Duration> = (0..50).map(|_| timing.random_timeout()).collect();
        assert!(
            drawn
                .iter()
                .all(|t| *t >= timing.timeout_min && *t < timing.timeout_max)
        );
        assert!(drawn.len() > 40, "not random: {drawn:?}");
    }
}
