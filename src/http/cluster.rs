//! `GET /api/cluster`: who leads, in which term, and each server's role, as this server sees
//! it (never forwarded: a follower answers what it knows). A single server answers a cluster
//! of one that it leads, in term 0.
//!
//! Membership changes, made by the leader (a follower forwards them, as every write):
//! `POST /api/cluster/nodes {"id", "address"}` adds a server (as a learner until it has
//! caught up, then as a voter), `DELETE /api/cluster/nodes/{id}` removes one. Both answer the
//! cluster as `GET /api/cluster` does once the change is committed.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use crate::cluster::view::{ClusterStatus, ClusterView, MembershipError, NodeId};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/cluster", get(cluster))
        .route("/api/cluster/nodes", post(add_node))
        .route("/api/cluster/nodes/{id}", delete(remove_node))
}

async fn cluster(State(state): State<AppState>) -> Json<ClusterStatus> {
    Json(state.cluster_status())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    id: NodeId,
    address: String,
}

async fn add_node(
    State(state): State<AppState>,
    ApiJson(node): ApiJson<NewNode>,
) -> ApiResult<Json<ClusterStatus>> {
    let view = cluster_of(&state)?;
    if let Some(problem) = crate::config::node_address_problem(&node.address) {
        return Err(field_error(
            "address",
            format!(
                "'{}' {problem} (the new server's HTTP base URL, e.g. http://10.0.0.4:4400)",
                node.address
            ),
        ));
    }
    let address = node.address.trim_end_matches('/').to_string();
    view.add_node(node.id, address)
        .await
        .map_err(membership_error)?;
    Ok(Json(view.status()))
}

async fn remove_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ClusterStatus>> {
    let view = cluster_of(&state)?;
    let id: NodeId = id.parse().map_err(|_| {
        field_error(
            "id",
            format!("'{id}' is not a node id (a whole number, e.g. 3)"),
        )
    })?;
    view.remove_node(id).await.map_err(membership_error)?;
    Ok(Json(view.status()))
}

fn cluster_of(state: &AppState) -> ApiResult<&std::sync::Arc<dyn ClusterView>> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "this is a single server, not a cluster: servers are added and removed in a cluster \
             (docs/cluster.md)",
        )
    })
}

fn field_error(field: &'static str, message: String) -> ApiError {
    let mut error = ApiError::new(StatusCode::BAD_REQUEST, message);
    error.field = Some(field);
    error
}

fn membership_error(error: MembershipError) -> ApiError {
    let status = match &error {
        MembershipError::UnknownNode { .. } => StatusCode::NOT_FOUND,
        MembershipError::AlreadyMember { .. }
        | MembershipError::AddressTaken { .. }
        | MembershipError::LastVoter { .. }
        | MembershipError::InProgress(_) => StatusCode::CONFLICT,
        MembershipError::CatchUpTimeout { .. } | MembershipError::CommitTimeout { .. } => {
            StatusCode::GATEWAY_TIMEOUT
        }
        MembershipError::NotLeader | MembershipError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        MembershipError::Raft(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let field = match &error {
        MembershipError::AddressTaken { .. } => Some("address"),
        MembershipError::AlreadyMember { .. } | MembershipError::UnknownNode { .. } => Some("id"),
        _ => None,
    };
    let mut api_error = ApiError::new(status, error.to_string());
    api_error.field = field;
    api_error
}
