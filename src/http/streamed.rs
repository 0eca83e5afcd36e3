//! JSON arrays written as they are read: a response body fed a batch of items at a time, for
//! lists too long to build in memory first (`GET /scheduler/jobs`).

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dron_actors::client::JobStream;
use dron_model::job::JobRecord;
use serde_json::Value;

/// How many jobs a shard is asked for at a time while a job list streams: large enough that
/// the round trips cost little, small enough that a million jobs never sit in memory at once.
pub const JOB_STREAM_BATCH: usize = 1_000;

/// Where the array stands: its `[` not written yet, items written, or closed.
enum Written {
    Nothing,
    Items,
    Closed,
}

/// A 200 whose body is the JSON array of `jobs`, each shown by `show`.
pub fn streamed_json_array(jobs: JobStream, show: fn(&JobRecord) -> Value) -> Response {
    let chunks = futures_util::stream::unfold(
        (jobs, Written::Nothing),
        move |(mut jobs, written)| async move {
            let opening = match written {
                Written::Closed => return None,
                Written::Nothing => "[",
                Written::Items => ",",
            };
            match jobs.next_batch().await {
                Ok(Some(batch)) => {
                    let chunk = items_chunk(opening, &batch, show);
                    Some((Ok(chunk), (jobs, Written::Items)))
                }
                Ok(None) => {
                    let closing = if matches!(written, Written::Nothing) {
                        "[]"
                    } else {
                        "]"
                    };
                    Some((
                        Ok(Bytes::from_static(closing.as_bytes())),
                        (jobs, Written::Closed),
                    ))
                }
                Err(error) => {
                    tracing::warn!(%error, "job list cut short");
                    Some((Err(error), (jobs, Written::Closed)))
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// `opening` (`[` for the first batch, `,` after one), then the batch's items separated by
/// commas.
fn items_chunk(opening: &str, batch: &[JobRecord], show: fn(&JobRecord) -> Value) -> Bytes {
    let mut chunk = Vec::with_capacity(batch.len() * 512);
    chunk.extend_from_slice(opening.as_bytes());
    for (at, job) in batch.iter().enumerate() {
        if at > 0 {
            chunk.push(b',');
        }
        // A Value always serialises.
        let _ = serde_json::to_writer(&mut chunk, &show(job));
    }
    Bytes::from(chunk)
}
