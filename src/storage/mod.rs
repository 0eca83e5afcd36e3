//! Storage implementations of the actors' store traits, on RocksDB.
//!
//! - [`rocks`]: one database per shard (jobs, instances, history, outbox).
//! - [`resources`]: one database per server for satisfied resources and pending events.
//! - [`notices`]: one database per server for notices and their deliveries.
//! - [`agent_tokens`]: remote agents' credentials, hashed (a single server's database).
//! - [`change`]: a store's write as physical changes (keys, encoded values), which a cluster
//!   replicates.
//! - [`bytes`]: `Vec<u8>` fields serialized as bytes (the cluster's entries).
//! - [`writer`]: the group-commit writer thread they all use.
//! - [`backup`]: online backups (checkpoints of every store at one cut) and restores.

pub mod agent_tokens;
pub mod backup;
pub mod bytes;
pub mod change;
pub mod notices;
pub mod resources;
pub mod rocks;
pub mod writer;
