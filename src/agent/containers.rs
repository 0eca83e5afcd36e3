//! Whether this machine's agent (the server's own, or `dron agent`) runs containers, and how:
//! `[containers]` in the server's configuration, `--containers` for `dron agent`. At start-up
//! the agent proves the engine can start a container here before it says so to the broker
//! (the `containers` attribute): a machine where it cannot gets no container jobs, and the
//! log says why, instead of every container run failing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dron_task::container::{ContainerRuntime, Engine};
use serde::Deserialize;

/// `[containers]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersConfig {
    /// `podman` or `docker`; absent: this agent runs no containers.
    pub runtime: Option<String>,
    /// The engine's program; default: the runtime's name, looked up in PATH.
    pub program: Option<PathBuf>,
    /// podman's OCI runtime (`--runtime`, e.g. `runc`); absent: podman's default, or runc
    /// when the default cannot start a container here.
    pub oci_runtime: Option<String>,
    /// Further options for every `run`, e.g. `["--security-opt", "label=disable"]`.
    pub run_options: Vec<String>,
}

impl ContainersConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(runtime) = &self.runtime {
            anyhow::ensure!(
                Engine::parse(runtime).is_some(),
                "containers.runtime must be \"podman\" or \"docker\", not {runtime:?}"
            );
        }
        Ok(())
    }

    /// How this agent runs containers, once proven to work here (`scratch`: a directory of
    /// the agent's for the probe's files); None when containers are off or cannot run. Blocks
    /// for the probe (about a second).
    pub fn detect(&self, scratch: &Path) -> Option<ContainerRuntime> {
        let engine = Engine::parse(self.runtime.as_deref()?)?;
        let mut runtime = ContainerRuntime {
            engine,
            program: self.program.clone().unwrap_or(engine.name().into()),
            run_options: self.run_options.clone(),
        };
        if let Some(oci) = &self.oci_runtime {
            runtime
                .run_options
                .splice(0..0, ["--runtime".into(), oci.clone()]);
        }
        let program = runtime.program.display().to_string();
        let error = match probe(&runtime, scratch) {
            Ok(()) => {
                tracing::info!(engine = engine.name(), %program, options = ?runtime.run_options,
                    "containers: this agent runs container jobs");
                return Some(runtime);
            }
            Err(error) => error,
        };
        // Where podman's default OCI runtime (crun, say) fails, runc often works.
        if engine == Engine::Podman && self.oci_runtime.is_none() && in_path("runc") {
            let mut with_runc = runtime.clone();
            with_runc
                .run_options
                .splice(0..0, ["--runtime".into(), "runc".into()]);
            if probe(&with_runc, scratch).is_ok() {
                tracing::warn!(%error, "containers: podman's default OCI runtime cannot start a \
                    container here; using runc (set containers.oci_runtime to choose)");
                return Some(with_runc);
            }
        }
        tracing::error!(engine = engine.name(), %program, %error,
            "containers: cannot start a container here, so this agent takes no container jobs");
        None
    }
}

/// Starts the pieces of a container without an image: podman creates one on an empty root
/// filesystem with the options and the kind of limits tasks get and has its OCI runtime set
/// it up (`init`: namespaces, cgroups, rlimits; the process is never started), then removes
/// it. Docker has no image-less containers: its daemon must answer.
fn probe(runtime: &ContainerRuntime, scratch: &Path) -> Result<(), String> {
    if runtime.engine == Engine::Docker {
        return engine(runtime, &["version".into()]);
    }
    let name = format!("dron-probe-{}", std::process::id());
    let rootfs = scratch.join(&name);
    // The OCI runtime checks at set-up that the program exists and is executable; an empty
    // file is never run (the container is removed before it starts).
    let program = rootfs.join("probe");
    let created = std::fs::create_dir_all(&rootfs).and_then(|()| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&program)
            .map(drop)
    });
    created.map_err(|e| format!("cannot create {}: {e}", program.display()))?;
    let mut create: Vec<String> = ["create", "--name", name.as_str(), "--network", "none"]
        .map(String::from)
        .to_vec();
    create.extend(runtime.run_options.iter().cloned());
    create.extend(dron_shim::container::ulimits());
    create.extend(["--memory=67108864".into(), "--cpus=0.1".into()]);
    create.extend([
        "--rootfs".into(),
        rootfs.display().to_string(),
        "/probe".into(),
    ]);
    let remove = runtime.engine.remove_args(&name);
    let _ = engine(runtime, &remove); // one left by a probe killed halfway
    let result = engine(runtime, &create).and_then(|()| engine(runtime, &["init".into(), name]));
    let _ = engine(runtime, &remove);
    let _ = std::fs::remove_dir_all(&rootfs);
    result
}

/// Runs the engine with `args`; its error's last line when it fails.
fn engine(runtime: &ContainerRuntime, args: &[String]) -> Result<(), String> {
    let output = Command::new(&runtime.program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", runtime.program.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().map(str::trim).rfind(|l| !l.is_empty());
    Err(format!(
        "`{} {}` failed ({}): {}",
        runtime.program.display(),
        args.first().map(String::as_str).unwrap_or_default(),
        output.status,
        last.unwrap_or("no error message")
    ))
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
