//! Instances: one run of a job for one target, through its attempts, and the history kept of
//! finished runs and skipped targets.

use serde::{Deserialize, Serialize};

use crate::ids::{instance_id, task_id};

/// Where an instance is in its life. The first four are live; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Waits for resources (`dependsOn`) that are not all satisfied yet.
    Waiting,
    /// Created, not launched yet (e.g. the job's previous run is still going).
    Queued,
    /// Handed to an agent; the current attempt is running.
    Running,
    /// An attempt failed; the next one starts at `retry_at_ms`.
    RetryWait,
    Succeeded,
    /// Failed on its last attempt.
    Failed,
    /// Killed by an operator.
    Killed,
    /// Killed because it ran longer than the job's maxCompletionTime.
    TimedOut,
    /// Could not start within the job's epsilon.
    Skipped,
    /// Its resources were not all satisfied within the job's waitTimeout.
    Expired,
}

impl InstanceState {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Self::Waiting | Self::Queued | Self::Running | Self::RetryWait
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::RetryWait => "retry_wait",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::TimedOut => "timed_out",
            Self::Skipped => "skipped",
            Self::Expired => "expired",
        }
    }
}

/// Why an instance exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunCause {
    Schedule,
    /// `PUT /scheduler/job/{name}`.
    Manual,
    /// All of a dependent job's parents succeeded.
    Parents,
    /// An event matched the job's `triggeredBy`.
    Event,
    /// A backfill or a rerun ran it for a past logical time (`POST /api/jobs/{name}/backfill`).
    /// Added last: postcard stores a variant by its index, so older records read unchanged.
    Backfill,
}

impl RunCause {
    /// Whether the run must start within its job's epsilon: an operator's run now and a
    /// backfill's runs start whenever they can.
    pub fn bound_by_epsilon(self) -> bool {
        !matches!(self, RunCause::Manual | RunCause::Backfill)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunCause::Schedule => "schedule",
            RunCause::Manual => "manual",
            RunCause::Parents => "parents",
            RunCause::Event => "event",
            RunCause::Backfill => "backfill",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub job: String,
    /// The logical time this run is for (Unix ms).
    pub target_ms: i64,
    /// The current attempt, from 0.
    pub attempt: u32,
    pub state: InstanceState,
    pub cause: RunCause,
    pub created_ms: i64,
    /// When the current attempt was launched.
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub exit_code: Option<i32>,
    /// A human reason for the state (why it failed, was skipped...).
    pub message: Option<String>,
    pub retry_at_ms: Option<i64>,
    /// The resources it waits for (`dependsOn` expanded for its logical time).
    pub resources: Vec<String>,
    /// When its resources were all satisfied: epsilon counts from here for an instance that
    /// had to wait (its target may be hours before its data landed).
    pub ready_ms: Option<i64>,
    /// The agent the current attempt was placed on (None until an agent reports it started).
    pub agent: Option<String>,
    /// Attempts that ended because their agent was lost: relaunched without spending one of
    /// the job's retries.
    pub lost_attempts: u32,
    /// The number of its first attempt: 0, except for a rerun of a target that ran before (a
    /// backfill), whose attempts number on from [`rerun_first_attempt`] so that the earlier
    /// runs' task ids and run directories (`runs/JOB/TARGET-ATTEMPT`) stay theirs.
    pub first_attempt: u32,
}

/// Unix ms of 2025-01-01T00:00:00Z: reruns number their attempts in seconds from here.
const RERUN_EPOCH_MS: i64 = 1_735_689_600_000;

/// The first attempt of a rerun made at `now_ms`: the seconds since 2025 (about 63 million in
/// 2027; `u32` lasts until 2161). Above any attempt a run counts by itself; the shard keeps a
/// job's backfills made in the same second apart.
pub fn rerun_first_attempt(now_ms: i64) -> u32 {
    let seconds = (now_ms - RERUN_EPOCH_MS) / 1000;
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX / 2)
}

impl InstanceRecord {
    pub fn new(job: &str, target_ms: i64, cause: RunCause, now_ms: i64) -> Self {
        InstanceRecord {
            job: job.to_string(),
            target_ms,
            attempt: 0,
            state: InstanceState::Queued,
            cause,
            created_ms: now_ms,
            started_ms: None,
            ended_ms: None,
            exit_code: None,
            message: None,
            retry_at_ms: None,
            resources: Vec::new(),
            ready_ms: None,
            agent: None,
            lost_attempts: 0,
            first_attempt: 0,
        }
    }

