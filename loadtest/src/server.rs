//! The server under test: one the workload starts itself (`--dron-bin`: it can then kill -9
//! and restart it, and knows its pid), or one already running at `--url` (its pid found by
//! the port it listens on, for RSS and CPU figures).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A `dron serve` process this tool started, and the `dron agent` processes running its
/// tasks when there are any.
pub struct ManagedServer {
    binary: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    agents: Vec<Child>,
}

/// What each agent (or the local one) offers: far more than a load test's tasks need, so the
/// figures measure scheduling and launching, not resource accounting. (1,000,000 was not: at
/// the default 256 MB of disk per task it held 3,906 tasks, fewer than `facebook` keeps live.)
const UNBOUNDED_OFFER: &str = "1000000000";

impl ManagedServer {
    /// Starts `dron serve` on a free loopback port and waits for `/health`; with `agents` >
    /// 0, runs its tasks on that many `dron agent` processes instead of its local agent.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        shards: Option<u32>,
        agents: usize,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server = ManagedServer {
            binary: binary.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            port,
            child: None,
            agents: Vec::new(),
        };
        std::fs::write(server.config_path(), agents_config(agents))?;
        server.spawn(shards)?;
        server.wait_healthy(Duration::from_secs(300)).await?;
        for index in 0..agents {
            server.spawn_agent(index)?;
        }
        server.wait_agents(agents).await?;
        Ok(server)
    }

    fn config_path(&self) -> PathBuf {
        self.data_dir.join("dron.toml")
    }

    fn spawn_agent(&mut self, index: usize) -> anyhow::Result<()> {
        let work_dir = self.data_dir.join(format!("agent-{index}"));
        std::fs::create_dir_all(&work_dir)?;
        let log = std::fs::File::create(work_dir.join("agent.log"))?;
        let child = Command::new(&self.binary)
            .args(["agent", "--server", &self.url(), "--name"])
            .arg(format!("load-{index}"))
            .args(["--cpus", UNBOUNDED_OFFER, "--mem", UNBOUNDED_OFFER])
            .args(["--disk", UNBOUNDED_OFFER, "--work-dir"])
            .arg(work_dir.join("work"))
            .env("DRON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting agent {index}"))?;
        self.agents.push(child);
        Ok(())
    }

    /// Waits until the server lists `count` active agents.
    async fn wait_agents(&self, count: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let answer = http.get(format!("{}/api/agents", self.url())).send().await;
            let listing: Value = match answer {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            let active = listing["agents"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|a| a["state"] == "active").count());
            if active >= count {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{count} agents did not register within a minute")
    }

    /// Starts the server; `shards` applies to a new data directory (default: the server's).
    fn spawn(&mut self, shards: Option<u32>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("server.log"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .arg("--data-dir")
            .arg(self.data_dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)]);
        if let Some(shards) = shards {
            command.args(["--shards", &shards.to_string()]);
        }
        let child = command
            .env("DRON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for `/health` to answer 200; answers how long that took.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let http = reqwest::Client::new();
        while started.elapsed() < timeout {
            let answer = http.get(format!("{}/health", self.url())).send().await;
            if matches!(answer, Ok(r) if r.status() == 200) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the server did not become healthy within {timeout:?}")
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// kill -9, start again on the same data directory and port; answers the time from the
    /// kill to `/health` = 200.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.kill9();
        // The data directory keeps its shard count.
        self.spawn(None)?;
        self.wait_healthy(Duration::from_secs(600)).await?;
        Ok(started.elapsed())
    }
}

impl Drop for ManagedServer {
    fn drop(&mut self) {
        self.kill9();
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

/// The managed server's config: tasks on the local agent, or on remote agents only.
fn agents_config(agents: usize) -> String {
    let offer = UNBOUNDED_OFFER;
    format!(
        "[agents]\nlocal = {}\nlocal_cpus = {offer}\nlocal_mem_mb = {offer}\nlocal_disk_mb = {offer}\n",
        agents == 0
    )
}

/// The server's pid, from the port in `url`: the process listening on it.
pub fn find_pid(url: &str) -> Option<u32> {
    let port: u16 = url.rsplit(':').next()?.trim_end_matches('/').parse().ok()?;
    let inode = listening_inode(port)?;
    let socket = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == socket));
        if owns {
            return Some(pid);
        }
    }
    None
}

/// The inode of the TCP socket listening on `port` (state 0A in /proc/net/tcp).
fn listening_inode(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let wanted = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening = fields.get(3) == Some(&"0A");
        let ours = fields.get(1).is_some_and(|local| local.ends_with(&wanted));
        (listening && ours).then(|| fields.get(9).map(|s| s.to_string()))?
    })
}

/// A process's resident memory and CPU time so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl ProcessStats {
    pub fn read(pid: u32) -> Option<ProcessStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start after ") ".
        let after = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ProcessStats {
            rss_bytes: rss_kb * 1024,
            cpu_seconds: ticks as f64 / USER_HZ,
        })
    }

    pub fn json(self) -> Value {
        json!({
            "server_rss_mb": (self.rss_bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0,
            "server_cpu_s": (self.cpu_seconds * 100.0).round() / 100.0,
        })
    }
}

/// Clock ticks per second in /proc/<pid>/stat: USER_HZ, 100 on every Linux this runs on.
const USER_HZ: f64 = 100.0;

/// The total size of the files below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
