//! The nemesis's network: every server and every agent in a network namespace of its own,
//! joined by veth pairs to a bridge (in a namespace too), so that a partition is a real cut
//! of a link, not a killed process. As root, with iproute2.
//!
//! - Cluster network 10.78.0.0/24 on the bridge: agent-to-server and Raft traffic. A host is
//!   cut off by setting its bridge port down; two hosts are cut from each other only (each
//!   keeping its other links) by pointing each one's neighbour entry for the other at a MAC
//!   no host has.
//! - Each server's namespace also has a control veth to the root namespace (a /30 of its own
//!   in a free 10.1xx.x.0/24), through which this tool reaches it even while it is cut off.
//! - RabbitMQ listens on the root namespace's loopback only (and its `guest` user may only
//!   connect from there): a forwarder listens on 127.0.0.1:5672 inside each server's
//!   namespace and relays to the root namespace's 127.0.0.1:5672.
//!
//! Namespaces are named `dnem-<pid>-...`, deleted on drop (the processes in them killed
//! first); those of nemesis runs that died without cleaning up are deleted at start.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

const PREFIX: &str = "dnem-";
const CLUSTER_NET: &str = "10.78.0";
const AMQP_PORT: u16 = 5672;
/// A locally administered MAC that no host of the run has (see `Network::cut_between`).
const NOWHERE_MAC: &str = "02:00:00:00:00:01";

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `ip {}`", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Why network namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "nemesis needs root: it puts servers and agents in network namespaces (ip netns)"
                .into(),
        );
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("iproute2's `ip` is not available: {error}")),
    }
}

/// Deletes the namespaces of nemesis runs whose process is gone.
fn clean_stale() {
    for line in ip_output(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let owner = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("nemesis: deleting namespace {name}, left by process {pid} (gone)");
            delete_namespace(name);
        }
    }
}

