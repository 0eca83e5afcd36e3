//! Schedule previews: a job's next targets, and any schedule's targets before it is submitted,
//! each in UTC and in the schedule's time zone, with daylight-saving changes marked.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Offset, SecondsFormat, Utc};
use dron_model::error::Invalid;
use dron_model::name::validate_job_name;
use dron_model::schedule::Schedule;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};

const DEFAULT_COUNT: usize = 10;
const MAX_COUNT: usize = 1000;

/// How a wall-clock target that daylight saving skips or repeats is placed.
const DST_RULE: &str = "a wall-clock time skipped by a spring-forward gap runs at the transition instant; one repeated by a fall-back overlap runs once, at its earlier instant";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    n: Option<String>,
}

/// `GET /api/jobs/{name}/next?n=10`: the job's next `n` targets from now.
pub async fn next(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    validate_job_name("name", &name)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let n = count(query.n.as_deref())?;
    let view = state.client()?.job(&name).await?;
    let spec = &view.record.spec;
    let now = Utc::now();
    if let Some(pattern) = spec.trigger_pattern() {
        return Ok(Json(json!({
            "job": name,
            "triggeredBy": pattern,
            "message": "an event-triggered job has no schedule: it runs on each matching event",
            "targets": [],
        })));
    }
    let Some(schedule) = spec.schedule() else {
        return Ok(Json(json!({
            "job": name,
            "parents": spec.parents(),
            "message": "a dependent job has no schedule: it runs when its parents succeed",
            "targets": [],
        })));
    };
    Ok(Json(json!({
        "job": name,
        "schedule": schedule.canonical(),
        "timeZone": schedule.time_zone().name(),
        "disabled": spec.disabled,
        "from": format_utc(now),
        "dstRule": DST_RULE,
        "targets": targets(&schedule, now, n),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreviewQuery {
    schedule: Option<String>,
    time_zone: Option<String>,
    n: Option<String>,
    from: Option<String>,
}

/// `GET /api/schedule/preview?schedule=...&timeZone=...&n=10[&from=...]`: any schedule's next
/// `n` targets from `from` (default now), without submitting it.
pub async fn preview(query: Result<Query<PreviewQuery>, QueryRejection>) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let n = count(query.n.as_deref())?;
    let now = Utc::now();
    let from = match query.from.as_deref() {
        None => now,
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                Invalid::new(
                    "from",
                    format!(
                        "from '{text}' is not an RFC 3339 instant such as 2027-03-01T00:00:00Z: {e}"
                    ),
                )
            })?
            .with_timezone(&Utc),
    };
    let Some(text) = query.schedule else {
        return Err(Invalid::new("schedule", "schedule is required").into());
    };
    let schedule = Schedule::parse(&text, query.time_zone.as_deref(), now).map_err(|e| {
        // The query parameter is `timeZone` (a job definition's field is scheduleTimeZone).
        let field = match e.field() {
            "scheduleTimeZone" => "timeZone",
            field => field,
        };
        Invalid::new(field, e.to_string())
    })?;
    Ok(Json(json!({
        "schedule": schedule.canonical(),
        "timeZone": schedule.time_zone().name(),
        "from": format_utc(from),
        "dstRule": DST_RULE,
        "targets": targets(&schedule, from, n),
    })))
}

/// `n`, clamped to 1..=1000.
fn count(text: Option<&str>) -> Result<usize, Invalid> {
    match text {
        None => Ok(DEFAULT_COUNT),
        Some(text) => text
            .parse::<i64>()
            .map(|n| n.clamp(1, MAX_COUNT as i64) as usize)
            .map_err(|_| {
                Invalid::new(
                    "n",
                    format!("n '{text}' is not a number: expected a count from 1 to {MAX_COUNT}"),
                )
            }),
    }
}

/// The targets from `from`: UTC, local time with offset, and whether the offset differs from
/// the previous target's (a daylight-saving change between them).
fn targets(schedule: &Schedule, from: DateTime<Utc>, n: usize) -> Vec<Value> {
    let zone = schedule.time_zone();
    let mut previous: Option<i32> = None;
    schedule
        .upcoming(from, n)
        .into_iter()
        .map(|target| {
            let local = target.with_timezone(&zone);
            let offset = local.offset().fix();
            let seconds = offset.local_minus_utc();
            let changed = previous.is_some_and(|p| p != seconds);
            previous = Some(seconds);
            json!({
                "utc": format_utc(target),
                "local": local.fixed_offset().to_rfc3339_opts(SecondsFormat::Millis, false),
                "offset": offset.to_string(),
                "offsetSeconds": seconds,
                "abbreviation": local.format("%Z").to_string(),
                "offsetChanged": changed,
            })
        })
        .collect()
}

fn format_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
