//! Ids derived from what they name, so that a restart or a retry can never mint a second
//! instance for the same target.
//!
//! - An **instance** is one run of a job for one logical time (its target): `job@target_ms`.
//! - A **task** is one attempt of an instance, in Chronos's format `ct:target_ms:attempt:job:`,
//!   so an async job's `PUT /scheduler/task/{taskId}` can be routed without a lookup.

/// The id of the instance of `job` for the target at `target_ms` (Unix milliseconds).
pub fn instance_id(job: &str, target_ms: i64) -> String {
    format!("{job}@{target_ms}")
}

/// The Chronos-style task id of one attempt (attempts count from 0).
pub fn task_id(job: &str, target_ms: i64, attempt: u32) -> String {
    format!("ct:{target_ms}:{attempt}:{job}:")
}

/// What a task id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub job: String,
    pub target_ms: i64,
    pub attempt: u32,
}

/// Parses a task id made by [`task_id`]; None for anything else.
pub fn parse_task_id(id: &str) -> Option<TaskRef> {
    let rest = id.strip_prefix("ct:")?;
    let (target, rest) = rest.split_once(':')?;
    let (attempt, rest) = rest.split_once(':')?;
    // The job name cannot contain ':', so the first ':' after it ends it (arguments may follow).
    let (job, _arguments) = rest.split_once(':')?;
    Some(TaskRef {
        job: job.to_string(),
        target_ms: target.parse().ok()?,
        attempt: attempt.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip() {
        let id = task_id("export.users", 1_700_000_000_123, 2);
        assert_eq!(id, "ct:1700000000123:2:export.users:");
        let parsed = parse_task_id(&id).unwrap();
        assert_eq!(parsed.job, "export.users");
        assert_eq!(parsed.target_ms, 1_700_000_000_123);
        assert_eq!(parsed.attempt, 2);
    }

    #[test]
    fn rejects_foreign_ids() {
        for bad in [
            "",
            "ct:",
            "ct:x:0:job:",
            "ct:1:y:job:",
            "mesos-123",
            "ct:1:0:job",
        ] {
            assert!(parse_task_id(bad).is_none(), "{bad}");
        }
    }
}
