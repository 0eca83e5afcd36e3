//! A task that runs in a container: the job's `container`, the limits it gets, and the engine
//! the agent runs it with. The shim turns it into `podman run --rm --name dron-… IMAGE …`.

use std::path::PathBuf;

use dron_model::container::Container;
use dron_model::ids::parse_task_id;
use serde::{Deserialize, Serialize};

/// `task.json`'s `container`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerTask {
    pub container: Container,
    /// The job's `cpus` and `mem` (MB), passed to the container as its limits; 0: none.
    pub cpus: f64,
    pub mem_mb: f64,
    /// How the agent that runs it runs containers: filled in by that agent at launch (the
    /// server does not know where the task will run). None: the agent cannot.
    pub runtime: Option<ContainerRuntime>,
}

/// How an agent runs containers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRuntime {
    pub engine: Engine,
    /// The engine's program: `podman`, `docker`, or a path.
    pub program: PathBuf,
    /// Options the agent adds to every `run`, e.g. `--runtime runc` where podman's default
    /// OCI runtime fails.
    pub run_options: Vec<String>,
}

/// Which command line the engine speaks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Engine {
    Podman,
    Docker,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }

    /// `podman` or `docker`; None for anything else.
    pub fn parse(name: &str) -> Option<Engine> {
        match name {
            "podman" => Some(Engine::Podman),
            "docker" => Some(Engine::Docker),
            _ => None,
        }
    }

    /// The arguments that force-remove a container at once (no grace period: it is being
    /// killed, as a plain task's process group is).
    pub fn remove_args(self, name: &str) -> Vec<String> {
        let mut args = vec!["rm".to_string(), "--force".to_string()];
        if self == Engine::Podman {
            // podman waits the container's stop timeout (10 s) before SIGKILL otherwise.
            args.extend(["--time".to_string(), "0".to_string()]);
        }
        args.push(name.to_string());
        args
    }
}

/// The name of a task's container, `dron-<job>-<target ms>-<attempt>`: found again by it
/// after a restart (to be removed when its shim is gone). Task ids hold ':', which container
/// names may not.
pub fn container_name(task_id: &str) -> String {
    match parse_task_id(task_id) {
        Some(task) => format!("dron-{}-{}-{}", task.job, task.target_ms, task.attempt),
        // Not a coordinator's id (tests): keep what a name may hold.
        None => {
            let safe: String = task_id
                .chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
                    _ => '_',
                })
                .collect();
            format!("dron-{safe}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_hold_only_what_engines_accept() {
        let id = dron_model::ids::task_id("nightly.etl-2", 1_700_000_000_000, 3);
        assert_eq!(container_name(&id), "dron-nightly.etl-2-1700000000000-3");
        assert_eq!(container_name("t:1/x"), "dron-t_1_x");
    }
}
