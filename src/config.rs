//! Server configuration: the file given with `--config FILE` (`scripts/serve.sh` passes
//! `config/dron.toml`, which lists every key with its default), then command-line flags.
//! Without `--config`, the defaults below apply.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use dron_actors::notify::WebhookTarget;
use dron_model::notice::{NoticeKind, validate_webhook_url};
use serde::Deserialize;

pub use crate::http::roles::Role;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where shards, run directories and the shard count live.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Shards of a new data directory. An existing one keeps its own count, changed online
    /// with `dron shards set N`.
    pub shards: u32,
    pub scheduler: SchedulerConfig,
    /// Enables `POST /api/debug/shards/{n}/panic`. For tests only.
    pub fault_injection: bool,
    pub auth: AuthConfig,
    /// Serve a non-loopback address without `[auth]` (`--insecure-no-auth`): refused
    /// otherwise, since anyone who reaches the port could run commands (docs/security.md).
    pub insecure_no_auth: bool,
    /// Names (besides loopback ones) that requests to a server listening on a loopback
    /// address may carry in `Host`, e.g. behind a local reverse proxy; other names are
    /// refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    pub events: EventsConfig,
    pub notify: NotifyConfig,
    pub agents: AgentsConfig,
    pub cluster: ClusterConfig,
    pub retention: RetentionConfig,
    /// HTTPS: the server's certificate and key, and the CA its own clients (a cluster's
    /// servers talking to each other) trust.
    pub tls: TlsConfig,
    /// Whether and how the local agent runs jobs with a `container` (podman or docker).
    pub containers: crate::agent::containers::ContainersConfig,
    /// How the server writes its log lines (`--log-format`): text, or JSON lines.
    pub log_format: crate::logging::LogFormat,
}

/// What is pruned, and when (src/retention). Durations are ISO 8601 (`P7D`, `PT30S`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// A run (its history entry and its run directory) goes once it is older than `max_age`
    /// and not among its job's newest `keep_runs`.
    pub keep_runs: usize,
    pub max_age: String,
    /// A satisfied resource goes this long after its logical time.
    pub resources_max_age: String,
    /// A delivered notice goes this long after it was made.
    pub notices_max_age: String,
    /// How often a pruning pass starts.
    pub interval: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_runs: 100,
            max_age: "P7D".into(),
            resources_max_age: "P30D".into(),
            notices_max_age: "P30D".into(),
            interval: "PT1M".into(),
        }
    }
}

impl RetentionConfig {
    /// The settings in milliseconds, or the first one that is not a positive duration.
    pub fn policy(&self) -> anyhow::Result<crate::retention::Policy> {
        let ms = |name: &str, text: &str| -> anyhow::Result<i64> {
            let ms = dron_model::job::parse_duration_ms(text)
                .map_err(|error| anyhow::anyhow!("retention.{name} = {text:?}: {error}"))?;
            anyhow::ensure!(ms > 0, "retention.{name} must be longer than zero");
            Ok(ms)
        };
        Ok(crate::retention::Policy {
            keep_runs: self.keep_runs,
            max_age_ms: ms("max_age", &self.max_age)?,
            resources_max_age_ms: ms("resources_max_age", &self.resources_max_age)?,
            notices_max_age_ms: ms("notices_max_age", &self.notices_max_age)?,
            interval_ms: ms("interval", &self.interval)?,
        })
    }
}

/// Where tasks run: the server's own agent, remote `dron agent` processes, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "AgentsFile")]
pub struct AgentsConfig {
    /// Run tasks on an agent inside the server process too: as the file says, else on for a
    /// single server and off in a cluster (settled by [`Config::settle`]).
    pub local: bool,
    /// `local` as the file gives it; None: the default for this server's mode.
    local_setting: Option<bool>,
    /// What the local agent offers; 0: the machine's cores, memory and free disk (MB).
    pub local_cpus: f64,
    pub local_mem_mb: f64,
    pub local_disk_mb: f64,
    /// How often remote agents heartbeat.
    pub heartbeat_ms: u64,
    /// A remote agent silent this long is lost: its tasks are retried on other agents
    /// while their epsilon allows.
    pub timeout_ms: i64,
    /// Dominant Resource Fairness weights by job owner (default 1): an owner of weight 2
    /// gets twice the dominant share of one of weight 1 when both wait for resources.
    pub weights: std::collections::HashMap<String, f64>,
    /// The most a remote agent may offer: a registration offering more is refused, so that
    /// a bogus offer cannot win every placement.
    pub max_offer: dron_model::demand::Resources,
    /// A file holding the key this server proves its epoch with to agents that connect over
    /// plain ws:// (`dron agent --epoch-key-file`, the same key): see docs/security.md.
    pub epoch_key_file: Option<PathBuf>,
    /// Messages waiting to be written to one agent's connection, at most: while that many
    /// wait, nothing more is placed on the agent (it reads too slowly, or not at all).
    pub outbox_messages: usize,
}

/// `[agents]` as written: `local` may be left out, and its default depends on the cluster.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    local: Option<bool>,
    local_cpus: Option<f64>,
    local_mem_mb: Option<f64>,
    local_disk_mb: Option<f64>,
    heartbeat_ms: Option<u64>,
    timeout_ms: Option<i64>,
    #[serde(default)]
    weights: std::collections::HashMap<String, f64>,
    max_cpus: Option<f64>,
    max_mem_mb: Option<f64>,
    max_disk_mb: Option<f64>,
    epoch_key_file: Option<PathBuf>,
    outbox_messages: Option<usize>,
}

