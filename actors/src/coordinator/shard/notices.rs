//! What people are told about runs: the notices a shard writes to its notice outbox.

use std::collections::HashMap;

use dron_model::instance::{InstanceRecord, InstanceState, SkippedTargets};
use dron_model::job::{JobRecord, JobSpec, JobState};
use dron_model::notice::{Notice, NoticeKind};

use super::Outbox;
use crate::store::StoreOp;

/// What to tell people about a run that just ended (its counters not updated yet): a failure
/// for good, a timeout, an expiry, a skip, or the first success after failures.
pub(super) fn run_notice(job: &JobRecord, run: &InstanceRecord, now_ms: i64) -> Option<Notice> {
    let kind = match run.state {
        InstanceState::Failed => NoticeKind::Failed,
        InstanceState::TimedOut => NoticeKind::TimedOut,
        InstanceState::Expired => NoticeKind::Expired,
        InstanceState::Skipped => NoticeKind::Skipped,
        InstanceState::Succeeded if failing(&job.state) => NoticeKind::Recovered,
        _ => return None,
    };
    // Expired and skipped runs never started: no task, no output.
    let ran =
        run.started_ms.is_some() && !matches!(kind, NoticeKind::Expired | NoticeKind::Skipped);
    let message = match kind {
        NoticeKind::Recovered => "succeeded after failures".to_string(),
        _ => run.message.clone().unwrap_or_default(),
    };
    Some(Notice {
        job: run.job.clone(),
        kind,
        target_ms: run.target_ms,
        at_ms: now_ms,
        owner: job.spec.owner.clone(),
        webhooks: job.spec.notify_webhooks.clone(),
        attempt: run.attempt,
        task_id: ran.then(|| run.task_id()),
        exit_code: run.exit_code,
        message,
        count: 1,
        stderr_tail: String::new(),
    })
}

/// Whether the job's newest end was an error: its next success is a recovery.
fn failing(state: &JobState) -> bool {
    match (state.last_error_ms, state.last_success_ms) {
        (Some(error), Some(success)) => error > success,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// How often a job's skipped targets are told, at most: see [`SkipNotices`].
pub(super) const SKIP_NOTICE_EVERY_MS: i64 = 60_000;

/// Skip notices, at most one per job per [`SKIP_NOTICE_EVERY_MS`]. An overloaded server skips
/// a few of every busy job's targets each time one of its runs ends (those that fell out of
/// their epsilon meanwhile); a notice for each (written, handed to the notifier, recorded there,
/// dropped from the shard's outbox) would cost more writes than the run, and make the
/// overloaded path the expensive one again. Targets skipped in between are counted in the
/// job's next skip notice; the history keeps every range. (The count held here is lost with a
/// crash: a notice is a digest for people, the history is the record.)
#[derive(Default)]
pub(super) struct SkipNotices {
    /// Per job: when its last skip notice went, and the targets skipped since.
    told: HashMap<String, (i64, u64)>,
}

impl SkipNotices {
    /// The notice to send for `skipped` now, if one is due.
    pub(super) fn notice(&mut self, spec: &JobSpec, skipped: &SkippedTargets) -> Option<Notice> {
        let now_ms = skipped.recorded_ms;
        if let Some((told_ms, held)) = self.told.get_mut(&skipped.job)
            && now_ms < *told_ms + SKIP_NOTICE_EVERY_MS
        {
            *held += skipped.count;
            return None;
        }
        let held = self
            .told
            .insert(skipped.job.clone(), (now_ms, 0))
            .map_or(0, |(_, held)| held);
        let mut notice = skipped_notice(spec, skipped);
        if held > 0 {
            notice.count += held;
            notice.message = format!(
                "{} target(s) {} ({held} more since the last notice)",
                skipped.count, skipped.reason
            );
        }
        Some(notice)
    }

    /// Forgets a job that left the shard.
    pub(super) fn forget(&mut self, job: &str) {
        self.told.remove(job);
    }
}

fn skipped_notice(spec: &JobSpec, skipped: &SkippedTargets) -> Notice {
    Notice {
        job: skipped.job.clone(),
        kind: NoticeKind::Skipped,
        target_ms: skipped.first_target_ms,
        at_ms: skipped.recorded_ms,
        owner: spec.owner.clone(),
        webhooks: spec.notify_webhooks.clone(),
        attempt: 0,
        task_id: None,
        exit_code: None,
        message: format!("{} target(s) {}", skipped.count, skipped.reason),
        count: skipped.count,
        stderr_tail: String::new(),
    }
}

/// Writes a notice to the shard's notice outbox and hands it on once that is durable.
pub(super) fn push_notice(notice: Notice, out: &mut Outbox) {
    out.ops.push(StoreOp::PutNotice(notice.clone()));
    out.notices.push(notice);
}
