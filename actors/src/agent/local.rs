//! The local agent: runs tasks as processes on this machine, through the task shim, and
//! reports their status: to the broker inside the server, or, in a `dron agent` process, to
//! the connection that carries them to the server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use dron_task::container::ContainerRuntime;
use dron_task::{
    StatusSink, TASK_FILE, TaskCommand, TaskEnd, TaskEvent, TaskSpec, TaskUpdate, run_dir,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use super::launcher::Launcher;
use super::process::{
    Adopted, ProcessError, RunningTask, SHIM_SUBCOMMAND, TaskKiller, adopt, launch,
};
use crate::clock::{Clock, SharedClock};

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
    /// From the agent's launching task: how a launch went.
    Launched {
        task_id: String,
        launched: Launched,
    },
    /// From an adoption's blocking read of the run directory: what it found (None: the task
    /// was never launched here).
    Adopted {
        task_id: String,
        adopted: Option<Adopted>,
    },
}

/// How a launch went, found by the launching task.
pub enum Launched {
    Running(RunningTask),
    Failed(ProcessError),
    /// Its run directory already holds a task file: launched before (by this agent, or by
    /// the server before a restart), to be adopted rather than started twice.
    Before {
        timeout_ms: Option<u64>,
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
    /// Where "now" comes from: the times of its status updates and of timeouts of adopted
    /// tasks (the broker's clock in the server; the wall clock in `dron agent`).
    pub clock: SharedClock,
    /// How this agent runs containers (written into each container task's `task.json`); None:
    /// it does not, and such a task fails to start saying so.
    pub containers: Option<ContainerRuntime>,
}

pub struct LocalAgentState {
    args: LocalAgentArgs,
    /// To the task that launches, one at a time, through the launcher.
    launches: mpsc::UnboundedSender<(PathBuf, TaskSpec)>,
    /// Tasks handed to it and not yet watched (being launched, or their run directory read
    /// for an adoption), and whether a kill came for them meanwhile.
    launching: HashMap<String, bool>,
    killers: HashMap<String, TaskKiller>,
    /// Built-in sleep tasks running, by task id.
    sleepers: HashMap<String, tokio::task::AbortHandle>,
}

impl Actor for LocalAgent {
    type Msg = AgentMsg;
    type State = LocalAgentState;
    type Arguments = LocalAgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: LocalAgentArgs,
    ) -> Result<LocalAgentState, ActorProcessingErr> {
        std::fs::create_dir_all(&args.runs_root)?;
        Ok(LocalAgentState {
            launches: spawn_launching(args.shim_program.clone(), myself),
            launching: HashMap::new(),
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
            AgentMsg::Launch(spec) => {
                let _run = crate::trace::enter(&spec.task_id);
                tracing::debug!("launching");
                state.launch(myself, spec)
            }
            AgentMsg::Kill { task_id } => {
                let _run = crate::trace::enter(&task_id);
                tracing::debug!("kill");
                state.kill(&task_id)
            }
            AgentMsg::Adopt {
                task_id,
                timeout_deadline_ms,
            } => {
                let _run = crate::trace::enter(&task_id);
                tracing::debug!("adopting");
                state.adopt(myself, task_id, timeout_deadline_ms)
            }
            AgentMsg::Finished { task_id } => {
                state.killers.remove(&task_id);
                state.sleepers.remove(&task_id);
            }
            AgentMsg::Launched { task_id, launched } => {
                let _run = crate::trace::enter(&task_id);
                state.launched(myself, task_id, launched)
            }
            AgentMsg::Adopted { task_id, adopted } => {
                let _run = crate::trace::enter(&task_id);
                state.adopted(myself, task_id, adopted)
            }
        }
        Ok(())
    }
}

/// Launches tasks one after another, each reported back as [`AgentMsg::Launched`]: a launch
/// waits for the launcher's answer (up to seconds when it is stuck), and kills must not wait
/// behind it in the agent's mailbox. Ends when the agent stops (its sender is dropped).
fn spawn_launching(
    shim_program: PathBuf,
    agent: ActorRef<AgentMsg>,
) -> mpsc::UnboundedSender<(PathBuf, TaskSpec)> {
    let (launches, mut requests) = mpsc::unbounded_channel::<(PathBuf, TaskSpec)>();
    let mut launcher = Launcher::new(&shim_program, &[]);
    tokio::spawn(async move {
        while let Some((dir, spec)) = requests.recv().await {
            let shim = &shim_program;
            // Launches are idempotent per task id: after a coordinator restart the same
            // attempt may be asked for twice (once by the old coordinator's last commit, once
            // on recovery). A task file says the first got this far.
            let before = tokio::fs::try_exists(dir.join(TASK_FILE)).await;
            let launched = if before.unwrap_or(false) {
                Launched::Before {
                    timeout_ms: spec.timeout_ms,
                }
            } else {
                match launch(Some(&mut launcher), shim, &[SHIM_SUBCOMMAND], &dir, &spec).await {
                    Ok(running) => Launched::Running(running),
                    Err(error) => Launched::Failed(error),
                }
            };
            let task_id = spec.task_id;
            if agent
                .send_message(AgentMsg::Launched { task_id, launched })
                .is_err()
            {
                break;
            }
        }
    });
    launches
}

impl LocalAgentState {
    fn launch(&mut self, myself: ActorRef<AgentMsg>, mut spec: TaskSpec) {
        let task_id = spec.task_id.clone();
        if let Some(container) = &mut spec.container {
            container.runtime = self.args.containers.clone();
        }
        if let TaskCommand::Sleep { ms } = spec.command {
            return self.sleep(myself, task_id, ms);
        }
        let Some(dir) = run_dir(&self.args.runs_root, &task_id) else {
            let end = TaskEnd::FailedToStart(format!("malformed task id '{task_id}'"));
            return self.report(&task_id, self.ended(end));
        };
        if self.launching.contains_key(&task_id) {
            // Its launch in flight reports how it went.
            return tracing::debug!(task_id, "launch of a task being launched ignored");
        }
        // Launches are idempotent per task id (see `spawn_launching` for one launched before
        // a restart): a second is answered with what the first did.
        if self.killers.contains_key(&task_id) {
            return self.report(&task_id, self.started());
        }
        if self.launches.send((dir, spec)).is_err() {
            let end = TaskEnd::FailedToStart("the agent's launching task stopped".into());
            return self.report(&task_id, self.ended(end));
        }
        self.launching.insert(task_id, false);
    }

