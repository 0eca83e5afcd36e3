//! Command-line interface: `dron serve`, the client commands (`dron job ...`, `dron runs`,
//! `dron backfill`, `dron rerun`,
//! `dron shards ...`, `dron logs`, `dron next`, `dron sync`, `dron why`, `dron resource`,
//! `dron notifications`, `dron agents`, `dron agent-token`, `dron cluster`, `dron gc`,
//! `dron backup`) talking to a running server over HTTP, `dron agent` (a remote agent),
//! `dron restore` (offline), `dron completions` (shell completion scripts), and the hidden
//! `dron task-shim` and `dron task-launcher`.

mod agent_tokens;
mod agents;
mod backfill;
mod client;
mod cluster;
mod job;
mod logs;
mod maintenance;
mod next;
mod notifications;
mod resources;
mod runs;
mod shards;
mod sync;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::logging::LogFormat;
use agent_tokens::AgentTokenAction;
use client::{Client, Remote, finish};
use job::JobAction;
use notifications::NotificationsAction;
use resources::ResourceAction;
use shards::ShardsAction;

/// `dron --version`: the package version and the commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DRON_BUILD_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "dron",
    version = VERSION,
    about = "A distributed, fault-tolerant job scheduler speaking the Chronos API"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler server.
    Serve {
        /// Configuration file (TOML); see config/dron.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Shards of a new data directory.
        #[arg(long)]
        shards: Option<u32>,
        /// Consume and publish resource events through RabbitMQ at this URL
        /// (e.g. amqp://guest:guest@127.0.0.1:5672/%2f).
        #[arg(long)]
        amqp: Option<String>,
        /// This server's id in a cluster: one of the ids in --peers.
        #[arg(long)]
        node_id: Option<u64>,
        /// Every server of the cluster, this one included, as ID=URL pairs: each URL is that
        /// server's HTTP address, e.g. 1=http://10.0.0.1:4400,2=http://10.0.0.2:4400,3=...
        /// Without it, a single server.
        #[arg(long, value_parser = crate::config::parse_peers)]
        peers: Option<std::collections::BTreeMap<u64, String>>,
        /// A file holding the secret the cluster's servers share (at least 16 bytes).
        #[arg(long)]
        cluster_secret_file: Option<PathBuf>,
        /// A new server for a running cluster: wait to be added (`dron cluster add-node ID
        /// ADDRESS` on the cluster) instead of founding a cluster; --peers is not needed.
        #[arg(long)]
        join: bool,
        /// Serve a non-loopback address without [auth] (refused otherwise): anyone who
        /// reaches it can run commands. See docs/security.md.
        #[arg(long)]
        insecure_no_auth: bool,
        /// Serve HTTPS (and wss:// to agents) with this certificate chain, PEM; needs
        /// --tls-key. Default: the config's [tls] cert, else plain HTTP.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key, PEM (PKCS#8).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The CA certificate(s), PEM, this server trusts when it calls the cluster's other
        /// servers over https:// (default: the config's [tls] ca, else the system's CAs).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A file holding the key this server proves its epoch with to agents over plain
        /// ws:// (default: the config's [agents] epoch_key_file).
        #[arg(long)]
        agent_epoch_key_file: Option<PathBuf>,
        /// Log lines as text (colour only on a terminal, never with NO_COLOR) or JSON lines
        /// (the run's job, task and shard under "span"); default: the config's log_format.
        #[arg(long, env = "DRON_LOG_FORMAT")]
        log_format: Option<LogFormat>,
    },
    /// Add, list, show, run, kill or delete jobs on a running server.
    Job {
        #[command(subcommand)]
        action: JobAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a scheduled job over past logical times (with `--downstream`, the jobs depending
    /// on it too), or list, show or cancel backfills.
    #[command(args_conflicts_with_subcommands = true)]
    Backfill {
        #[command(subcommand)]
        action: Option<backfill::BackfillAction>,
        #[command(flatten)]
        start: backfill::StartBackfill,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a job again for one logical time (a target of `dron runs JOB`).
    Rerun {
        job: String,
        /// The run's logical time (RFC 3339, or Unix ms).
        target: String,
        /// Also run the jobs downstream of it for that time, each after its upstream.
        #[arg(long)]
        downstream: bool,
        /// Wait until it has finished.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a job's runs, newest first, skipped targets included.
    Runs {
        name: String,
        /// At most this many entries (the server's default is 100, its maximum 10,000).
        #[arg(long)]
        limit: Option<u32>,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the output of a job's newest run (or of one task).
    Logs {
        name: String,
        /// The task id of the attempt (a `taskId` of `dron runs NAME --json`); default: the newest run.
        #[arg(long)]
        task: Option<String>,
        /// Print the task's stderr instead of its stdout.
        #[arg(long)]
        stderr: bool,
        /// Keep printing output as it comes until the task ends.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a job's next targets, in UTC and in its time zone.
    Next {
        name: String,
        /// How many targets (the server's default is 10, its maximum 1,000).
        #[arg(short = 'n', long = "count")]
        n: Option<u32>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show what a job's live instances still wait for (resources, parents).
    Why {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a resource's lineage, or announce that it is ready.
    Resource {
        #[command(subcommand)]
        action: ResourceAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// List recent failure notices and how their mails and webhooks fared, or send a test.
    Notifications {
        #[command(subcommand)]
        action: NotificationsAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make the server's jobs match a directory of Chronos job files (`*.json`, one job each).
    Sync {
        dir: PathBuf,
        /// Also delete the server's jobs that have no file in DIR.
        #[arg(long)]
        prune: bool,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show or change the shard count of a running server.
    Shards {
        #[command(subcommand)]
        action: ShardsAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a remote agent: offer this machine's resources to a server and run its tasks.
    Agent {
        /// The server's URL; for a cluster, its servers' URLs, comma-separated (the agent
        /// finds the leader among them).
        #[arg(
            long,
            env = "DRON_URL",
            default_value = "http://127.0.0.1:4400",
            value_delimiter = ','
        )]
        server: Vec<String>,
        /// A file holding this agent's credential (`dron agent-token create NAME` prints
        /// one); the agent's name is the credential's. Without it, only a server without
        /// [auth] on a loopback address (or run with --insecure-no-auth) accepts the agent.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The CA certificate(s), PEM, that signed the servers' certificates, for https://
        /// servers; trusted instead of the system's CAs.
        #[arg(long, env = "DRON_CA_FILE")]
        ca_file: Option<PathBuf>,
        /// A file holding the key the servers prove their epoch with (their [agents]
        /// epoch_key_file): over plain http:// a new server epoch is believed only with that
        /// proof. See docs/security.md.
        #[arg(long)]
        epoch_key_file: Option<PathBuf>,
        /// Unique among the server's agents; default: the credential's name, else this
        /// machine's hostname.
        #[arg(long)]
        name: Option<String>,
        /// Cores offered (default: all of this machine's).
        #[arg(long)]
        cpus: Option<f64>,
        /// Memory offered, MB (default: this machine's total).
        #[arg(long)]
        mem: Option<f64>,
        /// Disk offered, MB (default: what is free under --work-dir).
        #[arg(long)]
        disk: Option<f64>,
        /// Attributes for job constraints, e.g. `rack=r1,zone=eu-west`.
        #[arg(long, default_value = "", value_parser = crate::agent::parse_attributes)]
        attributes: std::collections::BTreeMap<String, String>,
        /// Where the agent keeps its identity, its tasks and their run directories.
        #[arg(long, default_value = "./dron-agent")]
        work_dir: PathBuf,
        /// Run jobs with a `container` with this engine: podman or docker (it must be able to
        /// start a container here; the agent checks at start-up).
        #[arg(long, value_parser = ["podman", "docker"])]
        containers: Option<String>,
        /// podman's OCI runtime, e.g. runc (default: podman's, or runc when that fails).
        #[arg(long, requires = "containers")]
        oci_runtime: Option<String>,
        /// Run directories kept per job whatever their age (as the server's retention.keep_runs).
        #[arg(long, default_value_t = 100)]
        keep_runs: usize,
        /// Older run directories (by target, ISO 8601) beyond --keep-runs are deleted.
        #[arg(long, default_value = "P7D", value_parser = positive_duration)]
        max_age: i64,
        /// How often old run directories are looked for (ISO 8601).
        #[arg(long, default_value = "PT1M", value_parser = positive_duration)]
        prune_every: i64,
        /// Log lines as text (colour only on a terminal, never with NO_COLOR) or JSON lines.
        #[arg(long, env = "DRON_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Make, revoke or list remote agents' credentials.
    AgentToken {
        #[command(subcommand)]
        action: AgentTokenAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the server's agents: offered, used and free resources, state, last heartbeat.
    Agents {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show the cluster: which server leads, in which term, and each server's role and lag;
    /// add or remove a server.
    Cluster {
        #[command(subcommand)]
        action: Option<cluster::ClusterAction>,
        /// Print the server's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a retention pass on the server now, or show what one would delete.
    Gc {
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the server's JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Back up every store of a running server into DIR, on the server's machine.
    Backup {
        /// A new or empty directory (a relative path is taken from here).
        dir: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Prepare a data directory from a backup (offline; then `dron serve --data-dir D`).
    Restore {
        /// The backup (made by `dron backup`).
        dir: PathBuf,
        /// The data directory to create: new or empty.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print a completion script for a shell, e.g. `dron completions bash >
    /// /etc/bash_completion.d/dron` (see docs/cli.md for each shell).
    Completions { shell: clap_complete::Shell },
    /// Run one task and record its end (started by the server for each task).
    #[command(hide = true)]
    TaskShim { run_dir: PathBuf },
    /// Fork task shims on the agent's requests (started by the server or agent, stdin its socket).
    #[command(hide = true)]
    TaskLauncher,
}

/// Runs the command line; answers the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::TaskShim { run_dir } => Ok(dron_actors::agent::shim::run_shim_main(&run_dir)),
        Command::TaskLauncher => Ok(dron_actors::agent::launcher::run_launcher_main()),
        Command::Serve {
            config,
            data_dir,
            listen,
            shards,
            amqp,
            node_id,
            peers,
            cluster_secret_file,
            join,
            insecure_no_auth,
            tls_cert,
            tls_key,
            ca_file,
            agent_epoch_key_file,
            log_format,
        } => {
            let mut config = Config::load(config.as_deref())?;
            config.log_format = log_format.unwrap_or(config.log_format);
            crate::logging::init(config.log_format);
            config.data_dir = data_dir.unwrap_or(config.data_dir);
            config.listen = listen.unwrap_or(config.listen);
            config.shards = shards.unwrap_or(config.shards);
            config.events.amqp_url = amqp.or(config.events.amqp_url);
            config.insecure_no_auth |= insecure_no_auth;
            config.tls.cert = tls_cert.or(config.tls.cert.take());
            config.tls.key = tls_key.or(config.tls.key.take());
            config.tls.ca = ca_file.or(config.tls.ca.take());
            config.agents.epoch_key_file =
                agent_epoch_key_file.or(config.agents.epoch_key_file.take());
            anyhow::ensure!(config.shards >= 1, "--shards must be at least 1");
            let cluster = &mut config.cluster;
            cluster.node_id = node_id.or(cluster.node_id);
            cluster.peers = peers.unwrap_or(std::mem::take(&mut cluster.peers));
            cluster.secret_file = cluster_secret_file.or(cluster.secret_file.take());
            cluster.join |= join;
            config.settle()?;
            runtime()?.block_on(crate::server::serve(config))?;
            Ok(0)
        }
        Command::Agent {
            server,
            token_file,
            ca_file,
            epoch_key_file,
            name,
            cpus,
            mem,
            disk,
            attributes,
            work_dir,
            containers,
            oci_runtime,
            keep_runs,
            max_age,
            prune_every,
            log_format,
        } => {
            crate::logging::init(log_format);
            let (token, name) = crate::agent::credential::read_for(token_file.as_deref(), name)?;
            let options = crate::agent::AgentOptions {
                servers: server,
                token,
                ca_file,
                epoch_key_file,
                name: name.unwrap_or_else(hostname),
                cpus,
                mem,
                disk,
                attributes,
                work_dir,
                containers: crate::agent::containers::ContainersConfig {
                    runtime: containers,
                    oci_runtime,
                    ..Default::default()
                },
                retention: crate::agent::retention::RunRetention {
                    keep_runs,
                    max_age_ms: max_age,
                    every: std::time::Duration::from_millis(prune_every as u64),
                },
            };
            runtime()?.block_on(crate::agent::run(options))?;
            Ok(0)
        }
        Command::AgentToken { action, remote } => remote_command(&remote, |client| async move {
            agent_tokens::agent_token(&client, action).await
        }),
        Command::Agents { json, remote } => remote_command(&remote, |client| async move {
            agents::agents(&client, json).await
        }),
        Command::Cluster {
            action,
            json,
            remote,
        } => remote_command(&remote, |client| async move {
            cluster::cluster(&client, action, json).await
        }),
        Command::Job { action, remote } => {
            remote_command(
                &remote,
                |client| async move { job::job(&client, action).await },
            )
        }
        Command::Backfill {
            action,
            start,
            remote,
        } => remote_command(&remote, |client| async move {
            backfill::backfill(&client, action, start).await
        }),
        Command::Rerun {
            job,
            target,
            downstream,
            follow,
            remote,
        } => remote_command(&remote, |client| async move {
            backfill::rerun(&client, &job, &target, downstream, follow).await
        }),
        Command::Runs {
            name,
            limit,
            json,
            remote,
        } => remote_command(&remote, |client| async move {
            runs::runs(&client, &name, limit, json).await
        }),
        Command::Logs {
            name,
            task,
            stderr,
            follow,
            remote,
        } => remote_command(&remote, |client| async move {
            logs::logs(&client, &name, task, stderr, follow).await
        }),
        Command::Next { name, n, remote } => remote_command(&remote, |client| async move {
            next::next(&client, &name, n).await
        }),
        Command::Why { name, remote } => remote_command(&remote, |client| async move {
            resources::why(&client, &name).await
        }),
        Command::Resource { action, remote } => remote_command(&remote, |client| async move {
            resources::resource(&client, action).await
        }),
        Command::Notifications { action, remote } => remote_command(&remote, |client| async move {
            notifications::notifications(&client, action).await
        }),
        Command::Sync {
            dir,
            prune,
            dry_run,
            remote,
        } => remote_command(&remote, |client| async move {
            sync::sync(&client, &dir, prune, dry_run).await
        }),
        Command::Shards { action, remote } => remote_command(&remote, |client| async move {
            shards::shards(&client, action).await
        }),
        Command::Gc {
            dry_run,
            json,
            remote,
        } => remote_command(&remote, |client| async move {
            maintenance::gc(&client, dry_run, json).await
        }),
        Command::Backup { dir, remote } => remote_command(&remote, |client| async move {
            maintenance::backup(&client, &dir).await
        }),
        Command::Restore { dir, data_dir } => Ok(finish(maintenance::restore(&dir, &data_dir))),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "dron", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// An ISO 8601 duration longer than zero, in milliseconds.
fn positive_duration(text: &str) -> Result<i64, String> {
    match dron_model::job::parse_duration_ms(text)? {
        ms if ms > 0 => Ok(ms),
        _ => Err("must be longer than zero".into()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "agent".to_string())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs a client command on a fresh runtime; prints its failure; answers the exit code.
fn remote_command<F, Fut>(remote: &Remote, command: F) -> anyhow::Result<i32>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = client::Outcome>,
{
    let client = match Client::new(remote) {
        Ok(client) => client,
        Err(failure) => return Ok(finish(Err(failure))),
    };
    Ok(finish(runtime()?.block_on(command(client))))
}
