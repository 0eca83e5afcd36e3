//! A peer scheduler in the same run: Celery beat and a Celery worker on the local RabbitMQ
//! (`loadtest/peers/celery`), given the same jobs as dron (Chronos JSON, written to a jobs file
//! that beat reads), running the same recorded commands into the same runs files, judged by the
//! same checker (`check` with the jobs file in place of `GET /scheduler/jobs`).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::check::{self, CheckOptions};
use crate::progress::Progress;
use crate::server::ProcessStats;
use crate::workloads::facebook::{self, Definitions, FacebookOptions};
use crate::workloads::saturate::{self, JobSink, SaturateOptions};
use crate::workloads::{self, Outcome};

/// How the peer runs.
#[derive(Debug, Clone)]
pub struct CeleryOptions {
    /// `loadtest/peers/celery`: `peer.py` and the `.venv` that `setup.sh` makes.
    pub peer_dir: PathBuf,
    /// The worker's pool (`prefork`, `threads`, ...).
    pub pool: String,
    /// The worker's concurrency (processes or threads).
    pub concurrency: usize,
}

/// A running Celery beat and worker, and the jobs file they were given.
pub struct CeleryPeer {
    work_dir: PathBuf,
    jobs_file: PathBuf,
    jobs: Vec<Value>,
    worker: Child,
    beat: Option<Child>,
}

