//! Remote agents: their connections, registration, heartbeats and loss, the tasks held for an
//! agent that has not come back since the server restarted, and acknowledgements.
//!
//! An agent is known by its name. Its connection may drop and come back: its tasks are
//! presumed running until it has been silent for the agent timeout, then they are declared
//! lost and their coordinators retry them elsewhere. An agent that returns after that is asked
//! about every task it reports; those its coordinator no longer counts as current are killed.
//!
//! A name has one live connection at a time: a second registration under it is refused
//! while the first was heard from within two heartbeats. An agent speaks only of the tasks
//! placed on it: a status, rejection or output answer about another agent's task (or from a
//! connection that never registered) is dropped and counted in
//! `dron_agent_messages_dropped_total{kind}`. Offers above the configured maximum are refused.
//!
//! What waits to be written to an agent's connection is bounded (`[agents] outbox_messages`).
//! When its outbox is full the agent is *congested* (it reads slower than it is sent to, or
//! not at all): nothing more is placed on it, and the commands that did not fit (launches,
//! kills, adoptions) wait in its `deferred` list, in order, moved into the outbox as it drains
//! (at each broker tick); acknowledgements are dropped (the agent resends what was not
//! acknowledged) and output reads refused. That list holds only what the agent is owed for the
//! tasks already placed on it, so memory stays bounded. An agent that stopped reading has its
//! connection closed by the connection's task (a message not written within 10 s,
//! `src/http/agents.rs`), and then it is a disconnected agent as any other. No launch is
//! dropped: a launch is also kept until its agent answers about the task, and sent again if
//! the agent registers without naming it.

use std::collections::{BTreeMap, HashMap};

use dron_model::demand::Resources;
use dron_task::protocol::{AgentMessage, OutputChunk, PROTOCOL_VERSION, ServerMessage};
use dron_task::{LOCAL_AGENT, TaskEnd, TaskEvent, TaskSpec, TaskUpdate, UpdateAck};
use ractor::RpcReplyPort;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::BrokerState;
use super::known_agents::{KnownAgents, KnownAgentsRecord};
use super::messages::{BrokerMsg, LaunchRequest};
use super::placement::AgentSlot;
use super::view::{AgentState, AgentView};
use crate::clock::SharedClock;

struct RemoteAgent {
    id: String,
    connection: Option<u64>,
    last_seen_ms: i64,
    state: AgentState,
    /// Commands for it while it was disconnected, sent when it registers again.
    deferred: Vec<ServerMessage>,
}

/// The default of `[agents] outbox_messages`: messages waiting for one agent's connection.
/// Above what a live agent lets wait (the largest burst is one message per task it runs: its
/// adoptions when it registers again), and a message is a few hundred bytes.
pub const AGENT_OUTBOX: usize = 16_384;

struct Connection {
    outbox: mpsc::Sender<ServerMessage>,
    /// Set once the agent on it registered.
    agent: Option<String>,
}

/// After a restart: a running task whose agent has not registered yet.
struct AwaitingAdopt {
    request: LaunchRequest,
    /// None: the launch was in flight when the server stopped; whichever agent reports the
    /// task claims it.
    agent: Option<String>,
    deadline_ms: Option<i64>,
}