    /// A launch finished: watch the task, and kill it now if that was asked meanwhile.
    fn launched(&mut self, myself: ActorRef<AgentMsg>, task_id: String, launched: Launched) {
        match launched {
            Launched::Running(running) => self.running(myself, task_id, running),
            Launched::Failed(error) => {
                self.launching.remove(&task_id);
                let end = TaskEnd::FailedToStart(error.to_string());
                self.report(&task_id, self.ended(end))
            }
            Launched::Before { timeout_ms } => {
                tracing::info!(task_id, "launch of a task already launched: reporting it");
                let kill = self.launching.remove(&task_id).unwrap_or(false);
                let deadline_ms = timeout_ms.map(|t| self.now_ms() + t as i64);
                self.read_run_dir(myself, task_id.clone(), deadline_ms);
                if kill {
                    self.kill(&task_id);
                }
            }
        }
    }

    /// A task launched or adopted runs: report it, watch it, and kill it now if that was
    /// asked while it was being launched or adopted.
    fn running(&mut self, myself: ActorRef<AgentMsg>, task_id: String, running: RunningTask) {
        let kill = self.launching.remove(&task_id).unwrap_or(false);
        self.report(&task_id, self.started());
        let killer = running.killer();
        self.watch(myself, task_id, running);
        if kill {
            killer.kill();
        }
    }

