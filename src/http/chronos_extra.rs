//! The rest of Chronos's API: search, summary, manual success, run-time statistics, the graph
//! as CSV, and the leader. Shapes follow Chronos's serializers, since its UI and clients
//! parse them; where dron departs, docs/api.md says so.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use chrono::DateTime;
use dron_actors::coordinator::JobSummary;
use dron_actors::search::{DEFAULT_LIMIT, JobSearch};
use dron_actors::stats::{Durations, Statistic, run_duration_ms};
use dron_model::error::Invalid;
use dron_model::instance::HistoryEntry;
use dron_model::job::{JobRecord, JobState, Trigger};
use dron_model::name::validate_job_name;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};

/// History entries per job that statistics are computed from: the default `history_keep`,
/// about the sample Chronos's histograms held (1,028).
const STATS_SAMPLE: usize = 1000;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/scheduler/jobs/search", get(search))
        .route("/scheduler/jobs/summary", get(summary))
        .route("/scheduler/job/success/{name}", put(mark_success))
        .route("/scheduler/job/stat/{name}", get(job_stat))
        .route("/scheduler/stats/{statistic}", get(stats))
        .route("/scheduler/graph/csv", get(graph_csv))
        .route("/scheduler/leader", get(leader))
}

/// Every parameter is optional; numbers are parsed here so a bad one is named in the error.
#[derive(Deserialize)]
struct SearchParams {
    name: Option<String>,
    command: Option<String>,
    any: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> ApiResult<Json<Vec<Value>>> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let search = JobSearch {
        limit: count_param("limit", params.limit.as_deref())?.unwrap_or(DEFAULT_LIMIT),
        offset: count_param("offset", params.offset.as_deref())?.unwrap_or(0),
        name: params.name,
        command: params.command,
        any: params.any,
    };
    let jobs = state.client()?.search_jobs(&search).await?;
    Ok(Json(jobs.iter().map(JobRecord::to_chronos_json).collect()))
}

pub(crate) fn count_param(
    field: &'static str,
    text: Option<&str>,
) -> Result<Option<usize>, Invalid> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        Invalid::new(
            field,
            format!("{field} must be a non-negative integer, got '{text}'"),
        )
    })
}

/// Chronos 3's summary: each job's last result (`status`) and live state (`state`).
async fn summary(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let jobs = state.client()?.job_summaries().await?;
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let spec = &job.record.spec;
            let schedule = match &spec.trigger {
                Trigger::Schedule { schedule, .. } => schedule.as_str(),
                _ => "",
            };
            json!({
                "name": spec.name,
                "status": last_result(&job.record.state),
                "state": job.run_state.as_str(),
                "schedule": schedule,
                "parents": spec.parents(),
                "disabled": spec.disabled,
            })
        })
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

/// Chronos's "last state" of a job (see [`dron_actors::listing::last_result`]).
fn last_result(state: &JobState) -> &'static str {
    dron_actors::listing::last_result(state.last_success_ms, state.last_error_ms)
}

/// Answers as Chronos does (200, plain text), for the scripts that grep it.
async fn mark_success(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    validate_job_name("name", &name)?;
    state.client()?.mark_success(&name).await?;
    Ok(plain_text(format!("marked job {name} as successful: true")))
}

/// The job's run-time histogram (milliseconds) and its recent finished runs, newest first.
async fn job_stat(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    validate_job_name("name", &name)?;
    let history = state.client()?.history(&name, STATS_SAMPLE).await?;
    let durations = Durations::from_history(&history);
    let mut histogram = Map::new();
    for statistic in Statistic::ALL {
        histogram.insert(statistic.as_str().into(), json!(durations.get(statistic)));
    }
    histogram.insert("count".into(), json!(durations.count()));
    let tasks: Vec<Value> = history.iter().filter_map(task_stat).collect();
    Ok(Json(
        json!({ "histogram": histogram, "taskStatHistory": tasks }),
    ))
}

/// One finished run in Chronos's `taskStatHistory` shape (its time and duration formats).
fn task_stat(entry: &HistoryEntry) -> Option<Value> {
    let HistoryEntry::Run(run) = entry else {
        return None;
    };
    let mut stat = json!({
        "taskId": run.task_id(),
        "jobName": run.job,
        "slaveId": "local",
        "startTime": chronos_time(run.started_ms),
        "endTime": chronos_time(run.ended_ms),
        "status": run.state.as_str(),
    });
    if let Some(ms) = run_duration_ms(entry) {
        stat["duration"] = Value::from(chronos_duration(ms));
    }
    Some(stat)
}

fn chronos_time(ms: Option<i64>) -> String {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|t| t.format("%m/%d/%y %H:%M:%S").to_string())
        .unwrap_or_else(|| "N/A".into())
}

/// `1d2h3m4s`, leaving out leading zero units, as Chronos's period formatter prints.
fn chronos_duration(ms: i64) -> String {
    let seconds = ms / 1000;
    let units = [
        (seconds / 86_400, "d"),
        (seconds / 3600 % 24, "h"),
        (seconds / 60 % 60, "m"),
    ];
    let mut text: String = units
        .iter()
        .filter(|(value, _)| *value > 0)
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect();
    text.push_str(&format!("{}s", seconds % 60));
    text
}

/// Per job with finished runs, one statistic of its run times in seconds, slowest first:
/// `[{"jobNameLabel": ..., "time": ...}]` as Chronos answers.
async fn stats(
    State(state): State<AppState>,
    Path(statistic): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    let Some(statistic) = Statistic::parse(&statistic) else {
        let known: Vec<&str> = Statistic::ALL.iter().map(|s| s.as_str()).collect();
        let message = format!(
            "unknown statistic '{}': expected one of {}",
            dron_model::name::truncate(&statistic),
            known.join(", ")
        );
        return Err(Invalid::new("statistic", message).into());
    };
    let mut times: Vec<(String, f64)> = state
        .client()?
        .run_durations(STATS_SAMPLE)
        .await?
        .into_iter()
        .map(|(job, runs)| (job, Durations::new(runs)))
        .filter(|(_, durations)| !durations.is_empty())
        .map(|(job, durations)| (job, durations.get(statistic) / 1000.0))
        .collect();
    times.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let answer = times
        .into_iter()
        .map(|(job, time)| json!({ "jobNameLabel": job, "time": time }))
        .collect();
    Ok(Json(answer))
}

/// Chronos's graph export: `node,<name>,<last result>,<state>` per job, then
/// `link,<parent>,<child>` per edge. Job names cannot hold a comma, so nothing needs quoting.
async fn graph_csv(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let jobs = state.client()?.job_summaries().await?;
    let mut csv = String::new();
    for JobSummary { record, run_state } in &jobs {
        let status = last_result(&record.state);
        let line = format!(
            "node,{},{status},{}\n",
            record.spec.name,
            run_state.as_str()
        );
        csv.push_str(&line);
    }
    for JobSummary { record, .. } in &jobs {
        for parent in record.spec.parents() {
            csv.push_str(&format!("link,{parent},{}\n", record.spec.name));
        }
    }
    Ok(plain_text(csv))
}

/// dron is one server today, so the leader is this server.
async fn leader(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.client()?;
    Ok(Json(json!({ "leader": state.leader.as_ref() })))
}

pub fn plain_text(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
}
