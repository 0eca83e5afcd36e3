//! Backfills and reruns: `POST /api/jobs/{name}/backfill`, `POST
//! /api/jobs/{name}/runs/{target}/rerun`, `GET /api/backfills`, `GET` and `DELETE
//! /api/backfills/{id}` (docs/api.md). The shards run them (`dron_actors::backfill`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use dron_actors::backfill::{BackfillRequest, BackfillSummary, Counts, JobProgress};
use dron_model::error::Invalid;
use dron_model::name::{truncate, validate_job_name};
use serde::Deserialize;
use serde_json::{Value, json};

use super::time;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::{ApiJson, parse_json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackfillBody {
    from: Value,
    to: Value,
    #[serde(default)]
    downstream: bool,
    parallel: Option<u32>,
    #[serde(default)]
    rerun_succeeded: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RerunBody {
    #[serde(default)]
    downstream: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A logical time: an RFC 3339 time, or whole Unix milliseconds.
fn logical_time(field: &'static str, value: &Value) -> Result<i64, Invalid> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(text) => match text.parse::<i64>() {
            Ok(ms) => Some(ms),
            Err(_) => chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis()),
        },
        _ => None,
    };
    parsed.ok_or_else(|| {
        let shown = truncate(&value.to_string()).to_string();
        let message = format!("{field} {shown} is not an RFC 3339 time or Unix milliseconds");
        Invalid::new(field, message)
    })
}

pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<BackfillBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate_job_name("name", &name)?;
    let request = BackfillRequest {
        job: name,
        from_ms: logical_time("from", &body.from)?,
        to_ms: logical_time("to", &body.to)?,
        downstream: body.downstream,
        parallel: body.parallel.unwrap_or(1),
        rerun_succeeded: body.rerun_succeeded,
    };
    let id = state.client()?.backfill(request, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub async fn rerun(
    State(state): State<AppState>,
    Path((name, target)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate_job_name("name", &name)?;
    let target_ms = logical_time("target", &Value::String(target))?;
    // The body is optional: `{"downstream": true}` reruns the jobs downstream too.
    let body: RerunBody = match body.iter().all(u8::is_ascii_whitespace) {
        true => RerunBody::default(),
        false => parse_json(&body)?,
    };
    let downstream = body.downstream;
    let client = state.client()?;
    let id = client.rerun(&name, target_ms, downstream, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let backfills = state.client()?.backfills().await?;
    let backfills: Vec<Value> = backfills.iter().map(summary_json).collect();
    Ok(Json(json!({ "backfills": backfills })))
}

pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let summary = state.client()?.backfill_status(&id).await?;
    Ok(Json(summary_json(&summary)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelQuery {
    /// Kill the backfill's live runs too (else they finish).
    #[serde(default)]
    kill: bool,
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<CancelQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let summary = state.client()?.cancel_backfill(&id, query.kill).await?;
    Ok(Json(summary_json(&summary)))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    match dron_model::backfill::valid_id(id) {
        true => Ok(()),
        false => Err(ApiError::not_found(format!(
            "backfill '{}' does not exist",
            truncate(id)
        ))),
    }
}

fn summary_json(summary: &BackfillSummary) -> Value {
    let plan = &summary.plan;
    let mut answer = json!({
        "id": plan.id,
        "job": plan.job,
        "from": time(Some(plan.from_ms)),
        "to": time(Some(plan.to_ms)),
        "downstream": plan.downstream,
        "parallel": plan.parallel,
        "rerunSucceeded": plan.rerun_succeeded,
        "created": time(Some(plan.created_ms)),
        "state": summary.state,
        "jobs": summary.jobs.iter().map(job_json).collect::<Vec<_>>(),
    });
    add_counts(&mut answer, &summary.counts);
    answer
}

fn job_json(job: &JobProgress) -> Value {
    let failed: Vec<Value> = job.failed_targets.iter().map(|t| time(Some(*t))).collect();
    let mut answer = json!({
        "job": job.job,
        "upstream": job.upstream,
        "leftAlone": job.left_alone,
        "failedTargets": failed,
    });
    add_counts(&mut answer, &job.counts);
    answer
}

fn add_counts(answer: &mut Value, counts: &Counts) {
    let fields = [
        ("total", counts.total),
        ("succeeded", counts.succeeded),
        ("failed", counts.failed),
        ("running", counts.running),
        ("waiting", counts.waiting),
        ("upstreamFailed", counts.upstream_failed),
    ];
    for (name, count) in fields {
        answer[name] = json!(count);
    }
}
