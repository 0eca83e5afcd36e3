//! The adapter against itself: real RocksDB in temporary directories, real HTTP on loopback,
//! a small key-value [`Applier`] of its own on RocksDB. Timeouts are short (tens to hundreds
//! of ms) so that the module runs in seconds; every wait is for a condition, with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dron_actors::store::StoreError;
use openraft::error::{Infallible, InstallSnapshotError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, SnapshotMeta, Vote};
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::db::RaftDb;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{Entry, Member, Payload, StoredMembership, TypeConfig};
use super::*;
use crate::cluster::view::Role;

// ---- the test applier: a key-value store on RocksDB -------------------------------------

const APPLIED: &[u8] = b"m/applied";
const DATA: &[u8] = b"d/";
/// The first key after every `d/` key.
const DATA_END: &[u8] = b"d0";
/// The test applier's one snapshot file.
const KV_FILE: &str = "kv.postcard";

/// Applies `key=value` payloads to a RocksDB database, with its applied index in the same
/// synced batch, as dron's stores will.
struct KvApplier {
    db: DB,
    installs: AtomicU64,
}

fn kv_error(doing: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
    StoreError::backend(doing)
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

impl KvApplier {
    fn open(path: &Path) -> Arc<KvApplier> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, path).expect("opening the test applier's database");
        Arc::new(KvApplier {
            db,
            installs: AtomicU64::new(0),
        })
    }

    fn contents(&self) -> BTreeMap<String, String> {
        self.db
            .iterator(IteratorMode::From(DATA, rocksdb::Direction::Forward))
            .map(|item| item.expect("reading the test applier"))
            .take_while(|(key, _)| key.starts_with(DATA))
            .map(|(key, value)| {
                (
                    String::from_utf8_lossy(&key[DATA.len()..]).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                )
            })
            .collect()
    }
}

