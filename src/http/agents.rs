//! Agents: `GET /api/agents` lists them; `GET /api/agents/connect` is where `dron agent`
//! processes connect (a WebSocket carrying the agent protocol, see `dron_task::protocol`),
//! proving who they are with their credential (`agent_tokens.rs`). Each connection is a task
//! that turns frames into broker messages and the broker's messages into frames, until either
//! side closes, the agent has not registered within 10 s, or the broker stops (this server
//! stopped leading). Messages are capped in size and paced. In a cluster only the leader takes agents: another
//! server answers 503 naming the leader's address.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::header::{AUTHORIZATION, ORIGIN};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dron_actors::broker::BrokerMsg;
use dron_task::protocol::{AgentMessage, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use ractor::ActorRef;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::agent_tokens::{self, AgentIdentity};
use super::error::{ApiError, ApiResult};
use super::{AppState, auth};

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
    headers: HeaderMap,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("this endpoint is for `dron agent`, over a WebSocket: {rejection}"),
        )
    })?;
    // Browsers send an Origin with every WebSocket upgrade, and agents never do: a web page
    // must not open an agent's connection with what the browser can reach.
    if headers.contains_key(ORIGIN) {
        let message =
            "a WebSocket opened by a web page is refused: this endpoint is for `dron agent`";
        return Err(ApiError::new(StatusCode::FORBIDDEN, message));
    }
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
    let identity = match identify(&state, &headers, &extensions) {
        Ok(identity) => identity,
        Err(refused) => return Ok(*refused),
    };
    let broker = state.broker()?;
    let upgrade = upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES);
    Ok(upgrade.on_upgrade(move |socket| carry(socket, broker, state, identity)))
}

/// The connection's agent, by its credential; refused credentials count toward the failed
/// logins of the client's address, as the API's do (429 once it sent too many).
fn identify(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<AgentIdentity, Box<Response>> {
    let address = auth::client_address(extensions);
    let now = Instant::now();
    if let Some(wait) = address.and_then(|a| state.failed_logins.blocked_for(a, now)) {
        return Err(Box::new(auth::too_many_failed_logins(wait)));
    }
    agent_tokens::identify(state, headers).map_err(|error| {
        // Only credentials sent and refused count, as for the API.
        let refused =
            error.status == StatusCode::UNAUTHORIZED && headers.contains_key(AUTHORIZATION);
        if refused && let Some(address) = address {
            state.failed_logins.failed(address, now);
        }
        Box::new(error.into_response())
    })
}

/// Numbers connections, so the broker can tell an agent's new connection from its old one.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// The largest message an agent may send: an output chunk (1 MiB, base64 in JSON) or a
/// registration naming many tasks fit well within it.
const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// A connection that has not registered by then is closed.
const REGISTER_WITHIN: Duration = Duration::from_secs(10);
/// Messages an agent may send at once, and each second after: more wait (the connection's
/// reading pauses), so one agent cannot flood the broker.
const BURST: f64 = 10_000.0;
const PER_SECOND: f64 = 2_000.0;
/// A message the agent has not taken from the socket by then: the agent stopped reading
/// (paused, stuck): its connection is closed, and it is handled as any disconnected agent.
const WRITE_WITHIN: Duration = Duration::from_secs(10);

/// Carries one agent connection until either side closes it.
async fn carry(
    socket: WebSocket,
    broker: ActorRef<BrokerMsg>,
    state: AppState,
    identity: AgentIdentity,
) {
    let connection = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    // Bounded: while it is full the broker places nothing more on the agent and holds what it
    // owes it (`broker/remote.rs`).
    let (outbox, mut to_agent) = mpsc::channel(state.agent_outbox);
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
    let register_deadline = tokio::time::sleep(REGISTER_WITHIN);
    tokio::pin!(register_deadline);
    let mut registered = false;
    // The agent's registration nonce, for the proof of this server's epoch.
    let mut nonce: Option<String> = None;
    let mut rate = Rate::new(BURST, PER_SECOND);
    loop {
        tokio::select! {
            _ = &mut broker_gone => break,
            () = &mut register_deadline, if !registered => {
                tracing::warn!(connection, "an agent connection did not register within {REGISTER_WITHIN:?}: closing");
                break;
            }
            outgoing = to_agent.recv() => {
                // None: the broker dropped the connection (the agent went silent).
                let Some(mut message) = outgoing else { break };
                if let ServerMessage::Registered { epoch, proof, .. } = &mut message {
                    registered = true;
                    *proof = prove_epoch(&state, nonce.as_deref(), *epoch);
                }
                let text = serde_json::to_string(&message).expect("protocol messages encode");
                match tokio::time::timeout(WRITE_WITHIN, sink.send(Message::Text(text.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::warn!(connection, "an agent took no message for {WRITE_WITHIN:?}: closing its connection");
                        metrics::counter!("dron_agents_disconnected_slow_total", "why" => "write_timeout").increment(1);
                        break;
                    }
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<AgentMessage>(&text) {
                    Ok(message) => {
                        if let AgentMessage::Register { name, .. } = &message
                            && let Err(reason) = agent_tokens::check_registration(&state, &identity, name)
                        {
                            tracing::warn!(agent = name, reason, "agent registration refused");
                            let refused = ServerMessage::Refused { reason };
                            let text = serde_json::to_string(&refused).expect("protocol messages encode");
                            let _ = sink.send(Message::Text(text.into())).await;
                            break;
                        }
                        if let AgentMessage::Register { name, nonce: sent, epochs_refused, .. } = &message {
                            nonce = sent.clone();
                            record_refused_epochs(name, *epochs_refused);
                        }
                        let _ = broker.send_message(BrokerMsg::FromAgent { connection, message });
                        if let Some(pause) = rate.take() {
                            tokio::time::sleep(pause).await;
                        }
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
    // An agent that stopped reading would hold the close frame forever.
    let _ = tokio::time::timeout(WRITE_WITHIN, sink.close()).await;
    let _ = broker.send_message(BrokerMsg::Disconnected { connection });
}

/// The proof of `epoch` for the registration that sent `nonce`, when this server has an
/// epoch key (agents over plain ws:// believe a new epoch only with it).
fn prove_epoch(state: &AppState, nonce: Option<&str>, epoch: u64) -> Option<String> {
    Some(state.epoch_key.as_ref()?.prove(nonce?, epoch))
}

/// An agent that refused registrations for an epoch nobody proved (a forged epoch, or a
/// server without the epoch key) says how many when it registers here.
fn record_refused_epochs(agent: &str, refused: u64) {
    if refused > 0 {
        tracing::warn!(
            agent,
            refused,
            "the agent refused server epochs nobody proved since it started: a forged epoch, or a server without the epoch key"
        );
        metrics::gauge!("dron_agent_epochs_refused", "agent" => agent.to_string())
            .set(refused as f64);
    }
}

/// A token bucket: `take` answers how long to wait before the next message, if at all.
struct Rate {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl Rate {
    fn new(burst: f64, per_second: f64) -> Rate {
        Rate {
            tokens: burst,
            burst,
            per_second,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst) - 1.0;
        self.last = now;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_lets_a_burst_through_then_paces() {
        let mut rate = Rate::new(3.0, 1000.0);
        assert!((0..3).all(|_| rate.take().is_none()));
        let pause = rate.take().expect("the bucket is empty");
        assert!(pause <= Duration::from_millis(2), "{pause:?}");
    }
}
