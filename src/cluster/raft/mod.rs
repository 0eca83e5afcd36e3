//! The adapter to openraft: one Raft log per cluster, its log store and state machine on
//! RocksDB, its transport on the server's own HTTP port. It knows nothing of dron's records:
//! it carries opaque payloads and hands committed ones, in log order, to an [`Applier`] (dron's
//! stores on this server). The layer above decides what the payloads are, and runs the
//! scheduler where [`RaftNode::leadership`] says this server leads.
//!
//! | file | what |
//! |---|---|
//! | [`types`] | openraft's type configuration: payload, [`Member`], the proposal responder |
//! | `db` | the Raft directory's one RocksDB and its column families |
//! | [`log_store`] | the log, vote, committed and purged pointers (`RaftLogStorage`) |
//! | [`state_machine`] | applying through the [`Applier`], snapshots (`RaftStateMachine`) |
//! | `snapshot_file` | a snapshot's files packed into one, unpacked on the receiver |
//! | [`network`] | RPCs to the other members over HTTP (`RaftNetwork`) |
//! | [`service`] | the internal routes that receive them, behind the cluster secret |
//! | [`leadership`] | leadership changes and the cluster's status, from openraft's metrics |
//! | [`membership`] | adding and removing servers (joint consensus), on the leader |
//!
//! # Why openraft 0.9.25
//!
//! It is the stable line (0.10 was only served here as alphas), and 0.9.25 carries the fixes
//! for a commit on a quorum that never existed (openraft #1802) and membership divergence
//! (#1808). 0.9 lacks two things 0.10 has: **pre-vote**, so a member cut off from the others
//! that rejoins has raised its term while alone and forces one extra election (a second or
//! two without a leader, nothing lost), and **leader transfer**, so leadership cannot be
//! handed over before a planned restart (the leader's restart costs an election, see Timing).
//! The version is pinned exactly and everything openraft-specific stays in this module.
//!
//! # Choices
//!
//! - One RocksDB in the Raft directory for the log and the state machine's bookkeeping: one
//!   WAL orders every write, and appends are group-committed by a syncer thread while the
//!   leader already replicates them ([`log_store`]).
//! - Every committed entry reaches the applier, blank and membership entries with an empty
//!   payload, so the applier's applied index is exact and is the truth after a crash
//!   ([`state_machine`]).
//! - Snapshots are files (`SnapshotData = tokio::fs::File`): the applier writes its state into
//!   a directory between two applies (dron: RocksDB checkpoints, hard links), which is packed
//!   into one file that openraft sends in chunks (`snapshot_max_chunk_size`, 1 MiB) and the
//!   receiver writes chunk by chunk into a file of its own, unpacks, and hands to the applier
//!   ([`state_machine`], `snapshot_file`). No snapshot is held in memory, and applying waits
//!   only while the applier links its files.
//! - Proposals are answered through openraft's own responder (its membership changes are
//!   offered with no other): `propose` returns its receiver, mapped to dron's answer as it is
//!   polled ([`types::Proposal`]), with no task per proposal.
//!
//! # Timing (openraft 0.9.25, read from its source)
//!
//! - **Elections follow a pre-vote** ([`election`]): openraft's own are turned off. A
//!   follower that knows a leader asks for pre-votes only `election_timeout_max` (the leader
//!   lease, during which a voter refuses votes) plus a random election timeout in `[min, max)`
//!   after it last heard from the leader, checked every half heartbeat; a candidate or a
//!   server with no leader, after the timeout alone. It stands if a majority would vote for
//!   it: a follower whose log is behind never stands, so the first election after a leader is
//!   lost is won (bug 11). With the defaults (150 ms heartbeat, 600-1200 ms) a dead leader is
//!   replaced after about 1.9-2.5 s; the tests (100 ms, 400-800 ms) see about 1.3-1.7 s.
//! - An AppendEntries RPC's deadline is the heartbeat interval (the follower's fsync
//!   included), a vote's the minimum election timeout, a snapshot chunk's
//!   `max(election_timeout_max, 1 s)` here (openraft's default is 200 ms).