impl Applier for KvApplier {
    fn apply(&self, index: u64, payload: &[u8]) -> Result<(), StoreError> {
        if self.applied_index()? >= Some(index) {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        if !payload.is_empty() {
            let text = String::from_utf8_lossy(payload);
            let (key, value) = text.split_once('=').unwrap_or((&text, ""));
            batch.put([DATA, key.as_bytes()].concat(), value);
        }
        batch.put(APPLIED, index.to_be_bytes());
        self.db
            .write_opt(batch, &synced())
            .map_err(kv_error("applying"))
    }

    /// One synced batch for all of them, as dron's stores will do.
    fn apply_all(&self, entries: &[(u64, &[u8])]) -> Result<(), StoreError> {
        let applied = self.applied_index()?;
        let mut batch = WriteBatch::default();
        let mut last = None;
        for &(index, payload) in entries {
            if applied >= Some(index) {
                continue;
            }
            if !payload.is_empty() {
                let text = String::from_utf8_lossy(payload);
                let (key, value) = text.split_once('=').unwrap_or((&text, ""));
                batch.put([DATA, key.as_bytes()].concat(), value);
            }
            last = Some(index);
        }
        let Some(last) = last else { return Ok(()) };
        batch.put(APPLIED, last.to_be_bytes());
        self.db
            .write_opt(batch, &synced())
            .map_err(kv_error("applying"))
    }

    fn applied_index(&self) -> Result<Option<u64>, StoreError> {
        let value = self.db.get(APPLIED).map_err(kv_error("reading"))?;
        Ok(value.map(|bytes| u64::from_be_bytes(bytes.try_into().expect("8 bytes"))))
    }

    /// One file of postcard-encoded pairs (dron's stores write RocksDB checkpoints).
    fn snapshot(&self, dir: &Path) -> Result<(), StoreError> {
        let pairs: Vec<(String, String)> = self.contents().into_iter().collect();
        let bytes = postcard::to_stdvec(&pairs).expect("encoding a test snapshot");
        std::fs::create_dir(dir)
            .and_then(|()| std::fs::write(dir.join(KV_FILE), bytes))
            .map_err(StoreError::backend("writing a test snapshot"))
    }

    fn install(&self, index: u64, dir: &Path) -> Result<(), StoreError> {
        let bytes = std::fs::read(dir.join(KV_FILE))
            .map_err(StoreError::backend("reading a test snapshot"))?;
        let pairs: Vec<(String, String)> = postcard::from_bytes(&bytes)
            .map_err(|error| StoreError::decode("a snapshot", error))?;
        let mut batch = WriteBatch::default();
        batch.delete_range(DATA, DATA_END);
        for (key, value) in pairs {
            batch.put([DATA, key.as_bytes()].concat(), value);
        }
        batch.put(APPLIED, index.to_be_bytes());
        self.db
            .write_opt(batch, &synced())
            .map_err(kv_error("installing"))?;
        self.installs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

// ---- a cluster on loopback ------------------------------------------------------------------

const SECRET: &str = "test-cluster-secret";
/// Long enough for an election on a loaded two-core machine, short enough for seconds.
const WAIT: Duration = Duration::from_secs(20);

fn fast() -> RaftSettings {
    RaftSettings {
        heartbeat_ms: 100,
        election_timeout_min_ms: 400,
        election_timeout_max_ms: 800,
        ..RaftSettings::default()
    }
}

struct Node {
    raft: RaftNode,
    applier: Arc<KvApplier>,
    server: JoinHandle<()>,
    /// Stops the server gracefully: its connections close too, so that the other nodes'
    /// pooled connections cannot outlive it and keep reaching a stopped Raft.
    stop_server: tokio::sync::oneshot::Sender<()>,
}

struct Cluster {
    root: TempDir,
    members: BTreeMap<NodeId, Member>,
    addresses: BTreeMap<NodeId, std::net::SocketAddr>,
    settings: RaftSettings,
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    /// Binds a listener per node first, so that every member's address is known, then starts
    /// them all.
    async fn start(ids: &[NodeId], settings: RaftSettings) -> Cluster {
        let mut listeners = BTreeMap::new();
        for &id in ids {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
            listeners.insert(id, listener);
        }
        let addresses: BTreeMap<NodeId, std::net::SocketAddr> = listeners
            .iter()
            .map(|(id, listener)| (*id, listener.local_addr().expect("address")))
            .collect();
        let members = addresses
            .iter()
            .map(|(id, address)| {
                let address = format!("http://{address}");
                (*id, Member { address })
            })
            .collect();
        let mut cluster = Cluster {
            root: tempfile::tempdir().expect("temporary directory"),
            members,
            addresses,
            settings,
            nodes: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            cluster.run(id, listener).await;
        }
        cluster
    }

    fn dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("n{id}"))
    }

    async fn run(&mut self, id: NodeId, listener: TcpListener) {
        self.run_with(id, listener, self.members.clone(), self.settings.clone())
            .await;
    }

    /// Starts node `id` on `listener`, founding a cluster of `members` (none: it joins).
    async fn run_with(
        &mut self,
        id: NodeId,
        listener: TcpListener,
        members: BTreeMap<NodeId, Member>,
        settings: RaftSettings,
    ) {
        let applier = KvApplier::open(&self.dir(id).join("kv"));
        let raft = RaftNode::start(
            id,
            members,
            &self.dir(id).join("raft"),
            Arc::from(SECRET),
            applier.clone(),
            settings,
        )
        .await
        .expect("starting a node");
        let routes = raft.routes();
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, routes)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serving");
        });
        self.nodes.insert(
            id,
            Node {
                raft,
                applier,
                server,
                stop_server,
            },
        );
    }

    /// Restarts a stopped node from its directories, on its address.
    async fn restart(&mut self, id: NodeId) {
        self.restart_with(id, self.settings.clone()).await;
    }

    /// Restarts a stopped node with timings of its own.
    async fn restart_with(&mut self, id: NodeId, settings: RaftSettings) {
        let listener = TcpListener::bind(self.addresses[&id])
            .await
            .expect("binding the node's address again");
        self.run_with(id, listener, self.members.clone(), settings)
            .await;
    }

    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("a running node");
        node.raft.shutdown().await;
        let _ = node.stop_server.send(());
        within(node.server).await.expect("the server stopped");
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// The leader every running node agrees on, once it knows it leads.
    async fn leader(&self) -> NodeId {
        let mut watches: Vec<_> = self.nodes.values().map(|n| n.raft.leadership()).collect();
        within(async {
            loop {
                let seen: Vec<Leadership> = watches
                    .iter_mut()
                    .map(|watch| watch.borrow_and_update().clone())
                    .collect();
                let leader = seen[0].leader;
                let agreed = seen.iter().all(|l| l.leader == leader);
                let leads = seen
                    .iter()
                    .any(|l| Some(l.this_node) == leader && l.role == Role::Leader);
                if let (Some(leader), true, true) = (leader, agreed, leads) {
                    return leader;
                }
                let changes = watches.iter_mut().map(|watch| Box::pin(watch.changed()));
                let _ = futures_util::future::select_all(changes).await;
            }
        })
        .await
    }

    /// Proposes on `id` and waits until it is applied there.
    async fn write(&self, id: NodeId, payload: &str) -> u64 {
        let answer = self
            .node(id)
            .raft
            .propose(payload.as_bytes().to_vec())
            .await
            .expect("queued");
        within(answer).await.expect("answered").expect("applied")
    }

    /// Waits until every running node has applied `index`.
    async fn applied_everywhere(&self, index: u64) {
        for node in self.nodes.values() {
            wait(node.raft.leadership(), |l| l.last_applied >= Some(index)).await;
        }
    }

    async fn stop_all(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("the condition held in time")
}

