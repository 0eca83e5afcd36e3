//! openraft's network, server side: the internal routes Raft traffic uses, on the API's own
//! port. Every request must carry `Authorization: Bearer <cluster secret>`, compared in
//! constant time; anything else is answered 401 before its body is read, and reaches no Raft.
//!
//! Bodies are postcard in both directions: the request as openraft's RPC type, the answer as
//! `Result<response, refusal>` (a higher vote is a response, not a refusal; only a snapshot
//! chunk can be refused). A Raft that has stopped answers 503, which the client treats as an
//! unreachable member.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::error::{Infallible, RaftError};
use serde::Serialize;

use super::election;
use super::types::Raft;
use crate::cluster::view::NodeId;

pub const APPEND_PATH: &str = "/internal/raft/append";
pub const VOTE_PATH: &str = "/internal/raft/vote";
pub const SNAPSHOT_PATH: &str = "/internal/raft/snapshot";
/// dron's own: would this member vote for the candidate ([`super::election`])?
pub const PREVOTE_PATH: &str = "/internal/raft/prevote";

/// The largest request body: an append of `max_payload_entries` entries, or a snapshot chunk
/// (1 MiB, see `RaftSettings`). A larger append is answered 413, and openraft retries it in
/// smaller pieces.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// The routes, with their state: merge them into the server's router. `voter` answers
/// pre-votes.
pub fn routes(raft: Raft, secret: &str, voter: election::Voter) -> Router {
    let expected: Arc<[u8]> = Arc::from(format!("Bearer {secret}").into_bytes());
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(PREVOTE_PATH, post(move |body: Bytes| pre_vote(voter, body)))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Runs before the handlers read the body.
        .route_layer(middleware::from_fn_with_state(expected, authorize))
        .with_state(raft)
}

async fn authorize(State(expected): State<Arc<[u8]>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map_or(&[][..], HeaderValue::as_bytes);
    if constant_time_eq(presented, &expected) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Raft traffic needs the cluster secret: Authorization: Bearer <secret>",
        )
            .into_response()
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only: no early exit
/// at the first differing byte, so the time taken tells nothing of how much of a guess was
/// right. (The length of the secret is not hidden.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold back into a comparison that stops early.
    std::hint::black_box(difference) == 0
}

fn undecodable(what: &str, error: postcard::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!("cannot decode the {what} request: {error}"),
    )
        .into_response()
}

/// The body of a successful call: `Ok(response)`, or `Err(refusal)` from the member's Raft
/// (`openraft::error::Infallible` for append and vote: only a snapshot chunk can be refused).
/// A stopped Raft (`RaftError::Fatal`) is a 503, not a body.
fn answer<T: Serialize, E: Serialize + std::error::Error>(
    result: Result<T, RaftError<NodeId, E>>,
) -> Response {
    let result = match result {
        Ok(response) => Ok(response),
        Err(RaftError::APIError(refusal)) => Err(refusal),
        Err(RaftError::Fatal(fatal)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this member's Raft has stopped: {fatal}"),
            )
                .into_response();
        }
    };
    match postcard::to_stdvec(&result) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {error}"),
        )
            .into_response(),
    }
}

async fn append(State(raft): State<Raft>, body: Bytes) -> Response {
    match postcard::from_bytes(&body) {
        Ok(request) => answer(raft.append_entries(request).await),
        Err(error) => undecodable("append", error),
    }
}

async fn vote(State(raft): State<Raft>, body: Bytes) -> Response {
    match postcard::from_bytes(&body) {
        Ok(request) => answer(raft.vote(request).await),
        Err(error) => undecodable("vote", error),
    }
}

async fn pre_vote(voter: election::Voter, body: Bytes) -> Response {
    match postcard::from_bytes(&body) {
        Ok(request) => {
            let result = voter.answer(&request).await;
            answer::<_, Infallible>(result.map_err(RaftError::Fatal))
        }
        Err(error) => undecodable("pre-vote", error),
    }
}

async fn snapshot(State(raft): State<Raft>, body: Bytes) -> Response {
    match postcard::from_bytes(&body) {
        Ok(request) => answer(raft.install_snapshot(request).await),
        Err(error) => undecodable("snapshot", error),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"Bearer s3cret", b"Bearer s3cret"));
        assert!(!constant_time_eq(b"Bearer s3cret", b"Bearer s3creT"));
        assert!(!constant_time_eq(b"Bearer s3cret", b"Bearer s3cre"));
        assert!(!constant_time_eq(b"", b"Bearer s3cret"));
    }
}
