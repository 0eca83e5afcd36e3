//! Task status: what agents report about attempts, how instances end, and kills.

use dron_model::ids::{TaskRef, instance_id, parse_task_id};
use dron_model::instance::{HistoryEntry, InstanceState, RunCause};
use dron_model::job::JobSpec;
use dron_model::resource::{EventStatus, ResourceEvent, job_resource};

use super::launch::is_local_agent;
use super::notices::{push_notice, run_notice};
use super::{Applied, Outbox, Shard, ms_to_time};
use crate::error::CommandError;
use crate::store::StoreOp;
use dron_task::{TaskEnd, TaskEvent, TaskUpdate};

/// How an instance ended for good.
pub(super) struct Ending {
    pub(super) state: InstanceState,
    pub(super) exit_code: Option<i32>,
    /// Why, for the run's history.
    pub(super) message: Option<String>,
}

impl Ending {
    fn succeeded() -> Self {
        Ending {
            state: InstanceState::Succeeded,
            exit_code: Some(0),
            message: None,
        }
    }

    fn killed(why: &str) -> Self {
        Ending {
            state: InstanceState::Killed,
            exit_code: None,
            message: Some(why.to_string()),
        }
    }
}

impl Shard {
    /// Applies an agent's report, saying whether it was about a current attempt.
    pub fn task_update(&mut self, update: TaskUpdate, now_ms: i64, out: &mut Outbox) -> Applied {
        let Some((id, attempt)) = self.running_instance(&update.task_id) else {
            return Applied::Unknown;
        };
        if attempt.is_none() {
            return Applied::Stale; // a report about an earlier attempt: already handled
        }
        match update.event {
            TaskEvent::Started { agent, .. } => self.started_on(&id, agent, now_ms, out),
            TaskEvent::WaitingForOffer { reason } => {
                // Shown in views; not worth a write.
                self.live.await_offer(&id, reason);
            }
            TaskEvent::NeverLaunched => {
                let instance = self.live.get(&id).expect("running instance").clone();
                out.launches.push(self.launch_request(&instance));
            }
            TaskEvent::Ended { end, .. } => self.task_ended(&id, end, now_ms, out),
        }
        Applied::Current
    }

    /// Records the agent an attempt runs on. Written at once for a remote agent: after a
    /// restart its tasks are looked for there. A local run's agent is written with its end
    /// (a restart finds local runs by their run directory), sparing a write per launch.
    ///
    /// The first report of an attempt started by this shard also times its launch
    /// (`dron_launch_delay_seconds`): the start lateness is taken when the shard starts a
    /// run, and a launch may then wait for an offer or in its agent's launcher queue.
    fn started_on(&mut self, id: &str, agent: String, now_ms: i64, out: &mut Outbox) {
        let recovered_ms = self.recovered_ms;
        self.live.update(id, |instance| {
            instance.message = None;
            if instance.agent.as_deref() == Some(agent.as_str()) {
                return;
            }
            if let (None, Some(started_ms)) = (&instance.agent, instance.started_ms)
                && started_ms >= recovered_ms
            {
                let delay = (now_ms - started_ms).max(0) as f64 / 1000.0;
                metrics::histogram!("dron_launch_delay_seconds").record(delay);
            }
            let remote = !is_local_agent(&agent);
            instance.agent = Some(agent);
            if remote {
                out.ops.push(StoreOp::PutInstance(instance.clone()));
            }
        });
    }

    /// Finds the live instance a task id names: (instance id, Some(attempt)) when that
    /// attempt is the one running, (id, None) for a stale attempt.
    fn running_instance(&self, task_id: &str) -> Option<(String, Option<u32>)> {
        let TaskRef {
            job,
            target_ms,
            attempt,
        } = parse_task_id(task_id)?;
        let id = instance_id(&job, target_ms);
        let instance = self.live.get(&id)?;
        let current = instance.attempt == attempt && instance.state == InstanceState::Running;
        Some((id, current.then_some(attempt)))
    }

    fn task_ended(&mut self, id: &str, end: TaskEnd, now_ms: i64, out: &mut Outbox) {
        let is_async = self
            .live
            .get(id)
            .map(|i| self.jobs[i.job.as_str()].record.spec.is_async)
            .unwrap_or(false);
        if self.live.kill_requested(id) {
            return self.finish(id, Ending::killed("killed on request"), now_ms, out);
        }
        match end {
            // An async job's process only starts the work; PUT /scheduler/task/{id} ends it.
            TaskEnd::Exited(0) if is_async => {}
            TaskEnd::Exited(0) => self.finish(id, Ending::succeeded(), now_ms, out),
            TaskEnd::Killed => self.finish(id, Ending::killed("killed on request"), now_ms, out),
            TaskEnd::AgentLost(why) => self.agent_lost(id, why, now_ms, out),
            TaskEnd::NotPlaced(why) => {
                metrics::counter!("dron_skipped_targets_total").increment(1);
                let message = format!("could not start within epsilon: {why}");
                let skipped = Ending {
                    state: InstanceState::Skipped,
                    exit_code: None,
                    message: Some(message),
                };
                self.finish(id, skipped, now_ms, out)
            }
            other => self.attempt_failed(id, &other, now_ms, out),
        }
    }

