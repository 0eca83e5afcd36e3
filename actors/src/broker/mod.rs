//! The offer broker: places tasks on agents and routes their status updates back to the
//! coordinator that owns the job (Mesos's two-level scheduling, with the broker as allocator).
//!
//! Agents are the local agent inside the server (optional, sized to the machine by default)
//! and remote `dron agent` processes connected over WebSocket ([`remote`]). Coordinators never
//! learn where a task runs, only the agent's name in its `started` update.
//!
//! - [`placement`]: offers, waiting tasks and Dominant Resource Fairness (plain logic).
//! - [`remote`]: remote agents: registration, heartbeats, loss, reconciliation, acks.
//! - [`known_agents`]: the names of remote agents ever seen, kept on disk for adoption.
//! - [`view`]: what the API shows of each agent.

mod known_agents;
mod messages;
mod placement;
mod remote;
#[cfg(test)]
mod tests;
mod view;

pub use known_agents::KnownAgentsRecord;
pub use messages::{BrokerMsg, LaunchRequest, TaskEvent, TaskUpdate, UpdateAck};
pub use placement::Placement;
pub use remote::AGENT_OUTBOX;
pub use view::{AgentState, AgentView};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dron_model::demand::Resources;
use dron_task::container::ContainerRuntime;
use dron_task::{LOCAL_AGENT, StatusSink, TaskEnd};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::agent::{AgentMsg, LocalAgent, LocalAgentArgs, ReportFn};
use crate::clock::SharedClock;
use crate::trace;
use remote::Remotes;

pub struct OfferBroker;

pub struct OfferBrokerArgs {
    /// The agent inside the server; None to run tasks on remote agents only.
    pub local: Option<LocalAgentConfig>,
    /// This server's fencing token: newer than any earlier run's (see the agent protocol).
    pub epoch: u64,
    /// How often agents heartbeat.
    pub heartbeat_ms: u64,
    /// An agent silent this long is lost: its tasks are retried elsewhere.
    pub agent_timeout_ms: i64,
    /// Owners' weights for Dominant Resource Fairness (default 1).
    pub weights: HashMap<String, f64>,
    /// The most a remote agent may offer; a registration offering more is refused.
    pub max_offer: Resources,
    /// Where the names of remote agents ever seen are kept.
    pub known_agents: KnownAgentsRecord,
    /// Where status updates go (to the coordinator that owns the task's job, through the
    /// router): a sink rather than the router's address, so that the broker does not depend
    /// on the router that depends on it.
    pub status: StatusSink,
    /// Where "now" comes from, for the broker and its local agent: the coordinators' clock,
    /// so that paused-time tests drive them all.
    pub clock: SharedClock,
}

pub struct LocalAgentConfig {
    pub shim_program: PathBuf,
    pub runs_root: PathBuf,
    pub resources: Resources,
    /// How the local agent runs containers; None: it does not (container jobs go elsewhere).
    pub containers: Option<ContainerRuntime>,
}

pub struct BrokerState {
    placement: Placement,
    local: Option<ActorRef<AgentMsg>>,
    /// Adoptions sent to the local agent although their agent was not recorded, while
    /// remote agents are known: task id → what to adopt remotely if it was not local.
    unsure_local: HashMap<String, (LaunchRequest, Option<i64>)>,
    remotes: Remotes,
    status: StatusSink,
    myself: ActorRef<BrokerMsg>,
    clock: SharedClock,
}

