//! dron's own API, for what Chronos lacks: health, run history (skipped targets included),
//! shards and resharding, task output, schedule previews, notifications, and what the UI
//! reads: the jobs table and the dependency graph.

mod backfill;
mod graph;
mod jobs;
mod notifications;
mod output;
mod preview;
mod resources;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use dron_model::instance::{HistoryEntry, InstanceRecord, InstanceState};
use dron_model::name::validate_job_name;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::json::ApiJson;

pub fn routes(fault_injection: bool) -> axum::Router<AppState> {
    let routes = axum::Router::new()
        .route("/health", get(health))
        .route("/api/jobs", get(jobs::list))
        .route("/api/jobs/{name}", get(job))
        .route("/api/jobs/{name}/runs", get(runs))
        .route(
            "/api/jobs/{name}/runs/{task_id}/stdout",
            get(output::stdout),
        )
        .route(
            "/api/jobs/{name}/runs/{task_id}/stderr",
            get(output::stderr),
        )
        .route("/api/jobs/{name}/next", get(preview::next))
        .route("/api/jobs/{name}/backfill", post(backfill::create))
        .route(
            "/api/jobs/{name}/runs/{task_id}/rerun",
            post(backfill::rerun),
        )
        .route("/api/backfills", get(backfill::list))
        .route(
            "/api/backfills/{id}",
            get(backfill::show).delete(backfill::cancel),
        )
        .route("/api/jobs/{name}/waiting", get(resources::waiting))
        .route("/resources", post(resources::announce))
        .route(
            "/api/resources",
            post(resources::announce).get(resources::lineage),
        )
        .route("/api/schedule/preview", get(preview::preview))
        .route("/api/graph", get(graph::graph))
        .route("/api/notifications", get(notifications::list))
        .route("/api/notifications/test", post(notifications::test))
        .route("/api/shards", get(shards).put(set_shards))
        .route("/api/openapi.json", get(openapi));
    if fault_injection {
        routes.route("/api/debug/shards/{shard}/panic", post(inject_panic))
    } else {
        routes
    }
}