    fn kill(&mut self, task_id: &str) {
        if let Some(killer) = self.killers.get(task_id) {
            killer.kill();
        }
        if let Some(kill) = self.launching.get_mut(task_id) {
            *kill = true;
        }
        if let Some(sleeper) = self.sleepers.remove(task_id) {
            sleeper.abort();
            self.report(task_id, self.ended(TaskEnd::Killed));
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
            return self.report(&task_id, self.ended(TaskEnd::Exited(0)));
        }
        let (report, clock) = (self.args.report.clone(), self.args.clock.clone());
        let id = task_id.clone();
        let sleeping = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let update = TaskUpdate::new(id.clone(), ended(&*clock, TaskEnd::Exited(0)));
            reported(&report, update);
            let _ = myself.send_message(AgentMsg::Finished { task_id: id });
        });
        self.sleepers.insert(task_id, sleeping.abort_handle());
    }

    fn adopt(&mut self, myself: ActorRef<AgentMsg>, task_id: String, deadline_ms: Option<i64>) {
        if self.launching.contains_key(&task_id) {
            return; // its launch or adoption in flight reports how it went
        }
        if self.killers.contains_key(&task_id) || self.sleepers.contains_key(&task_id) {
            return self.report(&task_id, self.started()); // already watched here
        }
        self.read_run_dir(myself, task_id, deadline_ms);
    }

    /// Reads a task's run directory on a blocking thread (files and a pidfd: not in this
    /// actor's handler) to find whether it still runs, how it ended, or that it never
    /// launched here; the answer comes back as [`AgentMsg::Adopted`].
    fn read_run_dir(
        &mut self,
        myself: ActorRef<AgentMsg>,
        task_id: String,
        deadline_ms: Option<i64>,
    ) {
        let Some(dir) = run_dir(&self.args.runs_root, &task_id) else {
            return self.report(&task_id, TaskEvent::NeverLaunched);
        };
        self.launching.insert(task_id.clone(), false);
        let deadline = deadline_ms.map(|ms| self.args.clock.instant_at(ms));
        tokio::task::spawn_blocking(move || {
            let adopted = dir.join(TASK_FILE).exists().then(|| adopt(&dir, deadline));
            let _ = myself.send_message(AgentMsg::Adopted { task_id, adopted });
        });
    }

    /// What an adoption's read of the run directory found.
    fn adopted(&mut self, myself: ActorRef<AgentMsg>, task_id: String, adopted: Option<Adopted>) {
        match adopted {
            None => {
                self.launching.remove(&task_id);
                self.report(&task_id, TaskEvent::NeverLaunched)
            }
            Some(Adopted::Finished(end)) => {
                self.launching.remove(&task_id);
                self.report(&task_id, self.ended(end))
            }
            Some(Adopted::Running(running)) => {
                tracing::info!(task_id, "adopted a task still running");
                self.running(myself, task_id, running)
            }
        }
    }

    /// Waits for the task's end in a task of its own, then reports it.
    fn watch(&mut self, myself: ActorRef<AgentMsg>, task_id: String, running: RunningTask) {
        self.killers.insert(task_id.clone(), running.killer());
        let (report, clock) = (self.args.report.clone(), self.args.clock.clone());
        tokio::spawn(async move {
            let end = running.wait().await;
            reported(
                &report,
                TaskUpdate::new(task_id.clone(), ended(&*clock, end)),
            );
            let _ = myself.send_message(AgentMsg::Finished { task_id });
        });
    }

    fn report(&self, task_id: &str, event: TaskEvent) {
        reported(&self.args.report, TaskUpdate::new(task_id, event));
    }

    fn started(&self) -> TaskEvent {
        TaskEvent::Started {
            at_ms: self.now_ms(),
            agent: self.args.name.clone(),
        }
    }

    fn ended(&self, end: TaskEnd) -> TaskEvent {
        ended(&*self.args.clock, end)
    }

    fn now_ms(&self) -> i64 {
        self.args.clock.now_ms()
    }
}

/// Reports a task's status, in its run's span (a watching task has none of its own).
fn reported(report: &ReportFn, update: TaskUpdate) {
    let _run = crate::trace::enter(&update.task_id);
    tracing::debug!(event = ?update.event, "reported");
    report(update);
}

