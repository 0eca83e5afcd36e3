//! `GET /api/cluster`: who leads, in which term, and each server's role, as this server sees
//! it (never forwarded: a follower answers what it knows). A single server answers a cluster
//! of one that it leads, in term 0.

use axum::Json;
use axum::extract::State;
use axum::routing::get;

use super::AppState;
use crate::cluster::view::ClusterStatus;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/api/cluster", get(cluster))
}

async fn cluster(State(state): State<AppState>) -> Json<ClusterStatus> {
    Json(state.cluster_status())
}