impl From<AgentsFile> for AgentsConfig {
    fn from(file: AgentsFile) -> Self {
        let defaults = AgentsConfig::default();
        AgentsConfig {
            local: file.local.unwrap_or(defaults.local),
            local_setting: file.local,
            local_cpus: file.local_cpus.unwrap_or(defaults.local_cpus),
            local_mem_mb: file.local_mem_mb.unwrap_or(defaults.local_mem_mb),
            local_disk_mb: file.local_disk_mb.unwrap_or(defaults.local_disk_mb),
            heartbeat_ms: file.heartbeat_ms.unwrap_or(defaults.heartbeat_ms),
            timeout_ms: file.timeout_ms.unwrap_or(defaults.timeout_ms),
            weights: file.weights,
            max_offer: dron_model::demand::Resources::new(
                file.max_cpus.unwrap_or(defaults.max_offer.cpus),
                file.max_mem_mb.unwrap_or(defaults.max_offer.mem),
                file.max_disk_mb.unwrap_or(defaults.max_offer.disk),
            ),
            epoch_key_file: file.epoch_key_file,
            outbox_messages: file.outbox_messages.unwrap_or(defaults.outbox_messages),
        }
    }
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            local: true,
            local_setting: None,
            local_cpus: 0.0,
            local_mem_mb: 0.0,
            local_disk_mb: 0.0,
            heartbeat_ms: 1000,
            timeout_ms: 15_000,
            weights: Default::default(),
            // 1,024 cores, 16 TiB of memory, 1 PiB of disk: more than any one machine.
            max_offer: dron_model::demand::Resources::new(
                1024.0,
                16.0 * 1024.0 * 1024.0,
                1024.0 * 1024.0 * 1024.0,
            ),
            epoch_key_file: None,
            outbox_messages: dron_actors::broker::AGENT_OUTBOX,
        }
    }
}

impl AgentsConfig {
    /// The key this server proves its epoch with to agents, read from its file.
    pub fn epoch_key(&self) -> anyhow::Result<Option<crate::agent::epoch::EpochKey>> {
        let key = self.epoch_key_file.as_deref();
        key.map(crate::agent::epoch::EpochKey::load).transpose()
    }

    /// The local agent's offer: the configured amounts, the machine's for those left at 0.
    pub fn local_resources(&self, data_dir: &Path) -> dron_model::demand::Resources {
        let machine = crate::agent::machine::machine_resources(data_dir);
        let or_machine = |set: f64, measured: f64| if set > 0.0 { set } else { measured };
        dron_model::demand::Resources::new(
            or_machine(self.local_cpus, machine.cpus),
            or_machine(self.local_mem_mb, machine.mem),
            or_machine(self.local_disk_mb, machine.disk),
        )
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.heartbeat_ms >= 50,
            "agents.heartbeat_ms must be at least 50"
        );
        anyhow::ensure!(
            self.timeout_ms > 2 * self.heartbeat_ms as i64,
            "agents.timeout_ms must exceed two heartbeats"
        );
        let amounts = [self.local_cpus, self.local_mem_mb, self.local_disk_mb];
        anyhow::ensure!(
            amounts.iter().all(|v| v.is_finite() && *v >= 0.0),
            "agents.local_* must be numbers >= 0"
        );
        let max = self.max_offer;
        anyhow::ensure!(
            [max.cpus, max.mem, max.disk]
                .iter()
                .all(|v| v.is_finite() && *v > 0.0),
            "agents.max_cpus, max_mem_mb and max_disk_mb must be positive numbers"
        );
        anyhow::ensure!(
            self.weights.values().all(|w| w.is_finite() && *w > 0.0),
            "agents.weights must be positive"
        );
        Ok(())
    }
}

/// `[tls]`: HTTPS and wss:// on the server's one port (docs/security.md, docs/operations.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// Its private key, PEM PKCS#8 (`--tls-key`).
    pub key: Option<PathBuf>,
    /// The CA certificates (PEM) this server trusts when it calls the cluster's other
    /// servers (`--ca-file`); none: the system's.
    pub ca: Option<PathBuf>,
}

impl TlsConfig {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.cert.is_some() == self.key.is_some(),
            "tls: give both the certificate and its key (--tls-cert and --tls-key, or cert and \
             key under [tls]), or neither"
        );
        self.peer_ca()?;
        Ok(())
    }

    /// How this server's URLs begin: `https` with a certificate, else `http`.
    pub fn scheme(&self) -> &'static str {
        match self.cert {
            Some(_) => "https",
            None => "http",
        }
    }

    /// The server's TLS, read from the files; None: plain HTTP.
    pub fn server(&self) -> anyhow::Result<Option<crate::tls::ServerTls>> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::ServerTls::load(cert, key)?)),
            _ => Ok(None),
        }
    }

    /// The CA the server's own clients trust, read from its file; None: the system's.
    pub fn peer_ca(&self) -> anyhow::Result<Option<crate::tls::TrustedCa>> {
        crate::tls::TrustedCa::load_optional(self.ca.as_deref()).context("tls: ca")
    }
}

/// A cluster of servers over one Raft log (docs/cluster.md). Without `peers` this server is a
/// single server, exactly as before clusters existed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This server's id among the peers (`--node-id`).
    pub node_id: Option<u64>,
    /// Every server of the cluster, this one included: node id → its HTTP base URL, e.g.
    /// `{ 1 = "http://10.0.0.1:4400", 2 = "http://10.0.0.2:4400", 3 = "http://10.0.0.3:4400" }`
    /// (`--peers 1=URL,2=URL,3=URL`). Raft traffic rides on the same port under `/internal/`.
    #[serde(deserialize_with = "node_map")]
    pub peers: BTreeMap<u64, String>,
    /// A file holding the secret the servers authenticate their Raft traffic with (at least
    /// 16 bytes, surrounding whitespace ignored); required with `peers`
    /// (`--cluster-secret-file`).
    pub secret_file: Option<PathBuf>,
    /// How often the leader heartbeats its followers.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time between this and twice this starts
    /// an election.
    pub election_timeout_ms: u64,
    /// A new server that waits to be added (`dron cluster add-node`) instead of founding a
    /// cluster of its own: it never initializes a log, and `peers` may be left out
    /// (`--join`). Harmless once it is a member: its log then rules.
    pub join: bool,
    /// A snapshot of the replicated state is taken after this many log entries since the
    /// last one (0: never); the log behind it is then dropped, but for
    /// `entries_kept_after_snapshot` entries.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot, so that a server a little behind catches up from
    /// the log; one further behind (or a new one) gets the snapshot.
    pub entries_kept_after_snapshot: u64,
}

