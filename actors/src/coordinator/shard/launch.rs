//! What the broker gets for an attempt: the task to run and what placing it needs. The one
//! place the shard builds the task contract (`TaskSpec`, `TaskCommand`), so it can move with
//! that contract.

use std::sync::Arc;

use dron_model::demand::{Resources, TaskDemand};
use dron_model::instance::{InstanceRecord, RunCause};
use dron_model::job::{EnvironmentVariable, JobSpec};

use super::{Shard, ms_to_time};
use crate::broker::LaunchRequest;
use dron_task::container::ContainerTask;
use dron_task::secret::SecretEnv;
use dron_task::{TaskCommand, TaskSpec};

impl Shard {
    /// The attempt's task, with what the broker needs to place it.
    pub(super) fn launch_request(&self, instance: &InstanceRecord) -> LaunchRequest {
        let entry = &self.jobs[instance.job.as_str()];
        let spec = &entry.record.spec;
        // Epsilon bounds how late a target may start, not when a retry after a failure may.
        let first_try = instance.failed_attempts() == 0 && instance.cause.bound_by_epsilon();
        let due = instance.ready_ms.unwrap_or(instance.target_ms);
        LaunchRequest {
            spec: self.task_spec(instance),
            demand: entry.demand.clone(),
            owner: spec.owner.clone(),
            start_deadline_ms: first_try.then(|| due + spec.epsilon_ms),
            backfill: instance.cause == RunCause::Backfill,
        }
    }

    fn task_spec(&self, instance: &InstanceRecord) -> TaskSpec {
        let spec = &self.jobs[instance.job.as_str()].record.spec;
        let task_id = instance.task_id();
        let command = if let Some(ms) = spec.builtin_sleep_ms {
            // No process, so no environment to build (formatting its target alone was ~1 % of
            // the server at 16,000 built-in runs/s).
            return TaskSpec {
                task_id,
                command: TaskCommand::Sleep { ms },
                env: Vec::new(),
                secret_env: SecretEnv::None,
                work_dir: None,
                timeout_ms: spec.timeout_ms,
                output_cap_bytes: self.config.output_cap_bytes,
                container: None,
            };
        } else if spec.shell {
            TaskCommand::Shell(spec.command.clone())
        } else {
            TaskCommand::Argv(
                std::iter::once(spec.command.clone())
                    .chain(spec.arguments.clone())
                    .collect(),
            )
        };
        // Secret variables travel apart, to be sealed in the run directory (dron_task::secret).
        let (secret, plain): (Vec<_>, Vec<_>) = spec.environment.iter().partition(|v| v.secret);
        let pair = |v: &&EnvironmentVariable| (v.name.clone(), v.value.clone());
        let mut env: Vec<(String, String)> = plain.iter().map(pair).collect();
        let secret_env = match secret.is_empty() {
            true => SecretEnv::None,
            false => SecretEnv::Plain(secret.iter().map(pair).collect()),
        };
        let target =
            ms_to_time(instance.target_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        env.extend([
            ("DRON_JOB".to_string(), spec.name.clone()),
            ("DRON_TASK_ID".to_string(), task_id.clone()),
            ("DRON_TARGET".to_string(), target),
            ("DRON_ATTEMPT".to_string(), instance.attempt.to_string()),
            ("mesos_task_id".to_string(), task_id.clone()),
        ]);
        TaskSpec {
            task_id,
            command,
            env,
            secret_env,
            work_dir: None,
            timeout_ms: spec.timeout_ms,
            output_cap_bytes: self.config.output_cap_bytes,
            container: container_task(&self.jobs[instance.job.as_str()].demand),
        }
    }
}

/// A container job's container, with its `cpus` and `mem` as the container's limits; the agent
/// that takes the task says how it runs containers.
fn container_task(demand: &TaskDemand) -> Option<Box<ContainerTask>> {
    Some(Box::new(ContainerTask {
        container: demand.container.clone()?,
        cpus: demand.resources.cpus,
        mem_mb: demand.resources.mem,
        runtime: None,
    }))
}

/// Whether an agent is the server's own (local runs record their agent with their end, see
/// `started_on` in `status.rs`).
pub(super) fn is_local_agent(agent: &str) -> bool {
    agent == dron_task::LOCAL_AGENT
}

/// A job's demand on agents. Built-in tasks start no process: they take no resources (so
/// load tests measure the scheduler), but keep their constraints.
pub(super) fn job_demand(spec: &JobSpec) -> Arc<TaskDemand> {
    let mut demand = TaskDemand::from_json(&spec.extra_json).unwrap_or_default();
    if spec.builtin_sleep_ms.is_some() {
        demand.resources = Resources::default();
    }
    // Most jobs ask for the defaults: they share one demand rather than hold a copy each.
    static DEFAULT: std::sync::LazyLock<Arc<TaskDemand>> = std::sync::LazyLock::new(Arc::default);
    match demand == **DEFAULT {
        true => DEFAULT.clone(),
        false => Arc::new(demand),
    }
}