/// Kills every process in namespace `name` (tasks included), then deletes it.
fn delete_namespace(name: &str) {
    for pid in ip_output(&["netns", "pids", name]).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// A namespace on the cluster network.
#[derive(Debug, Clone)]
pub struct Host {
    pub namespace: String,
    /// The bridge's end of its cluster veth (in the bridge's namespace): cut by setting it down.
    port: String,
    pub cluster_ip: String,
    /// Its address on its control link, seen from the root namespace.
    pub control_ip: Option<String>,
}

pub struct Network {
    pid: u32,
    bridge: String,
    namespaces: Vec<String>,
    root_links: Vec<String>,
    control_net: String,
}

impl Network {
    pub fn create() -> anyhow::Result<Network> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        clean_stale();
        let pid = std::process::id();
        let addresses = ip_output(&["-4", "-o", "addr"]);
        let control_net = (0..256u32)
            .map(|step| {
                let n = (pid + step) % (50 * 256);
                format!("10.{}.{}", 150 + n / 256, n % 256)
            })
            .find(|net| !addresses.contains(&format!("{net}.")))
            .context("no free 10.1xx.x.0/24 for the control links")?;
        let mut network = Network {
            pid,
            bridge: format!("{PREFIX}{pid}-br"),
            namespaces: Vec::new(),
            root_links: Vec::new(),
            control_net,
        };
        let bridge = network.bridge.clone();
        network.add_namespace(&bridge)?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        Ok(network)
    }

    fn add_namespace(&mut self, name: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A namespace `dnem-<pid>-<suffix>` at 10.78.0.`host`, with a control link if `control`.
    pub fn host(&mut self, suffix: &str, host: u8, control: bool) -> anyhow::Result<Host> {
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
        let address = format!("{cluster_ip}/24");
        ip(&["-n", &ns, "addr", "add", &address, "dev", "c0"])?;
        ip(&["-n", &ns, "link", "set", "c0", "up"])?;
        let control_ip = if control {
            Some(self.control_link(&ns, host)?)
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

    /// A veth from the root namespace into `ns`; answers the address inside.
    fn control_link(&mut self, ns: &str, host: u8) -> anyhow::Result<String> {
        let root_end = format!("dn{}k{host}", self.pid);
        ip(&[
            "link", "add", &root_end, "type", "veth", "peer", "name", "k0", "netns", ns,
        ])?;
        self.root_links.push(root_end.clone());
        let base = u32::from(host) * 4;
        let outside = format!("{}.{}/30", self.control_net, base + 1);
        let inside = format!("{}.{}", self.control_net, base + 2);
        ip(&["addr", "add", &outside, "dev", &root_end])?;
        ip(&["link", "set", &root_end, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{inside}/30"),
            "dev",
            "k0",
        ])?;
        ip(&["-n", ns, "link", "set", "k0", "up"])?;
        Ok(inside)
    }

    /// Cuts `host` off the cluster network: what it sends is dropped, not refused.
    pub fn cut(&self, host: &Host) -> anyhow::Result<()> {
        ip(&["-n", &self.bridge, "link", "set", &host.port, "down"])
    }

    pub fn heal(&self, host: &Host) -> anyhow::Result<()> {
        ip(&["-n", &self.bridge, "link", "set", &host.port, "up"])
    }

    /// Cuts the link between `a` and `b` only, both ways, each keeping its other links: each
    /// is told that the other's address is at a MAC no host has, so what they send each
    /// other is flooded by the bridge and dropped by every host, silently (this VM's kernel
    /// has no netfilter or tc actions to drop it with).
    pub fn cut_between(&self, a: &Host, b: &Host) -> anyhow::Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            ip(&[
                "-n",
                &from.namespace,
                "neigh",
                "replace",
                &to.cluster_ip,
                "lladdr",
                NOWHERE_MAC,
                "dev",
                "c0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Undoes `cut_between`: each finds the other again by ARP.
    pub fn heal_between(&self, a: &Host, b: &Host) -> anyhow::Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            ip(&[
                "-n",
                &from.namespace,
                "neigh",
                "del",
                &to.cluster_ip,
                "dev",
                "c0",
            ])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
        for link in &self.root_links {
            if ip_output(&["-o", "link", "show", link]).contains(link.as_str()) {
                let _ = ip(&["link", "del", link]);
            }
        }
    }
}

/// Relays 127.0.0.1:5672 inside namespace `ns` to RabbitMQ on the root namespace's loopback,
/// for as long as the runtime runs.
pub fn forward_amqp(ns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{ns}");
    // A socket belongs to the namespace it was made in: bind it from a thread that entered
    // `ns`, then accept (and connect onwards) from the runtime's threads, in the root one.
    let listener = std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: a valid namespace fd; setns affects only this thread, which ends here.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", AMQP_PORT))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))??;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        while let Ok((mut inside, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outside) =
                    tokio::net::TcpStream::connect(("127.0.0.1", AMQP_PORT)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::{Host, Network, unavailable};

    /// Whether `from` opens a TCP connection to `to`'s port 8000 within a second.
    fn connects(from: &Host, to: &Host) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/8000", to.cluster_ip);
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &from.namespace,
                "timeout",
                "1",
                "bash",
                "-c",
            ])
            .arg(script)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn connects_within(from: &Host, to: &Host, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if connects(from, to) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn listen(host: &Host) -> Child {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.namespace,
                "python3",
                "-m",
                "http.server",
            ])
            .args(["8000", "--bind", &host.cluster_ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 starts")
    }

    /// The split of a majority: two hosts cut from each other stay linked to a third.
    #[test]
    fn a_cut_between_two_hosts_leaves_their_other_links() {
        if let Some(why) = unavailable() {
            assert!(std::env::var_os("DRON_REQUIRE_NETNS").is_none(), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
        let mut network = Network::create().unwrap();
        let a = network.host("ta", 201, false).unwrap();
        let b = network.host("tb", 202, false).unwrap();
        let c = network.host("tc", 203, false).unwrap();
        let mut listeners = [listen(&b), listen(&c)];
        let wait = Duration::from_secs(10);
        assert!(connects_within(&a, &b, wait) && connects_within(&a, &c, wait));
        network.cut_between(&a, &b).unwrap();
        assert!(!connects(&a, &b), "a still reaches b");
        assert!(
            connects(&a, &c) && connects(&c, &b),
            "a cut took other links"
        );
        network.heal_between(&a, &b).unwrap();
        assert!(
            connects_within(&a, &b, wait),
            "the heal did not restore a to b"
        );
        for listener in &mut listeners {
            let _ = listener.kill();
            let _ = listener.wait();
        }
    }
}