async fn wait(
    mut leadership: tokio::sync::watch::Receiver<Leadership>,
    condition: impl FnMut(&Leadership) -> bool,
) -> Leadership {
    within(leadership.wait_for(condition))
        .await
        .expect("the node is running")
        .clone()
}

// ---- the tests ------------------------------------------------------------------------------

/// (1) Three nodes elect one leader; a proposal on the leader is applied on all three; one on a
/// follower is refused with the leader's id and address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_apply_everywhere() {
    let cluster = Cluster::start(&[1, 2, 3], fast()).await;
    let leader = cluster.leader().await;

    let index = cluster.write(leader, "greeting=hello").await;
    cluster.applied_everywhere(index).await;
    for node in cluster.nodes.values() {
        assert_eq!(
            node.applier.contents().get("greeting").map(String::as_str),
            Some("hello")
        );
        assert_eq!(node.applier.applied_index().unwrap(), Some(index));
    }

    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let refused = cluster
        .node(follower)
        .raft
        .propose(b"greeting=bonjour".to_vec())
        .await
        .expect("queued");
    let answer = within(refused).await.expect("answered");
    assert_eq!(
        answer,
        Err(ProposeError::NotLeader {
            leader: Some((leader, cluster.members[&leader].address.clone()))
        })
    );

    assert!(cluster.node(leader).raft.confirm_leadership(WAIT).await);
    assert!(!cluster.node(follower).raft.confirm_leadership(WAIT).await);

    let status = cluster.node(leader).raft.status();
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.role, Role::Leader);
    assert_eq!(status.nodes.len(), 3);
    assert!(status.nodes.iter().all(|n| n.matched_index.is_some()));
    let status = cluster.node(follower).raft.status();
    assert_eq!(
        status.leader_address.as_deref(),
        Some(&*cluster.members[&leader].address)
    );
    assert_eq!(status.role, Role::Follower);
    cluster.stop_all().await;
}

/// (2) The leader stops: the other two elect a new one within seconds and accept proposals;
/// the old leader, restarted from its directory, catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_the_old_one_catches_up() {
    let mut cluster = Cluster::start(&[1, 2, 3], fast()).await;
    let old = cluster.leader().await;
    let first = cluster.write(old, "before=1").await;
    cluster.applied_everywhere(first).await;
    let old_term = cluster.node(old).raft.leadership().borrow().term;

    let stopped_at = tokio::time::Instant::now();
    cluster.stop(old).await;
    let new = cluster.leader().await;
    let took = stopped_at.elapsed();
    assert_ne!(new, old);
    assert!(cluster.node(new).raft.leadership().borrow().term > old_term);
    assert!(took < Duration::from_secs(5), "the election took {took:?}");
    eprintln!("node {new} leads {took:?} after node {old} stopped");

    let mut last = 0;
    for n in 0..10 {
        last = cluster.write(new, &format!("after{n}={n}")).await;
    }
    cluster.applied_everywhere(last).await;

    cluster.restart(old).await;
    cluster.applied_everywhere(last).await;
    let expected = cluster.node(new).applier.contents();
    assert_eq!(expected.len(), 11);
    assert_eq!(cluster.node(old).applier.contents(), expected);
    cluster.stop_all().await;
}

