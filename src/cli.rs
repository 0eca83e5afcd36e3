//! Command-line interface: `dron serve`, `dron shards`, and the hidden `dron task-shim`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "dron",
    version,
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
    },
    /// Show or change the shard count of a running server.
    Shards {
        #[command(subcommand)]
        action: ShardsAction,
        /// The server's URL.
        #[arg(
            long,
            env = "DRON_URL",
            default_value = "http://127.0.0.1:4400",
            global = true
        )]
        url: String,
    },
    /// Run one task and record its end (started by the server for each task).
    #[command(hide = true)]
    TaskShim { run_dir: PathBuf },
}

#[derive(Subcommand)]
enum ShardsAction {
    /// Print the shards and their load.
    Show,
    /// Change the shard count online; only jobs whose owner changes move.
    Set { count: u32 },
}

/// Runs the command line; answers the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::TaskShim { run_dir } => Ok(dron_actors::agent::shim::run_shim_main(&run_dir)),
        Command::Serve {
            config,
            data_dir,
            listen,
            shards,
        } => {
            init_tracing();
            let mut config = Config::load(config.as_deref())?;
            config.data_dir = data_dir.unwrap_or(config.data_dir);
            config.listen = listen.unwrap_or(config.listen);
            config.shards = shards.unwrap_or(config.shards);
            anyhow::ensure!(config.shards >= 1, "--shards must be at least 1");
            runtime()?.block_on(crate::server::serve(config))?;
            Ok(0)
        }
        Command::Shards { action, url } => runtime()?.block_on(shards(action, &url)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DRON_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn shards(action: ShardsAction, url: &str) -> anyhow::Result<i32> {
    let client = reqwest::Client::new();
    let endpoint = format!("{}/api/shards", url.trim_end_matches('/'));
    let request = match action {
        ShardsAction::Show => client.get(&endpoint),
        ShardsAction::Set { count } => client
            .put(&endpoint)
            .json(&serde_json::json!({ "count": count })),
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the dron server at {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no error message");
        eprintln!("error: {status}: {message}");
        return Ok(1);
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(0)
}
