//! Storage implementations of the actors' store traits, on RocksDB.
//!
//! - [`rocks`]: one database per shard (jobs, instances, history, outbox).
//! - [`resources`]: one database per server for satisfied resources and pending events.
//! - [`writer`]: the group-commit writer thread both use.

pub mod resources;
pub mod rocks;
pub mod writer;