pub struct Remotes {
    epoch: u64,
    heartbeat_ms: u64,
    timeout_ms: i64,
    max_offer: Resources,
    started_ms: i64,
    /// When liveness was last judged (`newly_lost`): a long gap since means this server did
    /// not run (paused, stopped, starved, or its clock stepped), not that its agents fell
    /// silent.
    judged_ms: i64,
    agents: BTreeMap<String, RemoteAgent>,
    connections: HashMap<u64, Connection>,
    awaiting: Vec<AwaitingAdopt>,
    known: KnownAgents,
    /// Tasks held in `awaiting` that were asked to be killed: killed when an agent claims them.
    kill_on_claim: std::collections::HashSet<String>,
    /// Launches sent and not yet answered by their agent (a status or a refusal about the
    /// task), by task id: (agent, task). A launch sent into a connection the agent has
    /// already given up on (it found this server silent, e.g. after a pause) is lost with it;
    /// when the agent registers again without naming the task, it is sent again.
    unanswered: HashMap<String, (String, TaskSpec)>,
    /// Tasks whose end their agent reported and this server has not yet acknowledged, by task
    /// id: the agent's. Until acknowledged the agent names such a task when it registers
    /// again; it runs nothing there to judge or kill (see `reconcile`).
    ended_unacked: HashMap<String, String>,
    /// Output reads sent to agents, by request number: (agent, who asked).
    reads: HashMap<u64, (String, RpcReplyPort<Result<OutputChunk, String>>)>,
    next_read: u64,
    /// Connected agents whose outbox filled, with commands waiting in `deferred`.
    congested: std::collections::HashSet<String>,
    /// Agents that became congested (true) or drained (false) since the broker last asked
    /// ([`Remotes::take_congestion`]): placement stops and resumes with them.
    congestion: Vec<(String, bool)>,
    clock: SharedClock,
}

impl Remotes {
    pub fn new(
        epoch: u64,
        heartbeat_ms: u64,
        timeout_ms: i64,
        max_offer: Resources,
        known: KnownAgentsRecord,
        clock: SharedClock,
    ) -> Self {
        Remotes {
            epoch,
            heartbeat_ms,
            timeout_ms,
            max_offer,
            started_ms: clock.now_ms(),
            judged_ms: clock.now_ms(),
            agents: BTreeMap::new(),
            connections: HashMap::new(),
            awaiting: Vec::new(),
            unanswered: HashMap::new(),
            ended_unacked: HashMap::new(),
            known: KnownAgents::load(known),
            reads: HashMap::new(),
            next_read: 0,
            congested: Default::default(),
            congestion: Vec::new(),
            kill_on_claim: Default::default(),
            clock,
        }
    }

    /// Remembers a kill for a task held until its agent comes back.
    pub fn kill_when_claimed(&mut self, task_id: &str) {
        if self
            .awaiting
            .iter()
            .any(|held| held.request.spec.task_id == task_id)
        {
            self.kill_on_claim.insert(task_id.to_string());
        }
    }

    /// Asks an agent for a chunk of a run's output; the answer goes to `reply`.
    pub fn read_output(
        &mut self,
        agent: &str,
        task_id: String,
        file: String,
        offset: u64,
        reply: RpcReplyPort<Result<OutputChunk, String>>,
    ) {
        self.next_read += 1;
        let request = self.next_read;
        let read = ServerMessage::ReadOutput {
            request,
            task_id,
            file,
            offset,
        };
        let refused = match self.connection_of(agent) {
            None => format!("agent '{agent}' is not connected"),
            Some(connection) => match self.deliver(connection, read) {
                Ok(()) => {
                    self.reads.insert(request, (agent.to_string(), reply));
                    return;
                }
                Err(_) => format!("agent '{agent}' is not reading what it is sent; retry later"),
            },
        };
        let _ = reply.send(Err(refused));
    }

    /// An answer to a read, accepted only from the agent it was asked of.
    fn output_read(&mut self, agent: &str, request: u64, chunk: Result<OutputChunk, String>) {
        match self.reads.get(&request) {
            Some((asked, _)) if asked == agent => {
                if let Some((_, reply)) = self.reads.remove(&request) {
                    let _ = reply.send(chunk);
                }
            }
            _ => dropped("output", agent, &format!("read {request}")),
        }
    }

