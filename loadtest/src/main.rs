//! `dron-loadtest`: drives a dron server through its public API, reports figures, and checks
//! what actually ran. Workloads: job creation (`api`), firing (`fire`), the record-and-check
//! loop (`smoke`), Dron's benchmarks (`saturate`, `highload`), the Facebook-style load
//! (`facebook`), a million jobs (`million`), the web UI's reads with many jobs (`ui`) and a
//! Jepsen-style run under faults (`nemesis`); `check` judges the runs recorded in a runs
//! directory (see `checker` for the rules and `recorder` for the runs-file format).
//!
//! The server is one already running at `--url`, or one the tool starts itself with
//! `--dron-bin` (needed by `million`, which kills it with -9 and restarts it). `peer celery`
//! runs `saturate` or `facebook` against Celery beat and workers instead (see `peer`).

mod check;
mod checker;
mod iso8601;
mod nemesis;
mod oracle;
mod peer;
mod progress;
mod recorder;
mod scrape;
mod server;
mod stats;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use check::CheckOptions;
use nemesis::{FaultKind, NemesisOptions};
use peer::CeleryOptions;
use server::ManagedServer;
use workloads::Outcome;
use workloads::facebook::FacebookOptions;
use workloads::fire::FireOptions;
use workloads::highload::HighloadOptions;
use workloads::million::MillionOptions;
use workloads::overload::OverloadOptions;
use workloads::saturate::SaturateOptions;
use workloads::smoke::SmokeOptions;
use workloads::ui::UiOptions;