/// The least length of the cluster secret, in bytes.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            peers: BTreeMap::new(),
            secret_file: None,
            // A dead leader is replaced after openraft's leader lease (the longest election
            // timeout) plus one election timeout: about 2-2.5 s with these (docs/cluster.md).
            heartbeat_ms: 150,
            election_timeout_ms: 600,
            join: false,
            snapshot_after_entries: 50_000,
            entries_kept_after_snapshot: 10_000,
        }
    }
}

impl ClusterConfig {
    /// Whether this server is one of a cluster (peers are given, or it joins one).
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty() || self.join
    }

    /// The upper end of the election timeout's random range: twice `election_timeout_ms`.
    pub fn election_timeout_max_ms(&self) -> u64 {
        self.election_timeout_ms.saturating_mul(2)
    }

    /// This server's own address among the peers.
    pub fn this_address(&self) -> Option<&str> {
        self.peers.get(&self.node_id?).map(String::as_str)
    }

    /// The cluster secret, read from `secret_file` and trimmed.
    pub fn secret(&self) -> anyhow::Result<Arc<str>> {
        let Some(path) = &self.secret_file else {
            anyhow::bail!(
                "cluster: a secret file is required with --peers or --join (--cluster-secret-file \
                 FILE, or secret_file under [cluster]): the servers authenticate their Raft \
                 traffic with it"
            );
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cluster: reading the secret file {}", path.display()))?;
        let secret = text.trim();
        anyhow::ensure!(
            secret.len() >= MIN_CLUSTER_SECRET_BYTES,
            "cluster: the secret in {} is {} bytes long; at least {MIN_CLUSTER_SECRET_BYTES} are \
             needed (e.g. `head -c 32 /dev/urandom | base64 > {}`, the same file on every server)",
            path.display(),
            secret.len(),
            path.display()
        );
        Ok(Arc::from(secret))
    }

    /// Checks what can be checked of the section alone, cluster or not.
    fn validate_timing(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.heartbeat_ms >= 10,
            "cluster.heartbeat_ms must be at least 10 (it is {})",
            self.heartbeat_ms
        );
        anyhow::ensure!(
            self.election_timeout_ms >= 3 * self.heartbeat_ms,
            "cluster.election_timeout_ms ({}) must be at least three heartbeats \
             (3 x cluster.heartbeat_ms = {}): followers would elect a new leader between two \
             heartbeats of a live one",
            self.election_timeout_ms,
            3 * self.heartbeat_ms
        );
        Ok(())
    }

    /// Checks the section once flags are applied: ids, addresses, the secret.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_timing()?;
        if !self.enabled() {
            // A server meant to be a member but started without its peers would schedule
            // on its own beside the cluster: every job would run twice.
            anyhow::ensure!(
                self.node_id.is_none(),
                "cluster: --node-id (cluster.node_id) is given without --peers (cluster.peers): \
                 this server would run alone beside its cluster and every job would run twice; \
                 give the peers, or neither"
            );
            return Ok(());
        }
        let ids = || {
            let ids: Vec<String> = self.peers.keys().map(u64::to_string).collect();
            ids.join(", ")
        };
        let Some(node_id) = self.node_id else {
            if self.join {
                anyhow::bail!(
                    "cluster: --node-id (cluster.node_id) is required with --join: the id the \
                     cluster will know this server by (`dron cluster add-node ID ADDRESS`)"
                );
            }
            anyhow::bail!(
                "cluster: --node-id (cluster.node_id) is required with --peers: which of the \
                 peers ({}) is this server?",
                ids()
            );
        };
        // A joining server is added by the leader, under the id it is given there.
        anyhow::ensure!(
            self.join || self.peers.contains_key(&node_id),
            "cluster: node id {node_id} is not among the peers ({}): list this server in \
             --peers too, with its own address",
            ids()
        );
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for (id, address) in &self.peers {
            validate_peer_address(*id, address)?;
            let key = address.trim_end_matches('/').to_ascii_lowercase();
            if let Some(other) = seen.insert(key, *id) {
                anyhow::bail!(
                    "cluster.peers: nodes {other} and {id} have the same address {address}"
                );
            }
        }
        self.secret()?;
        Ok(())
    }
}

/// A peer's address: an http(s) base URL with a host, and no path, query or fragment.
fn validate_peer_address(id: u64, address: &str) -> anyhow::Result<()> {
    node_address_problem(address).map_or(Ok(()), |what| {
        Err(anyhow::anyhow!(
            "cluster.peers: node {id}'s address '{address}' {what} (the server's HTTP base URL, \
             e.g. http://10.0.0.1:4400)"
        ))
    })
}

/// What is wrong with a cluster node's address, if anything: it must be an http(s) base URL
/// with a host, and no path, query, fragment or credentials. (`--peers`, and the nodes
/// `dron cluster add-node` adds.)
pub fn node_address_problem(address: &str) -> Option<String> {
    let url = match reqwest::Url::parse(address) {
        Ok(url) => url,
        Err(error) => return Some(format!("is not a URL: {error}")),
    };
    let problem = if !matches!(url.scheme(), "http" | "https") {
        "must be an http:// or https:// URL"
    } else if url.host_str().is_none_or(str::is_empty) {
        "has no host"
    } else if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        "must have no path, query or fragment"
    } else if !url.username().is_empty() || url.password().is_some() {
        "must not carry credentials"
    } else {
        return None;
    };
    Some(problem.to_string())
}

