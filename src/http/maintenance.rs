//! Maintenance of a running server: `POST /api/gc` (a retention pass now, or what one would
//! delete) and `POST /api/backup` (a consistent copy of every store, written on the server's
//! machine). In a cluster, `/api/gc` goes to the leader, whose pruner it runs; `/api/backup`
//! is answered by the server asked, which backs up its own copy of the stores.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::json::parse_json;
use crate::retention::GcReport;
use crate::storage::backup::{self, Manifest};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/gc", post(gc))
        .route("/api/backup", post(take_backup))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GcRequest {
    /// Only say what would be deleted.
    #[serde(default)]
    dry_run: bool,
}

/// Runs a retention pass (after the one under way, if any) and answers what it deleted.
async fn gc(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<GcReport>> {
    let request: GcRequest = match body.is_empty() {
        true => GcRequest::default(),
        false => parse_json(&body)?,
    };
    let pruner = state.retention()?;
    let report = pruner
        .run(request.dry_run)
        .await
        .ok_or_else(|| ApiError::unavailable("the scheduler stopped here; retry shortly"))?;
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BackupRequest {
    /// Where the backup goes, on the server's machine: an absolute path, new or empty.
    dir: std::path::PathBuf,
}

/// Backs up every store into `dir` while the server goes on scheduling.
async fn take_backup(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Manifest>)> {
    let BackupRequest { dir } = parse_json(&body)?;
    let source = state.backup()?;
    let manifest = tokio::task::spawn_blocking(move || {
        backup::prepare_empty(&dir).map_err(|refused| {
            let mut error = ApiError::new(StatusCode::BAD_REQUEST, refused.to_string());
            error.field = Some("dir");
            error
        })?;
        source.backup(&dir).map_err(|error| {
            // The directory was fine: what failed is the server's (its disk, its stores).
            let status = match error.is_no_space() {
                true => StatusCode::INSUFFICIENT_STORAGE,
                false => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError::new(status, format!("the backup failed: {error}"))
        })
    })
    .await
    .map_err(|_| ApiError::unavailable("the backup was interrupted"))??;
    Ok((StatusCode::CREATED, Json(manifest)))
}
