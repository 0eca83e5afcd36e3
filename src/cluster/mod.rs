//! A cluster of dron servers (issue 17, docs/cluster.md): every durable write goes through
//! one Raft log (openraft, pinned, behind [`raft`]), every server applies it to its own copy
//! of the stores, and the leader alone runs the scheduler.
//!
//! - [`raft`]: the adapter to openraft: its log store and state machine on RocksDB, and its
//!   transport on the server's own HTTP port. It knows nothing of dron's records: it carries
//!   opaque payloads and hands committed ones to an [`raft::Applier`].
//! - [`command`]: what the payloads are: physical changes to one database, or facts about
//!   the cluster (shard count, fencing epoch, known agents).
//! - [`state`]: the databases every server applies the log to.
//! - [`proposer`]: the leader's one ordered queue into the log (group commit).
//! - [`stores`]: the store traits the scheduler writes through, on the log.
//! - [`leadership`]: a node's life: HTTP, Raft, and the scheduler while it leads.
//! - [`view`]: what the rest of the server (HTTP, CLI) sees of the cluster: who leads, where,
//!   and whether the scheduler runs here.

pub mod command;
pub mod leadership;
pub mod proposer;
pub mod raft;
pub mod state;
pub mod stores;
pub mod view;
