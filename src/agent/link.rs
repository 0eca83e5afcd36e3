//! The agent's connection to the server: one session per WebSocket connection, reconnecting
//! with backoff for as long as the agent runs (tasks go on meanwhile).
//!
//! A session registers (offering the agent's resources and naming the tasks it still holds),
//! checks the server's epoch against its fence, then heartbeats, obeys commands and sends
//! status updates. Every update is kept until the server acknowledges it and resent on each
//! new session and every few seconds, so a server restart or a network cut loses none.
//!
//! Given several servers (a cluster), it connects to the one that last accepted it first,
//! then the others in turn. A server that does not lead refuses the connection with 503 and
//! the leader's address, where the next attempt goes ([`Servers`]).
//!
//! Over `https://` (`wss://`) the server's certificate is verified (against `--ca-file`, else
//! the system's CAs); a registration that raises the agent's epoch is believed only from a
//! server that proved itself ([`super::epoch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, bail};
use dron_actors::agent::AgentMsg;
use dron_model::demand::Resources;
use dron_task::protocol::{AgentMessage, Fence, PROTOCOL_VERSION, ServerMessage};
use dron_task::{TaskEvent, TaskUpdate};
use futures_util::{Sink, SinkExt, StreamExt};
use ractor::ActorRef;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::epoch::{self, EpochKey, Proof};
use super::work_dir::WorkDir;
use crate::tls::TrustedCa;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between attempts. Short, whether one server or several: the agent must
/// not be asleep for seconds when a paused or restarted server (or a new leader) is back. The
/// nemesis's 30-minute run saw agents of a single server (then 5 s at most) come back 8 s after
/// a 27 s pause. An attempt at a paused server itself waits out `CONNECT_TIMEOUT`.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Unacknowledged updates are sent again at this pace.
const RESEND_EVERY: Duration = Duration::from_secs(2);
/// How long the server may take to answer a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (TCP and the WebSocket handshake) may take. A server cut off by the
/// network drops the packets: without a bound, connect waits for the kernel's SYN retries
/// (about two minutes) before the agent tries the next server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the agent says about itself when it registers.
pub struct Identity {
    pub agent_id: String,
    pub name: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
}

/// A task's updates not yet acknowledged: its start, and its end.
#[derive(Default)]
struct Unacked {
    started: Option<TaskEvent>,
    ended: Option<TaskEvent>,
}

/// Where the agent connects: the servers it was given, in turn, after the one that last
/// accepted it and the leader a refusing server named.
#[derive(Debug)]
pub struct Servers {
    list: Vec<String>,
    /// The list's entry to try next.
    next: usize,
    /// The server that last accepted this agent: tried first on the next connection.
    accepted: Option<String>,
    /// The leader a server that refused this agent named: tried next.
    leader: Option<String>,
}

impl Servers {
    /// Checks each address (http://, https://, ws://, wss://, or a bare host:port).
    pub fn new(list: Vec<String>) -> anyhow::Result<Servers> {
        let list: Vec<String> = list
            .into_iter()
            .map(|server| server.trim().trim_end_matches('/').to_string())
            .filter(|server| !server.is_empty())
            .collect();
        anyhow::ensure!(!list.is_empty(), "--server: give at least one server URL");
        for server in &list {
            connect_url(server)?;
        }
        Ok(Servers {
            list,
            next: 0,
            accepted: None,
            leader: None,
        })
    }

    /// The server to try now.
    fn pick(&mut self) -> String {
        if let Some(leader) = self.leader.take() {
            return leader;
        }
        if let Some(accepted) = self.accepted.take() {
            return accepted;
        }
        let server = self.list[self.next % self.list.len()].clone();
        self.next = (self.next + 1) % self.list.len();
        server
    }

    /// `server` accepted this agent: the next connection tries it first.
    fn accepted(&mut self, server: &str) {
        self.accepted = Some(server.to_string());
        if let Some(at) = self.list.iter().position(|s| s == server) {
            // Should it fail, go on with the one after it.
            self.next = (at + 1) % self.list.len();
        }
    }

