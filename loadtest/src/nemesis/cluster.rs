//! The processes under test: one or three `dron serve` and three `dron agent`, each in its
//! own namespace (see `net`), which the faults kill, pause, cut off and restart.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::net::{Host, Network, forward_amqp};

/// Every server listens on this port, in its own namespace.
const PORT: u16 = 4400;
const SECRET: &str = "the-nemesis-cluster-secret";
pub const AGENTS: usize = 3;
/// The servers' agent liveness: an agent silent this long is lost and its tasks relaunched.
pub const AGENT_TIMEOUT_MS: i64 = 10_000;
const AGENT_HEARTBEAT_MS: u64 = 500;
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A process started with `ip netns exec` (which execs it: the child's pid is the process's).
struct Process {
    namespace: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// SIGSTOPped: requests skip it (they would only time out).
    paused: Arc<AtomicBool>,
}

impl Process {
    fn new(namespace: &str, args: Vec<String>, log: PathBuf) -> Process {
        Process {
            namespace: namespace.to_string(),
            args,
            env: Vec::new(),
            log,
            child: None,
            paused: Arc::new(AtomicBool::new(false)),
        }
    }

    fn spawn(&mut self, binary: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("DRON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A process group of its own: had it stayed in the run's group, a paused server
            // would die of the SIGHUP the kernel sends a stopped member of a group that is
            // orphaned (the shell that started the run exiting while a pause held killed
            // the server of a 30-minute run, silently).
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} in {}", binary.display(), self.namespace))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    fn pause(&mut self) {
        self.paused.store(true, Ordering::Release);
        self.signal(libc::SIGSTOP);
    }

    fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused.store(false, Ordering::Release);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Node {
    pub id: u64,
    pub host: Host,
    process: Process,
    /// The libfaketime timestamp file its wall clock reads, when faked (see `FakedClock`).
    clock: Option<FakedClock>,
}

/// A server's wall clock under libfaketime: the offset from real time is in a timestamp file
/// that libfaketime reads at every call (`FAKETIME_NO_CACHE`), so writing the file steps the
/// clock at once; the monotonic clock is left alone (`FAKETIME_DONT_FAKE_MONOTONIC`), as an
/// NTP step leaves it, and the machine's clock is untouched.
pub struct FakedClock {
    file: PathBuf,
}

/// Where Debian's libfaketime puts its multithreaded preload library.
const FAKETIME_LIBS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

impl FakedClock {
    /// A clock file at real time (offset 0), and the environment that makes a process read it.
    pub fn create(file: PathBuf) -> anyhow::Result<(FakedClock, Vec<(String, String)>)> {
        let Some(library) = FAKETIME_LIBS.iter().find(|lib| Path::new(lib).exists()) else {
            bail!("clock faults need libfaketime (Debian: apt-get install faketime)");
        };
        let clock = FakedClock { file };
        clock.set_offset_s(0)?;
        let env = [
            ("LD_PRELOAD", library.to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE",
                clock.file.to_string_lossy().into(),
            ),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ];
        Ok((clock, env.map(|(k, v)| (k.to_string(), v)).to_vec()))
    }

    /// Sets the wall clock to real time plus `offset_s` (written whole, then renamed: a read
    /// never sees half a file).
    pub fn set_offset_s(&self, offset_s: i64) -> anyhow::Result<()> {
        let partial = self.file.with_extension("partial");
        std::fs::write(&partial, format!("{offset_s:+}\n"))?;
        std::fs::rename(&partial, &self.file)?;
        Ok(())
    }
}

impl Node {
    fn cluster_url(&self) -> String {
        format!("http://{}:{PORT}", self.host.cluster_ip)
    }
}

/// The servers as this tool reaches them (through their control links): cheap to clone, so
/// that the workload and the nemesis each hold one.
#[derive(Clone)]
pub struct Api {
    /// Each server's id and base URL.
    nodes: Vec<(u64, String)>,
    paused: Vec<Arc<AtomicBool>>,
    pub http: reqwest::Client,
}

impl Api {
    /// The index of the server that leads and schedules, as a majority of servers sees it.
    pub async fn leader(&self) -> Option<usize> {
        let mut votes: Vec<u64> = Vec::new();
        for index in 0..self.nodes.len() {
            if self.is_paused(index) {
                continue;
            }
            let status = self.get(index, "/api/cluster").await;
            if let Some(leader) = status.and_then(|s| s["leader"].as_u64()) {
                votes.push(leader);
            }
        }
        let majority = self.nodes.len() / 2 + 1;
        let leader = votes
            .iter()
            .copied()
            .find(|id| votes.iter().filter(|v| *v == id).count() >= majority)?;
        let index = self.nodes.iter().position(|(id, _)| *id == leader)?;
        let status = self.get(index, "/api/cluster").await?;
        (status["scheduling"] == true).then_some(index)
    }

