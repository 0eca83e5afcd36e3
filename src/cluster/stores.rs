//! The stores a leader's scheduler writes through: the same traits as a single server's
//! (`ShardStore`, `ResourceStore`, `NoticeStore`, `StoreFactory`), with every write proposed
//! to the Raft log ([`Proposer`]) and acknowledged once a quorum has it and this server has
//! applied it; reads go to this server's applied copy ([`ReplicatedState`]).

use std::sync::Arc;

use dron_actors::router::StoreFactory;
use dron_actors::store::{
    Durable, NoticeOp, NoticeStore, ResourceOp, ResourceStore, ShardSnapshot, ShardStore,
    StoreError, StoreOp,
};
use dron_model::instance::HistoryEntry;
use dron_model::notice::NoticeRecord;
use dron_model::resource::{PendingEvent, ResourceRecord};

use super::command::{Command, Db, MetaChange};
use super::proposer::Proposer;
use super::state::ReplicatedState;
use crate::storage::agent_tokens::{AgentTokenRecord, AgentTokenStore, Written};
use crate::storage::{notices, resources, rocks};

/// What the stores share: the proposer of this leadership and the applied state.
#[derive(Clone)]
pub struct Replicated {
    pub state: Arc<ReplicatedState>,
    pub proposer: Proposer,
}

impl Replicated {
    fn write(&self, db: Db, changes: Vec<crate::storage::change::Change>) -> Durable {
        self.proposer.submit(vec![Command::Write { db, changes }])
    }
}

pub struct ReplicatedShardStore {
    index: u32,
    replicated: Replicated,
}

impl ShardStore for ReplicatedShardStore {
    fn submit(&self, ops: Vec<StoreOp>) -> Durable {
        let changes = ops.iter().map(rocks::change).collect();
        self.replicated.write(Db::Shard(self.index), changes)
    }

    fn load(&self) -> Result<ShardSnapshot, StoreError> {
        // A restarted coordinator must see what its previous run submitted.
        self.replicated.proposer.wait_barrier()?;
        rocks::load_shard(&*self.replicated.state.shard(self.index)?)
    }

    fn history(&self, job: &str, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        rocks::read_history(&*self.replicated.state.shard(self.index)?, job, limit)
    }

    fn wait_applied(&self) -> Result<(), StoreError> {
        self.replicated.proposer.wait_barrier()
    }
}

pub struct ReplicatedResourceStore(pub Replicated);

impl ResourceStore for ReplicatedResourceStore {
    fn submit(&self, ops: Vec<ResourceOp>) -> Durable {
        self.0
            .write(Db::Resources, ops.iter().map(resources::change).collect())
    }

    fn get(&self, resource: &str) -> Result<Option<ResourceRecord>, StoreError> {
        resources::get_resource(&*self.0.state.db(Db::Resources)?, resource)
    }

    // Read once, when the bus starts: after this leadership's first entry is applied, so
    // every earlier write is in the applied state, and nothing else writes pending events.
    fn pending(&self) -> Result<Vec<PendingEvent>, StoreError> {
        resources::read_pending(&*self.0.state.db(Db::Resources)?)
    }

    // Read back by the bus while it publishes (its queue was full): after its deletions of
    // confirmed events are applied, so none is read back and published twice.
    fn pending_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        self.0.proposer.wait_barrier()?;
        resources::read_pending_page(&*self.0.state.db(Db::Resources)?, after, limit)
    }
}

pub struct ReplicatedNoticeStore(pub Replicated);

impl NoticeStore for ReplicatedNoticeStore {
    fn submit(&self, ops: Vec<NoticeOp>) -> Durable {
        self.0
            .write(Db::Notices, ops.iter().map(notices::change).collect())
    }

    // Read once, when the notifier starts (see `ReplicatedResourceStore::pending`).
    fn load(&self) -> Result<Vec<NoticeRecord>, StoreError> {
        notices::read_notices(&*self.0.state.db(Db::Notices)?)
    }
}

/// The replicated stores as the leader's pruner reads (this server's applied copy) and
/// prunes them (through the log).
pub struct ReplicatedPrune(pub Replicated);

impl crate::retention::PruneStores for ReplicatedPrune {
    fn shard_indexes(&self) -> Vec<u32> {
        self.0.state.shard_indexes()
    }

    fn shard(&self, index: u32) -> Option<crate::retention::PrunedShard> {
        // Not `shard`, which would make a database a removal has just deleted, here only.
        let db = self.0.state.existing_shard(index)?;
        let store = Arc::new(ReplicatedShardStore {
            index,
            replicated: self.0.clone(),
        });
        Some(crate::retention::PrunedShard { index, store, db })
    }

    fn resources(&self) -> (Arc<dyn ResourceStore>, Arc<rocksdb::DB>) {
        let store = Arc::new(ReplicatedResourceStore(self.0.clone()));
        (store, self.0.state.resources_db())
    }
}

/// Opens replicated shard stores; the shard count and removals go through the log. Its calls
/// run on blocking threads (the router's `unblocked`), so they may wait for a commit.
pub struct ReplicatedStoreFactory(pub Replicated);

impl StoreFactory for ReplicatedStoreFactory {
    fn open(&self, index: u32) -> Result<Arc<dyn ShardStore>, StoreError> {
        self.0.state.shard(index)?;
        Ok(Arc::new(ReplicatedShardStore {
            index,
            replicated: self.0.clone(),
        }))
    }

    fn existing(&self) -> Result<Vec<u32>, StoreError> {
        Ok(self.0.state.shard_indexes())
    }

    fn remove(&self, index: u32) -> Result<(), StoreError> {
        let remove = Command::Meta(MetaChange::RemoveShard(index));
        self.0.proposer.submit_and_wait(vec![remove])
    }

    fn load_shard_count(&self) -> Result<Option<u32>, StoreError> {
        self.0.state.shard_count()
    }

    fn save_shard_count(&self, count: u32) -> Result<(), StoreError> {
        let count = Command::Meta(MetaChange::ShardCount(count));
        self.0.proposer.submit_and_wait(vec![count])
    }
}

/// Agents' credentials in a cluster: written through the Raft log (on the leader, where the
/// API's writes are forwarded), read from this server's applied copy.
pub struct ReplicatedAgentTokens {
    pub state: Arc<ReplicatedState>,
    pub raft: Arc<super::raft::RaftNode>,
}

impl AgentTokenStore for ReplicatedAgentTokens {
    fn get(&self, name: &str) -> Result<Option<AgentTokenRecord>, StoreError> {
        self.state.agent_token(name)
    }

    fn list(&self) -> Result<Vec<(String, AgentTokenRecord)>, StoreError> {
        self.state.agent_tokens()
    }

    fn set(&self, name: &str, token: Option<AgentTokenRecord>) -> Written {
        let change = MetaChange::AgentToken {
            name: name.to_string(),
            token,
        };
        let payload = super::command::Entry {
            commands: vec![Command::Meta(change)],
        }
        .encode();
        let raft = self.raft.clone();
        Box::pin(async move {
            let failed = StoreError::backend("replicating an agent token");
            let applied = raft.propose(payload).await.map_err(failed)?;
            match applied.await {
                Ok(Ok(_index)) => Ok(()),
                Ok(Err(error)) => Err(StoreError::backend("replicating an agent token")(error)),
                Err(_) => Err(StoreError::Stopped("the Raft node")),
            }
        })
    }
}
