//! Tasks that run in a container. The shim stays their supervisor: it makes sure the image is
//! there (pulling it if need be, so that an image that cannot be had fails the run with that
//! reason), then runs `podman run --rm --name dron-<task> … IMAGE …` (or docker's) in the
//! foreground as the task. Output, exit code, timeouts and kills then work as for a plain
//! command: the engine's process is the task. Killing it does not stop the container (its
//! monitor, conmon or containerd, runs apart), so when it ends by a signal the shim removes the
//! container by its name before it records the end.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use dron_task::container::{ContainerRuntime, ContainerTask, container_name};
use dron_task::{TASK_FILE, TaskCommand, TaskSpec};

/// What `podman run` / `docker run` exit with when the engine itself failed (not the task).
const ENGINE_FAILED: i32 = 125;
/// How much of the engine's error a run's message keeps.
const ERROR_CHARS: usize = 400;

/// A container task about to start: its runtime and its container's name.
pub struct ContainerRun<'a> {
    pub task: &'a ContainerTask,
    pub runtime: &'a ContainerRuntime,
    pub name: String,
}

impl<'a> ContainerRun<'a> {
    /// The container part of `spec`, if any; an error when the agent cannot run containers.
    pub fn of(spec: &'a TaskSpec) -> Result<Option<ContainerRun<'a>>, String> {
        let Some(task) = &spec.container else {
            return Ok(None);
        };
        let Some(runtime) = &task.runtime else {
            return Err("this agent cannot run containers (it has no [containers] runtime)".into());
        };
        Ok(Some(ContainerRun {
            task: task.as_ref(),
            runtime,
            name: container_name(&spec.task_id),
        }))
    }

    /// Makes sure the image is on this machine: pulled when it is missing, or always with
    /// `forcePullImage`. Blocks for as long as the pull takes.
    pub fn ensure_image(&self) -> Result<(), String> {
        let image = &self.task.container.image;
        if !self.task.container.force_pull_image && self.has_image(image) {
            return Ok(());
        }
        let pulled = self
            .engine()
            .args(["pull", image.as_str()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.cannot_start(e))?;
        if pulled.status.success() {
            return Ok(());
        }
        Err(format!(
            "cannot pull image '{image}': {}",
            last_line(&pulled.stderr)
        ))
    }

    fn has_image(&self, image: &str) -> bool {
        self.engine()
            .args(["image", "inspect", image])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn engine(&self) -> Command {
        Command::new(&self.runtime.program)
    }

    pub fn cannot_start(&self, e: io::Error) -> String {
        let program = self.runtime.program.display();
        match e.kind() {
            io::ErrorKind::NotFound => format!("container engine not found: {program}"),
            _ => format!("cannot start {program}: {e}"),
        }
    }

    /// The engine's program and the `run` arguments for `spec`'s command.
    pub fn command(&self, spec: &TaskSpec) -> Result<Command, String> {
        let mut cmd = self.engine();
        cmd.args(self.run_args(spec)?);
        Ok(cmd)
    }

    /// `run --rm --name … [agent's options] [limits] [volumes] [env] [parameters] IMAGE CMD`.
    /// The job's variables are named only (`--env NAME`): their values reach the engine in its
    /// environment, not on a command line every local user can read.
    pub fn run_args(&self, spec: &TaskSpec) -> Result<Vec<String>, String> {
        let container = &self.task.container;
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--name",
            self.name.as_str(),
            "--pull",
            "never",
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--label".into(), format!("dron.task={}", spec.task_id)]);
        // Output reaches us through the attached engine; a log file would only copy it.
        args.extend(["--log-driver".into(), "none".into()]);
        args.extend(["--network".into(), container.network.option().into()]);
        args.extend(self.runtime.run_options.iter().cloned());
        args.extend(ulimits());
        if self.task.cpus > 0.0 {
            args.push(format!("--cpus={}", self.task.cpus));
        }
        if self.task.mem_mb > 0.0 {
            let bytes = (self.task.mem_mb * 1024.0 * 1024.0).round() as u64;
            // No swap beyond the limit: `mem` is what the task may use.
            args.push(format!("--memory={bytes}"));
            args.push(format!("--memory-swap={bytes}"));
        }
        for volume in &container.volumes {
            let mode = if volume.read_only { "ro" } else { "rw" };
            let spec = match &volume.host_path {
                Some(host) => format!("{host}:{}:{mode}", volume.container_path),
                None => volume.container_path.clone(),
            };
            args.extend(["--volume".into(), spec]);
        }
        for (name, _) in &spec.env {
            args.extend(["--env".into(), name.clone()]);
        }
        for (key, value) in &container.parameters {
            args.push(format!("--{key}={value}"));
        }
        match &spec.command {
            // As Mesos ran a shell command in a docker image: `/bin/sh -c` inside it.
            TaskCommand::Shell(script) => {
                args.extend(["--entrypoint".into(), "/bin/sh".into()]);
                args.push(container.image.clone());
                args.extend(["-c".into(), script.clone()]);
            }
            // The image's entrypoint, with the command and arguments as its arguments.
            TaskCommand::Argv(argv) => {
                args.push(container.image.clone());
                args.extend(argv.iter().cloned());
            }
            TaskCommand::Sleep { .. } => return Err("a built-in task has no process".into()),
        }
        Ok(args)
    }

    /// Whether the container may outlive the engine's process that ended this way: killed (a
    /// timeout, a kill), or the engine failed partway.
    pub fn may_remain(exit_code: Option<i32>) -> bool {
        exit_code.is_none_or(|code| code == ENGINE_FAILED)
    }

    /// Removes the container now, killing what still runs in it. Done when it is already gone.
    pub fn remove(&self) {
        let _ = self
            .engine()
            .args(self.runtime.engine.remove_args(&self.name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes the container of the run in `run_dir`, if it ran in one: its shim is gone without
/// recording an end (killed -9, say), so nothing watches or would remove it. Blocking.
pub fn remove_orphaned(run_dir: &Path) {
    let Ok(bytes) = std::fs::read(run_dir.join(TASK_FILE)) else {
        return;
    };
    let Ok(spec) = serde_json::from_slice::<TaskSpec>(&bytes) else {
        return;
    };
    if let Ok(Some(container)) = ContainerRun::of(&spec) {
        container.remove();
    }
}

/// What the engine needs of the agent's environment beside [`crate::shim::BASE_ENV`] to find
/// its socket, storage and credentials (rootless podman, a remote docker daemon). The container
/// itself gets none of it: only the variables named with `--env`.
const ENGINE_ENV: [&str; 9] = [
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "CONTAINER_HOST",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "REGISTRY_AUTH_FILE",
    "TMPDIR",
];

/// The engine's part of the agent's environment, for the engine's process (the task).
pub fn engine_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    ENGINE_ENV
        .iter()
        .filter_map(|name| Some((name.into(), std::env::var_os(name)?)))
        .collect()
}

/// `--ulimit` for the open files and processes the shim may have: what a plain task would
/// inherit. Engines otherwise ask for their own defaults, which exceed the hard limits of
/// some machines (the container then fails to start: "error setting rlimits"). Processes are
/// capped at the kernel's `pid_max`, a limit no process tree can reach anyway: podman lowers
/// its own limit to it, and without CAP_SYS_RESOURCE (some VMs) a container cannot get more.
pub fn ulimits() -> Vec<String> {
    let mut args = Vec::new();
    for (name, resource) in [
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
    ] {
        // SAFETY: rlimit is plain old data; getrlimit writes it and reads nothing else.
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: `limit` is a valid, writable rlimit for the whole call.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            continue;
        }
        let cap = match resource {
            libc::RLIMIT_NPROC => pid_max(),
            _ => None,
        };
        let hard = cap.map_or(limit.rlim_max, |cap| limit.rlim_max.min(cap));
        if hard == libc::RLIM_INFINITY {
            continue; // nothing the engine's default could exceed
        }
        let soft = limit.rlim_cur.min(hard);
        args.extend(["--ulimit".into(), format!("{name}={soft}:{hard}")]);
    }
    args
}

fn pid_max() -> Option<libc::rlim_t> {
    let text = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok()?;
    text.trim().parse().ok()
}

/// The last non-empty line of an engine's error output, shortened.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or("no error message");
    line.chars().take(ERROR_CHARS).collect()
}

/// The shim adopts orphans of the task to reap them; a container's monitor (conmon)
/// double-forks and would become ours, keeping the shim, and so the run's end, waiting for
/// it. The container's processes are its monitor's to reap.
pub fn stop_adopting_orphans() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer flag; no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::container::{Container, Network, Volume};
    use dron_task::container::Engine;

    fn spec(command: TaskCommand) -> TaskSpec {
        TaskSpec {
            task_id: dron_model::ids::task_id("etl", 1_700_000_000_000, 1),
            command,
            env: vec![("SECRET".into(), "s3cr3t".into())],
            secret_env: dron_task::secret::SecretEnv::None,
            work_dir: None,
            timeout_ms: None,
            output_cap_bytes: 1024,
            container: Some(Box::new(ContainerTask {
                container: Container {
                    image: "busybox:1.36".into(),
                    volumes: vec![
                        Volume {
                            container_path: "/data".into(),
                            host_path: Some("/srv/data".into()),
                            read_only: true,
                        },
                        Volume {
                            container_path: "/scratch".into(),
                            host_path: None,
                            read_only: false,
                        },
                    ],
                    network: Network::None,
                    force_pull_image: false,
                    parameters: vec![("user".into(), "nobody".into())],
                },
                cpus: 0.5,
                mem_mb: 32.0,
                runtime: Some(ContainerRuntime {
                    engine: Engine::Podman,
                    program: "podman".into(),
                    run_options: vec!["--runtime".into(), "runc".into()],
                }),
            })),
        }
    }

    #[test]
    fn a_shell_command_runs_under_the_images_sh_with_the_jobs_limits_and_volumes() {
        let spec = spec(TaskCommand::Shell("echo $SECRET".into()));
        let run = ContainerRun::of(&spec).unwrap().unwrap();
        assert_eq!(run.name, "dron-etl-1700000000000-1");
        let args = run.run_args(&spec).unwrap().join(" ");
        let expected = [
            "run --rm --name dron-etl-1700000000000-1 --pull never",
            "--network none --runtime runc",
            "--cpus=0.5 --memory=33554432 --memory-swap=33554432",
            "--volume /srv/data:/data:ro --volume /scratch --env SECRET --user=nobody",
            "--entrypoint /bin/sh busybox:1.36 -c echo $SECRET",
        ];
        for part in expected {
            assert!(args.contains(part), "{part} not in {args}");
        }
        assert!(
            !args.contains("s3cr3t"),
            "a variable's value on the command line"
        );
    }

    #[test]
    fn argv_is_given_to_the_images_entrypoint() {
        let argv = ["python", "-c", "print(1)"].map(String::from).to_vec();
        let spec = spec(TaskCommand::Argv(argv));
        let run = ContainerRun::of(&spec).unwrap().unwrap();
        let args = run.run_args(&spec).unwrap();
        assert!(!args.contains(&"--entrypoint".to_string()));
        assert_eq!(
            args[args.len() - 4..],
            ["busybox:1.36", "python", "-c", "print(1)"]
        );
    }

    #[test]
    fn an_agent_without_a_runtime_cannot_run_it() {
        let mut spec = spec(TaskCommand::Shell("true".into()));
        spec.container.as_mut().unwrap().runtime = None;
        let error = ContainerRun::of(&spec).err().unwrap();
        assert!(error.contains("cannot run containers"), "{error}");
    }

    #[test]
    fn the_engines_error_is_its_last_line() {
        assert_eq!(
            last_line(b"Trying...\nError: image not known\n\n"),
            "Error: image not known"
        );
    }
}
