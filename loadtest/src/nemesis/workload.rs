//! Carries out the plan's jobs and events while the faults strike: creates each job when its
//! time comes (start = now + 10 s), announces the resources the waiting jobs need and the
//! events the triggered jobs run on, over AMQP or HTTP as planned, and remembers what the
//! servers (or RabbitMQ) acknowledged: only that is owed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::amqp::Publisher;
use super::cluster::Api;
use super::now_ms;
use super::plan::{JobKind, Plan, PlannedJob, PlannedUpdate};
use crate::recorder::{record_created, recorded_command};
use crate::workloads::start_soon;

/// A job's first target comes this long after its creation (Jepsen's Chronos workload).
const START_AHEAD_S: i64 = 10;
/// How long a waiting job's resource is announced again until acknowledged.
const ANNOUNCE_FOR: Duration = Duration::from_secs(60);

/// What was acknowledged.
#[derive(Debug, Default)]
pub struct Acked {
    /// Jobs the servers acknowledged.
    pub jobs: Vec<String>,
    /// (triggered job, the event's `at`): each owes one run for that target.
    pub events: Vec<(String, i64)>,
    /// Events announced without an acknowledgement (not owed).
    pub unacked_events: usize,
    /// Waiting jobs whose resource no announcement got acknowledged: not judged.
    pub unannounced: Vec<String>,
    /// The definitions of the jobs whose definition was changed, by job.
    pub definitions: HashMap<String, Definition>,
}

/// What a job's definition must be at the end: its `owner` names the version.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Definition {
    /// The last version acknowledged (0: the one created).
    pub acked: u32,
    /// Later versions sent without an answer: each may or may not have been applied.
    pub unsure: Vec<u32>,
}

impl Definition {
    /// The owners the job may end with.
    pub fn allowed_owners(&self) -> Vec<String> {
        let later = self.unsure.iter().filter(|v| **v > self.acked);
        std::iter::once(&self.acked)
            .chain(later)
            .map(|v| owner(*v))
            .collect()
    }
}

/// The `owner` of a job's definition at `version`.
pub fn owner(version: u32) -> String {
    format!("v{version}@nemesis.example")
}