    fn is_paused(&self, index: usize) -> bool {
        self.paused[index].load(Ordering::Acquire)
    }

    pub fn url(&self, index: usize, path: &str) -> String {
        format!("{}{path}", self.nodes[index].1)
    }

    pub async fn get(&self, index: usize, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(self.url(index, path))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no leader scheduling within {timeout:?}")
    }

    /// How many agents the leader lists as active.
    pub async fn active_agents(&self) -> usize {
        let Some(leader) = self.leader().await else {
            return 0;
        };
        let listing = self.get(leader, "/api/agents").await;
        let agents = listing.as_ref().and_then(|l| l["agents"].as_array());
        agents.map_or(0, |a| a.iter().filter(|a| a["state"] == "active").count())
    }

    pub async fn wait_for_agents(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.active_agents().await >= count {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the agents did not all become active within {timeout:?}")
    }

    /// A request to the servers: the first that answers with a status below 500 (or the last
    /// answer), starting with the leader when one is known.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Option<(u16, Value)> {
        let mut last = None;
        for index in 0..self.nodes.len() {
            if self.is_paused(index) {
                continue;
            }
            let request = self
                .http
                .request(method.clone(), self.url(index, path))
                .json(body)
                .send()
                .await;
            let Ok(response) = request else {
                continue;
            };
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            if status < 500 {
                return Some((status, body));
            }
            last = Some((status, body));
        }
        last
    }
}

pub struct Agent {
    pub name: String,
    pub host: Host,
    process: Process,
}

pub struct Cluster {
    pub binary: PathBuf,
    pub nodes: Vec<Node>,
    pub agents: Vec<Agent>,
    pub api: Api,
    /// The AMQP exchange of this run (the servers' queues are `<exchange>.n<id>`).
    pub exchange: String,
    /// Each server's data directory's own filesystem, by node index (for `disk-full`);
    /// dropped after the processes.
    disks: Vec<super::disk::Tmpfs>,
    /// Dropped last: the processes die before their namespaces go.
    pub network: Network,
}

/// What the planned faults need of the servers.
pub struct Needs {
    /// Every server's wall clock under libfaketime (at real time until a fault steps it).
    pub faked_clocks: bool,
    /// Every server's data directory on a small filesystem of its own.
    pub small_disks: bool,
}

impl Cluster {
    /// Starts `servers` servers and the agents, and waits until a leader schedules and every
    /// agent is active.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        servers: usize,
        exchange: &str,
        needs: Needs,
    ) -> anyhow::Result<Cluster> {
        let mut network = Network::create()?;
        let mut nodes = Vec::new();
        for id in 1..=servers as u8 {
            let host = network.host(&format!("n{id}"), id, true)?;
            forward_amqp(&host.namespace)?;
            nodes.push((u64::from(id), host));
        }
        let peers: Vec<String> = nodes
            .iter()
            .map(|(id, host)| format!("{id}=http://{}:{PORT}", host.cluster_ip))
            .collect();
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            nodes: Vec::new(),
            agents: Vec::new(),
            api: Api {
                nodes: Vec::new(),
                paused: Vec::new(),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .no_proxy()
                    .build()?,
            },
            exchange: exchange.to_string(),
            disks: Vec::new(),
            network,
        };
        for (id, host) in nodes {
            let mut process = server_process(dir, id, &host, &peers, exchange)?;
            if needs.small_disks {
                let data = dir.join(format!("server-{id}")).join("data");
                cluster.disks.push(super::disk::Tmpfs::mount(&data)?);
            }
            let clock = if needs.faked_clocks {
                let file = dir.join(format!("server-{id}")).join("faketime");
                let (clock, env) = FakedClock::create(file)?;
                process.env = env;
                Some(clock)
            } else {
                None
            };
            let ip = host
                .control_ip
                .clone()
                .expect("servers have a control link");
            cluster.api.nodes.push((id, format!("http://{ip}:{PORT}")));
            cluster.api.paused.push(process.paused.clone());
            cluster.nodes.push(Node {
                id,
                host,
                process,
                clock,
            });
        }
        for node in &mut cluster.nodes {
            node.process.spawn(binary)?;
        }
        cluster
            .api
            .wait_for_leader(Duration::from_secs(120))
            .await
            .context("the servers did not start")?;
        let servers = cluster
            .nodes
            .iter()
            .map(Node::cluster_url)
            .collect::<Vec<_>>()
            .join(",");
        for index in 0..AGENTS {
            let host = cluster
                .network
                .host(&format!("a{index}"), 101 + index as u8, false)?;
            let process = agent_process(dir, index, &host, &servers)?;
            let name = format!("nem-a{index}");
            cluster.agents.push(Agent {
                name,
                host,
                process,
            });
        }
        for agent in &mut cluster.agents {
            agent.process.spawn(binary)?;
        }
        let agents = cluster.agents.len();
        cluster
            .api
            .wait_for_agents(agents, Duration::from_secs(60))
            .await?;
        Ok(cluster)
    }

    /// Fills the server's data directory's filesystem; answers the file to remove to heal.
    pub fn fill_disk(&self, index: usize) -> anyhow::Result<PathBuf> {
        let disk = self
            .disks
            .get(index)
            .context("no small disk: plan disk-full first")?;
        disk.fill()
    }

    pub fn kill_server(&mut self, index: usize) {
        self.nodes[index].process.kill9();
    }

    pub fn restart_server(&mut self, index: usize) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        self.nodes[index].process.spawn(&binary)
    }

    /// Waits until server `index` answers `/health` with 200.
    pub async fn wait_healthy(&self, index: usize, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let url = self.api.url(index, "/health");
        while started.elapsed() < timeout {
            let answer = self
                .api
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(answer, Ok(response) if response.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "server {} not healthy within {timeout:?}",
            self.nodes[index].id
        )
    }

    pub fn pause_server(&mut self, index: usize) {
        self.nodes[index].process.pause();
    }

    pub fn resume_server(&mut self, index: usize) {
        self.nodes[index].process.resume();
    }

    /// Sets server `index`'s wall clock to real time plus `offset_s`.
    pub fn set_clock_offset(&self, index: usize, offset_s: i64) -> anyhow::Result<()> {
        match &self.nodes[index].clock {
            Some(clock) => clock.set_offset_s(offset_s),
            None => bail!("server {} runs on the real clock", self.nodes[index].id),
        }
    }

    pub fn kill_agent(&mut self, index: usize) {
        self.agents[index].process.kill9();
    }

    pub fn restart_agent(&mut self, index: usize) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        self.agents[index].process.spawn(&binary)
    }
}