    /// `server` accepted this agent and then went silent (paused, cut off, or no longer
    /// leading and stuck): the others come first, then it again. Trying it first would cost a
    /// connect timeout when its kernel still takes connections its process never answers.
    fn went_silent(&mut self, server: &str) {
        self.accepted = None;
        if let Some(at) = self.list.iter().position(|s| s == server) {
            self.next = (at + 1) % self.list.len();
        }
    }

    /// A refusing server (`refused_by`) named the leader: try it next. A wildcard address
    /// (`0.0.0.0`, `[::]`) is where a server listens, not where it is reached: a single
    /// server listening on one names itself so while it recovers, and is tried again (the
    /// nemesis run saw agents follow it, fail, and come back 8 s late).
    fn redirect(&mut self, leader: &str, refused_by: &str) {
        let leader = leader.trim_end_matches('/');
        let host = leader.split_once("://").map_or(leader, |(_, rest)| rest);
        let wildcard = ["0.0.0.0", "[::]"]
            .iter()
            .any(|any| host == *any || host.starts_with(&format!("{any}:")));
        let next = if wildcard { refused_by } else { leader };
        self.leader = Some(next.to_string());
    }
}

/// A server refused the agent because it does not lead; `leader` is where it says the leader
/// is, if it knows.
#[derive(Debug)]
struct NotLeader {
    server: String,
    leader: Option<String>,
    message: String,
}

impl std::fmt::Display for NotLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.leader {
            Some(leader) => write!(
                f,
                "{}: {}; the leader is at {leader}",
                self.server, self.message
            ),
            None => write!(
                f,
                "{}: {}; no leader is known yet",
                self.server, self.message
            ),
        }
    }
}

impl std::error::Error for NotLeader {}

/// How long an agent whose credential was refused waits before it tries again: refused
/// credentials count toward the server's failed logins per address (10 a minute, then every
/// request from the address is refused for the rest of the minute, the API's included).
const CREDENTIAL_REFUSED_PAUSE: Duration = Duration::from_secs(15);

/// A server refused the agent's credential (401, 403) or its address (429, too many refused).
#[derive(Debug)]
struct CredentialRefused {
    server: String,
    status: u16,
    message: String,
    /// Before the next attempt.
    wait: Duration,
}

impl CredentialRefused {
    fn new(
        server: &str,
        response: &tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>,
    ) -> CredentialRefused {
        let body = response.body().as_deref().unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.trim().parse().ok())
            .map(Duration::from_secs);
        CredentialRefused {
            server: server.to_string(),
            status: response.status().as_u16(),
            message: answer["error"].as_str().unwrap_or("refused").to_string(),
            wait: retry_after
                .unwrap_or(CREDENTIAL_REFUSED_PAUSE)
                .max(CREDENTIAL_REFUSED_PAUSE),
        }
    }
}

impl std::fmt::Display for CredentialRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} refused this agent ({}): {}; trying again in {:?}",
            self.server, self.status, self.message, self.wait
        )
    }
}

impl std::error::Error for CredentialRefused {}

/// How the agent checks the servers it talks to.
#[derive(Default)]
pub struct Trust {
    /// The CA that signed the servers' certificates (`--ca-file`); None: the system's.
    pub ca: Option<TrustedCa>,
    /// The key servers prove their epochs with over plain ws:// (`--epoch-key-file`).
    pub epoch_key: Option<EpochKey>,
}

/// The server stopped answering heartbeats for this long: the link is taken as dead.
#[derive(Debug)]
struct Silent(Duration);

impl std::fmt::Display for Silent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server has been silent for {:?}", self.0)
    }
}

impl std::error::Error for Silent {}

pub struct Link {
    servers: Servers,
    token: Option<String>,
    identity: Identity,
    dir: WorkDir,
    tasks: ActorRef<AgentMsg>,
    fence: Fence,
    /// The epoch the current session's server registered this agent with: its commands carry
    /// it (a higher one was not proved, and is refused).
    session_epoch: u64,
    unacked: BTreeMap<String, Unacked>,
    /// Connects `wss://` trusting `--ca-file`; None: the system's CAs.
    tls: Option<native_tls::TlsConnector>,
    /// Asks a refusing server's `/health` who leads, trusting the same CA.
    http: reqwest::Client,
    epoch_key: Option<EpochKey>,
    /// Registrations refused since start for an epoch not proved (told to the next server).
    epochs_refused: u64,
}

