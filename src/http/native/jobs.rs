//! `GET /api/jobs`: the UI's jobs table, one page at a time, searched, filtered and sorted on
//! the shards (`dron_actors::listing`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use dron_actors::listing::{self, JobFilter, JobQuery, JobRow, SortKey};
use dron_model::error::Invalid;
use dron_model::job::Trigger;
use serde::Deserialize;
use serde_json::{Value, json};

use super::time;
use crate::http::AppState;
use crate::http::chronos_extra::count_param;
use crate::http::error::{ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsParams {
    q: Option<String>,
    filter: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<JobsParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let query = job_query(params)?;
    let page = state.client()?.query_jobs(&query).await?;
    let jobs: Vec<Value> = page.rows.iter().map(row_json).collect();
    Ok(Json(json!({
        "total": page.total,
        "offset": query.offset,
        "limit": query.limit,
        "jobs": jobs,
    })))
}

fn job_query(params: JobsParams) -> Result<JobQuery, Invalid> {
    let limit = count_param("limit", params.limit.as_deref())?;
    Ok(JobQuery {
        q: params.q.unwrap_or_default().trim().to_string(),
        filters: filters(params.filter.as_deref().unwrap_or(""))?,
        sort: sort_key(params.sort.as_deref())?,
        descending: descending(params.order.as_deref())?,
        offset: count_param("offset", params.offset.as_deref())?.unwrap_or(0),
        limit: limit
            .unwrap_or(listing::DEFAULT_LIMIT)
            .clamp(1, listing::MAX_LIMIT),
    })
}

/// `failing`, `running`, `disabled`, or several joined by commas (all must hold).
fn filters(text: &str) -> Result<Vec<JobFilter>, Invalid> {
    let words = text.split(',').map(str::trim).filter(|w| !w.is_empty());
    words
        .map(|word| {
            JobFilter::parse(word).ok_or_else(|| {
                let known: Vec<&str> = JobFilter::ALL.iter().map(|f| f.as_str()).collect();
                unknown("filter", word, &known)
            })
        })
        .collect()
}

fn sort_key(text: Option<&str>) -> Result<SortKey, Invalid> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(SortKey::default());
    };
    SortKey::parse(text).ok_or_else(|| {
        let known: Vec<&str> = SortKey::ALL.iter().map(|k| k.as_str()).collect();
        unknown("sort", text, &known)
    })
}

fn descending(text: Option<&str>) -> Result<bool, Invalid> {
    match text.unwrap_or("") {
        "" | "asc" => Ok(false),
        "desc" => Ok(true),
        other => Err(unknown("order", other, &["asc", "desc"])),
    }
}

fn unknown(field: &'static str, value: &str, known: &[&str]) -> Invalid {
    let value = dron_model::name::truncate(value);
    let message = format!(
        "unknown {field} '{value}': expected one of {}",
        known.join(", ")
    );
    Invalid::new(field, message)
}

/// A row as the table shows it; the UI words the schedule itself.
fn row_json(row: &JobRow) -> Value {
    let (kind, schedule, zone, parents, pattern) = match &row.trigger {
        Trigger::Schedule {
            schedule,
            time_zone,
        } => ("schedule", Some(schedule), Some(time_zone), &[][..], None),
        Trigger::Parents(parents) => ("parents", None, None, &parents[..], None),
        Trigger::Resource { pattern } => ("event", None, None, &[][..], Some(pattern)),
    };
    json!({
        "name": row.name,
        "command": row.command,
        "owner": row.owner,
        "kind": kind,
        "schedule": schedule,
        "scheduleTimeZone": zone,
        "parents": parents,
        "triggeredBy": pattern,
        "nextFire": time(row.next_fire_ms),
        "lastSuccess": time(row.last_success_ms),
        "lastError": time(row.last_error_ms),
        "successCount": row.success_count,
        "errorCount": row.error_count,
        "disabled": row.disabled,
        "runState": row.run_state.as_str(),
        "status": row.last_result(),
    })
}
