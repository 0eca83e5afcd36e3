//! The run's plan, drawn whole from the seed before anything starts: which jobs are created
//! when (Jepsen's Chronos workload), which events are announced when, and which faults come
//! when and for how long. Only what the plan cannot know (which server leads at that moment)
//! is decided during the run.

use super::rng::Rng;

/// What a fault does. `leader-*` act on the server that leads when the fault comes (with one
/// server, on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// kill -9 of a server, then a restart on the same data directory.
    Kill,
    /// SIGSTOP of a server, then SIGCONT.
    Pause,
    /// `rabbitmqctl stop_app`, then `start_app`: the machine's RabbitMQ, shared with other
    /// users of the machine, so not in the default list.
    Amqp,
    /// kill -9 of an agent, then a restart with the same name and work directory.
    AgentKill,
    /// An agent's link cut, then healed.
    AgentPartition,
    LeaderKill,
    LeaderPause,
    /// The leader's link cut: it is alone, a minority.
    LeaderPartition,
    /// A partition that splits the majority (three servers): the leader and one follower
    /// cut from each other, both still linked to the third, so each side of the cut is a
    /// majority through it (Jepsen's "bridge"). Needs three servers; not in the default list,
    /// so that the documented cluster runs keep their plans.
    SplitMajority,
    /// A server's wall clock stepped by ±30 s (libfaketime; its monotonic clock and the
    /// machine's clock untouched), then stepped back.
    ClockStep,
    /// A server's data directory's filesystem filled, then freed (a tmpfs of its own; not
    /// in the default list, so that the documented runs keep their plans).
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Amqp,
        FaultKind::AgentKill,
        FaultKind::AgentPartition,
        FaultKind::LeaderKill,
        FaultKind::LeaderPause,
        FaultKind::LeaderPartition,
        FaultKind::SplitMajority,
        FaultKind::ClockStep,
        FaultKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Amqp => "amqp",
            FaultKind::AgentKill => "agent-kill",
            FaultKind::AgentPartition => "agent-partition",
            FaultKind::LeaderKill => "leader-kill",
            FaultKind::LeaderPause => "leader-pause",
            FaultKind::LeaderPartition => "leader-partition",
            FaultKind::SplitMajority => "split-majority",
            FaultKind::ClockStep => "clock-step",
            FaultKind::DiskFull => "disk-full",
        }
    }

    pub fn parse(text: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault '{text}': one of {}", names.join(", "))
            })
    }

    /// How long the fault holds before it is healed, in seconds (for a kill: how long the
    /// process stays down).
    fn hold_secs(self) -> (u64, u64) {
        match self {
            FaultKind::Kill | FaultKind::LeaderKill => (1, 5),
            FaultKind::Pause | FaultKind::LeaderPause => (5, 40),
            FaultKind::Amqp => (5, 20),
            FaultKind::AgentKill => (2, 10),
            FaultKind::AgentPartition => (30, 90),
            FaultKind::LeaderPartition | FaultKind::SplitMajority => (10, 40),
            FaultKind::ClockStep => (10, 40),
            FaultKind::DiskFull => (10, 40),
        }
    }

    /// The default list: everything but RabbitMQ (other builders' tests share it), and the
    /// leader's faults only where there is a cluster to fail over.
    pub fn defaults(servers: usize) -> Vec<FaultKind> {
        let mut kinds = vec![
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::AgentKill,
            FaultKind::AgentPartition,
        ];
        if servers > 1 {
            kinds.extend([
                FaultKind::LeaderKill,
                FaultKind::LeaderPause,
                FaultKind::LeaderPartition,
            ]);
        }
        kinds
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    /// Chronos's workload: a repeating interval.
    Scheduled,
    /// Runs after each success of `parent` (an index into the plan's jobs).
    Dependent { parent: usize },
    /// Scheduled, and waits for a resource announced `delay_ms` after its creation (over
    /// AMQP or HTTP), before its first target.
    Waiting { via_amqp: bool, delay_ms: u64 },
    /// Runs once per event announced for it.
    Triggered,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// When to create it, from the start of the run.
    pub at_ms: u64,
    pub name: String,
    pub kind: JobKind,
    pub duration_s: u64,
    pub epsilon_s: u64,
    pub interval_s: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    pub at_ms: u64,
    /// The triggered job it is for (an index into the plan's jobs).
    pub job: usize,
    pub via_amqp: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFault {
    pub at_ms: u64,
    pub kind: FaultKind,
    pub hold_ms: u64,
    /// Chooses the server or agent, modulo their number.
    pub pick: u64,
}

/// A job's definition changed (its `owner`, to version `version`): the judgement checks that
/// every job ends with the last definition acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedUpdate {
    pub at_ms: u64,
    /// An index into the plan's jobs.
    pub job: usize,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub jobs: Vec<PlannedJob>,
    pub events: Vec<PlannedEvent>,
    pub faults: Vec<PlannedFault>,
    /// In time order.
    pub updates: Vec<PlannedUpdate>,
}