impl CeleryPeer {
    /// Writes the jobs file, starts the worker, waits until it consumes, then starts beat.
    pub fn start(options: &CeleryOptions, jobs: Vec<Value>) -> anyhow::Result<CeleryPeer> {
        let celery = options.peer_dir.join(".venv/bin/celery");
        if !celery.exists() {
            bail!(
                "{} is missing: run {}/setup.sh first",
                celery.display(),
                options.peer_dir.display()
            );
        }
        let peer_dir = options
            .peer_dir
            .canonicalize()
            .context("the peer directory")?;
        let stamp = chrono::Utc::now().timestamp_millis();
        let pid = std::process::id();
        let work_dir = std::env::temp_dir().join(format!("dron-peer-celery-{pid}-{stamp}"));
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
        let queue = format!("dron-peer-{pid}-{stamp}");
        let jobs_file = work_dir.join("jobs.json");
        write_jobs(&jobs_file, &jobs)?;
        let spawn = |role: &str, args: &[&str]| -> anyhow::Result<Child> {
            let log = std::fs::File::create(work_dir.join(format!("{role}.log")))?;
            Command::new(&celery)
                .args(["-A", "peer", role])
                .args(args)
                .current_dir(&peer_dir)
                .env("PYTHONPATH", &peer_dir)
                .env("PEER_JOBS_FILE", &jobs_file)
                .env("PEER_QUEUE", &queue)
                .env("PEER_READY_DIR", &work_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .with_context(|| format!("cannot start celery {role}"))
        };
        let concurrency = options.concurrency.to_string();
        let worker = spawn(
            "worker",
            &[
                "--pool",
                &options.pool,
                "--concurrency",
                &concurrency,
                "--queues",
                &queue,
                "--hostname",
                &format!("{queue}@%h"),
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )?;
        let mut peer = CeleryPeer {
            work_dir: work_dir.clone(),
            jobs_file: jobs_file.clone(),
            jobs,
            worker,
            beat: None,
        };
        peer.await_ready("worker")?;
        let beat = spawn(
            "beat",
            &["--scheduler", "peer:PeerScheduler", "--loglevel", "WARNING"],
        )?;
        peer.beat = Some(beat);
        peer.await_ready("beat")?;
        Ok(peer)
    }

    /// Waits for `<role>.ready`, which peer.py writes once the role is up.
    fn await_ready(&mut self, role: &str) -> anyhow::Result<()> {
        let ready = self.work_dir.join(format!("{role}.ready"));
        let started = Instant::now();
        while !ready.exists() {
            let child = match role {
                "worker" => Some(&mut self.worker),
                _ => self.beat.as_mut(),
            };
            if let Some(status) = child.and_then(|child| child.try_wait().ok().flatten()) {
                bail!("celery {role} exited ({status}); see {}", self.log(role));
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("celery {role} not ready after 60 s; see {}", self.log(role));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn log(&self, role: &str) -> String {
        self.work_dir
            .join(format!("{role}.log"))
            .display()
            .to_string()
    }

    pub fn jobs_file(&self) -> &Path {
        &self.jobs_file
    }

    /// Beat's and the worker's main processes: RSS and CPU so far (the pool's children and the
    /// commands are not included).
    pub fn stats(&self) -> Value {
        let stats = |pid: Option<u32>| pid.and_then(ProcessStats::read).map(ProcessStats::json);
        json!({
            "peer_beat": stats(self.beat.as_ref().map(Child::id)),
            "peer_worker": stats(Some(self.worker.id())),
        })
    }

    /// SIGTERM to both process groups (the worker's pool and running commands included), then
    /// SIGKILL to whatever is left after ten seconds.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        let mut children: Vec<&mut Child> = vec![&mut self.worker];
        children.extend(self.beat.as_mut());
        for child in &children {
            signal_group(child.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in children {
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            signal_group(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

impl Drop for CeleryPeer {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.worker).chain(self.beat.as_mut()) {
            if child.try_wait().ok().flatten().is_none() {
                signal_group(child.id(), "KILL");
                let _ = child.wait();
            }
        }
    }
}

impl JobSink for CeleryPeer {
    /// Rewrites the jobs file; beat reads it again within a second.
    async fn add(&mut self, jobs: Vec<Value>) -> anyhow::Result<()> {
        self.jobs.extend(jobs);
        write_jobs(&self.jobs_file, &self.jobs)
    }
}

/// Sends a signal to a process group (the child's pid is its group: `process_group(0)`).
fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// Writes the jobs file whole, by rename, so beat never reads half of it.
fn write_jobs(path: &Path, jobs: &[Value]) -> anyhow::Result<()> {
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, serde_json::to_vec(jobs)?)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}

/// `saturate` against the peer: always recorded (Celery has no built-in task and no metrics).
pub async fn saturate(celery: &CeleryOptions, options: SaturateOptions) -> anyhow::Result<Outcome> {
    let mut peer = CeleryPeer::start(celery, Vec::new())?;
    let result = saturate::run_recorded(&mut peer, &options).await;
    let stats = peer.stats();
    peer.stop();
    let mut outcome = result?;
    outcome.json["peer"] = json!("celery");
    outcome.json["peer_pool"] = json!(format!("{} x{}", celery.pool, celery.concurrency));
    workloads::merge(&mut outcome.json, stats);
    Ok(outcome)
}

/// `facebook` against the peer: the same jobs, then the checker on the jobs file.
pub async fn facebook(celery: &CeleryOptions, options: FacebookOptions) -> anyhow::Result<Outcome> {
    let prefix = format!("lt-fb-{}-", chrono::Utc::now().timestamp_millis());
    let dir = workloads::prepare_runs_dir(&options.runs)?;
    // Beat and the worker first (they take seconds to start), then the jobs, read by beat
    // within a second; the first targets come a few seconds later.
    let mut peer = CeleryPeer::start(celery, Vec::new())?;
    let start = workloads::start_soon(5);
    let Definitions {
        long,
        minute,
        minute_prefix,
    } = facebook::definitions(&prefix, &dir, start, &options)?;
    let minute_jobs = minute.len();
    let names: Vec<String> = minute
        .iter()
        .filter_map(|job| job["name"].as_str().map(str::to_string))
        .collect();
    let mut jobs = minute;
    jobs.extend(long);
    peer.add(jobs).await?;
    // Written: beat has them within a second, well before the first target.
    let acked_ms = chrono::Utc::now().timestamp_millis();
    for name in &names {
        crate::recorder::record_created(&dir, name, acked_ms)?;
    }
    workloads::sleep_until(facebook::minute_start(start, &options)).await;
    let mut progress = Progress::new("facebook (celery)", options.duration_secs);
    for second in (0..options.duration_secs).step_by(5) {
        tokio::time::sleep(Duration::from_secs(5.min(options.duration_secs - second))).await;
        progress.set(second + 5, "");
    }
    progress.finish();
    let stats = peer.stats();
    tokio::time::sleep(Duration::from_millis(
        (options.epsilon_ms + options.allowance_ms) as u64,
    ))
    .await;
    let check_options = CheckOptions {
        runs_dir: dir,
        jobs_prefix: Some(minute_prefix),
        allowance_ms: options.allowance_ms,
        since_ms: None,
        jobs_file: Some(peer.jobs_file().to_path_buf()),
    };
    let checked = check::run(&reqwest::Client::new(), "", &check_options).await;
    peer.stop();
    let checked = checked?;
    let mut json = json!({
        "workload": "facebook", "peer": "celery",
        "peer_pool": format!("{} x{}", celery.pool, celery.concurrency),
        "long_jobs": options.long_jobs, "minute_jobs": minute_jobs,
        "new_instances_per_s": options.per_second, "duration_s": options.duration_secs,
    });
    workloads::merge(&mut json, stats);
    workloads::merge(&mut json, checked.json);
    Ok(Outcome {
        json,
        passed: checked.passed,
    })
}