/// `--peers 1=http://a:4400,2=http://b:4400`: node id → address.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, address)) = pair.split_once('=') else {
            return Err(format!(
                "peer '{pair}' is not ID=URL (e.g. 1=http://10.0.0.1:4400)"
            ));
        };
        let id = parse_node_id(id.trim())?;
        let address = address.trim().to_string();
        if peers.insert(id, address).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(peers)
}

fn parse_node_id(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not a node id (a whole number, e.g. 1)"))
}

/// `[cluster] peers`: TOML keys are strings; each must be a node id.
fn node_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u64, String>, D::Error> {
    let by_text = BTreeMap::<String, String>::deserialize(deserializer)?;
    by_text
        .into_iter()
        .map(|(id, address)| {
            Ok((
                parse_node_id(&id).map_err(serde::de::Error::custom)?,
                address,
            ))
        })
        .collect()
}

/// Failure notifications: mail to each job's owner, and webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where links in messages point; default `http://<listen address>` (the API).
    pub ui_url: Option<String>,
    /// Flood control: per job and channel, at most one message at once and one digest per
    /// window. 0 sends every notice alone.
    pub digest_window_secs: u64,
    /// Also mail the owner when a job succeeds after failures.
    pub mail_on_recovery: bool,
    /// Signs the jobs' own webhooks (`notifyWebhooks`).
    pub job_webhook_secret: Option<String>,
    /// Notices kept for `GET /api/notifications` (undelivered ones are always kept).
    pub keep: usize,
    /// Attempts per message before giving up, and the delay between them (doubling).
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Lines of a failed run's stderr quoted in its message.
    pub stderr_tail_lines: usize,
    pub smtp: Option<SmtpConfig>,
    pub webhooks: Vec<WebhookConfig>,
    /// Hosts the jobs' webhooks and the notifications test may post to (`name`,
    /// `*.suffix`, `*`), besides those of `webhooks`; private addresses only when listed by
    /// name or address. Empty: none.
    pub webhook_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    /// Upgrade the connection with STARTTLS (required when set).
    #[serde(default)]
    pub starttls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, e.g. `dron <dron@example.com>`.
    pub from: String,
    /// How long one SMTP exchange may take.
    #[serde(default = "smtp_timeout_secs")]
    pub timeout_secs: u64,
}

fn smtp_port() -> u16 {
    25
}

fn smtp_timeout_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Of `failed`, `timed_out`, `expired`, `skipped`, `recovered`; default all.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Signs each body: `X-Dron-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub secret: Option<String>,
}

fn all_events() -> Vec<String> {
    NoticeKind::EVENTS
        .iter()
        .map(|kind| kind.as_str().to_string())
        .collect()
}

impl Default for NotifyConfig {
    fn default() -> Self {
        let defaults = dron_actors::notify::NotifyConfig::default();
        NotifyConfig {
            ui_url: None,
            digest_window_secs: (defaults.digest_window_ms / 1000) as u64,
            mail_on_recovery: defaults.mail_on_recovery,
            job_webhook_secret: None,
            keep: defaults.keep,
            max_attempts: defaults.max_attempts,
            retry_backoff_ms: defaults.retry_backoff_ms,
            retry_backoff_max_ms: defaults.retry_backoff_max_ms,
            stderr_tail_lines: defaults.stderr_tail_lines,
            smtp: None,
            webhooks: Vec::new(),
            webhook_hosts: Vec::new(),
        }
    }
}

impl NotifyConfig {
    /// Where webhooks may go: `webhook_hosts` and the configured webhooks' hosts.
    pub fn allowed_webhook_hosts(&self) -> crate::notify::hosts::WebhookHosts {
        let configured = self.webhooks.iter().map(|hook| hook.url.as_str());
        crate::notify::hosts::WebhookHosts::new(&self.webhook_hosts, configured)
    }

    /// Checks what the types do not: webhook URLs and event names, the SMTP sender.
    fn validate(&self) -> anyhow::Result<()> {
        for hook in &self.webhooks {
            validate_webhook_url("url", &hook.url)
                .map_err(|e| anyhow::anyhow!("[[notify.webhooks]] {e}"))?;
            for event in &hook.events {
                anyhow::ensure!(
                    NoticeKind::parse(event).is_some_and(|k| k != NoticeKind::Test),
                    "[[notify.webhooks]] {}: unknown event '{event}' (known: {})",
                    hook.url,
                    all_events().join(", ")
                );
            }
        }
        if let Some(smtp) = &self.smtp {
            anyhow::ensure!(
                !smtp.host.is_empty(),
                "[notify.smtp] host must not be empty"
            );
            anyhow::ensure!(
                smtp.username.is_some() == smtp.password.is_some(),
                "[notify.smtp] give both username and password, or neither"
            );
        }
        anyhow::ensure!(
            self.max_attempts >= 1,
            "[notify] max_attempts must be at least 1"
        );
        Ok(())
    }

    /// The notifier's settings; `base_url` is the API's (`http(s)://` its bound address), for
    /// default links.
    pub fn actor_config(&self, base_url: &str) -> dron_actors::notify::NotifyConfig {
        let webhooks = self.webhooks.iter().map(|hook| WebhookTarget {
            url: hook.url.clone(),
            events: hook
                .events
                .iter()
                .filter_map(|e| NoticeKind::parse(e))
                .collect(),
            secret: hook.secret.clone(),
        });
        dron_actors::notify::NotifyConfig {
            ui_url: self.ui_url.clone().unwrap_or_else(|| base_url.to_string()),
            digest_window_ms: (self.digest_window_secs.min(86_400 * 7) * 1000) as i64,
            mail_on_recovery: self.mail_on_recovery,
            email: self.smtp.is_some(),
            test_recipient: self.smtp.as_ref().map(|smtp| smtp.from.clone()),
            webhooks: webhooks.collect(),
            job_webhook_secret: self.job_webhook_secret.clone(),
            keep: self.keep.max(1),
            retry_backoff_ms: self.retry_backoff_ms.max(1),
            retry_backoff_max_ms: self.retry_backoff_max_ms.max(1),
            max_attempts: self.max_attempts.max(1),
            stderr_tail_lines: self.stderr_tail_lines,
        }
    }
}