#[derive(Parser)]
#[command(
    name = "dron-loadtest",
    about = "Load generator and schedule checker for a running dron server"
)]
struct Cli {
    /// The server's URL (ignored with --dron-bin).
    #[arg(long, global = true, default_value = "http://127.0.0.1:4400")]
    url: String,
    /// The CA certificate(s), PEM, that signed an https:// --url server's certificate
    /// (trusted instead of the system's CAs).
    #[arg(long, global = true, env = "DRON_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Start this dron binary as the server under test (on a free port), instead of --url.
    #[arg(long, global = true)]
    dron_bin: Option<PathBuf>,
    /// The managed server's directory (its data and log); default a new one under /tmp.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The managed server's shards (default: the server's own default).
    #[arg(long, global = true)]
    shards: Option<u32>,
    /// Run the managed server's tasks on this many `dron agent` processes (on this machine,
    /// over loopback) instead of its local agent.
    #[arg(long, global = true, default_value_t = 0)]
    agents: usize,
    /// The server's pid, for RSS and CPU figures (default: found from the port of --url).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Job creation over HTTP: throughput and latency percentiles.
    Api {
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// An open loop instead: send a create every 1/RATE s whatever the answers, and time
        /// each from when it was due (`--concurrency` then only paces the clean-up).
        #[arg(long)]
        rate: Option<f64>,
        /// Leave the jobs on the server (e.g. to fill a cluster's state before a catch-up run).
        #[arg(long)]
        keep: bool,
    },
    /// How fast the web UI's reads answer with many jobs: the jobs table's pages and a
    /// job's graph neighbourhood, each asked `requests` times.
    Ui {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 20)]
        requests: usize,
        /// Leave the jobs on the server afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Jobs firing every second running `true`: completed runs per second. With --runs, the jobs
    /// record their runs there and the checker judges them at the end.
    Fire {
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Record runs in this directory and check them at the end (exit 1 if the check fails).
        #[arg(long)]
        runs: Option<PathBuf>,
        /// The jobs' epsilon in ms (default: the server's, 60 s).
        #[arg(long)]
        epsilon_ms: Option<i64>,
        /// How long a run may take to finish before its target is judged.
        #[arg(long, default_value_t = 5_000)]
        allowance_ms: i64,
    },
    /// A few recorded jobs of every kind, then the checker: the whole loop in one command.
    Smoke {
        /// Where the jobs record their runs (created if missing).
        #[arg(long)]
        runs: PathBuf,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 5_000)]
        epsilon_ms: i64,
        #[arg(long, default_value_t = 5_000)]
        allowance_ms: i64,
        /// Leave the jobs on the server.
        #[arg(long)]
        keep: bool,
    },
    /// Dron's scheduling-delay benchmark: add periodic jobs step by step until the p99 start
    /// delay passes the limit or targets are skipped; report the highest rate held.
    Saturate {
        /// The built-in task (no process) instead of `true` through the task shim.
        #[arg(long)]
        builtin: bool,
        #[command(flatten)]
        steps: SaturateSteps,
        /// Record the runs in this directory and measure the delays from the runs files (as
        /// `peer celery saturate` does), instead of from the server's metrics.
        #[arg(long, conflicts_with = "builtin")]
        runs: Option<PathBuf>,
    },
    /// What dron does past its ceiling: finds the rate held (saturate's steps), offers
    /// `factor` times it for `secs` seconds, then drops back and times the recovery. Last
    /// line: held, offered and started rates, RSS held and peak, recovery time.
    Overload {
        /// The built-in task (no process) instead of `true` through the task shim.
        #[arg(long)]
        builtin: bool,
        #[command(flatten)]
        steps: SaturateSteps,
        #[arg(long, default_value_t = 2.0)]
        factor: f64,
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// How long to wait for on-time fires once the load drops (else recovery_ms is null).
        #[arg(long, default_value_t = 120)]
        recovery_secs: u64,
        /// After the overload the load drops this share under the held rate. The default
        /// leaves about two-thirds of the capacity, where catching up takes seconds; at the
        /// held rate itself (0) recovery has only the margin the steps left, and at the
        /// capacity it never ends (docs/operations.md, "Overload").
        #[arg(long, default_value_t = 0.35)]
        recovery_margin: f64,
    },
    /// Dron's high-load benchmark: long-running jobs added step by step up to a number running
    /// at once; server CPU and RSS over time.
    Highload {
        #[arg(long)]
        builtin: bool,
        #[arg(long, default_value_t = 25_000)]
        step: usize,
        #[arg(long, default_value_t = 150)]
        step_secs: u64,
        #[arg(long, default_value_t = 150_000)]
        max_running: usize,
        #[arg(long, default_value_t = 600)]
        run_secs: u64,
    },
    /// The Facebook-style load: long-running instances kept live, minute jobs bringing new
    /// instances at a steady rate, all real processes; then the checker.
    Facebook(FacebookArgs),
    /// A million jobs: creation rate, RSS per job, data size, restart to health and to the
    /// first on-time fire after a kill -9. Needs --dron-bin.
    Million {
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
    },
    /// Checks the runs recorded in a runs directory against the jobs the server lists: every
    /// target run once inside its epsilon window, dependent jobs after their parents. Exits 1
    /// when a target was missed or run twice (or a dependency or an acknowledged job was lost).
    /// Targets are computed for UTC ISO 8601 intervals only; other schedules (cron, other time
    /// zones, months or years) are reported NOT CHECKED.
    Check {
        #[arg(long)]
        runs: PathBuf,
        /// Only jobs whose name starts with this.
        #[arg(long)]
        jobs_prefix: Option<String>,
        /// How long a run may take to finish before its target is judged.
        #[arg(long, default_value_t = 5_000)]
        allowance_ms: i64,
        /// Creation time (RFC 3339) for jobs without a `created` line in the runs directory;
        /// default: the earliest time recorded there.
        #[arg(long, value_parser = parse_rfc3339_ms)]
        since: Option<i64>,
        /// Read the jobs from this file (a JSON array of Chronos jobs) instead of the server:
        /// for a peer scheduler, which has no Chronos API.
        #[arg(long)]
        jobs_file: Option<PathBuf>,
    },
    /// A Jepsen-style run (issue 20): one or three servers and three agents, each in its own
    /// network namespace (needs root), Jepsen's Chronos workload plus dependent, resource-
    /// waiting and triggered jobs, and faults one after another; then every target judged
    /// against the fault timeline. Needs --dron-bin; uses the machine's RabbitMQ.
    Nemesis {
        #[arg(long, default_value_t = 120)]
        duration: u64,
        /// Seeds the workload and the fault schedule (the same seed, the same run).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Comma-separated faults: kill, pause, amqp, agent-kill, agent-partition,
        /// leader-kill, leader-pause, leader-partition, clock-step, disk-full (default: all
        /// but amqp, clock-step (it needs libfaketime) and disk-full, and the leader's only
        /// with 3 servers).
        #[arg(long, value_delimiter = ',', value_parser = FaultKind::parse)]
        faults: Option<Vec<FaultKind>>,
        #[arg(long, default_value_t = 1)]
        servers: usize,
        /// Seconds of calm after the last heal before the final read.
        #[arg(long, default_value_t = 45)]
        quiet: u64,
        #[arg(long, default_value_t = 5_000)]
        allowance_ms: i64,
    },
    /// A peer scheduler in the same run, given the same jobs and recorded commands as dron and
    /// judged by the same checker (no dron server is used).
    Peer {
        #[command(subcommand)]
        peer: Peer,
    },
}

