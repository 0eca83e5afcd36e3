//! A cluster of real `dron serve` processes on loopback for end-to-end tests, each with its
//! own data directory and port, killed with SIGKILL and restarted; and `dron agent`
//! processes that know every server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{free_port, wait_for};

/// The cluster's shared secret, as its servers read it from a file.
const SECRET: &str = "a-test-secret-of-enough-length";

pub struct Node {
    pub id: u64,
    pub port: u16,
    pub data: tempfile::TempDir,
    /// Started with `--join` (no `--peers`): a new server waiting to be added.
    pub join: bool,
    /// Counted when the servers must agree on a leader: false for a server that was removed
    /// or is not added yet.
    pub member: bool,
    /// `http`, or `https` for a cluster over TLS.
    pub scheme: &'static str,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub http: reqwest::Client,
    peers: String,
    /// TOML appended to every server's config file.
    extra_config: String,
}

impl Cluster {
    /// Starts `size` servers and waits until they agree on a leader that schedules.
    pub async fn start(size: u64, extra_toml: &str) -> Cluster {
        Cluster::start_with_headers(size, extra_toml, Default::default()).await
    }

    /// As `start`, the test's requests carrying `headers` (credentials, for an `[auth]`).
    pub async fn start_with_headers(
        size: u64,
        extra_toml: &str,
        headers: reqwest::header::HeaderMap,
    ) -> Cluster {
        let http = reqwest::Client::builder().default_headers(headers);
        Cluster::start_with_client(size, extra_toml, "http", http, |_| {}).await
    }

    /// As `start`, every server serving HTTPS with `certs`' server certificate and reaching
    /// the others at https:// addresses; the test's client trusts their CA.
    pub async fn start_tls(size: u64, certs: &super::tls::Certs) -> Cluster {
        let ca = std::fs::read(certs.ca()).unwrap();
        let ca = reqwest::Certificate::from_pem(&ca).unwrap();
        let http = reqwest::Client::builder().tls_certs_only([ca]);
        Cluster::start_with_client(size, &certs.server_toml(), "https", http, |_| {}).await
    }

    /// As `start`, with `prepare` called on each server before it first starts (to mount a
    /// filesystem of its own on its data directory, `<node.data>/data`).
    pub async fn start_prepared(
        size: u64,
        extra_toml: &str,
        prepare: impl FnMut(&Node),
    ) -> Cluster {
        let http = reqwest::Client::builder();
        Cluster::start_with_client(size, extra_toml, "http", http, prepare).await
    }

