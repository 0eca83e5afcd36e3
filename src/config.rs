//! Server configuration: the file given with `--config FILE` (`scripts/serve.sh` passes
//! `config/dron.toml`, which lists every key with its default), then command-line flags.
//! Without `--config`, the defaults below apply.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

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
    pub events: EventsConfig,
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
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            amqp_url: None,
            exchange: "dron.resources".to_string(),
            queue: None,
        }
    }
}

/// Optional API authentication. With no user and no token, every endpoint is open; with
/// any, all but `/health` and `/ping` need `Authorization: Basic ..` or `Bearer <token>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub basic: Vec<BasicUser>,
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    pub user: String,
    pub password: String,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 4400)),
            shards: 8,
            scheduler: SchedulerConfig::default(),
            fault_injection: false,
            auth: AuthConfig::default(),
            events: EventsConfig::default(),
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
        let config: Config =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        anyhow::ensure!(config.shards >= 1, "shards must be at least 1");
        anyhow::ensure!(
            config.auth.tokens.iter().all(|t| !t.is_empty()),
            "auth tokens must not be empty"
        );
        Ok(config)
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
        assert!(config.auth.basic.is_empty() && config.auth.tokens.is_empty());
    }

    #[test]
    fn auth_parses() {
        let config: Config = toml::from_str(
            "[auth]\nbasic = [{ user = \"ops\", password = \"pw\" }]\ntokens = [\"t1\"]\n",
        )
        .unwrap();
        assert_eq!(config.auth.basic[0].user, "ops");
        assert_eq!(config.auth.basic[0].password, "pw");
        assert_eq!(config.auth.tokens, ["t1"]);
        assert!(toml::from_str::<Config>("[auth]\nbasic = [{ user = \"ops\" }]").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = toml::from_str::<Config>("shard = 3").unwrap_err();
        assert!(error.to_string().contains("shard"));
    }
}
