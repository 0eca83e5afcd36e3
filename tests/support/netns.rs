//! A cluster of real `dron serve` processes, each in its own network namespace, and a
//! `dron agent` in another, for partition tests (issue 17).
//!
//! The network (as root, with iproute2):
//! - a namespace `dron-<pid>-br` holds a bridge; every server's namespace (`dron-<pid>-n1..`)
//!   and the agent's (`dron-<pid>-a`) join it through a "cluster" veth (`c0`, 10.77.0.0/24):
//!   Raft, forwarding and agent traffic go over it. A partition sets the bridge's end of a
//!   namespace's cluster veth down.
//! - each server's namespace also has a "control" veth (`k0`) to the root namespace (a /30
//!   of its own), through which the test reaches the server even while it is cut off.
//!
//! Namespaces are named after the test process's pid, deleted on drop (the processes in them
//! killed first), and those of dead test processes are cleaned at start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::wait_for;

/// The cluster's shared secret, as its servers read it from a file.
const SECRET: &str = "a-test-secret-of-enough-length";
/// Every server listens on this port, in its own namespace.
pub const PORT: u16 = 4400;
/// The cluster network's first three octets (inside the namespaces only).
const CLUSTER_NET: &str = "10.77.0";
const PREFIX: &str = "dron-";

/// Runs `ip ARGS`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running `ip {}`: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Why network namespaces cannot be used here, or None if they can (as far as can be told
/// without creating one).
fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("the test does not run as root (ip netns needs it)".to_string());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`ip -V` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("iproute2's `ip` is not available: {error}")),
    }
}

/// Deletes the namespaces (and kills the processes in them) of test processes that have
/// died without cleaning up.
fn clean_stale() {
    for line in ip_output(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("netns: deleting {name}, left by test process {pid} (gone)");
        delete_namespace(name);
    }
}

/// Kills every process in namespace `name` (by pid), then deletes it.
fn delete_namespace(name: &str) {
    for pid in ip_output(&["netns", "pids", name]).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let _ = ip(&["netns", "del", name]);
}

/// The namespaces and links of one test process.
pub struct Network {
    pid: u32,
    bridge: String,
    /// Every namespace created, deleted on drop.
    namespaces: Vec<String>,
    /// The root namespace's ends of the control veths.
    root_links: Vec<String>,
    /// The control network's first three octets, in the root namespace.
    control_net: String,
}

/// Where a server's namespace is reached.
pub struct Host {
    pub namespace: String,
    /// The bridge's end of its cluster veth (in the bridge's namespace).
    pub port: String,
    /// Its address on the cluster network.
    pub cluster_ip: String,
    /// Its address on its control link (from the root namespace), if any.
    pub control_ip: Option<String>,
}

impl Network {
    /// Creates the bridge's namespace; Err says why namespaces are unavailable here.
    pub fn create() -> Result<Network, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        clean_stale();
        let pid = std::process::id();
        // A /24 of 10.200-249.x.0 for the control links, unused in the root namespace.
        let addresses = ip_output(&["-4", "-o", "addr"]);
        let control_net = (0..256u32)
            .map(|step| {
                let n = (pid + step) % (50 * 256);
                format!("10.{}.{}", 200 + n / 256, n % 256)
            })
            .find(|net| !addresses.contains(&format!("{net}.")))
            .ok_or("no free 10.2xx.x.0/24 for the control links")?;
        let mut network = Network {
            pid,
            bridge: format!("{PREFIX}{pid}-br"),
            namespaces: Vec::new(),
            root_links: Vec::new(),
            control_net,
        };
        network.add_namespace(&network.bridge.clone())?;
        let br = network.bridge.clone();
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        Ok(network)
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A namespace `dron-<pid>-<suffix>` on the cluster network at 10.77.0.`host`, with a
    /// control link from the root namespace if `control`.
    pub fn host(&mut self, suffix: &str, host: u8, control: bool) -> Result<Host, String> {
        let ns = format!("{PREFIX}{}-{suffix}", self.pid);
        self.add_namespace(&ns)?;
        let port = format!("p{suffix}");
        ip(&[
            "link",
            "add",
            "c0",
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.bridge,
        ])?;
        ip(&["-n", &self.bridge, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &self.bridge, "link", "set", &port, "up"])?;
        let cluster_ip = format!("{CLUSTER_NET}.{host}");
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{cluster_ip}/24"),
            "dev",
            "c0",
        ])?;
        ip(&["-n", &ns, "link", "set", "c0", "up"])?;
        let control_ip = if control {
            // dr<pid>k<host>: at most 15 characters, unique per test process.
            let root_end = format!("dr{}k{host}", self.pid);
            ip(&[
                "link", "add", &root_end, "type", "veth", "peer", "name", "k0", "netns", &ns,
            ])?;
            self.root_links.push(root_end.clone());
            let base = u32::from(host) * 4;
            let (outside, inside) = (
                format!("{}.{}", self.control_net, base + 1),
                format!("{}.{}", self.control_net, base + 2),
            );
            ip(&["addr", "add", &format!("{outside}/30"), "dev", &root_end])?;
            ip(&["link", "set", &root_end, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{inside}/30"),
                "dev",
                "k0",
            ])?;
            ip(&["-n", &ns, "link", "set", "k0", "up"])?;
            Some(inside)
        } else {
            None
        };
        Ok(Host {
            namespace: ns,
            port,
            cluster_ip,
            control_ip,
        })
    }

    /// Cuts `host` off the cluster network: the bridge's end of its cluster veth goes down.
    /// Its own end stays up (without carrier), so it sees silence, as across a real
    /// partition: what it sends is dropped, not refused.
    pub fn cut(&self, host: &Host) {
        ip(&["-n", &self.bridge, "link", "set", &host.port, "down"])
            .expect("cutting the cluster link");
    }

    /// Joins `host` to the cluster network again.
    pub fn heal(&self, host: &Host) {
        ip(&["-n", &self.bridge, "link", "set", &host.port, "up"])
            .expect("healing the cluster link");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
        // Gone with their peers' namespaces, normally.
        for link in &self.root_links {
            if ip_output(&["-o", "link", "show", link]).contains(link.as_str()) {
                let _ = ip(&["link", "del", link]);
            }
        }
    }
}

