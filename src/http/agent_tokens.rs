//! Remote agents' credentials (`dron agent-token`): `POST /api/agent-tokens` makes one for a
//! name and answers it once; `GET /api/agent-tokens` lists the names that have one;
//! `DELETE /api/agent-tokens/{name}` revokes it and closes that agent's connection. They are
//! API calls like any other: behind the API's credentials when auth is on, forwarded to the
//! leader in a cluster (which writes them through the Raft log).
//!
//! [`identify`] is how the agents' endpoint tells who connects: the agent's name comes from
//! its credential. Without one, an agent is accepted only where the server trusts its network
//! (`AppState::tokenless_agents`: no API auth and a loopback address, or `--insecure-no-auth`),
//! and then not under a name that has a credential.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use dron_actors::broker::BrokerMsg;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use crate::agent::credential;
use crate::storage::agent_tokens::AgentTokenStore;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/agent-tokens", get(list).post(create))
        .route("/api/agent-tokens/{name}", delete(revoke))
}

fn store(state: &AppState) -> ApiResult<&dyn AgentTokenStore> {
    state
        .agent_tokens
        .as_deref()
        .ok_or_else(|| ApiError::unavailable("agent credentials are not available yet"))
}

fn storage_failed(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("agent credentials: {error}"),
    )
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let tokens = store(&state)?.list().map_err(storage_failed)?;
    let tokens: Vec<Value> = tokens
        .into_iter()
        .map(|(name, record)| json!({ "name": name, "createdMs": record.created_ms }))
        .collect();
    Ok(Json(json!({ "agentTokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

async fn create(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tokens = store(&state)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (token, record) = credential::generate(&new.name, now_ms).map_err(|message| {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, message);
        error.field = Some("name");
        error
    })?;
    if tokens.get(&new.name).map_err(storage_failed)?.is_some() {
        let message = format!(
            "agent '{}' has a credential already: revoke it first (dron agent-token revoke)",
            new.name
        );
        return Err(ApiError::new(StatusCode::CONFLICT, message));
    }
    tokens
        .set(&new.name, Some(record))
        .await
        .map_err(storage_failed)?;
    tracing::info!(agent = new.name, "agent credential created");
    let body = json!({ "name": new.name, "token": token });
    Ok((StatusCode::CREATED, Json(body)))
}

async fn revoke(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let tokens = store(&state)?;
    if tokens.get(&name).map_err(storage_failed)?.is_none() {
        return Err(ApiError::not_found(format!(
            "agent '{name}' has no credential"
        )));
    }
    tokens.set(&name, None).await.map_err(storage_failed)?;
    // Its live connection goes too: it proved itself with what is now revoked.
    if let Ok(broker) = state.broker() {
        let _ = broker.send_message(BrokerMsg::CloseAgent { name: name.clone() });
    }
    tracing::info!(agent = name, "agent credential revoked");
    Ok(Json(json!({ "name": name, "revoked": true })))
}

/// Who connects to the agents' endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentIdentity {
    /// Proved by a credential: the agent must register under this name.
    Named(String),
    /// No credential, on a server that accepts that: any name that has no credential.
    Unproved,
}

/// The identity a connection's `Authorization: Bearer NAME.SECRET` proves; 401 when it
/// proves none and the server does not take agents without one.
pub fn identify(state: &AppState, headers: &HeaderMap) -> ApiResult<AgentIdentity> {
    let refused = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
        if state.tokenless_agents {
            return Ok(AgentIdentity::Unproved);
        }
        return Err(refused(
            "agents need a credential here: create one with `dron agent-token create NAME` \
             and start the agent with --token-file",
        ));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "));
    let not_agent = "not an agent credential (agents do not take the API's tokens: \
                     `dron agent-token create NAME` makes one)";
    let Some((name, secret)) = token.and_then(credential::parse) else {
        return Err(refused(not_agent));
    };
    let record = store(state)?.get(name).map_err(storage_failed)?;
    match record {
        Some(record) if credential::matches(&record, secret) => {
            Ok(AgentIdentity::Named(name.to_string()))
        }
        _ => Err(refused("unknown or revoked agent credential")),
    }
}

/// Why a registration under `name` is refused on a connection of `identity`, if it is.
pub fn check_registration(
    state: &AppState,
    identity: &AgentIdentity,
    name: &str,
) -> Result<(), String> {
    match identity {
        AgentIdentity::Named(proved) if proved == name => Ok(()),
        AgentIdentity::Named(proved) => Err(format!(
            "this connection's credential is agent '{proved}'s, not '{name}'s"
        )),
        AgentIdentity::Unproved => {
            let tokens = state.agent_tokens.as_deref();
            match tokens.map(|tokens| tokens.get(name)) {
                Some(Ok(None)) | None => Ok(()),
                Some(Ok(Some(_))) => Err(format!(
                    "agent '{name}' has a credential: connect with it (--token-file)"
                )),
                Some(Err(error)) => Err(format!("cannot check agent credentials: {error}")),
            }
        }
    }
}
