//! dron's actors, on ractor and tokio.
//!
//! ```text
//!  SchedulerClient ──► Router ──(ring: job → shard)──► Coordinator ×N ──► OfferBroker ──► LocalAgent
//!                        ▲  ▲ table, moves                 │ owns a ShardStore    │           │
//!                        │  ShardSupervisor ── spawns, restarts ─┘                 │           │
//!                        └──────── status updates ─────────┴──────────────────────┴───────────┘
//! ```
//!
//! - [`router`]: the routing table (ring and coordinators); moves jobs when the ring changes.
//! - [`shards`]: the shard supervisor: opens shard storage, runs and restarts the
//!   coordinators, runs reshards; [`shards::Shards::start`] starts it with the router.
//! - [`coordinator`]: one per shard: timers, instances, retries, dependencies, recovery.
//! - [`broker`]: places tasks on agents (offers, constraints, Dominant Resource Fairness),
//!   tracks remote agents (heartbeats, loss, reconciliation) and routes status back.
//! - [`bus`]: resource events: recorded once, applied on every shard, published to a broker.
//! - [`notify`]: failure notices: recorded durably, mailed and posted to webhooks, digested.
//! - [`agent`]: runs tasks as processes through a shim that outlives the server, and the
//!   protocol remote agents (`dron agent`) speak.
//! - [`store`]: the storage trait a coordinator writes through (RocksDB lives in the server).
//! - [`client`]: the async handle the HTTP API and CLI use.
//! - [`clock`]: wall clock, or tokio's for paused-time tests.
//! - [`trace`]: the `run` span (job, task, shard) each actor on a run's path logs in.
//! - [`search`], [`stats`]: Chronos's job search and run-time statistics, as plain logic.
//! - [`backfill`]: backfills and reruns as the API sees them (checks, summaries), as plain logic.
//! - [`listing`], [`graph`]: the UI's jobs table and dependency graph, computed on the shards
//!   over the plain [`views`] they answer.

pub mod agent;
pub mod backfill;
pub mod broker;
pub mod bus;
pub mod client;
pub mod clock;
pub mod coordinator;
pub mod error;
pub mod graph;
mod in_flight;
pub mod listing;
pub mod notify;
pub mod router;
pub mod search;
pub mod shards;
pub mod stats;
pub mod store;
#[cfg(test)]
mod testkit;
pub mod trace;
pub mod views;