    /// Closes an agent's connection (its credential was revoked): its outbox is dropped, so
    /// the connection's task ends and reports it closed.
    pub fn close(&mut self, name: &str) {
        let Some(connection) = self.agents.get(name).and_then(|agent| agent.connection) else {
            return;
        };
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.outbox = mpsc::channel(1).0;
        }
    }

    /// Whether `agent` holds a connection other than `connection` that was heard from within
    /// two heartbeats.
    fn live_elsewhere(&self, agent: &RemoteAgent, connection: u64) -> bool {
        let recent = self.clock.now_ms() - agent.last_seen_ms <= 2 * self.heartbeat_ms as i64;
        agent.connection.is_some_and(|c| c != connection) && recent
    }

    pub fn connected(&mut self, connection: u64, outbox: mpsc::Sender<ServerMessage>) {
        let agent = None;
        self.connections
            .insert(connection, Connection { outbox, agent });
    }

    /// The connection closed: answers its agent's name, now disconnected.
    pub fn disconnected(&mut self, connection: u64) -> Option<String> {
        let name = self.connections.remove(&connection)?.agent?;
        // Reads it will never answer: their callers get an error now, not a timeout.
        self.reads.retain(|_, (agent, _)| *agent != name);
        let agent = self.agents.get_mut(&name)?;
        if agent.connection == Some(connection) {
            agent.connection = None;
            self.congested.remove(&name);
            if agent.state == AgentState::Active {
                agent.state = AgentState::Disconnected;
            }
            tracing::info!(agent = name, "agent disconnected");
            return Some(name);
        }
        None
    }

    /// Remote agents were seen by this server or an earlier run of it.
    pub fn any_known(&self) -> bool {
        !self.known.is_empty()
    }

    pub fn launch(&mut self, agent: &str, task: TaskSpec) {
        let epoch = self.epoch;
        let unanswered = (agent.to_string(), task.clone());
        self.unanswered.insert(task.task_id.clone(), unanswered);
        self.send(agent, ServerMessage::Launch { epoch, task });
    }

    /// The agent is lost: its tasks went with it, launched or not.
    pub fn forget_launches_to(&mut self, agent: &str) {
        self.unanswered.retain(|_, (to, _)| to != agent);
        self.ended_unacked.retain(|_, on| on != agent);
    }

    /// Whether `agent` reported the task's end and was not acknowledged yet.
    fn ended_unacked_on(&self, agent: &str, task_id: &str) -> bool {
        self.ended_unacked
            .get(task_id)
            .is_some_and(|on| on == agent)
    }

    /// The agent answered about the task: its launch arrived.
    pub fn answered(&mut self, task_id: &str) {
        self.unanswered.remove(task_id);
    }

    /// The launches sent to `agent` that it did not name when it registered (`tasks`), for
    /// those still placed on it (`placed_here`): they never reached it. Forgets the others.
    fn undelivered(
        &mut self,
        agent: &str,
        tasks: &[String],
        placed_here: impl Fn(&str) -> bool,
    ) -> Vec<TaskSpec> {
        let mut undelivered = Vec::new();
        self.unanswered.retain(|task_id, (to, task)| {
            if to != agent || tasks.contains(task_id) {
                return to != agent; // named: it arrived; answered or not, it is the agent's now
            }
            if placed_here(task_id) {
                undelivered.push(task.clone());
            }
            false
        });
        undelivered
    }

    pub fn kill(&mut self, agent: &str, task_id: &str) {
        let epoch = self.epoch;
        let task_id = task_id.to_string();
        self.send(agent, ServerMessage::Kill { epoch, task_id });
    }

    pub fn ack(&mut self, agent: &str, task_id: &str, started: bool) {
        if !started && self.ended_unacked_on(agent, task_id) {
            self.ended_unacked.remove(task_id);
        }
        let task_id = task_id.to_string();
        // Not deferred: an agent resends what was not acknowledged when it reconnects.
        if let Some(connection) = self.connection_of(agent) {
            let _ = self.deliver(connection, ServerMessage::Ack { task_id, started });
        }
    }

    /// Sends to the agent now, or once its outbox has room, or when it registers again; in
    /// order.
    fn send(&mut self, agent: &str, message: ServerMessage) {
        let waiting = self
            .agents
            .get(agent)
            .is_some_and(|a| !a.deferred.is_empty());
        let message = match self.connection_of(agent) {
            Some(connection) if !waiting => match self.deliver(connection, message) {
                Ok(()) => return,
                Err(message) => message,
            },
            _ => message,
        };
        if let Some(remote) = self.agents.get_mut(agent) {
            remote.deferred.push(message);
        }
        // Congested only if its connection still reads: a closed one (its agent gone, the
        // server told of it next) is not a slow reader; what waits goes at its registration.
        let open = self
            .connection_of(agent)
            .and_then(|connection| self.connections.get(&connection))
            .is_some_and(|connection| !connection.outbox.is_closed());
        if open && self.congested.insert(agent.to_string()) {
            metrics::counter!("dron_agent_outbox_full_total", "agent" => agent.to_string())
                .increment(1);
            tracing::warn!(
                agent,
                "the agent's outbox is full (it reads slower than it is sent to, or not at all): nothing more is placed on it until it drains"
            );
            self.congestion.push((agent.to_string(), true));
        }
    }

    /// Moves what waits for each congested agent into its outbox, as far as there is room;
    /// an agent whose list empties takes tasks again.
    pub fn drain(&mut self) {
        let congested: Vec<String> = self.congested.iter().cloned().collect();
        for agent in congested {
            let Some(connection) = self.connection_of(&agent) else {
                self.congested.remove(&agent);
                continue;
            };
            let Some(remote) = self.agents.get_mut(&agent) else {
                continue;
            };
            let mut waiting = std::mem::take(&mut remote.deferred).into_iter();
            let mut left = Vec::new();
            for message in waiting.by_ref() {
                if let Err(message) = self.deliver(connection, message) {
                    left.push(message);
                    break;
                }
            }
            left.extend(waiting);
            let drained = left.is_empty();
            if let Some(remote) = self.agents.get_mut(&agent) {
                remote.deferred = left;
            }
            if drained {
                self.congested.remove(&agent);
                tracing::info!(agent, "the agent's outbox drained: it takes tasks again");
                self.congestion.push((agent, false));
            }
        }
    }

    /// Agents that became congested (true) or drained (false) since the last call.
    pub fn take_congestion(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.congestion)
    }

    /// The agent's live connection, if it has one.
    fn connection_of(&self, agent: &str) -> Option<u64> {
        let connection = self.agents.get(agent)?.connection?;
        self.connections
            .contains_key(&connection)
            .then_some(connection)
    }

    pub fn is_connected(&self, agent: &str) -> bool {
        self.connection_of(agent).is_some()
    }

    /// Puts `message` in the connection's outbox, or answers it back: the connection is gone,
    /// or its outbox is full.
    // The refused message is handed back to be queued in order: boxing it would cost an
    // allocation per message on the common path, where it is not refused.
    #[allow(clippy::result_large_err)]
    fn deliver(&self, connection: u64, message: ServerMessage) -> Result<(), ServerMessage> {
        let Some(conn) = self.connections.get(&connection) else {
            return Err(message);
        };
        conn.outbox.try_send(message).map_err(|error| match error {
            TrySendError::Closed(message) | TrySendError::Full(message) => message,
        })
    }

    /// Messages waiting in each remote agent's outbox (0 when it is not connected), and
    /// commands waiting for room there.
    pub fn outbox_depths(&self) -> impl Iterator<Item = (&str, usize, usize)> {
        self.agents.iter().map(|(name, agent)| {
            let depth = agent
                .connection
                .and_then(|c| self.connections.get(&c))
                .map_or(0, |c| c.outbox.max_capacity() - c.outbox.capacity());
            (name.as_str(), depth, agent.deferred.len())
        })
    }

    fn reply(&self, connection: u64, message: ServerMessage) {
        let _ = self.deliver(connection, message);
    }

    /// The registered agent on a connection, marked as heard from now.
    fn seen(&mut self, connection: u64) -> Option<String> {
        let name = self.connections.get(&connection)?.agent.clone()?;
        let agent = self.agents.get_mut(&name)?;
        agent.last_seen_ms = self.clock.now_ms();
        Some(name)
    }

    /// Agents silent past the timeout, now lost (each answered once).
    ///
    /// Silence is only the agents' when this server was there to hear them: after a gap of
    /// half the timeout or more since the last judgement (the server paused with SIGSTOP or a
    /// VM pause, starved, or its wall clock stepped forward), every agent still active gets a
    /// new timeout from now instead, since their heartbeats may be waiting unread (the nemesis
    /// run found a paused server declaring every agent lost, and relaunching their tasks, the
    /// moment it resumed).
    pub fn newly_lost(&mut self, now_ms: i64) -> Vec<String> {
        let timeout = self.timeout_ms;
        let gap = now_ms - std::mem::replace(&mut self.judged_ms, now_ms);
        if gap >= timeout / 2 {
            tracing::warn!(
                gap_ms = gap,
                "this server did not run for a while (paused, starved, or its clock stepped): agents get a new timeout"
            );
            metrics::counter!("dron_broker_stalls_total").increment(1);
            for agent in self.agents.values_mut() {
                agent.last_seen_ms = agent.last_seen_ms.max(now_ms);
            }
            return Vec::new();
        }
        let mut lost = Vec::new();
        for (name, agent) in &mut self.agents {
            let silent = now_ms - agent.last_seen_ms > timeout;
            if agent.state != AgentState::Lost && silent {
                agent.state = AgentState::Lost;
                agent.deferred.clear();
                if let Some(connection) = agent.connection.take() {
                    // Dropping its outbox closes a connection that went silent.
                    self.connections.remove(&connection);
                }
                lost.push(name.clone());
            }
        }
        lost
    }

    /// Adopts held for agents that did not come back within the timeout after this server
    /// started: (given up as lost, never claimed by any agent).
    pub fn adopts_given_up(&mut self, now_ms: i64) -> (Vec<LaunchRequest>, Vec<LaunchRequest>) {
        if now_ms - self.started_ms <= self.timeout_ms || self.awaiting.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let (mut lost, mut unclaimed) = (Vec::new(), Vec::new());
        for held in self.awaiting.drain(..) {
            match held.agent {
                Some(_) => lost.push(held.request),
                None => unclaimed.push(held.request),
            }
        }
        (lost, unclaimed)
    }

    pub fn view(&self, slot: &AgentSlot) -> AgentView {
        let remote = self.agents.get(&slot.name);
        AgentView {
            id: remote.map_or(LOCAL_AGENT.to_string(), |r| r.id.clone()),
            name: slot.name.clone(),
            state: remote.map_or(AgentState::Active, |r| r.state),
            local: remote.is_none(),
            last_heartbeat_ms: remote.map(|r| r.last_seen_ms),
            attributes: slot.attributes.clone(),
            offered: slot.offered,
            used: slot.used,
            free: slot.free(),
            tasks: slot.tasks.len(),
        }
    }
}

