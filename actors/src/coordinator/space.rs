//! A full disk. A write that fails for lack of space fails the coordinator like any failed
//! write (memory is ahead of storage), but its supervisor rebuilds it at once without counting
//! it as a crash (`shards`). The rebuilt coordinator finds its store out of space and, until a
//! probe write succeeds: refuses the API's changes with 507, drops its ticks, and keeps what
//! other messages change (the ends of running tasks, events) staged and unacknowledged rather
//! than write it only to fail again. Reads answer as usual. Once the store takes writes again
//! (RocksDB resumes by itself when there is room) it flushes what it holds and ticks:
//! scheduling catches up with what fell due meanwhile.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::oneshot;

use super::CoordinatorMsg;
use crate::error::CommandError;
use crate::store::ShardStore;

/// How often a shard out of space tries a small write.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A coordinator's state while its disk is full (dropped with it: that ends its probe task).
pub(super) struct OutOfSpace {
    _probing: oneshot::Receiver<()>,
}

impl OutOfSpace {
    /// When `store` is out of space: refuse changes, and probe it until it takes writes again.
    pub(super) fn detect(
        store: &Arc<dyn ShardStore>,
        shard: u32,
        myself: &ActorRef<CoordinatorMsg>,
    ) -> Option<OutOfSpace> {
        if !store.out_of_space() {
            return None;
        }
        tracing::warn!(
            shard,
            "the disk is full: this shard refuses new work (507) and waits for space"
        );
        let (alive, probing) = oneshot::channel();
        spawn_probe(store.clone(), myself.clone(), alive);
        Some(OutOfSpace { _probing: probing })
    }

    /// Answers a message that would change the shard at a client's request with 507, and
    /// drops a tick (space returning ticks). Answers the message when it is to be handled
    /// anyway.
    pub(super) fn refuse(&self, shard: u32, message: CoordinatorMsg) -> Option<CoordinatorMsg> {
        let full = || {
            metrics::counter!("dron_writes_refused_disk_full_total").increment(1);
            CommandError::InsufficientStorage(format!(
                "shard {shard} cannot make changes durable: the disk is full; \
                 free space on the data directory's filesystem and retry"
            ))
        };
        match message {
            CoordinatorMsg::PutJob { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::DeleteJob { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::RunNow { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::MarkSuccess { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::KillTasks { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::CompleteAsync { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::CreateBackfill { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::CancelBackfill { reply, .. } => drop(reply.send(Err(full()))),
            CoordinatorMsg::Tick => {}
            other => return Some(other),
        }
        None
    }
}

/// Tries a small write every [`PROBE_EVERY`] until one succeeds (then tells the coordinator)
/// or the coordinator is gone.
fn spawn_probe(
    store: Arc<dyn ShardStore>,
    coordinator: ActorRef<CoordinatorMsg>,
    alive: oneshot::Sender<()>,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            if alive.is_closed() {
                return;
            }
            let store = store.clone();
            let probed = tokio::task::spawn_blocking(move || store.probe_space()).await;
            if matches!(probed, Ok(Ok(()))) {
                let _ = coordinator.send_message(CoordinatorMsg::SpaceReturned);
                return;
            }
        }
    });
}