/// A process started inside a namespace, its output appended to a log file.
fn spawn_in(ns: &str, args: &[&str], extra: &[&Path], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_dron")]);
    command.args(args);
    for path in extra {
        command.arg(path);
    }
    command
        .env("DRON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting dron in a network namespace")
}

pub struct NsNode {
    pub id: u64,
    pub host: Host,
    pub data: tempfile::TempDir,
    child: Option<Child>,
}

impl NsNode {
    /// Its URL through its control link (from the test process).
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}:{PORT}{path}",
            self.host.control_ip.as_ref().unwrap()
        )
    }

    /// Its address on the cluster network (as its peers and the agent know it).
    pub fn cluster_url(&self) -> String {
        format!("http://{}:{PORT}", self.host.cluster_ip)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three (or more) servers, each in its own namespace.
pub struct NsCluster {
    pub nodes: Vec<NsNode>,
    pub http: reqwest::Client,
    // Dropped after the nodes (fields drop in order): the processes die before their
    // namespaces go.
    pub network: Network,
}

impl NsCluster {
    /// Starts `size` servers with `extra_toml` appended to their config files, and waits until
    /// they agree on a leader that schedules. Err: why namespaces are unavailable.
    pub async fn start(size: u8, extra_toml: &str) -> Result<NsCluster, String> {
        let mut network = Network::create()?;
        let mut nodes = Vec::new();
        for id in 1..=size {
            let host = network.host(&format!("n{id}"), id, true)?;
            nodes.push(NsNode {
                id: u64::from(id),
                host,
                data: tempfile::tempdir().expect("temp dir"),
                child: None,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.cluster_url()))
            .collect::<Vec<_>>()
            .join(",");
        for node in &mut nodes {
            let dir = node.data.path();
            let config = dir.join("dron.toml");
            std::fs::write(
                &config,
                format!(
                    "[scheduler]\nretry_backoff_ms = 200\n[agents]\nlocal = false\nheartbeat_ms = 100\ntimeout_ms = 10000\n{extra_toml}\n"
                ),
            )
            .unwrap();
            let secret = dir.join("cluster-secret");
            std::fs::write(&secret, SECRET).unwrap();
            let (data_dir, log) = (dir.join("data"), dir.join("server.log"));
            let listen = format!("0.0.0.0:{PORT}");
            let id = node.id.to_string();
            node.child = Some(spawn_in(
                &node.host.namespace,
                &[
                    "serve",
                    // A cluster network of test namespaces, without [auth]: trusted.
                    "--insecure-no-auth",
                    "--listen",
                    &listen,
                    "--node-id",
                    &id,
                    "--peers",
                    &peers,
                    "--config",
                ],
                &[
                    &config,
                    Path::new("--data-dir"),
                    &data_dir,
                    Path::new("--cluster-secret-file"),
                    &secret,
                ],
                &log,
            ));
        }
        let cluster = NsCluster {
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .unwrap(),
            network,
        };
        cluster.wait_for_leader(&[0, 1, 2]).await;
        Ok(cluster)
    }

    /// Every server's cluster address, as the agent takes them.
    pub fn server_list(&self) -> String {
        self.nodes
            .iter()
            .map(NsNode::cluster_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `GET /api/cluster` of one server, through its control link; None if it does not answer.
    pub async fn status(&self, index: usize) -> Option<Value> {
        let response = self
            .http
            .get(self.nodes[index].url("/api/cluster"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The index of the server that leads and schedules, as every server in `among` sees it.
    pub async fn leader(&self, among: &[usize]) -> Option<usize> {
        let mut agreed = None;
        for index in among {
            let status = self.status(*index).await?;
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

    /// Waits until the servers in `among` agree on a leader that schedules; answers its index.
    pub async fn wait_for_leader(&self, among: &[usize]) -> usize {
        wait_for(
            "the servers to agree on a leader",
            Duration::from_secs(60),
            || async { self.leader(among).await.is_some() },
        )
        .await;
        self.leader(among).await.unwrap()
    }

    /// A request to one server through its control link.
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

impl Drop for NsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
    }
}

/// A `dron agent` in a namespace of its own on the cluster network, knowing every server.
pub struct NsAgent {
    pub work_dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NsAgent {
    /// Starts the agent in namespace `dron-<pid>-a` (10.77.0.100).
    pub fn start(cluster: &mut NsCluster, name: &str, cpus: f64) -> NsAgent {
        let host = cluster
            .network
            .host("a", 100, false)
            .expect("the agent's namespace");
        let work_dir = tempfile::tempdir().expect("agent work dir");
        let (work, log) = (
            work_dir.path().join("work"),
            work_dir.path().join("agent.log"),
        );
        let cpus = cpus.to_string();
        let child = spawn_in(
            &host.namespace,
            &[
                "agent",
                "--server",
                &cluster.server_list(),
                "--name",
                name,
                "--cpus",
                &cpus,
                "--mem",
                "8192",
                "--disk",
                "10240",
                "--work-dir",
            ],
            &[&work],
            &log,
        );
        NsAgent {
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

impl Drop for NsAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        super::agents::kill_task_groups(&self.runs_root());
    }
}
