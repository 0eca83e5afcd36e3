//! Backfills: a job run again over past logical times, with the jobs downstream of it.
//!
//! A backfill is kept as one [`BackfillPlan`] per job it runs, on the shard that owns that
//! job, and one [`BackfillTarget`] per logical time that job has reached in it (a small record
//! per change, not the whole plan rewritten per run). The job backfilled (the *root*) walks its
//! schedule's targets in `[from, to]` oldest first (`next_ms`); a downstream job runs a time
//! once each of its `upstream` jobs in the backfill announced a backfill success for it.

use serde::{Deserialize, Serialize};

/// One job's part in a backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillPlan {
    pub id: String,
    pub job: String,
    /// The job the backfill was asked for (its own plan has no `upstream`).
    pub root: String,
    /// The jobs of the backfill this one runs after (parents, `job:` dependencies): it runs a
    /// time once each of them succeeded for that time in this backfill.
    pub upstream: Vec<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Runs of this job in the backfill at once, at most.
    pub parallel: u32,
    pub rerun_succeeded: bool,
    /// Whether the backfill reaches the jobs downstream of the root.
    pub downstream: bool,
    /// The root's next target to start (None: every target has started).
    pub next_ms: Option<i64>,
    /// The root's targets to run: the range's, less those left alone (they had succeeded).
    pub total: u64,
    pub created_ms: i64,
    pub cancelled: bool,
    /// The first attempt of this backfill's runs (see `instance::rerun_first_attempt`).
    pub first_attempt: u32,
}

impl BackfillPlan {
    pub fn is_root(&self) -> bool {
        self.job == self.root
    }
}

/// Where one logical time of one job stands in a backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetState {
    /// Some of its upstream jobs succeeded for it (named), not all yet.
    Waiting(Vec<String>),
    /// Its upstream jobs all succeeded: it starts when the backfill has room.
    Ready,
    /// Its instance is live (waiting for resources, queued, running or waiting to retry).
    Running,
    Succeeded,
    /// Failed for good (or was killed, expired or could not be placed).
    Failed,
    /// It had succeeded before the backfill, which left it alone (`rerunSucceeded: false`).
    LeftAlone,
}

impl TargetState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetState::Waiting(_) | TargetState::Ready => "waiting",
            TargetState::Running => "running",
            TargetState::Succeeded => "succeeded",
            TargetState::Failed => "failed",
            TargetState::LeftAlone => "leftAlone",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillTarget {
    pub id: String,
    pub job: String,
    pub target_ms: i64,
    pub state: TargetState,
}

/// What a shard's `backfills` family holds: plans and their targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackfillEntry {
    Plan(BackfillPlan),
    Target(BackfillTarget),
}

impl crate::codec::Stored for BackfillEntry {}

/// Names a backfill in the `meta` of the `job:NAME@TIME` announcement of one of its runs, so
/// that shards count it for the backfill's downstream jobs and not as a scheduled success
/// (`parents`, `triggeredBy`).
pub fn announcement_meta(id: &str) -> String {
    serde_json::json!({ "backfill": id }).to_string()
}

/// The backfill an announcement's `meta` names, if any.
pub fn announced_backfill(meta_json: &str) -> Option<String> {
    if !meta_json.contains("backfill") {
        return None; // most announcements: no parse
    }
    let meta: serde_json::Value = serde_json::from_str(meta_json).ok()?;
    Some(meta.get("backfill")?.as_str()?.to_string())
}

/// Whether `id` may name a backfill (it reaches storage keys and URLs).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_their_backfill() {
        let meta = announcement_meta("bf-1");
        assert_eq!(announced_backfill(&meta).as_deref(), Some("bf-1"));
        assert_eq!(announced_backfill(""), None);
        assert_eq!(announced_backfill("{\"owner\":\"x\"}"), None);
        assert_eq!(announced_backfill("{\"backfill\":3}"), None);
    }

    #[test]
    fn ids_are_plain() {
        assert!(valid_id("bf-1795000000000-7"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(65)));
    }
}
