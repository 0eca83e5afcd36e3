//! `dron-loadtest`: drives a running dron server through its public API, reports figures, and
//! checks what actually ran. Workloads: job creation (`api`), firing (`fire`), the whole
//! record-and-check loop (`smoke`); `check` judges the runs recorded in a runs directory (see
//! `checker` for the rules and `recorder` for the runs-file format). The Dron/Facebook
//! workloads are the load-test issue's remaining work.

mod check;
mod checker;
mod recorder;
mod stats;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use check::CheckOptions;
use workloads::Outcome;
use workloads::fire::FireOptions;
use workloads::smoke::SmokeOptions;

#[derive(Parser)]
#[command(
    name = "dron-loadtest",
    about = "Load generator and schedule checker for a running dron server"
)]
struct Cli {
    /// The server's URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:4400")]
    url: String,
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
    /// Checks the runs recorded in a runs directory against the jobs the server lists: every
    /// target run once inside its epsilon window, dependent jobs after their parents. Exits 1
    /// when a target was missed or run twice (or a dependency or an acknowledged job was lost).
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
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(run(&cli.url, cli.workload))?;
    // The last line: one JSON object, for scripts.
    println!("{}", outcome.json);
    Ok(if outcome.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(url: &str, workload: Workload) -> anyhow::Result<Outcome> {
    match workload {
        Workload::Api { jobs, concurrency } => workloads::api::run(url, jobs, concurrency).await,
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
        } => {
            let options = CheckOptions {
                runs_dir: runs,
                jobs_prefix,
                allowance_ms,
                since_ms: since,
            };
            check::run(&reqwest::Client::new(), url, &options).await
        }
    }
}

fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|error| format!("expected an RFC 3339 time such as 2026-11-23T10:00:00Z: {error}"))
}