    /// The attempt's agent was lost: launch a new attempt elsewhere at once while the target's
    /// epsilon allows (not counted against the job's retries), else fail the instance.
    fn agent_lost(&mut self, id: &str, why: String, now_ms: i64, out: &mut Outbox) {
        let instance = self.live.get(id).expect("live instance");
        let epsilon = self.jobs[instance.job.as_str()].record.spec.epsilon_ms;
        let due = instance.ready_ms.unwrap_or(instance.target_ms);
        let in_window = !instance.cause.bound_by_epsilon() || due + epsilon >= now_ms;
        if !in_window {
            let message = format!("agent lost ({why}) and its epsilon has passed");
            let failed = Ending {
                state: InstanceState::Failed,
                exit_code: None,
                message: Some(message),
            };
            return self.finish(id, failed, now_ms, out);
        }
        metrics::counter!("dron_agent_lost_attempts_total").increment(1);
        self.live.update(id, |instance| {
            instance.attempt += 1;
            instance.lost_attempts += 1;
            instance.agent = None;
            instance.message = Some(format!(
                "attempt {} lost: {why}; relaunched",
                instance.attempt - 1
            ));
        });
        self.start(id, now_ms, out);
    }

    pub fn complete_async(
        &mut self,
        task: &TaskRef,
        status_code: i32,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<(), CommandError> {
        let task_id = dron_model::ids::task_id(&task.job, task.target_ms, task.attempt);
        let Some((id, Some(_))) = self.running_instance(&task_id) else {
            return Err(CommandError::TaskNotFound(task_id));
        };
        if !self.jobs[task.job.as_str()].record.spec.is_async {
            let message = format!(
                "job '{}' is not async: its tasks end when their process ends",
                task.job
            );
            return Err(CommandError::Conflict(message));
        }
        if status_code == 0 {
            self.finish(&id, Ending::succeeded(), now_ms, out);
        } else {
            self.attempt_failed(&id, &TaskEnd::Exited(status_code), now_ms, out);
        }
        Ok(())
    }

    /// A failed attempt: retry with backoff while retries remain, else fail for good.
    fn attempt_failed(&mut self, id: &str, end: &TaskEnd, now_ms: i64, out: &mut Outbox) {
        let instance = self.live.get(id).expect("live instance");
        let retries = self.jobs[instance.job.as_str()].record.spec.retries;
        let failed_before = instance.failed_attempts();
        let exit_code = match end {
            TaskEnd::Exited(code) => Some(*code),
            _ => None,
        };
        let message = describe(end);
        if failed_before < retries {
            let backoff = self
                .config
                .retry_backoff_ms
                .saturating_mul(1 << failed_before.min(20));
            let retry_at = now_ms + backoff.min(self.config.retry_backoff_max_ms);
            self.live.update(id, |instance| {
                instance.exit_code = exit_code;
                instance.message =
                    Some(format!("attempt {} {message}; retrying", instance.attempt));
            });
            let instance = self.live.retry_at(id, retry_at).expect("live instance");
            out.ops.push(StoreOp::PutInstance(instance.clone()));
            return;
        }
        let state = if *end == TaskEnd::TimedOut {
            InstanceState::TimedOut
        } else {
            InstanceState::Failed
        };
        let ending = Ending {
            state,
            exit_code,
            message: Some(message),
        };
        self.finish(id, ending, now_ms, out);
    }

    /// Ends an instance for good, then starts the job's next queued run.
    pub(super) fn finish(&mut self, id: &str, ending: Ending, now_ms: i64, out: &mut Outbox) {
        let job = self.live.get(id).map(|instance| instance.job.clone());
        self.record_end(id, ending, now_ms, out);
        if let Some(job) = job {
            self.try_start(&job, now_ms, out);
        }
    }

    /// Ends an instance for good: counters, history, and the announcement of a success.
    pub(super) fn record_end(&mut self, id: &str, ending: Ending, now_ms: i64, out: &mut Outbox) {
        let Some(mut instance) = self.remove_live(id) else {
            return;
        };
        let Ending {
            state,
            exit_code,
            message,
        } = ending;
        instance.state = state;
        instance.ended_ms = Some(now_ms);
        tracing::debug!(
            instance = id,
            state = state.as_str(),
            exit_code,
            "run ended"
        );
        metrics::counter!("dron_runs_finished_total", "state" => state.as_str()).increment(1);
        instance.exit_code = exit_code.or(instance.exit_code);
        instance.message = message;
        let name = instance.job.clone();
        // A backfill's run: its target is done, and its announcement names the backfill.
        let backfill = (instance.cause == RunCause::Backfill)
            .then(|| self.backfill_run_ended(&instance, state, out))
            .map(Option::unwrap_or_default);
        if let Some(entry) = self.jobs.get_mut(name.as_str()) {
            if let Some(notice) = run_notice(&entry.record, &instance, now_ms) {
                push_notice(notice, out);
            }
            let counters = &mut entry.record.state;
            match state {
                InstanceState::Succeeded => {
                    counters.success_count += 1;
                    counters.last_success_ms = Some(now_ms);
                    let newest = counters
                        .last_success_target_ms
                        .max(Some(instance.target_ms));
                    counters.last_success_target_ms = newest;
                }
                InstanceState::Failed
                | InstanceState::TimedOut
                | InstanceState::Killed
                | InstanceState::Expired => {
                    counters.error_count += 1;
                    counters.last_error_ms = Some(now_ms);
                }
                _ => {}
            }
            out.ops.push(StoreOp::PutJob(entry.record.clone()));
            let status = match state {
                InstanceState::Succeeded => Some(EventStatus::Ready),
                InstanceState::Failed | InstanceState::TimedOut | InstanceState::Expired => {
                    Some(EventStatus::Failed)
                }
                _ => None,
            };
            if let Some(status) = status {
                let mut event = run_event(&entry.record.spec, instance.target_ms, status);
                if let Some(id) = &backfill {
                    event.meta_json = dron_model::backfill::announcement_meta(id);
                }
                announce(event, out);
            }
        }
        out.ops.push(StoreOp::DeleteInstance(id.to_string()));
        self.append_history(HistoryEntry::Run(instance), out);
        // A slot of a backfill of the job may have freed, or the target it waited for.
        self.drive_backfills_of(&name, now_ms, out);
    }

    pub(super) fn append_history(&mut self, entry: HistoryEntry, out: &mut Outbox) {
        let job = entry.job().to_string();
        out.ops.push(StoreOp::AppendHistory(entry));
        let appends = self.appends_since_trim.entry(job.clone()).or_default();
        *appends += 1;
        // Trimming scans the job's history, so do it once per 10% of the kept length.
        if *appends > self.config.history_keep / 10 {
            *appends = 0;
            out.ops.push(StoreOp::TrimHistory {
                job,
                keep: self.config.history_keep,
            });
        }
    }

    pub fn kill_tasks(
        &mut self,
        name: &str,
        now_ms: i64,
        out: &mut Outbox,
    ) -> Result<usize, CommandError> {
        self.ensure_job(name)?;
        let ids = self.live.ids_of(name);
        for id in &ids {
            self.kill_instance(id, now_ms, out);
        }
        let dropped = self.drop_parked_targets(name, now_ms, out);
        Ok(ids.len() + dropped as usize)
    }
}

impl Shard {
    /// Kills a live instance: a running attempt is killed on its agent (recorded as killed
    /// when its end is reported), one not started yet ends killed now.
    pub(super) fn kill_instance(&mut self, id: &str, now_ms: i64, out: &mut Outbox) {
        let Some(instance) = self.live.get(id) else {
            return;
        };
        if instance.state != InstanceState::Running {
            let ending = Ending::killed("killed on request before it started");
            return self.record_end(id, ending, now_ms, out);
        }
        out.kills.push(instance.task_id());
        if self.jobs[instance.job.as_str()].record.spec.is_async {
            // An async job's process may have exited already, leaving nothing to report the
            // kill: record it now.
            self.record_end(id, Ending::killed("killed on request"), now_ms, out);
        } else {
            // The end arrives as a status update; it is recorded as killed then.
            self.live.request_kill(id);
        }
    }
}

fn describe(end: &TaskEnd) -> String {
    match end {
        TaskEnd::Exited(code) => format!("exited with code {code}"),
        TaskEnd::Signaled(signal) => format!("killed by signal {signal}"),
        TaskEnd::TimedOut => "ran past maxCompletionTime and was killed".to_string(),
        TaskEnd::Killed => "killed on request".to_string(),
        TaskEnd::FailedToStart(why) => format!("failed to start: {why}"),
        TaskEnd::Lost(why) => format!("lost: {why}"),
        TaskEnd::AgentLost(why) => format!("agent lost: {why}"),
        TaskEnd::NotPlaced(why) => format!("not placed: {why}"),
    }
}

/// The `job:NAME@TIME` event of a run of `spec` for logical time `target_ms` that ended
/// (`Ready` for a success, `Failed` for a failure for good).
pub(super) fn run_event(spec: &JobSpec, target_ms: i64, status: EventStatus) -> ResourceEvent {
    let logical = ms_to_time(target_ms);
    let resource = job_resource(&spec.name, logical, spec.zone(), spec.granularity());
    ResourceEvent {
        status,
        ..ResourceEvent::ready(resource, Some(target_ms))
    }
}

/// Announces `event` to every shard through the bus: written to the shard's outbox in the same
/// batch as what it tells of, so a crash loses none (the outbox is sent again on start-up),
/// and sent once that batch is durable. Children learn of their parents' successes this way.
pub(super) fn announce(event: ResourceEvent, out: &mut Outbox) {
    out.ops.push(StoreOp::PutAnnouncement(event.clone()));
    out.announcements.push(event);
}