impl Actor for OfferBroker {
    type Msg = BrokerMsg;
    type State = BrokerState;
    type Arguments = OfferBrokerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BrokerMsg>,
        args: OfferBrokerArgs,
    ) -> Result<BrokerState, ActorProcessingErr> {
        let mut placement = Placement::new(args.weights);
        let local = match args.local {
            None => None,
            Some(config) => {
                let agent = spawn_local_agent(&myself, &config, args.clock.clone()).await?;
                let attributes = containers_attribute(config.containers.as_ref());
                placement.upsert_agent(LOCAL_AGENT, attributes, config.resources);
                Some(agent)
            }
        };
        let remotes = Remotes::new(
            args.epoch,
            args.heartbeat_ms,
            args.agent_timeout_ms,
            args.max_offer,
            args.known_agents,
            args.clock.clone(),
        );
        let tick = Duration::from_millis((args.heartbeat_ms / 2).clamp(50, 1000));
        myself.send_interval(tick, || BrokerMsg::Tick);
        Ok(BrokerState {
            placement,
            local,
            unsure_local: HashMap::new(),
            remotes,
            status: args.status,
            myself,
            clock: args.clock,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<BrokerMsg>,
        message: BrokerMsg,
        state: &mut BrokerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BrokerMsg::Launch(request) => state.launch(request),
            BrokerMsg::Kill { task_id } => state.kill(&task_id),
            BrokerMsg::Adopt {
                request,
                agent,
                timeout_deadline_ms,
            } => state.adopt(request, agent, timeout_deadline_ms),
            BrokerMsg::Update(update) => {
                if !state.not_local_after_all(&update) {
                    state.task_update(LOCAL_AGENT, update)
                }
            }
            BrokerMsg::UpdateApplied {
                agent,
                task_id,
                started,
                current,
            } => state.update_applied(&agent, &task_id, started, current),
            BrokerMsg::Connected { connection, outbox } => {
                state.remotes.connected(connection, outbox)
            }
            BrokerMsg::FromAgent {
                connection,
                message,
            } => state.handle_agent_message(connection, message),
            BrokerMsg::Disconnected { connection } => {
                if let Some(name) = state.remotes.disconnected(connection) {
                    state.placement.set_active(&name, false);
                }
            }
            BrokerMsg::CloseAgent { name } => state.remotes.close(&name),
            BrokerMsg::Tick => state.tick(),
            BrokerMsg::ListAgents(reply) => {
                let _ = reply.send(state.agent_views());
            }
            BrokerMsg::ReadOutput {
                agent,
                task_id,
                file,
                offset,
                reply,
            } => state
                .remotes
                .read_output(&agent, task_id, file, offset, reply),
        }
        state.settle_congestion();
        Ok(())
    }
}

/// The attributes an agent that runs containers adds to its own: `containers = <engine>`.
pub fn containers_attribute(runtime: Option<&ContainerRuntime>) -> BTreeMap<String, String> {
    runtime
        .map(|runtime| {
            let name = dron_model::demand::CONTAINERS_ATTRIBUTE.to_string();
            (name, runtime.engine.name().to_string())
        })
        .into_iter()
        .collect()
}

async fn spawn_local_agent(
    broker: &ActorRef<BrokerMsg>,
    config: &LocalAgentConfig,
    clock: SharedClock,
) -> Result<ActorRef<AgentMsg>, ActorProcessingErr> {
    let to_broker = broker.clone();
    let report: ReportFn = Arc::new(move |update| {
        let _ = to_broker.send_message(BrokerMsg::Update(update));
    });
    let args = LocalAgentArgs {
        name: LOCAL_AGENT.to_string(),
        shim_program: config.shim_program.clone(),
        runs_root: config.runs_root.clone(),
        report,
        clock,
        containers: config.containers.clone(),
    };
    let (agent, _) = Actor::spawn_linked(
        Some("local-agent".into()),
        LocalAgent,
        args,
        broker.get_cell(),
    )
    .await?;
    Ok(agent)
}

impl BrokerState {
    /// Queues the task for an offer and places whatever fits now.
    fn launch(&mut self, request: LaunchRequest) {
        let task_id = &request.spec.task_id;
        let _run = trace::enter(task_id);
        if self.placement.placed(task_id).is_some() || self.placement.is_pending(task_id) {
            // Launches are idempotent per task id (a coordinator may ask again on recovery).
            return tracing::debug!(task_id, "launch of a task already placed ignored");
        }
        tracing::debug!(owner = request.owner, "launch queued");
        self.placement.enqueue(request);
        self.place();
    }

