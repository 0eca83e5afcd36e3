//! A cluster node's life: it opens its replicated state, starts its Raft node, serves HTTP
//! (the API, forwarded to the leader while it does not lead, and the Raft routes), and runs
//! the scheduler for exactly as long as it leads.
//!
//! Taking the lead is a restart of the scheduler as after kill -9 on a single server: a first
//! entry of the new term records a new fencing epoch (committed, so every entry before it is
//! applied here and no deposed leader can have a higher one), then the scheduler recovers
//! from the applied state, adopts running tasks from the agents as they re-register, fires
//! what fell due inside epsilon and records the rest as skipped.
//!
//! Losing it (another leader, a new term, or no quorum heard within the lease) stops the
//! scheduler at once: nothing more is launched from here, and what it had not committed is
//! the next leader's to recover.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use dron_actors::broker::KnownAgentsRecord;
use dron_actors::clock::{SharedClock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::command::{Command, MetaChange};
use super::proposer::Proposer;
use super::raft::{Leadership, Member, RaftNode, RaftSettings};
use super::state::ReplicatedState;
use super::stores::{
    Replicated, ReplicatedNoticeStore, ReplicatedPrune, ReplicatedResourceStore,
    ReplicatedStoreFactory,
};
use super::view::{Changing, ClusterStatus, ClusterView, NodeId, Role};
use crate::config::Config;
use crate::http::AppState;
use crate::server::scheduler::{Scheduler, Storage};

/// What `GET /api/cluster` and the forwarding see: Raft's view, and whether the scheduler
/// runs here.
struct NodeView {
    raft: Arc<RaftNode>,
    scheduling: AtomicBool,
}

/// How long `add-node` waits for the new server to catch up before it answers (the server
/// stays a learner then, and add-node can be run again).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

impl ClusterView for NodeView {
    fn status(&self) -> ClusterStatus {
        let mut status = self.raft.status();
        status.scheduling = self.scheduling();
        status
    }

    fn scheduling(&self) -> bool {
        self.scheduling.load(Ordering::Acquire)
    }

    fn add_node(&self, id: NodeId, address: String) -> Changing<'_> {
        Box::pin(self.raft.add_node(id, address, CATCH_UP_TIMEOUT))
    }

    fn remove_node(&self, id: NodeId) -> Changing<'_> {
        Box::pin(self.raft.remove_node(id))
    }
}

pub async fn serve(config: Config, listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let this = config
        .cluster
        .node_id
        .context("a cluster node needs --node-id")?;
    // A joining server founds nothing: it waits for the leader to add it.
    let founders = if config.cluster.join {
        BTreeMap::new()
    } else {
        config.cluster.peers.clone()
    };
    let members: BTreeMap<NodeId, Member> = founders
        .into_iter()
        .map(|(id, address)| (id, Member { address }))
        .collect();
    let replicated =
        Arc::new(ReplicatedState::open(&config.data_dir).context("opening the replicated state")?);
    tokio::spawn(keep_durable(Arc::downgrade(&replicated)));
    let peer_ca = config.tls.peer_ca()?;
    let settings = RaftSettings {
        heartbeat_ms: config.cluster.heartbeat_ms,
        election_timeout_min_ms: config.cluster.election_timeout_ms,
        election_timeout_max_ms: config.cluster.election_timeout_max_ms(),
        snapshot_after_entries: config.cluster.snapshot_after_entries,
        entries_kept_after_snapshot: config.cluster.entries_kept_after_snapshot,
        peer_ca: peer_ca.clone(),
    };
    let raft = Arc::new(
        RaftNode::start(
            this,
            members,
            &config.data_dir.join("raft"),
            config.cluster.secret()?,
            replicated.clone(),
            settings,
        )
        .await
        .context("starting the Raft node")?,
    );
    let view = Arc::new(NodeView {
        raft: raft.clone(),
        scheduling: AtomicBool::new(false),
    });
    let tokens = super::stores::ReplicatedAgentTokens {
        state: replicated.clone(),
        raft: raft.clone(),
    };
    let state = state
        .with_cluster(view.clone(), peer_ca.as_ref())
        .with_agent_tokens(Arc::new(tokens), config.tokenless_agents());
    state.set_backup(replicated.clone());
    let _usage = crate::server::disk_usage(&config)?;
    let address = listener
        .local_addr()
        .context("reading the listening address")?
        .to_string();
    let app = crate::server::api(&config, state.clone(), raft.routes());
    let tls = config.tls.server()?;
    let http_server = tokio::spawn(async move {
        crate::http::serve::serve(listener, app, tls, crate::server::shutdown_signal()).await
    });
    tracing::info!(node = this, listen = %config.listen, data_dir = %config.data_dir.display(), join = config.cluster.join, "dron cluster node starting");
    let leading = tokio::spawn(lead_when_elected(
        config,
        raft.clone(),
        replicated,
        state,
        view,
        address,
    ));
    let served = http_server.await;
    leading.abort();
    let _ = leading.await;
    raft.shutdown().await;
    served??;
    Ok(())
}

/// How long a leader that failed to start its scheduler waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// How often the replicated databases are synced (applying does not sync them).
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// Syncs the replicated databases every [`DURABLE_EVERY`] (src/cluster/state.rs: applying
/// does not), so that after a machine crash about a second of entries at most is applied
/// again from the log. Ends when the state is dropped.
async fn keep_durable(state: std::sync::Weak<ReplicatedState>) {
    let mut every = tokio::time::interval(DURABLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        match tokio::task::spawn_blocking(move || state.make_durable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot sync the replicated databases"),
            Err(error) => tracing::warn!(%error, "the replicated databases' sync failed"),
        }
    }
}

