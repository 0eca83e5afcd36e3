//! The HTTP API: Chronos's (under `/scheduler` and `/v1/scheduler`) and dron's own (`/api`),
//! and the web UI that reads them (`/ui/`).

mod agent_tokens;
mod agents;
pub mod auth;
mod chronos;
mod chronos_extra;
mod cluster;
mod cross_site;
pub mod error;
mod forward;
mod json;
mod logins;
mod maintenance;
pub mod metrics;
mod native;
pub mod roles;
pub mod serve;
mod streamed;
mod ui;

use std::sync::{Arc, RwLock};

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use dron_actors::broker::BrokerMsg;
use dron_actors::client::SchedulerClient;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;

use crate::cluster::view::{ClusterStatus, ClusterView, NodeStatus, Role};
use crate::storage::agent_tokens::AgentTokenStore;
use error::ApiError;
pub use json::MAX_BODY_BYTES;

/// Shared by every handler. The scheduler handle is set once recovery has finished; until
/// then every endpoint answers 503, `/health` included (`/ping` aside: it only says the
/// process is up).
///
/// In a cluster the scheduler, the broker and the AMQP link run on the leader only: they are
/// set when this server starts leading ([`AppState::set_broker`], [`AppState::set_ready`],
/// [`AppState::set_amqp`]) and cleared when it stops ([`AppState::stand_down`]); meanwhile
/// the API's requests are forwarded to the leader (`forward.rs`). Each is read through an
/// uncontended read lock and cloned out (the scheduler as one `Arc`): about 30 ns a request
/// on this project's machine, against about 1 ns for the `OnceLock` it replaces (see the
/// test `reading_the_scheduler_costs_about_a_once_lock`).
///
/// One `Arc` around all of it: axum clones the state for every layer that takes it and for
/// every handler, so a clone is one reference count, not one per field (the clones and drops
/// of the many `Arc`s inside were about 7 % of a create's CPU: docs/benchmarks.md).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares; its builders (`with_*`) run before the state is shared.
#[derive(Clone)]
pub struct Shared {
    scheduler: Arc<RwLock<Option<Arc<SchedulerClient>>>>,
    /// The address this server listens on, answered as Chronos's leader.
    leader: Arc<str>,
    /// `https` when the server serves TLS, else `http`: how its address is advertised.
    scheme: &'static str,
    /// Renders `GET /metrics`; None: the endpoint answers an empty page.
    metrics: Option<PrometheusHandle>,
    /// None: authentication is off.
    auth: Option<Arc<auth::Credentials>>,
    /// Refused credentials by client address, the API's and agents' alike (`logins.rs`).
    failed_logins: Arc<logins::FailedLogins>,
    /// Set when the AMQP link runs: whether it is connected.
    amqp: Arc<RwLock<Option<crate::events::amqp::Connected>>>,
    /// The offer broker, set as soon as it runs (agents may connect while shards recover).
    broker: Arc<RwLock<Option<ActorRef<BrokerMsg>>>>,
    /// Set in a cluster: who leads, and whether this server schedules. None: a single server.
    cluster: Option<Arc<dyn ClusterView>>,
    /// Carries requests to the leader, in a cluster.
    forwarder: Option<Arc<forward::Forwarder>>,
    /// The pruner, set while the scheduler runs here (`POST /api/gc`).
    retention: Arc<RwLock<Option<crate::retention::pruner::GcHandle>>>,
    /// This server's stores as a backup sees them (`POST /api/backup`), set once open.
    backup: Arc<RwLock<Option<Arc<dyn crate::storage::backup::BackupSource>>>>,
    /// Remote agents' credentials; None: not opened (unit tests).
    agent_tokens: Option<Arc<dyn AgentTokenStore>>,
    /// Whether agents without a credential are accepted: only where the network is trusted
    /// (no API auth and a loopback address, or `--insecure-no-auth`).
    tokenless_agents: bool,
    /// Set on a loopback server: the names its requests' `Host` may carry.
    host_names: Option<Arc<cross_site::HostNames>>,
    /// Where the webhooks that jobs and API users give may go.
    webhook_hosts: Arc<crate::notify::hosts::WebhookHosts>,
    /// The key this server proves its epoch with to agents (`[agents] epoch_key_file`).
    epoch_key: Option<Arc<crate::agent::epoch::EpochKey>>,
    /// Messages waiting for one agent's connection, at most (`[agents] outbox_messages`).
    agent_outbox: usize,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What a single server calls itself in `GET /api/cluster`.
pub const SINGLE_NODE_ID: u64 = 1;

/// Reads a slot whatever a panicking writer left (the values are replaced whole).
fn read<T: Clone>(slot: &RwLock<Option<T>>) -> Option<T> {
    match slot.read() {
        Ok(value) => value.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn write<T>(slot: &RwLock<Option<T>>, value: Option<T>) {
    match slot.write() {
        Ok(mut guard) => *guard = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

impl AppState {
    pub fn new(leader: impl Into<Arc<str>>) -> Self {
        AppState(Arc::new(Shared {
            scheduler: Arc::default(),
            leader: leader.into(),
            scheme: "http",
            metrics: None,
            auth: None,
            failed_logins: Arc::default(),
            amqp: Arc::default(),
            broker: Arc::default(),
            cluster: None,
            forwarder: None,
            retention: Arc::default(),
            backup: Arc::default(),
            agent_tokens: None,
            tokenless_agents: false,
            host_names: None,
            webhook_hosts: Arc::default(),
            epoch_key: None,
            agent_outbox: dron_actors::broker::AGENT_OUTBOX,
        }))
    }

    /// The fields, to set while building (copied first if the state is shared already).
    fn building(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }

    pub fn set_retention(&self, handle: crate::retention::pruner::GcHandle) {
        write(&self.retention, Some(handle));
    }

    fn retention(&self) -> Result<crate::retention::pruner::GcHandle, ApiError> {
        read(&self.retention)
            .ok_or_else(|| ApiError::unavailable("dron is recovering its shards; retry shortly"))
    }

    pub fn set_backup(&self, source: Arc<dyn crate::storage::backup::BackupSource>) {
        write(&self.backup, Some(source));
    }

    fn backup(&self) -> Result<Arc<dyn crate::storage::backup::BackupSource>, ApiError> {
        read(&self.backup)
            .ok_or_else(|| ApiError::unavailable("dron is opening its stores; retry shortly"))
    }

    /// Advertises this server's address as `scheme://` (`https` when it serves TLS).
    pub fn with_scheme(mut self, scheme: &'static str) -> Self {
        self.building().scheme = scheme;
        self
    }

    /// Proves this server's epoch to registering agents with `key`.
    pub fn with_epoch_key(mut self, key: Option<crate::agent::epoch::EpochKey>) -> Self {
        self.building().epoch_key = key.map(Arc::new);
        self
    }

    /// Disconnects an agent that lets more than `messages` wait for its connection.
    pub fn with_agent_outbox(mut self, messages: usize) -> Self {
        self.building().agent_outbox = messages.max(1);
        self
    }

    pub fn with_webhook_hosts(mut self, hosts: crate::notify::hosts::WebhookHosts) -> Self {
        self.building().webhook_hosts = Arc::new(hosts);
        self
    }

    /// 400 naming `field` unless `url` is a host webhooks may go to.
    fn check_webhook(&self, field: &'static str, url: &str) -> Result<(), ApiError> {
        self.webhook_hosts.check(url).map_err(|message| {
            let mut error = ApiError::new(StatusCode::BAD_REQUEST, format!("{field}: {message}"));
            error.field = Some(field);
            error
        })
    }

    /// Refuses requests whose `Host` is not a loopback name or one of `allowed` (for a
    /// server listening on a loopback address).
    pub fn with_host_check(mut self, allowed: &[String]) -> Self {
        self.building().host_names = Some(Arc::new(cross_site::HostNames::new(allowed)));
        self
    }

    /// Where agents' credentials are kept, and whether agents may connect without one.
    pub fn with_agent_tokens(
        mut self,
        store: Arc<dyn AgentTokenStore>,
        tokenless_agents: bool,
    ) -> Self {
        let shared = self.building();
        shared.agent_tokens = Some(store);
        shared.tokenless_agents = tokenless_agents;
        self
    }

    /// This server is one of a cluster: `view` says who leads and whether the scheduler runs
    /// here; where it does not, API requests are forwarded to the leader.
    /// `ca` verifies the other servers' certificates when their addresses are https://.
    pub fn with_cluster(
        mut self,
        view: Arc<dyn ClusterView>,
        ca: Option<&crate::tls::TrustedCa>,
    ) -> Self {
        self.building().cluster = Some(view);
        self.building().forwarder = Some(Arc::new(forward::Forwarder::new(ca)));
        self
    }

    pub fn set_broker(&self, broker: ActorRef<BrokerMsg>) {
        write(&self.broker, Some(broker));
    }

    fn broker(&self) -> Result<ActorRef<BrokerMsg>, ApiError> {
        read(&self.broker).ok_or_else(|| ApiError::unavailable("dron is starting; retry shortly"))
    }

    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.building().metrics = Some(handle);
        self
    }

    pub fn with_auth(mut self, config: &crate::config::AuthConfig) -> Self {
        self.building().auth = auth::Credentials::from_config(config);
        self
    }

    pub fn set_amqp(&self, connected: crate::events::amqp::Connected) {
        write(&self.amqp, Some(connected));
    }

    /// "off" without AMQP, else "connected" or "disconnected" (dron keeps scheduling).
    fn amqp_status(&self) -> &'static str {
        match read(&self.amqp) {
            None => "off",
            Some(up) if up.load(std::sync::atomic::Ordering::Relaxed) => "connected",
            Some(_) => "disconnected",
        }
    }

    pub fn set_ready(&self, client: SchedulerClient) {
        write(&self.scheduler, Some(Arc::new(client)));
    }

    /// This server stopped leading: the scheduler, the broker and the AMQP link are gone
    /// (the caller stops them). Until the next `set_*`, the API answers as not ready, and in a
    /// cluster forwards to the new leader; agents' connections are refused.
    pub fn stand_down(&self) {
        write(&self.scheduler, None);
        write(&self.broker, None);
        write(&self.amqp, None);
        write(&self.retention, None);
    }

    fn scheduler(&self) -> Option<Arc<SchedulerClient>> {
        read(&self.scheduler)
    }

    fn client(&self) -> Result<Arc<SchedulerClient>, ApiError> {
        self.scheduler()
            .ok_or_else(|| ApiError::unavailable("dron is recovering its shards; retry shortly"))
    }

    /// The cluster as this server sees it; a single server is a cluster of one, which it
    /// leads, in term 0, scheduling once recovered.
    pub fn cluster_status(&self) -> ClusterStatus {
        if let Some(view) = &self.cluster {
            return view.status();
        }
        let address = format!("{}://{}", self.scheme, self.leader);
        ClusterStatus {
            leader: Some(SINGLE_NODE_ID),
            // A wildcard listen address (0.0.0.0, [::]) is no address to reach it at: agents
            // told to go there would leave a server they reach.
            leader_address: (!listens_on_any_address(&self.leader)).then(|| address.clone()),
            term: 0,
            this_node: SINGLE_NODE_ID,
            role: Role::Leader,
            scheduling: self.scheduler().is_some(),
            last_log_index: None,
            last_applied: None,
            snapshot_index: None,
            purged_index: None,
            nodes: vec![NodeStatus {
                id: SINGLE_NODE_ID,
                address,
                role: Role::Leader,
                matched_index: None,
                lag_ms: None,
            }],
        }
    }
}

/// Whether a listen address (`host:port`) is a wildcard: every interface, no one address.
fn listens_on_any_address(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|address| address.ip().is_unspecified())
}

pub fn router(state: AppState, fault_injection: bool) -> axum::Router {
    axum::Router::new()
        .merge(chronos::routes())
        .nest("/v1", chronos::routes())
        .merge(native::routes(fault_injection))
        .merge(agents::routes())
        .merge(agent_tokens::routes())
        .merge(cluster::routes())
        .merge(maintenance::routes())
        .merge(ui::routes())
        .route("/ping", axum::routing::get(ping))
        .route("/metrics", axum::routing::get(metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside the body limit (the forwarded body is read under it), after authentication
        // and the cross-site check (refused here, they never reach the leader).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::to_leader,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(
            cross_site::refuse_cross_site_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.host_names.clone(),
            cross_site::refuse_foreign_hosts,
        ))
        // Outermost last: every request is timed, refused ones included.
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// The API's router with the cluster's internal routes (`/internal/...`, the Raft adapter's)
/// beside it: they carry their own authentication (the cluster secret), so none of the API's
/// layers wrap them (no API credentials, no forwarding, no body limit), and their requests
/// are timed as one route, apart from the API's.
pub fn router_with_internal(
    state: AppState,
    fault_injection: bool,
    internal: axum::Router,
) -> axum::Router {
    let internal = internal.layer(axum::middleware::from_fn(metrics::track_internal));
    router(state, fault_injection).merge(internal)
}

/// Paths of the cluster's own traffic between servers.
pub const INTERNAL_PREFIX: &str = "/internal/";

/// Chronos's liveness probe (Dropwizard's ping): answers while shards still recover, since
/// it says only that the process serves HTTP; `/health` says whether it is ready.
async fn ping() -> impl axum::response::IntoResponse {
    chronos_extra::plain_text("pong\n".to_string())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint at {}", uri.path()))
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept this method", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use dron_actors::bus::BusMsg;
    use dron_actors::router::RouterMsg;
    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    /// An actor that takes messages of type `M` and does nothing: the handles the state holds.
    struct Idle<M>(PhantomData<fn() -> M>);

    impl<M: ractor::Message> Actor for Idle<M> {
        type Msg = M;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<M>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    async fn idle<M: ractor::Message>() -> ActorRef<M> {
        Actor::spawn(None, Idle(PhantomData), ()).await.unwrap().0
    }

    #[tokio::test]
    async fn leadership_sets_and_clears_the_scheduler_broker_and_amqp() {
        let state = AppState::new("127.0.0.1:4400");
        assert!(state.client().is_err() && state.broker().is_err());
        assert_eq!(state.amqp_status(), "off");
        assert!(!state.cluster_status().scheduling);

        for _term in 0..2 {
            let client = SchedulerClient::new(idle::<RouterMsg>().await, idle::<BusMsg>().await);
            state.set_broker(idle::<BrokerMsg>().await);
            state.set_ready(client);
            state.set_amqp(Arc::new(AtomicBool::new(true)));
            assert!(state.client().is_ok() && state.broker().is_ok());
            assert_eq!(state.amqp_status(), "connected");
            assert!(
                state.cluster_status().scheduling,
                "a single server schedules once ready"
            );

            state.stand_down();
            let Err(error) = state.client() else {
                panic!("a scheduler after standing down")
            };
            assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(state.broker().is_err());
            assert_eq!(state.amqp_status(), "off");
            assert!(!state.cluster_status().scheduling);
        }
    }

    #[test]
    fn a_single_server_on_a_wildcard_address_advertises_no_leader_address() {
        let reachable = AppState::new("127.0.0.1:4400").cluster_status();
        assert_eq!(
            reachable.leader_address.as_deref(),
            Some("http://127.0.0.1:4400")
        );
        for wildcard in ["0.0.0.0:4400", "[::]:4400"] {
            let status = AppState::new(wildcard).cluster_status();
            assert_eq!(status.leader_address, None, "{wildcard}");
            assert_eq!(status.leader, Some(SINGLE_NODE_ID));
        }
    }

    /// The scheduler handle is read on every request: a read lock and a reference count now,
    /// against a `OnceLock` before. Prints both (`--nocapture`); fails only when far off.
    #[tokio::test]
    async fn reading_the_scheduler_costs_about_a_once_lock() {
        let state = AppState::new("127.0.0.1:4400");
        let client = SchedulerClient::new(idle::<RouterMsg>().await, idle::<BusMsg>().await);
        state.set_ready(client.clone());
        let once = std::sync::OnceLock::new();
        let _ = once.set(client);
        const READS: u32 = 1_000_000;
        let started = Instant::now();
        for _ in 0..READS {
            std::hint::black_box(state.client().is_ok());
        }
        let now = started.elapsed() / READS;
        let started = Instant::now();
        for _ in 0..READS {
            std::hint::black_box(once.get().is_some());
        }
        let before = started.elapsed() / READS;
        println!("scheduler handle read: {now:?} (OnceLock: {before:?})");
        assert!(
            now < std::time::Duration::from_micros(1),
            "{now:?} per read"
        );
    }
}
