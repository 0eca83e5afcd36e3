//! Resource events and lineage: `POST /resources` (also under `/api`), `GET /api/resources`,
//! and what a job's instances still wait for (`GET /api/jobs/{name}/waiting`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use dron_actors::bus::Origin;
use dron_model::name::validate_job_name;
use dron_model::resource::{EventMessage, validate_resource_id};
use serde::Deserialize;
use serde_json::{Value, json};

use super::time;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::ApiJson;

/// Announces that a resource is ready: `{"resource": "...", "at": "...", "meta": {...}}`.
/// Answers 202 once the event is recorded and applied; a repeat of an event already
/// recorded answers 200 with `"duplicate": true` and changes nothing.
pub async fn announce(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let event = EventMessage::from_value(body)?;
    let resource = event.resource.clone();
    let ingested = state.client()?.ingest(event, Origin::Api).await?;
    let status = match ingested.duplicate {
        true => StatusCode::OK,
        false => StatusCode::ACCEPTED,
    };
    let body = json!({
        "resource": resource,
        "at": time(Some(ingested.at_ms)),
        "duplicate": ingested.duplicate,
        "applied": ingested.applied,
    });
    Ok((status, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceQuery {
    id: String,
}

/// Whether a resource is satisfied, which jobs produce it, wait for it or are triggered by
/// it, and which instances wait for it now.
pub async fn lineage(
    State(state): State<AppState>,
    query: Result<Query<ResourceQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("give the resource as ?id=...: {}", e.body_text()),
        )
    })?;
    validate_resource_id("id", &query.id)?;
    let lineage = state.client()?.lineage(&query.id).await?;
    let satisfied = lineage.record.as_ref().map(|record| {
        json!({
            "at": time(Some(record.at_ms)),
            "recorded": time(Some(record.recorded_ms)),
            "meta": serde_json::from_str::<Value>(&record.meta_json).unwrap_or(Value::Null),
        })
    });
    let shards = lineage.shards;
    Ok(Json(json!({
        "resource": query.id,
        "satisfied": satisfied.is_some(),
        "event": satisfied,
        "producers": shards.producers,
        "consumers": shards.consumers,
        "triggered": shards.triggered,
        "waiting": shards.waiting,
    })))
}

/// Each live instance of a job with what it still waits for (`dron why JOB`).
pub async fn waiting(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    validate_job_name("name", &name)?;
    let view = state.client()?.job(&name).await?;
    let wait_timeout = view.record.spec.wait_timeout_ms();
    let instances: Vec<Value> = view
        .live
        .iter()
        .map(|instance| {
            let id = instance.id();
            let missing = view
                .waiting_for
                .iter()
                .find(|(waiting, _)| *waiting == id)
                .map(|(_, missing)| missing.clone())
                .unwrap_or_default();
            let expires = (!missing.is_empty()).then(|| instance.created_ms + wait_timeout);
            json!({
                "instance": id,
                "target": time(Some(instance.target_ms)),
                "state": instance.state.as_str(),
                "resources": instance.resources,
                "waitingFor": missing,
                "expires": time(expires),
            })
        })
        .collect();
    Ok(Json(json!({
        "job": name,
        "dependsOn": view.record.spec.depends_on,
        "parents": view.record.spec.parents(),
        "parentsSucceeded": view.record.state.parents_succeeded,
        "instances": instances,
    })))
}
