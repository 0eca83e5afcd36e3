//! `dron agent`: a remote agent. It runs the same local agent as the server (tasks under the
//! shim, in their own process group, output captured), offers this machine's resources to a
//! server over a WebSocket, and reports every task's status until the server acknowledges it.
//!
//! - [`containers`]: whether and how this machine runs container jobs (podman or docker).
//! - [`credential`]: the agent's credential (`NAME.SECRET`), made by the server.
//! - [`epoch`]: which server epochs the agent believes (proved by TLS or an epoch key).
//! - [`link`]: the connection to the server: registration, heartbeats, commands, statuses.
//! - [`work_dir`]: what the agent keeps on disk to survive its own restart.
//! - [`machine`]: this machine's size, the default offer.
//! - [`output`]: runs' output read here for the server's API.
//! - [`retention`]: old run directories deleted here.

pub mod containers;
pub mod credential;
pub mod epoch;
mod link;
pub mod machine;
mod output;
pub mod retention;
mod work_dir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use dron_actors::agent::{AgentMsg, LocalAgent, LocalAgentArgs, ReportFn};
use dron_model::demand::Resources;
use ractor::Actor;
use tokio::sync::mpsc;

use work_dir::WorkDir;
pub use work_dir::write_synced;

pub struct AgentOptions {
    /// The server's base URL, e.g. `http://10.0.0.5:4400`; for a cluster, its servers' (the
    /// agent finds the leader among them).
    pub servers: Vec<String>,
    /// Its credential (`NAME.SECRET`), sent as a bearer token; None: a server that trusts its
    /// network may take the agent without one.
    pub token: Option<String>,
    /// The CA that signed the servers' certificates (`--ca-file`); None: the system's.
    pub ca_file: Option<PathBuf>,
    /// The key servers prove their epochs with over plain ws:// (`--epoch-key-file`).
    pub epoch_key_file: Option<PathBuf>,
    pub name: String,
    /// What the agent offers; None: the machine's size.
    pub cpus: Option<f64>,
    pub mem: Option<f64>,
    pub disk: Option<f64>,
    pub attributes: BTreeMap<String, String>,
    pub work_dir: PathBuf,
    /// Whether and how it runs jobs with a `container`.
    pub containers: containers::ContainersConfig,
    /// Which run directories it keeps.
    pub retention: retention::RunRetention,
}

/// Runs the agent until SIGTERM or Ctrl-C. Tasks keep running under their shims when it
/// stops; the next start adopts them.
pub async fn run(options: AgentOptions) -> anyhow::Result<()> {
    let servers = link::Servers::new(options.servers.clone())?;
    let trust = link::Trust {
        ca: crate::tls::TrustedCa::load_optional(options.ca_file.as_deref())?,
        epoch_key: options
            .epoch_key_file
            .as_deref()
            .map(epoch::EpochKey::load)
            .transpose()?,
    };
    let dir = WorkDir::open(&options.work_dir)?;
    let machine = machine::machine_resources(&options.work_dir);
    let resources = Resources::new(
        options.cpus.unwrap_or(machine.cpus),
        options.mem.unwrap_or(machine.mem),
        options.disk.unwrap_or(machine.disk),
    );
    let (updates_tx, updates) = mpsc::unbounded_channel();
    let report: ReportFn = Arc::new(move |update| {
        let _ = updates_tx.send(update);
    });
    let containers = options.containers.detect(&options.work_dir);
    let mut attributes = options.attributes.clone();
    attributes.extend(dron_actors::broker::containers_attribute(
        containers.as_ref(),
    ));
    let args = LocalAgentArgs {
        containers,
        name: options.name.clone(),
        shim_program: crate::server::shim_program()?,
        runs_root: dir.runs_root(),
        report,
        clock: Arc::new(dron_actors::clock::SystemClock),
    };
    let (tasks, _) = Actor::spawn(Some("agent".into()), LocalAgent, args)
        .await
        .context("starting the agent")?;
    // Tasks this agent was given before it restarted: find how they ended, or watch them.
    for (task_id, timeout_deadline_ms) in dir.tasks() {
        tasks.send_message(AgentMsg::Adopt {
            task_id,
            timeout_deadline_ms,
        })?;
    }
    let pruning = {
        let tasks = WorkDir::open(&options.work_dir)?;
        let unacknowledged = move || tasks.tasks().into_iter().map(|(id, _)| id).collect();
        retention::spawn(dir.runs_root(), options.retention, unacknowledged)
    };
    let server = options.servers.join(",");
    tracing::info!(name = options.name, %resources, server, "dron agent starting");
    let identity = link::Identity {
        agent_id: dir.identity()?,
        name: options.name.clone(),
        resources,
        attributes,
    };
    let session = link::Link::new(servers, options.token, identity, dir, tasks.clone(), trust)?;
    tokio::select! {
        () = session.run(updates) => {}
        () = crate::server::shutdown_signal() => {}
    }
    pruning.abort();
    tasks.stop(Some("shutdown".into()));
    Ok(())
}

/// Parses `k=v,k2=v2`.
pub fn parse_attributes(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(format!("attribute '{pair}' is not key=value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn attributes_parse() {
        let parsed = super::parse_attributes("rack=r1, zone=eu-west").unwrap();
        assert_eq!(parsed["rack"], "r1");
        assert_eq!(parsed["zone"], "eu-west");
        assert!(super::parse_attributes("rack").is_err());
        assert!(super::parse_attributes("").unwrap().is_empty());
    }
}