/// Registration, messages and reconciliation: the broker's side of the agent protocol.
impl BrokerState {
    pub(super) fn handle_agent_message(&mut self, connection: u64, message: AgentMessage) {
        match message {
            AgentMessage::Register {
                protocol,
                agent_id,
                name,
                resources,
                attributes,
                tasks,
                newest_epoch,
                ..
            } => {
                let agent = Registration {
                    protocol,
                    agent_id,
                    name,
                    tasks,
                    newest_epoch,
                };
                self.register(connection, agent, resources, attributes)
            }
            AgentMessage::Heartbeat => {
                if self.remotes.seen(connection).is_some() {
                    self.remotes.reply(connection, ServerMessage::HeartbeatAck);
                }
            }
            AgentMessage::Status { task_id, event } => {
                let Some(agent) = self.remotes.seen(connection) else {
                    return dropped("status", "an unregistered connection", &task_id);
                };
                if self.foreign(&agent, &task_id) {
                    return self.disown(&agent, &task_id, &event);
                }
                self.remotes.answered(&task_id);
                if matches!(event, TaskEvent::Ended { .. }) {
                    let on = agent.clone();
                    self.remotes.ended_unacked.insert(task_id.clone(), on);
                }
                let ack = self.ack_for(&agent, &task_id, &event);
                let update = TaskUpdate {
                    task_id,
                    event,
                    ack: Some(ack),
                };
                self.task_update(&agent, update)
            }
            AgentMessage::Output { request, chunk } => match self.remotes.seen(connection) {
                Some(agent) => self.remotes.output_read(&agent, request, chunk),
                None => dropped("output", "an unregistered connection", &request.to_string()),
            },
            AgentMessage::Rejected { task_id, reason } => {
                let Some(agent) = self.remotes.seen(connection) else {
                    let task = task_id.unwrap_or_default();
                    return dropped("rejected", "an unregistered connection", &task);
                };
                tracing::warn!(agent, ?task_id, reason, "agent refused a command");
                if let Some(task_id) = task_id {
                    self.remotes.answered(&task_id);
                    let placed = self.placement.placed(&task_id);
                    if placed.is_none_or(|placed| placed.agent != agent) {
                        return dropped("rejected", &agent, &task_id);
                    }
                    self.placement.release(&task_id);
                    let why = format!("agent '{agent}' refused it: {reason}");
                    self.report_end(&task_id, TaskEnd::FailedToStart(why));
                }
            }
        }
    }

