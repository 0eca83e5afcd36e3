//! The local agent: runs tasks as processes on this machine, through the task shim, and
//! reports their status: to the broker inside the server, or, in a `dron agent` process, to
//! the connection that carries them to the server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dron_model::ids::parse_task_id;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use dron_task::{StatusSink, TASK_FILE, TaskCommand, TaskEnd, TaskEvent, TaskSpec, TaskUpdate};

use super::launcher::Launcher;
use super::process::{Adopted, RunningTask, SHIM_SUBCOMMAND, TaskKiller, adopt, launch, now_ms};

/// Where the agent's status updates go: the broker inside the server, the connection to the
/// server in a `dron agent` process.
pub type ReportFn = StatusSink;

pub enum AgentMsg {
    Launch(TaskSpec),
    Kill {
        task_id: String,
    },
    Adopt {
        task_id: String,
        timeout_deadline_ms: Option<i64>,
    },
    /// A task ended: forget its killer.
    Finished {
        task_id: String,
    },
}

pub struct LocalAgent;

pub struct LocalAgentArgs {
    /// What `started` updates name as the task's agent.
    pub name: String,
    /// The program started as `<shim_program> task-launcher`, the launcher that forks each
    /// task's shim, and as `<shim_program> task-shim <run_dir>` when the launcher is down
    /// (`dron-shim`, or the dron binary itself).
    pub shim_program: PathBuf,
    /// Run directories live under `<runs_root>/<job>/<target_ms>-<attempt>`.
    pub runs_root: PathBuf,
    pub report: ReportFn,
}

pub struct LocalAgentState {
    args: LocalAgentArgs,
    launcher: Launcher,
    killers: HashMap<String, TaskKiller>,
    /// Built-in sleep tasks running, by task id.
    sleepers: HashMap<String, tokio::task::AbortHandle>,
}

/// Where the run of `task_id` keeps its spec, output and exit status. Task ids come from
/// coordinators, which build them from validated job names.
pub fn run_dir(runs_root: &Path, task_id: &str) -> Option<PathBuf> {
    let task = parse_task_id(task_id)?;
    Some(
        runs_root
            .join(&task.job)
            .join(format!("{}-{}", task.target_ms, task.attempt)),
    )
}

impl Actor for LocalAgent {
    type Msg = AgentMsg;
    type State = LocalAgentState;
    type Arguments = LocalAgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        args: LocalAgentArgs,
    ) -> Result<LocalAgentState, ActorProcessingErr> {
        std::fs::create_dir_all(&args.runs_root)?;
        Ok(LocalAgentState {
            launcher: Launcher::new(&args.shim_program, &[]),
            args,
            killers: HashMap::new(),
            sleepers: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut LocalAgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Launch(spec) => state.launch(myself, spec).await,
            AgentMsg::Kill { task_id } => {
                if let Some(killer) = state.killers.get(&task_id) {
                    killer.kill();
                }
                if let Some(sleeper) = state.sleepers.remove(&task_id) {
                    sleeper.abort();
                    state.report(&task_id, ended(TaskEnd::Killed));
                }
            }
            AgentMsg::Adopt {
                task_id,
                timeout_deadline_ms,
            } => state.adopt(myself, task_id, timeout_deadline_ms),
            AgentMsg::Finished { task_id } => {
                state.killers.remove(&task_id);
                state.sleepers.remove(&task_id);
            }
        }
        Ok(())
    }
}

impl LocalAgentState {
    async fn launch(&mut self, myself: ActorRef<AgentMsg>, spec: TaskSpec) {
        let task_id = spec.task_id.clone();
        if let TaskCommand::Sleep { ms } = spec.command {
            return self.sleep(myself, task_id, ms);
        }
        let Some(dir) = run_dir(&self.args.runs_root, &task_id) else {
            let end = TaskEnd::FailedToStart(format!("malformed task id '{task_id}'"));
            return self.report(&task_id, ended(end));
        };
        // Launches are idempotent per task id: after a coordinator restart the same attempt
        // may be asked for twice (once by the old coordinator's last commit, once on recovery).
        // The second is answered with what the first did: still running, or how it ended.
        if self.killers.contains_key(&task_id) || dir.join(TASK_FILE).exists() {
            tracing::info!(task_id, "launch of a task already launched: reporting it");
            let deadline = spec.timeout_ms.map(|t| now_ms() + t as i64);
            return self.adopt(myself, task_id, deadline);
        }
        let program = &self.args.shim_program;
        let launched = launch(
            Some(&mut self.launcher),
            program,
            &[SHIM_SUBCOMMAND],
            &dir,
            &spec,
        )
        .await;
        match launched {
            Ok(running) => {
                self.report(&task_id, self.started());
                self.watch(myself, task_id, running);
            }
            Err(error) => self.report(&task_id, ended(TaskEnd::FailedToStart(error.to_string()))),
        }
    }

    /// A built-in task: started now, succeeded after `ms`, no process and no run directory.
    fn sleep(&mut self, myself: ActorRef<AgentMsg>, task_id: String, ms: u64) {
        if self.sleepers.contains_key(&task_id) {
            return; // launches are idempotent per task id
        }
        self.report(&task_id, self.started());
        if ms == 0 {
            // Nothing to wait for, so nothing to kill: no timer task.
            return self.report(&task_id, ended(TaskEnd::Exited(0)));
        }
        let report = self.args.report.clone();
        let id = task_id.clone();
        let sleeping = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            report(TaskUpdate::new(id.clone(), ended(TaskEnd::Exited(0))));
            let _ = myself.send_message(AgentMsg::Finished { task_id: id });
        });
        self.sleepers.insert(task_id, sleeping.abort_handle());
    }

    fn adopt(&mut self, myself: ActorRef<AgentMsg>, task_id: String, deadline_ms: Option<i64>) {
        if self.killers.contains_key(&task_id) || self.sleepers.contains_key(&task_id) {
            return self.report(&task_id, self.started()); // already watched here
        }
        let Some(dir) = run_dir(&self.args.runs_root, &task_id) else {
            return self.report(&task_id, TaskEvent::NeverLaunched);
        };
        if !dir.join(TASK_FILE).exists() {
            return self.report(&task_id, TaskEvent::NeverLaunched);
        }
        match adopt(&dir, deadline_ms) {
            Adopted::Finished(end) => self.report(&task_id, ended(end)),
            Adopted::Running(running) => {
                tracing::info!(task_id, "adopted a task still running");
                self.report(&task_id, self.started());
                self.watch(myself, task_id, running)
            }
        }
    }

    /// Waits for the task's end in a task of its own, then reports it.
    fn watch(&mut self, myself: ActorRef<AgentMsg>, task_id: String, running: RunningTask) {
        self.killers.insert(task_id.clone(), running.killer());
        let report = self.args.report.clone();
        tokio::spawn(async move {
            let end = running.wait().await;
            report(TaskUpdate::new(task_id.clone(), ended(end)));
            let _ = myself.send_message(AgentMsg::Finished { task_id });
        });
    }

    fn report(&self, task_id: &str, event: TaskEvent) {
        (self.args.report)(TaskUpdate::new(task_id, event));
    }

    fn started(&self) -> TaskEvent {
        TaskEvent::Started {
            at_ms: now_ms(),
            agent: self.args.name.clone(),
        }
    }
}

fn ended(end: TaskEnd) -> TaskEvent {
    TaskEvent::Ended {
        end,
        at_ms: now_ms(),
    }
}