impl Link {
    pub fn new(
        servers: Servers,
        token: Option<String>,
        identity: Identity,
        dir: WorkDir,
        tasks: ActorRef<AgentMsg>,
        trust: Trust,
    ) -> anyhow::Result<Link> {
        let fence = dir.fence();
        let tls = trust.ca.as_ref().map(TrustedCa::connector).transpose()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2));
        let http = crate::tls::with_ca(http, trust.ca.as_ref())
            .build()
            .context("building the agent's HTTP client")?;
        Ok(Link {
            servers,
            token,
            identity,
            dir,
            tasks,
            fence,
            session_epoch: fence.newest_epoch,
            unacked: BTreeMap::new(),
            tls,
            http,
            epoch_key: trust.epoch_key,
            epochs_refused: 0,
        })
    }

    /// Runs sessions forever; between them, keeps collecting the tasks' updates.
    pub async fn run(mut self, mut updates: UnboundedReceiver<TaskUpdate>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let server = self.servers.pick();
            let mut registered = false;
            let mut refused_wait = None;
            let mut silent = false;
            match self.session(&server, &mut registered, &mut updates).await {
                Ok(()) => tracing::warn!(server, "server closed the connection"),
                Err(error) => {
                    if let Some(refusal) = error.downcast_ref::<NotLeader>() {
                        tracing::info!("{refusal}");
                        // A server that answers and names the leader: a failover is nearly
                        // done, and the leader is asked at once, not after a backoff grown
                        // while servers were silent.
                        if let Some(leader) = &refusal.leader {
                            self.servers.redirect(leader, &server);
                            backoff = FIRST_BACKOFF;
                        }
                    } else if let Some(refused) = error.downcast_ref::<CredentialRefused>() {
                        tracing::error!("{refused}");
                        refused_wait = Some(refused.wait);
                    } else {
                        silent = error.is::<Silent>();
                        tracing::warn!(server, "{error:#}");
                    }
                }
            }
            if registered {
                if silent {
                    self.servers.went_silent(&server);
                } else {
                    self.servers.accepted(&server);
                }
                backoff = FIRST_BACKOFF;
            }
            // A refused credential waits its own, longer pause (see `CredentialRefused`).
            let pause_for = refused_wait.map_or(backoff, |wait: Duration| wait.max(backoff));
            let pause = tokio::time::sleep(pause_for);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    Some(update) = updates.recv() => self.keep(update),
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn session(
        &mut self,
        server: &str,
        registered: &mut bool,
        updates: &mut UnboundedReceiver<TaskUpdate>,
    ) -> anyhow::Result<()> {
        let url = connect_url(server)?;
        let over_tls = url.starts_with("wss://");
        let mut request = url.into_client_request()?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}").parse()?;
            request.headers_mut().insert("authorization", value);
        }
        let connector = match (&self.tls, over_tls) {
            (Some(tls), true) => Some(tokio_tungstenite::Connector::NativeTls(tls.clone())),
            _ => None,
        };
        let connecting = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector),
        );
        let Ok(connected) = connecting.await else {
            bail!("connecting to {server}: no answer within {CONNECT_TIMEOUT:?}");
        };
        let socket = match connected {
            Ok((socket, _)) => socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == 503 =>
            {
                let body = response.body().as_deref();
                return Err(not_leader(&self.http, server, body).await.into());
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if matches!(response.status().as_u16(), 401 | 403 | 429) =>
            {
                return Err(CredentialRefused::new(server, &response).into());
            }
            Err(error) => {
                let hint = crate::tls::failure_hint(&error.to_string())
                    .map(|hint| format!(" ({hint})"))
                    .unwrap_or_default();
                return Err(error).with_context(|| format!("connecting to {server}{hint}"));
            }
        };
        let (mut sink, mut stream) = socket.split();
        let nonce = epoch::nonce();
        send(&mut sink, &self.registration(&nonce)).await?;
        let first = tokio::time::timeout(REGISTER_TIMEOUT, next_message(&mut stream))
            .await
            .context("the server did not answer the registration")??;
        let heartbeat_ms = match first {
            Some(ServerMessage::Registered {
                epoch,
                heartbeat_ms,
                proof,
            }) => {
                let proof = self.proof(over_tls, &nonce, epoch, proof.as_deref());
                self.believe(server, epoch, proof)?;
                self.admit(epoch)
                    .map_err(|reason| anyhow::anyhow!("refusing this server: {reason}"))?;
                self.session_epoch = epoch;
                heartbeat_ms
            }
            Some(ServerMessage::Refused { reason }) => bail!("registration refused: {reason}"),
            other => bail!("expected the server's registration answer, got {other:?}"),
        };
        *registered = true;
        tracing::info!(server, epoch = self.fence.newest_epoch, "registered");
        self.resend(&mut sink).await?;
        let every = Duration::from_millis(heartbeat_ms.max(50));
        // The server answers every heartbeat: this much silence means the link is dead.
        let silence_limit = (every * 5).max(Duration::from_secs(3));
        let mut heartbeat = tokio::time::interval(every);
        let mut resend = tokio::time::interval(RESEND_EVERY);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > silence_limit {
                        return Err(Silent(silence_limit).into());
                    }
                    send(&mut sink, &AgentMessage::Heartbeat).await?;
                }
                _ = resend.tick() => self.resend(&mut sink).await?,
                Some(update) = updates.recv() => {
                    let status = status_message(&update);
                    self.keep(update);
                    if let Some(status) = status {
                        send(&mut sink, &status).await?;
                    }
                }
                message = next_message(&mut stream) => match message? {
                    None => return Ok(()),
                    Some(message) => {
                        last_heard = Instant::now();
                        if let Some(reply) = self.obey(message) {
                            send(&mut sink, &reply).await?;
                        }
                    }
                },
            }
        }
    }

    /// What the server of this session proved about itself.
    fn proof(&self, over_tls: bool, nonce: &str, epoch: u64, proof: Option<&str>) -> Proof {
        match (&self.epoch_key, proof) {
            _ if over_tls => Proof::Certificate,
            (None, _) => Proof::Nothing,
            (Some(key), Some(proof)) if key.verify(nonce, epoch, proof) => Proof::Key,
            (Some(_), _) => Proof::KeyFailed,
        }
    }

    /// Refuses a registration whose epoch would raise the fence without proof (the fence
    /// stays where it was).
    fn believe(&mut self, server: &str, epoch: u64, proof: Proof) -> anyhow::Result<()> {
        let newest = self.fence.newest_epoch;
        if let Err(reason) = epoch::check_jump(newest, epoch, proof, now_ms().max(0) as u64) {
            self.epochs_refused += 1;
            tracing::error!(
                server,
                epoch,
                newest,
                refused = self.epochs_refused,
                "refusing this server's epoch: {reason}"
            );
            bail!("refusing this server's epoch {epoch}: {reason}");
        }
        Ok(())
    }

    fn registration(&self, nonce: &str) -> AgentMessage {
        let mut tasks: BTreeSet<String> = self.dir.tasks().into_iter().map(|(id, _)| id).collect();
        tasks.extend(self.unacked.keys().cloned());
        AgentMessage::Register {
            protocol: PROTOCOL_VERSION,
            agent_id: self.identity.agent_id.clone(),
            name: self.identity.name.clone(),
            resources: self.identity.resources,
            attributes: self.identity.attributes.clone(),
            tasks: tasks.into_iter().collect(),
            newest_epoch: self.fence.newest_epoch,
            nonce: Some(nonce.to_string()),
            epochs_refused: self.epochs_refused,
        }
    }

    /// Keeps an update until the server acknowledges it.
    fn keep(&mut self, update: TaskUpdate) {
        let entry = self.unacked.entry(update.task_id).or_default();
        match update.event {
            TaskEvent::Started { .. } => entry.started = Some(update.event),
            TaskEvent::Ended { .. } | TaskEvent::NeverLaunched => entry.ended = Some(update.event),
            TaskEvent::WaitingForOffer { .. } => {}
        }
    }

    async fn resend<S>(&self, sink: &mut S) -> anyhow::Result<()>
    where
        S: Sink<Message> + Unpin,
        S::Error: std::error::Error + Send + Sync + 'static,
    {
        for (task_id, unacked) in &self.unacked {
            for event in [&unacked.started, &unacked.ended].into_iter().flatten() {
                let status = AgentMessage::Status {
                    task_id: task_id.clone(),
                    event: event.clone(),
                };
                send(sink, &status).await?;
            }
        }
        Ok(())
    }

    /// Carries out a server command; answers what to tell the server, if anything.
    fn obey(&mut self, message: ServerMessage) -> Option<AgentMessage> {
        match message {
            ServerMessage::Launch { epoch, task } => {
                if let Err(reason) = self.admit_command(epoch) {
                    let task_id = Some(task.task_id);
                    return Some(AgentMessage::Rejected { task_id, reason });
                }
                let deadline = task.timeout_ms.map(|t| now_ms() + t as i64);
                if let Err(error) = self.dir.record_task(&task.task_id, deadline) {
                    let reason = format!("cannot record the task: {error:#}");
                    let task_id = Some(task.task_id);
                    return Some(AgentMessage::Rejected { task_id, reason });
                }
                let _ = self.tasks.send_message(AgentMsg::Launch(task));
            }
            ServerMessage::Kill { epoch, task_id } => {
                if let Err(reason) = self.admit_command(epoch) {
                    let task_id = Some(task_id);
                    return Some(AgentMessage::Rejected { task_id, reason });
                }
                let _ = self.tasks.send_message(AgentMsg::Kill { task_id });
            }
            ServerMessage::Adopt {
                epoch,
                task_id,
                timeout_deadline_ms,
            } => {
                if let Err(reason) = self.admit_command(epoch) {
                    let task_id = Some(task_id);
                    return Some(AgentMessage::Rejected { task_id, reason });
                }
                let _ = self.tasks.send_message(AgentMsg::Adopt {
                    task_id,
                    timeout_deadline_ms,
                });
            }
            ServerMessage::Ack { task_id, started } => self.acknowledged(&task_id, started),
            ServerMessage::ReadOutput {
                request,
                task_id,
                file,
                offset,
            } => {
                let chunk =
                    super::output::read_chunk(&self.dir.runs_root(), &task_id, &file, offset);
                return Some(AgentMessage::Output { request, chunk });
            }
            ServerMessage::HeartbeatAck
            | ServerMessage::Registered { .. }
            | ServerMessage::Refused { .. } => {}
        }
        None
    }

    fn acknowledged(&mut self, task_id: &str, started: bool) {
        if let Some(unacked) = self.unacked.get_mut(task_id) {
            match started {
                true => unacked.started = None,
                false => unacked.ended = None,
            }
            if unacked.started.is_none() && unacked.ended.is_none() {
                self.unacked.remove(task_id);
            }
        }
        if !started {
            // The server has the task's end: nothing left to adopt after a restart.
            self.dir.forget_task(task_id);
        }
    }

    /// A command's epoch: the session's (a higher one was not what the server registered
    /// with, so not proved), and not older than the fence.
    fn admit_command(&mut self, epoch: u64) -> Result<(), String> {
        if epoch > self.session_epoch {
            return Err(format!(
                "server epoch {epoch} is not the one this server registered with ({})",
                self.session_epoch
            ));
        }
        self.admit(epoch)
    }

    /// The fence: refuses a command from an older server epoch; records a newer one on disk
    /// before obeying it.
    fn admit(&mut self, epoch: u64) -> Result<(), String> {
        let before = self.fence;
        self.fence.admit(epoch)?;
        if self.fence != before {
            self.dir
                .save_fence(&self.fence)
                .map_err(|e| format!("cannot record epoch {epoch}: {e:#}"))?;
        }
        Ok(())
    }
}