    fn register(
        &mut self,
        connection: u64,
        agent: Registration,
        resources: Resources,
        attributes: BTreeMap<String, String>,
    ) {
        let admitted = self
            .admit(connection, &agent)
            .and_then(|()| check_offer(resources, self.remotes.max_offer));
        if let Err(reason) = admitted {
            tracing::warn!(agent = agent.name, reason, "agent registration refused");
            return self
                .remotes
                .reply(connection, ServerMessage::Refused { reason });
        }
        let name = agent.name.clone();
        let deferred = self.remotes.record_registration(connection, &agent);
        let (epoch, heartbeat_ms) = (self.remotes.epoch, self.remotes.heartbeat_ms);
        // The proof, if any, is added where the connection is carried (src/http/agents.rs).
        let registered = ServerMessage::Registered {
            epoch,
            heartbeat_ms,
            proof: None,
        };
        self.remotes.reply(connection, registered);
        for message in deferred {
            self.remotes.send(&name, message);
        }
        self.placement.upsert_agent(&name, attributes, resources);
        tracing::info!(agent = name, %resources, tasks = agent.tasks.len(), "agent registered");
        self.reconcile(&name, &agent.tasks);
        self.place();
    }

    fn admit(&self, connection: u64, agent: &Registration) -> Result<(), String> {
        if agent.protocol != PROTOCOL_VERSION {
            return Err(format!(
                "agent speaks protocol {}, this server speaks {PROTOCOL_VERSION}",
                agent.protocol
            ));
        }
        if agent.newest_epoch > self.remotes.epoch {
            tracing::error!(
                agent = agent.name,
                "this server (epoch {}) has been superseded: the agent obeyed epoch {}",
                self.remotes.epoch,
                agent.newest_epoch
            );
            return Err(format!(
                "stale server epoch {}: the agent has obeyed epoch {}",
                self.remotes.epoch, agent.newest_epoch
            ));
        }
        if agent.name == LOCAL_AGENT {
            return Err(format!(
                "the name '{LOCAL_AGENT}' is the server's own agent"
            ));
        }
        match self.remotes.agents.get(&agent.name) {
            Some(other) if self.remotes.live_elsewhere(other, connection) => Err(format!(
                "agent '{}' is connected already: a second connection is refused until the \
                 first closes",
                agent.name
            )),
            _ => Ok(()),
        }
    }