/// (2b) Bug 11 of docs/reliability.md: when the leader stops, a follower whose log is behind
/// must not hold up the election. Here the follower behind (`behind`, stopped while an entry
/// was committed, restarted as the leader stops) has the shorter timeouts, so it is the first
/// to find the leader gone. Without a pre-vote it stood at once, raising its term in vain
/// (refused: its log is shorter); the up-to-date follower then stood in that same term and
/// was refused too (its vote was taken), and won only at the next election, one more timeout
/// later (4.4 s of failover in the nemesis runs). With the pre-vote, the follower behind
/// learns it cannot win without standing, and the up-to-date one wins the first election:
/// the term rises by exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_does_not_hold_up_the_election() {
    let mut cluster = Cluster::start(&[1, 2, 3], fast()).await;
    let old = cluster.leader().await;
    let mut followers = cluster.nodes.keys().copied().filter(|&id| id != old);
    let (behind, ahead) = (followers.next().unwrap(), followers.next().unwrap());
    let first = cluster.write(old, "before=1").await;
    cluster.applied_everywhere(first).await;

    cluster.stop(behind).await;
    let missed = cluster.write(old, "missed=1").await;
    wait(cluster.node(ahead).raft.leadership(), |l| {
        l.last_applied >= Some(missed)
    })
    .await;
    let old_term = cluster.node(old).raft.leadership().borrow().term;

    let stopped_at = tokio::time::Instant::now();
    cluster.stop(old).await;
    let eager = RaftSettings {
        heartbeat_ms: 100,
        election_timeout_min_ms: 200,
        election_timeout_max_ms: 300,
        ..fast()
    };
    cluster.restart_with(behind, eager).await;
    let new = cluster.leader().await;
    let took = stopped_at.elapsed();
    let term = cluster.node(new).raft.leadership().borrow().term;
    eprintln!("node {new} leads in term {term} (was {old_term}) {took:?} after node {old} stopped");
    assert_eq!(new, ahead, "only the follower with every entry can win");
    assert_eq!(
        term,
        old_term + 1,
        "the first election after the leader stopped must win"
    );
    cluster.applied_everywhere(missed).await;
    assert_eq!(
        cluster
            .node(behind)
            .applier
            .contents()
            .get("missed")
            .map(String::as_str),
        Some("1")
    );
    cluster.stop_all().await;
}

/// (3) With a tiny snapshot policy, a node that was down while many entries were written
/// catches up through a snapshot, and its state equals the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_from_a_snapshot() {
    let settings = RaftSettings {
        snapshot_after_entries: 20,
        entries_kept_after_snapshot: 0,
        ..fast()
    };
    let mut cluster = Cluster::start(&[1, 2, 3], settings).await;
    let leader = cluster.leader().await;
    let first = cluster.write(leader, "k0=0").await;
    cluster.applied_everywhere(first).await;
    let behind = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    cluster.stop(behind).await;

    // Queued all at once: each waits only for its own answer.
    let mut answers = Vec::new();
    for n in 1..=200 {
        let payload = format!("k{n}={n}").into_bytes();
        answers.push(cluster.node(leader).raft.propose(payload).await.unwrap());
    }
    let mut last = 0;
    for answer in answers {
        last = within(answer).await.unwrap().unwrap();
    }
    // The leader has purged what the stopped node lacks: only a snapshot can bring it back.
    let mut metrics = cluster.node(leader).raft.raft.metrics();
    within(metrics.wait_for(|m| m.purged.is_some_and(|p| p.index > first + 1)))
        .await
        .unwrap();

    cluster.restart(behind).await;
    cluster.applied_everywhere(last).await;
    let caught_up = cluster.node(behind);
    assert!(caught_up.applier.installs.load(Ordering::SeqCst) >= 1);
    let expected = cluster.node(leader).applier.contents();
    assert_eq!(expected.len(), 201);
    assert_eq!(caught_up.applier.contents(), expected);
    // And it goes on from there with the log.
    let next = cluster.write(leader, "after=snapshot").await;
    cluster.applied_everywhere(next).await;
    assert_eq!(
        cluster.node(behind).applier.contents(),
        cluster.node(leader).applier.contents()
    );
    cluster.stop_all().await;
}

