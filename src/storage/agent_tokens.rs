//! Remote agents' credentials (`dron agent-token create NAME`): per agent name, the SHA-256
//! of its token's secret and when it was made. Only hashes are kept: a copy of the data
//! directory gives no agent's token.
//!
//! A single server keeps them in a database of their own (`data/agent-tokens`, synced
//! writes); a cluster in its replicated meta database (`MetaChange::AgentToken`), so that
//! the next leader accepts the same agents ([`crate::cluster::stores::ReplicatedAgentTokens`]).
//!
//! | family         | key        | value              |
//! |----------------|------------|--------------------|
//! | `agent_tokens` | agent name | `AgentTokenRecord` |

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use dron_actors::store::StoreError;
use dron_model::codec;
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::rocks::{Reads, open_db};
use super::writer::{backend, family};

/// The family holding the tokens, in the single server's database and the cluster's meta one.
pub const AGENT_TOKENS: &str = "agent_tokens";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTokenRecord {
    /// SHA-256 of the token's secret part.
    pub hash: [u8; 32],
    pub created_ms: i64,
}

impl codec::Stored for AgentTokenRecord {}

/// A write that resolves once it is durable (a cluster: committed and applied here).
pub type Written = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

pub trait AgentTokenStore: Send + Sync {
    fn get(&self, name: &str) -> Result<Option<AgentTokenRecord>, StoreError>;
    /// Every agent that has a token, by name.
    fn list(&self) -> Result<Vec<(String, AgentTokenRecord)>, StoreError>;
    /// Records (`Some`) or removes (`None`) an agent's token.
    fn set(&self, name: &str, record: Option<AgentTokenRecord>) -> Written;
}

pub fn read_token(db: &DB, name: &str) -> Result<Option<AgentTokenRecord>, StoreError> {
    let cf = family(db, AGENT_TOKENS)?;
    let Some(bytes) = db
        .get_cf(cf, name.as_bytes())
        .map_err(backend("reading an agent token"))?
    else {
        return Ok(None);
    };
    let record = codec::decode(&bytes)
        .map_err(|error| StoreError::decode(format!("the agent token of '{name}'"), error))?;
    Ok(Some(record))
}

pub fn list_tokens(db: &DB) -> Result<Vec<(String, AgentTokenRecord)>, StoreError> {
    let cf = family(db, AGENT_TOKENS)?;
    let mut tokens = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::Start) {
        let (key, value) = item.map_err(backend("reading agent tokens"))?;
        let name = String::from_utf8_lossy(&key).into_owned();
        let record = codec::decode(&value)
            .map_err(|error| StoreError::decode(format!("the agent token of '{name}'"), error))?;
        tokens.push((name, record));
    }
    Ok(tokens)
}

/// Adds the write of `name`'s token (or its removal) to `batch`.
pub fn add_token(
    db: &DB,
    batch: &mut WriteBatch,
    name: &str,
    record: Option<&AgentTokenRecord>,
) -> Result<(), StoreError> {
    let cf = family(db, AGENT_TOKENS)?;
    match record {
        Some(record) => batch.put_cf(cf, name.as_bytes(), codec::encode(record)),
        None => batch.delete_cf(cf, name.as_bytes()),
    }
    Ok(())
}

/// A single server's agent tokens, in their own database.
pub struct RocksAgentTokens {
    db: Arc<DB>,
}

impl RocksAgentTokens {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_db(path, &[AGENT_TOKENS], Reads::Scans)?;
        Ok(RocksAgentTokens { db: Arc::new(db) })
    }

    /// The database, for backups.
    pub fn db(&self) -> Arc<DB> {
        self.db.clone()
    }
}

impl AgentTokenStore for RocksAgentTokens {
    fn get(&self, name: &str) -> Result<Option<AgentTokenRecord>, StoreError> {
        read_token(&self.db, name)
    }

    fn list(&self) -> Result<Vec<(String, AgentTokenRecord)>, StoreError> {
        list_tokens(&self.db)
    }

    fn set(&self, name: &str, record: Option<AgentTokenRecord>) -> Written {
        let (db, name) = (self.db.clone(), name.to_string());
        Box::pin(async move {
            // A synced write: rare (an operator's command), and it must survive a crash.
            let write = move || {
                let mut batch = WriteBatch::default();
                add_token(&db, &mut batch, &name, record.as_ref())?;
                let mut synced = WriteOptions::default();
                synced.set_sync(true);
                db.write_opt(batch, &synced)
                    .map_err(backend("writing an agent token"))
            };
            tokio::task::spawn_blocking(write)
                .await
                .map_err(backend("writing an agent token"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_kept_listed_and_removed_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-tokens");
        let record = AgentTokenRecord {
            hash: [7; 32],
            created_ms: 42,
        };
        {
            let store = RocksAgentTokens::open(&path).unwrap();
            assert_eq!(store.get("w1").unwrap(), None);
            store.set("w1", Some(record.clone())).await.unwrap();
            store.set("w2", Some(record.clone())).await.unwrap();
            store.set("w2", None).await.unwrap();
        }
        let store = RocksAgentTokens::open(&path).unwrap();
        assert_eq!(store.get("w1").unwrap(), Some(record.clone()));
        assert_eq!(store.list().unwrap(), vec![("w1".to_string(), record)]);
    }
}