    /// Whether a message of `agent` about `task_id` comes from elsewhere than where the task
    /// is: placed on another agent, waiting for an offer, or held for another agent since a
    /// restart. (A task placed nowhere, e.g. ended or lost, is its coordinator's to judge.)
    fn foreign(&self, agent: &str, task_id: &str) -> bool {
        if let Some(placed) = self.placement.placed(task_id) {
            return placed.agent != agent;
        }
        self.placement.is_pending(task_id)
            || self.remotes.awaiting.iter().any(|held| {
                held.request.spec.task_id == task_id
                    && held.agent.as_deref().is_some_and(|other| other != agent)
            })
    }

    /// An agent spoke of a task that is not its own: its word is dropped; its copy, if it
    /// runs one, is not the one that counts, so it is told to forget the update and to stop.
    fn disown(&mut self, agent: &str, task_id: &str, event: &TaskEvent) {
        dropped("status", agent, task_id);
        let started = matches!(event, TaskEvent::Started { .. });
        self.remotes.ack(agent, task_id, started);
        if started {
            self.remotes.kill(agent, task_id);
        }
    }

    /// Reconnects a returning agent's tasks: those held since a server restart are adopted
    /// there; the others are checked with their coordinators (stale ones are then killed).
    fn reconcile(&mut self, name: &str, tasks: &[String]) {
        // An end the agent no longer names was acknowledged (or is gone with its work dir).
        // A set: an agent may name thousands of tasks, and so many ends may wait.
        let named: std::collections::HashSet<&str> = tasks.iter().map(String::as_str).collect();
        self.remotes
            .ended_unacked
            .retain(|task_id, on| on != name || named.contains(task_id.as_str()));
        let epoch = self.remotes.epoch;
        let placement = &self.placement;
        let placed_here =
            |task_id: &str| placement.placed(task_id).is_some_and(|p| p.agent == name);
        for task in self.remotes.undelivered(name, tasks, placed_here) {
            tracing::warn!(
                agent = name,
                task_id = task.task_id,
                "the agent never received this launch (sent as it left its connection): sent again"
            );
            metrics::counter!("dron_launches_resent_total").increment(1);
            self.remotes.launch(name, task);
        }
        let (claimed, rest): (Vec<_>, Vec<_>) = self.remotes.awaiting.drain(..).partition(|held| {
            held.agent.as_deref() == Some(name)
                || (held.agent.is_none() && tasks.contains(&held.request.spec.task_id))
        });
        self.remotes.awaiting = rest;
        for held in claimed {
            let task_id = held.request.spec.task_id.clone();
            let resources = held.request.demand.resources;
            let owner = &held.request.owner;
            self.placement.assign(&task_id, name, owner, resources);
            let timeout_deadline_ms = held.deadline_ms;
            let kill = self.remotes.kill_on_claim.remove(&task_id);
            let adopt = ServerMessage::Adopt {
                epoch,
                task_id: task_id.clone(),
                timeout_deadline_ms,
            };
            self.remotes.send(name, adopt);
            if kill {
                self.remotes.kill(name, &task_id);
            }
        }
        for task_id in tasks {
            let here = self.placement.placed(task_id).map(|p| p.agent.as_str());
            if here != Some(name) && self.remotes.ended_unacked_on(name, task_id) {
                // Named because its end is not acknowledged yet (e.g. its end was read just
                // before, from the connection the agent left during this server's pause):
                // nothing runs to ask its coordinator about, or to kill as stale (bug 3 of
                // the nemesis run). The agent sends the end again; that is acknowledged.
                continue;
            }
            if here != Some(name) && self.foreign(name, task_id) {
                let event = TaskEvent::Started {
                    at_ms: self.clock.now_ms(),
                    agent: name.to_string(),
                };
                self.disown(name, task_id, &event);
            } else if here != Some(name) {
                let event = TaskEvent::Started {
                    at_ms: self.clock.now_ms(),
                    agent: name.to_string(),
                };
                let ack = self.ack_for(name, task_id, &event);
                let mut update = TaskUpdate::new(task_id.clone(), event);
                update.ack = Some(ack);
                self.report(update);
            }
        }
    }