    /// Launches what fits, and tells coordinators why the rest waits.
    fn place(&mut self) {
        for (request, agent) in self.placement.place() {
            let _run = trace::enter(&request.spec.task_id);
            tracing::debug!(agent, "placed");
            if agent == LOCAL_AGENT {
                self.to_local(AgentMsg::Launch(request.spec));
            } else {
                self.remotes.launch(&agent, request.spec);
            }
        }
        for (task_id, reason) in self.placement.unreported_waits() {
            let _run = trace::enter(&task_id);
            tracing::debug!(reason, "waiting for an offer");
            self.report(TaskUpdate::new(
                task_id,
                TaskEvent::WaitingForOffer { reason },
            ));
        }
    }

    fn kill(&mut self, task_id: &str) {
        let _run = trace::enter(task_id);
        tracing::debug!("kill");
        if self.placement.withdraw(task_id).is_some() {
            return self.report_end(task_id, TaskEnd::Killed);
        }
        match self.placement.placed(task_id).map(|p| p.agent.clone()) {
            Some(agent) if agent == LOCAL_AGENT => self.to_local(AgentMsg::Kill {
                task_id: task_id.to_string(),
            }),
            Some(agent) => self.remotes.kill(&agent, task_id),
            // Not placed: a task whose agent is not back yet since the server restarted is
            // killed once it is claimed; the local agent ignores tasks it does not run.
            None => {
                self.remotes.kill_when_claimed(task_id);
                self.to_local(AgentMsg::Kill {
                    task_id: task_id.to_string(),
                })
            }
        }
    }

    /// After a server restart: reconnect a running task with the agent that runs it.
    fn adopt(&mut self, request: LaunchRequest, agent: Option<String>, deadline: Option<i64>) {
        let task_id = request.spec.task_id.clone();
        let _run = trace::enter(&task_id);
        tracing::debug!(agent = agent.as_deref(), "adoption");
        let on_local = match &agent {
            Some(agent) => agent == LOCAL_AGENT,
            // Its start was never recorded: the local agent looks for its run directory
            // first (off this actor), and when it never launched it there, the remote agents
            // are asked (see `task_update`).
            None => self.local.is_some() || !self.remotes.any_known(),
        };
        if !on_local {
            return self.adopt_remote(request, agent, deadline);
        }
        if self.local.is_none() {
            return self.report(TaskUpdate::new(task_id, TaskEvent::NeverLaunched));
        }
        if agent.is_none() && self.remotes.any_known() {
            self.unsure_local
                .insert(task_id.clone(), (request.clone(), deadline));
        }
        let resources = request.demand.resources;
        self.placement
            .assign(&task_id, LOCAL_AGENT, &request.owner, resources);
        self.to_local(AgentMsg::Adopt {
            task_id,
            timeout_deadline_ms: deadline,
        });
    }

    /// The local agent's answer to an adoption of a task whose agent was not recorded: when
    /// it never launched the task, a remote agent may have; the adoption goes to them
    /// instead (answers true: the update is handled).
    fn not_local_after_all(&mut self, update: &TaskUpdate) -> bool {
        let Some((request, deadline)) = self.unsure_local.remove(&update.task_id) else {
            return false;
        };
        if !matches!(update.event, TaskEvent::NeverLaunched) {
            return false;
        }
        self.placement.release(&update.task_id);
        self.adopt_remote(request, None, deadline);
        true
    }

    /// A status update from an agent: frees what an ended task used, and goes to its
    /// coordinator.
    fn task_update(&mut self, agent: &str, update: TaskUpdate) {
        let _run = trace::enter(&update.task_id);
        tracing::debug!(agent, event = ?update.event, "status");
        let ended = matches!(
            update.event,
            TaskEvent::Ended { .. } | TaskEvent::NeverLaunched
        );
        // Only the agent it is placed on frees it: a returning lost agent may report a task
        // whose id now runs elsewhere.
        let placed_here = self
            .placement
            .placed(&update.task_id)
            .is_some_and(|p| p.agent == agent);
        if ended && placed_here {
            self.placement.release(&update.task_id);
            self.place();
        }
        self.report(update);
    }