fn ended(clock: &dyn Clock, end: TaskEnd) -> TaskEvent {
    TaskEvent::Ended {
        end,
        at_ms: clock.now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use dron_model::ids::task_id;

    use super::*;

    fn spec(task_id: String, command: TaskCommand) -> TaskSpec {
        TaskSpec {
            task_id,
            command,
            env: Vec::new(),
            secret_env: Default::default(),
            work_dir: None,
            timeout_ms: None,
            output_cap_bytes: 1024,
            container: None,
        }
    }

    /// A launcher that never answers (it exits after 2 s) holds a launch for those 2 s: a kill
    /// sent after it must not wait for it.
    #[tokio::test]
    async fn kills_do_not_wait_behind_a_slow_launch() {
        let dir = tempfile::tempdir().unwrap();
        let stuck = dir.path().join("stuck-shim");
        std::fs::write(&stuck, "#!/bin/sh\nexec sleep 2\n").unwrap();
        std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (updates, mut reported) = mpsc::unbounded_channel();
        let args = LocalAgentArgs {
            name: "test".into(),
            shim_program: stuck,
            runs_root: dir.path().join("runs"),
            report: Arc::new(move |update| {
                let _ = updates.send(update);
            }),
            clock: Arc::new(crate::clock::SystemClock),
            containers: None,
        };
        let (agent, _) = Actor::spawn(None, LocalAgent, args).await.unwrap();
        let slow = spec(task_id("slow", 1, 0), TaskCommand::Shell("true".into()));
        let nap_id = task_id("nap", 1, 0);
        let nap = spec(nap_id.clone(), TaskCommand::Sleep { ms: 60_000 });
        agent.send_message(AgentMsg::Launch(slow)).unwrap();
        agent.send_message(AgentMsg::Launch(nap)).unwrap();
        agent
            .send_message(AgentMsg::Kill {
                task_id: nap_id.clone(),
            })
            .unwrap();
        let killed = async {
            while let Some(update) = reported.recv().await {
                if update.task_id == nap_id
                    && matches!(
                        update.event,
                        TaskEvent::Ended {
                            end: TaskEnd::Killed,
                            ..
                        }
                    )
                {
                    return;
                }
            }
        };
        let answered = tokio::time::timeout(Duration::from_secs(1), killed).await;
        assert!(answered.is_ok(), "the kill waited behind the launch");
        agent.stop(None);
    }

    /// A launch of a task whose run directory already has its task file (launched before a
    /// restart) starts nothing: the run is adopted, here found gone without a status.
    #[tokio::test]
    async fn a_launch_of_a_task_launched_before_is_adopted_not_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let (updates, mut reported) = mpsc::unbounded_channel();
        let runs_root = dir.path().join("runs");
        let id = task_id("again", 1, 0);
        let run = run_dir(&runs_root, &id).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join(TASK_FILE), "{}").unwrap();
        let args = LocalAgentArgs {
            name: "test".into(),
            shim_program: dir.path().join("no-shim"),
            runs_root,
            report: Arc::new(move |update| {
                let _ = updates.send(update);
            }),
            clock: Arc::new(crate::clock::SystemClock),
            containers: None,
        };
        let (agent, _) = Actor::spawn(None, LocalAgent, args).await.unwrap();
        let again = spec(id, TaskCommand::Shell("true".into()));
        agent.send_message(AgentMsg::Launch(again)).unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), reported.recv())
            .await
            .unwrap()
            .unwrap()
            .event;
        assert!(
            matches!(
                &event,
                TaskEvent::Ended {
                    end: TaskEnd::Lost(_),
                    ..
                }
            ),
            "expected the earlier run adopted (and found lost), got {event:?}"
        );
        agent.stop(None);
    }

    /// Its updates carry the time of the clock it was given: a built-in sleep of a minute, in
    /// paused time, starts at the clock's start and ends a minute later.
    #[tokio::test(start_paused = true)]
    async fn updates_carry_the_time_of_the_clock_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let (updates, mut reported) = mpsc::unbounded_channel();
        let start = chrono::DateTime::from_timestamp_millis(1_000_000).unwrap();
        let args = LocalAgentArgs {
            name: "test".into(),
            shim_program: dir.path().join("no-shim"),
            runs_root: dir.path().join("runs"),
            report: Arc::new(move |update| {
                let _ = updates.send(update);
            }),
            clock: Arc::new(crate::clock::TokioClock::starting_at(start)),
            containers: None,
        };
        let (agent, _) = Actor::spawn(None, LocalAgent, args).await.unwrap();
        let nap = spec(task_id("nap", 1, 0), TaskCommand::Sleep { ms: 60_000 });
        agent.send_message(AgentMsg::Launch(nap)).unwrap();
        let started = reported.recv().await.unwrap().event;
        assert!(
            matches!(
                started,
                TaskEvent::Started {
                    at_ms: 1_000_000,
                    ..
                }
            ),
            "{started:?}"
        );
        let ended = reported.recv().await.unwrap().event;
        assert!(
            matches!(
                ended,
                TaskEvent::Ended {
                    end: TaskEnd::Exited(0),
                    at_ms: 1_060_000
                }
            ),
            "{ended:?}"
        );
        agent.stop(None);
    }
}