    /// Holds an adopt until the task's agent registers (or any agent claims a task whose
    /// launch was in flight), sending it at once when the agent is connected.
    pub(super) fn adopt_remote(
        &mut self,
        request: LaunchRequest,
        agent: Option<String>,
        deadline_ms: Option<i64>,
    ) {
        if let Some(name) = &agent
            && self.remotes.is_connected(name)
        {
            let task_id = request.spec.task_id.clone();
            let resources = request.demand.resources;
            self.placement
                .assign(&task_id, name, &request.owner, resources);
            let epoch = self.remotes.epoch;
            let adopt = ServerMessage::Adopt {
                epoch,
                task_id,
                timeout_deadline_ms: deadline_ms,
            };
            return self.remotes.send(name, adopt);
        }
        self.remotes.awaiting.push(AwaitingAdopt {
            request,
            agent,
            deadline_ms,
        });
    }

    /// What tells the agent its update was applied, once its coordinator made it durable.
    fn ack_for(&self, agent: &str, task_id: &str, event: &TaskEvent) -> UpdateAck {
        let broker = self.myself.clone();
        let (agent, task_id) = (agent.to_string(), task_id.to_string());
        let started = matches!(event, TaskEvent::Started { .. });
        UpdateAck::new(move |current| {
            let _ = broker.send_message(BrokerMsg::UpdateApplied {
                agent: agent.clone(),
                task_id: task_id.clone(),
                started,
                current,
            });
        })
    }
}