/// (3b) A node started empty to join waits, founding nothing; added, it catches up from a
/// snapshot (the log behind is purged) and votes; bad changes are refused with the reason;
/// removed, it is told so when the leader removes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_added_from_a_snapshot_and_members_are_removed() {
    let settings = RaftSettings {
        snapshot_after_entries: 5,
        entries_kept_after_snapshot: 0,
        ..fast()
    };
    let mut cluster = Cluster::start(&[1, 2, 3], settings).await;
    let leader = cluster.leader().await;
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    for n in 0..12 {
        cluster.write(leader, &format!("k{n}={n}")).await;
    }
    let mut metrics = cluster.node(leader).raft.raft.metrics();
    within(metrics.wait_for(|m| m.purged.is_some()))
        .await
        .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let address = format!("http://{}", listener.local_addr().unwrap());
    cluster.run_with(4, listener, BTreeMap::new(), fast()).await;
    let joining = cluster.node(4).raft.status();
    assert_eq!((joining.leader, joining.role), (None, Role::Learner));
    assert!(joining.nodes.is_empty(), "it founded nothing: {joining:?}");

    let raft = |id| &cluster.node(id).raft;
    let taken = cluster.members[&follower].address.clone();
    assert_eq!(
        raft(leader).add_node(1, address.clone(), WAIT).await,
        Err(MembershipError::AlreadyMember {
            id: 1,
            address: cluster.members[&1].address.clone()
        })
    );
    assert_eq!(
        raft(leader).add_node(4, taken, WAIT).await,
        Err(MembershipError::AddressTaken {
            address: cluster.members[&follower].address.clone(),
            other: follower
        })
    );
    assert_eq!(
        raft(follower).add_node(4, address.clone(), WAIT).await,
        Err(MembershipError::NotLeader)
    );
    raft(leader).add_node(4, address, WAIT).await.unwrap();
    let last = cluster.write(leader, "after=1").await;
    cluster.applied_everywhere(last).await;
    assert!(cluster.node(4).applier.installs.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        cluster.node(4).applier.contents(),
        cluster.node(leader).applier.contents()
    );
    let status = raft(leader).status();
    let roles: Vec<(NodeId, Role)> = status.nodes.iter().map(|n| (n.id, n.role)).collect();
    assert_eq!(roles.len(), 4, "{roles:?}");
    assert!(roles.contains(&(4, Role::Follower)), "{roles:?}");

    assert!(matches!(
        raft(leader).remove_node(9).await,
        Err(MembershipError::UnknownNode { id: 9, .. })
    ));
    // A server that never answers stays a learner, and can be removed.
    let nowhere = "http://127.0.0.1:1".to_string();
    assert!(matches!(
        raft(leader)
            .add_node(5, nowhere, Duration::from_millis(500))
            .await,
        Err(MembershipError::CatchUpTimeout { id: 5, .. })
    ));
    let learner = raft(leader).status().nodes.into_iter().find(|n| n.id == 5);
    assert_eq!(learner.map(|n| n.role), Some(Role::Learner));
    raft(leader).remove_node(5).await.unwrap();
    assert!(raft(leader).status().nodes.iter().all(|n| n.id != 5));
    // A follower removed while it runs may never hear of it: it stands for election and is
    // refused, without raising anyone's term (its log lacks the change that removed it).
    let term = raft(leader).status().term;
    raft(leader).remove_node(follower).await.unwrap();
    // Time for it to stand at least once: the lease, then up to the longest timeout, twice.
    tokio::time::sleep(Duration::from_millis(4 * fast().election_timeout_max_ms)).await;
    let status = raft(leader).status();
    assert_eq!((status.leader, status.term), (Some(leader), term));
    assert_ne!(raft(follower).status().role, Role::Leader);
    cluster.write(leader, "undisturbed=1").await;
    // The leader removes itself: it steps down and says it was removed.
    raft(leader).remove_node(leader).await.unwrap();
    wait(raft(leader).leadership(), |l| l.role == Role::Removed).await;
    assert_eq!(raft(leader).status().leader, None);
    cluster.stop(follower).await;
    cluster.stop(leader).await;
    let next = cluster.leader().await;
    assert_ne!(next, leader);
    cluster.write(next, "still=1").await;
    cluster.stop_all().await;
}

