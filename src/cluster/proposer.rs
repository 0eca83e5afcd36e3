//! The leader's one queue into the Raft log. The stores submit commands here instead of to
//! their writers; one task takes everything queued, proposes it as one entry (group commit,
//! as the single server's writers do) and answers each submitter once the entry is committed
//! by a quorum and applied here.
//!
//! A proposer lives for one leadership: after its first failure (this server lost the lead,
//! or Raft stopped) it refuses everything after, because the coordinators pipeline batches
//! that build on each other and batch N+1 must never commit without batch N. The next
//! leadership starts a new proposer and the scheduler reloads what is committed; so does a
//! leader whose proposer failed while it still leads (`leadership.rs`).
//!
//! While this server's Raft waits for space (the disk is full: `raft::space`), new writes are
//! refused at once with [`StoreError::NoSpace`] (507), which fails the proposer as any
//! failure does, rather than queued behind the write that waits.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dron_actors::store::{Durable, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::command::{Command, Entry};
use super::raft::RaftNode;

/// Commands gathered into one entry at most.
const MAX_GROUP: usize = 4096;
/// How often the proposer looks at the disk while it waits for a slot.
const SPACE_CHECK: Duration = Duration::from_millis(200);
/// Entries proposed and not yet applied, at most. While they commit, what the stores submit
/// queues up and goes into the next entry together: each entry costs a synced append on
/// every server and a synced apply, so under load fewer, larger entries are what keeps the
/// rate up (group commit, as a single server's writer does).
const MAX_IN_FLIGHT: usize = 2;

type Acknowledge = oneshot::Sender<Result<(), StoreError>>;

struct Submission {
    commands: Vec<Command>,
    done: Acknowledge,
}

/// The first failure of a proposer: everything after it is refused.
type Failed = Arc<OnceLock<Arc<StoreError>>>;

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Submission>,
    failed: Failed,
}

impl Proposer {
    /// Starts the proposing task (within a tokio runtime); it ends when every `Proposer`
    /// clone is dropped, after what was queued.
    pub fn start(raft: Arc<RaftNode>) -> Proposer {
        let (queue, submissions) = mpsc::unbounded_channel();
        let failed = Failed::default();
        tokio::spawn(propose_loop(raft, submissions, failed.clone()));
        Proposer { queue, failed }
    }

    /// Why this proposer refuses every write now, if it does.
    pub fn failure(&self) -> Option<Arc<StoreError>> {
        self.failed.get().cloned()
    }

    /// Queues `commands` as one atomic unit behind everything submitted before.
    pub fn submit(&self, commands: Vec<Command>) -> Durable {
        let (done, durable) = oneshot::channel();
        // A closed queue drops `done`: the waiter sees the proposer stopped.
        let _ = self.queue.send(Submission { commands, done });
        durable
    }

    /// Resolves once everything submitted before is applied here (an empty entry behind it).
    pub fn barrier(&self) -> Durable {
        self.submit(Vec::new())
    }

    /// Waits for [`Proposer::barrier`] from a blocking thread (a store's read).
    pub fn wait_barrier(&self) -> Result<(), StoreError> {
        self.barrier().blocking_recv().unwrap_or(Err(STOPPED))
    }

    /// Submits and waits, from a blocking thread (the store factory's calls).
    pub fn submit_and_wait(&self, commands: Vec<Command>) -> Result<(), StoreError> {
        self.submit(commands)
            .blocking_recv()
            .unwrap_or(Err(STOPPED))
    }
}

const STOPPED: StoreError = StoreError::Stopped("the cluster's proposer");

async fn propose_loop(
    raft: Arc<RaftNode>,
    mut submissions: mpsc::UnboundedReceiver<Submission>,
    // The first failure, set here or by a waiter: everything after it is refused.
    failed: Failed,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = submissions.recv().await {
        // Waiting for a slot lets the next group gather; None: the disk is full.
        let slot = loop {
            if raft.out_of_space() {
                break None;
            }
            let acquire = in_flight.clone().acquire_owned();
            match tokio::time::timeout(SPACE_CHECK, acquire).await {
                Ok(Ok(slot)) => break Some(slot),
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match submissions.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if let Some(failure) = failed.get() {
            answer(group, Err(StoreError::RefusedAfter(failure.clone())));
            continue;
        }
        let Some(slot) = slot.filter(|_| !raft.out_of_space()) else {
            metrics::counter!("dron_writes_refused_disk_full_total").increment(group.len() as u64);
            let error = super::raft::space::Space::refused();
            let _ = failed.set(Arc::new(error.clone()));
            answer(group, Err(error));
            continue;
        };
        let mut entry = Entry::default();
        let mut waiters = Vec::with_capacity(group.len());
        for submission in group {
            entry.commands.extend(submission.commands);
            waiters.push(submission.done);
        }
        match raft.propose(entry.encode()).await {
            Ok(applied) => {
                let failed = failed.clone();
                tokio::spawn(async move {
                    let result = match applied.await {
                        Ok(Ok(_index)) => Ok(()),
                        Ok(Err(error)) => Err(replication_failed(error)),
                        Err(_) => Err(STOPPED),
                    };
                    drop(slot);
                    if let Err(error) = &result {
                        let _ = failed.set(Arc::new(error.clone()));
                    }
                    for done in waiters {
                        let _ = done.send(result.clone());
                    }
                });
            }
            Err(error) => {
                let error = replication_failed(error);
                let _ = failed.set(Arc::new(error.clone()));
                for done in waiters {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }
}

fn answer(group: Vec<Submission>, result: Result<(), StoreError>) {
    for submission in group {
        let _ = submission.done.send(result.clone());
    }
}

fn replication_failed<E>(error: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::backend("replicating a write")(error)
}
