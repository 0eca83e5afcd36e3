//! A cluster of dron servers (issue 17, docs/cluster.md): every durable write goes through
//! one Raft log (openraft, pinned, behind [`raft`]), every server applies it to its own copy
//! of the stores, and the leader alone runs the scheduler.
//!
//! - [`raft`]: the adapter to openraft: its log store and state machine on RocksDB, and its
//!   transport on the server's own HTTP port. It knows nothing of dron's records: it carries
//!   opaque payloads and hands committed ones to an [`raft::Applier`].
//! - [`view`]: what the rest of the server (HTTP, CLI) sees of the cluster: who leads, where,
//!   and whether the scheduler runs here.

pub mod raft;
pub mod view;