/// (4) A request without the secret, or with a wrong one, gets 401 and changes nothing; the
/// same request with the secret does change the node (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_routes_refuse_requests_without_the_secret() {
    let cluster = Cluster::start(&[1], fast()).await;
    let leader = cluster.leader().await;
    let term = cluster.node(leader).raft.leadership().borrow().term;

    // Entries from a "node 2" leading a far later term: accepted, they would depose node 1.
    let request = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1000, 2),
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    };
    let body = postcard::to_stdvec(&request).unwrap();
    let address = &cluster.members[&leader].address;
    let url = format!("{address}/internal/raft/append");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let none = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(none.status(), reqwest::StatusCode::UNAUTHORIZED);
    let wrong = client
        .post(&url)
        .bearer_auth("not-the-secret")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    // Refused before the body is read: garbage is not even a 400.
    for path in ["vote", "snapshot", "prevote"] {
        let refused = client
            .post(format!("{address}/internal/raft/{path}"))
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
    let metrics = cluster.node(leader).raft.raft.metrics().borrow().clone();
    assert_eq!(metrics.current_term, term);
    assert_eq!(metrics.current_leader, Some(leader));
    assert_eq!(cluster.node(leader).raft.status().role, Role::Leader);

    let accepted = client
        .post(&url)
        .bearer_auth(SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), reqwest::StatusCode::OK);
    let answer: Result<AppendEntriesResponse<NodeId>, Infallible> =
        postcard::from_bytes(&accepted.bytes().await.unwrap()).unwrap();
    assert!(answer.is_ok());
    let mut metrics = cluster.node(leader).raft.raft.metrics();
    within(metrics.wait_for(|m| m.current_term >= 1000))
        .await
        .unwrap();
    cluster.stop_all().await;
}

/// openraft's RPC types and answers round-trip through postcard (not self-describing, so
/// anything serde-untagged or skipped would break here rather than between servers).
#[test]
fn rpc_types_round_trip_through_postcard() {
    fn round_trip<
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    >(
        value: T,
    ) {
        let bytes = postcard::to_stdvec(&value).expect("encoding");
        let back: T = postcard::from_bytes(&bytes).expect("decoding");
        assert_eq!(back, value);
    }
    let log_id = openraft::testing::log_id::<NodeId>(3, 2, 7);
    let membership = Membership::<NodeId, Member>::new(
        vec![[1, 2, 3].into()],
        BTreeMap::from([(
            1,
            Member {
                address: "http://127.0.0.1:4401".to_string(),
            },
        )]),
    );
    let entries = vec![
        Entry {
            log_id,
            payload: EntryPayload::Normal(Payload(vec![0, 1, 255])),
        },
        Entry {
            log_id,
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id,
            payload: EntryPayload::Membership(membership.clone()),
        },
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 2),
        prev_log_id: Some(log_id),
        leader_commit: None,
        entries,
    };
    let bytes = postcard::to_stdvec(&append).unwrap();
    let back: AppendEntriesRequest<TypeConfig> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.entries, append.entries);
    assert_eq!(back.vote, append.vote);

    // The answers as the routes send them (a stopped Raft is a 503, not a body).
    round_trip::<Result<AppendEntriesResponse<NodeId>, Infallible>>(Ok(
        AppendEntriesResponse::Success,
    ));
    round_trip::<Result<AppendEntriesResponse<NodeId>, Infallible>>(Ok(
        AppendEntriesResponse::HigherVote(Vote::new(4, 1)),
    ));
    round_trip::<Result<AppendEntriesResponse<NodeId>, Infallible>>(Ok(
        AppendEntriesResponse::PartialSuccess(Some(log_id)),
    ));
    round_trip::<Result<VoteResponse<NodeId>, Infallible>>(Ok(VoteResponse::new(
        Vote::new(4, 1),
        Some(log_id),
        true,
    )));
    round_trip(VoteRequest::new(Vote::new(4, 1), Some(log_id)));
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 2),
        meta: SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: openraft::StoredMembership::new(Some(log_id), membership),
            snapshot_id: "3-2-7-0".to_string(),
        },
        offset: 0,
        data: vec![9; 10],
        done: true,
    };
    round_trip(snapshot);
    round_trip::<Result<InstallSnapshotResponse<NodeId>, InstallSnapshotError>>(Ok(
        InstallSnapshotResponse {
            vote: Vote::new(4, 1),
        },
    ));
    round_trip::<Result<InstallSnapshotResponse<NodeId>, InstallSnapshotError>>(Err(
        InstallSnapshotError::SnapshotMismatch(openraft::error::SnapshotMismatch {
            expect: openraft::SnapshotSegmentId {
                id: "a".to_string(),
                offset: 0,
            },
            got: openraft::SnapshotSegmentId {
                id: "b".to_string(),
                offset: 5,
            },
        }),
    ));
}

