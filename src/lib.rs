//! The dron server and command line. The scheduling itself lives in the `dron-actors` crate
//! and the domain model in `dron-model`; this package adds what needs the outside world:
//!
//! - [`cli`]: argument parsing and the subcommands.
//! - [`cluster`]: several servers as one, over a Raft log (docs/cluster.md).
//! - [`agent`]: `dron agent`, a remote agent offering its machine to a server.
//! - [`server`]: `dron serve`, wiring storage, actors and HTTP.
//! - [`http`]: the Chronos-compatible and native HTTP API.
//! - [`events`]: the AMQP link carrying resource events to and from RabbitMQ.
//! - [`notify`]: how failure notices leave: SMTP mail and signed webhooks.
//! - [`storage`]: the RocksDB shard, resource and notice stores.
//! - [`config`]: the `dron.toml` settings.
//! - [`tls`]: HTTPS served, and the CA clients verify it with (the system's OpenSSL).
//! - [`logging`]: log lines as text or JSON, colour only on a terminal.

pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
pub mod http;
pub mod logging;
pub mod notify;
pub mod retention;
pub mod server;
pub mod storage;
pub mod tls;