/// No job is created in the run's last this-many ms: its first target (10 s after) still
/// comes before the faults end.
const LAST_JOB_BEFORE_END_MS: u64 = 15_000;
/// The first fault waits for the first jobs to be running.
const FIRST_FAULT_MS: u64 = 10_000;

pub fn plan(seed: u64, duration_s: u64, faults: &[FaultKind]) -> Plan {
    let mut rng = Rng::new(seed);
    let end_ms = duration_s * 1000;
    let jobs = plan_jobs(&mut rng, end_ms);
    let events = plan_events(&mut rng, &jobs, end_ms);
    let faults = plan_faults(&mut rng, faults, end_ms);
    // Drawn last, so that the jobs, events and faults of a seed are those of earlier versions.
    let updates = plan_updates(&mut rng, &jobs, end_ms);
    Plan {
        jobs,
        events,
        faults,
        updates,
    }
}

fn plan_jobs(rng: &mut Rng, end_ms: u64) -> Vec<PlannedJob> {
    let mut jobs: Vec<PlannedJob> = Vec::new();
    let mut at_ms = 0;
    while at_ms + LAST_JOB_BEFORE_END_MS <= end_ms.max(LAST_JOB_BEFORE_END_MS) {
        // Jepsen's Chronos workload.
        let duration_s = rng.range(0, 9);
        let epsilon_s = rng.range(10, 29);
        let interval_s = 1 + duration_s + epsilon_s + 5 + rng.range(0, 29);
        let count = rng.range(1, 99);
        let parents: Vec<usize> = (0..jobs.len())
            .filter(|&i| matches!(jobs[i].kind, JobKind::Scheduled))
            .collect();
        let roll = rng.range(0, 99);
        let kind = if roll < 50 || (roll < 70 && parents.is_empty()) {
            JobKind::Scheduled
        } else if roll < 70 {
            JobKind::Dependent {
                parent: parents[rng.index(parents.len())],
            }
        } else if roll < 85 {
            JobKind::Waiting {
                via_amqp: rng.percent(50),
                delay_ms: rng.range(0, 8_000),
            }
        } else {
            JobKind::Triggered
        };
        let letter = match kind {
            JobKind::Scheduled => 's',
            JobKind::Dependent { .. } => 'd',
            JobKind::Waiting { .. } => 'w',
            JobKind::Triggered => 't',
        };
        jobs.push(PlannedJob {
            at_ms,
            name: format!("j{:03}-{letter}", jobs.len()),
            kind,
            duration_s,
            epsilon_s,
            interval_s,
            count,
        });
        at_ms += rng.range(1_000, 4_000);
    }
    jobs
}