/// Resource events. Without `amqp_url` they travel in process only (and over HTTP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp_url: Option<String>,
    /// The durable topic exchange frameworks publish to.
    pub exchange: String,
    /// This server's durable queue; default `dron.<server id>` (the id is kept in the data
    /// directory, so a restarted server finds the events that waited for it).
    pub queue: Option<String>,
    /// Take `job:` events published on the exchange by others than this server (another
    /// dron, a tool): off by default, since such an event counts as a job's success.
    pub outside_job_events: bool,
    /// Events waiting in memory for RabbitMQ to confirm them, at most; the others wait on
    /// disk (they are recorded before they are published) until there is room.
    pub publish_queue: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            amqp_url: None,
            exchange: "dron.resources".to_string(),
            queue: None,
            outside_job_events: false,
            publish_queue: dron_actors::bus::PUBLISH_QUEUE,
        }
    }
}

/// Optional API authentication. With no user and no token, every endpoint is open; with
/// any, all but `/health` and `/ping` need `Authorization: Basic ..` or `Bearer <token>`.
/// Each credential has a role (`crate::http::roles`), admin unless said.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub basic: Vec<BasicUser>,
    pub tokens: Vec<ApiToken>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    pub user: String,
    pub password: String,
    #[serde(default)]
    pub role: Role,
}

/// A bearer token: `"TOKEN"` (admin, as every token was before roles) or
/// `{ token = "TOKEN", role = "read" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ApiToken {
    Admin(String),
    WithRole(RoleToken),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleToken {
    pub token: String,
    pub role: Role,
}

impl ApiToken {
    pub fn secret(&self) -> &str {
        match self {
            ApiToken::Admin(token) => token,
            ApiToken::WithRole(with_role) => &with_role.token,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            ApiToken::Admin(_) => Role::Admin,
            ApiToken::WithRole(with_role) => with_role.role,
        }
    }
}

impl From<&str> for ApiToken {
    fn from(token: &str) -> ApiToken {
        ApiToken::Admin(token.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Cap on each of a run's stdout and stderr files, in bytes.
    pub output_cap_bytes: u64,
    /// Finished runs and skipped ranges kept per job.
    pub history_keep: usize,
    /// First retry delay in milliseconds; doubles per attempt.
    pub retry_backoff_ms: i64,
    pub retry_backoff_max_ms: i64,
    /// Targets one backfill (`POST /api/jobs/{name}/backfill`) may have, at most.
    pub backfill_max_targets: u64,
    /// Runs each shard may have launching (started, not yet reported running by an agent);
    /// past it the shard's due targets wait in their jobs' next targets (at least 1).
    pub max_launching: usize,
}

/// Two shards per core (at least 2, at most 64). Measured on 2 cores with the built-in task
/// (docs/benchmarks.md): 4 shards held 24,000 instances/s, 2 held 20,000 and 8 fell short of
/// 20,000. More shards than that cost batching (each has its own writer and WAL sync) and
/// buy no parallelism; fewer leave a core idle while a shard waits on its sync.
fn default_shards() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    (2 * cores).clamp(2, 64)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 4400)),
            shards: default_shards(),
            scheduler: SchedulerConfig::default(),
            fault_injection: false,
            auth: AuthConfig::default(),
            insecure_no_auth: false,
            allowed_hosts: Vec::new(),
            events: EventsConfig::default(),
            notify: NotifyConfig::default(),
            agents: AgentsConfig::default(),
            cluster: ClusterConfig::default(),
            retention: RetentionConfig::default(),
            tls: TlsConfig::default(),
            containers: Default::default(),
            log_format: crate::logging::LogFormat::default(),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let defaults = dron_actors::coordinator::ShardConfig::default();
        SchedulerConfig {
            output_cap_bytes: defaults.output_cap_bytes,
            history_keep: defaults.history_keep,
            retry_backoff_ms: defaults.retry_backoff_ms,
            retry_backoff_max_ms: defaults.retry_backoff_max_ms,
            backfill_max_targets: dron_actors::backfill::DEFAULT_MAX_TARGETS,
            max_launching: defaults.max_launching,
        }
    }
}

impl SchedulerConfig {
    pub fn shard_config(&self) -> dron_actors::coordinator::ShardConfig {
        dron_actors::coordinator::ShardConfig {
            output_cap_bytes: self.output_cap_bytes,
            history_keep: self.history_keep.max(1),
            retry_backoff_ms: self.retry_backoff_ms.max(0),
            retry_backoff_max_ms: self.retry_backoff_max_ms.max(0),
            max_launching: self.max_launching.max(1),
            ..Default::default()
        }
    }
}