    async fn start_with_client(
        size: u64,
        extra_toml: &str,
        scheme: &'static str,
        http: reqwest::ClientBuilder,
        mut prepare: impl FnMut(&Node),
    ) -> Cluster {
        let nodes: Vec<Node> = (1..=size)
            .map(|id| Node {
                id,
                port: free_port(),
                data: tempfile::tempdir().expect("temp dir"),
                join: false,
                member: true,
                scheme,
                child: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.url("")))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes,
            http: http.timeout(Duration::from_secs(10)).build().unwrap(),
            peers,
            extra_config: extra_toml.to_string(),
        };
        for index in 0..cluster.nodes.len() {
            prepare(&cluster.nodes[index]);
            cluster.spawn(index);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// Every server's address, as agents take them.
    pub fn server_list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url(""))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let dir = node.data.path();
        let config = dir.join("dron.toml");
        std::fs::write(
            &config,
            format!(
                "[scheduler]\nretry_backoff_ms = 200\n[agents]\nlocal = false\nheartbeat_ms = 100\ntimeout_ms = 10000\n{}\n",
                self.extra_config
            ),
        )
        .unwrap();
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, SECRET).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dron"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", node.port)])
            .args(["--node-id", &node.id.to_string()])
            .args(if node.join {
                vec!["--join"]
            } else {
                vec!["--peers", &self.peers]
            })
            .arg("--cluster-secret-file")
            .arg(&secret)
            .env("DRON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dron");
        node.child = Some(child);
    }

    /// SIGKILL of one server, as a crash.
    pub fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping the killed server");
        }
    }

    /// SIGSTOP (`pause: true`) or SIGCONT of one server, as a VM pause would.
    pub fn pause(&self, index: usize, pause: bool) {
        let child = self.nodes[index].child.as_ref().expect("a running server");
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child's pid, which is not reaped while `child` is held.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signalling server {index}");
    }

    /// Starts a killed server again on its data directory and port (no wait).
    pub fn restart(&mut self, index: usize) {
        self.kill9(index);
        self.spawn(index);
    }

    /// Starts a new server `id` with an empty data directory and `--join`: it waits to be
    /// added (`dron cluster add-node`). Answers its index (no wait).
    pub fn start_joining(&mut self, id: u64) -> usize {
        self.nodes.push(Node {
            id,
            port: free_port(),
            data: tempfile::tempdir().expect("temp dir"),
            join: true,
            member: false,
            scheme: self.nodes[0].scheme,
            child: None,
        });
        let index = self.nodes.len() - 1;
        self.spawn(index);
        index
    }

    /// Replaces a killed server's data directory by an empty one, as a new disk would.
    pub fn wipe(&mut self, index: usize) {
        assert!(!self.nodes[index].is_running(), "wipe a killed server only");
        self.nodes[index].data = tempfile::tempdir().expect("temp dir");
    }

    /// `dron cluster ARGS --url <server index's URL> --json`: its exit code, stdout and stderr.
    pub async fn cli(&self, index: usize, args: &[&str]) -> (i32, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dron"));
        command
            .arg("cluster")
            .args(args)
            .args(["--json", "--url", &self.nodes[index].url("")]);
        let output = tokio::task::spawn_blocking(move || command.output().expect("running dron"))
            .await
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `GET /api/cluster` of one server; None if it does not answer.
    pub async fn status(&self, index: usize) -> Option<Value> {
        let response = self
            .http
            .get(self.nodes[index].url("/api/cluster"))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The index of the server that leads and schedules, as every running server sees it.
    pub async fn leader(&self) -> Option<usize> {
        let mut agreed = None;
        for (index, node) in self.nodes.iter().enumerate() {
            if !node.is_running() || !node.member {
                continue;
            }
            let status = self.status(index).await?;
            let leader = status["leader"].as_u64()?;
            match agreed {
                None => agreed = Some(leader),
                Some(other) if other != leader => return None,
                Some(_) => {}
            }
        }
        let leader = self.nodes.iter().position(|n| Some(n.id) == agreed)?;
        let scheduling = self.status(leader).await?["scheduling"] == true;
        scheduling.then_some(leader)
    }

    /// Waits until the running servers agree on a leader that schedules; answers its index.
    pub async fn wait_for_leader(&self) -> usize {
        wait_for(
            "the servers to agree on a leader",
            Duration::from_secs(60),
            || async { self.leader().await.is_some() },
        )
        .await;
        self.leader().await.unwrap()
    }

    /// A request to one server (any server answers every request).
    pub async fn request(
        &self,
        index: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        super::request_json(&self.http, method, self.nodes[index].url(path), body).await
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, n.log()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill9(index);
        }
    }
}

/// A `dron agent` that knows every server of a cluster.
pub struct ClusterAgent {
    pub work_dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ClusterAgent {
    pub fn start(cluster: &Cluster, name: &str, cpus: f64) -> ClusterAgent {
        ClusterAgent::start_with_args(cluster, name, cpus, &[])
    }

    /// As `start`, with more flags (e.g. retention's).
    pub fn start_with_args(
        cluster: &Cluster,
        name: &str,
        cpus: f64,
        extra: &[&str],
    ) -> ClusterAgent {
        let work_dir = tempfile::tempdir().expect("agent work dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work_dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dron"))
            .args(["agent", "--server", &cluster.server_list(), "--name", name])
            .args([
                "--cpus",
                &cpus.to_string(),
                "--mem",
                "8192",
                "--disk",
                "10240",
            ])
            .arg("--work-dir")
            .arg(work_dir.path().join("work"))
            .args(extra)
            .env("DRON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dron agent");
        ClusterAgent {
            work_dir,
            child: Some(child),
        }
    }

    pub fn runs_root(&self) -> PathBuf {
        self.work_dir.path().join("work/runs")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work_dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for ClusterAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        super::agents::kill_task_groups(&self.runs_root());
    }
}