/// The hand-written OpenAPI 3.0 document of this API (`docs/openapi.json`).
const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// 200 once recovery has finished (the router answers only after every shard has loaded);
/// 503 before. In a cluster, 200 only where a leader is known: on the leader once it
/// schedules, on a follower that knows the leader (it forwards the API there). Says the
/// server's `role` and the `leader`'s id (and `leaderAddress`).
async fn health(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let cluster = state.cluster_status();
    let mut body = json!({
        "role": cluster.role,
        "leader": cluster.leader,
        "leaderAddress": cluster.leader_address,
        "amqp": state.amqp_status(),
    });
    let leads = cluster.leader == Some(cluster.this_node);
    let problem = if cluster.scheduling || (leads && state.cluster.is_none()) {
        match state.client() {
            Ok(client) => match client.shard_count().await {
                Ok(shards) => {
                    body["status"] = json!("ok");
                    body["shards"] = json!(shards);
                    return Json(body).into_response();
                }
                Err(error) => ApiError::from(error).message,
            },
            Err(error) => error.message,
        }
    } else if cluster.role == crate::cluster::view::Role::Removed {
        "this server was removed from the cluster (dron cluster remove-node): it schedules \
         nothing; stop it"
            .to_string()
    } else if cluster.role == crate::cluster::view::Role::Learner && cluster.nodes.is_empty() {
        "this server was started with --join and waits to be added to a cluster (dron cluster \
         add-node ID ADDRESS, through one of its servers)"
            .to_string()
    } else if cluster.role == crate::cluster::view::Role::CutOff {
        "this server led, but no majority of the cluster has answered it within its lease: it \
         is cut off and schedules nothing"
            .to_string()
    } else if leads {
        "this server was elected leader and is recovering its shards; retry shortly".to_string()
    } else if cluster.leader.is_some() && cluster.leader_address.is_some() {
        // A follower: it forwards the API to the leader it knows.
        body["status"] = json!("ok");
        return Json(body).into_response();
    } else {
        "no leader is elected yet; retry shortly".to_string()
    };
    body["status"] = json!("unavailable");
    body["error"] = json!(problem);
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn job(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    validate_job_name("name", &name)?;
    let view = state.client()?.job(&name).await?;
    let live: Vec<Value> = view.live.iter().map(run_json).collect();
    // For a dependent job: which parents have succeeded since its last run.
    let parents_succeeded: Vec<&String> = view.record.state.parents_succeeded.iter().collect();
    Ok(Json(json!({
        "job": view.record.to_chronos_json(),
        "live": live,
        "parentsSucceeded": parents_succeeded,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<usize>,
    /// Entries to skip from the newest: the next page starts at `offset + limit`.
    offset: Option<usize>,
}

/// Live instances, then finished runs and skipped-target ranges, newest first.
async fn runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    validate_job_name("name", &name)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    // History keeps at most `history_keep` entries per job, so the offset is bounded too.
    let offset = query.offset.unwrap_or(0).min(100_000);
    let client = state.client()?;
    let view = client.job(&name).await?;
    let history = client.history(&name, offset + limit).await?;
    let live = view.live.iter().rev().map(run_json);
    let runs: Vec<Value> = live
        .chain(history.iter().map(history_json))
        .skip(offset)
        .take(limit)
        .collect();
    Ok(Json(
        json!({ "job": name, "offset": offset, "limit": limit, "runs": runs }),
    ))
}

fn run_json(run: &InstanceRecord) -> Value {
    // Launched but not yet started by an agent (Mesos's TASK_STAGING): waiting for an offer
    // that fits, or on its way to the agent.
    let staging = run.state == InstanceState::Running && run.agent.is_none();
    json!({
        "kind": "run",
        "instance": run.id(),
        "taskId": run.task_id(),
        "target": time(Some(run.target_ms)),
        "state": if staging { "staging" } else { run.state.as_str() },
        "attempt": run.attempt,
        "cause": run.cause.as_str(),
        "started": time(run.started_ms),
        // How late the attempt started after its target (scheduled runs; null until started).
        "lateMs": run.started_ms.map(|started| started - run.target_ms),
        "ended": time(run.ended_ms),
        // The agent the attempt ran on ("local": the server's own); null until it started.
        "agent": run.agent,
        // Attempts relaunched because their agent was lost (not counted against retries).
        "lostAttempts": run.lost_attempts,
        "exitCode": run.exit_code,
        "message": run.message,
        "resources": run.resources,
    })
}

fn history_json(entry: &HistoryEntry) -> Value {
    match entry {
        HistoryEntry::Run(run) => run_json(run),
        HistoryEntry::Skipped(skipped) => json!({
            "kind": "skipped",
            "state": "skipped",
            "firstTarget": time(Some(skipped.first_target_ms)),
            "until": time(Some(skipped.until_ms)),
            "count": skipped.count,
            "recorded": time(Some(skipped.recorded_ms)),
            "message": skipped.reason,
        }),
    }
}

pub(crate) fn time(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

async fn shards(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let client = state.client()?;
    let count = client.shard_count().await?;
    let stats = client.shard_stats().await?;
    Ok(Json(json!({ "count": count, "shards": stats })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetShards {
    count: u32,
}

/// Changes the shard count online; answers when every job is on its new shard.
async fn set_shards(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetShards>,
) -> ApiResult<Json<Value>> {
    let count = state.client()?.reshard(body.count).await?;
    Ok(Json(json!({ "count": count })))
}

async fn inject_panic(
    State(state): State<AppState>,
    Path(shard): Path<u32>,
) -> ApiResult<StatusCode> {
    state
        .client()?
        .inject_panic(shard)
        .await
        .map_err(ApiError::from)?;
    Ok(StatusCode::ACCEPTED)
}
