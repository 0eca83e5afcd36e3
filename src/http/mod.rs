//! The HTTP API: Chronos's (under `/scheduler` and `/v1/scheduler`) and dron's own (`/api`),
//! and the web UI that reads them (`/ui/`).

mod agents;
pub mod auth;
mod chronos;
mod chronos_extra;
mod cross_site;
pub mod error;
mod json;
pub mod metrics;
mod native;
mod ui;

use std::sync::{Arc, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use dron_actors::broker::BrokerMsg;
use dron_actors::client::SchedulerClient;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;

use error::ApiError;
pub use json::MAX_BODY_BYTES;

/// Shared by every handler. The scheduler handle is set once recovery has finished; until
/// then every endpoint answers 503, `/health` included (`/ping` aside: it only says the
/// process is up).
#[derive(Clone)]
pub struct AppState {
    scheduler: Arc<OnceLock<SchedulerClient>>,
    /// The address this server listens on, answered as Chronos's leader.
    leader: Arc<str>,
    /// Renders `GET /metrics`; None: the endpoint answers an empty page.
    metrics: Option<PrometheusHandle>,
    /// None: authentication is off.
    auth: Option<Arc<auth::Credentials>>,
    /// Set when the AMQP link runs: whether it is connected.
    amqp: Arc<OnceLock<crate::events::amqp::Connected>>,
    /// The offer broker, set as soon as it runs (agents may connect while shards recover).
    broker: Arc<OnceLock<ActorRef<BrokerMsg>>>,
}

impl AppState {
    pub fn new(leader: impl Into<Arc<str>>) -> Self {
        AppState {
            scheduler: Arc::default(),
            leader: leader.into(),
            metrics: None,
            auth: None,
            amqp: Arc::default(),
            broker: Arc::default(),
        }
    }

    pub fn set_broker(&self, broker: ActorRef<BrokerMsg>) {
        let _ = self.broker.set(broker);
    }

    fn broker(&self) -> Result<&ActorRef<BrokerMsg>, ApiError> {
        self.broker
            .get()
            .ok_or_else(|| ApiError::unavailable("dron is starting; retry shortly"))
    }

    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    pub fn with_auth(mut self, config: &crate::config::AuthConfig) -> Self {
        self.auth = auth::Credentials::from_config(config);
        self
    }

    pub fn set_amqp(&self, connected: crate::events::amqp::Connected) {
        let _ = self.amqp.set(connected);
    }

    /// "off" without AMQP, else "connected" or "disconnected" (dron keeps scheduling).
    fn amqp_status(&self) -> &'static str {
        match self.amqp.get() {
            None => "off",
            Some(up) if up.load(std::sync::atomic::Ordering::Relaxed) => "connected",
            Some(_) => "disconnected",
        }
    }

    pub fn set_ready(&self, client: SchedulerClient) {
        let _ = self.scheduler.set(client);
    }

    fn client(&self) -> Result<&SchedulerClient, ApiError> {
        self.scheduler
            .get()
            .ok_or_else(|| ApiError::unavailable("dron is recovering its shards; retry shortly"))
    }
}

pub fn router(state: AppState, fault_injection: bool) -> axum::Router {
    axum::Router::new()
        .merge(chronos::routes())
        .nest("/v1", chronos::routes())
        .merge(native::routes(fault_injection))
        .merge(agents::routes())
        .merge(ui::routes())
        .route("/ping", axum::routing::get(ping))
        .route("/metrics", axum::routing::get(metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(
            cross_site::refuse_cross_site_writes,
        ))
        // Outermost last: every request is timed, refused ones included.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

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
