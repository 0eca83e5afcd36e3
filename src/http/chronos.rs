//! The Chronos REST API, served under `/scheduler` (Chronos 2.x) and `/v1/scheduler` (3.x).
//! Successful writes answer 204 No Content, as Chronos does; reads answer JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use chrono::Utc;
use dron_actors::error::CommandError;
use dron_model::ids::parse_task_id;
use dron_model::job::{JobKind, JobRecord, JobRequest};
use dron_model::name::validate_job_name;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use super::streamed::{JOB_STREAM_BATCH, streamed_json_array};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/scheduler/iso8601", put(put_scheduled).post(put_scheduled))
        .route(
            "/scheduler/dependency",
            put(put_dependent).post(put_dependent),
        )
        .route("/scheduler/jobs", get(list_jobs))
        .route(
            "/scheduler/job/{name}",
            get(get_job).put(run_now).delete(delete_job),
        )
        .route("/scheduler/task/kill/{name}", delete(kill_tasks))
        .route("/scheduler/task/{task_id}", put(complete_task))
        .route("/scheduler/graph/dot", get(graph_dot))
        .merge(super::chronos_extra::routes())
}

async fn put_scheduled(
    state: State<AppState>,
    ApiJson(request): ApiJson<JobRequest>,
) -> ApiResult<StatusCode> {
    put_job(state, request, JobKind::Scheduled).await
}

async fn put_dependent(
    state: State<AppState>,
    ApiJson(request): ApiJson<JobRequest>,
) -> ApiResult<StatusCode> {
    put_job(state, request, JobKind::Dependent).await
}

async fn put_job(
    State(state): State<AppState>,
    request: JobRequest,
    kind: JobKind,
) -> ApiResult<StatusCode> {
    let received = Utc::now();
    let mut spec = request.validate(kind, received)?;
    for url in &spec.notify_webhooks {
        state.check_webhook("notifyWebhooks", url)?;
    }
    let client = state.client()?;
    if spec.keeps_secrets() {
        // A job read (secrets shown as placeholders), changed and sent back keeps them.
        let stored = match client.job(&spec.name).await {
            Ok(view) => Some(view.record.spec),
            Err(CommandError::JobNotFound(_)) => None,
            Err(error) => return Err(error.into()),
        };
        spec.keep_secrets(stored.as_ref())?;
    }
    client.put_job(spec, received.timestamp_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every job as Chronos lists them, sorted by name, streamed: the array is written a batch of
/// jobs at a time as the shards answer, so a million jobs never sit in memory at once
/// (docs/benchmarks.md). A shard failing midway cuts the response short (its JSON then does not
/// parse), the only way left once the 200 is out.
async fn list_jobs(State(state): State<AppState>) -> ApiResult<Response> {
    let jobs = state.client()?.job_stream(JOB_STREAM_BATCH).await?;
    Ok(streamed_json_array(jobs, JobRecord::to_chronos_json))
}

async fn get_job(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    validate_job_name("name", &name)?;
    Ok(Json(
        state.client()?.job(&name).await?.record.to_chronos_json(),
    ))
}

async fn run_now(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    validate_job_name("name", &name)?;
    state.client()?.run_now(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_job(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    validate_job_name("name", &name)?;
    state
        .client()?
        .delete_job(&name, Utc::now().timestamp_millis())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill_tasks(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    validate_job_name("name", &name)?;
    state.client()?.kill_tasks(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TaskCompletion {
    status_code: i32,
}

/// An async job reports its end: `{"statusCode": 0}` is success, anything else a failure.
async fn complete_task(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiJson(completion): ApiJson<TaskCompletion>,
) -> ApiResult<StatusCode> {
    let task = parse_task_id(&task_id).ok_or_else(|| {
        ApiError::not_found(format!(
            "'{task_id}' is not a task id dron issued (ct:<target>:<attempt>:<job>:)"
        ))
    })?;
    state
        .client()?
        .complete_async(task, completion.status_code)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The dependency graph in Graphviz dot, nodes coloured by their last result.
async fn graph_dot(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let jobs = state.client()?.jobs().await?;
    let mut dot = String::from("digraph G {\n  node [style=filled];\n");
    for job in &jobs {
        let colour = match (job.state.last_success_ms, job.state.last_error_ms) {
            (None, None) => "white",
            (Some(success), Some(error)) if error > success => "red",
            (None, Some(_)) => "red",
            _ => "green",
        };
        dot.push_str(&format!("  \"{}\" [fillcolor={colour}];\n", job.spec.name));
    }
    for job in &jobs {
        for parent in job.spec.parents() {
            dot.push_str(&format!("  \"{parent}\" -> \"{}\";\n", job.spec.name));
        }
    }
    dot.push_str("}\n");
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/vnd.graphviz; charset=utf-8",
        )],
        dot,
    ))
}