/// The acknowledged jobs' endpoints and definitions, by name, for their updates.
type Created = Arc<Mutex<HashMap<String, (&'static str, Value)>>>;

pub struct Workload {
    pub api: Api,
    pub publisher: Arc<Publisher>,
    pub runs_dir: PathBuf,
    /// Resource names start with this (unique to the run).
    pub resource_prefix: String,
}

enum Done {
    Announced {
        job: String,
        acked: bool,
    },
    Event {
        job: String,
        at_ms: i64,
        acked: bool,
    },
}

impl Workload {
    pub async fn run(self, plan: Plan, started: Instant) -> anyhow::Result<Acked> {
        let this = Arc::new(self);
        let mut acked = Acked::default();
        let mut background = JoinSet::new();
        let created: Created = Arc::default();
        let updates = tokio::spawn(
            this.clone()
                .update_all(plan.clone(), created.clone(), started),
        );
        let mut events = plan.events.iter().peekable();
        for job in &plan.jobs {
            // Events due before this job are sent first, in the background.
            while let Some(event) = events.next_if(|e| e.at_ms <= job.at_ms) {
                let name = plan.jobs[event.job].name.clone();
                background.spawn(
                    this.clone()
                        .event(name, event.via_amqp, event.at_ms, started),
                );
            }
            sleep_until(started, job.at_ms).await;
            if let JobKind::Dependent { parent } = job.kind
                && !acked.jobs.contains(&plan.jobs[parent].name)
            {
                continue;
            }
            let parent = match job.kind {
                JobKind::Dependent { parent } => Some(plan.jobs[parent].name.as_str()),
                _ => None,
            };
            let body = this.job_json(job, parent)?;
            if this.create(job, &body).await? {
                acked.jobs.push(job.name.clone());
                let entry = (endpoint(job), body);
                created.lock().unwrap().insert(job.name.clone(), entry);
                if let JobKind::Waiting { via_amqp, delay_ms } = job.kind {
                    let at_ms = job.at_ms + delay_ms;
                    let name = job.name.clone();
                    background.spawn(this.clone().announce(name, via_amqp, at_ms, started));
                }
            }
        }
        for event in events {
            let name = plan.jobs[event.job].name.clone();
            background.spawn(
                this.clone()
                    .event(name, event.via_amqp, event.at_ms, started),
            );
        }
        while let Some(done) = background.join_next().await {
            match done? {
                Done::Announced { job, acked: false } => acked.unannounced.push(job),
                Done::Announced { .. } => {}
                // An event for a job that was never acknowledged is owed nothing.
                Done::Event {
                    job,
                    at_ms,
                    acked: true,
                } if acked.jobs.contains(&job) => acked.events.push((job, at_ms)),
                Done::Event { .. } => acked.unacked_events += 1,
            }
        }
        acked.definitions = updates.await??;
        Ok(acked)
    }

    /// Changes the definitions as planned (one at a time, in time order), each resent whole
    /// with the next `owner`; answers what each changed job's definition must end as.
    async fn update_all(
        self: Arc<Self>,
        plan: Plan,
        created: Created,
        started: Instant,
    ) -> anyhow::Result<HashMap<String, Definition>> {
        let mut definitions: HashMap<String, Definition> = HashMap::new();
        for update in &plan.updates {
            sleep_until(started, update.at_ms).await;
            let name = &plan.jobs[update.job].name;
            // A job not (yet) acknowledged is not changed.
            let Some((endpoint, mut body)) = created.lock().unwrap().get(name).cloned() else {
                continue;
            };
            body["owner"] = json!(owner(update.version));
            let definition = definitions.entry(name.clone()).or_default();
            match self.update(endpoint, &body, update).await? {
                true => definition.acked = update.version,
                false => definition.unsure.push(update.version),
            }
        }
        Ok(definitions)
    }

    /// Sends one change; true when a server acknowledged it.
    async fn update(
        &self,
        endpoint: &str,
        body: &Value,
        update: &PlannedUpdate,
    ) -> anyhow::Result<bool> {
        match self.api.request(Method::POST, endpoint, body).await {
            Some((204, _)) => Ok(true),
            Some((status, answer)) if status < 500 => anyhow::bail!(
                "changing {} to version {} was refused ({status}): {answer}",
                body["name"],
                update.version
            ),
            _ => Ok(false),
        }
    }

    fn resource(&self, kind: &str, job: &str) -> String {
        format!("{}:{kind}-{job}", self.resource_prefix)
    }

    fn job_json(&self, job: &PlannedJob, parent: Option<&str>) -> anyhow::Result<Value> {
        let where_file = self.runs_dir.join(format!("{}.where", job.name));
        // `$$` in the subshell is the recording shell's pid: the run's `start` line has it too.
        let inner = format!(
            "echo \"$$ $PWD\" >>'{}'; sleep {}",
            where_file.display(),
            job.duration_s
        );
        let command = recorded_command(&self.runs_dir, &job.name, &inner)?;
        let mut body = json!({
            "name": job.name,
            "command": command,
            "epsilon": format!("PT{}S", job.epsilon_s),
            "retries": 1,
            "cpus": 0.1,
            "mem": 16,
            "owner": owner(0),
        });
        let start = start_soon(START_AHEAD_S).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let schedule = format!("R{}/{start}/PT{}S", job.count, job.interval_s);
        match job.kind {
            JobKind::Scheduled => body["schedule"] = json!(schedule),
            JobKind::Waiting { .. } => {
                body["schedule"] = json!(schedule);
                body["dependsOn"] = json!([self.resource("ready", &job.name)]);
            }
            JobKind::Dependent { .. } => body["parents"] = json!([parent]),
            JobKind::Triggered => body["triggeredBy"] = json!(self.resource("event", &job.name)),
        }
        Ok(body)
    }

    /// Creates the job; true when a server acknowledged it (its `created` line is written).
    async fn create(&self, job: &PlannedJob, body: &Value) -> anyhow::Result<bool> {
        let answer = self.api.request(Method::POST, endpoint(job), body).await;
        match answer {
            Some((204, _)) => {
                record_created(&self.runs_dir, &job.name, now_ms())?;
                Ok(true)
            }
            Some((status, body)) if status < 500 => {
                anyhow::bail!("creating {} was refused ({status}): {body}", job.name)
            }
            _ => Ok(false),
        }
    }

    /// Announces a waiting job's resource until acknowledged (or ANNOUNCE_FOR passed).
    async fn announce(
        self: Arc<Self>,
        job: String,
        via_amqp: bool,
        at_ms: u64,
        started: Instant,
    ) -> Done {
        sleep_until(started, at_ms).await;
        let event = json!({ "resource": self.resource("ready", &job) });
        let deadline = Instant::now() + ANNOUNCE_FOR;
        while Instant::now() < deadline {
            if self.send(&event, via_amqp).await {
                return Done::Announced { job, acked: true };
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Done::Announced { job, acked: false }
    }

    /// Announces one event for a triggered job, once.
    async fn event(
        self: Arc<Self>,
        job: String,
        via_amqp: bool,
        at_ms: u64,
        started: Instant,
    ) -> Done {
        sleep_until(started, at_ms).await;
        let at = now_ms();
        let event = json!({ "resource": self.resource("event", &job), "at": at });
        let acked = self.send(&event, via_amqp).await;
        Done::Event {
            job,
            at_ms: at,
            acked,
        }
    }

    async fn send(&self, event: &Value, via_amqp: bool) -> bool {
        if via_amqp {
            return self.publisher.publish(event).await;
        }
        let answer = self.api.request(Method::POST, "/resources", event).await;
        matches!(answer, Some((200 | 202, _)))
    }
}

/// Where a job is created (and changed).
fn endpoint(job: &PlannedJob) -> &'static str {
    match job.kind {
        JobKind::Dependent { .. } => "/scheduler/dependency",
        _ => "/scheduler/iso8601",
    }
}

async fn sleep_until(started: Instant, at_ms: u64) {
    tokio::time::sleep_until((started + Duration::from_millis(at_ms)).into()).await;
}

/// The working directory each run of `runs_dir`'s jobs reported, by (job, pid).
pub fn read_where(runs_dir: &Path) -> std::collections::HashMap<(String, u32), String> {
    let mut places = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return places;
    };
    for path in entries.flatten().map(|e| e.path()) {
        let (Some(job), Some("where")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            if let Some((pid, dir)) = line.split_once(' ')
                && let Ok(pid) = pid.parse::<u32>()
            {
                places.insert((job.to_string(), pid), dir.to_string());
            }
        }
    }
    places
}