    /// A rerun's instance (a backfill's): its first attempt is `first_attempt`.
    pub fn rerun(job: &str, target_ms: i64, first_attempt: u32, now_ms: i64) -> Self {
        InstanceRecord {
            attempt: first_attempt,
            first_attempt,
            ready_ms: Some(now_ms),
            ..InstanceRecord::new(job, target_ms, RunCause::Backfill, now_ms)
        }
    }

    /// Failed attempts so far, which count against the job's retries.
    pub fn failed_attempts(&self) -> u32 {
        self.attempt
            .saturating_sub(self.first_attempt)
            .saturating_sub(self.lost_attempts)
    }

    pub fn id(&self) -> String {
        instance_id(&self.job, self.target_ms)
    }

    pub fn task_id(&self) -> String {
        task_id(&self.job, self.target_ms, self.attempt)
    }
}

/// Targets of one job that could not start within epsilon, recorded as one range so that a
/// PT1S job down for a day costs one record, not 86,400.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedTargets {
    pub job: String,
    pub first_target_ms: i64,
    /// Every target in `[first_target_ms, until_ms)` was skipped.
    pub until_ms: i64,
    pub count: u64,
    pub recorded_ms: i64,
    pub reason: String,
}

/// One entry of a job's history, keyed by (job, first target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryEntry {
    Run(InstanceRecord),
    Skipped(SkippedTargets),
}

impl HistoryEntry {
    pub fn job(&self) -> &str {
        match self {
            HistoryEntry::Run(run) => &run.job,
            HistoryEntry::Skipped(skipped) => &skipped.job,
        }
    }

    pub fn target_ms(&self) -> i64 {
        match self {
            HistoryEntry::Run(run) => run.target_ms,
            HistoryEntry::Skipped(skipped) => skipped.first_target_ms,
        }
    }
}

/// The first version that stored instances as today.
const SAME_INSTANCES_SINCE: u8 = 7;
/// The first version that stored instances with their agent and lost attempts.
const AGENT_SINCE: u8 = 4;

impl crate::codec::Stored for InstanceRecord {
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, crate::codec::CodecError> {
        if version >= SAME_INSTANCES_SINCE {
            return Ok(postcard::from_bytes(body)?);
        }
        if version >= AGENT_SINCE {
            let old: legacy::InstanceRecordV6 = postcard::from_bytes(body)?;
            return Ok(old.into());
        }
        let old: legacy::InstanceRecordV3 = postcard::from_bytes(body)?;
        Ok(old.into())
    }
}

impl crate::codec::Stored for HistoryEntry {
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, crate::codec::CodecError> {
        if version >= SAME_INSTANCES_SINCE {
            return Ok(postcard::from_bytes(body)?);
        }
        if version >= AGENT_SINCE {
            return Ok(match postcard::from_bytes(body)? {
                legacy::HistoryEntryV6::Run(run) => HistoryEntry::Run(run.into()),
                legacy::HistoryEntryV6::Skipped(skipped) => HistoryEntry::Skipped(skipped),
            });
        }
        Ok(match postcard::from_bytes(body)? {
            legacy::HistoryEntryV3::Run(run) => HistoryEntry::Run(run.into()),
            legacy::HistoryEntryV3::Skipped(skipped) => HistoryEntry::Skipped(skipped),
        })
    }
}

/// Instances as versions 2 and 3 stored them (without `agent` and `lost_attempts`), and 4 to
/// 6 (without `first_attempt`).
mod legacy {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub struct InstanceRecordV6 {
        pub job: String,
        pub target_ms: i64,
        pub attempt: u32,
        pub state: InstanceState,
        pub cause: RunCause,
        pub created_ms: i64,
        pub started_ms: Option<i64>,
        pub ended_ms: Option<i64>,
        pub exit_code: Option<i32>,
        pub message: Option<String>,
        pub retry_at_ms: Option<i64>,
        pub resources: Vec<String>,
        pub ready_ms: Option<i64>,
        pub agent: Option<String>,
        pub lost_attempts: u32,
    }

    #[derive(Deserialize)]
    pub enum HistoryEntryV6 {
        Run(InstanceRecordV6),
        Skipped(SkippedTargets),
    }

