//! The offer broker: places tasks on agents and routes their status updates back to the
//! coordinator that owns the job.
//!
//! Today there is one agent, in this process, and every task goes to it; offers, resource
//! matching and remote agents come with the two-level scheduling work. Keeping the broker
//! between coordinators and agents now means coordinators never learn where a task runs.

mod messages;

pub use messages::{BrokerMsg, TaskEvent, TaskUpdate};

use std::path::PathBuf;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::agent::{AgentMsg, LocalAgent, LocalAgentArgs};
use crate::router::RouterMsg;

pub struct OfferBroker;

pub struct OfferBrokerArgs {
    pub shim_program: PathBuf,
    pub runs_root: PathBuf,
}

pub struct BrokerState {
    local_agent: ActorRef<AgentMsg>,
    router: Option<ActorRef<RouterMsg>>,
    /// Updates that arrived before the router was known.
    early_updates: Vec<TaskUpdate>,
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
        let agent_args = LocalAgentArgs {
            shim_program: args.shim_program,
            runs_root: args.runs_root,
            broker: myself.clone(),
        };
        let (local_agent, _) = Actor::spawn_linked(
            Some("local-agent".into()),
            LocalAgent,
            agent_args,
            myself.get_cell(),
        )
        .await?;
        Ok(BrokerState {
            local_agent,
            router: None,
            early_updates: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<BrokerMsg>,
        message: BrokerMsg,
        state: &mut BrokerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BrokerMsg::SetRouter(router) => {
                for update in state.early_updates.drain(..) {
                    router.send_message(RouterMsg::TaskUpdate(update))?;
                }
                state.router = Some(router);
            }
            BrokerMsg::Launch(spec) => state.local_agent.send_message(AgentMsg::Launch(spec))?,
            BrokerMsg::Kill { task_id } => {
                state.local_agent.send_message(AgentMsg::Kill { task_id })?
            }
            BrokerMsg::Adopt {
                task_id,
                timeout_deadline_ms,
            } => state.local_agent.send_message(AgentMsg::Adopt {
                task_id,
                timeout_deadline_ms,
            })?,
            BrokerMsg::Update(update) => match &state.router {
                Some(router) => router.send_message(RouterMsg::TaskUpdate(update))?,
                None => state.early_updates.push(update),
            },
        }
        Ok(())
    }
}