struct Registration {
    protocol: u32,
    agent_id: String,
    name: String,
    tasks: Vec<String>,
    newest_epoch: u64,
}

impl Remotes {
    /// Records the agent as active on this connection; answers the commands deferred for it.
    fn record_registration(
        &mut self,
        connection: u64,
        registration: &Registration,
    ) -> Vec<ServerMessage> {
        let name = registration.name.clone();
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.agent = Some(name.clone());
        }
        // A silent connection it replaces is closed (its outbox dropped).
        let replaced = self.agents.get(&name).and_then(|agent| agent.connection);
        if let Some(old) = replaced.filter(|old| *old != connection) {
            self.connections.remove(&old);
        }
        self.congested.remove(&name);
        self.known.add(&name);
        let agent = self.agents.entry(name).or_insert_with(|| RemoteAgent {
            id: registration.agent_id.clone(),
            connection: None,
            last_seen_ms: 0,
            state: AgentState::Active,
            deferred: Vec::new(),
        });
        agent.id = registration.agent_id.clone();
        agent.connection = Some(connection);
        agent.last_seen_ms = self.clock.now_ms();
        agent.state = AgentState::Active;
        std::mem::take(&mut agent.deferred)
    }
}

/// Counts and logs a message dropped because it did not come from where it should.
fn dropped(kind: &'static str, from: &str, about: &str) {
    tracing::warn!(
        kind,
        from,
        about,
        "agent message dropped: not from the agent the task is placed on"
    );
    metrics::counter!("dron_agent_messages_dropped_total", "kind" => kind).increment(1);
}

/// Why an offer is refused, if it is: amounts must be numbers from 0 to the maximum.
fn check_offer(offer: Resources, max: Resources) -> Result<(), String> {
    let amounts = [
        ("cpus", offer.cpus, max.cpus),
        ("mem", offer.mem, max.mem),
        ("disk", offer.disk, max.disk),
    ];
    for (what, offered, most) in amounts {
        if !(offered.is_finite() && (0.0..=most).contains(&offered)) {
            return Err(format!(
                "an offer of {offered} {what} is refused: from 0 to {most} (agents.max_*)"
            ));
        }
    }
    Ok(())
}