mod db;
pub mod election;
pub mod error;
pub mod leadership;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod service;
mod snapshot_file;
pub mod space;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dron_actors::store::StoreError;
use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};
use tokio::sync::watch;

pub use self::error::{ClusterError, ProposeError};
pub use self::leadership::Leadership;
pub use self::types::{Member, Proposal, Proposed};
use self::types::{Payload, Raft};
pub use crate::cluster::view::MembershipError;
pub use crate::cluster::view::NodeId;
use crate::cluster::view::{ClusterStatus, ClusterView};

/// Timing and compaction of the Raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats (and the deadline of each AppendEntries RPC).
    pub heartbeat_ms: u64,
    /// A follower that has not heard from a leader for a random time in this range stands for
    /// election. The minimum must exceed the heartbeat.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many entries since the last one (0: never).
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so that a member a little behind catches up
    /// from the log rather than from a snapshot.
    pub entries_kept_after_snapshot: u64,
    /// The CA the members' certificates are verified with when their addresses are
    /// https:// (`[tls] ca`); None: the system's.
    pub peer_ca: Option<crate::tls::TrustedCa>,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_ms: 150,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 1200,
            snapshot_after_entries: 50_000,
            entries_kept_after_snapshot: 10_000,
            peer_ca: None,
        }
    }
}

impl RaftSettings {
    fn config(&self) -> Result<Config, ClusterError> {
        Config {
            cluster_name: "dron".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Each chunk's deadline: openraft's 200 ms default is short for a megabyte on a
            // busy machine.
            install_snapshot_timeout: self.election_timeout_max_ms.max(1000),
            snapshot_max_chunk_size: 1 << 20,
            // Elections are started by `election`, after a pre-vote.
            enable_elect: false,
            snapshot_policy: match self.snapshot_after_entries {
                0 => SnapshotPolicy::Never,
                entries => SnapshotPolicy::LogsSinceLast(entries),
            },
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|error| ClusterError::Settings(Box::new(error)))
    }
}

/// What committed entries are applied to (dron's stores on this server).
pub trait Applier: Send + Sync + 'static {
    /// Applies the committed entry at `index`. Called in log order, on a blocking thread. Must
    /// be deterministic; it need not be durable when it returns: after a restart, every entry
    /// after what `applied_index` returns is offered again (and some at or below it may be:
    /// the applier skips what it has). An empty payload is a no-op entry (still counts as
    /// applied).
    fn apply(&self, index: u64, payload: &[u8]) -> Result<(), StoreError>;
    /// Applies consecutive committed entries `(index, payload)`, in log order, as `apply` would
    /// one by one (which is what this default does). Override it to make a batch durable with
    /// one sync: openraft hands over at once every entry committed since its last batch. If it
    /// fails, `applied_index` tells how far it got.
    fn apply_all(&self, entries: &[(u64, &[u8])]) -> Result<(), StoreError> {
        for (index, payload) in entries {
            self.apply(*index, payload)?;
        }
        Ok(())
    }
    /// The last index applied (or installed) durably: the log must still hold every entry
    /// after it (it does: the log is dropped only behind a snapshot, see `snapshot`).
    fn applied_index(&self) -> Result<Option<u64>, StoreError>;
    /// Makes the next [`Applier::snapshot`] quick (dron: flushes memtables), while entries
    /// are still applied. Nothing by default.
    fn prepare_snapshot(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Writes everything applied so far as files under `dir` (which does not exist yet), for a
    /// snapshot. Called between two `apply`s, which wait meanwhile: keep it short (dron links
    /// RocksDB checkpoints). Everything it holds must be durable when it returns
    /// (`applied_index` at least its index): the log behind it is dropped next.
    fn snapshot(&self, dir: &Path) -> Result<(), StoreError>;
    /// Replaces everything with a snapshot's files in `dir` (what [`Applier::snapshot`] wrote
    /// on another server), which include every entry up to `index`; `applied_index` answers
    /// at least `index` afterwards. Durable when it returns. `dir` is removed afterwards.
    fn install(&self, index: u64, dir: &Path) -> Result<(), StoreError>;
}

