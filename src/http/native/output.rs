//! The captured stdout and stderr of one attempt, read from its run directory
//! (`<data_dir>/runs/<job>/<target_ms>-<attempt>/`), whole or followed by long polling.
//!
//! Following is a long poll rather than a streamed body: `?follow=true&offset=N` answers the
//! bytes from offset N as soon as there are any, waiting up to [`FOLLOW_WAIT`] for new ones,
//! with `X-Dron-Next-Offset` (where to ask next) and `X-Dron-Run-Finished` (whether the shim
//! has recorded the task's end, in which case the answer holds everything that is left).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dron_actors::broker::BrokerMsg;
use dron_model::error::Invalid;
use dron_model::ids::parse_task_id;
use dron_model::instance::HistoryEntry;
use dron_model::name::validate_job_name;
use dron_task::protocol::OutputChunk;
use dron_task::{LOCAL_AGENT, STATUS_FILE, STDERR_FILE, STDOUT_FILE, run_dir};
use ractor::rpc::CallResult;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};

/// The runs root, `<data_dir>/runs`, as an axum extension on the app (see `serve`).
pub type RunsRoot = Arc<Path>;

/// How long a follow request waits for new bytes before answering none.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// How often a follow request looks for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How long a remote agent may take to answer one read of a run's output.
const AGENT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes in one answer; the rest is fetched from `X-Dron-Next-Offset`.
const MAX_CHUNK: u64 = 4 * 1024 * 1024;

pub const NEXT_OFFSET_HEADER: &str = "x-dron-next-offset";
pub const RUN_FINISHED_HEADER: &str = "x-dron-run-finished";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    follow: Option<String>,
    offset: Option<String>,
}

pub async fn stdout(
    State(state): State<AppState>,
    root: Option<Extension<RunsRoot>>,
    UrlPath((name, task_id)): UrlPath<(String, String)>,
    query: Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    output(state, root, name, task_id, query, STDOUT_FILE).await
}

pub async fn stderr(
    State(state): State<AppState>,
    root: Option<Extension<RunsRoot>>,
    UrlPath((name, task_id)): UrlPath<(String, String)>,
    query: Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    output(state, root, name, task_id, query, STDERR_FILE).await
}

