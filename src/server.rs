//! `dron serve`: wires storage, actors and the HTTP API together, and runs until a signal.
//!
//! Order matters: the HTTP listener binds first (so a taken port fails at once and /health
//! can answer 503 while shards recover), then the broker and its local agent, then the
//! router, which recovers every shard before it answers anything; only then is the API
//! marked ready.

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use dron_actors::broker::{LocalAgentConfig, OfferBroker, OfferBrokerArgs};
use dron_actors::bus::{EventBus, EventBusArgs};
use dron_actors::client::SchedulerClient;
use dron_actors::clock::{SharedClock, SystemClock};
use dron_actors::notify::{Notifier, NotifierArgs};
use dron_actors::router::RouterMsg;
use dron_actors::shards::{Shards, ShardsArgs};
use dron_task::StatusSink;
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::events::amqp::{self, AmqpSettings};
use crate::http::{self, AppState};
use crate::storage::notices::RocksNoticeStore;
use crate::storage::resources::RocksResourceStore;
use crate::storage::rocks::RocksStoreFactory;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    // The bound address, not the configured one: `--listen 127.0.0.1:0` picks the port.
    let address = listener
        .local_addr()
        .context("reading the listening address")?;
    let state = AppState::new(address.to_string())
        .with_metrics(http::metrics::install().context("installing the metrics recorder")?)
        .with_auth(&config.auth);
    let app = http::router(state.clone(), config.fault_injection).layer(axum::Extension(Arc::<
        std::path::Path,
    >::from(
        config.data_dir.join("runs"),
    )));
    let http_server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), "dron starting");

    // One clock for every actor (tests give them tokio's).
    let clock: SharedClock = Arc::new(SystemClock);
    let router_cell = Arc::new(OnceLock::new());
    let status = to_router(router_cell.clone());
    let broker_args = broker_args(&config, status, clock.clone())?;
    let (broker, broker_handle) =
        Actor::spawn(Some("broker".into()), OfferBroker, broker_args).await?;
    let resources = Arc::new(
        RocksResourceStore::open(&config.data_dir.join("resources"))
            .context("opening the resource store")?,
    );
    // The bus hands events to the shards through the router, which starts after it.
    let (to_shards, from_bus) = tokio::sync::mpsc::unbounded_channel();
    let bus_args = EventBusArgs {
        store: resources.clone(),
        clock: clock.clone(),
        publishing: config.events.amqp_url.is_some(),
        shards: to_shards,
    };
    let (bus, bus_handle) = Actor::spawn(Some("bus".into()), EventBus, bus_args)
        .await
        .context("starting the event bus")?;
    let notifier_args = NotifierArgs {
        config: config.notify.actor_config(&address.to_string()),
        store: Arc::new(
            RocksNoticeStore::open(&config.data_dir.join("notifications"))
                .context("opening the notification store")?,
        ),
        transport: Arc::new(crate::notify::Transports::new(&config.notify)?),
        clock: clock.clone(),
        runs_root: config.data_dir.join("runs"),
    };
    let (notifier, notifier_handle) =
        Actor::spawn(Some("notifier".into()), Notifier, notifier_args)
            .await
            .context("starting the notifier")?;
    let shards_args = ShardsArgs {
        factory: Arc::new(RocksStoreFactory::new(config.data_dir.join("shards"))?),
        default_shard_count: config.shards,
        clock: clock.clone(),
        broker: broker.clone(),
        bus: bus.clone(),
        notifier: notifier.clone(),
        resources,
        config: config.scheduler.shard_config(),
    };
    // Spawned without waiting for its recovery, so that its address exists before anything
    // can report a status (see `to_router`); what arrives while it recovers waits in its mailbox.
    let (router, _supervisor, router_started) = Shards::start(shards_args, from_bus)?;
    let _ = router_cell.set(router.clone());
    // Only now may remote agents connect: they report statuses.
    state.set_broker(broker.clone());
    let router_handle = router_started
        .await
        .context("starting the router")?
        .context("recovering shards")?;
    let client = SchedulerClient::new(router.clone(), bus.clone()).with_notifier(notifier.clone());
    if let Some(url) = &config.events.amqp_url {
        let settings = AmqpSettings {
            url: url.clone(),
            exchange: config.events.exchange.clone(),
            queue: queue_name(&config)?,
            publisher_id: server_id(&config)?,
        };
        state.set_amqp(amqp::spawn(settings, client.clone(), bus.clone()));
    }
    state.set_ready(client);
    tracing::info!("recovery finished; dron is ready");

    tokio::select! {
        served = http_server => served??,
        _ = router_handle => anyhow::bail!("the router stopped (a shard kept failing); see the log above"),
        _ = broker_handle => anyhow::bail!("the offer broker stopped; see the log above"),
        _ = bus_handle => anyhow::bail!("the event bus stopped; see the log above"),
        _ = notifier_handle => anyhow::bail!("the notifier stopped; see the log above"),
    }
    // Running tasks keep running under their shims; the next start adopts them.
    router.stop(Some("shutdown".into()));
    broker.stop(Some("shutdown".into()));
    bus.stop(Some("shutdown".into()));
    notifier.stop(Some("shutdown".into()));
    Ok(())
}

/// The broker's status sink: to the router, which routes each update to its job's coordinator.
///
/// The router's coordinators launch through the broker, so the broker starts first and the
/// router's address goes into `router` after. This is not the late binding it replaces (a
/// `SetRouter` message, and updates buffered in the broker until it came): `serve` fills the
/// cell right after spawning the router, before anything can report a status (the
/// coordinators that launch and adopt are the router's children, remote agents connect only
/// after `set_broker`, and the local agent and the broker's timers act only on those), so
/// nothing is buffered, and the broker neither knows the router nor has a state without it.
/// `wait` covers the few instructions between the router's spawn and the fill, during which
/// the router's recovery already runs on another thread.
fn to_router(router: Arc<OnceLock<ActorRef<RouterMsg>>>) -> StatusSink {
    Arc::new(move |update| {
        let _ = router.wait().send_message(RouterMsg::TaskUpdate(update));
    })
}

fn broker_args(
    config: &Config,
    status: StatusSink,
    clock: SharedClock,
) -> anyhow::Result<OfferBrokerArgs> {
    let agents = &config.agents;
    let local = match agents.local {
        false => None,
        true => Some(LocalAgentConfig {
            shim_program: shim_program()?,
            runs_root: config.data_dir.join("runs"),
            resources: agents.local_resources(&config.data_dir),
        }),
    };
    Ok(OfferBrokerArgs {
        local,
        epoch: next_epoch(&config.data_dir)?,
        heartbeat_ms: agents.heartbeat_ms,
        agent_timeout_ms: agents.timeout_ms,
        weights: agents.weights.clone(),
        known_agents_file: Some(config.data_dir.join("known-agents")),
        status,
        clock,
    })
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
/// consumes the events that waited for it.
fn queue_name(config: &Config) -> anyhow::Result<String> {
    match &config.events.queue {
        Some(queue) => Ok(queue.clone()),
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