/// This server's member of the Raft cluster. Dropping it does not stop openraft (the routes
/// hold a handle too): call [`RaftNode::shutdown`].
pub struct RaftNode {
    this: NodeId,
    raft: Raft,
    secret: Arc<str>,
    leadership: watch::Receiver<Leadership>,
    lag: Arc<Mutex<leadership::Lag>>,
    /// A leader that no quorum acknowledged for this long is cut off (the scheduler's lease).
    lease: Duration,
    /// Answers the other servers' pre-votes (served by the routes).
    voter: election::Voter,
    /// Raised once the Raft directory's database is closed.
    db_closed: watch::Receiver<bool>,
    /// Whether a write of the log or the state waits for space ([`space`]).
    space: Arc<space::Space>,
}

/// How long `shutdown` waits for openraft's tasks to let go of the database.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl RaftNode {
    /// Opens (or creates) the log in `dir`, starts openraft, and initializes the cluster with
    /// `members` if this node's log is empty (safe on every node with the same members).
    /// Afterwards the membership in the log rules: `members` is not compared with it, so a
    /// changed address takes a membership change ([`RaftNode::add_node`]).
    ///
    /// Empty `members`: this node joins a running cluster. It never initializes a log: it
    /// waits until a leader adds it and replicates to it.
    ///
    /// Starting re-applies the committed entries the applier may lack, and, when the log has
    /// been purged, takes a snapshot (openraft 0.9 wants one to exist): both before it returns.
    pub async fn start(
        this: NodeId,
        members: BTreeMap<NodeId, Member>,
        dir: &Path,
        secret: Arc<str>,
        applier: Arc<dyn Applier>,
        settings: RaftSettings,
    ) -> Result<RaftNode, ClusterError> {
        if secret.is_empty() {
            return Err(ClusterError::EmptySecret);
        }
        if !members.is_empty() && !members.contains_key(&this) {
            return Err(ClusterError::NotAMember {
                this,
                members: members.keys().copied().collect(),
            });
        }
        for (id, member) in &members {
            let url = reqwest::Url::parse(&member.address);
            if !url.is_ok_and(|url| matches!(url.scheme(), "http" | "https")) {
                return Err(ClusterError::BadAddress {
                    id: *id,
                    address: member.address.clone(),
                });
            }
        }
        let config = Arc::new(settings.config()?);

        let open = |source| ClusterError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let (db, db_closed) = db::RaftDb::open(dir).map_err(open)?;
        let log = Arc::downgrade(&db);
        let space = Arc::new(space::Space::on(dir));
        let log_store = log_store::LogStore::new(db.clone(), space.clone()).map_err(open)?;
        let state_machine =
            state_machine::StateMachine::open(db, applier, space.clone()).map_err(open)?;
        // A connection that takes longer than a vote's deadline is as good as refused.
        let network = Arc::new(network::Network::new(
            this,
            secret.clone(),
            Duration::from_millis(settings.election_timeout_min_ms),
            settings.peer_ca.clone(),
            space.clone(),
        ));
        for (id, member) in &members {
            network
                .client(*id, &member.address)
                .map_err(|cause| ClusterError::Client { id: *id, cause })?;
        }

        let election_config = config.clone();
        let raft = Raft::new(this, config, network.clone(), log_store, state_machine)
            .await
            .map_err(|fatal| ClusterError::Start(fatal.to_string()))?;
        tokio::spawn(election::run(
            this,
            raft.clone(),
            log.clone(),
            network,
            space.clone(),
            election::Timing::of(&settings, election_config),
        ));

        let initialize = |cause: String| ClusterError::Initialize {
            members: members.keys().copied().collect(),
            cause,
        };
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|fatal| initialize(fatal.to_string()))?;
        if !initialized && !members.is_empty() {
            match raft.initialize(members.clone()).await {
                // Another member's entries reached this one first: it is initialized already.
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(initialize(error.to_string())),
            }
        }

        let voter = election::Voter {
            raft: raft.clone(),
            log,
            lease: Duration::from_millis(settings.election_timeout_max_ms),
        };
        let (publish, leadership) = watch::channel(Leadership::starting(this));
        let lag = Arc::new(Mutex::new(leadership::Lag::default()));
        tokio::spawn(leadership::follow(raft.metrics(), publish, lag.clone()));

        Ok(RaftNode {
            this,
            raft,
            secret,
            leadership,
            lag,
            lease: Duration::from_millis(settings.election_timeout_min_ms),
            voter,
            db_closed,
            space,
        })
    }

    /// This server's node id.
    pub fn id(&self) -> NodeId {
        self.this
    }

    /// Whether this server's Raft log or state waits for space (the disk is full).
    pub fn out_of_space(&self) -> bool {
        self.space.is_full()
    }

    /// Queues `payload` behind every earlier proposal (the await only queues: openraft's
    /// `client_write_ff`), returning a future that resolves once the entry is committed and
    /// applied on this server, with its log index, or with why not (`NotLeader` with the
    /// leader this server knows of). It answers `RecvError` if the Raft stopped before
    /// answering: treat it as [`ProposeError::Stopped`].
    ///
    /// On a leader that is deposed, a proposal resolves once its entry is committed by the
    /// next leader (`Ok`: it was kept) or replaced (`NotLeader`); while this server is cut
    /// off from the majority it stays pending: the layer above bounds its wait with the
    /// leader lease ([`Self::confirm_leadership`], [`Leadership::quorum_acked_at`]).
    pub async fn propose(&self, payload: Vec<u8>) -> Result<Proposal, ProposeError> {
        self.raft
            .client_write_ff(Payload(payload))
            .await
            .map(Proposal::new)
            .map_err(|fatal| match fatal {
                Fatal::Stopped => ProposeError::Stopped,
                other => ProposeError::Raft(format!("the Raft node has failed: {other}")),
            })
    }

    /// Leadership as it changes: watchers are woken when the role, the leader, the term or
    /// the last applied index change (the quorum ack's age is refreshed in place).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Whether this node still leads, confirmed by a quorum (a heartbeat round, as for a
    /// linearizable read) within `within`. False on a follower, on a leader cut off from the
    /// majority, or when no answer came in time.
    pub async fn confirm_leadership(&self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.raft.get_read_log_id()).await,
            Ok(Ok(_))
        )
    }

    /// The cluster as `GET /api/cluster` shows it (`scheduling` false: the layer above sets
    /// it).
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let leadership = self.leadership.borrow().clone();
        leadership::status(&metrics, &self.lag, &leadership, self.lease)
    }

    /// The internal routes Raft traffic uses (`POST /internal/raft/{append,vote,snapshot,
    /// prevote}`), behind the cluster secret: merge them into the server's router.
    pub fn routes(&self) -> axum::Router {
        service::routes(self.raft.clone(), &self.secret, self.voter.clone())
    }

    /// Stops openraft and returns once the Raft directory's database is closed (so that it can
    /// be opened again), or after 10 s with a warning. The routes answer 503 afterwards.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "openraft's core task failed while shutting down");
        }
        let mut closed = self.db_closed.clone();
        match tokio::time::timeout(CLOSE_TIMEOUT, closed.wait_for(|closed| *closed)).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "the Raft log's database is still open {} s after shutdown",
                CLOSE_TIMEOUT.as_secs()
            ),
        }
    }
}

impl ClusterView for RaftNode {
    fn status(&self) -> ClusterStatus {
        RaftNode::status(self)
    }
}