impl Config {
    /// Reads `path`; a missing file is an error only when the path was given explicitly.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        anyhow::ensure!(config.shards >= 1, "shards must be at least 1");
        anyhow::ensure!(
            config.auth.tokens.iter().all(|t| !t.secret().is_empty()),
            "auth tokens must not be empty"
        );
        config.notify.validate()?;
        config.agents.validate()?;
        config.cluster.validate_timing()?;
        config.retention.policy()?;
        config.containers.validate()?;
        config.agents.local = config.local_agent()?;
        Ok(config)
    }

    /// Settles what depends on settings given apart (the file, then flags): the local
    /// agent's default, and the cluster's checks (node id among the peers, their addresses,
    /// the secret). `dron serve` calls it once the flags are applied.
    pub fn settle(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.shards >= 1, "shards must be at least 1");
        self.cluster.validate()?;
        self.tls.validate()?;
        self.agents.local = self.local_agent()?;
        self.check_exposure()
    }

    /// Whether the API asks for credentials (`[auth]` has a user or a token).
    pub fn auth_on(&self) -> bool {
        !self.auth.basic.is_empty() || !self.auth.tokens.is_empty()
    }

    /// Refuses to serve, without auth, an address other machines reach: anyone there could
    /// post a job, a command run as the server's user. `--insecure-no-auth` overrides.
    fn check_exposure(&self) -> anyhow::Result<()> {
        let exposed = !self.listen.ip().is_loopback() && !self.auth_on();
        anyhow::ensure!(
            !exposed || self.insecure_no_auth,
            "refusing to listen on {} without authentication: anyone who reaches it could run \
             commands here. Configure [auth] tokens or basic users (docs/security.md), listen on \
             127.0.0.1, or pass --insecure-no-auth if the network is trusted",
            self.listen
        );
        Ok(())
    }

    /// Whether remote agents may connect without a credential: only where the server trusts
    /// its network (no API auth, and a loopback address or `--insecure-no-auth`).
    pub fn tokenless_agents(&self) -> bool {
        !self.auth_on() && (self.listen.ip().is_loopback() || self.insecure_no_auth)
    }

    /// Whether the server runs a local agent: as configured; by default on for a single
    /// server, off in a cluster, where it is refused.
    fn local_agent(&self) -> anyhow::Result<bool> {
        let cluster = self.cluster.enabled();
        match self.agents.local_setting {
            Some(true) if cluster => anyhow::bail!(
                "agents.local = true is refused in a cluster: a task started by a server's own \
                 agent cannot be adopted by another server after a failover, so it would run \
                 twice. Run `dron agent --server URL1,URL2,URL3` processes instead (and leave \
                 agents.local unset or false)"
            ),
            Some(local) => Ok(local),
            None => Ok(!cluster),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_and_matches_the_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dron.toml");
        let config = Config::load(Some(&shipped)).unwrap();
        let defaults = Config::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.shards, defaults.shards);
        assert_eq!(config.data_dir, defaults.data_dir);
        assert_eq!(config.log_format, defaults.log_format);
        assert_eq!(
            config.scheduler.backfill_max_targets,
            defaults.scheduler.backfill_max_targets
        );
        assert_eq!(
            config.scheduler.max_launching,
            defaults.scheduler.max_launching
        );
        assert!(config.auth.basic.is_empty() && config.auth.tokens.is_empty());
        let (notify, default_notify) = (&config.notify, &defaults.notify);
        assert_eq!(notify.digest_window_secs, default_notify.digest_window_secs);
        assert_eq!(notify.keep, default_notify.keep);
        assert_eq!(notify.max_attempts, default_notify.max_attempts);
        assert_eq!(notify.retry_backoff_ms, default_notify.retry_backoff_ms);
        assert_eq!(
            notify.retry_backoff_max_ms,
            default_notify.retry_backoff_max_ms
        );
        assert_eq!(notify.stderr_tail_lines, default_notify.stderr_tail_lines);
        assert_eq!(notify.mail_on_recovery, default_notify.mail_on_recovery);
        assert!(notify.smtp.is_none() && notify.webhooks.is_empty());
        let (agents, default_agents) = (&config.agents, &defaults.agents);
        assert_eq!(agents.local, default_agents.local);
        assert_eq!(agents.local_cpus, default_agents.local_cpus);
        assert_eq!(agents.heartbeat_ms, default_agents.heartbeat_ms);
        assert_eq!(agents.timeout_ms, default_agents.timeout_ms);
        assert!(agents.weights.is_empty());
        assert_eq!(
            config.retention.policy().unwrap(),
            defaults.retention.policy().unwrap()
        );
        let (cluster, default_cluster) = (&config.cluster, &defaults.cluster);
        assert!(!cluster.enabled() && cluster.node_id.is_none() && cluster.secret_file.is_none());
        assert_eq!(cluster.heartbeat_ms, default_cluster.heartbeat_ms);
        assert_eq!(
            cluster.election_timeout_ms,
            default_cluster.election_timeout_ms
        );
        assert_eq!(
            (
                cluster.join,
                cluster.snapshot_after_entries,
                cluster.entries_kept_after_snapshot
            ),
            (
                default_cluster.join,
                default_cluster.snapshot_after_entries,
                default_cluster.entries_kept_after_snapshot
            )
        );
    }

    #[test]
    fn agents_parse_and_validate() {
        let text = "[agents]\nlocal = false\nlocal_cpus = 4\ntimeout_ms = 5000\n[agents.weights]\n\"a@x\" = 2.5\n";
        let config: Config = toml::from_str(text).unwrap();
        config.agents.validate().unwrap();
        assert!(!config.agents.local);
        assert_eq!(config.agents.weights["a@x"], 2.5);
        let local = config.agents.local_resources(Path::new("/"));
        assert_eq!(local.cpus, 4.0);
        assert!(local.mem > 0.0, "the machine's memory where not set");
        let bad = toml::from_str::<Config>("[agents]\ntimeout_ms = 100").unwrap();
        assert!(
            bad.agents.validate().is_err(),
            "a timeout under two heartbeats"
        );
        let bad = toml::from_str::<Config>("[agents.weights]\nx = 0").unwrap();
        assert!(bad.agents.validate().is_err());
    }

    #[test]
    fn auth_parses() {
        let config: Config = toml::from_str(
            "[auth]\nbasic = [{ user = \"ops\", password = \"pw\" }]\ntokens = [\"t1\"]\n",
        )
        .unwrap();
        assert_eq!(config.auth.basic[0].user, "ops");
        assert_eq!(config.auth.basic[0].password, "pw");
        assert_eq!(config.auth.tokens, [ApiToken::from("t1")]);
        assert_eq!(config.auth.basic[0].role, Role::Admin);
        let roles: Config = toml::from_str(
            "[auth]\ntokens = [\"t1\", { token = \"t2\", role = \"read\" }]\n\
             basic = [{ user = \"u\", password = \"p\", role = \"operate\" }]",
        )
        .unwrap();
        let token_roles: Vec<Role> = roles.auth.tokens.iter().map(ApiToken::role).collect();
        assert_eq!(token_roles, [Role::Admin, Role::Read]);
        assert_eq!(roles.auth.tokens[1].secret(), "t2");
        assert_eq!(roles.auth.basic[0].role, Role::Operate);
        for bad in [
            "[auth]\ntokens = [{ token = \"t\", role = \"root\" }]",
            "[auth]\ntokens = [{ token = \"t\" }]",
            "[auth]\nbasic = [{ user = \"u\", password = \"p\", role = \"all\" }]",
        ] {
            assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[auth]\nbasic = [{ user = \"ops\" }]").is_err());
    }

    #[test]
    fn notifications_parse_and_validate() {
        let text = r#"
            [notify]
            ui_url = "https://dron.example.com"
            digest_window_secs = 60
            [notify.smtp]
            host = "smtp.example.com"
            port = 587
            starttls = true
            username = "dron"
            password = "pw"
            from = "dron <dron@example.com>"
            [[notify.webhooks]]
            url = "https://hooks.example.com/T1"
            events = ["failed", "recovered"]
            secret = "s3cret"
            [[notify.webhooks]]
            url = "http://127.0.0.1:9000/page"
        "#;
        let config: Config = toml::from_str(text).unwrap();
        config.notify.validate().unwrap();
        let actor = config.notify.actor_config("http://127.0.0.1:4400");
        assert!(actor.email);
        assert_eq!(actor.digest_window_ms, 60_000);
        assert_eq!(actor.ui_url, "https://dron.example.com");
        assert_eq!(
            actor.webhooks[0].events,
            [NoticeKind::Failed, NoticeKind::Recovered]
        );
        assert_eq!(actor.webhooks[1].events.len(), 5, "all events by default");
        let bad_event = "[[notify.webhooks]]\nurl = \"http://h/\"\nevents = [\"exploded\"]";
        let config: Config = toml::from_str(bad_event).unwrap();
        assert!(config.notify.validate().is_err());
        let bad_url = "[[notify.webhooks]]\nurl = \"hooks\"";
        let config: Config = toml::from_str(bad_url).unwrap();
        assert!(config.notify.validate().is_err());
        assert!(
            toml::from_str::<Config>("[notify.smtp]\nhost = \"h\"").is_err(),
            "from is required"
        );
    }

    /// A config with `[cluster]` from `toml`, settled as `dron serve` does.
    fn settled(toml: &str) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(toml)?;
        config.agents.local = config.local_agent()?;
        config.settle()?;
        Ok(config)
    }

    fn secret_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn cluster_toml(secret: &Path, extra: &str) -> String {
        format!(
            "[cluster]\nnode_id = 2\nsecret_file = {secret:?}\n{extra}\n\
             [cluster.peers]\n1 = \"http://127.0.0.1:4401\"\n2 = \"http://127.0.0.1:4402\"\n\
             3 = \"https://dron-3.example.com\"\n"
        )
    }

    fn error_of(result: anyhow::Result<Config>) -> String {
        format!("{:#}", result.expect_err("refused"))
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key_and_a_readable_ca() {
        let config = settled("[tls]\n").unwrap();
        assert!(
            config.tls.server().unwrap().is_none(),
            "plain HTTP by default"
        );
        let error = error_of(settled("[tls]\ncert = \"/etc/dron/server.pem\"\n"));
        assert!(
            error.contains("both the certificate and its key"),
            "{error}"
        );
        let error = error_of(settled("[tls]\nca = \"/nonexistent/ca.pem\"\n"));
        assert!(
            error.contains("tls: ca") && error.contains("/nonexistent/ca.pem"),
            "{error}"
        );
        let bad = secret_file("not a certificate");
        let error = error_of(settled(&format!("[tls]\nca = {:?}\n", bad.path())));
        assert!(error.contains("no PEM certificate"), "{error}");
    }

    #[test]
    fn a_cluster_parses_with_its_defaults() {
        let secret = secret_file("  0123456789abcdef-long-enough\n");
        let config = settled(&cluster_toml(secret.path(), "")).unwrap();
        let cluster = &config.cluster;
        assert!(cluster.enabled());
        assert_eq!(cluster.node_id, Some(2));
        assert_eq!(cluster.peers.len(), 3);
        assert_eq!(cluster.this_address(), Some("http://127.0.0.1:4402"));
        assert_eq!(
            (cluster.heartbeat_ms, cluster.election_timeout_ms),
            (150, 600)
        );
        assert_eq!(cluster.election_timeout_max_ms(), 1200);
        assert_eq!(&*cluster.secret().unwrap(), "0123456789abcdef-long-enough");
        assert!(
            !config.agents.local,
            "no local agent in a cluster by default"
        );
    }

    #[test]
    fn a_joining_server_needs_its_id_and_secret_but_no_peers() {
        let secret = secret_file("0123456789abcdef");
        let text = format!(
            "[cluster]\njoin = true\nnode_id = 4\nsecret_file = {:?}\n\
             snapshot_after_entries = 10\nentries_kept_after_snapshot = 0\n",
            secret.path()
        );
        let config = settled(&text).unwrap();
        assert!(config.cluster.enabled() && config.cluster.join);
        assert!(!config.agents.local, "no local agent on a joining server");
        assert_eq!(config.cluster.snapshot_after_entries, 10);
        assert_eq!(config.cluster.entries_kept_after_snapshot, 0);
        // Listed peers that do not include it are fine: it is added under its own id.
        let with_peers = format!("{text}[cluster.peers]\n1 = \"http://127.0.0.1:4401\"\n");
        assert!(settled(&with_peers).is_ok());
        let error = error_of(settled(&format!(
            "[cluster]\njoin = true\nsecret_file = {:?}\n",
            secret.path()
        )));
        assert!(error.contains("required with --join"), "{error}");
        let error = error_of(settled("[cluster]\njoin = true\nnode_id = 4\n"));
        assert!(error.contains("a secret file is required"), "{error}");
    }

    #[test]
    fn a_single_server_keeps_its_local_agent() {
        let config = settled("").unwrap();
        assert!(!config.cluster.enabled());
        assert!(config.agents.local);
        let config = settled("[agents]\nlocal = false\n").unwrap();
        assert!(!config.agents.local);
    }

    #[test]
    fn a_local_agent_in_a_cluster_is_refused_with_the_reason() {
        let secret = secret_file("0123456789abcdef");
        let text = format!(
            "[agents]\nlocal = true\n{}",
            cluster_toml(secret.path(), "")
        );
        let error = error_of(settled(&text));
        assert!(
            error.contains("agents.local = true is refused in a cluster"),
            "{error}"
        );
        assert!(error.contains("run twice"), "{error}");
        let text = format!(
            "[agents]\nlocal = false\n{}",
            cluster_toml(secret.path(), "")
        );
        assert!(!settled(&text).unwrap().agents.local);
    }

    #[test]
    fn cluster_errors_name_the_problem() {
        let secret = secret_file("0123456789abcdef");
        let path = secret.path();
        let peers = "[cluster.peers]\n1 = \"http://a:4400\"\n2 = \"http://b:4400\"\n";
        let with = |cluster: &str, peers: &str| settled(&format!("[cluster]\n{cluster}\n{peers}"));
        let secret_line = format!("secret_file = {path:?}");

        let error = error_of(with(&secret_line, peers));
        assert!(
            error.contains("--node-id (cluster.node_id) is required"),
            "{error}"
        );
        assert!(error.contains("(1, 2)"), "{error}");

        let error = error_of(with(&format!("node_id = 7\n{secret_line}"), peers));
        assert!(
            error.contains("node id 7 is not among the peers (1, 2)"),
            "{error}"
        );

        let error = error_of(with("node_id = 1", peers));
        assert!(error.contains("a secret file is required"), "{error}");

        let short = secret_file(" short \n");
        let line = format!("node_id = 1\nsecret_file = {:?}", short.path());
        let error = error_of(with(&line, peers));
        assert!(error.contains("is 5 bytes long; at least 16"), "{error}");

        let line = "node_id = 1\nsecret_file = \"/nonexistent/dron-secret\"";
        let error = error_of(with(line, peers));
        assert!(
            error.contains("reading the secret file /nonexistent/dron-secret"),
            "{error}"
        );

        let line = format!("node_id = 1\n{secret_line}");
        for (address, problem) in [
            ("ftp://a:4400", "must be an http:// or https:// URL"),
            ("a:4400", "must be an http:// or https:// URL"),
            ("nonsense", "is not a URL"),
            ("http://a:4400/dron", "must have no path"),
            ("http://u:p@a:4400", "must not carry credentials"),
        ] {
            let peers = format!("[cluster.peers]\n1 = \"http://z:1\"\n2 = \"{address}\"\n");
            let error = error_of(with(&line, &peers));
            assert!(error.contains("node 2's address"), "{address}: {error}");
            assert!(error.contains(problem), "{address}: {error}");
        }
        let same = "[cluster.peers]\n1 = \"http://a:4400\"\n2 = \"http://A:4400/\"\n";
        let error = error_of(with(&line, same));
        assert!(
            error.contains("nodes 1 and 2 have the same address"),
            "{error}"
        );

        let error = error_of(with("node_id = 1", ""));
        assert!(error.contains("without --peers"), "{error}");
        assert!(error.contains("run twice"), "{error}");

        let error = error_of(settled(
            "[cluster]\nheartbeat_ms = 500\nelection_timeout_ms = 1000",
        ));
        assert!(error.contains("at least three heartbeats"), "{error}");

        let error = toml::from_str::<Config>("[cluster.peers]\none = \"http://a:1\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("'one' is not a node id"), "{error}");
    }

    #[test]
    fn peers_flags_parse() {
        let peers = parse_peers("1=http://127.0.0.1:4401, 2=http://127.0.0.1:4402,").unwrap();
        assert_eq!(peers[&1], "http://127.0.0.1:4401");
        assert_eq!(peers[&2], "http://127.0.0.1:4402");
        let error = parse_peers("1=http://a:1,1=http://b:1").unwrap_err();
        assert!(error.contains("node 1 is listed twice"), "{error}");
        let error = parse_peers("http://a:1").unwrap_err();
        assert!(error.contains("is not ID=URL"), "{error}");
        let error = parse_peers("x=http://a:1").unwrap_err();
        assert!(error.contains("'x' is not a node id"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = toml::from_str::<Config>("shard = 3").unwrap_err();
        assert!(error.to_string().contains("shard"));
    }
}
