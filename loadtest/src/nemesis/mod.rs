//! `nemesis`: a Jepsen-style run (issue 20). Servers and three agents, each in a network
//! namespace of its own (`net`), run Jepsen's Chronos workload and more (`plan`, `workload`)
//! while faults come one after another (`faults`): kill -9 and SIGSTOP of a server (or of the
//! leader), RabbitMQ stopped, kill -9 of an agent, an agent or the leader cut off, a server's
//! wall clock stepped, its data directory's filesystem full (`disk`). After the
//! last heal and a quiet period the runs the jobs recorded are judged against the fault
//! timeline (`judge`). Everything random comes from one seed.

mod amqp;
mod cluster;
mod disk;
mod faults;
mod judge;
mod net;
mod picture;
mod plan;
mod rng;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::recorder::read_runs_dir;
use crate::workloads::{Outcome, list_jobs, prepare_runs_dir};
pub use plan::FaultKind;

pub struct NemesisOptions {
    pub dron_bin: PathBuf,
    pub dir: PathBuf,
    pub duration_s: u64,
    pub seed: u64,
    /// None: the default list for the number of servers.
    pub faults: Option<Vec<FaultKind>>,
    pub servers: usize,
    /// Calm after the last heal before the final read.
    pub quiet_s: u64,
    pub allowance_ms: i64,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub async fn run(options: NemesisOptions) -> anyhow::Result<Outcome> {
    if let Some(why) = net::unavailable() {
        bail!("nemesis cannot run here: {why}");
    }
    if options.servers != 1 && options.servers != 3 {
        bail!("--servers must be 1 or 3");
    }
    let kinds = options
        .faults
        .clone()
        .unwrap_or_else(|| FaultKind::defaults(options.servers));
    if kinds.contains(&FaultKind::SplitMajority) && options.servers != 3 {
        bail!("the split-majority fault needs a majority to split: --servers 3");
    }
    let plan = plan::plan(options.seed, options.duration_s, &kinds);
    eprintln!(
        "nemesis: seed {}: {} jobs, {} events, {} faults over {} s; data in {}",
        options.seed,
        plan.jobs.len(),
        plan.events.len(),
        plan.faults.len(),
        options.duration_s,
        options.dir.display()
    );
    let runs_dir = prepare_runs_dir(&options.dir.join("runs"))?;
    let exchange = format!("nemesis-{}-{}", std::process::id(), now_ms());
    let mut cluster = cluster::Cluster::start(
        &options.dron_bin,
        &options.dir,
        options.servers,
        &exchange,
        cluster::Needs {
            faked_clocks: kinds.contains(&FaultKind::ClockStep),
            small_disks: kinds.contains(&FaultKind::DiskFull),
        },
    )
    .await?;
    let publisher = Arc::new(amqp::Publisher::new(&exchange));
    let started = Instant::now();
    let workload = workload::Workload {
        api: cluster.api.clone(),
        publisher: publisher.clone(),
        runs_dir: runs_dir.clone(),
        resource_prefix: exchange.clone(),
    };
    let work = tokio::spawn(workload.run(plan.clone(), started));
    let timeline = faults::run(&mut cluster, &plan.faults, started).await;
    let acked = work.await.context("the workload panicked")??;
    let timeline = timeline?;
    std::fs::write(
        options.dir.join("timeline.json"),
        Value::from(timeline.iter().map(|f| f.json()).collect::<Vec<_>>()).to_string(),
    )?;
    eprintln!(
        "nemesis: last fault healed; {} jobs and {} events acknowledged; quiet for {} s",
        acked.jobs.len(),
        acked.events.len(),
        options.quiet_s
    );
    tokio::time::sleep(Duration::from_secs(options.quiet_s)).await;
    let leader = cluster
        .api
        .wait_for_leader(Duration::from_secs(120))
        .await?;
    let listed = list_jobs(&cluster.api.http, &cluster.api.url(leader, "")).await?;
    let read_ms = now_ms();
    let recorded = read_runs_dir(&runs_dir)?;
    let runs = recorded.runs.clone();
    let places = workload::read_where(&runs_dir);
    let mut acked = acked;
    // An event too recent may still be waiting to run: not judged yet.
    acked
        .events
        .retain(|(_, at)| *at <= read_ms - MAX_EPSILON_MS - options.allowance_ms);
    let verdict = judge::judge(judge::Input {
        listed: &listed,
        recorded,
        places,
        acked: &acked,
        faults: &timeline,
        read_ms,
        allowance_ms: options.allowance_ms,
        agent_timeout_ms: cluster::AGENT_TIMEOUT_MS,
    });
    for line in verdict.details() {
        println!("  {line}");
    }
    let picture = options.dir.join("timeline.png");
    match picture::draw(&picture, &verdict.marks, &runs, &timeline, read_ms) {
        Ok(()) => eprintln!("nemesis: the picture is {}", picture.display()),
        Err(error) => eprintln!("nemesis: could not draw {}: {error}", picture.display()),
    }
    let queues: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("{}.n{}", cluster.exchange, node.id))
        .collect();
    drop(cluster);
    publisher.clean_up(&queues).await;
    let mut json = verdict.json(timeline.len());
    json["seed"] = json!(options.seed);
    json["servers"] = json!(options.servers);
    Ok(Outcome {
        passed: verdict.passed(),
        json,
    })
}

/// The workload's largest epsilon (Jepsen's 10–29 s).
const MAX_EPSILON_MS: i64 = 29_000;