fn status_message(update: &TaskUpdate) -> Option<AgentMessage> {
    if matches!(update.event, TaskEvent::WaitingForOffer { .. }) {
        return None;
    }
    Some(AgentMessage::Status {
        task_id: update.task_id.clone(),
        event: update.event.clone(),
    })
}

/// What a server that refused the agent with 503 says: `{"error", "leader"}`, the leader's
/// address or null. The body comes with the handshake's answer only when it arrived in the
/// same read; else the server's `/health` (open, small) says who leads.
async fn not_leader(http: &reqwest::Client, server: &str, body: Option<&[u8]>) -> NotLeader {
    let answer = body.and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok());
    let answer = match answer {
        Some(answer) if answer.get("leader").is_some() => answer,
        _ => health(http, server).await.unwrap_or_default(),
    };
    let leader = answer["leader"]
        .as_str()
        .or(answer["leaderAddress"].as_str())
        .map(str::to_string);
    let message = answer["error"]
        .as_str()
        .unwrap_or("the server is not ready for agents")
        .to_string();
    NotLeader {
        server: server.to_string(),
        leader,
        message,
    }
}

/// The server's `GET /health`, whatever its status.
async fn health(http: &reqwest::Client, server: &str) -> Option<serde_json::Value> {
    let (secure, rest) = split_scheme(server).ok()?;
    let scheme = if secure { "https" } else { "http" };
    let answer = http
        .get(format!("{scheme}://{rest}/health"))
        .send()
        .await
        .ok()?;
    answer.json().await.ok()
}

