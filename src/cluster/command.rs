//! What the cluster's Raft log carries: each entry is one [`Entry`], a group of commands that
//! the leader's proposer gathered from the stores' submissions, applied in order by every
//! server ([`super::state`]).
//!
//! Commands are physical ([`Change`]s with keys and encoded values) or small facts about the
//! cluster ([`MetaChange`]). None carries a clock reading that a follower would take again:
//! what the leader decided is in the bytes.

use serde::{Deserialize, Serialize};

use crate::storage::change::Change;

/// One database of a server's replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Db {
    /// A shard's database (`shards/shard-NNN`).
    Shard(u32),
    /// Satisfied resources and pending events (`resources`).
    Resources,
    /// The notifier's notices and deliveries (`notifications`).
    Notices,
}

/// A fact about the cluster that no shard holds, kept in the meta database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaChange {
    /// The number of shards (the router's ring).
    ShardCount(u32),
    /// A drained shard's database is deleted.
    RemoveShard(u32),
    /// The fencing epoch of a new leader's term: agents obey only the highest they have seen.
    Epoch(u64),
    /// A remote agent's name, remembered so that a new leader waits for it before it gives up
    /// the tasks it may run.
    KnownAgent(String),
    /// A remote agent's credential is made (`Some`) or revoked (`None`): every server keeps
    /// them, so that the next leader accepts the same agents.
    AgentToken {
        name: String,
        token: Option<crate::storage::agent_tokens::AgentTokenRecord>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// One store's batch: applied atomically with the rest of this entry's changes to `db`.
    Write {
        db: Db,
        changes: Vec<Change>,
    },
    Meta(MetaChange),
}

/// One Raft entry's payload. An empty entry is a barrier: once it is applied, so is every
/// entry before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub commands: Vec<Command>,
}

/// Why an entry could not be read back (a newer server's format, or corruption).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode a replicated entry: {0}")]
pub struct DecodeError(#[from] postcard::Error);

/// The version byte before every encoded entry, so that a later format can be told apart.
const FORMAT: u8 = 1;

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail. Straight behind the version byte: an
        // entry of a busy leader holds thousands of records, copied once less.
        postcard::to_extend(self, vec![FORMAT]).expect("encoding an entry")
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        match bytes.split_first() {
            None => Ok(Entry::default()),
            Some((&FORMAT, rest)) => Ok(postcard::from_bytes(rest)?),
            Some(_) => Err(DecodeError(postcard::Error::DeserializeBadEncoding)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_an_empty_payload_is_a_barrier() {
        let entry = Entry {
            commands: vec![
                Command::Write {
                    db: Db::Shard(3),
                    changes: vec![
                        Change::put("jobs", b"a", vec![1, 2]),
                        Change::TrimHistory {
                            job: "a".into(),
                            keep: 5,
                        },
                    ],
                },
                Command::Meta(MetaChange::Epoch(7)),
            ],
        };
        assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        assert_eq!(Entry::decode(&[]).unwrap(), Entry::default());
        assert!(
            Entry::decode(&[9, 0]).is_err(),
            "an unknown format is refused"
        );
    }
}