    /// A coordinator applied a remote agent's update: acknowledge it to the agent, and kill
    /// a task that is no longer its instance's current attempt (it ran elsewhere meanwhile).
    fn update_applied(&mut self, agent: &str, task_id: &str, started: bool, current: bool) {
        self.remotes.ack(agent, task_id, started);
        if started && !current {
            tracing::warn!(
                agent,
                task_id,
                "agent runs a stale attempt: killing it there"
            );
            metrics::counter!("dron_stale_tasks_killed_total", "agent" => agent.to_string())
                .increment(1);
            if self
                .placement
                .placed(task_id)
                .is_some_and(|p| p.agent == agent)
            {
                self.placement.release(task_id);
            }
            self.remotes.kill(agent, task_id);
            self.place();
        }
    }

    /// Agents whose outbox filled take no more tasks; those whose outbox drained take them
    /// again (see `remote`).
    fn settle_congestion(&mut self) {
        let mut drained = false;
        for (name, congested) in self.remotes.take_congestion() {
            let active = !congested && self.remotes.is_connected(&name);
            self.placement.set_active(&name, active);
            drained |= active;
        }
        if drained {
            self.place();
            self.settle_congestion();
        }
    }

    fn tick(&mut self) {
        let now = self.clock.now_ms();
        self.remotes.drain();
        for name in self.remotes.newly_lost(now) {
            self.agent_lost(&name);
        }
        let (lost, unclaimed) = self.remotes.adopts_given_up(now);
        for request in lost {
            let why = "its agent did not come back after the server restarted";
            self.report_end(&request.spec.task_id, TaskEnd::AgentLost(why.into()));
        }
        for request in unclaimed {
            // No agent reports it: its launch never reached one. Launching it now runs it once.
            let task_id = request.spec.task_id;
            self.report(TaskUpdate::new(task_id, TaskEvent::NeverLaunched));
        }
        for request in self.placement.expire(now) {
            let why = "no agent could take it within its epsilon";
            self.report_end(&request.spec.task_id, TaskEnd::NotPlaced(why.into()));
        }
        self.publish_metrics();
    }

    /// Declares the tasks of a silent agent lost; their coordinators retry them elsewhere.
    fn agent_lost(&mut self, name: &str) {
        let tasks = self.placement.lose_agent(name);
        self.remotes.forget_launches_to(name);
        tracing::warn!(agent = name, tasks = tasks.len(), "agent lost");
        metrics::counter!("dron_agents_lost_total").increment(1);
        for task_id in tasks {
            let why = format!("agent '{name}' stopped heartbeating");
            self.report_end(&task_id, TaskEnd::AgentLost(why));
        }
        self.place();
    }

    fn report_end(&mut self, task_id: &str, end: TaskEnd) {
        let _run = trace::enter(task_id);
        tracing::debug!(?end, "ended here");
        let at_ms = self.clock.now_ms();
        self.report(TaskUpdate::new(task_id, TaskEvent::Ended { end, at_ms }));
    }

    fn report(&mut self, update: TaskUpdate) {
        (self.status)(update)
    }

    fn to_local(&self, message: AgentMsg) {
        if let Some(agent) = &self.local {
            let _ = agent.send_message(message);
        }
    }

    fn agent_views(&self) -> Vec<AgentView> {
        self.placement
            .agents()
            .map(|slot| self.remotes.view(slot))
            .collect()
    }

    fn publish_metrics(&self) {
        for slot in self.placement.agents() {
            let agent = slot.name.clone();
            let gauge = |name: &'static str, value: f64| {
                metrics::gauge!(name, "agent" => agent.clone()).set(value)
            };
            gauge("dron_agent_offered_cpus", slot.offered.cpus);
            gauge("dron_agent_used_cpus", slot.used.cpus);
            gauge("dron_agent_offered_mem_mb", slot.offered.mem);
            gauge("dron_agent_used_mem_mb", slot.used.mem);
            gauge("dron_agent_tasks", slot.tasks.len() as f64);
            gauge("dron_agent_active", if slot.active { 1.0 } else { 0.0 });
        }
        metrics::gauge!("dron_tasks_waiting_for_offer").set(self.placement.waiting_count() as f64);
        for (agent, depth, waiting) in self.remotes.outbox_depths() {
            metrics::gauge!("dron_agent_outbox", "agent" => agent.to_string()).set(depth as f64);
            metrics::gauge!("dron_agent_deferred", "agent" => agent.to_string())
                .set(waiting as f64);
        }
    }
}