async fn output(
    state: AppState,
    root: Option<Extension<RunsRoot>>,
    name: String,
    task_id: String,
    query: Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
    file: &'static str,
) -> ApiResult<Response> {
    validate_job_name("name", &name)?;
    let task = parse_task_id(&task_id).ok_or_else(|| {
        Invalid::new(
            "taskId",
            format!("'{task_id}' is not a dron task id: expected ct:<target_ms>:<attempt>:<job>:"),
        )
    })?;
    if task.job != name {
        return Err(Invalid::new(
            "taskId",
            format!(
                "task '{task_id}' belongs to job '{}', not '{name}'",
                task.job
            ),
        )
        .into());
    }
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let follow = match query.follow.as_deref() {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(other) => {
            return Err(Invalid::new(
                "follow",
                format!("follow '{other}' is not a boolean: expected true or false"),
            )
            .into());
        }
    };
    let offset = match query.offset.as_deref() {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            Invalid::new(
                "offset",
                format!("offset '{text}' is not a byte offset: expected a whole number >= 0"),
            )
        })?,
    };
    let Some(Extension(root)) = root else {
        return Err(ApiError::unavailable(
            "this server was started without a runs directory for task output",
        ));
    };
    let dir = run_dir(&root, &task_id).expect("task id parsed above");
    if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
        if let Some(agent) = remote_agent_of(&state, &name, &task_id).await? {
            let read = RemoteRead {
                agent,
                task_id,
                file,
            };
            return read.answer(&state, offset, follow).await;
        }
        // A live attempt may not have its directory or files yet: its output is empty so far.
        if !is_live(&state, &name, &task_id).await? {
            return Err(ApiError::not_found(format!(
                "no run of task '{task_id}' on this server"
            )));
        }
    }
    let path = dir.join(file);
    let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
    loop {
        // Look for the end first: once status.json exists, the output is complete, so what is
        // read after it is everything.
        let finished = tokio::fs::try_exists(dir.join(STATUS_FILE))
            .await
            .unwrap_or(false);
        let bytes = read_from(&path, offset).await?;
        let more_later = !finished || bytes.len() as u64 == MAX_CHUNK;
        if !follow || !bytes.is_empty() || !more_later || tokio::time::Instant::now() >= deadline {
            let next = offset + bytes.len() as u64;
            return Ok(answer(
                bytes,
                next,
                finished && bytes_complete(&path, next).await,
            ));
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// The remote agent a run of the job ran on (live or in its history), if not the local one.
async fn remote_agent_of(state: &AppState, name: &str, task_id: &str) -> ApiResult<Option<String>> {
    let client = state.client()?;
    let view = match client.job(name).await {
        Ok(view) => view,
        Err(dron_actors::error::CommandError::JobNotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let live = view.live.into_iter().find(|run| run.task_id() == task_id);
    let run = match live {
        Some(run) => Some(run),
        None => client
            .history(name, usize::MAX)
            .await?
            .into_iter()
            .find_map(|entry| match entry {
                HistoryEntry::Run(run) if run.task_id() == task_id => Some(run),
                _ => None,
            }),
    };
    Ok(run
        .and_then(|run| run.agent)
        .filter(|agent| agent != LOCAL_AGENT))
}

/// A run's output read on the remote agent that ran it, through the broker.
struct RemoteRead {
    agent: String,
    task_id: String,
    file: &'static str,
}

impl RemoteRead {
    /// Answers as a local read does, following the same way (polling the agent).
    async fn answer(&self, state: &AppState, offset: u64, follow: bool) -> ApiResult<Response> {
        let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
        loop {
            let chunk = self.chunk(state, offset).await?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&chunk.base64)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("agent '{}' sent bad output: {e}", self.agent),
                    )
                })?;
            let done = !follow || !bytes.is_empty() || chunk.finished;
            if done || tokio::time::Instant::now() >= deadline {
                return Ok(answer(bytes, chunk.next, chunk.finished));
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }

    async fn chunk(&self, state: &AppState, offset: u64) -> ApiResult<OutputChunk> {
        let unavailable = |why: String| {
            ApiError::unavailable(format!(
                "this run's output is on agent '{}': {why}",
                self.agent
            ))
        };
        let broker = state.broker()?;
        let asked = broker.call(
            |reply| BrokerMsg::ReadOutput {
                agent: self.agent.clone(),
                task_id: self.task_id.clone(),
                file: self.file.to_string(),
                offset,
                reply,
            },
            Some(AGENT_READ_TIMEOUT),
        );
        match asked.await {
            Ok(CallResult::Success(Ok(chunk))) => Ok(chunk),
            Ok(CallResult::Success(Err(why))) => Err(unavailable(why)),
            Ok(_) | Err(_) => Err(unavailable("it did not answer".to_string())),
        }
    }
}

/// Whether the attempt is one of the job's live runs (launched or about to be).
async fn is_live(state: &AppState, name: &str, task_id: &str) -> ApiResult<bool> {
    let view = match state.client()?.job(name).await {
        Ok(view) => view,
        Err(dron_actors::error::CommandError::JobNotFound(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    Ok(view.live.iter().any(|run| run.task_id() == task_id))
}

/// Up to [`MAX_CHUNK`] bytes of `path` from `offset` (none past its end).
/// The output from `offset`; nothing when the file does not exist: the shim creates it on
/// the task's first bytes, so a silent task (or one not started yet) has none.
async fn read_from(path: &PathBuf, offset: u64) -> ApiResult<Vec<u8>> {
    let mut handle = match tokio::fs::File::open(path).await {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(path, e)),
    };
    handle
        .seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| read_error(path, e))?;
    let mut bytes = Vec::new();
    handle
        .take(MAX_CHUNK)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| read_error(path, e))?;
    Ok(bytes)
}

/// Whether nothing is left past `next` (a finished run's output no longer grows).
async fn bytes_complete(path: &Path, next: u64) -> bool {
    match tokio::fs::metadata(path).await {
        Ok(meta) => meta.len() <= next,
        // Never created: the task wrote nothing to it.
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn read_error(path: &Path, error: std::io::Error) -> ApiError {
    tracing::warn!(path = %path.display(), %error, "reading task output");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not read task output: {error}"),
    )
}

fn answer(bytes: Vec<u8>, next: u64, finished: bool) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(NEXT_OFFSET_HEADER, HeaderValue::from(next));
    headers.insert(
        RUN_FINISHED_HEADER,
        HeaderValue::from_static(if finished { "true" } else { "false" }),
    );
    response
}
