//! The nemesis proper: carries out the planned faults one at a time, and records when each
//! began and when it was healed, and what it took away (the judgement reads this timeline).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster::Cluster;
use super::now_ms;
use super::plan::{FaultKind, PlannedFault};

/// What a fault took away while it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impact {
    /// No server (or no majority) could schedule: targets inside are not owed.
    Service,
    /// One agent was cut off or dead: the others could still run everything.
    Agent(usize),
    /// One server of a cluster, or the link between two: a majority goes on.
    Minority,
    /// RabbitMQ: events over AMQP wait; HTTP goes on.
    Broker,
    /// A server's wall clock read real time plus this many ms: it schedules by its own clock,
    /// so the judgement reads the runs in that clock (see `judge`).
    Clock(i64),
}

#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// The server (`n<id>`) or agent (`nem-a<k>`) it struck.
    pub target: String,
    pub start_ms: i64,
    /// When the fault was undone (the restarted server healthy, the link up, SIGCONT sent).
    pub heal_ms: i64,
    pub impact: Impact,
}

impl FaultRecord {
    pub fn json(&self) -> Value {
        json!({
            "kind": self.kind.name(),
            "target": self.target,
            "start_ms": self.start_ms,
            "heal_ms": self.heal_ms,
            "impact": format!("{:?}", self.impact),
            "clock_offset_ms": match self.impact {
                Impact::Clock(offset) => offset,
                _ => 0,
            },
        })
    }
}

/// How long a restarted server may take to answer `/health` before the run gives up.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

/// Carries out `faults` at their times from `started`; answers the timeline.
pub async fn run(
    cluster: &mut Cluster,
    faults: &[PlannedFault],
    started: Instant,
) -> anyhow::Result<Vec<FaultRecord>> {
    let mut timeline = Vec::new();
    for fault in faults {
        let at = started + Duration::from_millis(fault.at_ms);
        tokio::time::sleep_until(at.into()).await;
        let record = strike(cluster, fault).await?;
        eprintln!(
            "nemesis: {} of {} for {} ms (healed after {} ms)",
            fault.kind.name(),
            record.target,
            fault.hold_ms,
            record.heal_ms - record.start_ms
        );
        timeline.push(record);
    }
    Ok(timeline)
}

async fn strike(cluster: &mut Cluster, fault: &PlannedFault) -> anyhow::Result<FaultRecord> {
    let hold = Duration::from_millis(fault.hold_ms);
    let single = cluster.nodes.len() == 1;
    let server_impact = if single {
        Impact::Service
    } else {
        Impact::Minority
    };
    let server = match fault.kind {
        // A clock step matters where the schedule is kept: the leader's.
        FaultKind::LeaderKill
        | FaultKind::LeaderPause
        | FaultKind::LeaderPartition
        | FaultKind::SplitMajority
        | FaultKind::ClockStep => cluster.api.leader().await.unwrap_or(0),
        _ => (fault.pick % cluster.nodes.len() as u64) as usize,
    };
    let agent = (fault.pick % cluster.agents.len() as u64) as usize;
    let server_name = format!("n{}", cluster.nodes[server].id);
    let agent_name = cluster.agents[agent].name.clone();
    let start_ms = now_ms();
    let (target, impact) = match fault.kind {
        FaultKind::Kill | FaultKind::LeaderKill => {
            cluster.kill_server(server);
            tokio::time::sleep(hold).await;
            cluster.restart_server(server)?;
            cluster.wait_healthy(server, RESTART_TIMEOUT).await?;
            (server_name, server_impact)
        }
        FaultKind::Pause | FaultKind::LeaderPause => {
            cluster.pause_server(server);
            tokio::time::sleep(hold).await;
            cluster.resume_server(server);
            (server_name, server_impact)
        }
        FaultKind::LeaderPartition => {
            let host = cluster.nodes[server].host.clone();
            cluster.network.cut(&host)?;
            tokio::time::sleep(hold).await;
            cluster.network.heal(&host)?;
            (server_name, server_impact)
        }
        FaultKind::SplitMajority => {
            // The leader and one of the others (by the pick) lose each other; the third
            // bridges them.
            let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != server).collect();
            let cut_from = others[(fault.pick % others.len() as u64) as usize];
            let (a, b) = (
                cluster.nodes[server].host.clone(),
                cluster.nodes[cut_from].host.clone(),
            );
            cluster.network.cut_between(&a, &b)?;
            tokio::time::sleep(hold).await;
            cluster.network.heal_between(&a, &b)?;
            let name = format!("{server_name}|n{}", cluster.nodes[cut_from].id);
            (name, Impact::Minority)
        }
        FaultKind::Amqp => {
            rabbitmqctl("stop_app").await?;
            tokio::time::sleep(hold).await;
            rabbitmqctl("start_app").await?;
            ("rabbitmq".to_string(), Impact::Broker)
        }
        FaultKind::AgentKill => {
            cluster.kill_agent(agent);
            tokio::time::sleep(hold).await;
            cluster.restart_agent(agent)?;
            (agent_name, Impact::Agent(agent))
        }
        FaultKind::ClockStep => {
            // Forward or back, by the parity of the pick.
            let offset_s = if fault.pick.is_multiple_of(2) {
                30
            } else {
                -30
            };
            cluster.set_clock_offset(server, offset_s)?;
            tokio::time::sleep(hold).await;
            cluster.set_clock_offset(server, 0)?;
            (server_name, Impact::Clock(offset_s * 1000))
        }
        FaultKind::DiskFull => {
            let filler = cluster.fill_disk(server)?;
            tokio::time::sleep(hold).await;
            std::fs::remove_file(&filler)?;
            (server_name, server_impact)
        }
        FaultKind::AgentPartition => {
            let host = cluster.agents[agent].host.clone();
            cluster.network.cut(&host)?;
            tokio::time::sleep(hold).await;
            cluster.network.heal(&host)?;
            (agent_name, Impact::Agent(agent))
        }
    };
    Ok(FaultRecord {
        kind: fault.kind,
        target,
        start_ms,
        heal_ms: now_ms(),
        impact,
    })
}

async fn rabbitmqctl(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("rabbitmqctl")
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "rabbitmqctl {command} failed: {status}");
    Ok(())
}