#[derive(Subcommand)]
enum Peer {
    /// Celery beat and a Celery worker on the local RabbitMQ (loadtest/peers/celery; run its
    /// setup.sh first).
    Celery(CeleryArgs),
}

#[derive(Args)]
struct CeleryArgs {
    /// The directory holding peer.py and the .venv that setup.sh makes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/celery"))]
    peer_dir: PathBuf,
    /// The worker's pool: prefork (processes) or threads.
    #[arg(long, default_value = "prefork")]
    pool: String,
    /// The worker's concurrency (processes or threads).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    #[command(subcommand)]
    workload: PeerWorkload,
}

#[derive(Subcommand)]
enum PeerWorkload {
    /// As `saturate --runs`: recorded `true` jobs added step by step; delays from the runs files.
    Saturate {
        #[command(flatten)]
        steps: SaturateSteps,
        #[arg(long)]
        runs: PathBuf,
    },
    /// As `facebook`: long-running sleeps and recorded minute jobs, then the checker.
    Facebook(FacebookArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(ca_file) = &cli.ca_file {
        workloads::trust_ca(ca_file)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(start(cli))?;
    // The last line: one JSON object, for scripts.
    println!("{}", outcome.json);
    Ok(if outcome.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts the managed server if asked for, then the workload.
async fn start(cli: Cli) -> anyhow::Result<Outcome> {
    if let Workload::Peer {
        peer: Peer::Celery(celery),
    } = cli.workload
    {
        return run_peer(celery).await;
    }
    if let Workload::Nemesis {
        duration,
        seed,
        faults,
        servers,
        quiet,
        allowance_ms,
    } = cli.workload
    {
        let Some(dron_bin) = cli.dron_bin else {
            anyhow::bail!("nemesis starts its own servers and agents: give --dron-bin");
        };
        let stamp = chrono::Utc::now().timestamp_millis();
        let dir = cli
            .data_dir
            .unwrap_or_else(|| std::env::temp_dir().join(format!("dron-nemesis-{stamp}")));
        let options = NemesisOptions {
            dron_bin: std::path::absolute(dron_bin)?,
            dir: std::path::absolute(dir)?,
            duration_s: duration,
            seed,
            faults,
            servers,
            quiet_s: quiet,
            allowance_ms,
        };
        return nemesis::run(options).await;
    }
    let mut managed = match &cli.dron_bin {
        Some(binary) => {
            let stamp = chrono::Utc::now().timestamp_millis();
            let dir = cli
                .data_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("dron-loadtest-{stamp}")));
            Some(ManagedServer::start(binary, &dir, cli.shards, cli.agents).await?)
        }
        None => None,
    };
    let url = managed.as_ref().map_or(cli.url.clone(), ManagedServer::url);
    let pid = cli
        .server_pid
        .or_else(|| managed.as_ref().and_then(ManagedServer::pid))
        .or_else(|| server::find_pid(&url));
    if let Workload::Million { jobs, concurrency } = cli.workload {
        let Some(server) = managed.as_mut() else {
            anyhow::bail!("million kills and restarts the server: give --dron-bin");
        };
        return workloads::million::run(server, MillionOptions { jobs, concurrency }).await;
    }
    run(&url, pid, managed.is_some(), cli.workload).await
}

/// Runs `workload` against the server at `url`; a `throwaway` server (managed, with a data
/// directory of its own) is not cleaned up after.
async fn run(
    url: &str,
    server_pid: Option<u32>,
    throwaway: bool,
    workload: Workload,
) -> anyhow::Result<Outcome> {
    match workload {
        Workload::Saturate {
            builtin,
            steps,
            runs,
        } => {
            let mut options = steps.options(builtin, runs, server_pid);
            // Deleting tens of thousands of jobs from an overloaded server can take longer
            // than the run; a managed server goes with its data directory anyway.
            options.delete_jobs = !throwaway;
            workloads::saturate::run(url, options).await
        }
        Workload::Overload {
            builtin,
            steps,
            factor,
            secs,
            recovery_secs,
            recovery_margin,
        } => {
            let saturate = steps.options(builtin, None, server_pid);
            let options = OverloadOptions {
                saturate,
                factor,
                secs,
                recovery_limit: std::time::Duration::from_secs(recovery_secs),
                recovery_margin,
            };
            workloads::overload::run(url, options).await
        }
        Workload::Highload {
            builtin,
            step,
            step_secs,
            max_running,
            run_secs,
        } => {
            let options = HighloadOptions {
                builtin,
                step,
                step_secs,
                max_running,
                run_secs,
                server_pid,
            };
            workloads::highload::run(url, options).await
        }
        Workload::Facebook(args) => workloads::facebook::run(url, args.options(server_pid)).await,
        Workload::Million { .. } => anyhow::bail!("million needs --dron-bin"),
        Workload::Peer { .. } => anyhow::bail!("peer workloads use no dron server"),
        Workload::Nemesis { .. } => anyhow::bail!("nemesis starts its own servers"),
        Workload::Api {
            jobs,
            concurrency,
            rate,
            keep,
        } => workloads::api::run(url, jobs, concurrency, rate, keep).await,
        Workload::Ui {
            jobs,
            concurrency,
            requests,
            keep,
        } => {
            let options = UiOptions {
                jobs,
                concurrency,
                requests,
                keep,
            };
            workloads::ui::run(url, options).await
        }
        Workload::Fire {
            jobs,
            seconds,
            runs,
            epsilon_ms,
            allowance_ms,
        } => {
            let options = FireOptions {
                jobs,
                seconds,
                runs,
                epsilon_ms,
                allowance_ms,
            };
            workloads::fire::run(url, options).await
        }
        Workload::Smoke {
            runs,
            seconds,
            epsilon_ms,
            allowance_ms,
            keep,
        } => {
            let options = SmokeOptions {
                runs,
                seconds,
                epsilon_ms,
                allowance_ms,
                keep,
            };
            workloads::smoke::run(url, options).await
        }
        Workload::Check {
            runs,
            jobs_prefix,
            allowance_ms,
            since,
            jobs_file,
        } => {
            let options = CheckOptions {
                runs_dir: runs,
                jobs_prefix,
                allowance_ms,
                since_ms: since,
                jobs_file,
            };
            check::run(&workloads::http_client(), url, &options).await
        }
    }
}

async fn run_peer(args: CeleryArgs) -> anyhow::Result<Outcome> {
    let celery = CeleryOptions {
        peer_dir: args.peer_dir,
        pool: args.pool,
        concurrency: args.concurrency,
    };
    match args.workload {
        PeerWorkload::Saturate { steps, runs } => {
            peer::saturate(&celery, steps.options(false, Some(runs), None)).await
        }
        PeerWorkload::Facebook(args) => peer::facebook(&celery, args.options(None)).await,
    }
}

fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|error| format!("expected an RFC 3339 time such as 2026-11-23T10:00:00Z: {error}"))
}