/// Runs the scheduler during each of this node's leaderships, forever.
async fn lead_when_elected(
    config: Config,
    raft: Arc<RaftNode>,
    replicated: Arc<ReplicatedState>,
    state: AppState,
    view: Arc<NodeView>,
    address: String,
) {
    let this = raft.status().this_node;
    let mut leadership = raft.leadership();
    let lease = Duration::from_millis(config.cluster.election_timeout_ms);
    loop {
        let Some(term) = elected(&mut leadership, this).await else {
            return; // Raft stopped
        };
        let proposer = Proposer::start(raft.clone());
        let scheduler = match start_leading(&config, &proposer, &replicated, &state, &address).await
        {
            Ok(scheduler) => scheduler,
            Err(error) => {
                // Still the leader, most likely: try again shortly, with a new epoch.
                tracing::warn!(term, error = %format!("{error:#}"), "could not start leading; retrying");
                state.stand_down();
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        view.scheduling.store(true, Ordering::Release);
        tracing::info!(node = this, term, "leading: the scheduler runs here");
        let why = lead(
            scheduler,
            (&raft, &proposer),
            &mut leadership,
            this,
            term,
            lease,
            &state,
            &view,
        )
        .await;
        tracing::warn!(
            node = this,
            term,
            why,
            "no longer leading: the scheduler stopped here"
        );
    }
}

/// Records this leadership's epoch, then starts the scheduler on the replicated stores.
async fn start_leading(
    config: &Config,
    proposer: &Proposer,
    replicated: &Arc<ReplicatedState>,
    state: &AppState,
    address: &str,
) -> anyhow::Result<Scheduler> {
    let epoch = next_epoch(replicated.epoch()?);
    proposer
        .submit(vec![Command::Meta(MetaChange::Epoch(epoch))])
        .await
        .context("the write path stopped")?
        .context("committing this leadership's epoch")?;
    let shared = Replicated {
        state: replicated.clone(),
        proposer: proposer.clone(),
    };
    let remember = {
        let proposer = proposer.clone();
        Arc::new(move |name: String| {
            // Fire and forget: the broker keeps the name in memory, and the next new agent
            // or the next leadership records it again if this write is lost with the lead.
            drop(proposer.submit(vec![Command::Meta(MetaChange::KnownAgent(name))]));
        })
    };
    let storage = Storage {
        factory: Arc::new(ReplicatedStoreFactory(shared.clone())),
        resources: Arc::new(ReplicatedResourceStore(shared.clone())),
        notices: Arc::new(ReplicatedNoticeStore(shared.clone())),
        prune: Arc::new(ReplicatedPrune(shared)),
        known_agents: KnownAgentsRecord::Custom {
            names: replicated.known_agents()?,
            remember,
        },
        epoch,
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let amqp = crate::server::amqp(config)?;
    Scheduler::start(config, storage, amqp, clock, state, address).await
}

/// Above the last leader's, and at least the time in ms, as a single server's epochs are, so
/// that agents that obeyed a single server before it became a cluster obey this one.
fn next_epoch(previous: Option<u64>) -> u64 {
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    previous.map_or(now, |previous| previous + 1).max(now)
}

/// Leads until the scheduler stops on its own or the lead is lost; then stops the scheduler.
#[allow(clippy::too_many_arguments)]
async fn lead(
    mut scheduler: Scheduler,
    (raft, proposer): (&RaftNode, &Proposer),
    leadership: &mut watch::Receiver<Leadership>,
    this: NodeId,
    term: u64,
    lease: Duration,
    state: &AppState,
    view: &NodeView,
) -> &'static str {
    let why = tokio::select! {
        stopped = scheduler.stopped() => stopped,
        why = lost(raft, proposer, leadership, this, term, lease) => why,
    };
    // Not ready first, so that no request reaches actors that are stopping.
    view.scheduling.store(false, Ordering::Release);
    state.stand_down();
    scheduler.stop().await;
    why
}

/// Resolves when this node stops leading `term`: another leader or term, or no quorum
/// confirmed within `lease` (a leader cut off from the majority stops commanding agents
/// before the majority elects another), or its proposer failed (a full disk): every write of
/// this leadership would be refused, so the scheduler stops, and starts again on what is
/// committed if this node still leads (once a write goes through).
async fn lost(
    raft: &RaftNode,
    proposer: &Proposer,
    leadership: &mut watch::Receiver<Leadership>,
    this: NodeId,
    term: u64,
    lease: Duration,
) -> &'static str {
    let check = lease / 2;
    loop {
        {
            let now = leadership.borrow_and_update();
            if now.role == Role::Removed {
                return "this node was removed from the cluster";
            }
            if now.leader != Some(this) || now.term != term || now.role != Role::Leader {
                return "another node leads";
            }
        }
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { return "Raft stopped" },
            _ = tokio::time::sleep(check) => {
                if proposer.failure().is_some() {
                    return "a write failed (see the log): the scheduler starts again on what is committed";
                }
                if !raft.confirm_leadership(lease).await {
                    return "no quorum confirmed this node's lead within the lease";
                }
            }
        }
    }
}

/// Waits until this node leads; returns the term, or None once Raft has stopped.
async fn elected(leadership: &mut watch::Receiver<Leadership>, this: NodeId) -> Option<u64> {
    loop {
        {
            let now = leadership.borrow_and_update();
            if now.leader == Some(this) && now.role == Role::Leader {
                return Some(now.term);
            }
        }
        leadership.changed().await.ok()?;
    }
}