/// openraft's own test suite for log stores and state machines, over ours.
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), super::types::StorageError> {
        // The suite checks logic, not durability, in some forty fresh stores: on tmpfs where
        // there is one, so that their syncs cost nothing.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let (db, _closed) = RaftDb::open(&dir.path().join("raft")).expect("opening");
        let applier = KvApplier::open(&dir.path().join("kv"));
        let log = LogStore::new(db.clone(), Default::default()).expect("log store");
        let state_machine =
            StateMachine::open(db, applier, Default::default()).expect("state machine");
        Ok((dir, log, state_machine))
    }
}

type StoreSuite = Suite<TypeConfig, LogStore, StateMachine, Builder, TempDir>;

/// Runs one case of openraft's suite on fresh stores, on a thread and runtime of its own.
fn suite_case<F, Fut>(case: F) -> std::thread::JoinHandle<Result<(), String>>
where
    F: FnOnce(LogStore, StateMachine) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), super::types::StorageError>>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime
            .block_on(async {
                let (_dir, log, state_machine) = Builder.build().await?;
                case(log, state_machine).await
            })
            .map_err(|error| error.to_string())
    })
}

/// openraft's own test suite for log stores and state machines, over ours: every case of
/// `Suite::test_all` in 0.9.25, run concurrently (eight of them sleep a second each).
#[test]
fn openraft_storage_suite() {
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            vec![$((stringify!($case), suite_case(StoreSuite::$case))),*]
        };
    }
    let mut cases = cases![
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_membership_from_log_and_sm,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    ];
    cases.push((
        "transfer_snapshot",
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime
                .block_on(StoreSuite::transfer_snapshot(&Builder))
                .map_err(|error| error.to_string())
        }),
    ));
    let failed: Vec<String> = cases
        .into_iter()
        .filter_map(|(name, case)| match case.join() {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("{name}: {error}")),
            Err(_) => Some(format!("{name}: panicked")),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "openraft's storage suite failed: {failed:#?}"
    );
}