    impl From<InstanceRecordV6> for InstanceRecord {
        fn from(old: InstanceRecordV6) -> Self {
            InstanceRecord {
                job: old.job,
                target_ms: old.target_ms,
                attempt: old.attempt,
                state: old.state,
                cause: old.cause,
                created_ms: old.created_ms,
                started_ms: old.started_ms,
                ended_ms: old.ended_ms,
                exit_code: old.exit_code,
                message: old.message,
                retry_at_ms: old.retry_at_ms,
                resources: old.resources,
                ready_ms: old.ready_ms,
                agent: old.agent,
                lost_attempts: old.lost_attempts,
                first_attempt: 0,
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    pub struct InstanceRecordV3 {
        pub job: String,
        pub target_ms: i64,
        pub attempt: u32,
        pub state: InstanceState,
        pub cause: RunCause,
        pub created_ms: i64,
        pub started_ms: Option<i64>,
        pub ended_ms: Option<i64>,
        pub exit_code: Option<i32>,
        pub message: Option<String>,
        pub retry_at_ms: Option<i64>,
        pub resources: Vec<String>,
        pub ready_ms: Option<i64>,
    }

    #[derive(Deserialize)]
    pub enum HistoryEntryV3 {
        Run(InstanceRecordV3),
        Skipped(SkippedTargets),
    }

    impl From<InstanceRecordV3> for InstanceRecord {
        fn from(old: InstanceRecordV3) -> Self {
            InstanceRecord {
                job: old.job,
                target_ms: old.target_ms,
                attempt: old.attempt,
                state: old.state,
                cause: old.cause,
                created_ms: old.created_ms,
                started_ms: old.started_ms,
                ended_ms: old.ended_ms,
                exit_code: old.exit_code,
                message: old.message,
                retry_at_ms: old.retry_at_ms,
                resources: old.resources,
                ready_ms: old.ready_ms,
                agent: None,
                lost_attempts: 0,
                first_attempt: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn reads_version_3_instances_and_history() {
        let old = legacy::InstanceRecordV3 {
            job: "old".into(),
            target_ms: 1_000,
            attempt: 1,
            state: InstanceState::Succeeded,
            cause: RunCause::Schedule,
            created_ms: 900,
            started_ms: Some(1_000),
            ended_ms: Some(2_000),
            exit_code: Some(0),
            message: None,
            retry_at_ms: None,
            resources: vec!["r".into()],
            ready_ms: None,
        };
        let record = postcard::to_extend(&old, vec![3]).unwrap();
        let instance: InstanceRecord = decode(&record).unwrap();
        assert_eq!((instance.job.as_str(), instance.attempt), ("old", 1));
        assert_eq!((instance.agent, instance.lost_attempts), (None, 0));
        // A history entry is the enum's variant index, then the record.
        let entry = postcard::to_extend(&old, vec![3, 0]).unwrap();
        let HistoryEntry::Run(run) = decode::<HistoryEntry>(&entry).unwrap() else {
            panic!("a run");
        };
        assert_eq!(run.resources, vec!["r".to_string()]);
        let mut now = InstanceRecord::new("new", 5, RunCause::Manual, 1);
        now.agent = Some("worker-1".into());
        assert_eq!(decode::<InstanceRecord>(&encode(&now)).unwrap(), now);
    }

    #[test]
    fn reads_versions_4_to_6_instances_and_history_without_a_first_attempt() {
        let mut run = InstanceRecord::new("v4", 5, RunCause::Manual, 1);
        run.agent = Some("worker-1".into());
        run.lost_attempts = 2;
        let old = legacy::InstanceRecordV6 {
            job: run.job.clone(),
            target_ms: run.target_ms,
            attempt: run.attempt,
            state: run.state,
            cause: run.cause,
            created_ms: run.created_ms,
            started_ms: None,
            ended_ms: None,
            exit_code: None,
            message: None,
            retry_at_ms: None,
            resources: Vec::new(),
            ready_ms: None,
            agent: run.agent.clone(),
            lost_attempts: 2,
        };
        for version in [4, 6] {
            let record = postcard::to_extend(&old, vec![version]).unwrap();
            assert_eq!(decode::<InstanceRecord>(&record).unwrap(), run);
            let entry = postcard::to_extend(&old, vec![version, 0]).unwrap();
            assert_eq!(
                decode::<HistoryEntry>(&entry).unwrap(),
                HistoryEntry::Run(run.clone())
            );
        }
        let rerun = InstanceRecord::rerun("v7", 5, 60_000_000, 1);
        assert_eq!(decode::<InstanceRecord>(&encode(&rerun)).unwrap(), rerun);
        assert_eq!(rerun.failed_attempts(), 0);
    }

    #[test]
    fn a_reruns_attempts_number_above_earlier_runs_and_reruns() {
        let first = rerun_first_attempt(1_800_000_000_000);
        assert!(first > 60_000_000, "{first}");
        assert!(rerun_first_attempt(1_800_000_005_000) >= first + 5);
        assert_eq!(rerun_first_attempt(0), 1);
    }
}
