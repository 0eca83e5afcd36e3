//! Prometheus metrics: the recorder (installed once per process by `dron serve`), the
//! `GET /metrics` endpoint, and the middleware timing every API request.
//!
//! The scheduler's counters (`dron_launches_total`, `dron_runs_finished_total{state}`,
//! `dron_retries_total`, `dron_skipped_targets_total`, `dron_start_lateness_seconds`) are
//! recorded by the shards; the per-shard gauges are read from the shards at scrape time, so
//! the scheduling path does no extra work for them.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// Histogram buckets in seconds: from a millisecond to several minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often histogram samples are folded in (the exporter needs a periodic upkeep).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder and starts its upkeep task. Call once,
/// inside the Tokio runtime.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), SECONDS_BUCKETS)?
        .install_recorder()?;
    register_at_zero();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Counters (and gauges) that only move on an event (a failure, a lost agent) are shown at zero from the
/// start: an alert's `increase(...)` needs a series from before the first event to see it,
/// and the alert rules' test (tests/monitoring.rs) finds every name they use on a fresh
/// server. Per-shard restarts are registered by the shard supervisor, which knows the shards.
fn register_at_zero() {
    for name in [
        "dron_launches_total",
        "dron_retries_total",
        "dron_skipped_targets_total",
        "dron_writes_pushed_back_total",
        "dron_broker_stalls_total",
        "dron_agents_lost_total",
        "dron_agent_lost_attempts_total",
        "dron_instances_expired_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for state in [
        "succeeded",
        "failed",
        "killed",
        "timed_out",
        "skipped",
        "expired",
    ] {
        metrics::counter!("dron_runs_finished_total", "state" => state).increment(0);
    }
    for channel in ["email", "webhook"] {
        metrics::counter!("dron_notifications_sent_total", "channel" => channel).increment(0);
        metrics::counter!("dron_notifications_failed_total", "channel" => channel).increment(0);
    }
    // Gauges their actors set on a change: nothing waits before the first.
    metrics::gauge!("dron_tasks_waiting_for_offer").set(0.0);
    metrics::gauge!("dron_notifications_queued").set(0.0);
    // Counted up and down around each hand-over (actors/src/in_flight.rs): none before the
    // first. Adding zero registers them without touching a count already started.
    metrics::gauge!("dron_announcements_in_flight").increment(0.0);
    metrics::gauge!("dron_notices_in_flight").increment(0.0);
}

/// `GET /metrics`: the Prometheus text format. Per-shard gauges are refreshed first; while
/// shards recover they are simply left out.
pub async fn render(State(state): State<AppState>) -> Response {
    if let Some(client) = state.scheduler()
        && let Ok(stats) = client.shard_stats().await
    {
        for shard in stats {
            let label = shard.shard.to_string();
            metrics::gauge!("dron_jobs", "shard" => label.clone()).set(shard.jobs as f64);
            metrics::gauge!("dron_live_instances", "shard" => label.clone())
                .set(shard.live_instances as f64);
            metrics::gauge!("dron_runs_launching", "shard" => label.clone())
                .set(shard.launching as f64);
            metrics::gauge!("dron_shard_behind_seconds", "shard" => label)
                .set(shard.behind_ms as f64 / 1000.0);
        }
    }
    let body = state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Records `dron_api_request_duration_seconds{method, status}` for every request; the
/// cluster's internal traffic (`/internal/...`, should it pass here) as
/// `dron_internal_request_duration_seconds` instead, so Raft's heartbeats do not drown the
/// API's latencies.
pub async fn track(request: Request, next: Next) -> Response {
    if request.uri().path().starts_with(super::INTERNAL_PREFIX) {
        return track_internal(request, next).await;
    }
    timed(API_DURATION, request, next).await
}

/// Records `dron_internal_request_duration_seconds{method, status}`: the cluster's traffic
/// between servers, all of its routes as one.
pub async fn track_internal(request: Request, next: Next) -> Response {
    timed(INTERNAL_DURATION, request, next).await
}

const API_DURATION: &str = "dron_api_request_duration_seconds";
const INTERNAL_DURATION: &str = "dron_internal_request_duration_seconds";

async fn timed(name: &'static str, request: Request, next: Next) -> Response {
    let method = method_label(&request);
    let started = Instant::now();
    let response = next.run(request).await;
    histogram(name, method, response.status().as_u16()).record(started.elapsed().as_secs_f64());
    response
}

/// The histogram of `name{method, status}`, looked up in the recorder once per process:
/// formatting the status and searching the registry on every request was about 1.5 % of a
/// create's instructions (docs/benchmarks.md). Methods are a fixed set and statuses a few,
/// so the cache stays small.
fn histogram(name: &'static str, method: &'static str, status: u16) -> metrics::Histogram {
    type Cache = HashMap<(&'static str, &'static str, u16), metrics::Histogram>;
    static CACHE: LazyLock<RwLock<Cache>> = LazyLock::new(RwLock::default);
    let key = (name, method, status);
    if let Some(histogram) = CACHE.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return histogram.clone();
    }
    let histogram = metrics::histogram!(name, "method" => method, "status" => status.to_string());
    CACHE
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, histogram.clone());
    histogram
}

/// The request's method as a label: the standard ones by name, any other as `other`, so a
/// client inventing methods cannot grow the label set.
fn method_label(request: &Request) -> &'static str {
    const KNOWN: &[&str] = &[
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    let method = request.method().as_str();
    KNOWN
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other")
}
