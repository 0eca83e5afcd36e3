//! `dron serve`: binds the HTTP listener first (so a taken port fails at once and /health
//! can answer 503 while shards recover), then starts the scheduler: once, on a single server
//! ([`scheduler`]); on a cluster's node, whenever it leads (`crate::cluster::leadership`).

pub mod scheduler;

use std::sync::Arc;

use anyhow::Context;
use dron_actors::broker::KnownAgentsRecord;
use dron_actors::clock::{SharedClock, SystemClock};
use tokio::net::TcpListener;

use dron_actors::store::{ResourceStore, StoreError};

use crate::config::Config;
use crate::http::{self, AppState};
use crate::retention::{PruneStores, PrunedShard};
use crate::storage::agent_tokens::RocksAgentTokens;
use crate::storage::backup::{self, BackupSource, Manifest, Part};
use crate::storage::notices::RocksNoticeStore;
use crate::storage::resources::RocksResourceStore;
use crate::storage::rocks::RocksStoreFactory;
use scheduler::{Amqp, Scheduler, Storage};

pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    // The bound address, not the configured one: `--listen 127.0.0.1:0` picks the port.
    let address = listener
        .local_addr()
        .context("reading the listening address")?
        .to_string();
    let state = AppState::new(address.clone())
        .with_metrics(http::metrics::install().context("installing the metrics recorder")?)
        .with_auth(&config.auth)
        .with_webhook_hosts(config.notify.allowed_webhook_hosts())
        .with_epoch_key(config.agents.epoch_key()?)
        .with_agent_outbox(config.agents.outbox_messages)
        .with_scheme(config.tls.scheme());
    let state = match config.listen.ip().is_loopback() {
        true => state.with_host_check(&config.allowed_hosts),
        false => state,
    };
    if !config.auth_on() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "--insecure-no-auth: the API is open to anyone who reaches this address, and agents connect without credentials");
    }
    if config.cluster.enabled() {
        return crate::cluster::leadership::serve(config, listener, state).await;
    }
    let tokens = Arc::new(
        RocksAgentTokens::open(&config.data_dir.join("agent-tokens"))
            .context("opening the agent credentials")?,
    );
    let state = state.with_agent_tokens(tokens.clone(), config.tokenless_agents());
    let app = api(&config, state.clone(), axum::Router::new());
    let tls = config.tls.server()?;
    let http_server =
        tokio::spawn(
            async move { http::serve::serve(listener, app, tls, shutdown_signal()).await },
        );
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), "dron starting");

    // One clock for every actor (tests give them tokio's).
    let clock: SharedClock = Arc::new(SystemClock);
    let (storage, stores) = local_storage(&config, tokens.db())?;
    state.set_backup(stores);
    let _usage = disk_usage(&config)?;
    let amqp_link = amqp(&config)?;
    let mut scheduler =
        Scheduler::start(&config, storage, amqp_link, clock, &state, &address).await?;
    tracing::info!("recovery finished; dron is ready");

    tokio::select! {
        served = http_server => served??,
        stopped = scheduler.stopped() => anyhow::bail!("{stopped}; see the log above"),
    }
    scheduler.stop().await;
    Ok(())
}

/// The HTTP API with the run directories it serves output from, and `internal` routes (a
/// cluster's Raft traffic) beside it.
pub fn api(config: &Config, state: AppState, internal: axum::Router) -> axum::Router {
    let runs: Arc<std::path::Path> = Arc::from(config.data_dir.join("runs"));
    http::router_with_internal(state, config.fault_injection, internal).layer(axum::Extension(runs))
}

/// Measures the data directory's disk use for `/metrics` until the answer is dropped.
pub fn disk_usage(config: &Config) -> anyhow::Result<AbortOnDrop> {
    let every = std::time::Duration::from_millis(config.retention.policy()?.interval_ms as u64);
    Ok(AbortOnDrop(crate::retention::usage::spawn(
        config.data_dir.clone(),
        every,
    )))
}

/// A background task, stopped when this is dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A single server's stores: its own databases in the data directory; and the same stores
/// as retention and backups reach them.
fn local_storage(
    config: &Config,
    agent_tokens: Arc<rocksdb::DB>,
) -> anyhow::Result<(Storage, Arc<LocalStores>)> {
    let data = &config.data_dir;
    let stores = Arc::new(LocalStores {
        data_dir: data.clone(),
        shards: Arc::new(RocksStoreFactory::new(data.join("shards"))?),
        resources: Arc::new(
            RocksResourceStore::open(&data.join("resources"))
                .context("opening the resource store")?,
        ),
        notices: Arc::new(
            RocksNoticeStore::open(&data.join("notifications"))
                .context("opening the notification store")?,
        ),
        agent_tokens,
    });
    let storage = Storage {
        factory: stores.shards.clone(),
        resources: stores.resources.clone(),
        notices: stores.notices.clone(),
        known_agents: KnownAgentsRecord::File(data.join("known-agents")),
        epoch: next_epoch(data)?,
        prune: stores.clone(),
    };
    Ok((storage, stores))
}