fn plan_events(rng: &mut Rng, jobs: &[PlannedJob], end_ms: u64) -> Vec<PlannedEvent> {
    let mut events = Vec::new();
    // When each job may have its next event: as Jepsen's intervals, far enough apart that a
    // run never waits behind the previous one (where dron rightly skips it past epsilon).
    let mut next_ms: Vec<u64> = jobs.iter().map(|job| job.at_ms + 2_000).collect();
    let mut at_ms = 5_000;
    while at_ms + 10_000 <= end_ms {
        let triggered: Vec<usize> = (0..jobs.len())
            .filter(|&i| jobs[i].kind == JobKind::Triggered && next_ms[i] <= at_ms)
            .collect();
        if !triggered.is_empty() {
            let job = triggered[rng.index(triggered.len())];
            let spacing = 1 + jobs[job].duration_s + jobs[job].epsilon_s + 5;
            next_ms[job] = at_ms + spacing * 1000;
            events.push(PlannedEvent {
                at_ms,
                job,
                via_amqp: rng.percent(50),
            });
        }
        at_ms += rng.range(2_000, 6_000);
    }
    events
}

/// A third of the jobs have their definition changed once or twice while the run goes on.
fn plan_updates(rng: &mut Rng, jobs: &[PlannedJob], end_ms: u64) -> Vec<PlannedUpdate> {
    let mut updates = Vec::new();
    for (job, planned) in jobs.iter().enumerate() {
        if !rng.percent(33) {
            continue;
        }
        let mut at_ms = planned.at_ms;
        for version in 1..=rng.range(1, 2) as u32 {
            at_ms += rng.range(2_000, 60_000);
            if at_ms + LAST_JOB_BEFORE_END_MS <= end_ms {
                updates.push(PlannedUpdate {
                    at_ms,
                    job,
                    version,
                });
            }
        }
    }
    updates.sort_by_key(|update| update.at_ms);
    updates
}

fn plan_faults(rng: &mut Rng, kinds: &[FaultKind], end_ms: u64) -> Vec<PlannedFault> {
    let mut faults = Vec::new();
    if kinds.is_empty() {
        return faults;
    }
    let mut at_ms = FIRST_FAULT_MS;
    loop {
        let kind = kinds[rng.index(kinds.len())];
        let (low, high) = kind.hold_secs();
        if at_ms + low * 1000 > end_ms {
            break;
        }
        // Every fault is healed by the end of the run: the last one may be cut short.
        let hold_ms = rng.range(low * 1000, high * 1000).min(end_ms - at_ms);
        faults.push(PlannedFault {
            at_ms,
            kind,
            hold_ms,
            pick: rng.next_u64(),
        });
        // One fault at a time, and a few seconds of calm between them.
        at_ms += hold_ms + rng.range(3_000, 10_000);
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_plan_within_the_workloads_bounds() {
        let kinds = FaultKind::defaults(1);
        let plan_a = plan(42, 300, &kinds);
        assert_eq!(plan_a, plan(42, 300, &kinds));
        assert_ne!(plan_a, plan(43, 300, &kinds));
        for job in &plan_a.jobs {
            assert!(job.duration_s <= 9 && (10..=29).contains(&job.epsilon_s));
            let floor = 1 + job.duration_s + job.epsilon_s + 5;
            assert!((floor..=floor + 29).contains(&job.interval_s));
            assert!((1..=99).contains(&job.count));
            if let JobKind::Dependent { parent } = job.kind {
                assert_eq!(plan_a.jobs[parent].kind, JobKind::Scheduled);
            }
        }
        let overlap = plan_a
            .faults
            .windows(2)
            .any(|w| w[0].at_ms + w[0].hold_ms > w[1].at_ms);
        assert!(!overlap, "faults come one at a time");
        let last = plan_a.faults.last().unwrap();
        assert!(last.at_ms + last.hold_ms <= 300_000, "healed by the end");
        assert!(!plan_a.faults.is_empty() && !plan_a.events.is_empty());
        assert!(!plan_a.updates.is_empty());
        for update in &plan_a.updates {
            assert!(
                update.at_ms > plan_a.jobs[update.job].at_ms,
                "after its creation"
            );
        }
        let in_order = plan_a.updates.windows(2).all(|w| w[0].at_ms <= w[1].at_ms);
        assert!(in_order);
    }
}