/// Whether `server` is reached over TLS, and its address without the scheme.
fn split_scheme(server: &str) -> anyhow::Result<(bool, &str)> {
    let base = server.trim_end_matches('/');
    match base.split_once("://") {
        Some(("http" | "ws", rest)) => Ok((false, rest)),
        Some(("https" | "wss", rest)) => Ok((true, rest)),
        Some((scheme, _)) => bail!(
            "--server {server}: scheme {scheme} is not supported (http:// or https://; see docs/operations.md)"
        ),
        None => Ok((false, base)),
    }
}

/// `http://host:port` → `ws://host:port/api/agents/connect`; `https://` → `wss://`.
fn connect_url(server: &str) -> anyhow::Result<String> {
    let (secure, rest) = split_scheme(server)?;
    let scheme = if secure { "wss" } else { "ws" };
    Ok(format!("{scheme}://{rest}/api/agents/connect"))
}

async fn send<S>(sink: &mut S, message: &AgentMessage) -> anyhow::Result<()>
where
    S: Sink<Message> + Unpin,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let text = serde_json::to_string(message)?;
    sink.send(Message::text(text))
        .await
        .context("sending to the server")?;
    Ok(())
}

/// The server's next message; None when the connection closed.
async fn next_message<S>(stream: &mut S) -> anyhow::Result<Option<ServerMessage>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Err(error)) => return Err(error).context("reading from the server"),
            Some(Ok(Message::Text(text))) => {
                let message = serde_json::from_str(&text)
                    .with_context(|| format!("the server sent an unknown message: {text}"))?;
                return Ok(Some(message));
            }
            Some(Ok(_)) => {} // pings are answered by tungstenite; binary is not used
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::Servers;

    fn servers(list: &[&str]) -> Servers {
        Servers::new(list.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    #[test]
    fn servers_are_tried_in_turn() {
        let mut servers = servers(&["http://a:1", "http://b:1/", "http://c:1"]);
        let picked: Vec<String> = (0..4).map(|_| servers.pick()).collect();
        assert_eq!(
            picked,
            ["http://a:1", "http://b:1", "http://c:1", "http://a:1"]
        );
    }

    #[test]
    fn the_last_server_that_accepted_comes_first_then_the_ones_after_it() {
        let mut servers = servers(&["http://a:1", "http://b:1", "http://c:1"]);
        assert_eq!(servers.pick(), "http://a:1");
        assert_eq!(servers.pick(), "http://b:1");
        servers.accepted("http://b:1");
        assert_eq!(servers.pick(), "http://b:1");
        assert_eq!(servers.pick(), "http://c:1");
        assert_eq!(servers.pick(), "http://a:1");
    }

    #[test]
    fn a_named_leader_comes_next_even_outside_the_list() {
        let mut servers = servers(&["http://a:1", "http://b:1"]);
        assert_eq!(servers.pick(), "http://a:1");
        servers.redirect("http://10.0.0.9:4400/", "http://a:1");
        assert_eq!(servers.pick(), "http://10.0.0.9:4400");
        servers.accepted("http://10.0.0.9:4400");
        assert_eq!(servers.pick(), "http://10.0.0.9:4400");
        assert_eq!(servers.pick(), "http://b:1", "then the list where it was");
    }

    /// The nemesis's leader pause: the agents found the paused leader silent after 3 s, then
    /// tried it first again and waited out a connect timeout (its kernel still accepted TCP)
    /// before asking the new leader: recovery took 6.1-6.3 s.
    #[test]
    fn a_server_gone_silent_is_tried_after_the_others() {
        let mut single = servers(&["http://a:1"]);
        let mut servers = servers(&["http://a:1", "http://b:1", "http://c:1"]);
        assert_eq!(servers.pick(), "http://a:1");
        servers.accepted("http://a:1");
        assert_eq!(servers.pick(), "http://a:1");
        servers.went_silent("http://a:1");
        assert_eq!(servers.pick(), "http://b:1");
        assert_eq!(servers.pick(), "http://c:1");
        assert_eq!(servers.pick(), "http://a:1");
        single.went_silent("http://a:1");
        assert_eq!(single.pick(), "http://a:1", "alone, it is the one to try");
    }

    #[test]
    fn a_leader_named_by_a_wildcard_address_is_the_server_that_refused() {
        let mut servers = servers(&["http://a:1", "http://b:1"]);
        assert_eq!(servers.pick(), "http://a:1");
        servers.redirect("http://0.0.0.0:4400", "http://a:1");
        assert_eq!(servers.pick(), "http://a:1", "tried again, not 0.0.0.0");
        servers.redirect("http://[::]:4400/", "http://b:1");
        assert_eq!(servers.pick(), "http://b:1");
    }

    #[test]
    fn server_lists_are_checked() {
        assert!(Servers::new(vec![]).is_err());
        assert!(Servers::new(vec![" ".into()]).is_err());
        let error = Servers::new(vec!["http://a:1".into(), "ftp://b:1".into()]).unwrap_err();
        assert!(error.to_string().contains("ftp"), "{error}");
        assert!(Servers::new(vec!["https://a:1".into(), "wss://b:1".into()]).is_ok());
    }

    #[tokio::test]
    async fn a_refusal_names_the_leader() {
        let body =
            br#"{"error": "this server is not the leader", "leader": "http://127.0.0.1:4402"}"#;
        let http = reqwest::Client::new();
        let refusal = super::not_leader(&http, "http://127.0.0.1:4401", Some(body)).await;
        assert_eq!(refusal.leader.as_deref(), Some("http://127.0.0.1:4402"));
        let body = br#"{"error": "this server is not the leader", "leader": null}"#;
        let refusal = super::not_leader(&http, "http://127.0.0.1:4401", Some(body)).await;
        assert_eq!(refusal.leader, None);
        assert!(
            refusal.to_string().contains("no leader is known yet"),
            "{refusal}"
        );
    }

    #[test]
    fn a_refused_credential_waits_at_least_15_s_or_what_the_server_says() {
        use tokio_tungstenite::tungstenite::http::Response;
        let body = br#"{"error": "unknown or revoked agent credential"}"#.to_vec();
        let revoked = Response::builder().status(401).body(Some(body)).unwrap();
        let refused = super::CredentialRefused::new("http://a:1", &revoked);
        assert_eq!(refused.wait, super::CREDENTIAL_REFUSED_PAUSE);
        assert!(
            refused.to_string().contains("(401): unknown or revoked"),
            "{refused}"
        );
        let limited = Response::builder()
            .status(429)
            .header("retry-after", "42")
            .body(None)
            .unwrap();
        let refused = super::CredentialRefused::new("http://a:1", &limited);
        assert_eq!(refused.wait, std::time::Duration::from_secs(42));
    }

    #[test]
    fn connect_urls() {
        let url = super::connect_url("http://10.0.0.5:4400/").unwrap();
        assert_eq!(url, "ws://10.0.0.5:4400/api/agents/connect");
        let url = super::connect_url("127.0.0.1:4400").unwrap();
        assert_eq!(url, "ws://127.0.0.1:4400/api/agents/connect");
        let url = super::connect_url("https://dron.example.com/").unwrap();
        assert_eq!(url, "wss://dron.example.com/api/agents/connect");
        let url = super::connect_url("wss://10.0.0.5:4400").unwrap();
        assert_eq!(url, "wss://10.0.0.5:4400/api/agents/connect");
        assert!(super::connect_url("ftp://dron.example.com").is_err());
    }
}