/// The steps of `saturate`, the same for dron and for the peer.
#[derive(clap::Args)]
struct SaturateSteps {
    #[arg(long, default_value_t = 500)]
    step: usize,
    #[arg(long, default_value_t = 30)]
    step_secs: u64,
    #[arg(long, default_value_t = 10_000)]
    period_ms: u64,
    #[arg(long, default_value_t = 1_000_000)]
    max_jobs: usize,
    #[arg(long, default_value_t = 1000.0)]
    limit_ms: f64,
    #[arg(long, default_value_t = 60_000)]
    epsilon_ms: i64,
}

impl SaturateSteps {
    fn options(
        self,
        builtin: bool,
        runs: Option<PathBuf>,
        server_pid: Option<u32>,
    ) -> SaturateOptions {
        SaturateOptions {
            builtin,
            step: self.step,
            step_secs: self.step_secs,
            period_ms: self.period_ms,
            max_jobs: self.max_jobs,
            limit_ms: self.limit_ms,
            epsilon_ms: self.epsilon_ms,
            server_pid,
            runs,
            delete_jobs: true,
        }
    }
}

/// The Facebook-style load's shape, the same for dron and for the peer.
#[derive(clap::Args)]
struct FacebookArgs {
    #[arg(long, default_value_t = 5_000)]
    long_jobs: usize,
    #[arg(long, default_value_t = 30)]
    per_second: usize,
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    #[arg(long)]
    runs: PathBuf,
    #[arg(long, default_value_t = 60_000)]
    epsilon_ms: i64,
    #[arg(long, default_value_t = 5_000)]
    allowance_ms: i64,
    /// Seconds spent first measuring this machine's own floor: commands started directly (no
    /// scheduler) at the same rate beside as many idle processes as the long jobs (0: skip;
    /// dron only, not the peer)
    #[arg(long, default_value_t = 20)]
    floor_secs: u64,
}

impl FacebookArgs {
    fn options(self, server_pid: Option<u32>) -> FacebookOptions {
        FacebookOptions {
            long_jobs: self.long_jobs,
            per_second: self.per_second,
            duration_secs: self.duration_secs,
            runs: self.runs,
            epsilon_ms: self.epsilon_ms,
            allowance_ms: self.allowance_ms,
            server_pid,
            floor_secs: self.floor_secs,
        }
    }
}