/// A single server's stores, for retention and backups.
pub struct LocalStores {
    data_dir: std::path::PathBuf,
    shards: Arc<RocksStoreFactory>,
    resources: Arc<RocksResourceStore>,
    notices: Arc<RocksNoticeStore>,
    /// The agents' credentials: written one synced batch at a time, with no writer to pause,
    /// so a checkpoint of it is consistent on its own.
    agent_tokens: Arc<rocksdb::DB>,
}

impl PruneStores for LocalStores {
    fn shard_indexes(&self) -> Vec<u32> {
        self.shards.open_indexes()
    }

    fn shard(&self, index: u32) -> Option<PrunedShard> {
        let store = self.shards.open_shard(index)?;
        Some(PrunedShard {
            index,
            db: store.db(),
            store,
        })
    }

    fn resources(&self) -> (Arc<dyn ResourceStore>, Arc<rocksdb::DB>) {
        (self.resources.clone(), self.resources.db())
    }
}

impl BackupSource for LocalStores {
    fn backup(&self, dir: &std::path::Path) -> Result<Manifest, StoreError> {
        let shards: Vec<_> = self
            .shards
            .open_indexes()
            .into_iter()
            .filter_map(|index| Some((index, self.shards.open_shard(index)?)))
            .collect();
        let (resources, notices) = (self.resources.db(), self.notices.db());
        let shard_dbs: Vec<_> = shards
            .iter()
            .map(|(index, store)| (*index, store.db()))
            .collect();
        let mut parts = vec![
            Part {
                name: "resources".into(),
                db: &resources,
            },
            Part {
                name: "notifications".into(),
                db: &notices,
            },
            Part {
                name: "agent-tokens".into(),
                db: &self.agent_tokens,
            },
        ];
        for (index, db) in &shard_dbs {
            parts.push(Part {
                name: format!("shards/shard-{index:03}"),
                db,
            });
        }
        let (stores, paused_ms) = backup::checkpoint_all(dir, &parts, || {
            let mut held = vec![self.resources.pause()?, self.notices.pause()?];
            for (_, store) in &shards {
                held.push(store.pause()?);
            }
            Ok(held)
        })?;
        backup::copy_files(&self.data_dir, dir)?;
        backup::finish(dir, backup::SERVER, stores, paused_ms)
    }
}

/// How this server meets RabbitMQ, if `events.amqp_url` is set.
pub fn amqp(config: &Config) -> anyhow::Result<Option<Amqp>> {
    if config.events.amqp_url.is_none() {
        return Ok(None);
    }
    Ok(Some(Amqp {
        queue: queue_name(config)?,
        publisher_id: server_id(config)?,
    }))
}

/// This run's fencing epoch: above every earlier run's (kept in the data directory), and at
/// least the current time in ms, so a server restored from an old copy still outranks the
/// ones before it. Agents refuse commands from an epoch older than the newest they have seen.
fn next_epoch(data_dir: &std::path::Path) -> anyhow::Result<u64> {
    let path = data_dir.join("epoch");
    let previous: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let epoch = (previous + 1).max(now);
    crate::agent::write_synced(&path, epoch.to_string().as_bytes())?;
    Ok(epoch)
}

/// The program that runs each task's shim: the small `dron-shim` beside this binary when it is
/// there (it starts several times faster: it is paid once per run), else `dron` itself.
pub fn shim_program() -> anyhow::Result<std::path::PathBuf> {
    let dron = std::env::current_exe().context("locating the dron binary for the task shim")?;
    let small = dron.with_file_name("dron-shim");
    Ok(if small.is_file() { small } else { dron })
}

/// This server's AMQP queue: configured, or `dron.<server id>`, so that a restarted server
/// consumes the events that waited for it. A cluster's servers share `dron.cluster`: only the
/// leader consumes it, and what a lost leader had not acknowledged goes to the next.
fn queue_name(config: &Config) -> anyhow::Result<String> {
    match &config.events.queue {
        Some(queue) => Ok(queue.clone()),
        None if config.cluster.enabled() => Ok("dron.cluster".to_string()),
        None => Ok(format!("dron.{}", server_id(config)?)),
    }
}

/// This server's id, made once and kept in the data directory: it names the default queue
/// and tags what the server publishes, so that its own events are known when they come back.
/// Written atomically: an empty id after a crash would name a new queue and strand the old.
fn server_id(config: &Config) -> anyhow::Result<String> {
    let path = config.data_dir.join("server-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let id = format!(
        "{:x}",
        xxhash_rust::xxh3::xxh3_64(&nanos.to_le_bytes()) ^ u64::from(std::process::id())
    );
    crate::agent::write_synced(&path, id.as_bytes())?;
    Ok(id)
}

pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
