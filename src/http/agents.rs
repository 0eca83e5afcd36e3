//! Agents: `GET /api/agents` lists them; `GET /api/agents/connect` is where `dron agent`
//! processes connect (a WebSocket carrying the agent protocol, see
//! `dron_task::protocol`). Each connection is a task that turns frames into broker
//! messages and the broker's messages into frames, until either side closes or the broker
//! stops (this server stopped leading). In a cluster only the leader takes agents: another
//! server answers 503 naming the leader's address.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use dron_actors::broker::BrokerMsg;
use dron_task::protocol::AgentMessage;
use futures_util::{SinkExt, StreamExt};
use ractor::ActorRef;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::error::{ApiError, ApiResult};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/agents", get(list))
        .route("/api/agents/connect", get(connect))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let broker = state.broker()?;
    let agents = ractor::call!(broker, BrokerMsg::ListAgents)
        .map_err(|e| ApiError::unavailable(format!("the offer broker did not answer: {e}")))?;
    Ok(Json(json!({ "agents": agents })))
}

async fn connect(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("this endpoint is for `dron agent`, over a WebSocket: {rejection}"),
        )
    })?;
    // In a cluster agents connect to the leader only (it may still be recovering: its
    // coordinators adopt the agents' running tasks). Elsewhere the answer names the leader,
    // where the agent goes next.
    if state.cluster.is_some() {
        let cluster = state.cluster_status();
        if cluster.leader != Some(cluster.this_node) {
            let leader = cluster.leader_address.as_deref();
            return Ok(super::forward::unavailable(
                "this server is not the leader",
                leader,
            ));
        }
    }
    let broker = state.broker()?;
    Ok(upgrade.on_upgrade(move |socket| carry(socket, broker)))
}

/// Numbers connections, so the broker can tell an agent's new connection from its old one.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Carries one agent connection until either side closes it.
async fn carry(socket: WebSocket, broker: ActorRef<BrokerMsg>) {
    let connection = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let (outbox, mut to_agent) = mpsc::unbounded_channel();
    if broker
        .send_message(BrokerMsg::Connected { connection, outbox })
        .is_err()
    {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    // When this server stops leading, its broker is stopped: every agent's socket closes, and
    // the agents go to the new leader.
    let broker_gone = broker.wait(None);
    tokio::pin!(broker_gone);
    loop {
        tokio::select! {
            _ = &mut broker_gone => break,
            outgoing = to_agent.recv() => {
                // None: the broker dropped the connection (the agent went silent).
                let Some(message) = outgoing else { break };
                let text = serde_json::to_string(&message).expect("protocol messages encode");
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<AgentMessage>(&text) {
                    Ok(message) => {
                        let _ = broker.send_message(BrokerMsg::FromAgent { connection, message });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "agent sent a message outside the protocol: closing");
                        break;
                    }
                },
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = sink.close().await;
    let _ = broker.send_message(BrokerMsg::Disconnected { connection });
}