/// The applier's index is the truth: when our record of what is applied is ahead of it (its
/// stores were replaced by older ones), entries are re-offered from its index, or start-up
/// fails with a clear error when the log no longer holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applier_behind_the_record_is_offered_entries_again() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _closed) = RaftDb::open(&dir.path().join("raft")).unwrap();
    let entry = |index: u64, payload: &str| Entry {
        log_id: openraft::testing::log_id(1, 1, index),
        payload: EntryPayload::Normal(Payload(payload.as_bytes().to_vec())),
    };
    let entries: Vec<Entry> = (1..=5).map(|i| entry(i, &format!("k{i}={i}"))).collect();
    // The log holds them (written as the log store does).
    let cf = db.family(super::db::LOG).unwrap();
    for e in &entries {
        db.db()
            .put_cf(
                cf,
                super::db::index_key(e.log_id.index),
                super::db::encode(e),
            )
            .unwrap();
    }
    let ahead = KvApplier::open(&dir.path().join("kv-ahead"));
    let mut sm = StateMachine::open(db.clone(), ahead, Default::default()).unwrap();
    sm.apply(entries.clone()).await.unwrap();
    assert_eq!(
        sm.applied_state().await.unwrap().0.map(|id| id.index),
        Some(5)
    );

    // Stores that have applied up to 2 only.
    let behind = KvApplier::open(&dir.path().join("kv-behind"));
    for e in &entries[..2] {
        let EntryPayload::Normal(payload) = &e.payload else {
            unreachable!()
        };
        behind.apply(e.log_id.index, &payload.0).unwrap();
    }
    let mut sm = StateMachine::open(db.clone(), behind.clone(), Default::default()).unwrap();
    let (last, _) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(entries[1].log_id));
    sm.apply(entries[2..].to_vec()).await.unwrap();
    assert_eq!(behind.contents().len(), 5);

    // The other way round (a crash after the applier's sync, before our record): openraft
    // offers entries again from our record, and the applier skips what it has.
    let ahead_of_record = KvApplier::open(&dir.path().join("kv-ahead-of-record"));
    for (index, payload) in [(1, "k1=1"), (2, "k2=2"), (3, "k3=changed-later")] {
        ahead_of_record.apply(index, payload.as_bytes()).unwrap();
    }
    let record =
        |last: &Entry| super::db::encode(&(Some(last.log_id), StoredMembership::default()));
    let sm_cf = db.family(super::db::STATE_MACHINE).unwrap();
    db.db()
        .put_cf(sm_cf, super::db::APPLIED_KEY, record(&entries[0]))
        .unwrap();
    let mut sm =
        StateMachine::open(db.clone(), ahead_of_record.clone(), Default::default()).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(entries[0].log_id));
    sm.apply(entries[1..].to_vec()).await.unwrap();
    let contents = ahead_of_record.contents();
    assert_eq!(contents["k3"], "changed-later", "entry 3 was applied once");
    assert_eq!(contents["k5"], "5");
    assert_eq!(ahead_of_record.applied_index().unwrap(), Some(5));

    // With the log purged past what the stores hold, start-up refuses.
    let purged_cf = db.family(super::db::PURGED).unwrap();
    db.db()
        .put_cf(
            purged_cf,
            super::db::PURGED_KEY,
            super::db::encode(&entries[3].log_id),
        )
        .unwrap();
    let empty = KvApplier::open(&dir.path().join("kv-empty"));
    let mut sm = StateMachine::open(db, empty, Default::default()).unwrap();
    let error = sm.applied_state().await.unwrap_err().to_string();
    assert!(error.contains("older than its log"), "{error}");
}

#[test]
fn settings_are_checked_by_openraft() {
    assert!(RaftSettings::default().config().is_ok());
    let bad = RaftSettings {
        heartbeat_ms: 2000,
        ..RaftSettings::default()
    };
    assert!(bad.config().is_err());
}

/// A node refuses to start without a secret or outside its members, naming why.
#[tokio::test]
async fn start_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let applier = KvApplier::open(&dir.path().join("kv"));
    let members = BTreeMap::from([(
        1,
        Member {
            address: "http://127.0.0.1:1".to_string(),
        },
    )]);
    let raft_dir = dir.path().join("raft");
    let start = |this, secret: &str, members| {
        RaftNode::start(
            this,
            members,
            &raft_dir,
            Arc::from(secret),
            applier.clone(),
            fast(),
        )
    };
    let error = start(1, "", members.clone()).await.err().unwrap();
    assert!(matches!(error, ClusterError::EmptySecret), "{error}");
    let error = start(2, SECRET, members).await.err().unwrap();
    assert_eq!(error.to_string(), "node 2 is not among the members [1]");
    let bad = BTreeMap::from([(
        1,
        Member {
            address: "127.0.0.1:4401".to_string(),
        },
    )]);
    let error = start(1, SECRET, bad).await.err().unwrap();
    assert!(
        matches!(error, ClusterError::BadAddress { id: 1, .. }),
        "{error}"
    );
}
