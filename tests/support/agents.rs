//! Real `dron agent` processes for end-to-end tests: started against a test server, killed
//! with SIGKILL, restarted on the same work directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Server, find_files, wait_for};

/// Server settings for agent tests: no local agent, fast heartbeats, a short agent timeout.
pub fn agents_config(timeout_ms: u64) -> String {
    format!("[agents]\nlocal = false\nheartbeat_ms = 100\ntimeout_ms = {timeout_ms}\n")
}

pub struct Agent {
    pub name: String,
    pub work_dir: tempfile::TempDir,
    server_url: String,
    /// `--cpus`, `--mem`, `--disk`, `--attributes` as given, and `--token-file` if any.
    offer: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    /// Starts `dron agent` offering `cpus` cores, `mem` MB and 10 GB of disk, with
    /// `attributes` (`k=v,...`), and waits until the server lists it as active.
    pub async fn start(
        server: &Server,
        name: &str,
        cpus: f64,
        mem: f64,
        attributes: &str,
    ) -> Agent {
        Agent::start_with_servers(server, &server.url(""), name, cpus, mem, attributes).await
    }

    /// As `start` (one core, 1 GB, no attributes), with more flags of `dron agent` (e.g.
    /// `--containers podman`).
    pub async fn start_with_flags(server: &Server, name: &str, flags: &[&str]) -> Agent {
        let agent = Agent::spawn_with_flags(&server.url(""), name, flags);
        agent.wait_active(server).await;
        agent
    }

    /// As `start_with_flags` with `--server servers`, without waiting for anything.
    pub fn spawn_with_flags(servers: &str, name: &str, flags: &[&str]) -> Agent {
        let mut agent = Agent::new(servers, name, 1.0, 1024.0, "");
        agent
            .offer
            .extend(flags.iter().map(|flag| flag.to_string()));
        agent.spawn();
        agent
    }

    /// The newest server epoch the agent has recorded (its fence), 0 before any.
    pub fn fence(&self) -> u64 {
        let path = self.work_dir.path().join("work/epoch");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.trim().parse().unwrap_or(0)
    }

    /// As `start` (one core, 1 GB), proving itself with the credential in `token_file`.
    pub async fn start_with_token_file(server: &Server, name: &str, token_file: &Path) -> Agent {
        let mut agent = Agent::new(&server.url(""), name, 1.0, 1024.0, "");
        agent.offer.push("--token-file".into());
        agent.offer.push(token_file.display().to_string());
        agent.spawn();
        agent.wait_active(server).await;
        agent
    }

    fn new(servers: &str, name: &str, cpus: f64, mem: f64, attributes: &str) -> Agent {
        let offer = [
            "--cpus",
            &cpus.to_string(),
            "--mem",
            &mem.to_string(),
            "--disk",
            "10240",
            "--attributes",
            attributes,
        ];
        Agent {
            name: name.to_string(),
            work_dir: tempfile::tempdir().expect("agent work dir"),
            server_url: servers.to_string(),
            offer: offer.iter().map(|s| s.to_string()).collect(),
            child: None,
        }
    }

    /// As `start`, with `--server servers` (a comma-separated list of URLs); waits until
    /// `server` lists it as active.
    pub async fn start_with_servers(
        server: &Server,
        servers: &str,
        name: &str,
        cpus: f64,
        mem: f64,
        attributes: &str,
    ) -> Agent {
        let mut agent = Agent::new(servers, name, cpus, mem, attributes);
        agent.spawn();
        agent.wait_active(server).await;
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work_dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dron"))
            .args(["agent", "--server", &self.server_url, "--name", &self.name])
            .args(&self.offer)
            .arg("--work-dir")
            .arg(self.work_dir.path().join("work"))
            .env("DRON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dron agent");
        self.child = Some(child);
    }

    /// Waits until the server lists this agent as active.
    pub async fn wait_active(&self, server: &Server) {
        let what = format!("agent {} to be active", self.name);
        wait_for(&what, Duration::from_secs(30), || async {
            agent_view(server, &self.name).await["state"] == "active"
        })
        .await;
    }

    /// SIGKILL of the agent process alone: its tasks go on under their shims.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping the killed agent");
        }
    }

    /// Starts the agent again on the same work directory (no wait).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work_dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn runs_root(&self) -> PathBuf {
        self.work_dir.path().join("work/runs")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        kill_task_groups(&self.runs_root());
    }
}

/// Ends the process groups of tasks still running under `runs_root`.
pub fn kill_task_groups(runs_root: &Path) {
    // shim.pid: the shim's "<pid> <starttime>", then the task's pid (= its group) once started.
    for pids in find_files(runs_root, "shim.pid") {
        if pids.with_file_name("status.json").exists() {
            continue;
        }
        let pid: i32 = std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or(0);
        if pid > 1 {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// The server's view of one agent (`GET /api/agents`); Null when it is not listed.
pub async fn agent_view(server: &Server, name: &str) -> Value {
    let (_, body) = server.request("GET", "/api/agents", None).await;
    body["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// The job's live or newest run (`GET /api/jobs/{name}/runs`).
pub async fn newest_run(server: &Server, job: &str) -> Value {
    server
        .runs(job)
        .await
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}