fn server_process(
    dir: &Path,
    id: u64,
    host: &Host,
    peers: &[String],
    exchange: &str,
) -> anyhow::Result<Process> {
    let node_dir = dir.join(format!("server-{id}"));
    std::fs::create_dir_all(&node_dir)?;
    let config = node_dir.join("dron.toml");
    std::fs::write(
        &config,
        format!(
            "[agents]\nlocal = false\nheartbeat_ms = {AGENT_HEARTBEAT_MS}\ntimeout_ms = {AGENT_TIMEOUT_MS}\n\
             [events]\namqp_url = \"{AMQP_URL}\"\nexchange = \"{exchange}\"\nqueue = \"{exchange}.n{id}\"\n"
        ),
    )?;
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut args = vec![
        "serve".to_string(),
        "--listen".into(),
        format!("0.0.0.0:{PORT}"),
        "--config".into(),
        path(config),
        "--data-dir".into(),
        path(node_dir.join("data")),
        // A non-loopback address without auth is refused unless said so: the servers and
        // agents here are on a private bridge of the run's own namespaces (a trusted network).
        "--insecure-no-auth".into(),
    ];
    if peers.len() > 1 {
        let secret = node_dir.join("cluster-secret");
        std::fs::write(&secret, SECRET)?;
        args.extend([
            "--node-id".into(),
            id.to_string(),
            "--peers".into(),
            peers.join(","),
            "--cluster-secret-file".into(),
            path(secret),
        ]);
    }
    Ok(Process::new(
        &host.namespace,
        args,
        node_dir.join("server.log"),
    ))
}

fn agent_process(dir: &Path, index: usize, host: &Host, servers: &str) -> anyhow::Result<Process> {
    let agent_dir = dir.join(format!("agent-{index}"));
    std::fs::create_dir_all(&agent_dir)?;
    let work_dir = agent_dir.join("work").to_string_lossy().into_owned();
    let args = [
        "agent",
        "--server",
        servers,
        "--name",
        &format!("nem-a{index}"),
        "--cpus",
        "64",
        "--mem",
        "65536",
        "--disk",
        "1000000",
        "--work-dir",
        &work_dir,
    ];
    let args = args.iter().map(|s| s.to_string()).collect();
    Ok(Process::new(
        &host.namespace,
        args,
        agent_dir.join("agent.log"),
    ))
}

/// The agent a run ran on, from its working directory (`.../agent-<k>/work/...`).
pub fn agent_of(working_dir: &str) -> Option<usize> {
    let rest = working_dir.split("/agent-").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_runs_agent_is_read_from_its_working_directory() {
        let dir = "/tmp/dron-nemesis-1/agent-2/work/runs/ct:1:0:j:";
        assert_eq!(super::agent_of(dir), Some(2));
        assert_eq!(super::agent_of("/tmp/elsewhere"), None);
    }
}
